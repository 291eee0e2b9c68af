"""cvexport.tracking.Tracker on synthetic boxes moving in straight lines (no model)."""

import numpy as np
import pytest

from cvexport.results import NO_TRACK, Detections
from cvexport.tracking import Tracker

pytest.importorskip("trackers")

NAMES = ("round", "square")
FPS = 30.0


def _frame(objects, t):
    """Detections at frame ``t`` of objects given as (start xy, velocity per frame, class id, size)."""
    boxes, classes = [], []
    for (x0, y0), (vx, vy), class_id, size in objects:
        x, y = x0 + vx * t, y0 + vy * t
        boxes.append([x, y, x + size, y + size])
        classes.append(class_id)
    return Detections(np.array(boxes, dtype=np.float64).reshape(-1, 4), np.full(len(boxes), 0.9), classes, NAMES)


# Two objects crossing (one left to right, one right to left at the same height) and a third apart.
CROSSING = [((20, 100), (6, 0), 0, 40), ((380, 110), (-6, 0), 1, 40), ((200, 300), (0, -2), 0, 50)]


def _ids_per_object(tracker, objects, frames, times):
    """Each object's track id in every frame where it has one (detections keep their order)."""
    seen = [[] for _ in objects]
    for t, time_s in zip(frames, times):
        tracked = tracker.track(_frame(objects, t), time_s)
        for k, track_id in enumerate(tracked.track_ids.tolist()):
            if track_id != NO_TRACK:
                seen[k].append(track_id)
    return seen


def test_ids_stay_with_crossing_objects_over_60_frames():
    tracker = Tracker(frame_rate=FPS)
    seen = _ids_per_object(tracker, CROSSING, range(60), [t / FPS for t in range(60)])
    for ids in seen:
        assert len(ids) >= 58  # confirmed from the second frame (min_frames 2) on
        assert len(set(ids)) == 1, ids
    assert len({ids[0] for ids in seen}) == 3
    stats = tracker.stats()
    assert (stats["started"], stats["active"], stats["ended"]) == (3, 3, 0)


def test_update_keeps_detections_unchanged_and_gives_confirmed_ones():
    tracker = Tracker()
    first = _frame(CROSSING, 0)
    assert len(tracker.update(first, 0.0)) == 0  # nothing confirmed after one frame
    second = _frame(CROSSING, 1)
    tracked = tracker.track(second, 1 / FPS)
    assert np.array_equal(tracked.xyxy, second.xyxy) and np.array_equal(tracked.class_ids, second.class_ids)
    assert np.array_equal(tracked.scores, second.scores) and tracked.track_ids.dtype == np.int64
    confirmed = tracker.update(_frame(CROSSING, 2), 2 / FPS)
    assert len(confirmed) == 3 and (confirmed.track_ids != NO_TRACK).all()
    assert np.array_equal(confirmed.xyxy, _frame(CROSSING, 2).xyxy)


def test_dropped_frames_keep_ids_when_timestamps_show_the_gap():
    # Frames 20..27 are dropped: the next frame's time jumps 9 frame periods; the filter
    # predicts over that time, so the fast movers (6 px per frame, 40 px wide) are found again.
    frames = [t for t in range(60) if not 20 <= t < 28]
    tracker = Tracker(frame_rate=FPS, lost_seconds=1.0)
    seen = _ids_per_object(tracker, CROSSING, frames, [t / FPS for t in frames])
    for ids in seen:
        assert len(set(ids)) == 1, ids
    assert tracker.stats()["started"] == 3


def test_gap_longer_than_lost_seconds_ends_tracks():
    tracker = Tracker(frame_rate=FPS, lost_seconds=0.2)
    still = [((50, 50), (0, 0), 0, 40)]
    before = _ids_per_object(tracker, still, range(5), [t / FPS for t in range(5)])[0]
    after = _ids_per_object(tracker, still, range(5), [1.0 + t / FPS for t in range(5)])[0]
    assert before and after and set(before).isdisjoint(after)
    assert tracker.stats()["ended"] == 1


def test_object_leaving_and_another_entering_gets_a_new_id():
    tracker = Tracker(frame_rate=FPS, lost_seconds=0.3)
    leaving = [((20, 20), (3, 0), 0, 40)]
    entering = [((300, 200), (-3, 0), 1, 40)]
    first = _ids_per_object(tracker, leaving, range(30), [t / FPS for t in range(30)])[0]
    for t in range(30, 45):  # nothing in view for half a second
        assert len(tracker.update(Detections.empty(NAMES), t / FPS)) == 0
    second = _ids_per_object(tracker, entering, range(30), [(45 + t) / FPS for t in range(30)])[0]
    assert len(set(first)) == 1 and len(set(second)) == 1 and first[0] != second[0]
    tracker.close()
    stats = tracker.stats()
    assert (stats["started"], stats["ended"], stats["active"]) == (2, 2, 0)
    frames = stats["lengths"]["frames"]
    assert frames["count"] == 2 and frames["max"] == 29  # confirmed on the second of 30 frames
    seconds = stats["lengths"]["seconds"]
    assert seconds["max"] == pytest.approx(28 / FPS, abs=1e-3)


def test_class_label_flicker_keeps_the_id():
    tracker = Tracker()
    ids = []
    for t in range(20):
        objects = [((20, 20), (2, 0), t % 2, 40)]
        ids.append(int(tracker.track(_frame(objects, t), t / FPS).track_ids[0]))
    assert len(set(ids[1:])) == 1 and ids[1] != NO_TRACK


def test_records_carry_track_ids_only_when_tracked():
    plain = _frame(CROSSING, 0)
    assert "track_id" not in plain.to_record()["detections"][0]
    tracked = Detections(plain.xyxy, plain.scores, plain.class_ids, NAMES, [NO_TRACK, 4, 7])
    assert [d["track_id"] for d in tracked.to_record()["detections"]] == [None, 4, 7]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        Tracker(lost_seconds=-1)
    with pytest.raises(ValueError):
        Tracker(frame_rate=0)


def test_time_going_back_goes_on_tracking():
    # A looped file: its pts start again at 0. The tracks go on being matched (ByteTrack
    # itself would skip every frame until the old time came round again).
    tracker = Tracker()
    still = [((50, 50), (0, 0), 0, 40)]
    ids = _ids_per_object(tracker, still, range(20), [t / FPS for t in range(10)] * 2)[0]
    assert len(ids) == 19 and len(set(ids)) == 1
