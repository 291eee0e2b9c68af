"""Throughput of ``cvexport predict --ray`` (Ray Data, local Ray) against the in-process run,
on the same inputs, on this machine.

Both paths run the whole command: expanding the inputs, reading and decoding each file,
letterboxing, inference, post-processing and writing Parquet. Every workload is run in every
mode one after the other, repeat after repeat, so a change in the machine's load hits all
alike (these machines are shared and noisy: the load average is recorded beside every
number), and ratios are taken within a repeat. Two figures per mode:

* end to end: frames / wall seconds of a run over photos and a video, opening the bundle
  (in-process) or starting the actor pool (Ray) included; ``ray.init`` is timed apart, as a
  session pays it once;
* steady state: the extra frames of a run over N photos beyond one over N/4, divided by the
  extra seconds, which cancels every fixed cost (bundle opening, actor start, warm-up).

The ratio Ray / in-process is the engine's overhead; the target is >= 0.8.

    python benchmarks/ray_benchmark.py [--model ssd] [--images 240] [--repeats 3] [--out benchmarks/results]

Writes ``ray.json`` (every sample, the CPU, versions, load) and ``ray.md`` (the table).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/results_files.py, however this file is loaded
from results_files import write_results  # noqa: E402

VIDEO_FRAMES = 48


def write_inputs(root: Path, images: int, seed: int = 0) -> tuple[str, str]:
    """(a folder of ``images`` photos of shapes in varied sizes, a short video beside it)."""
    import av
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)

    def picture(width: int, height: int) -> Image.Image:
        image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(60, 200, 3)))
        draw = ImageDraw.Draw(image)
        for kind in range(3):
            x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
            x1, y1 = x0 + int(rng.integers(width // 5, width // 2)), y0 + int(rng.integers(height // 5, height // 2))
            fill = tuple(int(v) for v in rng.integers(0, 255, 3))
            if kind == 0:
                draw.ellipse([x0, y0, x1, y1], fill=fill)
            elif kind == 1:
                draw.rectangle([x0, y0, x1, y1], fill=fill)
            else:
                draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=fill)
        return image

    photos = root / "photos"
    photos.mkdir(parents=True)
    for index in range(images):
        picture(int(rng.integers(160, 640)), int(rng.integers(120, 480))).save(photos / f"{index:05d}.jpg", quality=90)
    base = np.asarray(picture(320, 240))
    with av.open(str(root / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for t in range(VIDEO_FRAMES):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.roll(base, 3 * t, axis=1), format="rgb24")))
        container.mux(stream.encode())
    return str(photos), str(root / "clip.mp4")


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def run_once(bundle: str, inputs: list[str], out: Path, ray: str | None, **options) -> dict:
    from cvexport.predict import PredictOptions, batch_predict

    shutil.rmtree(out, ignore_errors=True)
    load = load_average()
    started = time.perf_counter()
    summary = batch_predict(PredictOptions(bundle=bundle, inputs=tuple(inputs), out=str(out), ray=ray, **options),
                            log=lambda line: None)
    seconds = time.perf_counter() - started
    if summary["failed"]:
        raise SystemExit(f"{summary['failed']} inputs failed in a benchmark run")
    return {"frames": summary["frames"], "seconds": round(seconds, 3), "fps": round(summary["frames"] / seconds, 2),
            "load_before": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ssd", help="model to build the bundle of (default ssd)")
    parser.add_argument("--bundle", help="use this bundle instead of building one")
    parser.add_argument("--images", type=int, default=240, help="photos in the large run (the small run has 1/4)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)

    import ray

    from cvexport.bundle import library_versions
    from cvexport.cpu import cpu_info, describe_cpu

    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        bundle = args.bundle
        if bundle is None:
            from cvexport.build import BuildOptions, build

            bundle = str(work / "bundle")
            build(BuildOptions(model=args.model, out=bundle, verify_images=0, engine="ort"), log=lambda line: None)
        small_photos, _ = write_inputs(work / "small", max(1, args.images // 4), seed=1)
        photos, video = write_inputs(work / "large", args.images, seed=2)
        # "mixed" is the headline (photos and a video, as an archive is); "small" and "large" hold
        # photos only, so the steady-state difference is not skewed by the one video, which a
        # single actor decodes while the other may idle at the end of a small run.
        workloads = {"mixed": [photos, video], "small": [small_photos], "large": [photos]}
        started = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False)
        ray_init_s = round(time.perf_counter() - started, 2)
        resources = ray.cluster_resources()
        modes = {"in-process": {"ray": None},
                 "ray": {"ray": "local"},  # the plan --ray picks here: see cvexport.predict.ray_plan.plan_pool
                 "ray, 1 actor x 2 threads": {"ray": "local", "actors": 1, "threads": 2}}
        samples: dict[str, dict[str, list[dict]]] = {mode: {size: [] for size in workloads} for mode in modes}
        for repeat in range(args.repeats):
            for size, inputs in workloads.items():
                for mode, options in modes.items():
                    sample = run_once(bundle, inputs, work / "out", **options)
                    samples[mode][size].append(sample)
                    print(f"repeat {repeat + 1}/{args.repeats} {size:<5} {mode:<26} {sample['frames']} frames "
                          f"{sample['seconds']:.2f} s {sample['fps']:.1f} frames/s (load {sample['load_before']})",
                          flush=True)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # Ratios are taken per repeat (runs next to each other share the machine's load), then the median.
    summary = {}
    base = samples["in-process"]
    for mode, by_size in samples.items():
        mixed, large, small = by_size["mixed"], by_size["large"], by_size["small"]
        steady = [_marginal(lg, sm) for lg, sm in zip(large, small)]
        base_steady = [_marginal(lg, sm) for lg, sm in zip(base["large"], base["small"])]
        summary[mode] = {
            "end_to_end_fps": round(statistics.median(s["fps"] for s in mixed), 2),
            "end_to_end_ratio": round(statistics.median(s["fps"] / b["fps"] for s, b in zip(mixed, base["mixed"])), 3),
            "steady_fps": _median_or_none(steady),
            "steady_ratio": _median_or_none([a / b for a, b in zip(steady, base_steady) if a and b]),
        }
    import ray as ray_module

    record = {"cpu": cpu_info(), "cpu_line": describe_cpu(), "model": args.model, "images": args.images,
              "video_frames": VIDEO_FRAMES, "repeats": args.repeats, "ray_init_seconds": ray_init_s,
              "ray_resources": {k: v for k, v in resources.items() if k in ("CPU", "GPU")},
              "versions": {**library_versions(), "ray": ray_module.__version__, "python": sys.version.split()[0]},
              "summary": summary, "samples": samples, "load_after": load_average(),
              "date": time.strftime("%Y-%m-%d")}
    write_results(args.out, "ray", record, markdown(record))
    print(f"wrote {Path(args.out) / 'ray.json'} and {Path(args.out) / 'ray.md'}")
    return 0


def _marginal(large: dict, small: dict) -> float | None:
    """Frames per second of the frames the large run has beyond the small one."""
    extra = large["seconds"] - small["seconds"]
    return (large["frames"] - small["frames"]) / extra if extra > 0 else None


def _median_or_none(values: list) -> float | None:
    values = [v for v in values if v]
    return round(statistics.median(values), 3) if values else None


def markdown(record: dict) -> str:
    lines = [f"# `cvexport predict --ray` vs in-process ({record['date']})", "",
             f"CPU: {record['cpu_line']}; Ray {record['versions']['ray']} local, "
             f"{record['ray_resources'].get('CPU', 0):g} CPUs; model {record['model']} (fp32, ONNX Runtime); "
             f"end to end: {record['images']} photos of 160-640 px and a {record['video_frames']}-frame video; "
             f"steady state: the frames/s of {record['images']} photos beyond those of a quarter as many; medians of {record['repeats']} alternating repeats (ratios: "
             "the median of each repeat's ratio). "
             f"`ray.init` took {record['ray_init_seconds']} s (once per session, not in the rates).", "",
             "| mode | end to end (frames/s) | ratio | steady state (frames/s) | ratio |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for mode, row in record["summary"].items():
        steady = f"{row['steady_fps']:.1f}" if row["steady_fps"] else "n/a"
        steady_ratio = f"{row['steady_ratio']:.2f}" if row["steady_ratio"] else "n/a"
        lines.append(f"| {mode} | {row['end_to_end_fps']:.1f} | {row['end_to_end_ratio']:.2f} | {steady} | "
                     f"{steady_ratio} |")
    loads = [s["load_before"] for mode in record["samples"].values() for size in mode.values() for s in size]
    lines += ["", f"Load average (1 min) before the runs: {min(loads)}-{max(loads)}, after: {record['load_after']} "
              "(a shared machine: other work ran beside this)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
