"""A user's own dataset in the standard formats, read and checked before any training starts.

- COCO detection (``ssd``): ``DIR/annotations/{train,val}.json``, images under ``DIR/images/``
  (``file_name`` relative to it); boxes ``[x, y, width, height]`` in pixels of the upright image;
  categories of any ids (in id order they become class 0, 1, ...); ``iscrowd`` boxes are left out.
- ImageFolder classification (``classifier``): ``DIR/{train,val}/<class>/<image>``; classes are
  the train folder names, sorted (torchvision's ImageFolder order).
- VOC-style segmentation (``fcn``): ``DIR/JPEGImages/<id>.jpg``, ``DIR/SegmentationClass/<id>.png``
  (a palette or grey PNG of class indices, 255 = "void", ignored as VOC does; or an RGB PNG in
  the colours of ``labelmap.txt``), ``DIR/ImageSets/Segmentation/{train,val}.txt`` (one id a line)
  and the class names, index 0 the background: ``DIR/labelmap.txt`` (CVAT's export,
  ``name:r,g,b::`` lines) or ``DIR/class_names.txt`` (one name a line).

Everything a training run will read is checked when the dataset is opened, so a mistake ends in
one line naming the file (and the entry) and what to fix before anything is written: a missing
annotation file or split list, an image listed but absent or unreadable, a box outside its
image or with a non-positive size, an unknown category or image id, an empty class folder, a
mask whose size differs from its image, mask values that are not classes. Every image is decoded
(JPEGs at 1/8 scale, see :func:`decode_problem`), so a truncated file is found before the run,
and all unusable images are named in one line. Data nothing can be learnt from or measured on is
refused too: a COCO split without a box (no or empty 'annotations', only crowd regions; in val
mAP would be undefined), VOC masks of background only, an ImageFolder of one class. Val images
that are train images too (same file or same bytes) and a COCO file under two image ids are
warned about. Images are read with
:func:`cvexport.images.load_image` (grey, RGBA, 16-bit and EXIF-rotated files come out upright
RGB), and annotations are taken to be in pixels of the upright image, as annotation tools show it.

Samples come in the form the built-in generators give (``DetectionSample`` with boxes normalized
to the picture, ``ClassificationSample``, ``SegmentationSample``), so training and evaluation
fit them to the network with the runtime's letterbox exactly as the shipped data.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cvexport.errors import CvexportError, counted, stderr_warning
from cvexport.media import IMAGE_SUFFIXES

SPLITS = ("train", "val")
FORMATS = {"detection": "coco", "classification": "imagefolder", "segmentation": "voc"}
FORMAT_LAYOUTS = {
    "coco": "COCO detection: DIR/annotations/train.json and val.json, images under DIR/images/",
    "imagefolder": "ImageFolder: DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg",
    "voc": "VOC segmentation: DIR/JPEGImages/, DIR/SegmentationClass/, DIR/ImageSets/Segmentation/train.txt and "
           "val.txt, and DIR/labelmap.txt or DIR/class_names.txt",
}
# Extensions torchvision's ImageFolder reads; other files in a class folder (Thumbs.db, .DS_Store) are skipped.
VOID = 255  # VOC's label for object borders and unlabelled pixels: ignored by the loss and the metric
# Box coordinates may reach this far past the image (pixels) before they count as outside it:
# tools that derive boxes from polygons round outwards. Such boxes are clipped to the image.
BOX_SLACK = 1.0
MAX_CLASSES = 254  # class ids are stored in uint8 masks, 255 being VOID
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
class UserDataset:
    """A checked dataset: its class names, the entries of each split and a digest of its files."""

    format: str  # "coco", "imagefolder" or "voc"
    task: str
    root: Path
    class_names: tuple[str, ...]
    splits: dict[str, list[Entry]]
    digest: str  # sha256 over every file the dataset is made of (annotations, lists, images, masks)
    colors: dict[tuple[int, int, int], int] = field(default_factory=dict)  # voc: labelmap colour -> class
    # {file name relative to root: sha256}: what the digest is made of, so a run can say which files changed
    file_digests: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self.splits.values())

    def describe(self) -> str:
        return (f"{self.format} dataset {self.root} ({counted(len(self.class_names), 'class', 'classes')}: {', '.join(self.class_names)}; "
                f"{len(self.splits['train'])} train, {len(self.splits['val'])} val images)")

    def record(self) -> dict[str, Any]:
        """What a checkpoint and a bundle's manifest say about the data the weights were trained on."""
        return {"format": self.format, "path": str(self.root.resolve()), "sha256": self.digest,
                "class_names": list(self.class_names), "train_images": len(self.splits["train"]),
                "val_images": len(self.splits["val"])}

    def val_in_train(self, count: int | None = None) -> list[tuple[int, int]]:
        """(val index, train index) of each of the first ``count`` val images (all by default)
        that is a train image too: the same file, or a file of the same bytes."""
        def digest_of(entry: Entry) -> str:
            return self.file_digests[entry.image.relative_to(self.root).as_posix()]

        in_train: dict[str, int] = {}
        for index, entry in enumerate(self.splits["train"]):
            in_train.setdefault(digest_of(entry), index)
        val = self.splits["val"][: count or len(self.splits["val"])]
        return [(index, in_train[digest_of(entry)]) for index, entry in enumerate(val) if digest_of(entry) in in_train]

    # ------------------------------------------------------------------------ samples
    def sample(self, split: str, index: int):
        """The picture as a user passes it, with its annotation: DetectionSample (boxes normalized
        to the picture), ClassificationSample or SegmentationSample (mask of class ids, VOID kept)."""
        entry = self.splits[split][index]
        image = self._picture(entry)
        if self.task == "detection":
            from cvexport.models.detection_data import DetectionSample

            scale = np.array([entry.width, entry.height, entry.width, entry.height], dtype=np.float64)
            return DetectionSample(image, (entry.boxes / scale).astype(np.float32), entry.labels)
        if self.task == "classification":
            from cvexport.models.classification_data import ClassificationSample

            return ClassificationSample(image, int(entry.label))
        from cvexport.models.segmentation_data import SegmentationSample

        return SegmentationSample(image, read_mask(entry, len(self.class_names), self.colors))

    def _picture(self, entry: Entry) -> np.ndarray:
        from cvexport.images import load_image

        image = load_image(entry.image)
        if image.shape[:2] != (entry.height, entry.width):  # the file changed since it was checked
            raise CvexportError(f"{entry.image} is now {image.shape[1]}x{image.shape[0]} pixels, was "
                                f"{entry.width}x{entry.height} when {self.root} was opened; start again")
        return image

    def fitted(self, split: str, index: int, size: int):
        """(the sample as the network gets it: letterboxed to ``size`` square as the runtime does,
        boxes normalized to the network input, mask placed alike with padding = background;
        the :class:`cvexport.images.Letterbox` that maps results back)."""
        sample = self.sample(split, index)
        if self.task == "detection":
            from cvexport.models.detection_data import fit_to_input
        elif self.task == "classification":
            from cvexport.models.classification_data import fit_to_input
        else:
            from cvexport.models.segmentation_data import fit_to_input
        return fit_to_input(sample, size)

    def images_and_truths(self, split: str = "val", count: int | None = None) -> tuple[list[np.ndarray], list[Any]]:
        """The first ``count`` pictures of ``split`` (all by default) and their truth in the form
        the task's ``metrics`` takes (see :meth:`truths`)."""
        entries = self.splits[split][: count or len(self.splits[split])]
        return [self._picture(entry) for entry in entries], self.truths(split, count)

    def sample_images(self, spec, split: str, indices, seed: int = 0) -> list[np.ndarray]:
        """Pictures of ``split`` by index (modulo its size), with the signature of
        ``Task.sample_images``, so INT8 calibration can draw from the user's train split."""
        entries = self.splits[split]
        return [self._picture(entries[int(i) % len(entries)]) for i in indices]

    def truths(self, split: str = "val", count: int | None = None) -> list[Any]:
        """The truth of the first ``count`` pictures of ``split``: ImageDetections in pixels,
        class ids, label maps (VOID kept; :meth:`metric_inputs` drops those pixels)."""
        from cvexport.metrics import ImageDetections

        entries = self.splits[split][: count or len(self.splits[split])]
        if self.task == "detection":
            return [ImageDetections(boxes=entry.boxes.astype(np.float64), classes=entry.labels) for entry in entries]
        if self.task == "classification":
            return [int(entry.label) for entry in entries]
        return [read_mask(entry, len(self.class_names), self.colors) for entry in entries]

    def metric_inputs(self, predictions: list[Any], truths: list[Any]) -> tuple[list[Any], list[Any]]:
        """Predictions and truths as the task's metric takes them: VOID pixels left out of label maps
        (as flat arrays, which the segmentation metric accepts), everything else as it is."""
        if self.task != "segmentation":
            return predictions, truths
        kept = [np.asarray(t) != VOID for t in truths]
        return ([np.asarray(p)[k] for p, k in zip(predictions, kept)],
                [np.asarray(t)[k] for t, k in zip(truths, kept)])


