"""Manifest validation when a bundle is loaded (cvexport/manifest_schema.py, run by
cvexport/bundle.py ``load_bundle``): the schema, and the manifest against the ONNX graphs.

Every case copies a real bundle that ``cvexport build`` wrote, damages its manifest (or swaps
a graph in) and expects one ``CvexportError`` line naming the bundle, the field, what was found
and what to do -- never an IndexError / KeyError / ValueError later in ``run``, ``verify`` or
``bench``.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvexport.bundle import MANIFEST, ONNX_FILE, load_bundle
from cvexport.digest import sha256_file
from cvexport.cli import main
from cvexport.errors import CvexportError
from cli_helpers import one_line_stderr

# fp32 builds, the same options other test modules use, so a session builds each once.
BUILDS = {
    "ssd": dict(precision="fp32"),
    "classifier": dict(model="classifier", precision="fp32"),
    "fcn": dict(model="fcn", precision="fp32"),
    "style": dict(model="style", precision="fp32"),
}


@pytest.fixture(scope="module")
def built(build_bundle):
    """``built(model) -> Bundle``: the session's fp32 bundle of that model."""
    return lambda model: build_bundle(**BUILDS[model])


def _copy(bundle, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle.path, tmp_path / "bundle"))


def _read(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def _write(path: Path, manifest: dict) -> None:
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2))


