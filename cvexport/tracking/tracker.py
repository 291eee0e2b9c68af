"""``Tracker``: track ids for our typed :class:`cvexport.results.Detections`, frame after frame.

It wraps roboflow ``trackers``' ``ByteTrackTracker`` rather than a tracker of our own: that
package is kept up (a port of TrackEval's metrics comes with it to measure it), it is by the
authors of supervision (whose ``sv.Detections`` it takes, the model of our ``Detections``), and
it is *time-aware*: given each frame's timestamp, its Kalman filter predicts over the real time
elapsed (``frame_step = elapsed * frame_rate``) and a lost track expires after a budget in
seconds, not in calls. A frame the stream dropped or skipped (``--stride``) is a gap in time,
not a broken track.

Choices:

* **Class-agnostic**: one tracker over all classes, as ByteTrack is. A box whose label flickers
  between two classes keeps its id; each frame's row carries the class, score and box of that
  frame's detection, never a smoothed one.
* **Detector boxes, not filter states**: the boxes are the detector's own; tracking only adds
  ids. :meth:`Tracker.track` keeps every detection in its order, and a detection in no
  confirmed track (too new, ``min_frames`` not reached, or a low score that matched nothing)
  has ``NO_TRACK`` (-1), which records write as ``"track_id": null``. :meth:`Tracker.update`
  gives the confirmed ones only.
* ``lost_seconds`` is the time a confirmed track survives unmatched. ByteTrack counts it in
  30 fps frames (``lost_track_buffer``) for its frame-count mode (no timestamps) and in seconds
  (``lost_track_buffer / 30``) with timestamps; the seconds budget is set exactly here.
"""

from __future__ import annotations

import math

import numpy as np

from cvexport.results import NO_TRACK, Detections

_INDEX_KEY = "cvexport_index"  # the detection's position in the frame, carried through ByteTrack's reordering
_REFERENCE_FPS = 30.0  # ByteTrack's lost_track_buffer is in frames at this rate


