"""OpenVINO backend: the bundle's ONNX graph compiled by OpenVINO for a CPU, iGPU or NPU.

Which graph: the TensorRT-ready ``model.onnx`` of every precision. For INT8 bundles that is
the symmetric QDQ form, which OpenVINO's low-precision transformations fuse into int8 kernels
(the U8S8 CPU graphs are laid out for ONNX Runtime's kernels and their CPU classes).
"""

from __future__ import annotations

import threading

import numpy as np

from cvexport.backends.openvino.loader import TARGETS, compile_graph
from cvexport.bundle import Bundle
from cvexport.runtime.base import Runner


class OpenVinoRunner(Runner):
    name = "openvino"

    def __init__(self, bundle: Bundle, backend: str = "openvino", threads: int | None = None):
        super().__init__(bundle)
        self.name = backend
        self.target = TARGETS[backend]
        self.compiled, self.output_names = compile_graph(bundle.verify_file("onnx").read_bytes(), self.target, threads)
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
