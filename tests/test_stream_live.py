"""``cvexport stream`` on live network sources, over loopback: a sender subprocess muxes H.264
MPEG-TS at 30 fps (tests/stream_sender.py) and the stream reads ``tcp://127.0.0.1:PORT``.

Timing enters only where the issue asks for it (latency under overload), and there as a
comparison of two windows of the same run, not as an absolute figure.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from stream_helpers import Sender, SlowPredictor, decode_video, read_jsonl, stream


@pytest.fixture(scope="module")
def ssd(build_bundle):
    return build_bundle(model="ssd", precision="fp32")


def _in_thread(*argv, make_predictor=None) -> tuple[threading.Thread, dict]:
    """Run ``stream`` in a thread (the test drives the sender meanwhile); result["code"] / ["error"]."""
    result: dict = {}

    def body():
        try:
            result["code"] = stream(*argv, make_predictor=make_predictor)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            result["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, result


def _wait_for_lines(path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} lines in {timeout} s")


def test_loopback_stream_to_its_end(ssd, tmp_path):
    """90 frames at 30 fps: all arrive; each is processed or, if a newer one came first, dropped."""
    with Sender(frames=90) as sender:
        # --reconnect-timeout 0: the end of the stream is the end of the source.
        code = stream(ssd.path, sender.url, "--out", tmp_path, "--reconnect-timeout", 0, "--timeout", 10)
    assert code == 0
    name = f"tcp-127.0.0.1-{sender.port}"
    entry = json.loads((tmp_path / "summary.json").read_text())["sources"][0]
    assert entry["name"] == name and entry["live"] and entry["status"] == "ended"
    assert entry["frames_in"] == 90 and entry["frames_corrupt_skipped"] == 0
    assert entry["frames_processed"] + entry["frames_dropped"] + entry["frames_unprocessed_at_stop"] == 90
    lines = read_jsonl(tmp_path / f"{name}.jsonl")
    assert len(lines) == entry["frames_processed"] > 0
    frames = [line["frame"] for line in lines]
    assert frames == sorted(set(frames))  # in order; the gaps are the dropped frames
    assert all((line["width"], line["height"]) == (640, 360) for line in lines)
    video, info = decode_video(tmp_path / f"{name}.mp4")
    assert len(video) == len(lines) and (info["width"], info["height"]) == (640, 360)


def test_sender_killed_and_restarted_reconnects(ssd, tmp_path, capsys):
    sender = Sender()
    try:
        thread, result = _in_thread(ssd.path, sender.url, "--out", tmp_path, "--no-video", "--duration", 11,
                                    "--reconnect-timeout", 30, "--timeout", 5)
        jsonl = tmp_path / f"tcp-127.0.0.1-{sender.port}.jsonl"
        _wait_for_lines(jsonl, 30)
        sender.kill()
        before = len(read_jsonl(jsonl))
        # The same port again; the scene goes on where a camera would be by now.
        sender = Sender(port=sender.port, start=300)
        thread.join(timeout=90)
        assert not thread.is_alive() and "error" not in result, result
    finally:
        sender.kill()
    assert result["code"] == 0
    entry = json.loads((tmp_path / "summary.json").read_text())["sources"][0]
    assert entry["reconnects"] == 1 and entry["status"] == "stopped"
    lines = read_jsonl(jsonl)
    assert len(lines) > before + 30  # it went on after the reconnect
    err = capsys.readouterr().err
    assert "connection lost" in err and "reconnected after" in err


@pytest.mark.slow
def test_slow_bundle_drops_frames_and_latency_stays_bounded(ssd, tmp_path):
    """Two 30 fps feeds, inference 100 ms slower than it is: the newest frame wins, so frames are
    dropped (counted) and end-to-end latency over the last 10 s is no worse than over the first
    10 s plus one inference time; the feeds are batched together."""
    from cvexport.runtime.predictor import Predictor

    delay, duration, window = 0.1, 22.0, 10.0
    with Sender() as first, Sender(start=1000) as second:
        code = stream(ssd.path, first.url, second.url, "--out", tmp_path, "--no-video", "--duration", duration,
                      make_predictor=lambda bundle, backend, threads: SlowPredictor(Predictor(bundle), delay))
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "2" in summary["batches"]  # both feeds in one inference
    for entry in summary["sources"]:
        assert entry["frames_dropped"] > 0
        assert entry["frames_processed"] + entry["frames_dropped"] + entry["frames_unprocessed_at_stop"] \
            == entry["frames_in"]
        lines = read_jsonl(tmp_path / entry["jsonl"])
        times = np.array([line["time"] for line in lines])
        e2e = np.array([line["latency_ms"]["end_to_end"] for line in lines])
        # "One inference time" at the same percentile as the latencies compared: this machine is
        # shared, and other work slows some inferences in either window.
        inference = float(np.percentile([line["latency_ms"]["inference"] for line in lines], 95))
        early = e2e[times < window]
        late = e2e[times >= times.max() - window]
        assert len(early) > 20 and len(late) > 20
        assert np.percentile(late, 95) <= np.percentile(early, 95) + inference
        # Nor does lag build up before the decoder: frames keep arriving on the source's clock.
        lag = times - np.array([line["pts"] for line in lines])
        assert np.median(lag[times >= times.max() - window]) - np.median(lag[times < window]) < 1.0
