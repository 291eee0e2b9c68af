"""A user's own PyTorch module as a cvexport model: ``cvexport build --module FILE.py:factory``.

A user who wrote an ``nn.Module`` (a classifier, a segmenter, or a detector whose outputs follow
a :class:`cvexport.detection_heads.DetectionHead`) names the factory that makes it, the task
and the input size; cvexport imports the factory (``importlib``: a file path or an importable
``pkg.mod``), builds the network (``factory(num_classes)`` when it takes an argument), loads the
user's weights checked key by key (:func:`cvexport.pretrained.check_keys`), runs it once on
zeros to check that its outputs are what the task and the declared head say, and rewrites the
weights as a cvexport checkpoint whose metadata records all of it: the module reference and
the sha256 of its file, task, input size, class names, normalization and head.

That checkpoint is the model's spec: the registry's spec of a ``module:`` name has no fields of
its own and reads them from the checkpoint (:func:`spec_fields`), so the bundle's copy of the
weights lets ``--backend torch``, ``bench`` and ``verify`` rebuild the network later, from the
same file; a module file that changed or is gone is one line, never another network.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from cvexport.detection_heads import DetectionHead
from cvexport.errors import CvexportError, first_line

FAMILY = "module"
PREFIX = "module:"  # model names of module builds: "module:my_net.py:make_model"

def module_tasks() -> tuple[str, ...]:
    """The tasks a module may declare: those whose outputs a task can check (Task.check_module_outputs)."""
    from cvexport.tasks import get_task, task_names

    return tuple(name for name in task_names() if get_task(name).takes_modules)
# The head flags a detector declares (CLI flag -> DetectionHead field), also accepted as the
# keys of a class attribute ``cvexport_head`` on the module.
HEADS = ("anchors", "xyxy", "cxcywh")
HEAD_KEYS = ("head", "scores", "box_units", "background", "variances")
# A detector's NMS defaults when the build gives none: the usual score threshold and the IoU of
# torchvision's SSD and YOLO's detect step.
MIN_SIDE, MAX_SIDE = 16, 4096  # the input sides a module may be built for
VALIDATION_BATCH = 2  # the one forward pass before export: zeros(2, 3, H, W) (a batch > 1 shows a fixed batch)


@dataclass(frozen=True)
class ModuleRequest:
    """What ``build --module`` was asked for: the factory, its task and input (height, width),
    the head flags given (``head``, ``scores``, ``box_units``, ``background``, ``variances``)
    and the normalization (None: ImageNet's)."""

    reference: str
    task: str
    input_size: tuple[int, int]
    head: Mapping[str, Any] = field(default_factory=dict)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @property
    def name(self) -> str:
        return model_name(self.reference)


def model_name(reference: str) -> str:
    """The model name of a module build: the file's name (not its folder) and the factory,
    or the importable reference as written."""
    target, _, factory = reference.rpartition(":")
    return f"{PREFIX}{Path(target).name if _is_file(target) else target}:{factory}"


def is_module_name(name: str) -> bool:
    return name.startswith(PREFIX)


def bundle_stem(name: str) -> str:
    """A module model name as a folder name: ``module:my_net.py:make_model`` -> ``my_net-make_model``."""
    target, _, factory = name[len(PREFIX):].rpartition(":")
    stem = target[:-3] if target.endswith(".py") else target
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{stem}-{factory}")


# --------------------------------------------------------------------------- the factory
def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


@dataclass(frozen=True)
class Factory:
    """The user's factory, imported, and where it came from (what a checkpoint records)."""

    function: Callable[..., Any]
    reference: str  # as recorded: the resolved file path or the importable module, ':', the factory
    file: Path
    sha256: str


def load_factory(reference: str) -> Factory:
    """The factory ``reference`` names (``path/to/file.py:factory`` or ``pkg.mod:factory``); a
    missing file, module or attribute, or an import that raises, is one line."""
    from cvexport.digest import sha256_file

    where = f"--module {reference}"
    target, colon, name = reference.rpartition(":")
    if not colon or not target or not name.isidentifier():
        raise CvexportError(f"{where}: expected FILE.py:FACTORY or package.module:FACTORY (the function that "
                            "returns your nn.Module)")
    if _is_file(target):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise CvexportError(f"{where}: file {target} not found")
        digest = sha256_file(path)
        module = _import_file(path, digest, where)
        recorded = f"{path}:{name}"
    else:
        module = _import_module(target, where)
        path = Path(getattr(module, "__file__", "") or "")
        if not path.is_file():
            raise CvexportError(f"{where}: module {target} has no source file to record; put the factory in a .py file")
        digest = sha256_file(path)
        recorded = reference
    function = getattr(module, name, None)
    if function is None:
        raise CvexportError(f"{where}: {path.name} has no attribute '{name}'")
    if not callable(function):
        raise CvexportError(f"{where}: '{name}' in {path.name} is a {type(function).__name__}, not a function "
                            "that returns an nn.Module")
    return Factory(function, recorded, path, digest)


# (resolved path, sha256) -> the module executed from it: a build and the checks after it
# (the torch reference rebuilt from the checkpoint) share one execution of the user's file.
_FILE_MODULES: dict[tuple[Path, str], Any] = {}


def _import_file(path: Path, digest: str, where: str):
    """The module of a .py file, executed once per content (sha256): its folder is on the path
    while it runs, so it imports its neighbours as it does when run as a script."""
    if (path, digest) in _FILE_MODULES:
        return _FILE_MODULES[path, digest]
    module_name = f"cvexport_user_module_{digest[:16]}"
    found = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(found)
    sys.modules[module_name] = module  # dataclasses and pickling look their module up here
    sys.path.insert(0, str(path.parent))
    try:
        found.loader.exec_module(module)
    except Exception as exc:  # whatever the user's file raises
        del sys.modules[module_name]
        raise CvexportError(f"{where}: importing {path.name} raised {type(exc).__name__}: {first_line(exc)}") from None
    finally:
        sys.path.remove(str(path.parent))
    _FILE_MODULES[path, digest] = module
    return module


def _import_module(target: str, where: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise CvexportError(f"{where}: no module named '{target}' (and no such .py file); pass FILE.py:FACTORY "
                                "or a module importable from here") from None
        raise CvexportError(f"{where}: importing {target} raised ModuleNotFoundError: {first_line(exc)}") from None
    except Exception as exc:  # whatever the user's module raises
        raise CvexportError(f"{where}: importing {target} raised {type(exc).__name__}: {first_line(exc)}") from None


def takes_class_count(function: Callable[..., Any]) -> tuple[bool, bool]:
    """(takes a positional argument, needs one): ``factory(num_classes)`` or ``factory()``."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # a builtin or a C extension: call it without arguments
        return False, False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return bool(positional), bool(positional) and positional[0].default is inspect.Parameter.empty


def make_network(factory: Factory, num_classes: int | None, where: str):
    """``factory(num_classes)`` when it takes an argument and the count is known, else
    ``factory()``; the nn.Module in eval mode. Returns (module, the argument passed or None)."""
    import torch

    takes, needs = takes_class_count(factory.function)
    name = factory.reference.rpartition(":")[2]
    if needs and num_classes is None:
        raise CvexportError(f"{where}: {name}() takes the class count; pass --classes NAMES.txt (one name per line) "
                            "or weights whose checkpoint records class names")
    argument = num_classes if takes and num_classes is not None else None
    try:
        model = factory.function(argument) if argument is not None else factory.function()
    except Exception as exc:  # whatever the user's factory raises
        call = f"{name}({argument if argument is not None else ''})"
        raise CvexportError(f"{where}: {call} raised {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(model, torch.nn.Module):
        raise CvexportError(f"{where}: {name}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model.eval(), argument


# ---------------------------------------------------------------------------- the head
def declared_head(model, flags: Mapping[str, Any], where: str) -> DetectionHead:
    """The detector's head: the module's ``cvexport_head`` attribute, overridden by the flags given."""
    declared = getattr(model, "cvexport_head", None) or {}
    if not isinstance(declared, Mapping) or (unknown := sorted(set(declared) - set(HEAD_KEYS))):
        shown = unknown if isinstance(declared, Mapping) else type(declared).__name__
        raise CvexportError(f"{where}: cvexport_head {shown} is not a dict of {', '.join(HEAD_KEYS)}")
    values = {**declared, **{k: v for k, v in flags.items() if v is not None}}
    head = values.get("head")
    if head is None:
        raise CvexportError(f"{where}: a detector declares its outputs: --head anchors (class logits + box offsets "
                            "against model.anchors) or --head xyxy|cxcywh (decoded boxes + class scores), or a class "
                            "attribute cvexport_head = {'head': ...}")
    if head not in HEADS:
        raise CvexportError(f"{where}: head {head!r} is not one of {', '.join(HEADS)}")
    scores = values.get("scores")
    if scores is not None and scores not in ("softmax", "sigmoid", "probabilities"):
        raise CvexportError(f"{where}: scores {scores!r} is not one of softmax, sigmoid, probabilities")
    if head == "anchors":
        if values.get("box_units") is not None:
            raise CvexportError(f"{where}: box units apply to decoded heads (--head xyxy|cxcywh); anchored boxes are "
                                "offsets against model.anchors (normalized)")
        scores = scores or "softmax"
        variances = values.get("variances") or (0.1, 0.2)
        if len(variances) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in variances):
            raise CvexportError(f"{where}: variances {list(variances)} are not two positive numbers (centre, size)")
        background = values.get("background")
        return DetectionHead(scoring=scores, coder="ssd", variances=tuple(float(v) for v in variances),
                             background=scores == "softmax" if background is None else bool(background))
    if values.get("variances") is not None:
        raise CvexportError(f"{where}: variances apply to --head anchors; a {head} head's boxes are decoded already")
    if scores is None:
        raise CvexportError(f"{where}: a decoded head says how its class scores read: --scores sigmoid, softmax or "
                            "probabilities")
    if values.get("background") and scores != "softmax":
        raise CvexportError(f"{where}: a background column goes with softmax scores (--scores softmax --background)")
    units = values.get("box_units") or "normalized"
    if units not in ("normalized", "pixels"):
        raise CvexportError(f"{where}: box units {units!r} are not normalized or pixels")
    return DetectionHead(scoring=scores, coder=head, background=bool(values.get("background")), box_units=units,
                         clip=True)


def head_from_record(record: Mapping[str, Any]) -> DetectionHead:
    """The head a checkpoint records (:meth:`DetectionHead.to_record`)."""
    values = dict(record)
    if "variances" in values:
        values["variances"] = tuple(values["variances"])
    return DetectionHead(**values)


# ------------------------------------------------------------------------- the outputs
def _shape(tensor) -> list[int]:
    return list(tensor.shape)


def check_outputs(model, task: str, input_size: tuple[int, int], head: DetectionHead | None, where: str) -> int:
    """One forward pass on zeros(2, 3, H, W); the class count its outputs give, or one line
    naming the first output (index and name) whose shape is not what ``task`` and ``head`` say."""
    import torch

    height, width = input_size
    batch = VALIDATION_BATCH
    try:
        with torch.no_grad():
            outputs = model(torch.zeros(batch, 3, height, width))
    except Exception as exc:  # whatever the user's forward raises
        raise CvexportError(f"{where}: a forward pass on zeros({batch}, 3, {height}, {width}) raised "
                            f"{type(exc).__name__}: {first_line(exc)}") from None
    from cvexport.tasks import get_task

    checker = get_task(task)
    names = checker.core_output_names(head)
    outputs = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
    if len(outputs) != len(names):
        raise CvexportError(f"{where} returns {len(outputs)} outputs, expected {len(names)} ({', '.join(names)}) "
                            f"for a {task} model" + (f" with a {head.coder} head" if head is not None else ""))
    for index, (name, output) in enumerate(zip(names, outputs)):
        if not torch.is_tensor(output) or not output.is_floating_point():
            raise CvexportError(f"{where}: output {index} ({name}) is a {type(output).__name__}"
                                f"{'' if not torch.is_tensor(output) else ' of ' + str(output.dtype)}, expected a "
                                "float tensor")

    def wrong(index: int, expected: str, why: str) -> CvexportError:
        return CvexportError(f"{where}: output {index} ({names[index]}) has shape {_shape(outputs[index])}, expected "
                             f"{expected} ({why})")

    return checker.check_module_outputs(model, outputs, (batch, height, width), head, wrong, where)


# ------------------------------------------------------------------------ the weights
def _read_weights(path: Path, model, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The file's tensors (a .pth state dict or a safetensors file) checked key by key against
    ``model``, and its cvexport metadata ({} for a plain state dict)."""
    from cvexport.checkpoint import load_checkpoint
    from cvexport.pretrained import check_keys, load_state_dict_file

    if not path.is_file():
        raise CvexportError(f"{where}: file not found")
    advice = "save it with torch.save(model.state_dict(), path) of the module the factory returns"
    if path.suffix == ".safetensors":
        state, meta = load_checkpoint(path)
    else:
        state, meta = load_state_dict_file(path, where, advice), {}
    reference = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    check_keys(state, reference, (), where, "module", network="the module", advice=advice)
    return state, meta


def prepare_checkpoint(request: ModuleRequest, weights: Path | None, classes: Path | None, directory: Path,
                       log: Callable[[str], None]) -> Path:
    """The module's weights as a cvexport checkpoint in ``directory``, whose metadata records
    everything its spec needs (see the module docstring); every check that fails is one line."""
    from cvexport.checkpoint import read_metadata, save_checkpoint
    from cvexport.digest import sha256_file
    from cvexport.torchvision_zoo import read_class_names

    where = f"--module {request.reference}"
    if request.task not in module_tasks():
        raise CvexportError(f"--task {request.task!r} is not one of {', '.join(module_tasks())}")
    from cvexport.tasks import get_task

    declares_head = get_task(request.task).postprocess_nms_flavors is not None
    if request.head and not declares_head:
        raise CvexportError(f"--head, --scores, --box-units, --background and --variances declare a detector's "
                            f"outputs; --task {request.task} has none")
    if not all(MIN_SIDE <= side <= MAX_SIDE for side in request.input_size):
        raise CvexportError(f"--input-size {request.input_size[0]}x{request.input_size[1]}: each side must be in "
                            f"{MIN_SIDE}..{MAX_SIDE}")
    factory = load_factory(request.reference)
    # The class count to build for, when known before building: the class file's, else the checkpoint's.
    names = read_class_names(classes, None) if classes is not None else None
    if names is None and weights is not None and weights.suffix == ".safetensors" and weights.is_file():
        recorded = read_metadata(weights).get("class_names")
        names = tuple(recorded) if isinstance(recorded, list) and all(isinstance(n, str) for n in recorded) else None
    model, argument = make_network(factory, len(names) if names else None, where)
    head = declared_head(model, request.head, where) if declares_head else None
    if weights is not None:
        state, _ = _read_weights(weights, model, f"--weights {weights}")
        model.load_state_dict(state)
        log(f"weights: {weights} ({len(state)} tensors, checked key by key)")
    else:
        log(f"no --weights: {request.name} keeps the initialization its factory gives (random unless it loads "
            "weights itself); the bundle records those weights")
    count = check_outputs(model, request.task, request.input_size, head, where)
    if classes is not None:
        names = read_class_names(classes, count)
    elif names is not None and len(names) != count:
        raise CvexportError(f"--weights {weights} records {len(names)} class names, but {where} outputs {count} "
                            "classes; pass --classes NAMES.txt with one name per class")
    names = names or tuple(f"class_{i}" for i in range(1, count + 1))
    source = ({"file": weights.name, "sha256": sha256_file(weights)} if weights is not None
              else {"file": None, "initialization": "the factory's own"})
    meta = {"model": request.name, "task": request.task, "class_names": list(names),
            "input_size": list(request.input_size), "architecture": f"your module {request.name[len(PREFIX):]}",
            "module": {"reference": factory.reference, "file": str(factory.file), "sha256": factory.sha256,
                       "argument": argument},
            "mean": list(request.mean) if request.mean else None, "std": list(request.std) if request.std else None,
            "state_dict": source}
    if head is not None:
        meta["head"] = head.to_record()
    target = directory / f"{bundle_stem(request.name)}.safetensors"
    save_checkpoint(target, model.state_dict(), meta)
    return target


# --------------------------------------------------------------- the spec, from a checkpoint
def spec_fields(path: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ModelSpec fields of a module checkpoint (its metadata, see :func:`prepare_checkpoint`):
    the registry makes the spec (this module does not import it)."""
    from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD

    module = meta.get("module")
    if not isinstance(module, Mapping) or meta.get("task") not in module_tasks():
        raise CvexportError(f"checkpoint {path} records no module build (its 'module' and 'task'); rebuild it with "
                            "'cvexport build --module FILE.py:FACTORY ...'")
    names = tuple(meta["class_names"])
    height, width = (int(v) for v in meta["input_size"])
    from cvexport.tasks import get_task

    task = get_task(meta["task"])
    head = head_from_record(meta["head"]) if meta.get("head") is not None else None
    weights = (meta.get("state_dict") or {}).get("file")
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    description = (f"{meta.get('architecture', meta['model'])} ({meta['task']}), {len(names)} classes ({shown}), "
                   f"{height}x{width}, " + (f"weights of {weights}" if weights else "its factory's initialization"))
    return {
        "name": meta["model"], "task": meta["task"], "description": description, "input_size": (height, width),
        "class_names": names, "weights": "", "build": functools.partial(build_recorded, dict(module), path),
        "trainer": no_recipe, "mean": tuple(meta.get("mean") or IMAGENET_MEAN),
        "std": tuple(meta.get("std") or IMAGENET_STD),
        "defaults": dict(task.module_defaults),
        "family": FAMILY, "detection_head": head,
    }


def build_recorded(module: Mapping[str, Any], path: Path):
    """The untrained network a checkpoint's module record names, from the same file (sha256):
    a file that changed or is gone is one line."""
    from cvexport.digest import sha256_file

    reference, file = module["reference"], Path(module["file"])
    rebuild = "rebuild the bundle with 'cvexport build --module ...'"
    if not file.is_file():
        raise CvexportError(f"{path} was built from the module {reference}, whose file {file} is gone; restore it or "
                            f"{rebuild}")
    if sha256_file(file) != module["sha256"]:
        raise CvexportError(f"{path} was built from the module {reference}, whose file {file} has changed since "
                            f"(sha256 differs); restore it or {rebuild}")
    factory = load_factory(reference)
    model, _ = make_network(factory, module.get("argument"), f"--module {reference}")
    return model


def no_recipe():
    raise CvexportError("cvexport has no training recipe for your module; train it your way and build with --weights")
