"""Model registry: one spec per model, iterated by the CLI, the tests and the benchmarks.

Specs are cheap to import: the torch model and its weights are built only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from cvexport.errors import CvexportError
from cvexport.models.detection_data import CLASS_NAMES as DETECTION_CLASSES
from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD


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
    metric: str  # name of the task metric reported by training and verify
    trainer: str  # module with default_config(), train(run_dir, config, val_size), save_weights(...)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    defaults: dict[str, Any] = field(default_factory=dict)

    def weights_path(self) -> Path:
        return Path(str(resources.files("cvexport.models") / "weights" / self.weights))

    def load_model(self, weights: str | Path | None = None):
        """The torch model with trained weights (shipped ones unless ``weights`` is given)."""
        from cvexport.checkpoint import load_checkpoint

        path = Path(weights) if weights is not None else self.weights_path()
        tensors, _ = load_checkpoint(path)
        model = self.build()
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        if missing or unexpected:
            raise CvexportError(
                f"checkpoint {path} does not fit model '{self.name}' "
                f"(missing {len(missing)}, unexpected {len(unexpected)} tensors); use weights trained for it"
            )
        return model.eval()


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise CvexportError(f"unknown model '{name}'; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def _build_tinyssd():
    from cvexport.models.tinyssd import TinySSD

    return TinySSD(num_classes=len(DETECTION_CLASSES)).eval()


register_model(
    ModelSpec(
        name="ssd",
        task="detection",
        description="TinySSD multibox detector, 3 shape classes on real photographs, 256x256",
        input_size=(256, 256),
        class_names=DETECTION_CLASSES,
        weights="ssd.safetensors",
        build=_build_tinyssd,
        metric="mAP@0.5",
        trainer="cvexport.models.ssd_training",
        defaults={"score_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 100},
    )
)


def _build_classifier():
    from cvexport.models.classification_data import TARGET_CLASSES
    from cvexport.models.classifier import build_classifier

    return build_classifier(len(TARGET_CLASSES)).eval()


def _build_fcn():
    from cvexport.models.fcn import build_fcn
    from cvexport.models.segmentation_data import SEG_CLASSES

    return build_fcn(len(SEG_CLASSES)).eval()


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
            metric="top-1",
            trainer="cvexport.models.classifier_training",
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
            metric="mIoU",
            trainer="cvexport.models.fcn_training",
        )
    )


_register_resnet_models()


def _build_style_net():
    from cvexport.models.style_net import build_style_net

    return build_style_net().eval()


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
        metric="style loss",
        trainer="cvexport.models.style_training",
    )
)
