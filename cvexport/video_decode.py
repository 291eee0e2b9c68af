"""Decoding a video's frames: the one rule of ``stream`` and ``predict`` for damaged video.

A damaged file (a bad sector, a broken download, zeroed bytes) still holds good frames before
and after the damage. Every command keeps each frame that decodes cleanly, skips the others,
counts them as lost, and numbers each frame by its place in the *source*, not by how many
decoded before it: a result for frame 27 is about source frame 27 whatever was lost before it.

How a decoded frame's source number is found:

* **rank**: packets arrive in decode order, each with its presentation timestamp; a decoded
  frame's number is how many of the source's packets are shown before it. Exact with B-frames
  (a decoder outputs a frame only once every frame shown before it has been decoded, so their
  packets have all been seen) and with a variable frame rate (no rate is involved), whenever
  the demuxer still delivers the damaged frames' packets, as an indexed container (mp4, mov)
  always does: its index lists every packet, damaged or not.
* **grid**: a file without such an index (mkv, MPEG-TS, ...) is read by resyncing past damaged
  bytes, and their packets never arrive, so ranks would renumber every later frame. For a
  constant-rate stream a frame's number is instead its place on the rate's grid,
  (pts - start) x rate: frames that never arrived leave a gap in the numbers, counted as lost.
  (Decode timestamps are no help there: FFmpeg guesses them for mkv, wrongly after a resync.)
  Not applied to mp4 / mov (nothing goes missing there, and phones record variable-rate mp4
  whose pauses are not losses) nor to cameras and network feeds (a camera that lowers its
  rate in dim light has lost nothing).
* **end**: frames after the last packet the demuxer delivered (a truncated file): the
  container's frame count (mp4) or, for a constant rate, its duration says how many.
* **no timestamps**: frames are numbered in decode order and each undecodable packet or
  corrupt frame counts as one lost frame.

:func:`read_frames` is the rule for ``predict`` (one file at a time); the stream's
:class:`~cvexport.stream.sources.VideoReader` runs :class:`FrameDecoder` on files, cameras and
feeds alike.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cvexport.errors import CvexportError

# Containers whose index lists every packet: damaged packets still arrive (and are ranked), and
# their timestamps may legitimately jump (variable-rate phone video), so gaps are no loss there.
INDEXED_FORMATS = ("mov", "mp4")
# A jump along the grid longer than this is a timestamp discontinuity (a spliced or restarted
# recording), not that many lost frames.
MAX_GAP_S = 60.0


@dataclass
class DecodeStats:
    """What decoding one video found: ``frames`` decoded cleanly, ``lost`` source frames skipped
    (undecodable, flagged corrupt or missing from the file), and ``read_error``: why reading
    stopped before the file's end, when it did (the frames after it count as lost)."""

    frames: int = 0
    lost: int = 0
    read_error: str | None = None


@dataclass
class DecodedFrame:
    """One cleanly decoded frame: its source number, its time in seconds on the source's clock
    (None when unknown), the PyAV VideoFrame, the time spent decoding it and
    ``time.perf_counter()`` when it left the decoder."""

    index: int
    time: float | None
    frame: Any
    decode_s: float
    decoded_at: float


