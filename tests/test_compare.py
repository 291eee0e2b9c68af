"""Detection parity as set matching (cvexport/detection.py DetectionParity)."""

from __future__ import annotations

import numpy as np
import pytest

from cvexport.detection import (
    SAME_OBJECT_IOU,
    TOLERANCES,
    DetectionParity,
    DetectionTolerance,
    valid_detections,
)

FP32 = TOLERANCES["fp32"]
FP16 = TOLERANCES["fp16"]
K = 64


def outputs(images: list[list[tuple[list[float], float, int]]], k: int = K) -> dict[str, np.ndarray]:
    """[[(box, score, class), ...] per image] -> the fixed-shape output contract, zero padded."""
    batch = len(images)
    out = {
        "num_detections": np.zeros((batch, 1), np.int32),
        "detection_boxes": np.zeros((batch, k, 4), np.float32),
        "detection_scores": np.zeros((batch, k), np.float32),
        "detection_classes": np.zeros((batch, k), np.int32),
    }
    for b, dets in enumerate(images):
        out["num_detections"][b, 0] = len(dets)
        for i, (box, score, cls) in enumerate(dets):
            out["detection_boxes"][b, i] = box
            out["detection_scores"][b, i] = score
            out["detection_classes"][b, i] = cls
    return out


IMAGE_A = [([0.1, 0.1, 0.4, 0.4], 0.9, 0), ([0.5, 0.5, 0.9, 0.8], 0.8, 1), ([0.1, 0.6, 0.3, 0.9], 0.6, 2)]
IMAGE_B = [([0.2, 0.2, 0.6, 0.7], 0.7, 1), ([0.0, 0.0, 1.0, 1.0], 0.3, 0)]


