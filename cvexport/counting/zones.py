"""Counting tracked objects in a polygon zone: who enters, who leaves, how many are inside now.

What counts is the bottom centre of each box with a confirmed track id (>= 0), as for lines. A
track starts outside; it enters once its anchor has been inside for ``min_frames`` of its own
consecutive updates, and leaves once it has been outside as long (cvexport.counting.hysteresis).
Within ``margin`` pixels of the polygon's edge it is observed neither inside nor outside. A track
inside that is not seen for ``forget_after_s`` seconds leaves, with ``"lost": true`` in the
event: the tracker lost it, and the zone's occupancy should not keep it forever.

A track keeps the class it entered with until it leaves, so the occupancy of each class goes back
to zero however the detector's class flickers in between.

Inside is the even-odd rule (a point crossing the polygon's edges an odd number of times on its
way out is inside), vectorized in numpy over points x edges.

Why not supervision's ``PolygonZone``: it only says which boxes are inside in this frame: no track
state, no enter/leave events, no hysteresis; and it tests points against a mask of the frame,
which needs the frame's size before the first frame.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from cvexport.counting.geometry import bottom_centres, polygon_area
from cvexport.counting.hysteresis import DebouncedStates, tracked
from cvexport.results import Detections, class_name


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Whether each point [N, 2] is inside the closed polygon [K, 2] (even-odd rule): bool [N]."""
    x, y = points[:, 0:1], points[:, 1:2]  # [N, 1] against the edges' [K]
    x1, y1 = polygon[:, 0], polygon[:, 1]
    x2, y2 = np.roll(polygon[:, 0], -1), np.roll(polygon[:, 1], -1)
    straddles = (y1 > y) != (y2 > y)  # the edge spans the point's height (never a flat edge)
    with np.errstate(divide="ignore", invalid="ignore"):  # flat edges divide by 0; not straddling
        x_at_y = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    return (np.count_nonzero(straddles & (x < x_at_y), axis=1) % 2) == 1


def distances_to_edges(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """The distance of each point [N, 2] to the nearest edge of the closed polygon [K, 2]: [N]."""
    a = polygon[None, :, :]
    edge = np.roll(polygon, -1, axis=0)[None, :, :] - a
    offset = points[:, None, :] - a
    along = np.clip((offset * edge).sum(-1) / np.maximum((edge * edge).sum(-1), 1e-12), 0.0, 1.0)
    nearest = a + along[..., None] * edge
    return np.sqrt(((points[:, None, :] - nearest) ** 2).sum(-1)).min(axis=1)


class ZoneCounter:
    """Entries, exits and occupancy of the polygon ``polygon_xy`` [K, 2] (pixels of the frame).

    index: the zone's number in events (its place among the zones the user gave).
    min_frames: updates a track must be seen on the new side of the edge before it enters/leaves.
    margin: pixels either side of the edge where a box is neither inside nor outside.
    forget_after_s: seconds after which an unseen track is forgotten (leaving, if it was inside).
    """

    def __init__(self, polygon_xy, *, index: int = 0, min_frames: int = 2, margin: float = 0.0,
                 forget_after_s: float = 3.0):
        self.polygon = np.asarray(polygon_xy, dtype=np.float64).reshape(-1, 2)
        if len(self.polygon) < 3 or polygon_area(self.polygon) == 0.0:
            raise ValueError(f"a zone needs 3 points or more enclosing an area, got {self.polygon.tolist()}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0 pixels, got {margin}")
        self.index = index
        self.margin = float(margin)
        self._inside = DebouncedStates(min_frames=min_frames, forget_after_s=forget_after_s, initial=False)
        self._entered_as: dict[int, tuple[int, str]] = {}  # track id -> (class id, name) it entered with
        self._entries: Counter[str] = Counter()

    def states(self, points: np.ndarray) -> list[bool | None]:
        """Whether each point [N, 2] is inside: True, False, or None within the margin of the edge."""
        inside = points_in_polygon(points, self.polygon)
        near = distances_to_edges(points, self.polygon) <= self.margin if self.margin else np.zeros(len(points), bool)
        return [None if n else bool(i) for i, n in zip(inside, near)]

    def update(self, detections: Detections, time_s: float) -> list[dict]:
        """Observe one frame's tracked detections at ``time_s`` seconds; the entries and exits
        they complete (and the exits of inside tracks lost too long), as event records."""
        events = []
        rows = tracked(detections)
        for row, state in zip(rows, self.states(bottom_centres(detections.xyxy[rows]))):
            track_id = int(detections.track_ids[row])
            change = self._inside.observe(track_id, state, time_s)
            if change is None:
                continue
            if change[1]:
                class_id = int(detections.class_ids[row])
                name = class_name(detections.class_names, class_id)
                self._entered_as[track_id] = (class_id, name)
                self._entries[name] += 1
                events.append(self._event("enter", track_id, class_id, name, time_s))
            else:
                events.append(self._leave(track_id, time_s, lost=False))
        for track_id, inside in self._inside.forget_unseen(time_s):
            if inside:
                events.append(self._leave(track_id, time_s, lost=True))
        return events

    def _event(self, kind: str, track_id: int, class_id: int, name: str, time_s: float) -> dict:
        return {"event": kind, "zone": self.index, "track_id": track_id, "class_id": class_id,
                "class_name": name, "time": float(time_s)}

    def _leave(self, track_id: int, time_s: float, *, lost: bool) -> dict:
        class_id, name = self._entered_as.pop(track_id)
        return {**self._event("leave", track_id, class_id, name, time_s), "lost": lost}

    def occupancy(self) -> dict[str, int]:
        """Tracks inside now, per class name (the class each entered with)."""
        return dict(sorted(Counter(name for _, name in self._entered_as.values()).items()))

    def entries(self) -> dict[str, int]:
        """Entries so far, per class name."""
        return dict(sorted(self._entries.items()))

    def totals(self) -> dict[str, dict[str, int]]:
        """{"occupancy": ..., "entries": ...} per class name."""
        return {"occupancy": self.occupancy(), "entries": self.entries()}
