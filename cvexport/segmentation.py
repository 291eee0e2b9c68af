"""The segmentation task: FCN-ResNet18 exported to end in a per-pixel label map.

Output contract: ``labels [B, H, W] int32`` (ArgMax over classes, an FP32 section after the
network) and ``logits [B, C, H, W] float32``. Results map back to each original image with
the letterbox undone (nearest-neighbour, so class ids never blend).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from cvexport.compare import SEGMENTATION_TOLERANCES as TOLERANCES
from cvexport.compare import SegmentationParity, compare_label_maps
from cvexport.metrics import Metric

# Build variants of the TensorRT GPU matrix (tests/gpu_matrix.py): BuildOptions fields per bundle.
# Every precision; uint8 input (in-graph normalization) once, at fp32.
GPU_BUILD_VARIANTS = (
    {"precision": "fp32", "input_format": "float"},
    {"precision": "fp16", "input_format": "float"},
    {"precision": "int8", "input_format": "float"},
    {"precision": "fp32", "input_format": "uint8"},
)

# Background black, then distinct colours per class (colorized masks and overlays).
PALETTE = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
                    (70, 240, 240), (240, 50, 230)], dtype=np.uint8)
OVERLAY_ALPHA = 0.5


def describe(options) -> str:
    return ""


def export_graphs(model, spec, options, int8=None, warn: Callable[[str], None] = print) -> dict[str, Any]:
    from cvexport.export.precision import export_task_graphs

    finish = lambda core: _append_sections(core, spec)  # noqa: E731
    return export_task_graphs(model, spec, options, ["logits"], finish, int8, warn)


def _append_sections(core, spec):
    from cvexport.export import sections
    from cvexport.export.graph import FLOAT, INT32, GraphEditor

    height, width = spec.input_size
    editor = GraphEditor(core)
    with editor.section("argmax"):
        sections.argmax_labels(editor, "logits", "labels")
    editor.replace_outputs([("labels", INT32, ["batch", height, width]),
                            ("logits", FLOAT, ["batch", len(spec.class_names), height, width])])
    return editor.model


def manifest_entries(spec, options) -> dict[str, Any]:
    return {"labels": "labels [B, H, W] int32: index into class_names per pixel of the network input (0 = background)"}


def reference_outputs(model, array: np.ndarray, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    from cvexport.preprocess import to_float_nchw

    with torch.no_grad():
        logits = model(to_float_nchw(array, manifest["input"])).float()
    return {"labels": logits.argmax(1).to(torch.int32).numpy(), "logits": logits.numpy()}


def sample_images(spec, split: str, indices, seed: int = 0) -> list[np.ndarray]:
    from cvexport.models.segmentation_data import make_sample

    return [make_sample(split, int(i), seed=seed, size=spec.input_size[0]).image for i in indices]


def parity_frames(spec, count: int = 8) -> list[np.ndarray]:
    return sample_images(spec, "val", range(count))


def new_parity() -> SegmentationParity:
    return SegmentationParity()


def compare(reference, test, precision: str, parity: SegmentationParity | None = None) -> SegmentationParity:
    return compare_label_maps(reference, test, TOLERANCES[precision], parity)


def to_predictions(outputs: dict[str, np.ndarray], letterboxes: Sequence, class_names: Sequence[str],
                   input_width: int, input_height: int) -> list[np.ndarray]:
    """Per image, its label map (ndarray[H, W] uint8, H x W of the original image)."""
    labels = np.asarray(outputs["labels"])
    return [box_map.map_to_original(labels[i].astype(np.uint8), labels=True) for i, box_map in enumerate(letterboxes)]


# ------------------------------------------------------------------ task metric (verify)
METRICS = (Metric("miou", "mIoU"), Metric("pixel_acc", "pixel acc"))


def metric_note(manifest: dict[str, Any]) -> str | None:
    return "mIoU is the macro mean over every class, background included (torchmetrics)"


def val_samples(spec, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from cvexport.models.segmentation_data import make_sample

    samples = [make_sample("val", i, size=spec.input_size[0]) for i in range(count)]
    return [s.image for s in samples], [s.mask for s in samples]


def metrics(predictions: list[np.ndarray], truths: list[np.ndarray], bundle) -> dict[str, float]:
    from cvexport.metrics import segmentation_scores

    return segmentation_scores(predictions, truths, len(bundle.class_names))


# ------------------------------------------------------------------------ cvexport run
def record(prediction: np.ndarray) -> dict[str, Any]:
    """Fraction of the image's pixels per class id present (the masks themselves go to PNGs)."""
    ids, counts = np.unique(prediction, return_counts=True)
    return {"class_pixel_fraction": {int(i): round(float(c) / prediction.size, 6) for i, c in zip(ids, counts)}}


def describe_prediction(prediction: np.ndarray, class_names=None) -> str:
    """Share of the picture per class present, by the bundle's class names where given."""
    fractions = record(prediction)["class_pixel_fraction"]
    name = lambda i: class_names[i] if class_names and i < len(class_names) else f"class {i}"  # noqa: E731
    return ", ".join(f"{name(i)}: {f:.1%}" for i, f in fractions.items())


def colorize(labels: np.ndarray) -> np.ndarray:
    """labels (ndarray[H, W] class ids) -> uint8 RGB (H, W, 3) in PALETTE colours."""
    return PALETTE[np.asarray(labels) % len(PALETTE)]


def render(image: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
    """The colorized mask, and the image with the mask blended over the objects."""
    from PIL import Image

    mask = colorize(prediction)
    objects = (prediction > 0)[..., None]
    blended = np.where(objects, (1 - OVERLAY_ALPHA) * image + OVERLAY_ALPHA * mask, image)
    return {"mask": Image.fromarray(mask), "overlay": Image.fromarray(blended.round().astype(np.uint8))}
