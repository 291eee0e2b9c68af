"""Training and evaluation of TinySSD on the synthetic detection dataset.

Loss as taught: cross-entropy on anchor classes plus L1 on the offsets of positive
anchors. Negatives are hard-mined at 3:1 (the SSD paper's ratio) so the thousands of
easy background anchors do not drown the few positives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cvexport.metrics import ImageDetections, detection_map
from cvexport.models.detection_data import CLASS_NAMES, make_sample
from cvexport.models.tinyssd import INPUT_SIZE, TinySSD
from cvexport.ops.boxes import assign_anchors, encode_offsets
from cvexport.ops.detection import NmsConfig, postprocess
from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_float_nchw

UINT8_FRAMES = {"dtype": "uint8", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}

NEGATIVE_RATIO = 3
MIN_NEGATIVES = 16
VAL_SIZE = 256
# mAP is measured at a low score threshold, as COCO evaluation expects ranked detections.
EVAL_NMS = NmsConfig(score_threshold=0.01, iou_threshold=0.45, max_detections=100)


def images_to_tensor(images: list[np.ndarray]) -> Tensor:
    """uint8 RGB (H, W, 3) images -> Tensor[B, 3, H, W] float32 normalized as the model expects."""
    return to_float_nchw(np.stack(images), UINT8_FRAMES)


def label_anchors(anchors: Tensor, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Targets for one image.

    Returns (class targets Tensor[N] int64 with 0 = background, offset targets Tensor[N, 4],
    positive mask Tensor[N] bool).
    """
    matched = assign_anchors(anchors, boxes)
    positive = matched >= 0
    cls_target = torch.zeros(anchors.shape[0], dtype=torch.long)
    offsets = torch.zeros_like(anchors)
    if positive.any():
        cls_target[positive] = labels[matched[positive]] + 1
        offsets[positive] = encode_offsets(anchors[positive], boxes[matched[positive]])
    return cls_target, offsets, positive


def make_batch(indices: np.ndarray, anchors: Tensor, split: str = "train", seed: int = 0) -> dict[str, Tensor]:
    samples = [make_sample(split, int(i), seed=seed, size=INPUT_SIZE) for i in indices]
    targets = [
        label_anchors(anchors, torch.from_numpy(s.boxes), torch.from_numpy(s.labels)) for s in samples
    ]
    return {
        "images": images_to_tensor([s.image for s in samples]).contiguous(memory_format=torch.channels_last),
        "cls_target": torch.stack([t[0] for t in targets]),
        "offset_target": torch.stack([t[1] for t in targets]),
        "positive": torch.stack([t[2] for t in targets]),
    }


def multibox_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    cls_logits, offsets = model(batch["images"])
    positive = batch["positive"]
    ce = F.cross_entropy(cls_logits.flatten(0, 1), batch["cls_target"].flatten(), reduction="none")
    ce = ce.view(positive.shape)
    # Hard negative mining: per image, keep the NEGATIVE_RATIO x num_pos highest-loss negatives.
    negative_loss = ce.detach().masked_fill(positive, -1.0)
    num_neg = (positive.sum(1, keepdim=True) * NEGATIVE_RATIO).clamp(min=MIN_NEGATIVES)
    rank = negative_loss.argsort(dim=1, descending=True).argsort(dim=1)
    negative = (rank < num_neg) & ~positive
    num_pos = positive.sum().clamp(min=1).float()
    cls_loss = ce[positive | negative].sum() / num_pos
    box_loss = (offsets - batch["offset_target"]).abs()[positive].sum() / num_pos
    return cls_loss + box_loss, {"cls": float(cls_loss.detach()), "box": float(box_loss.detach())}


