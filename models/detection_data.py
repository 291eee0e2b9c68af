"""Synthetic detection dataset: shapes of several classes pasted on real photographs.

Every sample is a pure function of (split, index, seed), so the train/val split is
deterministic and nothing is stored on disk. Objects vary in scale (18%-60% of the
image side), aspect ratio (1:2 to 2:1), colour and count (0 to 8 per image, about
one image in ten crowded), and may overlap (IoU up to 0.3 between two objects).

The scale range follows TinySSD's anchor design, whose smallest anchors are 20% of the
image: a first training run with objects down to 12% found 3% recall below 20% scale,
because no anchor overlaps such objects at IoU 0.5 and they only get one positive each.

Camera frames (``make_frame``) are the same scenes on frames of other shapes, to be fitted to
the network input by the runtime's letterbox (``fit_to_input``): random aspect ratio and size
for training, with camera effects; 16:9, 4:3 and 9:16 for val. Object scales are drawn relative
to the frame's long side, which the letterbox maps onto the network input side, so the network
sees the same object scales as on square samples (objects must also fit the frame's short side),
and objects are as dense: a frame holds the share of a square scene's objects that its area is.
Frames come from their own random streams: the square samples are unchanged by them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvexport.images import Letterbox
from cvexport.models import camera_frames
from cvexport.models.photos import random_background

CLASS_NAMES = ("ellipse", "rectangle", "triangle")
SPLIT_SEEDS = {"train": 0, "val": 1}
MAX_PAIR_IOU = 0.3
MIN_SCALE, MAX_SCALE = 0.18, 0.6  # sqrt(w * h) as a fraction of the image side
FRAME_STREAM = 1  # random stream of camera frames, apart from the square samples


@dataclass(frozen=True)
class DetectionSample:
    image: np.ndarray  # uint8 (H, W, 3) RGB
    boxes: np.ndarray  # float32 (G, 4) in (x1, y1, x2, y2), normalized to the image
    labels: np.ndarray  # int64 (G,), index into CLASS_NAMES


def _iou(box: np.ndarray, others: list[np.ndarray]) -> float:
    if not others:
        return 0.0
    o = np.stack(others)
    tl = np.maximum(box[:2], o[:, :2])
    br = np.minimum(box[2:], o[:, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return float(np.max(inter / (area(box) + area(o) - inter)))


def _object_count(rng: np.random.Generator) -> int:
    if rng.random() < 0.08:
        return 0
    if rng.random() < 0.1:
        return int(rng.integers(6, 9))  # crowded
    return int(rng.integers(1, 5))


def _draw(draw, label: int, box_px: tuple[float, float, float, float], fill, outline, rng) -> None:
    x1, y1, x2, y2 = box_px
    if label == 0:
        draw.ellipse(box_px, fill=fill, outline=outline, width=2)
    elif label == 1:
        draw.rectangle(box_px, fill=fill, outline=outline, width=2)
    else:
        # Apex somewhere along the top edge; the base spans the bottom edge, so the box is tight.
        apex_x = x1 + (x2 - x1) * float(rng.uniform(0.2, 0.8))
        draw.polygon([(apex_x, y1), (x2, y2), (x1, y2)], fill=fill, outline=outline, width=2)


def _rng(split: str, index: int, seed: int, *stream: int) -> np.random.Generator:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    return np.random.default_rng([seed, SPLIT_SEEDS[split], index, *stream])


def _draw_scene(rng: np.random.Generator, background: np.ndarray) -> DetectionSample:
    """Objects drawn on ``background`` (H, W, 3); their scale is relative to its long side."""
    from PIL import Image, ImageDraw

    height, width = background.shape[:2]
    # Box sides as fractions of each image side (1.0 each on a square image).
    rel_w, rel_h = max(height, width) / width, max(height, width) / height
    canvas = Image.fromarray(background)
    draw = ImageDraw.Draw(canvas)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    count = _object_count(rng)
    if height != width:
        # A frame is a crop of a square scene: it keeps each object with the share of the square's
        # area it covers, so objects are as dense (as often hidden behind others) as on square
        # samples; the same count on 16:9 hid twice as many objects as on square val.
        count = int(rng.binomial(count, height * width / max(height, width) ** 2))
    for _ in range(count):
        for _attempt in range(20):
            scale = float(rng.uniform(MIN_SCALE, MAX_SCALE))
            aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
            w, h = scale * np.sqrt(aspect) * rel_w, scale / np.sqrt(aspect) * rel_h
            if w > 0.9 or h > 0.9:
                continue
            x1, y1 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            box = np.array([x1, y1, x1 + w, y1 + h], dtype=np.float32)
            if _iou(box, boxes) <= MAX_PAIR_IOU:
                break
        else:
            continue
        label = int(rng.integers(len(CLASS_NAMES)))
        fill = tuple(int(c) for c in rng.integers(0, 256, size=3))
        outline = tuple(int(c) // 3 for c in fill)
        u1, v1, u2, v2 = (float(v) for v in box)
        pixels = (u1 * (width - 1), v1 * (height - 1), u2 * (width - 1), v2 * (height - 1))
        _draw(draw, label, pixels, fill, outline, rng)
        boxes.append(box)
        labels.append(label)
    return DetectionSample(
        image=np.asarray(canvas),
        boxes=np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32),
        labels=np.asarray(labels, dtype=np.int64),
    )


def make_sample(split: str, index: int, seed: int = 0, size: int = 256) -> DetectionSample:
    """One deterministic square sample of ``split`` ("train" or "val"), ``size`` pixels a side."""
    rng = _rng(split, index, seed)
    return _draw_scene(rng, random_background(rng, size))


def make_frame(split: str, index: int, seed: int = 0, view: str = "camera", size: int = 256,
               effects: bool = False) -> DetectionSample:
    """One deterministic camera frame of ``split``, shaped by ``view`` (see
    ``camera_frames.VIEW_ASPECTS``) for a network of side ``size``; boxes are normalized to the
    frame. ``effects`` adds random camera effects (training), drawn after the scene, so the
    scene is the same with or without them."""
    rng = _rng(split, index, seed, FRAME_STREAM, camera_frames.view_names().index(view))
    height, width = camera_frames.frame_shape(rng, view, size)
    sample = _draw_scene(rng, camera_frames.frame_background(rng, height, width))
    if effects:
        sample = DetectionSample(camera_frames.camera_effects(sample.image, rng), sample.boxes, sample.labels)
    return sample


def fit_to_input(frame: DetectionSample, size: int = 256) -> tuple[DetectionSample, Letterbox]:
    """``frame`` as the network gets it (the runtime's letterbox to ``size`` square), boxes
    normalized to the network input, and the :class:`Letterbox` that maps results back."""
    image, box_map = camera_frames.fit_image(frame.image, size)
    return DetectionSample(image, camera_frames.fit_boxes(frame.boxes, box_map, size), frame.labels), box_map
