"""Line crossing and zone counting over synthetic tracks (cvexport.counting): exact counts,
hysteresis against jitter, tracks that vanish and come back, and the option text's parsing."""

from __future__ import annotations

import numpy as np
import pytest

from cvexport.counting import LineCounter, ZoneCounter, bottom_centres, parse_line, parse_zone
from cvexport.counting.zones import points_in_polygon
from cvexport.errors import CvexportError
from cvexport.results import Detections

NAMES = ("person", "car", "bike")
FPS = 30.0


def frame(anchors, track_ids=(), class_ids=None, *, with_ids=True) -> Detections:
    """Detections whose boxes (20 px wide, 40 tall) stand on ``anchors`` [(x, y), ...]."""
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 2)
    x, y = anchors[:, 0], anchors[:, 1]
    xyxy = np.stack([x - 10, y - 40, x + 10, y], axis=1)
    class_ids = np.zeros(len(anchors), np.int64) if class_ids is None else class_ids
    return Detections(xyxy, np.full(len(anchors), 0.9), class_ids, NAMES,
                      np.asarray(track_ids, np.int64) if with_ids else None)


def run(counter, frames) -> list[dict]:
    """Feed ``frames`` at 30 fps; all the events."""
    return [e for i, f in enumerate(frames) for e in counter.update(f, i / FPS)]


def test_bottom_centre_is_the_anchor():
    assert bottom_centres(np.array([[10.0, 20.0, 30.0, 60.0]])).tolist() == [[20.0, 60.0]]


# ------------------------------------------------------------------------------------ lines
def test_back_and_forth_crossings_of_several_classes_are_counted_exactly():
    """Three tracks of three classes move up and down across a horizontal line at y=100 drawn
    left to right: moving up is "in" (the left-hand side of start -> end, as supervision)."""
    line = LineCounter((0, 100), (400, 100))
    # y of each track over time: a triangle wave between 60 and 140, 10 px a frame, period 16.
    ys = [60 + 10 * (8 - abs(8 - t % 16)) for t in range(64)]  # starts above, goes down first
    frames = []
    for t, y in enumerate(ys):
        # track 1 (person) as ys; track 2 (car) mirrored (starts below, goes up); track 3 (bike)
        # only from t=16 on, as ys.
        anchors, ids, classes = [(50, y), (150, 200 - y)], [1, 2], [0, 1]
        if t >= 16:
            anchors, ids, classes = anchors + [(250, y)], ids + [3], classes + [2]
        frames.append(frame(anchors, ids, np.array(classes)))
    events = run(line, frames)
    # Each track crosses twice a period: 64 frames = 4 periods = 8 crossings (the last half period
    # ends at y=70 / 130: across for track 1 and 2), 6 for track 3 starting at period 2.
    assert [e["direction"] for e in events if e["track_id"] == 1] == ["out", "in"] * 4
    assert [e["direction"] for e in events if e["track_id"] == 2] == ["in", "out"] * 4
    assert [e["direction"] for e in events if e["track_id"] == 3] == ["out", "in"] * 3
    assert line.totals() == {"in": {"bike": 3, "car": 4, "person": 4}, "out": {"bike": 3, "car": 4, "person": 4}}
    assert (line.in_count, line.out_count) == (11, 11)
    first = events[0]
    assert first == {"event": "cross", "line": 0, "direction": "out", "track_id": 1, "class_id": 0,
                     "class_name": "person", "time": first["time"]}
    # min_frames=2: counted on the second frame below the line (y=110 at t=5, 120 at t=6).
    assert first["time"] == pytest.approx(6 / FPS)


