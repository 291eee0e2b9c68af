"""What the user-data tests share: which task and model read each dataset format, and fresh
copies of a dataset to break."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

TASK_OF = {"coco": "detection", "imagefolder": "classification", "voc": "segmentation"}
MODEL_OF = {"coco": "ssd", "imagefolder": "classifier", "voc": "fcn"}


def copier(datasets: dict[str, Path], tmp_path: Path) -> Callable[[str], Path]:
    """``copy(fmt) -> Path``: a fresh copy of ``datasets[fmt]`` under ``tmp_path``, to break."""
    def copy(fmt: str) -> Path:
        return Path(shutil.copytree(datasets[fmt], tmp_path / fmt))

    return copy
