"""The user's torchvision ImageNet weights (cvexport.pretrained): ResNet-18 for the classifier and
the FCN (``train --pretrained``), VGG-19 for style transfer (``--vgg-weights``); read with
weights_only, checked key by key, found in the torch hub cache; files that do not fit are one line.

The state-dict files are made here from untrained torchvision models (nothing is downloaded)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image

from cli_helpers import one_line_stderr
from cvexport.cli import main
from cvexport.errors import CvexportError
from cvexport.pretrained import (
    RESNET18,
    VGG19,
    PretrainedFile,
    find_pretrained,
    resnet18_weights,
    vgg19_feature_weights,
)


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, so a developer's own downloads never change what the tests see."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def vgg19_features_file(tmp_path_factory):
    """The ``features.*`` part of an untrained torchvision VGG-19's state dict (the part the style
    loss uses; the full file with its 120 M-weight classifier is the slow test's)."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(2)
    path = tmp_path_factory.mktemp("weights") / "vgg19-features.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}, path)
    return path


def _save(state, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


# ---------------------------------------------------------------------------- ResNet-18
def test_resnet18_file_is_read_without_its_fc(resnet18_file):
    state = resnet18_weights(PretrainedFile(resnet18_file, RESNET18, "--pretrained"))
    reference = torch.load(resnet18_file, weights_only=True)
    assert set(state) == {k for k in reference if not k.startswith("fc.")}
    torch.testing.assert_close(state["layer4.1.conv2.weight"], reference["layer4.1.conv2.weight"])


@pytest.mark.parametrize("make,message", [
    (lambda: torchvision.models.resnet34(weights=None).state_dict(),
     r"does not fit a torchvision ResNet-18: unexpected 'layer1\.2\.conv1\.weight' \(and \d+ more\)"),
    (lambda: {k: v for k, v in torchvision.models.resnet18(weights=None).state_dict().items() if "layer4" not in k},
     r"does not fit a torchvision ResNet-18: missing 'layer4\.0\.conv1\.weight' \(and \d+ more\)"),
    (lambda: {**torchvision.models.resnet18(weights=None).state_dict(), "conv1.weight": torch.zeros(64, 3, 3, 3)},
     r"'conv1\.weight' has shape \[64, 3, 3, 3\], expected \[64, 3, 7, 7\]"),
    (lambda: {f"module.{k}": v for k, v in torchvision.models.resnet18(weights=None).state_dict().items()},
     r"keys start with 'module\.' \(saved from DataParallel\)"),
    (lambda: [1, 2, 3], r"holds a list, not a state dict of tensors"),
])
def test_a_file_that_does_not_fit_is_one_line(tmp_path, make, message):
    path = _save(make(), tmp_path, "wrong.pth")
    with pytest.raises(CvexportError, match=message) as caught:
        resnet18_weights(PretrainedFile(path, RESNET18, "--pretrained"))
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_file_with_code_in_its_pickle_is_refused_not_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump(Payload(), f)
    with pytest.raises(CvexportError, match=r"cannot be read as a torch state dict"):
        resnet18_weights(PretrainedFile(path, RESNET18, "--pretrained"))
    (tmp_path / "garbage.pth").write_bytes(b"\x00not a torch file")
    with pytest.raises(CvexportError, match=r"garbage\.pth cannot be read as a torch state dict"):
        resnet18_weights(PretrainedFile(tmp_path / "garbage.pth", RESNET18, "--pretrained"))


def test_found_in_the_hub_cache_when_present_and_never_downloaded(empty_hub, resnet18_file, tmp_path):
    assert find_pretrained(RESNET18, None, "--pretrained") is None
    empty_hub.mkdir(parents=True)
    (empty_hub / "resnet18-f37072fd.pth").write_bytes(resnet18_file.read_bytes())
    found = find_pretrained(RESNET18, None, "--pretrained")
    assert found.path == empty_hub / "resnet18-f37072fd.pth" and found.origin == "torch hub cache"
    assert find_pretrained(VGG19, None, "--vgg-weights") is None  # another architecture's file is not taken
    given = find_pretrained(RESNET18, resnet18_file, "--pretrained")  # the flag wins over the cache
    assert given.path == resnet18_file and given.origin == "--pretrained"
    with pytest.raises(CvexportError, match=r"--pretrained .*missing\.pth: file not found"):
        find_pretrained(RESNET18, tmp_path / "missing.pth", "--pretrained")


def test_classifier_and_fcn_start_from_the_file(resnet18_file):
    from cvexport.models.finetune import build_start
    from cvexport.registry import get_spec

    found = PretrainedFile(resnet18_file, RESNET18, "--pretrained")
    reference = torch.load(resnet18_file, weights_only=True)
    classifier, _, start = build_start(get_spec("classifier"), 4, 64, "imagenet", found)
    torch.testing.assert_close(classifier.layer3[1].conv1.weight, reference["layer3.1.conv1.weight"])
    assert classifier.fc.out_features == 4
    assert start.record["kind"] == "imagenet" and start.record["origin"] == "--pretrained"
    assert len(start.record["sha256"]) == 64 and str(resnet18_file) in start.text
    fcn, _, _ = build_start(get_spec("fcn"), 3, 128, "imagenet", found)
    torch.testing.assert_close(fcn.encoder[0].weight, reference["conv1.weight"])
    torch.testing.assert_close(fcn.encoder[4][0].bn1.running_var, reference["layer1.0.bn1.running_var"])


def test_train_says_which_start_it_used(resnet18_file, empty_hub, tmp_path, capsys):
    from cvexport.checkpoint import read_metadata
    from cvexport.models.dataset_writers import write_imagefolder

    data = write_imagefolder(tmp_path / "data", train_per_class=1, val_per_class=1)
    out = tmp_path / "run" / "c.safetensors"
    args = ["train", "classifier", "--data", str(data), "--run-dir", str(tmp_path / "run"), "--out", str(out),
            "--max-steps", "1"]
    assert main(args + ["--pretrained", str(resnet18_file)]) == 0
    printed = capsys.readouterr().out
    assert f"start: torchvision ResNet-18 weights {resnet18_file} (--pretrained)" in printed
    assert read_metadata(out)["start"]["origin"] == "--pretrained"
    # the same file in the hub cache is taken without the flag
    empty_hub.mkdir(parents=True)
    (empty_hub / "resnet18-f37072fd.pth").write_bytes(resnet18_file.read_bytes())
    assert main(args + ["--fresh"]) == 0
    assert "(torch hub cache)" in capsys.readouterr().out
    assert read_metadata(out)["start"]["origin"] == "torch hub cache"
    # and --scratch overrides both
    assert main(args + ["--fresh", "--scratch"]) == 0
    assert "start: random weights (from scratch)" in capsys.readouterr().out
    assert read_metadata(out)["start"] == {"kind": "scratch"}


def test_train_refuses_a_mismatched_file_before_any_work(tmp_path, capsys):
    wrong = _save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path, "resnet34.pth")
    run_dir = tmp_path / "run"
    code = main(["train", "fcn", "--data", str(tmp_path / "not-read-yet"), "--run-dir", str(run_dir),
                 "--pretrained", str(wrong)])
    assert code == 2
    assert "resnet34.pth does not fit a torchvision ResNet-18" in one_line_stderr(capsys)
    assert not run_dir.exists()
    assert main(["train", "ssd", "--data", str(tmp_path), "--pretrained", str(wrong)]) == 2
    assert "--pretrained applies to the classifier and fcn models" in one_line_stderr(capsys)
    assert main(["train", "classifier", "--pretrained", str(wrong)]) == 2
    assert "--pretrained applies to fine-tuning on your data: add --data DIR" in one_line_stderr(capsys)


