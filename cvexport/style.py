"""The style-transfer task: a feed-forward style network exported to produce the stylized image.

Output contract: ``stylized [B, 3, H, W] float32``, RGB in [0, 1] (a Clip section after the
network). Results map back to each original image with the letterbox undone.

The task metric (verify) is perceptual: the style loss of each output against the style image
the network was trained for, and its content loss against the input, both with the same VGG-19
features training used; parity is PSNR against the PyTorch output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cvexport.annotators import StylizedAnnotator
from cvexport.compare import Parity, shapes_differ
from cvexport.errors import CvexportError
from cvexport.manifest import Manifest
from cvexport.metrics import Metric
from cvexport.results import StylizedImage
from cvexport.task_base import EVERY_PRECISION_AND_UINT8, ContractOutput, Task, TaskOption, register_task

# ------------------------------------------------------------------------- parity
@dataclass(frozen=True)
class ImageTolerance:
    min_psnr_db: float


# Issue 3's contract for style transfer: PSNR vs PyTorch >= 40 dB fp32, >= 30 dB fp16.
TOLERANCES = {
    "fp32": ImageTolerance(min_psnr_db=40.0),
    "fp16": ImageTolerance(min_psnr_db=30.0),
    "int8": ImageTolerance(min_psnr_db=20.0),
}
# Identical images have infinite PSNR; reports cap it so JSON stays finite.
PSNR_CAP_DB = 100.0


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of ``test`` against ``reference`` (same shape), capped at 100."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10.0 * np.log10(data_range**2 / mse))


@dataclass
class ImageParity(Parity):
    images: int = 0
    min_psnr: float = PSNR_CAP_DB
    psnr_sum: float = 0.0
    failures: list[str] = field(default_factory=list)

    @property
    def mean_psnr(self) -> float:
        return self.psnr_sum / self.images if self.images else PSNR_CAP_DB

    def within(self, tolerance: ImageTolerance) -> bool:
        return self.min_psnr >= tolerance.min_psnr_db

    def compared(self) -> int:
        return self.images

    def derived(self) -> dict:
        return {"mean_psnr": self.mean_psnr}

    def add(self, reference: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray]) -> "ImageParity":
        """``stylized`` (ndarray[B, 3, H, W] float in [0, 1]) of two runs: per-image PSNR."""
        ref, got = np.asarray(reference["stylized"]), np.asarray(test["stylized"])
        if shapes_differ(self, "stylized", ref, got):
            return self
        for r, g in zip(ref, got):
            value = psnr(r, g)
            self.images += 1
            self.min_psnr = min(self.min_psnr, value)
            self.psnr_sum += value
        return self

    def summary(self) -> str:
        return (f"PSNR min {self.min_psnr:.1f} dB, mean {self.mean_psnr:.1f} dB over {self.images} images"
                f"{self.nothing_compared()}")


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



@register_task
class StyleTask(Task):
    """Each image restyled; option: the style image to train a network for."""

    name = "style"
    options = (TaskOption("style", "style model only: train (minutes) or reuse a network for this style image "
                          "instead of the shipped one", metavar="IMAGE"),)
    core_outputs = ("image",)
    outputs = (ContractOutput("stylized", "float32", ("B", 3, "H", "W")),)
    has_classes = False  # a style bundle paints; it names no classes
    TOLERANCES = TOLERANCES
    METRICS = (Metric("style_loss", "style loss", higher_is_better=False, fraction=False),
               Metric("content_loss", "content loss", higher_is_better=False, fraction=False))
    build_variants = EVERY_PRECISION_AND_UINT8
    # Each output costs VGG-19 passes for its losses; a build records the metric on this many.
    build_verify_images = 16
    # ONNX Runtime's faster U8S8 CPU form lost too much here (measured on 16 val photos: PSNR 33 dB,
    # content loss 1.8 % worse than PyTorch's, beyond verify's 1 %); the symmetric TensorRT QDQ form
    # kept PSNR 42 dB and content loss within 0.1 %, so INT8 style bundles run that form on CPU too.
    int8_cpu_graphs = False

    # ------------------------------------------------------------------ build options
    def validate_options(self, spec, options) -> None:
        if options.weights and options.task_options.get("style"):
            raise CvexportError("--weights and --style exclude each other: --style trains the weights for its image")

    def describe(self, options) -> str:
        style = options.task_options.get("style")
        return f", style {style}" if style else ""

    def prepare_weights(self, spec, options, log: Callable[[str], None]) -> Path | None:
        """For ``--style IMAGE``: the weights of a network trained for that image, trained now
        (minutes) or reused from an earlier build with the very same image and recipe."""
        style = options.task_options.get("style")
        if not style:
            return None
        from cvexport.checkpoint import load_checkpoint
        from cvexport.digest import sha256_file
        from cvexport.images import load_image
        from cvexport.models import style_training

        image = load_image(style)
        digest = style_training.style_digest(image)
        run_dir = Path("runs") / f"style-{digest[:12]}"
        out = run_dir / "style.safetensors"
        if out.is_file() and load_checkpoint(out)[1].get("style_sha256") == digest:
            log(f"using the style network trained earlier for {style} ({out}, sha256 {sha256_file(out)[:12]})")
            return out
        log(f"training a style network for {style} (a few minutes on 2 CPU cores; resumable in {run_dir})")
        phases = style_training.default_config()
        model, record = style_training.train(run_dir, phases, style_image=image)
        style_training.save_weights(model, out, record, phases, style_image=image,
                                    style_source=str(Path(style).resolve()))
        return out

    # ------------------------------------------------------------------------- export
    def int8_keep_float(self, core, form: str) -> list[str]:
        """INT8 keeps the first and the last convolution in float in every form: they map pixels
        in and out, where 8-bit steps show directly in the picture."""
        from cvexport.export.quantize import sensitive_nodes

        convs = [n.name for n in core.graph.node if n.op_type == "Conv"]
        return sorted({convs[0], *sensitive_nodes(core)})

    def append_sections(self, core, model, spec, options):
        from cvexport.export import sections
        from cvexport.export.graph import FLOAT, GraphEditor

        height, width = spec.input_size
        editor = GraphEditor(core)
        with editor.section("clip"):
            sections.clip_image(editor, "image", "stylized")
        editor.replace_outputs([("stylized", FLOAT, ["batch", 3, height, width])])
        return editor.model

    def manifest_entries(self, spec, options) -> dict[str, Any]:
        return {"stylized": "stylized [B, 3, H, W] float32 RGB in [0, 1] over the network input"}

    def reference_outputs(self, model, array: np.ndarray, manifest: Manifest) -> dict[str, np.ndarray]:
        import torch

        from cvexport.preprocess import to_float_nchw

        with torch.no_grad():
            image = model(to_float_nchw(array, manifest.input)).float().clamp(0.0, 1.0)
        return {"stylized": image.numpy()}

    # ---------------------------------------------------------------------------- data
    def own_images(self, spec, split: str, indices, seed: int = 0) -> list[np.ndarray]:
        return sample_images(spec, split, indices, seed)

    def own_val_samples(self, spec, count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Content photographs; each one's own truth is itself (content loss is measured against it)."""
        images = sample_images(spec, "val", range(count))
        return images, images

    # -------------------------------------------------------------------------- parity
    def new_parity(self, precision: str, manifest: Manifest | None = None) -> ImageParity:
        return ImageParity(TOLERANCES[precision])

    # ------------------------------------------------------------------------- results
    pictures = {"stylized": StylizedAnnotator()}
    video_suffix = "stylized"

    def to_predictions(self, outputs: dict[str, np.ndarray], letterboxes: Sequence, class_names: Sequence[str],
                       input_width: int, input_height: int) -> list[StylizedImage]:
        """Per image, the stylized picture (uint8 (H, W, 3)) at the original image's size."""
        images = (np.asarray(outputs["stylized"]).transpose(0, 2, 3, 1) * 255.0).round().clip(0, 255).astype(np.uint8)
        return [StylizedImage(box_map.map_to_original(images[i])) for i, box_map in enumerate(letterboxes)]

    def metric_note(self, manifest: Manifest) -> str | None:
        return ("losses use the VGG-19 features training used (lower is better); a row fails when one is worse than "
                "torch's by more than --max-drop percent")

    def metrics(self, predictions: list[StylizedImage], truths: list[np.ndarray], bundle) -> dict[str, float]:
        """Mean style loss (against the style image) and content loss (against each input)."""
        import torch

        from cvexport.models.style_loss import CONTENT_LAYERS, PerceptualLoss, content_loss, uint8_to_tensor

        loss = PerceptualLoss(uint8_to_tensor(style_image_of(bundle)))
        style, content = [], []
        with torch.no_grad():
            for output, source in zip(predictions, truths):
                x = uint8_to_tensor(output.image)
                style.append(float(loss.style_only(x)))
                targets = loss.content_targets(uint8_to_tensor(source))
                content.append(float(sum(content_loss(f, t) for f, t in zip(loss.features(x, CONTENT_LAYERS), targets))))
        return {"style_loss": float(np.mean(style)), "content_loss": float(np.mean(content))}

    def describe_prediction(self, prediction: StylizedImage) -> str:
        height, width = prediction.image.shape[:2]
        return f"stylized {width}x{height}"
