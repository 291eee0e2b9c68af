"""Stream sources: what a SOURCE argument means, opening it, and reading its frames.

A SOURCE is, as in jetson-inference and Ultralytics:

* a video file (anything FFmpeg demuxes: mp4, mkv, avi, mov, ts, ...);
* an image file, a folder of images or a glob (``frames/*.png``), read in natural name order
  (``img2`` before ``img10``);
* a V4L2 camera: ``/dev/video0``, ``v4l2:///dev/video0`` or just ``0``;
* a network stream: ``rtsp://``, ``rtsps://``, ``rtmp://``, ``rtmps://``, ``tcp://``, ``udp://``,
  ``http://``, ``https://``, ``srt://``.

Cameras and network streams are *live*: the pipeline keeps only their newest frame, and a lost
connection is reopened with backoff. Files and images are read frame by frame unless paced
(``--realtime``); so is a video file on a web server (an ``http(s)://`` URL whose path ends in
a video file's suffix): it has an end, and reconnecting would start it over. Every failure a
user can cause is a one-line :class:`SourceError`.
"""

from __future__ import annotations

import glob
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvexport.errors import CvexportError
from cvexport.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_image_name
from cvexport.video_decode import av_reason

LIVE_SUFFIXES = {".ts", ".m2ts"}
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "tcp", "udp", "http", "https", "srt")
# Reconnect backoff: the first retry soon (a sender restarting), then doubling up to a cap so a
# camera that is gone for minutes is not hammered.
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 8.0


class SourceError(CvexportError):
    """A source that cannot be opened or read; the message names it (credentials masked)."""


@dataclass(frozen=True)
class SourceSpec:
    """One SOURCE argument, understood. ``name`` is the stem of its outputs (``DIR/<name>.jsonl``)."""

    text: str  # as given, credentials masked (safe to print and to record)
    kind: str  # "file", "images", "camera" or "network"
    target: str  # what FFmpeg opens: a path, a device or a URL (credentials kept)
    name: str
    images: tuple[Path, ...] = ()
    live: bool = False  # newest frame wins, reconnect when lost (cameras, network feeds)


def mask_credentials(text: str) -> str:
    """``rtsp://user:secret@cam/x`` -> ``rtsp://user:***@cam/x``: URLs end up in logs and summaries."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", text)


def _safe(text: str) -> str:
    """A file-name-safe stem: anything but letters, digits, '.', '_' and '-' becomes '-'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return stem[:80] or "source"


