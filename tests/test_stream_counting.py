"""``cvexport stream --line / --zone``: the counters of cvexport.counting fed by each source's
tracked boxes, their events in the JSONL after the frame they happened in, their totals in
summary.json, and the shapes drawn on the video. The counting rules themselves are tested in
test_counting.py; here, that the stream applies them to what it wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_helpers import decode_video, read_jsonl, stream, stream_cli

from cvexport.counting import LineCounter, ZoneCounter
from cvexport.results import Detections
from cvexport.stream.source_counts import CountingOptions

DEFAULTS = CountingOptions()  # the stream's --count-frames and --count-margin

pytest.importorskip("trackers")

FRAMES = 60
WIDTH, HEIGHT = 320, 240
# The horizontal middle of the frame, as fractions: in these 60 frames (seed 1) one shape crosses
# it going down, another up and down again, a third never does.
LINE = "0,0.5,1,0.5"
ZONE = "0,0,160,0,160,240,0,240"  # the left half, in pixels


@pytest.fixture(scope="module")
def counted(build_bundle, tmp_path_factory):
    from cvexport.stream.synthetic import write_video

    root = tmp_path_factory.mktemp("counting")
    video = root / "shapes.mp4"
    truths = write_video(video, WIDTH, HEIGHT, FRAMES, seed=1)
    bundle = build_bundle(model="ssd", precision="fp32")
    out = root / "out"
    assert stream(bundle.path, video, "--out", out, "--line", LINE, "--zone", ZONE) == 0
    return out, bundle, truths


def test_crossings_are_the_ones_the_shapes_make(counted):
    """The stream's line counts, from the detector's boxes and the tracker's ids, are exactly
    those of the video's ground truth (each shape's true box and identity) through the same rule."""
    out, bundle, truths = counted
    truth = LineCounter((0, HEIGHT / 2), (WIDTH, HEIGHT / 2), min_frames=DEFAULTS.min_frames, margin=DEFAULTS.margin)
    for index, shapes in enumerate(truths):
        truth.update(Detections(xyxy=np.array([shape["box"] for shape in shapes]), scores=np.ones(len(shapes)),
                                class_ids=[shape["class_id"] for shape in shapes], class_names=bundle.class_names,
                                track_ids=list(range(len(shapes)))), index / 30)
    assert truth.in_count + truth.out_count == 3  # what the comment at LINE says
    counts = json.loads((out / "summary.json").read_text())["sources"][0]["counts"]["lines"][0]
    assert {"in": counts["in"], "out": counts["out"]} == truth.totals()


def _frames_and_events(lines: list[dict]) -> tuple[list[dict], list[dict]]:
    return [line for line in lines if "event" not in line], [line for line in lines if "event" in line]


def test_events_follow_their_frame_and_are_what_the_counters_make_of_the_written_boxes(counted):
    """Replaying the JSONL's tracked boxes through fresh counters gives exactly the stream's
    events, frame by frame, and its summary's totals."""
    out, bundle, _ = counted
    lines = read_jsonl(out / "shapes.jsonl")
    frames, events = _frames_and_events(lines)
    assert len(frames) == FRAMES and events, "the shapes cross the middle of the frame: some events expected"
    order = [line["frame"] for line in lines]
    assert order == sorted(order)  # each event right after its frame's line
    hysteresis = {"min_frames": DEFAULTS.min_frames, "margin": DEFAULTS.margin}
    line_counter = LineCounter((0, HEIGHT / 2), (WIDTH, HEIGHT / 2), index=0, **hysteresis)
    zone_counter = ZoneCounter([(0, 0), (160, 0), (160, 240), (0, 240)], index=0, **hysteresis)
    replayed = []
    for frame in frames:
        boxes = frame["detections"]
        detections = Detections(
            xyxy=np.array([d["box"] for d in boxes], dtype=np.float64).reshape(-1, 4),
            scores=[d["score"] for d in boxes], class_ids=[d["class_id"] for d in boxes],
            class_names=bundle.class_names,
            track_ids=[-1 if d["track_id"] is None else d["track_id"] for d in boxes])
        time_s = frame["pts"]
        for event in line_counter.update(detections, time_s) + zone_counter.update(detections, time_s):
            replayed.append({"frame": frame["frame"], **event, "time": round(event["time"], 6)})
    assert replayed == events
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lines"] == [LINE] and summary["zones"] == [ZONE]
    counts = summary["sources"][0]["counts"]
    assert counts["lines"][0]["in"] == line_counter.totals()["in"]
    assert counts["lines"][0]["out"] == line_counter.totals()["out"]
    assert counts["lines"][0]["points"] == [0, HEIGHT / 2, WIDTH, HEIGHT / 2]  # fractions resolved to pixels
    assert counts["zones"][0]["entries"] == zone_counter.entries()
    tracked = {d["track_id"] for frame in frames for d in frame["detections"] if d["track_id"] is not None}
    assert {event["track_id"] for event in events} <= tracked


