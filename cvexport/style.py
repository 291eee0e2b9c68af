"""The style-transfer task: a feed-forward style network exported to produce the stylized image.

Output contract: ``stylized [B, 3, H, W] float32``, RGB in [0, 1] (a Clip section after the
network). Results map back to each original image with the letterbox undone.

The task metric (verify) is perceptual: the style loss of each output against the style image
the network was trained for, and its content loss against the input, both with the same VGG-19
features training used; parity is PSNR against the PyTorch output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cvexport.compare import IMAGE_TOLERANCES as TOLERANCES
from cvexport.compare import ImageParity, compare_images
from cvexport.errors import CvexportError
from cvexport.metrics import Metric

# Build variants of the TensorRT GPU matrix (tests/gpu_matrix.py): BuildOptions fields per bundle.
# Every precision; uint8 input (in-graph normalization) once, at fp32.
GPU_BUILD_VARIANTS = (
    {"precision": "fp32", "input_format": "float"},
    {"precision": "fp16", "input_format": "float"},
    {"precision": "int8", "input_format": "float"},
    {"precision": "fp32", "input_format": "uint8"},
)


def describe(options) -> str:
    return f", style {options.style}" if getattr(options, "style", None) else ""


def prepare_weights(spec, options, log: Callable[[str], None]) -> Path | None:
    """For ``--style IMAGE``: the weights of a network trained for that image, trained now
    (minutes) or reused from an earlier build with the very same image and recipe."""
    if not getattr(options, "style", None):
        return None
    from cvexport.checkpoint import load_checkpoint, sha256_file
    from cvexport.images import load_image
    from cvexport.models import style_training

    image = load_image(options.style)
    digest = style_training.style_digest(image)
    run_dir = Path("runs") / f"style-{digest[:12]}"
    out = run_dir / "style.safetensors"
    if out.is_file() and load_checkpoint(out)[1].get("style_sha256") == digest:
        log(f"using the style network trained earlier for {options.style} ({out}, sha256 {sha256_file(out)[:12]})")
        return out
    log(f"training a style network for {options.style} (a few minutes on 2 CPU cores; resumable in {run_dir})")
    phases = style_training.default_config()
    model, record = style_training.train(run_dir, phases, style_image=image)
    style_training.save_weights(model, out, record, phases, style_image=image,
                                style_source=str(Path(options.style).resolve()))
    return out


# ONNX Runtime's faster U8S8 CPU form lost too much here (measured on 16 val photos: PSNR 33 dB,
# content loss 1.8 % worse than PyTorch's, beyond verify's 1 %); the symmetric TensorRT QDQ form
# kept PSNR 42 dB and content loss within 0.1 %, so INT8 style bundles run that form on CPU too.
INT8_CPU_FORM = "qdq-trt"


def int8_keep_float(core) -> list[str]:
    """INT8 keeps the first and the last convolution in float: they map pixels in and out,
    where 8-bit steps show directly in the picture."""
    from cvexport.export.quantize import sensitive_nodes

    convs = [n.name for n in core.graph.node if n.op_type == "Conv"]
    return sorted({convs[0], *sensitive_nodes(core)})


def export_graphs(model, spec, options, int8=None, warn: Callable[[str], None] = print) -> dict[str, Any]:
    from cvexport.export.precision import export_task_graphs

    finish = lambda core: _append_sections(core, spec)  # noqa: E731
    return export_task_graphs(model, spec, options, ["image"], finish, int8, warn)


def _append_sections(core, spec):
    from cvexport.export import sections
    from cvexport.export.graph import FLOAT, GraphEditor

    height, width = spec.input_size
    editor = GraphEditor(core)
    with editor.section("clip"):
        sections.clip_image(editor, "image", "stylized")
    editor.replace_outputs([("stylized", FLOAT, ["batch", 3, height, width])])
    return editor.model


def manifest_entries(spec, options) -> dict[str, Any]:
    return {"stylized": "stylized [B, 3, H, W] float32 RGB in [0, 1] over the network input"}


def reference_outputs(model, array: np.ndarray, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    from cvexport.preprocess import to_float_nchw

    with torch.no_grad():
        image = model(to_float_nchw(array, manifest["input"])).float().clamp(0.0, 1.0)
    return {"stylized": image.numpy()}


# Val content beyond the named photographs: crops drawn with a seed training never uses.
VAL_CROP_SEED = 1


def sample_images(spec, split: str, indices, seed: int = 0) -> list[np.ndarray]:
    """Content photographs at the input size: for "val" the named val photographs first, then
    deterministic crops (seed ``VAL_CROP_SEED``); for "train" the training crops."""
    from cvexport.models import style_training

    size = spec.input_size[0]
    indices = [int(i) for i in indices]
    if split != "val":
        return [style_training.content_image(i, seed=seed, size=size) for i in indices]
    named = style_training.content_val_images(len(style_training.VAL_PHOTOS), resolution=size)
    return [named[i] if i < len(named) else style_training.content_image(i, seed=VAL_CROP_SEED, size=size)
            for i in indices]


def parity_frames(spec, count: int = 8) -> list[np.ndarray]:
    return sample_images(spec, "val", range(count))


def new_parity() -> ImageParity:
    return ImageParity()


def compare(reference, test, precision: str, parity: ImageParity | None = None) -> ImageParity:
    return compare_images(reference, test, TOLERANCES[precision], parity)


def to_predictions(outputs: dict[str, np.ndarray], letterboxes: Sequence, class_names: Sequence[str],
                   input_width: int, input_height: int) -> list[np.ndarray]:
    """Per image, the stylized picture (uint8 (H, W, 3)) at the original image's size."""
    images = (np.asarray(outputs["stylized"]).transpose(0, 2, 3, 1) * 255.0).round().clip(0, 255).astype(np.uint8)
    return [box_map.map_to_original(images[i]) for i, box_map in enumerate(letterboxes)]


