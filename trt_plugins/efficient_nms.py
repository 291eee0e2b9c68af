"""EfficientNMS_TRT (plugin_version "1"): its node contract and a numpy reference kernel.

Sources: NVIDIA/TensorRT ``plugin/efficientNMSPlugin/`` (README.md,
efficientNMSPlugin.cpp, efficientNMSInference.cu/.cuh, efficientNMSParameters.h,
EfficientNMSPlugin_PluginConfig.yaml). Where the README and the code disagree,
the code wins; each such choice is noted where it is implemented.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from .contracts import AttributeSpec, PluginContract, TensorSpec

_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)
_INT32 = (TensorProto.INT32,)

EFFICIENT_NMS = PluginContract(
    op_type="EfficientNMS_TRT",
    plugin_version="1",
    domain="TRT",
    inputs=(
        # [B, N, 4], or [B, N, C, 4] with one box per class (or [B, N, 1, 4]).
        TensorSpec("boxes", _FLOATS, (3, 4)),
        # [B, N, C]
        TensorSpec("scores", _FLOATS, 3),
        # [1 or B, N, 4]; present = fused box decoder on.
        TensorSpec("anchors", _FLOATS, 3, optional=True),
    ),
    outputs=(
        TensorSpec("num_detections", _INT32, 2),  # [B, 1]
        # Boxes and scores follow the input dtype (getOutputDataType); float32 for float32 graphs.
        TensorSpec("detection_boxes", _FLOATS, 3),  # [B, K, 4]
        TensorSpec("detection_scores", _FLOATS, 2),  # [B, K]
        TensorSpec("detection_classes", _INT32, 2),  # [B, K]
    ),
    # Required set, types and bounds: EfficientNMSPluginCreator::createPlugin and the
    # PluginConfig yaml. Defaults: EfficientNMSParameters.
    attributes=(
        AttributeSpec("score_threshold", "float", True, 0.5, min=0.0),
        AttributeSpec("iou_threshold", "float", True, 0.5, min=0.0, min_exclusive=True),
        AttributeSpec("max_output_boxes", "int", True, 100, min=1),
        AttributeSpec("background_class", "int", True, -1),
        AttributeSpec("score_activation", "int", True, 0, allowed=(0, 1)),
        AttributeSpec("class_agnostic", "int", False, 0, allowed=(0, 1)),
        AttributeSpec("box_coding", "int", True, 0, allowed=(0, 1)),
    ),
    doc=(
        "Batched NMS with optional fused box decoding. Outputs num_detections [B,1] int32, "
        "detection_boxes [B,K,4] (corners, input coordinate order), detection_scores [B,K], "
        "detection_classes [B,K] int32, K = max_output_boxes."
    ),
)

# Candidates that enter the NMS kernel per image (a pre-NMS top-k with no attribute to set
# it). README, "Process Description": "After sorting, the highest 4096 scores are processed
# by the EfficientNMS CUDA kernel" (https://github.com/NVIDIA/TensorRT/blob/main/plugin/
# efficientNMSPlugin/README.md). The code: EfficientNMSPlugin::initialize() sets
# numSelectedBoxes = 5000 on every GPU with >= 64K registers per block, 2000 on Jetson
# TX1/TX2 (4096 is the struct default in efficientNMSParameters.h, which older releases
# kept); the EfficientNMS kernel visits min(candidates, numSelectedBoxes) boxes. NVIDIA
# calls it a hard-coded limitation (NVIDIA/TensorRT issues #2206, #3000). Consequence: when
# more than this many scores pass score_threshold and NMS suppresses enough of the top
# ones, fewer than max_output_boxes come out although an uncapped NMS (PyTorch, ONNX
# NonMaxSuppression) would fill every slot. See candidates_needed().
CANDIDATE_LIMIT = 5000
JETSON_TX_CANDIDATE_LIMIT = 2000
# EfficientNMSFilterLauncher: below this threshold the "dense" path sorts every score and
# replaces rejected ones by DENSE_REJECTED_SCORE instead of dropping them.
DENSE_PATH_THRESHOLD = 0.007
DENSE_REJECTED_SCORE = -32768.0  # -(1 << 15)


def _reorder_corners(boxes: np.ndarray) -> np.ndarray:
    """BoxCorner::reorder: swap coordinates so column 0 <= 2 and 1 <= 3.

    The plugin swaps with add/sub arithmetic (a = p - q; q' = a + q; p' = q' - a), so the
    swapped values can differ from the originals by a rounding; mirrored in float32.

    boxes (ndarray[M, 4]) float32 in corner coding, any coordinate order -> ndarray[M, 4].
    """
    out = boxes.copy()
    for lo, hi in ((0, 2), (1, 3)):
        p, q = boxes[:, lo], boxes[:, hi]
        swap = p > q
        diff = p - q
        new_hi = diff + q
        new_lo = new_hi - diff
        out[:, lo] = np.where(swap, new_lo, p)
        out[:, hi] = np.where(swap, new_hi, q)
    return out


def _center_to_corners(boxes: np.ndarray) -> np.ndarray:
    """BoxCenterSize -> BoxCorner: (c0, c1, s0, s1) -> (c0 - s0/2, c1 - s1/2, c0 + s0/2, c1 + s1/2).

    boxes (ndarray[M, 4]) float32 as (cx, cy, w, h) or (cy, cx, h, w) -> ndarray[M, 4] corners
    in the same coordinate order.
    """
    half = boxes[:, 2:] * np.float32(0.5)
    return np.concatenate((boxes[:, :2] - half, boxes[:, :2] + half), axis=1)


def decode_boxes(boxes: np.ndarray, anchors: np.ndarray | None, box_coding: int) -> np.ndarray:
    """The plugin's DecodeBoxes: raw box (and anchor) -> corner box.

    Without anchors the box is only converted to corners. With anchors (fused decoder):
      box_coding 0: reorder(box) + reorder(anchor), elementwise;
      box_coding 1: xy = box_xy * anchor_wh + anchor_xy, wh = anchor_wh * exp(box_wh),
                    then converted to corners. No variances: scale offsets in the graph.

    Args:
        boxes (ndarray[M, 4]) float32: boxes or deltas in the ``box_coding`` format.
        anchors (ndarray[M, 4]) float32 or None: one anchor per box, same coding.
        box_coding: 0 = corners (x1, y1, x2, y2), 1 = center-size (cx, cy, w, h);
            (y, x) first orders work the same way and are kept.
    Returns:
        ndarray[M, 4] float32 corners, in the input's coordinate order.
    """
    if anchors is None:
        return boxes.copy() if box_coding == 0 else _center_to_corners(boxes)
    if box_coding == 0:
        return _reorder_corners(boxes) + _reorder_corners(anchors)
    with np.errstate(over="ignore"):
        size = anchors[:, 2:] * np.exp(boxes[:, 2:])
    center = boxes[:, :2] * anchors[:, 2:] + anchors[:, :2]
    return _center_to_corners(np.concatenate((center, size), axis=1))


def _corner_area(boxes: np.ndarray) -> np.ndarray:
    """BoxCorner::area: (c2 - c0) * (c3 - c1), 0 when either side is <= 0. boxes (ndarray[M, 4]) -> [M]."""
    h = boxes[:, 2] - boxes[:, 0]
    w = boxes[:, 3] - boxes[:, 1]
    return np.where((h > 0) & (w > 0), h * w, np.float32(0))


def _pairwise_iou(boxes1: np.ndarray, areas1: np.ndarray, boxes2: np.ndarray, areas2: np.ndarray) -> np.ndarray:
    """The plugin's IOU for every pair, in float32 (the formula is symmetric, bit for bit).

    Args:
        boxes1 (ndarray[P, 4]), areas1 (ndarray[P]): reordered corner boxes and their _corner_area.
        boxes2 (ndarray[Q, 4]), areas2 (ndarray[Q]): the same for the other side.
    Returns:
        ndarray[P, Q] float32; 0 where the intersection or the union is empty.
    """
    low = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    high = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    h = high[..., 0] - low[..., 0]
    w = high[..., 1] - low[..., 1]
    inter = np.where((h > 0) & (w > 0), h * w, np.float32(0))
    union = (areas1[:, None] + areas2[None, :]) - inter
    ok = (inter > 0) & (union > 0)
    return np.where(ok, inter / np.where(ok, union, np.float32(1)), np.float32(0))


def _suppression(
    boxes1: np.ndarray,
    areas1: np.ndarray,
    classes1: np.ndarray,
    boxes2: np.ndarray,
    areas2: np.ndarray,
    classes2: np.ndarray,
    iou_threshold: np.float32,
    class_agnostic: bool,
) -> np.ndarray:
    """ndarray[P, Q] bool: candidate p, if kept, suppresses candidate q (IoU >= threshold, same class)."""
    hit = _pairwise_iou(boxes1, areas1, boxes2, areas2) >= iou_threshold
    if not class_agnostic:
        hit &= classes1[:, None] == classes2[None, :]
    return hit


def _greedy_nms(
    boxes: np.ndarray,
    classes: np.ndarray,
    iou_threshold: np.float32,
    max_keep: int,
    class_agnostic: bool,
    chunk: int = 256,
) -> np.ndarray:
    """Greedy NMS over candidates already sorted by descending score (the EfficientNMS kernel).

    A kept candidate suppresses every later candidate of its class (any class if
    ``class_agnostic``) with IoU >= iou_threshold; stops after ``max_keep`` kept. The
    kernel also requires score_later <= score_kept, always true after the sort.

    Candidates are visited in chunks so that the work stops soon after ``max_keep``
    boxes are kept: each chunk is first pruned by the boxes kept before it, then
    resolved in order with its own IoU matrix.

    Args:
        boxes (ndarray[M, 4]) float32 corners; classes (ndarray[M]) int.
    Returns:
        ndarray[k] int64: kept candidate positions, in order, k <= max_keep.
    """
    keep: list[int] = []
    if max_keep <= 0:
        return np.asarray(keep, dtype=np.int64)
    boxes = _reorder_corners(boxes)
    areas = _corner_area(boxes)
    for start in range(0, len(boxes), chunk):
        part = slice(start, start + chunk)
        here = (boxes[part], areas[part], classes[part])
        alive = np.ones(len(here[0]), dtype=bool)
        if keep:
            kept = np.asarray(keep)
            before = (boxes[kept], areas[kept], classes[kept])
            alive &= ~_suppression(*before, *here, iou_threshold, class_agnostic).any(axis=0)
        # Row r: what candidate r suppresses among the later ones of this chunk.
        within = np.triu(_suppression(*here, *here, iou_threshold, class_agnostic), k=1)
        for r in range(len(alive)):
            if not alive[r]:
                continue
            keep.append(start + r)
            if len(keep) == max_keep:
                return np.asarray(keep, dtype=np.int64)
            alive &= ~within[r]
    return np.asarray(keep, dtype=np.int64)


def _comparison_thresholds(score_threshold: float, score_activation: bool) -> tuple[np.float32, np.float32]:
    """(score threshold, dense-path switch) in the space the scores are compared in.

    With score_activation the plugin compares raw logits: both thresholds go through
    logit(t) = log(t / (1 - t)), and t <= 0 becomes -32768 (EfficientNMSFilterLauncher).
    """
    threshold = np.float32(score_threshold)
    dense_switch = np.float32(DENSE_PATH_THRESHOLD)
    if not score_activation:
        return threshold, dense_switch
    one = np.float32(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        logit = np.log(threshold / (one - threshold)) if threshold > 0 else np.float32(DENSE_REJECTED_SCORE)
    return np.float32(logit), np.float32(np.log(dense_switch / (one - dense_switch)))


def _sorted_candidates(
    scores: np.ndarray, threshold: np.float32, dense: bool, background_class: int, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Filter and sort one image's scores (EfficientNMSFilter / DenseIndex + radix sort).

    Args:
        scores (ndarray[N, C]) float32, compared as given (logits with score_activation).
    Returns:
        (flat indices anchor * C + class, their scores), both ndarray[M], M <= limit,
        sorted by descending score, ties by ascending flat index.
    """
    num_classes = scores.shape[1]
    flat = scores.reshape(-1)
    passed = flat >= threshold
    if 0 <= background_class < num_classes:
        passed[background_class::num_classes] = False
    if dense:
        # The dense path keeps every element; rejected ones sort last with score -32768
        # and can still be output when too few real candidates survive NMS.
        index = np.arange(flat.size)
        keys = np.where(passed, flat, np.float32(DENSE_REJECTED_SCORE))
    else:
        index = np.flatnonzero(passed)
        keys = flat[index]
    order = np.argsort(-keys, kind="stable")[:limit]
    return index[order], keys[order]


def _check_shapes(boxes: np.ndarray, scores: np.ndarray, anchors: np.ndarray | None) -> None:
    if scores.ndim != 3:
        raise ValueError(f"scores must be [B, N, C], got {scores.shape}")
    batch, num_boxes, num_classes = scores.shape
    per_class_ok = boxes.ndim == 4 and boxes.shape[2] in (1, num_classes)
    if boxes.shape[:2] != (batch, num_boxes) or boxes.shape[-1] != 4 or not (boxes.ndim == 3 or per_class_ok):
        raise ValueError(f"boxes must be [B, N, 4] or [B, N, C, 4] with scores {scores.shape}, got {boxes.shape}")
    bad_anchors = anchors is not None and (
        anchors.ndim != 3 or anchors.shape[0] not in (1, batch) or anchors.shape[1:] != (num_boxes, 4)
    )
    if bad_anchors:
        raise ValueError(f"anchors must be [1 or B, N, 4] with scores {scores.shape}, got {anchors.shape}")


def efficient_nms_reference(
    boxes: np.ndarray,
    scores: np.ndarray,
    anchors: np.ndarray | None = None,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_output_boxes: int,
    background_class: int = -1,
    score_activation: bool = False,
    class_agnostic: bool = False,
    box_coding: int = 0,
    candidate_limit: int = CANDIDATE_LIMIT,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CPU reference of EfficientNMS_TRT v1 (float32 path), each image of the batch on its own.

    Per image:
      1. score filter ``score >= score_threshold`` (EfficientNMSFilter, gte_mp); with
         score_activation the raw logits are compared with logit(score_threshold);
         the background class is skipped;
      2. below threshold 0.007 the plugin takes its dense path: all N*C scores are
         candidates, rejected ones with score -32768 (they sort last but may be output,
         with score -32768, or 0 after the sigmoid, when too few real boxes survive);
      3. stable sort by descending score, ties by ascending flat index anchor * C + class
         (cub's radix sort is stable; the dense path feeds indices in this order, the
         filter path in atomicAdd order, so on GPU ties there are unordered);
      4. only the top ``candidate_limit`` (5000) candidates are decoded and enter NMS
         (see CANDIDATE_LIMIT: with more candidates than that, fewer than max_output_boxes
         may come out where an uncapped NMS fills every slot; that is the plugin's
         behaviour, mirrored on purpose);
      5. greedy NMS: a kept box suppresses later boxes of its class (all classes if
         class_agnostic) with IoU >= iou_threshold (note: >=, unlike torchvision's >);
         IoU on reordered copies of the boxes, in float32;
      6. the first ``max_output_boxes`` kept, in descending score order; the sigmoid is
         applied to the output scores only.
    Unused output slots are 0 in all three detection outputs, class included (the plugin
    memsets every output to 0 before its kernels run).

    fp16 inputs are computed in float32 here (the plugin computes in half). The GPU's
    __expf and possible FMA contraction can change results by a rounding.

    Args:
        boxes (ndarray[B, N, 4] or [B, N, C, 4]): boxes, or raw deltas when ``anchors`` is
            given, in the ``box_coding`` format; [B, N, C, 4] holds one box per class.
        scores (ndarray[B, N, C]): scores, or logits when ``score_activation``.
        anchors (ndarray[1 or B, N, 4] or None): enables the fused decoder (see decode_boxes).
        box_coding: 0 = (x1, y1, x2, y2), 1 = (cx, cy, w, h); (y, x) first orders also work.
        candidate_limit: candidates entering NMS (2000 mimics Jetson TX1/TX2).
    Returns:
        num_detections (ndarray[B, 1]) int32,
        detection_boxes (ndarray[B, K, 4]) float32 corners in the input's coordinate order,
        detection_scores (ndarray[B, K]) float32,
        detection_classes (ndarray[B, K]) int32, with K = max_output_boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    anchors = None if anchors is None else np.asarray(anchors, dtype=np.float32)
    _check_shapes(boxes, scores, anchors)
    batch = scores.shape[0]
    num_detections = np.zeros((batch, 1), dtype=np.int32)
    out_boxes = np.zeros((batch, max_output_boxes, 4), dtype=np.float32)
    out_scores = np.zeros((batch, max_output_boxes), dtype=np.float32)
    out_classes = np.zeros((batch, max_output_boxes), dtype=np.int32)

    threshold, dense_switch = _comparison_thresholds(score_threshold, bool(score_activation))
    dense = bool(threshold < dense_switch)
    for b in range(batch):
        _, keys, class_idx, decoded, keep = _image_nms(
            boxes, scores, anchors, b, threshold, dense, background_class, candidate_limit,
            iou_threshold, max_output_boxes, class_agnostic, box_coding)
        n = len(keep)
        num_detections[b, 0] = n
        out_boxes[b, :n] = decoded[keep]
        out_scores[b, :n] = _sigmoid(keys[keep]) if score_activation else keys[keep]
        out_classes[b, :n] = class_idx[keep]
    return num_detections, out_boxes, out_scores, out_classes


def candidates_needed(
    boxes: np.ndarray,
    scores: np.ndarray,
    anchors: np.ndarray | None = None,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_output_boxes: int,
    background_class: int = -1,
    score_activation: bool = False,
    class_agnostic: bool = False,
    box_coding: int = 0,
) -> np.ndarray:
    """Per image, how many sorted score candidates an uncapped NMS visits to keep
    ``max_output_boxes`` boxes (all of them when fewer survive).

    EfficientNMS_TRT gives the uncapped answer exactly when this is <= its candidate limit
    (CANDIDATE_LIMIT, JETSON_TX_CANDIDATE_LIMIT on Jetson TX1/TX2); above it, it returns
    fewer or other boxes. Same arguments as :func:`efficient_nms_reference`.

    Returns:
        ndarray[B] int64.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    anchors = None if anchors is None else np.asarray(anchors, dtype=np.float32)
    _check_shapes(boxes, scores, anchors)
    batch, num_boxes, num_classes = scores.shape
    threshold, dense_switch = _comparison_thresholds(score_threshold, bool(score_activation))
    dense = bool(threshold < dense_switch)
    needed = np.zeros(batch, dtype=np.int64)
    for b in range(batch):
        index, _, _, _, keep = _image_nms(  # uncapped: every candidate may enter NMS
            boxes, scores, anchors, b, threshold, dense, background_class, num_boxes * num_classes,
            iou_threshold, max_output_boxes, class_agnostic, box_coding)
        needed[b] = keep[-1] + 1 if len(keep) == max_output_boxes else len(index)
    return needed


def _image_nms(boxes, scores, anchors, b: int, threshold, dense: bool, background_class: int, candidate_limit: int,
               iou_threshold: float, max_output_boxes: int, class_agnostic, box_coding: int):
    """Image ``b``: its sorted candidates (flat index, score key, class), their decoded boxes and
    the positions NMS keeps, in the order the plugin visits them."""
    num_classes = scores.shape[2]
    index, keys = _sorted_candidates(scores[b], threshold, dense, background_class, candidate_limit)
    anchor_idx, class_idx = np.divmod(index, num_classes)
    per_class_boxes = boxes.ndim == 4 and boxes.shape[2] > 1
    raw = boxes[b, anchor_idx, class_idx] if per_class_boxes else boxes[b].reshape(-1, 4)[anchor_idx]
    anchor = None if anchors is None else anchors[0 if anchors.shape[0] == 1 else b, anchor_idx]
    decoded = decode_boxes(raw, anchor, box_coding)
    keep = _greedy_nms(decoded, class_idx, np.float32(iou_threshold), max_output_boxes, bool(class_agnostic))
    return index, keys, class_idx, decoded, keep


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """sigmoid_mp: 1 / (1 + exp(-x)) in float32 (exp overflow gives 0, as on GPU)."""
    with np.errstate(over="ignore"):
        return np.float32(1) / (np.float32(1) + np.exp(-x))
