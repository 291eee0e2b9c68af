"""Reference post-processing (cvexport/ops/detection.py ``postprocess``) on hand-built head outputs.

The logits are log-probabilities, so softmax gives back exactly the probabilities written here;
zero offsets decode to the anchors themselves.
"""

from __future__ import annotations

import math

import pytest
import torch

from cvexport.ops.detection import NmsConfig, class_scores, postprocess

NUM_CLASSES = 3  # + background at index 0

# Five anchors: 0 and 1 overlap heavily (IoU 0.81), 2, 3, 4 are far from everything.
ANCHORS = torch.tensor(
    [
        [0.10, 0.10, 0.50, 0.50],
        [0.12, 0.12, 0.52, 0.52],
        [0.60, 0.60, 0.90, 0.90],
        [0.60, 0.05, 0.90, 0.35],
        [0.05, 0.60, 0.35, 0.90],
    ],
    dtype=torch.float32,
)
N = ANCHORS.shape[0]


def logits_from_probs(rows: dict[int, dict[int, float]], batch_rows: int = N) -> torch.Tensor:
    """{anchor: {object class: probability}} -> logits Tensor[N, C + 1]; background takes the rest."""
    probs = torch.zeros(batch_rows, NUM_CLASSES + 1, dtype=torch.float64)
    probs[:, 0] = 1.0
    for anchor, classes in rows.items():
        for cls, p in classes.items():
            probs[anchor, cls + 1] = p
        probs[anchor, 0] = 1.0 - sum(classes.values())
    return torch.log(probs.clamp(min=1e-12)).float()


def run(per_image: list[dict[int, dict[int, float]]], config: NmsConfig, offsets: torch.Tensor | None = None):
    logits = torch.stack([logits_from_probs(rows) for rows in per_image])
    if offsets is None:
        offsets = torch.zeros(len(per_image), N, 4)
    return postprocess(logits, offsets, ANCHORS, config)


def valid(out, b):
    n = int(out["num_detections"][b, 0])
    return out["detection_boxes"][b, :n], out["detection_scores"][b, :n], out["detection_classes"][b, :n]


CONFIG = NmsConfig(score_threshold=0.25, iou_threshold=0.45, max_detections=10)


def test_class_scores_drop_background():
    probs = class_scores(logits_from_probs({0: {0: 0.7, 2: 0.1}})[None])
    assert probs.shape == (1, N, NUM_CLASSES)
    torch.testing.assert_close(probs[0, 0], torch.tensor([0.7, 0.0, 0.1]), atol=1e-6, rtol=0)


def test_output_contract_shapes_and_dtypes():
    out = run([{0: {0: 0.9}}, {}], NmsConfig(0.25, 0.45, 7))
    assert set(out) == {"num_detections", "detection_boxes", "detection_scores", "detection_classes"}
    assert out["num_detections"].shape == (2, 1) and out["num_detections"].dtype == torch.int32
    assert out["detection_boxes"].shape == (2, 7, 4) and out["detection_boxes"].dtype == torch.float32
    assert out["detection_scores"].shape == (2, 7) and out["detection_scores"].dtype == torch.float32
    assert out["detection_classes"].shape == (2, 7) and out["detection_classes"].dtype == torch.int32


def test_overlapping_boxes_same_class_keep_one():
    out = run([{0: {1: 0.9}, 1: {1: 0.8}}], CONFIG)
    boxes, scores, classes = valid(out, 0)
    assert out["num_detections"].tolist() == [[1]]
    torch.testing.assert_close(boxes, ANCHORS[[0]], atol=1e-6, rtol=0)
    torch.testing.assert_close(scores, torch.tensor([0.9]), atol=1e-6, rtol=0)
    assert classes.tolist() == [1]


def test_overlap_below_iou_threshold_keeps_both():
    # Same two anchors (IoU 0.81) but with an IoU threshold above it: both survive.
    out = run([{0: {1: 0.9}, 1: {1: 0.8}}], NmsConfig(0.25, 0.9, 10))
    assert out["num_detections"].tolist() == [[2]]


def test_same_boxes_different_classes_both_kept():
    # The two overlapping anchors with different classes, and one anchor scoring two classes.
    out = run([{0: {0: 0.6}, 1: {2: 0.7}, 2: {0: 0.4, 1: 0.5}}], CONFIG)
    boxes, scores, classes = valid(out, 0)
    assert out["num_detections"].tolist() == [[4]]
    torch.testing.assert_close(scores, torch.tensor([0.7, 0.6, 0.5, 0.4]), atol=1e-6, rtol=0)
    assert classes.tolist() == [2, 0, 1, 0]
    torch.testing.assert_close(boxes, ANCHORS[[1, 0, 2, 2]], atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "threshold, expected_scores",
    [(0.25, [0.6, 0.3]), (0.35, [0.6]), (0.1, [0.6, 0.3, 0.2]), (0.7, [])],
)
def test_score_threshold_filtering(threshold, expected_scores):
    out = run([{2: {0: 0.6}, 3: {1: 0.3}, 4: {2: 0.2}}], NmsConfig(threshold, 0.45, 10))
    _, scores, _ = valid(out, 0)
    assert out["num_detections"][0, 0] == len(expected_scores)
    torch.testing.assert_close(scores, torch.tensor(expected_scores), atol=1e-6, rtol=0)


