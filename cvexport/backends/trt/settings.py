"""TensorRT engine options and the version dispatch, as plain data (no ``tensorrt`` import).

``plan_builder_settings`` turns the user's :class:`EngineOptions` plus the TensorRT version
into a :class:`BuilderPlan`: which network-creation flags, which builder flags to set or
clear, memory-pool limits, the optimization profile, DLA and compatibility settings, and
the warnings to show. ``cvexport.backends.trt.builder`` applies a plan to real TensorRT objects and
does nothing else, so all the version logic is here and is tested on CPU.

What the plan encodes, and where it comes from (TensorRT Python API docs, the migration
guides and the ``python/src/infer/pyCore.cpp`` bindings of NVIDIA/TensorRT 10.0-10.16 and
11.1):

- Explicit batch. Needed as ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` only before
  10.0; in 10.x the flag is deprecated and ignored, in 11.x it no longer exists. So it is
  passed for 8.6/9.x only.
- Typing. 10.x networks are weakly typed: an fp16 bundle needs ``BuilderFlag.FP16`` (and a
  Q/DQ int8 bundle ``BuilderFlag.INT8``). 11.x removed every precision flag, networks are
  always strongly typed (the ``STRONGLY_TYPED`` creation flag is deprecated and ignored),
  so precision comes from the graph and no flag is set.
- TF32 is on by default; it is cleared for fp32 bundles so the fp32 parity tolerance holds
  (``allow_tf32`` keeps it).
- ``HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY`` exists from 10.9; ``AMPERE_PLUS``
  from 8.6.
- DLA: FP16/INT8 only, no dynamic dimensions (profile min = opt = max), layers it cannot
  run need ``GPU_FALLBACK``. NVIDIA names 10.7 as the last 10.x release with DLA; 11.0-11.3
  have none; 11.4.1+ has it again on Jetson AGX Orin with JetPack 7.2.2+.
- Version-compatible plans: ``BuilderFlag.VERSION_COMPATIBLE`` at build time and
  ``Runtime.engine_host_code_allowed = True`` at load time; plugin libraries the parser
  reports go into ``config.plugins_to_serialize``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cvexport.errors import CvexportError
from cvexport.precisions import PRECISIONS

HARDWARE_COMPATIBILITY = ("none", "ampere_plus", "same_compute_capability")
# TensorRT's enum member name for each of our spellings.
_HW_LEVEL_NAMES = {"ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
MAX_OPTIMIZATION_LEVEL = 5  # "Valid values include integers from 0 to ... currently 5" (IBuilderConfig docs)
DEFAULT_OPTIMIZATION_LEVEL = 3  # TensorRT's own default
MIN_TRT_VERSION = (8, 6)  # first release with builder_optimization_level / hardware compatibility
TESTED_TRT_MAJORS = (10, 11)
LAST_10X_DLA_MINOR = 7  # "TensorRT 10.7 was the last 10.x release that supported DLA"
FIRST_11X_DLA_MINOR = 4  # 11.4.1 restores DLA on Jetson AGX Orin (JetPack 7.2.2+)

INSTALL_HINT = "install TensorRT: pip install 'cvexport[trt]' on x86, or JetPack on Jetson; or use --backend ort"


# --------------------------------------------------------------------------------------
# Versions and platform
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class TrtVersion:
    major: int
    minor: int
    patch: int = 0

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def at_least(self, major: int, minor: int = 0) -> bool:
        return (self.major, self.minor) >= (major, minor)


def parse_trt_version(text: str) -> TrtVersion:
    """"10.3.0.30" / "10.8" / "11.0.0.post1" -> TrtVersion; CvexportError for anything else."""
    match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if not match:
        raise CvexportError(f"cannot read the TensorRT version '{text}'; reinstall TensorRT ({INSTALL_HINT})")
    major, minor, patch = match.groups()
    return TrtVersion(int(major), int(minor), int(patch or 0))


def detect_jetson(root: str | Path = "/") -> bool:
    """True on a Jetson (L4T): /etc/nv_tegra_release exists or the device tree says tegra."""
    root = Path(root)
    if (root / "etc/nv_tegra_release").exists():
        return True
    try:
        return b"nvidia,tegra" in (root / "proc/device-tree/compatible").read_bytes()
    except OSError:
        return False


# --------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchProfile:
    """The batch range one optimization profile covers (min <= opt <= max)."""

    min: int = 1
    opt: int = 1
    max: int = 1

    def __post_init__(self) -> None:
        values = (self.min, self.opt, self.max)
        if any(not isinstance(v, int) or isinstance(v, bool) for v in values) or not 1 <= self.min <= self.opt <= self.max:
            raise CvexportError(f"batch profile {self.min}/{self.opt}/{self.max} must satisfy 1 <= min <= opt <= max")

    @property
    def fixed(self) -> bool:
        return self.min == self.opt == self.max

    def to_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class EngineOptions:
    """How to build a TensorRT engine for a bundle.

    Attributes:
        precision: the bundle's precision ("fp32", "fp16", "int8"); take it from the bundle.
        profile: batch sizes the engine accepts and is tuned for (opt).
        input_name / input_shape: the network input and its per-image shape (no batch).
        workspace_mb: WORKSPACE memory-pool limit; None keeps TensorRT's default.
        optimization_level: builder optimization level 0-5 (TensorRT default 3).
        timing_cache: timing-cache file; None = one per GPU and TensorRT version in the
            bundle's engines/ directory.
        dla_core: run on this DLA core (Jetson); None for the GPU.
        gpu_fallback: with DLA, let layers DLA cannot run fall back to the GPU.
        version_compatible: build a plan newer TensorRT runtimes can load.
        hardware_compatibility: "none", "ampere_plus" or "same_compute_capability".
        allow_tf32: keep TensorRT's default TF32 math for fp32 bundles (off: exact fp32).
    """

    precision: str = "fp32"
    profile: BatchProfile = field(default_factory=BatchProfile)
    input_name: str = "input"
    input_shape: tuple[int, ...] = ()
    workspace_mb: int | None = None
    optimization_level: int = DEFAULT_OPTIMIZATION_LEVEL
    timing_cache: str | None = None
    dla_core: int | None = None
    gpu_fallback: bool = True
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    allow_tf32: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise CvexportError(f"unknown precision '{self.precision}'; choose one of: {', '.join(PRECISIONS)}")
        if not isinstance(self.optimization_level, int) or not 0 <= self.optimization_level <= MAX_OPTIMIZATION_LEVEL:
            raise CvexportError(f"optimization level {self.optimization_level} must be 0..{MAX_OPTIMIZATION_LEVEL}")
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise CvexportError(f"workspace {self.workspace_mb} MB must be at least 1 MB (or unset for TensorRT's default)")
        if self.dla_core is not None and self.dla_core < 0:
            raise CvexportError(f"DLA core {self.dla_core} must be 0 or more")
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise CvexportError(
                f"unknown hardware compatibility '{self.hardware_compatibility}'; "
                f"choose one of: {', '.join(HARDWARE_COMPATIBILITY)}"
            )
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))

    @classmethod
    def from_bundle(cls, bundle: Any, *, opt_batch: int | None = None, min_batch: int = 1, **overrides: Any) -> "EngineOptions":
        """Options for ``bundle`` (a Bundle): its precision, input and batch range 1..max_batch.

        ``opt_batch`` (default: the bundle's max batch) is the batch TensorRT tunes for.
        Other keyword arguments override fields (workspace_mb=..., dla_core=...).
        """
        spec = bundle.input
        max_batch = int(spec.max_batch)
        if spec.layout == "NHWC":
            shape = (int(spec.height), int(spec.width), 3)
        else:
            shape = (3, int(spec.height), int(spec.width))
        profile = overrides.pop("profile", None) or BatchProfile(min_batch, opt_batch or max_batch, max_batch)
        if profile.max > max_batch:
            raise CvexportError(f"batch profile max {profile.max} exceeds the bundle's max batch {max_batch}")
        return cls(precision=bundle.precision, profile=profile, input_name=spec.name,
                   input_shape=shape, **overrides)


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileShape:
    """``profile.set_shape(name, min, opt, max)`` for one input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class DlaSettings:
    core: int
    gpu_fallback: bool


@dataclass(frozen=True)
class BuilderPlan:
    """Everything ``builder.py`` sets on TensorRT objects, as names and numbers."""

    trt_version: str
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag member names
    strongly_typed: bool  # True when the network is strongly typed (always in 11.x)
    builder_flags: tuple[str, ...]  # BuilderFlag names to set
    cleared_flags: tuple[str, ...]  # BuilderFlag names to clear (if this version has them)
    memory_pool_limits: dict[str, int]  # MemoryPoolType name -> bytes
    optimization_level: int
    hardware_compatibility_level: str | None  # HardwareCompatibilityLevel name, None = default
    profiles: tuple[ProfileShape, ...]
    dla: DlaSettings | None
    version_compatible: bool
    serialize_plugin_libraries: bool  # put the parser's VC plugin libraries into the plan
    runtime_host_code_allowed: bool  # Runtime.engine_host_code_allowed when loading
    timing_cache: str | None
    warnings: tuple[str, ...]

    def cache_fields(self) -> dict[str, Any]:
        """The settings that change the engine, for the cache key (no warnings, no paths)."""
        return {
            "network_flags": list(self.network_flags),
            "strongly_typed": self.strongly_typed,
            "builder_flags": sorted(self.builder_flags),
            "cleared_flags": sorted(self.cleared_flags),
            "memory_pool_limits": dict(sorted(self.memory_pool_limits.items())),
            "optimization_level": self.optimization_level,
            "hardware_compatibility_level": self.hardware_compatibility_level,
            "dla": asdict(self.dla) if self.dla else None,
            "version_compatible": self.version_compatible,
        }

    def profile_dict(self) -> dict[str, Any]:
        return {p.name: {"min": list(p.min), "opt": list(p.opt), "max": list(p.max)} for p in self.profiles}


def plan_builder_settings(
    trt_version: str,
    options: EngineOptions,
    *,
    is_jetson: bool,
    graph_has_qdq: bool = False,
    plugins: Iterable[str] = (),
) -> BuilderPlan:
    """The builder settings for ``options`` on TensorRT ``trt_version``.

    Args:
        trt_version: ``tensorrt.__version__`` of the TensorRT that will build.
        options: what the user asked for.
        is_jetson: the build runs on a Jetson (DLA exists only there).
        graph_has_qdq: the ONNX graph holds QuantizeLinear/DequantizeLinear (explicit int8).
        plugins: op types of TensorRT plugin nodes in the graph (e.g. "EfficientNMS_TRT").

    Raises CvexportError for combinations that cannot build.
    """
    version = parse_trt_version(trt_version)
    plugins = tuple(sorted(set(plugins)))
    if (version.major, version.minor) < MIN_TRT_VERSION:
        raise CvexportError(
            f"TensorRT {version} is too old: cvexport needs {MIN_TRT_VERSION[0]}.{MIN_TRT_VERSION[1]} or newer "
            f"(10.3+ recommended); {INSTALL_HINT}"
        )
    warnings: list[str] = []
    if version.major not in TESTED_TRT_MAJORS:
        warnings.append(f"TensorRT {version} is outside the versions cvexport is written against (10.x, 11.x)")

    strongly_typed = version.major >= 11
    network_flags = ("EXPLICIT_BATCH",) if version.major < 10 else ()
    builder_flags: list[str] = []
    cleared_flags: list[str] = []

    # Precision.
    if options.precision == "fp16":
        if strongly_typed:
            warnings.append(
                f"TensorRT {version.major}: precision comes from the graph; the FP16 builder flag no longer exists, "
                "so the bundle's FP16 graph is built as typed (layers the graph keeps in FP32 stay FP32)"
            )
        else:
            builder_flags.append("FP16")
    elif options.precision == "int8":
        if not graph_has_qdq:
            if strongly_typed:
                raise CvexportError(
                    f"an int8 engine on TensorRT {version.major} needs a graph with QuantizeLinear/DequantizeLinear "
                    "nodes (implicit INT8 calibration was removed in 11.0); export a Q/DQ-quantized bundle"
                )
            raise CvexportError(
                "an int8 engine without QuantizeLinear/DequantizeLinear nodes needs INT8 calibration, which cvexport "
                "does not do (and TensorRT deprecated in 10.1); export a Q/DQ-quantized bundle"
            )
        if not strongly_typed:
            builder_flags.append("INT8")
    elif not options.allow_tf32:
        # TF32 is on by default on Ampere and newer; exact fp32 keeps the fp32 parity tolerance.
        cleared_flags.append("TF32")

    # Memory pools.
    pools = {"WORKSPACE": int(options.workspace_mb) << 20} if options.workspace_mb is not None else {}

    # Hardware compatibility.
    hw_level = _HW_LEVEL_NAMES.get(options.hardware_compatibility)
    if hw_level == "SAME_COMPUTE_CAPABILITY" and not version.at_least(10, 9):
        raise CvexportError(
            f"hardware compatibility 'same_compute_capability' needs TensorRT 10.9 or newer (this is {version}); "
            "use 'ampere_plus' or upgrade TensorRT"
        )
    if hw_level and is_jetson:
        warnings.append(
            f"hardware compatibility '{options.hardware_compatibility}' is documented for discrete GPUs, "
            "not JetPack; the build may fail"
        )

    # DLA.
    dla = None
    if options.dla_core is not None:
        dla = _plan_dla(version, options, is_jetson, hw_level, warnings)
        if dla and dla.gpu_fallback:
            builder_flags.append("GPU_FALLBACK")

    # Version compatibility.
    serialize_plugins = False
    if options.version_compatible:
        builder_flags.append("VERSION_COMPATIBLE")
        if plugins:
            serialize_plugins = True
            warnings.append(
                f"version-compatible plan with plugin nodes ({', '.join(plugins)}): the plugin libraries the parser "
                "reports are serialized into the plan; this combination is not tested by cvexport"
            )

    profile = options.profile
    profiles = ()
    if options.input_shape:
        sample = tuple(options.input_shape)
        profiles = (ProfileShape(options.input_name, (profile.min, *sample), (profile.opt, *sample),
                                 (profile.max, *sample)),)

    return BuilderPlan(
        trt_version=str(trt_version),
        network_flags=network_flags,
        strongly_typed=strongly_typed,
        builder_flags=tuple(builder_flags),
        cleared_flags=tuple(cleared_flags),
        memory_pool_limits=pools,
        optimization_level=options.optimization_level,
        hardware_compatibility_level=hw_level,
        profiles=profiles,
        dla=dla,
        version_compatible=options.version_compatible,
        serialize_plugin_libraries=serialize_plugins,
        runtime_host_code_allowed=options.version_compatible,
        timing_cache=options.timing_cache,
        warnings=tuple(warnings),
    )


def _plan_dla(version: TrtVersion, options: EngineOptions, is_jetson: bool, hw_level: str | None,
              warnings: list[str]) -> DlaSettings | None:
    core = options.dla_core
    if not is_jetson:
        warnings.append(f"DLA core {core} requested, but this is not a Jetson (no DLA here); building for the GPU")
        return None
    if version.major == 11 and version.minor < FIRST_11X_DLA_MINOR:
        warnings.append(
            f"TensorRT {version} has no DLA support (NVIDIA: none in 11.0-11.3); DLA core {core} ignored, "
            "building for the GPU; use the TensorRT 10.x that ships with JetPack 6 for DLA"
        )
        return None
    if options.precision == "fp32":
        raise CvexportError("DLA runs FP16 or INT8 only; build the bundle with --fp16 to use a DLA core")
    if hw_level:
        raise CvexportError(
            f"hardware compatibility '{options.hardware_compatibility}' applies to GPU engines; it cannot be combined "
            "with a DLA core"
        )
    if not options.profile.fixed:
        raise CvexportError(
            f"DLA needs a fixed batch size, but the profile is {options.profile.min}..{options.profile.max}; "
            "build the DLA engine with min = opt = max batch (e.g. 1)"
        )
    if version.major == 10 and version.minor > LAST_10X_DLA_MINOR:
        warnings.append(
            f"NVIDIA documents TensorRT 10.{LAST_10X_DLA_MINOR} as the last 10.x release with DLA; "
            f"{version} may not see a DLA core and the build will then fail"
        )
    if version.major >= 11:
        warnings.append(
            f"DLA on TensorRT {version.major}.x is documented for Jetson AGX Orin with JetPack 7.2.2+ only, "
            "with strongly typed networks"
        )
    if not options.gpu_fallback:
        warnings.append(
            "GPU fallback is off: every layer must run on the DLA, but NMS/TopK and plugin layers cannot, "
            "so this build will most likely fail"
        )
    return DlaSettings(core=core, gpu_fallback=options.gpu_fallback)


def format_plan(plan: BuilderPlan) -> str:
    """One line describing a plan, for logs."""
    parts = [f"TensorRT {plan.trt_version}", "strongly typed" if plan.strongly_typed else "weakly typed"]
    if plan.builder_flags:
        parts.append("flags " + "+".join(plan.builder_flags))
    if plan.cleared_flags:
        parts.append("cleared " + "+".join(plan.cleared_flags))
    parts.append(f"opt level {plan.optimization_level}")
    for name, limit in plan.memory_pool_limits.items():
        parts.append(f"{name.lower()} {limit >> 20} MB")
    if plan.hardware_compatibility_level:
        parts.append(f"hw compat {plan.hardware_compatibility_level}")
    if plan.dla:
        parts.append(f"DLA core {plan.dla.core}" + (" + GPU fallback" if plan.dla.gpu_fallback else ""))
    for p in plan.profiles:
        parts.append(f"{p.name} batch {p.min[0]}/{p.opt[0]}/{p.max[0]}")
    return ", ".join(parts)

