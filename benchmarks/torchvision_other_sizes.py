"""torchvision detectors on pictures of other sizes: a bundle's answer vs torchvision's own.

A bundle has one input size; torchvision's detectors resize every picture themselves. On
pictures of the bundle's size the two are the same computation (the build's parity gate and
tests/test_torchvision_detectors.py hold them to it). This measures the difference by design on
other sizes, for each detector family, per picture shape:

- ``bundle_policy``: torchvision built for the bundle's size (SSD: its fixed size; RetinaNet/FCOS
  ``min_size = max_size = S``), on the original picture. What remains is the resampler (Pillow's
  antialiased bilinear vs torch's plain bilinear, and uint8 rounding), and for RetinaNet/FCOS
  the padding the network sees and the coarse levels' anchor strides (``image // grid``).
- ``torchvision_default``: torchvision as built by default (RetinaNet/FCOS: shorter side 800,
  longer <= 1333): what a user's torchvision code gives at full resolution, against a bundle
  built small for speed.

Reported: matched / total at the fp32 tolerance (IoU 0.99, |dscore| 1e-4), at the fp16 one
(IoU 0.95, any score) and at IoU 0.5 with any score (the INT8 tolerance), per model and picture size. Test weights (tests/detector_weights.py)
make the scores non-flat; nothing is downloaded. Writes
``benchmarks/results/torchvision_other_sizes.{json,md}``.

    python benchmarks/torchvision_other_sizes.py [--side 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE / "tests"))

SHAPES = ((480, 640), (640, 480), (360, 640), (200, 300))  # (height, width) of the pictures
MODELS = ("ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn", "fcos_resnet50_fpn")
# What the numbers mean, measured on the run of 2026-12-07 (kept under the table).
NOTES = """
Reading the table (test weights: untrained networks, which move far more with their input than
trained ones):

- SSDlite stretches every picture to 320x320, as torchvision does; what remains is the
  resampler (Pillow's antialiased bilinear on uint8 vs torch's plain bilinear on floats). At
  IoU 0.5 and any score, 95-99 % of torchvision's detections are found.
- RetinaNet and FCOS at a fixed 256x256 see the picture with mean-colour padding beside it,
  where torchvision (built for the same size) sees it unpadded. Their coarse levels' anchor
  strides also follow the padded size. FCOS's head normalizes with GroupNorm over the whole
  feature map, so the padding moves every score: 53-71 % found, against 77-91 % for
  RetinaNet (no norm in its head). Feeding both the very same resized pixels (no resampler in
  play) gives the same picture: FCOS 41-76 %.
- torchvision has the same property: its answer for a picture depends on the pictures batched
  with it. It pads a batch to its largest picture. With these test weights, a 192x256 picture
  batched with a 256x256 one kept 70 % (FCOS) and 61 % (RetinaNet) of its detections alone.
- `torchvision_default` (RetinaNet/FCOS at their default 800-1333 sizes, against a 256 bundle)
  is a different resolution, not the same computation. Build at the size you deploy.
"""


def _pictures(count: int) -> list[np.ndarray]:
    """Crops of scikit-image's photographs at each shape (resized with Pillow from a big crop)."""
    from PIL import Image

    from cvexport.models.photos import photo_samples

    pictures = []
    for index, (height, width) in enumerate(SHAPES):
        for big in photo_samples("val", range(index * count, (index + 1) * count), 512, 1):
            pictures.append(np.asarray(Image.fromarray(big).resize((width, height), Image.BILINEAR)))
    return pictures


def _as_outputs(boxes, scores, classes) -> dict[str, np.ndarray]:
    n = len(scores)
    return {"num_detections": np.array([[n]], np.int32), "detection_boxes": np.asarray(boxes, np.float32).reshape(1, n, 4),
            "detection_scores": np.asarray(scores, np.float32).reshape(1, n),
            "detection_classes": np.asarray(classes, np.int32).reshape(1, n)}