def _summary(values: list[float], decimals: int) -> dict:
    """count, mean, p50 and max of ``values`` (None where there are none)."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "max": None}
    array = np.asarray(values, dtype=np.float64)
    return {"count": len(values), "mean": round(float(array.mean()), decimals),
            "p50": round(float(np.median(array)), decimals), "max": round(float(array.max()), decimals)}


class Tracker:
    """Track ids for the detections of one video, fed its frames in order (one per source).

    lost_seconds: how long a confirmed track may go unmatched before it ends.
    frame_rate: the video's rate; it scales the filter's motion per second of elapsed time.
    min_frames: consecutive matched frames before a track is confirmed and gets an id.
    match_iou: the least IoU between a track's predicted box and a detection to match them.
    high_score: detections at or above it are matched first; the rest only revive tracks.
    activation_score: the least score of a detection that starts a new track.
    """

    def __init__(self, *, lost_seconds: float = 1.0, frame_rate: float = 30.0, min_frames: int = 2,
                 match_iou: float = 0.1, high_score: float = 0.5, activation_score: float = 0.5):
        from trackers import ByteTrackTracker  # optional dependency (the "track" extra)

        if not (math.isfinite(lost_seconds) and lost_seconds >= 0):
            raise ValueError(f"lost_seconds must be a finite number >= 0, not {lost_seconds}")
        if not (math.isfinite(frame_rate) and frame_rate > 0):
            raise ValueError(f"frame_rate must be a finite number > 0, not {frame_rate}")
        self.frame_rate = float(frame_rate)
        self._bytetrack = ByteTrackTracker(
            lost_track_buffer=math.ceil(lost_seconds * _REFERENCE_FPS), frame_rate=frame_rate,
            track_activation_threshold=activation_score, minimum_consecutive_frames=min_frames,
            minimum_iou_threshold=match_iou, high_conf_det_threshold=high_score)
        # With timestamps ByteTrack's budget is lost_track_buffer / 30 s: the ceil above would
        # round it up to the next 1/30 s, so the exact seconds go in (a plain attribute it reads).
        self._bytetrack.maximum_time_without_update = float(lost_seconds)
        self._frames = 0
        self._last_time: float | None = None  # the last frame's time (shifted), to see time go back
        self._time_offset = 0.0
        # Confirmed tracks still alive: id -> [first time, last matched time, frames matched].
        self._active: dict[int, list] = {}
        self._finished: list[tuple[int, float]] = []  # (frames matched, seconds first -> last match)
        self._started = 0

    def track(self, detections: Detections, time_s: float | None) -> Detections:
        """``detections`` (all of them, in their order, unchanged) with ``track_ids`` set:
        the confirmed track's id, or ``NO_TRACK`` (-1) for a detection in none.

        ``time_s``: the frame's time in seconds; None counts one frame at ``frame_rate``. A time
        earlier than the last frame's (a looped file) goes on from it, a frame period later.
        """
        import supervision as sv

        if time_s is not None:
            if self._last_time is not None and time_s + self._time_offset < self._last_time:
                # Time went back (a looped file's pts start again): shift it on past the last
                # frame; ByteTrack would skip every frame until the old time came round again.
                self._time_offset = self._last_time - time_s + 1.0 / self.frame_rate
            time_s = self._last_time = time_s + self._time_offset
        now = self._frames / self.frame_rate if time_s is None else float(time_s)
        self._frames += 1
        inputs = sv.Detections(xyxy=detections.xyxy.astype(np.float32).reshape(-1, 4),
                               confidence=detections.scores.astype(np.float32),
                               class_id=detections.class_ids.astype(int),
                               data={_INDEX_KEY: np.arange(len(detections))})
        tracked = self._bytetrack.update(inputs, timestamp=time_s)
        track_ids = np.full(len(detections), NO_TRACK, dtype=np.int64)
        if len(tracked):
            track_ids[np.asarray(tracked.data[_INDEX_KEY], dtype=np.int64)] = tracked.tracker_id
        self._account(track_ids, now)
        return Detections(detections.xyxy, detections.scores, detections.class_ids, detections.class_names,
                          track_ids)

    def update(self, detections: Detections, time_s: float | None) -> Detections:
        """Tracked detections of this frame: the confirmed tracks' boxes with track_ids set (int64),
        class ids / names / scores carried over from the matched detections (in input order)."""
        tracked = self.track(detections, time_s)
        return tracked[tracked.track_ids != NO_TRACK]

    def _account(self, track_ids: np.ndarray, now: float) -> None:
        """Starts, matches and ends of confirmed tracks after a frame, for :meth:`stats`."""
        for track_id in track_ids[track_ids != NO_TRACK].tolist():
            entry = self._active.get(track_id)
            if entry is None:
                self._active[track_id] = [now, now, 1]
                self._started += 1
            else:
                entry[1], entry[2] = now, entry[2] + 1
        alive = {t.tracker_id for t in self._bytetrack.tracks if t.tracker_id != NO_TRACK}
        for track_id in [t for t in self._active if t not in alive]:
            self._end(track_id)

    def _end(self, track_id: int) -> None:
        first, last, frames = self._active.pop(track_id)
        self._finished.append((frames, last - first))

    def stats(self) -> dict:
        """{"started", "ended", "active": confirmed tracks, "lengths": {"frames", "seconds"}:
        count, mean, p50 and max over the finished tracks (frames matched; seconds from the
        first to the last match)}."""
        return {"started": self._started, "ended": len(self._finished), "active": len(self._active),
                "lengths": {"frames": _summary([f for f, _ in self._finished], 2),
                            "seconds": _summary([s for _, s in self._finished], 3)}}

    def close(self) -> None:
        """End every active track (their lengths count in :meth:`stats`); the tracker starts afresh."""
        for track_id in list(self._active):
            self._end(track_id)
        self._bytetrack.reset()
