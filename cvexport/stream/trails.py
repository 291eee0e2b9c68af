"""Short trails behind tracked boxes in a stream's video: where each track's bottom centre (the
point that counts for lines and zones) was over its last frames, in its class colour.

One source's :class:`Trails` is fed by that source's sink thread, frame after frame, and drawn
on the frame's picture after the boxes: as a polyline on an RGB picture, or as 2x2 dots every
two pixels along it on the decoded yuv420p planes (cvexport.yuv420), so that tracking keeps the
detector's fast path (no RGB round trip).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from cvexport.counting.geometry import bottom_centres
from cvexport.palette import BOX_PALETTE
from cvexport.results import NO_TRACK

TRAIL_POINTS = 16  # positions kept per track: about half a second at 30 fps
FORGET_AFTER = 30  # frames after which a track not seen any more loses its trail


class Trails:
    """The recent bottom centres of every live track of one source."""

    def __init__(self, points: int = TRAIL_POINTS, palette: tuple[tuple[int, int, int], ...] = BOX_PALETTE):
        self.points, self.palette = points, palette
        self._trails: dict[int, deque] = {}
        self._colors: dict[int, tuple[int, int, int]] = {}
        self._last_seen: dict[int, int] = {}
        self._frame = 0

    def update(self, detections) -> None:
        """Add this frame's tracked boxes (``detections.track_ids``; boxes without a track add nothing)."""
        self._frame += 1
        if detections.track_ids is not None:
            points = bottom_centres(detections.xyxy).tolist()
            for point, class_id, track_id in zip(points, detections.class_ids, detections.track_ids.tolist()):
                if track_id == NO_TRACK:
                    continue
                trail = self._trails.setdefault(track_id, deque(maxlen=self.points))
                trail.append(tuple(point))
                self._colors[track_id] = self.palette[int(class_id) % len(self.palette)]
                self._last_seen[track_id] = self._frame
        for track_id in [t for t, seen in self._last_seen.items() if self._frame - seen > FORGET_AFTER]:
            del self._trails[track_id], self._colors[track_id], self._last_seen[track_id]

    def _polylines(self):
        for track_id, trail in self._trails.items():
            if len(trail) > 1:
                yield list(trail), self._colors[track_id]

    def draw_rgb(self, picture) -> None:
        """Each trail as a line onto PIL image ``picture`` (in place)."""
        from PIL import ImageDraw

        draw = ImageDraw.Draw(picture)
        width = max(2, round(min(picture.size) / 240))
        for points, color in self._polylines():
            draw.line(points, fill=color, width=width)

    def draw_yuv420(self, planes: np.ndarray) -> None:
        """Each trail as 2x2 dots every two pixels along it onto yuv420p ``planes`` (in place).
        The dots sit on whole chroma cells (even x and y), so each is one colour in all three
        planes, written at once for a whole trail (a call per dot cost more than the tracking)."""
        from cvexport.yuv420 import rgb_to_yuv, split_planes

        y_plane, u_plane, v_plane = split_planes(planes)
        height, width = y_plane.shape
        for points, color in self._polylines():
            ends = np.asarray(points, dtype=np.float64)
            moves = ends[1:] - ends[:-1]
            # Every segment sampled as often as the longest needs (a dot every 2 px; repeats are harmless).
            steps = int(min(np.hypot(*moves.T).max() // 2, 4 * max(height, width))) + 1
            fractions = np.linspace(0.0, 1.0, steps + 1)
            along = (ends[:-1, None, :] + fractions[None, :, None] * moves[:, None, :]).reshape(-1, 2)
            cells = np.floor(along).astype(int) // 2  # (x, y) of the 2x2 cells
            cells = cells[(cells[:, 0] >= 0) & (cells[:, 1] >= 0)
                          & (cells[:, 0] < width // 2) & (cells[:, 1] < height // 2)]
            luma, u, v = np.clip(np.rint(rgb_to_yuv(color)), 0, 255).astype(np.uint8)
            cx, cy = cells[:, 0], cells[:, 1]
            for dy in (0, 1):
                for dx in (0, 1):
                    y_plane[2 * cy + dy, 2 * cx + dx] = luma
            u_plane[cy, cx], v_plane[cy, cx] = u, v
