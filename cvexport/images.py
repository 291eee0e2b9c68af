"""Reading user images and fitting them to a network input (letterbox), and undoing it.

Every failure a user can cause becomes a one-line :class:`CvexportError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvexport.errors import CvexportError

LETTERBOX_FILL = 114  # neutral grey, as most detector pipelines pad


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3); grey, palette and RGBA images are converted."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise CvexportError(f"image not found: {path}")
    if path.is_dir():
        raise CvexportError(f"{path} is a directory; pass image files")
    try:
        with Image.open(path) as image:
            image.load()  # decodes fully, so truncated files fail here and not later
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                # Composite on white: dropping alpha would expose arbitrary colours under transparent pixels.
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            rgb = image.convert("RGB")
    except Image.DecompressionBombError:
        raise CvexportError(f"{path} has too many pixels to decode safely; downscale it first") from None
    except UnidentifiedImageError:
        raise CvexportError(f"{path} is not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CvexportError(f"{path} is corrupt or truncated ({exc}); re-export or re-copy the file") from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise CvexportError(f"{path} is only {array.shape[1]}x{array.shape[0]} pixels; pass a real image")
    return array


def as_rgb_array(image) -> np.ndarray:
    """Accept a path, a PIL image or an array ((H, W), (H, W, 1|3|4), uint8 or float in 0..1) -> uint8 RGB."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise CvexportError(f"image array has shape {array.shape}; expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


@dataclass(frozen=True)
class Letterbox:
    """How an original image was placed into the network input: scaled by (``scale_x``,
    ``scale_y``) then offset by (``pad_x``, ``pad_y``) pixels."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    original_width: int
    original_height: int

    def boxes_to_original(self, boxes: np.ndarray, input_width: int, input_height: int) -> np.ndarray:
        """boxes (ndarray[D, 4]) in (x1, y1, x2, y2) normalized to the network input ->
        pixels of the original image, clipped to it."""
        out = np.asarray(boxes, dtype=np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] * input_width - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] * input_height - self.pad_y) / self.scale_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.original_width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.original_height)
        return out

    def map_to_original(self, array: np.ndarray, labels: bool = False) -> np.ndarray:
        """A dense network output (ndarray[H_in, W_in] or [H_in, W_in, C], uint8) -> the same over
        the original image: the padding is cut away, the rest resized to the original size
        (nearest for ``labels``, so class ids never blend; bilinear for pictures)."""
        from PIL import Image

        new_w = round(self.scale_x * self.original_width)
        new_h = round(self.scale_y * self.original_height)
        top, left = int(self.pad_y), int(self.pad_x)
        content = np.ascontiguousarray(array[top : top + new_h, left : left + new_w])
        resample = Image.NEAREST if labels else Image.BILINEAR
        return np.asarray(Image.fromarray(content).resize((self.original_width, self.original_height), resample))


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Letterbox]:
    """Resize uint8 RGB ``image`` to fit (height, width) keeping its aspect ratio, pad the rest.

    Returns (uint8 (height, width, 3) canvas, the :class:`Letterbox` that undoes it).
    """
    from PIL import Image

    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    pad_x, pad_y = (width - new_w) // 2, (height - new_h) // 2
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    canvas = np.full((height, width, 3), LETTERBOX_FILL, dtype=np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    # Rounding makes the two axes' effective scales differ slightly; keep both.
    return canvas, Letterbox(new_w / w, new_h / h, float(pad_x), float(pad_y), w, h)