def refused(path: Path, field: str) -> str:
    """The one-line error ``load_bundle`` raises, checked to name the bundle, the field and the way out."""
    with pytest.raises(CvexportError) as excinfo:
        load_bundle(path)
    message = str(excinfo.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    assert f"'{field}'" in message, message
    assert "expected" in message, message
    assert "cvexport build" in message, message
    return message


# ----------------------------------------------------------------------- the mutations
def _walk(manifest: dict, dotted: str):
    """(container, key) of a dotted field; ``outputs[name]`` picks the output of that name."""
    node, parts = manifest, dotted.split(".")
    for part in parts[:-1]:
        if part.startswith("outputs["):
            node = next(o for o in node["outputs"] if o["name"] == part[len("outputs["):-1])
        else:
            node = node[part]
    return node, parts[-1]


def set_(dotted: str, value):
    def mutate(manifest, path, built):
        node, key = _walk(manifest, dotted)
        node[key] = value
    return mutate


def del_(dotted: str):
    def mutate(manifest, path, built):
        node, key = _walk(manifest, dotted)
        del node[key]
    return mutate


def edit(dotted: str, change):
    def mutate(manifest, path, built):
        node, key = _walk(manifest, dotted)
        node[key] = change(node[key])
    return mutate


def swap_onnx(other: str, rehash: bool = True, key: str = "onnx"):
    """Put another model's model.onnx where the manifest's ``key`` graph is (sha updated or not)."""
    def mutate(manifest, path, built):
        target = path / manifest[key]["file"]
        shutil.copyfile(built(other).path / ONNX_FILE, target)
        if rehash:
            manifest[key]["sha256"] = sha256_file(target)
    return mutate


def add_cpu_graph(key: str, entry=None):
    """A CPU graph entry shaped like the ``onnx`` one (a copy of model.onnx under another name)."""
    def mutate(manifest, path, built):
        file = {"onnx_cpu": "model.cpu.onnx", "onnx_cpu_avx2": "model.cpu-avx2.onnx"}[key]
        shutil.copyfile(path / ONNX_FILE, path / file)
        manifest[key] = entry if entry is not None else {
            "file": file, "sha256": sha256_file(path / file), "form": "test", "isa_class": "vnni"}
    return mutate


def outputs(change):
    def mutate(manifest, path, built):
        manifest["outputs"] = change(manifest["outputs"])
    return mutate


NAN, INF = float("nan"), float("inf")

# (model, mutation, field the message must name, text the message must show as found)
CASES = [
    # class_names: missing, wrong length (knowable from every task's graph), wrong types
    ("classifier", del_("class_names"), "class_names", "missing"),
    ("classifier", edit("class_names", lambda names: names[:-1]), "class_names", "7"),
    ("classifier", edit("class_names", lambda names: names + ["extra"]), "class_names", "9"),
    ("classifier", set_("class_names", "ring,crescent,arrow"), "class_names", "ring,crescent"),
    ("classifier", set_("class_names", []), "class_names", "[]"),
    ("classifier", edit("class_names", lambda names: names[:-1] + [7]), "class_names", "7"),
    ("classifier", edit("class_names", lambda names: names[:-1] + [""]), "class_names", '""'),
    ("classifier", edit("class_names", lambda names: names[:-1] + [names[0]]), "class_names", "ring"),
    ("ssd", del_("class_names"), "class_names", "missing"),
    ("ssd", edit("class_names", lambda names: names[:1]), "class_names", "1"),
    ("ssd", edit("class_names", lambda names: names + ["circle"]), "class_names", "4"),
    ("ssd", set_("class_names", None), "class_names", "null"),
    ("fcn", del_("class_names"), "class_names", "missing"),
    ("fcn", edit("class_names", lambda names: names[:-1]), "class_names", "3"),
    # input.max_batch
    ("ssd", set_("input.max_batch", 0), "input.max_batch", "0"),
    ("ssd", set_("input.max_batch", -4), "input.max_batch", "-4"),
    ("ssd", set_("input.max_batch", "eight"), "input.max_batch", "eight"),
    ("ssd", set_("input.max_batch", "8"), "input.max_batch", '"8"'),
    ("ssd", set_("input.max_batch", 8.5), "input.max_batch", "8.5"),
    ("ssd", set_("input.max_batch", True), "input.max_batch", "true"),
    ("ssd", set_("input.max_batch", None), "input.max_batch", "null"),
    ("ssd", del_("input.max_batch"), "input.max_batch", "missing"),
    # input.mean / input.std
    ("ssd", set_("input.mean", [0.5]), "input.mean", "[0.5]"),
    ("ssd", set_("input.mean", [0.5, 0.5, 0.5, 0.5]), "input.mean", "0.5"),
    ("ssd", set_("input.mean", 0.5), "input.mean", "0.5"),
    ("ssd", set_("input.mean", ["0.485", "0.456", "0.406"]), "input.mean", "0.485"),
    ("ssd", set_("input.mean", [NAN, 0.456, 0.406]), "input.mean", "NaN"),
    ("ssd", set_("input.mean", [-0.5, 0.456, 0.406]), "input.mean", "-0.5"),
    ("ssd", set_("input.mean", [True, 0.456, 0.406]), "input.mean", "true"),
    ("ssd", del_("input.mean"), "input.mean", "missing"),
    ("ssd", set_("input.std", [0.229, 0.0, 0.225]), "input.std", "0.0"),
    ("ssd", set_("input.std", [0.229, -0.224, 0.225]), "input.std", "-0.224"),
    ("ssd", set_("input.std", [0.229, INF, 0.225]), "input.std", "Infinity"),
    ("ssd", set_("input.std", [0.229, 0.224]), "input.std", "0.224"),
    ("ssd", del_("input.std"), "input.std", "missing"),
    # task
    ("ssd", set_("task", "pose"), "task", "pose"),
    ("ssd", set_("task", "Detection"), "task", "Detection"),
    ("ssd", set_("task", 3), "task", "3"),
    ("ssd", set_("task", "classification"), "task", "classification"),  # not what model 'ssd' is
    ("classifier", set_("task", "segmentation"), "task", "segmentation"),
    # precision: an enum, and what the graph is
    ("ssd", set_("precision", "fp8"), "precision", "fp8"),
    ("ssd", set_("precision", "FP16"), "precision", "FP16"),
    ("ssd", set_("precision", "bf16"), "precision", "bf16"),
    ("ssd", set_("precision", 16), "precision", "16"),
    ("ssd", set_("precision", "fp16"), "precision", "fp16"),  # the graph is fp32
    ("ssd", set_("precision", "int8"), "precision", "int8"),  # the graph has no QDQ nodes
    # input size and form, against the schema and against the graph
    ("ssd", set_("input.height", 128), "input.height", "128"),
    ("ssd", set_("input.width", 320), "input.width", "320"),
    ("ssd", set_("input.height", 0), "input.height", "0"),
    ("ssd", set_("input.height", "256"), "input.height", '"256"'),
    ("ssd", set_("input.width", 256.0), "input.width", "256.0"),
    ("ssd", del_("input.height"), "input.height", "missing"),
    ("classifier", set_("input.height", 32), "input.height", "32"),
    ("fcn", set_("input.width", 64), "input.width", "64"),
    ("ssd", set_("input.name", "images"), "input.name", "images"),
    ("ssd", set_("input.name", ""), "input.name", '""'),
    ("ssd", set_("input.dtype", "float64"), "input.dtype", "float64"),
    ("ssd", set_("input.dtype", "uint8"), "input.layout", "NCHW"),  # uint8 comes NHWC
    ("ssd", set_("input.layout", "NHWC"), "input.layout", "NHWC"),  # float32 comes NCHW
    ("ssd", set_("input.layout", "CHW"), "input.layout", "CHW"),
    ("ssd", edit("input", lambda i: {**i, "dtype": "uint8", "layout": "NHWC"}), "input.dtype", "uint8"),  # graph: float
    ("ssd", set_("input.channels", "BGR"), "input.channels", "BGR"),
    ("ssd", set_("input", [256, 256]), "input", "[256, 256]"),
    # outputs, against the task's contract and the graph
    ("ssd", set_("outputs", {"num_detections": "int32"}), "outputs", "num_detections"),
    ("ssd", set_("outputs", []), "outputs", "[]"),
    ("ssd", outputs(lambda o: o[1:]), "outputs", "detection_boxes"),
    ("ssd", outputs(lambda o: o[::-1]), "outputs", "detection_classes"),
    ("ssd", outputs(lambda o: o + [dict(o[0])]), "outputs", "num_detections"),
    ("ssd", set_("outputs[num_detections].dtype", "float32"), "outputs[num_detections].dtype", "float32"),
    ("ssd", set_("outputs[detection_boxes].dtype", "float16"), "outputs[detection_boxes].dtype", "float16"),
    ("ssd", set_("outputs[detection_boxes].shape", ["batch", 100, 5]), "outputs[detection_boxes].shape", "5"),
    ("ssd", set_("outputs[detection_scores].shape", "batch x 100"), "outputs[detection_scores].shape", "batch x 100"),
    ("ssd", del_("outputs[detection_classes].dtype"), "outputs[detection_classes].dtype", "missing"),
    ("classifier", set_("outputs[probabilities].name", "probs"), "outputs", "probs"),
    ("classifier", set_("outputs[logits].shape", ["batch", 8, 1]), "outputs[logits].shape", "1"),
    ("classifier", set_("outputs[probabilities].dtype", "float16"), "outputs[probabilities].dtype", "float16"),
    ("fcn", set_("outputs[labels].dtype", "int64"), "outputs[labels].dtype", "int64"),
    ("fcn", set_("outputs[logits].shape", ["batch", 3, 128, 128]), "outputs[logits].shape", "3"),
    ("style", set_("outputs[stylized].shape", ["batch", 1, 256, 256]), "outputs[stylized].shape", "1"),
    # detection post-processing
    ("ssd", del_("postprocess"), "postprocess", "missing"),
    ("ssd", set_("postprocess", "onnx"), "postprocess", "onnx"),
    ("ssd", set_("postprocess.score_threshold", 1.5), "postprocess.score_threshold", "1.5"),
    ("ssd", set_("postprocess.score_threshold", "0.25"), "postprocess.score_threshold", "0.25"),
    ("ssd", set_("postprocess.iou_threshold", 0), "postprocess.iou_threshold", "0"),
    ("ssd", set_("postprocess.max_detections", 0), "postprocess.max_detections", "0"),
    ("ssd", set_("postprocess.max_detections", 50), "postprocess.max_detections", "50"),  # graph keeps 100
    ("ssd", del_("postprocess.max_detections"), "postprocess.max_detections", "missing"),
    ("ssd", set_("postprocess.nms", "soft"), "postprocess.nms", "soft"),
    ("ssd", set_("postprocess.head", {"scoring": "cosine"}), "postprocess.head", "cosine"),
    ("ssd", set_("postprocess.head", "retinanet"), "postprocess.head", "retinanet"),
    ("ssd", set_("postprocess.nms", "efficient"), "postprocess.nms", "efficient"),  # graph: ONNX NMS
    # file entries
    ("ssd", set_("onnx", "model.onnx"), "onnx", "model.onnx"),
    ("ssd", del_("onnx.file"), "onnx.file", "missing"),
    ("ssd", set_("onnx.file", "../model.onnx"), "onnx.file", "../model.onnx"),
    ("ssd", set_("onnx.file", "/etc/hostname"), "onnx.file", "/etc/hostname"),
    ("ssd", set_("onnx.sha256", "abc123"), "onnx.sha256", "abc123"),
    ("ssd", del_("onnx.sha256"), "onnx.sha256", "missing"),
    ("ssd", set_("onnx.opset", 11), "onnx.opset", "11"),
    ("ssd", set_("onnx.opset", "20"), "onnx.opset", '"20"'),
    ("ssd", set_("weights", "weights.safetensors"), "weights", "weights.safetensors"),
    ("ssd", set_("weights.sha256", 12345), "weights.sha256", "12345"),
    ("ssd", set_("model", 42), "model", "42"),
    ("ssd", set_("model", ""), "model", '""'),
    # the optional INT8 CPU graphs: shaped like the onnx entry, and only in int8 bundles
    ("ssd", add_cpu_graph("onnx_cpu"), "onnx_cpu", "fp32"),
    ("ssd", add_cpu_graph("onnx_cpu", "model.cpu.onnx"), "onnx_cpu", "model.cpu.onnx"),
    ("ssd", add_cpu_graph("onnx_cpu_avx2", {"file": 3, "sha256": "0" * 64}), "onnx_cpu_avx2.file", "3"),
    ("ssd", add_cpu_graph("onnx_cpu", {"file": "model.cpu.onnx"}), "onnx_cpu.sha256", "missing"),
    ("ssd", add_cpu_graph("onnx_cpu", {"file": "model.cpu.onnx", "sha256": "0" * 64, "isa_class": "sse"}),
     "onnx_cpu.isa_class", "sse"),
    # another model's graph in the bundle: with its sha256 put in the manifest, and without
    ("ssd", swap_onnx("classifier"), "input.height", "256"),
    ("ssd", swap_onnx("style"), "outputs", "num_detections"),  # same input, other outputs
    ("classifier", swap_onnx("fcn"), "input.height", "64"),
    ("fcn", swap_onnx("classifier"), "input.height", "128"),
    ("style", swap_onnx("ssd"), "outputs", "stylized"),
    ("ssd", swap_onnx("classifier", rehash=False), "onnx.sha256", "sha256"),
]


def _case_id(case) -> str:
    model, _, field, found = case
    return f"{model}-{field}-{found}"[:60]


@pytest.mark.parametrize("model, mutate, field, found", CASES, ids=[_case_id(c) for c in CASES])
def test_corrupt_manifest_is_refused_naming_the_field(built, tmp_path, model, mutate, field, found):
    path = _copy(built(model), tmp_path)
    manifest = _read(path)
    mutate(manifest, path, built)
    _write(path, manifest)
    message = refused(path, field)
    assert found in message, message


# -------------------------------------------------------------------- what still loads
@pytest.mark.parametrize("model", sorted(BUILDS))
def test_real_bundles_load(built, model):
    bundle = load_bundle(built(model).path)
    assert bundle.manifest == built(model).manifest


def test_real_uint8_efficient_nms_bundle_loads(build_bundle):
    bundle = build_bundle(precision="fp32", nms="efficient", input_format="uint8")
    again = load_bundle(bundle.path)
    assert again.input.layout == "NHWC" and again.manifest.postprocess.nms == "efficient"


def test_unknown_extra_keys_are_tolerated(built, tmp_path):
    path = _copy(built("ssd"), tmp_path)
    manifest = _read(path)
    manifest["notes"] = {"who": "ci", "why": [1, 2]}
    manifest["input"]["colorspace"] = "sRGB"
    manifest["onnx"]["producer"] = "someone"
    manifest["outputs"][0]["doc"] = "count of valid rows"
    manifest["postprocess"]["soft_nms"] = False
    _write(path, manifest)
    loaded = load_bundle(path).manifest
    assert loaded.extra["notes"]["who"] == "ci" and loaded.input.extra["colorspace"] == "sRGB"
    assert loaded.to_dict() == manifest and list(loaded.to_dict()) == list(manifest)  # written back as read


def test_style_needs_no_class_names(built, tmp_path):
    path = _copy(built("style"), tmp_path)
    manifest = _read(path)
    del manifest["class_names"]
    _write(path, manifest)
    assert load_bundle(path).class_names == []


def _load_then_verify_file(path: Path, key: str) -> str:
    """The one-line error of loading the bundle, or else of the file check where the graph is used."""
    with pytest.raises(CvexportError) as excinfo:
        load_bundle(path).verify_file(key)
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("content", [b"not a protobuf at all", b"", b"\x08\x07\x12\x02ab"],
                         ids=["garbage", "empty", "tiny-valid-protobuf"])
def test_damaged_graph_is_a_hash_error(built, tmp_path, content):
    """A graph that does not parse is left to the sha256 check where it is used; one that parses
    but disagrees with the manifest is reported at load as the sha256 mismatch it is."""
    path = _copy(built("ssd"), tmp_path)
    (path / ONNX_FILE).write_bytes(content)
    assert "sha256" in _load_then_verify_file(path, "onnx")


def test_missing_graph_is_left_to_the_file_check(built, tmp_path):
    path = _copy(built("ssd"), tmp_path)
    (path / ONNX_FILE).unlink()
    bundle = load_bundle(path)  # the torch backend needs no graph; the graph's users say it is missing
    assert "missing" in _load_then_verify_file(path, "onnx")
    assert bundle.manifest == built("ssd").manifest


def test_schema_enums_follow_the_code_they_describe():
    from cvexport import manifest_schema
    from cvexport.build import INPUT_FORMATS
    from cvexport.int8_graphs import INT8_CPU_GRAPHS
    from cvexport.tasks import all_tasks

    # Each task states the outputs its bundles give; the schema declares none of its own.
    assert all(any(rule.required for rule in task.output_contract()) for task in all_tasks())
    assert not hasattr(manifest_schema, "TASK_OUTPUTS") and not hasattr(manifest_schema, "NMS_FLAVORS")
    assert manifest_schema.cpu_graph_keys() == tuple(g.key for g in INT8_CPU_GRAPHS)
    assert {"float": "float32", "uint8": "uint8"}.keys() == set(INPUT_FORMATS)


# ---------------------------------------------------------------------------- INT8 bundle
@pytest.fixture(scope="module")
def int8_bundle(build_bundle):
    return build_bundle(model="classifier", precision="int8")  # shared with test_bench


def test_int8_bundle_with_cpu_graphs_loads(int8_bundle):
    bundle = load_bundle(int8_bundle.path)
    assert {"onnx_cpu", "onnx_cpu_avx2"} <= set(bundle.manifest.cpu_graphs)
    assert bundle.manifest.cpu_graphs["onnx_cpu_avx2"].isa_class == "avx2"
    assert bundle.manifest.int8["calibration_split"] == "train"
    _assert_written_back_as_built(bundle)


def _assert_written_back_as_built(bundle) -> None:
    """The typed manifest writes the very bytes the build wrote (same keys, order and values)."""
    from cvexport.manifest import write_manifest

    written = bundle.path / MANIFEST
    assert bundle.manifest.to_dict() == json.loads(written.read_text())
    again = written.with_name("again.json")
    try:
        write_manifest(again, bundle.manifest.to_dict())
        assert again.read_bytes() == written.read_bytes()
    finally:
        again.unlink(missing_ok=True)


@pytest.mark.parametrize("model", sorted(BUILDS))
def test_typed_manifest_is_written_back_byte_identical(built, model):
    bundle = load_bundle(built(model).path)
    _assert_written_back_as_built(bundle)
    assert bundle.manifest.input.mean and bundle.manifest.outputs and bundle.manifest.weights is not None
    assert (bundle.manifest.postprocess is not None) == (bundle.task == "detection")
    assert (bundle.class_names == []) == (bundle.task == "style")


def test_a_changed_field_is_written_in_its_place(built, tmp_path):
    import dataclasses

    from cvexport.manifest import Manifest

    manifest = load_bundle(built("ssd").path).manifest
    post = dataclasses.replace(manifest.postprocess, score_threshold=0.5)
    changed = dataclasses.replace(manifest, postprocess=post, precision="fp16").to_dict()
    original = manifest.to_dict()
    assert list(changed) == list(original) and list(changed["postprocess"]) == list(original["postprocess"])
    assert changed["postprocess"]["score_threshold"] == 0.5 and changed["precision"] == "fp16"
    assert Manifest.from_dict(changed).postprocess.score_threshold == 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.model = "other"


@pytest.mark.parametrize("key", ["onnx_cpu", "onnx_cpu_avx2"])
def test_int8_cpu_graph_of_another_model_is_refused(built, int8_bundle, tmp_path, key):
    path = _copy(int8_bundle, tmp_path)
    manifest = _read(path)
    swap_onnx("fcn", key=key)(manifest, path, built)
    _write(path, manifest)
    assert "input.height" in refused(path, key)


@pytest.mark.parametrize("key", ["onnx_cpu", "onnx_cpu_avx2"])
def test_int8_cpu_graph_in_fp32_is_refused(built, int8_bundle, tmp_path, key):
    path = _copy(int8_bundle, tmp_path)
    manifest = _read(path)
    swap_onnx("classifier", key=key)(manifest, path, built)  # the fp32 graph of the same network
    _write(path, manifest)
    assert "int8" in refused(path, key)


def test_int8_bundle_with_fp32_precision_is_refused(int8_bundle, tmp_path):
    path = _copy(int8_bundle, tmp_path)
    manifest = _read(path)
    manifest["precision"] = "fp32"
    _write(path, manifest)
    refused(path, "precision")


# ------------------------------------------------------------------------------ the CLI
CLI_CASES = [
    pytest.param(edit("class_names", lambda names: names[:1]), "class_names", id="class_names-short"),
    pytest.param(set_("input.max_batch", "eight"), "input.max_batch", id="max_batch-eight"),
    pytest.param(set_("precision", "fp8"), "precision", id="precision-fp8"),
    pytest.param(set_("input.height", 128), "input.height", id="height-vs-onnx"),
]


def _png(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def _corrupt_ssd(built, tmp_path, mutate) -> Path:
    path = _copy(built("ssd"), tmp_path)
    manifest = _read(path)
    mutate(manifest, path, built)
    _write(path, manifest)
    return path


@pytest.mark.parametrize("command", ["run", "verify", "bench"])
@pytest.mark.parametrize("mutate, field", CLI_CASES)
def test_cli_refuses_corrupt_manifest_in_one_line(built, tmp_path, capsys, command, mutate, field):
    path = _corrupt_ssd(built, tmp_path, mutate)
    out = tmp_path / "out"
    argv = {
        "run": ["run", str(path), str(_png(tmp_path / "in.png")), "--out", str(out)],
        "verify": ["verify", str(path), "--val-images", "4"],
        "bench": ["bench", str(path), "--iters", "2"],
    }[command]
    assert main(argv) != 0
    err = one_line_stderr(capsys)
    assert f"'{field}'" in err and str(path) in err and "cvexport build" in err
    assert not out.exists()


def test_console_script_has_no_traceback_for_corrupt_manifest(built, tmp_path):
    path = _corrupt_ssd(built, tmp_path, set_("input.max_batch", 0))
    script = Path(sys.executable).parent / "cvexport"
    proc = subprocess.run([str(script), "bench", str(path), "--iters", "2"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cvexport: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "'input.max_batch'" in lines[0]


def test_nan_survives_the_round_trip():
    """The NaN / Infinity cases above rely on json writing and reading them (Python's json does)."""
    assert math.isnan(json.loads(json.dumps([NAN]))[0]) and json.loads(json.dumps([INF]))[0] == INF
