"""A Triton Inference Server model repository from a bundle: ``cvexport export-triton``.

    REPO/NAME/config.pbtxt        backend "onnxruntime", batch dim left out of every dims
    REPO/NAME/labels.txt          the class names, one per line (label_filename)
    REPO/NAME/cvexport.json       where it came from, and the I/O signature of its graph
    REPO/NAME/N/model.onnx
    REPO/NAME_trt/...             where the bundle has TensorRT engines: platform "tensorrt_plan",
    REPO/NAME_trt/N/model_8.6.plan  one plan per compute capability (cc_model_filenames)

A Triton model has one backend, so the plans are a second model beside the ONNX one. A
bundle whose NMS is the EfficientNMS_TRT plugin cannot run on Triton's ONNX Runtime backend
(it lacks the plugin's kernel, triton-inference-server/server#4894): it is refused, or, when
it has engines, exported as its plan alone, under NAME.

Versions live side by side: ``--version 2`` into a model this command wrote adds ``2/``
beside ``1/``. One config.pbtxt serves every version of a Triton model, so a version joins
only a model of the same backend, inputs and outputs (names, types, dims), class names and,
for plans, compute capabilities; anything else is refused in one line (another ``--name``
serves it), as is a version that exists (``--force`` replaces that version, keeping the
others). The config's ``max_batch_size`` is the smallest any version takes, and its
``version_policy`` Triton's default written out, ``latest { num_versions: 1 }``: Triton serves
the newest version only, and the older ones stay on disk for a rollback (remove the newer
directory) or to be served too (``all { }``, which a later export keeps).

Every config is checked before it is moved into place: Triton's own schema
(``tritonclient``'s ``model_config_pb2`` through ``text_format.Parse``) and the checks the
parser does not make (:func:`check_model_dir`: known platform/backend, names, types and dims
against the graph of every version, max batch against the engines' profiles, files present).
Each model directory is built beside its target (the versions it keeps hard-linked, not
copied, where the file system allows) and renamed into place, so a failed export leaves what
was there before.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvexport.atomic import atomic_path, check_dir_target
from cvexport.errors import counted
from cvexport.bundle import Bundle, load_bundle
from cvexport.errors import CvexportError

INSTALL_HINT = 'pip install "cvexport[triton]"'
CONFIG = "config.pbtxt"
LABELS = "labels.txt"
METADATA = "cvexport.json"
METADATA_FORMAT = "cvexport-triton/1"
ONNX_MODEL = "model.onnx"
TRT_SUFFIX = "_trt"
KINDS = ("gpu", "cpu")
# Triton's default version policy, written into every config so that it can be read there.
DEFAULT_VERSION_POLICY = "latest { num_versions: 1 }"
DEFAULT_QUEUE_DELAY_US = 100  # a short wait lets concurrent camera requests share a batch
# What each backend is called in a config: (backend, platform) pairs Triton accepts for the
# files we write. Both spellings are valid for each; any other value is a typo.
ORT_BACKEND, ORT_PLATFORM = "onnxruntime", "onnxruntime_onnx"
TRT_BACKEND, TRT_PLATFORM = "tensorrt", "tensorrt_plan"
# manifest / numpy dtype -> Triton DataType
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int32": "TYPE_INT32",
                "int64": "TYPE_INT64", "int16": "TYPE_INT16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
                "uint16": "TYPE_UINT16", "bool": "TYPE_BOOL"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TritonOptions:
    repo: str
    name: str | None = None
    version: int = 1
    instances: int = 1
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    kind: str = "gpu"
    force: bool = False


@dataclass(frozen=True)
class Plan:
    """One TensorRT engine of the bundle, as it goes into the repository."""

    source: Path
    compute_capability: str
    trt_version: str
    gpu_name: str
    min_batch: int
    max_batch: int
    sha256: str

    @property
    def filename(self) -> str:
        return f"model_{self.compute_capability}.plan"


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------
def export_triton(bundle: Bundle | str, options: TritonOptions, log=print) -> list[Path]:
    """Write the bundle's Triton model(s) into ``options.repo``; returns the model directories."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    _check_options(options)
    name = options.name or _default_name(bundle)
    repo = Path(options.repo)
    if repo.exists() and not repo.is_dir():
        raise CvexportError(f"--repo {repo} is a file, where a Triton model repository directory is expected")
    load_schema()  # before any work: validation is part of the export
    onnx_path = bundle.verify_file("onnx")
    plans = bundle_plans(bundle)
    plugin = _plugin_reason(bundle, onnx_path)
    models: list[tuple[str, str]] = []  # (directory name, backend)
    if plugin is None:
        models.append((name, "onnx"))
        if plans:
            models.append((name + TRT_SUFFIX, "plan"))
    elif plans:
        models.append((name, "plan"))
        log(f"note: {plugin}; exporting its TensorRT plan only")
    else:
        raise CvexportError(f"bundle {bundle.path}: {plugin}; rebuild it with --nms onnx, or build its TensorRT engine "
                            f"('cvexport build {bundle.manifest.model} --nms efficient --backend trt' on the GPU "
                            "server) to export the plan alone")
    if options.kind == "cpu" and any(kind == "plan" for _, kind in models):
        if all(kind == "plan" for _, kind in models):
            raise CvexportError("--kind cpu: this bundle exports only a TensorRT plan, which runs on a GPU; "
                                "drop --kind cpu")
        log("note: the TensorRT plan model runs on the GPU whatever --kind says")
    signature = graph_signature(onnx_path)
    # Every target checked (and its config rendered) before any is written.
    targets = [_plan_target(repo / model_name, kind, bundle, options, signature, plans if kind == "plan" else [])
               for model_name, kind in models]
    written = []
    for target in targets:
        with atomic_path(target.path, ours=_is_ours, what="Triton model", force=options.force) as tmp:
            if target.kept:
                _link_tree(target.path, tmp, leave_out={CONFIG, LABELS, METADATA, str(options.version)})
            _write_model(tmp, bundle, options, target.config, target.metadata,
                         onnx_path if target.kind == "onnx" else None, target.plans)
            check_model_dir(tmp, expected_name=target.path.name)  # before the rename: an invalid model never lands
        written.append(target.path)
        backend = "ONNX Runtime" if target.kind == "onnx" else "TensorRT plan"
        beside = ""
        if target.kept:
            beside = (f", beside {_versions_text(target.kept)}; Triton serves "
                      + ("the newest only (version_policy)" if target.policy == DEFAULT_VERSION_POLICY
                         else f"what its version_policy {{ {target.policy} }} says"))
        log(f"wrote {target.path} ({backend}, version {options.version}{beside})")
        if target.dropped:
            log(f"note: --force replaced {_versions_text(target.dropped)} of {target.path}")
        for change in target.changes:
            log(f"note: {target.path / CONFIG} serves every version, and now has {change}")
    leftover = repo / (name + TRT_SUFFIX)
    if leftover not in written and _is_ours(leftover):
        # Not removed: it is the user's to judge, but it may now serve another bundle than NAME.
        log(f"note: {leftover} is left from an earlier export (this bundle has no TensorRT engine for it); "
            "delete it if it serves an older bundle")
    return written


