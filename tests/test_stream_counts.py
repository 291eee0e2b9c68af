"""``cvexport stream``'s counts: every source frame is accounted for (processed, dropped, skipped
by --stride, corrupt or unprocessed at the stop), damaged video keeps source frame numbers, and
each source's state is what it is doing."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from stream_helpers import SlowPredictor, read_jsonl, stream


@pytest.fixture(scope="module")
def classifier(build_bundle):
    return build_bundle(model="classifier", precision="fp32")


def _counted(entry: dict) -> int:
    return (entry["frames_processed"] + entry["frames_dropped"] + entry["frames_skipped_stride"]
            + entry["frames_unprocessed_at_stop"] + entry["frames_corrupt_skipped"])


def test_damaged_video_counts_lost_frames_and_keeps_source_numbers(classifier, tmp_path, capsys):
    """30 frames with bytes zeroed in the middle: the good ones are processed under their own
    numbers, the others counted as corrupt, and the counts add up to the 30."""
    from cvexport.stream.synthetic import write_video

    source = tmp_path / "zeroed.mp4"
    write_video(source, 160, 120, 30, fps=30, seed=2)
    data = bytearray(source.read_bytes())
    data[len(data) * 2 // 5 : len(data) * 3 // 5] = bytes(len(data) * 3 // 5 - len(data) * 2 // 5)
    source.write_bytes(bytes(data))
    assert stream(classifier.path, source, "--out", tmp_path / "out", "--no-video") == 0
    entry = json.loads((tmp_path / "out" / "summary.json").read_text())["sources"][0]
    lines = read_jsonl(tmp_path / "out" / "zeroed.jsonl")
    assert entry["frames_in"] == 30 == _counted(entry) and entry["frames_corrupt_skipped"] > 0
    assert len(lines) == entry["frames_processed"]
    assert all(line["frame"] == round(line["pts"] * 30) for line in lines)
    assert lines[-1]["frame"] == 29
    assert f"{len(lines)} of 30 frames processed" in capsys.readouterr().out


def test_counts_add_up_after_an_abort(classifier, tmp_path):
    """A second Ctrl-C aborts the drain with frames in every queue and in inference: each of them
    is counted as unprocessed, so the source's frames add up."""
    from cvexport.runtime.predictor import Predictor
    from cvexport.stream.pipeline import Pipeline, PipelineOptions, StreamSource
    from cvexport.stream.sources import ReadOptions, SourceEvents, open_reader, parse_source
    from cvexport.stream.stats import SourceStats
    from cvexport.stream.synthetic import write_video

    video = tmp_path / "loop.mp4"
    write_video(video, 96, 64, 10, seed=3)
    spec = parse_source(str(video))
    events = SourceEvents(log=lambda line: None)
    src = StreamSource(spec, open_reader(spec, ReadOptions(loop=True), events), events, SourceStats(spec.name),
                       live=False)
    with Predictor(classifier) as inner:
        pipeline = Pipeline(SlowPredictor(inner, 0.2), [src], tmp_path, PipelineOptions(video=False),
                            lambda line: None)
        thread = threading.Thread(target=pipeline.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while src.stats.processed < 2:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        pipeline.stop("SIGINT")  # what the first Ctrl-C does ...
        pipeline.abort.set()  # ... and the second
        thread.join(timeout=30)
        assert not thread.is_alive()
    s = src.stats
    assert s.unprocessed > 0
    # Counted where each frame was left, not made up afterwards.
    assert s.decoded + events.corrupt == s.processed + s.dropped + s.skipped_stride + s.unprocessed + events.corrupt
    entry = pipeline.summary()["sources"][0]
    assert entry["frames_in"] == _counted(entry) and entry["frames_processed"] == len(read_jsonl(tmp_path / "loop.jsonl"))


def test_image_source_state_and_numbers(tmp_path):
    """An image folder is "running" once it reads (not "starting" for the whole run), and a
    broken image keeps its place in the numbering, as a damaged video frame does."""
    from PIL import Image

    from cvexport.stream.sources import ReadOptions, SourceEvents, open_reader, parse_source

    folder = tmp_path / "shots"
    folder.mkdir()
    for i in (1, 3):
        Image.fromarray(np.full((20, 30, 3), 50 * i, np.uint8)).save(folder / f"img{i}.png")
    (folder / "img2.png").write_bytes(b"broken")
    events = SourceEvents(log=lambda line: None)
    reader = open_reader(parse_source(str(folder)), ReadOptions(), events)
    frames = reader.frames(threading.Event())
    first = next(frames)
    assert events.state == "running"
    assert [first.index] + [raw.index for raw in frames] == [0, 2] and events.corrupt == 1
