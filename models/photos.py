"""Real photographs shipped inside scikit-image, used as backgrounds for synthetic data.

Nothing is downloaded: these images are part of the scikit-image wheel.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# Colour and grey photographs that scikit-image ships (no network fetch).
PHOTO_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "camera",
    "brick",
    "grass",
    "gravel",
    "moon",
    "coins",
    "clock",
    "cell",
)


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """One photograph as uint8 RGB (H, W, 3); grey ones are replicated to three channels."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop of a random photograph, resized to (size, size, 3) uint8, maybe flipped."""
    from PIL import Image

    image = photo(PHOTO_NAMES[rng.integers(len(PHOTO_NAMES))])
    height, width = image.shape[:2]
    side = int(rng.integers(min(height, width) // 3, min(height, width) + 1))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(image[top : top + side, left : left + side]).resize(
        (size, size), Image.BILINEAR
    )
    out = np.asarray(crop)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


SPLIT_SEEDS = {"train": 0, "val": 1}


def photo_samples(split: str, indices, size: int, seed: int = 0) -> list[np.ndarray]:
    """Real-photograph pictures (random crops, ``size`` x ``size``) for a model that has no data
    of its own here (a torchvision builder with the user's weights): image ``i`` of ``split`` is
    the same crop on every call, and the splits draw different crops."""
    return [random_background(np.random.default_rng((seed, SPLIT_SEEDS.get(split, 2), int(i))), size)
            for i in indices]
