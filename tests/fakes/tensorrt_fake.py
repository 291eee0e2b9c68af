"""The fake ``tensorrt`` module the CPU tests build and run engines with (``tests/test_trt_fake.py``
holds the tests that keep it honest; the ``fake_trt`` fixture in ``tests/conftest.py`` installs it).

The fake defines only names that NVIDIA's Python bindings define at the fake's version: its
classes carry the real class names, every public method, property and enum member it has is
checked against the name lists in ``tests/data/tensorrt_api/`` (read from the pybind11
sources of NVIDIA/TensorRT at release tags), and assigning an attribute the real class has no
setter for raises AttributeError, as on the real pybind object. Where real TensorRT is
installed, ``tests/test_trt_api_names.py`` also checks every name here against the real module.

Behaviour is modelled only where cvexport depends on it:

- the parser reads the ONNX file, so the network has the graph's real inputs and outputs;
- ``build_serialized_network`` fails (None) for a dynamic input without a profile shape, drives
  an attached IProgressMonitor (and stops when ``step_complete`` returns False), and serializes
  a small JSON "plan" that records the flags and ``plugins_to_serialize``;
- timing caches carry the TensorRT version and GPU they were made with: a blob from another
  version cannot be read (``create_timing_cache`` returns None), one from another GPU is
  refused by ``set_timing_cache(..., ignore_mismatch=False)`` (returns False);
- an execution context computes ``relu`` on "device" memory, and a CUDA graph captured from it
  replays against the state the context's last enqueue left (as the real one reads buffers
  the context owns), so replaying after the context ran another shape gives wrong outputs;
- ``FakeTorch`` is the slice of torch's CUDA API that ``TrtRunner`` uses, on CPU tensors.

Recording helpers for the tests are underscore names (``fake._calls``, ``fake._names(kind)``).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import sys
import types
from pathlib import Path

import numpy as np

API_DIR = Path(__file__).parent.parent / "data" / "tensorrt_api"
# (first version a list stands for, tag); a version uses the newest list at or below it within
# its major, or the oldest list of its major when it is older than all of them.
API_RANGES = (((10, 3), "v10.3.0"), ((10, 9), "v10.9.0"), ((10, 16), "v10.16"), ((11, 0), "v11.0"), ((11, 1), "v11.1"))
MODULE_ATTRS = {"__version__"}  # set by the wheel's __init__.py, not by the bindings


@functools.cache
def load_api(tag: str) -> dict:
    return json.loads((API_DIR / f"{tag}.json").read_text())


def api_tag_for(version: str) -> str:
    major, minor = (int(part) for part in str(version).split(".")[:2])
    same_major = [(start, tag) for start, tag in API_RANGES if start[0] == major]
    if not same_major:
        raise LookupError(f"no TensorRT {major}.x name list in {API_DIR}")
    below = [tag for start, tag in same_major if start <= (major, minor)]
    return below[-1] if below else same_major[0][1]


def api_for(version: str) -> dict:
    return load_api(api_tag_for(version))


def class_members(api: dict, name: str, key: str = "classes") -> set[str]:
    """Members of class ``name`` and of its bases (``key="settable"``: those with a setter)."""
    members = set(api.get(key, {}).get(name, ()))
    for base in api.get("bases", {}).get(name, ()):
        members |= class_members(api, base, key)
    return members


def public_names(obj) -> set[str]:
    """Public names a class (or module) defines itself, without object's and without dunders."""
    names = set()
    for klass in getattr(obj, "__mro__", (obj,)):
        if klass is object:
            continue
        names |= {name for name in vars(klass) if not name.startswith("_")}
    return names


# --------------------------------------------------------------------------------------
# Fake CUDA memory, streams and graphs, shared by FakeTensorRT and FakeTorch
# --------------------------------------------------------------------------------------
class FakeDevice:
    """Device memory by address, and the CUDA graph being captured (if any)."""

    def __init__(self):
        self.memory: dict[int, object] = {}  # data_ptr -> torch CPU tensor standing for device memory
        self.capturing: list | None = None  # the recorded work while a graph is being captured
        self.replays = 0


