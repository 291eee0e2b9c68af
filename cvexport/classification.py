"""The classification task: a fine-tuned ResNet-18 exported to end in softmax probabilities.

Output contract: ``logits [B, C] float32`` and ``probabilities [B, C] float32`` (softmax over
``class_names``, appended as an FP32 section after the network so FP16 never saturates it).
Parity: top-1 agreement and max |delta probability|.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from cvexport.annotators import ClassBarAnnotator
from cvexport.compare import Parity, shapes_differ
from cvexport.manifest import Manifest
from cvexport.metrics import Metric
from cvexport.results import Classification
from cvexport.task_base import EVERY_PRECISION_AND_UINT8, ContractOutput, Task, register_task

PARITY_IMAGES = 32  # 99.5 % agreement needs more than a handful of images to mean anything


# ------------------------------------------------------------------------- parity
@dataclass(frozen=True)
class ClassificationTolerance:
    min_top1_agreement: float
    max_prob_delta: float | None = None  # reported always; a limit only where set


# Issue 3's contract: top-1 agreement 100 % fp32, >= 99.5 % fp16. INT8 moves probabilities
# more; its accuracy gate is the task metric in verify (top-1 within 1 point of fp32).
TOLERANCES = {
    "fp32": ClassificationTolerance(min_top1_agreement=1.0, max_prob_delta=1e-4),
    "fp16": ClassificationTolerance(min_top1_agreement=0.995),
    "int8": ClassificationTolerance(min_top1_agreement=0.95),
}


@dataclass
class ClassificationParity(Parity):
    images: int = 0
    agree: int = 0
    max_prob_delta: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agree / self.images if self.images else 1.0

    def within(self, tolerance: ClassificationTolerance) -> bool:
        ok = self.agreement >= tolerance.min_top1_agreement
        return ok and (tolerance.max_prob_delta is None or self.max_prob_delta <= tolerance.max_prob_delta)

    def compared(self) -> int:
        return self.images

    def derived(self) -> dict:
        return {"agreement": self.agreement}

    def add(self, reference: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray]) -> "ClassificationParity":
        """``probabilities`` (ndarray[B, C]) of two runs: top-1 agreement and max |delta|."""
        ref, got = np.asarray(reference["probabilities"], np.float64), np.asarray(test["probabilities"], np.float64)
        if shapes_differ(self, "probabilities", ref, got):
            return self
        self.images += ref.shape[0]
        self.agree += int((ref.argmax(1) == got.argmax(1)).sum())
        self.max_prob_delta = max(self.max_prob_delta, float(np.abs(ref - got).max(initial=0.0)))
        return self

    def summary(self) -> str:
        return (f"top-1 agrees on {self.agree}/{self.images} images ({self.agreement:.2%}), "
                f"max |dprob| {self.max_prob_delta:.2e}{self.nothing_compared()}")


@register_task
class ClassificationTask(Task):
    """The top classes of each image."""
    labelled_output = "probabilities"
    accepts_cropped_input = True  # one answer per picture: torchvision's resize and centre crop

    name = "classification"
    core_outputs = ("logits",)
    outputs = (ContractOutput("probabilities", "float32", ("B", "C")),
               ContractOutput("logits", "float32", ("B", "C"), required=False))
    TOLERANCES = TOLERANCES
    METRICS = (Metric("top1", "top-1"),)
    build_variants = EVERY_PRECISION_AND_UINT8

    # ------------------------------------------------------------------------- export
    def append_sections(self, core, model, spec, options):
        from cvexport.export import sections
        from cvexport.export.graph import FLOAT, GraphEditor

        editor = GraphEditor(core)
        with editor.section("probabilities"):
            sections.class_probabilities(editor, "logits", "probabilities", drop_background=False)
        classes = len(spec.class_names)
        editor.replace_outputs([("logits", FLOAT, ["batch", classes]), ("probabilities", FLOAT, ["batch", classes])])
        return editor.model

    def manifest_entries(self, spec, options) -> dict[str, Any]:
        return {"probabilities": "softmax over class_names, computed in FP32 after the network"}

    def reference_outputs(self, model, array: np.ndarray, manifest: Manifest) -> dict[str, np.ndarray]:
        import torch

        from cvexport.preprocess import to_float_nchw

        with torch.no_grad():
            logits = model(to_float_nchw(array, manifest.input)).float()
        return {"logits": logits.numpy(), "probabilities": torch.softmax(logits, dim=-1).numpy()}

    # ---------------------------------------------------------------------------- data
    parity_image_count = PARITY_IMAGES
    takes_modules = True

    def check_module_outputs(self, model, outputs, shape, head, wrong, where) -> int:
        batch = shape[0]
        logits = outputs[0]
        if logits.dim() != 2 or logits.shape[0] != batch or logits.shape[1] < 1:
            raise wrong(0, f"[{batch}, C]", "batch, classes")
        return int(logits.shape[1])

    def own_images(self, spec, split: str, indices, seed: int = 0) -> list[np.ndarray]:
        from cvexport.models.classification_data import make_sample

        return [make_sample("target", split, int(i), seed=seed, size=spec.input_size[0]).image for i in indices]

    def own_val_samples(self, spec, count: int) -> tuple[list[np.ndarray], list[int]]:
        """The first ``count`` images of the target val split and their labels."""
        from cvexport.models.classification_data import make_sample

        samples = [make_sample("target", "val", i, size=spec.input_size[0]) for i in range(count)]
        return [s.image for s in samples], [s.label for s in samples]

    # -------------------------------------------------------------------------- parity
    def new_parity(self, precision: str, manifest: Manifest | None = None) -> ClassificationParity:
        return ClassificationParity(TOLERANCES[precision])

    # ------------------------------------------------------------------------- results
    pictures = {"annotated": ClassBarAnnotator()}

    def to_predictions(self, outputs: dict[str, np.ndarray], letterboxes: Sequence, class_names: Sequence[str],
                       input_width: int, input_height: int) -> list[Classification]:
        """Per image, its Classification: the class probabilities (top-k derived from them)."""
        # A copy: a runner may reuse its output buffers for the next batch.
        probabilities = np.array(outputs["probabilities"][: len(letterboxes)])
        return [Classification(row, tuple(class_names)) for row in probabilities]

    def metrics(self, predictions: list[Classification], truths: list[int], bundle) -> dict[str, float]:
        from cvexport.metrics import top1_accuracy

        return {"top1": top1_accuracy([p.class_id for p in predictions], truths, len(bundle.class_names))}

    def describe_prediction(self, prediction: Classification) -> str:
        """The top class and the runners-up (the names are already in the prediction)."""
        (_, name, score), *others = prediction.top()
        runners_up = ", ".join(f"{n} {s:.3f}" for _, n, s in others[:2])
        return f"{name} {score:.3f}" + (f" (then {runners_up})" if runners_up else "")