def test_a_box_jittering_on_the_line_counts_at_most_once():
    """A box walks down to the line, jitters +-2 px across it for 50 frames, then walks on."""
    rng = np.random.default_rng(0)
    walk_in = [60 + 4 * t for t in range(10)]  # 60 .. 96
    jitter = list(100 + rng.uniform(-2, 2, 50))
    walk_out = [104 + 4 * t for t in range(10)]
    ys = walk_in + jitter + walk_out
    frames = [frame([(50, y)], [7]) for y in ys]
    # Without hysteresis the jitter counts again and again: the test can tell.
    assert len(run(LineCounter((0, 100), (400, 100), min_frames=1), frames)) > 10
    # A margin wider than the jitter: exactly the one real crossing, after the walk on.
    line = LineCounter((0, 100), (400, 100), margin=3)
    events = run(line, frames)
    assert [(e["direction"], e["track_id"]) for e in events] == [("out", 7)]
    assert events[0]["time"] >= 61 / FPS
    # Frames alone against jitter that alternates sides every frame: nothing until the walk on.
    alternating = [frame([(50, 100 + (2 if t % 2 else -2))], [7]) for t in range(50)]
    line = LineCounter((0, 100), (400, 100))
    assert run(line, [frame([(50, 90)], [7])] + alternating) == []


def test_the_same_direction_needs_a_crossing_back_first():
    line = LineCounter((0, 100), (400, 100))
    ys = [80, 80, 120, 120, 120, 99.0, 120, 120]  # one frame back above is no crossing back
    events = run(line, [frame([(50, y)], [3]) for y in ys])
    assert [e["direction"] for e in events] == ["out"]


def test_detections_without_track_ids_or_unconfirmed_ids_are_ignored():
    line = LineCounter((0, 100), (400, 100))
    frames = [frame([(50, y)], with_ids=False) for y in (80, 90, 110, 120, 130)]
    assert run(line, frames) == []
    frames = [frame([(50, y)], [-1]) for y in (80, 90, 110, 120, 130)]
    assert run(line, frames) == []
    assert line.totals() == {"in": {}, "out": {}}


def test_a_track_that_vanishes_and_reappears_across_the_line_counts_once():
    line = LineCounter((0, 100), (400, 100))
    empty = Detections.empty(NAMES)
    frames = [frame([(50, y)], [5]) for y in (60, 70, 80)] + [empty] * 20 + [
        frame([(50, y)], [5]) for y in (130, 140, 150, 160)]
    events = run(line, frames)
    assert [(e["direction"], e["track_id"]) for e in events] == [("out", 5)]
    # Gone longer than forget_after_s, it comes back as a new track: nothing to count.
    line = LineCounter((0, 100), (400, 100), forget_after_s=0.5)
    assert run(line, frames) == []


def test_only_the_segment_between_its_ends_counts():
    line = LineCounter((100, 100), (200, 100))
    ys = (80, 90, 110, 120, 130)
    assert run(line, [frame([(50, y)], [1]) for y in ys]) == []  # beside the segment
    assert len(run(line, [frame([(150, y)], [2]) for y in ys])) == 1


def test_a_line_drawn_the_other_way_swaps_in_and_out():
    ys = (80, 90, 110, 120, 130)
    forward, backward = LineCounter((0, 100), (400, 100)), LineCounter((400, 100), (0, 100))
    assert [e["direction"] for e in run(forward, [frame([(50, y)], [1]) for y in ys])] == ["out"]
    assert [e["direction"] for e in run(backward, [frame([(50, y)], [1]) for y in ys])] == ["in"]


# ------------------------------------------------------------------------------------ zones
SQUARE = [(100, 100), (200, 100), (200, 200), (100, 200)]


def test_points_in_polygon_even_odd():
    concave = np.array([(0, 0), (10, 0), (10, 10), (5, 5), (0, 10)], dtype=np.float64)  # a notch on top
    points = np.array([(1, 1), (5, 8), (5, 4), (11, 5), (2, 6), (-1, 5)], dtype=np.float64)
    assert points_in_polygon(points, concave).tolist() == [True, False, True, False, True, False]


