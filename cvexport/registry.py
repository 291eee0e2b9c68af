"""Model registry: one spec per model, iterated by the CLI, the tests and the benchmarks.

Specs are cheap to import: the torch model and its weights are built only when asked for.

A registered spec describes the shipped weights. Weights fine-tuned on a user's dataset
(``cvexport train MODEL --data DIR``) record their class names and input size in the
checkpoint's metadata; :meth:`ModelSpec.for_weights` gives the spec of such a checkpoint (same
model, the checkpoint's classes and size, the network built for them), and :meth:`ModelSpec.load_model`
builds the network the checkpoint was trained as, so every consumer of a spec (build, the task
sections, the torch runner, bench) sees the classes the weights were trained for.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from cvexport.errors import CvexportError, counted
from cvexport.models.detection_data import CLASS_NAMES as DETECTION_CLASSES
from cvexport.models.tinyssd_defaults import BUNDLE_DEFAULTS as SSD_DEFAULTS
from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD
from cvexport.user_module import PREFIX as MODULE_PREFIX

MAX_SIDE = 1024  # the largest input side a network is built for (``train --input-size``, checkpoints)


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline needs to know about one reference model."""

    name: str
    task: str  # "detection", "classification", "segmentation" or "style" (see cvexport.tasks)
    description: str
    input_size: tuple[int, int]  # (height, width) the network takes
    class_names: tuple[str, ...]
    weights: str  # file name under cvexport.models/weights
    build: Callable[[], Any]  # returns an untrained torch.nn.Module in eval mode
    # () -> the model's training recipe: a module with default_config(), train(run_dir, phases,
    # val_size) and save_weights(model, out, record, phases), imported only when called
    trainer: Callable[[], Any]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    defaults: dict[str, Any] = field(default_factory=dict)
    # (num_classes, input side) -> untrained module in eval mode, for weights trained on other
    # classes or at another size; None: the model has no class list (style)
    make: Callable[[int, int], Any] | None = None
    # the dataset the weights were trained on (checkpoint metadata "dataset"); None: the shipped data
    dataset: dict[str, Any] | None = None
    # Input sides the network takes (see input_side_rule): at least min_side, a multiple of side_multiple.
    min_side: int = 32
    side_multiple: int = 1
    max_side: int = MAX_SIDE
    # "cvexport": a model of this project (its own data, shipped weights); "torchvision": a
    # torchvision builder with weights only from the user's file (see cvexport.torchvision_zoo)
    family: str = "cvexport"
    # detection: what the network outputs and how they become detections (None: TinySSD's head,
    # cvexport.detection_heads.TINYSSD_HEAD)
    detection_head: Any = None
    # How an image becomes the network input, as the weights were trained: one of
    # cvexport.images.FITS ("letterbox", "stretch", "top_left", "resize_crop"); crop_fraction
    # (crop side / resize side) for "resize_crop" only. Recorded in the manifest, applied by
    # run, stream, predict, bench and INT8 calibration.
    fit: str = "letterbox"
    crop_fraction: float | None = None

    @property
    def has_own_data(self) -> bool:
        """The model comes with generated data of its own (parity, calibration, metrics); else
        photographs stand in and its metric needs the user's data."""
        return self.family == "cvexport"

    def input_side_rule(self, side: Any) -> str | None:
        """None when the network takes a ``side`` x ``side`` input, else the rule it breaks (one
        rule for ``train --input-size`` and for checkpoints)."""
        strided = self.side_multiple > 1
        if (isinstance(side, int) and not isinstance(side, bool) and self.min_side <= side <= self.max_side
                and not side % self.side_multiple):
            return None
        if self.min_side == self.max_side:
            return f"of exactly {self.min_side} (the network's fixed size)"
        return (f"a multiple of {self.side_multiple} in {self.min_side}..{self.max_side}" if strided
                else f"in {self.min_side}..{self.max_side}")

    def weights_path(self) -> Path:
        return Path(str(resources.files("cvexport.models") / "weights" / self.weights))

    def with_classes(self, class_names: Sequence[str], input_side: int | None = None,
                     description: str | None = None, dataset: dict[str, Any] | None = None) -> "ModelSpec":
        """This model for other classes (and input size): its network is built for them."""
        if self.make is None:
            raise CvexportError(f"model '{self.name}' has no class list to replace")
        side = self.input_size[0] if input_side is None else int(input_side)
        names = tuple(class_names)
        return replace(self, class_names=names, input_size=(side, side),
                       build=functools.partial(self.make, len(names), side),
                       description=description or self.description, dataset=dataset)

    def for_weights(self, weights: str | Path | None) -> "ModelSpec":
        """The spec of the checkpoint ``weights`` (None: the shipped one, this spec): its class
        names and input size where its metadata records others (weights fine-tuned on a user's
        dataset), else this spec. A checkpoint of another model is a one-line error."""
        from cvexport.checkpoint import read_metadata

        if self.family == "module":
            return _module_spec(self.name, weights)
        if weights is None:
            if self.family == "torchvision":
                raise CvexportError(f"'{self.name}' is a torchvision builder and cvexport downloads nothing: pass your "
                                    f"weights, 'cvexport build {self.name} --weights FILE.pth' (a state dict of "
                                    f"torchvision.models.get_model('{self.name}'), optionally --classes NAMES.txt)")
            return self
        path = Path(weights)
        meta = read_metadata(path)
        _refuse_resume_state(path, meta, self.name)
        trained_for = meta.get("model")
        if trained_for is not None and trained_for != self.name:
            raise CvexportError(f"checkpoint {path} holds weights of model '{trained_for}', not '{self.name}'; "
                                f"pass it to 'cvexport build {trained_for}' or use weights trained for '{self.name}'")
        names = meta.get("class_names")
        side = meta.get("input_size")
        dataset = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else None
        if self.make is None or names is None:
            return self
        if not (isinstance(names, list) and names and all(isinstance(n, str) and n.strip() for n in names)
                and len(set(names)) == len(names)):
            raise CvexportError(f"checkpoint {path} records class_names {str(names)[:120]}, not a list of distinct "
                                "non-empty names; re-train it with 'cvexport train'")
        if side is not None and (rule := self.input_side_rule(side)) is not None:
            raise CvexportError(f"checkpoint {path} records input_size {side!r}, not a side {rule} for "
                                f"{self.name}; re-train it with 'cvexport train'")
        if tuple(names) == self.class_names and side in (None, self.input_size[0]) and dataset is None:
            return self
        side = side or self.input_size[0]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        trained_on = (f"the {dataset.get('format', 'user')} dataset '{Path(str(dataset.get('path', '?'))).name}'"
                      if dataset is not None else f"checkpoint {path.name}")
        description = (f"{meta.get('architecture', self.name)} fine-tuned on {trained_on}, {counted(len(names), 'class', 'classes')} "
                       f"({shown}), {side}x{side}")
        if self.family == "torchvision":
            # builder arguments the weights' shapes decided (SSDlite's tail)
            options = meta.get("builder_options")
            if isinstance(options, dict) and options:
                self = replace(self, make=functools.partial(self.make, **options))
            state_dict = meta.get("state_dict") if isinstance(meta.get("state_dict"), dict) else {}
            description = (f"torchvision {self.name} with the weights of {state_dict.get('file', path.name)}, "
                           f"{counted(len(names), 'class', 'classes')} ({shown}), {side}x{side}")
        return self.with_classes(names, side, description, dataset)

    def load_model(self, weights: str | Path | None = None):
        """The torch model with trained weights (shipped ones unless ``weights`` is given), built
        for the classes and input size the checkpoint records (see :meth:`for_weights`)."""
        from cvexport.checkpoint import load_checkpoint

        path = Path(weights) if weights is not None else self.weights_path()
        spec = self.for_weights(path) if weights is not None else self
        tensors, _ = load_checkpoint(path)
        model = spec.build()
        try:
            missing, unexpected = model.load_state_dict(tensors, strict=False)
        except RuntimeError:  # a tensor of another shape (another class count than recorded)
            missing, unexpected = ["(shape mismatch)"], []
        if missing or unexpected:
            raise CvexportError(
                f"checkpoint {path} does not fit model '{self.name}' "
                f"(missing {len(missing)}, unexpected {len(unexpected)} tensors); use weights trained for it"
            )
        return model.eval()


