"""Synthetic multi-object tracking sequences: ground-truth identities and the noisy detections a
detector would give, frame by frame, at 30 fps.

A tracker takes detections, not pictures, so no frame is drawn: each object is a box moving on a
path, and every frame holds the truth (ids, boxes) and detections made from it. The sequences have
what makes tracking hard: paths that cross, an object hidden behind a nearer one for a while (its
detection missing), objects leaving and entering the frame, box jitter, score noise, missed
detections and false positives. ``drop_frames`` removes a share of the frames and keeps each
remaining frame's timestamp, as a stream that falls behind does.

The motion is not ``cvexport.stream.synthetic.Scene``'s: its shapes bounce inside the frame
forever (no object ever leaves or enters) and it loads a photograph; here paths cross the frame
and leave it.

Everything is a pure function of the arguments (one NumPy generator per seed): a test and a
benchmark that ask for the same sequence get the same boxes and scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cvexport.results import Detections

CLASS_NAMES = ("object",)
FPS = 30.0
SIZE_RANGE = (0.06, 0.14)  # sqrt(w * h) of an object, as a fraction of the frame's long side
ASPECT_RANGE = (1.2, 2.6)  # height / width: upright, pedestrian-like boxes
CROSSING_SECONDS = (3.0, 8.0)  # how long an object takes to cross the frame's width
HIDDEN_BELOW = 0.5  # an object less than half visible (behind nearer ones or outside) is not detected
IN_FRAME_ABOVE = 0.2  # an object counts as in the frame (ground truth) once 20% of its box is inside


@dataclass(frozen=True)
class SequenceFrame:
    """One frame: its index in the full-rate sequence, its time, the truth and the detections.

    truth_ids (int64 [M]) and truth_xyxy (float64 [M, 4], clipped to the frame) hold every object
    at least ``IN_FRAME_ABOVE`` inside the frame, occluded ones too (a tracker is expected to keep
    them). ``hidden`` (int64) lists the truth ids left undetected because they were occluded.
    """

    index: int
    time_s: float
    truth_ids: np.ndarray
    truth_xyxy: np.ndarray
    detections: Detections
    hidden: np.ndarray


@dataclass(frozen=True)
class _Path:
    """Where one object is at time t: centre = start + velocity * t + accel * t^2 / 2 (pixels,
    seconds); ``depth`` orders occlusion (smaller is nearer the camera)."""

    start: np.ndarray
    velocity: np.ndarray
    accel: np.ndarray
    width: float
    height: float
    depth: float

    def box(self, t: float) -> np.ndarray:
        cx, cy = self.start + self.velocity * t + 0.5 * self.accel * t * t
        return np.array([cx - self.width / 2, cy - self.height / 2, cx + self.width / 2, cy + self.height / 2])


def make_sequence(objects: int = 4, frames: int = 90, *, width: int = 1280, height: int = 720, seed: int = 0,
                  jitter_px: float = 3.0, score_noise: float = 0.08, miss_rate: float = 0.03,
                  false_positives: float = 0.1, drop: float = 0.0,
                  size_range: tuple[float, float] = SIZE_RANGE) -> list[SequenceFrame]:
    """``frames`` frames at 30 fps of ``objects`` objects moving through a ``width`` x ``height`` frame.

    The first two objects always cross head-on in the middle of the frame halfway through, the
    first (wider) in front: the second is hidden for about half a second; with three or more, the third enters
    from the left a third of the way in and the fourth leaves on the right about two thirds of the
    way in. The others cross the frame on random paths at random times. Detections: each box
    coordinate moved by Gaussian ``jitter_px``; scores around 0.85 (lower when partly covered)
    plus Gaussian ``score_noise``; each object missed with ``miss_rate``; on average
    ``false_positives`` spurious boxes a frame, at scores 0.2-0.7. ``drop``: see ``drop_frames``.
    ``size_range``: sqrt(w * h) of the objects as fractions of the long side (smaller ones for
    crowds: a hundred objects of the default size would hide each other most of the time).
    """
    if objects < 1 or frames < 1:
        raise ValueError(f"a sequence needs objects and frames, not objects={objects}, frames={frames}")
    rng = np.random.default_rng([seed, objects, frames, width, height])
    paths = _scripted_paths(rng, objects, frames, width, height, size_range)
    paths += [_random_path(rng, frames, width, height, size_range) for _ in range(objects - len(paths))]
    sequence = [_frame(rng, paths, index, width, height, jitter_px, score_noise, miss_rate, false_positives,
                       size_range)
                for index in range(frames)]
    return drop_frames(sequence, drop, seed) if drop else sequence


def drop_frames(sequence: list[SequenceFrame], fraction: float, seed: int = 0) -> list[SequenceFrame]:
    """``sequence`` without a random ``fraction`` of its frames (the first is always kept); the
    frames left keep their own time and index, so the gaps show in ``time_s``. The frames kept are
    the full sequence's frames themselves: dropping changes what the tracker sees, nothing else."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"the fraction of frames to drop must be in [0, 1), not {fraction}")
    drop_count = min(round(fraction * len(sequence)), len(sequence) - 1)
    rng = np.random.default_rng([seed, len(sequence), 7919])  # its own stream: the detections stay as they were
    dropped = set(rng.choice(np.arange(1, len(sequence)), size=drop_count, replace=False).tolist())
    return [frame for frame in sequence if frame.index not in dropped]