def _check_options(options: TritonOptions) -> None:
    if options.kind not in KINDS:
        raise CvexportError(f"--kind '{options.kind}' is not known; choose one of: {', '.join(KINDS)}")
    if options.name is not None and not _NAME.fullmatch(options.name):
        raise CvexportError(f"--name '{options.name}' cannot be a Triton model directory; use letters, digits, "
                            "'_', '-' and '.', starting with a letter or digit")
    for option, value, least in (("--version", options.version, 1), ("--instances", options.instances, 1),
                                 ("--max-queue-delay-us", options.max_queue_delay_us, 0)):
        if not isinstance(value, int) or value < least:
            raise CvexportError(f"{option} {value} must be a whole number of at least {least}")


def _default_name(bundle: Bundle) -> str:
    """The bundle's directory name (ssd-fp16-efficient), made a valid model name."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", bundle.path.resolve().name).lstrip("._-")
    return name or bundle.manifest.model


def _plugin_reason(bundle: Bundle, onnx_path: Path) -> str | None:
    """Why Triton's ONNX Runtime backend cannot run this graph, or None. The manifest's NMS
    flavour says it for detection bundles; the graph's op types catch any TensorRT plugin."""
    from cvexport.backends.trt.loader import graph_facts

    plugins = graph_facts(onnx_path).plugins
    efficient = bundle.manifest.postprocess is not None and bundle.manifest.postprocess.nms == "efficient"
    if not plugins and not efficient:
        return None
    ops = ", ".join(plugins) or "EfficientNMS_TRT"
    return (f"its NMS is the {ops} TensorRT plugin (built with --nms efficient), which Triton's onnxruntime "
            "backend cannot run (triton-inference-server/server#4894)")


