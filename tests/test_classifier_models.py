"""ResNet-18 classifier: synthetic datasets, fine-tuning head swap and recipe, shipped weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cvexport.checkpoint import load_checkpoint
from cvexport.models import classifier_training
from cvexport.models.classification_data import INPUT_SIZE, SOURCE_CLASSES, TARGET_CLASSES, make_sample
from cvexport.models.classifier import build_classifier, fine_tune_model

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "classifier.safetensors"


@pytest.mark.parametrize("dataset", ["source", "target"])
def test_samples_are_deterministic_and_splits_differ(dataset):
    a, b = make_sample(dataset, "train", 5), make_sample(dataset, "train", 5)
    assert a.image.shape == (INPUT_SIZE, INPUT_SIZE, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and a.label == b.label
    assert not np.array_equal(a.image, make_sample(dataset, "val", 5).image)
    assert not np.array_equal(a.image, make_sample(dataset, "train", 5, seed=1).image)


def test_classes_are_balanced_and_disjoint():
    assert len(SOURCE_CLASSES) == 30 and len(TARGET_CLASSES) == 8
    assert not set(SOURCE_CLASSES) & set(TARGET_CLASSES)
    labels = [make_sample("target", "val", i).label for i in range(16)]
    assert np.bincount(labels).tolist() == [2] * 8
    with pytest.raises(ValueError):
        make_sample("imagenet", "train", 0)


def test_classifier_is_torchvision_resnet18():
    from torchvision.models import resnet18

    model = build_classifier(8).eval()
    reference = resnet18(weights=None, num_classes=8)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in reference.state_dict().items()
    ]
    assert model(torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE)).shape == (2, 8)


def test_fine_tune_model_copies_every_layer_but_fc():
    torch.manual_seed(0)
    source = build_classifier(len(SOURCE_CLASSES))
    before = {k: v.clone() for k, v in source.state_dict().items()}
    model = fine_tune_model(source, len(TARGET_CLASSES))
    assert model.fc.out_features == len(TARGET_CLASSES)
    for name, value in model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(value, before[name]), name
    assert all(torch.equal(v, before[k]) for k, v in source.state_dict().items())  # source untouched
    assert model.conv1.weight.data_ptr() != source.conv1.weight.data_ptr()
    # Xavier-uniform bound sqrt(6 / (fan_in + fan_out)).
    assert model.fc.weight.abs().max() <= (6 / (512 + len(TARGET_CLASSES))) ** 0.5


def test_fine_tune_groups_give_the_new_fc_ten_times_the_rate():
    model = fine_tune_model(build_classifier(4), 3)
    body, head = classifier_training.fine_tune_groups(model)
    assert head["lr_scale"] == 10.0 and body.get("lr_scale", 1.0) == 1.0
    assert {id(p) for p in head["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert len(body["params"]) + len(head["params"]) == len(list(model.parameters()))


def test_recipe_matches_the_taught_fine_tuning_setup():
    source, *tuning = classifier_training.default_config()
    assert all(tune.weight_decay == 1e-3 and tune.lr < source.lr for tune in tuning)
    # The last fine-tuning phase sees letterboxed camera frames beside square samples (issue #13).
    assert [classifier_training.phase_data(tune) for tune in tuning] == ["square", "mixed"]
    assert classifier_training.HEAD_LR_SCALE == 10.0


def test_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    model = fine_tune_model(build_classifier(len(SOURCE_CLASSES)), len(TARGET_CLASSES))
    batch = classifier_training.make_batch(np.arange(16), "target")
    assert batch["images"].shape == (16, 3, INPUT_SIZE, INPUT_SIZE) and batch["labels"].dtype == torch.long
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(8):
        loss, _ = classifier_training.classification_loss(model, batch)
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0], losses


def test_load_source_rejects_a_checkpoint_from_another_recipe(tmp_path):
    from cvexport.checkpoint import save_checkpoint

    config = classifier_training.default_config()[0]
    model = build_classifier(len(SOURCE_CLASSES))
    save_checkpoint(tmp_path / "s.safetensors", model.state_dict(), {"config": dataclasses.asdict(config)})
    assert classifier_training.load_source(tmp_path / "s.safetensors", config) is not None
    smoke = dataclasses.replace(config, max_steps=2)
    assert classifier_training.load_source(tmp_path / "s.safetensors", smoke) is None
    assert classifier_training.load_source(tmp_path / "missing.safetensors", config) is None


@pytest.mark.slow
def test_shipped_checkpoint_quality():
    """Top-1 of the shipped fp16 weights on a target val subset, and its recorded metrics."""
    tensors, meta = load_checkpoint(WEIGHTS)
    assert meta["model"] == "classifier" and meta["class_names"] == list(TARGET_CLASSES)
    assert meta["input_size"] == INPUT_SIZE
    assert all(v.dtype == torch.float16 for k, v in tensors.items() if not k.endswith("num_batches_tracked"))
    model = build_classifier(len(TARGET_CLASSES))
    model.load_state_dict(tensors)
    metrics = classifier_training.evaluate(model, size=classifier_training.VAL_SIZE)
    # The project's bar (issue 3): top-1 >= 0.95 on the target val split (0.9625 when trained).
    assert metrics["val_top1"] >= 0.95, metrics
    # What training recorded must be what we measure now, and fine-tuning must have paid
    # (0.381 from scratch for the same budget).
    assert abs(meta["metrics"]["val_top1"] - metrics["val_top1"]) < 1e-6
    assert meta["metrics"]["val_top1"] > meta["metrics"]["val_top1_scratch"] + 0.3
