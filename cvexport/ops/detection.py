"""Reference detection post-processing in PyTorch: decode, threshold, per-class NMS, top-K.

This is the pipeline the exported graph sections must reproduce; parity tests and the
``torch`` backend both use it, so there is exactly one definition of "the PyTorch answer".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cvexport.ops.boxes import decode_offsets


@dataclass(frozen=True)
class NmsConfig:
    """Post-processing settings fixed at build time (they become graph constants)."""

    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100


def class_scores(cls_logits: Tensor) -> Tensor:
    """cls_logits (Tensor[B, N, C + 1], background at 0) -> Tensor[B, N, C] object-class probabilities."""
    return torch.softmax(cls_logits, dim=-1)[..., 1:]


def postprocess(
    cls_logits: Tensor, box_offsets: Tensor, anchors: Tensor, config: NmsConfig
) -> dict[str, Tensor]:
    """Turn raw SSD head outputs into the fixed-shape detection contract.

    Args:
        cls_logits (Tensor[B, N, C + 1]): class logits, background at index 0.
        box_offsets (Tensor[B, N, 4]): variance-scaled centre/size offsets.
        anchors (Tensor[N, 4]) in (x1, y1, x2, y2), normalized.
    Returns:
        num_detections (Tensor[B, 1] int32),
        detection_boxes (Tensor[B, K, 4] float32) in (x1, y1, x2, y2), normalized, not clipped,
        detection_scores (Tensor[B, K] float32), sorted in decreasing order,
        detection_classes (Tensor[B, K] int32), object class index (background removed).
        Rows past num_detections are padding, all zeros (what TensorRT's EfficientNMS writes).
    """
    return postprocess_scores(class_scores(cls_logits.float()), box_offsets, anchors, config)


def postprocess_scores(scores: Tensor, box_offsets: Tensor, anchors: Tensor, config: NmsConfig) -> dict[str, Tensor]:
    """As :func:`postprocess`, from object-class probabilities (Tensor[B, N, C]) instead of logits:
    what the exported network core outputs, so its runs can be scored with the same code."""
    import torchvision

    boxes = decode_offsets(anchors, box_offsets.float())
    scores = scores.float()
    batch = scores.shape[0]
    k = config.max_detections
    out_num = torch.zeros((batch, 1), dtype=torch.int32)
    out_boxes = torch.zeros((batch, k, 4), dtype=torch.float32)
    out_scores = torch.zeros((batch, k), dtype=torch.float32)
    out_classes = torch.zeros((batch, k), dtype=torch.int32)
    for b in range(batch):
        # Every (anchor, class) pair above the threshold is a candidate, as in ONNX NonMaxSuppression.
        anchor_idx, class_idx = torch.nonzero(scores[b] > config.score_threshold, as_tuple=True)
        cand_scores = scores[b, anchor_idx, class_idx]
        cand_boxes = boxes[b, anchor_idx]
        keep = torchvision.ops.batched_nms(cand_boxes, cand_scores, class_idx, config.iou_threshold)
        keep = keep[:k]  # batched_nms returns indices sorted by decreasing score
        n = int(keep.numel())
        out_num[b, 0] = n
        out_boxes[b, :n] = cand_boxes[keep]
        out_scores[b, :n] = cand_scores[keep]
        out_classes[b, :n] = class_idx[keep].to(torch.int32)
    return {
        "num_detections": out_num,
        "detection_boxes": out_boxes,
        "detection_scores": out_scores,
        "detection_classes": out_classes,
    }