class FakeTorch(types.SimpleNamespace):
    """What TrtRunner uses of torch: tensors (CPU, registered as "device" memory when
    ``device=`` is given), ``torch.cuda`` devices, streams, timing events and CUDA graphs."""

    def __init__(self, device: FakeDevice):
        import torch

        memory = device.memory

        def empty(shape, dtype=None, pin_memory=False, device=None):
            tensor = torch.empty(tuple(shape), dtype=dtype)
            if device is not None:
                memory[tensor.data_ptr()] = tensor
            return tensor

        class Stream:
            def __init__(self, device=None):
                self.cuda_stream = id(self)

            def synchronize(self):
                pass

        class Event:
            def __init__(self, enable_timing=False):
                pass

            def record(self, stream=None):
                pass

            def synchronize(self):
                pass

            def elapsed_time(self, other):
                return 0.0

        class CUDAGraph:
            def __init__(self):
                self.work = []

            def replay(self):
                device.replays += 1
                for step in self.work:
                    step()

        @contextlib.contextmanager
        def graph(cuda_graph, stream=None, capture_error_mode=None):
            device.capturing = cuda_graph.work
            try:
                yield
            finally:
                device.capturing = None

        cuda = types.SimpleNamespace(
            is_available=lambda: True, current_device=lambda: 0, device=lambda index: contextlib.nullcontext(),
            stream=lambda s: contextlib.nullcontext(), Stream=Stream, Event=Event, CUDAGraph=CUDAGraph, graph=graph,
        )
        super().__init__(empty=empty, device=lambda *args: ("cuda", *args), from_numpy=torch.from_numpy, cuda=cuda)


# --------------------------------------------------------------------------------------
# The fake tensorrt module
# --------------------------------------------------------------------------------------
def _enum(api: dict, name: str, members: list[str]):
    """An IntEnum holding ``members`` (each must exist at this version) with their source order as value."""
    real = api["enums"][name]
    missing = [m for m in members if m not in real]
    assert not missing, f"the fake defines {name}.{missing} but TensorRT {api['tag']} has no such member"
    return enum.IntEnum(name.split(".")[-1], {m: real.index(m) for m in members})


