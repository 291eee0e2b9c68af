"""The Task interface: registered task objects, their own build options and CLI flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cvexport.build import BuildOptions
from cvexport.errors import CvexportError
from cvexport.registry import get_spec, list_models
from cvexport.tasks import Task, all_tasks, get_task, register_task, task_names


def test_every_model_has_a_registered_task_object():
    assert set(task_names()) == {"detection", "classification", "segmentation", "style"}
    for model in list_models():
        task = get_task(get_spec(model).task)
        assert isinstance(task, Task) and task.name == get_spec(model).task
        # What the base class cannot know, every task says itself.
        assert task.core_outputs and task.TOLERANCES and task.METRICS and task.build_variants


def test_a_task_name_is_registered_once():
    class Again(Task):
        name = "detection"

    with pytest.raises(ValueError, match="registered twice"):
        register_task(Again)


def test_unknown_task_is_a_one_line_error():
    with pytest.raises(CvexportError, match="task 'pose' is not supported"):
        get_task("pose")


def test_build_options_split_fields_from_task_options():
    options = BuildOptions.of(model="ssd", precision="fp16", nms="efficient", score_threshold=None)
    assert options.precision == "fp16" and dict(options.task_options) == {"nms": "efficient"}
    assert options.resolved_out() == Path("bundles/ssd-fp16-efficient")
    assert BuildOptions.of(model="fcn").resolved_out() == Path("bundles/fcn-fp32")


def test_cli_flags_are_the_tasks_own_options():
    from cvexport.cli import make_parser

    parser = make_parser()
    owned = {option.name: task.name for task in all_tasks() for option in task.options}
    assert owned == {"nms": "detection", "score_threshold": "detection", "iou_threshold": "detection",
                     "max_detections": "detection", "style": "style"}
    args = parser.parse_args(["build", "ssd", "--nms", "efficient", "--max-detections", "50", "--style", "x.jpg"])
    assert (args.nms, args.max_detections, args.style) == ("efficient", 50, "x.jpg")


@pytest.mark.parametrize("model,values,owner", [
    ("fcn", {"nms": "onnx"}, "--nms applies only to detection models"),
    ("classifier", {"style": "x.jpg", "iou_threshold": 0.5}, "--style, --iou-threshold apply only to style models"),
    ("ssd", {"style": "x.jpg"}, "--style applies only to style models"),
])
def test_an_option_of_another_task_is_refused_by_the_model_s_task(model, values, owner):
    spec = get_spec(model)
    with pytest.raises(CvexportError, match=re.escape(owner)):
        get_task(spec.task).check_options(spec, BuildOptions.of(model=model, **values))


def test_own_options_are_checked_by_their_task():
    spec = get_spec("ssd")
    with pytest.raises(CvexportError, match="unknown --nms 'fast'"):
        get_task("detection").check_options(spec, BuildOptions.of(model="ssd", nms="fast"))
    style = get_spec("style")
    with pytest.raises(CvexportError, match="--weights and --style exclude each other"):
        get_task("style").check_options(style, BuildOptions.of(model="style", style="a.jpg", weights="w.safetensors"))


def test_the_pipeline_never_probes_a_task():
    """The build path reaches tasks only through the Task interface: no hasattr/getattr probing
    of a task and no table naming which task owns which option."""
    root = Path(__file__).resolve().parents[1] / "cvexport"
    pattern = re.compile(r"hasattr\(task|getattr\(task|TASK_ONLY")
    hits = [f"{path.relative_to(root)}:{n}" for path in root.rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