def test_the_video_shows_the_line_and_the_zone(counted):
    """The line is drawn in its colour across the middle of every frame of the mp4."""
    from cvexport.stream.source_counts import LINE_COLOR

    out, _, _ = counted
    frames, _ = decode_video(out / "shapes.mp4")
    assert len(frames) == FRAMES
    for frame in frames[::10]:
        band = frame[HEIGHT // 2 - 2:HEIGHT // 2 + 2, 170:310].astype(int)  # right of the label, across the line
        near = np.abs(band - np.array(LINE_COLOR)).max(axis=-1) <= 60  # H.264 blurs a 2-pixel line
        assert near.any(axis=0).mean() > 0.8  # a few columns may be under a box


@pytest.mark.parametrize("argv, message", [
    (["--line", "1,2,3"], "--line '1,2,3': expected"),
    (["--zone", "0,0,1,1"], "--zone"),
    (["--count-margin", "-1", "--line", LINE], "--count-margin"),
])
def test_bad_shapes_are_one_line(build_bundle, tmp_path, argv, message):
    bundle = build_bundle(model="ssd", precision="fp32")
    result = stream_cli(bundle.path, tmp_path / "none.mp4", "--out", tmp_path / "o", *argv)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1] and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_counting_needs_a_detector(build_bundle, tmp_path):
    from cvexport.errors import CvexportError
    from cvexport.stream.synthetic import write_video

    write_video(tmp_path / "clip.mp4", 64, 48, 3)
    bundle = build_bundle(model="classifier", precision="fp32")
    with pytest.raises(CvexportError, match="--track follows a detector's boxes"):
        stream(bundle.path, tmp_path / "clip.mp4", "--out", tmp_path / "o", "--line", LINE)


def test_the_live_view_shows_the_running_counts():
    """A source's SourceCounts is what the live view's status and /metrics read."""
    from cvexport.counting import parse_line, parse_zone
    from cvexport.stream.live_view import _numbers
    from cvexport.stream.source_counts import CountingOptions, SourceCounts

    counts = SourceCounts(CountingOptions(lines=(parse_line("0,0.5,1,0.5"),), zones=(parse_zone(ZONE),), margin=0))
    names = ("ellipse", "rectangle")
    for index, y in enumerate((150, 150, 100, 100, 100)):  # a box moving up across the middle
        counts.update(Detections(xyxy=[[40, y - 20, 60, y]], scores=[0.9], class_ids=[1], class_names=names,
                                 track_ids=[5]), WIDTH, HEIGHT, index / 30)
    status = counts.status()
    assert status == {"line 0": {"in": {"rectangle": 1}, "out": {}},
                      "zone 0": {"inside": {"rectangle": 1}, "entered": {"rectangle": 1}}}
    assert dict(_numbers(status)) == {"line 0.in.rectangle": 1.0, "zone 0.inside.rectangle": 1.0,
                                      "zone 0.entered.rectangle": 1.0}
