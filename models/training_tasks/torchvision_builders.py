"""Fine-tuning hooks of torchvision's builders (``cvexport train resnet18 --data DIR``, issue 24).

The run is ``train --data``'s (:mod:`cvexport.models.finetune`): the same dataset readers, class
names, run directory, resume, progress and checkpoint. What differs from the project's own
models is the network and its loss, and both are torchvision's:

- detectors (SSD300, SSDlite320, RetinaNet, FCOS) are trained with torchvision's own losses,
  ``loss_dict = model(images, targets)`` in train mode (images float 0..1, boxes in pixels,
  labels = class index + 1: label 0 is the background), and evaluated with torchvision's own
  inference; each picture is fitted to the input as the model's transform fits it (SSD
  stretches to its fixed size, RetinaNet/FCOS keep the aspect, top-left, padded with the mean
  colour, which torchvision's normalized zero padding is);
- classifiers: cross-entropy on the logits; segmenters: cross-entropy on the ``out`` logits
  (auxiliary head off), both with the model's own mean/std.

Starts: random weights (torchvision's own init), ``--pretrained``: a torchvision ImageNet state
dict of the builder's backbone (mobilenet_v3_large for SSDlite, resnet50 for RetinaNet/FCOS,
the classifier itself for a classifier), ``--weights``: weights of the whole network (a
torchvision state dict or a cvexport checkpoint) to continue from. Files are checked key by key
before any work (:func:`cvexport.pretrained.check_keys`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvexport.errors import CvexportError
from cvexport.models.training_tasks.base import Recipe, load_kept
from cvexport.models.training_tasks.classification import ClassificationTraining
from cvexport.models.training_tasks.detection import DetectionTraining
from cvexport.models.training_tasks.segmentation import SegmentationTraining

# The ImageNet network whose weights a builder's backbone takes (``--pretrained``), by builder;
# classifiers take their own. torchvision's builder calls this function by this name.
BACKBONES = {
    "ssdlite320_mobilenet_v3_large": "mobilenet_v3_large",
    "ssd300_vgg16": "vgg16",
    "retinanet_resnet50_fpn": "resnet50",
    "retinanet_resnet50_fpn_v2": "resnet50",
    "fcos_resnet50_fpn": "resnet50",
    "lraspp_mobilenet_v3_large": "mobilenet_v3_large",
    "deeplabv3_mobilenet_v3_large": "mobilenet_v3_large",
    "deeplabv3_resnet50": "resnet50",
    "deeplabv3_resnet101": "resnet101",
    "fcn_resnet50": "resnet50",
    "fcn_resnet101": "resnet101",
}
# An ImageNet classifier's own head, which a backbone file may hold with any shape (the builders drop it).
IMAGENET_HEADS = ("fc.", "classifier.")
# Detectors whose torchvision builder, given backbone weights, freezes the backbone's batch
# norms (FrozenBatchNorm2d) and trains its last 3 stages: the ResNet-FPN ones.
FROZEN_STEMS = {"retinanet_resnet50_fpn": ("conv1.", "bn1.", "layer1."),
                "retinanet_resnet50_fpn_v2": ("conv1.", "bn1.", "layer1."),
                "fcos_resnet50_fpn": ("conv1.", "bn1.", "layer1.")}
UNIT_MEAN = (0.0, 0.0, 0.0)  # what images_to_tensor's normalization is undone to: 0..1 pixels
UNIT_STD = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class BackboneFile:
    """A ``--pretrained`` file: the ImageNet weights of ``architecture`` (a torchvision builder)."""

    path: Path
    architecture: str
    # keys kept whatever their shape: the ImageNet head (a backbone's builder drops it; a
    # classifier gets a new one for the dataset's classes)
    free: tuple[str, ...] = IMAGENET_HEADS

    def describe(self) -> str:
        return f"torchvision {self.architecture} ImageNet weights {self.path} (--pretrained)"

    def record(self) -> dict[str, Any]:
        from cvexport.digest import sha256_file

        return {"file": str(self.path.resolve()), "sha256": sha256_file(self.path), "origin": "--pretrained",
                "architecture": f"torchvision {self.architecture}"}


@dataclass(frozen=True)
class WeightsFile:
    """A ``--weights`` file: the whole network's weights (checked), the class count of its head
    (background included for a detector, as torchvision counts it) and its builder options."""

    path: Path
    state: dict
    head_classes: int
    options: dict

    def describe(self) -> str:
        return f"the weights of {self.path} (--weights)"

    def record(self) -> dict[str, Any]:
        from cvexport.digest import sha256_file

        return {"file": str(self.path.resolve()), "sha256": sha256_file(self.path), "origin": "--weights"}


# ------------------------------------------------------------------------------ the files
def backbone_file(spec, path: Path) -> BackboneFile:
    """What ``--pretrained path`` is for the builder ``spec``: the ImageNet weights of its
    backbone (BACKBONES), or, for a builder that has none listed (a classifier is its own
    ImageNet network), of the builder itself, whose head is then replaced."""
    if spec.name not in BACKBONES:
        return BackboneFile(path, spec.name, head_prefix(spec))
    return BackboneFile(path, BACKBONES[spec.name])


def read_backbone(found: BackboneFile) -> dict:
    """The file's float tensors, checked key by key against torchvision's ``architecture`` (its
    ImageNet head kept whatever its shape: the builders drop it)."""
    import torch
    from torchvision import models

    from cvexport.pretrained import check_keys, load_state_dict_file

    where = f"--pretrained {found.path}"
    state = load_state_dict_file(found.path, where, f"save torch.save(model.state_dict(), path) of a torchvision "
                                                    f"{found.architecture}")
    with torch.device("meta"):
        reference = models.get_model(found.architecture, weights=None)
    shapes = {key: tuple(value.shape) for key, value in reference.state_dict().items()}
    check_keys(state, shapes, found.free, where, found.architecture, builder=f"{found.architecture}()")
    return {key: value.float() if value.is_floating_point() else value for key, value in state.items()}


def read_start_weights(spec, path: Path, side: int) -> WeightsFile:
    """A ``--weights`` file of the whole network: a torchvision state dict (.pth) or a cvexport
    checkpoint (.safetensors: a run's output or a ``build --weights`` conversion), checked."""
    from cvexport.torchvision_zoo import read_weights

    if not path.is_file():
        raise CvexportError(f"--weights {path}: file not found")
    if path.suffix == ".safetensors":
        from cvexport.checkpoint import load_checkpoint
        from cvexport.pretrained import check_keys
        from cvexport.torchvision_zoo import _reference_shapes, head_classes

        state, meta = load_checkpoint(path)
        if meta.get("model") not in (None, spec.name):
            raise CvexportError(f"--weights {path} holds weights of model '{meta.get('model')}', not '{spec.name}'")
        where = f"--weights {path}"
        options = meta.get("builder_options") if isinstance(meta.get("builder_options"), dict) else {}
        count = head_classes(spec.name, state, where)
        check_keys(state, _reference_shapes(spec.name, count, side, **options), (), where, spec.name,
                   builder=f"get_model('{spec.name}')")
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        return WeightsFile(path, state, count, options)
    state, count, options = read_weights(spec.name, path, side)
    return WeightsFile(path, state, count, options)


@contextlib.contextmanager
def _capturing_backbone(name: str, captured: list):
    """While torchvision's builder ``name`` runs, its backbone builder (``BACKBONES[name]``, in
    the builder's module) is wrapped to hand the backbone it builds to ``captured``. The
    detector or segmenter wraps that very network's modules, so loading ImageNet weights into it
    after the build (after torchvision's own re-initialization of an unweighted backbone) loads
    them into the model."""
    from torchvision import models

    module = importlib.import_module(models.get_model_builder(name).__module__)
    attribute = BACKBONES[name]
    original = getattr(module, attribute)

    def build(*args, **kwargs):
        backbone = original(*args, **kwargs)
        captured.append(backbone)
        return backbone

    setattr(module, attribute, build)
    try:
        yield
    finally:
        setattr(module, attribute, original)


def head_prefix(spec) -> tuple[str, ...]:
    """The key prefixes of the class head: what is new when the start's classes are others."""
    from cvexport.torchvision_detectors import PRESETS
    from cvexport.torchvision_zoo import HEAD_KEYS

    if spec.name in PRESETS:
        key = PRESETS[spec.name].class_key  # every level of an SSD head, the last conv of RetinaNet/FCOS
        return (key.split("module_list.")[0] + "module_list.",) if "module_list." in key else (key[: -len("weight")],)

    keys = next(keys for prefix, keys in HEAD_KEYS if spec.name.startswith(prefix))
    return tuple(key[: -len("weight")] for key in keys)


def _freeze_stem(model, name: str) -> None:
    """What torchvision's ResNet-FPN detector builders do to a pretrained backbone: batch norms
    frozen (statistics and affine, FrozenBatchNorm2d there; kept in eval mode here, so the state
    dict stays the one ``build`` loads) and the stem and first stage not trained."""
    from torch import nn

    body = model.backbone.body
    for key, parameter in body.named_parameters():
        if key.startswith(FROZEN_STEMS[name]):
            parameter.requires_grad_(False)
    for module in body.modules():
        if isinstance(module, nn.BatchNorm2d):
            for parameter in module.parameters():
                parameter.requires_grad_(False)
            module.eval()
            module.train = functools.partial(_stay_in_eval, module)  # model.train() leaves it frozen


def _stay_in_eval(module, mode: bool = True):
    return module


# ------------------------------------------------------------------------------- hooks
class TorchvisionTraining:
    """What the three tasks' torchvision hooks share: the builder, the starts, the head, the
    model's own normalization. Mixed in before the task's hooks (data, flip, contact sheet,
    metric are the task's)."""

    family = "torchvision"
    imagenet_start = True
    weights_start = True  # the whole network may start from a file (--weights)
    default_start = "scratch"  # nothing is downloaded: without a file, torchvision's own random init
    background_columns = 0  # a detector's head counts torchvision's background too

    def __init__(self, spec):
        self.spec = spec

    # ------------------------------------------------------------- starts
    def find_pretrained(self, spec, given: str | None):
        """The ``--pretrained`` file checked, or None (no download, no cache lookup: a
        torchvision builder without one starts from its own random init)."""
        if given is None:
            return None
        found = backbone_file(spec, Path(given))
        if not found.path.is_file():
            raise CvexportError(f"--pretrained {found.path}: file not found; pass a torchvision "
                                f"{found.architecture} state dict (.pth)")
        read_backbone(found)  # key-by-key check now, not after the data is read
        return found

    def find_weights(self, spec, given: str, side: int) -> WeightsFile:
        return read_start_weights(spec, Path(given), side)

    def network(self, spec, num_classes, input_side, start, pretrained=None):
        """torchvision's network (its own init), the start's weights loaded; the head's
        parameters (trained at HEAD_LR_SCALE x) only where the rest was loaded: from random
        weights every layer is new and learns at the same rate."""
        options = self.builder_options(start, pretrained)
        captured: list = []
        context = _capturing_backbone(spec.name, captured) if start == "imagenet" and spec.name in BACKBONES \
            else contextlib.nullcontext()
        with context:
            model = spec.make(num_classes, input_side, **options)
        head = head_prefix(spec)
        if start == "imagenet":
            state = read_backbone(pretrained)
            if spec.name in BACKBONES:
                kept = {k: v for k, v in state.items() if not k.startswith(pretrained.free)}
                missing, unexpected = captured[0].load_state_dict(kept, strict=False)
                if unexpected or any(not k.startswith(pretrained.free) for k in missing):
                    raise RuntimeError(f"{pretrained.path} does not fit the captured backbone: "
                                       f"{missing[:3]} {unexpected[:3]}")
                if spec.name in FROZEN_STEMS:
                    _freeze_stem(model, spec.name)
            else:
                load_kept(model, state, head, str(pretrained.path))
        elif start == "weights":
            total = num_classes + self.background_columns
            same_head = pretrained.head_classes == total
            load_kept(model, pretrained.state, () if same_head else head, str(pretrained.path))
        if start == "scratch":
            return model, []
        return model, [p for key, p in model.named_parameters() if key.startswith(head) and p.requires_grad]

    def builder_options(self, start: str, pretrained) -> dict:
        """Builder arguments the start decides (SSDlite's MobileNetV3 tail: full from ImageNet
        weights, as torchvision's reference training builds it; the start file's otherwise)."""
        if start == "weights":
            return dict(pretrained.options)
        from cvexport.torchvision_detectors import start_options

        return start_options(self.spec.name, from_imagenet=start == "imagenet")

    def checkpoint_metadata(self, model) -> dict[str, Any]:
        """What ``cvexport build NAME --weights CKPT`` needs beside class names and size."""
        from cvexport.torchvision_detectors import builder_options

        options = builder_options(self.spec.name, model.state_dict())  # the shapes decide, as for a .pth
        return {"builder_options": options} if options else {}

    def architecture(self, model) -> str:
        return f"torchvision {self.spec.name}"

    # ------------------------------------------------------------- inputs
    def batch(self, chosen, images, model):
        """The task's batch (next in the MRO), its images in the model's own normalization."""
        return super().batch(chosen, self.model_input(images), model)

    def infer(self, model, images):
        return model(self.model_input(images))

    def model_input(self, images):
        """images_to_tensor's batch (ImageNet-normalized) in the model's own normalization."""
        from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD

        return renormalize(images, (IMAGENET_MEAN, IMAGENET_STD), (self.spec.mean, self.spec.std))


def renormalize(images, source: tuple, target: tuple):
    """Tensor[B, 3, H, W] normalized with ``source`` (mean, std) -> normalized with ``target``."""
    import torch

    def column(values):
        return torch.tensor(values, dtype=images.dtype).view(1, 3, 1, 1)

    (mean, std), (new_mean, new_std) = source, target
    if tuple(mean) == tuple(new_mean) and tuple(std) == tuple(new_std):
        return images
    return (images * column(std) + column(mean) - column(new_mean)) / column(new_std)


class TorchvisionClassification(TorchvisionTraining, ClassificationTraining):
    recipe = Recipe(batch_size=32, lr=0.01, weight_decay=1e-4, warmup_steps=20, epochs=10)


class TorchvisionSegmentation(TorchvisionTraining, SegmentationTraining):
    recipe = Recipe(batch_size=16, lr=0.01, weight_decay=1e-4, warmup_steps=30, epochs=10)


class TorchvisionDetection(TorchvisionTraining, DetectionTraining):
    background_columns = 1
    # SGD at batch 8: torchvision's SSDlite recipe (0.15 at batch 192) scaled up for short runs.
    recipe = Recipe(batch_size=8, lr=0.02, weight_decay=4e-5, warmup_steps=50, epochs=10)

    def fit_to_input(self, sample, size):
        """The picture fitted as the model's transform fits it (the spec's fit, the one the
        bundle applies: ``stretch`` for SSD's fixed size, ``top_left`` keeping the aspect and
        padding bottom/right with the mean colour); boxes normalized to the input."""
        from cvexport.images import InputFit
        from cvexport.models.camera_frames import fit_boxes
        from cvexport.models.detection_data import DetectionSample

        canvas, box_map = InputFit.of(self.spec).apply(sample.image, size, size)
        return DetectionSample(canvas, fit_boxes(sample.boxes, box_map, size), sample.labels), box_map

    def batch(self, chosen, images, model):
        """torchvision's targets: boxes in pixels of the input (degenerate ones dropped, which
        its forward refuses), labels = class index + 1."""
        import torch

        from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD

        side = images.shape[-1]
        targets = []
        for sample in chosen:
            boxes = torch.from_numpy(np.asarray(sample.boxes, dtype=np.float32)).reshape(-1, 4) * side
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            labels = torch.from_numpy(np.asarray(sample.labels, dtype=np.int64)).reshape(-1) + 1
            targets.append({"boxes": boxes[keep], "labels": labels[keep]})
        unit = renormalize(images, (IMAGENET_MEAN, IMAGENET_STD), (UNIT_MEAN, UNIT_STD))
        return {"images": unit, "targets": targets}

    def loss(self):
        return detection_losses

    def infer(self, model, images):
        """torchvision's own inference (transform, anchors, postprocess_detections) at the
        evaluation's score threshold, in cvexport's detection contract."""
        from cvexport.models.ssd_training import EVAL_NMS
        from cvexport.ops.detection import NmsConfig
        from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD
        from cvexport.torchvision_detectors import torchvision_detections

        unit = renormalize(images, (IMAGENET_MEAN, IMAGENET_STD), (UNIT_MEAN, UNIT_STD))
        config = NmsConfig(score_threshold=EVAL_NMS.score_threshold, iou_threshold=float(model.nms_thresh),
                           max_detections=int(model.detections_per_img))
        return torchvision_detections(model, list(unit), self.spec.detection_head, config, tuple(unit.shape[-2:]))

    def predictions(self, model, outputs, fitted, size):
        from cvexport.models.training_tasks.detection import detections_in_pictures

        return detections_in_pictures(outputs, fitted, size)


def detection_losses(model, batch):
    """The sum of torchvision's losses (``model(images, targets)`` in train mode), each shown."""
    losses = model.torchvision_losses(list(batch["images"]), batch["targets"])
    return sum(losses.values()), {key: float(value.detach()) for key, value in losses.items()}


HOOKS = {"detection": TorchvisionDetection, "classification": TorchvisionClassification,
         "segmentation": TorchvisionSegmentation}


def torchvision_fine_tuning(spec):
    """The fine-tuning hooks of the torchvision builder ``spec``."""
    return HOOKS[spec.task](spec)
