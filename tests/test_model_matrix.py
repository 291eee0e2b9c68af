"""The model x build-variant matrix (tests/model_matrix.py), checked on CPU so it cannot be wrong before
it ever reaches a GPU: every variant is one ``cvexport build`` accepts, every precision has the
task's tolerance, every registered model is present, and a failing worker thread fails its test.

Only the build's option checks run here, never a build.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import fields

import pytest

from cvexport.build import INPUT_FORMATS, PRECISIONS, BuildOptions, _check_options
from cvexport.detection import NMS_FLAVORS
from cvexport.detection import TOLERANCES as DETECTION_TOLERANCES
from cvexport.errors import CvexportError
from cvexport.registry import get_spec, list_models
from cvexport.tasks import get_task
from model_matrix import WorkerThreadError, build_matrix, find_case, run_in_threads

MATRIX = build_matrix()
# Fields a variant may set: the build is per model, written where the fixture says, from shipped
# weights; plus the options of its task.
VARIANT_FIELDS = {f.name for f in fields(BuildOptions)} - {"model", "out", "weights", "task_options"}


def _cases(model):
    return [case for case in MATRIX if case.model == model]


def test_every_registered_model_is_in_the_matrix():
    assert list(dict.fromkeys(case.model for case in MATRIX)) == list_models()
    for model in list_models():
        assert _cases(model), model
        assert {case.task for case in _cases(model)} == {get_spec(model).task}
    ids = [case.id for case in MATRIX]
    assert len(ids) == len(set(ids)), "duplicate variants or ambiguous test ids"


def test_a_task_without_variants_is_an_error_not_a_missing_model(monkeypatch):
    monkeypatch.setattr(get_task("style"), "build_variants", ())
    with pytest.raises(LookupError, match="'style'"):
        build_matrix()


@pytest.mark.parametrize("case", MATRIX, ids=[case.id for case in MATRIX])
def test_every_variant_is_accepted_by_the_build_option_checks(case):
    variant = dict(case.options)
    assert "precision" in variant, "declare the precision of every variant"
    spec = get_spec(case.model)
    allowed = VARIANT_FIELDS | {option.name for option in get_task(spec.task).options}
    assert set(variant) <= allowed, set(variant) - allowed
    options = case.build_options()
    assert options.model == case.model
    _check_options(options)
    get_task(spec.task).check_options(spec, options)


@pytest.mark.parametrize("case", MATRIX, ids=[case.id for case in MATRIX])
def test_every_precision_has_the_tasks_own_tolerance(case):
    task = get_task(get_spec(case.model).task)
    assert case.task_object is task
    assert case.precision in task.TOLERANCES, f"task {task.name}: TOLERANCES lacks {case.precision}"
    assert case.tolerance is task.TOLERANCES[case.precision]
    # The tolerance fits the task's own parity (a detection tolerance would not: see below).
    assert task.new_parity(case.precision).tolerance is case.tolerance
    # Statistics that compared nothing prove nothing: they never pass.
    assert task.new_parity(case.precision).passed() is False


def test_a_detection_tolerance_does_not_fit_the_other_tasks():
    """The bug this matrix replaces: detection tolerances applied to every task."""
    for model in list_models():
        task = get_task(get_spec(model).task)
        if task.name != "detection":
            with pytest.raises(AttributeError):
                task.new_parity("fp32").passed(DETECTION_TOLERANCES["fp32"])


@pytest.mark.parametrize("model", list_models())
def test_each_model_covers_every_precision_and_input_format(model):
    cases = _cases(model)
    assert {case.precision for case in cases} == set(PRECISIONS)
    assert {case.build_options().input_format for case in cases} == set(INPUT_FORMATS)
    if get_spec(model).task == "detection":
        pairs = {(case.build_options().task_options.get("nms") or "onnx", case.precision) for case in cases}
        assert pairs >= {(nms, p) for nms in NMS_FLAVORS for p in PRECISIONS}


@pytest.mark.parametrize("model", [m for m in list_models() if get_spec(m).task != "detection"])
def test_the_old_matrix_would_be_refused(model):
    """Negative control: the option checks used above do refuse what the old matrix built
    (--nms on a model that is not a detector), so accepting the new variants means something."""
    spec = get_spec(model)
    with pytest.raises(CvexportError, match="--nms"):
        get_task(spec.task).check_options(spec, BuildOptions.of(model=model, nms="onnx"))
    with pytest.raises(CvexportError, match="precision"):
        _check_options(BuildOptions(model=model, precision="int4"))


def test_find_case_finds_exactly_one():
    case = find_case("ssd", nms="efficient", precision="fp16", input_format="float")
    assert case.kwargs == {"model": "ssd", "nms": "efficient", "precision": "fp16", "input_format": "float"}
    with pytest.raises(LookupError):
        find_case("ssd", precision="fp32")  # both NMS flavors and both input formats


def test_the_gpu_tests_use_this_matrix_and_collect_without_tensorrt():
    had_tensorrt = "tensorrt" in sys.modules
    import test_trt_gpu

    assert [case.id for case in test_trt_gpu.MATRIX] == [case.id for case in MATRIX]
    assert {case.model for case in test_trt_gpu.THREAD_CASES} == set(list_models())
    assert all(case.precision == "fp32" for case in test_trt_gpu.THREAD_CASES)
    if not had_tensorrt:
        assert "tensorrt" not in sys.modules, "test_trt_gpu.py must import tensorrt lazily"


# -- run_in_threads: a worker's failure must fail the test --------------------------------
def test_run_in_threads_returns_results_by_index_from_concurrent_threads():
    seen = []

    def work(index):
        seen.append(threading.get_ident())
        return index * 10

    assert run_in_threads(work, 4, timeout=10) == [0, 10, 20, 30]
    assert len(set(seen)) == 4 and threading.get_ident() not in seen


def test_run_in_threads_fails_when_one_worker_raises():
    def work(index):
        if index == 1:
            raise ValueError("boom in worker 1")
        return index

    with pytest.raises(WorkerThreadError, match=r"1 of 3 worker threads failed: worker-1: ValueError: boom") as info:
        run_in_threads(work, 3, timeout=10)
    assert isinstance(info.value, AssertionError)  # pytest reports it as a test failure
    assert isinstance(info.value.__cause__, ValueError)


def test_run_in_threads_fails_when_every_worker_raises():
    def work(index):
        raise RuntimeError(f"worker {index} failed")

    with pytest.raises(WorkerThreadError, match="3 of 3 worker threads failed") as info:
        run_in_threads(work, 3, timeout=10)
    assert all(f"worker-{i}: RuntimeError" in str(info.value) for i in range(3))


def test_run_in_threads_fails_when_an_assertion_fails_in_a_worker():
    def work(index):
        assert index != 2, "wrong output on thread 2"

    with pytest.raises(WorkerThreadError, match="worker-2: AssertionError: wrong output on thread 2"):
        run_in_threads(work, 3, timeout=10)


def test_run_in_threads_fails_when_a_worker_hangs():
    release = threading.Event()

    def work(index):
        if index == 0:
            release.wait(10)
        return index

    try:
        with pytest.raises(WorkerThreadError, match="worker-0 still running"):
            run_in_threads(work, 2, timeout=0.5)
    finally:
        release.set()


def test_run_in_threads_needs_a_thread():
    with pytest.raises(ValueError):
        run_in_threads(lambda index: index, 0)