# ----------------------------------------------------------------------------- opening
def open_dataset(task: str, root: str | Path, model: str = "") -> UserDataset:
    """The dataset at ``root`` in the format of ``task`` (see the module docstring), checked."""
    if task not in FORMATS:
        raise CvexportError(f"--data applies to detection, classification and segmentation models; "
                            f"'{model or task}' is a {task} model")
    root = Path(root)
    fmt = FORMATS[task]
    if not root.is_dir():
        raise CvexportError(f"--data {root}: no such directory; expected a {FORMAT_LAYOUTS[fmt]}")
    reader = {"coco": _read_coco, "imagefolder": _read_imagefolder, "voc": _read_voc}[fmt]
    check = _Check(root)
    names, splits, files, colors = reader(root, check)
    for split in SPLITS:
        if not splits[split]:
            raise CvexportError(f"--data {root}: the {split} split has no images; {split} needs at least one "
                                f"({FORMAT_LAYOUTS[fmt]})")
    if len(names) > MAX_CLASSES:
        raise CvexportError(f"--data {root}: {len(names)} classes, more than the {MAX_CLASSES} supported")
    # Last, as it costs the most: the files are known to be what the format asks for.
    check.decode([entry.image for split in SPLITS for entry in splits[split]])
    check.refuse_unusable(sum(len(splits[split]) for split in SPLITS))
    digests = _file_digests(root, files)
    dataset = UserDataset(fmt, task, root, tuple(names), splits, _digest(digests), colors, digests)
    for line in check.warnings + _overlap_warnings(dataset):
        stderr_warning(line)
    return dataset


