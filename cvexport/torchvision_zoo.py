"""torchvision's classifier and segmenter builders as cvexport models, with the user's own weights.

A user who trained ``resnet18`` or ``lraspp_mobilenet_v3_large`` with torchvision (its reference
scripts, or a notebook) brings the state dict; cvexport builds the same network offline
(``weights=None, weights_backbone=None``: nothing is downloaded), reads the number of classes
from the head's shapes, checks the file key by key (:func:`cvexport.pretrained.check_keys`) and
rewrites it as a safetensors checkpoint with the metadata every other cvexport checkpoint has
(model, class names, input size), so the bundle, the torch backend and bench reload it the way
they reload a fine-tuned checkpoint.

The builder names come from torchvision's own source: :func:`builder_names` reads the
``@register_model()`` decorations without importing torch or torchvision (importing them takes
seconds, and ``cvexport list`` must stay fast); tests check the names against
``torchvision.models.list_models``.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from pathlib import Path
from typing import Any, Mapping

from cvexport.errors import CvexportError

FAMILY = "torchvision"
# The torchvision packages whose builders are cvexport models: folder under torchvision/ -> task.
# The segmentation package's builders share one API: a backbone to leave unloaded, an auxiliary
# head to turn off, and a dict of outputs.
SEGMENTATION_FOLDER = "models/segmentation"
DETECTION_FOLDER = "models/detection"
FOLDER_TASKS = {"models": "classification", SEGMENTATION_FOLDER: "segmentation", DETECTION_FOLDER: "detection"}
# Default input side of a segmenter: torchvision's SemanticSegmentation transform resizes the
# shorter side to 520; cvexport letterboxes to a square of that side.
SEGMENTATION_SIDE = 520
# A checkpoint's auxiliary head (fcn/deeplabv3 trained with --aux-loss): used only in training,
# the network is built with aux_loss=False and the keys are dropped.
AUX_PREFIX = "aux_classifier."
# The head tensor whose dim 0 is the class count, by builder-name prefix (first match wins).
HEAD_KEYS = (
    ("lraspp_", ("classifier.low_classifier.weight", "classifier.high_classifier.weight")),
    ("fcn_", ("classifier.4.weight",)),
    ("deeplabv3_", ("classifier.4.weight",)),
    ("mobilenet_v3_", ("classifier.3.weight",)),
    ("mobilenet_v2", ("classifier.1.weight",)),
    ("efficientnet_", ("classifier.1.weight",)),
    ("mnasnet", ("classifier.1.weight",)),
    ("squeezenet", ("classifier.1.weight",)),
    ("convnext_", ("classifier.2.weight",)),
    ("vgg", ("classifier.6.weight",)),
    ("alexnet", ("classifier.6.weight",)),
    ("densenet", ("classifier.weight",)),
    ("maxvit_", ("classifier.5.weight",)),
    ("swin_", ("head.weight",)),
    ("vit_", ("heads.head.weight",)),
    ("", ("fc.weight",)),  # resnet, resnext, wide_resnet, regnet, googlenet, inception, shufflenet
)


def _torchvision_dir() -> Path | None:
    found = importlib.util.find_spec("torchvision")
    return Path(found.origin).parent if found is not None and found.origin else None


def builder_names() -> dict[str, str]:
    """Builder name -> task, for every registered torchvision classifier and segmenter and the
    one-stage detectors (:data:`cvexport.torchvision_detectors.PRESETS`), read from
    torchvision's source (no import). Empty when torchvision is not installed."""
    from cvexport.torchvision_detectors import PRESETS

    return {name: FOLDER_TASKS[folder] for name, folder in _builder_folders().items()
            if folder != DETECTION_FOLDER or name in PRESETS}


def unsupported_detectors() -> list[str]:
    """torchvision's detection builders cvexport does not build (the two-stage R-CNN family)."""
    from cvexport.torchvision_detectors import PRESETS

    return [name for name, folder in _builder_folders().items() if folder == DETECTION_FOLDER and name not in PRESETS]


@functools.lru_cache(maxsize=None)
def _builder_folders() -> dict[str, str]:
    """Builder name -> the torchvision folder that registers it."""
    root = _torchvision_dir()
    names: dict[str, str] = {}
    if root is None:
        return names
    for folder in FOLDER_TASKS:
        for path in sorted((root / folder).glob("*.py")):
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                if isinstance(node, ast.FunctionDef) and any(_is_register(d) for d in node.decorator_list):
                    names[node.name] = folder
    return dict(sorted(names.items()))


