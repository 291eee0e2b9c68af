"""Engine files, their metadata and the cache key (pure Python, no ``tensorrt`` import).

An engine is stored as ``<dir>/model-<key16>.engine`` with its metadata beside it in
``model-<key16>.engine.json``; nothing is ever appended to the engine file itself, so the
file stays exactly what ``build_serialized_network`` returned.

The key is the sha256 of a canonical JSON of everything that changes the engine: the ONNX
file's sha256, the TensorRT version, the GPU (name and compute capability), precision, the
optimization profile and the effective builder settings. Any change gives a new key, so a
stale engine is never picked up: the lookup misses, the caller rebuilds and logs why
(:func:`describe_cache_miss` / :func:`explain_mismatch`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from cvexport.atomic import atomic_path
from cvexport.digest import sha256_file
from cvexport.errors import CvexportError

ENGINE_FORMAT = "cvexport-engine/1"
ENGINE_SUFFIX = ".engine"
METADATA_SUFFIX = ".engine.json"
KEY_FIELDS = ("onnx_sha256", "trt_version", "gpu_name", "compute_capability", "precision", "profile",
              "builder_options")
_KEY_PREFIX_LEN = 16


def key_fields(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str, precision: str,
               profile: Mapping[str, Any], builder_options: Mapping[str, Any]) -> dict[str, Any]:
    """The fields the engine cache key is computed from, JSON-normalized."""
    fields = {
        "onnx_sha256": str(onnx_sha256),
        "trt_version": str(trt_version),
        "gpu_name": str(gpu_name),
        "compute_capability": str(compute_capability),
        "precision": str(precision),
        "profile": profile,
        "builder_options": builder_options,
    }
    return json.loads(_canonical_json(fields))


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, compute_capability: str, precision: str,
                     profile: Mapping[str, Any], builder_options: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the key fields."""
    fields = key_fields(onnx_sha256, trt_version, gpu_name, compute_capability, precision, profile, builder_options)
    return key_from_fields(fields)


