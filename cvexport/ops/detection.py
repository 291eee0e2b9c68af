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
    return nms_candidates(decode_offsets(anchors, box_offsets.float()), scores, config)


def nms_candidates(boxes: Tensor, scores: Tensor, config: NmsConfig) -> dict[str, Tensor]:
    """Per-class NMS and top-K of candidate boxes (Tensor[B, M, 4], x1y1x2y2) and their scores
    per class (Tensor[B, M, C]): every (box, class) pair above the threshold is a candidate."""
    import torchvision

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


def head_candidates(outputs: tuple[Tensor, ...], anchors: Tensor | None, levels: tuple[int, ...],
                    head, input_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The boxes and scores a detector's post-processing hands NMS, batch-wise, as the graph's
    head sections (cvexport.export.head_sections) compute them.

    Args:
        outputs: the network's outputs, named by ``head.core_outputs``.
        anchors (Tensor[N, 4]) in (x1, y1, x2, y2), normalized; None for decoded heads.
        levels: anchors per feature level, in order (``head.candidates == "per_level"``).
        head: a :class:`cvexport.detection_heads.DetectionHead`.
        input_size: (height, width) of the network input (pixel box units).
    Returns:
        boxes (Tensor[B, M, 4]) in (x1, y1, x2, y2), normalized, and scores (Tensor[B, M, C])
        per output class, 0 where a pair is not a candidate (M = N, or the per-level top-k total).
    """
    boxes = decode_head_boxes(outputs, anchors, head, input_size)
    full = head_scores(outputs, head)  # [B, N, C (+1 background)]
    first = 1 if head.background else 0
    if head.candidates == "per_level":
        return per_level_candidates(boxes, full, levels, head.topk_candidates, first)
    scores = full[..., first:]
    if head.candidates == "per_class":
        k = min(head.topk_candidates, scores.shape[1])
        top, index = scores.transpose(1, 2).topk(k, dim=-1)
        scores = torch.zeros_like(scores.transpose(1, 2)).scatter(-1, index, top).transpose(1, 2)
    return boxes, scores


def head_scores(outputs: tuple[Tensor, ...], head) -> Tensor:
    """Per (anchor, score column) scores in 0..1: Tensor[B, N, C'] (background column kept)."""
    logits = outputs[0].float() if head.anchored else outputs[1].float()
    if head.scoring == "softmax":
        return torch.softmax(logits, dim=-1)
    if head.scoring == "sigmoid":
        return torch.sigmoid(logits)
    if head.scoring == "sigmoid_centerness":
        return torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(outputs[2].float()))
    return logits


def decode_head_boxes(outputs: tuple[Tensor, ...], anchors: Tensor | None, head,
                      input_size: tuple[int, int]) -> Tensor:
    """Boxes (Tensor[B, N, 4]) in (x1, y1, x2, y2), normalized, clipped to the input when the head says."""
    height, width = input_size
    if head.anchored:
        offsets = outputs[1].float()
        wh = anchors[:, 2:] - anchors[:, :2]
        centre = anchors[:, :2] + 0.5 * wh
        if head.coder == "ssd":
            size = offsets[..., 2:] * head.variances[1]
            if head.wh_clamp is not None:
                size = size.clamp(max=head.wh_clamp)
            xy = offsets[..., :2] * head.variances[0] * wh + centre
            half = 0.5 * torch.exp(size) * wh
            boxes = torch.cat((xy - half, xy + half), dim=-1)
        else:  # linear: distances from the anchor's centre in units of its size
            boxes = torch.cat((centre - offsets[..., :2] * wh, centre + offsets[..., 2:] * wh), dim=-1)
    else:
        boxes = outputs[0].float()
        if head.coder == "cxcywh":
            boxes = torch.cat((boxes[..., :2] - 0.5 * boxes[..., 2:], boxes[..., :2] + 0.5 * boxes[..., 2:]), dim=-1)
        if head.box_units == "pixels":
            boxes = boxes / torch.tensor([width, height, width, height], dtype=boxes.dtype)
    return boxes.clamp(0.0, 1.0) if head.clip else boxes


def per_level_candidates(boxes: Tensor, scores: Tensor, levels: tuple[int, ...], topk: int,
                         first: int) -> tuple[Tensor, Tensor]:
    """torchvision's RetinaNet/FCOS candidate selection without per-image loops: per level, the
    top ``topk`` (anchor, column) pairs over all columns (the background one included, as
    torchvision does), each a candidate for its class only (a one-hot score row)."""
    batch, _, columns = scores.shape
    cand_boxes, cand_scores = [], []
    start = 0
    for size in levels:
        flat = scores[:, start:start + size].reshape(batch, -1)
        top, index = flat.topk(min(topk, flat.shape[1]), dim=-1)
        anchor = torch.div(index, columns, rounding_mode="floor") + start
        label = index % columns
        cand_boxes.append(torch.gather(boxes, 1, anchor[..., None].expand(-1, -1, 4)))
        one_hot = label[..., None] == torch.arange(first, columns)
        cand_scores.append(torch.where(one_hot, top[..., None], torch.zeros((), dtype=top.dtype)))
        start += size
    return torch.cat(cand_boxes, 1), torch.cat(cand_scores, 1)


def postprocess_head(outputs: tuple[Tensor, ...], anchors: Tensor | None, levels: tuple[int, ...], head,
                     input_size: tuple[int, int], config: NmsConfig) -> dict[str, Tensor]:
    """The fixed-shape detection contract of any :class:`cvexport.detection_heads.DetectionHead`
    (see :func:`postprocess`): its candidates, then per-class NMS and top-K."""
    boxes, scores = head_candidates(outputs, anchors, levels, head, input_size)
    return nms_candidates(boxes, scores, config)
