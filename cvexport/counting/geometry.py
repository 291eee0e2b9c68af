"""The shapes counting works with: lines and zones parsed from option text, and the one point of
a box that counts.

Option text is comma-separated numbers, x then y for each point: ``x1,y1,x2,y2`` for a line,
``x1,y1,x2,y2,x3,y3,...`` (3 points or more) for a zone. The numbers are either pixels of the
frame or fractions of its width and height, told apart by one rule: when EVERY number is at
most 1.0 they are fractions (``0,0.5,1,0.5`` is a horizontal line across the middle of any
frame), otherwise pixels. A shape given in pixels entirely inside 1x1 pixel means nothing, so
the rule loses no real shape. Negative numbers are refused (a shape may still run to the edge).
The frame's size is known only once the first frame arrives, so parsing keeps the numbers and
``resolve(width, height)`` gives the pixels.

The anchor of a box is its bottom centre: where an object stands on the ground, as DeepStream's
analytics and supervision's default triggering anchor use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cvexport.errors import CvexportError


@dataclass(frozen=True)
class FrameShape:
    """Points of a line or zone as the user gave them: pixels, or fractions of the frame.

    points: (x, y) pairs in the given unit; fractions: whether they are fractions of the frame.
    """

    points: tuple[tuple[float, float], ...]
    fractions: bool

    def resolve(self, width: int, height: int) -> np.ndarray:
        """The points in pixels of a ``width`` x ``height`` frame: float64 [K, 2]."""
        points = np.asarray(self.points, dtype=np.float64).reshape(-1, 2)
        if self.fractions:
            points = points * np.array([width, height], dtype=np.float64)
        return points


def _numbers(text: str, option: str, expected: str) -> list[float]:
    """The comma-separated numbers of ``text``, or a one-line error naming the option's value."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise CvexportError(f"{option} '{text}': expected {expected}; found something that is not a number") from None
    if not all(math.isfinite(v) for v in values):
        raise CvexportError(f"{option} '{text}': expected {expected}; found a number that is not finite")
    if any(v < 0 for v in values):
        raise CvexportError(f"{option} '{text}': expected {expected}; found a negative number")
    return values


def _shape(values: list[float]) -> FrameShape:
    points = tuple(zip(values[0::2], values[1::2]))
    return FrameShape(points, fractions=all(v <= 1.0 for v in values))


def parse_line(text: str, option: str = "--line") -> FrameShape:
    """``x1,y1,x2,y2`` -> a line's two points (pixels, or fractions when all are <= 1.0)."""
    expected = "x1,y1,x2,y2 (4 numbers >= 0: pixels, or all <= 1 for fractions of the frame)"
    values = _numbers(text, option, expected)
    if len(values) != 4:
        raise CvexportError(f"{option} '{text}': expected {expected}; found {len(values)} numbers")
    if values[:2] == values[2:]:
        raise CvexportError(f"{option} '{text}': expected {expected}; its two points are the same")
    return _shape(values)


def parse_zone(text: str, option: str = "--zone") -> FrameShape:
    """``x1,y1,x2,y2,x3,y3,...`` -> a polygon's points (3 or more; pixels, or fractions when all
    are <= 1.0). The polygon closes itself: the last point joins the first."""
    expected = ("x1,y1,x2,y2,x3,y3,... (an even count of numbers >= 0, at least 3 points: pixels, "
                "or all <= 1 for fractions of the frame)")
    values = _numbers(text, option, expected)
    if len(values) % 2 or len(values) < 6:
        raise CvexportError(f"{option} '{text}': expected {expected}; found {len(values)} numbers")
    shape = _shape(values)
    if polygon_area(np.asarray(shape.points)) == 0.0:
        raise CvexportError(f"{option} '{text}': expected {expected}; its points enclose no area")
    return shape


def polygon_area(polygon: np.ndarray) -> float:
    """The area of a closed polygon [K, 2] (shoelace formula; 0 when its points are on one line)."""
    x, y = polygon[:, 0], polygon[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0


def bottom_centres(xyxy: np.ndarray) -> np.ndarray:
    """The anchor of each box (x1, y1, x2, y2) [N, 4]: its bottom centre, float64 [N, 2]."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2.0, xyxy[:, 3]], axis=1)