def measure(name: str, side: int | None, pictures: list[np.ndarray], work: Path) -> dict:
    from cvexport.build import BuildOptions, build
    from cvexport.detection import TOLERANCES, DetectionParity, DetectionTolerance
    from cvexport.ops.box_filters import remove_small_boxes
    from cvexport.registry import bundle_spec
    from cvexport.runtime.predictor import Predictor
    from cvexport.torchvision_detectors import build_detector
    from cvexport.torchvision_zoo import build_network
    from detector_weights import zoo_weights_file

    default_side = side or 320
    weights = zoo_weights_file(name, default_side, work)
    out = build(BuildOptions(model=name, weights=str(weights), input_size=side, max_batch=1, engine="ort",
                             out=str(work / f"{name}-bundle")))
    predictor = Predictor(str(out))
    spec = bundle_spec(predictor.bundle)
    policy = spec.load_model(predictor.bundle.weights_path)
    default = build_network(name, len(spec.class_names) + 1, default_side)
    if not hasattr(default.transform, "fixed_size") or not default.transform.fixed_size:
        default = build_detector(name, len(spec.class_names) + 1, 800)  # torchvision's min_size 800, max 1333
        default.transform.max_size = 1333
    default.load_state_dict(policy.state_dict())
    post = predictor.bundle.manifest.postprocess
    loose = DetectionTolerance(min_iou=0.5, max_score_delta=None, min_match_fraction=0.0)
    rows = {}
    for picture in pictures:
        key = f"{picture.shape[1]}x{picture.shape[0]}"
        ours = predictor.predict(picture)[0]
        ours_out = _as_outputs(ours.xyxy, ours.scores, ours.class_ids)
        pixels = torch.from_numpy(picture).permute(2, 0, 1).float() / 255.0
        for reference, model in (("bundle_policy", policy), ("torchvision_default", default)):
            found = model.torchvision_inference([pixels], post.score_threshold, post.iou_threshold, post.max_detections)[0]
            keep = found["labels"] > 0
            boxes = found["boxes"][keep].numpy()
            small = remove_small_boxes(boxes.astype(np.float64))  # what run drops, as the bundle's results do
            theirs = _as_outputs(boxes[small], found["scores"][keep].numpy()[small], found["labels"][keep].numpy()[small] - 1)
            row = rows.setdefault(reference, {}).setdefault(key, {"fp32": [0, 0], "fp16": [0, 0], "iou50": [0, 0]})
            for label, tolerance in (("fp32", TOLERANCES["fp32"]), ("fp16", TOLERANCES["fp16"]), ("iou50", loose)):
                parity = DetectionParity(tolerance, score_threshold=post.score_threshold).add(theirs, ours_out)
                row[label][0] += parity.matched
                row[label][1] += parity.reference_detections
    predictor.runner.close()
    return {"bundle_size": list(spec.input_size), "fit": predictor.bundle.manifest.input.fit, "rows": rows}


def main() -> int:
    from cvexport.cpu import describe_cpu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=256, help="RetinaNet/FCOS bundle side (SSDlite is 320)")
    parser.add_argument("--pictures", type=int, default=2, help="pictures per shape")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    pictures = _pictures(args.pictures)
    results = {"cpu": describe_cpu(), "shapes": [f"{w}x{h}" for h, w in SHAPES], "pictures_per_shape": args.pictures,
               "models": {}}
    with tempfile.TemporaryDirectory() as work:
        for name in args.models:
            side = None if name.startswith("ssd") else args.side
            results["models"][name] = measure(name, side, pictures, Path(work))
            print(name, json.dumps(results["models"][name]["rows"]), flush=True)
    target = HERE / "benchmarks" / "results"
    (target / "torchvision_other_sizes.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# torchvision detectors on pictures of other sizes", "",
             f"CPU: {results['cpu']}. Matched / torchvision's detections, summed over {args.pictures} pictures per shape.",
             "fp32: IoU >= 0.99 and |dscore| <= 1e-4; fp16: IoU >= 0.95, any score; iou50: IoU >= 0.5, any score.", "",
             "| model | bundle | reference | picture | fp32 | fp16 | iou50 |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, found in results["models"].items():
        size = "x".join(map(str, found["bundle_size"]))
        for reference, shapes in found["rows"].items():
            for shape, row in shapes.items():
                cells = [f"{m}/{t} ({m / t:.0%})" if t else "0/0" for m, t in (row["fp32"], row["fp16"], row["iou50"])]
                lines.append(f"| {name} | {size} {found['fit']} | {reference} | {shape} | {' | '.join(cells)} |")
    (target / "torchvision_other_sizes.md").write_text("\n".join(lines) + "\n" + NOTES)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
