"""A per-track state (a side of a line, inside or outside a zone) that changes only on steady
evidence, so a box jittering on a boundary does not count again and again.

Each update a track is observed in some state, or in none (it is within the margin of the
boundary, or outside the part of the frame that counts: such an observation neither confirms nor
breaks a change). The confirmed state changes once the track has been observed in the other
state for ``min_frames`` of its own consecutive observations; an observation in the confirmed
state starts the count again. Updates in which the track is missing do not break the count, so
a track hidden for a moment (or lost and found again by the tracker, same id) resumes it: a
track that vanishes on one side and reappears on the other has changed state once.

Since the confirmed state only flips, a track cannot change the same way twice without changing
back in between.

Tracks unseen for longer than ``forget_after_s`` seconds are forgotten (their memory bounded, and
a zone can tell that a lost track has left).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import numpy as np

from cvexport.results import Detections


def tracked(detections: Detections) -> np.ndarray:
    """Indices of the detections that carry a confirmed track id (>= 0); none without ids."""
    if detections.track_ids is None:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(detections.track_ids >= 0)


@dataclass
class _Track:
    state: Hashable  # the confirmed state; None until the first observation of a line's track
    streak: int  # consecutive observations in the other state
    last_seen_s: float


class DebouncedStates:
    """Confirmed states of tracks by id.

    initial: the state a new track starts in: None to adopt its first observation without a
    change (a line: a track first seen below it is below it), or a state that a new track must
    leave to change (a zone: every track starts outside, so one first seen inside enters).
    """

    def __init__(self, *, min_frames: int, forget_after_s: float, initial: Hashable = None):
        if min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, got {min_frames}")
        if not forget_after_s > 0:
            raise ValueError(f"forget_after_s must be positive, got {forget_after_s}")
        self.min_frames = min_frames
        self.forget_after_s = float(forget_after_s)
        self.initial = initial
        self._tracks: dict[int, _Track] = {}

    def observe(self, track_id: int, state: Hashable, time_s: float) -> tuple[Hashable, Hashable] | None:
        """Record that ``track_id`` was seen in ``state`` (None: in no state) at ``time_s``;
        (old, new) where its confirmed state changed, else None."""
        track = self._tracks.get(track_id)
        if track is None:
            track = self._tracks[track_id] = _Track(self.initial, 0, time_s)
        track.last_seen_s = time_s
        if state is None:
            return None
        if track.state is None:  # first state seen of a track that adopts it
            track.state = state
            return None
        if state == track.state:
            track.streak = 0
            return None
        track.streak += 1
        if track.streak < self.min_frames:
            return None
        old, track.state, track.streak = track.state, state, 0
        return old, state

    def state(self, track_id: int) -> Hashable:
        """The confirmed state of ``track_id`` (``initial`` for one never seen)."""
        track = self._tracks.get(track_id)
        return self.initial if track is None else track.state

    def forget_unseen(self, time_s: float) -> list[tuple[int, Hashable]]:
        """Forget the tracks last seen more than ``forget_after_s`` before ``time_s``; their
        (track id, confirmed state) pairs, oldest id first."""
        gone = [tid for tid, t in self._tracks.items() if time_s - t.last_seen_s > self.forget_after_s]
        return [(tid, self._tracks.pop(tid).state) for tid in sorted(gone)]

    def __len__(self) -> int:
        return len(self._tracks)
