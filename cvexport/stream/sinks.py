"""Stream outputs: ``<name>.jsonl`` (one line per processed frame) and ``<name>.mp4`` (annotated).

Why these are written in place rather than through :mod:`cvexport.atomic`: a stream has no
natural end (a camera runs until stopped), and its JSONL is meant to be followed while it
grows (``tail -f``). So each output is made safe to read at any moment instead:

* the JSONL is opened unbuffered and every line goes out in one ``write``, so the file always
  ends on a whole line, even after a crash between frames;
* the mp4 is *fragmented* (``frag_keyframe+empty_moov``): a fragment per keyframe (one per
  second) is complete on disk as soon as it is written, so the video plays up to the last
  second even if the process is killed; a normal stop (end of input, ``--frames``,
  ``--duration``, Ctrl-C, SIGTERM) flushes the encoder and closes it completely.
  ``flush_packets`` hands every write to the OS at once: without it the header and each
  fragment wait in FFmpeg's 32 KiB I/O buffer, and a killed process left 28 bytes, an mp4
  without its header, that nothing can play.

Both are created new (exclusively): whatever sat at their paths was checked and removed by
:mod:`cvexport.stream.outputs`, and a file appearing there meanwhile is not written over.
summary.json goes through :func:`cvexport.atomic.write_text_atomic`.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

from cvexport.errors import CvexportError

VIDEO_TIME_BASE = Fraction(1, 1000)  # frame times in ms: live sources drop frames, so the rate varies


def create_new(path: Path, mode: str = "xb", buffering: int = -1):
    """``path`` opened as a new file: a file that appeared there since the outputs were checked
    is not written over (one-line error)."""
    try:
        return open(path, mode, buffering=buffering)
    except FileExistsError:
        raise CvexportError(f"{path} appeared while the stream started; it was left as it is. Run again "
                            "(or choose another --out)") from None


class JsonlWriter:
    """One JSON object per line; the file holds only whole lines at every moment."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = create_new(self.path, "xb", buffering=0)

    def write(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
        view = memoryview(line)
        while view:  # a regular file takes it in one write; loop in case it does not
            view = view[self.file.write(view):]

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()


class VideoWriter:
    """Annotated frames (each the task's ``video_picture``) -> H.264 yuv420p in a fragmented mp4 (see the module docstring).

    The size is fixed by the first frame, rounded up to even numbers (yuv420p needs them) by
    repeating the last row / column, so pixel coordinates in the JSONL stay those of the video.
    Frames of another size (an image folder of mixed sizes) are letterboxed into it: these are
    annotated pictures for people, shown whole whatever fit the network's input had.
    """

    def __init__(self, path: Path, fps: float | None, keyframe_seconds: float = 1.0):
        self.path = Path(path)
        self.fps = fps if fps and fps > 0 else 30.0
        self.keyframe_seconds = keyframe_seconds
        self.container = self.stream = None
        self.width = self.height = 0
        self.last_pts = -1
        self.frames = 0

    def _open(self, width: int, height: int) -> None:
        import av

        from cvexport.stream.synthetic import new_encoder_stream

        self.width, self.height = width + width % 2, height + height % 2
        create_new(self.path).close()  # ours from now on: FFmpeg opens (and truncates) our own empty file
        self.container = av.open(str(self.path), "w", format="mp4",
                                 options={"movflags": "frag_keyframe+empty_moov+default_base_moof",
                                          "flush_packets": "1"})
        self.stream = new_encoder_stream(self.container, self.width, self.height, round(self.fps),
                                         gop=max(1, round(self.fps * self.keyframe_seconds)))
        self.stream.codec_context.time_base = VIDEO_TIME_BASE
        self.stream.time_base = VIDEO_TIME_BASE

    def _fit(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if (w, h) == (self.width, self.height):
            return image
        if w in (self.width, self.width - 1) and h in (self.height, self.height - 1):
            return np.pad(image, ((0, self.height - h), (0, self.width - w), (0, 0)), mode="edge")
        from cvexport.images import letterbox

        return letterbox(image, self.width, self.height)[0]

    def write(self, image, seconds: float) -> None:
        """Add ``image`` (uint8 RGB (H, W, 3) array or PIL image) shown from ``seconds`` on."""
        import av

        image = np.asarray(image)
        if self.container is None:
            self._open(image.shape[1], image.shape[0])
        self._encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(self._fit(image)), format="rgb24"), seconds)

    def takes_yuv420(self, width: int, height: int) -> bool:
        """Whether a decoded yuv420p frame of this size can go to :meth:`write_yuv420` as it is:
        even sides, and the video's own size once it has one."""
        if width % 2 or height % 2:
            return False
        return self.container is None or (width, height) == (self.width, self.height)

    def write_yuv420(self, planes: np.ndarray, seconds: float) -> None:
        """Add a frame given as yuv420p planes (:mod:`cvexport.yuv420`; :meth:`takes_yuv420`
        said yes) shown from ``seconds`` on: the encoder takes it without a conversion."""
        import av

        if self.container is None:
            self._open(planes.shape[1], planes.shape[0] * 2 // 3)
        self._encode(av.VideoFrame.from_ndarray(planes, format="yuv420p"), seconds)

    def _encode(self, frame, seconds: float) -> None:
        # Strictly increasing times: a reconnect may restart the source clock.
        pts = max(int(round(seconds / VIDEO_TIME_BASE)), self.last_pts + 1)
        frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
        self.last_pts = pts
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self.container is None:
            return
        container, self.container = self.container, None
        try:
            container.mux(self.stream.encode(None))
        finally:
            container.close()
