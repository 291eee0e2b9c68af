"""ResNet-18 image classifier (torchvision's architecture) and the fine-tuning head swap.

Input: float32 NCHW, RGB scaled to [0, 1] then normalized with ImageNet mean/std
(cvexport.preprocess). Output: logits Tensor[B, num_classes].
"""

from __future__ import annotations

import copy

from torch import nn


def build_classifier(num_classes: int) -> nn.Module:
    """An untrained torchvision ResNet-18 with a ``num_classes``-way fc layer."""
    from torchvision.models import resnet18

    return resnet18(weights=None, num_classes=num_classes)


def fine_tune_model(source: nn.Module, num_classes: int) -> nn.Module:
    """A copy of ``source`` (a ResNet-18) with every layer kept but ``fc``, which is replaced by a
    new ``num_classes``-way layer, Xavier-uniform initialized (d2l, "Fine-Tuning").

    ``source`` itself is left untouched.
    """
    model = copy.deepcopy(source)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    nn.init.xavier_uniform_(model.fc.weight)
    nn.init.zeros_(model.fc.bias)
    return model
