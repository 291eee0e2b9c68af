"""Whether TensorRT can run here, and what it runs on: importing ``tensorrt`` (inside
functions, so importing this module works without it), its logger and plugins, the GPU's
name and compute capability, and a one-line reason when TensorRT or CUDA is missing."""

from __future__ import annotations


import sys
import threading

from typing import Any

from cvexport.errors import CvexportError, first_line
from cvexport.backends.trt.settings import INSTALL_HINT

CUDA_HINT = ("CUDA is not available here (torch.cuda.is_available() is False): TensorRT needs an NVIDIA GPU, its "
             "driver and a CUDA build of torch; or use --backend ort")


def import_tensorrt():
    """The ``tensorrt`` module, or CvexportError saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        if sys.modules.get("tensorrt", ...) is None or isinstance(exc, ModuleNotFoundError):
            raise CvexportError(f"TensorRT is not installed; {INSTALL_HINT}") from None
        raise CvexportError(f"TensorRT is installed but failed to load ({first_line(exc)}); {INSTALL_HINT}") from None
    except OSError as exc:  # a missing libnvinfer.so and the like
        raise CvexportError(f"TensorRT is installed but failed to load ({first_line(exc)}); {INSTALL_HINT}") from None
    return trt


# One TensorRT logger for the process. ``init_libnvinfer_plugins`` keeps a raw pointer to the
# logger it is given (the plugin library logs through it for as long as the process lives), so
# that logger must never be freed: NVIDIA's samples keep one global logger for the same reason.
# Builder, Runtime and the plugin library all get this one. A logger made for another
# ``tensorrt`` module object (only tests swap modules) is kept referenced, never freed.
_LOGGER_LOCK = threading.Lock()
_LOGGERS: list[tuple[Any, Any]] = []  # (tensorrt module, its logger); keeps both alive, so ids stay unique
_PLUGIN_NAMESPACES: set[tuple[int, str]] = set()  # (id of the module, namespace) already initialised


def trt_logger(trt=None):
    """The process's TensorRT logger (``trt.Logger(WARNING)``), created on first use."""
    trt = trt if trt is not None else import_tensorrt()
    with _LOGGER_LOCK:
        for module, logger in reversed(_LOGGERS):
            if module is trt:
                return logger
        logger = trt.Logger(trt.Logger.WARNING)
        _LOGGERS.append((trt, logger))
        return logger


def init_plugins(trt, namespace: str = "") -> None:
    """Register TensorRT's built-in plugins (EfficientNMS_TRT, ...) once per process and namespace,
    with the shared logger."""
    logger = trt_logger(trt)
    with _LOGGER_LOCK:
        key = (id(trt), namespace)
        if key in _PLUGIN_NAMESPACES:
            return
        trt.init_libnvinfer_plugins(logger, namespace)
        _PLUGIN_NAMESPACES.add(key)


def tensorrt_available() -> bool:
    """True when ``import tensorrt`` works (says nothing about a GPU; see trt_unavailable_reason)."""
    try:
        import_tensorrt()
    except CvexportError:
        return False
    return True


def trt_version() -> str | None:
    """``tensorrt.__version__``, or None when TensorRT cannot be imported."""
    try:
        return str(import_tensorrt().__version__)
    except CvexportError:
        return None


def trt_unavailable_reason() -> str | None:
    """None when TensorRT can build and run here (importable and a CUDA GPU visible), else why not.

    For ``--backend auto``: build an engine when this returns None, otherwise log the reason
    and stay on ONNX Runtime.
    """
    try:
        import_tensorrt()
        gpu_identity()
    except CvexportError as exc:
        return str(exc)
    return None


def gpu_identity(device: int | None = None) -> tuple[str, str]:
    """(GPU name, compute capability "8.7") of the CUDA device, via torch."""
    import torch

    if not torch.cuda.is_available():
        raise CvexportError(CUDA_HINT)
    index = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), f"{major}.{minor}"


