"""ImageFolder classification datasets (``classifier``): ``DIR/{train,val}/<class>/<image>``;
classes are the train folder names, sorted (torchvision's ImageFolder order). Files of other
extensions than :data:`cvexport.media.IMAGE_SUFFIXES` (Thumbs.db, .DS_Store) are skipped; an empty
class folder and a dataset of one class are refused.
"""

from __future__ import annotations

from pathlib import Path

from cvexport.errors import CvexportError
from cvexport.media import IMAGE_SUFFIXES
from cvexport.models.dataset_reading import SPLITS, DatasetCheck, DatasetFormat, Entry


def _class_folders(root: Path, split: str) -> list[Path]:
    folder = root / split
    if not folder.is_dir():
        raise CvexportError(f"--data {root}: no {split}/ folder; an ImageFolder dataset needs "
                            f"{root / 'train'}/<class>/*.jpg and {root / 'val'}/<class>/*.jpg")
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise CvexportError(f"--data {root}: {folder} has no class folders; put each class's images in "
                            f"{folder}/<class name>/")
    return classes


def read_imagefolder(root: Path, check: DatasetCheck):
    train_classes = _class_folders(root, "train")
    names = [p.name for p in train_classes]
    if len(names) < 2:  # one class: nothing to tell apart, and top-1 has no meaning
        raise CvexportError(f"--data {root}: {root / 'train'} has one class folder ('{names[0]}'); a classifier "
                            f"needs at least two classes: put each class's images in train/<class>/ and val/<class>/")
    files: list[Path] = []
    splits: dict[str, list[Entry]] = {}
    for split in SPLITS:
        folders = train_classes if split == "train" else _class_folders(root, split)
        found = [p.name for p in folders]
        if found != names:
            missing = sorted(set(names) - set(found))
            extra = sorted(set(found) - set(names))
            detail = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                                 f"not in train/: {', '.join(extra)}" if extra else "") if part)
            raise CvexportError(f"--data {root}: {split}/ has other class folders than train/ ({detail}); "
                                "both splits need the same classes")
        entries = []
        for label, folder in enumerate(folders):
            images = sorted(p for p in folder.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
            if not images:
                raise CvexportError(f"--data {root}: class folder {folder} is empty (no {', '.join(IMAGE_SUFFIXES)} "
                                    "files); add its images or remove the folder from both splits")
            for path in images:
                where = f"{split}/{folder.name}/{path.relative_to(folder).as_posix()}"
                width, height = check.size(path, where) or (0, 0)  # unusable: refused once all are read
                entries.append(Entry(image=path, where=where, width=width, height=height, label=label))
                files.append(path)
        splits[split] = entries
    return names, splits, files, {}



IMAGEFOLDER = DatasetFormat(
    name="imagefolder",
    layout="ImageFolder: DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg",
    read=read_imagefolder,
)
