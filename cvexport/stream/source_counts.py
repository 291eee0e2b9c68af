"""One stream source's ``--line`` and ``--zone`` counters: resolved against the source's frame
size on its first frame, fed its tracked detections by its sink thread, drawn on its video, and
summed up in summary.json. The counting itself (sides, hysteresis, events) is
:mod:`cvexport.counting`; this module only ties it to a source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cvexport.counting import LineCounter, ZoneCounter
from cvexport.counting.geometry import FrameShape

LINE_COLOR = (255, 215, 0)  # lines and zones in one colour no class takes (the box palette has no yellow)
TEXT_COLOR = (0, 0, 0)


@dataclass(frozen=True)
class CountingOptions:
    """What the command line asked for: the shapes as given, and the hysteresis of every counter."""

    lines: tuple[FrameShape, ...] = ()
    zones: tuple[FrameShape, ...] = ()
    # The defaults: the SSD's tracked boxes on five rendered 640x480 videos, 300 frames each
    # (benchmarks/tracking_benchmark.py), counted 2 frames / 2 px: two of them an in/out pair too
    # many from boxes jittering about the line; 3 frames / 4 px: those two exact, the rest unchanged
    # (their errors are the detector's misses and id switches, not jitter).
    min_frames: int = 3  # a track is seen this many updates on the new side before it counts
    margin: float = 4.0  # pixels either side of a line or edge where a box is on neither side

    def __bool__(self) -> bool:
        return bool(self.lines or self.zones)


class SourceCounts:
    """The counters of one source. Used by that source's sink thread only."""

    def __init__(self, options: CountingOptions):
        self.options = options
        self.lines: list[LineCounter] = []
        self.zones: list[ZoneCounter] = []
        self.size: tuple[int, int] | None = None

    def _resolve(self, width: int, height: int) -> None:
        hysteresis = {"min_frames": self.options.min_frames, "margin": self.options.margin}
        for index, shape in enumerate(self.options.lines):
            start, end = shape.resolve(width, height)
            self.lines.append(LineCounter(start, end, index=index, **hysteresis))
        for index, shape in enumerate(self.options.zones):
            self.zones.append(ZoneCounter(shape.resolve(width, height), index=index, **hysteresis))
        self.size = (width, height)

    def update(self, detections, width: int, height: int, time_s: float) -> list[dict]:
        """The frame's tracked detections (``width`` x ``height`` pixels) at ``time_s``: the
        crossing, entry and exit events they complete, lines first."""
        if self.size is None:  # fractions of the frame are pixels once its size is known
            self._resolve(width, height)
        events = []
        for counter in (*self.lines, *self.zones):
            events.extend(counter.update(detections, time_s))
        return events

    def summary(self) -> dict[str, Any]:
        """Totals so far: per line in / out per class, per zone occupancy now and entries."""
        return {
            "lines": [{"line": c.index, "points": c.start.tolist() + c.end.tolist(), **c.totals()}
                      for c in self.lines],
            "zones": [{"zone": c.index, "points": c.polygon.reshape(-1).tolist(), **c.totals()} for c in self.zones],
        }

    def status(self) -> dict[str, dict[str, dict[str, int]]]:
        """The running totals as the live view shows them (and /metrics flattens them):
        {"line 0": {"in": {class: n}, "out": {...}}, "zone 0": {"inside": {...}, "entered": {...}}}."""
        return {**{f"line {c.index}": c.totals() for c in self.lines},
                **{f"zone {c.index}": {"inside": c.occupancy(), "entered": c.entries()} for c in self.zones}}

    def draw(self, picture) -> None:
        """Each line and zone, with its running counts, onto PIL image ``picture`` (in place)."""
        from PIL import ImageDraw

        if self.size is None:
            return
        draw = ImageDraw.Draw(picture)
        width = max(2, round(min(picture.size) / 240))
        for counter in self.lines:
            (x1, y1), (x2, y2) = counter.start, counter.end
            draw.line((x1, y1, x2, y2), fill=LINE_COLOR, width=width)
            _label(draw, (x1, y1), f"line {counter.index}: in {counter.in_count} / out {counter.out_count}")
        for counter in self.zones:
            points = [tuple(p) for p in counter.polygon.tolist()]
            draw.line(points + [points[0]], fill=LINE_COLOR, width=width)
            inside = sum(counter.occupancy().values())
            entered = sum(counter.entries().values())
            _label(draw, points[0], f"zone {counter.index}: {inside} inside / {entered} entered")


def _label(draw, at: tuple[float, float], text: str) -> None:
    """``text`` black on the shapes' colour, its top-left corner at ``at`` (kept inside the picture)."""
    left, top, right, bottom = draw.textbbox((0, 0), text)
    width, height = draw.im.size
    x = min(max(0.0, at[0]), max(0.0, width - (right - left) - 4))
    y = min(max(0.0, at[1]), max(0.0, height - (bottom - top) - 4))
    draw.rectangle((x, y, x + right - left + 4, y + bottom - top + 4), fill=LINE_COLOR)
    draw.text((x + 2, y + 1), text, fill=TEXT_COLOR)
