"""``cvexport run``, ``verify``, ``build`` option checks and ``stylize`` on the classifier, FCN
and style models: what each writes, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cvexport.cli import main
from cli_helpers import one_line_stderr

MODELS = ("classifier", "fcn", "style")
PICTURES = {"classifier": ["annotated"], "fcn": ["mask", "overlay"], "style": ["stylized"]}


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("images") / "cat.png"
    Image.fromarray(data.chelsea()).save(path)  # 451 x 300, not the network's size
    return path


@pytest.mark.parametrize("model", MODELS)
def test_run_writes_predictions_and_pictures(build_bundle, model, photo_path, tmp_path, capsys):
    bundle = build_bundle(model=model, precision="fp32")
    out = tmp_path / "out"
    assert main(["run", str(bundle.path), str(photo_path), "--out", str(out)]) == 0
    payload = json.loads((out / "predictions.json").read_text())
    (entry,) = payload["images"]
    assert payload["model"] == model and payload["class_names"] == bundle.class_names
    for suffix in PICTURES[model]:
        picture = Image.open(out / entry[suffix])
        assert picture.size == (451, 300), suffix  # at the original image's size
    if model == "classifier":
        assert entry["classification"]["class_name"] in bundle.class_names
    if model == "fcn":
        fractions = entry["class_pixel_fraction"]
        assert abs(sum(fractions.values()) - 1.0) < 1e-3
        assert set(fractions) <= set(bundle.class_names)  # keyed by the bundle's class names, not ids
        mask = np.asarray(Image.open(out / entry["mask"]))
        assert mask.shape == (300, 451, 3)
    printed = capsys.readouterr().out
    assert "wrote" in printed
    if model == "fcn":  # the manifest's class names, not ids
        assert "background:" in printed and "class 0" not in printed


@pytest.mark.slow
@pytest.mark.parametrize("model,precision", [(m, p) for m in MODELS for p in ("fp16", "int8")])
def test_verify_reports_the_task_metric_and_passes(build_bundle, model, precision):
    """Every model's FP16 and INT8 bundles pass verify: task metric within 1 point / 1 % of
    PyTorch's and parity within the precision's tolerance."""
    from cvexport.tasks import get_task
    from cvexport.verify import verify_bundle

    bundle = build_bundle(model=model, precision=precision)
    report = verify_bundle(bundle, ["ort"], val_images=8, warn=lambda line: None)
    keys = [m.key for m in get_task(bundle.task).METRICS]
    assert [m["key"] for m in report["metrics"]] == keys
    torch_row, ort_row = report["rows"]
    assert all(np.isfinite(torch_row[k]) for k in keys)
    assert report["passed"], [row["reasons"] for row in report["rows"]]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["build", "classifier", "--nms", "efficient"], "--nms applies only to detection models"),
        (["build", "fcn", "--score-threshold", "0.3", "--max-detections", "5"], "apply only to detection models"),
        (["build", "ssd", "--style", "x.png"], "--style applies only to style models"),
        (["build", "style", "--style", "missing.png"], "image not found: missing.png"),
        (["stylize", "missing.png", "missing.png", "--out", "o.png"], "image not found: missing.png"),
    ],
)
def test_bad_input_is_a_one_line_error(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert needle in one_line_stderr(capsys)
    assert not (tmp_path / "bundles").exists() and not (tmp_path / "o.png").exists()


def test_stylize_refuses_an_unknown_output_format(photo_path, tmp_path, capsys):
    assert main(["stylize", str(photo_path), str(photo_path), "--out", str(tmp_path / "o.gif")]) == 2
    assert "--out" in one_line_stderr(capsys)


def test_stylize_writes_the_image_and_its_losses(photo_path, tmp_path, capsys):
    out = tmp_path / "styled.png"
    assert main(["stylize", str(photo_path), str(photo_path), "--out", str(out), "--steps", "3", "--size", "64"]) == 0
    image = Image.open(out)
    assert max(image.size) == 64
    history = json.loads(out.with_suffix(".losses.json").read_text())
    assert len(history) == 3


def test_registry_style_size_is_the_networks():
    from cvexport.models.style_net import STYLE_INPUT_SIZE
    from cvexport.registry import STYLE_INPUT_SIZE as REGISTERED, get_spec

    assert REGISTERED == STYLE_INPUT_SIZE and get_spec("style").input_size == (STYLE_INPUT_SIZE, STYLE_INPUT_SIZE)


@pytest.mark.slow
def test_style_int8_keeps_the_pixel_layers_in_float():
    """The first and last convolutions map pixels in and out; INT8 leaves them in float."""
    from cvexport.export.torch_export import export_module
    from cvexport.registry import get_spec
    from cvexport.tasks import get_task

    spec = get_spec("style")
    core = export_module(spec.build(), (1, 3, 64, 64), 2, input_name="input", output_names=["image"])
    convs = [n.name for n in core.graph.node if n.op_type == "Conv"]
    assert get_task("style").int8_keep_float(core, "qdq-trt") == sorted({convs[0], convs[-1]}) and len(convs) > 2


def test_ssd_int8_keeps_its_first_conv_in_float_only_in_the_7bit_graph():
    """7-bit weights are too coarse for the convolution that reads the pixels (mAP fell past
    verify's limit on the AVX2 graph); the other INT8 forms keep their speed."""
    from cvexport.export.torch_export import export_module
    from cvexport.registry import get_spec
    from cvexport.tasks import get_task

    core = export_module(get_spec("ssd").build(), (1, 3, 64, 64), 2, input_name="input",
                         output_names=["cls", "offsets"])
    first = next(n.name for n in core.graph.node if n.op_type == "Conv")
    task = get_task("detection")
    assert task.int8_keep_float(core, "qdq-cpu-7bit") == [first]
    assert task.int8_keep_float(core, "qdq-cpu") == task.int8_keep_float(core, "qdq-trt") == []
