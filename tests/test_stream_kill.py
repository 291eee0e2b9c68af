"""``cvexport stream`` killed with SIGKILL mid-run: what it wrote stays usable.

(A clean stop by SIGTERM or SIGINT, every output complete, is tests/test_stream.py's
test_signal_mid_stream_leaves_valid_outputs.)
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from stream_helpers import PARSER_CODE, REPO, decode_until_error, read_jsonl, stream

FPS = 30  # the test video's rate; the annotated mp4 has a keyframe (a fragment) every FPS frames


def test_sigkill_leaves_a_video_that_plays_to_its_last_second(build_bundle, tmp_path):
    from cvexport.stream.synthetic import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, 320, 240, 15, fps=FPS, seed=5)
    bundle = build_bundle(model="classifier", precision="fp32")
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", PARSER_CODE, "stream", str(bundle.path), str(video), "--out", str(out), "--loop",
         "--realtime", "--status", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    jsonl = out / "clip.jsonl"
    try:
        deadline = time.monotonic() + 90
        # Past two keyframes: at least two fragments are complete.
        while not jsonl.exists() or jsonl.read_bytes().count(b"\n") < 2 * FPS + 5:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the stream did not get going"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    lines = read_jsonl(jsonl)  # whole lines only
    # Every fragment before the last keyframe written is on disk, and decodes; the one being
    # written when the process died holds at most a second more.
    written = len(lines)
    before_last_keyframe = FPS * ((written - 1) // FPS)
    frames, _ = decode_until_error(out / "clip.mp4")
    assert before_last_keyframe >= 2 * FPS
    assert before_last_keyframe <= frames <= written + 2, (frames, written)
    # The summary written as the run started names its outputs, and says it did not finish ...
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] is None and summary["finished_at"] is None
    assert (summary["sources"][0]["jsonl"], summary["sources"][0]["video"]) == ("clip.jsonl", "clip.mp4")
    # ... so a run into the same --out knows them as its own and replaces them.
    assert stream(bundle.path, video, "--out", out, "--frames", 2, "--no-video") == 0
    assert len(read_jsonl(jsonl)) == 2 and not (out / "clip.mp4").exists()