def _onnx_io(path: str):
    """(inputs, outputs, op types) of an ONNX file: inputs as (name, dims with -1 for symbolic)."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}

    def dims(value):
        return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)

    inputs = [(v.name, dims(v)) for v in model.graph.input if v.name not in initializers]
    outputs = [(v.name, dims(v)) for v in model.graph.output]
    return inputs, outputs, {node.op_type for node in model.graph.node}


class FakeTensorRT(types.ModuleType):
    """A ``tensorrt`` module for version ``version``, restricted to that version's real names.

    Args:
        creators: plugin names the registry has creators for.
        parse_errors: the parser fails with these messages.
        vc_plugin_libraries: what ``get_used_vc_plugin_libraries`` reports for a graph with plugin nodes.
        gpu: the GPU timing caches are stamped with.
        dla_cores: ``Builder.num_DLA_cores``.
        build_phases: (phase name, steps) the builder reports to a progress monitor.
    """

    def __init__(self, version, *, creators=("EfficientNMS_TRT",), parse_errors=(), vc_plugin_libraries=(),
                 gpu="Fake GPU", dla_cores=0, build_phases=(("Building engine", 3),)):
        super().__init__("tensorrt")
        self.__version__ = str(version)
        api = api_for(version)
        self._api = api
        self._calls = []
        self._device = FakeDevice()
        self._plugin_logger = None
        major, minor = (int(part) for part in str(version).split(".")[:2])
        record, fake, device = self._calls.append, self, self._device
        settable = functools.partial(class_members, api, key="settable")

        # -- enums (names picked by hand, checked against the list; values in source order)
        self.BuilderFlag = _enum(api, "BuilderFlag", (["FP16", "INT8"] if major < 11 else [])
                                 + ["GPU_FALLBACK", "TF32", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"])
        self.NetworkDefinitionCreationFlag = _enum(api, "NetworkDefinitionCreationFlag",
                                                   (["EXPLICIT_BATCH"] if major < 11 else []) + ["STRONGLY_TYPED"])
        self.MemoryPoolType = _enum(api, "MemoryPoolType", ["WORKSPACE"])
        self.HardwareCompatibilityLevel = _enum(
            api, "HardwareCompatibilityLevel",
            ["NONE", "AMPERE_PLUS"] + (["SAME_COMPUTE_CAPABILITY"] if (major, minor) >= (10, 9) else []))
        self.DeviceType = _enum(api, "DeviceType", ["GPU", "DLA"])
        self.TensorIOMode = _enum(api, "TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
        self.DataType = _enum(api, "DataType", ["FLOAT", "HALF", "INT8", "INT32", "BOOL"])
        Severity = _enum(api, "ILogger.Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])
        DataType, TensorIOMode = self.DataType, self.TensorIOMode

        class _Strict:
            """Setting a name the real class has no setter for raises, as on a pybind object."""

            def __setattr__(self, name, value):
                if not name.startswith("_") and name not in settable(type(self).__name__):
                    raise AttributeError(f"'tensorrt.{type(self).__name__}' object has no settable attribute "
                                         f"'{name}' (TensorRT {fake.__version__})")
                object.__setattr__(self, name, value)

        class ILogger(_Strict):
            pass

        for member in Severity:
            setattr(ILogger, member.name, member)
        ILogger.Severity = Severity

        class Logger(ILogger):
            def __init__(self, min_severity=Severity.WARNING):
                self.min_severity = min_severity

            def log(self, severity, msg):
                record(("log", severity, msg))

        class IPluginRegistry(_Strict):
            def get_creator(self, name, version, namespace=""):
                record(("get_creator", name, version))
                return object() if name in creators else None

        if major < 11:  # removed in 11.0
            def get_plugin_creator(self, type, version, plugin_namespace=""):
                record(("get_plugin_creator", type, version))
                return object() if type in creators else None

            IPluginRegistry.get_plugin_creator = get_plugin_creator

        class IProgressMonitor:
            """Base class a Python progress monitor derives from (a pybind trampoline in TensorRT,
            whose methods are pure virtual)."""

            def __init__(self):
                pass

            def phase_start(self, phase_name, parent_phase, num_steps):
                raise RuntimeError('Tried to call pure virtual function "IProgressMonitor::phaseStart"')

            def step_complete(self, phase_name, step):
                raise RuntimeError('Tried to call pure virtual function "IProgressMonitor::stepComplete"')

            def phase_finish(self, phase_name):
                raise RuntimeError('Tried to call pure virtual function "IProgressMonitor::phaseFinish"')

        class IOptimizationProfile(_Strict):
            def __init__(self):
                self._shapes = {}

            def set_shape(self, input, min, opt, max):
                record(("set_shape", input, tuple(min), tuple(opt), tuple(max)))
                self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

        class ITimingCache(_Strict):
            def __init__(self, stamp):
                self._stamp = stamp

            def serialize(self):
                return json.dumps({"timing_cache": self._stamp}).encode()

        here = {"trt": str(version), "gpu": gpu}

        class IBuilderConfig(_Strict):
            # properties of the real IBuilderConfig, at TensorRT's defaults
            builder_optimization_level = 3
            progress_monitor = None
            plugins_to_serialize = ()
            hardware_compatibility_level = self.HardwareCompatibilityLevel.NONE
            default_device_type = self.DeviceType.GPU
            DLA_core = -1

            def __init__(self):
                self._flags, self._profiles, self._timing_cache = set(), [], None

            def __setattr__(self, name, value):
                super().__setattr__(name, value)
                if not name.startswith("_"):
                    record(("config." + name, value))

            def set_flag(self, flag):
                record(("set_flag", flag.name))
                self._flags.add(flag.name)

            def clear_flag(self, flag):
                record(("clear_flag", flag.name))
                self._flags.discard(flag.name)

            def set_memory_pool_limit(self, pool, pool_size):
                record(("set_memory_pool_limit", pool.name, pool_size))

            def add_optimization_profile(self, profile):
                record(("add_optimization_profile",))
                self._profiles.append(profile)
                return len(self._profiles) - 1

            def create_timing_cache(self, serialized_timing_cache):
                blob = bytes(memoryview(serialized_timing_cache))
                record(("create_timing_cache", blob))
                if not blob:
                    return ITimingCache(dict(here))
                try:
                    stamp = json.loads(blob)["timing_cache"]
                except (ValueError, KeyError, TypeError):
                    return None  # not a timing cache: TensorRT logs an error and returns nullptr
                if stamp.get("trt") != here["trt"]:
                    return None  # serialized by another TensorRT version
                return ITimingCache(stamp)

            def set_timing_cache(self, cache, ignore_mismatch):
                if not isinstance(cache, ITimingCache):
                    raise TypeError("set_timing_cache(): incompatible function arguments")
                accepted = bool(ignore_mismatch) or cache._stamp == here
                record(("set_timing_cache", accepted))
                if accepted:
                    self._timing_cache = cache
                return accepted

        class ITensor(_Strict):
            name, shape = "", ()  # properties of the real ITensor

            def __init__(self, name, shape):
                self.name, self.shape = name, shape

        class INetworkDefinition(_Strict):
            def __init__(self, flags):
                self._inputs, self._outputs, self._ops = [], [], set()

            @property
            def num_inputs(self):
                return len(self._inputs)

            @property
            def num_outputs(self):
                return len(self._outputs)

            def get_input(self, index):
                return self._inputs[index]

            def get_output(self, index):
                return self._outputs[index]

        class ParserError(_Strict):
            def __init__(self, text):
                self._text = text

            def desc(self):
                return self._text

            def __str__(self):
                return self._text

        class OnnxParser(_Strict):
            def __init__(self, network, logger):
                self._network, self._errors = network, []

            @property
            def num_errors(self):
                return len(self._errors)

            def parse_from_file(self, model):
                record(("parse_from_file", Path(model).name))
                if parse_errors:
                    self._errors = [ParserError(text) for text in parse_errors]
                    return False
                inputs, outputs, ops = _onnx_io(model)
                network = self._network
                network._inputs = [ITensor(name, shape) for name, shape in inputs]
                network._outputs = [ITensor(name, shape) for name, shape in outputs]
                network._ops = ops
                return True

            def get_error(self, index):
                return self._errors[index]

            def get_used_vc_plugin_libraries(self):
                plugin_ops = {op for op in self._network._ops if op.endswith("_TRT")}
                return list(vc_plugin_libraries) if plugin_ops else []

        class Builder(_Strict):
            num_DLA_cores = dla_cores

            def __init__(self, logger):
                self._logger = logger
                record(("Builder", logger))

            def create_network(self, flags=0):
                record(("create_network", flags))
                return INetworkDefinition(flags)

            def create_builder_config(self):
                return IBuilderConfig()

            def create_optimization_profile(self):
                return IOptimizationProfile()

            def build_serialized_network(self, network, config):
                record(("build_serialized_network",))
                monitor = config.progress_monitor
                if monitor is not None:
                    for phase, steps in build_phases:
                        monitor.phase_start(phase, None, steps)
                        for step in range(steps):
                            if not monitor.step_complete(phase, step):
                                record(("build_cancelled", phase))
                                return None
                        monitor.phase_finish(phase)
                shapes = {}
                for profile in config._profiles:
                    shapes.update(profile._shapes)
                for tensor in network._inputs:
                    if any(d < 0 for d in tensor.shape) and tensor.name not in shapes:
                        record(("build_error", f"input {tensor.name} has dynamic dimensions but no profile shape"))
                        return None
                ranges = {t.name: shapes.get(t.name, (t.shape,) * 3) for t in network._inputs}
                plan = {"fake_engine": fake.__version__, "flags": sorted(config._flags),
                        "plugins_to_serialize": list(config.plugins_to_serialize),
                        "inputs": [[name, list(lo), list(hi)] for name, (lo, _, hi) in ranges.items()],
                        "outputs": [t.name for t in network._outputs]}
                return json.dumps(plan).encode()

        class IExecutionContext(_Strict):
            """relu(input) into every output; enqueue stages per-shape state that its kernels read."""

            def __init__(self, engine):
                self._engine, self._shapes, self._addresses = engine, {}, {}
                self._staged = None  # the input shape the last enqueue prepared the context for
                self._plain_run_needed = True

            def set_input_shape(self, name, shape):
                shape = tuple(int(d) for d in shape)
                low, high = self._engine._profile[name]
                ok = len(shape) == len(high) and all(lo <= d <= hi for d, lo, hi in zip(shape, low, high))
                if ok:
                    if shape != self._staged:
                        self._plain_run_needed = True  # TensorRT: enqueue once after a shape change before capture
                    self._shapes[name] = shape
                return ok

            def get_tensor_shape(self, name):
                return self._shapes[self._engine._input]  # outputs have the input's shape (relu)

            def set_tensor_address(self, name, memory):
                self._addresses[name] = int(memory)
                return True

            def _kernel(self, shape, addresses):
                source = device.memory[addresses[self._engine._input]]
                for name in self._engine._outputs:
                    target = device.memory[addresses[name]]
                    if self._staged != shape:  # the graph reads state a later enqueue replaced
                        record(("stale_replay", shape, self._staged))
                        target.fill_(float("nan"))
                    else:
                        target.copy_(source.clamp(min=0))

            def execute_async_v3(self, stream_handle):
                shape = self._shapes.get(self._engine._input)
                names = [self._engine._input, *self._engine._outputs]
                if shape is None or any(name not in self._addresses for name in names):
                    return False
                addresses = dict(self._addresses)
                if device.capturing is not None:
                    if self._plain_run_needed:
                        return False
                    record(("capture", shape))
                    self._staged = shape
                    device.capturing.append(lambda: self._kernel(shape, addresses))
                    return True
                record(("execute", shape))
                self._staged, self._plain_run_needed = shape, False
                self._kernel(shape, addresses)
                return True

        class ICudaEngine(_Strict):
            def __init__(self, plan):
                self._plan = plan
                (self._input, low, high), = plan["inputs"]  # cvexport bundles have one input
                self._outputs = list(plan["outputs"])
                self._profile = {self._input: (tuple(low), tuple(high))}

            @property
            def num_io_tensors(self):
                return 1 + len(self._outputs)

            def get_tensor_name(self, index):
                return [self._input, *self._outputs][index]

            def get_tensor_dtype(self, name):
                return DataType.FLOAT

            def get_tensor_mode(self, name):
                return TensorIOMode.INPUT if name == self._input else TensorIOMode.OUTPUT

            def create_execution_context(self):
                record(("create_execution_context",))
                return IExecutionContext(self)

        class Runtime(_Strict):
            engine_host_code_allowed = False

            def __init__(self, logger):
                self._logger = logger
                record(("Runtime", logger))

            def __setattr__(self, name, value):
                super().__setattr__(name, value)
                if not name.startswith("_"):
                    record(("runtime." + name, value))

            def deserialize_cuda_engine(self, serialized_engine):
                try:
                    plan = json.loads(bytes(serialized_engine))
                except ValueError:
                    return None
                if plan.get("fake_engine") != fake.__version__:
                    return None  # another TensorRT's plan
                if "VERSION_COMPATIBLE" in plan["flags"] and plan["plugins_to_serialize"] \
                        and not self.engine_host_code_allowed:
                    return None  # the embedded plugin/lean-runtime code is refused unless allowed
                return ICudaEngine(plan)

        for klass in (ILogger, Logger, IPluginRegistry, IProgressMonitor, IOptimizationProfile, ITimingCache,
                      IBuilderConfig, ITensor, INetworkDefinition, ParserError, OnnxParser, Builder,
                      IExecutionContext, ICudaEngine, Runtime):
            setattr(self, klass.__name__, klass)
        registry = IPluginRegistry()

        def init_libnvinfer_plugins(logger, namespace):
            record(("init_libnvinfer_plugins", namespace))
            fake._plugin_logger = logger  # TensorRT keeps this pointer for the life of the process
            return True

        def nptype(trt_type):
            mapping = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                       DataType.INT32: np.int32, DataType.BOOL: np.bool_}
            if trt_type in mapping:
                return mapping[trt_type]
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

        self.init_libnvinfer_plugins = init_libnvinfer_plugins
        self.get_plugin_registry = lambda: registry
        self.nptype = nptype

    def _names(self, kind):
        return [call[1] for call in self._calls if call[0] == kind]


def fake_names(fake: FakeTensorRT) -> dict[str, set[str]]:
    """{"": module attributes, class or enum name: its public names} the fake defines."""
    names = {"": {n for n in vars(fake) if not n.startswith("_")} | (MODULE_ATTRS & set(vars(fake)))}
    for name in names[""]:
        value = getattr(fake, name)
        if isinstance(value, type) and issubclass(value, enum.Enum):
            names[name] = set(value.__members__)
        elif isinstance(value, type):
            names[name] = public_names(value)
    return names


def fake_name_problems(fake: FakeTensorRT, api: dict) -> list[str]:
    """Names the fake defines that ``api`` (a name list) lacks."""
    problems: list[str] = []
    module_names = set(api["classes"]) | set(api["enums"]) | set(api["functions"]) | set(api["package_functions"])
    for owner, names in fake_names(fake).items():
        if owner == "":
            problems += [f"tensorrt.{n}" for n in sorted(names - module_names - MODULE_ATTRS)]
            continue
        value = getattr(fake, owner)
        if isinstance(value, type) and issubclass(value, enum.Enum):
            real_name = next((e for e in api["enums"] if e.split(".")[-1] == value.__name__ and
                              (e == owner or e.endswith("." + owner))), owner)
            problems += [f"{owner}.{n}" for n in sorted(names - set(api["enums"].get(real_name, ())))]
        else:
            nested = {e.split(".", 1)[1] for e in api["enums"] if "." in e
                      and e.split(".")[0] in {owner, *api.get("bases", {}).get(owner, ())}}
            problems += [f"{owner}.{n}" for n in sorted(names - class_members(api, owner) - nested)]
    return sorted(problems)


# --------------------------------------------------------------------------------------
# Fixtures and a tiny bundle
# --------------------------------------------------------------------------------------
def fake_installer(monkeypatch):
    """``install(version, **FakeTensorRT kwargs)`` puts a fake ``tensorrt`` in sys.modules (and a
    fake GPU identity in the builder) for the rest of the test; no CUDA needed."""
    from cvexport.backends.trt import environment as trt_environment
    from cvexport.backends.trt import loader as trt_lookup

    monkeypatch.setattr(trt_environment, "gpu_identity", lambda device=None: ("Fake GPU", "8.6"))
    monkeypatch.setattr(trt_lookup, "detect_jetson", lambda: False)

    def install(version, **kwargs):
        fake = FakeTensorRT(version, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        return fake

    return install



def make_bundle(root: Path, precision="fp16", with_plugin=False, layout="NCHW", max_batch=4, extra_inputs=False):
    """A one-input bundle ``y = relu(input)``. ``with_plugin`` adds an EfficientNMS_TRT node fed
    from the input (as in real detection graphs); ``extra_inputs`` instead feeds it from two more
    graph inputs (boxes, scores), a graph whose inputs do not match the bundle's contract."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cvexport.bundle import BUNDLE_FORMAT, MANIFEST, Bundle
    from cvexport.digest import sha256_file
    from cvexport.manifest import Manifest

    root.mkdir(parents=True, exist_ok=True)
    shape = ["batch", 3, 8, 8] if layout == "NCHW" else ["batch", 8, 8, 3]
    nodes = [helper.make_node("Relu", ["input"], ["y"])]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    initializers = []
    if with_plugin or extra_inputs:
        from trt_plugins import EFFICIENT_NMS

        nms_out = ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]
        nodes.append(EFFICIENT_NMS.make_node(["boxes", "scores"], nms_out, name="nms", score_threshold=0.25,
                                             iou_threshold=0.5, max_output_boxes=10, background_class=-1,
                                             score_activation=0, box_coding=0))
        if extra_inputs:
            inputs += [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 10, 4]),
                       helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10, 2])]
        else:  # 3*8*8 values per image -> 32 candidates x (4 box + 2 class scores)
            for name, values in (("rows", [0, 32, 6]), ("b0", [0]), ("b1", [4]), ("s1", [6]), ("axis", [2])):
                initializers.append(numpy_helper.from_array(np.array(values, dtype=np.int64), name))
            nodes[:0] = [helper.make_node("Reshape", ["input", "rows"], ["flat"]),
                         helper.make_node("Slice", ["flat", "b0", "b1", "axis"], ["boxes"]),
                         helper.make_node("Slice", ["flat", "b1", "s1", "axis"], ["scores"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", inputs, outputs, initializers))
    onnx.save(model, str(root / "model.onnx"))
    manifest = {
        "format": BUNDLE_FORMAT, "model": "tiny", "task": "detection", "precision": precision,
        "onnx": {"file": "model.onnx", "sha256": sha256_file(root / "model.onnx"), "opset": 17},
        "input": {"name": "input", "layout": layout, "dtype": "float32", "height": 8, "width": 8,
                  "max_batch": max_batch, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "outputs": [{"name": "y", "dtype": "float32", "shape": shape}],
    }
    (root / MANIFEST).write_text(json.dumps(manifest))
    # Not load_bundle: this toy graph is no task's real contract, which load_bundle's schema
    # checks refuse; the TensorRT layer only reads the fields written here.
    return Bundle(path=root, manifest=Manifest.from_dict(manifest))