def bundle_plans(bundle: Bundle) -> list[Plan]:
    """The bundle's usable engines, newest per compute capability: built from this bundle's
    ONNX at its precision, intact (sha256 as recorded), with a profile starting at batch 1."""
    from cvexport.backends.trt.loader import engines_dir
    from cvexport.backends.trt.cache import find_cached_engine, list_engines

    plans: dict[str, Plan] = {}
    for path, meta in list_engines(engines_dir(bundle)):  # newest first
        fields = meta.key_fields
        same_graph = fields.get("onnx_sha256") == bundle.manifest.onnx.sha256
        if not same_graph or fields.get("precision") != bundle.precision:
            continue
        profile = (fields.get("profile") or {}).get(bundle.input.name)
        if not profile or profile["min"][0] > 1 or meta.compute_capability in plans:
            continue
        if find_cached_engine(path.parent, meta.key) != path:  # corrupt or replaced
            continue
        plans[meta.compute_capability] = Plan(path, meta.compute_capability, meta.trt_version, meta.gpu_name,
                                              int(profile["min"][0]), int(profile["max"][0]), meta.engine_sha256)
    return [plans[cc] for cc in sorted(plans, key=_cc_key)]


def _cc_key(cc: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else 0 for part in cc.split("."))


def graph_signature(onnx_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Names, dtypes and shapes (ints, or names for dynamic dims) of the graph's inputs and outputs."""
    import onnx

    from cvexport.manifest_schema import _dims_of, _dtype_of

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    describe = lambda v: {"name": v.name, "dtype": _dtype_of(v), "shape": _dims_of(v)}  # noqa: E731
    return {"inputs": [describe(v) for v in model.graph.input if v.name not in initializers],
            "outputs": [describe(v) for v in model.graph.output]}


@dataclass(frozen=True)
class _Target:
    """One model directory as this export will write it."""

    path: Path
    kind: str  # "onnx" or "plan"
    plans: list[Plan]
    config: str
    metadata: dict
    kept: list[str]  # the versions already there that stay beside the new one
    dropped: list[str]  # the versions already there that --force replaces with it
    policy: str  # the version_policy written
    changes: list[str]  # config settings that change for the versions kept


def _plan_target(path: Path, kind: str, bundle: Bundle, options: TritonOptions, signature: dict,
                 plans: list[Plan]) -> _Target:
    """What exporting into ``path`` means: a new model, or a version added to (or, with
    --force, replaced in) a model of ours that takes the same inputs and outputs; anything in
    the way is a one-line refusal."""
    check_dir_target(path, _is_ours, "Triton model", option="--repo", force=True)  # a file, a parent that is one
    version = str(options.version)
    max_batch = min([bundle.max_batch] + [plan.max_batch for plan in plans])
    labels = bundle.class_names
    entry = {"bundle": str(bundle.path.resolve()), "model": bundle.manifest.model, "precision": bundle.precision,
             "onnx_sha256": bundle.manifest.onnx.sha256, "max_batch": bundle.max_batch, "signature": signature,
             "plans": _plans_record(plans)}
    versions = {version: entry}
    policy = DEFAULT_VERSION_POLICY
    old_config = None
    kept: list[str] = []
    if _is_ours(path):
        old_meta = json.loads((path / METADATA).read_text(encoding="utf-8"))
        recorded = recorded_versions(path, old_meta)
        try:
            old_config = parse_config(path / CONFIG)
        except CvexportError as exc:
            if not options.force:
                raise CvexportError(f"{exc}; fix it, or pass --force to replace {path} "
                                    f"({_versions_text(sorted(recorded, key=int))} included)") from None
        new_config = _parse_text(render_config(path.name, bundle, signature, max_batch,
                                               plans if kind == "plan" else None, options, labels=bool(labels)))
        problem = None if old_config is None else _incompatibility(old_config, old_meta, new_config, bundle)
        if problem is not None and not options.force:
            raise CvexportError(
                f"{path} (exported from {old_meta.get('model')}) {problem}; one config.pbtxt describes every version "
                f"of a Triton model, so this bundle cannot be its version {version}: choose another --name, or pass "
                f"--force to replace {path} ({_versions_text(sorted(recorded, key=int))} included)")
        if problem is None and old_config is not None:
            if version in recorded or (path / version).exists():
                if not options.force:
                    taken = sorted(set(recorded) | {version}, key=int)
                    source = (f"from {recorded[version].get('bundle')}" if version in recorded
                              else f"not recorded in its {METADATA}")
                    raise CvexportError(
                        f"{path} already has version {version} ({source}); choose another --version (the next after "
                        f"the highest is {int(taken[-1]) + 1}), or pass --force to replace version {version} (the "
                        "others are kept)")
            kept = sorted((v for v in _version_dirs(path) if v != version), key=int)
            versions = {**{v: recorded[v] for v in kept if v in recorded}, version: entry}
            # Every version must take every batch the one config allows.
            max_batch = min([max_batch] + [_largest_batch(recorded[v]) for v in kept if v in recorded])
            if old_config.HasField("version_policy"):
                policy = _one_line(old_config.version_policy)
    elif path.is_dir() and any(path.iterdir()) and not options.force:
        if (path / CONFIG).is_file():
            raise CvexportError(f"--repo {path} is a Triton model that cvexport did not write (it has no {METADATA}); "
                                "refusing to change it. Choose another --name, or pass --force to replace it and "
                                "everything in it")
        raise CvexportError(f"--repo {path} holds files that are not a Triton model; refusing to replace them. Choose "
                            "another --name, or pass --force to replace that directory and everything in it")
    config = render_config(path.name, bundle, signature, max_batch, plans if kind == "plan" else None, options,
                           labels=bool(labels), version_policy=policy)
    changes = _changed_settings(old_config, _parse_text(config)) if kept else []
    metadata = {
        "format": METADATA_FORMAT,
        # The bundle of this export (the version just written) ...
        "bundle": entry["bundle"], "model": entry["model"], "task": bundle.task, "precision": bundle.precision,
        "onnx_sha256": entry["onnx_sha256"], "input": bundle.input.to_dict(), "class_names": labels, "signature": signature,
        "plans": entry["plans"],
        # ... and each version's, which check_model_dir checks the one config against.
        "versions": dict(sorted(versions.items(), key=lambda item: int(item[0]))),
    }
    dropped = sorted(set(_version_dirs(path)) - set(kept), key=int) if path.is_dir() else []
    return _Target(path, kind, plans, config, metadata, kept, dropped, policy, changes)


def _largest_batch(record: dict) -> int:
    """The largest batch a version takes: its bundle's max batch, and its engines' profiles."""
    return min([record["max_batch"]] + [plan["max_batch"] for plan in (record.get("plans") or {}).values()])


def _plans_record(plans: list[Plan]) -> dict:
    return {plan.compute_capability: {"file": plan.filename, "sha256": plan.sha256, "trt_version": plan.trt_version,
                                      "gpu_name": plan.gpu_name, "min_batch": plan.min_batch,
                                      "max_batch": plan.max_batch}
            for plan in plans}


def _version_dirs(path: Path) -> list[str]:
    """The version directories of a model directory, as Triton sees them (positive numbers)."""
    return [p.name for p in path.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]


def recorded_versions(path: Path, metadata: dict) -> dict[str, dict]:
    """Each version's record in a model's cvexport.json; a model exported before versions were
    recorded has one bundle, the top-level one, for every version directory."""
    if isinstance(metadata.get("versions"), dict):
        return metadata["versions"]
    return {version: _top_record(metadata) for version in _version_dirs(path)}


def _top_record(metadata: dict) -> dict:
    """A version's record made from cvexport.json's top-level bundle."""
    return {"bundle": metadata.get("bundle"), "model": metadata.get("model"), "precision": metadata.get("precision"),
            "onnx_sha256": metadata.get("onnx_sha256"), "max_batch": (metadata.get("input") or {}).get("max_batch"),
            "signature": metadata.get("signature"), "plans": metadata.get("plans") or {}}


def _versions_text(versions: list[str]) -> str:
    return ("version " if len(versions) == 1 else "versions ") + ", ".join(versions)


def _parse_text(text: str):
    from google.protobuf import text_format

    config = load_schema().ModelConfig()
    text_format.Parse(text, config)
    return config


def _one_line(message) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(message, as_one_line=True).strip()


def _config_kind(config) -> str:
    return "plan" if config.platform == TRT_PLATFORM or config.backend == TRT_BACKEND else "onnx"


def _incompatibility(old, old_meta: dict, new, bundle: Bundle) -> str | None:
    """Why one config cannot serve both the model's versions and this bundle, or None."""
    schema = load_schema()
    type_name = {value: key for key, value in schema.DataType.items()}
    format_name = {value: key for key, value in schema.ModelInput.Format.items()}
    kinds = {"onnx": "an ONNX Runtime model", "plan": "a TensorRT plan model"}
    if _config_kind(old) != _config_kind(new):
        return (f"is {kinds[_config_kind(old)]}, and this bundle's is {kinds[_config_kind(new)]} (a Triton model has "
                "one backend)")
    for section in ("input", "output"):
        before = {entry.name: entry for entry in getattr(old, section)}
        after = {entry.name: entry for entry in getattr(new, section)}
        if list(before) != list(after):
            return f"has {section}s {list(before)}, and this bundle {list(after)}"
        for name, entry in before.items():
            def describe(e):
                fmt = f" {format_name.get(e.format, e.format)}" if section == "input" and e.format else ""
                return f"{type_name.get(e.data_type, e.data_type)}{fmt} dims {list(e.dims)}"
            if describe(entry) != describe(after[name]):
                return f'has {section} "{name}" {describe(entry)}, and this bundle {describe(after[name])}'
    if list(old_meta.get("class_names") or []) != list(bundle.class_names or []):
        return "has other class names (its labels.txt)"
    if set(old.cc_model_filenames) != set(new.cc_model_filenames):
        return (f"has plans for compute capabilities {sorted(old.cc_model_filenames)}, and this bundle for "
                f"{sorted(new.cc_model_filenames)}")
    return None


def _changed_settings(old, new) -> list[str]:
    """The settings shared by every version that this export changes, in words."""
    changes = []
    if old.max_batch_size != new.max_batch_size:
        changes.append(f"max_batch_size {new.max_batch_size} (was {old.max_batch_size})")
    groups = lambda config: [(g.count, g.kind) for g in config.instance_group]  # noqa: E731
    if groups(old) != groups(new):
        changes.append(f"instance_group {_one_line(new.instance_group[0])} (was "
                       f"{', '.join(_one_line(g) for g in old.instance_group) or 'none'})")
    delay = lambda config: config.dynamic_batching.max_queue_delay_microseconds  # noqa: E731
    if delay(old) != delay(new):
        changes.append(f"max_queue_delay_microseconds {delay(new)} (was {delay(old)})")
    return changes


def _link_tree(source: Path, destination: Path, leave_out: set[str]) -> None:
    """``source`` recreated at ``destination`` without the top-level names in ``leave_out``,
    its files hard-linked (a plan or an ONNX file can be gigabytes; they are never written to,
    only replaced), copied where the file system has no hard links."""
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, destination, symlinks=True, copy_function=link,
                    ignore=lambda folder, names: [n for n in names if Path(folder) == source and n in leave_out])