def grid_detections(count: int) -> list[tuple[list[float], float, int]]:
    """``count`` disjoint boxes on a 10 x 10 grid."""
    return [
        ([(i % 10) / 10, (i // 10) / 10, (i % 10) / 10 + 0.08, (i // 10) / 10 + 0.08], 0.3 + 0.01 * (i % 50), i % 3)
        for i in range(count)
    ]


def test_valid_detections_reads_rows_before_num_detections():
    out = outputs([IMAGE_A, IMAGE_B])
    boxes, scores, classes = valid_detections(out, 1)
    assert boxes.shape == (2, 4) and scores.shape == (2,) and classes.shape == (2,)
    np.testing.assert_allclose(scores, [0.7, 0.3], atol=1e-7)
    assert classes.tolist() == [1, 0]


def test_identical_outputs_all_matched():
    ref = outputs([IMAGE_A, IMAGE_B, []])
    parity = DetectionParity(FP32).add(ref, ref)
    assert parity.images == 3
    assert parity.reference_detections == parity.test_detections == parity.matched == 5
    assert parity.match_fraction == 1.0
    assert parity.min_iou == pytest.approx(1.0)
    assert parity.max_score_delta == 0.0
    assert parity.failures == []
    assert parity.passed(FP32) and parity.passed(FP16)


def test_reordered_detections_still_match():
    ref = outputs([IMAGE_A, IMAGE_B])
    test = outputs([IMAGE_A[::-1], IMAGE_B[::-1]])
    parity = DetectionParity(FP32).add(ref, test)
    assert parity.matched == 5 and parity.passed(FP32)


def test_both_empty_compares_nothing_and_fails():
    # build --frame-size 16x16 passed its parity with "0/0 detections matched": a check of nothing.
    parity = DetectionParity(FP32).add(outputs([[], []]), outputs([[], []]))
    assert parity.matched == 0 and parity.compared() == 0 and parity.failures == []
    assert not parity.passed(FP32) and not parity.passed(FP16)
    assert "nothing compared (neither run gave a detection on the 2 images)" in parity.summary()
    assert parity.to_dict()["compared"] == 0


def test_empty_images_among_others_are_compared_as_empty():
    parity = DetectionParity(FP32).add(outputs([[], IMAGE_A]), outputs([[], IMAGE_A]))
    assert parity.compared() == 3 and parity.passed(FP32) and "nothing compared" not in parity.summary()


def _shifted(dx: float) -> list:
    (x1, y1, x2, y2), score, cls = IMAGE_A[0]
    return [([x1 + dx, y1, x2 + dx, y2], score, cls)] + IMAGE_A[1:]


@pytest.mark.parametrize(
    "dx, fp32_ok, fp16_ok",
    [
        (0.0005, True, True),  # IoU 0.9967
        (0.003, False, True),  # IoU 0.9802: below 0.99, above 0.95
        (0.02, False, False),  # IoU 0.875
    ],
)
def test_shifted_box_against_iou_tolerance(dx, fp32_ok, fp16_ok):
    ref, test = outputs([IMAGE_A]), outputs([_shifted(dx)])
    parity32 = DetectionParity(FP32).add(ref, test)
    assert parity32.passed(FP32) is fp32_ok
    assert parity32.matched == (3 if fp32_ok else 2)
    assert DetectionParity(FP16).add(ref, test).passed(FP16) is fp16_ok


def test_min_iou_is_recorded():
    parity = DetectionParity(FP16).add(outputs([IMAGE_A]), outputs([_shifted(0.003)]))
    # boxes 0.3 wide shifted by 0.003: IoU = 0.297 / 0.303
    assert parity.min_iou == pytest.approx(0.297 / 0.303, abs=1e-4)


@pytest.mark.parametrize("delta, fp32_ok", [(5e-5, True), (3e-4, False), (0.1, False)])
def test_score_delta_against_fp32_tolerance(delta, fp32_ok):
    ref = outputs([IMAGE_A])
    test = outputs([[(IMAGE_A[0][0], IMAGE_A[0][1] - delta, IMAGE_A[0][2])] + IMAGE_A[1:]])
    parity = DetectionParity(FP32).add(ref, test)
    assert parity.passed(FP32) is fp32_ok
    assert parity.matched == (3 if fp32_ok else 2)
    if fp32_ok:
        assert parity.max_score_delta == pytest.approx(delta, abs=1e-6)
    # fp16 does not bound the score
    assert DetectionParity(FP16).add(ref, test).matched == 3


def test_missing_detection_lowers_match_fraction():
    ref, test = outputs([IMAGE_A]), outputs([IMAGE_A[:2]])
    parity = DetectionParity(FP32).add(ref, test)
    assert parity.reference_detections == 3 and parity.test_detections == 2
    assert parity.matched == 2
    assert parity.match_fraction == pytest.approx(2 / 3)
    assert not parity.passed(FP32)
    # and an extra detection in the test run counts the same way
    extra = DetectionParity(FP32).add(test, ref)
    assert extra.match_fraction == pytest.approx(2 / 3) and not extra.passed(FP32)


def test_class_mismatch_is_not_a_match():
    ref = outputs([IMAGE_A])
    test = outputs([[(box, score, (cls + 1) % 3) for box, score, cls in IMAGE_A]])
    parity = DetectionParity(FP16).add(ref, test)
    assert parity.matched == 0 and parity.match_fraction == 0.0
    assert not parity.passed(FP16)


def test_one_test_detection_matches_one_reference_only():
    box, score, cls = IMAGE_A[0]
    ref = outputs([[(box, score, cls), (box, score, cls)]])
    test = outputs([[(box, score, cls)]])
    parity = DetectionParity(FP32).add(ref, test)
    assert parity.matched == 1 and parity.match_fraction == 0.5


def test_images_are_not_mixed_up():
    ref = outputs([IMAGE_A, IMAGE_B])
    swapped = outputs([IMAGE_B, IMAGE_A])
    parity = DetectionParity(FP16).add(ref, swapped)
    assert parity.matched == 0 and not parity.passed(FP16)


def test_batch_size_mismatch_recorded_in_failures():
    parity = DetectionParity(FP32).add(outputs([IMAGE_A, IMAGE_B]), outputs([IMAGE_A]))
    assert len(parity.failures) == 1 and "batch size differs" in parity.failures[0]
    assert "2" in parity.failures[0] and "1" in parity.failures[0]
    assert parity.match_fraction == 1.0  # nothing compared, yet ...
    assert not parity.passed(FP32) and not parity.passed(FP16)  # ... a failure is never a pass


@pytest.mark.parametrize("missing, fp16_ok", [(1, True), (2, False)])
def test_fp16_tolerance_allows_98_percent(missing, fp16_ok):
    ref_dets = grid_detections(50)
    ref = outputs([ref_dets[:25], ref_dets[25:]])
    test = outputs([ref_dets[:25], ref_dets[25:50 - missing]])
    parity = DetectionParity(FP16).add(ref, test)
    assert parity.matched == 50 - missing
    assert parity.match_fraction == pytest.approx((50 - missing) / 50)
    assert parity.passed(FP16) is fp16_ok
    assert not parity.passed(FP32)


def test_parity_accumulates_over_calls():
    parity = DetectionParity(FP32)
    parity.add(outputs([IMAGE_A]), outputs([IMAGE_A]))
    result = parity.add(outputs([IMAGE_B]), outputs([IMAGE_B[:1]]))
    assert result is parity
    assert parity.images == 2
    assert parity.reference_detections == 5 and parity.test_detections == 4 and parity.matched == 4
    assert parity.match_fraction == pytest.approx(4 / 5)


def test_to_dict_and_mean_delta():
    test = outputs([[(box, score - 4e-5, cls) for box, score, cls in IMAGE_A]])
    parity = DetectionParity(FP32).add(outputs([IMAGE_A]), test)
    assert parity.mean_score_delta == pytest.approx(4e-5, abs=1e-6)
    d = parity.to_dict()
    assert d["matched"] == 3 and d["match_fraction"] == 1.0
    assert d["mean_score_delta"] == pytest.approx(4e-5, abs=1e-6)
    assert DetectionParity().mean_score_delta == 0.0


def test_custom_tolerance_is_data():
    lenient = DetectionTolerance(min_iou=0.5, max_score_delta=None, min_match_fraction=0.5)
    parity = DetectionParity(lenient).add(outputs([IMAGE_A]), outputs([_shifted(0.05)[:2]]))
    assert parity.matched == 2 and parity.passed(lenient)


# ----------------------------------------------- missing detections where the reference is full
def _full_images(count: int, k: int = K) -> list:
    """``count`` images whose reference fills all ``k`` slots (disjoint boxes)."""
    return [grid_detections(k) for _ in range(count)]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_short_output_where_reference_fills_every_slot_fails_at_every_precision(precision):
    # EfficientNMS_TRT's pre-NMS candidate cap: e.g. 196 of 200 on one image. Diluted over 8 full
    # images the match fraction stays above the fp16/int8 tolerances; the count gap must not.
    images = _full_images(8)
    short = [dets[: K - 4] for dets in images[:1]] + images[1:]
    tolerance = TOLERANCES[precision]
    parity = DetectionParity(tolerance).add(outputs(images), outputs(short))
    assert parity.match_fraction > TOLERANCES["fp16"].min_match_fraction  # the tolerance alone would pass
    assert not parity.passed(tolerance)
    assert parity.short_images == 1 and parity.missing == 4 and parity.extra == 0
    (failure,) = parity.failures
    assert failure.startswith(f"image 0: {K - 4} detections where the reference fills all {K} slots")
    assert "EfficientNMS_TRT" in failure and "\n" not in failure
    assert failure in parity.summary()


def test_short_output_is_numbered_across_batches():
    parity = DetectionParity(FP16).add(outputs(_full_images(2)), outputs(_full_images(2)))
    images = _full_images(2)
    parity.add(outputs(images), outputs([images[0], images[1][:-1]]))
    assert [f.split(":")[0] for f in parity.failures] == ["image 3"]


def test_fewer_detections_below_a_full_reference_are_left_to_the_tolerance():
    # Not every slot filled: a detection near the score threshold may come and go at fp16.
    ref_dets = grid_detections(50)
    parity = DetectionParity(FP16).add(outputs([ref_dets]), outputs([ref_dets[:-1]]))
    assert parity.short_images == 0 and parity.failures == [] and parity.missing == 1
    assert parity.passed(FP16)


def test_test_output_full_where_reference_is_not_is_extra_not_short():
    ref_dets = grid_detections(K)
    parity = DetectionParity(FP16).add(outputs([ref_dets[:-1]]), outputs([ref_dets]))
    assert parity.short_images == 0 and parity.extra == 1 and parity.missing == 0


def test_missing_and_extra_in_summary_and_dict():
    ref, test = outputs([IMAGE_A]), outputs([IMAGE_A[:2] + [([0.6, 0.0, 0.7, 0.1], 0.5, 0)]])
    parity = DetectionParity(FP32).add(ref, test)
    assert (parity.missing, parity.extra) == (1, 1)
    assert "(1 missing, 1 extra)" in parity.summary()
    assert parity.to_dict()["missing"] == 1 and parity.to_dict()["extra"] == 1


def test_scores_outside_unit_interval_fail():
    # EfficientNMS_TRT's dense path (score threshold < 0.007) can output rejected candidates
    # with score -32768 when too few real ones survive: not probabilities.
    test = outputs([IMAGE_A[:2] + [(IMAGE_A[2][0], -32768.0, IMAGE_A[2][2])]])
    parity = DetectionParity(TOLERANCES["int8"]).add(outputs([IMAGE_A]), test)
    assert not parity.passed(TOLERANCES["int8"])
    assert len(parity.failures) == 1 and "outside [0, 1]" in parity.failures[0]


# ------------------------------------------------ detections that cross the score threshold
THRESHOLD = 0.25


def _at_threshold(score: float, cls: int = 0, box=(0.6, 0.6, 0.7, 0.7)) -> tuple:
    return (list(box), score, cls)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_flips_at_the_score_threshold_are_set_aside_and_counted(precision):
    # Issue 22: fp16 moved one detection scoring 0.2507 under the 0.25 threshold and another
    # from under it to 0.2503; every other box agreed. Not mismatches: counted as flips.
    tolerance = TOLERANCES[precision]
    above = THRESHOLD + tolerance.boundary_score_delta / 2
    ref = outputs([IMAGE_A + [_at_threshold(above)], IMAGE_B])
    test = outputs([IMAGE_A, IMAGE_B + [_at_threshold(above, 1, (0.0, 0.6, 0.1, 0.7))]])
    parity = DetectionParity(tolerance, score_threshold=THRESHOLD).add(ref, test)
    assert (parity.matched, parity.missing, parity.extra, parity.boundary_flips) == (5, 0, 0, 2)
    assert parity.match_fraction == 1.0 and parity.passed()
    assert "5/5 detections matched" in parity.summary() and "2 boundary flips set aside" in parity.summary()
    assert parity.to_dict()["boundary_flips"] == 2
    # Without the threshold (statistics not bound to the bundle), the same detections are mismatches.
    unbound = DetectionParity(tolerance).add(ref, test)
    assert (unbound.missing, unbound.extra, unbound.boundary_flips) == (1, 1, 0) and not unbound.passed()


def test_task_binds_the_bundles_score_threshold():
    from types import SimpleNamespace

    from cvexport.manifest import Postprocess
    from cvexport.tasks import get_task

    manifest = SimpleNamespace(postprocess=Postprocess(score_threshold=0.3, iou_threshold=0.5, max_detections=10))
    parity = get_task("detection").new_parity("fp16", manifest)
    assert parity.score_threshold == 0.3 and parity.tolerance is FP16
    assert get_task("detection").new_parity("fp16").score_threshold is None


def test_a_detection_beyond_the_precisions_rounding_is_no_flip():
    above = THRESHOLD + 2 * FP16.boundary_score_delta
    parity = DetectionParity(FP16, score_threshold=THRESHOLD).add(outputs([IMAGE_A + [_at_threshold(above)]]),
                                                                  outputs([IMAGE_A]))
    assert (parity.missing, parity.boundary_flips) == (1, 0) and not parity.passed()


def test_a_confident_detection_lost_fails():
    parity = DetectionParity(FP16, score_threshold=THRESHOLD).add(outputs([IMAGE_A]), outputs([IMAGE_A[1:]]))
    assert (parity.missing, parity.boundary_flips) == (1, 0) and not parity.passed()


def test_a_box_that_moves_at_the_threshold_fails():
    # Both runs give the detection near the threshold, but the box moved: not two flips.
    near = THRESHOLD + 0.001
    moved = (0.6, 0.63, 0.7, 0.73)  # IoU 0.007 / 0.013 = 0.54 with the reference box: below fp16's 0.95
    assert 0.007 / 0.013 >= SAME_OBJECT_IOU
    parity = DetectionParity(FP16, score_threshold=THRESHOLD).add(outputs([IMAGE_A + [_at_threshold(near)]]),
                                                                  outputs([IMAGE_A + [_at_threshold(near, 0, moved)]]))
    assert (parity.missing, parity.extra, parity.boundary_flips) == (1, 1, 0) and not parity.passed()


def test_a_class_that_changes_at_the_threshold_fails():
    near = THRESHOLD + 0.001
    parity = DetectionParity(FP16, score_threshold=THRESHOLD).add(outputs([IMAGE_A + [_at_threshold(near, 0)]]),
                                                                  outputs([IMAGE_A + [_at_threshold(near, 1)]]))
    assert (parity.missing, parity.extra, parity.boundary_flips) == (1, 1, 0) and not parity.passed()


def test_int8_sets_no_flips_aside():
    # Its match fraction was measured with flips counted.
    ref = outputs([IMAGE_A + [_at_threshold(THRESHOLD + 1e-4)]])
    parity = DetectionParity(TOLERANCES["int8"], score_threshold=THRESHOLD).add(ref, outputs([IMAGE_A]))
    assert (parity.missing, parity.boundary_flips) == (1, 0)


def test_flips_at_the_max_detections_cut_are_set_aside():
    # Both outputs full: the reference's last detection and the test's last one swap places
    # across the top-K cut by rounding (their scores tie within fp16's rounding).
    k = 8
    common = grid_detections(k - 1)
    low = min(score for _, score, _ in common) - 0.001
    ref = outputs([common + [([0.9, 0.9, 0.95, 0.95], low, 0)]], k=k)
    test = outputs([common + [([0.0, 0.9, 0.05, 0.95], low - 0.0005, 1)]], k=k)
    parity = DetectionParity(FP16, score_threshold=0.01).add(ref, test)
    assert (parity.matched, parity.missing, parity.extra, parity.boundary_flips) == (k - 1, 0, 0, 2)
    assert parity.passed() and parity.short_images == 0


def test_only_flips_compare_nothing():
    ref = outputs([[_at_threshold(THRESHOLD + 0.001)]])
    parity = DetectionParity(FP16, score_threshold=THRESHOLD).add(ref, outputs([[]]))
    assert parity.boundary_flips == 1 and parity.compared() == 0 and not parity.passed()
    assert "beyond 1 boundary flips" in parity.summary()