def check_classes(dataset: UserDataset, class_names: Sequence[str], what: str) -> None:
    """``dataset`` must have exactly ``class_names`` (same names, same order), which ``what`` was trained for."""
    if tuple(dataset.class_names) != tuple(class_names):
        raise CvexportError(f"--data {dataset.root} has classes [{', '.join(dataset.class_names)}], {what} "
                            f"[{', '.join(class_names)}]; pass the dataset it was trained on")


def _file_digests(root: Path, files: list[Path]) -> dict[str, str]:
    """{name relative to ``root``: sha256 of the file}, in name order, for every file of the dataset."""
    from cvexport.digest import sha256_file

    named = {path.relative_to(root).as_posix(): path for path in files}
    return {name: sha256_file(named[name]) for name in sorted(named)}


def _digest(file_digests: dict[str, str]) -> str:
    """sha256 over the files (relative name and contents, in a fixed order): the same dataset
    gives the same digest wherever it is copied, any changed byte another one."""
    digest = hashlib.sha256()
    for name in sorted(file_digests):
        digest.update(name.encode() + b"\0" + file_digests[name].encode() + b"\0")
    return digest.hexdigest()


def _overlap_warnings(dataset: UserDataset) -> list[str]:
    """A line when val images are train images too (the same file, or files of identical bytes):
    every val number (the run's metric, verify's) would then be measured partly on training data."""
    shared = dataset.val_in_train()
    if not shared:
        return []
    root, digests, total = dataset.root, dataset.file_digests, len(dataset.splits["val"])
    if dataset.format == "coco" and digests["annotations/train.json"] == digests["annotations/val.json"]:
        what = f"annotations/val.json is identical to annotations/train.json: all {total} val images are train images"
    else:
        shown = "; ".join(f"{dataset.splits['val'][v].where} = {dataset.splits['train'][t].where}"
                          for v, t in shared[:MAX_LISTED])
        more = f"; and {len(shared) - MAX_LISTED} more" if len(shared) > MAX_LISTED else ""
        what = (f"{len(shared)} of {total} val images are also in the train split (the same file or identical "
                f"bytes): {shown}{more}")
    return [f"--data {root}: {what}; overlap between train and val inflates every number you will see (the "
            "run's val metric, verify); keep each picture in one split"]


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


