"""Tracking quality and cost of ``cvexport.tracking.Tracker`` on synthetic sequences with known
identities (``cvexport.tracking.sequences``), scored by roboflow ``trackers.eval`` (a TrackEval port).

    python benchmarks/tracking_benchmark.py [--repeats 3] [--out benchmarks/results]

Quality: IDF1, HOTA, MOTA and ID switches of each sequence at full rate (30 fps) and with half
its frames dropped at random (the frames left keep their timestamps, as a stream that falls
behind gives them; each is scored on the frames the tracker was given). The sequences have
crossings, an object hidden behind another for about half a second, objects entering and
leaving, box jitter of 3 px, score noise, 3% missed detections and false positives.

Cost: the median milliseconds of one ``update`` (one frame) over a 150-frame sequence of 10 and
of 100 objects (the latter smaller, as a crowd far from the camera, so that most are seen), the
first 10 frames of each run left out (warm-up), ``--repeats`` runs pooled. The detections per
frame are recorded beside it: they, not the objects, are what an update costs.

Writes ``tracking.json`` (every number, the CPU, versions) and ``tracking.md`` (the tables).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/results_files.py, however this file is loaded
from results_files import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (name, objects, frames, seed, size_range or None for the default)
QUALITY_SEQUENCES = (
    ("crossing", 4, 90, 0, None),
    ("street", 8, 300, 0, None),
    ("busy street", 20, 300, 1, None),
    ("crowd", 60, 300, 2, (0.03, 0.07)),
)
DROP = 0.5
COST_SEQUENCES = ((10, None), (100, (0.02, 0.05)))  # (objects, size_range)
COST_FRAMES = 150
WARMUP_FRAMES = 10


def sequence(objects: int, frames: int, seed: int, size_range, drop: float = 0.0):
    from cvexport.tracking.sequences import make_sequence

    extra = {} if size_range is None else {"size_range": tuple(size_range)}
    return make_sequence(objects, frames, seed=seed, drop=drop, **extra)


def quality() -> list[dict]:
    from cvexport.tracking.evaluate import score_tracks, track_sequence
    from cvexport.tracking.tracker import Tracker

    rows = []
    for name, objects, frames, seed, size_range in QUALITY_SEQUENCES:
        for drop in (0.0, DROP):
            frames_given = sequence(objects, frames, seed, size_range, drop)
            scores = score_tracks(frames_given, track_sequence(Tracker(), frames_given))
            rows.append({"sequence": name, "objects": objects, "seed": seed, "size_range": size_range,
                         "dropped": drop, **scores, "frames": frames, "frames_given": scores["frames"]})
            print(rows[-1], flush=True)
    return rows


# The detector end to end: the shipped SSD on cvexport.stream.synthetic's rendered shapes moving
# over a photograph (seed, objects, frames), tracked and scored against the video's own truth.
RENDERED = ((1, 3, 300), (4, 3, 300), (7, 6, 300))
RENDERED_SIZE = (640, 480)


def rendered() -> list[dict]:
    """IDF1 / HOTA / MOTA / ID switches of the SSD + Tracker on rendered videos, at full rate and
    with half the frames dropped, and the crossings of the frame's horizontal middle counted from
    the tracks against those of the truth (the same LineCounter on both)."""
    import tempfile

    from cvexport.build import BuildOptions, build
    from cvexport.counting import LineCounter
    from cvexport.results import Detections
    from cvexport.runtime.predictor import Predictor
    from cvexport.stream.source_counts import CountingOptions
    from cvexport.stream.synthetic import write_video
    from cvexport.tracking.evaluate import score_tracks, track_sequence
    from cvexport.tracking.sequences import SequenceFrame, drop_frames
    from cvexport.tracking.tracker import Tracker

    import av

    width, height = RENDERED_SIZE
    work = Path(tempfile.mkdtemp(prefix="tracking-rendered-"))
    bundle = work / "ssd"
    build(BuildOptions(model="ssd", precision="fp32", out=str(bundle), verify_images=0, engine="ort"),
          log=lambda line: None)
    rows = []
    with Predictor(str(bundle), backend="ort") as predictor:
        for seed, objects, count in RENDERED:
            truths = write_video(work / "v.mp4", width, height, count, seed=seed, objects=objects)
            with av.open(str(work / "v.mp4")) as container:
                pictures = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
            detections = [d for i in range(0, len(pictures), 8) for d in predictor.predict(pictures[i:i + 8])]
            frames = [SequenceFrame(index=i, time_s=i / 30.0, truth_ids=np.arange(len(truth), dtype=np.int64),
                                    truth_xyxy=np.array([shape["box"] for shape in truth], dtype=np.float64),
                                    detections=found, hidden=np.zeros(0, dtype=np.int64))
                      for i, (truth, found) in enumerate(zip(truths, detections))]
            for drop in (0.0, DROP):
                given = drop_frames(frames, drop, seed) if drop else frames
                tracks = track_sequence(Tracker(), given)
                # The stream's defaults (--count-frames, --count-margin) on both.
                hysteresis = {"min_frames": CountingOptions().min_frames, "margin": CountingOptions().margin}
                counted, truth_line = (LineCounter((0, height / 2), (width, height / 2), **hysteresis)
                                       for _ in range(2))
                for frame, output in zip(given, tracks):
                    counted.update(output, frame.time_s)
                    truth_line.update(Detections(xyxy=frame.truth_xyxy, scores=np.ones(len(frame.truth_ids)),
                                                 class_ids=np.zeros(len(frame.truth_ids), dtype=np.int64),
                                                 track_ids=frame.truth_ids), frame.time_s)
                scores = score_tracks(given, tracks)
                rows.append({"seed": seed, "objects": objects, "dropped": drop, "size": f"{width}x{height}",
                             **scores, "frames": count, "frames_given": scores["frames"],
                             "crossings_counted": [counted.in_count, counted.out_count],
                             "crossings_true": [truth_line.in_count, truth_line.out_count]})
                print(rows[-1], flush=True)
    return rows


def cost(repeats: int) -> list[dict]:
    from cvexport.tracking.tracker import Tracker

    rows = []
    for objects, size_range in COST_SEQUENCES:
        frames = sequence(objects, COST_FRAMES, 0, size_range)
        samples = []
        for _ in range(repeats):
            tracker = Tracker()
            for k, frame in enumerate(frames):
                start = time.perf_counter()
                tracker.update(frame.detections, frame.time_s)
                if k >= WARMUP_FRAMES:
                    samples.append((time.perf_counter() - start) * 1e3)
        rows.append({"objects": objects, "size_range": size_range, "frames": COST_FRAMES, "repeats": repeats,
                     "detections_per_frame": float(np.mean([len(f.detections) for f in frames])),
                     "ms_median": statistics.median(samples),
                     "ms_p90": float(np.percentile(samples, 90)), "samples": len(samples)})
        print(rows[-1], flush=True)
    return rows


def markdown(record: dict) -> str:
    lines = ["# Tracking: quality and cost on synthetic sequences", "",
             f"Machine: {record['cpu_line']}; load average {record['load_average']}. "
             f"Tracker: `cvexport.tracking.Tracker` (defaults: {record['tracker']}); scoring: "
             f"roboflow trackers {record['versions']['trackers']} `trackers.eval` (TrackEval port), "
             f"CLEAR and Identity matched at IoU 0.5, HOTA averaged over IoU 0.05-0.95.", "",
             "Sequences from `cvexport.tracking.sequences.make_sequence` (30 fps, 1280x720): crossings, an "
             "object hidden behind another for about half a second, objects entering and leaving, 3 px box "
             f"jitter, score noise, 3% missed detections, false positives. Dropped: {DROP:.0%} of the frames "
             "removed at random, timestamps kept; scored on the frames the tracker was given.", "",
             "| sequence | objects | frames given / all | IDF1 | HOTA | MOTA | ID switches | ids given / true |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in record["quality"]:
        lines.append(f"| {row['sequence']} | {row['objects']} | {row['frames_given']} / {row['frames']} "
                     f"| {row['IDF1']:.3f} | {row['HOTA']:.3f} | {row['MOTA']:.3f} | {row['IDSW']} "
                     f"| {row['track_ids']} / {row['truth_ids']} |")
    lines += ["", "The detector end to end: the shipped SSD (fp32, ONNX Runtime) on `cvexport.stream.synthetic`'s "
              "rendered shapes moving over a photograph (30 fps), tracked, scored against the video's truth; "
              "crossings of the frame's horizontal middle counted from the tracks and from the truth by the same "
              "`LineCounter`, with the stream's defaults (3 frames, 4 px margin; in / out, the class left out of "
              "the comparison):", "",
              "| video (seed, size) | objects | frames given / all | IDF1 | HOTA | MOTA | ID switches "
              "| crossings counted / true |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in record.get("rendered", []):
        lines.append(f"| seed {row['seed']}, {row['size']} | {row['objects']} | {row['frames_given']} / {row['frames']} "
                     f"| {row['IDF1']:.3f} | {row['HOTA']:.3f} | {row['MOTA']:.3f} | {row['IDSW']} "
                     f"| {row['crossings_counted'][0]} in, {row['crossings_counted'][1]} out / "
                     f"{row['crossings_true'][0]} in, {row['crossings_true'][1]} out |")
    lines += ["", f"Cost of one `update` (one frame), {COST_FRAMES} frames, the first {WARMUP_FRAMES} left out:", "",
              "| objects | detections per frame (mean) | ms median | ms p90 |", "| ---: | ---: | ---: | ---: |"]
    for row in record["cost"]:
        lines.append(f"| {row['objects']} | {row['detections_per_frame']:.1f} | {row['ms_median']:.3f} "
                     f"| {row['ms_p90']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each cost sequence, pooled")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, not {args.repeats}")
    from importlib.metadata import version

    from cvexport.cpu import cpu_info, describe_cpu

    import cvexport.tracking.tracker as tracker_module

    record = {"cpu": cpu_info(), "cpu_line": describe_cpu(), "drop": DROP,
              # Which tracker this was: the first line of its module's docstring.
              "tracker": (tracker_module.__doc__ or "").strip().splitlines()[0].rstrip("."),
              "versions": {name: version(name) for name in ("trackers", "supervision", "numpy")}
              | {"python": sys.version.split()[0]},
              "quality": quality(), "rendered": rendered(), "cost": cost(args.repeats),
              "load_average": [round(v, 2) for v in os.getloadavg()]}
    write_results(args.out, "tracking", record, markdown(record))
    print(f"wrote {Path(args.out) / 'tracking.json'} and {Path(args.out) / 'tracking.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
