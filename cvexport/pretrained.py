"""The user's own ImageNet weights: torchvision state dicts of ResNet-18 and VGG-19.

The course starts the classifier and the FCN from ``resnet18(pretrained=True)`` and takes its
style features from an ImageNet VGG-19. This project never downloads them; a user who has
them passes the file (``--pretrained FILE``, ``--vgg-weights FILE``) or already has it in the
torch hub cache (``$TORCH_HOME/hub/checkpoints``, where torchvision keeps its downloads), and
runs without one keep the project's own starts (source pretraining, random-feature VGG).

Files are read with ``torch.load(weights_only=True)`` (no code in a pickle runs) and checked
key by key against the torchvision architecture before any work starts, so a ResNet-34, a
VGG-19-BN or a detector's checkpoint passed by mistake is one line naming the first key that
does not fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cvexport.errors import CvexportError, first_line

# Architectures a file may hold: name -> (torchvision builder, key prefixes kept as they come
# with any shape, i.e. the ImageNet classifier layers the tasks here replace or do not use).
RESNET18 = "resnet18"
VGG19 = "vgg19"
ARCHITECTURES = {RESNET18: ("ResNet-18", ("fc.",)), VGG19: ("VGG-19", ("classifier.",))}
# The names torchvision's downloads get in the hub cache (``<arch>-<hash prefix>.pth``); the
# ImageNet weights of today's torchvision first, then any other download of the same network.
HUB_FILES = {RESNET18: ("resnet18-f37072fd.pth", "resnet18-*.pth"), VGG19: ("vgg19-dcbb9e9d.pth", "vgg19-*.pth")}


@dataclass(frozen=True)
class PretrainedFile:
    """A state-dict file found for a start, and where it was found (the flag or the hub cache)."""

    path: Path
    architecture: str  # RESNET18 or VGG19
    origin: str  # "--pretrained", "--vgg-weights" or "torch hub cache"

    def describe(self) -> str:
        return f"torchvision {ARCHITECTURES[self.architecture][0]} weights {self.path} ({self.origin})"

    def record(self) -> dict[str, Any]:
        """What a checkpoint's metadata says about this start."""
        from cvexport.digest import sha256_file

        return {"file": str(self.path.resolve()), "sha256": sha256_file(self.path), "origin": self.origin,
                "architecture": f"torchvision {self.architecture}"}


def hub_checkpoints_dir() -> Path:
    """Where torchvision keeps downloaded weights: ``torch.hub.get_dir()/checkpoints`` (honours
    $TORCH_HOME, else $XDG_CACHE_HOME/torch or ~/.cache/torch)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_pretrained(architecture: str, given: str | os.PathLike | None, flag: str) -> PretrainedFile | None:
    """The file given with ``flag``, else the architecture's file in the hub cache, else None.
    A given file that does not exist is an error (it is never silently replaced by another)."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise CvexportError(f"{flag} {path}: file not found; pass a torchvision {ARCHITECTURES[architecture][0]} "
                                "state dict (.pth)")
        return PretrainedFile(path, architecture, flag)
    directory = hub_checkpoints_dir()
    if not directory.is_dir():
        return None
    for pattern in HUB_FILES[architecture]:
        matches = sorted(p for p in directory.glob(pattern) if p.is_file())
        if matches:
            return PretrainedFile(matches[0], architecture, "torch hub cache")
    return None


def _reference_shapes(architecture: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the torchvision architecture's state dict, built on the meta device (no
    memory, no initialization: VGG-19 has 143 M parameters)."""
    import torch
    from torchvision import models

    with torch.device("meta"):
        model = models.resnet18(weights=None) if architecture == RESNET18 else models.vgg19(weights=None)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def read_state_dict(found: PretrainedFile) -> dict[str, Any]:
    """The file's tensors (float32), checked key by key against the torchvision architecture:
    every key present with its shape, none unknown; the ImageNet classifier layers
    (``fc.*`` / ``classifier.*``) are kept whatever their shape (the tasks replace them)."""
    name, free_prefixes = ARCHITECTURES[found.architecture]
    where = (f"{found.origin} {found.path}" if found.origin.startswith("--")
             else f"{found.path} (from the {found.origin})")
    state = load_state_dict_file(found.path, where,
                                 f"save torch.save(model.state_dict(), path) of a torchvision {name}")
    check_keys(state, _reference_shapes(found.architecture), free_prefixes, where, name)
    return {key: value.float() if value.is_floating_point() else value for key, value in state.items()}


def load_state_dict_file(path: Path, where: str, advice: str) -> dict[str, Any]:
    """The tensors of a ``torch.save``d state dict, read with ``weights_only=True`` (no code in a
    pickle runs); a file that is not one is one line saying ``where`` and ``advice`` (how to save it)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors differ by file and version
        raise CvexportError(f"{where} cannot be read as a torch state dict ({first_line(exc)[:160]}); "
                            f"{advice}") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise CvexportError(f"{where} holds a {type(state).__name__}, not a state dict of tensors; {advice}")
    return dict(state)


def check_keys(state: Mapping[str, Any], reference: Mapping[str, tuple[int, ...]], free_prefixes: tuple[str, ...],
               where: str, name: str, builder: str | None = None, network: str | None = None,
               advice: str | None = None) -> None:
    """One line for the first way ``state`` does not fit ``reference`` (key -> shape);
    ``builder``: the torchvision.models call the advice names (default: resnet18 or vgg19).
    ``network`` and ``advice`` replace "a torchvision NAME" and "pass the state dict of ..." for
    a network that is not torchvision's (a user's module)."""
    network = network or f"a torchvision {name}"
    advice = advice or ("pass the state dict of torchvision.models."
                        f"{builder or ('resnet18' if name == 'ResNet-18' else 'vgg19')}")

    def counted(keys: list[str]) -> str:
        return repr(keys[0]) + (f" (and {len(keys) - 1} more)" if len(keys) > 1 else "")

    free = lambda key: key.startswith(free_prefixes)  # noqa: E731
    if any(key.startswith("module.") for key in state):
        raise CvexportError(f"{where}: keys start with 'module.' (saved from DataParallel); save "
                            f"model.module.state_dict() instead")
    missing = [key for key in reference if key not in state and not free(key)]
    unexpected = [key for key in state if key not in reference and not free(key)]
    if missing or unexpected:
        found = (f"missing {counted(missing)}" if missing else "") + ("; " if missing and unexpected else "") + \
                (f"unexpected {counted(unexpected)}" if unexpected else "")
        raise CvexportError(f"{where} does not fit {network}: {found}; {advice}")
    for key, shape in reference.items():
        if free(key):
            continue
        got = tuple(state[key].shape)
        if got != shape:
            raise CvexportError(f"{where} does not fit {network}: {key!r} has shape {list(got)}, "
                                f"expected {list(shape)}")


def resnet18_weights(found: PretrainedFile) -> dict[str, Any]:
    """A checked ResNet-18 state dict without its ImageNet ``fc`` (the tasks make their own head)."""
    return {key: value for key, value in read_state_dict(found).items() if not key.startswith("fc.")}


def vgg19_feature_weights(found: PretrainedFile) -> dict[str, Any]:
    """The ``features.*`` tensors of a checked VGG-19 state dict, keyed as in ``vgg19().features``
    (``0.weight``, ``2.bias``, ...)."""
    return {key[len("features."):]: value for key, value in read_state_dict(found).items()
            if key.startswith("features.")}
