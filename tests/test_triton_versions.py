"""``cvexport export-triton --version N`` into a model it wrote: versions side by side under one
config.pbtxt, a clash or another I/O signature refused in one line, the repository untouched by
a refused or failed export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (pip install 'cvexport[triton]')")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from cli_helpers import one_line_stderr  # noqa: E402
from cvexport.errors import CvexportError  # noqa: E402
from cvexport.triton import CONFIG, METADATA, TritonOptions, check_model_dir, export_triton  # noqa: E402


@pytest.fixture(scope="module")
def classifier(build_bundle):
    return build_bundle(model="classifier")


def _config(model_dir: Path):
    config = model_config_pb2.ModelConfig()
    text_format.Parse((model_dir / CONFIG).read_text(), config)
    return config


def _files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _export(bundle, repo: Path, log=None, **options) -> list[Path]:
    return export_triton(bundle, TritonOptions(repo=str(repo), name="cls", **options),
                         log=log.append if log is not None else (lambda line: None))


def test_version_2_goes_beside_version_1(classifier, tmp_path):
    _export(classifier, tmp_path)
    first = _files(tmp_path / "cls" / "1")
    notes: list[str] = []
    _export(classifier, tmp_path, notes, version=2)
    model = tmp_path / "cls"
    assert sorted(p.name for p in model.iterdir()) == ["1", "2", CONFIG, METADATA, "labels.txt"]
    assert _files(model / "1") == first  # version 1 kept as it was
    assert (model / "2" / "model.onnx").read_bytes() == classifier.onnx_path.read_bytes()
    check_model_dir(model)  # the one config describes both
    config = _config(model)
    assert config.version_policy.WhichOneof("policy_choice") == "latest"  # Triton's default, written out
    assert config.version_policy.latest.num_versions == 1
    assert sorted(json.loads((model / METADATA).read_text())["versions"]) == ["1", "2"]
    assert any("version 2, beside version 1; Triton serves the newest only" in note for note in notes), notes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls"]  # no temp directory left


def test_existing_version_is_refused_in_one_line_and_force_replaces_only_it(classifier, tmp_path, capsys):
    from cvexport.cli import main

    _export(classifier, tmp_path)
    _export(classifier, tmp_path, version=2)
    before = _files(tmp_path)
    assert main(["export-triton", str(classifier.path), "--repo", str(tmp_path), "--name", "cls"]) == 2
    message = one_line_stderr(capsys)
    assert "already has version 1" in message and "the next after the highest is 3" in message
    assert _files(tmp_path) == before
    # --force replaces version 1, and only it.
    (tmp_path / "cls" / "1" / "model.onnx").write_bytes(b"stale")
    (tmp_path / "cls" / "2" / "extra.txt").write_text("kept")
    _export(classifier, tmp_path, force=True)
    assert (tmp_path / "cls" / "1" / "model.onnx").read_bytes() == classifier.onnx_path.read_bytes()
    assert (tmp_path / "cls" / "2" / "extra.txt").read_text() == "kept"
    check_model_dir(tmp_path / "cls")


def test_version_with_another_io_signature_is_refused(classifier, build_bundle, tmp_path, capsys):
    from cvexport.cli import main

    fcn = build_bundle(model="fcn")
    _export(classifier, tmp_path)
    before = _files(tmp_path)
    assert main(["export-triton", str(fcn.path), "--repo", str(tmp_path), "--name", "cls", "--version", "2"]) == 2
    message = one_line_stderr(capsys)
    assert "(exported from classifier) has input \"input\"" in message and "cannot be its version 2" in message
    assert "choose another --name" in message
    assert _files(tmp_path) == before
    # --force replaces the model, its version 1 included: one config cannot serve both.
    _export(fcn, tmp_path, version=2, force=True)
    assert sorted(p.name for p in (tmp_path / "cls").iterdir() if p.is_dir()) == ["2"]
    assert json.loads((tmp_path / "cls" / METADATA).read_text())["model"] == "fcn"


def test_config_takes_the_smallest_max_batch_and_keeps_a_version_policy(classifier, build_bundle, tmp_path):
    small = build_bundle(model="classifier", max_batch=4)
    _export(classifier, tmp_path)
    path = tmp_path / "cls" / CONFIG
    path.write_text(path.read_text().replace("version_policy { latest { num_versions: 1 } }",
                                             "version_policy { all { } }"))
    notes: list[str] = []
    _export(small, tmp_path, notes, version=2)
    config = _config(tmp_path / "cls")
    assert config.max_batch_size == 4  # every version takes every batch the config allows
    assert config.version_policy.WhichOneof("policy_choice") == "all"  # the user's choice kept
    assert any("now has max_batch_size 4 (was 8)" in note for note in notes), notes
    check_model_dir(tmp_path / "cls")
    # Version 1 (max batch 8) is checked too: the config may not go back above 4.
    path.write_text(path.read_text().replace("max_batch_size: 4", "max_batch_size: 8"))
    with pytest.raises(CvexportError, match="max_batch_size 8 exceeds the bundle's max_batch 4 \\(version 2\\)"):
        check_model_dir(tmp_path / "cls")


def test_model_exported_before_versions_were_recorded_takes_a_new_version(classifier, tmp_path):
    _export(classifier, tmp_path)
    metadata_path = tmp_path / "cls" / METADATA
    metadata = json.loads(metadata_path.read_text())
    del metadata["versions"]  # as an earlier cvexport wrote it
    metadata_path.write_text(json.dumps(metadata))
    _export(classifier, tmp_path, version=2)
    assert sorted(json.loads(metadata_path.read_text())["versions"]) == ["1", "2"]
    check_model_dir(tmp_path / "cls")
