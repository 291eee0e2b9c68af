"""Every task's training hooks, by task name (the names of :mod:`cvexport.tasks`)."""

from __future__ import annotations

from cvexport.errors import CvexportError
from cvexport.models.training_tasks.base import FineTuning, TrainingTask
from cvexport.models.training_tasks.classification import CLASSIFICATION
from cvexport.models.training_tasks.detection import DETECTION
from cvexport.models.training_tasks.segmentation import SEGMENTATION
from cvexport.models.training_tasks.style import STYLE

TRAINING_TASKS: dict[str, TrainingTask] = {hooks.task: hooks for hooks in (DETECTION, CLASSIFICATION, SEGMENTATION, STYLE)}


def training_task(task: str) -> TrainingTask:
    """The training hooks of ``task`` (a task without any: the base, which takes no VGG features)."""
    return TRAINING_TASKS.get(task) or TrainingTask()


def fine_tuning_tasks() -> list[str]:
    """The tasks whose models fine-tune on a user's dataset, in registration order."""
    return [name for name, hooks in TRAINING_TASKS.items() if isinstance(hooks, FineTuning)]


def fine_tuning(task: str, refusal: str) -> FineTuning:
    """The fine-tuning hooks of ``task``; a task without them is the one-line ``refusal``."""
    hooks = TRAINING_TASKS.get(task)
    if not isinstance(hooks, FineTuning):
        raise CvexportError(refusal)
    return hooks
