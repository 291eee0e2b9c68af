"""Contact sheets: a grid of training samples exactly as the network gets them, with what it is
taught drawn on them (boxes, masks or class names).

``cvexport train`` writes one next to the run's checkpoints, so anyone can audit the data a
model learns from: the letterbox padding, the camera effects, wrong or missing labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cvexport.models.dataset_reading import VOID
from cvexport.palette import BOX_PALETTE, MASK_PALETTE

FILE_NAME = "contact_sheet.png"
MIN_CELL = 160  # small inputs (the 64-px classifier) are enlarged so labels stay readable
GAP = 4


def _enlarged(image: np.ndarray):
    """The image as a PIL image at least MIN_CELL pixels a side (nearest: pixels stay visible)."""
    from PIL import Image

    picture = Image.fromarray(image)
    factor = max(1, -(-MIN_CELL // max(image.shape[:2])))
    return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)


def _label(draw, xy: tuple[float, float], text: str, color) -> None:
    """``text`` on a filled tag whose bottom-left corner is at ``xy`` (kept inside the picture)."""
    x, y = xy
    left, top, right, bottom = draw.textbbox((0, 0), text)
    y = max(0.0, y - (bottom - top) - 4)
    draw.rectangle((x, y, x + right - left + 4, y + bottom - top + 4), fill=tuple(int(c) for c in color))
    draw.text((x + 2, y + 1), text, fill=(255, 255, 255))


def detection_cell(image: np.ndarray, boxes: np.ndarray, labels: Sequence[int], class_names: Sequence[str]):
    """``image`` (uint8 RGB) with boxes (ndarray[G, 4]) in (x1, y1, x2, y2) normalized to it and
    their class names."""
    from PIL import ImageDraw

    picture = _enlarged(image)
    draw = ImageDraw.Draw(picture)
    scale = np.array([picture.width, picture.height, picture.width, picture.height])
    for box, label in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale, labels):
        color = BOX_PALETTE[int(label) % len(BOX_PALETTE)]
        draw.rectangle(tuple(float(v) for v in box), outline=color, width=2)
        _label(draw, (float(box[0]), float(box[1])), class_names[int(label)], color)
    return picture


def segmentation_cell(image: np.ndarray, mask: np.ndarray):
    """``image`` and its class-id mask (ndarray[H, W]) in the segmentation palette side by side
    (background black, VOC's void pixels white): on textured objects a blended overlay would hide the mask."""
    mask = np.asarray(mask)
    colors = MASK_PALETTE[mask % len(MASK_PALETTE)]
    colors[mask == VOID] = 255  # unlabelled, not a class: the palette would give it a class's colour
    return _enlarged(np.concatenate([image, np.full((image.shape[0], 2, 3), 255, np.uint8), colors], axis=1))


def classification_cell(image: np.ndarray, class_name: str):
    """``image`` with its class name written on it."""
    from PIL import ImageDraw

    picture = _enlarged(image)
    _label(ImageDraw.Draw(picture), (0, picture.height), class_name, (40, 40, 40))
    return picture


def save_contact_sheet(path: str | Path, cells: Sequence, columns: int = 4) -> Path:
    """Write the PIL images ``cells`` as a grid (row-major, ``columns`` wide) to the PNG ``path``."""
    from PIL import Image

    if not cells:
        raise ValueError("a contact sheet needs at least one cell")
    width = max(c.width for c in cells) + GAP
    height = max(c.height for c in cells) + GAP
    rows = -(-len(cells) // columns)
    sheet = Image.new("RGB", (columns * width + GAP, rows * height + GAP), (255, 255, 255))
    for index, cell in enumerate(cells):
        row, column = divmod(index, columns)
        sheet.paste(cell, (GAP + column * width, GAP + row * height))
    import io

    from cvexport.atomic import write_bytes_atomic

    path = Path(path)
    encoded = io.BytesIO()
    sheet.save(encoded, format="PNG")
    write_bytes_atomic(path, encoded.getvalue())  # never a half-written PNG beside the checkpoints
    return path