def av_reason(exc: BaseException) -> str:
    """FFmpeg's own words for ``exc``, without the errno number and path PyAV adds around them."""
    reason = getattr(exc, "strerror", None)
    if reason:
        return str(reason)
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class FrameDecoder:
    """The decoded frames of one opened PyAV ``container``'s video ``stream``, numbered and with
    losses counted by the rules of the module docstring.

    ``first_index``: the source number of the stream's first frame (a looped file's next pass,
    a reconnected feed). ``on_lost(count, why)`` hears of each run of lost frames as it is
    found. ``live`` (cameras, network feeds): a read error is raised (the caller reconnects)
    and frames are numbered by rank, never by a rate grid; for a file a read error ends its
    readable part, the rest counting as lost. ``stop()``: checked between packets; True ends the frames at once
    (what was not read is not lost). ``stats``: where the counts go (a new :class:`DecodeStats`
    by default). After :meth:`frames` ends, ``next_index`` is the number after the last source
    frame it covered, lost ones included.
    """

    def __init__(self, container, stream, first_index: int = 0, on_lost: Callable[[int, str], None] | None = None,
                 live: bool = False, stop: Callable[[], bool] | None = None, stats: DecodeStats | None = None):
        self.container, self.stream = container, stream
        self.on_lost, self.live, self.stop = on_lost, live, stop
        self.stats = stats if stats is not None else DecodeStats()
        self.first_index = first_index
        self.next_index = first_index  # the number the next unresolved packet's frame will have
        self.last_index = first_index - 1  # the last frame decoded, or marked lost
        self.pending: list[float] = []  # rank: timestamps of packets seen whose frames are not out yet, sorted
        self.max_ts: float | None = None  # grid: the latest packet timestamp seen
        time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        self.time_base = float(time_base) if time_base else None
        self.rate = float(rate) if rate else None
        base_rate = stream.base_rate
        constant = bool(self.rate and base_rate and abs(float(base_rate) / self.rate - 1) < 0.01)
        indexed = any(name in (container.format.name or "").split(",") for name in INDEXED_FORMATS)
        # Grid rule (see the module docstring): the frame duration in time-base units, and the
        # timestamp of frame ``first_index``; None: the rank rule.
        self.step = 1.0 / (self.rate * self.time_base) if constant and self.time_base and not live and not indexed \
            else None
        self.origin: float | None = None if stream.start_time is None else float(stream.start_time)

    # ------------------------------------------------------------------ numbering
    def _lose(self, count: int, why: str) -> None:
        if count > 0:
            self.stats.lost += count
            if self.on_lost is not None:
                self.on_lost(count, why)

    def _mark_lost(self, index: int) -> None:
        """Source frames before ``index`` that were neither decoded nor counted yet are lost."""
        if index > self.last_index + 1:
            first = self.last_index + 1
            span = f"frame {first}" if index == first + 1 else f"frames {first}-{index - 1}"
            self._lose(index - first, f"{span} damaged or missing")
        self.last_index = max(self.last_index, index - 1)

    def _on_grid(self, ts: float) -> int | None:
        """Grid rule: the source number of timestamp ``ts``; None when it is off any sane place
        on the grid (a timestamp discontinuity: a spliced or restarted recording)."""
        index = self.first_index + round((ts - self.origin) / self.step)
        if index <= self.last_index or index - self.last_index > MAX_GAP_S * self.rate:
            return None
        return index

    def _packet(self, packet) -> None:
        """Record the packet of a frame, decoded or not."""
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None:
            return
        if self.step is not None:
            if self.origin is None:
                self.origin = float(ts)
            self.max_ts = ts if self.max_ts is None else max(self.max_ts, ts)
        else:
            bisect.insort(self.pending, float(ts))

    def _number(self, frame) -> int:
        """The source number of a decoded frame (frames before it that never came out are lost)."""
        ts = frame.pts if frame.pts is not None else getattr(frame, "dts", None)
        index = self.last_index + 1
        if ts is not None and self.step is not None:
            on_grid = self._on_grid(ts)
            if on_grid is None:  # a discontinuity: go on from the last frame on a new origin
                self.origin = ts - (index - self.first_index) * self.step
            else:
                index = on_grid
        elif ts is not None and self.pending:
            # Rank: packets shown before this frame; theirs and its own are resolved.
            before = bisect.bisect_left(self.pending, ts)
            through = bisect.bisect_right(self.pending, ts)
            index = max(index, self.next_index + before)
            del self.pending[:through]
            self.next_index += through
        self._mark_lost(index)
        self.last_index = index
        self.next_index = max(self.next_index, index + 1)
        return index

    def _untimed_loss(self, packet, why: str) -> None:
        """A packet (or, for None, a frame) without timestamps lost: no timestamp places it, so
        it is counted here, as the next frame."""
        if packet is None or (packet.pts is None and packet.dts is None):
            self.last_index += 1
            self.next_index = max(self.next_index, self.last_index + 1)
            self._lose(1, f"frame {self.last_index} {why}")

    def _finish(self, complete: bool) -> None:
        """The end of the packets: frames of packets seen but never shown are lost, and when
        ``complete`` (the file's end, or a read error in it) so are those the container says
        came after the last packet read."""
        if self.step is not None:
            ends = []
            if self.max_ts is not None:
                ends.append(self.max_ts)
            if complete and self.container.duration and self.origin is not None:
                end_s = ((self.container.start_time or 0) + self.container.duration) / 1e6
                ends.append(end_s / self.time_base - self.step)  # the last frame's start
            for ts in ends:
                index = self._on_grid(ts)
                if index is not None:
                    self.next_index = max(self.next_index, index + 1)
        else:
            self.next_index += len(self.pending)
            self.pending.clear()
            expected = int(self.stream.frames or 0) if complete else 0
            if expected > self.next_index - self.first_index:
                self.next_index = self.first_index + expected
        self._mark_lost(self.next_index)
        self.next_index = max(self.next_index, self.last_index + 1)

    # ------------------------------------------------------------------ decoding
    def frames(self) -> Iterator[DecodedFrame]:
        import av

        packets = self.container.demux(self.stream)
        while True:
            if self.stop is not None and self.stop():
                return
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as exc:
                self.stats.read_error = av_reason(exc)
                self._finish(complete=not self.live)
                if self.live:
                    raise
                return
            flush = packet.size == 0 and packet.pts is None and packet.dts is None
            if not flush:
                self._packet(packet)
                if packet.is_corrupt:  # the demuxer knows its data is damaged: not worth decoding
                    self._untimed_loss(packet, "is corrupt")
                    continue
            start = time.perf_counter()
            try:
                decoded = packet.decode()
            except av.error.EOFError:
                break
            except av.error.InvalidDataError:
                if flush:  # nothing more comes out of the decoder
                    break
                self._untimed_loss(packet, "cannot be decoded")
                continue
            now = time.perf_counter()
            for frame in decoded:
                if frame.is_corrupt:
                    if frame.pts is None:
                        self._untimed_loss(None, "is corrupt")
                    continue  # timed: its number becomes a gap before the next good frame
                index = self._number(frame)
                self.stats.frames += 1
                yield DecodedFrame(index, None if frame.time is None else float(frame.time), frame,
                                   (now - start) / len(decoded), now)
        self._finish(complete=True)


