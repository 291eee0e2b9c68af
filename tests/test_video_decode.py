"""cvexport.video_decode: damaged videos keep their good frames, lost ones are counted, and
every frame keeps its source number (the rule ``stream`` and ``predict`` share)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from cvexport.errors import CvexportError
from cvexport.video_decode import DecodeStats, read_frames

FPS = 30


def _zero_middle(path: Path, start: float = 0.4, end: float = 0.55) -> Path:
    """A copy of ``path`` with a run of its bytes zeroed, as a bad sector leaves it."""
    data = bytearray(path.read_bytes())
    a, b = int(len(data) * start), int(len(data) * end)
    data[a:b] = bytes(b - a)
    damaged = path.with_name(f"damaged-{path.name}")
    damaged.write_bytes(bytes(data))
    return damaged


def _synthetic(path: Path, frames: int) -> Path:
    from cvexport.stream.synthetic import write_video

    write_video(path, 160, 120, frames, fps=FPS, seed=2)
    return path


def _with_b_frames(path: Path, frames: int) -> Path:
    """H.264 with B-frames (decode order differs from presentation order)."""
    import av

    from cvexport.stream.synthetic import Scene

    scene = Scene(160, 120, seed=4)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"bf": "3", "g": str(FPS)}
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(scene.frame(index)[0], format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _read(path, **kwargs) -> tuple[list, DecodeStats]:
    stats = DecodeStats()
    return list(read_frames(str(path), stats=stats, **kwargs)), stats


@pytest.mark.parametrize("name, frames, make", [
    ("clip.mp4", 30, _synthetic),  # indexed: the damaged packets still arrive, undecodable
    ("clip.ts", 60, _synthetic),  # no index: the demuxer resyncs past the damage, packets vanish
    ("b-frames.mkv", 45, _with_b_frames),
])
def test_damaged_video_keeps_good_frames_with_their_source_numbers(tmp_path, name, frames, make):
    damaged = _zero_middle(make(tmp_path / name, frames))
    got, stats = _read(damaged)
    indices = [index for index, _, _ in got]
    assert stats.frames == len(got) and stats.lost > 0
    assert stats.frames + stats.lost == frames  # every source frame is decoded or counted as lost
    assert indices == sorted(set(indices)) and indices[-1] == frames - 1  # good frames after the damage kept
    assert all(index == round(time * FPS) for index, time, _ in got)  # the frame's own number
    assert all(image.dtype == np.uint8 and image.shape == (120, 160, 3) for _, _, image in got)
    # --stride keeps source numbers: every other source frame, whatever was lost before it.
    strided, _ = _read(damaged, stride=2)
    assert [index for index, _, _ in strided] == [index for index in indices if index % 2 == 0]


def test_intact_video_and_images(tmp_path):
    from PIL import Image

    got, stats = _read(_with_b_frames(tmp_path / "b.mp4", 20))
    assert [index for index, _, _ in got] == list(range(20)) and (stats.frames, stats.lost) == (20, 0)
    picture = tmp_path / "p.png"
    Image.fromarray(np.full((5, 7, 3), 9, np.uint8)).save(picture)
    got, _ = _read(picture, kind="image")
    assert [(index, time, image.shape) for index, time, image in got] == [(0, None, (5, 7, 3))]

    class Item:  # predict's InputFile: duck typed
        path, kind = str(picture), "image"

    assert [index for index, _, _ in read_frames(Item())] == [0]


def test_not_a_video_or_nothing_decodable_is_one_line(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    with pytest.raises(CvexportError, match="is not a readable video") as caught:
        _read(text)
    assert "\n" not in str(caught.value)
    # Every frame's data zeroed (the mp4's index, at its end, intact): not one frame decodes.
    video = _synthetic(tmp_path / "all.mp4", 10)
    dead = _zero_middle(video, 0.01, 0.8)
    with pytest.raises(CvexportError, match="holds no decodable video frames"):
        _read(dead)


class _FailsAfter:
    """A PyAV input container whose reading fails after ``packets`` packets (a disk error)."""

    def __init__(self, container, packets: int):
        self.container, self.packets = container, packets

    def __getattr__(self, name):
        return getattr(self.container, name)

    def demux(self, stream):
        import av

        for count, packet in enumerate(self.container.demux(stream)):
            if count == self.packets:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
            yield packet


def test_read_error_ends_a_file_and_its_rest_counts_as_lost(tmp_path):
    import av

    from cvexport.video_decode import FrameDecoder

    video = _synthetic(tmp_path / "clip.mp4", 20)
    with av.open(str(video)) as container:
        decoder = FrameDecoder(_FailsAfter(container, 8), container.streams.video[0])
        indices = [decoded.index for decoded in decoder.frames()]
    assert indices == list(range(len(indices))) and 0 < len(indices) <= 8
    assert decoder.stats.read_error.startswith("Invalid data") and decoder.stats.frames + decoder.stats.lost == 20
    assert decoder.next_index == 20  # a looped file's next pass numbers on from there
    with av.open(str(video)) as container:  # a live source's read error goes to its reconnecting caller
        decoder = FrameDecoder(_FailsAfter(container, 8), container.streams.video[0], live=True)
        with pytest.raises(av.error.InvalidDataError):
            list(decoder.frames())
