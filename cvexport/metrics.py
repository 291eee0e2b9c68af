"""Task metrics computed with well-kept libraries (faster-coco-eval for COCO-style mAP)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ImageDetections:
    """Detections or ground truth for one image, boxes in pixels (x1, y1, x2, y2)."""

    boxes: np.ndarray  # float (D, 4)
    classes: np.ndarray  # int (D,)
    scores: np.ndarray | None = None  # float (D,); None for ground truth


def detection_map(
    predictions: Sequence[ImageDetections],
    ground_truth: Sequence[ImageDetections],
    class_names: Sequence[str],
) -> dict[str, float]:
    """COCO mAP of ``predictions`` against ``ground_truth`` (same order, one entry per image).

    Returns {"map50": mAP@0.5, "map": mAP@0.5:0.95}, both in [0, 1].
    """
    from faster_coco_eval import COCO, COCOeval_faster

    if len(predictions) != len(ground_truth):
        raise ValueError("predictions and ground_truth must list the same images")
    images, annotations, results = [], [], []
    for image_id, (pred, gt) in enumerate(zip(predictions, ground_truth), start=1):
        images.append({"id": image_id, "width": 1, "height": 1})
        for box, cls in zip(gt.boxes, gt.classes):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        assert pred.scores is not None, "predictions need scores"
        for box, cls, score in zip(pred.boxes, pred.classes, pred.scores):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "score": float(score),
                }
            )
    if not results:
        return {"map50": 0.0, "map": 0.0}
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": categories}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"map50": float(max(stats[1], 0.0)), "map": float(max(stats[0], 0.0))}
