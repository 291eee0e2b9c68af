"""Task metrics computed with well-kept libraries: faster-coco-eval for COCO-style mAP,
torchmetrics for top-1 accuracy and segmentation mIoU."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Metric:
    """A task metric as ``verify`` reports it: its key in the metrics dict, a label, and which
    direction is better."""

    key: str
    label: str
    higher_is_better: bool = True
    fraction: bool = True  # in [0, 1]: differences are said in points (x 100); else relative %

    def worsening(self, reference: float, value: float) -> float:
        """How much worse ``value`` is than ``reference``: points for fractions, else percent of
        the reference (negative when it is better)."""
        delta = (reference - value) if self.higher_is_better else (value - reference)
        if self.fraction:
            return delta * 100.0
        return 100.0 * delta / abs(reference) if reference else 0.0

    @property
    def unit(self) -> str:
        return "points" if self.fraction else "%"


def top1_accuracy(predicted: Sequence[int], labels: Sequence[int], num_classes: int) -> float:
    """Micro top-1 accuracy of class ids ``predicted`` against ``labels`` (torchmetrics)."""
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy

    if len(predicted) == 0:
        return 0.0
    return float(multiclass_accuracy(torch.as_tensor(np.asarray(predicted)), torch.as_tensor(np.asarray(labels)),
                                     num_classes=num_classes, average="micro"))


def segmentation_scores(predicted: Sequence[np.ndarray], truth: Sequence[np.ndarray], num_classes: int) -> dict[str, float]:
    """mIoU (macro over all classes, background included) and pixel accuracy of label maps
    (each ndarray[H, W], shapes may differ between images), accumulated over every pixel (torchmetrics)."""
    import torch
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    jaccard = MulticlassJaccardIndex(num_classes=num_classes, average="macro")
    accuracy = MulticlassAccuracy(num_classes=num_classes, average="micro")
    for pred, gt in zip(predicted, truth):
        p, g = torch.as_tensor(np.asarray(pred, np.int64)).flatten(), torch.as_tensor(np.asarray(gt, np.int64)).flatten()
        jaccard.update(p, g)
        accuracy.update(p, g)
    return {"miou": float(jaccard.compute()), "pixel_acc": float(accuracy.compute())}


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
