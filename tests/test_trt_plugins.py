"""TensorRT plugin contracts, the EfficientNMS_TRT reference kernel and its ONNX Runtime op."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper, numpy_helper

from trt_plugins import (
    CANDIDATE_LIMIT,
    EFFICIENT_NMS,
    PLUGINS,
    candidates_needed,
    efficient_nms_reference,
)

GOOD_ATTRS = dict(
    score_threshold=0.25,
    iou_threshold=0.5,
    max_output_boxes=10,
    background_class=-1,
    score_activation=0,
    box_coding=0,
)
OUTPUTS = ["num_detections", "detection_boxes", "detection_scores", "detection_classes"]


# --- contract -------------------------------------------------------------------------


def _raw_node(op_type="EfficientNMS_TRT", inputs=("boxes", "scores"), outputs=OUTPUTS, domain="TRT", **overrides):
    """An EfficientNMS node built without validation; an override of None drops the attribute."""
    attrs = {**GOOD_ATTRS, "plugin_version": "1", **overrides}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    return helper.make_node(op_type, list(inputs), list(outputs), domain=domain, **attrs)


def _tensor_type(elem_type, rank):
    return helper.make_tensor_type_proto(elem_type, [None] * rank)


def _good_value_info(with_anchors=False):
    info = {
        "boxes": _tensor_type(TensorProto.FLOAT, 3),
        "scores": _tensor_type(TensorProto.FLOAT, 3),
        "num_detections": _tensor_type(TensorProto.INT32, 2),
        "detection_boxes": _tensor_type(TensorProto.FLOAT, 3),
        "detection_scores": _tensor_type(TensorProto.FLOAT, 2),
        "detection_classes": _tensor_type(TensorProto.INT32, 2),
    }
    if with_anchors:
        info["anchors"] = _tensor_type(TensorProto.FLOAT, 3)
    return info


def test_registry_holds_efficient_nms():
    assert PLUGINS == {"EfficientNMS_TRT": EFFICIENT_NMS}


@pytest.mark.parametrize("inputs", [("boxes", "scores"), ("boxes", "scores", "anchors")])
def test_good_nodes_have_no_problems(inputs):
    node = _raw_node(inputs=inputs, class_agnostic=1)
    assert EFFICIENT_NMS.check_node(node, _good_value_info(with_anchors=len(inputs) == 3)) == []
    # Optional attributes and plugin_version may be left out.
    assert EFFICIENT_NMS.check_node(_raw_node(inputs=inputs, plugin_version=None)) == []


@pytest.mark.parametrize(
    "kwargs, value_info, expected",
    [
        (dict(op_type="EfficientNMS_ONNX_TRT"), None, "op_type"),
        (dict(domain="ai.onnx.contrib"), None, "domain"),
        (dict(plugin_version="2"), None, "plugin_version is '2'"),
        (dict(iou_threshold=None), None, "missing required attribute iou_threshold"),
        (dict(score_threshold=1), None, "score_threshold has type INT, expected FLOAT"),
        (dict(box_coding=2), None, "box_coding=2 is not one of"),
        (dict(class_agnostic=3), None, "class_agnostic=3 is not one of"),
        (dict(iou_threshold=0.0), None, "iou_threshold=0.0 must be > 0"),
        (dict(score_threshold=-0.1), None, "must be >= 0"),
        (dict(max_output_boxes=0), None, "max_output_boxes=0 must be >= 1"),
        (dict(topk=5), None, "unknown attribute topk"),
        (dict(inputs=("boxes",)), None, "1 inputs"),
        (dict(inputs=("boxes", "scores", "anchors", "extra")), None, "4 inputs"),
        (dict(outputs=OUTPUTS[:3]), None, "3 outputs"),
        (dict(), {"boxes": _tensor_type(TensorProto.INT64, 3)}, "input boxes has dtype INT64"),
        (dict(), {"scores": _tensor_type(TensorProto.FLOAT, 2)}, "input scores has rank 2"),
        (dict(), {"num_detections": _tensor_type(TensorProto.FLOAT, 2)}, "output num_detections has dtype FLOAT"),
        (dict(), {"detection_boxes": _tensor_type(TensorProto.FLOAT, 2)}, "output detection_boxes has rank 2"),
    ],
)
def test_check_node_reports_each_problem(kwargs, value_info, expected):
    problems = EFFICIENT_NMS.check_node(_raw_node(**kwargs), value_info)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_attribute_values_fill_defaults_and_require_required():
    values = EFFICIENT_NMS.attribute_values(_raw_node())
    assert values == {**GOOD_ATTRS, "class_agnostic": 0}
    assert isinstance(values["score_threshold"], float)
    with pytest.raises(ValueError, match="max_output_boxes"):
        EFFICIENT_NMS.attribute_values(_raw_node(max_output_boxes=None))


def test_make_node_coerces_types_and_rejects_bad_values():
    node = EFFICIENT_NMS.make_node(["b", "s"], OUTPUTS, name="nms", **{**GOOD_ATTRS, "score_threshold": 0})
    assert node.domain == "TRT"
    assert EFFICIENT_NMS.check_node(node) == []
    attrs = {a.name: a for a in node.attribute}
    assert attrs["score_threshold"].type == onnx.AttributeProto.FLOAT
    assert attrs["plugin_version"].s == b"1"
    with pytest.raises(ValueError, match="box_coding"):
        EFFICIENT_NMS.make_node(["b", "s"], OUTPUTS, **{**GOOD_ATTRS, "box_coding": 2})
    with pytest.raises(ValueError, match="unknown attributes"):
        EFFICIENT_NMS.make_node(["b", "s"], OUTPUTS, topk=3, **GOOD_ATTRS)
    with pytest.raises(ValueError, match="missing required attribute"):
        EFFICIENT_NMS.make_node(["b", "s"], OUTPUTS, score_threshold=0.1)


# --- reference kernel: hand-computed cases ----------------------------------------------


def _nms(boxes, scores, anchors=None, **overrides):
    """efficient_nms_reference on one image given without the batch axis."""
    kwargs = {**GOOD_ATTRS, **overrides}
    boxes = np.asarray(boxes, np.float32)[None]
    scores = np.asarray(scores, np.float32)[None]
    anchors = None if anchors is None else np.asarray(anchors, np.float32)[None]
    num, out_boxes, out_scores, out_classes = efficient_nms_reference(boxes, scores, anchors, **kwargs)
    return int(num[0, 0]), out_boxes[0], out_scores[0], out_classes[0]


def test_output_dtypes_and_shapes():
    num, boxes, scores, classes = efficient_nms_reference(
        np.zeros((2, 5, 4), np.float32), np.zeros((2, 5, 3), np.float32), **GOOD_ATTRS
    )
    assert (num.dtype, boxes.dtype, scores.dtype, classes.dtype) == (np.int32, np.float32, np.float32, np.int32)
    assert (num.shape, boxes.shape, scores.shape, classes.shape) == ((2, 1), (2, 10, 4), (2, 10), (2, 10))


def test_box_coding_1_decodes_center_size_deltas():
    anchor = [[0.5, 0.5, 0.2, 0.4]]  # (cx, cy, w, h)
    delta = [[1.0, -0.5, np.log(2.0), 0.0]]
    num, boxes, _, _ = _nms(delta, [[0.9]], anchor, box_coding=1)
    # center (0.5 + 1 * 0.2, 0.5 - 0.5 * 0.4) = (0.7, 0.3), size (0.2 * 2, 0.4 * 1)
    assert num == 1
    np.testing.assert_allclose(boxes[0], [0.5, 0.1, 0.9, 0.5], atol=1e-6)


def test_box_coding_1_without_anchors_converts_to_corners():
    num, boxes, _, _ = _nms([[0.5, 0.5, 0.2, 0.4]], [[0.9]], box_coding=1)
    assert num == 1
    np.testing.assert_allclose(boxes[0], [0.4, 0.3, 0.6, 0.7], atol=1e-7)


def test_box_coding_0_decode_adds_reordered_corners():
    num, boxes, _, _ = _nms([[0.01, -0.02, 0.03, 0.04]], [[0.9]], [[0.1, 0.2, 0.5, 0.6]])
    assert num == 1
    np.testing.assert_allclose(boxes[0], [0.11, 0.18, 0.53, 0.64], atol=1e-7)
    # DecodeBoxes reorders the delta like a box first: (0.3, 0, 0.1, 0) acts as (0.1, 0, 0.3, 0).
    _, boxes, _, _ = _nms([[0.3, 0.0, 0.1, 0.0]], [[0.9]], [[0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_allclose(boxes[0], [0.1, 0.0, 1.3, 1.0], atol=1e-7)


def test_output_boxes_keep_input_coordinate_order_and_orientation():
    # Inverted corners are reordered for the IoU only, never in the output.
    num, boxes, _, _ = _nms([[0.6, 0.7, 0.1, 0.2]], [[0.9]])
    assert num == 1
    np.testing.assert_array_equal(boxes[0], np.float32([0.6, 0.7, 0.1, 0.2]))


def test_score_threshold_is_inclusive():
    boxes = [[0, 0, 1, 1], [2, 2, 3, 3]]
    below = np.nextafter(np.float32(0.5), np.float32(0))
    num, _, scores, _ = _nms(boxes, [[0.5], [below]], score_threshold=0.5)
    assert num == 1
    assert scores[0] == np.float32(0.5)


def test_iou_equal_to_threshold_suppresses():
    boxes = [[0, 0, 2, 1], [0, 0, 1, 1]]  # IoU exactly 1/2
    assert _nms(boxes, [[0.9], [0.8]], iou_threshold=0.5)[0] == 1
    assert _nms(boxes, [[0.9], [0.8]], iou_threshold=0.51)[0] == 2


def test_background_class_is_skipped_and_class_ids_are_not_shifted():
    scores = [[0.6, 0.95, 0.0], [0.0, 0.9, 0.7]]
    boxes = [[0, 0, 1, 1], [2, 2, 3, 3]]
    num, _, out_scores, classes = _nms(boxes, scores, background_class=1)
    assert num == 2
    np.testing.assert_array_equal(classes[:2], [2, 0])
    np.testing.assert_array_equal(out_scores[:2], np.float32([0.7, 0.6]))


def test_class_agnostic_suppresses_across_classes():
    boxes = [[0, 0, 1, 1], [0, 0, 1, 0.9]]  # IoU 0.9
    scores = [[0.9, 0.0], [0.0, 0.8]]
    num, _, _, classes = _nms(boxes, scores)
    assert num == 2 and list(classes[:2]) == [0, 1]
    num, _, out_scores, classes = _nms(boxes, scores, class_agnostic=1)
    assert num == 1 and classes[0] == 0 and out_scores[0] == np.float32(0.9)


def test_score_activation_thresholds_logits_and_outputs_sigmoid():
    boxes = [[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]]
    logits = [[2.0], [-0.1], [0.0]]  # score_threshold 0.5 is logit 0
    num, _, scores, _ = _nms(boxes, logits, score_threshold=0.5, score_activation=1)
    assert num == 2
    np.testing.assert_allclose(scores[:2], [1 / (1 + np.exp(-2.0)), 0.5], rtol=1e-6)


def test_equal_scores_keep_flat_index_order():
    boxes = [[0, 0, 1, 1], [2, 2, 3, 3]]
    scores = [[0.0, 0.7], [0.7, 0.7]]  # flat indices 1, 2, 3 tie
    num, out_boxes, _, classes = _nms(boxes, scores)
    assert num == 3
    np.testing.assert_array_equal(classes[:3], [1, 0, 1])
    np.testing.assert_array_equal(out_boxes[:3, 0], [0, 2, 2])
    # Enough ties for an unstable sort to show: 64 disjoint boxes on three score levels.
    n = 64
    left = np.arange(n, dtype=np.float32)[:, None] * 2
    many = np.concatenate((left, np.zeros_like(left), left + 1, np.ones_like(left)), axis=1)
    levels = np.random.default_rng(0).choice(np.float32([0.4, 0.6, 0.8]), size=(n, 1))
    num, out_boxes, _, _ = _nms(many, levels, max_output_boxes=n)
    assert num == n
    np.testing.assert_array_equal(out_boxes[:, 0] / 2, np.argsort(-levels[:, 0], kind="stable"))


def test_per_class_boxes_and_per_image_anchors():
    # boxes [B, N, C, 4]: each class has its own box.
    per_class = np.float32([[[[0, 0, 1, 1], [5, 5, 6, 6]]]])
    num, boxes, _, classes = efficient_nms_reference(per_class, np.float32([[[0.9, 0.8]]]), **GOOD_ATTRS)
    assert num[0, 0] == 2
    np.testing.assert_array_equal(boxes[0, :2], per_class[0, 0])
    # anchors [B, N, 4]: each image decodes with its own anchors.
    anchors = np.float32([[[0, 0, 1, 1]], [[3, 3, 4, 4]]])
    deltas, scores = np.zeros((2, 1, 4), np.float32), np.full((2, 1, 1), 0.9, np.float32)
    _, boxes, _, _ = efficient_nms_reference(deltas, scores, anchors, **GOOD_ATTRS)
    np.testing.assert_array_equal(boxes[:, 0], anchors[:, 0])


def test_unused_slots_are_zero():
    boxes = [[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]]
    num, out_boxes, scores, classes = _nms(boxes, [[0.3, 0.9], [0.8, 0.1]], max_output_boxes=6)
    assert num == 3
    assert not out_boxes[num:].any() and not scores[num:].any() and not classes[num:].any()
    assert scores[:num].all()


def test_only_candidate_limit_boxes_enter_nms():
    # Disjoint boxes: nothing is suppressed, so the candidate limit alone caps the output.
    n = CANDIDATE_LIMIT + 3
    corner = np.arange(n, dtype=np.float32)[:, None] * 2
    boxes = np.concatenate((corner, np.zeros_like(corner), corner + 1, np.ones_like(corner)), axis=1)
    scores = np.linspace(0.9, 0.3, n, dtype=np.float32)[:, None]
    num, _, out_scores, _ = _nms(boxes, scores, max_output_boxes=n)
    assert num == CANDIDATE_LIMIT == 5000
    assert out_scores[num - 1] == scores[CANDIDATE_LIMIT - 1, 0]
    assert _nms(boxes[:5], scores[:5], max_output_boxes=5, candidate_limit=2)[0] == 2


def test_candidates_needed_counts_sorted_candidates_up_to_the_last_kept_box():
    # Candidates by score: A (0.9), A' (0.8, suppressed by A), B (0.7), C (0.6), D (0.1, below threshold).
    boxes = [[0, 0, 1, 1], [0, 0, 1, 1.01], [2, 2, 3, 3], [4, 4, 5, 5], [6, 6, 7, 7]]
    scores = [[0.9], [0.8], [0.7], [0.6], [0.1]]
    args = (np.float32(boxes)[None], np.float32(scores)[None])
    kwargs = dict(score_threshold=0.25, iou_threshold=0.5)
    assert candidates_needed(*args, max_output_boxes=2, **kwargs).tolist() == [3]
    assert candidates_needed(*args, max_output_boxes=3, **kwargs).tolist() == [4]
    # Fewer survivors than max_output_boxes: every candidate is visited.
    assert candidates_needed(*args, max_output_boxes=9, **kwargs).tolist() == [4]
    # The plugin gives the uncapped answer exactly when its limit covers that many candidates.
    full = _nms(boxes, scores, max_output_boxes=3, **kwargs)
    assert _nms(boxes, scores, max_output_boxes=3, candidate_limit=4, **kwargs)[0] == full[0] == 3
    assert _nms(boxes, scores, max_output_boxes=3, candidate_limit=3, **kwargs)[0] == 2


def test_dense_path_below_0_007_outputs_rejected_candidates():
    boxes = [[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]]
    scores = [[0.9], [0.0005], [0.0002]]
    assert _nms(boxes, scores, score_threshold=0.01)[0] == 1
    # Below 0.007 the plugin sorts every score, rejected ones as -32768, and NMS keeps them.
    num, _, out_scores, _ = _nms(boxes, scores, score_threshold=0.001)
    assert num == 3
    np.testing.assert_array_equal(out_scores[:3], np.float32([0.9, -32768, -32768]))
    logits = np.log(np.float32(scores) / (1 - np.float32(scores)))
    num, _, out_scores, _ = _nms(boxes, logits, score_threshold=0.001, score_activation=1)
    assert num == 3
    np.testing.assert_allclose(out_scores[:3], [0.9, 0, 0], atol=1e-6)


# --- reference kernel vs torchvision ------------------------------------------------------


def _random_batch(seed, batch=3, num_boxes=300, num_classes=4):
    """boxes (ndarray[B, N, 4]) in (x1, y1, x2, y2) and scores (ndarray[B, N, C]), different per image."""
    rng = np.random.default_rng(seed)
    top_left = rng.random((batch, num_boxes, 2), dtype=np.float32)
    size = rng.random((batch, num_boxes, 2), dtype=np.float32) * 0.3 + 0.01
    boxes = np.concatenate((top_left, top_left + size), axis=-1)
    scores = rng.random((batch, num_boxes, num_classes), dtype=np.float32)
    return boxes, scores


def _torchvision_nms(boxes, scores, score_threshold, iou_threshold, max_output_boxes, class_agnostic):
    """One image: (boxes [k, 4], scores [k], classes [k]) from torchvision NMS."""
    anchor_idx, class_idx = np.nonzero(scores >= np.float32(score_threshold))
    cand_boxes = torch.from_numpy(boxes[anchor_idx])
    cand_scores = torch.from_numpy(scores[anchor_idx, class_idx])
    if class_agnostic:
        keep = torchvision.ops.nms(cand_boxes, cand_scores, iou_threshold)
    else:
        keep = torchvision.ops.batched_nms(cand_boxes, cand_scores, torch.from_numpy(class_idx), iou_threshold)
    keep = keep[:max_output_boxes].numpy()
    return boxes[anchor_idx[keep]], scores[anchor_idx[keep], class_idx[keep]], class_idx[keep]


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_matches_torchvision_per_image(class_agnostic):
    boxes, scores = _random_batch(seed=7)
    attrs = dict(score_threshold=0.3, iou_threshold=0.5, max_output_boxes=60, class_agnostic=class_agnostic)
    num, out_boxes, out_scores, out_classes = efficient_nms_reference(boxes, scores, **attrs)
    for b in range(len(boxes)):
        exp_boxes, exp_scores, exp_classes = _torchvision_nms(boxes[b], scores[b], **attrs)
        n = num[b, 0]
        assert n == len(exp_scores)
        np.testing.assert_array_equal(out_boxes[b, :n], exp_boxes)
        np.testing.assert_array_equal(out_scores[b, :n], exp_scores)
        np.testing.assert_array_equal(out_classes[b, :n], exp_classes)
    # Each image got its own detections.
    assert not np.array_equal(out_boxes[0], out_boxes[1]) and not np.array_equal(out_boxes[1], out_boxes[2])
    if not class_agnostic:
        assert (num[:, 0] == 60).all()  # truncation by max_output_boxes is exercised


# --- ONNX Runtime -----------------------------------------------------------------------

ORT_ATTRS = dict(
    score_threshold=0.2,
    iou_threshold=0.45,
    max_output_boxes=7,
    background_class=0,
    score_activation=0,
    class_agnostic=1,
    box_coding=1,
)


def _nms_model(anchors=None, batch=2, num_boxes=40, num_classes=3, **attrs):
    """A graph with one EfficientNMS_TRT node; anchors, if given, are an initializer."""
    k = attrs["max_output_boxes"]
    inputs = ["boxes", "scores"] + ([] if anchors is None else ["anchors"])
    node = EFFICIENT_NMS.make_node(inputs, OUTPUTS, name="nms", **attrs)
    graph = helper.make_graph(
        [node],
        "efficient_nms",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, num_boxes, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, num_boxes, num_classes]),
        ],
        [
            helper.make_tensor_value_info("num_detections", TensorProto.INT32, [batch, 1]),
            helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, [batch, k, 4]),
            helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, [batch, k]),
            helper.make_tensor_value_info("detection_classes", TensorProto.INT32, [batch, k]),
        ],
        initializer=[] if anchors is None else [numpy_helper.from_array(anchors, "anchors")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("TRT", 1)])


def _ort_case(with_anchors):
    """(model, feeds, anchors, attrs): non-default attributes that change the result."""
    rng = np.random.default_rng(3)
    batch, num_boxes = 2, 40
    if with_anchors:
        centers = rng.random((1, num_boxes, 2), dtype=np.float32)
        anchors = np.concatenate((centers, np.full_like(centers, 0.3)), axis=-1)
        boxes = rng.normal(0, 0.3, (batch, num_boxes, 4)).astype(np.float32)
        attrs = ORT_ATTRS
    else:
        anchors = None
        boxes = _random_batch(seed=4, batch=batch, num_boxes=num_boxes, num_classes=3)[0]
        attrs = {k: v for k, v in ORT_ATTRS.items() if k != "class_agnostic"}  # optional: filled in
        attrs["box_coding"] = 0
    feeds = {"boxes": boxes, "scores": rng.random((batch, num_boxes, 3), dtype=np.float32)}
    return _nms_model(anchors, batch=batch, num_boxes=num_boxes, **attrs), feeds, anchors, attrs


@pytest.mark.parametrize("with_anchors", [True, False])
def test_onnxruntime_runs_plugin_node_like_reference(with_anchors):
    from trt_plugins import ort as trt_ort

    model, feeds, anchors, attrs = _ort_case(with_anchors)
    onnx.checker.check_model(model, full_check=True)
    session = trt_ort.create_session(model)
    got = session.run(None, feeds)
    expected = efficient_nms_reference(feeds["boxes"], feeds["scores"], anchors, **attrs)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        np.testing.assert_array_equal(g, e)
    # The attributes must have reached the kernel: the plugin defaults give another answer.
    defaults = {k: v.default for k, v in ((s.name, s) for s in EFFICIENT_NMS.attributes)}
    fallback = efficient_nms_reference(feeds["boxes"], feeds["scores"], anchors, **{**defaults, "max_output_boxes": 7})
    assert any(not np.array_equal(g, f) for g, f in zip(got, fallback))
    assert not (got[3][got[2] > 0] == 0).any()  # background_class 0 never reported


def test_rewrite_for_onnxruntime_copies_and_moves_domain():
    from trt_plugins import ort as trt_ort

    model, _, _, _ = _ort_case(with_anchors=False)
    before = model.SerializeToString()
    assert trt_ort.has_plugin_nodes(model)
    rewritten = trt_ort.rewrite_for_onnxruntime(model)
    assert model.SerializeToString() == before
    node = rewritten.graph.node[0]
    assert node.domain == trt_ort.ORT_DOMAIN
    assert {a.name for a in node.attribute} == {s.name for s in EFFICIENT_NMS.attributes}
    assert trt_ort.ORT_DOMAIN in {o.domain for o in rewritten.opset_import}
    assert not trt_ort.has_plugin_nodes(rewritten)
    trt_ort.register_custom_ops()
    trt_ort.register_custom_ops()  # idempotent


def test_rewrite_rejects_invalid_plugin_node():
    from trt_plugins import ort as trt_ort

    model, _, _, _ = _ort_case(with_anchors=False)
    del model.graph.node[0].attribute[:]
    with pytest.raises(ValueError, match="missing required attribute"):
        trt_ort.rewrite_for_onnxruntime(model)


def test_plain_onnxruntime_cannot_run_plugin_node():
    import onnxruntime

    model, _, _, _ = _ort_case(with_anchors=True)
    with pytest.raises(Exception, match="EfficientNMS_TRT"):
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
