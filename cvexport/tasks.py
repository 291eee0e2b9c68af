"""Tasks: what kind of answer a model gives, and everything in the pipeline that depends on it.

A task is an object of a ``Task`` subclass, registered with ``@register_task`` (as timm
registers models) and found through ``get_task(name)`` (the name a model spec and a bundle's
manifest carry) or iterated with ``all_tasks()``. ``build``, ``verify``, ``bench``, the
runners, ``cvexport run`` and ``cvexport stream`` call the methods below and never branch on
the task. ``Task`` holds the defaults; a subclass overrides what its task does differently.

- Build options: ``options`` (the flags it owns; the CLI makes them), ``check_options``,
  ``describe``, ``out_suffix``, ``options_from_manifest``, ``prepare_weights``.
- The bundle's contract: ``output_contract`` (the outputs, with symbolic dims), ``has_classes``,
  ``postprocess_nms_flavors`` (a ``postprocess`` section and its NMS flavors), ``class_scores_tensor``;
  the manifest schema checks every task's bundles through them, without naming a task.
- Export: ``export_graphs`` (the network at the build's precision + the task's output
  sections, through ``append_sections``), ``core_outputs``, ``int8_keep_float``,
  ``int8_cpu_graphs``, ``manifest_entries``, ``reference_outputs``.
- Data of the model's own dataset: ``sample_images``, ``parity_frames``, ``val_samples``.
- Parity: ``TOLERANCES`` per precision, ``new_parity(precision, manifest)`` (the typed ``cvexport.manifest.Manifest`` in, a ``cvexport.compare.Parity``).
- Results: ``to_predictions`` (raw outputs -> one ``cvexport.results`` object per image, in
  its original pixels), ``METRICS``, ``metric_note``, ``metrics`` (what ``verify`` reports),
  ``record`` (the result's ``to_record()``), ``describe_prediction``, and ``pictures`` (suffix ->
  ``cvexport.annotators`` annotator) drawn by ``render`` and ``video_picture`` (what ``run``
  and ``stream`` write and print).

Task modules import torch and the model code lazily, so listing tasks (the CLI builds its
flags from them) stays cheap.
"""

from __future__ import annotations

from cvexport.errors import CvexportError
# The base class and the decorator, re-exported: a task module or a test needs one import.
from cvexport.task_base import (  # noqa: F401
    _TASKS, EVERY_PRECISION_AND_UINT8, ContractOutput, Task, TaskOption, register_task)


def _builtin_tasks() -> None:
    # The built-in tasks register themselves when their modules are imported.
    from cvexport import classification, detection, segmentation, style  # noqa: F401


def all_tasks() -> list[Task]:
    _builtin_tasks()
    return list(_TASKS.values())


def task_names() -> list[str]:
    return [task.name for task in all_tasks()]


def get_task(name: str) -> Task:
    """The registered task called ``name`` (a model spec's or a bundle manifest's ``task``)."""
    _builtin_tasks()
    if name not in _TASKS:
        raise CvexportError(f"task '{name}' is not supported by this cvexport; upgrade cvexport or rebuild the bundle")
    return _TASKS[name]
