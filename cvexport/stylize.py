"""Neural style transfer by optimization (Gatys et al.; the method as taught in d2l.ai).

The synthesized image starts as the content image and is optimized directly with Adam
(lr 0.3, step decay x0.8 every 50 steps) against the perceptual loss of
cvexport.models.style_loss: content 1, style 1e3, total variation 10, on the VGG-19 features of
cvexport.models.vgg_features: the user's torchvision ImageNet VGG-19 when given
(``vgg_weights``; the CLI also finds it in the torch hub cache), else the project's random-weight
VGG-19 (nothing is downloaded).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvexport.errors import CvexportError

DEFAULT_STEPS = 200  # the loss has flattened by ~100 steps at 256 px (measured); 200 leaves margin
DEFAULT_SIZE = 256  # long side of the working image; ~0.35 s/step on 2 CPU cores
DECAY_EVERY = 50
DECAY_GAMMA = 0.8


def _fit(image: np.ndarray, what: str, height: int | None = None, width: int | None = None,
         long_side: int | None = None) -> np.ndarray:
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise CvexportError(f"{what} image must be uint8 RGB (H, W, 3); got {image.dtype} {image.shape}")
    if long_side is not None:
        h, w = image.shape[:2]
        scale = long_side / max(h, w)
        height, width = max(4, round(h * scale)), max(4, round(w * scale))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR)).copy()


def stylize(content: np.ndarray, style: np.ndarray, steps: int = DEFAULT_STEPS, lr: float = 0.3,
            size: int = DEFAULT_SIZE, progress: bool = True,
            vgg_weights=None) -> tuple[np.ndarray, list[dict[str, float]]]:
    """Render ``content`` in the style of ``style`` (both uint8 RGB (H, W, 3), any sizes).

    The content image is resized so its long side is ``size``, the style image to the same shape.
    ``vgg_weights``: a :class:`cvexport.pretrained.PretrainedFile` of a torchvision VGG-19 for the
    features (None: the random-weight VGG-19).
    Returns (uint8 RGB image at that working size, per-step losses [{"step", "total", "content",
    "style", "tv"}] measured before each update, weighted as summed).
    """
    import torch

    from cvexport.models.style_loss import PerceptualLoss, uint8_to_tensor
    from cvexport.models.vgg_features import using_vgg_weights
    from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD

    content = _fit(content, "content", long_side=size)
    style = _fit(style, "style", *content.shape[:2])
    with using_vgg_weights(vgg_weights):  # the loss builds its VGG-19 features here, once
        loss = PerceptualLoss(uint8_to_tensor(style))
    x0 = uint8_to_tensor(content)
    targets = loss.content_targets(x0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    low, high = (0 - mean) / std, (1 - mean) / std
    synth = x0.clone().requires_grad_(True)  # optimized in normalized space, as taught
    optimizer = torch.optim.Adam([synth], lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, DECAY_EVERY, DECAY_GAMMA)
    history: list[dict[str, float]] = []

    def step() -> None:
        total, parts = loss(synth, targets)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():  # keep pixels displayable; unbounded pixels let the Grams run away
            synth.copy_(torch.maximum(torch.minimum(synth, high), low))
        history.append({"step": len(history), "total": float(total.detach()), **parts})

    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [TextColumn("stylize"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns) as bar:
            task = bar.add_task("stylize", total=steps, info="")
            for _ in range(steps):
                step()
                h = history[-1]
                bar.update(task, advance=1, info=" ".join(f"{k}={h[k]:.4g}" for k in ("total", "content", "style", "tv")))
    else:
        for _ in range(steps):
            step()
    image = (synth.detach() * std + mean).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return (image * 255).round().astype(np.uint8), history


def save_loss_plot(history: list[dict[str, float]], path: str | Path) -> None:
    """Loss curves (log scale, one line per part) as a PNG; needs matplotlib (the 'bench' extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CvexportError("the loss plot needs matplotlib: pip install 'cvexport[bench]'") from None
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["step"] for h in history]
    for key in ("total", "content", "style", "tv"):
        ax.plot(steps, [h[key] for h in history], label=key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("weighted loss")
    ax.legend()
    fig.tight_layout()
    from cvexport.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
