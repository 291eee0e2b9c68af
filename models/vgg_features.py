"""VGG-19 feature extractor for the perceptual (style/content) loss, with random weights made here.

ImageNet VGG-19 weights cannot be downloaded in this project, so the convolutions get
**random weights drawn deterministically from a seeded numpy Generator** (He/Kaiming-normal
scale, zero biases). Random-weight VGG features are a documented basis for style transfer:
He, Wang & Hopcroft, "A Powerful Generative Model Using Random Weights for the Deep Image
Representation" (NeurIPS 2016) do Gatys-style transfer with a random VGG-19, and Ustyuzhaninov
et al., "What does it take to generate natural textures?" (ICLR 2017) show Gram matrices of
random multi-scale filters capture texture. The He scale sqrt(2 / fan_in) keeps the second
moment of post-ReLU activations roughly constant through the 16 layers, so the Gram matrices
of every style layer have comparable magnitude and the issue's loss weights stay meaningful.
Drawing from ``numpy.random.default_rng(seed)`` (PCG64, a stable stream numpy documents)
makes the weights identical on every machine and independent of torch's RNG.

Then each layer is rescaled, in order, so that its mean ReLU activation over a fixed set of
photographs (scikit-image's, centre crops at 128 px) is 1 -- the normalization Gatys et al.
applied to their VGG ("Image Style Transfer Using CNNs", CVPR 2016, sec. 2), but with one scale
per *layer*, not per filter: measured here, per-filter scaling blows up the random filters that
are almost never active on photographs (gains of 100x+), and a single Adam step of 0.01 then
raised the loss 3x. Per-layer scaling keeps the loss smooth and brings the style term to the
same order as total variation under the issue's weights 1 / 1e3 / 10 (He scale alone leaves
style ~10x weaker than TV).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

VGG_SEED = 19


def vgg19_features(max_layer: int = 28, seed: int = VGG_SEED) -> nn.Sequential:
    """The layers of ``torchvision.models.vgg19(weights=None).features[:max_layer + 1]`` with
    deterministic random, Gatys-normalized weights (see module docstring); frozen, eval mode, ReLUs
    non-inplace so :func:`extract` can keep activations. Input: Tensor[B, 3, H, W] normalized with
    ImageNet mean/std."""
    from torchvision.models.vgg import cfgs, make_layers

    # make_layers is what vgg19() builds its .features from; skipping the 120M-weight
    # classifier head saves seconds per build.
    features = make_layers(cfgs["E"])[: max_layer + 1]
    rng = np.random.default_rng(seed)
    x = _calibration_batch()
    with torch.no_grad():
        for layer in features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False
            elif isinstance(layer, nn.Conv2d):
                fan_in = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
                weight = rng.standard_normal(layer.weight.shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
                layer.weight.copy_(torch.from_numpy(weight))
                layer.bias.zero_()
                # Mean ReLU activation of the layer = 1 on the photos. With zero bias,
                # ReLU(a * conv) = a * ReLU(conv), so one scale per layer does it.
                layer.weight.div_(torch.relu(layer(x)).mean())
            x = layer(x)
    features.requires_grad_(False)
    return features.eval()


def _calibration_batch(size: int = 128) -> Tensor:
    """Centre crops of a few scikit-image photographs, normalized Tensor[N, 3, size, size]."""
    from PIL import Image

    from cvexport.models.photos import photo
    from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD

    crops = []
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "brick"):
        image = photo(name)
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(image[top : top + side, left : left + side]).resize((size, size), Image.BILINEAR)
        crops.append(np.asarray(crop, dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def extract(net: nn.Sequential, x: Tensor, layers: tuple[int, ...] | list[int]) -> list[Tensor]:
    """Activations of ``net`` at the given layer indices, in the order of ``layers``.

    A conv layer's activation is taken after its ReLU (what Gatys et al. used, Caffe's in-place
    ReLU), so index 0 means relu1_1 and 28 means relu5_1. Stops after the deepest requested layer.
    """
    wanted = set(layers)
    found: dict[int, Tensor] = {}
    last = max(wanted)
    for index, layer in enumerate(net):
        x = layer(x)
        if index in wanted:
            found[index] = torch.relu(x) if isinstance(layer, nn.Conv2d) else x
        if index == last:
            break
    return [found[i] for i in layers]
