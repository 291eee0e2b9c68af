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
    task: str  # "detection" (classification, segmentation and style follow)
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
