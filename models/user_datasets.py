"""A user's own dataset in the standard formats, read and checked before any training starts.

The format is the task's (its training hooks' ``dataset_format``, see
:mod:`cvexport.models.training_tasks`), each read by its own module:

- COCO detection (``ssd``, :mod:`cvexport.models.coco_format`): ``DIR/annotations/{train,val}.json``,
  images under ``DIR/images/``.
- ImageFolder classification (``classifier``, :mod:`cvexport.models.imagefolder_format`):
  ``DIR/{train,val}/<class>/<image>``.
- VOC-style segmentation (``fcn``, :mod:`cvexport.models.voc_format`): ``DIR/JPEGImages/``,
  ``DIR/SegmentationClass/``, ``DIR/ImageSets/Segmentation/{train,val}.txt`` and
  ``DIR/labelmap.txt`` or ``DIR/class_names.txt``.

Everything a training run will read is checked when the dataset is opened, so a mistake ends in
one line naming the file (and the entry) and what to fix before anything is written: a missing
annotation file or split list, an image listed but absent or unreadable, a box outside its
image or with a non-positive size, an unknown category or image id, an empty class folder, a
mask whose size differs from its image, mask values that are not classes. Every image is decoded
(JPEGs at 1/8 scale, see :func:`cvexport.models.dataset_reading.decode_problem`), so a truncated
file is found before the run, and all unusable images are named in one line. Data nothing can be
learnt from or measured on is refused too: a COCO split without a box (no or empty
'annotations', only crowd regions; in val mAP would be undefined), VOC masks of background only,
an ImageFolder of one class. Val images that are train images too (same file or same bytes) and
a COCO file under two image ids are warned about. Images are read with
:func:`cvexport.images.load_image` (grey, RGBA, 16-bit and EXIF-rotated files come out upright
RGB), and annotations are taken to be in pixels of the upright image, as annotation tools show it.

Samples come in the form the built-in generators give (``DetectionSample`` with boxes normalized
to the picture, ``ClassificationSample``, ``SegmentationSample``), so training and evaluation
fit them to the network with the runtime's letterbox exactly as the shipped data; the task's
training hooks make them (``sample``, ``fit_to_input``, ``truth``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cvexport.errors import CvexportError, counted, stderr_warning
from cvexport.models.dataset_reading import MAX_LISTED, SPLITS, DatasetCheck, Entry
from cvexport.models.training_tasks.base import FineTuning
from cvexport.models.training_tasks.registry import fine_tuning, fine_tuning_tasks

MAX_CLASSES = 254  # class ids are stored in uint8 masks, 255 being VOID


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
    # the hooks of the model being trained, where they are not the task's (a torchvision
    # builder's fit its input as its own transform does): see :meth:`with_hooks`
    training: FineTuning | None = None

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

    @property
    def hooks(self) -> FineTuning:
        """The training hooks of the dataset's task (or of the model it was given to, see
        :meth:`with_hooks`), which make its samples and truths."""
        if self.training is not None:
            return self.training
        return fine_tuning(self.task, f"no fine-tuning hooks for the {self.task} task")

    def with_hooks(self, hooks: FineTuning) -> "UserDataset":
        """This dataset with samples fitted, predicted and scored by ``hooks`` (a model's own
        hooks of the same task: same files, same digest)."""
        if hooks.task != self.task:
            raise ValueError(f"{hooks.task} hooks for a {self.task} dataset")
        return replace(self, training=hooks)

    # ------------------------------------------------------------------------ samples
    def sample(self, split: str, index: int):
        """The picture as a user passes it, with its annotation: DetectionSample (boxes normalized
        to the picture), ClassificationSample or SegmentationSample (mask of class ids, VOID kept)."""
        entry = self.splits[split][index]
        return self.hooks.sample(entry, self._picture(entry), len(self.class_names), self.colors)

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
        return self.hooks.fit_to_input(self.sample(split, index), size)

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
        entries = self.splits[split][: count or len(self.splits[split])]
        return [self.hooks.truth(entry, len(self.class_names), self.colors) for entry in entries]

    def metric_inputs(self, predictions: list[Any], truths: list[Any]) -> tuple[list[Any], list[Any]]:
        """Predictions and truths as the task's metric takes them: VOID pixels left out of label maps
        (as flat arrays, which the segmentation metric accepts), everything else as it is."""
        return self.hooks.metric_inputs(predictions, truths)


# ----------------------------------------------------------------------------- opening
def open_dataset(task: str, root: str | Path, model: str = "") -> UserDataset:
    """The dataset at ``root`` in the format of ``task`` (see the module docstring), checked."""
    tasks = fine_tuning_tasks()
    fmt = fine_tuning(task, f"--data applies to {', '.join(tasks[:-1])} and {tasks[-1]} models; "
                            f"'{model or task}' is a {task} model").dataset_format
    root = Path(root)
    if not root.is_dir():
        raise CvexportError(f"--data {root}: no such directory; expected a {fmt.layout}")
    check = DatasetCheck(root)
    names, splits, files, colors = fmt.read(root, check)
    for split in SPLITS:
        if not splits[split]:
            raise CvexportError(f"--data {root}: the {split} split has no images; {split} needs at least one "
                                f"({fmt.layout})")
    if len(names) > MAX_CLASSES:
        raise CvexportError(f"--data {root}: {len(names)} classes, more than the {MAX_CLASSES} supported")
    # Last, as it costs the most: the files are known to be what the format asks for.
    check.decode([entry.image for split in SPLITS for entry in splits[split]])
    check.refuse_unusable(sum(len(splits[split]) for split in SPLITS))
    digests = _file_digests(root, files)
    dataset = UserDataset(fmt.name, task, root, tuple(names), splits, _digest(digests), colors, digests)
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
    annotations = dataset.hooks.dataset_format.split_annotations  # (train, val) files, where a format has them
    if annotations is not None and digests[annotations[0]] == digests[annotations[1]]:
        what = f"{annotations[1]} is identical to {annotations[0]}: all {total} val images are train images"
    else:
        shown = "; ".join(f"{dataset.splits['val'][v].where} = {dataset.splits['train'][t].where}"
                          for v, t in shared[:MAX_LISTED])
        more = f"; and {len(shared) - MAX_LISTED} more" if len(shared) > MAX_LISTED else ""
        what = (f"{len(shared)} of {total} val images are also in the train split (the same file or identical "
                f"bytes): {shown}{more}")
    return [f"--data {root}: {what}; overlap between train and val inflates every number you will see (the "
            "run's val metric, verify); keep each picture in one split"]

