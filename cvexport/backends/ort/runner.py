"""ONNX Runtime backend (CPU here; CUDA / TensorRT execution providers where installed).

Graphs with TensorRT plugin nodes run through the CPU reference kernels in
``trt_plugins``, so the very graph TensorRT consumes also runs here.
"""

from __future__ import annotations

import numpy as np

from cvexport.bundle import Bundle
from cvexport.cpu import isa_class
from cvexport.int8_graphs import cpu_graph_for
from cvexport.backends.ort.loader import create_session
from cvexport.runtime.base import Runner

PROVIDERS = {
    "ort": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def provider_settings(bundle: Bundle, providers: list[str]) -> list:
    """Providers with their options: the TensorRT execution provider keeps its engine and timing
    caches inside the bundle (so a second start does not rebuild) and gets the bundle's precision
    (onnxruntime TensorRT EP options ``trt_*``); the others take their defaults."""
    import onnxruntime as ort

    settings: list = []
    for name in providers:
        if name != "TensorrtExecutionProvider" or name not in ort.get_available_providers():
            settings.append(name)  # a missing provider is reported by create_session, not here
            continue
        cache = bundle.path / "engines" / "ort-trt"
        cache.mkdir(parents=True, exist_ok=True)
        settings.append((name, {
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
            "trt_fp16_enable": bundle.precision == "fp16", "trt_int8_enable": bundle.precision == "int8",
        }))
    return settings


class OrtRunner(Runner):
    name = "ort"

    def __init__(self, bundle: Bundle, providers: list[str] | None = None, threads: int | None = None,
                 graph: str | None = None):
        super().__init__(bundle)
        providers = providers or PROVIDERS["ort"]
        if graph is None:
            # On the CPU provider an INT8 bundle's CPU graph for this CPU's instruction set is
            # the fast and accurate one (chosen when the session is made, so a bundle moves
            # between machines); GPUs take the TensorRT-ready graph.
            graph = cpu_graph_for(bundle.manifest.cpu_graphs, isa_class()) if providers == PROVIDERS["ort"] else "onnx"
        self.graph = graph
        path = bundle.verify_file(graph)
        self.session = create_session(path.read_bytes(), provider_settings(bundle, providers), threads)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _infer(self, array: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {self.input_name: array})
        return dict(zip(self.output_names, values))

    def close(self) -> None:
        self.session = None