def _is_register(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Name) and target.id == "register_model"


def families(names) -> dict[str, list[str]]:
    """Names grouped by family (the name's leading letters; deeplabv3 and wide_resnet whole),
    in natural order (resnet18 before resnet101), for a compact list."""
    def natural(name: str):
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]

    grouped: dict[str, list[str]] = {}
    for name in sorted(names, key=natural):
        grouped.setdefault(re.match(r"deeplabv3|wide_resnet|[a-z]+", name).group(0), []).append(name)
    return grouped


# ---------------------------------------------------------------------------- preprocessing
@functools.lru_cache(maxsize=None)
def preprocessing(name: str) -> dict[str, Any]:
    """mean, std and sizes of the builder's default weights' eval transform (data only: the
    weights enum is read, nothing is downloaded). ``side``: the input side cvexport builds for
    by default (the classifier's crop size, 520 for a segmenter). ``fit`` and ``crop_fraction``:
    how an image becomes the input (:data:`cvexport.images.FITS`): a classifier's transform
    resizes the shorter side to ``resize_size`` and centre-crops ``crop_size``, which at any side
    is resize_crop with crop_fraction crop / resize (224 of 256: 0.875); segmenters keep the
    letterbox (their transform resizes the shorter side and takes the whole picture)."""
    from torchvision import models

    if _builder_folders().get(name) == DETECTION_FOLDER:
        from cvexport.torchvision_detectors import PRESETS, defaults

        found = defaults(name)
        return {"mean": found["mean"], "std": found["std"], "side": PRESETS[name].side, "fit": PRESETS[name].fit,
                "crop_fraction": None}
    transform = models.get_model_weights(name).DEFAULT.transforms()
    crop = getattr(transform, "crop_size", None)
    resize = list(transform.resize_size) if transform.resize_size else None
    cropped = bool(crop) and bool(resize)
    return {"mean": tuple(float(v) for v in transform.mean), "std": tuple(float(v) for v in transform.std),
            "resize_size": resize, "crop_size": list(crop) if crop else None,
            "side": int(crop[0]) if crop else SEGMENTATION_SIDE,
            "fit": "resize_crop" if cropped else "letterbox",
            "crop_fraction": min(1.0, int(crop[0]) / int(resize[0])) if cropped else None}


# ------------------------------------------------------------------------------ networks
@functools.lru_cache(maxsize=None)
def _out_only(cls: type) -> type:
    """A subclass of a torchvision segmenter that returns its ``"out"`` logits, not the dict:
    the exporter and the task want one tensor. Same state dict (no wrapper prefix)."""
    def forward(self, x):
        return cls.forward(self, x)["out"]

    return type(f"{cls.__name__}Out", (cls,), {"forward": forward, "__module__": __name__})


def build_network(name: str, num_classes: int, side: int, **options):
    """The untrained network (eval mode) for ``num_classes`` at ``side`` x ``side``, built
    offline. Segmenters return their ``out`` logits only (auxiliary head off); detectors their
    raw head tensors (:mod:`cvexport.torchvision_detectors`, ``num_classes`` with the background
    as torchvision counts it; ``options`` from :func:`builder_options`)."""
    from torchvision import models

    if _builder_folders().get(name) == DETECTION_FOLDER:
        from cvexport.torchvision_detectors import build_detector

        return build_detector(name, num_classes, side, **options)

    segmenter = _builder_folders().get(name) == SEGMENTATION_FOLDER
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if segmenter:
        kwargs.update(weights_backbone=None, aux_loss=False)
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    if name.startswith("vit_"):
        kwargs["image_size"] = side  # positional embeddings of this size
    if name.startswith("maxvit_"):
        kwargs["input_size"] = (side, side)
    model = models.get_model(name, **kwargs)
    if segmenter:
        model.__class__ = _out_only(type(model))
    return model.eval()


