"""Training and evaluation of the feed-forward StyleNet for one style image.

Content images are random crops of scikit-image photographs (photos.py), deterministic per
index; the loss is the same PerceptualLoss the optimization method (cvexport.stylize) uses.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cvexport.models.style_loss import CONTENT_WEIGHT, PerceptualLoss, normalize, uint8_to_tensor
from cvexport.models.style_net import STYLE_INPUT_SIZE, StyleNet, build_style_net

# Immunohistochemistry stain (scikit-image ships it): strong colour and cell texture, and
# unlike the other colour photos it looks nothing like the content photographs.
DEFAULT_STYLE = "immunohistochemistry"
STYLE_SIZE = 192  # side the style image is resized to before its Grams are taken
FEEDFORWARD_CONTENT_WEIGHT = 30.0  # see default_config
CROP_SIZE = 96  # training crops: VGG-19 forward+backward dominates the step time on CPU
VAL_SIZE = 6
VAL_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "clock", "brick")


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop of uint8 (H, W, 3), resized to (size, size, 3)."""
    from PIL import Image

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(np.ascontiguousarray(image[top : top + side, left : left + side]))
    return np.asarray(crop.resize((size, size), Image.BILINEAR)).copy()


def default_style_image() -> np.ndarray:
    """The shipped style image, uint8 RGB (H, W, 3), straight from scikit-image (no download)."""
    from cvexport.models.photos import photo

    return photo(DEFAULT_STYLE).copy()


