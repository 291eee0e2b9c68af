"""What tracking, counting and the live view cost a stream: ``cvexport stream`` throughput with
``--track``, with ``--line``/``--zone`` counting, and with ``--serve`` and two viewers, as ratios
of the plain stream's, in one run.

The configurations are measured in turn, round after round (these machines are noisy: an
interleaved median compares like with like), on a 1280x720 H.264 file with the SSD fp32 bundle
on one named backend, with the JSONL only and with the annotated mp4.

    python benchmarks/stream_features_benchmark.py [--backend ort] [--frames 240] [--rounds 3] [--out benchmarks/results]

Writes ``stream_features.json`` and ``stream_features.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_files import write_results  # noqa: E402
from stream_benchmark import HEIGHT, WIDTH, FPS, _stream, _throughput  # noqa: E402

LINE = "0,0.5,1,0.5"
ZONE = "0,0,0.5,0,0.5,1,0,1"
FEATURES = {
    "plain": [],
    "track": ["--track"],
    "track + line + zone": ["--line", LINE, "--zone", ZONE],
    "serve + 2 viewers": ["--serve"],  # and a free port
}


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _viewers(url: str, count: int, stop: threading.Event) -> list[threading.Thread]:
    """``count`` viewers reading the live view's MJPEG stream at ``url`` until ``stop`` (they
    retry until the server is up)."""
    def watch():
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    while not stop.is_set() and response.read(65536):
                        pass
            except OSError:
                time.sleep(0.05)

    threads = [threading.Thread(target=watch, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def measure(bundle: Path, video: Path, work: Path, backend: str, feature: str, video_on: bool) -> dict:
    out = work / f"out-{feature.replace(' ', '_').replace(',', '')}-{video_on}"
    extra = list(FEATURES[feature])
    stop = threading.Event()
    if feature.startswith("serve"):
        port = _free_port()
        extra.append(f"127.0.0.1:{port}")
        _viewers(f"http://127.0.0.1:{port}/video/0.mjpg", 2, stop)
    try:
        summary = _stream(bundle, [video], out, None, video_on, "exact", backend=backend, extra=extra)
    finally:
        stop.set()
    return {"fps": _throughput(summary), "cpu_ms_per_frame": summary["cpu_ms_per_frame"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--features", default=",".join(FEATURES), help="comma list of: " + ", ".join(FEATURES))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    from cvexport.build import BuildOptions, build
    from cvexport.cpu import describe_cpu
    from cvexport.stream.synthetic import write_video

    work = Path(tempfile.mkdtemp(prefix="stream-features-"))
    video = work / "720p.mp4"
    write_video(video, WIDTH, HEIGHT, args.frames, fps=FPS, seed=0)
    bundle = work / "ssd-fp32"
    build(BuildOptions(model="ssd", precision="fp32", max_batch=4, out=str(bundle), verify_images=0, engine="ort"),
          log=lambda line: None)
    features = args.features.split(",")
    samples: dict[tuple[str, bool], list[dict]] = {(f, v): [] for f in features for v in (False, True)}
    for _ in range(args.rounds):
        for key in samples:
            samples[key].append(measure(bundle, video, work, args.backend, *key))
            print(f"{key}: {samples[key][-1]['fps']:.1f} fps", flush=True)
    rows = []
    for video_on in (False, True):
        plain = statistics.median(s["fps"] for s in samples[("plain", video_on)])
        for feature in features:
            fps = statistics.median(s["fps"] for s in samples[(feature, video_on)])
            rows.append({"feature": feature, "sink": "mp4" if video_on else "jsonl", "fps": round(fps, 1),
                         "ratio": round(fps / plain, 3), "fps_each_round": [round(s["fps"], 1) for s in
                                                                            samples[(feature, video_on)]]})
    record = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": describe_cpu(), "backend": args.backend,
              "video": f"{WIDTH}x{HEIGHT} H.264, {args.frames} frames", "rounds": args.rounds, "rows": rows}
    lines = [f"# Stream features: throughput as a ratio of the plain stream ({record['created']})", "",
             f"CPU: {record['cpu']}. Backend {args.backend}, its own threads; {record['video']}, SSD fp32, "
             f"--preprocess exact; median of {args.rounds} interleaved rounds.", "",
             "| feature | sink | fps | x plain | fps each round |", "|---|---|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['feature']} | {row['sink']} | {row['fps']} | {row['ratio']:.2f} | "
                     f"{', '.join(map(str, row['fps_each_round']))} |")
    write_results(args.out, "stream_features", record, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
