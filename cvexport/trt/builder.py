"""Building TensorRT engines for bundles: the thin layer between a BuilderPlan and TensorRT.

This module and ``cvexport.runtime.trt_runner`` are the only ones that import ``tensorrt``,
always inside functions, so importing them works without TensorRT or a GPU. The decisions
(which flags, which profile, what a version supports) are made in ``cvexport.trt.settings``
and the cache bookkeeping in ``cvexport.trt.cache``; here they are only applied. Every
TensorRT attribute that differs between versions is feature-detected with ``hasattr``.

Engines go to ``<bundle>/engines/`` (or ``cache_dir``) with a JSON beside each; a timing
cache per GPU and TensorRT version lives there too and makes rebuilds faster.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cvexport.errors import CvexportError
from cvexport.trt.cache import (
    EngineMetadata,
    describe_cache_miss,
    engine_filename,
    find_cached_engine,
    key_fields,
    list_engines,
    key_from_fields,
    write_engine,
)
from cvexport.trt.settings import (
    INSTALL_HINT,
    BuilderPlan,
    EngineOptions,
    detect_jetson,
    format_plan,
    plan_builder_settings,
)

ENGINES_DIR = "engines"
CUDA_HINT = ("CUDA is not available here (torch.cuda.is_available() is False): TensorRT needs an NVIDIA GPU, its "
             "driver and a CUDA build of torch; or use --backend ort")
Log = Callable[[str], None]


# --------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------
def import_tensorrt():
    """The ``tensorrt`` module, or CvexportError saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        if sys.modules.get("tensorrt", ...) is None or isinstance(exc, ModuleNotFoundError):
            raise CvexportError(f"TensorRT is not installed; {INSTALL_HINT}") from None
        raise CvexportError(f"TensorRT is installed but failed to load ({_first_line(exc)}); {INSTALL_HINT}") from None
    except OSError as exc:  # a missing libnvinfer.so and the like
        raise CvexportError(f"TensorRT is installed but failed to load ({_first_line(exc)}); {INSTALL_HINT}") from None
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


# --------------------------------------------------------------------------------------
# Graph facts the plan needs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphFacts:
    plugins: tuple[str, ...]  # op types of TensorRT plugin nodes
    has_qdq: bool


def graph_facts(onnx_path: str | Path) -> GraphFacts:
    """Plugin nodes and Q/DQ presence of an ONNX file (weights are not loaded)."""
    import onnx

    from cvexport.trt_compat import _walk_nodes
    from cvexport.trt_plugins import PLUGINS

    model = onnx.load(str(onnx_path), load_external_data=False)
    op_types = {node.op_type for node in _walk_nodes(model.graph)}
    return GraphFacts(plugins=tuple(sorted(op_types & set(PLUGINS))),
                      has_qdq=bool(op_types & {"QuantizeLinear", "DequantizeLinear"}))


# --------------------------------------------------------------------------------------
# Paths and keys
# --------------------------------------------------------------------------------------
def engines_dir(bundle, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir) if cache_dir is not None else Path(bundle.path) / ENGINES_DIR


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


def timing_cache_path(directory: Path, plan: BuilderPlan, gpu_name: str) -> Path:
    """The plan's timing cache, or one per TensorRT version and GPU in ``directory``."""
    if plan.timing_cache:
        return Path(plan.timing_cache)
    return directory / f"timing-{_slug(plan.trt_version)}-{_slug(gpu_name)}.cache"


def engine_key_fields(bundle, plan: BuilderPlan, options: EngineOptions, gpu: tuple[str, str]) -> dict[str, Any]:
    return key_fields(
        onnx_sha256=bundle.manifest["onnx"]["sha256"],
        trt_version=plan.trt_version,
        gpu_name=gpu[0],
        compute_capability=gpu[1],
        precision=options.precision,
        profile=plan.profile_dict(),
        builder_options=plan.cache_fields(),
    )


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------
def ensure_engine(bundle, options: EngineOptions | None = None, log: Log = print, *,
                  cache_dir: str | Path | None = None) -> Path:
    """The engine for ``bundle`` with ``options`` on this machine: a matching cached one, or a
    freshly built one. Never returns a stale engine (see cvexport.trt.cache)."""
    return build_engine(bundle, options, log, cache_dir=cache_dir, force=False)


