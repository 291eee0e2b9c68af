"""Trails behind tracked boxes (cvexport.stream.trails): kept per track, forgotten with it, and
drawn alike on an RGB picture and on yuv420p planes."""

from __future__ import annotations

import numpy as np
import pytest

from cvexport.results import NO_TRACK, Detections
from cvexport.stream.trails import FORGET_AFTER, TRAIL_POINTS, Trails

av = pytest.importorskip("av")


def _frame(x: float, track_id: int = 3) -> Detections:
    return Detections(xyxy=[[x, 40, x + 20, 80], [5, 5, 15, 15]], scores=[0.9, 0.8], class_ids=[1, 0],
                      class_names=("a", "b"), track_ids=[track_id, NO_TRACK])


def test_a_trail_follows_its_track_and_is_forgotten_with_it():
    trails = Trails()
    for step in range(TRAIL_POINTS + 5):
        trails.update(_frame(10 + 4 * step))
    (points, color), = list(trails._polylines())  # the box without a track has none
    assert len(points) == TRAIL_POINTS and points[-1] == (10 + 4 * (TRAIL_POINTS + 4) + 10, 80.0)
    assert color == trails.palette[1]
    for _ in range(FORGET_AFTER + 1):
        trails.update(Detections(xyxy=np.zeros((0, 4)), scores=[], class_ids=[], track_ids=[]))
    assert list(trails._polylines()) == []


def test_drawn_on_rgb_and_on_yuv_planes_in_the_same_place():
    from PIL import Image

    trails = Trails()
    for step in range(8):
        trails.update(_frame(20 + 10 * step))  # bottom centre from (30, 80) to (100, 80)
    picture = Image.new("RGB", (160, 120))
    trails.draw_rgb(picture)
    planes = av.VideoFrame.from_ndarray(np.zeros((120, 160, 3), np.uint8), format="rgb24").reformat(
        format="yuv420p").to_ndarray()
    trails.draw_yuv420(planes)
    by_rgb = np.asarray(picture).max(axis=2) > 60
    by_planes = av.VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray(format="rgb24").max(axis=2) > 60
    assert by_rgb[78:82, 30:101].any(axis=0).all() and by_planes[78:82, 30:101].any(axis=0).all()
    assert not by_rgb[:70].any() and not by_planes[:70].any()  # nothing away from the trail
