"""Issue #22: datasets a run cannot learn from or measure on are refused before anything is
written (no box, all-background masks, one ImageFolder class), every image a run reads is
decoded up front (truncated files named, all of them, in one line), and train/val overlap is
warned about. Tiny datasets (32-px frames); nothing here trains."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset_helpers import MODEL_OF, TASK_OF, copier
from cli_helpers import one_line_stderr
from cvexport.cli import main
from cvexport.models import dataset_writers
from cvexport.models.dataset_reading import VOID
from cvexport.models.user_datasets import open_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{"coco", "imagefolder", "voc"} -> a small dataset, written once."""
    root = tmp_path_factory.mktemp("tiny")
    return {
        "coco": dataset_writers.write_coco(root / "coco", train=3, val=2, size=32),
        "imagefolder": dataset_writers.write_imagefolder(root / "folder", train_per_class=1, val_per_class=1),
        "voc": dataset_writers.write_voc(root / "voc", train=2, val=1, size=32),
    }


@pytest.fixture
def copy_of(tiny, tmp_path):
    """``copy_of(fmt) -> Path``: a fresh copy of a dataset, to break."""
    return copier(tiny, tmp_path)


def _refused(root: Path, fmt: str, tmp_path: Path, capsys) -> str:
    """``train --data root`` exits 2 with one line and writes nothing; returns the line."""
    run_dir = tmp_path / "run"
    assert main(["train", MODEL_OF[fmt], "--data", str(root), "--run-dir", str(run_dir), "--max-steps", "1"]) == 2
    line = one_line_stderr(capsys)
    assert not run_dir.exists()
    return line


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------ nothing to learn from
def _crowd_only(data):
    for ann in data["annotations"]:
        ann["iscrowd"] = 1


NO_BOXES = {
    "empty annotations": ("train", lambda d: d.update(annotations=[]), "has an empty 'annotations' list, so the "
                                                                       "detector has no box to learn from"),
    "no annotations key": ("train", lambda d: d.pop("annotations"), "has no 'annotations' list, so the detector"),
    "all crowd": ("train", _crowd_only, r"has only crowd regions (all"),
    "val without boxes": ("val", lambda d: d.update(annotations=[]), "so there is no box to measure mAP on"),
    "val all crowd": ("val", _crowd_only, "so there is no box to measure mAP on (it would be undefined)"),
}


@pytest.mark.parametrize("case", list(NO_BOXES))
def test_coco_split_without_a_box_is_refused_before_training(copy_of, tmp_path, capsys, case):
    split, change, message = NO_BOXES[case]
    root = copy_of("coco")
    _edit(root / "annotations" / f"{split}.json", change)
    line = _refused(root, "coco", tmp_path, capsys)
    assert f"annotations/{split}.json " in line and message in line
    assert "iscrowd 0" in line  # what to do