def _size(rng: np.random.Generator, long_side: int, size_range: tuple[float, float]) -> tuple[float, float]:
    side = rng.uniform(*size_range) * long_side
    aspect = rng.uniform(*ASPECT_RANGE)
    return float(side / np.sqrt(aspect)), float(side * np.sqrt(aspect))


def _speed(rng: np.random.Generator, width: int) -> float:
    return width / rng.uniform(*CROSSING_SECONDS)  # pixels per second


def _scripted_paths(rng: np.random.Generator, objects: int, frames: int, width: int, height: int,
                    size_range: tuple[float, float]) -> list[_Path]:
    """The situations every sequence has (as many as ``objects`` allows): a head-on crossing with
    an occlusion, an object entering, an object leaving."""
    duration = frames / FPS
    long_side = max(width, height)
    paths = []
    w, h = _size(rng, long_side, size_range)
    # The slowest walker and a wide one in front coming towards it at half its speed: the one
    # behind is covered for about half a second (0.4-0.6 s at any size), long enough to need the
    # tracker's memory, short enough for ``lost_seconds`` of 1 s.
    speed = width / CROSSING_SECONDS[1]
    middle = duration / 2
    centre = np.array([width / 2, height / 2])
    for direction, offset, depth, wide in ((1.0, 0.0, 0.0, 1.5), (-0.5, 0.12 * h, 1.0, 1.0)):  # the first is nearer
        velocity = np.array([direction * speed, 0.0])
        start = centre + np.array([0.0, offset]) - velocity * middle  # both at the centre at ``middle``
        paths.append(_Path(start, velocity, np.zeros(2), wide * w, h, depth))
    if objects >= 3:  # enters from the left a third of the way in
        w, h = _size(rng, long_side, size_range)
        velocity = np.array([_speed(rng, width), rng.uniform(-0.05, 0.05) * height])
        t_enter = duration / 3
        start = np.array([-w / 2, rng.uniform(0.25, 0.75) * height]) - velocity * t_enter
        paths.append(_Path(start, velocity, np.zeros(2), w, h, float(rng.uniform(0, 2))))
    if objects >= 4:  # leaves on the right about two thirds of the way in
        w, h = _size(rng, long_side, size_range)
        velocity = np.array([_speed(rng, width), rng.uniform(-0.05, 0.05) * height])
        t_leave = 2 * duration / 3
        start = np.array([width + w / 2, rng.uniform(0.25, 0.75) * height]) - velocity * t_leave
        paths.append(_Path(start, velocity, np.zeros(2), w, h, float(rng.uniform(0, 2))))
    return paths[:objects]


