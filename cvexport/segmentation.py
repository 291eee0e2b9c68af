"""The segmentation task: FCN-ResNet18 exported to end in a per-pixel label map.

Output contract: ``labels [B, H, W] int32`` (ArgMax over classes, an FP32 section after the
network) and ``logits [B, C, H, W] float32``. Results map back to each original image with
the letterbox undone (nearest-neighbour, so class ids never blend). Parity: pixel agreement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from cvexport.annotators import ColorMaskAnnotator, MaskOverlayAnnotator
from cvexport.compare import Parity, shapes_differ
from cvexport.manifest import Manifest
from cvexport.metrics import Metric
from cvexport.results import LabelMap
from cvexport.task_base import EVERY_PRECISION_AND_UINT8, ContractOutput, Task, register_task



# ------------------------------------------------------------------------- parity
@dataclass(frozen=True)
class SegmentationTolerance:
    min_pixel_agreement: float


# Issue 3's contract: >= 99.9 % of pixels fp32, >= 99.5 % fp16.
TOLERANCES = {
    "fp32": SegmentationTolerance(min_pixel_agreement=0.999),
    "fp16": SegmentationTolerance(min_pixel_agreement=0.995),
    "int8": SegmentationTolerance(min_pixel_agreement=0.97),
}


@dataclass
class SegmentationParity(Parity):
    images: int = 0
    pixels: int = 0
    agree: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agree / self.pixels if self.pixels else 1.0

    def within(self, tolerance: SegmentationTolerance) -> bool:
        return self.agreement >= tolerance.min_pixel_agreement

    def compared(self) -> int:
        return self.pixels

    def derived(self) -> dict:
        return {"agreement": self.agreement}

    def add(self, reference: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray]) -> "SegmentationParity":
        """``labels`` (ndarray[B, H, W] int32) of two runs: fraction of equal pixels."""
        ref, got = np.asarray(reference["labels"]), np.asarray(test["labels"])
        if shapes_differ(self, "labels", ref, got):
            return self
        self.images += ref.shape[0]
        self.pixels += int(ref.size)
        self.agree += int((ref == got).sum())
        return self

    def summary(self) -> str:
        return f"{self.agreement:.4%} of {self.pixels} pixels agree over {self.images} images{self.nothing_compared()}"


@register_task
class SegmentationTask(Task):
    """A class per pixel of each image."""
    labelled_output = "labels"

    name = "segmentation"
    core_outputs = ("logits",)
    outputs = (ContractOutput("labels", "int32", ("B", "H", "W")),
               ContractOutput("logits", "float32", ("B", "C", "H", "W"), required=False))
    TOLERANCES = TOLERANCES
    METRICS = (Metric("miou", "mIoU"), Metric("pixel_acc", "pixel acc"))
    build_variants = EVERY_PRECISION_AND_UINT8

    # ------------------------------------------------------------------------- export
    def append_sections(self, core, model, spec, options):
        from cvexport.export import sections
        from cvexport.export.graph import FLOAT, INT32, GraphEditor

        height, width = spec.input_size
        editor = GraphEditor(core)
        with editor.section("argmax"):
            sections.argmax_labels(editor, "logits", "labels")
        editor.replace_outputs([("labels", INT32, ["batch", height, width]),
                                ("logits", FLOAT, ["batch", len(spec.class_names), height, width])])
        return editor.model

    def manifest_entries(self, spec, options) -> dict[str, Any]:
        return {"labels": "labels [B, H, W] int32: index into class_names per pixel of the network input (0 = background)"}

    def reference_outputs(self, model, array: np.ndarray, manifest: Manifest) -> dict[str, np.ndarray]:
        import torch

        from cvexport.preprocess import to_float_nchw

        with torch.no_grad():
            logits = model(to_float_nchw(array, manifest.input)).float()
        return {"labels": logits.argmax(1).to(torch.int32).numpy(), "logits": logits.numpy()}

    # ---------------------------------------------------------------------------- data
    takes_modules = True

    def check_module_outputs(self, model, outputs, shape, head, wrong, where) -> int:
        batch, height, width = shape
        logits = outputs[0]
        if logits.dim() != 4 or logits.shape[0] != batch or tuple(logits.shape[2:]) != (height, width) \
                or logits.shape[1] < 1:
            raise wrong(0, f"[{batch}, C, {height}, {width}]", "batch, classes, the input's height and width")
        return int(logits.shape[1])

    def own_images(self, spec, split: str, indices, seed: int = 0) -> list[np.ndarray]:
        from cvexport.models.segmentation_data import make_sample

        return [make_sample(split, int(i), seed=seed, size=spec.input_size[0]).image for i in indices]

    def own_val_samples(self, spec, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        from cvexport.models.segmentation_data import make_sample

        samples = [make_sample("val", i, size=spec.input_size[0]) for i in range(count)]
        return [s.image for s in samples], [s.mask for s in samples]

    # -------------------------------------------------------------------------- parity
    def new_parity(self, precision: str, manifest: Manifest | None = None) -> SegmentationParity:
        return SegmentationParity(TOLERANCES[precision])

    # ------------------------------------------------------------------------- results
    pictures = {"mask": ColorMaskAnnotator(), "overlay": MaskOverlayAnnotator()}
    video_suffix = "overlay"

    def to_predictions(self, outputs: dict[str, np.ndarray], letterboxes: Sequence, class_names: Sequence[str],
                       input_width: int, input_height: int) -> list[LabelMap]:
        """Per image, its LabelMap (labels ndarray[H, W] uint8, H x W of the original image)."""
        labels = np.asarray(outputs["labels"])
        return [LabelMap(box_map.map_to_original(labels[i].astype(np.uint8), labels=True), tuple(class_names))
                for i, box_map in enumerate(letterboxes)]

    def metric_note(self, manifest: Manifest) -> str | None:
        return "mIoU is the macro mean over every class, background included (torchmetrics)"

    def metrics(self, predictions: list[LabelMap], truths: list[np.ndarray], bundle) -> dict[str, float]:
        """mIoU and pixel accuracy; ``predictions`` may also be plain label arrays (a dataset's
        ``metric_inputs`` leaves out its void pixels)."""
        from cvexport.metrics import segmentation_scores

        return segmentation_scores([np.asarray(p) for p in predictions], truths, len(bundle.class_names))

    def describe_prediction(self, prediction: LabelMap) -> str:
        """Share of the picture per class present, by the bundle's class names where given."""
        return ", ".join(f"{name}: {f:.1%}" for name, f in prediction.class_fractions().items())