def test_top_k_truncation_keeps_highest_sorted():
    rows = {0: {0: 0.3}, 2: {0: 0.9}, 3: {1: 0.5}, 4: {2: 0.7}}
    out = run([rows], NmsConfig(0.25, 0.45, 3))
    boxes, scores, classes = valid(out, 0)
    assert out["num_detections"].tolist() == [[3]]
    torch.testing.assert_close(scores, torch.tensor([0.9, 0.7, 0.5]), atol=1e-6, rtol=0)
    assert classes.tolist() == [0, 2, 1]
    torch.testing.assert_close(boxes, ANCHORS[[2, 4, 3]], atol=1e-6, rtol=0)


# Padding contract (docstring of postprocess and the nms_onnx graph section): rows past
# num_detections are all zeros, class included, as TensorRT's EfficientNMS writes them.
PAD_CLASS = 0


def test_padding_rows_are_all_zero():
    out = run([{2: {1: 0.8}, 3: {2: 0.6}}], CONFIG)
    n = int(out["num_detections"][0, 0])
    assert n == 2
    assert out["detection_classes"][0, :n].tolist() == [1, 2]
    assert (out["detection_boxes"][0, n:] == 0).all()
    assert (out["detection_scores"][0, n:] == 0).all()
    assert (out["detection_classes"][0, n:] == PAD_CLASS).all()


def test_no_detections_is_all_padding():
    out = run([{}], CONFIG)
    assert out["num_detections"].tolist() == [[0]]
    assert (out["detection_boxes"] == 0).all()
    assert (out["detection_scores"] == 0).all()
    assert (out["detection_classes"] == PAD_CLASS).all()


def test_each_image_in_batch_gets_its_own_detections():
    per_image = [
        {2: {0: 0.9}},  # image 0: one ellipse
        {},  # image 1: nothing
        {3: {1: 0.8}, 4: {2: 0.6}, 0: {0: 0.5}},  # image 2: three
        {0: {2: 0.7}, 1: {2: 0.65}},  # image 3: two overlapping, NMS leaves one
    ]
    out = run(per_image, CONFIG)
    assert out["num_detections"].flatten().tolist() == [1, 0, 3, 1]
    expected = [
        ([2], [0.9], [0]),
        ([], [], []),
        ([3, 4, 0], [0.8, 0.6, 0.5], [1, 2, 0]),
        ([0], [0.7], [2]),
    ]
    for b, (anchor_idx, exp_scores, exp_classes) in enumerate(expected):
        boxes, scores, classes = valid(out, b)
        torch.testing.assert_close(boxes, ANCHORS[anchor_idx].reshape(-1, 4), atol=1e-6, rtol=0)
        torch.testing.assert_close(scores, torch.tensor(exp_scores), atol=1e-6, rtol=0)
        assert classes.tolist() == exp_classes
        assert (out["detection_classes"][b, len(exp_classes):] == PAD_CLASS).all()
        assert (out["detection_scores"][b, len(exp_classes):] == 0).all()


def test_batch_images_are_independent_of_each_other():
    """Image 1 alone and image 1 next to a busy image 0 give the same answer."""
    busy = {0: {0: 0.9}, 2: {1: 0.8}, 3: {2: 0.7}, 4: {0: 0.6}}
    quiet = {4: {1: 0.55}}
    alone = run([quiet], CONFIG)
    together = run([busy, quiet], CONFIG)
    for key in alone:
        torch.testing.assert_close(together[key][1], alone[key][0])


def test_offsets_are_decoded_per_image():
    # dx = 1 moves the centre by 0.1 * width; dw = log(2) / 0.2 doubles the width.
    offsets = torch.zeros(2, N, 4)
    offsets[1, 2] = torch.tensor([1.0, 0.0, math.log(2.0) / 0.2, 0.0])
    out = run([{2: {0: 0.9}}, {2: {0: 0.9}}], CONFIG, offsets=offsets)
    boxes0, _, _ = valid(out, 0)
    boxes1, _, _ = valid(out, 1)
    torch.testing.assert_close(boxes0, ANCHORS[[2]], atol=1e-6, rtol=0)
    # anchor 2: centre (0.75, 0.75), size 0.3 -> centre x 0.78, width 0.6
    torch.testing.assert_close(boxes1, torch.tensor([[0.48, 0.60, 1.08, 0.90]]), atol=1e-5, rtol=0)


# --- the PyTorch answer vs TensorRT's EfficientNMS_TRT (its CPU reference kernel) ----------

def _plugin_outputs(boxes, scores, config: NmsConfig, **kwargs) -> dict:
    """EfficientNMS_TRT reference kernel on corner boxes [B, N, 4] and probabilities [B, N, C]."""
    import numpy as np

    from trt_plugins import efficient_nms_reference

    names = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
    out = efficient_nms_reference(
        np.asarray(boxes, np.float32), np.asarray(scores, np.float32), score_threshold=config.score_threshold,
        iou_threshold=config.iou_threshold, max_output_boxes=config.max_detections, **kwargs)
    return dict(zip(names, out))