def _random_path(rng: np.random.Generator, frames: int, width: int, height: int,
                 size_range: tuple[float, float]) -> _Path:
    """A path through a random point of the frame at a random time of the sequence, in a random
    direction, bending a little (constant acceleration): a Kalman filter's straight line is not
    exactly right."""
    w, h = _size(rng, max(width, height), size_range)
    angle = rng.uniform(0, 2 * np.pi)
    velocity = _speed(rng, width) * np.array([np.cos(angle), 0.5 * np.sin(angle)])  # mostly sideways, as on a street
    accel = rng.normal(0, 0.1, size=2) * np.linalg.norm(velocity)  # per second: a few degrees of turn a second
    t_pass = rng.uniform(0, frames / FPS)
    point = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.2, 0.8) * height])
    start = point - velocity * t_pass - 0.5 * accel * t_pass * t_pass
    return _Path(start, velocity, accel, w, h, float(rng.uniform(0, 2)))


def _frame(rng: np.random.Generator, paths: list[_Path], index: int, width: int, height: int, jitter_px: float,
           score_noise: float, miss_rate: float, false_positives: float,
           size_range: tuple[float, float]) -> SequenceFrame:
    t = index / FPS
    boxes = np.stack([p.box(t) for p in paths])
    clipped = _clip(boxes, width, height)
    areas = _area(boxes)
    inside = _area(clipped) / areas
    present = np.flatnonzero(inside > IN_FRAME_ABOVE)
    depths = np.array([p.depth for p in paths])
    # Visible share: inside the frame, less the largest part one nearer object covers (one cover,
    # not their union: a fair approximation for boxes this size).
    covered = np.zeros(len(paths))
    for i in present:
        nearer = [j for j in present if depths[j] < depths[i]]
        if nearer:
            covered[i] = max(_intersection(clipped[i], clipped[j]) for j in nearer) / areas[i]
    visible = inside - covered
    hidden = np.array([i for i in present if visible[i] < HIDDEN_BELOW and inside[i] >= HIDDEN_BELOW], np.int64)

    # One draw of every random number per object and frame, detected or not, so that a change of
    # one object's visibility does not shift every later object's noise.
    n = len(paths)
    jitter = rng.normal(0, jitter_px, size=(n, 4))
    score = 0.85 + rng.normal(0, score_noise, size=n) - 0.4 * np.clip(1 - visible, 0, 1)
    missed = rng.random(n) < miss_rate
    detected = [i for i in present if visible[i] >= HIDDEN_BELOW and not missed[i]]
    xyxy = _clip(boxes[detected] + jitter[detected], width, height)
    scores = np.clip(score[detected], 0.05, 0.99)

    spurious = rng.poisson(false_positives)
    if spurious:
        long_side = max(width, height)
        sides = rng.uniform(*size_range, size=spurious) * long_side
        shape = sides[:, None] * np.array([0.6, 1.4])
        corners = rng.uniform(0, 1, size=(spurious, 2)) * np.clip([width, height] - shape, 1, None)
        fp_boxes = _clip(np.column_stack([corners, corners + shape]), width, height)
        xyxy = np.concatenate([xyxy, fp_boxes])
        scores = np.concatenate([scores, rng.uniform(0.2, 0.7, size=spurious)])
    return SequenceFrame(
        index=index, time_s=t, truth_ids=present.astype(np.int64), truth_xyxy=clipped[present],
        detections=Detections(xyxy, scores, np.zeros(len(scores), np.int64), CLASS_NAMES), hidden=hidden)


def _clip(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.clip(boxes, 0, [width, height, width, height])


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return float(max(w, 0.0) * max(h, 0.0))
