"""SIGINT / SIGTERM during ``cvexport predict``: the handler's state (:class:`StopRequest`) and
the wait for results it may cut short (:func:`until_stopped`). cvexport.signals installs the
handler; what a stop means for the run (commit what is complete, exit 130 / 143) is in
cvexport.predict.run.
"""

from __future__ import annotations

from typing import Iterable, Iterator

from cvexport.predict.batching import InputResult


class Interrupted(BaseException):
    """Raised by the signal handler into a wait for results, to stop at once."""


class StopRequest:
    """The signal handler's state: the first SIGINT / SIGTERM asks the run to stop, after the
    batch in flight where it ``drains`` (in-process), at once otherwise; a second stops at
    once. "At once" is an exception raised into the wait for the next result only, never into
    a commit: a part written twice would hold its inputs twice."""

    def __init__(self, drains: bool):
        self.drains = drains
        self.signal: str | None = None
        self.count = 0
        self.waiting = False  # the main thread is waiting for the next result

    def __call__(self, name: str) -> None:
        self.count += 1
        self.signal = self.signal or name
        if self.waiting and (self.count > 1 or not self.drains):
            raise Interrupted(name)

    def requested(self) -> bool:
        return self.signal is not None


def until_stopped(results: Iterable[InputResult], stop: StopRequest) -> Iterator[InputResult]:
    """``results``, with the wait for each marked for the signal handler, and ended once a
    stop is asked for where nothing drains."""
    iterator = iter(results)
    while stop.signal is None or stop.drains:
        stop.waiting = True
        try:
            result = next(iterator, None)
        finally:
            stop.waiting = False
        if result is None:
            return
        yield result