def test_zone_entries_leaves_and_occupancy():
    zone = ZoneCounter(SQUARE, index=1)
    x_of = {1: lambda t: 50 + 10 * t, 2: lambda t: 150.0, 3: lambda t: 400 - 10 * t}
    # track 1 (person) walks in from the left at t=6 and out at t=16; track 2 (car) stands
    # inside from the start; track 3 (bike) walks in from the right at t=21 (x=190) and stays.
    occupancy = []
    events = []
    for t in range(30):
        anchors = [(x_of[k](t), 150) for k in (1, 2, 3)]
        events += zone.update(frame(anchors, [1, 2, 3], np.array([0, 1, 2])), t / FPS)
        occupancy.append(zone.occupancy())
    summary = [(e["event"], e["track_id"]) for e in events]
    assert summary == [("enter", 2), ("enter", 1), ("leave", 1), ("enter", 3)]
    assert events[0] == {"event": "enter", "zone": 1, "track_id": 2, "class_id": 1, "class_name": "car",
                         "time": pytest.approx(1 / FPS)}
    assert events[2]["lost"] is False
    assert occupancy[0] == {}  # min_frames=2: not in on its first frame
    assert occupancy[10] == {"car": 1, "person": 1}
    assert occupancy[-1] == {"bike": 1, "car": 1}
    assert zone.entries() == {"bike": 1, "car": 1, "person": 1}


def test_a_track_lost_inside_leaves_and_its_class_stays_the_one_it_entered_with():
    zone = ZoneCounter(SQUARE, forget_after_s=0.5)
    frames = [frame([(150, 150)], [4], np.array([t % 2])) for t in range(5)]  # class flickers
    frames += [Detections.empty(NAMES)] * 30
    events = run(zone, frames)
    assert [(e["event"], e["class_name"], e.get("lost")) for e in events] == [
        ("enter", "car", None), ("leave", "car", True)]
    assert zone.occupancy() == {} and zone.entries() == {"car": 1}


def test_a_box_jittering_on_the_zone_edge_enters_once():
    rng = np.random.default_rng(1)
    xs = list(100 + rng.uniform(-2, 2, 50)) + [110, 120, 130]
    frames = [frame([(x, 150)], [9]) for x in xs]
    assert len(run(ZoneCounter(SQUARE, min_frames=1), frames)) > 10
    events = run(ZoneCounter(SQUARE, margin=3), frames)
    assert [e["event"] for e in events] == ["enter"]


# ------------------------------------------------------------------------------------ parsing
def test_fractions_and_pixels():
    line = parse_line("0,0.5,1,0.5")
    assert line.fractions
    assert line.resolve(1280, 720).tolist() == [[0, 360], [1280, 360]]
    pixels = parse_line("10, 20, 300,400")
    assert not pixels.fractions
    assert pixels.resolve(1280, 720).tolist() == [[10, 20], [300, 400]]
    zone = parse_zone("0.25,0.25,0.75,0.25,0.5,1")
    assert zone.resolve(200, 100).tolist() == [[50, 25], [150, 25], [100, 100]]
    assert not parse_zone("0,0,1,0,2,2").fractions  # one number above 1: all pixels


@pytest.mark.parametrize("parse, text, why", [
    (parse_line, "1,2,3", "found 3 numbers"),
    (parse_line, "1,2,3,x", "not a number"),
    (parse_line, "5,5,5,5", "two points are the same"),
    (parse_line, "0,-1,1,1", "negative"),
    (parse_line, "0,nan,1,1", "not finite"),
    (parse_zone, "1,2,3,4", "found 4 numbers"),
    (parse_zone, "1,2,3,4,5", "found 5 numbers"),
    (parse_zone, "0,0,1,1,2,2", "no area"),
    (parse_zone, "", "not a number"),
])
def test_bad_text_is_one_line_naming_the_value(parse, text, why):
    with pytest.raises(CvexportError) as caught:
        parse(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--{parse.__name__.split('_')[1]} '{text}': expected ")
    assert why in message
