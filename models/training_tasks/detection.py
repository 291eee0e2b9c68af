"""Training hooks of the detection task (TinySSD, ``ssd``): COCO datasets, boxes flipped with the
picture, anchors labelled per image, the multibox loss, COCO mAP on val."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from cvexport.models.coco_format import COCO
from cvexport.models.training_tasks.base import FineTuning, Recipe, flipped, load_kept, shipped_tensors


class DetectionTraining(FineTuning):
    task = "detection"
    dataset_format = COCO
    # The rate of the SSD's later phases, which continue training from trained weights.
    recipe = Recipe(batch_size=16, lr=0.01, weight_decay=5e-4, warmup_steps=20, epochs=10)

    def sample(self, entry, image, class_count, colors):
        """DetectionSample with the boxes normalized to the picture."""
        from cvexport.models.detection_data import DetectionSample

        scale = np.array([entry.width, entry.height, entry.width, entry.height], dtype=np.float64)
        return DetectionSample(image, (entry.boxes / scale).astype(np.float32), entry.labels)

    def fit_to_input(self, sample, size):
        from cvexport.models.detection_data import fit_to_input

        return fit_to_input(sample, size)

    def truth(self, entry, class_count, colors):
        """ImageDetections in pixels of the upright picture."""
        from cvexport.metrics import ImageDetections

        return ImageDetections(boxes=entry.boxes.astype(np.float64), classes=entry.labels)

    def network(self, spec, num_classes, input_side, start, pretrained=None):
        from cvexport.models.tinyssd import TinySSD

        model = TinySSD(num_classes=num_classes, input_size=input_side)
        if start == "shipped":
            # The box predictors are class-agnostic and stay; the class predictors are the head.
            load_kept(model, shipped_tensors(spec), ("cls_predictors.",), spec.weights)
        return model, [p for name, p in model.named_parameters() if name.startswith("cls_predictors.")]

    def flip(self, sample):
        boxes = sample.boxes.copy()
        boxes[:, [0, 2]] = 1.0 - sample.boxes[:, [2, 0]]
        return replace(sample, image=flipped(sample.image), boxes=boxes)

    def batch(self, chosen, images, model):
        import torch

        from cvexport.models.ssd_training import label_anchors

        targets = [label_anchors(model.anchors, torch.from_numpy(s.boxes), torch.from_numpy(s.labels)) for s in chosen]
        return {"images": images, "cls_target": torch.stack([t[0] for t in targets]),
                "offset_target": torch.stack([t[1] for t in targets]),
                "positive": torch.stack([t[2] for t in targets])}

    def loss(self):
        from cvexport.models.ssd_training import multibox_loss

        return multibox_loss

    def contact_cell(self, sample, class_names: Sequence[str]):
        from cvexport.models.contact_sheet import detection_cell

        return detection_cell(sample.image, sample.boxes, sample.labels, class_names)

    def predictions(self, model, outputs, fitted, size) -> list[Any]:
        """ImageDetections in pixels of each picture, at the evaluation's score threshold
        (``ssd_training.EVAL_NMS``: 0.01, as COCO evaluation ranks detections)."""
        from cvexport.models.ssd_training import EVAL_NMS
        from cvexport.ops.detection import postprocess

        return detections_in_pictures(postprocess(outputs[0], outputs[1], model.anchors, EVAL_NMS), fitted, size)

    def scores(self, predictions, truths, class_names, images):
        """``val_map50`` and ``val_map`` (COCO), with the boxes they are measured on."""
        from cvexport.metrics import detection_map

        scores = detection_map(predictions, truths, class_names)
        # The boxes it is measured on: on a few, mAP moves in large steps (one box of four is 0.25).
        return {"val_map50": scores["map50"], "val_map": scores["map"], "val_images": images,
                "val_boxes": sum(len(truth.boxes) for truth in truths)}


def detections_in_pictures(out, fitted, size: int) -> list[Any]:
    """ImageDetections in pixels of each picture from the detection contract ``out``
    (Tensor[B, K] outputs, boxes normalized to the ``size`` square input) of the ``fitted``
    (sample, Letterbox) pairs."""
    from cvexport.metrics import ImageDetections

    predictions = []
    for b, (_, box_map) in enumerate(fitted):
        n = int(out["num_detections"][b, 0])
        predictions.append(ImageDetections(
            boxes=box_map.boxes_to_original(out["detection_boxes"][b, :n].numpy(), size, size),
            classes=out["detection_classes"][b, :n].numpy(), scores=out["detection_scores"][b, :n].numpy()))
    return predictions


DETECTION = DetectionTraining()