@torch.no_grad()
def evaluate_map(model: nn.Module, size: int = VAL_SIZE, seed: int = 0, batch_size: int = 32) -> dict[str, float]:
    """mAP@0.5 and mAP@0.5:0.95 of the PyTorch reference pipeline on the first ``size`` val images."""
    model.eval()
    predictions, ground_truth = [], []
    for start in range(0, size, batch_size):
        samples = [make_sample("val", i, seed=seed, size=INPUT_SIZE) for i in range(start, min(size, start + batch_size))]
        cls_logits, offsets = model(images_to_tensor([s.image for s in samples]))
        out = postprocess(cls_logits, offsets, model.anchors, EVAL_NMS)
        for b, sample in enumerate(samples):
            n = int(out["num_detections"][b, 0])
            predictions.append(
                ImageDetections(
                    boxes=out["detection_boxes"][b, :n].numpy() * INPUT_SIZE,
                    classes=out["detection_classes"][b, :n].numpy(),
                    scores=out["detection_scores"][b, :n].numpy(),
                )
            )
            ground_truth.append(ImageDetections(boxes=sample.boxes * INPUT_SIZE, classes=sample.labels))
    metrics = detection_map(predictions, ground_truth, CLASS_NAMES)
    return {"val_map50": metrics["map50"], "val_map": metrics["map"], "val_images": size}


def default_config() -> list[Any]:
    """The recipe that produced the shipped checkpoint, as training phases run in sequence.

    Phase 1: SGD with warm-up and one cosine cycle over train images 0..4095 (val mAP@0.5
    0.873 after it, 39 min on 2 CPU cores). Phases 2 and 3: warm restarts (fresh momentum,
    new cosine cycle, lower peak rate) over the larger train split 0..8191 (0.894 after
    phase 2, 0.896 after phase 3). Phase 4: one more restart at the phase-2 rate with a new
    shuffling seed (0.905 after it; 12.5 min).
    """
    from cvexport.models.training import TrainConfig

    return [
        TrainConfig(epochs=12, batch_size=32, train_size=4096, lr=0.05, warmup_steps=50, seed=0),
        TrainConfig(epochs=3, batch_size=32, train_size=8192, lr=0.02, warmup_steps=20, seed=0),
        TrainConfig(epochs=2, batch_size=32, train_size=8192, lr=0.01, warmup_steps=10, seed=0),
        TrainConfig(epochs=2, batch_size=32, train_size=8192, lr=0.02, warmup_steps=20, seed=1),
    ]


def train(run_dir: str | Path, phases: list[Any], val_size: int = VAL_SIZE) -> tuple[TinySSD, dict[str, Any]]:
    """Train TinySSD from scratch through ``phases``; returns the model (eval mode) and the final
    metrics record (val mAP measured after the last phase). Each phase keeps its checkpoints in
    ``run_dir/phaseN`` so an interrupted run resumes where it stopped."""
    from cvexport.models.training import fit, seed_everything

    seed_everything(phases[0].seed)
    model = TinySSD(num_classes=len(CLASS_NAMES)).to(memory_format=torch.channels_last)
    anchors = model.anchors
    record: dict[str, Any] = {}
    for number, config in enumerate(phases, start=1):
        last = number == len(phases)
        record = fit(
            model,
            # The data seed stays the first phase's: every phase reads the same train split.
            make_batch=lambda idx: make_batch(idx, anchors, "train", phases[0].seed),
            loss_fn=multibox_loss,
            config=config,
            run_dir=Path(run_dir) / f"phase{number}",
            evaluate=(lambda m: evaluate_map(m, size=val_size, seed=phases[0].seed)) if (val_size and last) else None,
        )
    model.eval()
    return model, record


def save_weights(model: TinySSD, path: str | Path, record: dict[str, Any], config: list[Any]) -> None:
    """Write the deployable checkpoint: weights only (fp32), with classes, recipe and val metrics."""
    from dataclasses import asdict

    from cvexport.checkpoint import save_checkpoint

    meta = {
        "model": "ssd",
        "architecture": "TinySSD",
        "class_names": list(CLASS_NAMES),
        "input_size": INPUT_SIZE,
        "train_phases": [asdict(phase) for phase in config],
        "metrics": {k: v for k, v in record.items() if k.startswith("val_")},
    }
    save_checkpoint(path, model.state_dict(), meta)
