"""Training: deterministic from a seed, resumable mid-epoch with identical results, metrics on disk."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cvexport.checkpoint import load_checkpoint
from cvexport.models.training import TrainConfig, fit
from cvexport.models import ssd_training
from cvexport.models.tinyssd import TinySSD


def _run(run_dir, max_steps, resume=True):
    torch.manual_seed(0)
    model = TinySSD(num_classes=3)
    config = TrainConfig(epochs=2, batch_size=2, train_size=6, lr=0.01, warmup_steps=2, seed=3, max_steps=max_steps)
    fit(model, lambda idx: ssd_training.make_batch(idx, model.anchors, "train", config.seed),
        ssd_training.multibox_loss, config, run_dir, resume=resume)
    return model


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    straight = _run(tmp_path / "straight", max_steps=None)
    _run(tmp_path / "resumed", max_steps=4)  # stops mid-way through the second epoch
    meta = load_checkpoint(tmp_path / "resumed" / "last.safetensors")[1]
    assert (meta["epoch"], meta["next_batch"], meta["step"]) == (1, 1, 4)
    resumed = _run(tmp_path / "resumed", max_steps=None)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    lines = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 6 and all("loss" in line for line in lines)


def test_different_seed_changes_the_run(tmp_path):
    a = _run(tmp_path / "a", max_steps=2)
    torch.manual_seed(0)
    model = TinySSD(num_classes=3)
    config = TrainConfig(epochs=1, batch_size=2, train_size=6, lr=0.01, warmup_steps=2, seed=4, max_steps=2)
    fit(model, lambda idx: ssd_training.make_batch(idx, model.anchors, "train", config.seed),
        ssd_training.multibox_loss, config, tmp_path / "b")
    assert not torch.equal(a.stages[0][0][0].weight, model.stages[0][0][0].weight)


def test_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    model = TinySSD(num_classes=3)
    batch = ssd_training.make_batch([0, 1, 2, 3], model.anchors)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    first = None
    for _ in range(12):
        loss, _ = ssd_training.multibox_loss(model, batch)
        first = first if first is not None else float(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.6 * first


@pytest.mark.slow
def test_shipped_checkpoint_quality():
    """mAP@0.5 of the shipped weights on square val and on letterboxed camera frames, with the
    library-computed metric, and no detections on the letterbox padding (issue #13)."""
    from cvexport.registry import get_spec

    spec = get_spec("ssd")
    meta = load_checkpoint(spec.weights_path())[1]
    metrics = ssd_training.evaluate_map(spec.load_model(), size=ssd_training.VAL_SIZE, views=("square", "16:9", "4:3"))
    # The project's quality bar (issue #2), and issue #13's on letterboxed 16:9 and 4:3 frames:
    # mAP@0.5 >= 0.90 on each (the square-only model scored 0.786 and 0.816 on these frames).
    for key in ("val_map50", "val_map50_16x9", "val_map50_4x3"):
        assert metrics[key] >= 0.90, (key, metrics)
    # The shipped square-only model put 402 boxes on the padding of these 256 16:9 frames.
    assert metrics["val_ghosts_16x9"] + metrics["val_ghosts_4x3"] <= 2, metrics
    # The checkpoint records what training measured; it must agree with what we measure now.
    for key, value in metrics.items():
        assert meta["metrics"][key] == pytest.approx(value, abs=1e-6), key


METRIC_KEYS = {"ssd": "val_map50", "classifier": "val_top1", "fcn": "val_miou", "style": "val_style_loss"}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(METRIC_KEYS))
def test_train_command_smoke_writes_loadable_weights(tmp_path, capsys, model):
    """`cvexport train MODEL` end to end for one step per phase: resumable run dir, metrics,
    safetensors out that fit the registered model. One step runs every phase's data, loss,
    checkpoint and the final metric as two did (the SSD's 10 phases: 134 instead of 240 CPU
    seconds); steps after the first, and resuming, are test_resumed_run_equals_uninterrupted_run's."""
    from cvexport.cli import main
    from cvexport.registry import get_spec, list_models

    assert sorted(METRIC_KEYS) == list_models()
    out = tmp_path / f"{model}.safetensors"
    assert main(["train", model, "--run-dir", str(tmp_path / "run"), "--out", str(out),
                 "--max-steps", "1", "--val-images", "4"]) == 0
    tensors, meta = load_checkpoint(out)
    assert meta["model"] == model
    value = meta["metrics"][METRIC_KEYS[model]]
    # One step teaches nothing, but the metric must be a real one: a ratio in [0, 1] (mAP, top-1,
    # mIoU) or a positive loss, and the number the run printed.
    assert math.isfinite(value) and (value > 0 if model == "style" else 0.0 <= value <= 1.0), value
    printed = capsys.readouterr().out
    assert METRIC_KEYS[model] in printed
    get_spec(model).load_model(out)  # the written weights fit the registered model
    assert list((tmp_path / "run").glob("phase*/metrics.jsonl"))
    if model != "style":  # the data audit of issue #13: what the model learns from, drawn
        assert (tmp_path / "run" / "contact_sheet.png").is_file()
    assert f"cvexport build {model} --weights" in printed
