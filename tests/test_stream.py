"""``cvexport stream`` on files and image folders: results, outputs, sources, faults.

Videos are written by the tests (cvexport.stream.synthetic: the detection dataset's shapes moving
over a photograph) at non-square sizes. "Equal to Predictor.predict" means: the same frames,
decoded by PyAV here, through ``Predictor.predict`` give the very records the JSONL holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stream_helpers import PARSER_CODE, REPO, box_iou, decode_video, free_port, psnr, read_jsonl, stream, stream_cli

from cvexport.errors import CvexportError

MODELS = ("ssd", "classifier", "fcn", "style")
# An H.264 round trip of an annotated frame (ultrafast preset, default quality) stays above this;
# a wrong frame (another time, another source, not annotated) falls far below it.
VIDEO_PSNR_DB = 30.0
VGA_FRAMES = 10  # frames of the 640x480 test video (each model runs on all of them)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from cvexport.stream.synthetic import write_video

    root = tmp_path_factory.mktemp("videos")
    made = {}
    for name, (w, h, n) in {"wide": (1280, 720, 12), "vga": (640, 480, VGA_FRAMES)}.items():
        path = root / f"{name}.mp4"
        made[f"{name}_truth"] = write_video(path, w, h, n, seed=1)
        made[name] = path
    return made


@pytest.fixture(scope="module")
def bundles(build_bundle):
    return lambda model: build_bundle(model=model, precision="fp32")


def _decoded(path: Path) -> list[np.ndarray]:
    return decode_video(path)[0]


def _expected_records(bundle, frames: list[np.ndarray]) -> tuple[list[dict], list]:
    """What Predictor.predict says about ``frames``: task records and raw predictions."""
    from cvexport.runtime.predictor import Predictor

    with Predictor(bundle) as predictor:
        predictions = predictor.predict(frames)
        records = [predictor.task.record(p) for p in predictions]
    return json.loads(json.dumps(records)), predictions  # as JSON reads them back


def _task_part(line: dict) -> dict:
    """The task's record inside a JSONL line (everything but the frame bookkeeping)."""
    return {k: v for k, v in line.items() if k not in ("frame", "pts", "time", "width", "height", "batch",
                                                       "latency_ms", "image")}