def _refuse_resume_state(path: Path, meta: dict[str, Any], model: str) -> None:
    """A run's resume state (RUN_DIR/last.safetensors: the network's tensors under "model.", the
    optimizer's under "optim.") holds weights but no deployable checkpoint: say so and name the
    file to build from, not "does not fit" (every key has a prefix the network lacks)."""
    from cvexport.models.training import is_resume_state

    if not is_resume_state(meta):
        return
    # Fine-tuning writes RUN_DIR/MODEL.safetensors by default; the shipped recipes resume from RUN_DIR/phaseN/.
    candidates = [path.parent / f"{model}.safetensors", path.parent.parent / f"{model}.safetensors"]
    found = next((c for c in candidates if c.is_file()), None)
    where = (f"build from {found}" if found is not None else
             f"the run writes those to {candidates[0]} (or its --out) when it finishes: run the same "
             f"'cvexport train {model} ...' again to resume and finish it, then build from that file")
    raise CvexportError(f"checkpoint {path} is the resume state of a training run (step {meta.get('step')}, with "
                        f"its optimizer state), not weights to build from; {where}")


_REGISTRY: dict[str, ModelSpec] = {}


def bundle_spec(bundle) -> ModelSpec:
    """The spec of the weights a bundle was built from (their class names and input size)."""
    spec = get_spec(bundle.manifest.model)
    return spec.for_weights(bundle.weights_path) if bundle.manifest.weights is not None else spec


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """The project's own models (each with shipped weights); torchvision's builders are
    models too (:func:`torchvision_models`), resolved by name in :func:`get_spec`."""
    return sorted(_REGISTRY)


