"""The stream pipeline: decode -> preprocess -> batched inference -> postprocess + sinks.

Threads, per source unless said otherwise::

    decoder --inbox--> preparer --ready--> [ONE inference thread, all sources] --sink queue--> sink

* **decoder** demuxes and decodes (PyAV releases the GIL while FFmpeg works). A *live* source
  (camera, network, or a file paced by ``--realtime``) puts into an inbox of one frame where the
  newest frame wins: a frame still waiting when the next arrives is dropped and counted, so lag
  never builds up. A file's inbox is a short FIFO that blocks the decoder instead (nothing dropped).
* **preparer** fits (the bundle's fit: letterbox, stretch, ...) and normalizes one frame at a time (``predictor.prepare_one``, by the
  ``--preprocess`` preparer of :mod:`cvexport.runtime.preparers`). It takes a frame only once the
  inference thread has room for it (``ready_room``), so no work is spent on frames that would be
  dropped, and preprocessing hides behind the inference of the previous batch. For a live
  source it also waits until that inference is about to end (its running mean time, less the
  time preprocessing takes) before it takes the newest frame: a frame prepared as soon as there
  was room would wait a whole inference, stale, before its turn.
* **inference** takes the ready frames of all sources, round robin, up to the bundle's maximum
  batch, without waiting for more (waiting would add latency; on CPU a bigger batch buys
  little), runs the network once (``predictor.infer_batch``) and hands each frame its own outputs
  (``predictor.split``) on to its sink.
* **sink** maps results back to the frame's pixels (``predictor.finish_one``), gives the boxes
  their track ids with ``--track`` (the source's own :class:`cvexport.tracking.Tracker`, fed here
  in frame order with the frame's pts, so frames dropped or skipped are gaps in time) and
  counts them against ``--line`` / ``--zone``, draws and encodes the annotated frame (with each
  track's short trail, and the lines and zones), and writes the JSONL line last (then the
  frame's counting events): a frame's end-to-end latency runs from the moment it left the
  decoder to that line.

Every queue is bounded, so a slow stage pushes back up to the inbox, where a live source drops
and a file waits. A stop (end of every source, ``--frames``, ``--duration``, a signal) closes
the inboxes and lets what is already decoded drain through, then closes every output; a second
signal or an error aborts the drain but still closes the outputs. Every frame a source delivers
ends in exactly one count (processed, dropped, skipped by --stride, or unprocessed at the stop,
wherever an abort left it), and with the corrupt ones they add up to the frames in.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cvexport.errors import CvexportError
from cvexport.runtime.preparers import EXACT, PREPARERS
from cvexport.stream.sinks import JsonlWriter, VideoWriter
from cvexport.stream.sources import Reader, SourceError, SourceEvents, SourceSpec
from cvexport.stream.stats import STAGES, SourceStats

PREPROCESS_MODES = tuple(PREPARERS)
# Threads check their stop flags this often while they wait (seconds).
POLL_S = 0.05
# Live sources: take the newest frame this long (plus the preprocessing time) before the running
# inference is expected to end, as a margin for the estimate's jitter.
JIT_MARGIN_S = 0.003
EWMA_WEIGHT = 0.2  # of the newest sample in the running means of inference and preprocessing times
# A live decoder blocked in a network read is not waited for longer than this once stopping.
DECODER_JOIN_S = 2.0
# Thread switches every 1 ms instead of Python's 5: decoders and the sinks hand the GIL back
# and forth many times per frame, and each hand-over may wait a full interval (measured in
# benchmarks/stream_benchmark.py).
SWITCH_INTERVAL_S = 0.001

_END = object()  # end of a source's frames, passed down every queue in order


@dataclass
class PipelineOptions:
    realtime: bool = False  # pace files and images at their frame rate, then treat them as live
    frames: int | None = None  # stop each source after this many processed frames
    duration: float | None = None  # stop everything after this many seconds
    stride: int = 1  # process every stride-th decoded frame
    video: bool = True  # write the annotated mp4
    preprocess: str = "exact"  # the preparer (cvexport.runtime.preparers): "exact" on the RGB frame, or "ffmpeg"
    on_source_error: str = "fail"  # a source lost mid-run: "fail" stops the run, "skip" goes on without it
    track_lost_seconds: float | None = None  # --track: each source's Tracker keeps a lost track this long; None: off
    counting: Any = None  # --line / --zone: a cvexport.stream.source_counts.CountingOptions; None or empty: off


@dataclass
class ReadyFrame:
    """A frame ready for inference: the predictor's :class:`~cvexport.runtime.predictor.Prepared`
    (its network input and the fit that undoes it), and what the sink needs besides."""

    raw: Any  # the RawFrame
    rgb: np.ndarray | None  # full-size uint8 RGB, when preprocessing needed it
    prepared: Any
    prepare_start: float
    ready_at: float


class Inbox:
    """Decoded frames waiting for the preparer.

    ``newest_wins`` (live sources): room for one frame, ``put`` replaces a waiting frame (and
    says "replaced": a drop). Otherwise a FIFO of ``capacity`` whose ``put`` waits for room.
    ``close`` ends it: later puts are refused ("closed") and ``get`` returns None once it is empty.
    """

    def __init__(self, capacity: int, newest_wins: bool):
        self.items: deque = deque()
        self.capacity = 1 if newest_wins else max(1, capacity)
        self.newest_wins = newest_wins
        self.closed = False
        self.cond = threading.Condition()

    def put(self, item, abort: threading.Event) -> str:
        """"queued", "replaced" (the waiting frame was dropped for this one) or "closed" (refused)."""
        with self.cond:
            if not self.newest_wins:
                while len(self.items) >= self.capacity and not self.closed and not abort.is_set():
                    self.cond.wait(POLL_S)
            if self.closed or abort.is_set():
                return "closed"
            replaced = self.newest_wins and bool(self.items)
            if replaced:
                self.items.clear()
            self.items.append(item)
            self.cond.notify_all()
            return "replaced" if replaced else "queued"

    def get(self, abort: threading.Event):
        with self.cond:
            while not self.items and not self.closed and not abort.is_set():
                self.cond.wait(POLL_S)
            if abort.is_set() or not self.items:
                return None
            item = self.items.popleft()
            self.cond.notify_all()
            return item

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


@dataclass
class StreamSource:
    """One source's runtime state: its reader, queues, counters and outputs."""

    spec: SourceSpec
    reader: Reader
    events: SourceEvents
    stats: SourceStats
    live: bool
    inbox: Inbox = None
    ready: deque = field(default_factory=deque)
    ready_room: threading.Semaphore = None
    sink_queue: queue.Queue = None
    stop: threading.Event = field(default_factory=threading.Event)
    jsonl: JsonlWriter | None = None
    video: VideoWriter | None = None
    status: str = "running"
    error: str | None = None
    first_pts: float | None = None
    size_noted: bool = False  # the frame-size note (a --frame-size bundle, other frames) was given
    prepare_s: float = 0.0  # running mean of this source's preprocessing time
    preparing_since: float = 0.0  # perf_counter when the frame being prepared was taken; 0: none
    threads: list = field(default_factory=list)
    tracker: Any = None  # --track: this source's cvexport.tracking.Tracker, fed by its sink thread only
    counting: Any = None  # --line / --zone: this source's SourceCounts, fed by its sink thread only
    trails: Any = None  # --track: this source's cvexport.stream.trails.Trails for its video, sink thread only