def _assert_video_matches(video_path: Path, bundle, frames, predictions) -> None:
    """The mp4 holds one frame per processed frame, each the task's picture of that frame."""
    from cvexport.runtime.predictor import Predictor

    decoded, info = decode_video(video_path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["width"] % 2 == 0 and info["height"] % 2 == 0
    assert len(decoded) == len(frames)
    task = Predictor(bundle).task
    for got, frame, prediction in zip(decoded, frames, predictions):
        want = np.asarray(task.video_picture(frame, prediction))
        assert got.shape[:2] == (info["height"], info["width"])
        assert psnr(got[: want.shape[0], : want.shape[1]], want) > VIDEO_PSNR_DB


@pytest.mark.parametrize("model", MODELS)
def test_video_file_matches_predictor(model, bundles, videos, tmp_path):
    bundle = bundles(model)
    source = videos["vga"]
    assert stream(bundle.path, source, "--out", tmp_path) == 0
    frames = _decoded(source)
    expected, predictions = _expected_records(bundle, frames)
    lines = read_jsonl(tmp_path / "vga.jsonl")
    assert [line["frame"] for line in lines] == list(range(len(frames)))
    assert [_task_part(line) for line in lines] == expected
    assert all((line["width"], line["height"]) == (640, 480) for line in lines)
    _assert_video_matches(tmp_path / "vga.mp4", bundle, frames, predictions)
    summary = json.loads((tmp_path / "summary.json").read_text())
    entry = summary["sources"][0]
    assert summary["task"] == bundle.task and summary["stopped_by"] == "end"
    assert summary["class_names"] == list(bundle.class_names)
    assert (entry["frames_in"], entry["frames_processed"], entry["frames_dropped"]) == (len(frames), len(frames), 0)
    assert entry["status"] == "ended" and entry["video"] == "vga.mp4"
    for stage in ("decode", "queue", "preprocess", "inference", "postprocess", "encode", "end_to_end"):
        assert entry["latency_ms"][stage]["count"] == len(frames)
        assert all(line["latency_ms"][stage] is not None for line in lines)
    # End to end covers every stage of the frame, each measured on the same clock.
    for line in lines:
        stages = line["latency_ms"]
        assert stages["end_to_end"] >= stages["preprocess"] + stages["inference"] - 1e-3


@pytest.mark.parametrize("preprocess", ["exact", "ffmpeg"])
def test_detection_video_is_drawn_on_the_decoded_frames(bundles, videos, tmp_path, monkeypatch, preprocess):
    """A detector's boxes go onto the decoded yuv420p frames themselves: no RGB picture is made
    for the video (the RGB round trip cost twice the drawing), and the video still matches the
    RGB annotator's picture (test_video_file_matches_predictor)."""
    from cvexport.annotators import BoxAnnotator

    def no_rgb_picture(self, scene, detections):
        raise AssertionError("the stream drew its video's frame in RGB")

    monkeypatch.setattr(BoxAnnotator, "annotate", no_rgb_picture)
    assert stream(bundles("ssd").path, videos["vga"], "--out", tmp_path, "--preprocess", preprocess) == 0
    assert len(decode_video(tmp_path / "vga.mp4")[0]) == VGA_FRAMES


def test_stream_finds_the_moving_shapes(bundles, videos, tmp_path):
    """Against the video's ground truth: boxes land on the shapes, in the frame's pixels, frame by
    frame (a frame or a mapping mixed up would lose them). The shipped SSD finds 87 % of them at
    IoU 0.5 on these frames; half is the floor."""
    assert stream(bundles("ssd").path, videos["vga"], "--out", tmp_path, "--no-video") == 0
    lines = read_jsonl(tmp_path / "vga.jsonl")
    truths = videos["vga_truth"]
    assert len(lines) == len(truths)
    found = [any(d["class_id"] == g["class_id"] and box_iou(d["box"], g["box"]) >= 0.5 for d in line["detections"])
             for line, truth in zip(lines, truths) for g in truth]
    assert np.mean(found) >= 0.5


def test_wide_video_detections_in_source_pixels(bundles, videos, tmp_path):
    """1280x720 is letterboxed with bands; boxes come back in the frame's own pixels."""
    bundle = bundles("ssd")
    source = videos["wide"]
    assert stream(bundle.path, source, "--out", tmp_path, "--no-video") == 0
    frames = _decoded(source)
    expected, _ = _expected_records(bundle, frames)
    lines = read_jsonl(tmp_path / "wide.jsonl")
    assert [_task_part(line) for line in lines] == expected
    boxes = [d["box"] for line in lines for d in line["detections"]]
    assert boxes and all(0 <= x1 <= x2 <= 1280 and 0 <= y1 <= y2 <= 720 for x1, y1, x2, y2 in boxes)
    assert not (tmp_path / "wide.mp4").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["sources"][0]["video"] is None
    # FFmpeg's scaler instead: the same frames and fields; detections close, not equal (other pixels).
    assert stream(bundle.path, source, "--out", tmp_path / "ffmpeg", "--preprocess", "ffmpeg") == 0
    fast = read_jsonl(tmp_path / "ffmpeg" / "wide.jsonl")
    assert [line["frame"] for line in fast] == [line["frame"] for line in lines]
    assert json.loads((tmp_path / "ffmpeg" / "summary.json").read_text())["preprocess"] == "ffmpeg"
    assert len(decode_video(tmp_path / "ffmpeg" / "wide.mp4")[0]) == len(lines)


def test_several_sources_batched_each_keeps_its_results(bundles, videos, tmp_path):
    bundle = bundles("classifier")
    sources = [videos["vga"], videos["wide"], videos["vga"]]
    assert stream(bundle.path, *sources, "--out", tmp_path, "--no-video") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [entry["name"] for entry in summary["sources"]] == ["vga", "wide", "vga-2"]
    assert max(int(size) for size in summary["batches"]) > 1
    batch_sizes = set()
    for name, source in zip(("vga", "wide", "vga-2"), sources):
        lines = read_jsonl(tmp_path / f"{name}.jsonl")
        expected, _ = _expected_records(bundle, _decoded(source))
        assert [_task_part(line) for line in lines] == expected
        batch_sizes |= {line["batch"] for line in lines}
    assert max(batch_sizes) > 1


def test_image_folder_in_natural_name_order(bundles, tmp_path):
    """Images of odd and mixed sizes; a broken one is skipped and counted; the mp4 has even sides."""
    from PIL import Image

    from cvexport.images import load_image
    from cvexport.stream.synthetic import Scene

    folder = tmp_path / "shots"
    folder.mkdir()
    scene = Scene(321, 239, seed=3)
    for index in (10, 2, 1):  # written out of order; natural order is 1, 2, 10
        Image.fromarray(scene.frame(index)[0]).save(folder / f"img{index}.png")
    Image.fromarray(Scene(200, 300, seed=4).frame(0)[0]).save(folder / "img11.jpg")
    (folder / "img5.png").write_bytes(b"not a picture")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    bundle = bundles("ssd")
    out = tmp_path / "out"
    assert stream(bundle.path, folder, "--out", out) == 0
    order = [folder / n for n in ("img1.png", "img2.png", "img10.png", "img11.jpg")]
    lines = read_jsonl(out / "shots.jsonl")
    assert [line["image"] for line in lines] == [str(p) for p in order]
    expected, _ = _expected_records(bundle, [load_image(p) for p in order])
    assert [_task_part(line) for line in lines] == expected
    assert [(line["width"], line["height"]) for line in lines] == [(321, 239)] * 3 + [(200, 300)]
    entry = json.loads((out / "summary.json").read_text())["sources"][0]
    assert entry["frames_corrupt_skipped"] == 1 and entry["frames_processed"] == 4
    frames, info = decode_video(out / "shots.mp4")
    assert (info["width"], info["height"]) == (322, 240) and len(frames) == 4


def test_glob_loop_stride_and_frames(bundles, videos, tmp_path):
    bundle = bundles("classifier")
    # --loop restarts the file: indices and times go on past its end.
    total = 2 * VGA_FRAMES + 5
    assert stream(bundle.path, videos["vga"], "--out", tmp_path / "loop", "--loop", "--frames", total, "--no-video") == 0
    lines = read_jsonl(tmp_path / "loop" / "vga.jsonl")
    assert [line["frame"] for line in lines] == list(range(total))
    pts = [line["pts"] for line in lines]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert lines[VGA_FRAMES]["classification"] == lines[0]["classification"]  # the same picture again
    # --stride 3: every third frame, the others counted as skipped.
    assert stream(bundle.path, videos["vga"], "--out", tmp_path / "stride", "--stride", 3, "--no-video") == 0
    lines = read_jsonl(tmp_path / "stride" / "vga.jsonl")
    assert [line["frame"] for line in lines] == list(range(0, VGA_FRAMES, 3))
    entry = json.loads((tmp_path / "stride" / "summary.json").read_text())["sources"][0]
    assert (entry["frames_in"], entry["frames_skipped_stride"]) == (VGA_FRAMES, VGA_FRAMES - len(lines))
    # A glob of images is a source named after its folder.
    from PIL import Image

    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 60, 3), 60 * i, np.uint8)).save(folder / f"p{i}.png")
    assert stream(bundle.path, str(folder / "p*.png"), "--out", tmp_path / "glob", "--no-video") == 0
    assert len(read_jsonl(tmp_path / "glob" / "pics.jsonl")) == 3


