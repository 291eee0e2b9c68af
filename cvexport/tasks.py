"""Task name -> the module that knows how to export, check and read back that kind of model."""

from __future__ import annotations

import importlib
from types import ModuleType

from cvexport.errors import CvexportError

_TASK_MODULES = {"detection": "cvexport.detection"}


def get_task(name: str) -> ModuleType:
    if name not in _TASK_MODULES:
        raise CvexportError(f"task '{name}' is not supported by this cvexport; upgrade cvexport or rebuild the bundle")
    return importlib.import_module(_TASK_MODULES[name])
