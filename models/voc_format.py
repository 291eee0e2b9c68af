"""VOC-style segmentation datasets (``fcn``): ``DIR/JPEGImages/<id>.jpg``,
``DIR/SegmentationClass/<id>.png`` (a palette or grey PNG of class indices, 255 = "void", ignored
as VOC does; or an RGB PNG in the colours of ``labelmap.txt``),
``DIR/ImageSets/Segmentation/{train,val}.txt`` (one id a line) and the class names, index 0 the
background: ``DIR/labelmap.txt`` (CVAT's export, ``name:r,g,b::`` lines) or
``DIR/class_names.txt`` (one name a line). Every mask is read when the dataset is opened (size
and values checked); a split whose masks hold only background is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvexport.errors import CvexportError
from cvexport.media import IMAGE_SUFFIXES
from cvexport.models.dataset_reading import SPLITS, VOID, DatasetCheck, DatasetFormat, Entry


def _read_class_names(root: Path) -> tuple[list[str], dict[tuple[int, int, int], int], Path]:
    """Class names (index 0 the background) and, from a labelmap, the colour of each class."""
    labelmap, plain = root / "labelmap.txt", root / "class_names.txt"
    names: list[str] = []
    colors: dict[tuple[int, int, int], int] = {}
    if labelmap.is_file():
        source = labelmap
        for number, line in enumerate(labelmap.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, _, rest = line.partition(":")
            color = rest.split(":")[0].strip()
            try:
                rgb = tuple(int(v) for v in color.split(",")) if color else None
            except ValueError:
                rgb = None
            if not name.strip() or (color and (rgb is None or len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb))):
                raise CvexportError(f"{labelmap} line {number}: {line.strip()!r} is not 'name:r,g,b::' "
                                    "(CVAT's labelmap format); fix the line")
            if rgb is not None:
                if rgb in colors:
                    raise CvexportError(f"{labelmap} line {number}: colour {color} is already class "
                                        f"{names[colors[rgb]]!r}; give every class its own colour")
                colors[rgb] = len(names)
            names.append(name.strip())
    elif plain.is_file():
        source = plain
        names = [line.strip() for line in plain.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        raise CvexportError(f"--data {root}: no labelmap.txt or class_names.txt; write the class names, the "
                            f"background first, one per line into {plain}")
    if len(names) < 2:
        raise CvexportError(f"{source}: {len(names)} class names; a segmentation dataset needs the background "
                            "and at least one class")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise CvexportError(f"{source}: class name {duplicates[0]!r} appears twice; give every class its own name")
    return names, colors, source


def read_mask(entry: Entry, num_classes: int, colors: dict[tuple[int, int, int], int]) -> np.ndarray:
    """The mask of ``entry`` as uint8 class ids (VOID kept), checked: same size as its image,
    every value a class or VOID. Palette and grey PNGs hold the ids; RGB ones the labelmap's colours."""
    from PIL import Image, ImageOps

    where = entry.where
    try:
        with Image.open(entry.mask) as image:
            image.load()
            image = ImageOps.exif_transpose(image) or image
            mode = image.mode
            if mode in ("P", "L"):
                values = np.asarray(image)
            elif mode in ("I", "I;16", "I;16B", "I;16L"):
                values = np.asarray(image).astype(np.int64)
            elif mode in ("RGB", "RGBA"):
                values = None
                rgb = np.asarray(image.convert("RGB"))
            else:
                raise CvexportError(f"{where}: mask {entry.mask} has image mode {mode}; save it as a palette or "
                                    "grey PNG of class indices")
    except CvexportError:
        raise
    except FileNotFoundError:
        raise CvexportError(f"{where}: mask {entry.mask} not found; add it or remove the id from the split "
                            "list") from None
    except Exception as exc:  # Pillow raises several types for unreadable files
        raise CvexportError(f"{where}: mask {entry.mask} is not a readable PNG ({exc.__class__.__name__}); "
                            "re-export it") from None
    if values is None:
        if not colors:
            raise CvexportError(f"{where}: mask {entry.mask} is an RGB image, but the class names come without "
                                "colours; save masks as palette or grey PNGs of class indices, or give colours in "
                                "labelmap.txt")
        flat = rgb.reshape(-1, 3)
        codes = (flat[:, 0].astype(np.int64) << 16) | (flat[:, 1].astype(np.int64) << 8) | flat[:, 2]
        lookup = {(r << 16) | (g << 8) | b: label for (r, g, b), label in colors.items()}
        unique, inverse = np.unique(codes, return_inverse=True)
        unknown = [u for u in unique if int(u) not in lookup]
        if unknown:
            shown = ", ".join(f"({u >> 16},{(u >> 8) & 255},{u & 255})" for u in (int(v) for v in unknown[:5]))
            raise CvexportError(f"{where}: mask {entry.mask} has colours {shown} that are no class in labelmap.txt; "
                                "fix the mask or add the classes")
        values = np.asarray([lookup[int(u)] for u in unique], dtype=np.uint8)[inverse].reshape(rgb.shape[:2])
    if values.shape != (entry.height, entry.width):
        raise CvexportError(f"{where}: mask {entry.mask} is {values.shape[1]}x{values.shape[0]} pixels but its image "
                            f"{entry.image.name} is {entry.width}x{entry.height} (upright); masks must cover their "
                            "image pixel for pixel")
    bad = np.setdiff1d(np.unique(values), np.append(np.arange(num_classes), VOID))
    if bad.size:
        raise CvexportError(f"{where}: mask {entry.mask} has values {', '.join(str(int(v)) for v in bad[:8])} that "
                            f"are not classes (0..{num_classes - 1}, and {VOID} for void); fix the mask or add the "
                            "class names")
    return values.astype(np.uint8)


