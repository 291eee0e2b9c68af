"""Building TensorRT engines for bundles: the thin layer between a BuilderPlan and TensorRT.

This module, ``cvexport.backends.trt.environment`` (is TensorRT usable here, which GPU) and
``cvexport.backends.trt.runner`` are the only ones that import ``tensorrt``, always inside
functions, so importing them works without TensorRT or a GPU. Finding a cached engine without
building is ``cvexport.backends.trt.loader``. The decisions
(which flags, which profile, what a version supports) are made in ``cvexport.backends.trt.settings``
and the cache bookkeeping in ``cvexport.backends.trt.cache``; here they are only applied. Every
TensorRT attribute that differs between versions is feature-detected with ``hasattr``.

Engines go to ``<bundle>/engines/`` (or ``cache_dir``) with a JSON beside each; a timing
cache per GPU and TensorRT version lives there too and makes rebuilds faster.
"""

from __future__ import annotations


import sys

import time
from pathlib import Path
from typing import Callable

from cvexport.errors import CvexportError, first_line
from cvexport.backends.trt.cache import EngineMetadata, describe_cache_miss, engine_filename, find_cached_engine, write_engine
from cvexport.backends.trt.settings import BuilderPlan, EngineOptions, format_plan

from cvexport.backends.trt.environment import init_plugins, trt_logger
from cvexport.backends.trt.loader import plan_engine, timing_cache_path
Log = Callable[[str], None]


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------
def ensure_engine(bundle, options: EngineOptions | None = None, log: Log = print, *,
                  cache_dir: str | Path | None = None) -> Path:
    """The engine for ``bundle`` with ``options`` on this machine: a matching cached one, or a
    freshly built one. Never returns a stale engine (see cvexport.backends.trt.cache)."""
    return build_engine(bundle, options, log, cache_dir=cache_dir, force=False)


def build_engine(bundle, options: EngineOptions | None = None, log: Log = print, *,
                 cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Build (or reuse, unless ``force``) the TensorRT engine for ``bundle``; returns its path.

    Raises CvexportError when TensorRT or CUDA is missing, a plugin the graph needs is not
    registered, the parser rejects the graph, or the build fails.
    """
    prepared = plan_engine(bundle, options, cache_dir)
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

    log(f"building TensorRT engine for {bundle.manifest.model} ({format_plan(plan)}) on {gpu[0]}; "
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

    metadata = EngineMetadata(key=key, key_fields=fields, model=str(bundle.manifest.model),
                              build_seconds=round(seconds, 2), warnings=plan.warnings)
    path = directory / engine_filename(key)
    metadata = write_engine(path, serialized, metadata)
    log(f"wrote {path} ({metadata.engine_size / 1e6:.1f} MB, key {key[:16]})")
    return path


def check_plugins(trt, plugins, namespace: str = "") -> None:
    """Register TensorRT's plugin library and make sure every plugin the graph uses exists."""
    from trt_plugins import PLUGINS

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
    errors = [first_line(parser.get_error(i)) for i in range(parser.num_errors)]
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
                                "cvexport.backends.trt.settings does not match this TensorRT")
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
