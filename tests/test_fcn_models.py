"""FCN on ResNet-18: segmentation data, bilinear transposed conv, training pieces, shipped weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvexport.checkpoint import load_checkpoint
from cvexport.models import fcn_training
from cvexport.models.fcn import FCNResNet18, bilinear_kernel, build_fcn
from cvexport.models.segmentation_data import (
    INPUT_SIZE,
    SEG_CLASSES,
    canvas_size,
    make_sample,
    random_crop,
)

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "fcn.safetensors"


def test_samples_are_deterministic_with_sizes_per_split():
    assert SEG_CLASSES[0] == "background" and len(SEG_CLASSES) >= 4 and INPUT_SIZE % 32 == 0
    a, b = make_sample("val", 3), make_sample("val", 3)
    assert a.image.shape == (INPUT_SIZE, INPUT_SIZE, 3) and a.mask.shape == (INPUT_SIZE, INPUT_SIZE)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    train = make_sample("train", 3)
    assert train.mask.shape == (canvas_size("train"),) * 2 and canvas_size("train") > INPUT_SIZE
    assert not np.array_equal(make_sample("train", 3, seed=1).mask, train.mask)
    seen = np.unique(np.concatenate([make_sample("val", i).mask.ravel() for i in range(12)]))
    assert seen.tolist() == list(range(len(SEG_CLASSES)))


def test_random_crop_keeps_image_and_mask_aligned():
    sample = make_sample("train", 0)
    crop = random_crop(sample, INPUT_SIZE, np.random.default_rng(0))
    assert crop.image.shape[:2] == crop.mask.shape == (INPUT_SIZE, INPUT_SIZE)
    # Find the window: the crop must be an exact slice of both arrays at the same offset.
    margin = canvas_size("train") - INPUT_SIZE
    hits = [(t, l) for t in range(margin + 1) for l in range(margin + 1)
            if np.array_equal(sample.image[t : t + INPUT_SIZE, l : l + INPUT_SIZE], crop.image)]
    assert hits and any(np.array_equal(sample.mask[t : t + INPUT_SIZE, l : l + INPUT_SIZE], crop.mask) for t, l in hits)


def test_train_batches_are_cropped_deterministically():
    a = fcn_training.make_batch(np.array([4, 1]))
    b = fcn_training.make_batch(np.array([4, 1]))
    assert a["images"].shape == (2, 3, INPUT_SIZE, INPUT_SIZE) and a["masks"].shape == (2, INPUT_SIZE, INPUT_SIZE)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["masks"], b["masks"])
    assert a["masks"].dtype == torch.long
    # The same image in another batch (another epoch's order) gets another crop.
    c = fcn_training.make_batch(np.array([4, 2]))
    assert not torch.equal(a["masks"][0], c["masks"][0])


def test_bilinear_kernel_matches_bilinear_interpolation():
    weight = bilinear_kernel(3, 3, 4)
    assert weight.shape == (3, 3, 4, 4)
    assert weight[0, 1].abs().sum() == 0 and torch.equal(weight[0, 0], weight[2, 2])
    x = torch.randn(1, 3, 6, 6)
    for scale in (2, 32):
        up = F.conv_transpose2d(x, bilinear_kernel(3, 3, 2 * scale), stride=scale, padding=scale // 2)
        expected = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        inner = slice(scale // 2, -(scale // 2))  # the border differs: zero padding vs edge clamping
        assert up.shape == expected.shape
        torch.testing.assert_close(up[..., inner, inner], expected[..., inner, inner])


@pytest.mark.parametrize("size", [64, 96])
def test_fcn_outputs_per_pixel_logits_at_the_input_size(size):
    model = build_fcn(len(SEG_CLASSES)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, len(SEG_CLASSES), size, size)
    up = model.upsample
    assert (up.kernel_size, up.stride, up.padding) == ((64, 64), (32, 32), (16, 16))
    assert torch.equal(up.weight, bilinear_kernel(len(SEG_CLASSES), len(SEG_CLASSES), 64))


def test_fcn_takes_the_backbone_encoder_and_new_layers_learn_ten_times_faster():
    from cvexport.models.classifier import build_classifier

    backbone = build_classifier(30)
    model = FCNResNet18(len(SEG_CLASSES), backbone)
    assert torch.equal(model.encoder[0].weight, backbone.conv1.weight)
    assert len(model.encoder) == 8  # conv1, bn1, relu, maxpool, layer1..4: no avgpool, no fc
    encoder, head = fcn_training.head_groups(model)
    assert head["lr_scale"] == 10.0
    assert len(encoder["params"]) + len(head["params"]) == len(list(model.parameters()))


def test_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    model = build_fcn(len(SEG_CLASSES))
    batch = fcn_training.make_batch(np.arange(4), "val")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(6):
        loss, _ = fcn_training.segmentation_loss(model, batch)
        losses.append(float(loss.detach()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.slow
def test_shipped_checkpoint_quality():
    """mIoU and pixel accuracy of the shipped fp16 weights on a val subset (torchmetrics)."""
    tensors, meta = load_checkpoint(WEIGHTS)
    assert meta["model"] == "fcn" and meta["class_names"] == list(SEG_CLASSES)
    assert meta["input_size"] == INPUT_SIZE
    model = build_fcn(len(SEG_CLASSES))
    model.load_state_dict(tensors)
    metrics = fcn_training.evaluate(model, size=fcn_training.VAL_SIZE, views=("square", "16:9", "4:3"))
    # The project's bar (issues 3 and 13): mIoU >= 0.80 on square val and on letterboxed 16:9
    # and 4:3 camera frames (0.806 / 0.729 / 0.727 before training on letterboxed frames), the
    # padding predicted as background, and what training recorded must be what we measure now.
    for key in ("val_miou", "val_miou_16x9", "val_miou_4x3"):
        assert metrics[key] >= 0.80, (key, metrics)
    assert min(metrics["val_padding_background_16x9"], metrics["val_padding_background_4x3"]) >= 0.99, metrics
    for key, value in metrics.items():
        assert meta["metrics"][key] == pytest.approx(value, abs=1e-6), key
