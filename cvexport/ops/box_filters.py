"""Box filters on results: numpy, boxes in pixels of the original picture (after the letterbox is
undone), so the runtime needs no torch. The torch box ops of the exported graph are in
:mod:`cvexport.ops.boxes`."""

from __future__ import annotations

import numpy as np


def remove_small_boxes(boxes: np.ndarray, min_size: float = 1.0) -> np.ndarray:
    """Indices of the boxes whose width and height are both at least ``min_size``.

    A detection mapped back to the original picture (letterbox undone, clipped to the picture)
    can collapse to nothing: a box lying on the letterbox padding comes back zero pixels high.
    Such a box shows no object, so post-processing drops it, as torchvision's detectors do with
    ``torchvision.ops.remove_small_boxes``. Numpy, so the runtime needs no torch.

    Args:
        boxes (ndarray[N, 4]) in (x1, y1, x2, y2) pixels of the original picture
        min_size (float): smallest width and height kept, in pixels
    Returns:
        ndarray[K] int64: indices of the boxes kept, in increasing order. Inverted boxes
        (x2 < x1 or y2 < y1) and boxes with NaN coordinates are not kept.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4), got shape {boxes.shape}")
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    # Written so NaN compares false and is dropped.
    return np.flatnonzero((widths >= min_size) & (heights >= min_size)).astype(np.int64)
