"""Synthetic semantic-segmentation dataset: filled shapes of three classes on real photographs.

Every sample is a pure function of (split, index, seed). Objects (1 to 3 per image) are
large, 35%-75% of the network input side, because the FCN predicts on a stride-32 grid
(4x4 cells at 128 px) and upsamples from there; aspect ratio 2:3 to 3:2, any quarter-turn,
a random fill pattern, and boxes may overlap (IoU up to 0.3, later objects on top).

Val samples are drawn at the network input size. Train samples are drawn on a canvas
TRAIN_CANVAS_SCALE x larger, with objects sized relative to the input size (so crops
see the same object scales as val), and the training batch maker crops them randomly
to the input size: image and mask together, the mask never resized.

Camera frames (``make_frame``) are the same scenes on frames of other shapes, fitted to the
network input by the runtime's letterbox (``fit_to_input``; the padding is background):
random aspect ratio and size with camera effects for training, 16:9, 4:3 and 9:16 for val.
Object sides are drawn relative to the frame's long side, which the letterbox maps onto the
input side (cut to the frame where they would not fit), and a frame holds the share of a square
scene's objects that its area is (at least one). Frames have their own random streams:
the square samples are unchanged by them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvexport.images import Letterbox
from cvexport.models import camera_frames
from cvexport.models.classification_data import FILLS, fill_pattern, random_box, shape_mask
from cvexport.models.photos import random_background

SEG_CLASSES = ("background", "ellipse", "rectangle", "triangle")
INPUT_SIZE = 128  # multiple of 32 (the encoder's stride); training crop and export size
TRAIN_CANVAS_SCALE = 1.25
SPLIT_SEEDS = {"train": 0, "val": 1}
MIN_SCALE, MAX_SCALE = 0.35, 0.75  # object box side, as a fraction of INPUT_SIZE
MAX_PAIR_IOU = 0.3
FRAME_STREAM = 1  # random stream of camera frames, apart from the square samples


@dataclass(frozen=True)
class SegmentationSample:
    image: np.ndarray  # uint8 (H, W, 3) RGB
    mask: np.ndarray  # uint8 (H, W), index into SEG_CLASSES (0 = background)


def canvas_size(split: str, size: int = INPUT_SIZE) -> int:
    """Side of the images ``make_sample`` draws: ``size`` for val, larger for train (to be cropped)."""
    return size if split == "val" else int(round(size * TRAIN_CANVAS_SCALE))


def _place_boxes(rng: np.random.Generator, count: int, size: int,
                 canvas: int | tuple[int, int]) -> list[tuple[float, ...]]:
    """Up to ``count`` pixel boxes whose pairwise IoU is at most MAX_PAIR_IOU (20 tries each) on a
    square or (height, width) ``canvas``; sides relative to ``size``."""
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


def _rng(split: str, index: int, seed: int, *stream: int) -> np.random.Generator:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    return np.random.default_rng([seed, SPLIT_SEEDS[split], index, *stream])


def _draw_scene(rng: np.random.Generator, image: np.ndarray, size: int) -> SegmentationSample:
    """1 to 3 textured objects (sides relative to ``size``) drawn on ``image`` (H, W, 3), with their mask."""
    canvas = image.shape[:2]
    mask = np.zeros(canvas, dtype=np.uint8)
    count = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
    if canvas[0] != canvas[1]:
        # A frame is a crop of a square scene: it keeps each object with the share of the square's
        # area it covers (at least one), so objects crowd it no more than a square sample.
        count = max(1, int(rng.binomial(count, canvas[0] * canvas[1] / max(canvas) ** 2)))
    for box in _place_boxes(rng, count, size, canvas):
        label = int(rng.integers(1, len(SEG_CLASSES)))
        region = shape_mask(SEG_CLASSES[label], box, canvas, int(rng.integers(4)))
        texture = fill_pattern(FILLS[rng.integers(len(FILLS))], canvas, rng)
        image = np.where(region[..., None], texture, image)
        mask[region] = label
    return SegmentationSample(image=np.ascontiguousarray(image, dtype=np.uint8), mask=mask)


def make_sample(split: str, index: int, seed: int = 0, size: int = INPUT_SIZE) -> SegmentationSample:
    """One deterministic sample of ``split``, drawn at ``canvas_size(split, size)`` pixels square."""
    rng = _rng(split, index, seed)
    return _draw_scene(rng, random_background(rng, canvas_size(split, size)), size)


def make_frame(split: str, index: int, seed: int = 0, view: str = "camera", size: int = INPUT_SIZE,
               effects: bool = False) -> SegmentationSample:
    """One deterministic camera frame of ``split``, shaped by ``view`` (``camera_frames.VIEW_ASPECTS``)
    for a network of side ``size``; ``effects`` adds random camera effects (drawn after the scene)."""
    rng = _rng(split, index, seed, FRAME_STREAM, camera_frames.view_names().index(view))
    height, width = camera_frames.frame_shape(rng, view, size)
    sample = _draw_scene(rng, camera_frames.frame_background(rng, height, width), max(height, width))
    if effects:
        sample = SegmentationSample(camera_frames.camera_effects(sample.image, rng), sample.mask)
    return sample


def fit_to_input(frame: SegmentationSample, size: int = INPUT_SIZE) -> tuple[SegmentationSample, Letterbox]:
    """``frame`` as the network gets it (the runtime's letterbox to ``size`` square; the mask
    placed alike, padding = background) and the :class:`Letterbox` that maps results back."""
    image, box_map = camera_frames.fit_image(frame.image, size)
    return SegmentationSample(image, camera_frames.fit_labels(frame.mask, box_map, size)), box_map


def random_crop(sample: SegmentationSample, size: int, rng: np.random.Generator) -> SegmentationSample:
    """The same random (size, size) window of image and mask (no resizing, labels stay exact)."""
    height, width = sample.mask.shape
    top = int(rng.integers(0, height - size + 1))
    left = int(rng.integers(0, width - size + 1))
    window = (slice(top, top + size), slice(left, left + size))
    return SegmentationSample(image=np.ascontiguousarray(sample.image[window]),
                              mask=np.ascontiguousarray(sample.mask[window]))