def _write_model(directory: Path, bundle: Bundle, options: TritonOptions, config: str, metadata: dict,
                 onnx_path: Path | None, plans: list[Plan]) -> None:
    """The new version's files, the labels, the config and the metadata into ``directory``
    (created, or holding the versions kept, linked)."""
    version_dir = directory / str(options.version)
    version_dir.mkdir(parents=True)
    if onnx_path is not None:
        shutil.copyfile(onnx_path, version_dir / ONNX_MODEL)
    for plan in plans:
        shutil.copyfile(plan.source, version_dir / plan.filename)
    labels = bundle.class_names
    if labels:
        (directory / LABELS).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
    (directory / CONFIG).write_text(config, encoding="utf-8")
    (directory / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def render_config(name: str, bundle: Bundle, signature: dict, max_batch: int, plans: list[Plan] | None,
                  options: TritonOptions, labels: bool, version_policy: str = DEFAULT_VERSION_POLICY) -> str:
    """config.pbtxt text; ``plans`` None for the ONNX Runtime model."""
    contract = bundle.input
    from cvexport.tasks import get_task

    labelled = get_task(bundle.task).labelled_output if labels else None
    lines = [f"# Written by cvexport export-triton from {bundle.manifest.model} ({bundle.precision}); "
             "see docs/triton.md", f'name: "{name}"']
    if plans is None:
        lines.append(f'backend: "{ORT_BACKEND}"')
    else:
        lines.append(f'platform: "{TRT_PLATFORM}"')
    lines.append(f"max_batch_size: {max_batch}")
    lines.append("# Which versions Triton serves: latest { num_versions: 1 } (its default) the newest only;")
    lines.append("# all { } every version; specific { versions: [ 1, 2 ] } those listed")
    lines.append(f"version_policy {{ {version_policy} }}")
    lines.append("input [")
    entries = []
    for tensor in signature["inputs"]:
        fmt = {"NCHW": "FORMAT_NCHW", "NHWC": "FORMAT_NHWC"}.get(contract.layout) \
            if tensor["name"] == contract.name else None
        entries.append(_tensor_entry(tensor, bundle, fmt=fmt))
    lines.append(",\n".join(entries))
    lines.append("]")
    lines.append("output [")
    entries = [_tensor_entry(tensor, bundle, label=LABELS if tensor["name"] == labelled else None)
               for tensor in signature["outputs"]]
    lines.append(",\n".join(entries))
    lines.append("]")
    if plans:
        lines.append("cc_model_filenames [")
        lines.append(",\n".join(f'  {{ key: "{p.compute_capability}" value: "{p.filename}" }}' for p in plans))
        lines.append("]")
    lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {options.max_queue_delay_us}\n}}")
    kind = "KIND_GPU" if plans is not None or options.kind == "gpu" else "KIND_CPU"
    lines.append(f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {kind}\n  }}\n]")
    return "\n".join(lines) + "\n"


