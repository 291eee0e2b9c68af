"""The build's TensorRT step: refuse ``--backend trt`` early where TensorRT cannot run, and build
(or reuse) the bundle's engine after it is written where it can."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from cvexport.bundle import load_bundle
from cvexport.errors import CvexportError


def require_tensorrt() -> None:
    """A one-line error naming why TensorRT cannot run here; asked before the export, so
    ``--backend trt`` fails before a minute is spent on it."""
    from cvexport.backends.trt.environment import trt_unavailable_reason

    reason = trt_unavailable_reason()
    if reason is not None:
        raise CvexportError(f"--backend trt: {reason}")


def engine_step(out: Path, log: Callable[[str], None]) -> None:
    """Build (or reuse) the bundle's TensorRT engine where TensorRT and a GPU are usable."""
    from cvexport.backends.trt.builder import ensure_engine
    from cvexport.backends.trt.environment import trt_unavailable_reason
    from cvexport.backends.trt.settings import EngineOptions

    reason = trt_unavailable_reason()
    if reason is not None:
        log(f"TensorRT engine not built ({reason}); the bundle runs on ONNX Runtime (--backend ort)")
        return
    bundle = load_bundle(out)
    log(f"TensorRT engine: {ensure_engine(bundle, EngineOptions.from_bundle(bundle), log)}")
