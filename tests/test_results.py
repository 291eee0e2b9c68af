"""Typed results (cvexport.results) and the annotators that draw them (cvexport.annotators).

The records are the JSON every command writes (run's predictions.json, stream's JSONL, predict's
Parquet rows): their keys, key order and rounding are a format, so they are checked as text.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvexport.annotators import (BOX_PALETTE, MASK_PALETTE, BoxAnnotator, ClassBarAnnotator, ColorMaskAnnotator,
                                 MaskOverlayAnnotator, StylizedAnnotator)
from cvexport.results import Classification, Detections, LabelMap, StylizedImage, rounded
from cvexport.tasks import get_task

NAMES = ("circle", "square", "triangle")


def _detections(track_ids=None) -> Detections:
    return Detections(xyxy=[[10, 20, 40, 50], [1.234567, 2.675, 30.004999, 40], [5, 5, 9, 9]],
                      scores=[0.9, 0.123456789, 0.3], class_ids=[1, 0, 2], class_names=NAMES, track_ids=track_ids)


# ---------------------------------------------------------------------------- Detections
def test_detections_hold_typed_arrays_and_select_like_supervision():
    detections = _detections(track_ids=[7, 8, 9])
    assert len(detections) == 3
    assert detections.xyxy.dtype == np.float64 and detections.xyxy.shape == (3, 4)
    assert detections.class_ids.dtype == np.int64 and detections.track_ids.dtype == np.int64
    confident = detections[detections.scores > 0.25]
    assert confident.class_ids.tolist() == [1, 2] and confident.track_ids.tolist() == [7, 9]
    assert confident.class_names == NAMES
    assert detections[1].xyxy.shape == (1, 4) and detections[1].track_ids.tolist() == [8]
    assert detections[[2, 0]].scores.tolist() == [0.3, 0.9]
    assert len(detections[:0]) == 0 and detections[1:] == detections[np.array([False, True, True])]


def test_empty_detections_and_mismatched_fields():
    empty = Detections.empty(NAMES)
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4) and empty.to_record() == {"detections": []}
    with pytest.raises(ValueError, match="disagree"):
        Detections(xyxy=np.zeros((2, 4)), scores=[0.5], class_ids=[0, 1])
    with pytest.raises(ValueError, match="track_ids"):
        Detections(xyxy=np.zeros((1, 4)), scores=[0.5], class_ids=[0], track_ids=[1, 2])


def test_results_compare_by_value():
    assert _detections() == _detections()
    assert _detections() != _detections(track_ids=[1, 2, 3])
    moved = Detections(_detections().xyxy + 0.01, _detections().scores, _detections().class_ids, NAMES)
    assert moved != _detections()
    assert LabelMap(np.zeros((2, 2), np.uint8), NAMES) != LabelMap(np.zeros((2, 2), np.int32), NAMES)  # dtype counts
    assert StylizedImage(np.ones((2, 2, 3), np.uint8)) == StylizedImage(np.ones((2, 2, 3), np.uint8))


def test_detection_record_is_the_json_every_command_writes():
    """Keys in this order, boxes to 0.01 px and scores to 1e-5 by Python's round (2.675 -> 2.67,
    where np.round gives 2.68)."""
    record = _detections().to_record()
    assert json.dumps(record) == (
        '{"detections": ['
        '{"box": [10.0, 20.0, 40.0, 50.0], "class_id": 1, "class_name": "square", "score": 0.9}, '
        '{"box": [1.23, 2.67, 30.0, 40.0], "class_id": 0, "class_name": "circle", "score": 0.12346}, '
        '{"box": [5.0, 5.0, 9.0, 9.0], "class_id": 2, "class_name": "triangle", "score": 0.3}]}')
    assert float(np.round(2.675, 2)) == 2.68 and rounded([2.675], 2).tolist() == [2.67]
    assert _detections().rounded().to_record() == record  # rounding twice changes nothing
    assert _detections().rounded().xyxy[1].tolist() == [1.23, 2.67, 30.0, 40.0]


# ------------------------------------------------------------------------ Classification
def test_classification_record_lists_the_top_classes_best_first():
    names = tuple(f"c{i}" for i in range(7))
    # Ties keep the lower class id first (a stable sort), as records always listed them.
    probabilities = np.array([0.05, 0.3, 0.05, 0.1234567, 0.3, 0.1, 0.0765433], np.float32)
    result = Classification(probabilities, names)
    assert result.class_id == 1 and result.class_ids.tolist() == [1, 4, 3, 5, 6]
    record = result.to_record()["classification"]
    assert list(record) == ["class_id", "class_name", "score", "top"]
    assert [(t["class_id"], t["class_name"]) for t in record["top"]] == [(1, "c1"), (4, "c4"), (3, "c3"), (5, "c5"),
                                                                         (6, "c6")]
    assert record["top"][2]["score"] == round(float(np.float32(0.1234567)), 6) == 0.123457
    assert {k: record[k] for k in ("class_id", "class_name", "score")} == record["top"][0]


# ----------------------------------------------------------------------------- LabelMap
def test_label_map_record_gives_the_share_of_each_class_by_name():
    labels = np.array([[0, 0, 1], [1, 1, 5]], np.uint8)
    label_map = LabelMap(labels, ("background", "disc"))
    assert json.dumps(label_map.to_record()) == (
        '{"class_pixel_fraction": {"background": 0.333333, "disc": 0.5, "class 5": 0.166667}}')
    assert np.asarray(label_map) is labels and label_map.exact_array() is labels
    assert np.asarray(label_map, np.int64).dtype == np.int64


def test_only_array_results_store_an_array_beside_their_record():
    picture = np.zeros((4, 6, 3), np.uint8)
    assert StylizedImage(picture).to_record() == {} and StylizedImage(picture).exact_array() is picture
    assert _detections().exact_array() is None
    assert Classification(np.array([0.2, 0.8], np.float32), ("a", "b")).exact_array() is None


# ---------------------------------------------------------------------------- annotators
def test_box_annotator_draws_each_box_with_its_label_above_it():
    scene = np.zeros((80, 80, 3), np.uint8)
    detections = Detections([[10, 40, 50, 70]], [0.9], [1], NAMES)
    canvas = np.asarray(BoxAnnotator().annotate(scene, detections))
    color = BOX_PALETTE[1]
    assert tuple(canvas[55, 10]) == color and tuple(canvas[70, 30]) == color  # the left and bottom edges
    assert tuple(canvas[55, 30]) == (0, 0, 0)  # inside the box: the picture
    label = canvas[20:40, 10:60]  # the label sits above the box, white (antialiased) text on the class colour
    assert (label == color).all(axis=-1).any() and (label.min(axis=-1) >= 240).any()
    assert not canvas[:20].any()  # nothing higher up
    assert not scene.any()  # the scene itself is left as it was


def test_class_bar_annotator_writes_the_top_class_on_a_black_bar():
    scene = np.full((64, 64, 3), 128, np.uint8)
    canvas = np.asarray(ClassBarAnnotator().annotate(scene, Classification(np.array([0.2, 0.8], np.float32),
                                                                            ("cat", "dog"))))
    assert tuple(canvas[0, 0]) == (0, 0, 0) and (canvas[:16, :40].min(axis=-1) >= 240).any()
    assert tuple(canvas[60, 60]) == (128, 128, 128)


def test_mask_annotators_colour_the_label_map_and_blend_it_over_objects_only():
    scene = np.full((2, 2, 3), 100, np.uint8)
    label_map = LabelMap(np.array([[0, 1], [9, 0]], np.uint8))
    mask = np.asarray(ColorMaskAnnotator().annotate(scene, label_map))
    assert mask[0, 0].tolist() == [0, 0, 0] and mask[0, 1].tolist() == list(MASK_PALETTE[1])
    assert mask[1, 0].tolist() == list(MASK_PALETTE[9 % len(MASK_PALETTE)])  # ids past the palette cycle
    overlay = np.asarray(MaskOverlayAnnotator().annotate(scene, label_map))
    assert overlay[0, 0].tolist() == [100, 100, 100]  # background shows the picture
    assert overlay[0, 1].tolist() == [165, 62, 88]  # half (230, 25, 75), half 100, rounded to even


def test_stylized_annotator_shows_the_stylized_picture():
    picture = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    shown = StylizedAnnotator().annotate(np.zeros((2, 3, 3), np.uint8), StylizedImage(picture))
    np.testing.assert_array_equal(np.asarray(shown), picture)


# ---------------------------------------------------------------------------------- tasks
SCENE = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
RESULTS = {
    "detection": Detections([[4, 30, 30, 47]], [0.71], [2], NAMES),
    "classification": Classification(np.array([0.1, 0.7, 0.2], np.float32), NAMES),
    "segmentation": LabelMap(np.random.default_rng(1).integers(0, 4, (48, 64), dtype=np.uint8), NAMES),
    "style": StylizedImage(255 - SCENE),
}


@pytest.mark.parametrize("task_name", sorted(RESULTS))
def test_tasks_draw_their_pictures_through_their_annotators(task_name):
    """``render`` draws every picture of ``pictures``; ``video_picture`` is the one named
    ``video_suffix`` (a stream's mp4), and ``record`` is the result's own record."""
    task, result = get_task(task_name), RESULTS[task_name]
    pictures = task.render(SCENE, result)
    assert list(pictures) == list(task.pictures) and task.video_suffix in pictures
    for suffix, annotator in task.pictures.items():
        np.testing.assert_array_equal(np.asarray(pictures[suffix]), np.asarray(annotator.annotate(SCENE, result)))
    np.testing.assert_array_equal(np.asarray(task.video_picture(SCENE, result)),
                                  np.asarray(pictures[task.video_suffix]))
    assert not np.array_equal(np.asarray(pictures[task.video_suffix]), SCENE)  # something was drawn
    assert task.record(result) == result.to_record()
    assert isinstance(task.describe_prediction(result), str)
