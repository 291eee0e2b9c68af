"""The perceptual loss of neural style transfer (Gatys et al.; as taught in d2l.ai "Neural Style Transfer").

content loss: mean squared difference of VGG activations at CONTENT_LAYERS;
style loss: mean squared difference of Gram matrices at STYLE_LAYERS (summed over layers);
total variation: mean absolute difference of neighbouring pixels (suppresses high-frequency noise).
All images entering here are Tensor[B, 3, H, W] normalized with ImageNet mean/std.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD

STYLE_LAYERS = (0, 5, 10, 19, 28)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
CONTENT_LAYERS = (25,)  # relu4_4
CONTENT_WEIGHT = 1.0
STYLE_WEIGHT = 1e3
TV_WEIGHT = 10.0


def gram(x: Tensor) -> Tensor:
    """Tensor[B, C, H, W] -> Gram matrices Tensor[B, C, C], normalized by C * H * W (size-independent)."""
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def content_loss(y_hat: Tensor, y: Tensor) -> Tensor:
    return torch.square(y_hat - y.detach()).mean()


def style_loss(y_hat: Tensor, gram_y: Tensor) -> Tensor:
    """``y_hat`` Tensor[B, C, H, W] activations, ``gram_y`` Tensor[1 or B, C, C] target Grams."""
    return torch.square(gram(y_hat) - gram_y.detach()).mean()


def tv_loss(y_hat: Tensor) -> Tensor:
    """Total variation: 0.5 * (mean |vertical differences| + mean |horizontal differences|)."""
    return 0.5 * ((y_hat[:, :, 1:, :] - y_hat[:, :, :-1, :]).abs().mean()
                  + (y_hat[:, :, :, 1:] - y_hat[:, :, :, :-1]).abs().mean())


def normalize(image01: Tensor) -> Tensor:
    """RGB in [0, 1] Tensor[B, 3, H, W] -> ImageNet-normalized."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image01.dtype, device=image01.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image01.dtype, device=image01.device).view(1, 3, 1, 1)
    return (image01 - mean) / std


def uint8_to_tensor(image) -> Tensor:
    """uint8 RGB (H, W, 3) numpy image -> normalized Tensor[1, 3, H, W]."""
    import numpy as np

    return normalize(torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0)


class PerceptualLoss(nn.Module):
    """VGG-19 features plus the Gram matrices of one style image.

    ``style`` is the style image, normalized Tensor[1, 3, H, W]. ``forward(synth, content_targets)``
    returns (total, parts) with parts = {"content", "style", "tv"} as floats, already weighted;
    ``content_targets`` comes from :meth:`content_targets` on the content image(s).
    """

    def __init__(self, style: Tensor, content_weight: float = CONTENT_WEIGHT, style_weight: float = STYLE_WEIGHT,
                 tv_weight: float = TV_WEIGHT):
        super().__init__()
        from cvexport.models.vgg_features import vgg19_features

        self.vgg = vgg19_features(max(STYLE_LAYERS + CONTENT_LAYERS))
        self.weights = (content_weight, style_weight, tv_weight)
        with torch.no_grad():
            grams = [gram(f) for f in self.features(style, STYLE_LAYERS)]
        for i, g in enumerate(grams):
            self.register_buffer(f"style_gram{i}", g)

    def features(self, x: Tensor, layers) -> list[Tensor]:
        from cvexport.models.vgg_features import extract

        return extract(self.vgg, x, layers)

    @property
    def style_grams(self) -> list[Tensor]:
        return [getattr(self, f"style_gram{i}") for i in range(len(STYLE_LAYERS))]

    @torch.no_grad()
    def content_targets(self, content: Tensor) -> list[Tensor]:
        return self.features(content, CONTENT_LAYERS)

    def style_only(self, synth: Tensor) -> Tensor:
        """Unweighted style loss of ``synth`` against the style image (evaluation)."""
        feats = self.features(synth, STYLE_LAYERS)
        return sum(style_loss(f, g) for f, g in zip(feats, self.style_grams))

    def forward(self, synth: Tensor, content_targets: list[Tensor]) -> tuple[Tensor, dict[str, float]]:
        layers = STYLE_LAYERS + CONTENT_LAYERS
        feats = self.features(synth, layers)
        style_feats, content_feats = feats[: len(STYLE_LAYERS)], feats[len(STYLE_LAYERS):]
        cw, sw, tw = self.weights
        c = cw * sum(content_loss(f, t) for f, t in zip(content_feats, content_targets))
        s = sw * sum(style_loss(f, g) for f, g in zip(style_feats, self.style_grams))
        t = tw * tv_loss(synth)
        total = c + s + t
        return total, {"content": float(c.detach()), "style": float(s.detach()), "tv": float(t.detach())}
