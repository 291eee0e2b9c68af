"""Synthetic video: the detection dataset's shapes moving over a photograph, with ground truth.

Tests, the stream benchmark and the loopback sender need video without a camera or the
internet. Every frame is a pure function of (width, height, seed, frame index), so a sender
restarted mid-stream and a test that re-creates a file see the same pictures.

Objects are sized against the frame's long side (22%-40% of it), which the letterbox maps onto
the network input side: that is the scale range the SSD was trained on (18%-60% of its input),
so the shapes are found at any frame shape, 16:9 or 4:3 alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASS_NAMES = ("ellipse", "rectangle", "triangle")  # the detection dataset's classes, in its order
BACKGROUND_PHOTO = "astronaut"
SIZE_RANGE = (0.2, 0.32)  # sqrt(w * h) of an object, as a fraction of the frame's long side
SPEED_RANGE = (0.004, 0.012)  # per frame, as a fraction of the long side (a shape crosses in 3-8 s at 30 fps)


@dataclass
class _Shape:
    label: int
    x: float  # top-left corner, pixels
    y: float
    w: float
    h: float
    vx: float  # pixels per frame
    vy: float
    fill: tuple[int, int, int]
    apex: float  # triangles: where the apex sits along the top edge (0..1)


class Scene:
    """Shapes bouncing inside a ``width`` x ``height`` frame over a photograph.

    ``frame(i)`` -> (uint8 RGB (height, width, 3), truth), truth being one
    ``{"box": [x1, y1, x2, y2] pixels, "class_id", "class_name"}`` per shape.
    """

    def __init__(self, width: int, height: int, seed: int = 0, objects: int = 3):
        from PIL import Image

        from cvexport.models.photos import photo

        self.width, self.height = int(width), int(height)
        rng = np.random.default_rng([seed, self.width, self.height])
        # Cover the frame with the photograph (scale to fill, centre crop): no bands of its own.
        picture = Image.fromarray(photo(BACKGROUND_PHOTO))
        scale = max(self.width / picture.width, self.height / picture.height)
        size = (max(self.width, round(picture.width * scale)), max(self.height, round(picture.height * scale)))
        picture = picture.resize(size, Image.BILINEAR)
        left, top = (size[0] - self.width) // 2, (size[1] - self.height) // 2
        self.background = np.ascontiguousarray(
            np.asarray(picture)[top : top + self.height, left : left + self.width])
        long_side = max(self.width, self.height)
        self.shapes: list[_Shape] = []
        for k in range(objects):
            side = rng.uniform(*SIZE_RANGE) * long_side
            aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
            w = min(side * np.sqrt(aspect), 0.9 * self.width)
            h = min(side / np.sqrt(aspect), 0.9 * self.height)
            angle = rng.uniform(0, 2 * np.pi)
            speed = rng.uniform(*SPEED_RANGE) * long_side
            self.shapes.append(_Shape(
                label=int(rng.integers(len(CLASS_NAMES))),
                # Each starts in its own vertical strip, so frame 0 shows every shape whole.
                x=float(np.clip(rng.uniform(k, k + 1) * self.width / objects - w / 2, 0, self.width - w)),
                y=float(rng.uniform(0, self.height - h)), w=float(w), h=float(h),
                vx=float(speed * np.cos(angle)), vy=float(speed * np.sin(angle)),
                fill=tuple(int(c) for c in rng.integers(40, 256, size=3)), apex=float(rng.uniform(0.2, 0.8)),
            ))

    def boxes(self, index: int) -> list[tuple[int, float, float, float, float]]:
        """(label, x1, y1, x2, y2) of each shape in frame ``index``: straight motion folded back at
        the frame's edges (a bounce), computed in closed form so any frame can be drawn first."""
        out = []
        for s in self.shapes:
            x = _bounce(s.x + s.vx * index, self.width - s.w)
            y = _bounce(s.y + s.vy * index, self.height - s.h)
            out.append((s.label, x, y, x + s.w, y + s.h))
        return out

    def frame(self, index: int) -> tuple[np.ndarray, list[dict]]:
        from PIL import Image, ImageDraw

        canvas = Image.fromarray(self.background)
        draw = ImageDraw.Draw(canvas)
        truth = []
        outline_width = max(2, round(max(self.width, self.height) / 320))
        for shape, (label, x1, y1, x2, y2) in zip(self.shapes, self.boxes(index)):
            outline = tuple(c // 3 for c in shape.fill)
            if label == 0:
                draw.ellipse((x1, y1, x2, y2), fill=shape.fill, outline=outline, width=outline_width)
            elif label == 1:
                draw.rectangle((x1, y1, x2, y2), fill=shape.fill, outline=outline, width=outline_width)
            else:
                apex_x = x1 + (x2 - x1) * shape.apex
                draw.polygon([(apex_x, y1), (x2, y2), (x1, y2)], fill=shape.fill, outline=outline, width=outline_width)
            truth.append({"box": [round(v, 2) for v in (x1, y1, x2, y2)], "class_id": label,
                          "class_name": CLASS_NAMES[label]})
        return np.asarray(canvas), truth

    def frames(self, count: int | None = None, start: int = 0) -> Iterator[tuple[np.ndarray, list[dict]]]:
        """Frames ``start``, ``start + 1``, ...: ``count`` of them, or without end for None."""
        index = start
        while count is None or index < start + count:
            yield self.frame(index)
            index += 1


def _bounce(position: float, limit: float) -> float:
    """``position`` folded into [0, limit] as a ball bouncing between two walls."""
    if limit <= 0:
        return 0.0
    period = 2 * limit
    p = position % period
    return float(p if p <= limit else period - p)


def new_encoder_stream(container, width: int, height: int, fps: int, gop: int | None = None, realtime: bool = True):
    """An H.264 (libx264) yuv420p video stream on PyAV ``container``: ultrafast preset, and with
    ``realtime`` the zerolatency tune (no B-frames, no look-ahead: each frame leaves the encoder
    as soon as it is given). ``gop``: frames between keyframes (default one second)."""
    from fractions import Fraction

    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = int(width), int(height)
    stream.pix_fmt = "yuv420p"
    options = {"preset": "ultrafast", "g": str(gop or max(1, round(fps)))}
    if realtime:
        options["tune"] = "zerolatency"
    stream.options = options
    return stream


def write_video(path: str | Path, width: int, height: int, frames: int, fps: int = 30, seed: int = 0,
                objects: int = 3) -> list[list[dict]]:
    """Write ``frames`` frames of a :class:`Scene` to ``path`` (H.264 in the container its suffix
    names: .mp4, .mkv, .ts, ...). Returns the truth per frame."""
    import av

    scene = Scene(width, height, seed=seed, objects=objects)
    truths = []
    with av.open(str(path), "w") as container:
        stream = new_encoder_stream(container, width, height, fps, realtime=False)
        for index, (image, truth) in enumerate(scene.frames(frames)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
            truths.append(truth)
        container.mux(stream.encode(None))
    return truths
