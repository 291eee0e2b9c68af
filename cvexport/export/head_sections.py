"""Graph sections of a detector's post-processing, built from its :class:`DetectionHead`.

TinySSD's head keeps its own sections (cvexport.detection: class probabilities, decode, NMS):
its bundles stay what they were. Every other head (torchvision's SSD, SSDlite, RetinaNet and
FCOS, a user's declared module) goes through :func:`append_head_sections`: scores, decode,
clip, candidate selection, then the same NMS sections (standard ONNX ``nms_onnx`` or the
``EfficientNMS_TRT`` plugin on decoded boxes) and the same output contract. Each step mirrors
:func:`cvexport.ops.detection.head_candidates`, the PyTorch form the parity tests hold it to.

Everything is fixed-shape and loop-free: per-class top-k is a TopK over the anchor axis and a
ScatterElements back; per-level top-k is unrolled over the levels (a build-time constant), so
the graph is batch-correct and inside TensorRT's limits (TopK K <= 3840).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cvexport.export.graph import GraphEditor
from cvexport.export.sections import DETECTION_OUTPUTS, nms_onnx
from cvexport.ops.detection import NmsConfig


def append_head_sections(editor: GraphEditor, head, anchors: np.ndarray | None, levels: Sequence[int],
                         num_boxes: int, num_classes: int, input_size: tuple[int, int], config: NmsConfig,
                         nms: str) -> None:
    """Scores, boxes, candidates and NMS of ``head`` after the network's outputs
    (``head.core_outputs``: ``num_boxes`` boxes, ``num_classes`` output classes), ending in
    the four detection outputs."""
    with editor.section("scores"):
        full = head_scores(editor, head)
    with editor.section("decode"):
        boxes = decode_head_boxes(editor, head, anchors, input_size)
    first = 1 if head.background else 0
    with editor.section("candidates"):
        if head.candidates == "per_level":
            boxes, scores, count = per_level_candidates(editor, boxes, full, levels, head.topk_candidates,
                                                        first, num_classes + first)
        else:
            scores, count = _drop_columns(editor, full, first), num_boxes
            if head.candidates == "per_class":
                scores = per_class_topk(editor, scores, head.topk_candidates, count)
    with editor.section("nms"):
        if nms == "onnx":
            nms_onnx(editor, boxes, scores, count, config)
        else:
            efficient_nms_decoded(editor, boxes, scores, config)


def head_scores(editor: GraphEditor, head) -> str:
    """Tensor[B, N, C'] scores in 0..1 per score column (background column kept)."""
    if not head.anchored:
        return "class_scores" if head.scoring == "probabilities" else _activation(editor, head, "class_scores")
    return _activation(editor, head, "class_logits")


def _activation(editor: GraphEditor, head, logits: str) -> str:
    if head.scoring == "softmax":
        return editor.op("Softmax", [logits], "class_softmax", axis=-1)
    if head.scoring == "probabilities":
        return logits
    sigmoid = editor.op("Sigmoid", [logits], "class_sigmoid")
    if head.scoring == "sigmoid":
        return sigmoid
    # FCOS: sqrt(sigmoid(class) * sigmoid(centerness)), the centerness [B, N, 1] broadcast over classes
    joint = editor.op("Mul", [sigmoid, editor.op("Sigmoid", ["centerness"], "centerness_sigmoid")], "class_centerness")
    return editor.op("Sqrt", [joint], "class_centerness_sqrt")


def _drop_columns(editor: GraphEditor, scores: str, first: int) -> str:
    if not first:
        return scores
    return editor.op("Slice", [scores, editor.const(np.array([first], np.int64), "drop_background_start"),
                               editor.const(np.array([np.iinfo(np.int64).max], np.int64), "drop_background_end"),
                               editor.const(np.array([-1], np.int64), "drop_background_axis")], "object_scores")


def decode_head_boxes(editor: GraphEditor, head, anchors: np.ndarray | None, input_size: tuple[int, int]) -> str:
    """Tensor[B, N, 4] boxes in (x1, y1, x2, y2), normalized (clipped to 0..1 when the head says)."""
    height, width = input_size
    if head.anchored:
        a = np.asarray(anchors, dtype=np.float32)
        anchor_wh = (a[:, 2:] - a[:, :2])[None]
        anchor_xy = (a[:, :2] + 0.5 * (a[:, 2:] - a[:, :2]))[None]
        first, second = editor.op("Split", ["box_offsets", editor.const(np.array([2, 2], np.int64), "offsets_split")],
                                  "offsets", num_outputs=2, axis=-1)
        if head.coder == "ssd":
            xy = editor.op("Add", [editor.op("Mul", [first, editor.const(anchor_wh * np.float32(head.variances[0]),
                                                                          "anchor_wh_scaled")], "decode_dxy"),
                                   editor.const(anchor_xy, "anchor_xy")], "decode_xy")
            size = editor.op("Mul", [second, editor.const(np.float32(head.variances[1]), "size_variance")], "decode_dwh")
            if head.wh_clamp is not None:
                size = editor.op("Min", [size, editor.const(np.float32(head.wh_clamp), "wh_clamp")], "decode_dwh_clamped")
            wh = editor.op("Mul", [editor.op("Exp", [size], "decode_exp_wh"), editor.const(anchor_wh, "anchor_wh")],
                           "decode_wh")
            half = editor.op("Mul", [wh, editor.const(np.float32(0.5), "half")], "decode_half_wh")
            top_left = editor.op("Sub", [xy, half], "decode_top_left")
            bottom_right = editor.op("Add", [xy, half], "decode_bottom_right")
        else:  # linear (FCOS): distances from the anchor's centre in units of its size
            wh_const = editor.const(anchor_wh, "anchor_wh")
            centre = editor.const(anchor_xy, "anchor_xy")
            top_left = editor.op("Sub", [centre, editor.op("Mul", [first, wh_const], "decode_left_top")],
                                 "decode_top_left")
            bottom_right = editor.op("Add", [centre, editor.op("Mul", [second, wh_const], "decode_right_bottom")],
                                     "decode_bottom_right")
        boxes = editor.op("Concat", [top_left, bottom_right], "decoded_boxes", axis=-1)
    else:
        boxes = "boxes"
        if head.coder == "cxcywh":
            xy, wh = editor.op("Split", [boxes, editor.const(np.array([2, 2], np.int64), "boxes_split")],
                               "boxes_cxcy", num_outputs=2, axis=-1)
            half = editor.op("Mul", [wh, editor.const(np.float32(0.5), "half")], "boxes_half_wh")
            boxes = editor.op("Concat", [editor.op("Sub", [xy, half], "boxes_top_left"),
                                         editor.op("Add", [xy, half], "boxes_bottom_right")], "boxes_xyxy", axis=-1)
        if head.box_units == "pixels":
            scale = np.array([1 / width, 1 / height, 1 / width, 1 / height], np.float32)
            boxes = editor.op("Mul", [boxes, editor.const(scale, "pixels_to_normalized")], "boxes_normalized")
    if head.clip:
        boxes = editor.op("Clip", [boxes, editor.const(np.float32(0.0), "box_min"), editor.const(np.float32(1.0), "box_max")],
                          "clipped_boxes")
    return boxes


def per_class_topk(editor: GraphEditor, scores: str, topk: int, count: int) -> str:
    """torchvision's SSD: only each class's top ``topk`` anchors stay candidates; the other
    scores become 0 (below any threshold). Tensor[B, N, C] -> Tensor[B, N, C]."""
    per_class = editor.op("Transpose", [scores], "scores_by_class", perm=[0, 2, 1])  # [B, C, N]
    top, index = editor.op("TopK", [per_class, editor.const(np.array([min(topk, count)], np.int64), "class_topk")],
                           "class_topk", num_outputs=2, axis=-1, largest=1, sorted=1)
    zeros = editor.op("Mul", [per_class, editor.const(np.float32(0.0), "zero")], "class_zeros")
    kept = editor.op("ScatterElements", [zeros, index, top], "class_topk_scores", axis=-1)
    return editor.op("Transpose", [kept], "candidate_scores", perm=[0, 2, 1])


def per_level_candidates(editor: GraphEditor, boxes: str, scores: str, levels: Sequence[int], topk: int,
                         first: int, width: int) -> tuple[str, str, int]:
    """torchvision's RetinaNet/FCOS: per feature level, the top ``topk`` (anchor, column) pairs
    over every score column (``width`` of them, the background one included, as torchvision
    does); each becomes a candidate box with a one-hot score row over the output classes
    (columns ``first``.. ``width`` - 1).

    Returns (boxes Tensor[B, M, 4], scores Tensor[B, M, C], M)."""
    flat_shape = editor.const(np.array([0, -1], np.int64), "level_flat_shape")
    last = editor.const(np.array([-1], np.int64), "last_axis")
    cand_boxes, cand_scores, cand_labels, total = [], [], [], 0
    start = 0
    for level, size in enumerate(levels):
        part = editor.op("Slice", [scores, editor.const(np.array([start], np.int64), f"level{level}_start"),
                                   editor.const(np.array([start + size], np.int64), f"level{level}_end"),
                                   editor.const(np.array([1], np.int64), f"level{level}_axis")], f"level{level}_scores")
        flat = editor.op("Reshape", [part, flat_shape], f"level{level}_flat")
        k = min(topk, size * width)
        top, index = editor.op("TopK", [flat, editor.const(np.array([k], np.int64), f"level{level}_k")],
                               f"level{level}_topk", num_outputs=2, axis=-1, largest=1, sorted=1)
        width_const = editor.const(np.array(width, np.int64), f"level{level}_columns")
        anchor = editor.op("Add", [editor.op("Div", [index, width_const], f"level{level}_anchor_local"),
                                   editor.const(np.array(start, np.int64), f"level{level}_offset")], f"level{level}_anchor")
        label = editor.op("Mod", [index, width_const], f"level{level}_label")
        cand_boxes.append(editor.op("GatherND", [boxes, editor.op("Unsqueeze", [anchor, last], f"level{level}_anchor_col")],
                                    f"level{level}_boxes", batch_dims=1))
        cand_scores.append(top)
        cand_labels.append(label)
        total += k
        start += size
    boxes_all = editor.op("Concat", cand_boxes, "candidate_boxes", axis=1)
    top_all = editor.op("Concat", cand_scores, "candidate_top", axis=1)
    labels_all = editor.op("Concat", cand_labels, "candidate_labels", axis=1)
    classes = editor.const(np.arange(first, width, dtype=np.int64)[None, None], "candidate_classes")
    one_hot = editor.op("Equal", [editor.op("Unsqueeze", [labels_all, last], "candidate_label_col"), classes],
                        "candidate_one_hot")
    scores_all = editor.op("Where", [one_hot, editor.op("Unsqueeze", [top_all, last], "candidate_top_col"),
                                     editor.const(np.float32(0.0), "zero_score_value")], "candidate_scores")
    return boxes_all, scores_all, total


def efficient_nms_decoded(editor: GraphEditor, boxes: str, scores: str, config: NmsConfig) -> tuple[str, ...]:
    """``EfficientNMS_TRT`` on boxes already decoded and clipped (box_coding = 0, no anchors):
    the plugin's own decoder has no size clamp and no clip, which torchvision's coders have."""
    from trt_plugins.efficient_nms import EFFICIENT_NMS

    node = EFFICIENT_NMS.make_node(
        inputs=[boxes, scores], outputs=list(DETECTION_OUTPUTS), name=editor.fresh("efficient_nms"),
        score_threshold=float(config.score_threshold), iou_threshold=float(config.iou_threshold),
        max_output_boxes=int(config.max_detections), background_class=-1, score_activation=0,
        class_agnostic=0, box_coding=0,
    )
    editor.append_node(node)
    editor.ensure_opset(EFFICIENT_NMS.domain, 1)
    return DETECTION_OUTPUTS
