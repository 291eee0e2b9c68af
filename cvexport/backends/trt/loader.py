"""Finding a bundle's engine without building one: the facts of its graph the builder plan
needs, where engines and timing caches live, the cache key of a plan, and the lookup of a
matching (never stale) cached engine."""

from __future__ import annotations

import re



from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvexport.errors import CvexportError
from cvexport.backends.trt.cache import describe_cache_miss, find_cached_engine, key_fields, list_engines, key_from_fields
from cvexport.backends.trt.settings import BuilderPlan, EngineOptions, detect_jetson, plan_builder_settings
from cvexport.backends.trt import environment

ENGINES_DIR = "engines"


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

    from cvexport.backends.trt.compat.graph_index import walk_nodes
    from trt_plugins import PLUGINS

    model = onnx.load(str(onnx_path), load_external_data=False)
    op_types = {node.op_type for node in walk_nodes(model.graph)}
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
        onnx_sha256=bundle.manifest.onnx.sha256,
        trt_version=plan.trt_version,
        gpu_name=gpu[0],
        compute_capability=gpu[1],
        precision=options.precision,
        profile=plan.profile_dict(),
        builder_options=plan.cache_fields(),
    )



@dataclass(frozen=True)
class PlannedEngine:
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


def plan_engine(bundle, options: EngineOptions | None, cache_dir: str | Path | None) -> PlannedEngine:
    trt = environment.import_tensorrt()
    gpu = environment.gpu_identity()
    options = options or EngineOptions.from_bundle(bundle)
    if options.precision != bundle.precision:
        raise CvexportError(f"engine precision '{options.precision}' differs from the bundle's '{bundle.precision}'; "
                            "an engine is built at the precision of its bundle (rebuild the bundle with --fp16/--fp32)")
    onnx_path = bundle.verify_file("onnx")
    facts = graph_facts(onnx_path)
    plan = plan_builder_settings(str(trt.__version__), options, is_jetson=detect_jetson(),
                                 graph_has_qdq=facts.has_qdq, plugins=facts.plugins)
    fields = engine_key_fields(bundle, plan, options, gpu)
    return PlannedEngine(trt, gpu, options, onnx_path, facts, plan, engines_dir(bundle, cache_dir), fields,
                     key_from_fields(fields))


def find_engine(bundle, options: EngineOptions | None = None, *,
                cache_dir: str | Path | None = None) -> tuple[Path | None, str]:
    """(the matching cached engine or None, a one-line reason when None) without building."""
    prepared = plan_engine(bundle, options, cache_dir)
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
    trt = environment.import_tensorrt()
    gpu_name, capability = environment.gpu_identity()
    wanted = {"onnx_sha256": bundle.manifest.onnx.sha256, "trt_version": str(trt.__version__),
              "gpu_name": gpu_name, "compute_capability": capability, "precision": bundle.precision}
    for path, meta in list_engines(engines_dir(bundle, cache_dir)):
        if any(meta.key_fields.get(k) != v for k, v in wanted.items()):
            continue
        profile = (meta.key_fields.get("profile") or {}).get(bundle.input.name)
        if not profile or profile["min"][0] > 1 or profile["max"][0] < bundle.max_batch:
            continue
        if find_cached_engine(path.parent, meta.key) == path:  # also checks the engine's sha256
            return path
    return None
