"""Runtime backends behind one interface, and the high-level ``Predictor``.

Backends are imported lazily so ``import cvexport.runtime`` needs neither a GPU nor TensorRT.
"""

from __future__ import annotations

from cvexport.bundle import Bundle, load_bundle
from cvexport.errors import CvexportError
from cvexport.runtime.base import Runner

BACKENDS = ("torch", "ort", "ort-cuda", "ort-trt", "trt")


def create_runner(bundle: Bundle | str, backend: str = "ort", threads: int | None = None) -> Runner:
    """A runner for ``bundle`` on ``backend`` (one of ``BACKENDS``)."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if backend == "torch":
        from cvexport.runtime.torch_runner import TorchRunner

        return TorchRunner(bundle, threads=threads)
    if backend in ("ort", "ort-cuda", "ort-trt"):
        from cvexport.runtime.ort_runner import PROVIDERS, OrtRunner

        return OrtRunner(bundle, providers=PROVIDERS[backend], threads=threads)
    if backend == "trt":
        from cvexport.runtime.trt_runner import TrtRunner

        return TrtRunner(bundle)
    raise CvexportError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