def torchvision_models() -> dict[str, str]:
    """torchvision builder name -> task, for the builders cvexport builds with the user's weights."""
    from cvexport.torchvision_zoo import builder_names

    return {name: task for name, task in builder_names().items() if name not in _REGISTRY}


def get_spec(name: str) -> ModelSpec:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(MODULE_PREFIX):
        return _module_name_spec(name)
    if name in torchvision_models():
        return _torchvision_spec(name)
    from cvexport.torchvision_zoo import unsupported_detectors

    if name in unsupported_detectors():
        raise CvexportError(f"'{name}' is a two-stage torchvision detector, which cvexport does not build: its box head "
                            "runs after the first NMS, so the network cannot end before the post-processing; use a "
                            "one-stage detector (ssdlite320_mobilenet_v3_large, retinanet_resnet50_fpn, fcos_resnet50_fpn)")
    raise CvexportError(f"unknown model '{name}'; choose one of: {', '.join(list_models())}, or a torchvision "
                        "classifier, segmenter or one-stage detector builder name (see 'cvexport list')")


@functools.lru_cache(maxsize=None)
def _torchvision_spec(name: str) -> ModelSpec:
    """The spec of a torchvision builder: its eval transform's mean/std, input side and fit
    (classifiers: resize and centre crop; segmenters: the letterbox), no classes and no weights
    until the user's file gives them (:meth:`ModelSpec.for_weights`)."""
    from cvexport import torchvision_zoo as zoo

    task = torchvision_models()[name]
    pre = zoo.preprocessing(name)
    side = pre["side"]
    make = functools.partial(zoo.build_network, name)
    detector: dict[str, Any] = {}
    if task == "detection":
        from cvexport.torchvision_detectors import PRESETS, defaults

        found, preset = defaults(name), PRESETS[name]
        # The class names are labels 1..N; torchvision counts the background too.
        make = functools.partial(_with_background, make)
        detector = {"detection_head": preset.head, "defaults": {key: found[key] for key in
                                                                ("score_threshold", "iou_threshold", "max_detections")},
                    # FPN strides: torchvision pads its input to a multiple of 32
                    "min_side": side if preset.fixed_side else 128, "max_side": side if preset.fixed_side else MAX_SIDE,
                    "side_multiple": 1 if preset.fixed_side else 32}
    return ModelSpec(
        name=name, task=task, input_size=(side, side), class_names=(), weights="",
        description=f"torchvision {name} {task}, weights from your file (--weights), {side}x{side}",
        build=functools.partial(make, 1, side), trainer=_no_recipe, mean=pre["mean"], std=pre["std"],
        make=make, family="torchvision", fit=pre["fit"], crop_fraction=pre["crop_fraction"], **detector)


def _with_background(make: Callable, num_classes: int, side: int, **options):
    return make(num_classes + 1, side, **options)


def _module_name_spec(name: str) -> ModelSpec:
    """The spec of a ``build --module`` model's name alone: a user's module is described by its
    checkpoint (cvexport.user_module), so this spec's :meth:`ModelSpec.for_weights` is the real one
    (a bundle's weights, :func:`bundle_spec`); it says so rather than guess a task or a size."""
    from cvexport import user_module

    return ModelSpec(name=name, task="(recorded in the weights)", input_size=(0, 0), class_names=(), weights="",
                     description=f"your module {name[len(MODULE_PREFIX):]}; its task, size and classes are in its "
                                 "checkpoint", build=_module_needs_weights, trainer=user_module.no_recipe,
                     family=user_module.FAMILY)


def _module_needs_weights():
    raise CvexportError("a module build's network is made from its checkpoint: pass the weights (a bundle's "
                        "weights.safetensors)")


def _module_spec(name: str, weights: str | Path | None) -> ModelSpec:
    """The spec a module checkpoint records (cvexport.user_module.spec_fields)."""
    from cvexport import user_module
    from cvexport.checkpoint import read_metadata

    if weights is None:
        _module_needs_weights()
    path = Path(weights)
    meta = read_metadata(path)
    if meta.get("model") != name:
        raise CvexportError(f"checkpoint {path} holds weights of model '{meta.get('model')}', not '{name}'")
    return ModelSpec(**user_module.spec_fields(path, meta))


