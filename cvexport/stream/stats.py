"""Counters and latencies of a stream, per source: what the live view shows and summary.json keeps.

Latency percentiles come from log-spaced histograms (1 % wide bins from 1 us to 1000 s), not
from every sample: a camera streaming for a week at 30 fps would otherwise hold tens of
millions of numbers. A reported percentile is within 0.5 % of the exact one; count, mean and
max are exact. The JSONL keeps every frame's latencies for exact analysis.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np

STAGES = ("decode", "queue", "preprocess", "inference", "postprocess", "encode", "end_to_end")
PERCENTILES = (50, 90, 95, 99)
_LOW_S, _HIGH_S, _RATIO = 1e-6, 1e3, 1.01
_BINS = int(math.ceil(math.log(_HIGH_S / _LOW_S) / math.log(_RATIO))) + 1
RECENT = 60  # samples per stage behind the live view's "now" figures (2 s at 30 fps)


class LatencyHistogram:
    """Durations in seconds -> count, mean, max and percentiles (bin centres, see the module doc)."""

    def __init__(self) -> None:
        self.counts = np.zeros(_BINS, dtype=np.int64)
        self.count, self.total, self.max = 0, 0.0, 0.0

    def add(self, seconds: float) -> None:
        seconds = max(float(seconds), 0.0)
        index = 0 if seconds <= _LOW_S else min(_BINS - 1, int(math.log(seconds / _LOW_S) / math.log(_RATIO)) + 1)
        self.counts[index] += 1
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def percentile(self, q: float) -> float:
        if not self.count:
            return float("nan")
        rank = max(1, math.ceil(q / 100 * self.count))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        if index == 0:
            return _LOW_S
        # Bin i holds (LOW * r^(i-1), LOW * r^i]: report its geometric centre, never above the true max.
        return min(_LOW_S * _RATIO ** (index - 0.5), self.max)

    def summary_ms(self) -> dict:
        """{"count", "mean", "p50", "p90", "p95", "p99", "max"} in milliseconds (None when empty)."""
        if not self.count:
            return {"count": 0, "mean": None, **{f"p{q}": None for q in PERCENTILES}, "max": None}
        out = {"count": self.count, "mean": round(self.total / self.count * 1e3, 3)}
        out.update({f"p{q}": round(self.percentile(q) * 1e3, 3) for q in PERCENTILES})
        out["max"] = round(self.max * 1e3, 3)
        return out


class SourceStats:
    """Everything counted for one source; written by several threads, so behind one lock."""

    def __init__(self, name: str):
        self.name = name
        self.lock = threading.Lock()
        self.decoded = self.processed = self.dropped = self.skipped_stride = self.unprocessed = 0
        self.first_decoded_at: float | None = None
        self.last_done_at: float | None = None
        self.latency = {stage: LatencyHistogram() for stage in STAGES}
        self.recent = {stage: deque(maxlen=RECENT) for stage in STAGES}
        # (time, decoded, processed) samples for the live view's rates.
        self.rate_marks: deque = deque(maxlen=64)

    def count_decoded(self, at: float) -> None:
        with self.lock:
            self.decoded += 1
            if self.first_decoded_at is None:
                self.first_decoded_at = at

    def count(self, field: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + n)

    def add_frame(self, latencies: dict[str, float | None], done_at: float) -> None:
        """One processed frame: its per-stage latencies in seconds (None: stage not run)."""
        with self.lock:
            self.processed += 1
            self.last_done_at = done_at
            for stage, seconds in latencies.items():
                if seconds is not None:
                    self.latency[stage].add(seconds)
                    self.recent[stage].append(seconds)

    def rates(self, now: float | None = None, window: float = 2.0) -> tuple[float, float]:
        """(frames decoded per second, frames processed per second) over about the last ``window`` s."""
        now = time.perf_counter() if now is None else now
        with self.lock:
            if not self.rate_marks and self.first_decoded_at is not None:
                # The first reading (e.g. a live view's first poll): the rates since the start,
                # not over the few milliseconds until the next reading.
                self.rate_marks.append((self.first_decoded_at, 0, 0))
            self.rate_marks.append((now, self.decoded, self.processed))
            while len(self.rate_marks) > 2 and now - self.rate_marks[1][0] >= window:
                self.rate_marks.popleft()
            t0, d0, p0 = self.rate_marks[0]
        span = now - t0
        if span <= 0:
            return 0.0, 0.0
        return (self.decoded - d0) / span, (self.processed - p0) / span

    def recent_ms(self, stage: str) -> float | None:
        """Median of the stage's latest samples, in ms (None before any)."""
        with self.lock:
            values = list(self.recent[stage])
        return float(np.median(values)) * 1e3 if values else None
