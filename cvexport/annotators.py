"""Pictures of results: small annotator objects, each with one ``annotate(scene, result)``.

As supervision's annotators: an annotator draws one kind of result (:mod:`cvexport.results`)
one way, and the caller composes them. A task names its pictures as a mapping of file suffix
to annotator (``Task.pictures``); ``Task.render`` draws them all (``run``), and
``Task.video_picture`` the one a stream's video shows.

``scene`` is the original image (uint8 RGB ndarray[H, W, 3], or a PIL image); every annotator
returns a new PIL image and leaves the scene as it was. Pillow is imported where drawing
happens, so importing this module costs nothing.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cvexport.palette import BOX_PALETTE, MASK_PALETTE
from cvexport.results import NO_TRACK

if TYPE_CHECKING:
    from PIL.Image import Image

    from cvexport.results import Classification, Detections, LabelMap, StylizedImage

OVERLAY_ALPHA = 0.5  # share of the mask colour where it is blended over an object


class Annotator(Protocol):
    def annotate(self, scene: Any, result: Any) -> Image: ...


def _scene_array(scene: Any) -> np.ndarray:
    """The scene as a uint8 RGB array (a PIL image or an array)."""
    return np.asarray(scene)


def colorize(labels: Any) -> np.ndarray:
    """labels (ndarray[H, W] class ids, or a LabelMap) -> uint8 RGB ndarray[H, W, 3] in MASK_PALETTE colours."""
    return MASK_PALETTE[np.asarray(labels) % len(MASK_PALETTE)]


class BoxAnnotator:
    """Each detection's box in its class colour, and above it a label of its class name and score."""

    def __init__(self, palette: tuple[tuple[int, int, int], ...] = BOX_PALETTE):
        self.palette = palette

    def annotate(self, scene: Any, detections: Detections) -> Image:
        from PIL import Image, ImageDraw

        canvas = Image.fromarray(_scene_array(scene))
        draw = ImageDraw.Draw(canvas)
        width = _line_width(*canvas.size)
        for (x1, y1, x2, y2), color, label in self._boxes(detections):
            draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
            (lx1, ly1, lx2, ly2), text_at = _label_place(draw, x1, y1, label)
            draw.rectangle((lx1, ly1, lx2, ly2), fill=color)
            draw.text(text_at, label, fill=(255, 255, 255))
        return canvas

    def annotate_yuv420(self, planes: np.ndarray, detections: Detections) -> None:
        """The same picture drawn in place on a decoded ``yuv420p`` frame (planes as
        :mod:`cvexport.yuv420` describes), for a stream's video: no RGB frame is made."""
        from PIL import Image, ImageDraw

        from cvexport.yuv420 import fill_rect, paste_rgb, split_planes

        height, width = split_planes(planes)[0].shape
        line = _line_width(width, height)
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
        measure.font = font = _default_font()  # what a new Draw would load again for each label
        for box, color, label in self._boxes(detections):
            # Pillow's outline of width w: the w pixels inside the box's edges, x2 and y2 included,
            # its coordinates rounded down.
            x1, y1, x2, y2 = (math.floor(v) for v in box)
            for rect in ((x1, y1, x2, y1 + line - 1), (x1, y2 - line + 1, x2, y2),
                         (x1, y1, x1 + line - 1, y2), (x2 - line + 1, y1, x2, y2)):
                fill_rect(planes, *rect, color)
            (lx1, ly1, lx2, ly2), (tx, ty) = _label_place(measure, box[0], box[1], label)
            lx1, ly1, lx2, ly2 = (math.floor(v) for v in (lx1, ly1, lx2, ly2))
            patch = Image.new("RGB", (lx2 - lx1 + 1, ly2 - ly1 + 1), color)
            ImageDraw.Draw(patch).text((tx - lx1, ty - ly1), label, fill=(255, 255, 255), font=font)
            paste_rgb(planes, lx1, ly1, np.asarray(patch))

    def _boxes(self, detections: Detections):
        """(box, colour, label) of each detection; the label starts with its track id ("#7 ")
        where a tracker gave one. Both drawing paths take their labels from here."""
        track_ids = [NO_TRACK] * len(detections) if detections.track_ids is None else detections.track_ids.tolist()
        for box, score, class_id, track_id in zip(detections.xyxy, detections.scores, detections.class_ids, track_ids):
            prefix = "" if track_id == NO_TRACK else f"#{track_id} "
            yield (tuple(float(v) for v in box), self.palette[int(class_id) % len(self.palette)],
                   f"{prefix}{detections.class_names[int(class_id)]} {float(score):.2f}")


@functools.cache
def _default_font():
    """Pillow's default font, the one ImageDraw draws labels with, loaded once."""
    from PIL import ImageFont

    return ImageFont.load_default()


def _line_width(width: int, height: int) -> int:
    return max(2, round(min(width, height) / 200))  # lines stay visible on large pictures


def _label_place(draw, x1: float, y1: float, label: str) -> tuple[tuple[float, float, float, float], tuple[float, float]]:
    """Where a box's label goes: (its background rectangle, where its text starts). Above the
    box's top-left corner, inside the picture."""
    text_box = draw.textbbox((x1, y1), label)
    text_w, text_h = text_box[2] - text_box[0], text_box[3] - text_box[1]
    top = max(0, y1 - text_h - 4)
    return (x1, top, x1 + text_w + 4, top + text_h + 4), (x1 + 2, top + 1)


class ClassBarAnnotator:
    """The top class and its score, white on a black bar in the top left corner."""

    def annotate(self, scene: Any, classification: Classification) -> Image:
        from PIL import Image, ImageDraw

        canvas = Image.fromarray(_scene_array(scene))
        draw = ImageDraw.Draw(canvas)
        _, name, score = classification.top()[0]
        label = f"{name} {score:.2f}"
        box = draw.textbbox((0, 0), label)
        draw.rectangle((0, 0, box[2] + 6, box[3] + 6), fill=(0, 0, 0))
        draw.text((3, 2), label, fill=(255, 255, 255))
        return canvas


class ColorMaskAnnotator:
    """The label map alone in palette colours (the scene only sets nothing: the map has its size)."""

    def annotate(self, scene: Any, label_map: LabelMap) -> Image:
        from PIL import Image

        return Image.fromarray(colorize(label_map))


class MaskOverlayAnnotator:
    """The scene with the palette colour of each object pixel blended over it (``alpha`` of the
    colour); background pixels (class 0) stay as they are."""

    def __init__(self, alpha: float = OVERLAY_ALPHA):
        self.alpha = alpha

    def annotate(self, scene: Any, label_map: LabelMap) -> Image:
        from PIL import Image

        image, labels = _scene_array(scene), np.asarray(label_map)
        objects = (labels > 0)[..., None]
        blended = np.where(objects, (1 - self.alpha) * image + self.alpha * colorize(labels), image)
        return Image.fromarray(blended.round().astype(np.uint8))


class StylizedAnnotator:
    """The stylized picture itself: it replaces the scene."""

    def annotate(self, scene: Any, stylized: StylizedImage) -> Image:
        from PIL import Image

        return Image.fromarray(np.asarray(stylized))