@dataclass(frozen=True)
class _Prepared:
    """Everything decided before TensorRT builds anything."""

    trt: Any
    gpu: tuple[str, str]
    options: EngineOptions
    onnx_path: Path
    facts: GraphFacts
    plan: BuilderPlan
    directory: Path
    fields: dict[str, Any]
    key: str


def _prepare(bundle, options: EngineOptions | None, cache_dir: str | Path | None) -> _Prepared:
    trt = import_tensorrt()
    gpu = gpu_identity()
    options = options or EngineOptions.from_bundle(bundle)
    if options.precision != bundle.precision:
        raise CvexportError(f"engine precision '{options.precision}' differs from the bundle's '{bundle.precision}'; "
                            "an engine is built at the precision of its bundle (rebuild the bundle with --fp16/--fp32)")
    onnx_path = bundle.verify_file("onnx")
    facts = graph_facts(onnx_path)
    plan = plan_builder_settings(str(trt.__version__), options, is_jetson=detect_jetson(),
                                 graph_has_qdq=facts.has_qdq, plugins=facts.plugins)
    fields = engine_key_fields(bundle, plan, options, gpu)
    return _Prepared(trt, gpu, options, onnx_path, facts, plan, engines_dir(bundle, cache_dir), fields,
                     key_from_fields(fields))


def find_engine(bundle, options: EngineOptions | None = None, *,
                cache_dir: str | Path | None = None) -> tuple[Path | None, str]:
    """(the matching cached engine or None, a one-line reason when None) without building."""
    prepared = _prepare(bundle, options, cache_dir)
    cached = find_cached_engine(prepared.directory, prepared.key)
    if cached is not None:
        return cached, ""
    return None, describe_cache_miss(prepared.directory, prepared.key, prepared.fields)


def find_any_engine(bundle, *, cache_dir: str | Path | None = None) -> Path | None:
    """The newest cached engine built from this bundle's ONNX at its precision, by this
    TensorRT, for this GPU, whose profile covers batch 1..max_batch, whatever the other builder
    options were (workspace, optimization level, ...); None if there is none.

    For callers that do not pass options (``create_runner(bundle, "trt")``), so an engine built
    with non-default options by ``cvexport build --backend trt`` is used instead of rebuilt.
    """
    trt = import_tensorrt()
    gpu_name, capability = gpu_identity()
    wanted = {"onnx_sha256": bundle.manifest["onnx"]["sha256"], "trt_version": str(trt.__version__),
              "gpu_name": gpu_name, "compute_capability": capability, "precision": bundle.precision}
    for path, meta in list_engines(engines_dir(bundle, cache_dir)):
        if any(meta.key_fields.get(k) != v for k, v in wanted.items()):
            continue
        profile = (meta.key_fields.get("profile") or {}).get(bundle.input["name"])
        if not profile or profile["min"][0] > 1 or profile["max"][0] < bundle.max_batch:
            continue
        if find_cached_engine(path.parent, meta.key) == path:  # also checks the engine's sha256
            return path
    return None