def _tensor_entry(tensor: dict, bundle: Bundle, fmt: str | None = None, label: str | None = None) -> str:
    dtype = TRITON_TYPES.get(tensor["dtype"])
    if dtype is None:
        raise CvexportError(f"bundle {bundle.path}: {tensor['name']} is {tensor['dtype']}, a type Triton has no "
                            f"equivalent for; {_rebuild(bundle)}")
    shape = tensor["shape"]
    if not shape:
        raise CvexportError(f"bundle {bundle.path}: {tensor['name']} records no shape in its graph, so Triton's dims "
                            f"cannot be written; {_rebuild(bundle)}")
    # The first dim is the batch (the bundle's contract), left out of dims as max_batch_size > 0
    # asks; any other dynamic dim is -1.
    dims = ", ".join(str(d) if isinstance(d, int) and d > 0 else "-1" for d in shape[1:])
    parts = [f'    name: "{tensor["name"]}"', f"    data_type: {dtype}"]
    if fmt:
        parts.append(f"    format: {fmt}")
    parts.append(f"    dims: [ {dims} ]")
    if label:
        parts.append(f'    label_filename: "{label}"')
    return "  {\n" + "\n".join(parts) + "\n  }"


def _rebuild(bundle: Bundle) -> str:
    return bundle.rebuild_hint()


