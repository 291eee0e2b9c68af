"""Prediction over inputs: frames of consecutive inputs share batches; results come back per
input, whole, in input order (:func:`predict_inputs`). The in-process run and every Ray actor
predict through it, so both give the same rows as ``Predictor.predict`` on the same frames.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from cvexport.errors import CvexportError
from cvexport.predict.inputs import InputFile
from cvexport.predict.rows import prediction_row
from cvexport.video_decode import DecodeStats, read_frames


@dataclass
class InputResult:
    """One input on its way through: its rows so far, or why it failed; complete once ``finished``."""

    item: InputFile
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    read: bool = False  # every frame read
    pending: int = 0  # frames read but not yet predicted
    lost_frames: int = 0  # of a damaged video: frames skipped as undecodable (cvexport.video_decode)

    @property
    def finished(self) -> bool:
        return self.error is not None or (self.read and self.pending == 0)


def predict_inputs(predictor, items: Iterable[InputFile], batch: int, stride: int = 1,
                   stop: Callable[[], bool] | None = None) -> Iterator[InputResult]:
    """Each input's rows (or its failure), in input order, as soon as the input is complete.
    Frames are predicted in batches of ``batch`` across input boundaries, so a folder of
    single images still runs full batches; a file that fails drops its frames, not the batch.

    ``stop()``, asked before each frame is read, ends the run early (a signal): the frames
    already read are still predicted, so every input read whole comes out, and the input being
    read is dropped (a part only ever holds whole inputs; a rerun does it again)."""
    pending: list[tuple[InputResult, int, float | None, np.ndarray]] = []
    order: deque[InputResult] = deque()
    task = predictor.task

    def flush() -> None:
        live = [entry for entry in pending if entry[0].error is None]
        pending.clear()
        if live:
            prepared = predictor.prepare([entry[3] for entry in live])
            predictions = predictor.finish(predictor.infer(prepared.feed), prepared)
            for (state, frame, time_s, image), prediction in zip(live, predictions):
                state.rows.append(prediction_row(task, state.item, frame, time_s, image, prediction))
        for state in order:
            state.pending = 0

    def finished() -> Iterator[InputResult]:
        while order and order[0].finished:
            yield order.popleft()

    stopped = stop or (lambda: False)
    for item in items:
        if stopped():
            break
        state = InputResult(item)
        order.append(state)
        decoded = DecodeStats()
        try:
            for frame, time_s, image in read_frames(item, stride, stats=decoded):
                if stopped():
                    break
                pending.append((state, frame, time_s, image))
                state.pending += 1
                if len(pending) >= batch:
                    flush()
            else:
                state.read = True
                state.lost_frames = decoded.lost
        except CvexportError as exc:
            state.error = str(exc)
            state.rows.clear()
        if not state.read and state.error is None:  # stopped while reading it: drop it
            order.pop()
            pending[:] = [entry for entry in pending if entry[0] is not state]
            break
        yield from finished()
    flush()
    yield from finished()
