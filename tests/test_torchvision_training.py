"""``cvexport train <torchvision builder> --data DIR`` (issue 24 item 5): torchvision's own
losses in train --data's run (dataset readers, class names, run directory, resume, checkpoint),
and a checkpoint that ``cvexport build NAME --weights CKPT`` builds with its parity gate.

Smoke runs only (1-2 steps on a few pictures written here by the project's dataset writers):
SSDlite320 at its fixed 320 (started from non-flat test weights, tests/detector_weights.py, so
the parity gate compares detections, not tie-breaking among flat scores), ResNet-18 and LRASPP
at 64 px from torchvision's random init. What fine-tuning learns is measured in
benchmarks/torchvision_finetune.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli_helpers import one_line_stderr
from cvexport.checkpoint import load_checkpoint, read_metadata
from cvexport.cli import main
from cvexport.models import dataset_writers
from cvexport.models.finetune import HEAD_LR_SCALE, build_start
from cvexport.models.training_tasks.torchvision_builders import BACKBONES, BackboneFile, backbone_file
from cvexport.registry import get_spec, torchvision_models
from cvexport.torchvision_zoo import build_network
from detector_weights import detector_test_weights

SSDLITE = "ssdlite320_mobilenet_v3_large"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny dataset per format: 2 train pictures, 1 val."""
    root = tmp_path_factory.mktemp("tv-train-data")
    return {"coco": dataset_writers.write_coco(root / "coco", train=2, val=1, size=96),
            "imagefolder": dataset_writers.write_imagefolder(root / "folder", train_per_class=1, val_per_class=1),
            "voc": dataset_writers.write_voc(root / "voc", train=2, val=1, size=64)}


def _train(argv: list[str], capsys) -> str:
    assert main(["train", *argv]) == 0
    return capsys.readouterr().out


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    return one_line_stderr(capsys)


def test_ssdlite_trains_with_torchvisions_losses_resumes_and_builds(data, tmp_path, capsys):
    classes = dataset_writers.COCO_CLASSES
    start = tmp_path / "start.pth"
    torch.save(detector_test_weights(build_network(SSDLITE, len(classes) + 1, 320), 320), start)
    run_dir, out = tmp_path / "run", tmp_path / "ssdlite.safetensors"
    argv = [SSDLITE, "--data", str(data["coco"]), "--weights", str(start), "--run-dir", str(run_dir),
            "--out", str(out), "--batch-size", "2", "--lr", "0.0005"]
    printed = _train([*argv, "--max-steps", "1"], capsys)
    assert "the weights of" in printed and "(head x10)" in printed  # the start's head fits: kept, at 10x
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    # torchvision's own SSD losses, each shown beside their sum
    assert set(record) >= {"loss", "bbox_regression", "classification"}
    assert record["loss"] == pytest.approx(record["bbox_regression"] + record["classification"], rel=1e-5)

    printed = _train([*argv, "--max-steps", "2"], capsys)  # the same run, resumed
    assert "resuming from" in printed
    meta = read_metadata(out)
    assert meta["model"] == SSDLITE and meta["class_names"] == list(classes) and meta["input_size"] == 320
    assert meta["builder_options"] == {"reduced_tail": True} and meta["start"]["kind"] == "weights"
    assert meta["train"]["steps_done"] == 2 and meta["dataset"]["format"] == "coco"
    assert meta["architecture"] == f"torchvision {SSDLITE}"
    trained, started = load_checkpoint(out)[0], torch.load(start, weights_only=True)
    key = "head.classification_head.module_list.0.1.weight"  # the kept head, trained
    assert trained[key].shape == started[key].shape and not torch.equal(trained[key], started[key])

    bundle = tmp_path / "bundle"
    # its parity gate (against torchvision's own inference) passes
    assert main(["build", SSDLITE, "--weights", str(out), "--out", str(bundle), "--max-batch", "1"]) == 0
    parity = json.loads((bundle / "parity.json").read_text())
    assert parity and json.loads((bundle / "manifest.json").read_text())["class_names"] == list(classes)


@pytest.mark.parametrize("name,fmt,loss", [("resnet18", "imagefolder", "acc"),
                                           ("lraspp_mobilenet_v3_large", "voc", "pix_acc")])
