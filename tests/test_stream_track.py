"""``cvexport stream --track``: track ids on a detector's boxes across the frames of a video.

The video is cvexport.stream.synthetic's (the detection dataset's shapes moving over a
photograph), whose per-frame truth says which shape is which: a box is attributed to the
shape it overlaps (IoU >= 0.5), and each shape's boxes should keep one id.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from stream_helpers import box_iou, make_parser, read_jsonl, stream

from cvexport.errors import CvexportError

pytest.importorskip("trackers")

FRAMES = 30
ACTIVATION_SCORE = 0.5  # the Tracker's default, which the stream keeps


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from cvexport.stream.synthetic import write_video

    path = tmp_path_factory.mktemp("track_video") / "shapes.mp4"
    return path, write_video(path, 320, 240, FRAMES, seed=1)


@pytest.fixture(scope="module")
def detector(build_bundle):
    return build_bundle(model="ssd", precision="fp32")


def _ids_per_shape(lines: list[dict], truths: list[list[dict]]) -> list[list[int | None]]:
    """For each shape of the truth, the track id of the confident box (score >= the tracker's
    activation score) found on it, frame by frame (null: found but not tracked). ByteTrack
    starts tracks from confident boxes only: a shape the detector only ever half believes in
    (one of these, at scores 0.27 to 0.43) keeps null ids."""
    ids = [[] for _ in truths[0]]
    for line in lines:
        for k, shape in enumerate(truths[line["frame"]]):
            on_it = [d for d in line["detections"] if d["class_id"] == shape["class_id"]
                     and box_iou(d["box"], shape["box"]) >= 0.5 and d["score"] >= ACTIVATION_SCORE]
            if on_it:
                ids[k].append(max(on_it, key=lambda d: box_iou(d["box"], shape["box"]))["track_id"])
    return ids


def _assert_ids_persist(lines, truths, frames_seen: int) -> None:
    assert all("track_id" in d and (d["track_id"] is None or isinstance(d["track_id"], int))
               for line in lines for d in line["detections"])
    assert all(d["track_id"] is None for d in lines[0]["detections"])  # confirmed on a second frame
    majority = []
    for ids in _ids_per_shape(lines, truths):
        if len(ids) < frames_seen // 2:
            continue  # not confidently found in most frames: not a shape to follow
        track_id, count = Counter(ids[1:]).most_common(1)[0]
        assert track_id is not None and count >= 0.8 * (len(ids) - 1), ids  # one id for (nearly) all of it
        majority.append(track_id)
    assert len(majority) >= 2 and len(set(majority)) == len(majority)  # each shape its own id


def test_track_ids_follow_the_moving_shapes(detector, video, tmp_path):
    path, truths = video
    assert stream(detector.path, path, "--out", tmp_path, "--track") == 0
    lines = read_jsonl(tmp_path / "shapes.jsonl")
    assert len(lines) == FRAMES
    _assert_ids_persist(lines, truths, FRAMES)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["track"] is True and summary["track_lost_seconds"] == 1.0
    tracks = summary["sources"][0]["tracks"]
    ids = {d["track_id"] for line in lines for d in line["detections"]} - {None}
    assert tracks["started"] == len(ids) >= 2  # the two shapes found confidently (see _ids_per_shape)
    assert tracks["ended"] == tracks["started"] and tracks["active"] == 0  # all ended with the video
    assert tracks["lengths"]["frames"]["count"] == tracks["started"]
    assert (tmp_path / "shapes.mp4").stat().st_size > 0


def test_track_ids_persist_with_half_the_frames(detector, video, tmp_path):
    """--stride 2: each frame's pts shows the tracker the skipped frame between."""
    path, truths = video
    assert stream(detector.path, path, "--out", tmp_path, "--track", "--stride", 2, "--no-video") == 0
    lines = read_jsonl(tmp_path / "shapes.jsonl")
    assert [line["frame"] for line in lines] == list(range(0, FRAMES, 2))
    _assert_ids_persist(lines, truths, FRAMES // 2)


def test_track_on_a_classifier_is_refused(build_bundle, video, tmp_path):
    classifier = build_bundle(model="classifier", precision="fp32")
    with pytest.raises(CvexportError, match="--track") as caught:
        stream(classifier.path, video[0], "--out", tmp_path, "--track")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "summary.json").exists()


def test_negative_lost_seconds_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        make_parser().parse_args(["stream", "b", "s", "--out", "o", "--track", "--track-lost-seconds", "-1"])
    assert caught.value.code == 2 and "--track-lost-seconds" in capsys.readouterr().err


def test_box_labels_carry_the_track_id():
    """Both drawing paths (RGB and yuv420p) take their labels from the same place."""
    from cvexport.annotators import BoxAnnotator
    from cvexport.results import NO_TRACK, Detections

    boxes = Detections(np.array([[10, 10, 60, 60], [100, 80, 160, 150]]), [0.91, 0.5], [0, 1],
                       ("round", "square"), [7, NO_TRACK])
    labels = [label for _, _, label in BoxAnnotator()._boxes(boxes)]
    assert labels == ["#7 round 0.91", "square 0.50"]
    plain = Detections(boxes.xyxy, boxes.scores, boxes.class_ids, boxes.class_names)
    assert [label for _, _, label in BoxAnnotator()._boxes(plain)] == ["round 0.91", "square 0.50"]