def _candidate_cap_case():
    """5000 near-identical class-0 boxes outscore 40 disjoint class-1 boxes: NMS over all of
    them keeps 1 + 40, but EfficientNMS_TRT only lets its top 5000 candidates into NMS."""
    from trt_plugins import CANDIDATE_LIMIT

    crowd = CANDIDATE_LIMIT
    shift = torch.arange(crowd, dtype=torch.float32)[:, None] * 1e-6
    crowd_boxes = torch.tensor([0.1, 0.1, 0.5, 0.5]) + shift
    grid = torch.arange(40, dtype=torch.float32)
    left, top = (grid % 8) / 8, (grid // 8) / 8
    spread_boxes = torch.stack((left, top, left + 0.1, top + 0.1), dim=-1)
    anchors = torch.cat((crowd_boxes, spread_boxes))
    scores = torch.zeros(1, len(anchors), 2)
    scores[0, :crowd, 0] = torch.linspace(0.95, 0.6, crowd)
    scores[0, crowd:, 1] = torch.linspace(0.55, 0.3, len(spread_boxes))  # distinct: no tie order
    return anchors, scores


def test_efficient_nms_candidate_cap_drops_detections_pytorch_keeps():
    from cvexport.detection import TOLERANCES, DetectionParity
    from cvexport.ops.detection import postprocess_scores

    anchors, scores = _candidate_cap_case()
    config = NmsConfig(score_threshold=0.25, iou_threshold=0.45, max_detections=20)
    offsets = torch.zeros(1, len(anchors), 4)  # the boxes are the anchors themselves
    reference = {k: v.numpy() for k, v in postprocess_scores(scores, offsets, anchors, config).items()}
    assert int(reference["num_detections"][0, 0]) == 20  # every slot filled
    plugin = _plugin_outputs(anchors[None], scores, config)
    assert int(plugin["num_detections"][0, 0]) == 1  # the documented pre-NMS top-5000: the difference is real
    uncapped = _plugin_outputs(anchors[None], scores, config, candidate_limit=len(anchors))
    assert int(uncapped["num_detections"][0, 0]) == 20 and DetectionParity(
        TOLERANCES["fp32"]).add(reference, uncapped).passed()
    for precision, tolerance in TOLERANCES.items():
        parity = DetectionParity(tolerance).add(reference, plugin)
        assert not parity.passed(tolerance), precision
        assert parity.short_images == 1 and "EfficientNMS_TRT" in parity.failures[0]


@pytest.mark.slow
def test_shipped_ssd_val_0_efficient_nms_returns_173_of_200():
    """The issue's settings (--score-threshold 0.01 --max-detections 200, the default NMS IoU 0.35)
    on the first val image where the shipped SSD needs more than the plugin's 5000 candidates
    (image 0 needs 6104, found by searching val in order; at IoU 0.45 earlier checkpoints' were
    images 2212, 1175 and 324): the plugin returns 173."""
    import numpy as np

    from cvexport.detection import TOLERANCES, DetectionParity
    from cvexport.models.detection_data import make_sample
    from cvexport.ops.boxes import CENTER_VARIANCE, SIZE_VARIANCE
    from cvexport.preprocess import to_network_input
    from cvexport.registry import get_spec
    from trt_plugins import CANDIDATE_LIMIT, candidates_needed, efficient_nms_reference

    spec = get_spec("ssd")
    model = spec.load_model()
    contract = {"dtype": "float32", "mean": list(spec.mean), "std": list(spec.std)}
    x = torch.from_numpy(to_network_input([make_sample("val", 0).image], contract))
    config = NmsConfig(score_threshold=0.01, iou_threshold=0.35, max_detections=200)
    with torch.no_grad():
        cls_logits, offsets = model(x)
        reference = {k: v.numpy() for k, v in postprocess(cls_logits, offsets, model.anchors, config).items()}
        scores = class_scores(cls_logits).numpy()
    # What the exported section feeds the plugin (cvexport/export/sections.py efficient_nms).
    a = model.anchors.numpy()
    anchors_cs = np.concatenate(((a[:, :2] + a[:, 2:]) / 2, a[:, 2:] - a[:, :2]), axis=-1)[None]
    deltas = offsets.numpy() * np.float32([CENTER_VARIANCE, CENTER_VARIANCE, SIZE_VARIANCE, SIZE_VARIANCE])
    kwargs = dict(score_threshold=0.01, iou_threshold=0.35, max_output_boxes=200, box_coding=1)
    names = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
    plugin = dict(zip(names, efficient_nms_reference(deltas, scores, anchors_cs, **kwargs)))
    assert int(reference["num_detections"][0, 0]) == 200
    assert int(plugin["num_detections"][0, 0]) == 173
    assert candidates_needed(deltas, scores, anchors_cs, **kwargs)[0] > CANDIDATE_LIMIT
    for precision, tolerance in TOLERANCES.items():
        assert not DetectionParity(tolerance).add(reference, plugin).passed(), precision
