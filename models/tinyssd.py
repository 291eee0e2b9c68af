"""TinySSD as taught in the course (d2l.ai, "Single Shot Multibox Detection").

Five stages (base net at 1/8 resolution, three down-sampling blocks, a global
max-pool) each with a 3x3 class head and a 3x3 box head; anchors from
:func:`cvexport.ops.boxes.multibox_prior`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cvexport.ops.boxes import multibox_prior

ANCHOR_SIZES = (
    (0.2, 0.272),
    (0.37, 0.447),
    (0.54, 0.619),
    (0.71, 0.79),
    (0.88, 0.961),
)
ANCHOR_RATIOS = (1.0, 2.0, 0.5)
ANCHORS_PER_POSITION = len(ANCHOR_SIZES[0]) + len(ANCHOR_RATIOS) - 1
INPUT_SIZE = 256


def down_sample_blk(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two (3x3 conv pad 1, BatchNorm, ReLU) then a 2x2 max-pool: halves H and W."""
    layers: list[nn.Module] = []
    for _ in range(2):
        layers += [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        ]
        in_channels = out_channels
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def base_net() -> nn.Sequential:
    """3 -> 16 -> 32 -> 64 channels, 1/8 resolution."""
    channels = [3, 16, 32, 64]
    return nn.Sequential(*(down_sample_blk(channels[i], channels[i + 1]) for i in range(3)))


def stage(index: int) -> nn.Module:
    if index == 0:
        return base_net()
    if index == 1:
        return down_sample_blk(64, 128)
    if index == 4:
        return nn.AdaptiveMaxPool2d((1, 1))
    return down_sample_blk(128, 128)


STAGE_CHANNELS = (64, 128, 128, 128, 128)


def feature_map_sizes(input_size: int = INPUT_SIZE) -> list[tuple[int, int]]:
    """Spatial size of each stage's output for a square input."""
    side = input_size // 8
    sizes = []
    for index in range(5):
        if index in (1, 2, 3):
            side //= 2
        if index == 4:
            side = 1
        sizes.append((side, side))
    return sizes


def make_anchors(input_size: int = INPUT_SIZE) -> Tensor:
    """All anchors, stage by stage: Tensor[N, 4] in (x1, y1, x2, y2), normalized."""
    return torch.cat(
        [
            multibox_prior(hw, sizes, ANCHOR_RATIOS)
            for hw, sizes in zip(feature_map_sizes(input_size), ANCHOR_SIZES)
        ]
    )


class TinySSD(nn.Module):
    """Multibox detector.

    Input: Tensor[B, 3, 256, 256] float32, normalized RGB.
    Output: (cls_logits Tensor[B, N, C + 1] with background at index 0,
             box_offsets Tensor[B, N, 4] in variance-scaled centre/size form).
    The anchors are a buffer (Tensor[N, 4] in (x1, y1, x2, y2)) so they travel with the weights.
    """

    def __init__(self, num_classes: int, input_size: int = INPUT_SIZE):
        super().__init__()
        self.num_classes = num_classes
        self.stages = nn.ModuleList(stage(i) for i in range(5))
        self.cls_predictors = nn.ModuleList(
            nn.Conv2d(c, ANCHORS_PER_POSITION * (num_classes + 1), kernel_size=3, padding=1)
            for c in STAGE_CHANNELS
        )
        self.bbox_predictors = nn.ModuleList(
            nn.Conv2d(c, ANCHORS_PER_POSITION * 4, kernel_size=3, padding=1)
            for c in STAGE_CHANNELS
        )
        self.register_buffer("anchors", make_anchors(input_size), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        cls_parts, box_parts = [], []
        for blk, cls_head, box_head in zip(self.stages, self.cls_predictors, self.bbox_predictors):
            x = blk(x)
            # NCHW -> NHWC then flatten, so anchors are ordered pixel by pixel as in multibox_prior.
            cls_parts.append(cls_head(x).permute(0, 2, 3, 1).flatten(1))
            box_parts.append(box_head(x).permute(0, 2, 3, 1).flatten(1))
        batch = cls_parts[0].shape[0]
        cls_logits = torch.cat(cls_parts, dim=1).reshape(batch, -1, self.num_classes + 1)
        box_offsets = torch.cat(box_parts, dim=1).reshape(batch, -1, 4)
        return cls_logits, box_offsets
