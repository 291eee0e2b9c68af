"""One runner interface for every backend (PyTorch reference, ONNX Runtime, TensorRT).

The base class checks inputs once against the bundle's input contract; subclasses write
only ``_infer``. Runners are safe to call from several threads unless they say otherwise.
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np

from cvexport.bundle import Bundle
from cvexport.errors import CvexportError

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


def input_shape(bundle: Bundle, batch: int | str = "batch") -> list:
    """The network input shape for ``batch`` images, in the bundle's layout."""
    spec = bundle.input
    if spec.layout == "NHWC":
        return [batch, spec.height, spec.width, 3]
    return [batch, 3, spec.height, spec.width]


class Runner:
    """Runs a bundle's network: ``infer({input_name: array}) -> {output_name: array}``."""

    name = "base"
    # The precision this backend computes at when it is not the bundle's (OpenVINO's bf16: see
    # cvexport.precisions.judged_precision); None: the bundle's own.
    compute_precision: str | None = None

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.input_name = bundle.input.name
        self.last_inference_seconds: float | None = None

    # Context-manager form, as in Polygraphy; activation is cheap for CPU backends.
    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release backend resources (sessions, engines, device buffers)."""

    def check_inputs(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        """Validate a feed against the input contract; returns the input array (contiguous)."""
        if set(feed) != {self.input_name}:
            raise CvexportError(f"expected exactly one input named '{self.input_name}', got {sorted(feed)}")
        array = np.ascontiguousarray(feed[self.input_name])
        expected_dtype = NUMPY_DTYPES[self.bundle.input.dtype]
        if array.dtype != expected_dtype:
            raise CvexportError(
                f"input '{self.input_name}' must be {np.dtype(expected_dtype).name}, got {array.dtype.name}"
            )
        expected = input_shape(self.bundle, array.shape[0] if array.ndim else 0)
        if list(array.shape) != expected:
            raise CvexportError(f"input '{self.input_name}' must have shape {input_shape(self.bundle)}, got {list(array.shape)}")
        if not 1 <= array.shape[0] <= self.bundle.max_batch:
            raise CvexportError(
                f"batch of {array.shape[0]} is outside 1..{self.bundle.max_batch}, the range this bundle was built for; "
                f"split the batch or rebuild with --max-batch {array.shape[0]}"
            )
        return array

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        array = self.check_inputs(feed)
        start = time.perf_counter()
        outputs = self._infer(array)
        self.last_inference_seconds = time.perf_counter() - start
        return outputs

    def _infer(self, array: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError
