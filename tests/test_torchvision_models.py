"""torchvision's classifiers and segmenters as cvexport models, with weights from the user's file
(issue 24, first slice): the builder list, the checked weights, the class count from the head,
the class names, and builds whose bundles answer as torchvision's own network does.

Kept small for the suite: 64 px inputs, 3 classes, one classifier and one segmenter build."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from cvexport.build import BuildOptions, build, run_parity
from cvexport.bundle import load_bundle
from cvexport.cli import main
from cvexport.errors import CvexportError
from cvexport.registry import get_spec, list_models, torchvision_models
from cvexport.torchvision_zoo import builder_names, families, head_classes, read_weights

SIDE = 64
NAMES = ("cat", "dog", "bird")


def _state_dict(name: str, num_classes: int, seed: int = 0, **kwargs) -> dict:
    """A seeded state dict of the builder, made offline (no backbone weights either)."""
    if name in torchvision.models.list_models(module=torchvision.models.segmentation):
        kwargs.setdefault("weights_backbone", None)
    torch.manual_seed(seed)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs).state_dict()


def _save(tmp_path, name: str, state: dict, file: str | None = None):
    path = tmp_path / (file or f"{name}.pth")
    torch.save(state, path)
    return path


def _error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cvexport: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ----------------------------------------------------------------------------- the list
def test_builder_names_are_torchvisions_own_lists():
    """The names read from torchvision's source without importing it are its registered builders."""
    classifiers = set(torchvision.models.list_models(module=torchvision.models))
    segmenters = set(torchvision.models.list_models(module=torchvision.models.segmentation))
    detectors = set(torchvision.models.list_models(module=torchvision.models.detection))
    names = builder_names()
    assert {n for n, t in names.items() if t == "classification"} == classifiers
    assert {n for n, t in names.items() if t == "segmentation"} == segmenters
    # The one-stage detectors; the two-stage R-CNN family is refused by name (its own test).
    one_stage = {n for n, t in names.items() if t == "detection"}
    assert one_stage < detectors and {n for n in detectors - one_stage if "rcnn" not in n} == set()
    # They are models by name, beside (not among) the project's own.
    assert set(torchvision_models()) == classifiers | segmenters | one_stage
    assert not set(list_models()) & set(torchvision_models())
    assert get_spec("resnet18").task == "classification" and get_spec("resnet18").family == "torchvision"
    assert get_spec("lraspp_mobilenet_v3_large").task == "segmentation"


def test_list_shows_builders_by_family(capsys):
    assert main(["list"]) == 0
    own, builders = capsys.readouterr().out.split("\n\n")
    assert [line.split()[0] for line in own.splitlines()] == list_models()
    rows = {line.split()[1].rstrip(":"): line.split()[2:] for line in builders.splitlines()[1:]}
    assert rows["resnet"] == ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    assert rows["lraspp"] == ["lraspp_mobilenet_v3_large"]
    assert sum(len(v) for v in rows.values()) == len(torchvision_models())
    assert families(["vit_b_16", "deeplabv3_resnet50"]) == {"vit": ["vit_b_16"], "deeplabv3": ["deeplabv3_resnet50"]}


def test_spec_takes_the_weights_transform():
    """mean/std and the default side come from torchvision's weights metadata (offline)."""
    assert get_spec("resnet18").input_size == (224, 224)
    assert get_spec("efficientnet_v2_l").mean == (0.5, 0.5, 0.5)
    assert get_spec("lraspp_mobilenet_v3_large").input_size == (520, 520)


# --------------------------------------------------------------------------- the weights
@pytest.mark.parametrize("name, classes", [("resnet18", 3), ("mobilenet_v3_small", 5), ("efficientnet_b0", 2),
                                           ("squeezenet1_1", 4), ("lraspp_mobilenet_v3_large", 6)])
def test_class_count_from_the_head(name, classes):
    state = _state_dict(name, classes)
    assert head_classes(name, state, "w") == classes


def test_regnet_key_check_without_the_meta_device(tmp_path):
    """regnet's init cannot run on the meta device: the check falls back to the CPU."""
    path = _save(tmp_path, "regnet_x_400mf", _state_dict("regnet_x_400mf", 7))
    state, classes, _ = read_weights("regnet_x_400mf", path, SIDE)
    assert classes == 7 and state["fc.weight"].shape == (7, 400)


def test_segmenter_aux_head_dropped(tmp_path):
    state = _state_dict("fcn_resnet50", 2, aux_loss=True)
    assert any(k.startswith("aux_classifier.") for k in state)
    checked, classes, _ = read_weights("fcn_resnet50", _save(tmp_path, "fcn_resnet50", state), SIDE)
    assert classes == 2 and not any(k.startswith("aux_classifier.") for k in checked)


def test_no_weights_is_one_line(capsys, tmp_path):
    err = _error_line(capsys, ["build", "resnet18", "--out", str(tmp_path / "b")])
    assert "downloads nothing" in err and "--weights FILE.pth" in err
    assert not (tmp_path / "b").exists()


def test_another_networks_weights_are_one_line(capsys, tmp_path):
    path = _save(tmp_path, "resnet34", _state_dict("resnet34", 3))
    err = _error_line(capsys, ["build", "resnet18", "--weights", str(path), "--out", str(tmp_path / "b")])
    assert "does not fit a torchvision resnet18" in err and "unexpected 'layer1.2." in err


def test_a_tensor_of_another_shape_is_one_line(capsys, tmp_path):
    state = _state_dict("resnet18", 3)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    err = _error_line(capsys, ["build", "resnet18", "--weights", str(_save(tmp_path, "r", state)),
                               "--out", str(tmp_path / "b")])
    assert "'layer1.0.conv1.weight' has shape [64, 64, 1, 1], expected [64, 64, 3, 3]" in err


def test_disagreeing_heads_are_one_line(capsys, tmp_path):
    state = _state_dict("lraspp_mobilenet_v3_large", 3)
    state["classifier.low_classifier.weight"] = torch.zeros(4, 40, 1, 1)
    state["classifier.low_classifier.bias"] = torch.zeros(4)
    err = _error_line(capsys, ["build", "lraspp_mobilenet_v3_large", "--weights", str(_save(tmp_path, "l", state)),
                               "--out", str(tmp_path / "b")])
    assert "disagree on the class count ([4, 3])" in err


def test_not_a_state_dict_is_one_line(capsys, tmp_path):
    garbage = tmp_path / "notes.pth"
    garbage.write_text("not a checkpoint")
    err = _error_line(capsys, ["build", "resnet18", "--weights", str(garbage), "--out", str(tmp_path / "b")])
    assert "cannot be read as a torch state dict" in err
    listed = _save(tmp_path, "x", [torch.zeros(1)])
    err = _error_line(capsys, ["build", "resnet18", "--weights", str(listed), "--out", str(tmp_path / "b")])
    assert "holds a list, not a state dict" in err


def test_class_file_must_match_the_head(capsys, tmp_path):
    path = _save(tmp_path, "resnet18", _state_dict("resnet18", 3))
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    err = _error_line(capsys, ["build", "resnet18", "--weights", str(path), "--classes", str(names),
                               "--out", str(tmp_path / "b")])
    assert "lists 2 names, but the weights' head has 3 classes" in err
    names.write_text("cat\ndog\ncat\n")
    err = _error_line(capsys, ["build", "resnet18", "--weights", str(path), "--classes", str(names),
                               "--out", str(tmp_path / "b")])
    assert "'cat' more than once" in err


def test_classes_only_with_a_state_dict(capsys, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    err = _error_line(capsys, ["build", "classifier", "--classes", str(names), "--out", str(tmp_path / "b")])
    assert "--classes apply to a torchvision builder's state dict" in err


# ------------------------------------------------------------------------------- builds
def _torch_reference(name: str, state: dict, classes: int, batch: np.ndarray) -> np.ndarray:
    """torchvision's own network with the user's state dict, on the bundle's input."""
    kwargs = {"weights_backbone": None, "aux_loss": False} if name.startswith("lraspp") else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=classes, **kwargs).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        out = model(torch.from_numpy(batch))
    return (out["out"] if isinstance(out, dict) else out).numpy()


@pytest.fixture(scope="module")
def resnet_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resnet18")
    state = _state_dict("resnet18", len(NAMES), seed=1)
    path = _save(tmp, "resnet18", state, "my.pth")
    names = tmp / "names.txt"
    names.write_text("\n".join(NAMES) + "\n")
    out = build(BuildOptions(model="resnet18", weights=str(path), classes=str(names), input_size=SIDE, max_batch=4,
                             out=str(tmp / "bundle"), engine="ort"), log=lambda line: None)
    return load_bundle(out), state


def test_classifier_build_answers_as_torchvision(resnet_bundle):
    from cvexport.runtime.predictor import Predictor, prepare_batch

    bundle, state = resnet_bundle
    manifest = bundle.manifest
    assert manifest.model == "resnet18" and tuple(manifest.class_names) == NAMES
    assert (manifest.input.height, manifest.input.width) == (SIDE, SIDE)
    assert tuple(manifest.input.mean) == (0.485, 0.456, 0.406)
    assert "with the weights of my.pth" in manifest.description
    report = (bundle.path / "parity.json").read_text()
    assert '"passed": true' in report
    # The bundle's answer at batch 1 and 3 (a dynamic batch) is torchvision's own on the same input.
    from cvexport.models.photos import photo_samples

    pictures = photo_samples("val", range(3), 96, seed=5)
    feed = prepare_batch(bundle, pictures).feed["input"]
    expected = torch.softmax(torch.from_numpy(_torch_reference("resnet18", state, 3, feed)), -1).numpy()
    with Predictor(bundle, "ort") as predictor:
        for batch in (pictures[:1], pictures):
            got = np.stack([p.probabilities for p in predictor.predict(batch)])
            np.testing.assert_allclose(got, expected[: len(batch)], atol=1e-5)
    # The torch backend reloads the bundle's safetensors copy of the user's weights.
    with Predictor(bundle, "torch") as predictor:
        got = np.stack([p.probabilities for p in predictor.predict(pictures)])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_parity_fails_on_other_weights(resnet_bundle):
    """The build's parity check is not a formality: against other weights it fails."""
    from cvexport.backends.torch.runner import TorchRunner
    from cvexport.registry import bundle_spec

    bundle, _ = resnet_bundle
    other = bundle_spec(bundle).make(len(NAMES), SIDE)
    other.load_state_dict(_state_dict("resnet18", len(NAMES), seed=2))
    from cvexport.models.photos import photo_samples

    frames = photo_samples("val", range(4), SIDE)
    with TorchRunner(bundle, model=other.eval()) as reference:
        report = run_parity(bundle, "fp32", lambda line: None, frames=frames, reference=reference)
    assert report["passed"] is False