def build_engine(bundle, options: EngineOptions | None = None, log: Log = print, *,
                 cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Build (or reuse, unless ``force``) the TensorRT engine for ``bundle``; returns its path.

    Raises CvexportError when TensorRT or CUDA is missing, a plugin the graph needs is not
    registered, the parser rejects the graph, or the build fails.
    """
    prepared = _prepare(bundle, options, cache_dir)
    trt, gpu, plan, facts = prepared.trt, prepared.gpu, prepared.plan, prepared.facts
    directory, fields, key, onnx_path = prepared.directory, prepared.fields, prepared.key, prepared.onnx_path
    if not force:
        cached = find_cached_engine(directory, key)
        if cached is not None:
            log(f"reusing engine {cached} (key {key[:16]})")
            return cached
        log(describe_cache_miss(directory, key, fields))

    for warning in plan.warnings:
        log(f"warning: {warning}")
    logger = trt_logger(trt)
    check_plugins(trt, facts.plugins)

    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    parse_onnx(parser, onnx_path, log)
    _check_network_inputs(network, plan)
    config = builder.create_builder_config()
    timing_path = timing_cache_path(directory, plan, gpu[0])
    timing_cache = apply_plan(trt, builder, config, plan, timing_path, log)
    if plan.serialize_plugin_libraries and hasattr(parser, "get_used_vc_plugin_libraries") \
            and hasattr(config, "plugins_to_serialize"):
        libraries = list(parser.get_used_vc_plugin_libraries())
        if libraries:
            config.plugins_to_serialize = libraries
    _attach_progress(trt, config, log)

    log(f"building TensorRT engine for {bundle.manifest['model']} ({format_plan(plan)}) on {gpu[0]}; "
        "this can take minutes")
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - started
    if serialized is None:
        raise CvexportError(
            "TensorRT could not build the engine (see the TensorRT messages above); out of memory is common on "
            "small devices: close other GPU programs, lower --max-batch, or set a smaller workspace"
        )
    log(f"built the engine in {seconds:.1f} s")
    if timing_cache is not None:
        _save_timing_cache(timing_cache, timing_path, log)

    metadata = EngineMetadata(key=key, key_fields=fields, model=str(bundle.manifest["model"]),
                              build_seconds=round(seconds, 2), warnings=plan.warnings)
    path = directory / engine_filename(key)
    metadata = write_engine(path, serialized, metadata)
    log(f"wrote {path} ({metadata.engine_size / 1e6:.1f} MB, key {key[:16]})")
    return path


def check_plugins(trt, plugins, namespace: str = "") -> None:
    """Register TensorRT's plugin library and make sure every plugin the graph uses exists."""
    from cvexport.trt_plugins import PLUGINS

    init_plugins(trt, namespace)
    if not plugins:
        return
    registry = trt.get_plugin_registry()
    for name in plugins:
        version = PLUGINS[name].plugin_version
        if hasattr(registry, "get_creator"):  # 10.0+; get_plugin_creator is gone in 11.x
            creator = registry.get_creator(name, version, namespace)
        else:
            creator = registry.get_plugin_creator(name, version, namespace)
        if creator is None:
            raise CvexportError(
                f"TensorRT plugin {name} (version {version}) is not registered: this TensorRT's libnvinfer_plugin "
                "lacks it; install the full TensorRT package (with plugins) or rebuild the bundle with --nms onnx"
            )


def _network_flags(trt, plan: BuilderPlan) -> int:
    flags = 0
    for name in plan.network_flags:
        member = getattr(trt.NetworkDefinitionCreationFlag, name, None)
        if member is None:
            raise CvexportError(f"TensorRT {trt.__version__} has no NetworkDefinitionCreationFlag.{name}")
        flags |= 1 << int(member)
    return flags


def parse_onnx(parser, onnx_path: Path, log: Log) -> None:
    """Parse the ONNX file (from its path, so external data resolves); each error on its own line."""
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = [_first_line(parser.get_error(i)) for i in range(parser.num_errors)]
    for error in errors:
        log(f"TensorRT parser: {error}")
    first = errors[0] if errors else "no details"
    raise CvexportError(
        f"TensorRT {_loaded_version()}could not parse {onnx_path} ({len(errors)} error(s); first: {first}); "
        "'cvexport inspect BUNDLE' lists what TensorRT's ONNX parser is likely to reject; or use --backend ort"
    )


def _loaded_version() -> str:
    module = sys.modules.get("tensorrt")
    return f"{module.__version__} " if module is not None and hasattr(module, "__version__") else ""


def _check_network_inputs(network, plan: BuilderPlan) -> None:
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    wanted = [p.name for p in plan.profiles]
    if wanted and sorted(names) != sorted(wanted):
        raise CvexportError(f"the parsed network's inputs {names} do not match the bundle's input contract {wanted}; "
                            "rebuild the bundle")


def apply_plan(trt, builder, config, plan: BuilderPlan, timing_path: Path | None, log: Log):
    """Set ``plan`` on a builder config; returns the attached timing cache (or None)."""
    for name in plan.builder_flags:
        member = getattr(trt.BuilderFlag, name, None)
        if member is None:
            raise CvexportError(f"TensorRT {trt.__version__} has no BuilderFlag.{name}; the version table in "
                                "cvexport.trt.settings does not match this TensorRT")
        config.set_flag(member)
    for name in plan.cleared_flags:
        member = getattr(trt.BuilderFlag, name, None)
        if member is not None:
            config.clear_flag(member)
    for pool, limit in plan.memory_pool_limits.items():
        config.set_memory_pool_limit(getattr(trt.MemoryPoolType, pool), int(limit))
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = plan.optimization_level
    if plan.hardware_compatibility_level:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, plan.hardware_compatibility_level)
    if plan.dla is not None:
        cores = int(getattr(builder, "num_DLA_cores", 0))
        if plan.dla.core >= cores:
            raise CvexportError(f"DLA core {plan.dla.core} requested, but this TensorRT sees {cores} DLA core(s); "
                                "drop --dla-core or pick a core below that")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla.core
    if plan.profiles:
        profile = builder.create_optimization_profile()
        for shape in plan.profiles:
            profile.set_shape(shape.name, shape.min, shape.opt, shape.max)
        config.add_optimization_profile(profile)
    return _attach_timing_cache(config, timing_path, log) if timing_path is not None else None


