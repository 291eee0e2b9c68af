"""The interface every task's training hooks fill in.

:class:`TrainingTask` is what ``cvexport train`` asks of any task (does its training take VGG-19
features, why does it take no ``--data``). :class:`FineTuning` adds what fine-tuning on a user's
dataset asks (:mod:`cvexport.models.finetune`, :mod:`cvexport.models.user_datasets`): the dataset
format, the samples and truths read from it, the network and its new head, the batches, the
loss, the val predictions and metric, the contact-sheet cells. The loop, the schedule, the run
directory and the checkpoint are the same for every task and stay in ``finetune``.

Modules implementing these import torch and the model code inside the hooks, so looking a task
up (``cvexport verify --data``, the CLI) stays cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from cvexport.models.dataset_reading import DatasetFormat, Entry


@dataclass(frozen=True)
class Recipe:
    """Default optimizer settings of one model's fine-tuning (SGD with momentum 0.9)."""

    batch_size: int
    lr: float  # base rate of the kept layers; the head gets finetune.HEAD_LR_SCALE x
    weight_decay: float
    warmup_steps: int
    epochs: int


class TrainingTask:
    """What ``cvexport train`` needs to know about a task's training."""

    task: str
    uses_vgg_features = False  # the loss measures with VGG-19 features (``--vgg-weights``)
    # Why ``--data`` does not apply (None: it does, see FineTuning).
    data_refusal: str | None = None


class FineTuning(TrainingTask, ABC):
    """Fine-tuning hooks of a task whose models train on a user's dataset in ``dataset_format``."""

    dataset_format: DatasetFormat
    recipe: Recipe
    imagenet_start = False  # the network can start from a torchvision ImageNet ResNet-18 (``--pretrained``)
    weights_start = False  # the whole network can start from a weights file (``--weights``)
    default_start = "shipped"  # the start without --scratch, --pretrained or --weights (see finetune.STARTS)
    contact_columns = 4  # cells a row of the run's contact sheet

    # ------------------------------------------------------------------- data
    @abstractmethod
    def sample(self, entry: Entry, image: np.ndarray, class_count: int, colors: dict) -> Any:
        """The task's sample (see ``models/*_data.py``) of ``entry``, whose picture is ``image``."""

    @abstractmethod
    def fit_to_input(self, sample: Any, size: int) -> tuple[Any, Any]:
        """(``sample`` letterboxed to the ``size`` square network input, the Letterbox that maps back)."""

    @abstractmethod
    def truth(self, entry: Entry, class_count: int, colors: dict) -> Any:
        """The truth of ``entry`` in the form the task's metric takes (in pixels of the picture)."""

    def metric_inputs(self, predictions: list[Any], truths: list[Any]) -> tuple[list[Any], list[Any]]:
        """Predictions and truths as the task's metric takes them (by default as they are)."""
        return predictions, truths

    # ---------------------------------------------------------------- network
    @abstractmethod
    def network(self, spec, num_classes: int, input_side: int, start: str, pretrained=None) -> tuple[Any, list]:
        """(the network for ``num_classes`` from ``start`` ("shipped", "imagenet" or "scratch",
        see ``finetune.STARTS``) with its head freshly initialized, the head's parameters)."""

    def find_pretrained(self, spec, given: str | None):
        """The ``--pretrained`` file (else a torchvision ResNet-18 in the torch hub cache), read and
        checked key by key now, before any work; None when there is none."""
        from cvexport.pretrained import RESNET18, find_pretrained, resnet18_weights

        found = find_pretrained(RESNET18, given, "--pretrained")
        if found is not None:
            resnet18_weights(found)
        return found

    def find_weights(self, spec, given: str, side: int):
        """The ``--weights`` start file, checked (only where ``weights_start``)."""
        raise NotImplementedError

    def architecture(self, model) -> str:
        """What the checkpoint's metadata calls the network."""
        return type(model).__name__

    def checkpoint_metadata(self, model) -> dict[str, Any]:
        """Metadata the checkpoint needs beyond finetune's (class names, size, mean/std, ...) for
        ``cvexport build`` to rebuild the network (by default nothing)."""
        return {}

    # --------------------------------------------------------------- training
    def flip(self, sample: Any) -> Any:
        """``sample`` mirrored left-right (its annotation with it)."""
        return replace(sample, image=flipped(sample.image))

    @abstractmethod
    def batch(self, chosen: Sequence[Any], images, model) -> dict[str, Any]:
        """The loss's batch of the samples ``chosen``, whose images are the tensor ``images``."""

    @abstractmethod
    def loss(self) -> Callable:
        """``loss(model, batch) -> (loss tensor, {name: value shown beside it})``."""

    @abstractmethod
    def contact_cell(self, sample: Any, class_names: Sequence[str]):
        """A contact-sheet cell (PIL image) of ``sample`` with its annotation drawn."""

    # ------------------------------------------------------------- evaluation
    def infer(self, model, images) -> Any:
        """The network's outputs for ``images`` (Tensor[B, 3, H, W], ImageNet-normalized as
        ``ssd_training.images_to_tensor`` gives them) in eval mode, which :meth:`predictions` reads."""
        return model(images)

    @abstractmethod
    def predictions(self, model, outputs, fitted: Sequence[tuple[Any, Any]], size: int) -> list[Any]:
        """The network's ``outputs`` for the ``fitted`` (sample, Letterbox) pairs, as results in
        pixels of each original picture, in the form the metric takes."""

    @abstractmethod
    def scores(self, predictions: list[Any], truths: list[Any], class_names: Sequence[str],
               images: int) -> dict[str, float]:
        """The val metrics (``val_*``) of ``predictions`` against ``truths`` on ``images`` pictures."""


def flipped(image: np.ndarray) -> np.ndarray:
    """``image`` (H, W, ...) mirrored left-right, contiguous."""
    return np.ascontiguousarray(image[:, ::-1])


def shipped_tensors(spec) -> dict[str, Any]:
    """The shipped checkpoint of ``spec`` as float32 (other dtypes as they are)."""
    from cvexport.checkpoint import load_checkpoint

    tensors, _ = load_checkpoint(spec.weights_path())
    return {key: value.float() if value.is_floating_point() else value for key, value in tensors.items()}


def load_kept(model, tensors: dict[str, Any], head: tuple[str, ...], what: str) -> None:
    """Load every tensor but the head's into ``model``; anything else that does not fit is a bug."""
    kept = {key: value for key, value in tensors.items() if not key.startswith(head)}
    missing, unexpected = model.load_state_dict(kept, strict=False)
    missing = [key for key in missing if not key.startswith(head)]
    if missing or unexpected:
        raise RuntimeError(f"{what} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
