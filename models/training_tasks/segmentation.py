"""Training hooks of the segmentation task (FCN on ResNet-18, ``fcn``): VOC datasets, the final
1x1 conv and the transposed conv as the head (bilinear again: its shape follows the class
count), per-pixel cross-entropy without VOC's void pixels, mIoU on val."""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from cvexport.models.dataset_reading import VOID
from cvexport.models.training_tasks.base import FineTuning, Recipe, flipped, load_kept, shipped_tensors
from cvexport.models.voc_format import VOC, read_mask


def segmentation_loss(model, batch):
    """Per-pixel cross-entropy; VOC's void pixels (VOID) count neither in the loss nor in the accuracy."""
    import torch.nn.functional as F

    logits = model(batch["images"])
    masks = batch["masks"]
    valid = masks != VOID
    accuracy = ((logits.detach().argmax(1) == masks) & valid).sum() / valid.sum().clamp(min=1)
    return F.cross_entropy(logits, masks, ignore_index=VOID), {"pix_acc": float(accuracy)}


class SegmentationTraining(FineTuning):
    task = "segmentation"
    dataset_format = VOC
    # The rate of the shipped recipe's fine-tuning phase.
    recipe = Recipe(batch_size=16, lr=0.01, weight_decay=1e-3, warmup_steps=30, epochs=10)
    imagenet_start = True

    def sample(self, entry, image, class_count, colors):
        """SegmentationSample with the mask of class ids (VOID kept)."""
        from cvexport.models.segmentation_data import SegmentationSample

        return SegmentationSample(image, read_mask(entry, class_count, colors))

    def fit_to_input(self, sample, size):
        from cvexport.models.segmentation_data import fit_to_input

        return fit_to_input(sample, size)

    def truth(self, entry, class_count, colors):
        """The label map (VOID kept; :meth:`metric_inputs` drops those pixels)."""
        return read_mask(entry, class_count, colors)

    def metric_inputs(self, predictions, truths):
        """VOID pixels left out of the label maps (as flat arrays, which the segmentation metric accepts)."""
        kept = [np.asarray(t) != VOID for t in truths]
        return ([np.asarray(p)[k] for p, k in zip(predictions, kept)],
                [np.asarray(t)[k] for t, k in zip(truths, kept)])

    def network(self, spec, num_classes, input_side, start, pretrained=None):
        from torchvision.models import resnet18

        from cvexport.models.fcn import FCNResNet18

        backbone = resnet18(weights=None)
        if start == "imagenet":
            from cvexport.pretrained import resnet18_weights

            load_kept(backbone, resnet18_weights(pretrained), ("fc.",), str(pretrained.path))
        model = FCNResNet18(num_classes, backbone)  # new 1x1 conv, transposed conv bilinear again
        if start == "shipped":
            load_kept(model, shipped_tensors(spec), ("classifier.", "upsample."), spec.weights)
        return model, list(model.classifier.parameters()) + list(model.upsample.parameters())

    def flip(self, sample):
        return replace(sample, image=flipped(sample.image), mask=np.ascontiguousarray(sample.mask[:, ::-1]))

    def batch(self, chosen, images, model):
        import torch

        return {"images": images, "masks": torch.from_numpy(np.stack([s.mask for s in chosen])).long()}

    def loss(self):
        return segmentation_loss

    def contact_cell(self, sample, class_names: Sequence[str]):
        from cvexport.models.contact_sheet import segmentation_cell

        return segmentation_cell(sample.image, sample.mask)

    def predictions(self, model, outputs, fitted, size):
        """Label maps of each picture (the letterbox undone, nearest-neighbour)."""
        labels = outputs.argmax(1).numpy().astype(np.uint8)
        return [box_map.map_to_original(label_map, labels=True) for label_map, (_, box_map) in zip(labels, fitted)]

    def scores(self, predictions, truths, class_names, images):
        """``val_miou`` and ``val_pixel_acc`` (void pixels left out)."""
        from cvexport.metrics import segmentation_scores

        scores = segmentation_scores(predictions, truths, len(class_names))
        return {"val_miou": scores["miou"], "val_pixel_acc": scores["pixel_acc"], "val_images": images}


SEGMENTATION = SegmentationTraining()
