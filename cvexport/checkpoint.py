"""Checkpoints as safetensors (never pickle): tensors plus a JSON metadata header."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from cvexport.atomic import atomic_path
from cvexport.errors import CvexportError

_META_KEY = "cvexport"


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` and JSON-serializable ``meta`` atomically as one .safetensors file."""
    from safetensors.torch import save_file

    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(contiguous, str(tmp), metadata={_META_KEY: json.dumps(meta, sort_keys=True)})


def _read(path: str | os.PathLike, with_tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint; tensors stay unread unless ``with_tensors``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CvexportError(f"checkpoint not found: {path}; run 'cvexport train' or pass an existing file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(_META_KEY, "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise CvexportError(
            f"checkpoint {path} is corrupt or not a safetensors file ({exc.__class__.__name__}); "
            "re-train or restore it"
        ) from None
    if not isinstance(meta, dict):
        raise CvexportError(f"checkpoint {path} has metadata of type {type(meta).__name__}, not an object; "
                            "re-train or restore it")
    return tensors, meta


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; a bad file is a one-line error."""
    return _read(path, with_tensors=True)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a checkpoint written by :func:`save_checkpoint`, without reading its
    tensors (class names, input size, dataset: what a build needs before it loads the weights)."""
    return _read(path, with_tensors=False)[1]


