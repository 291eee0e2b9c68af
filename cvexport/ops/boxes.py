"""Box operations as pure, export-safe torch functions.

Every function states its shapes and box format. Boxes are normalized to the
network input (0..1) unless a docstring says pixels. Formats:

- corners: (x1, y1, x2, y2)
- center:  (cx, cy, w, h)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

# SSD box-coding variances (torchvision's BoxCoder weights 10, 10, 5, 5).
CENTER_VARIANCE = 0.1
SIZE_VARIANCE = 0.2


def corners_to_center(boxes: Tensor) -> Tensor:
    """boxes (Tensor[..., 4]) in (x1, y1, x2, y2) -> Tensor[..., 4] in (cx, cy, w, h)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def center_to_corners(boxes: Tensor) -> Tensor:
    """boxes (Tensor[..., 4]) in (cx, cy, w, h) -> Tensor[..., 4] in (x1, y1, x2, y2)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """boxes (Tensor[N, 4]) in (x1, y1, x2, y2) -> Tensor[N]; inverted boxes have area 0."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU.

    Args:
        boxes1 (Tensor[N, 4]) in (x1, y1, x2, y2)
        boxes2 (Tensor[M, 4]) in (x1, y1, x2, y2)
    Returns:
        Tensor[N, M]: IoU of every pair; 0 where the union is empty.
    """
    if boxes1.numel() == 0 or boxes2.numel() == 0:
        return boxes1.new_zeros((boxes1.shape[0], boxes2.shape[0]))
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def multibox_prior(
    feature_hw: tuple[int, int], sizes: Sequence[float], ratios: Sequence[float]
) -> Tensor:
    """Anchors centred on each pixel of a feature map, as taught in the course (d2l.ai).

    Per pixel, ``len(sizes) + len(ratios) - 1`` anchors in this order:
    (s1, r1), (s2, r1), ..., (sn, r1), (s1, r2), ..., (s1, rm).
    Width ``s * sqrt(r)`` and height ``s / sqrt(r)`` (square input).

    Args:
        feature_hw: (height, width) of the feature map.
        sizes: anchor scales relative to the input side.
        ratios: width / height aspect ratios.
    Returns:
        Tensor[H * W * A, 4] in (x1, y1, x2, y2), normalized; row-major over pixels.
    """
    height, width = feature_hw
    sizes_t = torch.tensor(list(sizes), dtype=torch.float32)
    ratios_t = torch.tensor(list(ratios), dtype=torch.float32)
    # (s_i, r_1) for all sizes, then (s_1, r_j) for the remaining ratios.
    w = torch.cat((sizes_t * math.sqrt(ratios[0]), sizes_t[0] * torch.sqrt(ratios_t[1:])))
    h = torch.cat((sizes_t / math.sqrt(ratios[0]), sizes_t[0] / torch.sqrt(ratios_t[1:])))
    center_y = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    center_x = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    cy, cx = torch.meshgrid(center_y, center_x, indexing="ij")
    centers = torch.stack((cx.reshape(-1), cy.reshape(-1)), dim=-1)  # [H*W, 2]
    half = torch.stack((w, h), dim=-1) / 2  # [A, 2]
    top_left = centers[:, None, :] - half[None]
    bottom_right = centers[:, None, :] + half[None]
    return torch.cat((top_left, bottom_right), dim=-1).reshape(-1, 4)


def encode_offsets(anchors: Tensor, boxes: Tensor, eps: float = 1e-6) -> Tensor:
    """Offsets of ``boxes`` relative to ``anchors`` in centre/size form with SSD variances.

    Args:
        anchors (Tensor[N, 4]) in (x1, y1, x2, y2)
        boxes (Tensor[N, 4]) in (x1, y1, x2, y2), one per anchor
    Returns:
        Tensor[N, 4]: (dx / 0.1, dy / 0.1, log(w ratio) / 0.2, log(h ratio) / 0.2).
    """
    a = corners_to_center(anchors)
    b = corners_to_center(boxes)
    offset_xy = (b[:, :2] - a[:, :2]) / a[:, 2:] / CENTER_VARIANCE
    offset_wh = torch.log(eps + b[:, 2:] / a[:, 2:]) / SIZE_VARIANCE
    return torch.cat((offset_xy, offset_wh), dim=-1)


def decode_offsets(anchors: Tensor, offsets: Tensor) -> Tensor:
    """Inverse of :func:`encode_offsets`; broadcasts over leading batch dimensions.

    Args:
        anchors (Tensor[N, 4]) in (x1, y1, x2, y2)
        offsets (Tensor[..., N, 4]) as produced by the bbox head
    Returns:
        Tensor[..., N, 4] in (x1, y1, x2, y2), normalized, not clipped.
    """
    a = corners_to_center(anchors)
    xy = a[:, :2] + offsets[..., :2] * CENTER_VARIANCE * a[:, 2:]
    wh = a[:, 2:] * torch.exp(offsets[..., 2:] * SIZE_VARIANCE)
    return center_to_corners(torch.cat((xy, wh), dim=-1))


def assign_anchors(anchors: Tensor, gt_boxes: Tensor, iou_threshold: float = 0.5) -> Tensor:
    """Match anchors to ground truth.

    Each ground-truth box first takes its best anchor (greedily, highest IoU pair
    first, so no anchor is taken twice); the remaining anchors take the ground
    truth they overlap most if that IoU is at least ``iou_threshold``.

    Args:
        anchors (Tensor[N, 4]) in (x1, y1, x2, y2)
        gt_boxes (Tensor[G, 4]) in (x1, y1, x2, y2)
    Returns:
        Tensor[N] int64: index of the matched ground truth, -1 for background.
    """
    num_anchors = anchors.shape[0]
    matched = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    if gt_boxes.numel() == 0:
        return matched
    iou = box_iou(anchors, gt_boxes)
    best_iou, best_gt = iou.max(dim=1)
    keep = best_iou >= iou_threshold
    matched[keep] = best_gt[keep]
    work = iou.clone()
    for _ in range(gt_boxes.shape[0]):
        flat = int(torch.argmax(work))
        anchor_idx, gt_idx = divmod(flat, gt_boxes.shape[0])
        if work[anchor_idx, gt_idx] <= 0:
            break
        matched[anchor_idx] = gt_idx
        work[anchor_idx, :] = -1
        work[:, gt_idx] = -1
    return matched


def clip_boxes(boxes: Tensor, width: float, height: float) -> Tensor:
    """boxes (Tensor[..., 4]) in (x1, y1, x2, y2) clipped to [0, width] x [0, height]."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(
        (x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)), dim=-1
    )
