"""An OpenVINO compiled model for a serialized ONNX graph, at an inference precision that is
always asked for, never OpenVINO's default.

Why the precision is always explicit: OpenVINO's CPU plugin runs float graphs in bf16 wherever
the CPU has bf16 units (AMX, AVX-512 BF16) unless told otherwise. That is often 2x faster, and
it is also a different precision from the bundle's, with 8 bits of mantissa against fp32's 24
and fp16's 11; run silently it would make an fp32 bundle give bf16 answers. So each backend
name carries its precision (``openvino`` f32, ``openvino-bf16``, ...), and ``verify`` and the
``auto`` choice judge it with the tolerance of that precision.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass

from cvexport.errors import CvexportError


@dataclass(frozen=True)
class OpenVinoTarget:
    """Where and at what precision OpenVINO runs: a device and its inference precision hint."""

    device: str  # OpenVINO device name: CPU, GPU, NPU
    precision: str  # OpenVINO inference precision hint: f32, bf16, f16
    # The bundle precision whose parity tolerance this precision is judged by ("fp32" adds
    # nothing to the bundle's own; bf16 and f16 round like an fp16 build, bf16 more coarsely).
    tolerance: str

    @property
    def capability(self) -> str | None:
        """The device's OPTIMIZATION_CAPABILITIES entry that running at this precision needs."""
        return {"bf16": "BF16", "f16": "FP16"}.get(self.precision)


# Backend name -> target. GPU and NPU take f16, their native precision (an f32 hint on an NPU
# is refused by the plugin; on an iGPU it is 2-3x slower).
TARGETS = {
    "openvino": OpenVinoTarget("CPU", "f32", "fp32"),
    "openvino-bf16": OpenVinoTarget("CPU", "bf16", "fp16"),
    "openvino-gpu": OpenVinoTarget("GPU", "f16", "fp16"),
    "openvino-npu": OpenVinoTarget("NPU", "f16", "fp16"),
}

INSTALL_HINT = "install it with pip install 'cvexport[openvino]', or use --backend ort"


_core = None
_core_lock = threading.Lock()


def openvino_core():
    """The process's one OpenVINO ``Core``, or a one-line error naming the extra to install.

    One for the life of the process, never one per model, because of signals. Each ``Core``
    loads its own CPU plugin, and the plugin swaps the alternate signal stack of the thread
    that made it for a stack of its own, which it unmaps when the plugin is destroyed; it puts
    the old stack back only when destroyed on that thread, in the reverse order of creation.
    Cores freed in another order or on another thread (a stream's worker, the garbage
    collector) left the main thread's signal stack pointing at unmapped memory, and the next
    signal (Ctrl-C, a service manager's SIGTERM) killed the process with a silent segfault
    instead of a clean stop: OpenVINO 2026.4, two Cores freed first-in-first-out and then a
    SIGINT, exit 139 (tests/test_openvino.py reproduces it). One Core that is never freed
    keeps that stack mapped."""
    global _core
    with _core_lock:
        if _core is None:
            try:
                import openvino as ov
            except ImportError:
                raise CvexportError(f"OpenVINO is not installed; {INSTALL_HINT}") from None
            _core = ov.Core()
        return _core


def check_target(core, target: OpenVinoTarget) -> None:
    """One line when the device is absent or cannot compute at the target's precision (a CPU
    without bf16 units would silently run f32 under a bf16 hint: measured as bf16, it is not)."""
    if target.device not in core.available_devices:
        found = ", ".join(core.available_devices) or "none"
        raise CvexportError(f"OpenVINO has no {target.device} device here (it found: {found}); "
                            "use --backend openvino for its CPU device")
    needed = target.capability
    if needed is not None and needed not in core.get_property(target.device, "OPTIMIZATION_CAPABILITIES"):
        raise CvexportError(f"this {target.device} ({core.get_property(target.device, 'FULL_DEVICE_NAME')}) has "
                            f"no {target.precision} units, so OpenVINO would run f32 instead; "
                            "use --backend openvino (f32)")


def compile_graph(model_bytes: bytes, target: OpenVinoTarget, threads: int | None = None):
    """(OpenVINO ``CompiledModel`` of serialized ONNX ``model_bytes`` on ``target``, the graph's
    output names in the compiled model's order).

    Graphs with TensorRT plugin nodes (the ``efficient`` NMS flavor) are refused in one line:
    OpenVINO has no kernel for them, and the ONNX NMS flavor is the same contract in standard
    operators. The latency hint keeps one stream, as one camera's frames need."""
    import onnx

    from trt_plugins import ort as plugin_ort

    core = openvino_core()
    check_target(core, target)
    try:
        model = onnx.load_from_string(model_bytes)
    except Exception as exc:  # protobuf DecodeError
        raise CvexportError(f"the ONNX model could not be parsed ({exc.__class__.__name__}); rebuild the bundle") from None
    if plugin_ort.has_plugin_nodes(model):
        raise CvexportError("this bundle's NMS is TensorRT's EfficientNMS plugin, which OpenVINO cannot run; "
                            "rebuild it with --nms onnx (the same outputs in standard operators) or use --backend ort")
    config = {"INFERENCE_PRECISION_HINT": target.precision, "PERFORMANCE_HINT": "LATENCY"}
    if target.device == "CPU":
        # Unpinned threads: pinned (the CPU plugin's default under the latency hint), a thread
        # stays on its core while another process holds that core, and the inference waits for
        # it; unpinned, the scheduler can move it. SSD fp32, batch 1, 2-core AMD EPYC (AVX-512
        # VNNI/BF16, no AMX): with other jobs taking about one core, unpinned was faster in each
        # of 8 interleaved runs (p50 17.8-26.2 ms against 26.3-37.3 ms pinned); alone, or with
        # only our one-core busy loop, the two were equal within 5 % (9.9 vs 10.6 ms idle).
        config["ENABLE_CPU_PINNING"] = False
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
    try:
        compiled = core.compile_model(core.read_model(io.BytesIO(model_bytes)), target.device, config)
    except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line trace of its frontend
        raise CvexportError(f"OpenVINO could not compile the model: {str(exc).strip().splitlines()[0]}") from None
    return compiled, output_names(compiled, [output.name for output in model.graph.output])


def output_names(compiled, graph_outputs: list[str]) -> list[str]:
    """The graph's output name of each compiled output, in the compiled model's order. An
    OpenVINO output carries every tensor name that was fused into it (a segmenter's ``labels``
    is also its ArgMax's ``argmax_class``), and ``get_any_name`` may return any of them."""
    wanted = set(graph_outputs)
    names = []
    for output in compiled.outputs:
        found = sorted(wanted & set(output.get_names()))
        if len(found) != 1:
            raise CvexportError(f"OpenVINO's compiled model has an output named {sorted(output.get_names())}, "
                                f"not one of the graph's outputs {graph_outputs}; rebuild the bundle")
        names.append(found[0])
    return names
