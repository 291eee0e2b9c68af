"""A tracker's output scored against ground-truth identities: HOTA, MOTA (with ID switches) and IDF1.

The scoring is roboflow ``trackers.eval`` (``compute_hota_metrics``, ``compute_clear_metrics``,
``compute_identity_metrics``), not code of ours: it is a port of TrackEval, the reference the MOT
benchmarks publish with, written to match its matching logic and numbers; it is kept (released
with the ``trackers`` package this project already uses for tracking) and runs on NumPy 2, which
TrackEval itself does not (it still uses ``np.float``/``np.int``, removed in NumPy 1.24). Those
functions take, per frame, the ground-truth ids, the tracker's ids (both renumbered 0..n-1) and
their IoU matrix; this module builds them from ``SequenceFrame``s and ``Detections`` and calls
them on the frames the tracker was given (a sequence with dropped frames is scored on the frames
it kept: nothing was asked of the tracker in between).

``trackers`` is an optional dependency (the ``track`` extra): imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from cvexport.results import Detections
from cvexport.tracking.sequences import SequenceFrame

# CLEAR and Identity count a match from this IoU (the MOT benchmarks' threshold); HOTA averages
# over 0.05-0.95 itself.
MATCH_IOU = 0.5


def track_sequence(tracker: Any, frames: Sequence[SequenceFrame]) -> list[Detections]:
    """``tracker.update(detections, time_s)`` on each frame in order; its outputs, one per frame."""
    return [tracker.update(frame.detections, frame.time_s) for frame in frames]


def score_tracks(frames: Sequence[SequenceFrame], tracks: Sequence[Detections]) -> dict[str, float | int]:
    """HOTA, DetA, AssA, MOTA, MOTP, IDF1 (fractions 0..1), IDSW, Frag, the identity counts and
    the number of frames, of ``tracks`` (one ``Detections`` with track_ids per frame) against the
    truth of ``frames``."""
    from trackers.eval import box_iou, compute_clear_metrics, compute_hota_metrics, compute_identity_metrics

    if len(frames) != len(tracks):
        raise ValueError(f"{len(tracks)} tracker outputs for {len(frames)} frames")
    truth_numbers: dict[int, int] = {}
    track_numbers: dict[int, int] = {}
    truth_ids, track_ids, similarity = [], [], []
    for frame, output in zip(frames, tracks):
        if output.track_ids is None:
            raise ValueError(f"frame {frame.index}: the tracker's output has no track_ids")
        # The metrics index arrays by id: ids renumbered 0..n-1 in order of first appearance.
        truth_ids.append(np.array([truth_numbers.setdefault(int(i), len(truth_numbers)) for i in frame.truth_ids],
                                  dtype=np.intp))
        track_ids.append(np.array([track_numbers.setdefault(int(i), len(track_numbers)) for i in output.track_ids],
                                  dtype=np.intp))
        similarity.append(box_iou(frame.truth_xyxy.reshape(-1, 4), output.xyxy.reshape(-1, 4)))
    hota = compute_hota_metrics(truth_ids, track_ids, similarity)
    clear = compute_clear_metrics(truth_ids, track_ids, similarity, threshold=MATCH_IOU)
    identity = compute_identity_metrics(truth_ids, track_ids, similarity, threshold=MATCH_IOU)
    return {
        "HOTA": float(hota["HOTA"]), "DetA": float(hota["DetA"]), "AssA": float(hota["AssA"]),
        "MOTA": float(clear["MOTA"]), "MOTP": float(clear["MOTP"]), "IDF1": float(identity["IDF1"]),
        "IDSW": int(clear["IDSW"]), "Frag": int(clear["Frag"]),
        "truth_ids": len(truth_numbers), "track_ids": len(track_numbers), "frames": len(frames),
    }