def test_corrupt_packets_are_skipped_and_counted(bundles, tmp_path):
    import random

    import av

    from cvexport.stream.synthetic import write_video

    source = tmp_path / "damaged.mkv"
    write_video(source, 320, 240, 40, seed=2)
    with av.open(str(source)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    pos, size = packets[10]  # a P-frame: garble the end of its slice data, keep the container intact
    data = bytearray(source.read_bytes())
    rng = random.Random(0)
    for j in range(pos + size // 4, pos + size - 2):
        data[j] = rng.randrange(256)
    source.write_bytes(bytes(data))
    assert stream(bundles("classifier").path, source, "--out", tmp_path / "out") == 0
    entry = json.loads((tmp_path / "out" / "summary.json").read_text())["sources"][0]
    assert entry["frames_corrupt_skipped"] >= 1 and entry["status"] == "ended"
    # Every source frame is counted: processed or corrupt.
    assert entry["frames_in"] == 40 and entry["frames_processed"] == 40 - entry["frames_corrupt_skipped"] >= 35
    lines = read_jsonl(tmp_path / "out" / "damaged.jsonl")
    assert len(lines) == entry["frames_processed"] and 10 not in [line["frame"] for line in lines]
    assert all(line["frame"] == round(line["pts"] * 30) for line in lines)  # source numbers, not a recount
    assert len(decode_video(tmp_path / "out" / "damaged.mp4")[0]) == entry["frames_processed"]


def test_ffmpeg_preprocess_same_geometry_close_pixels(bundles, videos):
    """--preprocess ffmpeg: the letterbox geometry of cvexport.images.letterbox exactly (the same
    letterbox_fit), and pixels within what two bilinear resamplers of the same frame differ by."""
    import av

    from cvexport.runtime.predictor import Predictor
    from cvexport.stream.pipeline import Pipeline, PipelineOptions
    from cvexport.stream.sources import RawFrame

    predictor = Predictor(bundles("ssd"))
    exact = Pipeline(predictor, [], Path("."), PipelineOptions(preprocess="exact"), print)
    fast = Pipeline(predictor, [], Path("."), PipelineOptions(preprocess="ffmpeg"), print)
    with av.open(str(videos["wide"])) as container:
        for index, frame in enumerate(container.decode(video=0)):
            raw = RawFrame(index, frame.width, frame.height, None, 0.0, 0.0, video=frame)
            a, b = exact._prepare_one(raw), fast._prepare_one(raw)
            assert a.prepared.letterbox == b.prepared.letterbox
            std = np.asarray(predictor.bundle.input.std, np.float32).reshape(1, 3, 1, 1)
            name = predictor.bundle.input.name
            levels = np.abs(a.prepared.feed[name] - b.prepared.feed[name]) * std * 255  # back to 0..255 pixel levels
            # Measured on these frames: mean 1.3 levels, from chroma at colour edges (FFmpeg scales
            # the 4:2:0 planes before converting to RGB; the exact path converts first).
            assert levels.mean() < 3.0


# ------------------------------------------------------------------------ bad sources
def _bad_sources(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a video\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    return {
        "missing file": (str(tmp_path / "nope.mp4"), "source not found"),
        "refused URL": (f"tcp://127.0.0.1:{free_port()}", "connection refused"),
        "not a video": (str(text), "not a video"),
        "no such device": ("/dev/video99", "no such camera"),
        "unsupported scheme": ("ftp://example.com/a.mp4", "unsupported scheme"),
        "empty folder": (str(empty), "holds no images"),
        "glob without match": (str(tmp_path / "*.nothing"), "no file matches"),
    }


def test_every_bad_source_is_one_line_and_nonzero(bundles, tmp_path, capsys):
    bundle = bundles("classifier")
    for what, (source, words) in _bad_sources(tmp_path).items():
        out = tmp_path / f"out-{what.replace(' ', '-')}"
        with pytest.raises(CvexportError) as caught:
            stream(bundle.path, source, "--out", out, "--timeout", 5)
        message = str(caught.value)
        assert words in message and "\n" not in message, (what, message)
        assert not out.exists(), f"{what}: outputs were created"


def test_silent_server_times_out_in_one_line(bundles, tmp_path):
    """A peer that accepts the connection and never sends: --timeout ends the wait."""
    import socket
    import threading

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        accepted = []
        threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
        url = f"tcp://viewer:secret@127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(CvexportError) as caught:
            stream(bundles("classifier").path, url, "--out", tmp_path / "out", "--timeout", 1)
        for connection, _ in accepted:
            connection.close()
    assert "no answer within 1 s" in str(caught.value) and "secret" not in str(caught.value)


def test_bad_source_through_the_cli(bundles, tmp_path):
    result = stream_cli(bundles("classifier").path, tmp_path / "missing.mkv", "--out", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("cvexport: error: source not found") and "\n" not in result.stderr.strip()
    assert "Traceback" not in result.stderr


def test_several_sources_one_bad_fail_or_skip(bundles, videos, tmp_path, capsys):
    bundle = bundles("classifier")
    bad = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(CvexportError, match="connection refused"):
        stream(bundle.path, videos["vga"], bad, "--out", tmp_path / "fail", "--timeout", 5)
    assert not (tmp_path / "fail").exists()
    missing = tmp_path / "gone.mp4"
    assert stream(bundle.path, missing, videos["vga"], bad, "--out", tmp_path / "skip", "--on-source-error", "skip",
                  "--no-video", "--timeout", 5) == 0
    assert "connection refused" in capsys.readouterr().err
    # The skipped sources are in the summary too, in argument order, with their errors.
    summary = json.loads((tmp_path / "skip" / "summary.json").read_text())
    entries = summary["sources"]
    assert [(e["name"], e["source"], e["status"]) for e in entries] == [
        (None, str(missing), "skipped"), ("vga", str(videos["vga"]), "ended"),
        (f"tcp-127.0.0.1-{bad.rsplit(':', 1)[1]}", bad, "skipped")]
    assert "source not found" in entries[0]["error"] and "connection refused" in entries[2]["error"]
    assert entries[1]["error"] is None and entries[2]["frames_in"] == 0 and entries[2]["jsonl"] is None
    with pytest.raises(CvexportError, match="no source could be opened"):
        stream(bundle.path, tmp_path / "a.mp4", bad, "--out", tmp_path / "none", "--on-source-error", "skip")


def test_source_names_and_credentials():
    from cvexport.stream.sources import parse_sources

    specs = parse_sources(["rtsp://admin:hunter2@10.0.0.5:554/live/ch1?token=abc", "v4l2:///dev/video2", "0",
                           "udp://@239.0.0.1:1234", "https://example.com/clips/a.mp4", "http://cam.local/live.ts",
                           "rtsp://10.0.0.5:554/live/ch1"])
    assert [(s.kind, s.name, s.live) for s in specs] == [
        ("network", "rtsp-10.0.0.5-554-live-ch1", True), ("camera", "video2", True), ("camera", "video0", True),
        ("network", "udp-239.0.0.1-1234", True), ("network", "https-example.com-clips-a.mp4", False),
        ("network", "http-cam.local-live.ts", True), ("network", "rtsp-10.0.0.5-554-live-ch1-2", True)]
    assert "hunter2" not in specs[0].text and specs[0].target.startswith("rtsp://admin:hunter2@")
    assert specs[1].target == "/dev/video2" and specs[2].target == "/dev/video0"


def test_rerun_replaces_previous_outputs_only(bundles, videos, tmp_path):
    bundle = bundles("classifier")
    out = tmp_path / "out"
    assert stream(bundle.path, videos["wide"], "--out", out, "--frames", 2) == 0
    (out / "mine.txt").write_text("a user's file")
    assert stream(bundle.path, videos["vga"], "--out", out, "--frames", 2, "--no-video") == 0
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "summary.json", "vga.jsonl"]
    file_out = tmp_path / "a-file"
    file_out.write_text("x")
    with pytest.raises(CvexportError, match="is a file"):
        stream(bundle.path, videos["vga"], "--out", file_out)


# ------------------------------------------------------------------------ signals
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_stream_leaves_valid_outputs(sig, code, bundles, videos, tmp_path):
    """A file looped in real time runs until SIGTERM or Ctrl-C; after it every output is whole."""
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", PARSER_CODE, "stream", str(bundles("ssd").path), str(videos["vga"]), "--out", str(out),
         "--loop", "--realtime", "--status", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        jsonl = out / "vga.jsonl"
        while time.monotonic() < deadline and (not jsonl.exists() or jsonl.read_bytes().count(b"\n") < 20):
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr and f"stopped by {sig.name}" in stderr
    lines = read_jsonl(out / "vga.jsonl")
    assert len(lines) >= 20
    frames, _ = decode_video(out / "vga.mp4")
    assert len(frames) == len(lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == sig.name
    assert summary["sources"][0]["frames_processed"] == len(lines)
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temporary left behind
