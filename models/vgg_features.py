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

A user who has torchvision's ImageNet VGG-19 (``--vgg-weights FILE`` or the torch hub cache, see
:mod:`cvexport.pretrained`) gets those weights instead, as the course uses them: as they are,
without the rescaling above (the course's loss weights were chosen for them). Callers choose
with :func:`using_vgg_weights` around the code that builds the loss, so the loss modules that
build the features need no new argument; :func:`vgg_record` says in a checkpoint which
features a network was trained with.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

VGG_SEED = 19
RANDOM_VGG = f"random VGG-19 (seed {VGG_SEED}, per-layer normalized on photographs)"

# The ImageNet VGG-19 chosen by using_vgg_weights: (PretrainedFile, its features' tensors), or None.
_selected: tuple[Any, dict[str, Tensor]] | None = None


@contextlib.contextmanager
def using_vgg_weights(found) -> Iterator[None]:
    """Within the block, :func:`vgg19_features` takes its weights from ``found`` (a
    :class:`cvexport.pretrained.PretrainedFile` of a torchvision VGG-19, read and checked here,
    once); None keeps the random features."""
    global _selected
    from cvexport.pretrained import vgg19_feature_weights

    previous = _selected
    _selected = None if found is None else (found, vgg19_feature_weights(found))
    try:
        yield
    finally:
        _selected = previous


def vgg_record() -> dict[str, Any]:
    """Which features :func:`vgg19_features` builds now, as a checkpoint records it."""
    if _selected is None:
        return {"features": RANDOM_VGG}
    return {"features": "torchvision VGG-19", **_selected[0].record()}


def vgg_file_of(meta: Mapping[str, Any]):
    """The VGG-19 file a style checkpoint's metadata (``vgg``, written from :func:`vgg_record`)
    says it was trained with, as a PretrainedFile for :func:`using_vgg_weights`; None for the
    random features. A file that is gone or changed is a one-line error: losses measured with
    other features than training used would not mean the same."""
    from pathlib import Path

    from cvexport.digest import sha256_file
    from cvexport.errors import CvexportError
    from cvexport.pretrained import VGG19, PretrainedFile

    record = meta.get("vgg") or {}
    if "file" not in record:
        return None
    path = Path(record["file"])
    if not path.is_file() or sha256_file(path) != record.get("sha256"):
        raise CvexportError(f"the style network was trained with the VGG-19 weights {path}, which are "
                            f"{'gone' if not path.is_file() else 'changed'}; restore that file")
    return PretrainedFile(path, VGG19, record.get("origin", "checkpoint"))


def vgg19_features(max_layer: int = 28, seed: int = VGG_SEED,
                   weights: Mapping[str, Tensor] | None = None) -> nn.Sequential:
    """The layers of ``torchvision.models.vgg19(weights=None).features[:max_layer + 1]`` with
    deterministic random, Gatys-normalized weights (see module docstring), or ``weights`` (keys
    as in ``vgg19().features.state_dict()``; default: the ones :func:`using_vgg_weights` chose, if
    any); frozen, eval mode, ReLUs non-inplace so :func:`extract` can keep activations. Input:
    Tensor[B, 3, H, W] normalized with ImageNet mean/std."""
    from torchvision.models.vgg import cfgs, make_layers

    # make_layers is what vgg19() builds its .features from; skipping the 120M-weight
    # classifier head saves seconds per build.
    features = make_layers(cfgs["E"])[: max_layer + 1]
    if weights is None and _selected is not None:
        weights = _selected[1]
    if weights is not None:
        own = features.state_dict()
        features.load_state_dict({key: weights[key] for key in own})
        for layer in features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False
        features.requires_grad_(False)
        return features.eval()
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
