"""Every task's parity: statistics that compared nothing never pass (issue 22: a detection
build passed with "0/0 detections matched"; the other tasks had the same hole at 0 images)."""

from __future__ import annotations

import numpy as np
import pytest

from cvexport.registry import get_spec
from cvexport.tasks import get_task

# Each task's output of a batch of 0 images, and of 1 image where both runs agree.
OUTPUTS = {
    "classification": lambda n: {"probabilities": np.full((n, 4), 0.25, np.float32)},
    "segmentation": lambda n: {"labels": np.zeros((n, 8, 8), np.int32)},
    "style": lambda n: {"stylized": np.full((n, 3, 8, 8), 0.5, np.float32)},
}


@pytest.mark.parametrize("task_name", sorted(OUTPUTS))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_nothing_compared_never_passes(task_name, precision):
    task = get_task(task_name)
    for parity in (task.new_parity(precision), task.new_parity(precision).add(OUTPUTS[task_name](0),
                                                                            OUTPUTS[task_name](0))):
        assert parity.compared() == 0 and parity.failures == []
        assert not parity.passed()
        assert "nothing compared" in parity.summary() and parity.to_dict()["compared"] == 0
    agreeing = task.new_parity(precision).add(OUTPUTS[task_name](1), OUTPUTS[task_name](1))
    assert agreeing.compared() > 0 and agreeing.passed() and "nothing compared" not in agreeing.summary()


@pytest.mark.parametrize("task_name", ["classification", "segmentation", "style", "detection"])
def test_a_tolerance_of_another_task_is_still_an_error_on_empty_statistics(task_name):
    # The tolerance is read before "nothing compared" answers, so a wrong one is never a quiet False.
    other = get_task("style" if task_name != "style" else "classification").TOLERANCES["fp32"]
    with pytest.raises(AttributeError):
        get_task(task_name).new_parity("fp32").passed(other)


def test_build_parity_with_fewer_pictures_than_a_batch_still_checks_that_batch(build_bundle):
    """A user dataset of fewer pictures than the parity batch (4): the batch is filled with them
    again, rather than compared on nothing (once a silent pass, now a failure)."""
    from cvexport.build import run_parity

    bundle = build_bundle(model="classifier", precision="fp32")
    frames = get_task("classification").parity_frames(get_spec("classifier"))[:1]
    report = run_parity(bundle.path, "fp32", log=lambda line: None, frames=frames)
    checked = report["graphs"]["model.onnx"]
    assert checked["1"]["images"] == 1 and checked["4"]["images"] == 4
    assert report["passed"] and not report["compared_nothing"], report["failures"]
