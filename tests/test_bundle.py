"""Bundle loading and integrity checks (cvexport/bundle.py), on a real fp32 bundle.

The manifest's schema and its agreement with the graphs are tested case by case in
tests/test_manifest_validation.py."""

from __future__ import annotations

import json
import shutil

import pytest

from cvexport.bundle import BUNDLE_FORMAT, MANIFEST, ONNX_FILE, REQUIRED_KEYS, WEIGHTS_FILE, Bundle, load_bundle
from cvexport.digest import sha256_file
from cvexport.errors import CvexportError


@pytest.fixture
def bundle_copy(bundle, tmp_path):
    """A private copy of the session bundle that a test may damage."""
    return shutil.copytree(bundle.path, tmp_path / "bundle")


def _error(path) -> str:
    with pytest.raises(CvexportError) as excinfo:
        load_bundle(path)
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


def _manifest(path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def _write_manifest(path, manifest) -> None:
    (path / MANIFEST).write_text(json.dumps(manifest))


# ---------------------------------------------------------------------------- good bundle
def test_load_bundle_properties(bundle):
    again = load_bundle(bundle.path)
    assert again.manifest == bundle.manifest
    assert again.manifest.format == BUNDLE_FORMAT
    assert again.precision == "fp32"
    assert again.task == "detection"
    assert again.max_batch == 8
    assert again.class_names == ["ellipse", "rectangle", "triangle"]
    assert again.onnx_path == bundle.path / ONNX_FILE and again.onnx_path.is_file()
    assert again.weights_path == bundle.path / WEIGHTS_FILE and again.weights_path.is_file()
    assert again.input.name == "input" and again.input.dtype == "float32"
    assert again.manifest.output_names == [
        "num_detections", "detection_boxes", "detection_scores", "detection_classes"
    ]


def test_load_bundle_accepts_manifest_path_and_str(bundle):
    assert load_bundle(bundle.path / MANIFEST).path == bundle.path
    assert load_bundle(str(bundle.path)).path == bundle.path


def test_verify_file_passes_on_intact_bundle(bundle):
    assert bundle.verify_file("onnx") == bundle.path / ONNX_FILE
    assert bundle.verify_file("weights") == bundle.path / WEIGHTS_FILE
    assert bundle.manifest.onnx.sha256 == sha256_file(bundle.path / ONNX_FILE)


# -------------------------------------------------------------------------- load errors
def test_missing_path(tmp_path):
    assert "not found" in _error(tmp_path / "no_such_bundle")


def test_file_instead_of_directory(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx?")
    assert "not a bundle directory" in _error(path)


def test_directory_without_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    assert MANIFEST in _error(tmp_path / "empty")


def test_manifest_is_a_directory(tmp_path):
    (tmp_path / "b" / MANIFEST).mkdir(parents=True)
    assert MANIFEST in _error(tmp_path / "b")


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],  # truncated
        lambda text: "",  # empty
        lambda text: text.replace("{", "[", 1),  # syntax error
    ],
    ids=["truncated", "empty", "mangled"],
)
def test_corrupt_manifest_json(bundle_copy, damage):
    manifest_path = bundle_copy / MANIFEST
    manifest_path.write_text(damage(manifest_path.read_text()))
    message = _error(bundle_copy)
    assert "corrupt or truncated" in message


def test_manifest_not_utf8(bundle_copy):
    (bundle_copy / MANIFEST).write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    assert "corrupt" in _error(bundle_copy)


def _names_bundle_and_remedy(message: str, path) -> None:
    assert str(path) in message and "cvexport build" in message, message


