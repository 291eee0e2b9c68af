"""How the SSD's NMS IoU threshold was chosen: mAP per view against the threshold, measured on
a tuning split that the reported val metrics never see.

    python benchmarks/nms_iou_sweep.py [--weights models/weights/ssd.safetensors]
        [--start 1024] [--val-images 1024] [--ious 0.25,0.3,0.35,0.4,0.45,0.5] [--threads 2]

The tuning split is val pictures ``start .. start + val-images - 1`` of every view (square and the
letterboxed 16:9, 4:3, 9:16 camera frames); the val metrics in the README and in the checkpoint
are measured on pictures 0..255, so the choice is not fitted to what is reported. Each view runs
through the network once (``ssd_training.network_outputs``) and is scored at every threshold by
the training module's own evaluation (``score_outputs``: mAP at score 0.01, boxes mapped back,
collapsed boxes dropped). The chosen threshold has the best mean mAP@0.5 over the views (ties:
the best mean mAP@0.5:0.95); the registry's default for ``ssd`` should be it.

Writes ``benchmarks/results/nms_iou_sweep.{json,md}``; every number names the CPU it came from.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/results_files.py, however this file is loaded
from results_files import write_results  # noqa: E402


def sweep(model, ious: list[float], start: int, size: int) -> dict[float, dict[str, float]]:
    from cvexport.models import ssd_training
    from cvexport.models.camera_frames import metric_suffix

    table: dict[float, dict[str, float]] = {iou: {} for iou in ious}
    for view in ssd_training.EVAL_VIEWS:
        batches = ssd_training.network_outputs(model, view, range(start, start + size))
        for iou in ious:
            nms = replace(ssd_training.EVAL_NMS, iou_threshold=iou)
            table[iou].update(ssd_training.score_outputs(batches, model.anchors, view, nms))
        key = "val_map50" + metric_suffix(view)
        print(view, "mAP@0.5 by NMS IoU:", {iou: round(table[iou][key], 4) for iou in ious}, flush=True)
    return table


def mean_over_views(record: dict[str, float], metric: str) -> float:
    from cvexport.models.camera_frames import metric_suffix
    from cvexport.models.ssd_training import EVAL_VIEWS

    return sum(record[metric + metric_suffix(view)] for view in EVAL_VIEWS) / len(EVAL_VIEWS)


def markdown(data: dict) -> str:
    from cvexport.models.camera_frames import metric_suffix
    from cvexport.models.ssd_training import EVAL_VIEWS

    lines = ["# SSD: NMS IoU threshold against mAP (tuning split)", "", data["about"], "",
             f"Machine: {data['machine']}. Weights: {data['weights']}. Chosen: **{data['chosen']}** "
             f"(the registry's default: {data['registry_default']}).", "",
             "| NMS IoU | " + " | ".join(f"mAP@0.5 {v}" for v in EVAL_VIEWS) + " | mean mAP@0.5 | mean mAP@0.5:0.95 |",
             "| ---: |" + " ---: |" * (len(EVAL_VIEWS) + 2)]
    for iou, record in data["table"].items():
        cells = [f"{record['val_map50' + metric_suffix(v)]:.4f}" for v in EVAL_VIEWS]
        lines.append(f"| {iou} | " + " | ".join(cells)
                     + f" | {record['mean_map50']:.4f} | {record['mean_map']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="SSD checkpoint (default: the shipped one)")
    parser.add_argument("--start", type=int, default=1024, help="first val picture of the tuning split")
    parser.add_argument("--val-images", type=int, default=1024, help="pictures per view in the tuning split")
    parser.add_argument("--ious", default="0.25,0.3,0.35,0.4,0.45,0.5")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    from cvexport.models.ssd_training import VAL_SIZE

    if args.start < VAL_SIZE:
        print(f"error: --start {args.start} overlaps the reported val pictures 0..{VAL_SIZE - 1}; "
              f"use --start {VAL_SIZE} or more", file=sys.stderr)
        return 2

    import torch

    torch.set_num_threads(args.threads)
    from cvexport.cpu import describe_cpu
    from cvexport.registry import get_spec

    spec = get_spec("ssd")
    model = spec.load_model(args.weights).float().eval()
    ious = [float(v) for v in args.ious.split(",")]
    started = time.perf_counter()
    table = sweep(model, ious, args.start, args.val_images)
    for record in table.values():
        record["mean_map50"] = mean_over_views(record, "val_map50")
        record["mean_map"] = mean_over_views(record, "val_map")
    chosen = max(ious, key=lambda iou: (round(table[iou]["mean_map50"], 4), table[iou]["mean_map"]))
    data = {"about": f"Tuning split: val pictures {args.start}..{args.start + args.val_images - 1} of each view "
                     "(the reported val metrics use 0..255); mAP at score 0.01, per-class NMS, boxes mapped back to "
                     "each picture, boxes under 1 px dropped. Chosen: best mean mAP@0.5 over the views (ties: "
                     "mean mAP@0.5:0.95).",
            "machine": describe_cpu(), "weights": str(args.weights or f"models/weights/{spec.weights}"),
            "registry_default": spec.defaults["iou_threshold"], "chosen": chosen,
            "seconds": round(time.perf_counter() - started, 1), "table": {str(k): v for k, v in table.items()}}
    write_results(args.out, "nms_iou_sweep", data, markdown(data), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
