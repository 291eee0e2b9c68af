"""Counting tracked objects that cross a line segment, in each direction, per class.

Direction: walk along the line from its start to its end as the picture shows it; the side on
your LEFT is "in". A track crossing from the right-hand side to the left-hand side counts "in",
the other way "out". For a line drawn left to right (``0,0.5,1,0.5``) objects moving UP the
picture count "in"; draw it right to left to swap. This is supervision's ``LineZone`` rule, so
counts read the same as there.

What counts: the bottom centre of each box with a track id (detections without track ids, and
ids below 0, which trackers give boxes they have not confirmed, are ignored), and only while it
is level with the segment (its projection on the line falls between the ends; beyond the ends it
is observed on neither side). A crossing counts once the track has been seen on the new side for
``min_frames`` of its own consecutive updates, more than ``margin`` pixels from the line
(cvexport.counting.hysteresis): a box jittering on the line counts once at most, and never the
same direction twice without crossing back.

Why not supervision's ``LineZone``: it takes supervision's Detections (a conversion per frame),
and it forgets a track the first frame it is missing, so one hidden while it passes the line (a
pole, another object) is not counted when it reappears on the other side; it has no margin in
pixels and gives masks, not event records with the track id, class and time that a stream writes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from cvexport.counting.geometry import bottom_centres
from cvexport.counting.hysteresis import DebouncedStates, tracked
from cvexport.results import Detections, class_name

IN, OUT = "in", "out"
_LEFT, _RIGHT = 1, -1  # the side states: left of start -> end (as the picture shows it) is "in"


class LineCounter:
    """Crossings of the segment ``start_xy`` -> ``end_xy`` (pixels of the frame).

    index: the line's number in events (its place among the lines the user gave).
    min_frames: updates a track must be seen on the new side before its crossing counts.
    margin: pixels either side of the line where a box is on neither side.
    forget_after_s: seconds after which an unseen track is forgotten (it is then new if it
        comes back).
    """

    def __init__(self, start_xy, end_xy, *, index: int = 0, min_frames: int = 2, margin: float = 0.0,
                 forget_after_s: float = 3.0):
        self.start = np.asarray(start_xy, dtype=np.float64).reshape(2)
        self.end = np.asarray(end_xy, dtype=np.float64).reshape(2)
        self._direction = self.end - self.start
        self._length = float(np.hypot(*self._direction))
        if self._length == 0.0:
            raise ValueError(f"a line needs two different points, got {self.start.tolist()} twice")
        if margin < 0:
            raise ValueError(f"margin must be >= 0 pixels, got {margin}")
        self.index = index
        self.margin = float(margin)
        self._sides = DebouncedStates(min_frames=min_frames, forget_after_s=forget_after_s)
        self._counts = {IN: Counter(), OUT: Counter()}

    def sides(self, points: np.ndarray) -> np.ndarray:
        """The side of each point [N, 2]: 1 left ("in" side), -1 right, 0 on neither (within the
        margin, or beyond the segment's ends)."""
        offset = points - self.start
        # 2D cross product direction x offset: negative on the left as the picture shows it
        # (image y points down), the side supervision calls left.
        distance = (self._direction[0] * offset[:, 1] - self._direction[1] * offset[:, 0]) / self._length
        along = (offset @ self._direction) / self._length**2
        sides = np.where(distance < 0, _LEFT, _RIGHT)
        sides[(np.abs(distance) <= self.margin) | (along < 0) | (along > 1)] = 0
        return sides

    def update(self, detections: Detections, time_s: float) -> list[dict]:
        """Observe one frame's tracked detections at ``time_s`` seconds; the crossings they
        complete, as event records."""
        events = []
        rows = tracked(detections)
        sides = self.sides(bottom_centres(detections.xyxy[rows]))
        for row, side in zip(rows, sides):
            track_id = int(detections.track_ids[row])
            change = self._sides.observe(track_id, int(side) or None, time_s)
            if change is None:
                continue
            direction = IN if change[1] == _LEFT else OUT
            class_id = int(detections.class_ids[row])
            name = class_name(detections.class_names, class_id)
            self._counts[direction][name] += 1
            events.append({"event": "cross", "line": self.index, "direction": direction, "track_id": track_id,
                           "class_id": class_id, "class_name": name, "time": float(time_s)})
        self._sides.forget_unseen(time_s)
        return events

    def totals(self) -> dict[str, dict[str, int]]:
        """Crossings so far per direction and class name: {"in": {"car": 3}, "out": {...}}."""
        return {direction: dict(sorted(counts.items())) for direction, counts in self._counts.items()}

    @property
    def in_count(self) -> int:
        return sum(self._counts[IN].values())

    @property
    def out_count(self) -> int:
        return sum(self._counts[OUT].values())
