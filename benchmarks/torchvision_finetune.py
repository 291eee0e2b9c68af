"""A torchvision SSDlite320 trained on the project's shape data with ``cvexport train``, then
exported: does the bundle score what torchvision's own evaluation of the same weights scores?

1. The shape data (:func:`cvexport.models.dataset_writers.write_coco`: the detection
   generator's camera frames, classes ``angular`` and ``round``) is written as a COCO dir.
2. ``cvexport train ssdlite320_mobilenet_v3_large --data DIR`` from random weights (nothing is
   downloaded, no backbone file: torchvision's own init), torchvision's own losses.
3. ``cvexport build ... --weights CKPT`` (fp32, its parity gate against torchvision's
   inference) and ``cvexport verify BUNDLE --data DIR``: mAP@0.5 of the bundle on the val split.
4. torchvision's own evaluation of the same checkpoint: ``model.eval()(images)`` on every val
   picture as it is (torchvision's transform fits it; its thresholds), scored by the project's
   mAP code (:func:`cvexport.metrics.detection_map`).

Writes ``benchmarks/results/torchvision_finetune.{json,md}`` with the training time and the CPU.

    python benchmarks/torchvision_finetune.py [--train 320 --val 64 --epochs 8 --batch-size 8]
    python benchmarks/torchvision_finetune.py --render-only   # the .md again from the .json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "ssdlite320_mobilenet_v3_large"


def torchvision_map(checkpoint: Path, data: Path) -> dict:
    """mAP of torchvision's own inference of ``checkpoint`` on the val pictures of ``data``."""
    import torch

    from cvexport.metrics import ImageDetections, detection_map
    from cvexport.models.user_datasets import open_dataset
    from cvexport.registry import get_spec

    spec = get_spec(MODEL).for_weights(checkpoint)
    model = spec.load_model(checkpoint)
    dataset = open_dataset("detection", data, MODEL)
    pictures, truths = dataset.images_and_truths("val")
    predictions = []
    started = time.perf_counter()
    for picture in pictures:
        image = torch.from_numpy(picture.copy()).permute(2, 0, 1).float() / 255.0
        result = model.torchvision_inference([image], float(model.score_thresh), float(model.nms_thresh),
                                             int(model.detections_per_img))[0]
        keep = result["labels"] > 0  # label 0 is the background
        predictions.append(ImageDetections(boxes=result["boxes"][keep].numpy().astype("float64"),
                                           classes=(result["labels"][keep] - 1).numpy(),
                                           scores=result["scores"][keep].numpy()))
    scores = detection_map(predictions, truths, dataset.class_names)
    return {"map50": round(scores["map50"], 4), "map": round(scores["map"], 4), "val_images": len(pictures),
            "seconds": round(time.perf_counter() - started, 1),
            "thresholds": {"score": float(model.score_thresh), "nms": float(model.nms_thresh),
                           "detections_per_img": int(model.detections_per_img)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/cvexport-tv-finetune", help="data, run and bundle folder")
    parser.add_argument("--train", type=int, default=320, help="train pictures")
    parser.add_argument("--val", type=int, default=64, help="val pictures")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json in --out")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE))
    from results_files import write_results

    if args.render_only:
        record = json.loads((Path(args.out) / "torchvision_finetune.json").read_text())
        write_results(args.out, "torchvision_finetune", record, render(record))
        return 0

    from cvexport.checkpoint import read_metadata
    from cvexport.cli import main as cli
    from cvexport.cpu import cpu_info, describe_cpu
    from cvexport.models.dataset_writers import write_coco

    work = Path(args.work)
    data, run_dir, bundle = work / "coco", work / "run", work / "bundle"
    if not (data / "annotations" / "val.json").is_file():
        write_coco(data, train=args.train, val=args.val)
    checkpoint = run_dir / f"{MODEL}.safetensors"
    train = ["train", MODEL, "--data", str(data), "--run-dir", str(run_dir), "--out", str(checkpoint),
             "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    started = time.perf_counter()
    if cli(train + (["--lr", str(args.lr)] if args.lr else [])) != 0:
        return 1
    wall = time.perf_counter() - started
    meta = read_metadata(checkpoint)
    build_rc = cli(["build", MODEL, "--weights", str(checkpoint), "--out", str(bundle), "--force"])
    report_file = work / "verify.json"
    verify_rc = cli(["verify", str(bundle), "--data", str(data), "--json", str(report_file)]) if build_rc == 0 else None
    rows = json.loads(report_file.read_text())["rows"] if verify_rc is not None and report_file.is_file() else []
    bundle_row = next((row for row in rows if not row.get("reference")), {})
    reference = torchvision_map(checkpoint, data)
    cpu = cpu_info()
    record = {
        "model": MODEL, "start": meta["start"], "dataset": meta["dataset"], "train": meta["train"],
        "throughput": meta["throughput"], "train_wall_seconds": round(wall, 1), "run_val_metrics": meta["metrics"],
        "build_rc": build_rc, "verify_rc": verify_rc, "verify_rows": rows,
        "bundle_map50": bundle_row.get("map50"), "bundle_map": bundle_row.get("map"),
        "torchvision": reference, "cpu": cpu, "cpu_line": describe_cpu(cpu),
    }
    record["load_average_after_training"] = [round(v, 2) for v in os.getloadavg()]  # other jobs on the cores
    manifest = bundle / "manifest.json"
    record["bundle_resize"] = json.loads(manifest.read_text())["input"].get("resize") if build_rc == 0 else None
    write_results(args.out, "torchvision_finetune", record, render(record))
    return 0


def render(record: dict) -> str:
    """The results table and what it shows, from the record."""
    train, throughput, reference = record["train"], record["throughput"], record["torchvision"]
    dataset, metrics = record["dataset"], record["run_val_metrics"]
    torch_row = next((row for row in record["verify_rows"] if row.get("reference")), {})
    lines = [
        f"# torchvision {MODEL} fine-tuned with `cvexport train --data` on the shape data", "",
        f"Start: {record['start']['kind']} (torchvision's own init, nothing downloaded). {train['steps_done']} steps of "
        f"batch {train['batch_size']}, lr {train['lr']}, {dataset['train_images']} train / {dataset['val_images']} val "
        f"pictures (classes {', '.join(dataset['class_names'])}).", "",
        f"Training: {record['train_wall_seconds']} s wall for the whole command ({throughput['seconds']} s in the loop, "
        f"{throughput['images_per_s']} images/s, {throughput['threads']} thread) on {record['cpu_line']}.", "",
        "| evaluation | mAP@0.5 | mAP@0.5:0.95 |", "|---|---|---|",
        f"| cvexport bundle fp32 on ONNX Runtime (`cvexport verify BUNDLE --data DIR`) | "
        f"{_shown(record['bundle_map50'])} | {_shown(record['bundle_map'])} |",
        f"| cvexport's torch reference of the bundle (same preprocessing, `verify`'s torch row) | "
        f"{_shown(torch_row.get('map50'))} | {_shown(torch_row.get('map'))} |",
        f"| torchvision's own `model.eval()(images)`, same weights, project mAP code | {reference['map50']:.4f} | "
        f"{reference['map']:.4f} |",
        f"| the run's own val metric (`train`'s evaluation, score threshold 0.01) | "
        f"{_shown(metrics.get('val_map50'))} | {_shown(metrics.get('val_map'))} |", "",
        f"build exit status {record['build_rc']}, verify exit status {record['verify_rc']}; torchvision's thresholds: "
        f"score {reference['thresholds']['score']}, NMS IoU {reference['thresholds']['nms']}, "
        f"{reference['thresholds']['detections_per_img']} detections per image (the bundle's defaults are the same).",
    ]
    if record.get("note"):
        lines += ["", record["note"]]
    if record.get("bundle_resize"):
        lines += ["", f"The bundle fits each picture as its manifest says (`{record['bundle_resize']}`); torchvision's "
                  "transform stretches SSDlite's input to 320x320, and training fitted the pictures that way. The "
                  "bundle's ONNX Runtime row equals cvexport's torch row, and the build's parity gate matched "
                  "torchvision's own inference detection for detection on the same fitted pictures: the export adds "
                  "no difference. " + ("What is left between the bundle's row and torchvision's is the resampler: "
                                       "Pillow's antialiased bilinear on uint8 pictures against torch's plain bilinear "
                                       "on floats." if record["bundle_resize"].startswith("stretch") else
                                       "The gap to torchvision's row is the input fit.")]
    return "\n".join(lines) + "\n"


def _shown(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


if __name__ == "__main__":
    sys.exit(main())
