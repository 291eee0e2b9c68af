"""Camera frames as the runtime sees them: any aspect ratio, fitted to the square network input
by the runtime's own letterbox (``cvexport.images.letterbox``, grey padding), with the
corruptions real cameras add.

Why: every picture a user passes is letterboxed to the network input, so a 16:9 frame arrives
with grey bands above and below it. A model trained on square crops alone has never seen such
bands: the SSD took the edge of a band for a rectangle and reported zero-height boxes on it
(issue #13). The data modules draw their scenes on frames shaped here, then train and evaluate
on what the letterbox makes of them. Helpers only: every function is a pure function of its
arguments (randomness comes from the caller's generator).
"""

from __future__ import annotations

import io
from typing import Any, Callable, Sequence

import numpy as np

from cvexport.images import Letterbox, letterbox
from cvexport.models.photos import random_background

# Frame shapes a val split is drawn at, as width / height; "camera" draws a random one (training).
# 16:9 and 4:3 are the common camera frames; 9:16 is a phone held upright.
VIEW_ASPECTS = {"camera": None, "16:9": 16 / 9, "4:3": 4 / 3, "9:16": 9 / 16}
# Random frames: a quarter square (no padding, as the square samples), the rest from a 1:2
# portrait to 2.4:1 (wider than 16:9), log-uniform so portrait and landscape weigh alike.
SQUARE_SHARE = 0.25
ASPECT_RANGE = (0.5, 2.4)
# Frame long side as a multiple of the network input side: small frames are enlarged by the
# letterbox, large ones shrunk (thin outlines thin further, as on real photographs).
LONG_SIDE_RANGE = (0.875, 3.125)
VAL_LONG_SIDE = 2.5  # val frames: 640 x 360 for the 256-px SSD, as the photographs

# Camera effects: each drawn independently; a share of frames stays clean as most inputs are.
CLEAN_SHARE = 0.3
BLUR_CHANCE, BLUR_RADIUS = 0.3, (0.4, 1.6)  # Gaussian radius in frame pixels (focus, motion)
NOISE_CHANCE, NOISE_SIGMA = 0.4, (2.0, 10.0)  # sensor noise, grey levels
EXPOSURE_CHANCE = 0.5
GAMMA_RANGE, CONTRAST_RANGE, BRIGHTNESS_RANGE = (0.6, 1.6), (0.6, 1.3), (-40.0, 40.0)
JPEG_CHANCE, JPEG_QUALITY = 0.5, (20, 90)


def view_names() -> tuple[str, ...]:
    return tuple(VIEW_ASPECTS)


def metric_suffix(view: str) -> str:
    """Suffix of a val view's metric names: "" for "square" (the original square val split, whose
    names stay ``val_map50``, ``val_miou``, ...), else e.g. "_16x9"."""
    return "" if view == "square" else "_" + view.replace(":", "x")


def frame_shape(rng: np.random.Generator, view: str, input_size: int) -> tuple[int, int]:
    """(height, width) of a frame of ``view`` for a network of side ``input_size``: fixed
    (VAL_LONG_SIDE x input) for named aspect ratios, random aspect and size for "camera"."""
    if view not in VIEW_ASPECTS:
        raise ValueError(f"unknown view {view!r}; expected one of {view_names()}")
    aspect = VIEW_ASPECTS[view]
    if aspect is None:
        if rng.random() < SQUARE_SHARE:
            aspect = 1.0
        else:
            aspect = float(np.exp(rng.uniform(np.log(ASPECT_RANGE[0]), np.log(ASPECT_RANGE[1]))))
        low, high = (round(bound * input_size) for bound in LONG_SIDE_RANGE)
        long_side = int(rng.integers(low, high + 1))
    else:
        long_side = round(VAL_LONG_SIDE * input_size)
    if aspect >= 1.0:
        return max(2, round(long_side / aspect)), long_side
    return long_side, max(2, round(long_side * aspect))


