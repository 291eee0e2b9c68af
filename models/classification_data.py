"""Synthetic classification datasets: one object, drawn with a fill pattern, on a real photograph.

Two datasets share the drawing code but not their classes:

- "source" (pretraining): 30 classes, every (shape, fill) pair of 6 plain shapes and
  5 fill patterns, so a network must learn both outlines and textures.
- "target" (fine-tuning): 8 new composite objects (ring, house, snowman, ...), the fill
  being a nuisance drawn at random; its train split is small (TARGET_TRAIN_SIZE) so that
  what pretraining learnt visibly helps.

Every sample is a pure function of (dataset, split, index, seed); classes are balanced
(label = index mod number of classes) and train/val come from different seeds.
Shapes are lists of primitives in unit-box coordinates, so one drawer serves every
shape and the segmentation dataset reuses it (``shape_mask``, ``fill_pattern``).

Camera frames (``make_frame``) put the same objects on frames of other shapes (16:9, 4:3, 9:16
for val; random with camera effects for training), fitted to the network input by the
runtime's letterbox (``fit_to_input``). The object is sized relative to the frame's short side,
as a photograph of one object is framed: on a 16:9 frame it ends up smaller in the network input
than on a square one, which is what letterboxing does to a classifier's input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvexport.images import Letterbox
from cvexport.models import camera_frames
from cvexport.models.photos import random_background

INPUT_SIZE = 64  # ResNet-18 trains at ~0.2 s per batch of 64 on 2 CPU cores at this size
TARGET_TRAIN_SIZE = 4800  # 600 per class (80 per class: val top-1 0.81; 240: 0.92; train 1.0 both times)
SPLIT_SEEDS = {"train": 0, "val": 1}
DATASET_SEEDS = {"source": 10, "target": 20}
MIN_SCALE, MAX_SCALE = 0.45, 0.9  # object box side, as a fraction of the image side
FRAME_STREAM = 1  # random stream of camera frames, apart from the square samples


def _star(points: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    angles = np.pi * np.arange(2 * points) / points - np.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, 0.5, 0.5 * inner)
    return [(0.5 + r * np.cos(a), 0.5 + r * np.sin(a)) for r, a in zip(radii, angles)]


def _poly(*pts: tuple[float, float]) -> tuple[str, list[tuple[float, float]], int]:
    return ("poly", list(pts), 255)


def _ellipse(u1: float, v1: float, u2: float, v2: float, value: int = 255):
    return ("ellipse", [(u1, v1), (u2, v2)], value)


# Each shape: primitives drawn in order into a mask (value 0 cuts a hole), in a unit box.
SHAPES = {
    "ellipse": [_ellipse(0, 0, 1, 1)],
    "rectangle": [_poly((0, 0), (1, 0), (1, 1), (0, 1))],
    "triangle": [_poly((0.5, 0), (1, 1), (0, 1))],
    "diamond": [_poly((0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5))],
    "cross": [_poly((0.33, 0), (0.67, 0), (0.67, 0.33), (1, 0.33), (1, 0.67), (0.67, 0.67),
                    (0.67, 1), (0.33, 1), (0.33, 0.67), (0, 0.67), (0, 0.33), (0.33, 0.33))],
    "star": [_poly(*_star())],
    "ring": [_ellipse(0, 0, 1, 1), _ellipse(0.3, 0.3, 0.7, 0.7, 0)],
    "crescent": [_ellipse(0, 0, 1, 1), _ellipse(0.35, -0.05, 1.25, 0.9, 0)],
    "arrow": [_poly((0, 0.35), (0.55, 0.35), (0.55, 0.05), (1, 0.5), (0.55, 0.95), (0.55, 0.65), (0, 0.65))],
    "house": [_poly((0.15, 0.45), (0.85, 0.45), (0.85, 1), (0.15, 1)), _poly((0.5, 0), (1, 0.45), (0, 0.45))],
    "tree": [_poly((0.5, 0), (0.95, 0.75), (0.05, 0.75)), _poly((0.38, 0.75), (0.62, 0.75), (0.62, 1), (0.38, 1))],
    "snowman": [_ellipse(0.28, 0, 0.72, 0.42), _ellipse(0.08, 0.36, 0.92, 1)],
    "hourglass": [_poly((0, 0), (1, 0), (0.5, 0.5)), _poly((0.5, 0.5), (1, 1), (0, 1))],
    "heart": [_ellipse(0, 0, 0.54, 0.54), _ellipse(0.46, 0, 1, 0.54), _poly((0.04, 0.4), (0.96, 0.4), (0.5, 1))],
}
SOURCE_SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "cross", "star")
FILLS = ("solid", "hstripes", "vstripes", "checker", "dots")
SOURCE_CLASSES = tuple(f"{shape}_{fill}" for shape in SOURCE_SHAPES for fill in FILLS)
TARGET_CLASSES = ("ring", "crescent", "arrow", "house", "tree", "snowman", "hourglass", "heart")
CLASSES = {"source": SOURCE_CLASSES, "target": TARGET_CLASSES}


@dataclass(frozen=True)
class ClassificationSample:
    image: np.ndarray  # uint8 (H, W, 3) RGB
    label: int  # index into SOURCE_CLASSES or TARGET_CLASSES


def _rotate(point: tuple[float, float], quarter_turns: int) -> tuple[float, float]:
    """Rotate a unit-box point by quarter turns about the box centre (the box maps onto itself)."""
    u, v = point
    for _ in range(quarter_turns % 4):
        u, v = 1 - v, u
    return u, v


def shape_mask(shape: str, box: tuple[float, float, float, float], size: int | tuple[int, int],
               quarter_turns: int = 0) -> np.ndarray:
    """bool (H, W) mask of ``shape`` drawn in pixel box (x1, y1, x2, y2), rotated by quarter turns."""
    from PIL import Image, ImageDraw

    height, width = (size, size) if isinstance(size, int) else size
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    x1, y1, x2, y2 = box
    for kind, points, value in SHAPES[shape]:
        px = [(x1 + u * (x2 - x1), y1 + v * (y2 - y1)) for u, v in (_rotate(p, quarter_turns) for p in points)]
        if kind == "poly":
            draw.polygon(px, fill=value)
        else:  # an ellipse's rotated corners still bound it; PIL wants them ordered
            (a, b), (c, d) = px
            draw.ellipse((min(a, c), min(b, d), max(a, c), max(b, d)), fill=value)
    return np.asarray(canvas) > 0


def fill_pattern(fill: str, size: int | tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) texture of ``fill`` in two random contrasting colours, period ~size/10."""
    height, width = (size, size) if isinstance(size, int) else size
    first = rng.integers(0, 256, size=3)
    # The second colour is the first shifted half-way round each channel, so patterns stay visible.
    second = (first + 128 + rng.integers(-40, 41, size=3)) % 256
    period = max(4, int(max(height, width) * rng.uniform(0.08, 0.14)))
    y, x = np.mgrid[0:height, 0:width]
    y, x = y + rng.integers(period), x + rng.integers(period)  # random phase
    half = period / 2
    if fill == "solid":
        use_second = np.zeros((height, width), bool)
    elif fill == "hstripes":
        use_second = (y % period) < half
    elif fill == "vstripes":
        use_second = (x % period) < half
    elif fill == "checker":
        use_second = ((y // half) + (x // half)) % 2 == 1
    elif fill == "dots":
        use_second = ((y % period) - half) ** 2 + ((x % period) - half) ** 2 < (0.3 * period) ** 2
    else:
        raise ValueError(f"unknown fill {fill!r}; expected one of {FILLS}")
    return np.where(use_second[..., None], second, first).astype(np.uint8)


def random_box(rng: np.random.Generator, side: float, min_scale: float, max_scale: float,
               canvas: int | tuple[int, int]) -> tuple[float, float, float, float]:
    """Pixel box (x1, y1, x2, y2) of scale sqrt(w*h) in [min, max] x ``side`` (aspect 2:3 to 3:2),
    placed uniformly inside a ``canvas``-pixel square or a (height, width) canvas (a side longer
    than the canvas is cut to it)."""
    canvas_h, canvas_w = (canvas, canvas) if isinstance(canvas, int) else canvas
    scale = rng.uniform(min_scale, max_scale) * side
    aspect = float(np.exp(rng.uniform(np.log(2 / 3), np.log(3 / 2))))
    w, h = min(scale * np.sqrt(aspect), canvas_w - 1), min(scale / np.sqrt(aspect), canvas_h - 1)
    x1, y1 = rng.uniform(0, canvas_w - w), rng.uniform(0, canvas_h - h)
    return float(x1), float(y1), float(x1 + w), float(y1 + h)


def _rng(dataset: str, split: str, index: int, seed: int, *stream: int) -> np.random.Generator:
    if dataset not in CLASSES:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(CLASSES)}")
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    return np.random.default_rng([seed, DATASET_SEEDS[dataset], SPLIT_SEEDS[split], index, *stream])


def _shape_and_fill(dataset: str, label: int, rng: np.random.Generator) -> tuple[str, str]:
    if dataset == "source":
        return SOURCE_SHAPES[label // len(FILLS)], FILLS[label % len(FILLS)]
    return TARGET_CLASSES[label], FILLS[rng.integers(len(FILLS))]


def _draw_object(rng: np.random.Generator, image: np.ndarray, shape: str, fill: str) -> np.ndarray:
    """``image`` (H, W, 3) with one ``shape`` object, its side relative to the image's short side."""
    canvas = image.shape[:2]
    mask = shape_mask(shape, random_box(rng, min(canvas), MIN_SCALE, MAX_SCALE, canvas), canvas, int(rng.integers(4)))
    return np.ascontiguousarray(np.where(mask[..., None], fill_pattern(fill, canvas, rng), image), dtype=np.uint8)


def make_sample(dataset: str, split: str, index: int, seed: int = 0, size: int = INPUT_SIZE) -> ClassificationSample:
    """One deterministic sample: a (size, size, 3) uint8 image and its class index."""
    rng = _rng(dataset, split, index, seed)
    label = index % len(CLASSES[dataset])
    shape, fill = _shape_and_fill(dataset, label, rng)
    return ClassificationSample(image=_draw_object(rng, random_background(rng, size), shape, fill), label=label)


def make_frame(dataset: str, split: str, index: int, seed: int = 0, view: str = "camera", size: int = INPUT_SIZE,
               effects: bool = False) -> ClassificationSample:
    """One deterministic camera frame, shaped by ``view`` (``camera_frames.VIEW_ASPECTS``) for a
    network of side ``size``; ``effects`` adds random camera effects (drawn after the scene)."""
    rng = _rng(dataset, split, index, seed, FRAME_STREAM, camera_frames.view_names().index(view))
    label = index % len(CLASSES[dataset])
    shape, fill = _shape_and_fill(dataset, label, rng)
    height, width = camera_frames.frame_shape(rng, view, size)
    image = _draw_object(rng, camera_frames.frame_background(rng, height, width), shape, fill)
    if effects:
        image = camera_frames.camera_effects(image, rng)
    return ClassificationSample(image=image, label=label)


def fit_to_input(frame: ClassificationSample, size: int = INPUT_SIZE) -> tuple[ClassificationSample, Letterbox]:
    """``frame`` as the network gets it (the runtime's letterbox to ``size`` square)."""
    image, box_map = camera_frames.fit_image(frame.image, size)
    return ClassificationSample(image=image, label=frame.label), box_map
