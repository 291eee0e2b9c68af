"""Which INT8 graphs a bundle carries for ONNX Runtime's CPU provider, one per kind of x86 CPU,
and which of them a CPU runs: a fact of the bundle format, read by the export that writes the
graphs, the manifest schema that checks them and the runtime that picks one. A leaf module, so
none of those three imports another for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Container


@dataclass(frozen=True)
class CpuGraph:
    """An INT8 graph for ONNX Runtime's CPU provider on one instruction-set class."""

    key: str  # manifest entry
    file: str
    form: str  # cvexport.export.quantize form
    isa_class: str  # cvexport.cpu.isa_class() it is chosen for
    description: str


# ONNX Runtime's x86 u8 x s8 kernels sum pairs of products in 32 bits with VNNI but in 16 bits
# with saturation without it (vpmaddubsw), so the full-range form loses accuracy there (SSD:
# mAP@0.5:0.95 down 1.4 points on an AVX2-only EPYC). 7-bit weights cannot saturate.
INT8_CPU_GRAPHS = (
    CpuGraph("onnx_cpu", "model.cpu.onnx", "qdq-cpu", "vnni",
             "int8 QDQ U8S8 for ONNX Runtime on CPUs with VNNI (not for TensorRT)"),
    CpuGraph("onnx_cpu_avx2", "model.cpu-avx2.onnx", "qdq-cpu-7bit", "avx2",
             "int8 QDQ U8S8 with 7-bit weights for ONNX Runtime on CPUs without VNNI (not for TensorRT)"),
)


def cpu_graph_for(carried: Container[str], isa_class: str) -> str:
    """The manifest entry ONNX Runtime's CPU provider runs on a CPU of ``isa_class``, given the
    entries a bundle carries (``Manifest.cpu_graphs``): the INT8 CPU graph made for it, else the
    TensorRT-ready ``onnx`` graph. A bundle made before the per-CPU graphs has only the VNNI one;
    on other CPUs its results are off, so ``onnx`` then."""
    for graph in INT8_CPU_GRAPHS:
        if graph.isa_class == isa_class and graph.key in carried:
            return graph.key
    return "onnx"