# ------------------------------------------------------------------------------ VGG-19
def test_vgg_features_take_the_file_as_it_is(vgg19_features_file):
    from cvexport.models.vgg_features import RANDOM_VGG, using_vgg_weights, vgg19_features, vgg_record

    reference = torch.load(vgg19_features_file, weights_only=True)
    found = PretrainedFile(vgg19_features_file, VGG19, "--vgg-weights")
    random = vgg19_features(28)
    with using_vgg_weights(found):
        chosen = vgg19_features(28)
        record = vgg_record()
    torch.testing.assert_close(chosen[28].weight, reference["features.28.weight"])
    torch.testing.assert_close(chosen[0].bias, reference["features.0.bias"])
    assert not torch.equal(random[0].weight, chosen[0].weight)
    assert record["features"] == "torchvision VGG-19" and record["origin"] == "--vgg-weights"
    assert vgg_record() == {"features": RANDOM_VGG}  # the choice ends with the block
    assert all(not p.requires_grad for p in chosen.parameters())


@pytest.mark.parametrize("make,message", [
    (lambda: torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"], batch_norm=True).state_dict(),
     r"does not fit a torchvision VGG-19: missing 'features\.0\.weight'"),
    (lambda: {f"features.{k}": v for k, v in torchvision.models.vgg.make_layers(
        torchvision.models.vgg.cfgs["D"]).state_dict().items()},
     r"does not fit a torchvision VGG-19: missing 'features\.\d+\.weight'"),
    (lambda: {f"features.{k}": v for k, v in torchvision.models.vgg.make_layers(
        torchvision.models.vgg.cfgs["E"], batch_norm=True).state_dict().items()},
     r"does not fit a torchvision VGG-19: .*'features\.1\.\w+'"),
])
def test_a_vgg_file_that_does_not_fit_is_one_line(tmp_path, make, message):
    path = _save(make(), tmp_path, "wrong-vgg.pth")
    with pytest.raises(CvexportError, match=message):
        vgg19_feature_weights(PretrainedFile(path, VGG19, "--vgg-weights"))


