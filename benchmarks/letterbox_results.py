"""Issue #13's before/after: the shipped checkpoints of a git revision ("before") against the
ones in the work tree ("after"), on square val and on letterboxed camera frames.

    python benchmarks/letterbox_results.py --before REV [--val-images 256] [--threads 1]
        [--out benchmarks/results] [--picture docs/images/letterbox_16x9.png]

Every number is measured here, by the training modules' own evaluation (what ``cvexport train``
prints at the end): the SSD's COCO mAP and ghost count per view (``ssd_training.evaluate_map``),
the FCN's mIoU and the share of padding predicted as background (``fcn_training.evaluate``),
the classifier's top-1 (``classifier_training.evaluate``). Writes
``letterbox_before_after.{json,md}`` under ``--out``, and the README picture: a 16:9 val frame
letterboxed to the SSD's input with the detections of a before and an after FP16 bundle
(score >= 0.25, what the bundles output), and the after bundle's ``cvexport run`` picture.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/results_files.py, however this file is loaded
from results_files import write_results  # noqa: E402
VIEW_NAMES = ("square", "16:9", "4:3", "9:16")


def weights_at(revision: str, name: str, directory: Path) -> Path:
    """models/weights/NAME.safetensors as committed at ``revision``, written into ``directory``."""
    blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:models/weights/{name}.safetensors"],
                          check=True, capture_output=True).stdout
    path = directory / f"{name}-{revision}.safetensors"
    path.write_bytes(blob)
    return path


def evaluate(name: str, weights: Path | None, val_images: int) -> dict:
    from cvexport.models import classifier_training, fcn_training, ssd_training
    from cvexport.registry import get_spec

    model = get_spec(name).load_model(weights).float().eval()
    started = time.perf_counter()
    if name == "ssd":
        record = ssd_training.evaluate_map(model, size=val_images)
    elif name == "fcn":
        record = fcn_training.evaluate(model, size=val_images, views=fcn_training.EVAL_VIEWS)
    else:
        record = classifier_training.evaluate(model, size=val_images, views=classifier_training.EVAL_VIEWS)
    return {**record, "eval_seconds": round(time.perf_counter() - started, 1)}


def markdown(data: dict) -> str:
    from cvexport.models.camera_frames import metric_suffix

    views = [(view, metric_suffix(view)) for view in VIEW_NAMES]
    lines = ["# Letterboxed camera frames: before and after (issue #13)", "", data["about"], "",
             f"Machine: {data['machine']}. Before: models/weights at {data['before']}; after: the work tree's.", "",
             "| model | metric | " + " | ".join(VIEW_NAMES) + " |", "| --- | --- |" + " ---: |" * len(VIEW_NAMES)]

    def row(model: str, label: str, key: str, fmt) -> None:
        for when in ("before", "after"):
            rec = data[model][when]
            cells = [fmt(rec[key + s]) if key + s in rec else "–" for _, s in views]
            lines.append(f"| {model} ({when}) | {label} | " + " | ".join(cells) + " |")

    row("ssd", "mAP@0.5", "val_map50", lambda v: f"{v:.3f}")
    row("ssd", "mAP@0.5:0.95", "val_map", lambda v: f"{v:.3f}")
    row("ssd", "ghosts (score ≥ 0.25, > half on the padding)", "val_ghosts", str)
    row("ssd", "boxes under 1 px once mapped back", "val_collapsed", str)
    row("fcn", "mIoU", "val_miou", lambda v: f"{v:.3f}")
    row("fcn", "padding predicted background", "val_padding_background", lambda v: f"{100 * v:.2f} %")
    row("classifier", "top-1", "val_top1", lambda v: f"{v:.3f}")
    return "\n".join(lines) + "\n"


def picture(before: Path, after: Path, out: Path, index: int, work: Path) -> dict:
    """The README picture; returns the ghost counts drawn in it."""
    from PIL import Image, ImageDraw

    from cvexport.cli import main
    from cvexport.images import letterbox
    from cvexport.models.camera_frames import content_box
    from cvexport.models.detection_data import make_frame
    from cvexport.models.ssd_training import padding_share
    from cvexport.detection import valid_detections
    from cvexport.runtime.predictor import Predictor

    frame = make_frame("val", index, view="16:9").image
    frame_path = work / f"val16x9_{index}.png"
    Image.fromarray(frame).save(frame_path)
    panels, ghosts = [], {}
    for label, weights in (("before", before), ("after", after)):
        bundle = work / f"bundle-{label}"
        assert main(["build", "ssd", "--weights", str(weights), "--fp16", "--out", str(bundle), "--force"]) == 0
        with Predictor(bundle) as predictor:
            batch = predictor.prepare([frame])
            outputs = predictor.infer(batch.feed)
        boxes, scores, _ = valid_detections(outputs, 0)
        network, box_map = letterbox(frame, 256, 256)
        shares = padding_share(boxes, content_box(box_map, 256))
        ghosts[label] = int((shares > 0.5).sum())
        canvas = Image.fromarray(network).resize((512, 512), Image.NEAREST)
        draw = ImageDraw.Draw(canvas)
        for box, share in zip(boxes * 512, shares):
            draw.rectangle([float(v) for v in box], outline=(255, 40, 40) if share > 0.5 else (40, 220, 40), width=3)
        draw.text((8, 8), f"{label}: {len(boxes)} detections, {ghosts[label]} on the padding (red)", fill=(255, 255, 0))
        panels.append(canvas)
        if label == "after":
            results = work / "run-after"
            assert main(["run", str(bundle), str(frame_path), "--out", str(results), "--backend", "ort"]) == 0
            run_picture = Image.open(next(results.glob("*annotated.png"))).convert("RGB")
    run_picture = run_picture.resize((1024, round(1024 * run_picture.height / run_picture.width)), Image.BILINEAR)
    sheet = Image.new("RGB", (1024, 512 + run_picture.height), (255, 255, 255))
    sheet.paste(panels[0], (0, 0))
    sheet.paste(panels[1], (512, 0))
    sheet.paste(run_picture, (0, 512))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return ghosts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision whose models/weights are the 'before'")
    parser.add_argument("--val-images", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frame", type=int, default=15, help="index of the 16:9 val frame in the picture")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "images" / "letterbox_16x9.png"))
    parser.add_argument("--skip-metrics", action="store_true", help="only the picture")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from cvexport.cpu import describe_cpu
    from cvexport.models import ssd_training
    from cvexport.registry import get_spec

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = {"about": "256 val pictures per view unless said otherwise (960 for the classifier's default); square = the "
                         "original val split; 16:9, 4:3, 9:16 = camera frames (detection_data/segmentation_data/"
                         "classification_data.make_frame) letterboxed by cvexport.images.letterbox; SSD detections "
                         "mapped back to each picture and boxes under 1 px dropped (mAP at score "
                         f"{ssd_training.EVAL_NMS.score_threshold}, NMS IoU {ssd_training.EVAL_NMS.iou_threshold}, "
                         "the bundles' default, for before and after alike). "
                         "Ghosts: detections at score >= 0.25 with more than half their area on the padding, counted "
                         "before anything is dropped.",
                "machine": describe_cpu(), "before": args.before,
                "val_images": args.val_images}
        before_ssd = weights_at(args.before, "ssd", work)
        if not args.skip_metrics:
            for name in ("ssd", "fcn", "classifier"):
                before = before_ssd if name == "ssd" else weights_at(args.before, name, work)
                size = args.val_images if name != "classifier" else max(args.val_images, 960)
                data[name] = {"before": evaluate(name, before, size), "after": evaluate(name, None, size)}
                print(name, json.dumps(data[name]), flush=True)
            write_results(args.out, "letterbox_before_after", data, markdown(data), indent=1)
        ghosts = picture(before_ssd, get_spec("ssd").weights_path(), Path(args.picture),
                         args.frame, work)
        print(f"picture {args.picture}: ghosts drawn {ghosts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
