"""TensorRT backend: a bundle's engine behind the common Runner interface.

The engine comes from ``cvexport.backends.trt.builder.ensure_engine`` (a matching cached engine in
``<bundle>/engines/``, or a fresh build), or from an explicit ``engine_path``. Before
loading, its metadata is checked against this machine's TensorRT and GPU, so a mismatch is
a one-line error that says how to rebuild instead of a crash inside TensorRT.

CUDA memory is managed with torch CUDA tensors, and only with them. torch is already a base
dependency and ships the CUDA runtime, so this adds nothing to install (no pycuda or
cuda-python, which would be a second CUDA binding with its own context handling); it gives
device buffers through its caching allocator, pinned host buffers whose numpy views make
staging a plain ``np.copyto``, streams, timing events and CUDA graphs. The cost: torch must
be a CUDA build (on Jetson, NVIDIA's torch wheels for JetPack).

Per thread: one execution context, one CUDA stream and four timing events. Per thread and
input shape: device buffers for every I/O tensor and pinned host buffers, allocated on
first use and reused. With ``cuda_graph=True`` a shape's second call in a row captures
``execute_async_v3`` into a CUDA graph (TensorRT asks for one plain run after a shape
change before capture) and later calls replay it; a capture that fails falls back to plain
execution. A graph holds the input shape and the execution context's state as they were at
capture, so it is only replayed while the context has run nothing else: when the thread's
context switches to another input shape, the graph of the shape it leaves is dropped and
that shape is captured again (after one plain run) when it comes back.

The TensorRT logger is the process-wide one of ``cvexport.backends.trt.builder.trt_logger`` (the
plugin library keeps a pointer to it).

``last_timings`` (per thread) holds the last call's H2D, compute and D2H times in ms,
measured with CUDA events on the runner's stream.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cvexport.bundle import Bundle
from cvexport.errors import CvexportError
from cvexport.runtime.base import Runner


def _import_torch():
    """torch (a seam for the CPU tests, which hand the runner a fake CUDA namespace)."""
    import torch

    return torch


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class _Output:
    device: Any  # torch CUDA tensor
    host: Any  # pinned torch CPU tensor
    host_np: np.ndarray  # numpy view of ``host``


@dataclass
class _ShapeBuffers:
    shape: tuple[int, ...]
    device_in: Any
    host_in: Any
    host_in_np: np.ndarray
    outputs: dict[str, _Output]
    runs: int = 0
    graph: Any = None  # valid only while this shape is the context's current one
    graph_failed: bool = False
    captures: int = 0


@dataclass
class _ThreadState:
    context: Any
    stream: Any
    events: list
    buffers: dict[tuple[int, ...], _ShapeBuffers] = field(default_factory=dict)
    bound: _ShapeBuffers | None = None  # buffers whose shape and addresses the context holds
    runs_since_bind: int = 0  # runs of the context since it was last set to ``bound``
    timings: dict[str, float] = field(default_factory=dict)


class TrtRunner(Runner):
    """Runs a bundle through a TensorRT engine on the GPU.

    Args:
        bundle: the bundle.
        options: engine options (default: EngineOptions.from_bundle(bundle)).
        engine_path: use this engine file (its metadata JSON must be beside it).
        build: build the engine when no matching one is cached (default); False raises.
        cache_dir: where engines live (default <bundle>/engines).
        cuda_graph: capture and replay CUDA graphs per input shape.
        log: receives progress lines (default: stderr).
        device: CUDA device index (default: the current device).
    """

    name = "trt"

    def __init__(self, bundle: Bundle, options=None, *, engine_path: str | Path | None = None, build: bool = True,
                 cache_dir: str | Path | None = None, cuda_graph: bool = False,
                 log: Callable[[str], None] | None = None, device: int | None = None):
        super().__init__(bundle)
        from cvexport.backends.trt import environment

        self._log = log or _stderr
        trt = environment.import_tensorrt()
        gpu_name, capability = environment.gpu_identity(device)  # CvexportError when CUDA is unavailable
        torch = _import_torch()

        self._trt = trt
        self._torch = torch
        self._device = torch.cuda.current_device() if device is None else int(device)
        self.cuda_graph = bool(cuda_graph)
        self.engine_path = self._resolve_engine(bundle, options, engine_path, build, cache_dir)
        self.engine_metadata = self._check_metadata(self.engine_path, gpu_name, capability)
        self._runtime, self._engine = self._load(self.engine_path)
        self._input_dtype, self._outputs = self._read_io()
        self._contract = {o.name: np.dtype(o.dtype) for o in bundle.manifest.outputs}
        self._local = threading.local()
        self._states: list[_ThreadState] = []
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------
    def _resolve_engine(self, bundle, options, engine_path, build, cache_dir) -> Path:
        from cvexport.backends.trt.builder import ensure_engine
        from cvexport.backends.trt.loader import engines_dir, find_any_engine, find_engine
        from cvexport.backends.trt.cache import list_engines, read_metadata

        if engine_path is not None:
            path = Path(engine_path)
            if not path.is_file():
                raise CvexportError(f"engine not found: {path}; build one with 'cvexport build "
                                    f"{bundle.manifest.model} --backend trt'")
            return path
        with self._torch.cuda.device(self._device):  # the builder reads the current device's name
            if options is None:  # no preference: any engine built for this model, TensorRT and GPU
                path = find_any_engine(bundle, cache_dir=cache_dir)
                if path is not None:
                    self._log(f"using engine {path}")
                    return path
            if build:
                return ensure_engine(bundle, options, self._log, cache_dir=cache_dir)
            path, reason = find_engine(bundle, options, cache_dir=cache_dir)
        if path is not None:
            return path
        existing = list_engines(engines_dir(bundle, cache_dir))
        if existing:  # say what is wrong with the newest one (version / GPU) before the generic miss
            newest, _ = existing[0]
            self._check_metadata(newest, *self._gpu(), metadata=read_metadata(newest))
        raise CvexportError(f"no matching TensorRT engine for {bundle.path} ({reason}); build it with "
                            f"'cvexport build {bundle.manifest.model} --backend trt'")

    def _gpu(self) -> tuple[str, str]:
        from cvexport.backends.trt import environment

        return environment.gpu_identity(self._device)

    def _check_metadata(self, path: Path, gpu_name: str, capability: str, metadata=None):
        from cvexport.backends.trt.cache import check_engine_compatible, read_metadata

        metadata = metadata or read_metadata(path)
        for warning in check_engine_compatible(metadata, str(self._trt.__version__), gpu_name, capability, path):
            self._log(f"warning: {warning}")
        return metadata

    def _load(self, path: Path):
        from cvexport.backends.trt.environment import init_plugins, trt_logger

        trt = self._trt
        init_plugins(trt)  # EfficientNMS_TRT and the other built-in plugins, with the shared logger
        runtime = trt.Runtime(trt_logger(trt))
        if self.engine_metadata.version_compatible and hasattr(runtime, "engine_host_code_allowed"):
            runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime
        with self._torch.cuda.device(self._device):
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise CvexportError(
                f"TensorRT could not load {path} (see the TensorRT messages above; usual causes: built by another "
                "TensorRT or GPU, a plugin library missing, or out of GPU memory); delete it and rebuild with "
                f"'cvexport build {self.bundle.manifest.model} --backend trt'"
            )
        return runtime, engine

    def _read_io(self) -> tuple[np.dtype, list[tuple[str, np.dtype]]]:
        trt, engine = self._trt, self._engine
        inputs, outputs = [], []
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            try:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            except TypeError:
                raise CvexportError(f"engine tensor '{name}' has type {engine.get_tensor_dtype(name)}, which numpy "
                                    "cannot hold; rebuild the bundle") from None
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append((name, dtype))
            else:
                outputs.append((name, dtype))
        if [name for name, _ in inputs] != [self.input_name]:
            raise CvexportError(f"engine inputs {[n for n, _ in inputs]} do not match the bundle input "
                                f"'{self.input_name}'; delete {self.engine_path} and rebuild it")
        expected = self.bundle.manifest.output_names
        if sorted(name for name, _ in outputs) != sorted(expected):
            raise CvexportError(f"engine outputs {[n for n, _ in outputs]} do not match the bundle outputs "
                                f"{expected}; delete {self.engine_path} and rebuild it")
        return inputs[0][1], outputs

    # -- per thread, per shape -----------------------------------------------------
    def _thread_state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is not None:
            return state
        if self._engine is None:
            raise CvexportError("this TensorRT runner is closed; create a new one")
        torch = self._torch
        with torch.cuda.device(self._device):
            context = self._engine.create_execution_context()
            if context is None:
                raise CvexportError("TensorRT could not create an execution context (out of GPU memory?); "
                                    "close other GPU programs or use fewer threads")
            stream = torch.cuda.Stream(device=self._device)
            events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        state = _ThreadState(context=context, stream=stream, events=events)
        self._local.state = state
        with self._lock:
            self._states.append(state)
        return state

    def _torch_dtype(self, dtype: np.dtype):
        return self._torch.from_numpy(np.empty(0, dtype=dtype)).dtype

    @staticmethod
    def _leave_bound_shape(state: _ThreadState) -> None:
        """The context is about to take another shape: the graph captured for the current one
        would replay against state that is no longer there, so drop it."""
        if state.bound is not None:
            state.bound.graph = None
        state.bound = None
        state.runs_since_bind = 0

    def _allocate(self, state: _ThreadState, shape: tuple[int, ...]) -> _ShapeBuffers:
        torch, context = self._torch, state.context
        self._leave_bound_shape(state)
        if not context.set_input_shape(self.input_name, shape):
            raise CvexportError(f"TensorRT rejected input shape {list(shape)} for this engine; rebuild the engine "
                                "for this batch range")
        device = torch.device("cuda", self._device)
        in_dtype = self._torch_dtype(self._input_dtype)
        host_in = torch.empty(shape, dtype=in_dtype, pin_memory=True)
        outputs = {}
        for name, dtype in self._outputs:
            out_shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in out_shape):
                raise CvexportError(f"engine output '{name}' has a data-dependent shape {list(out_shape)}; the TensorRT "
                                    "runner needs the fixed output contract (rebuild the bundle)")
            torch_dtype = self._torch_dtype(dtype)
            host = torch.empty(out_shape, dtype=torch_dtype, pin_memory=True)
            outputs[name] = _Output(device=torch.empty(out_shape, dtype=torch_dtype, device=device), host=host,
                                    host_np=host.numpy())
        buffers = _ShapeBuffers(shape=shape, device_in=torch.empty(shape, dtype=in_dtype, device=device),
                                host_in=host_in, host_in_np=host_in.numpy(), outputs=outputs)
        state.buffers[shape] = buffers
        return buffers

    def _bind(self, state: _ThreadState, buffers: _ShapeBuffers) -> None:
        if state.bound is buffers:
            return
        self._leave_bound_shape(state)
        context = state.context
        if not context.set_input_shape(self.input_name, buffers.shape):
            raise CvexportError(f"TensorRT rejected input shape {list(buffers.shape)}")
        context.set_tensor_address(self.input_name, buffers.device_in.data_ptr())
        for name, out in buffers.outputs.items():
            context.set_tensor_address(name, out.device.data_ptr())
        state.bound = buffers

    def _capture(self, state: _ThreadState, buffers: _ShapeBuffers) -> None:
        """Record execute_async_v3 for this shape into a CUDA graph (after one plain run)."""
        torch = self._torch
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=state.stream, capture_error_mode="thread_local"):
                if not state.context.execute_async_v3(state.stream.cuda_stream):
                    raise RuntimeError("execute_async_v3 returned False during capture")
            buffers.graph = graph
            buffers.captures += 1
            if buffers.captures == 1:  # recaptures after a shape switch are routine; say it once
                self._log(f"captured a CUDA graph for input shape {list(buffers.shape)}")
        except Exception as exc:  # torch / CUDA raise various types; plain execution still works
            buffers.graph_failed = True
            self._log(f"warning: CUDA graph capture failed for shape {list(buffers.shape)} "
                      f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); running without it")

    # -- inference -----------------------------------------------------------------
    def _infer(self, array: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        if self._engine is None:
            raise CvexportError("this TensorRT runner is closed; create a new one")
        state = self._thread_state()
        if array.dtype != self._input_dtype:
            array = array.astype(self._input_dtype)
        shape = tuple(int(d) for d in array.shape)
        with torch.cuda.device(self._device):
            buffers = state.buffers.get(shape) or self._allocate(state, shape)
            self._bind(state, buffers)
            if self.cuda_graph and buffers.graph is None and not buffers.graph_failed and state.runs_since_bind >= 1:
                self._capture(state, buffers)
            np.copyto(buffers.host_in_np, array)
            stream = state.stream
            start, copied_in, computed, copied_out = state.events
            with torch.cuda.stream(stream):
                start.record(stream)
                buffers.device_in.copy_(buffers.host_in, non_blocking=True)
                copied_in.record(stream)
                if buffers.graph is not None:
                    buffers.graph.replay()
                elif not state.context.execute_async_v3(stream.cuda_stream):
                    raise CvexportError("TensorRT execution failed (see the TensorRT messages above)")
                computed.record(stream)
                for out in buffers.outputs.values():
                    out.host.copy_(out.device, non_blocking=True)
                copied_out.record(stream)
            copied_out.synchronize()
            buffers.runs += 1
            state.runs_since_bind += 1
            state.timings = {
                "h2d_ms": start.elapsed_time(copied_in),
                "compute_ms": copied_in.elapsed_time(computed),
                "d2h_ms": computed.elapsed_time(copied_out),
                "total_ms": start.elapsed_time(copied_out),
            }
        # Copies: the pinned buffers are reused by the next call.
        return {name: np.array(out.host_np, dtype=self._contract.get(name, out.host_np.dtype), copy=True)
                for name, out in buffers.outputs.items()}

    @property
    def last_timings(self) -> dict[str, float]:
        """This thread's last call: h2d_ms, compute_ms, d2h_ms, total_ms (CUDA events); {} before any."""
        state = getattr(self._local, "state", None) if hasattr(self, "_local") else None
        return dict(state.timings) if state is not None else {}

    def close(self) -> None:
        """Free contexts, graphs and buffers, then the engine and the runtime (in that order)."""
        if getattr(self, "_engine", None) is None:
            return
        with self._lock:
            states, self._states = self._states, []
        for state in states:
            try:
                state.stream.synchronize()
            except Exception:  # a broken CUDA context must not stop the cleanup
                pass
            for buffers in state.buffers.values():
                buffers.graph = None
            state.buffers.clear()
            state.bound = None
            state.context = None
        self._engine = None
        self._runtime = None
