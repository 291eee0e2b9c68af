"""The classification task: a fine-tuned ResNet-18 exported to end in softmax probabilities.

Output contract: ``logits [B, C] float32`` and ``probabilities [B, C] float32`` (softmax over
``class_names``, appended as an FP32 section after the network so FP16 never saturates it).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from cvexport.compare import CLASSIFICATION_TOLERANCES as TOLERANCES
from cvexport.compare import ClassificationParity, compare_classifications
from cvexport.metrics import Metric

# Build variants of the TensorRT GPU matrix (tests/gpu_matrix.py): BuildOptions fields per bundle.
# Every precision; uint8 input (in-graph normalization) once, at fp32.
GPU_BUILD_VARIANTS = (
    {"precision": "fp32", "input_format": "float"},
    {"precision": "fp16", "input_format": "float"},
    {"precision": "int8", "input_format": "float"},
    {"precision": "fp32", "input_format": "uint8"},
)

TOP_K = 5
PARITY_IMAGES = 32  # 99.5 % agreement needs more than a handful of images to mean anything


def describe(options) -> str:
    return ""


def export_graphs(model, spec, options, int8=None, warn: Callable[[str], None] = print) -> dict[str, Any]:
    from cvexport.export.precision import export_task_graphs

    finish = lambda core: _append_sections(core, spec)  # noqa: E731
    return export_task_graphs(model, spec, options, ["logits"], finish, int8, warn)


def _append_sections(core, spec):
    from cvexport.export import sections
    from cvexport.export.graph import FLOAT, GraphEditor

    editor = GraphEditor(core)
    with editor.section("probabilities"):
        sections.class_probabilities(editor, "logits", "probabilities", drop_background=False)
    classes = len(spec.class_names)
    editor.replace_outputs([("logits", FLOAT, ["batch", classes]), ("probabilities", FLOAT, ["batch", classes])])
    return editor.model


def manifest_entries(spec, options) -> dict[str, Any]:
    return {"probabilities": "softmax over class_names, computed in FP32 after the network"}


def reference_outputs(model, array: np.ndarray, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    from cvexport.preprocess import to_float_nchw

    with torch.no_grad():
        logits = model(to_float_nchw(array, manifest["input"])).float()
    return {"logits": logits.numpy(), "probabilities": torch.softmax(logits, dim=-1).numpy()}


def sample_images(spec, split: str, indices, seed: int = 0) -> list[np.ndarray]:
    from cvexport.models.classification_data import make_sample

    return [make_sample("target", split, int(i), seed=seed, size=spec.input_size[0]).image for i in indices]


def parity_frames(spec, count: int = PARITY_IMAGES) -> list[np.ndarray]:
    return sample_images(spec, "val", range(count))


def new_parity() -> ClassificationParity:
    return ClassificationParity()


def compare(reference, test, precision: str, parity: ClassificationParity | None = None) -> ClassificationParity:
    return compare_classifications(reference, test, TOLERANCES[precision], parity)


def to_predictions(outputs: dict[str, np.ndarray], letterboxes: Sequence, class_names: Sequence[str],
                   input_width: int, input_height: int) -> list[dict[str, Any]]:
    """Per image {"class_id", "class_name", "score", "top": [the TOP_K best as {"class_id", "class_name", "score"}]}."""
    results = []
    for probabilities in np.asarray(outputs["probabilities"])[: len(letterboxes)]:
        order = np.argsort(-probabilities, kind="stable")[:TOP_K]
        top = [{"class_id": int(c), "class_name": class_names[int(c)], "score": round(float(probabilities[c]), 6)}
               for c in order]
        results.append({**top[0], "top": top})
    return results


# ------------------------------------------------------------------ task metric (verify)
METRICS = (Metric("top1", "top-1"),)


def metric_note(manifest: dict[str, Any]) -> str | None:
    return None


def val_samples(spec, count: int) -> tuple[list[np.ndarray], list[int]]:
    """The first ``count`` images of the target val split and their labels."""
    from cvexport.models.classification_data import make_sample

    samples = [make_sample("target", "val", i, size=spec.input_size[0]) for i in range(count)]
    return [s.image for s in samples], [s.label for s in samples]


def metrics(predictions: list[dict[str, Any]], truths: list[int], bundle) -> dict[str, float]:
    from cvexport.metrics import top1_accuracy

    return {"top1": top1_accuracy([p["class_id"] for p in predictions], truths, len(bundle.class_names))}


# ------------------------------------------------------------------------ cvexport run
def record(prediction: dict[str, Any]) -> dict[str, Any]:
    return {"classification": prediction}


def describe_prediction(prediction: dict[str, Any], class_names=None) -> str:
    """The top class and the runners-up (the names are already in the prediction)."""
    runners_up = ", ".join(f"{t['class_name']} {t['score']:.3f}" for t in prediction["top"][1:3])
    return f"{prediction['class_name']} {prediction['score']:.3f}" + (f" (then {runners_up})" if runners_up else "")


def render(image: np.ndarray, prediction: dict[str, Any]) -> dict[str, Any]:
    """The image with its top class and score written across the top."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    label = f"{prediction['class_name']} {prediction['score']:.2f}"
    box = draw.textbbox((0, 0), label)
    draw.rectangle((0, 0, box[2] + 6, box[3] + 6), fill=(0, 0, 0))
    draw.text((3, 2), label, fill=(255, 255, 255))
    return {"annotated": canvas}
