"""Shared by the stream tests: running ``cvexport stream`` in-process, reading its outputs back,
the loopback sender, and a predictor slower than the source."""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SENDER = REPO / "tests" / "stream_sender.py"

# The parser the CLI will have once cvexport.cli registers the command; built the same way here.
PARSER_CODE = (
    "import argparse, sys\n"
    "from cvexport.errors import CvexportError\n"
    "from cvexport.stream.command import add_parser\n"
    "parser = argparse.ArgumentParser(prog='cvexport')\n"
    "add_parser(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "try:\n"
    "    sys.exit(args.func(args))\n"
    "except CvexportError as exc:\n"
    "    print(f'cvexport: error: {exc}', file=sys.stderr)\n"
    "    sys.exit(exc.exit_code)\n"
)


def make_parser() -> argparse.ArgumentParser:
    from cvexport.stream.command import add_parser

    parser = argparse.ArgumentParser(prog="cvexport")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def stream(*argv, make_predictor=None) -> int:
    """``cvexport stream ARGV`` in this process; CvexportError propagates (as cli.main would print it)."""
    from cvexport.stream.command import execute

    args = make_parser().parse_args(["stream", *map(str, argv), "--status", "none"])
    return execute(args, make_predictor=make_predictor)


def stream_cli(*argv, timeout: float = 120) -> subprocess.CompletedProcess:
    """The same in a child process, through the parser, as the CLI runs it."""
    return subprocess.run([sys.executable, "-c", PARSER_CODE, "stream", *map(str, argv), "--status", "none"],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def read_jsonl(path: Path) -> list[dict]:
    """Every line of a stream JSONL, checked to be whole JSON objects."""
    data = Path(path).read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} does not end on a whole line"
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def decode_video(path: Path) -> tuple[list[np.ndarray], dict]:
    """RGB frames of a video and facts about its stream (codec, pixel format, size)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "width": stream.codec_context.width, "height": stream.codec_context.height}
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    return frames, info


def decode_until_error(path: Path) -> tuple[int, str | None]:
    """(frames decoded, the error that ended decoding or None): how much of a video a player
    shows, e.g. of an mp4 whose writer was killed mid-fragment. A file that does not even open
    raises, as it fails to play at all."""
    import av

    count = 0
    with av.open(str(path)) as container:
        try:
            for packet in container.demux(video=0):
                count += len(packet.decode())
        except av.error.FFmpegError as exc:
            return count, str(exc)
    return count, None


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def free_port() -> int:
    """A loopback port nothing listens on (for 'connection refused')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sender:
    """The loopback sender subprocess (tests/stream_sender.py); ``port`` once it listens."""

    def __init__(self, port: int = 0, frames: int | None = None, start: int = 0, width: int = 640,
                 height: int = 360, fps: int = 30):
        argv = [sys.executable, str(SENDER), "--port", str(port), "--width", str(width), "--height", str(height),
                "--fps", str(fps), "--start", str(start)]
        if frames is not None:
            argv += ["--frames", str(frames)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO)
        line = self.process.stdout.readline()  # blocks until the socket listens (or the sender died)
        assert line.startswith("listening "), f"sender did not start: {line!r}"
        self.port = int(line.split()[1])
        self.url = f"tcp://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.process.stdout.close()

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


class SlowPredictor:
    """A predictor whose inference takes ``delay`` seconds longer: a bundle slower than the source.

    Only ``infer_batch`` changes; the rest is the real predictor's, so results stay comparable.
    """

    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay
        self.bundle, self.task = inner.bundle, inner.task

    def prepare_one(self, image, *preparer):
        return self.inner.prepare_one(image, *preparer)

    def infer_batch(self, prepared):
        time.sleep(self.delay)
        return self.inner.infer_batch(prepared)

    def split(self, outputs, n):
        return self.inner.split(outputs, n)

    def finish_one(self, outputs, prepared):
        return self.inner.finish_one(outputs, prepared)

    def __exit__(self, *exc) -> None:
        self.inner.__exit__(*exc)


def box_iou(a, b) -> float:
    """IoU of two (x1, y1, x2, y2) boxes, by the project's own box op."""
    import torch

    from cvexport.ops.boxes import box_iou as iou_matrix

    return float(iou_matrix(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0, 0])