def _no_recipe():
    raise CvexportError("a torchvision builder has no data of its own to train on: fine-tune it on yours, "
                        "'cvexport train NAME --data DIR' (optionally --pretrained BACKBONE.pth or --weights FILE)")


def _make_tinyssd(num_classes: int, input_side: int):
    from cvexport.models.tinyssd import TinySSD

    return TinySSD(num_classes=num_classes, input_size=input_side).eval()


def _build_tinyssd():
    return _make_tinyssd(len(DETECTION_CLASSES), 256)


def _ssd_recipe():
    from cvexport.models import ssd_training

    return ssd_training


register_model(
    ModelSpec(
        name="ssd",
        task="detection",
        description="TinySSD multibox detector, 3 shape classes on real photographs, 256x256",
        input_size=(256, 256),
        class_names=DETECTION_CLASSES,
        weights="ssd.safetensors",
        build=_build_tinyssd,
        trainer=_ssd_recipe,
        defaults=SSD_DEFAULTS,
        make=_make_tinyssd,
        # TinySSD halves the input six times before its last stage (64 at least), and its anchors
        # assume sides that halve evenly.
        min_side=64,
        side_multiple=32,
    )
)


def _make_classifier(num_classes: int, input_side: int = 0):
    # ResNet-18 pools globally: any input side fits the same network.
    from cvexport.models.classifier import build_classifier

    return build_classifier(num_classes).eval()


def _build_classifier():
    from cvexport.models.classification_data import TARGET_CLASSES

    return _make_classifier(len(TARGET_CLASSES))


def _make_fcn(num_classes: int, input_side: int = 0):
    # Fully convolutional: any input side that is a multiple of 32 fits the same network.
    from cvexport.models.fcn import build_fcn

    return build_fcn(num_classes).eval()


def _build_fcn():
    from cvexport.models.segmentation_data import SEG_CLASSES

    return _make_fcn(len(SEG_CLASSES))


def _classifier_recipe():
    from cvexport.models import classifier_training

    return classifier_training


def _fcn_recipe():
    from cvexport.models import fcn_training

    return fcn_training


def _register_resnet_models() -> None:
    # Class lists and sizes come from the data modules, which import only numpy and Pillow.
    from cvexport.models import classification_data, segmentation_data

    register_model(
        ModelSpec(
            name="classifier",
            task="classification",
            description=f"ResNet-18 fine-tuned from a synthetic source task, {len(classification_data.TARGET_CLASSES)} "
                        f"shape classes on real photographs, {classification_data.INPUT_SIZE}x{classification_data.INPUT_SIZE}",
            input_size=(classification_data.INPUT_SIZE, classification_data.INPUT_SIZE),
            class_names=classification_data.TARGET_CLASSES,
            weights="classifier.safetensors",
            build=_build_classifier,
            trainer=_classifier_recipe,
            make=_make_classifier,
        )
    )
    register_model(
        ModelSpec(
            name="fcn",
            task="segmentation",
            description=f"FCN on a ResNet-18 encoder, background + {len(segmentation_data.SEG_CLASSES) - 1} shape classes "
                        f"on real photographs, {segmentation_data.INPUT_SIZE}x{segmentation_data.INPUT_SIZE}",
            input_size=(segmentation_data.INPUT_SIZE, segmentation_data.INPUT_SIZE),
            class_names=segmentation_data.SEG_CLASSES,
            weights="fcn.safetensors",
            build=_build_fcn,
            trainer=_fcn_recipe,
            make=_make_fcn,
            side_multiple=32,  # the FCN's stride
        )
    )


_register_resnet_models()


def _build_style_net():
    from cvexport.models.style_net import build_style_net

    return build_style_net().eval()


def _style_recipe():
    from cvexport.models import style_training

    return style_training


# models.style_net.STYLE_INPUT_SIZE, written out so listing models does not import torch
# (tests/test_task_cli.py::test_registry_style_size_is_the_networks checks the two agree).
STYLE_INPUT_SIZE = 256

register_model(
    ModelSpec(
        name="style",
        task="style",
        description=f"feed-forward style network (Johnson-style) trained for one style image, "
                    f"{STYLE_INPUT_SIZE}x{STYLE_INPUT_SIZE}",
        input_size=(STYLE_INPUT_SIZE, STYLE_INPUT_SIZE),
        class_names=(),
        weights="style.safetensors",
        build=_build_style_net,
        trainer=_style_recipe,
    )
)
