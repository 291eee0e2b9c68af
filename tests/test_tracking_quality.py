"""Tracking quality on a synthetic sequence with known identities, scored by trackers.eval.

The sequence: 4 objects, 90 frames (3 s at 30 fps), seed 0: two cross head-on with one hidden
behind the other for 13 frames, one enters, one leaves, with box jitter, score noise, missed
detections and false positives (cvexport.tracking.sequences).

Floors, measured on an AMD EPYC, 2 cores, AVX-512 VNNI/BF16 (the numbers do not depend on the
CPU: everything is seeded): IDF1 0.947 at full rate and 0.944 with half the frames dropped
(roboflow ByteTrack behind the Tracker API; seeds 1 and 2 give 0.92-0.95). The floor 0.8 leaves
room for a different tracker's detail. It does not catch one identity lost at the crossing (the
hidden object back under a new id: IDF1 0.82 at full rate, 0.84 dropped, one ID switch), so that
is checked on its own: no ID switch at all, at either rate.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("trackers")

from cvexport.results import Detections  # noqa: E402
from cvexport.tracking.evaluate import score_tracks, track_sequence  # noqa: E402
from cvexport.tracking.sequences import drop_frames, make_sequence  # noqa: E402

IDF1_FLOOR = 0.8


@pytest.fixture(scope="module")
def sequence():
    return make_sequence(objects=4, frames=90, seed=0)


def tracker():
    from cvexport.tracking.tracker import Tracker

    return Tracker()


def test_sequence_has_what_makes_tracking_hard(sequence):
    hidden = [frame.index for frame in sequence if len(frame.hidden)]
    assert len(hidden) >= 8  # an occlusion long enough to need the tracker's memory
    present = [set(frame.truth_ids.tolist()) for frame in sequence]
    assert 2 not in present[0] and 2 in present[-1]  # enters
    assert 3 in present[0] and 3 not in present[-1]  # leaves
    again = make_sequence(objects=4, frames=90, seed=0)
    assert all(a.detections == b.detections for a, b in zip(sequence, again))  # deterministic
    assert make_sequence(objects=4, frames=90, seed=1)[5].detections != sequence[5].detections


def test_dropping_frames_keeps_their_timestamps(sequence):
    kept = drop_frames(sequence, 0.5)
    assert len(kept) == 45 and kept[0] is sequence[0]
    assert all(frame is sequence[frame.index] for frame in kept)  # the same frames, not new noise
    assert all(frame.time_s == pytest.approx(frame.index / 30) for frame in kept)
    assert np.diff([frame.time_s for frame in kept]).max() > 1.5 / 30  # gaps show in the time


def test_the_truth_itself_scores_perfectly(sequence):
    truth = [Detections(f.truth_xyxy, np.ones(len(f.truth_ids)), np.zeros(len(f.truth_ids), np.int64),
                        track_ids=f.truth_ids + 100) for f in sequence]
    scores = score_tracks(sequence, truth)
    assert scores["IDF1"] == pytest.approx(1.0) and scores["MOTA"] == pytest.approx(1.0)
    assert scores["HOTA"] == pytest.approx(1.0) and scores["IDSW"] == 0


def test_idf1_at_full_rate(sequence):
    scores = score_tracks(sequence, track_sequence(tracker(), sequence))
    assert scores["IDF1"] > IDF1_FLOOR, scores
    assert scores["IDSW"] == 0, scores  # the object hidden for 13 frames comes back under its id


def test_idf1_with_half_the_frames_dropped(sequence):
    kept = drop_frames(sequence, 0.5)
    scores = score_tracks(kept, track_sequence(tracker(), kept))
    assert scores["frames"] == 45
    assert scores["IDF1"] > IDF1_FLOOR, scores
    assert scores["IDSW"] == 0, scores


def test_ids_reshuffled_every_frame_score_far_lower(sequence):
    """The same boxes as the tracker's, their ids permuted at random in every frame: detection is
    as good, identity is not, and the metric must see it (else the floors above prove nothing)."""
    good = track_sequence(tracker(), sequence)
    rng = np.random.default_rng(0)
    shuffled = [Detections(d.xyxy, d.scores, d.class_ids, d.class_names, rng.permutation(d.track_ids))
                for d in good]
    good_scores, bad_scores = score_tracks(sequence, good), score_tracks(sequence, shuffled)
    assert bad_scores["IDF1"] < good_scores["IDF1"] - 0.3, (good_scores, bad_scores)
    assert bad_scores["IDSW"] > 20 * max(good_scores["IDSW"], 1)
    assert bad_scores["IDF1"] < IDF1_FLOOR - 0.2


def test_outputs_must_match_the_frames(sequence):
    with pytest.raises(ValueError, match="outputs for"):
        score_tracks(sequence, [])