def _reference_shapes(name: str, num_classes: int, side: int, **options) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the network's state dict, built on the meta device (no memory, no init);
    on the CPU for builders whose init cannot run on meta (regnet copies a meta tensor)."""
    import torch

    try:
        with torch.device("meta"):
            model = build_network(name, num_classes, side, **options)
    except (NotImplementedError, RuntimeError):
        model = build_network(name, num_classes, side, **options)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def head_classes(name: str, state: Mapping[str, Any], where: str) -> int:
    """The class count the state dict's head was trained for (dim 0 of its head tensors; a
    detector's counts its background, as torchvision does)."""
    if _builder_folders().get(name) == DETECTION_FOLDER:
        from cvexport.torchvision_detectors import PRESETS

        key, per_location = PRESETS[name].class_key, PRESETS[name].anchors_per_location
        if key not in state:
            raise CvexportError(f"{where} has no {key!r}, the class head of a torchvision {name}; pass the state dict of "
                                f"torchvision.models.get_model('{name}') saved with torch.save(model.state_dict(), path)")
        rows = int(state[key].shape[0])
        if rows % per_location or rows // per_location < 2:
            raise CvexportError(f"{where}: {key!r} has {rows} rows, not {per_location} anchors x (classes + background) "
                                f"of a torchvision {name}")
        return rows // per_location
    keys = next(keys for prefix, keys in HEAD_KEYS if name.startswith(prefix))
    counts = []
    for key in keys:
        if key not in state:
            raise CvexportError(f"{where} has no {key!r}, the head of a torchvision {name}; pass the state dict of "
                                f"torchvision.models.get_model('{name}') saved with torch.save(model.state_dict(), path)")
        counts.append(int(state[key].shape[0]))
    if len(set(counts)) != 1 or counts[0] < 1:
        raise CvexportError(f"{where}: the head tensors {', '.join(keys)} disagree on the class count ({counts})")
    return counts[0]


def read_weights(name: str, path: Path, side: int) -> tuple[dict[str, Any], int, dict[str, Any]]:
    """The file's checked float tensors (auxiliary head dropped), the class count of its head
    and the builder options its shapes decide (SSDlite's tail)."""
    from cvexport.pretrained import check_keys, load_state_dict_file

    where = f"--weights {path}"
    if not path.is_file():
        raise CvexportError(f"{where}: file not found")
    state = load_state_dict_file(path, where, "save it with torch.save(model.state_dict(), path)")
    state = {k: v for k, v in state.items() if not k.startswith(AUX_PREFIX)}
    num_classes = head_classes(name, state, where)
    from cvexport.torchvision_detectors import builder_options

    options = builder_options(name, state)
    check_keys(state, _reference_shapes(name, num_classes, side, **options), (), where, name,
               builder=f"get_model('{name}')")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, num_classes, options


def read_class_names(path: Path, count: int | None) -> tuple[str, ...]:
    """One name per line (blank lines and surrounding spaces ignored), exactly ``count`` distinct
    (None: any number; a module's factory is built for as many classes as the file lists)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CvexportError(f"--classes {path}: cannot be read ({exc.__class__.__name__})") from None
    names = tuple(line.strip() for line in lines if line.strip())
    if count is not None and len(names) != count:
        raise CvexportError(f"--classes {path} lists {len(names)} names, but the weights' head has {count} classes; "
                            "give one name per line, one per class")
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise CvexportError(f"--classes {path} lists {duplicate!r} more than once; class names must be distinct")
    return names


def convert_weights(name: str, weights: Path, classes: Path | None, side: int | None, out: Path) -> Path:
    """The user's torchvision state dict as a cvexport checkpoint ``out/<stem>.safetensors``:
    checked, with the class names (``classes`` file, else class_1..N) and the input side in
    its metadata."""
    from cvexport.checkpoint import save_checkpoint
    from cvexport.digest import sha256_file

    side = side or preprocessing(name)["side"]
    state, num_classes, options = read_weights(name, weights, side)
    if _builder_folders().get(name) == DETECTION_FOLDER:
        num_classes -= 1  # label 0 is the background: the names are labels 1..N
    names = read_class_names(classes, num_classes) if classes is not None else \
        tuple(f"class_{i}" for i in range(1, num_classes + 1))
    target = out / f"{weights.stem}.safetensors"
    save_checkpoint(target, state, {"model": name, "class_names": list(names), "input_size": side,
                                    "architecture": f"torchvision {name}", **({"builder_options": options} if options else {}),
                                    "state_dict": {"file": weights.name, "sha256": sha256_file(weights)}})
    return target