def key_from_fields(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(_canonical_json(fields).encode("utf-8")).hexdigest()


def _canonical_json(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"engine cache key fields must be plain JSON data: {exc}") from None


def engine_filename(key: str) -> str:
    return f"model-{key[:_KEY_PREFIX_LEN]}{ENGINE_SUFFIX}"


def metadata_path(engine_path: str | Path) -> Path:
    """``model-<key>.engine`` -> ``model-<key>.engine.json`` (the side JSON, never inside the engine)."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def _sha256_bytes(data) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


# --------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineMetadata:
    """What is known about one engine file; stored as JSON beside it."""

    key: str
    key_fields: dict[str, Any]
    model: str
    engine_file: str = ""
    engine_sha256: str = ""
    engine_size: int = 0
    created: str = ""
    build_seconds: float | None = None
    warnings: tuple[str, ...] = ()
    format: str = ENGINE_FORMAT

    @property
    def trt_version(self) -> str:
        return self.key_fields["trt_version"]

    @property
    def gpu_name(self) -> str:
        return self.key_fields["gpu_name"]

    @property
    def compute_capability(self) -> str:
        return self.key_fields["compute_capability"]

    @property
    def precision(self) -> str:
        return self.key_fields["precision"]

    @property
    def builder_options(self) -> dict[str, Any]:
        return dict(self.key_fields.get("builder_options") or {})

    @property
    def version_compatible(self) -> bool:
        return bool(self.builder_options.get("version_compatible"))

    @property
    def hardware_compatibility_level(self) -> str | None:
        return self.builder_options.get("hardware_compatibility_level")

    def to_json(self) -> str:
        data = asdict(self)
        data["warnings"] = list(self.warnings)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str | Path = "engine metadata") -> "EngineMetadata":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CvexportError(f"{source} is corrupt ({exc.__class__.__name__}); delete the engine and rebuild it") from None
        if not isinstance(data, dict) or data.get("format") != ENGINE_FORMAT:
            raise CvexportError(f"{source} is not {ENGINE_FORMAT} metadata; delete the engine and rebuild it")
        fields = data.get("key_fields")
        missing = [k for k in KEY_FIELDS if not isinstance(fields, dict) or k not in fields]
        if missing or not isinstance(data.get("key"), str) or not isinstance(data.get("model"), str):
            raise CvexportError(f"{source} lacks {', '.join(missing) or 'key/model'}; delete the engine and rebuild it")
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["warnings"] = tuple(kwargs.get("warnings") or ())
        return cls(**kwargs)


def read_metadata(engine_path: str | Path) -> EngineMetadata:
    """The metadata stored beside ``engine_path``; CvexportError if missing or corrupt."""
    path = metadata_path(engine_path)
    if not path.is_file():
        raise CvexportError(
            f"{engine_path} has no {path.name} beside it, so its TensorRT version and GPU are unknown; "
            "rebuild it with 'cvexport build MODEL --backend trt'"
        )
    return EngineMetadata.from_json(path.read_text(encoding="utf-8"), source=path)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------
# Writing and finding engines
# --------------------------------------------------------------------------------------
def write_engine(path: str | Path, engine_bytes, metadata: EngineMetadata) -> EngineMetadata:
    """Write the engine and its metadata JSON, each atomically; returns the metadata as written.

    ``engine_bytes`` is anything with the buffer protocol (bytes, TensorRT's IHostMemory).
    The engine goes first, the JSON second; if either fails both files are removed, and a
    lookup never accepts an engine without matching metadata, so no half-written pair is used.
    """
    path = Path(path)
    meta_path = metadata_path(path)
    view = memoryview(engine_bytes)
    metadata = replace(metadata, engine_file=path.name, engine_sha256=_sha256_bytes(view), engine_size=view.nbytes,
                       created=metadata.created or now_iso())
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(view)
        with atomic_path(meta_path) as tmp:
            tmp.write_text(metadata.to_json(), encoding="utf-8")
    except BaseException as exc:
        for leftover in (path, meta_path):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
        if isinstance(exc, OSError):
            raise CvexportError(f"could not write the engine to {path.parent}: {exc.strerror or exc}; "
                                "pass a writable engine directory") from None
        raise
    return metadata


def _load_if_valid(engine_path: Path) -> EngineMetadata | None:
    try:
        meta = read_metadata(engine_path)
    except CvexportError:
        return None
    return meta if engine_path.is_file() else None


def find_cached_engine(cache_dir: str | Path, key: str) -> Path | None:
    """The engine built for ``key`` in ``cache_dir``, or None (missing, stale or corrupt)."""
    path = Path(cache_dir) / engine_filename(key)
    meta = _load_if_valid(path)
    if meta is None or meta.key != key:
        return None
    if path.stat().st_size != meta.engine_size or sha256_file(path) != meta.engine_sha256:
        return None
    return path


def list_engines(cache_dir: str | Path) -> list[tuple[Path, EngineMetadata]]:
    """(engine path, metadata) of every engine with readable metadata in ``cache_dir``, newest first."""
    cache_dir = Path(cache_dir)
    found = []
    if cache_dir.is_dir():
        for path in cache_dir.glob(f"*{ENGINE_SUFFIX}"):
            meta = _load_if_valid(path)
            if meta is not None:
                found.append((path, meta))
    return sorted(found, key=lambda item: item[1].created, reverse=True)


_FIELD_LABELS = {
    "onnx_sha256": "the ONNX model changed",
    "trt_version": "TensorRT version",
    "gpu_name": "GPU",
    "compute_capability": "compute capability",
    "precision": "precision",
    "profile": "optimization profile",
}


def explain_mismatch(old_meta: EngineMetadata | Mapping[str, Any], new_key_fields: Mapping[str, Any]) -> str:
    """Why an engine built with ``old_meta`` does not serve ``new_key_fields``, in one line."""
    old = old_meta.key_fields if isinstance(old_meta, EngineMetadata) else dict(old_meta.get("key_fields", old_meta))
    reasons = []
    for name in KEY_FIELDS:
        before, after = old.get(name), new_key_fields.get(name)
        if before == after:
            continue
        if name == "onnx_sha256":
            reasons.append(f"the ONNX model changed (sha256 {str(before)[:12]}… -> {str(after)[:12]}…)")
        elif name == "builder_options":
            before, after = dict(before or {}), dict(after or {})
            for option in sorted(set(before) | set(after)):
                if before.get(option) != after.get(option):
                    reasons.append(f"builder option {option}: {_short(before.get(option))} -> {_short(after.get(option))}")
        else:
            reasons.append(f"{_FIELD_LABELS[name]}: {_short(before)} -> {_short(after)}")
    return "; ".join(reasons) if reasons else "same settings, but the engine key differs (built by another cvexport version)"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _distance(meta: EngineMetadata, fields: Mapping[str, Any]) -> int:
    return sum(meta.key_fields.get(name) != fields.get(name) for name in KEY_FIELDS)


def describe_cache_miss(cache_dir: str | Path, key: str, fields: Mapping[str, Any]) -> str:
    """One line on why no engine serves ``key``: nothing built yet, a corrupt file, or what
    changed since the closest existing engine."""
    path = Path(cache_dir) / engine_filename(key)
    if path.exists():
        meta = _load_if_valid(path)
        if meta is None:
            return f"{path.name} has no readable metadata; rebuilding it"
        if meta.key == key:
            return f"{path.name} does not match the sha256 in its metadata (corrupt or replaced); rebuilding it"
    others = [(p, m) for p, m in list_engines(cache_dir) if m.key != key]
    if not others:
        return f"no engine built yet in {cache_dir}"
    old_path, old_meta = min(others, key=lambda item: _distance(item[1], fields))
    return f"not reusing {old_path.name}: {explain_mismatch(old_meta, fields)}"


# --------------------------------------------------------------------------------------
# Compatibility of an existing engine with this machine
# --------------------------------------------------------------------------------------
def _cc_tuple(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


def _major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return -1


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in str(version).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_engine_compatible(metadata: EngineMetadata, trt_version: str, gpu_name: str,
                            compute_capability: str, engine_path: str | Path | None = None) -> list[str]:
    """Raise CvexportError if the engine cannot load here; return warnings for what only may hurt.

    TensorRT version: must match exactly, unless the plan is version-compatible and this
    runtime is the same or newer (same major, or a 10.x plan on an 11.x runtime).
    GPU: the compute capability must match, unless the plan was built with hardware
    compatibility ampere_plus and this GPU is Ampere (8.0) or newer. A different GPU model
    with the same compute capability is only a warning (TensorRT itself only warns).
    """
    where = Path(engine_path) if engine_path else Path(metadata.engine_file or "the engine")
    built = f"TensorRT {metadata.trt_version} on {metadata.gpu_name} (compute {metadata.compute_capability})"
    here = f"TensorRT {trt_version} on {gpu_name} (compute {compute_capability})"
    fix = f"rebuild it with 'cvexport build {metadata.model} --backend trt' or delete {where}"
    problems = []
    if str(metadata.trt_version) != str(trt_version):
        newer = _version_tuple(trt_version) >= _version_tuple(metadata.trt_version)
        majors_ok = _major(trt_version) == _major(metadata.trt_version) or (
            _major(metadata.trt_version) == 10 and _major(trt_version) == 11)
        if not (metadata.version_compatible and newer and majors_ok):
            problems.append("TensorRT version")
    warnings = []
    if _cc_tuple(metadata.compute_capability) != _cc_tuple(compute_capability):
        level = metadata.hardware_compatibility_level
        if not (level == "AMPERE_PLUS" and _cc_tuple(compute_capability) >= (8, 0)):
            problems.append("GPU")
    elif metadata.gpu_name != gpu_name:
        warnings.append(f"{where.name} was built on {metadata.gpu_name}, this is {gpu_name} (same compute capability "
                        f"{compute_capability}); it loads, but rebuild it here for best speed")
    if problems:
        raise CvexportError(f"engine {where} was built with {built}; this machine has {here} "
                            f"({' and '.join(problems)} {'differ' if len(problems) > 1 else 'differs'}); {fix}")
    return warnings