def _natural_key(path: Path) -> list:
    """Sort key for natural name order: digit runs compare as numbers (frame2 < frame10)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


def _image_list(paths, what: str) -> tuple[Path, ...]:
    images = tuple(sorted((p for p in paths if p.is_file() and is_image_name(p)), key=_natural_key))
    if not images:
        raise SourceError(f"{what} holds no images ({', '.join(IMAGE_SUFFIXES)}); pass a folder or glob of images")
    return images


def parse_source(text: str) -> SourceSpec:
    """One SOURCE argument -> its kind, what to open and an output name (not yet made unique)."""
    shown = mask_credentials(text)
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", text)
    if scheme:
        name = scheme.group(1).lower()
        if name == "v4l2":
            device = text[len("v4l2://"):]
            return SourceSpec(shown, "camera", device, _safe(Path(device).name), live=True)
        if name == "file":
            return parse_source(text[len("file://"):])
        if name not in NETWORK_SCHEMES:
            raise SourceError(f"source {shown}: unsupported scheme '{name}://'; use a video file, an image folder "
                              f"or glob, /dev/videoN, v4l2://, or one of {', '.join(s + '://' for s in NETWORK_SCHEMES)}")
        # Name from host, port and path; never user, password or query (tokens live there).
        rest = re.sub(r"^[^/@]*@", "", text[len(scheme.group(0)):]).split("?", 1)[0].split("#", 1)[0]
        # An http(s) URL naming a video file is a file on a web server, read at its own pace; an
        # MPEG transport stream (.ts) over http is how cameras and encoders send a live feed.
        remote_file = name in ("http", "https") and rest.lower().endswith(tuple(set(VIDEO_SUFFIXES) - LIVE_SUFFIXES))
        return SourceSpec(shown, "network", text, _safe(f"{name}-{rest}"), live=not remote_file)
    if text.isdigit():  # "0" -> the first camera, as OpenCV and Ultralytics take it
        return SourceSpec(shown, "camera", f"/dev/video{text}", f"video{text}", live=True)
    if text.startswith("/dev/"):
        return SourceSpec(shown, "camera", text, _safe(Path(text).name), live=True)
    path = Path(text)
    if not path.exists() and any(ch in text for ch in "*?["):
        matches = [Path(p) for p in glob.glob(text)]
        if not matches:
            raise SourceError(f"source {shown}: no file matches this pattern")
        fixed = []  # the folders before the first wildcard name the source: frames/*.png -> "frames"
        for part in Path(text).parts:
            if any(ch in part for ch in "*?["):
                break
            fixed.append(part)
        stem = Path(*fixed).resolve().name if fixed else "images"
        return SourceSpec(shown, "images", text, _safe(stem or "images"), _image_list(matches, f"pattern {shown}"))
    if not path.exists():
        raise SourceError(f"source not found: {shown} (no such file, folder, device or URL)")
    if path.is_dir():
        return SourceSpec(shown, "images", text, _safe(path.resolve().name), _image_list(path.iterdir(), f"folder {shown}"))
    if is_image_name(path):
        return SourceSpec(shown, "images", text, _safe(path.stem), (path,))
    return SourceSpec(shown, "file", text, _safe(path.stem))


def parse_sources(texts: list[str]) -> list[SourceSpec]:
    """SOURCE arguments -> specs with unique output names."""
    return unique_names([parse_source(text) for text in texts])


def unique_names(specs: list[SourceSpec]) -> list[SourceSpec]:
    """The same specs with unique output names (``clip``, ``clip-2``, ...)."""
    seen, unique = set(), []
    for spec in specs:
        name, n = spec.name, 1
        while name.lower() in seen:  # case-insensitive: --out may sit on a case-insensitive disk
            n += 1
            name = f"{spec.name}-{n}"
        seen.add(name.lower())
        unique.append(SourceSpec(spec.text, spec.kind, spec.target, name, spec.images, spec.live))
    return unique


@dataclass(frozen=True)
class ReadOptions:
    """How sources are opened and read (the ``stream`` command's source flags)."""

    fps: float = 30.0  # image sources: the frame rate their video and pacing use
    loop: bool = False  # files and images: start again at the end
    open_timeout: float = 10.0  # live sources: seconds to connect / open
    read_timeout: float = 10.0  # live sources: seconds without data before the source counts as lost
    reconnect_timeout: float | None = 60.0  # live: give up after this long without a connection (None: never)
    camera_size: str | None = None  # v4l2 video_size, "1280x720"
    camera_fps: str | None = None  # v4l2 framerate
    camera_format: str | None = None  # v4l2 input_format (mjpeg, yuyv422, h264)
    rtsp_transport: str | None = None  # tcp or udp (FFmpeg's default tries udp, then tcp)


@dataclass
class RawFrame:
    """One decoded frame on its way to preprocessing.

    Exactly one of ``video`` (a PyAV VideoFrame, converted later where it is needed) and ``rgb``
    (uint8 (H, W, 3), image sources) is set. ``pts``: presentation time in seconds on the source's
    clock (None when unknown); ``decode_s``: time spent decoding it; ``decoded_at``:
    ``time.perf_counter()`` when it left the decoder (the start of end-to-end latency).
    """

    index: int
    width: int
    height: int
    pts: float | None
    decode_s: float
    decoded_at: float
    video: Any = None
    rgb: np.ndarray | None = None
    path: str | None = None


@dataclass
class SourceEvents:
    """What a reader reports while it runs: counts and one-line messages (to the status view).

    ``corrupt``: source frames lost to damage (undecodable, flagged corrupt, missing from the
    file: :mod:`cvexport.video_decode`) or unreadable images, each counted once.
    """

    log: Callable[[str], None]
    corrupt: int = 0
    reconnects: int = 0
    state: str = "starting"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count_corrupt(self, why: str, count: int = 1) -> None:
        with self.lock:
            first = self.corrupt == 0
            self.corrupt += count
        if first:  # one line, not one per packet: a damaged stream can have thousands
            self.log(f"{why}; skipped (corrupt frames are counted in the summary)")


class Reader:
    """Opens one source and yields its frames; ``open`` raises :class:`SourceError` (one line)."""

    def __init__(self, spec: SourceSpec, options: ReadOptions, events: SourceEvents):
        self.spec, self.options, self.events = spec, options, events
        self.width = self.height = 0
        self.fps: float | None = None

    def open(self) -> None:
        raise NotImplementedError

    def frames(self, stop: threading.Event) -> Iterator[RawFrame]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def open_reader(spec: SourceSpec, options: ReadOptions, events: SourceEvents) -> Reader:
    """A reader for ``spec``, opened (its first frame size known) or a :class:`SourceError`."""
    reader = ImageReader(spec, options, events) if spec.kind == "images" else VideoReader(spec, options, events)
    reader.open()
    return reader


class ImageReader(Reader):
    """Images in name order; an unreadable one is skipped and counted as corrupt."""

    def open(self) -> None:
        from cvexport.images import load_image

        self.fps = self.options.fps
        for path in self.spec.images:  # the first readable image sets the video size
            try:
                first = load_image(path)
            except CvexportError:
                continue
            self.height, self.width = first.shape[:2]
            return
        raise SourceError(f"source {self.spec.text}: none of its {len(self.spec.images)} images can be read")

    def frames(self, stop: threading.Event) -> Iterator[RawFrame]:
        from cvexport.images import load_image

        self.events.state = "running"
        first = 0  # a looped folder's next pass goes on numbering after the last image
        while not stop.is_set():
            # An image's frame number is its place in the folder (a broken one keeps its number,
            # as a damaged video frame does), so a frame number always names the same image.
            for position, path in enumerate(self.spec.images):
                if stop.is_set():
                    return
                index = first + position
                start = time.perf_counter()
                try:
                    rgb = load_image(path)
                except CvexportError as exc:
                    self.events.count_corrupt(f"{exc}")
                    continue
                now = time.perf_counter()
                yield RawFrame(index, rgb.shape[1], rgb.shape[0], index / self.fps, now - start, now, rgb=rgb,
                               path=str(path))
            first += len(self.spec.images)
            if not self.options.loop:
                return


def _open_error(spec: SourceSpec, exc: BaseException, options: ReadOptions) -> SourceError:
    """An FFmpeg / OS error from opening ``spec`` -> one line that says what to check."""
    import av

    shown = spec.text
    reason = av_reason(exc).replace(spec.target, shown)
    if spec.kind == "camera":
        if isinstance(exc, FileNotFoundError):
            return SourceError(f"no such camera: {spec.target} (see 'ls /dev/video*' or 'v4l2-ctl --list-devices')")
        if isinstance(exc, PermissionError):
            return SourceError(f"no permission to open camera {spec.target}; add your user to the 'video' group")
        return SourceError(f"cannot open camera {spec.target}: {reason}")
    if spec.kind == "network":
        if isinstance(exc, ConnectionRefusedError):
            return SourceError(f"cannot open {shown}: connection refused (is the camera or sender up and listening?)")
        if isinstance(exc, (av.error.ExitError, TimeoutError, av.error.TimeoutError)):
            return SourceError(f"cannot open {shown}: no answer within {options.open_timeout:g} s (--timeout)")
        if isinstance(exc, av.error.HTTPError):
            return SourceError(f"cannot open {shown}: the server answered {reason}")
        return SourceError(f"cannot open {shown}: {reason}")
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"source not found: {shown}")
    if isinstance(exc, IsADirectoryError):
        return SourceError(f"source {shown} is a folder without images")
    if isinstance(exc, (av.error.InvalidDataError, av.error.DemuxerNotFoundError)):
        return SourceError(f"source {shown} is not a video FFmpeg can read ({reason})")
    return SourceError(f"cannot open {shown}: {reason}")


