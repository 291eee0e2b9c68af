"""Runtime backends behind one interface, and the high-level ``Predictor``.

Backends are imported lazily so ``import cvexport.runtime`` needs neither a GPU nor TensorRT.
"""

from __future__ import annotations

from cvexport.bundle import Bundle, load_bundle
from cvexport.errors import CvexportError
from cvexport.runtime.base import Runner

BACKENDS = ("torch", "ort", "ort-cuda", "ort-trt", "trt", "openvino", "openvino-bf16", "openvino-gpu", "openvino-npu")


def create_runner(bundle: Bundle | str, backend: str = "ort", threads: int | None = None) -> Runner:
    """A runner for ``bundle`` on ``backend`` (one of ``BACKENDS``)."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if backend == "torch":
        from cvexport.backends.torch.runner import TorchRunner

        return TorchRunner(bundle, threads=threads)
    if backend in ("ort", "ort-cuda", "ort-trt"):
        from cvexport.backends.ort.runner import PROVIDERS, OrtRunner

        return OrtRunner(bundle, providers=PROVIDERS[backend], threads=threads)
    if backend == "trt":
        from cvexport.backends.trt.runner import TrtRunner

        return TrtRunner(bundle)
    if backend.startswith("openvino") and backend in BACKENDS:
        from cvexport.backends.openvino.runner import OpenVinoRunner

        return OpenVinoRunner(bundle, backend, threads=threads)
    if backend == AUTO:
        raise CvexportError("backend 'auto' is a choice to resolve first (cvexport.backend_choice.resolve_backend)")
    raise CvexportError(f"unknown backend '{backend}'; choose one of: {', '.join(BACKENDS)}")


# What the commands' --backend also takes: "auto", the measured choice per bundle and CPU
# (cvexport.backend_choice, resolved by the commands before a runner is made).
AUTO = "auto"


def check_backends(backends, allow_auto: bool = True) -> list[str]:
    """Validated, de-duplicated backend names in the order given (CvexportError for unknown ones)."""
    known = (*BACKENDS, AUTO) if allow_auto else BACKENDS
    names = list(dict.fromkeys(b.strip() for b in backends if b.strip()))
    if not names:
        raise CvexportError(f"no backend given; choose from: {', '.join(known)}")
    unknown = [b for b in names if b not in known]
    if unknown:
        raise CvexportError(f"unknown backend '{unknown[0]}'; choose from: {', '.join(known)}")
    return names


def open_or_skip(bundle: Bundle, backend: str, threads: int | None, several: bool,
                 warn=None) -> tuple[Runner | None, str | None]:
    """(runner, None), or (None, why) when ``backend`` cannot run here and ``several`` backends were asked for.

    With one backend its error propagates (one line, naming what to install); with several,
    an unusable one is skipped with a warning (``warn``, stderr by default) so the others still run.
    A GPU provider of ONNX Runtime that falls back to the CPU counts as unusable (``create_session``).
    """
    from cvexport.errors import stderr_warning

    try:
        return create_runner(bundle, backend, threads=threads), None
    except CvexportError as exc:
        if not several:
            raise
        (warn or stderr_warning)(f"skipping backend {backend}: {exc}")
        return None, str(exc)
