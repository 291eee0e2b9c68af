"""OpenVINO backend: the bundle's ONNX graph compiled by OpenVINO for a CPU, iGPU or NPU.

Which graph: the TensorRT-ready ``model.onnx`` of every precision, except for an INT8 bundle
on a CPU without VNNI (``cvexport.cpu.isa_class``, forced by ``CVEXPORT_CPU_ISA``). There
OpenVINO's int8 kernels, like ONNX Runtime's, sum pairs of u8 x s8 products in 16 bits with
saturation, and the full-range QDQ graph gives other answers: the SSD INT8 bundle under
``qemu-x86_64 -cpu Haswell`` matched 13/23 detections of the torch reference on 4 parity
pictures (22/23 on this AVX-512 VNNI EPYC). So on those CPUs it runs the bundle's 7-bit-weight
graph made for them (``model.cpu-avx2.onnx``: 23/23 under the same emulation); an INT8 bundle
without one is refused there.
"""

from __future__ import annotations

import threading

import numpy as np

from cvexport.backends.openvino.loader import TARGETS, compile_graph
from cvexport.bundle import Bundle
from cvexport.cpu import isa_class
from cvexport.errors import CvexportError
from cvexport.int8_graphs import INT8_CPU_GRAPHS
from cvexport.runtime.base import Runner


def openvino_graph(bundle: Bundle, target) -> str:
    """The manifest entry OpenVINO runs for ``bundle`` on ``target`` (see the module docstring)."""
    if bundle.precision != "int8" or target.device != "CPU" or isa_class() != "avx2":
        return "onnx"
    for graph in INT8_CPU_GRAPHS:
        if graph.isa_class == "avx2" and graph.key in bundle.manifest.cpu_graphs:
            return graph.key
    raise CvexportError("this INT8 bundle has no graph for CPUs without VNNI (it predates them), and OpenVINO's "
                        "int8 kernels saturate on this CPU; rebuild it with --int8, or use --backend ort")


class OpenVinoRunner(Runner):
    name = "openvino"

    def __init__(self, bundle: Bundle, backend: str = "openvino", threads: int | None = None):
        super().__init__(bundle)
        self.name = backend
        self.target = TARGETS[backend]
        self.graph = openvino_graph(bundle, self.target)
        self.compiled, self.output_names = compile_graph(bundle.verify_file(self.graph).read_bytes(), self.target,
                                                         threads)
        # One infer request, used by one thread at a time: a request's output tensors are its
        # own memory, overwritten by its next inference, so results are copied out under the lock.
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    @property
    def compute_precision(self) -> str:
        """The bundle precision whose tolerance this runner's answers are judged by."""
        return self.target.tolerance

    def _infer(self, array: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            results = self._request.infer({0: array})
            return {name: np.array(results[index]) for index, name in enumerate(self.output_names)}

    def close(self) -> None:
        self._request = None
        self.compiled = None