def _is_ours(path: Path) -> bool:
    """A model directory this command wrote (its cvexport.json says so)."""
    try:
        return json.loads((path / METADATA).read_text(encoding="utf-8")).get("format") == METADATA_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------
def load_schema():
    """tritonclient's generated ``model_config_pb2`` (Triton's ModelConfig schema)."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise CvexportError(f"export-triton checks every config against Triton's schema, which tritonclient ships; "
                            f"install it: {INSTALL_HINT}") from None
    except RuntimeError as exc:  # tritonclient without its grpc extra raises this on import
        raise CvexportError(f"tritonclient is installed without its grpc part, which holds Triton's config schema "
                            f"({str(exc).splitlines()[0]}); {INSTALL_HINT}") from None
    return model_config_pb2


def parse_config(path: Path):
    """config.pbtxt -> a ModelConfig message; CvexportError naming what Triton's schema refuses."""
    from google.protobuf import text_format

    schema = load_schema()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CvexportError(f"cannot read {path}: {exc.strerror or exc}") from None
    config = schema.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise CvexportError(f"{path} breaks Triton's model config schema: {exc}") from None
    return config


def check_model_dir(directory: str | os.PathLike, expected_name: str | None = None) -> None:
    """Raise a one-line CvexportError for the first problem of a Triton model directory this
    command wrote: its config through Triton's schema, then what Triton would refuse or run
    wrongly that the parser accepts (unknown platform or backend, a name that differs from the
    directory, names / types / dims that differ from the graph, a max batch the graph or an
    engine's profile cannot take, missing files, bad instance groups or batching)."""
    directory = Path(directory)
    config_path = directory / CONFIG
    config = parse_config(config_path)
    schema = load_schema()
    where = f"{config_path}"

    def fail(problem: str) -> None:
        raise CvexportError(f"{where}: {problem}")

    try:
        metadata = json.loads((directory / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        fail(f"no readable {METADATA} beside it, so it cannot be checked against its graph; export it again")
    name = expected_name or directory.name
    if config.name and config.name != name:
        fail(f'name "{config.name}" differs from its directory "{name}"; Triton refuses to load it')

    backend, platform = config.backend, config.platform
    if (backend, platform) in ((ORT_BACKEND, ""), ("", ORT_PLATFORM), (ORT_BACKEND, ORT_PLATFORM)):
        kind = "onnx"
    elif (backend, platform) in ((TRT_BACKEND, ""), ("", TRT_PLATFORM), (TRT_BACKEND, TRT_PLATFORM)):
        kind = "plan"
    else:
        fail(f'backend "{backend}" / platform "{platform}" is not a known pair; expected backend "{ORT_BACKEND}" '
             f'(or platform "{ORT_PLATFORM}") for model.onnx, or platform "{TRT_PLATFORM}" for TensorRT plans')

    versions = [directory / name for name in sorted(_version_dirs(directory), key=int)]
    if not versions:
        fail("no version directory (a positive number) holds a model file")
    # One config serves every version: it is checked against each version's graph, batch range
    # and engines (a version cvexport.json does not record is taken as its top-level bundle's).
    recorded = recorded_versions(directory, metadata)
    records = [(version.name, recorded.get(version.name) or _top_record(metadata)) for version in versions]
    for version in versions:
        if kind == "onnx":
            wanted = [config.default_model_filename or ONNX_MODEL]
        else:
            wanted = list(config.cc_model_filenames.values()) or [config.default_model_filename or "model.plan"]
        for filename in wanted:
            if not (version / filename).is_file():
                fail(f"{version.name}/{filename} is missing")

    several = len(records) > 1

    def of(version: str) -> str:
        return f" (version {version})" if several else ""

    if kind == "plan":
        for cc, filename in config.cc_model_filenames.items():
            if not re.fullmatch(r"\d+\.\d+", cc):
                fail(f'cc_model_filenames key "{cc}" is not a compute capability such as "8.6"')
            for version, record in records:
                plans = record.get("plans") or {}
                if cc not in plans or plans[cc]["file"] != filename:
                    fail(f"cc_model_filenames maps {cc} to {filename}, which {METADATA} records no engine for"
                         f"{of(version)}")

    batch = config.max_batch_size
    if batch < 1:
        fail(f"max_batch_size {batch}: the bundle's graphs take a batch dimension, so it must be at least 1")
    for version, record in records:
        for fixed in [t["shape"][0] for t in record["signature"]["inputs"] if t["shape"]]:
            if isinstance(fixed, int) and fixed > 0 and batch > fixed:
                fail(f"max_batch_size {batch} exceeds the graph's fixed batch of {fixed}{of(version)}")
        bundle_max = record.get("max_batch") or metadata["input"]["max_batch"]
        if batch > bundle_max:
            fail(f"max_batch_size {batch} exceeds the bundle's max_batch {bundle_max}{of(version)}, the largest batch "
                 "it was built and checked for")
        if kind == "plan":
            for cc, plan in (record.get("plans") or {}).items():
                if batch > plan["max_batch"] or plan["min_batch"] > 1:
                    fail(f"max_batch_size {batch} is outside the batch range {plan['min_batch']}..{plan['max_batch']} "
                         f"of the engine's optimization profile ({plan['file']}, compute {cc}){of(version)}")

    signatures = {json.dumps(record["signature"], sort_keys=True): record["signature"] for _, record in records}
    for signature in signatures.values():
        _check_tensors(config, signature, schema, directory, metadata, fail)

    if config.HasField("dynamic_batching"):
        for preferred in config.dynamic_batching.preferred_batch_size:
            if not 1 <= preferred <= batch:
                fail(f"dynamic_batching preferred_batch_size {preferred} is outside 1..max_batch_size {batch}")
    for group in config.instance_group:
        if group.count < 1:
            fail(f"instance_group count {group.count} must be at least 1")
        if kind == "plan" and group.kind == schema.ModelInstanceGroup.KIND_CPU:
            fail("instance_group kind KIND_CPU for a TensorRT plan; plans run on the GPU (KIND_GPU)")


def _check_tensors(config, signature: dict, schema, directory: Path, metadata: dict, fail) -> None:
    """The config's inputs and outputs against one graph's: names, types, dims, labels."""
    type_names = {value: key for key, value in schema.DataType.items()}
    for section, entries, tensors in (("input", config.input, signature["inputs"]),
                                      ("output", config.output, signature["outputs"])):
        by_name = {t["name"]: t for t in tensors}
        seen = [entry.name for entry in entries]
        if sorted(seen) != sorted(by_name):
            fail(f"{section} names {seen} differ from the graph's {list(by_name)}")
        for entry in entries:
            tensor = by_name[entry.name]
            want_type = TRITON_TYPES.get(tensor["dtype"])
            got_type = type_names.get(entry.data_type, str(entry.data_type))
            if got_type != want_type:
                fail(f'{section} "{entry.name}" has data_type {got_type}, the graph has {tensor["dtype"]} '
                     f"({want_type})")
            graph_dims = tensor["shape"][1:]
            dims = list(entry.dims)
            if not _dims_match(dims, graph_dims):
                fail(f'{section} "{entry.name}" has dims {dims}; the graph\'s shape is {tensor["shape"]}, which '
                     f"without its batch dimension is {graph_dims}")
            if section == "input" and entry.format != schema.ModelInput.FORMAT_NONE and len(dims) != 3:
                fail(f'input "{entry.name}" has an image format with {len(dims)} dims; Triton needs 3 (CHW or HWC)')
            if section == "output" and entry.label_filename:
                _check_labels(directory / entry.label_filename, metadata, fail)


def _dims_match(dims: list[int], graph_dims: list) -> bool:
    """Config dims against the graph's (both without the batch dim): a fixed graph dim must be
    given exactly, a dynamic one as -1 or any positive size."""
    if len(dims) != len(graph_dims):
        return False
    for dim, graph_dim in zip(dims, graph_dims):
        fixed = isinstance(graph_dim, int) and graph_dim > 0
        if (fixed and dim != graph_dim) or (not fixed and dim != -1 and dim < 1):
            return False
    return True


def _check_labels(path: Path, metadata: dict, fail) -> None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        fail(f"label_filename {path.name} is missing from {path.parent}")
    if lines != list(metadata.get("class_names") or []):
        fail(f"{path.name} holds {counted(len(lines), 'label')} that differ from the bundle's class names "
             f"{metadata.get('class_names')}")


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    from cvexport.argtypes import positive_int

    p = subparsers.add_parser("export-triton", help="write a Triton Inference Server model repository entry "
                              "(config.pbtxt, model.onnx, TensorRT plans, labels), checked against Triton's schema")
    p.add_argument("bundle", help="bundle directory written by 'cvexport build'")
    p.add_argument("--repo", required=True, help="Triton model repository directory (created if missing)")
    p.add_argument("--name", help="model name (default: the bundle's directory name); TensorRT plans, where the "
                   f"bundle has engines, go to NAME{TRT_SUFFIX}")
    p.add_argument("--version", type=positive_int, default=1, help="model version directory (default 1); into a "
                   "model this command wrote, it goes beside the versions there, if they take the same inputs and "
                   "outputs")
    p.add_argument("--instances", type=positive_int, default=1, help="instance_group count (default 1)")
    p.add_argument("--max-queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US, metavar="N",
                   help=f"dynamic batching: longest wait for a fuller batch in microseconds "
                   f"(default {DEFAULT_QUEUE_DELAY_US})")
    p.add_argument("--kind", choices=KINDS, default="gpu", help="instance_group kind of the ONNX Runtime model "
                   "(default gpu; plans always run on the GPU)")
    p.add_argument("--force", action="store_true",
                   help="replace what is in the way: --version where it exists (other versions are kept), or REPO/NAME "
                   "where this command did not write it or its versions take other inputs or outputs")
    p.set_defaults(func=run)


def run(args) -> int:
    options = TritonOptions(repo=args.repo, name=args.name, version=args.version, instances=args.instances,
                            max_queue_delay_us=args.max_queue_delay_us, kind=args.kind, force=args.force)
    written = export_triton(args.bundle, options, log=lambda line: print(line, flush=True))
    print(f"checked {counted(len(written), 'model')} against Triton's model config schema and the graph; serve with: "
          f"tritonserver --model-repository={Path(args.repo).resolve()} (see docs/triton.md)")
    return 0
