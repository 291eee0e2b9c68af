"""Synthetic semantic-segmentation dataset: filled shapes of three classes on real photographs.

Every sample is a pure function of (split, index, seed). Objects (1 to 3 per image) are
large, 35%-75% of the network input side, because the FCN predicts on a stride-32 grid
(4x4 cells at 128 px) and upsamples from there; aspect ratio 2:3 to 3:2, any quarter-turn,
a random fill pattern, and boxes may overlap (IoU up to 0.3, later objects on top).

Val samples are drawn at the network input size. Train samples are drawn on a canvas
TRAIN_CANVAS_SCALE x larger, with objects sized relative to the input size (so crops
see the same object scales as val), and the training batch maker crops them randomly
to the input size: image and mask together, the mask never resized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvexport.models.classification_data import FILLS, fill_pattern, random_box, shape_mask
from cvexport.models.photos import random_background

SEG_CLASSES = ("background", "ellipse", "rectangle", "triangle")
INPUT_SIZE = 128  # multiple of 32 (the encoder's stride); training crop and export size
TRAIN_CANVAS_SCALE = 1.25
SPLIT_SEEDS = {"train": 0, "val": 1}
MIN_SCALE, MAX_SCALE = 0.35, 0.75  # object box side, as a fraction of INPUT_SIZE
MAX_PAIR_IOU = 0.3


@dataclass(frozen=True)
class SegmentationSample:
    image: np.ndarray  # uint8 (H, W, 3) RGB
    mask: np.ndarray  # uint8 (H, W), index into SEG_CLASSES (0 = background)


def canvas_size(split: str, size: int = INPUT_SIZE) -> int:
    """Side of the images ``make_sample`` draws: ``size`` for val, larger for train (to be cropped)."""
    return size if split == "val" else int(round(size * TRAIN_CANVAS_SCALE))


def _place_boxes(rng: np.random.Generator, count: int, size: int, canvas: int) -> list[tuple[float, ...]]:
    """Up to ``count`` pixel boxes whose pairwise IoU is at most MAX_PAIR_IOU (20 tries each)."""
    import torch
    from torchvision.ops import box_iou

    boxes: list[tuple[float, ...]] = []
    for _ in range(count):
        for _attempt in range(20):
            box = random_box(rng, size, MIN_SCALE, MAX_SCALE, canvas)
            if not boxes or float(box_iou(torch.tensor([box]), torch.tensor(boxes)).max()) <= MAX_PAIR_IOU:
                boxes.append(box)
                break
    return boxes


def make_sample(split: str, index: int, seed: int = 0, size: int = INPUT_SIZE) -> SegmentationSample:
    """One deterministic sample of ``split``, drawn at ``canvas_size(split, size)`` pixels square."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    rng = np.random.default_rng([seed, SPLIT_SEEDS[split], index])
    canvas = canvas_size(split, size)
    image = random_background(rng, canvas)
    mask = np.zeros((canvas, canvas), dtype=np.uint8)
    count = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    for box in _place_boxes(rng, count, size, canvas):
        label = int(rng.integers(1, len(SEG_CLASSES)))
        region = shape_mask(SEG_CLASSES[label], box, canvas, int(rng.integers(4)))
        texture = fill_pattern(FILLS[rng.integers(len(FILLS))], canvas, rng)
        image = np.where(region[..., None], texture, image)
        mask[region] = label
    return SegmentationSample(image=np.ascontiguousarray(image, dtype=np.uint8), mask=mask)


def random_crop(sample: SegmentationSample, size: int, rng: np.random.Generator) -> SegmentationSample:
    """The same random (size, size) window of image and mask (no resizing, labels stay exact)."""
    height, width = sample.mask.shape
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    window = (slice(top, top + size), slice(left, left + size))
    return SegmentationSample(image=np.ascontiguousarray(sample.image[window]),
                              mask=np.ascontiguousarray(sample.mask[window]))