def frame_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photograph background of (height, width, 3) uint8: a random square background of the
    long side (``models.photos``), cropped at random to the frame."""
    side = max(height, width)
    square = random_background(rng, side)
    top = int(rng.integers(0, side - height + 1))
    left = int(rng.integers(0, side - width + 1))
    return np.ascontiguousarray(square[top : top + height, left : left + width])


def camera_effects(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a camera may do to a uint8 RGB frame, in its pipeline's order: optical blur, sensor
    noise, exposure (gamma, contrast, brightness), JPEG compression; each drawn at random."""
    from PIL import Image, ImageFilter

    if rng.random() < CLEAN_SHARE:
        return image
    out = image
    if rng.random() < BLUR_CHANCE:
        radius = float(rng.uniform(*BLUR_RADIUS))
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(radius)))
    if rng.random() < NOISE_CHANCE:
        sigma = float(rng.uniform(*NOISE_SIGMA))
        noise = rng.standard_normal(out.shape, dtype=np.float32) * sigma
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < EXPOSURE_CHANCE:
        gamma = float(np.exp(rng.uniform(np.log(GAMMA_RANGE[0]), np.log(GAMMA_RANGE[1]))))
        contrast = float(rng.uniform(*CONTRAST_RANGE))
        brightness = float(rng.uniform(*BRIGHTNESS_RANGE))
        # One lookup table for the three point operations (contrast about mid-grey).
        levels = (np.arange(256) / 255.0) ** gamma * 255.0
        table = np.clip((levels - 128.0) * contrast + 128.0 + brightness, 0, 255).round().astype(np.uint8)
        out = table[out]
    if rng.random() < JPEG_CHANCE:
        buffer = io.BytesIO()
        quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
        Image.fromarray(out).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out = np.asarray(decoded.convert("RGB"))
    return np.ascontiguousarray(out)


def fit_image(image: np.ndarray, input_size: int) -> tuple[np.ndarray, Letterbox]:
    """The frame as the network gets it: the runtime's letterbox to (input_size, input_size)."""
    return letterbox(image, input_size, input_size)


def fit_labels(labels: np.ndarray, box_map: Letterbox, input_size: int) -> np.ndarray:
    """A class-id map (ndarray[H, W] uint8) of the frame placed where :func:`fit_image` put the
    picture: nearest resize (ids never blend), padding = 0 (background)."""
    from PIL import Image

    left, top, new_w, new_h = box_map.content()
    resized = np.asarray(Image.fromarray(labels).resize((new_w, new_h), Image.NEAREST))
    out = np.zeros((input_size, input_size), dtype=labels.dtype)
    out[top : top + new_h, left : left + new_w] = resized
    return out


def fit_boxes(boxes: np.ndarray, box_map: Letterbox, input_size: int) -> np.ndarray:
    """boxes (ndarray[G, 4]) in (x1, y1, x2, y2) normalized to the frame -> the same boxes
    normalized to the network input after :func:`fit_image`."""
    out = np.asarray(boxes, dtype=np.float64).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] * box_map.original_width * box_map.scale_x + box_map.pad_x) / input_size
    out[:, [1, 3]] = (out[:, [1, 3]] * box_map.original_height * box_map.scale_y + box_map.pad_y) / input_size
    return out.astype(np.float32)


def content_box(box_map: Letterbox, input_size: int) -> np.ndarray:
    """(x1, y1, x2, y2) normalized to the network input: where the picture lies; the rest is padding."""
    width = box_map.scale_x * box_map.original_width
    height = box_map.scale_y * box_map.original_height
    return np.array([box_map.pad_x, box_map.pad_y, box_map.pad_x + width, box_map.pad_y + height]) / input_size


# Training data of a phase (TrainConfig.extra["data"]): square samples; camera frames of random
# shape with camera effects, letterboxed as the runtime does; or "mixed", half of each (even
# indices square, odd ones camera frames), so fine-tuning on frames keeps square: fine-tuning
# the square-only SSD on frames alone cost 2 points on square val. Once the model knows both,
# a last phase on frames alone at a low rate keeps square (the SSD recipe's phase 8).
DATA_KINDS = ("square", "camera", "mixed")


def phase_data(config: Any) -> str:
    """Which DATA_KINDS a phase trains on (square samples unless its config says otherwise)."""
    return config.extra.get("data", "square")


def samples_of_kind(indices: Sequence[int], data: str, square: Callable[[list[int]], list],
                    camera: Callable[[list[int]], list]) -> list:
    """The samples of ``indices`` for data kind ``data`` (one of DATA_KINDS), from a trainer's
    ``square`` and ``camera`` sample makers; "mixed" gives the even indices' square samples,
    then the odd indices' camera frames."""
    indices = [int(i) for i in indices]
    if data == "square":
        return square(indices)
    if data == "camera":
        return camera(indices)
    if data == "mixed":
        return square([i for i in indices if i % 2 == 0]) + camera([i for i in indices if i % 2 == 1])
    raise ValueError(f"unknown training data {data!r}; expected one of {DATA_KINDS}")