@pytest.mark.parametrize("value", ["cvexport-bundle/0", "cvexport-bundle/2", "", None, 1])
def test_wrong_format_string(bundle_copy, value):
    manifest = _manifest(bundle_copy)
    manifest["format"] = value
    _write_manifest(bundle_copy, manifest)
    message = _error(bundle_copy)
    assert BUNDLE_FORMAT in message and "'format'" in message
    _names_bundle_and_remedy(message, bundle_copy)


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"a string"', "null", "42"])
def test_manifest_not_an_object(bundle_copy, content):
    (bundle_copy / MANIFEST).write_text(content)
    message = _error(bundle_copy)
    assert BUNDLE_FORMAT in message
    _names_bundle_and_remedy(message, bundle_copy)


@pytest.mark.parametrize("key", [k for k in REQUIRED_KEYS if k != "format"])
def test_missing_required_key(bundle_copy, key):
    manifest = _manifest(bundle_copy)
    del manifest[key]
    _write_manifest(bundle_copy, manifest)
    message = _error(bundle_copy)
    assert "lacks" in message and f"'{key}'" in message
    _names_bundle_and_remedy(message, bundle_copy)


def test_missing_format_key(bundle_copy):
    manifest = _manifest(bundle_copy)
    del manifest["format"]
    _write_manifest(bundle_copy, manifest)
    message = _error(bundle_copy)
    assert BUNDLE_FORMAT in message and "missing" in message
    _names_bundle_and_remedy(message, bundle_copy)


def test_weights_path_without_weights_entry(bundle_copy):
    manifest = _manifest(bundle_copy)
    del manifest["weights"]  # optional: an ONNX-only bundle still loads
    _write_manifest(bundle_copy, manifest)
    copy = load_bundle(bundle_copy)
    with pytest.raises(CvexportError, match="records no weights"):
        copy.weights_path
    assert "records no weights" in _verify_error(copy, "weights")


# --------------------------------------------------------------------------- verify_file
def _verify_error(bundle: Bundle, key: str) -> str:
    with pytest.raises(CvexportError) as excinfo:
        bundle.verify_file(key)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("key, name", [("onnx", ONNX_FILE), ("weights", WEIGHTS_FILE)])
def test_verify_file_detects_modified_file(bundle_copy, key, name):
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))
    copy = load_bundle(bundle_copy)  # loading checks the manifest, not the hashes
    message = _verify_error(copy, key)
    assert "sha256" in message and name in message


@pytest.mark.parametrize("key, name", [("onnx", ONNX_FILE), ("weights", WEIGHTS_FILE)])
def test_verify_file_detects_missing_file(bundle_copy, key, name):
    (bundle_copy / name).unlink()
    assert "missing" in _verify_error(load_bundle(bundle_copy), key)


def test_verify_file_unknown_key(bundle):
    assert "records no" in _verify_error(bundle, "calibration")


# ------------------------------------------------------------------- runtime on bad bundle
def _truncate_onnx(bundle_dir, rehash: bool) -> Bundle:
    path = bundle_dir / ONNX_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    if rehash:
        # a manifest that agrees with the damaged file: the hash check passes, loading must not
        manifest = _manifest(bundle_dir)
        manifest["onnx"]["sha256"] = sha256_file(path)
        _write_manifest(bundle_dir, manifest)
    return load_bundle(bundle_dir)


@pytest.mark.parametrize("rehash", [False, True], ids=["hash-mismatch", "hash-matches-truncated-file"])
def test_truncated_onnx_is_cvexport_error_for_ort(bundle_copy, rehash):
    from cvexport.runtime import create_runner

    damaged = _truncate_onnx(bundle_copy, rehash)
    with pytest.raises(CvexportError) as excinfo:
        create_runner(damaged, "ort")
    assert "\n" not in str(excinfo.value)


def test_create_runner_from_path_and_unknown_backend(bundle):
    from cvexport.runtime import create_runner

    with pytest.raises(CvexportError) as excinfo:
        create_runner(str(bundle.path), "tensorflow")
    assert "unknown backend" in str(excinfo.value)
    with pytest.raises(CvexportError):
        create_runner(str(bundle.path.parent / "absent"), "ort")