def test_segmenter_build_answers_as_torchvision(tmp_path):
    from cvexport.runtime.predictor import Predictor, prepare_batch

    state = _state_dict("lraspp_mobilenet_v3_large", 2, seed=3)
    path = _save(tmp_path, "lraspp", state)
    out = build(BuildOptions(model="lraspp_mobilenet_v3_large", weights=str(path), input_size=SIDE, max_batch=2,
                             out=str(tmp_path / "bundle"), engine="ort"), log=lambda line: None)
    bundle = load_bundle(out)
    assert tuple(bundle.manifest.class_names) == ("class_1", "class_2")
    assert '"passed": true' in (bundle.path / "parity.json").read_text()
    from cvexport.models.photos import photo_samples

    pictures = photo_samples("val", range(2), 80, seed=7)
    feed = prepare_batch(bundle, pictures).feed["input"]
    expected = _torch_reference("lraspp_mobilenet_v3_large", state, 2, feed).argmax(1)
    # The labels at the network's input (run maps them back to each picture's size afterwards).
    with Predictor(bundle, "ort") as predictor:
        raw = predictor.infer(prepare_batch(bundle, pictures).feed)
        maps = predictor.predict(pictures)
    assert (np.asarray(raw["labels"]) == expected).mean() > 0.999
    assert [m.labels.shape for m in maps] == [p.shape[:2] for p in pictures]


def test_missing_torchvision_weights_through_the_api():
    with pytest.raises(CvexportError, match="downloads nothing"):
        get_spec("mobilenet_v3_small").for_weights(None)


# ------------------------------------------------------------------------------ export
def test_a_fixed_batch_after_export_is_one_line():
    """The guard after every export: an input whose dim 0 came out a number is refused."""
    from onnx import TensorProto, helper

    from cvexport.export.torch_export import _require_symbolic_batch

    def graph(batch):
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3, 8, 8])
        return helper.make_model(helper.make_graph([helper.make_node("Identity", ["input"], ["y"])], "g", [x], [y]))

    _require_symbolic_batch(graph("batch"), "input")
    with pytest.raises(CvexportError, match="fixed batch of 1, not a dynamic one"):
        _require_symbolic_batch(graph(1), "input")


def test_a_network_over_onnxs_2gb_file_limit_is_one_line():
    """vit_h_14 or regnet_y_128gf cannot be one ONNX file with their weights inside: said at
    once, before minutes of export (the weights here live on the meta device: no memory)."""
    from cvexport.export.torch_export import export_module

    big = torch.nn.Linear(1, 1)
    big.extra = torch.nn.Parameter(torch.empty(600_000_000, device="meta"))
    with pytest.raises(CvexportError, match=r"2\.2[0-9] GiB, more than the 2 GiB"):
        export_module(big, (1, 1), 2, input_name="input", output_names=["out"])


def test_fp16_keeps_a_float_output_when_the_network_ends_in_a_resize():
    """torchvision's segmenters end in a bilinear upsample, which the FP16 converter keeps in
    float32 and then cast back to a float16 graph output: their fp16 builds failed the ONNX
    check once the task's sections read that output as float. The contract is float32 out."""
    import onnx

    from cvexport.export.torch_export import export_module, to_fp16

    class EndsInResize(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)

        def forward(self, x):
            return torch.nn.functional.interpolate(self.conv(x), size=x.shape[-2:], mode="bilinear",
                                                   align_corners=False)

    half = to_fp16(export_module(EndsInResize().eval(), (1, 3, 16, 16), 2, input_name="input",
                                 output_names=["logits"]))
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [onnx.TensorProto.FLOAT]
    onnx.checker.check_model(half, full_check=True)
    assert any(n.op_type == "Conv" for n in half.graph.node)
    assert {i.data_type for i in half.graph.initializer if i.name.startswith("conv")} <= {onnx.TensorProto.FLOAT16}
