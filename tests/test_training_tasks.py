"""Training hooks per task (cvexport/models/training_tasks/): every model's task has them, the
fine-tuning ones read their own dataset format, flips move the annotation with the picture, and
training code reaches no deployment task module."""

from __future__ import annotations

import numpy as np
import pytest

from cvexport.errors import CvexportError
from cvexport.models.dataset_reading import VOID
from cvexport.models.detection_data import DetectionSample
from cvexport.models.segmentation_data import SegmentationSample
from cvexport.models.training_tasks.base import FineTuning
from cvexport.models.training_tasks.registry import fine_tuning_tasks, training_task
from cvexport.models.user_datasets import open_dataset
from cvexport.registry import get_spec, list_models
from test_architecture import import_graph

FORMAT_OF = {"ssd": "coco", "classifier": "imagefolder", "fcn": "voc"}


@pytest.mark.parametrize("name", list_models())
def test_every_models_task_has_training_hooks(name):
    spec = get_spec(name)
    hooks = training_task(spec.task)
    assert hooks.task == spec.task
    if name in FORMAT_OF:
        assert isinstance(hooks, FineTuning) and hooks.data_refusal is None and not hooks.uses_vgg_features
        assert hooks.dataset_format.name == FORMAT_OF[name]
        assert hooks.recipe.batch_size > 0 and 0 < hooks.recipe.lr < 1
    else:  # style: trained for one style image with VGG-19 features, never on --data
        assert not isinstance(hooks, FineTuning) and hooks.uses_vgg_features
        assert hooks.data_refusal.startswith("--data applies to the ssd, classifier and fcn models;")


def test_a_task_without_fine_tuning_is_refused_by_name(tmp_path):
    assert fine_tuning_tasks() == ["detection", "classification", "segmentation"]
    with pytest.raises(CvexportError, match=r"^--data applies to detection, classification and segmentation "
                                            r"models; 'style' is a style model$"):
        open_dataset("style", tmp_path, "style")


def test_detection_flip_mirrors_the_boxes_with_the_picture():
    hooks = training_task("detection")
    image = np.arange(4 * 8 * 3, dtype=np.uint8).reshape(4, 8, 3)
    sample = DetectionSample(image, np.array([[0.0, 0.25, 0.25, 0.75]], np.float32), np.array([1]))
    flipped = hooks.flip(sample)
    assert np.array_equal(flipped.image, image[:, ::-1]) and flipped.image.flags.c_contiguous
    assert flipped.boxes.tolist() == [[0.75, 0.25, 1.0, 0.75]] and flipped.labels.tolist() == [1]
    assert sample.boxes.tolist() == [[0.0, 0.25, 0.25, 0.75]]  # the cached sample is left as it was
    again = hooks.flip(flipped)
    assert np.array_equal(again.image, image) and np.allclose(again.boxes, sample.boxes)


def test_segmentation_flip_mirrors_the_mask_and_its_void_pixels():
    hooks = training_task("segmentation")
    image = np.zeros((2, 3, 3), np.uint8)
    mask = np.array([[1, 0, VOID], [2, 2, 0]], np.uint8)
    flipped = hooks.flip(SegmentationSample(image, mask))
    assert flipped.mask.tolist() == [[VOID, 0, 1], [0, 2, 2]]


def test_segmentation_metric_inputs_leave_void_pixels_out():
    truth = np.array([[1, VOID], [0, 2]], np.uint8)
    predicted = np.array([[1, 1], [2, 2]], np.uint8)
    predictions, truths = training_task("segmentation").metric_inputs([predicted], [truth])
    assert truths[0].tolist() == [1, 0, 2] and predictions[0].tolist() == [1, 2, 2]
    assert training_task("classification").metric_inputs([3], [4]) == ([3], [4])


def test_training_reaches_no_deployment_task_module():
    """Training shares palettes and box filters through cvexport.palette and cvexport.ops, not
    through the task modules that export and read back bundles."""
    deployment = {"cvexport.detection", "cvexport.classification", "cvexport.segmentation", "cvexport.style",
                  "cvexport.tasks", "cvexport.task_base"}
    graph = import_graph()
    reached = {name: sorted(graph[name] & deployment) for name in graph
               if name.startswith("cvexport.models.") and graph[name] & deployment}
    assert reached == {}