class Pipeline:
    """Runs ``sources`` through ``predictor`` into ``out`` until they end or it is stopped.

    ``predictor``: a :class:`cvexport.runtime.predictor.Predictor` (or anything with its
    ``bundle``, ``task``, ``prepare_one``, ``infer_batch``, ``split`` and ``finish_one``).
    ``log``: one-line messages.
    """

    def __init__(self, predictor, sources: list[StreamSource], out: Path, options: PipelineOptions,
                 log: Callable[[str], None]):
        self.predictor, self.sources, self.out, self.options, self.log = predictor, sources, Path(out), options, log
        self.abort = threading.Event()
        self.stopping = threading.Event()
        self.stopped_by: str | None = None
        self.failure: BaseException | None = None
        self.source_failure: SourceError | None = None
        self.cond = threading.Condition()  # guards every source's ready deque
        self.batch_sizes: Counter = Counter()
        self.cpu_seconds: dict[str, float] = {}
        self.process_cpu_start = 0.0
        self.inference_thread: threading.Thread | None = None
        self.inference_s: float | None = None  # running mean of one inference call
        self.inference_ends = 0.0  # when the running inference should end (perf_counter); 0: idle
        self.started_at = 0.0
        self.preparer = PREPARERS[options.preprocess]
        self.live_view = None  # --serve: a cvexport.stream.live_view.LiveView, handed the annotated pictures
        self.max_batch = max(1, int(predictor.bundle.max_batch))
        for src in sources:
            newest_wins = src.live or options.realtime
            src.inbox = Inbox(2, newest_wins)
            # A live source keeps one prepared frame (the newest) and a short sink queue (a deeper
            # one would only add latency); a file may queue full batches.
            src.ready_room = threading.Semaphore(1 if newest_wins else self.max_batch)
            src.sink_queue = queue.Queue(maxsize=2 if newest_wins else max(2, self.max_batch))

    # ------------------------------------------------------------------ control
    def stop(self, why: str) -> None:
        """Drain: no new frames are taken, what is decoded goes through, outputs close."""
        if self.stopped_by is None:
            self.stopped_by = why
        self.stopping.set()
        for src in self.sources:
            src.stop.set()
            src.inbox.close()

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self.stop("error")
        self.abort.set()

    def _guard(self, role: str, body: Callable, *args) -> Callable:
        """``body(*args)`` for a thread: an exception goes to the main thread (re-raised there),
        and the thread's CPU time is added to ``cpu_seconds[role]`` (what each stage costs, for
        the summary: unlike wall times it does not grow when other work shares the cores)."""
        def run():
            try:
                body(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, re-raised there
                self.fail(exc)
            finally:
                with self.cond:
                    self.cpu_seconds[role] = self.cpu_seconds.get(role, 0.0) + time.thread_time()
        return run

    # ------------------------------------------------------------------ decoder
    def _decode(self, src: StreamSource) -> None:
        options, stats = self.options, src.stats
        paced = options.realtime and not src.live
        pace_origin: tuple[float, float] | None = None
        accepted = 0
        try:
            for raw in src.reader.frames(src.stop):
                stats.count_decoded(raw.decoded_at)
                if raw.index % options.stride:
                    stats.count("skipped_stride")
                    continue
                if paced:
                    # Hold each frame until its time comes, as a camera would deliver it.
                    media_t = raw.pts if raw.pts is not None else raw.index / (src.reader.fps or 30.0)
                    if pace_origin is None:
                        pace_origin = (time.perf_counter(), media_t)
                    wait = pace_origin[0] + (media_t - pace_origin[1]) - time.perf_counter()
                    if wait > 0 and src.stop.wait(wait):
                        stats.count("unprocessed")  # decoded, never to be processed
                        break
                    raw.decoded_at = time.perf_counter()
                outcome = src.inbox.put(raw, self.abort)
                if outcome == "closed":  # stopping: decoded, never to be processed
                    stats.count("unprocessed")
                    break
                if outcome == "replaced":
                    stats.count("dropped")
                accepted += 1
                if options.frames and not src.inbox.newest_wins and accepted >= options.frames:
                    break  # a file drops nothing: exactly this many frames will be processed
        except SourceError as exc:
            src.error = str(exc)
            src.status = "lost" if src.live else "failed"
            if options.on_source_error == "skip" and len(self.sources) > 1:
                self.log(f"{exc}; going on without it (--on-source-error skip)")
            else:
                if self.source_failure is None:
                    self.source_failure = exc
                self.stop("source error")
        finally:
            src.inbox.close()
            src.reader.close()

    # ------------------------------------------------------------------ preparer
    def _prepare_one(self, raw) -> ReadyFrame:
        start = time.perf_counter()
        if raw.rgb is None and self.preparer is not EXACT:
            # Straight from the decoded (YUV) frame: no full-size RGB is made here.
            return ReadyFrame(raw, None, self.predictor.prepare_one(raw.video, self.preparer), start,
                              time.perf_counter())
        # The very preprocessing Predictor.predict does, on the RGB frame (an image source's always).
        rgb = raw.rgb if raw.rgb is not None else raw.video.to_ndarray(format="rgb24")
        return ReadyFrame(raw, rgb, self.predictor.prepare_one(rgb), start, time.perf_counter())

    def _note_frame_size(self, src: StreamSource, raw) -> None:
        """Once per source: frames that differ from a --frame-size bundle's built size cost a
        second fit (the note says what to build instead)."""
        from cvexport.preprocess import frame_size_note

        note = frame_size_note(self.predictor.bundle.input, raw.width, raw.height)
        if note is not None:
            src.size_noted = True
            self.log(f"warning: source {src.spec.name}: {note}")

    def _wait_for_turn(self, src: StreamSource) -> None:
        """A live source's preparer waits until the running inference is about to end (see the
        module docstring), or until it ends, the source closes or the run aborts."""
        with self.cond:
            while not self.abort.is_set() and not src.inbox.closed:
                due = self.inference_ends - 1.5 * src.prepare_s - JIT_MARGIN_S
                wait = due - time.perf_counter()
                if wait <= 0:
                    return
                self.cond.wait(min(wait, POLL_S))

    def _prepare(self, src: StreamSource) -> None:
        while not self.abort.is_set():
            if not src.ready_room.acquire(timeout=POLL_S):
                continue
            if src.inbox.newest_wins:
                self._wait_for_turn(src)
            raw = src.inbox.get(self.abort)
            if raw is None:
                src.ready_room.release()
                break
            src.preparing_since = time.perf_counter()
            if not src.size_noted:
                self._note_frame_size(src, raw)
            item = self._prepare_one(raw)
            seconds = item.ready_at - item.prepare_start
            src.prepare_s = seconds if not src.prepare_s else src.prepare_s + EWMA_WEIGHT * (seconds - src.prepare_s)
            with self.cond:
                src.preparing_since = 0.0
                src.ready.append(item)
                self.cond.notify_all()
        with self.cond:
            src.ready.append(_END)
            self.cond.notify_all()

    # ------------------------------------------------------------------ inference
    def _wait_for_stragglers(self) -> None:
        """With a frame ready, wait (a preprocessing time at most) for live frames being prepared
        right now: they were timed to be ready as this inference starts, and missing the batch
        would cost them a whole inference of waiting. Called with ``self.cond`` held."""
        while not self.abort.is_set():
            now = time.perf_counter()
            due = [src.preparing_since + 1.5 * src.prepare_s for src in self.sources
                   if src.inbox.newest_wins and src.preparing_since and not src.ready]
            due = [t for t in due if t > now]
            if not due:
                return
            self.cond.wait(min(max(due) - now, POLL_S))

    def _take_batch(self, start: int) -> tuple[list[tuple[StreamSource, ReadyFrame]], list[StreamSource]]:
        """Up to max_batch ready frames, one per source per round starting at ``start``; and the
        sources whose end was reached (to be told after this batch's frames)."""
        batch, ended = [], []
        n = len(self.sources)
        progress = True
        while progress and len(batch) < self.max_batch:
            progress = False
            for k in range(n):
                src = self.sources[(start + k) % n]
                if not src.ready or src in ended or len(batch) >= self.max_batch:
                    continue
                item = src.ready.popleft()
                if item is _END:
                    ended.append(src)
                    continue
                batch.append((src, item))
                progress = True
        return batch, ended

    def _infer(self) -> None:
        remaining = set(range(len(self.sources)))
        turn = 0
        while remaining and not self.abort.is_set():
            with self.cond:
                while not any(src.ready for src in self.sources) and not self.abort.is_set():
                    self.cond.wait(POLL_S)
                self._wait_for_stragglers()
                batch, ended = self._take_batch(turn)
                if batch:  # before any preparer gets room: each then knows when to take its next frame
                    self.inference_ends = time.perf_counter() + (self.inference_s or 0.0)
            turn = (turn + 1) % len(self.sources)
            for src, _ in batch:
                src.ready_room.release()
            if batch:
                started = time.perf_counter()
                outputs = self.predictor.infer_batch([item.prepared for _, item in batch])
                seconds = time.perf_counter() - started
                with self.cond:
                    self.inference_s = seconds if self.inference_s is None else \
                        self.inference_s + EWMA_WEIGHT * (seconds - self.inference_s)
                    self.inference_ends = 0.0
                    self.cond.notify_all()
                self.batch_sizes[len(batch)] += 1
                for (src, item), mine in zip(batch, self.predictor.split(outputs, len(batch))):
                    if not self._hand_to_sink(src, (item, mine, started, seconds, len(batch))):
                        src.stats.count("unprocessed")  # aborted: its sink takes nothing more
            for src in ended:
                self._hand_to_sink(src, _END)
                remaining.discard(self.sources.index(src))

    def _hand_to_sink(self, src: StreamSource, entry) -> bool:
        """Put ``entry`` on the source's sink queue; False when the run aborted first."""
        while not self.abort.is_set():
            try:
                src.sink_queue.put(entry, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    # ------------------------------------------------------------------ sink
    def _video_seconds(self, src: StreamSource, raw) -> float:
        """When the frame shows in the mp4: source time for files (every frame kept), arrival
        time for live sources (their gaps are real time)."""
        if src.live or self.options.realtime or raw.pts is None:
            return raw.decoded_at - self.started_at
        if src.first_pts is None:
            src.first_pts = raw.pts
        return raw.pts - src.first_pts

    def _track_seconds(self, raw) -> float:
        """The frame's time for its tracker: its pts where the source has them (a frame dropped
        or skipped by --stride is then a gap the tracker sees), else when it was decoded."""
        return raw.pts if raw.pts is not None else raw.decoded_at - self.started_at

    def _sink(self, src: StreamSource) -> None:
        task, stats, limit = self.predictor.task, src.stats, self.options.frames
        try:
            while True:
                try:
                    entry = src.sink_queue.get(timeout=POLL_S)
                except queue.Empty:
                    if self.abort.is_set():
                        break
                    continue
                if entry is _END:
                    break
                if self.abort.is_set() or (limit and stats.processed >= limit):
                    stats.count("unprocessed")  # in flight when the stop came
                    continue
                item, outputs, infer_start, infer_s, batch_size = entry
                raw = item.raw
                start = time.perf_counter()
                prediction = self.predictor.finish_one(outputs, item.prepared)
                events = []
                if src.tracker is not None:
                    seconds = self._track_seconds(raw)
                    prediction = src.tracker.track(prediction, seconds)
                    src.trails.update(prediction)
                    if src.counting is not None:
                        events = src.counting.update(prediction, raw.width, raw.height, seconds)
                record = task.record(prediction)
                post_done = time.perf_counter()
                encode_s = None
                picture = None
                if src.video is not None:
                    picture = self._write_video(src, raw, item.rgb, prediction)
                    encode_s = time.perf_counter() - post_done
                if self.live_view is not None and self.live_view.watched(src):  # drawn for a viewer only
                    self.live_view.offer(src, *(picture or self._draw(src, raw, item.rgb, prediction)))
                done = time.perf_counter()
                latencies = {
                    "decode": raw.decode_s,
                    "queue": (item.prepare_start - raw.decoded_at) + (infer_start - item.ready_at),
                    "preprocess": item.ready_at - item.prepare_start,
                    "inference": infer_s,
                    "postprocess": post_done - start,
                    "encode": encode_s,
                    "end_to_end": done - raw.decoded_at,
                }
                line = {"frame": raw.index, "pts": None if raw.pts is None else round(raw.pts, 6),
                        "time": round(raw.decoded_at - self.started_at, 6), "width": raw.width, "height": raw.height}
                if raw.path is not None:
                    line["image"] = raw.path
                line["batch"] = batch_size
                line["latency_ms"] = {k: None if v is None else round(v * 1e3, 3) for k, v in latencies.items()}
                line.update(record)
                src.jsonl.write(line)
                for event in events:  # after the frame they happened in, each a line of its own
                    src.jsonl.write({"frame": raw.index, **event, "time": round(event["time"], 6)})
                stats.add_frame(latencies, done)
                if limit and stats.processed >= limit:
                    src.stop.set()  # a live source: its decoder ends, what is in flight is not written
                    src.inbox.close()
        finally:
            self._close_outputs(src)

    def _write_video(self, src: StreamSource, raw, rgb: np.ndarray | None, prediction) -> tuple[Any, str]:
        """The frame's picture into the source's video: drawn on the decoded yuv420p frame
        itself where the task's annotator can (no RGB round trip; see cvexport.yuv420), else
        on its RGB pixels. Returns (picture, "yuv420p" or "rgb24") as :meth:`_draw` does."""
        seconds = self._video_seconds(src, raw)
        picture, fmt = self._draw(src, raw, rgb, prediction)
        if fmt == "yuv420p":
            src.video.write_yuv420(picture, seconds)
        else:
            src.video.write(picture, seconds)
        return picture, fmt

    def _draw(self, src: StreamSource, raw, rgb: np.ndarray | None, prediction) -> tuple[Any, str]:
        """The frame's annotated picture: (yuv420p planes, "yuv420p") drawn on the decoded frame
        where the annotator and the video (if any) take it, else (RGB picture, "rgb24"), with
        the source's lines and zones drawn over it (in RGB)."""
        task, frame = self.predictor.task, raw.video
        if (frame is not None and frame.format.name == "yuv420p" and task.draws_on_yuv420() and src.counting is None
                and (src.video.takes_yuv420(frame.width, frame.height) if src.video is not None
                     else frame.width % 2 == 0 and frame.height % 2 == 0)):
            planes = frame.to_ndarray()
            task.video_picture_yuv420(planes, prediction)
            if src.trails is not None:
                src.trails.draw_yuv420(planes)
            return planes, "yuv420p"
        rgb = rgb if rgb is not None else frame.to_ndarray(format="rgb24")
        picture = task.video_picture(rgb, prediction)
        if src.trails is not None:
            src.trails.draw_rgb(picture)
        if src.counting is not None:  # lines, zones and their counts over the boxes
            src.counting.draw(picture)
        return picture, "rgb24"

    def _close_outputs(self, src: StreamSource) -> None:
        if src.tracker is not None:
            src.tracker.close()  # the tracks still alive end with the source: their lengths count
        for writer in (src.video, src.jsonl):
            if writer is not None:
                try:
                    writer.close()
                except Exception as exc:  # noqa: BLE001 - the other outputs must still close
                    self.log(f"source {src.spec.name}: closing {writer.path.name} failed ({exc})")
        if src.status == "running":  # not lost or failed: it reached its end, or the run was stopped
            src.status = "stopped" if self.stopping.is_set() else "ended"

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        self.started_at = time.perf_counter()
        for src in self.sources:
            src.jsonl = JsonlWriter(self.out / f"{src.spec.name}.jsonl")
            if self.options.video:
                src.video = VideoWriter(self.out / f"{src.spec.name}.mp4", src.reader.fps)
        if self.options.track_lost_seconds is not None:
            from cvexport.stream.trails import Trails
            from cvexport.tracking import Tracker  # optional dependency, only with --track

            for src in self.sources:
                src.tracker = Tracker(lost_seconds=self.options.track_lost_seconds,
                                      frame_rate=src.reader.fps or 30.0)
                src.trails = Trails()
                if self.options.counting:
                    from cvexport.stream.source_counts import SourceCounts

                    src.counting = SourceCounts(self.options.counting)
        self.process_cpu_start = time.process_time()
        self.inference_thread = threading.Thread(target=self._guard("inference", self._infer), name="stream-inference",
                                                 daemon=True)
        for src in self.sources:
            # Daemons: a decoder blocked in a network read must not keep the process alive.
            src.threads = [
                threading.Thread(target=self._guard("decode", self._decode, src), name=f"decode-{src.spec.name}",
                                 daemon=True),
                threading.Thread(target=self._guard("preprocess", self._prepare, src), name=f"prepare-{src.spec.name}",
                                 daemon=True),
                threading.Thread(target=self._guard("sink", self._sink, src), name=f"sink-{src.spec.name}",
                                 daemon=True),
            ]
        for src in self.sources:
            for thread in src.threads:
                thread.start()
        self.inference_thread.start()

    def sinks_done(self) -> bool:
        return all(not src.threads[2].is_alive() for src in self.sources)

    def run(self, tick: Callable[[], None] | None = None, tick_s: float = 0.25) -> None:
        """Start, then wait in this (the main) thread until every sink is done, calling ``tick``
        (the status view) every ``tick_s`` and applying ``--duration``."""
        previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        try:
            self.start()
            while not self.sinks_done():
                time.sleep(min(tick_s, 0.05) if self.stopping.is_set() else tick_s)
                if self.options.duration and not self.stopping.is_set() and \
                        time.perf_counter() - self.started_at >= self.options.duration:
                    self.stop("duration")
                if tick:
                    tick()
            if self.stopped_by is None:
                self.stopped_by = "end"
            self.inference_thread.join(timeout=DECODER_JOIN_S)
            for src in self.sources:
                src.threads[0].join(timeout=DECODER_JOIN_S)
                src.threads[1].join(timeout=DECODER_JOIN_S)
            for src in self.sources:
                self._count_left_behind(src)
        finally:
            sys.setswitchinterval(previous_interval)
        if self.failure is not None:
            raise self.failure
        if self.source_failure is not None:
            raise self.source_failure

    def _count_left_behind(self, src: StreamSource) -> None:
        """Frames an abort (a second signal, an error) left in a queue were decoded and never
        processed: count them, so that a source's frames add up in the summary."""
        left = 0
        with src.inbox.cond:
            left += len(src.inbox.items)
            src.inbox.items.clear()
        with self.cond:
            left += sum(1 for item in src.ready if item is not _END)
            src.ready.clear()
        while True:
            try:
                entry = src.sink_queue.get_nowait()
            except queue.Empty:
                break
            left += entry is not _END
        if left:
            src.stats.count("unprocessed", left)

    # ------------------------------------------------------------------ summary
    def _entry(self, src: StreamSource, planned: bool = False) -> dict:
        """summary.json's entry of a source: as the run ends, or (``planned``) as it starts,
        naming the outputs it is about to write."""
        s = src.stats
        span = (s.last_done_at - s.first_decoded_at) if s.last_done_at and s.first_decoded_at else None
        # Every source frame reached is processed, dropped, skipped (--stride), corrupt or
        # unprocessed at the stop. A frame still held by a thread that did not end (a stage
        # stuck past its join timeout) was in flight when the run stopped, so it is counted
        # with the unprocessed ones: the counts add up whatever happened.
        frames_in = s.decoded + src.events.corrupt
        accounted = s.processed + s.dropped + s.skipped_stride + s.unprocessed + src.events.corrupt
        unprocessed = s.unprocessed + max(0, frames_in - accounted)
        if planned:
            video = f"{src.spec.name}.mp4" if self.options.video else None
        else:
            video = f"{src.spec.name}.mp4" if src.video is not None and src.video.frames else None
        return {
            "name": src.spec.name, "source": src.spec.text, "kind": src.spec.kind, "live": src.live,
            "jsonl": f"{src.spec.name}.jsonl", "video": video,
            "width": src.reader.width, "height": src.reader.height,
            "source_fps": None if not src.reader.fps else round(src.reader.fps, 3),
            "status": src.status, "error": src.error,
            "frames_in": frames_in, "frames_processed": s.processed, "frames_dropped": s.dropped,
            "frames_corrupt_skipped": src.events.corrupt, "frames_skipped_stride": s.skipped_stride,
            "frames_unprocessed_at_stop": unprocessed, "reconnects": src.events.reconnects,
            "seconds": None if span is None else round(span, 3),
            "fps_in": None if not span else round(s.decoded / span, 2),
            "fps_out": None if not span else round(s.processed / span, 2),
            "latency_ms": {stage: s.latency[stage].summary_ms() for stage in STAGES},
            **({} if self.options.track_lost_seconds is None else
               {"tracks": None if planned or src.tracker is None else src.tracker.stats()}),
            **({} if not self.options.counting else
               {"counts": None if planned or src.counting is None else src.counting.summary()}),
        }

    def planned_entries(self) -> list[dict]:
        """Each source's summary entry before the run starts (see :meth:`_entry`)."""
        return [self._entry(src, planned=True) for src in self.sources]

    def summary(self) -> dict:
        sources = [self._entry(src) for src in self.sources]
        processed = sum(src.stats.processed for src in self.sources)
        with self.cond:
            cpu = dict(self.cpu_seconds)
        # The process's CPU time beyond the stage threads': the backend's own worker threads
        # (ONNX Runtime's intra-op pool past its first thread), the main thread, the encoder's threads.
        cpu["other"] = max(0.0, time.process_time() - self.process_cpu_start - sum(cpu.values()))
        return {"sources": sources, "batches": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "stopped_by": self.stopped_by, "seconds": round(time.perf_counter() - self.started_at, 3),
                "cpu_ms_per_frame": {role: round(seconds * 1e3 / processed, 3) if processed else None
                                     for role, seconds in sorted(cpu.items())}}


def skipped_entry(text: str, error: BaseException, spec: SourceSpec | None = None) -> dict:
    """summary.json's entry of a source left out by ``--on-source-error skip`` before it ran
    (``spec`` None: the argument could not even be understood): the same keys as a run
    source's, status "skipped", the error, nothing counted."""
    from cvexport.stream.stats import LatencyHistogram

    empty = LatencyHistogram().summary_ms()
    return {
        "name": spec.name if spec else None, "source": text, "kind": spec.kind if spec else None,
        "live": spec.live if spec else None, "jsonl": None, "video": None, "width": None, "height": None,
        "source_fps": None, "status": "skipped", "error": str(error),
        "frames_in": 0, "frames_processed": 0, "frames_dropped": 0, "frames_corrupt_skipped": 0,
        "frames_skipped_stride": 0, "frames_unprocessed_at_stop": 0, "reconnects": 0,
        "seconds": None, "fps_in": None, "fps_out": None, "latency_ms": {stage: dict(empty) for stage in STAGES},
    }


def check_mode(preprocess: str) -> str:
    if preprocess not in PREPROCESS_MODES:
        raise CvexportError(f"--preprocess {preprocess!r} is not known; use one of: {', '.join(PREPROCESS_MODES)}")
    return preprocess
