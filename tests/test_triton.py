"""``cvexport export-triton``: Triton model repositories from bundles, checked by Triton's own
schema (tritonclient's model_config_pb2) and by the semantic checks the parser does not make.

No Triton server can be installed here; everything up to loading the repository is tested.
TensorRT plans are stood in for by fake engine files with real cvexport engine metadata (the
export copies plans, it never deserializes them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (pip install 'cvexport[triton]')")

from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2  # noqa: E402

from cli_helpers import one_line_stderr  # noqa: E402
from cvexport.errors import CvexportError  # noqa: E402
from cvexport.triton import (  # noqa: E402
    CONFIG,
    LABELS,
    METADATA,
    TritonOptions,
    check_model_dir,
    export_triton,
    parse_config,
)
from cvexport.backends.trt.cache import EngineMetadata, engine_filename, key_fields, key_from_fields, write_engine  # noqa: E402

MODELS = ("ssd", "classifier", "fcn", "style")


@pytest.fixture(scope="module")
def bundles(build_bundle):
    return {model: build_bundle(model=model) for model in MODELS}


def _config(model_dir: Path):
    config = model_config_pb2.ModelConfig()
    text_format.Parse((model_dir / CONFIG).read_text(), config)
    return config


def _graph_dims(bundle, name: str) -> list:
    for output in bundle.manifest.outputs:
        if output.name == name:
            return list(output.shape)
    raise KeyError(name)


# ------------------------------------------------------------------ every model
@pytest.mark.parametrize("model", MODELS)
def test_repository_for_every_model_passes_schema_and_semantic_checks(bundles, tmp_path, model):
    bundle = bundles[model]
    written = export_triton(bundle, TritonOptions(repo=str(tmp_path), name=model), log=lambda line: None)
    assert written == [tmp_path / model]
    model_dir = tmp_path / model
    check_model_dir(model_dir)  # also run inside the export, before the rename
    config = _config(model_dir)
    assert config.name == model and config.backend == "onnxruntime" and config.platform == ""
    assert config.max_batch_size == bundle.max_batch
    (graph_input,) = config.input
    assert graph_input.name == bundle.input.name
    assert graph_input.data_type == model_config_pb2.TYPE_FP32
    assert list(graph_input.dims) == [3, bundle.input.height, bundle.input.width]  # no batch dim
    assert [o.name for o in config.output] == bundle.manifest.output_names
    for output in config.output:
        assert list(output.dims) == _graph_dims(bundle, output.name)[1:]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_GPU)]
    assert (model_dir / "1" / "model.onnx").read_bytes() == bundle.onnx_path.read_bytes()
    labelled = [o for o in config.output if o.label_filename]
    if bundle.class_names:
        assert (model_dir / LABELS).read_text().splitlines() == bundle.class_names
        expected = {"ssd": "detection_classes", "classifier": "probabilities", "fcn": "labels"}[model]
        assert [o.name for o in labelled] == [expected] and labelled[0].label_filename == LABELS
    else:
        assert not (model_dir / LABELS).exists() and not labelled
    assert sorted(p.name for p in tmp_path.iterdir()) == [model]  # no temp directory left behind


def test_uint8_bundle_is_nhwc_uint8(build_bundle, tmp_path):
    bundle = build_bundle(model="classifier", input_format="uint8")
    export_triton(bundle, TritonOptions(repo=str(tmp_path), name="cam", kind="cpu", instances=3,
                                        max_queue_delay_us=500), log=lambda line: None)
    config = _config(tmp_path / "cam")
    (graph_input,) = config.input
    assert graph_input.data_type == model_config_pb2.TYPE_UINT8
    assert graph_input.format == model_config_pb2.ModelInput.FORMAT_NHWC
    assert list(graph_input.dims) == [64, 64, 3]
    assert [(g.count, g.kind) for g in config.instance_group] == [(3, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500


def test_default_name_is_the_bundle_directory_and_version_option(bundles, tmp_path):
    bundle = bundles["classifier"]
    export_triton(bundle, TritonOptions(repo=str(tmp_path), version=3), log=lambda line: None)
    (model_dir,) = tmp_path.iterdir()
    assert model_dir.name == bundle.path.name and (model_dir / "3" / "model.onnx").is_file()
    assert _config(model_dir).name == bundle.path.name


# ------------------------------------------------------------------ semantic checks
@pytest.fixture
def classifier_repo(bundles, tmp_path):
    export_triton(bundles["classifier"], TritonOptions(repo=str(tmp_path), name="cls"), log=lambda line: None)
    return tmp_path / "cls"


def _edit(model_dir: Path, old: str, new: str) -> None:
    path = model_dir / CONFIG
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("old,new,message", [
    ('backend: "onnxruntime"', 'platform: "onnxruntime_onx"', "not a known pair"),
    ('backend: "onnxruntime"', 'backend: "onnxruntim"', "not a known pair"),
    ("dims: [ 3, 64, 64 ]", "dims: [ 3, 64, 63 ]", 'input "input" has dims [3, 64, 63]'),
    ("dims: [ 3, 64, 64 ]", "dims: [ 1, 3, 64, 64 ]", "without its batch dimension is [3, 64, 64]"),
    ("dims: [ 8 ]", "dims: [ 9 ]", 'output "logits" has dims [9]'),
    ("max_batch_size: 8", "max_batch_size: 16", "max_batch_size 16 exceeds the bundle's max_batch 8"),
    ("max_batch_size: 8", "max_batch_size: 0", "must be at least 1"),
    ("data_type: TYPE_FP32", "data_type: TYPE_FP16", "data_type TYPE_FP16, the graph has float32"),
    ('name: "logits"', 'name: "logit"', "output names"),
    ('name: "cls"', 'name: "other"', 'differs from its directory "cls"'),
    ("count: 1", "count: 0", "instance_group count 0"),
])
def test_semantic_check_rejects_what_the_parser_accepts(classifier_repo, old, new, message):
    _edit(classifier_repo, old, new)
    parse_config(classifier_repo / CONFIG)  # Triton's schema alone accepts each of these
    with pytest.raises(CvexportError) as info:
        check_model_dir(classifier_repo)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_schema_rejects_unknown_field_and_enum(classifier_repo):
    _edit(classifier_repo, "max_batch_size: 8", "max_batch_sise: 8")
    with pytest.raises(CvexportError, match="breaks Triton's model config schema"):
        check_model_dir(classifier_repo)
    _edit(classifier_repo, "max_batch_sise: 8", "max_batch_size: 8")
    _edit(classifier_repo, "kind: KIND_GPU", "kind: KIND_TPU")
    with pytest.raises(CvexportError, match="breaks Triton's model config schema"):
        check_model_dir(classifier_repo)


def test_missing_model_file_and_wrong_labels_rejected(classifier_repo):
    (classifier_repo / LABELS).write_text("ring\ncrescent\n")
    with pytest.raises(CvexportError, match="labels.txt holds 2 labels"):
        check_model_dir(classifier_repo)
    (classifier_repo / LABELS).unlink()
    with pytest.raises(CvexportError, match="label_filename labels.txt is missing"):
        check_model_dir(classifier_repo)
    (classifier_repo / "1" / "model.onnx").unlink()
    with pytest.raises(CvexportError, match="1/model.onnx is missing"):
        check_model_dir(classifier_repo)


# ------------------------------------------------------------------ EfficientNMS and TensorRT plans
@pytest.fixture(scope="module")
def efficient_bundle(build_bundle):
    return build_bundle(model="ssd", nms="efficient")


def test_efficient_nms_bundle_refused(efficient_bundle, tmp_path):
    repo = tmp_path / "repo"
    with pytest.raises(CvexportError) as info:
        export_triton(efficient_bundle, TritonOptions(repo=str(repo)), log=lambda line: None)
    message = str(info.value)
    assert "EfficientNMS_TRT" in message and "server#4894" in message and "--nms onnx" in message
    assert "\n" not in message
    assert not repo.exists()  # refused before anything was written


def _with_engines(bundle, tmp_path, engines: list[dict]) -> "object":
    """A copy of ``bundle`` with fake engines (real metadata, stand-in bytes) in its engines/."""
    from cvexport.bundle import load_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    name = bundle.input.name
    shape = [3, bundle.input.height, bundle.input.width]
    for engine in engines:
        fields = key_fields(
            onnx_sha256=engine.get("onnx_sha256", bundle.manifest.onnx.sha256), trt_version="10.8.0",
            gpu_name=engine["gpu"], compute_capability=engine["cc"], precision=bundle.precision,
            profile={name: {"min": [1, *shape], "opt": [engine.get("max", 8), *shape],
                            "max": [engine.get("max", 8), *shape]}},
            builder_options={})
        meta = EngineMetadata(key=key_from_fields(fields), key_fields=fields, model=bundle.manifest.model)
        (copy / "engines").mkdir(exist_ok=True)
        write_engine(copy / "engines" / engine_filename(meta.key), engine["bytes"], meta)
    return load_bundle(copy)


def test_efficient_nms_bundle_with_engine_exports_the_plan_only(efficient_bundle, tmp_path):
    bundle = _with_engines(efficient_bundle, tmp_path, [{"cc": "8.6", "gpu": "RTX A4000", "bytes": b"plan-86"}])
    notes = []
    repo = tmp_path / "repo"
    assert export_triton(bundle, TritonOptions(repo=str(repo), name="det"), log=notes.append) == [repo / "det"]
    assert any("plan only" in note for note in notes)
    config = _config(repo / "det")
    assert config.platform == "tensorrt_plan" and config.backend == ""
    assert dict(config.cc_model_filenames) == {"8.6": "model_8.6.plan"}
    assert (repo / "det" / "1" / "model_8.6.plan").read_bytes() == b"plan-86"
    assert not (repo / "det" / "1" / "model.onnx").exists()
    with pytest.raises(CvexportError, match="runs on a GPU; drop --kind cpu"):
        export_triton(bundle, TritonOptions(repo=str(tmp_path / "cpu"), kind="cpu"), log=lambda line: None)


def test_plans_per_compute_capability_beside_the_onnx_model(bundles, tmp_path):
    bundle = _with_engines(bundles["ssd"], tmp_path, [
        {"cc": "8.9", "gpu": "L4", "bytes": b"plan-89", "max": 4},
        {"cc": "8.6", "gpu": "RTX A4000", "bytes": b"plan-86"},
        {"cc": "7.5", "gpu": "T4", "bytes": b"stale", "onnx_sha256": "0" * 64},  # another graph's engine
    ])
    repo = tmp_path / "repo"
    written = export_triton(bundle, TritonOptions(repo=str(repo), name="det"), log=lambda line: None)
    assert written == [repo / "det", repo / "det_trt"]
    assert _config(repo / "det").backend == "onnxruntime"
    plan = _config(repo / "det_trt")
    assert plan.platform == "tensorrt_plan"
    assert dict(plan.cc_model_filenames) == {"8.6": "model_8.6.plan", "8.9": "model_8.9.plan"}
    assert plan.max_batch_size == 4  # the smallest engine profile: every plan must take every batch
    assert (repo / "det_trt" / "1" / "model_8.9.plan").read_bytes() == b"plan-89"
    assert sorted(p.name for p in (repo / "det_trt" / "1").iterdir()) == ["model_8.6.plan", "model_8.9.plan"]
    # A max batch beyond an engine's profile, and a misspelled platform, are caught.
    _edit(repo / "det_trt", "max_batch_size: 4", "max_batch_size: 8")
    with pytest.raises(CvexportError, match=r"outside the batch range 1..4 of the engine's optimization profile"):
        check_model_dir(repo / "det_trt")
    _edit(repo / "det_trt", "max_batch_size: 8", "max_batch_size: 4")
    _edit(repo / "det_trt", 'platform: "tensorrt_plan"', 'platform: "tensorrt_plann"')
    with pytest.raises(CvexportError, match="not a known pair"):
        check_model_dir(repo / "det_trt")
    _edit(repo / "det_trt", 'platform: "tensorrt_plann"', 'platform: "tensorrt_plan"')
    _edit(repo / "det_trt", "kind: KIND_GPU", "kind: KIND_CPU")
    with pytest.raises(CvexportError, match="plans run on the GPU"):
        check_model_dir(repo / "det_trt")
    # The same name from a bundle without engines (as version 2): the old plan model is kept, and named.
    notes = []
    export_triton(bundles["ssd"], TritonOptions(repo=str(repo), name="det", version=2), log=notes.append)
    assert any("det_trt is left from an earlier export" in note for note in notes)
    assert (repo / "det_trt" / "1" / "model_8.9.plan").is_file()
    assert sorted(p.name for p in (repo / "det").iterdir() if p.is_dir()) == ["1", "2"]


# ------------------------------------------------------------------ atomic writes, CLI
def test_failed_export_leaves_the_previous_model_untouched(bundles, tmp_path, monkeypatch):
    import cvexport.triton as triton

    export_triton(bundles["classifier"], TritonOptions(repo=str(tmp_path), name="m"), log=lambda line: None)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    def refuse(directory, expected_name=None):
        raise CvexportError("refused for the test")

    monkeypatch.setattr(triton, "check_model_dir", refuse)
    with pytest.raises(CvexportError, match="refused for the test"):
        export_triton(bundles["fcn"], TritonOptions(repo=str(tmp_path), name="m", force=True), log=lambda line: None)
    with pytest.raises(CvexportError, match="refused for the test"):  # a version added beside the first
        export_triton(bundles["classifier"], TritonOptions(repo=str(tmp_path), name="m", version=2),
                      log=lambda line: None)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # still the classifier's version 1, and no temp directory beside it


def test_directory_that_is_not_ours_is_kept(bundles, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(CvexportError, match="holds files that are not a Triton model; refusing to replace them"):
        export_triton(bundles["classifier"], TritonOptions(repo=str(tmp_path), name="m"), log=lambda line: None)
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"
    # A Triton model that cvexport did not write is called that, not "not a Triton model".
    (tmp_path / "theirs" / "1").mkdir(parents=True)
    (tmp_path / "theirs" / CONFIG).write_text('name: "theirs"\nbackend: "onnxruntime"\n')
    with pytest.raises(CvexportError) as info:
        export_triton(bundles["classifier"], TritonOptions(repo=str(tmp_path), name="theirs"), log=lambda line: None)
    assert "is a Triton model that cvexport did not write (it has no cvexport.json)" in str(info.value)
    assert "not a Triton model" not in str(info.value) and "\n" not in str(info.value)
    assert (tmp_path / "theirs" / CONFIG).read_text().startswith('name: "theirs"')
    # A model of ours is replaced by a later export with --force (another model: its I/O differs).
    export_triton(bundles["classifier"], TritonOptions(repo=str(tmp_path), name="ours"), log=lambda line: None)
    export_triton(bundles["fcn"], TritonOptions(repo=str(tmp_path), name="ours", force=True), log=lambda line: None)
    assert json.loads((tmp_path / "ours" / METADATA).read_text())["model"] == "fcn"


def test_bad_name_refused(bundles, tmp_path):
    with pytest.raises(CvexportError, match="cannot be a Triton model directory"):
        export_triton(bundles["classifier"], TritonOptions(repo=str(tmp_path), name="../escape"), log=lambda line: None)


def test_without_tritonclient_one_line_install_hint(bundles, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # import fails as if not installed
    with pytest.raises(CvexportError, match=r'pip install "cvexport\[triton\]"'):
        export_triton(bundles["classifier"], TritonOptions(repo=str(tmp_path / "r")), log=lambda line: None)
    assert not (tmp_path / "r").exists()


def test_cli_export_and_one_line_refusal(bundles, efficient_bundle, tmp_path, capsys):
    from cvexport.cli import main

    assert main(["export-triton", str(bundles["ssd"].path), "--repo", str(tmp_path), "--name", "det",
                 "--instances", "2", "--kind", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "tritonserver --model-repository=" in out
    assert "checked 1 model against" in out  # not "1 model(s)"
    config = _config(tmp_path / "det")
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert main(["export-triton", str(efficient_bundle.path), "--repo", str(tmp_path)]) == 2
    assert "EfficientNMS_TRT" in one_line_stderr(capsys)
