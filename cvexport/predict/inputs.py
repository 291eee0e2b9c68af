"""The inputs of ``cvexport predict``: image and video files, folders and globs -> the files
to read, each once.

``stream`` reads its SOURCE arguments differently on purpose (cvexport.stream.sources): there a
folder or glob is one source of images in natural name order, not searched recursively, and
each video its own stream; here every file is an input of its own, keyed by its absolute path,
and a folder is searched recursively for pictures and videos alike. Both take their suffixes
from cvexport.media, the one list.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cvexport.errors import CvexportError
from cvexport.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_image_name, is_video_name, kind_of


@dataclass(frozen=True)
class InputFile:
    """One file to predict; its rows are keyed by ``path``."""

    path: str  # absolute: the key of its rows, the same whatever the working directory of a rerun
    kind: str  # "image" or "video"


def _is_media(path: Path) -> bool:
    return path.is_file() and (is_image_name(path) or is_video_name(path))


def expand_inputs(specs: Iterable[str]) -> list[InputFile]:
    """Image/video files, folders (searched recursively, media files only) and globs -> the
    files to read, in a stable order, each once. A named file is taken whatever its suffix
    (an unreadable one is recorded as failed later); a path that does not exist, a glob or a
    folder with no media files is a one-line error before any work."""
    found: dict[str, InputFile] = {}

    def add(path: Path) -> None:
        absolute = os.path.abspath(path)
        found.setdefault(absolute, InputFile(absolute, kind_of(path)))

    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if _is_media(p))
            if not files:
                raise CvexportError(f"folder {spec} holds no image or video files "
                                    f"({', '.join(sorted(IMAGE_SUFFIXES + VIDEO_SUFFIXES))})")
            for file in files:
                add(file)
        elif path.is_file():
            add(path)
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            files = [m for m in matches if _is_media(m)]
            if not files:
                raise CvexportError(f"'{spec}' matches no image or video files")
            for file in files:
                add(file)
        elif path.exists():
            raise CvexportError(f"{spec} is neither a file nor a folder; pass images, videos or folders of them")
        else:
            raise CvexportError(f"input not found: {spec}")
    return list(found.values())