# ------------------------------------------------------------------ task metric (verify)
# Each output costs VGG-19 passes for its losses; a build records the metric on this many.
BUILD_VERIFY_IMAGES = 16
METRICS = (Metric("style_loss", "style loss", higher_is_better=False, fraction=False),
           Metric("content_loss", "content loss", higher_is_better=False, fraction=False))


def metric_note(manifest: dict[str, Any]) -> str | None:
    return ("losses use the VGG-19 features training used (lower is better); a row fails when one is worse than "
            "torch's by more than --max-drop percent")


def val_samples(spec, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Content photographs; each one's own truth is itself (content loss is measured against it)."""
    images = sample_images(spec, "val", range(count))
    return images, images


def style_image_of(bundle) -> np.ndarray:
    """The style image the bundle's network was trained for (named in its weights' metadata)."""
    from cvexport.checkpoint import load_checkpoint
    from cvexport.models import style_training

    meta = load_checkpoint(bundle.verify_file("weights"))[1]
    try:
        return style_training.style_image_from_meta(meta)
    except (KeyError, FileNotFoundError, ValueError) as exc:
        raise CvexportError(f"the style image of {bundle.path} cannot be found ({exc}); its style loss cannot be "
                            "measured") from None


def metrics(predictions: list[np.ndarray], truths: list[np.ndarray], bundle) -> dict[str, float]:
    """Mean style loss (against the style image) and content loss (against each input)."""
    from cvexport.models.style_loss import CONTENT_LAYERS, PerceptualLoss, content_loss, uint8_to_tensor

    loss = PerceptualLoss(uint8_to_tensor(style_image_of(bundle)))
    style, content = [], []
    with torch.no_grad():
        for output, source in zip(predictions, truths):
            x = uint8_to_tensor(output)
            style.append(float(loss.style_only(x)))
            targets = loss.content_targets(uint8_to_tensor(source))
            content.append(float(sum(content_loss(f, t) for f, t in zip(loss.features(x, CONTENT_LAYERS), targets))))
    return {"style_loss": float(np.mean(style)), "content_loss": float(np.mean(content))}


# ------------------------------------------------------------------------ cvexport run
def record(prediction: np.ndarray) -> dict[str, Any]:
    return {}


def describe_prediction(prediction: np.ndarray, class_names=None) -> str:
    return f"stylized {prediction.shape[1]}x{prediction.shape[0]}"


def render(image: np.ndarray, prediction: np.ndarray) -> dict[str, Any]:
    from PIL import Image

    return {"stylized": Image.fromarray(prediction)}
