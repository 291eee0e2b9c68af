"""Box operations (cvexport/ops/boxes.py, and the results-side remove_small_boxes) and TinySSD anchors / output shapes, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cvexport.ops.boxes import (
    assign_anchors,
    box_iou,
    center_to_corners,
    clip_boxes,
    corners_to_center,
    decode_offsets,
    encode_offsets,
    multibox_prior,
)
from cvexport.detection import remove_small_boxes

SQRT2 = math.sqrt(2.0)


def t(values):
    return torch.tensor(values, dtype=torch.float32)


# ------------------------------------------------------------------------- multibox_prior
SIZES = (0.2, 0.272)
RATIOS = (1.0, 2.0, 0.5)
# (w, h) per anchor, in the documented order (s1,r1), (s2,r1), (s1,r2), (s1,r3); w = s*sqrt(r), h = s/sqrt(r).
EXPECTED_WH = [
    (0.2, 0.2),
    (0.272, 0.272),
    (0.2 * SQRT2, 0.2 / SQRT2),
    (0.2 / SQRT2, 0.2 * SQRT2),
]


def _expected_anchors(height: int, width: int) -> torch.Tensor:
    rows = []
    for i in range(height):  # row-major over pixels: y outer, x inner
        for j in range(width):
            cx, cy = (j + 0.5) / width, (i + 0.5) / height
            for w, h in EXPECTED_WH:
                rows.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return t(rows)


def test_multibox_prior_2x2_hand_computed():
    anchors = multibox_prior((2, 2), SIZES, RATIOS)
    assert anchors.shape == (2 * 2 * 4, 4)
    assert anchors.dtype == torch.float32
    # First pixel (row 0, col 0) centred at (0.25, 0.25), its four anchors spelled out.
    first = t(
        [
            [0.15, 0.15, 0.35, 0.35],
            [0.114, 0.114, 0.386, 0.386],
            [0.25 - 0.1 * SQRT2, 0.25 - 0.1 / SQRT2, 0.25 + 0.1 * SQRT2, 0.25 + 0.1 / SQRT2],
            [0.25 - 0.1 / SQRT2, 0.25 - 0.1 * SQRT2, 0.25 + 0.1 / SQRT2, 0.25 + 0.1 * SQRT2],
        ]
    )
    torch.testing.assert_close(anchors[:4], first, atol=1e-6, rtol=0)
    torch.testing.assert_close(anchors, _expected_anchors(2, 2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("hw", [(2, 2), (2, 3), (3, 1)])
def test_multibox_prior_centres_sizes_and_order(hw):
    height, width = hw
    anchors = multibox_prior(hw, SIZES, RATIOS).reshape(height, width, 4, 4)
    centre = corners_to_center(anchors)
    for i in range(height):
        for j in range(width):
            # All anchors of one pixel share its centre ((j + 0.5) / w, (i + 0.5) / h).
            torch.testing.assert_close(centre[i, j, :, 0], torch.full((4,), (j + 0.5) / width), atol=1e-6, rtol=0)
            torch.testing.assert_close(centre[i, j, :, 1], torch.full((4,), (i + 0.5) / height), atol=1e-6, rtol=0)
            torch.testing.assert_close(centre[i, j, :, 2:], t(EXPECTED_WH), atol=1e-6, rtol=0)
    torch.testing.assert_close(anchors.reshape(-1, 4), _expected_anchors(height, width), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "sizes, ratios, per_pixel", [((0.2, 0.272), (1.0, 2.0, 0.5), 4), ((0.5,), (1.0,), 1), ((0.1, 0.2, 0.3), (1.0, 2.0), 4)]
)
def test_multibox_prior_count_per_pixel(sizes, ratios, per_pixel):
    assert multibox_prior((3, 5), sizes, ratios).shape == (3 * 5 * per_pixel, 4)


# ------------------------------------------------------------------------------ box_iou
@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 1, 1], [2, 2, 3, 3], 0.0),  # disjoint
        ([0, 0, 1, 1], [1, 0, 2, 1], 0.0),  # touching edges
        ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),  # contained
        ([0, 0, 2, 2], [1, 1, 3, 3], 1 / 7),  # partial: inter 1, union 4 + 4 - 1
        ([0, 0, 2, 1], [1, 0, 3, 1], 1 / 3),  # partial along x only
        ([0.1, 0.2, 0.5, 0.6], [0.1, 0.2, 0.5, 0.6], 1.0),  # identical
        ([1, 1, 1, 1], [1, 1, 1, 1], 0.0),  # degenerate zero-area pair: empty union -> 0, not NaN
        ([1, 1, 1, 3], [0, 0, 2, 2], 0.0),  # zero-width box inside another
        ([3, 3, 1, 1], [0, 0, 4, 4], 0.0),  # inverted box has area 0
    ],
)
def test_box_iou_pairs(a, b, expected):
    iou = box_iou(t([a]), t([b]))
    assert iou.shape == (1, 1)
    assert not torch.isnan(iou).any()
    assert iou.item() == pytest.approx(expected, abs=1e-6)
    # symmetric
    assert box_iou(t([b]), t([a])).item() == pytest.approx(expected, abs=1e-6)


def test_box_iou_matrix():
    boxes1 = t([[0, 0, 2, 2], [0, 0, 4, 4]])
    boxes2 = t([[1, 1, 3, 3], [0, 0, 2, 2], [10, 10, 11, 11]])
    expected = t([[1 / 7, 1.0, 0.0], [4 / 16, 4 / 16, 0.0]])
    torch.testing.assert_close(box_iou(boxes1, boxes2), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n, m", [(0, 3), (2, 0), (0, 0)])
def test_box_iou_empty_inputs(n, m):
    iou = box_iou(torch.rand(n, 4), torch.rand(m, 4))
    assert iou.shape == (n, m)


# -------------------------------------------------------------------- encode / decode
ANCHOR = [0.0, 0.0, 0.2, 0.2]  # centre (0.1, 0.1), size 0.2 x 0.2
BOX = [0.05, 0.02, 0.25, 0.42]  # centre (0.15, 0.22), size 0.2 x 0.4
# dx = 0.05 / 0.2 / 0.1, dy = 0.12 / 0.2 / 0.1, dw = log(1) / 0.2, dh = log(2) / 0.2
OFFSETS = [2.5, 6.0, 0.0, math.log(2.0) / 0.2]


def test_encode_offsets_hand_computed():
    anchors = t([ANCHOR, [0.5, 0.5, 0.7, 0.9]])
    # second: anchor centre (0.6, 0.7), size 0.2 x 0.4; box centre (0.58, 0.78), size 0.1 x 0.8
    boxes = t([BOX, [0.53, 0.38, 0.63, 1.18]])
    second = [-0.02 / 0.2 / 0.1, 0.08 / 0.4 / 0.1, math.log(0.5) / 0.2, math.log(2.0) / 0.2]
    torch.testing.assert_close(encode_offsets(anchors, boxes), t([OFFSETS, second]), atol=1e-4, rtol=0)


def test_decode_offsets_hand_computed():
    decoded = decode_offsets(t([ANCHOR]), t([OFFSETS]))
    torch.testing.assert_close(decoded, t([BOX]), atol=1e-6, rtol=0)
    # zero offsets give back the anchor
    anchors = t([ANCHOR, [0.3, 0.1, 0.9, 0.4]])
    torch.testing.assert_close(decode_offsets(anchors, torch.zeros(2, 4)), anchors, atol=1e-7, rtol=0)


def test_encode_decode_round_trip():
    gen = torch.Generator().manual_seed(0)
    anchors = multibox_prior((4, 4), SIZES, RATIOS)
    centre = torch.rand(anchors.shape[0], 2, generator=gen)
    size = 0.05 + 0.5 * torch.rand(anchors.shape[0], 2, generator=gen)
    boxes = center_to_corners(torch.cat((centre, size), dim=-1))
    torch.testing.assert_close(decode_offsets(anchors, encode_offsets(anchors, boxes)), boxes, atol=2e-5, rtol=0)


def test_decode_offsets_broadcasts_over_batch():
    gen = torch.Generator().manual_seed(1)
    anchors = multibox_prior((2, 2), SIZES, RATIOS)  # N = 16
    offsets = torch.randn(3, anchors.shape[0], 4, generator=gen)
    batched = decode_offsets(anchors, offsets)
    assert batched.shape == (3, anchors.shape[0], 4)
    for b in range(3):
        torch.testing.assert_close(batched[b], decode_offsets(anchors, offsets[b]), atol=1e-7, rtol=0)
    # and a second leading dim
    assert decode_offsets(anchors, offsets.reshape(3, 1, -1, 4)).shape == (3, 1, anchors.shape[0], 4)


# ---------------------------------------------------------------------- assign_anchors
def test_assign_every_gt_gets_best_anchor_even_below_threshold():
    anchors = t([[0, 0, 0.4, 0.4], [0.5, 0.5, 1.0, 1.0]])
    gt = t([[0, 0, 0.1, 0.1]])  # IoU with anchor 0 is 0.01 / 0.16 = 0.0625
    assert assign_anchors(anchors, gt).tolist() == [0, -1]


def test_assign_never_takes_an_anchor_twice_in_greedy_phase():
    gt = t([[0, 0, 0.4, 0.4], [0, 0, 0.4, 0.36]])
    anchors = t([[0, 0, 0.4, 0.38], [0, 0, 0.4, 0.3]])
    # IoU: anchor0-gt0 0.95, anchor0-gt1 0.947, anchor1-gt0 0.75, anchor1-gt1 0.833.
    # Anchor 0 is the best for both; greedy gives it to gt0 and gt1 falls back to anchor 1.
    matched = assign_anchors(anchors, gt)
    assert matched.tolist() == [0, 1]
    assert matched.dtype == torch.long


def test_assign_greedy_fallback_below_threshold_and_background():
    anchors = t(
        [
            [0, 0, 0.4, 0.4],  # = gt1 (IoU 1), and IoU 0.75 with gt0
            [0.5, 0.5, 1.0, 1.0],  # overlaps nothing
            [0, 0, 0.2, 0.2],  # IoU 1/3 with gt0, 1/4 with gt1: only reachable by greedy
            [0.6, 0, 1.0, 0.2],  # overlaps nothing
        ]
    )
    gt = t([[0, 0, 0.4, 0.3], [0, 0, 0.4, 0.4]])
    assert assign_anchors(anchors, gt).tolist() == [1, -1, 0, -1]


def test_assign_threshold_phase_takes_best_gt():
    gt = t([[0, 0, 0.4, 0.4], [0.1, 0, 0.5, 0.4]])
    anchors = t(
        [
            [0, 0, 0.4, 0.4],  # exact gt0
            [0.1, 0, 0.5, 0.4],  # exact gt1
            [0.08, 0, 0.48, 0.4],  # IoU 0.667 with gt0, 0.905 with gt1 -> gt1
            [0, 0, 0.4, 0.24],  # IoU 0.6 with gt0, 0.4 with gt1 -> gt0
            [0, 0, 0.4, 0.18],  # IoU 0.45 with gt0 -> background
        ]
    )
    assert assign_anchors(anchors, gt).tolist() == [0, 1, 1, 0, -1]


def test_assign_single_gt_threshold():
    gt = t([[0, 0, 0.4, 0.4]])
    anchors = t([[0, 0, 0.4, 0.4], [0, 0, 0.4, 0.3], [0, 0, 0.4, 0.24], [0, 0, 0.4, 0.18], [0, 0, 0.4, 0.04]])
    # IoU 1, 0.75, 0.6, 0.45, 0.1
    assert assign_anchors(anchors, gt).tolist() == [0, 0, 0, -1, -1]
    assert assign_anchors(anchors, gt, iou_threshold=0.7).tolist() == [0, 0, -1, -1, -1]


def test_assign_every_gt_matched_on_real_anchors():
    anchors = multibox_prior((4, 4), SIZES, RATIOS)
    gt = t([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.55, 0.95, 0.7], [0.0, 0.0, 0.03, 0.03]])
    matched = assign_anchors(anchors, gt)
    assert set(matched.tolist()) - {-1} == {0, 1, 2, 3}
    iou = box_iou(anchors, gt)
    for a in range(anchors.shape[0]):
        best = float(iou[a].max())
        if best >= 0.5:
            # anchors above threshold are matched (to their best gt, unless greedy took them)
            assert matched[a] >= 0


def test_assign_empty_gt_all_background():
    anchors = multibox_prior((2, 2), SIZES, RATIOS)
    matched = assign_anchors(anchors, torch.zeros(0, 4))
    assert matched.shape == (anchors.shape[0],)
    assert matched.dtype == torch.long
    assert (matched == -1).all()


# ----------------------------------------------------------------- format conversions
def test_corners_center_hand_computed():
    corners = t([[0.1, 0.2, 0.5, 0.8]])
    center = t([[0.3, 0.5, 0.4, 0.6]])
    torch.testing.assert_close(corners_to_center(corners), center, atol=1e-7, rtol=0)
    torch.testing.assert_close(center_to_corners(center), corners, atol=1e-7, rtol=0)


@pytest.mark.parametrize("shape", [(7, 4), (2, 5, 4), (4,)])
def test_corners_center_round_trip(shape):
    gen = torch.Generator().manual_seed(2)
    corners = center_to_corners(torch.cat((torch.rand(*shape[:-1], 2, generator=gen),
                                           0.01 + torch.rand(*shape[:-1], 2, generator=gen)), dim=-1))
    assert corners_to_center(corners).shape == corners.shape
    torch.testing.assert_close(center_to_corners(corners_to_center(corners)), corners, atol=1e-6, rtol=0)


def test_clip_boxes():
    boxes = t([[-5, -1, 50, 70], [10, 20, 30, 40], [120, 90, 130, 110]])
    expected = t([[0, 0, 50, 60], [10, 20, 30, 40], [100, 60, 100, 60]])
    torch.testing.assert_close(clip_boxes(boxes, width=100, height=60), expected)
    # leading batch dims kept
    assert clip_boxes(boxes[None].repeat(2, 1, 1), 1.0, 1.0).shape == (2, 3, 4)


# ------------------------------------------------------------------ remove_small_boxes
def test_remove_small_boxes_keeps_boxes_at_least_min_size_on_both_sides():
    boxes = np.array([
        [10, 10, 50, 40],  # 40 x 30: kept
        [10, 0, 50, 0],  # zero height (a ghost on the padding edge, mapped back): dropped
        [10, 20, 10.5, 80],  # 0.5 px wide: dropped
        [0, 0, 1, 1],  # exactly 1 x 1: kept (the bound is inclusive, as torchvision's)
        [5, 5, 5.999, 30],  # just under 1 px wide: dropped
        [30, 30, 20, 40],  # inverted: dropped
        [np.nan, 0, 10, 10],  # NaN: dropped
    ])
    assert remove_small_boxes(boxes).tolist() == [0, 3]
    assert remove_small_boxes(boxes).dtype == np.int64


def test_remove_small_boxes_min_size_and_input_kinds():
    boxes = np.array([[0, 0, 2, 5], [0, 0, 5, 2], [0, 0, 3, 3]], dtype=np.float32)
    assert remove_small_boxes(boxes, min_size=3.0).tolist() == [2]
    assert remove_small_boxes(boxes, min_size=0.0).tolist() == [0, 1, 2]
    assert remove_small_boxes(torch.from_numpy(boxes), min_size=2.5).tolist() == [2]  # a CPU tensor reads as an array
    assert remove_small_boxes(boxes.tolist(), min_size=2.0).tolist() == [0, 1, 2]


def test_remove_small_boxes_empty_and_wrong_shapes():
    assert remove_small_boxes(np.zeros((0, 4))).tolist() == []
    assert remove_small_boxes([]).tolist() == []
    with pytest.raises(ValueError, match="shape"):
        remove_small_boxes(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="shape"):
        remove_small_boxes(np.zeros(4))


def test_remove_small_boxes_drops_what_collapses_in_the_letterbox_padding():
    """A 640x360 frame letterboxed to 256: bands of 56 px above and below the picture. A box
    lying in the top band maps back to zero height; one straddling the edge keeps its inside part."""
    from cvexport.images import letterbox

    _, box_map = letterbox(np.zeros((360, 640, 3), np.uint8), 256, 256)
    network = np.array([[0.2, 0.10, 0.4, 0.21], [0.2, 0.20, 0.4, 0.40]])  # content starts at y = 56/256 = 0.21875
    pixels = box_map.boxes_to_original(network, 256, 256)
    assert pixels[0, 3] - pixels[0, 1] == 0.0 and pixels[1, 3] - pixels[1, 1] > 1.0
    assert remove_small_boxes(pixels).tolist() == [1]


def test_detection_results_leave_out_boxes_that_collapse_on_the_picture():
    """``DetectionTask.to_predictions`` is what run, stream, predict and verify read bundle
    outputs through: a box on the padding band is not among the results, the others are."""
    from cvexport.detection import DetectionTask
    from cvexport.images import letterbox

    _, box_map = letterbox(np.zeros((360, 640, 3), np.uint8), 256, 256)
    outputs = {"num_detections": np.array([[3]], np.int32),
               "detection_boxes": np.array([[[0.2, 0.10, 0.4, 0.21], [0.2, 0.20, 0.4, 0.40], [0.5, 0.5, 0.6, 0.6],
                                             [0, 0, 0, 0]]], np.float32),
               "detection_scores": np.array([[0.9, 0.8, 0.7, 0.0]], np.float32),
               "detection_classes": np.array([[1, 0, 1, 0]], np.int32)}
    (results,) = DetectionTask().to_predictions(outputs, [box_map], ["a", "b"], 256, 256)
    assert [(results.class_names[c], s) for c, s in zip(results.class_ids, results.scores)] == [("a", 0.8), ("b", 0.7)]
    widths, heights = results.xyxy[:, 2] - results.xyxy[:, 0], results.xyxy[:, 3] - results.xyxy[:, 1]
    assert len(results) == 2 and (widths >= 1).all() and (heights >= 1).all()


# ------------------------------------------------------------------------------ TinySSD
def test_tinyssd_anchor_count():
    from cvexport.models.tinyssd import feature_map_sizes, make_anchors

    assert feature_map_sizes() == [(32, 32), (16, 16), (8, 8), (4, 4), (1, 1)]
    anchors = make_anchors()
    assert anchors.shape == (5444, 4) == (4 * (32**2 + 16**2 + 8**2 + 4**2 + 1), 4)
    # First stage's anchors come first, pixel by pixel.
    torch.testing.assert_close(anchors[: 32 * 32 * 4], multibox_prior((32, 32), SIZES, RATIOS))
    # Last stage: one pixel centred at (0.5, 0.5) with the largest sizes.
    last = corners_to_center(anchors[-4:])
    torch.testing.assert_close(last[:, :2], torch.full((4, 2), 0.5))
    torch.testing.assert_close(last[:2, 2], t([0.88, 0.961]))


def test_tinyssd_output_shapes():
    from cvexport.models.tinyssd import TinySSD

    torch.manual_seed(0)
    model = TinySSD(num_classes=3).eval()
    assert model.anchors.shape == (5444, 4)
    with torch.no_grad():
        cls_logits, box_offsets = model(torch.randn(2, 3, 256, 256))
    assert cls_logits.shape == (2, 5444, 4)  # 3 classes + background
    assert box_offsets.shape == (2, 5444, 4)
    assert torch.isfinite(cls_logits).all() and torch.isfinite(box_offsets).all()