def style_digest(image: np.ndarray) -> str:
    """sha256 of the style image's uint8 pixels (shape included), recorded with the weights."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    return hashlib.sha256(str(image.shape).encode() + image.tobytes()).hexdigest()


def perceptual_loss(style_image: np.ndarray | None = None, content_weight: float = CONTENT_WEIGHT) -> PerceptualLoss:
    style = default_style_image() if style_image is None else style_image
    return PerceptualLoss(uint8_to_tensor(_square(style, STYLE_SIZE)), content_weight=content_weight)


def content_val_images(size: int = VAL_SIZE, resolution: int = STYLE_INPUT_SIZE) -> list[np.ndarray]:
    """``size`` fixed validation content images: centre crops of named photographs, uint8 (r, r, 3)."""
    from cvexport.models.photos import photo

    return [_square(photo(name), resolution) for name in VAL_PHOTOS[:size]]


def content_image(index: int, seed: int = 0, size: int = CROP_SIZE) -> np.ndarray:
    """Training content image ``index``: a random crop of a photograph, uint8 (size, size, 3)."""
    from cvexport.models.photos import random_background

    return random_background(np.random.default_rng([seed, int(index)]), size)


def make_batch(indices: np.ndarray, seed: int = 0, size: int = CROP_SIZE) -> Tensor:
    """Random photo crops for dataset indices -> normalized Tensor[B, 3, size, size]."""
    return torch.cat([uint8_to_tensor(content_image(i, seed, size)) for i in indices])


def loss_fn(loss: PerceptualLoss):
    def compute(model: nn.Module, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        return loss(normalize(model(x)), loss.content_targets(x))

    return compute


@torch.no_grad()
def evaluate(model: nn.Module, size: int = VAL_SIZE, style_image: np.ndarray | None = None,
             loss: PerceptualLoss | None = None) -> dict[str, float]:
    """Mean unweighted losses on the val content images (at STYLE_INPUT_SIZE):
    val_style_loss (output vs style), val_style_loss_content (the content image itself vs style:
    the baseline to beat), val_content_loss (output vs content, at CONTENT_LAYERS)."""
    from cvexport.models.style_loss import content_loss

    loss = perceptual_loss(style_image) if loss is None else loss
    model.eval()
    out = {"val_style_loss": 0.0, "val_style_loss_content": 0.0, "val_content_loss": 0.0}
    images = content_val_images(size)
    for image in images:
        x = uint8_to_tensor(image)
        y = normalize(model(x))
        out["val_style_loss"] += float(loss.style_only(y)) / len(images)
        out["val_style_loss_content"] += float(loss.style_only(x)) / len(images)
        target = loss.content_targets(x)
        out["val_content_loss"] += sum(float(content_loss(f, t)) for f, t in zip(loss.content_targets(y), target)) / len(images)
    return {**out, "val_images": len(images)}


def default_config() -> list[Any]:
    """The recipe of the shipped checkpoint: one phase of Adam with warm-up and cosine decay,
    batch 2 of 96-px crops (600 steps).

    The content weight is 30, not the optimization method's 1: ``stylize`` starts from the
    content image and stops early, but a network trained from random weights at weight 1
    settled on a nearly flat grey image (measured on the 6 val images: style loss 24x below
    the content images', content loss 0.98, the photo gone), because a flat image already
    matches the style's Gram matrices of these random-weight VGG features well. Weight 10 kept
    only edges (content loss 0.76); weight 30 keeps the picture in the style's palette and
    strokes (content loss 0.51, style loss 6.1x below the content images').
    """
    from cvexport.models.training import TrainConfig

    return [TrainConfig(epochs=1, batch_size=2, train_size=1200, lr=2e-3, weight_decay=0.0, warmup_steps=20,
                        seed=0, optimizer="adam", extra={"content_weight": FEEDFORWARD_CONTENT_WEIGHT})]


def train(run_dir: str | Path, phases: list[Any], val_size: int = VAL_SIZE,
          style_image: np.ndarray | None = None) -> tuple[StyleNet, dict[str, Any]]:
    """Train StyleNet from scratch for ``style_image`` (default: DEFAULT_STYLE) through ``phases``;
    returns the model (eval mode) and the last record (val losses after the last phase). Each
    phase keeps checkpoints in ``run_dir/phaseN`` and resumes there."""
    from cvexport.models.training import fit, seed_everything

    seed_everything(phases[0].seed)
    model = build_style_net()
    loss = perceptual_loss(style_image, phases[0].extra.get("content_weight", CONTENT_WEIGHT))
    record: dict[str, Any] = {}
    for number, config in enumerate(phases, start=1):
        last = number == len(phases)
        record = fit(
            model,
            make_batch=lambda idx: make_batch(idx, phases[0].seed),
            loss_fn=loss_fn(loss),
            config=config,
            run_dir=Path(run_dir) / f"phase{number}",
            evaluate=(lambda m: evaluate(m, val_size, loss=loss)) if (val_size and last) else None,
        )
    model.eval()
    return model, record


def save_weights(model: StyleNet, path: str | Path, record: dict[str, Any], phases: list[Any],
                 style_image: np.ndarray | None = None, style_source: str | None = None) -> None:
    """Write the deployable checkpoint: fp32 weights, style image name (or file, ``style_source``)
    + sha256, recipe, val losses."""
    from dataclasses import asdict

    from cvexport.checkpoint import save_checkpoint
    from cvexport.models.vgg_features import vgg_record

    style = default_style_image() if style_image is None else style_image
    meta = {
        "model": "style",
        "architecture": "StyleNet",
        "input_size": STYLE_INPUT_SIZE,
        "style_name": DEFAULT_STYLE if style_image is None else "custom",
        "style_source": f"skimage.data.{DEFAULT_STYLE}" if style_image is None else style_source,
        "style_sha256": style_digest(style),
        "train_phases": [asdict(phase) for phase in phases],
        "metrics": {k: v for k, v in record.items() if k.startswith("val_") or k == "train_seconds"},
        "vgg": vgg_record(),  # the features its loss used (random unless a VGG-19 file was selected)
    }
    save_checkpoint(path, model.state_dict(), meta)


def style_image_from_meta(meta: dict[str, Any]) -> np.ndarray:
    """The style image a checkpoint was trained for: the shipped one, or the file it names,
    checked against the recorded sha256. Raises KeyError, FileNotFoundError or ValueError."""
    if meta["style_name"] == DEFAULT_STYLE:
        image = default_style_image()
    else:
        from cvexport.errors import CvexportError
        from cvexport.images import load_image

        try:
            image = load_image(meta["style_source"])
        except CvexportError as exc:
            raise FileNotFoundError(str(exc)) from None
    if style_digest(image) != meta["style_sha256"]:
        raise ValueError("the style image's pixels differ from those the network was trained for")
    return image


def load_style_net(path: str | Path) -> tuple[StyleNet, dict[str, Any]]:
    """A trained StyleNet (eval mode) and its metadata from a checkpoint written by save_weights."""
    from cvexport.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(path)
    model = build_style_net()
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model.eval(), meta