def test_classifier_and_segmenter_train_and_build(name, fmt, loss, data, tmp_path, capsys):
    out = tmp_path / f"{name}.safetensors"
    printed = _train([name, "--data", str(data[fmt]), "--run-dir", str(tmp_path / "run"), "--out", str(out),
                      "--input-size", "64", "--batch-size", "2", "--max-steps", "1"], capsys)
    assert "random weights (from scratch)" in printed and "(head x" not in printed  # all new: one rate
    assert loss in json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    meta = read_metadata(out)
    assert meta["input_size"] == 64 and meta["class_names"] == list(data_classes(fmt))
    assert main(["build", name, "--weights", str(out), "--out", str(tmp_path / "bundle"), "--max-batch", "1"]) == 0


def data_classes(fmt: str) -> tuple[str, ...]:
    return {"imagefolder": tuple(sorted(dataset_writers.FOLDER_CLASSES)),
            "voc": dataset_writers.VOC_CLASSES}[fmt]


def test_pretrained_backbone_is_loaded_into_the_detector(tmp_path):
    """SSDlite from a MobileNetV3 ImageNet state dict: its tensors are the detector's backbone
    (after torchvision's own re-initialization), with the full tail torchvision trains with."""
    from torchvision.models import mobilenet_v3_large

    torch.manual_seed(1)
    path = tmp_path / "mobilenet_v3_large.pth"
    state = mobilenet_v3_large(weights=None).state_dict()
    torch.save(state, path)
    model, groups, start = build_start(get_spec(SSDLITE), 2, 320, "imagenet", BackboneFile(path, "mobilenet_v3_large"))
    ours = model.state_dict()
    assert torch.equal(ours["backbone.features.0.0.0.weight"], state["features.0.0.weight"])
    assert torch.equal(ours["backbone.features.0.3.block.1.0.weight"], state["features.3.block.1.0.weight"])
    assert ours["backbone.features.1.0.3.0.weight"].shape[0] != 80  # the full tail, not the reduced one
    assert start.record["kind"] == "imagenet" and groups[1]["lr_scale"] == HEAD_LR_SCALE
    head = {id(p) for p in groups[1]["params"]}
    assert head == {id(p) for n, p in model.named_parameters() if n.startswith("head.classification_head.")}


def test_every_detector_and_segmenter_names_its_backbone_and_a_classifier_starts_from_itself(tmp_path):
    assert {name for name, task in torchvision_models().items() if task != "classification"} == set(BACKBONES)
    from torchvision.models import resnet18

    torch.manual_seed(2)
    path = tmp_path / "resnet18.pth"
    state = resnet18(weights=None).state_dict()
    torch.save(state, path)
    spec = get_spec("resnet18")
    model, groups, _ = build_start(spec, 5, 64, "imagenet", backbone_file(spec, path))
    assert torch.equal(model.state_dict()["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])
    assert model.fc.weight.shape[0] == 5 and {id(p) for p in groups[1]["params"]} == {id(model.fc.weight),
                                                                                      id(model.fc.bias)}


def test_retinanet_from_a_backbone_freezes_its_batch_norms_as_torchvision_does(tmp_path):
    from torchvision.models import resnet50

    path = tmp_path / "resnet50.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    spec = get_spec("retinanet_resnet50_fpn")
    model, _, _ = build_start(spec, 2, 128, "imagenet", BackboneFile(path, "resnet50"))
    model.train()
    body = model.backbone.body
    assert not body.bn1.training and not body.layer4[0].bn1.training  # statistics frozen
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad and model.head.classification_head.cls_logits.weight.requires_grad


def test_bad_starts_and_data_are_one_line(data, tmp_path, capsys):
    from torchvision.models import resnet18

    other = tmp_path / "resnet18.pth"
    torch.save(resnet18(weights=None).state_dict(), other)
    coco, run = str(data["coco"]), ["--run-dir", str(tmp_path / "run")]
    err = _fails(["train", SSDLITE, "--data", coco, "--pretrained", str(other), *run], capsys)
    assert "does not fit a torchvision mobilenet_v3_large" in err
    err = _fails(["train", SSDLITE, "--data", coco, "--weights", str(other), *run], capsys)
    assert f"class head of a torchvision {SSDLITE}" in err
    err = _fails(["train", "resnet18", "--data", coco, *run], capsys)  # a COCO dir where ImageFolder is expected
    assert "--data" in err
    err = _fails(["train", "resnet18", "--data", str(data["imagefolder"]), "--scratch", "--weights", str(other),
                  *run], capsys)
    assert "--scratch and --weights exclude each other" in err
    err = _fails(["train", "ssd", "--data", coco, "--weights", str(other), *run], capsys)
    assert "--weights applies to torchvision's builders" in err
    err = _fails(["train", SSDLITE], capsys)
    assert "--data DIR" in err
    assert not Path(tmp_path / "run").exists()  # everything checked before the run directory
