"""What reading a user's dataset shares across its formats (COCO, ImageFolder, VOC): the entry
of one image, the limits, the check that collects unusable images and warnings while a format's
reader runs, and :class:`DatasetFormat`, the record each format module fills in
(:mod:`cvexport.models.coco_format`, :mod:`~cvexport.models.imagefolder_format`,
:mod:`~cvexport.models.voc_format`). :mod:`cvexport.models.user_datasets` opens a dataset with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cvexport.errors import CvexportError

SPLITS = ("train", "val")
VOID = 255  # VOC's label for object borders and unlabelled pixels: ignored by the loss and the metric
MAX_LISTED = 5  # files a line names before it gives the count of the rest


@dataclass(frozen=True)
class Entry:
    """One image of a split and its annotation, as read from the dataset's files."""

    image: Path
    where: str  # how messages name it, e.g. "annotations/train.json images[3] 'cat.jpg'"
    width: int  # of the upright image
    height: int
    boxes: np.ndarray | None = None  # detection: float64 (G, 4) (x1, y1, x2, y2) pixels of the upright image
    labels: np.ndarray | None = None  # detection: int64 (G,)
    label: int | None = None  # classification
    mask: Path | None = None  # segmentation



@dataclass(frozen=True)
class DatasetFormat:
    """One standard dataset format: its name (recorded with the weights), the layout messages
    point to, and its reader: ``read(root, check) -> (class names, {split: [Entry]}, the files
    the dataset is made of, {labelmap colour: class} (VOC; else empty))``."""

    name: str
    layout: str
    read: Callable[[Path, "DatasetCheck"], tuple]
    # The two files (train, val), relative to the root, that hold each split's annotations, where
    # one file per split lists its images and their labels (COCO): identical files mean val is train.
    split_annotations: tuple[str, str] | None = None


class UnusableImage(CvexportError):
    """An image a run could not read; ``what`` says why (\"is not a readable image\", ...) after its name."""

    def __init__(self, message: str, what: str):
        super().__init__(message)
        self.what = what


def upright_size(path: Path, where: str) -> tuple[int, int]:
    """(width, height) of the image file as :func:`cvexport.images.load_image` returns it (EXIF
    orientations 5-8 swap the sides), from its header only; a missing or unreadable file is one
    line (an :class:`UnusableImage`)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UnusableImage(f"{where}: image {path} not found; add the file or remove the entry", "not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except UnidentifiedImageError:
        raise UnusableImage(f"{where}: {path} is not a readable image (unknown or corrupt format); "
                            "replace it or remove the entry", "is not a readable image") from None
    except Image.DecompressionBombError as exc:
        raise UnusableImage(f"{where}: {path} has too many pixels to decode safely ({exc}); downscale it or remove "
                            "the entry", "has too many pixels to decode safely") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnusableImage(f"{where}: {path} is corrupt ({exc}); replace it or remove the entry",
                            f"is corrupt ({exc})") from None
    if width < 2 or height < 2:  # load_image refuses these: no picture to learn from
        raise UnusableImage(f"{where}: {path} is only {width}x{height} pixels; replace it or remove the entry",
                            f"is only {width}x{height} pixels")
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def decode_problem(path: Path) -> str | None:
    """Why a run could not decode the image ``path`` (\"is truncated or corrupt (...)\", ...), None
    when it decodes. A header says nothing of the data after it, so the file is decoded: JPEGs
    (most datasets) at 1/8 scale (Pillow's ``draft``), which still reads every byte of entropy-coded
    data, so truncation and broken data are found, for about half the time of a full decode;
    then the conversion to RGB that :func:`cvexport.images.load_image` applies, on that small picture."""
    from PIL import Image

    from cvexport.images import _pil_to_rgb  # the very conversion training applies, not a copy

    try:
        with Image.open(path) as image:
            image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))  # no-op but for JPEG
            image.load()
            _pil_to_rgb(image, "")
    except CvexportError as exc:
        return str(exc).strip()  # named "": the message is what follows the name
    except Exception as exc:  # Pillow raises several types for broken data
        return f"is truncated or corrupt ({exc})"
    return None


class DatasetCheck:
    """What reading a dataset finds beside the errors that stop it: unusable images (collected,
    so one line names them all) and lines to warn with."""

    def __init__(self, root: Path):
        self.root = root
        self.unusable: list[tuple[int, str, str]] = []  # (order read, its line alone, "NAME WHAT" for a list)
        self.warnings: list[str] = []
        self._where: dict[Path, str] = {}
        self._order: dict[Path, int] = {}

    def size(self, path: Path, where: str) -> tuple[int, int] | None:
        """:func:`upright_size`, or None with the file noted as unusable."""
        self._order.setdefault(path, len(self._order))
        try:
            size = upright_size(path, where)
        except UnusableImage as exc:
            self.unusable.append((self._order[path], str(exc), f"{self._name(path)} {exc.what}"))
            return None
        self._where.setdefault(path, where)
        return size

    def decode(self, paths: list[Path]) -> None:
        """Decode every image whose header was read (each file once), noting those that fail."""
        for path in dict.fromkeys(p for p in paths if p in self._where):
            what = decode_problem(path)
            if what is not None:
                self.unusable.append((self._order[path], f"{self._where[path]}: {path} {what}; replace it or remove "
                                      "the entry", f"{self._name(path)} {what}"))

    def refuse_unusable(self, total: int) -> None:
        """One line naming the unusable images, in the order the dataset lists them (the first few and the count)."""
        self.unusable.sort()
        if len(self.unusable) == 1:
            raise CvexportError(self.unusable[0][1])
        if self.unusable:
            shown = "; ".join(item for _, _, item in self.unusable[:MAX_LISTED])
            more = f"; and {len(self.unusable) - MAX_LISTED} more" if len(self.unusable) > MAX_LISTED else ""
            raise CvexportError(f"--data {self.root}: {len(self.unusable)} of {total} images cannot be read: "
                                f"{shown}{more}; replace, re-copy or remove them (and their entries)")

    def _name(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