class _Check:
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


# -------------------------------------------------------------------------------- COCO
def _read_json(path: Path, root: Path) -> Any:
    if not path.is_file():
        raise CvexportError(f"--data {root}: annotation file {path} not found; a COCO dataset needs "
                            "annotations/train.json and annotations/val.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CvexportError(f"{path} is not valid JSON ({exc}); fix or re-export it") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coco_categories(data: dict, name: str) -> list[tuple[int, str]]:
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise CvexportError(f"{name}: 'categories' must be a non-empty list of {{\"id\", \"name\"}}; add the classes")
    seen_ids, seen_names, out = set(), set(), []
    for i, category in enumerate(categories):
        cid = category.get("id") if isinstance(category, dict) else None
        cname = category.get("name") if isinstance(category, dict) else None
        if not _is_id(cid) or not isinstance(cname, str) or not cname.strip():
            raise CvexportError(f"{name} categories[{i}]: needs an integer 'id' and a non-empty 'name', "
                                f"found {json.dumps(category)[:100]}")
        if cid in seen_ids or cname in seen_names:
            raise CvexportError(f"{name} categories[{i}]: {'id ' + str(cid) if cid in seen_ids else repr(cname)} "
                                "appears twice; give every category its own id and name")
        seen_ids.add(cid)
        seen_names.add(cname)
        out.append((cid, cname))
    return sorted(out)


def _read_coco(root: Path, check: _Check):
    files: list[Path] = []
    splits: dict[str, list[Entry]] = {}
    reference: list[tuple[int, str]] | None = None
    for split in SPLITS:
        path = root / "annotations" / f"{split}.json"
        data = _read_json(path, root)
        files.append(path)
        name = f"annotations/{split}.json"
        if not isinstance(data, dict):
            raise CvexportError(f"{name} holds a JSON {type(data).__name__}; expected a COCO object with "
                                "'images', 'annotations' and 'categories'")
        categories = _coco_categories(data, name)
        if reference is None:
            reference = categories
        elif categories != reference:
            raise CvexportError(f"{name}: categories {categories} differ from annotations/train.json's {reference}; "
                                "both splits need the same category ids and names")
        label_of = {cid: label for label, (cid, _) in enumerate(categories)}
        images = data.get("images")
        annotations = data.get("annotations", [])
        named: dict[str, list[int]] = {}  # file_name -> the image ids that name it
        if not isinstance(images, list):
            raise CvexportError(f"{name}: 'images' must be a list of {{\"id\", \"file_name\"}}")
        if not isinstance(annotations, list):
            raise CvexportError(f"{name}: 'annotations' must be a list")
        by_id: dict[int, dict[str, Any]] = {}
        for i, image in enumerate(images):
            iid = image.get("id") if isinstance(image, dict) else None
            file_name = image.get("file_name") if isinstance(image, dict) else None
            if not _is_id(iid) or not isinstance(file_name, str) or not file_name:
                raise CvexportError(f"{name} images[{i}]: needs an integer 'id' and a 'file_name', "
                                    f"found {json.dumps(image)[:100]}")
            if iid in by_id:
                raise CvexportError(f"{name} images[{i}]: id {iid} appears twice; give every image its own id")
            where = f"{name} images[{i}] '{file_name}'"
            # COCO names files relative to the images folder; an absolute path or one that climbs
            # out of it would make the dataset (and its digest) depend on files outside DIR.
            if Path(file_name).is_absolute() or ".." in Path(file_name).parts:
                raise CvexportError(f"{where}: 'file_name' must be a path relative to {root / 'images'}, "
                                    "without '..'; move the image there and name it relative to that folder")
            file = root / "images" / file_name
            named.setdefault(file_name, []).append(iid)
            width, height = check.size(file, where) or (None, None)  # None: unusable, said once all are read
            declared = (image.get("width"), image.get("height"))
            if width is not None and all(v is not None for v in declared) and declared != (width, height):
                raise CvexportError(f"{where}: declared {declared[0]}x{declared[1]} but the image is {width}x{height} "
                                    "(upright, EXIF orientation applied); fix 'width'/'height' or the image")
            by_id[iid] = {"file": file, "where": where, "width": width, "height": height, "boxes": [], "labels": []}
            files.append(file)
        for i, ann in enumerate(annotations):
            where = f"{name} annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
            if not isinstance(ann, dict):
                raise CvexportError(f"{where}: expected an object with 'image_id', 'category_id' and 'bbox'")
            image = by_id.get(ann.get("image_id")) if _is_id(ann.get("image_id")) else None
            if image is None:
                raise CvexportError(f"{where}: image_id {json.dumps(ann.get('image_id'))} is not an id in 'images'; "
                                    "fix the id or add the image")
            if not _is_id(ann.get("category_id")) or ann.get("category_id") not in label_of:
                raise CvexportError(f"{where} on '{image['file']}': category_id {json.dumps(ann.get('category_id'))} "
                                    f"is not a category (ids: {', '.join(str(c) for c, _ in categories)}); fix it or "
                                    "add the category")
            if ann.get("iscrowd", 0):
                continue  # a crowd region is no single object to learn or to count
            bbox = ann.get("bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
                raise CvexportError(f"{where} on '{image['file'].name}': bbox {json.dumps(bbox)[:80]} is not "
                                    "[x, y, width, height] in pixels")
            x, y, w, h = (float(v) for v in bbox)
            if w <= 0 or h <= 0:
                raise CvexportError(f"{where} on '{image['file'].name}': bbox {bbox} has a non-positive width or "
                                    "height; fix the box or remove the annotation")
            iw, ih = image["width"], image["height"]
            if iw is None:  # an unusable image (refused with the others): no size to check the box against
                continue
            if x < -BOX_SLACK or y < -BOX_SLACK or x + w > iw + BOX_SLACK or y + h > ih + BOX_SLACK:
                raise CvexportError(f"{where} on '{image['file'].name}': bbox {bbox} reaches outside the {iw}x{ih} "
                                    "image; boxes are [x, y, width, height] in pixels of the upright image: fix it")
            image["boxes"].append([max(x, 0.0), max(y, 0.0), min(x + w, iw), min(y + h, ih)])
            image["labels"].append(label_of[ann["category_id"]])
        if by_id and not any(item["boxes"] for item in by_id.values()):
            _refuse_no_boxes(name, split, data, annotations)
        twice = {file_name: ids for file_name, ids in named.items() if len(ids) > 1}
        if twice:
            shown = "; ".join(f"'{file_name}' (ids {', '.join(map(str, ids))})"
                              for file_name, ids in list(twice.items())[:MAX_LISTED])
            more = f"; and {len(twice) - MAX_LISTED} more" if len(twice) > MAX_LISTED else ""
            check.warnings.append(
                f"{name}: {len(twice)} file{'s' if len(twice) > 1 else ''} named by more than one image id: {shown}"
                f"{more}; each such picture is read once per id, with only that id's boxes (the others count as "
                "background); give each file one image entry with all its annotations")
        splits[split] = [
            Entry(image=item["file"], where=item["where"], width=item["width"], height=item["height"],
                  boxes=np.asarray(item["boxes"], dtype=np.float64).reshape(-1, 4),
                  labels=np.asarray(item["labels"], dtype=np.int64))
            for _, item in sorted(by_id.items())
        ]
    return [n for _, n in reference], splits, files, {}


def _refuse_no_boxes(name: str, split: str, data: dict, annotations: list) -> None:
    """A split without a single box (every annotation a crowd region, or none): nothing to learn
    from in train, and in val no box to find, so mAP would be undefined (not 0)."""
    if "annotations" not in data:
        reason = "has no 'annotations' list"
    elif not annotations:
        reason = "has an empty 'annotations' list"
    else:
        reason = (f"has only crowd regions (all {len(annotations)} annotations are iscrowd: 1, which are no single "
                  "object and are left out)")
    need = ("so the detector has no box to learn from" if split == "train"
            else "so there is no box to measure mAP on (it would be undefined)")
    raise CvexportError(f"{name} {reason}, {need}; add the {split} images' boxes ([x, y, width, height] in "
                        "pixels, iscrowd 0)")


# ------------------------------------------------------------------------- ImageFolder
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


def _read_imagefolder(root: Path, check: _Check):
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


# --------------------------------------------------------------------------------- VOC
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


def _read_voc(root: Path, check: _Check):
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
