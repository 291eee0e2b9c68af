"""A bundle: the directory ``cvexport build`` writes and every runtime loads.

    model.onnx          the graph, weights inside, post-processing inside
    weights.safetensors the PyTorch weights it was exported from (for --backend torch)
    manifest.json       contracts, thresholds, precision, hashes, versions (read and written
                        as the typed :class:`cvexport.manifest.Manifest`)
    parity.json         the build's parity report

Loading checks the manifest against its schema and against the graphs it describes
(cvexport/manifest_schema.py), so a corrupt or mismatched bundle is a one-line error instead
of a traceback or wrong answers; the files' hashes are checked where a file is used
(:meth:`Bundle.verify_file`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cvexport.digest import sha256_file
from cvexport.errors import CvexportError
from cvexport.manifest import InputContract, Manifest, write_manifest  # noqa: F401 (write_manifest: for build)
from cvexport.manifest_schema import check_graphs, check_manifest, rebuild_hint

BUNDLE_FORMAT = "cvexport-bundle/1"
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
WEIGHTS_FILE = "weights.safetensors"
PARITY_FILE = "parity.json"
REQUIRED_KEYS = ("format", "model", "task", "onnx", "input", "outputs", "precision")


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest.onnx.file

    @property
    def weights_path(self) -> Path:
        if self.manifest.weights is None:
            raise CvexportError(f"bundle {self.path} records no weights file; {self.rebuild_hint()}")
        return self.path / self.manifest.weights.file

    @property
    def input(self) -> InputContract:
        return self.manifest.input

    @property
    def max_batch(self) -> int:
        return int(self.manifest.input.max_batch)

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.class_names)

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def precision(self) -> str:
        return self.manifest.precision

    def rebuild_hint(self) -> str:
        """What to do about this bundle when it cannot serve: the build command that makes it again."""
        return rebuild_hint(self.manifest.to_dict())

    def verify_file(self, key: str) -> Path:
        """Path of the file recorded under manifest[key], after checking it exists and its sha256."""
        entry = self.manifest.file_entry(key)
        if entry is None:
            raise CvexportError(f"bundle {self.path} records no {key} file; rebuild it with 'cvexport build'")
        path = self.path / entry.file
        if not path.is_file():
            raise CvexportError(f"bundle {self.path} is missing {entry.file}; rebuild it with 'cvexport build'")
        if sha256_file(path) != entry.sha256:
            raise CvexportError(
                f"{path} does not match the sha256 in {MANIFEST} (corrupt or replaced); rebuild the bundle"
            )
        return path


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle directory (or a manifest.json inside one) with one-line errors for bad input:
    a manifest that breaks its schema or disagrees with its graphs is refused here (see
    :mod:`cvexport.manifest_schema`)."""
    path = Path(path)
    if path.name == MANIFEST:
        path = path.parent
    if not path.exists():
        raise CvexportError(f"bundle not found: {path}; build one with 'cvexport build MODEL'")
    if not path.is_dir():
        raise CvexportError(f"{path} is not a bundle directory; pass the folder 'cvexport build' wrote")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CvexportError(f"{path} has no {MANIFEST}; it is not a cvexport bundle (rebuild it)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CvexportError(f"{manifest_path} is corrupt or truncated ({exc.__class__.__name__}); rebuild the bundle") from None
    if not isinstance(manifest, dict):
        raise CvexportError(f"bundle {path}: {MANIFEST} holds a JSON {type(manifest).__name__}, expected a "
                            f"{BUNDLE_FORMAT} manifest object; {rebuild_hint(manifest)}")
    if manifest.get("format") != BUNDLE_FORMAT:
        found = json.dumps(manifest["format"]) if "format" in manifest else "missing"
        raise CvexportError(f"bundle {path}: manifest field 'format' is {found[:80]}, expected \"{BUNDLE_FORMAT}\" "
                            f"(not a manifest this cvexport reads); {rebuild_hint(manifest)} with this cvexport")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise CvexportError(f"bundle {path}: {MANIFEST} lacks {', '.join(repr(k) for k in missing)}, expected "
                            f"every one of {', '.join(REQUIRED_KEYS)}; {rebuild_hint(manifest)}")
    check_manifest(manifest, path)
    check_graphs(manifest, path)
    return Bundle(path=path, manifest=Manifest.from_dict(manifest))


def library_versions() -> dict[str, str]:
    """Versions of the libraries a bundle depends on, for the manifest and benchmark records."""
    import importlib.metadata as md

    versions = {}
    for dist in ("cvexport", "torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu",
                 "onnxruntime-extensions", "numpy", "tensorrt"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return versions
