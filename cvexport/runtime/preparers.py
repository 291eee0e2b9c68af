"""Preparers: how one image is fitted into the frame a network takes, as strategies a
:class:`cvexport.runtime.predictor.Predictor` is handed per image.

Every preparer places the picture by the bundle's fit (:class:`cvexport.images.InputFit`: its
``place`` geometry and padding colour, through ``apply_by``), so the fit that maps results back
is the same whichever prepared the image; they differ only in the kind of image they take and in
the resampler.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from cvexport.images import LETTERBOX, InputFit, Letterbox


class Preparer(Protocol):
    """Fits one image of the kind it takes into a (height, width) network input by ``how``."""

    name: str  # as --preprocess names it

    def fit(self, image: Any, width: int, height: int, how: InputFit = LETTERBOX) -> tuple[np.ndarray, Letterbox]:
        """(uint8 (height, width, 3) frame, the :class:`Letterbox` that undoes it)."""
        ...


class ExactPreparer:
    """uint8 RGB (H, W, 3) arrays, resized by Pillow's bilinear filter: what ``Predictor.predict``
    does to every image, and the reference the other preparers are compared with."""

    name = "exact"

    def fit(self, image: np.ndarray, width: int, height: int, how: InputFit = LETTERBOX) -> tuple[np.ndarray, Letterbox]:
        """(uint8 (height, width, 3) frame, the :class:`Letterbox` that undoes it)."""
        if how.is_identity(image.shape[1], image.shape[0], width, height):
            # Already what the fit makes of it (Pillow's resize to the same size is a copy, the
            # fit the identity), without the copy: camera frames of a --frame-size bundle.
            return image, how.map(width, height, width, height)
        return how.apply(image, width, height)


class FfmpegPreparer:
    """Decoded video frames (PyAV ``VideoFrame``s, usually YUV 4:2:0), scaled by FFmpeg's bilinear
    scaler straight to the size the fit resizes to: no full-size RGB frame is made, which saves
    most of the preprocessing of big frames. Pixels differ from :class:`ExactPreparer`'s by about
    one level (FFmpeg scales the chroma planes before converting to RGB), the geometry not at all."""

    name = "ffmpeg"

    def fit(self, frame, width: int, height: int, how: InputFit = LETTERBOX) -> tuple[np.ndarray, Letterbox]:
        """(uint8 (height, width, 3) frame, the :class:`Letterbox` that undoes it)."""
        def scale(new_w: int, new_h: int) -> np.ndarray:
            return frame.reformat(new_w, new_h, format="rgb24", interpolation="BILINEAR").to_ndarray()

        return how.apply_by(scale, frame.width, frame.height, width, height)


EXACT = ExactPreparer()
FFMPEG = FfmpegPreparer()
PREPARERS: dict[str, Preparer] = {preparer.name: preparer for preparer in (EXACT, FFMPEG)}