def _attach_timing_cache(config, path: Path, log: Log):
    """Attach the timing cache at ``path`` to ``config``; returns the attached cache or None.

    A cache from another TensorRT version or GPU is not used: ``create_timing_cache`` returns
    None for a blob it cannot read, and ``set_timing_cache(..., ignore_mismatch=False)`` returns
    False for one made on another device. Either way a new empty cache is started (one log
    line), and it replaces the file after the build.
    """
    blob = b""
    problem = None
    try:
        if path.is_file():
            blob = path.read_bytes()
    except OSError as exc:
        problem = f"could not be read ({exc.__class__.__name__})"
    if blob:
        cache = config.create_timing_cache(blob)
        if cache is None:
            problem = "could not be read by this TensorRT (another version, or damaged)"
        elif config.set_timing_cache(cache, ignore_mismatch=False):
            log(f"using timing cache {path}")
            return cache
        else:
            problem = "was made for another GPU or TensorRT version"
    if problem:
        log(f"timing cache {path} {problem}; starting a new empty one (it replaces the file after the build)")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log("warning: TensorRT could not start an empty timing cache; building without one")
        return None
    return cache


def _save_timing_cache(cache, path: Path, log: Log) -> None:
    from cvexport.atomic import write_bytes_atomic

    try:
        write_bytes_atomic(path, bytes(memoryview(cache.serialize())))
    except OSError as exc:  # a missing timing cache only slows the next build
        log(f"warning: could not save the timing cache to {path}: {exc}")


def _attach_progress(trt, config, log: Log) -> None:
    """Log the builder's top-level phases (IProgressMonitor exists from TensorRT 10.0)."""
    if not hasattr(trt, "IProgressMonitor") or not hasattr(config, "progress_monitor"):
        return

    class _Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self._started: dict[str, float] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None:
                self._started[phase_name] = time.perf_counter()
                log(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            return True  # never cancel

        def phase_finish(self, phase_name):
            started = self._started.pop(phase_name, None)
            if started is not None:
                log(f"  {phase_name} done in {time.perf_counter() - started:.1f} s")

    config.progress_monitor = _Progress()