def test_stylize_uses_the_vgg_file_and_refuses_a_mismatched_one(vgg19_features_file, tmp_path, capsys):
    from cvexport.models.photos import photo

    content, style = tmp_path / "content.png", tmp_path / "style.png"
    Image.fromarray(photo("astronaut")).resize((48, 48)).save(content)
    Image.fromarray(photo("coffee")).resize((48, 48)).save(style)
    out = tmp_path / "out.png"
    args = ["stylize", str(content), str(style), "--out", str(out), "--steps", "2", "--size", "32"]
    assert main(args + ["--vgg-weights", str(vgg19_features_file)]) == 0
    assert f"VGG-19 features: torchvision VGG-19 weights {vgg19_features_file} (--vgg-weights)" in capsys.readouterr().out
    assert out.is_file() and len(json.loads(out.with_suffix(".losses.json").read_text())) == 2
    out.unlink()
    wrong = _save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path, "resnet.pth")
    assert main(args + ["--vgg-weights", str(wrong)]) == 2
    assert "resnet.pth does not fit a torchvision VGG-19" in one_line_stderr(capsys)
    assert not out.exists()
    assert main(args) == 0  # without a file: the random features, and it says so
    assert "VGG-19 features: random VGG-19" in capsys.readouterr().out


@pytest.mark.slow
def test_full_torchvision_vgg19_file_with_its_classifier(tmp_path, empty_hub):
    """The file torchvision writes (features and the 120 M-weight classifier), from the hub cache."""
    from cvexport.models.vgg_features import using_vgg_weights, vgg19_features

    torch.manual_seed(3)
    model = torchvision.models.vgg19(weights=None)
    empty_hub.mkdir(parents=True)
    torch.save(model.state_dict(), empty_hub / "vgg19-dcbb9e9d.pth")
    found = find_pretrained(VGG19, None, "--vgg-weights")
    assert found.origin == "torch hub cache"
    with using_vgg_weights(found):
        features = vgg19_features(28)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(features(x), model.features[:29](x))


def test_train_style_records_the_vgg_it_used(vgg19_features_file, tmp_path, capsys):
    from cvexport.checkpoint import read_metadata

    out = tmp_path / "style.safetensors"
    assert main(["train", "style", "--run-dir", str(tmp_path / "run"), "--out", str(out), "--max-steps", "1",
                 "--val-images", "1", "--vgg-weights", str(vgg19_features_file)]) == 0
    assert "VGG-19 features: torchvision VGG-19 weights" in capsys.readouterr().out
    vgg = read_metadata(out)["vgg"]
    assert vgg["features"] == "torchvision VGG-19" and vgg["file"] == str(vgg19_features_file.resolve())
    assert main(["train", "classifier", "--vgg-weights", str(vgg19_features_file)]) == 2
    assert "--vgg-weights applies to the style model" in one_line_stderr(capsys)