class VideoReader(Reader):
    """Video files, cameras and network streams through PyAV (FFmpeg)."""

    container = None
    stream = None
    decoder = None  # the FrameDecoder of the current pass or connection

    def _container_options(self) -> tuple[dict[str, str], str | None]:
        options, fmt = {}, None
        if self.spec.kind == "camera":
            fmt = "v4l2"
            for key, value in (("video_size", self.options.camera_size), ("framerate", self.options.camera_fps),
                               ("input_format", self.options.camera_format)):
                if value:
                    options[key] = str(value)
        elif self.spec.target.lower().startswith(("rtsp://", "rtsps://")) and self.options.rtsp_transport:
            options["rtsp_transport"] = self.options.rtsp_transport
        return options, fmt

    def _open_container(self) -> None:
        import av

        options, fmt = self._container_options()
        kwargs: dict[str, Any] = {"options": options}
        if fmt:
            kwargs["format"] = fmt
        if self.spec.kind in ("network", "camera"):
            # PyAV's interrupt callback: a dead peer ends a blocking open or read after this long.
            kwargs["timeout"] = (self.options.open_timeout, self.options.read_timeout)
        try:
            container = av.open(self.spec.target, "r", **kwargs)
        except (av.error.FFmpegError, OSError) as exc:
            raise _open_error(self.spec, exc, self.options) from None
        if not container.streams.video:
            container.close()
            raise SourceError(f"source {self.spec.text} has no video stream (audio or data only); pass a video")
        stream = container.streams.video[0]
        if stream.codec_context is None or not stream.codec_context.width:
            container.close()
            raise SourceError(f"source {self.spec.text}: its video stream cannot be decoded here "
                              f"(codec {stream.codec_context.name if stream.codec_context else 'unknown'})")
        self.container, self.stream = container, stream
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else self.fps

    def open(self) -> None:
        self._open_container()

    def close(self) -> None:
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # closing a broken connection may raise; nothing is left to save
                pass
            self.container = None

    def _decode(self, stop: threading.Event, first_index: int, time_offset: float) -> Iterator[RawFrame]:
        """Frames of the open container until it ends (returns) or a live source fails (raises
        FFmpegError / OSError), numbered and damage counted by :mod:`cvexport.video_decode`.
        ``self.decoder`` is left for :meth:`frames` to learn where the next pass starts."""
        from cvexport.video_decode import FrameDecoder

        def lost(count: int, why: str) -> None:
            self.events.count_corrupt(f"source {self.spec.name}: {why}", count)

        self.decoder = FrameDecoder(self.container, self.stream, first_index=first_index, on_lost=lost,
                                    live=self.spec.live, stop=stop.is_set)
        for decoded in self.decoder.frames():
            frame = decoded.frame
            pts = None if decoded.time is None else decoded.time + time_offset
            yield RawFrame(decoded.index, frame.width, frame.height, pts, decoded.decode_s, decoded.decoded_at,
                           video=frame)

    def frames(self, stop: threading.Event) -> Iterator[RawFrame]:
        """Decoded frames until the source ends, ``stop`` is set or a live source is given up.

        Files: the end of the file ends the source (or starts it again with ``loop``, times
        continuing). Live sources: an error or an end of stream counts as a lost connection,
        reopened with backoff (:meth:`_reconnect`). An outage lasts until a frame arrives again:
        a server that accepts the connection and then fails does not reset the backoff or the
        ``reconnect_timeout`` clock.
        """
        import av

        index, offset, decoded_any = 0, 0.0, False
        outage_since: float | None = None  # time.monotonic() of the loss no frame has ended yet
        delay = BACKOFF_FIRST_S
        while not stop.is_set():
            last_pts, last_index, failed = None, None, False
            try:
                self.events.state = "running"
                for raw in self._decode(stop, index, offset):
                    last_index, last_pts = raw.index, raw.pts
                    outage_since, delay = None, BACKOFF_FIRST_S
                    yield raw
                reason = "end of stream"
            except (av.error.FFmpegError, OSError) as exc:  # live sources only: a file's read error ends it
                reason, failed = av_reason(exc), True
            # The next pass or connection goes on after every source frame this one covered,
            # lost ones included: a frame number always names one source frame.
            index = self.decoder.next_index
            if stop.is_set():
                return
            if not self.spec.live:
                error = self.decoder.stats.read_error
                if not self.decoder.stats.frames:
                    if decoded_any:  # a looped file that stopped decoding: nothing more will come
                        return
                    why = f" ({error})" if error else ""
                    raise SourceError(f"source {self.spec.text} holds no decodable video frames{why}")
                decoded_any = True
                if error:
                    self.events.log(f"source {self.spec.name}: read error after frame {last_index} ({error}); "
                                    "the rest of the file counts as corrupt")
                if not self.options.loop:
                    return
                # Times go on across passes: the next pass starts one frame after the last frame
                # this one covered (decoded or lost).
                if last_pts is not None:
                    offset = last_pts + (index - last_index) / (self.fps or self.options.fps)
                self.close()
                self._open_container()
                continue
            self.close()
            limit = self.options.reconnect_timeout
            if limit is not None and limit <= 0:  # --reconnect-timeout 0: the stream's end is the source's end
                if failed:
                    raise SourceError(f"source {self.spec.text} was lost ({reason}); not reconnecting "
                                      "(--reconnect-timeout 0)")
                self.events.log(f"source {self.spec.name}: end of stream")
                return
            if outage_since is None:
                outage_since = time.monotonic()
                self.events.log(f"source {self.spec.name}: connection lost ({reason}); reconnecting")
            else:
                self.events.log(f"source {self.spec.name}: lost again before any frame ({reason})")
            delay = self._reconnect(stop, reason, outage_since, delay)
            if delay is None:
                return

    def _reconnect(self, stop: threading.Event, reason: str, since: float, delay: float) -> float | None:
        """Reopen a lost live source, waiting ``delay`` then doubling it (to BACKOFF_MAX_S) after
        each failure. Returns the delay to use if the connection fails again before a frame, or
        None when stopped; raises :class:`SourceError` once ``reconnect_timeout`` has passed since
        ``since`` (``time.monotonic()`` of the loss)."""
        limit = self.options.reconnect_timeout
        self.events.state = "reconnecting"
        attempts = 0
        while not stop.wait(delay):
            attempts += 1
            try:
                self._open_container()
            except SourceError as exc:
                waited = time.monotonic() - since
                if limit is not None and waited >= limit:
                    self.events.state = "lost"
                    raise SourceError(f"source {self.spec.text} was lost ({reason}) and did not come back within "
                                      f"{limit:g} s (--reconnect-timeout); last try: {exc}") from None
                delay = min(delay * 2, BACKOFF_MAX_S)
                if limit is not None:
                    delay = max(0.05, min(delay, limit - waited))
                continue
            with self.events.lock:
                self.events.reconnects += 1
            self.events.log(f"source {self.spec.name}: reconnected after {time.monotonic() - since:.1f} s "
                            f"({attempts} attempt{'s' if attempts > 1 else ''})")
            return min(delay * 2, BACKOFF_MAX_S)
        return None
