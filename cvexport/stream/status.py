"""What ``cvexport stream`` shows while it runs.

* ``live`` (default on a terminal): a rich table redrawn in place, one row per source: state,
  FPS in and out, dropped / corrupt frames, reconnects, and the recent median latency of each
  stage (decode, queue wait, preprocess, inference, postprocess, encode) and end to end.
* ``plain`` (default when stderr is not a terminal, e.g. a log file or a service): one line per
  source every ``interval`` seconds.
* ``none``: nothing but warnings and the final lines.

Everything goes to stderr, so stdout stays clean for the final per-source lines.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

STATUS_MODES = ("auto", "live", "plain", "none")
SHORT = {"decode": "dec", "queue": "queue", "preprocess": "pre", "inference": "infer", "postprocess": "post",
         "encode": "enc", "end_to_end": "e2e"}


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def source_status(src, now: float | None = None) -> dict:
    """One source's figures now (a StreamSource): what the terminal rows and the live view's
    page, ``/status.json`` and ``/metrics`` show, so they never disagree.

    Keys: name, state, fps_in, fps_out (over the last ~2 s), processed, dropped, corrupt,
    reconnects, each stage of SHORT (its recent median in ms, None before any), e2e_p50_ms and
    e2e_p95_ms (end to end over the whole run), and ``counts`` where the source has them."""
    now = time.perf_counter() if now is None else now
    fps_in, fps_out = src.stats.rates(now)
    state = src.events.state if src.status == "running" else src.status
    with src.stats.lock:  # the sink thread adds to the histogram meanwhile
        e2e = src.stats.latency["end_to_end"].summary_ms()
    row = {"name": src.spec.name, "state": state, "fps_in": fps_in, "fps_out": fps_out,
           "processed": src.stats.processed, "dropped": src.stats.dropped,
           "corrupt": src.events.corrupt, "reconnects": src.events.reconnects,
           **{stage: src.stats.recent_ms(stage) for stage in SHORT},
           "e2e_p50_ms": e2e["p50"], "e2e_p95_ms": e2e["p95"]}
    counting = getattr(src, "counting", None)  # --line / --zone: its SourceCounts
    if counting is not None:
        row["counts"] = _snapshot(counting.status)
    return row


def _snapshot(make: Callable[[], dict]) -> dict:
    """``make()``, a dict read from counters the sink thread adds to meanwhile (reading one while
    it grows raises): tried again until it reads whole."""
    for _ in range(10):
        try:
            return make()
        except RuntimeError:  # "dictionary changed size during iteration": try again
            continue
    return {}


class StatusView:
    """``log(line)`` for messages, ``tick()`` from the main loop, ``close()`` at the end."""

    def __init__(self, mode: str, interval: float = 5.0):
        if mode == "auto":
            mode = "live" if sys.stderr.isatty() else "plain"
        self.mode, self.interval = mode, interval
        self.sources: list = []
        self.live = None
        self.console = None
        self.last_plain = time.perf_counter()

    def attach(self, sources: list) -> None:
        """Start showing ``sources`` (StreamSource objects)."""
        self.sources = sources
        if self.mode == "live":
            from rich.console import Console
            from rich.live import Live

            self.console = Console(stderr=True)
            self.live = Live(self._table(), console=self.console, refresh_per_second=4, transient=False)
            self.live.start()

    def log(self, line: str) -> None:
        text = f"cvexport: {line}"
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def _rows(self) -> list[dict]:
        now = time.perf_counter()
        return [source_status(src, now) for src in self.sources]

    def _table(self):
        """Two tables, counts then latencies, so that each fits an 80-column terminal."""
        from rich import box
        from rich.console import Group
        from rich.table import Table

        def table(title: str, headers: tuple[str, ...]) -> Table:
            t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
            for header in headers:
                left = header in ("source", "state")
                t.add_column(header, justify="left" if left else "right", no_wrap=True,
                             min_width=None if left else len(header),
                             max_width=20 if header == "source" else None, overflow="ellipsis")
            return t

        counts = table("cvexport stream", ("source", "state", "in/s", "out/s", "done", "dropped", "corrupt",
                                           "reconn"))
        latency = table("latency, recent median (ms)", ("source", *SHORT.values()))
        for row in self._rows():
            counts.add_row(row["name"], row["state"], f"{row['fps_in']:.1f}", f"{row['fps_out']:.1f}",
                           str(row["processed"]), str(row["dropped"]), str(row["corrupt"]), str(row["reconnects"]))
            latency.add_row(row["name"], *(_ms(row[stage]) for stage in SHORT))
        return Group(counts, latency)

    def tick(self) -> None:
        if self.mode == "live" and self.live is not None:
            self.live.update(self._table())
        elif self.mode == "plain" and time.perf_counter() - self.last_plain >= self.interval:
            self.last_plain = time.perf_counter()
            for row in self._rows():
                stages = " ".join(f"{SHORT[s]} {_ms(row[s])}" for s in SHORT)
                print(f"{row['name']}: {row['state']}, in {row['fps_in']:.1f} fps, out {row['fps_out']:.1f} fps, "
                      f"{row['processed']} done, {row['dropped']} dropped, {row['corrupt']} corrupt, "
                      f"{row['reconnects']} reconnects | ms: {stages}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.stop()
            self.live = None