def _background_only(root: Path, split: str) -> None:
    for image_id in (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split():
        path = root / "SegmentationClass" / f"{image_id}.png"
        with Image.open(path) as mask:
            values = np.asarray(mask).copy()
            palette = mask.getpalette()
        values[values != VOID] = 0  # void borders stay: still nothing but background
        out = Image.fromarray(values, mode="P")
        out.putpalette(palette)
        out.save(path)


@pytest.mark.parametrize("split,message", [("train", "nothing to learn but the background"),
                                           ("val", "mIoU would measure the background alone")])
def test_voc_masks_of_background_only_are_refused(copy_of, tmp_path, capsys, split, message):
    root = copy_of("voc")
    _background_only(root, split)
    line = _refused(root, "voc", tmp_path, capsys)
    assert f"ImageSets/Segmentation/{split}.txt: the masks of all" in line and message in line
    assert "class index (1..2) or their labelmap.txt colour" in line


def test_one_class_imagefolder_is_refused(copy_of, tmp_path, capsys):
    root = copy_of("imagefolder")
    for split in ("train", "val"):
        for folder in (root / split).iterdir():
            if folder.name != "cross":
                shutil.rmtree(folder)
    line = _refused(root, "imagefolder", tmp_path, capsys)
    assert "train has one class folder ('cross'); a classifier needs at least two classes" in line


# ------------------------------------------------------------------------- unusable files
def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_jpeg_passes_its_header_but_not_the_decode(tiny, tmp_path):
    from cvexport.models.dataset_reading import decode_problem

    path = tmp_path / "cut.jpg"
    shutil.copy(next((tiny["coco"] / "images" / "train").glob("*.jpg")), path)
    assert decode_problem(path) is None
    _truncate(path)
    with Image.open(path) as image:
        assert image.size[0] > 0  # the header is intact
    assert decode_problem(path).startswith("is truncated or corrupt (image file is truncated")


@pytest.mark.parametrize("fmt,relative,named", [
    ("coco", "images/train/00001.jpg", "annotations/train.json images[1] 'train/00001.jpg'"),
    ("imagefolder", "val/ellipse/0000.jpg", "val/ellipse/0000.jpg"),
    ("voc", "JPEGImages/val_00000.jpg", "ImageSets/Segmentation/val.txt line 1 'val_00000'"),
])
def test_a_truncated_image_is_refused_before_the_run_starts(copy_of, tmp_path, capsys, fmt, relative, named):
    root = copy_of(fmt)
    _truncate(root / relative)
    line = _refused(root, fmt, tmp_path, capsys)
    assert f"{named}: {root / relative} is truncated or corrupt (image file is truncated" in line
    assert line.endswith("replace it or remove the entry")


def test_every_unusable_image_is_named_in_one_line_with_the_count(copy_of, tmp_path, capsys):
    root = copy_of("imagefolder")
    images = sorted(root.rglob("*.jpg"))
    for path in images[:6]:
        _truncate(path)
    images[6].write_bytes(b"not an image")
    Image.new("RGB", (1, 1)).save(images[7], format="JPEG")  # load_image refuses it mid-run
    line = _refused(root, "imagefolder", tmp_path, capsys)
    assert f"--data {root}: 8 of {len(images)} images cannot be read: " in line
    shown = [path.relative_to(root).as_posix() for path in images[:6]]
    assert all(f"{name} is truncated or corrupt (image file is truncated" in line for name in shown[:5])
    assert shown[5] not in line and "; and 3 more; replace, re-copy or remove them" in line


def test_coco_unusable_images_are_all_named_not_only_the_first(copy_of, tmp_path, capsys):
    root = copy_of("coco")
    (root / "images" / "train" / "00000.jpg").unlink()
    _truncate(root / "images" / "val" / "00001.jpg")
    line = _refused(root, "coco", tmp_path, capsys)
    assert "2 of 5 images cannot be read: images/train/00000.jpg not found; images/val/00001.jpg is truncated" in line


# --------------------------------------------------------------------------- overlap
def _warnings(capsys) -> list[str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("cvexport: warning: ")]


def test_clean_datasets_warn_nothing(tiny, capsys):
    for fmt, root in tiny.items():
        open_dataset(TASK_OF[fmt], root)
    assert capsys.readouterr().err == ""


def test_val_json_identical_to_train_json_is_warned_about(copy_of, capsys):
    root = copy_of("coco")
    shutil.copy(root / "annotations" / "train.json", root / "annotations" / "val.json")
    open_dataset("detection", root)
    (line,) = _warnings(capsys)
    assert "annotations/val.json is identical to annotations/train.json: all 3 val images are train images" in line
    assert "overlap between train and val inflates every number you will see" in line


def test_val_images_with_the_bytes_of_train_images_are_warned_about(copy_of, capsys):
    root = copy_of("imagefolder")
    shutil.copy(root / "train" / "cross" / "0000.jpg", root / "val" / "cross" / "copy.jpg")
    open_dataset("classification", root)
    (line,) = _warnings(capsys)
    assert "1 of 6 val images are also in the train split (the same file or identical bytes): " \
           "val/cross/copy.jpg = train/cross/0000.jpg" in line


def test_voc_id_listed_in_both_splits_is_warned_about(copy_of, capsys):
    root = copy_of("voc")
    listing = root / "ImageSets" / "Segmentation" / "val.txt"
    listing.write_text(listing.read_text() + "train_00001\n")
    open_dataset("segmentation", root)
    (line,) = _warnings(capsys)
    assert ("1 of 2 val images are also in the train split (the same file or identical bytes): "
            "ImageSets/Segmentation/val.txt line 2 'train_00001' = ImageSets/Segmentation/train.txt line 2") in line


def test_one_coco_file_under_two_image_ids_is_warned_about(copy_of, capsys):
    root = copy_of("coco")
    path = root / "annotations" / "train.json"

    def second_id(data):
        data["images"].append({**data["images"][0], "id": 99})
        data["annotations"].append({**data["annotations"][0], "id": 999, "image_id": 99})

    _edit(path, second_id)
    data = open_dataset("detection", root)
    (line,) = _warnings(capsys)
    assert "annotations/train.json: 1 file named by more than one image id: 'train/00000.jpg' (ids 1, 99)" in line
    assert len(data.splits["train"]) == 4  # warned, still read as it is written


def _one_class(root: Path) -> None:
    for split in ("train", "val"):
        _edit(root / "annotations" / f"{split}.json", lambda d: (
            d.update(categories=[{"id": 1, "name": "shape"}]),
            [a.update(category_id=1) for a in d["annotations"]]))


def test_one_class_coco_is_a_detector_and_opens(copy_of):
    """A people detector has one class: not refused."""
    root = copy_of("coco")
    _one_class(root)
    data = open_dataset("detection", root)
    assert data.class_names == ("shape",) and all((e.labels == 0).all() for e in data.splits["val"])


def test_one_class_map_is_scored_right_and_a_val_copied_from_train_is_said_beside_it(copy_of, tmp_path, capsys):
    """Issue #22's one-class detector scored val_map50 1.0000: the evaluation is right with one
    class (a miss ranked above the hit halves AP), the val split was the train split. The run
    now says so beside the number, and records how many val boxes it was measured on."""
    from cvexport.checkpoint import read_metadata
    from cvexport.metrics import ImageDetections, detection_map

    truth = [ImageDetections(boxes=np.array([[10.0, 10, 50, 50]]), classes=np.array([0]))]
    ranked = [ImageDetections(boxes=np.array([[100.0, 100, 150, 150], [10, 10, 50, 50]]), classes=np.array([0, 0]),
                              scores=np.array([0.9, 0.1]))]
    assert detection_map(ranked, truth, ["person"])["map50"] == pytest.approx(0.5)
    root = copy_of("coco")
    _one_class(root)
    shutil.copy(root / "annotations" / "train.json", root / "annotations" / "val.json")
    out = tmp_path / "ssd.safetensors"
    assert main(["train", "ssd", "--data", str(root), "--run-dir", str(tmp_path / "run"), "--out", str(out),
                 "--max-steps", "1", "--input-size", "64"]) == 0
    printed = capsys.readouterr()
    assert "annotations/val.json is identical to annotations/train.json" in printed.err
    assert ("note: 3 of the 3 val images are train images too: the val metrics measure how well the run learnt "
            "those pictures by heart") in printed.out
    metrics = read_metadata(out)["metrics"]
    boxes = len(json.loads((root / "annotations" / "train.json").read_text())["annotations"])
    assert metrics["val_train_overlap"] == 3 and metrics["val_boxes"] == boxes