def read_frames(item, stride: int = 1, *, kind: str | None = None,
                stats: DecodeStats | None = None) -> Iterator[tuple[int, float | None, Any]]:
    """(source frame number, time in seconds or None, uint8 RGB array) of each frame to predict:
    an image itself (frame 0), or every decoded frame of a video whose source number is a
    multiple of ``stride``, damaged frames skipped and counted in ``stats`` (see the module
    docstring).

    ``item``: an object with ``.path`` and ``.kind`` ("image" or "video"), or a path; for a path
    ``kind`` says which (default: by its suffix, as predict tells them apart). ``stats`` (one per
    file) receives the counts: predict's record of the frames a damaged video lost. A file that is no video, holds no video
    stream or not one decodable frame raises a one-line :class:`CvexportError` naming it.
    """
    from cvexport.images import load_image

    path = os.fspath(getattr(item, "path", item))
    kind = getattr(item, "kind", None) or kind
    if kind is None:
        from cvexport.media import kind_of

        kind = kind_of(path)
    stats = stats if stats is not None else DecodeStats()
    if kind == "image":
        image = load_image(path)
        stats.frames += 1
        yield 0, None, image
        return
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as exc:
        raise CvexportError(f"{path} is not a readable video ({av_reason(exc)})") from None
    try:
        if not container.streams.video:
            raise CvexportError(f"{path} holds no video stream")
        decoder = FrameDecoder(container, container.streams.video[0], stats=stats)
        decoded_any = False
        for decoded in decoder.frames():
            decoded_any = True
            if decoded.index % stride == 0:
                yield decoded.index, decoded.time, decoded.frame.to_ndarray(format="rgb24")
        if not decoded_any:
            why = f" ({stats.read_error})" if stats.read_error else ""
            raise CvexportError(f"{path} holds no decodable video frames{why}")
    finally:
        container.close()