def read_voc(root: Path, check: DatasetCheck):
    names, colors, names_file = _read_class_names(root)
    files: list[Path] = [names_file]
    splits: dict[str, list[Entry]] = {}
    for split in SPLITS:
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise CvexportError(f"--data {root}: split list {listing} not found; list the {split} image ids there, "
                                "one per line")
        files.append(listing)
        entries = []
        seen = set()
        labelled = False  # whether any mask of the split holds a pixel of a class other than the background
        masks_read = 0
        for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            image_id = line.split()[0]
            where = f"ImageSets/Segmentation/{split}.txt line {number} '{image_id}'"
            if image_id in seen:
                raise CvexportError(f"{where}: listed twice; list every id once")
            seen.add(image_id)
            image = next((root / "JPEGImages" / f"{image_id}{ext}" for ext in IMAGE_SUFFIXES
                          if (root / "JPEGImages" / f"{image_id}{ext}").is_file()), None)
            if image is None:
                raise CvexportError(f"{where}: no image {root / 'JPEGImages' / image_id}.jpg; add it or remove "
                                    "the line")
            mask = root / "SegmentationClass" / f"{image_id}.png"
            if not mask.is_file():
                raise CvexportError(f"{where}: no mask {mask}; add it or remove the line")
            size = check.size(image, where)
            entry = Entry(image=image, where=where, width=size[0] if size else 0, height=size[1] if size else 0,
                          mask=mask)
            if size is not None:  # an unusable image is refused once all are read; its mask has no size to fit
                values = read_mask(entry, len(names), colors)  # checked now: size and values, before any training
                labelled = labelled or bool(((values != 0) & (values != VOID)).any())
                masks_read += 1
            entries.append(entry)
            files += [image, mask]
        if entries and not labelled and masks_read == len(entries):
            need = ("so there is nothing to learn but the background" if split == "train"
                    else "so mIoU would measure the background alone")
            raise CvexportError(f"{listing.relative_to(root).as_posix()}: the masks of all {len(entries)} listed "
                                f"images (SegmentationClass/) hold only background (0) and void ({VOID}), {need}; "
                                f"paint the objects with their class index (1..{len(names) - 1})"
                                f"{' or their labelmap.txt colour' if colors else ''}")
        splits[split] = entries
    return names, splits, files, colors


VOC = DatasetFormat(
    name="voc",
    layout="VOC segmentation: DIR/JPEGImages/, DIR/SegmentationClass/, DIR/ImageSets/Segmentation/train.txt and "
           "val.txt, and DIR/labelmap.txt or DIR/class_names.txt",
    read=read_voc,
)
