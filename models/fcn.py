"""Fully convolutional network on a ResNet-18 encoder (d2l, "Fully Convolutional Networks").

Input: float32 NCHW normalized with ImageNet mean/std, H and W multiples of 32.
Output: per-pixel class logits Tensor[B, num_classes, H, W].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def bilinear_kernel(in_channels: int, out_channels: int, kernel_size: int) -> Tensor:
    """Tensor[in_channels, out_channels, k, k] for ConvTranspose2d that upsamples bilinearly:
    channel i maps to channel i through the separable tent filter, other pairs are zero.

    With stride s, kernel 2s and padding s/2 this matches
    ``F.interpolate(scale_factor=s, mode="bilinear", align_corners=False)`` away from the border.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = torch.arange(kernel_size, dtype=torch.float32)
    tent = 1 - torch.abs(taps - center) / factor
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size)
    diagonal = range(min(in_channels, out_channels))
    weight[diagonal, diagonal] = tent[:, None] * tent[None, :]
    return weight


class FCNResNet18(nn.Module):
    """ResNet-18 without avgpool and fc (stride 32, 512 channels), a 1x1 conv to class scores,
    and a transposed conv (kernel 64, stride 32, padding 16) back to the input resolution,
    initialized as bilinear upsampling and trained with the rest."""

    def __init__(self, num_classes: int, backbone: nn.Module | None = None):
        super().__init__()
        if backbone is None:
            from torchvision.models import resnet18

            backbone = resnet18(weights=None)
        self.encoder = nn.Sequential(*list(backbone.children())[:-2])
        self.classifier = nn.Conv2d(512, num_classes, kernel_size=1)
        self.upsample = nn.ConvTranspose2d(num_classes, num_classes, kernel_size=64, stride=32, padding=16)
        with torch.no_grad():
            self.upsample.weight.copy_(bilinear_kernel(num_classes, num_classes, 64))
            self.upsample.bias.zero_()  # start as exact bilinear upsampling of the scores

    def forward(self, x: Tensor) -> Tensor:
        return self.upsample(self.classifier(self.encoder(x)))


def build_fcn(num_classes: int) -> FCNResNet18:
    """An untrained FCN (random ResNet-18 encoder)."""
    return FCNResNet18(num_classes)
