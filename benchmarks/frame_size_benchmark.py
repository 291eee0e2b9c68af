"""In-graph letterbox (``build --input uint8 --frame-size 1280x720``) against the Python one.

On 1280x720 camera-like frames (the SSD val photographs with their shapes, stretched to 16:9):

- time per frame, within one run, alternating the two paths: Python letterbox + uint8 bundle
  (``prepare`` then ``infer``) against the frame-size bundle (the frame goes in untouched; the
  graph resizes and pads);
- how different the two resizes are: the network input of Pillow's antialiased bilinear letterbox
  against the graph's half-pixel bilinear one (mean and max |difference| in grey levels);
- whether results change: detections of the two bundles matched as sets (class, IoU >= 0.5).

Writes ``benchmarks/results/frame_size.{json,md}``; every number names the CPU it came from.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
FRAME = (1280, 720)
FRAMES, ROUNDS = 16, 5


def main() -> int:
    import torch
    from PIL import Image

    from cvexport.build import BuildOptions, build
    from cvexport.bundle import load_bundle
    from cvexport.cpu import cpu_info, describe_cpu
    from cvexport.detection import predictions_as_outputs
    from cvexport.images import letterbox
    from cvexport.preprocess import letterbox_frames
    from cvexport.registry import get_spec
    from cvexport.runtime.predictor import Predictor
    from cvexport.tasks import get_task

    spec = get_spec("ssd")
    task = get_task("detection")
    frames = [np.asarray(Image.fromarray(image).resize(FRAME, Image.BILINEAR))
              for image in task.sample_images(spec, "val", range(FRAMES))]
    root = Path(tempfile.mkdtemp(prefix="frame-size-"))
    bundles = {}
    for name, frame_size in (("python letterbox", None), ("in-graph letterbox", FRAME)):
        out = root / name.split()[0]
        build(BuildOptions(model="ssd", input_format="uint8", frame_size=frame_size, max_batch=1, out=str(out),
                           verify_images=0, engine="ort"), log=lambda line: None)
        bundles[name] = load_bundle(out)

    times = {name: {"prepare": [], "infer": [], "finish": []} for name in bundles}
    results = {name: [] for name in bundles}
    predictors = {name: Predictor(bundle, threads=1) for name, bundle in bundles.items()}
    for round_ in range(ROUNDS + 1):  # round 0 warms up
        for frame in frames:
            for name, predictor in predictors.items():
                t0 = time.perf_counter()
                batch = predictor.prepare([frame])
                t1 = time.perf_counter()
                outputs = predictor.infer(batch.feed)
                t2 = time.perf_counter()
                result = predictor.finish(outputs, batch)
                t3 = time.perf_counter()
                if round_:
                    for stage, seconds in (("prepare", t1 - t0), ("infer", t2 - t1), ("finish", t3 - t2)):
                        times[name][stage].append(seconds * 1e3)
                else:
                    results[name].extend(result)

    # The two resizes, on the network input (before normalization).
    contract = bundles["in-graph letterbox"].input
    python_inputs = np.stack([letterbox(frame, 256, 256)[0] for frame in frames]).astype(np.float64)
    with torch.no_grad():
        graph_inputs = letterbox_frames(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float(), contract)
    graph_inputs = graph_inputs.round().clamp(0, 255).permute(0, 2, 3, 1).numpy().astype(np.float64)
    difference = np.abs(python_inputs - graph_inputs)

    parity = task.new_parity("int8")  # matched at IoU >= 0.5: same objects, boxes within the resize difference
    for expected, got in zip(results["python letterbox"], results["in-graph letterbox"]):
        parity.add(predictions_as_outputs(expected), predictions_as_outputs(got))
    # Control: how much the same detector moves on an invisible change of the same frames (a JPEG
    # re-encode at quality 95) through the Python path: the scale for the difference above.
    control = task.new_parity("int8")
    jpeg = predictors["python letterbox"].predict([_jpeg(frame, 95) for frame in frames])
    for expected, got in zip(results["python letterbox"], jpeg):
        control.add(predictions_as_outputs(expected), predictions_as_outputs(got))

    median = {name: {stage: round(statistics.median(values), 3) for stage, values in stages.items()}
              for name, stages in times.items()}
    total = {name: round(sum(stages.values()), 3) for name, stages in median.items()}
    cpu = cpu_info()
    record = {
        "cpu": describe_cpu(cpu), "frame": list(FRAME), "network": [256, 256], "frames": FRAMES, "rounds": ROUNDS,
        "threads": 1, "median_ms": median, "total_ms": total,
        "in_graph_vs_python": round(total["python letterbox"] / total["in-graph letterbox"], 3),
        "resize_difference": {"mean_abs": round(float(difference.mean()), 3), "max_abs": float(difference.max()),
                              "share_over_8": round(float((difference > 8).mean()), 4)},
        "detections": {"python": parity.reference_detections, "in_graph": parity.test_detections,
                       "matched_iou_0_5": parity.matched, "match_fraction": round(parity.match_fraction, 4),
                       "control_jpeg95_match_fraction": round(control.match_fraction, 4)},
    }
    results_dir = HERE / "benchmarks" / "results"
    (results_dir / "frame_size.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# In-graph letterbox, {FRAME[0]}x{FRAME[1]} frames -> SSD 256x256 ({record['cpu']}, 1 thread)", "",
             "| path | prepare ms | infer ms | finish ms | total ms |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {m['prepare']} | {m['infer']} | {m['finish']} | {total[name]} |" for name, m in median.items()]
    lines += ["", f"In-graph letterbox per frame: {record['in_graph_vs_python']}x the Python path's speed "
              "(medians of one run, alternating).",
              f"Network input, Pillow vs graph resize: mean |diff| {record['resize_difference']['mean_abs']} grey levels, "
              f"max {record['resize_difference']['max_abs']:.0f}, {record['resize_difference']['share_over_8']:.2%} of values "
              "over 8.",
              f"Detections: {parity.matched} of {max(parity.reference_detections, parity.test_detections)} matched "
              f"(class, IoU >= 0.5) between the two paths on {FRAMES} frames ({parity.match_fraction:.1%}); "
              f"control, the Python path on the same frames re-encoded as JPEG quality 95: "
              f"{control.match_fraction:.1%} (the detector's own sensitivity on these frames)."]
    (results_dir / "frame_size.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


if __name__ == "__main__":
    sys.exit(main())
