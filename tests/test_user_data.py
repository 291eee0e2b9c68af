"""A user's dataset in the standard formats (cvexport.models.user_datasets): COCO, ImageFolder and
VOC read into the generators' sample form, odd image files loaded upright in RGB, and every kind
of bad data refused with one line naming the file and entry, before anything is written."""

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
from cvexport.errors import CvexportError
from cvexport.models import dataset_writers
from cvexport.models.dataset_reading import VOID
from cvexport.models.user_datasets import open_dataset


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Small datasets of each format, written once: {"coco", "imagefolder", "voc"} -> directory."""
    root = tmp_path_factory.mktemp("user-data")
    return {
        "coco": dataset_writers.write_coco(root / "coco", train=6, val=3, size=128),
        "imagefolder": dataset_writers.write_imagefolder(root / "folder", train_per_class=2, val_per_class=1),
        "voc": dataset_writers.write_voc(root / "voc", train=4, val=2),
    }


@pytest.fixture
def copy_of(datasets, tmp_path):
    """``copy_of(fmt) -> Path``: a fresh copy of a dataset, to break."""
    return copier(datasets, tmp_path)


# ------------------------------------------------------------------------------ reading
def test_coco_categories_become_classes_in_id_order_and_boxes_stay_in_pixels(datasets):
    data = open_dataset("detection", datasets["coco"])
    ann = json.loads((datasets["coco"] / "annotations" / "train.json").read_text())
    # ids 3 (angular) and 7 (round): class 0 and 1, whatever order the file lists them in
    assert data.class_names == tuple(name for _, name in sorted((c["id"], c["name"]) for c in ann["categories"]))
    label_of = {3: 0, 7: 1}
    first = ann["images"][0]
    expected = [(a["bbox"], label_of[a["category_id"]]) for a in ann["annotations"] if a["image_id"] == first["id"]]
    entry = data.splits["train"][0]
    assert len(entry.boxes) == len(expected) > 0
    for box, label, (bbox, want) in zip(entry.boxes, entry.labels, expected):
        x, y, w, h = bbox
        np.testing.assert_allclose(box, [x, y, x + w, y + h], atol=1e-6)
        assert label == want
    sample = data.sample("train", 0)
    assert sample.image.shape == (first["height"], first["width"], 3) and sample.image.dtype == np.uint8
    np.testing.assert_allclose(sample.boxes * ([first["width"], first["height"]] * 2), entry.boxes, atol=1e-3)


def test_fitted_samples_are_letterboxed_to_the_network_input(datasets):
    data = open_dataset("detection", datasets["coco"])
    picture = data.sample("train", 0)
    fitted, box_map = data.fitted("train", 0, 96)
    assert fitted.image.shape == (96, 96, 3)
    # boxes mapped to the input and back land on the picture's boxes
    height, width = picture.image.shape[:2]
    back = box_map.boxes_to_original(fitted.boxes, 96, 96)
    np.testing.assert_allclose(back, picture.boxes * [width, height, width, height], atol=1.0)


def test_imagefolder_classes_are_the_sorted_folder_names(datasets):
    data = open_dataset("classification", datasets["imagefolder"])
    assert data.class_names == tuple(sorted(dataset_writers.FOLDER_CLASSES))
    assert list(data.class_names) != list(dataset_writers.FOLDER_CLASSES)  # sorting is observable here
    for entry in data.splits["val"]:
        assert data.class_names[entry.label] == entry.image.parent.name


def test_voc_masks_read_as_class_ids_with_void(datasets):
    data = open_dataset("segmentation", datasets["voc"])
    assert data.class_names == dataset_writers.VOC_CLASSES
    sample = data.sample("train", 0)
    values = set(np.unique(sample.mask))
    assert values <= {0, 1, 2, VOID} and VOID in values and len(values) >= 3
    assert sample.mask.shape == sample.image.shape[:2]
    # the metric sees no void pixel
    _, truths = data.images_and_truths("val")
    predictions = [np.zeros_like(t) for t in truths]
    kept_predictions, kept_truths = data.metric_inputs(predictions, truths)
    assert all(VOID not in t for t in kept_truths)
    assert sum(t.size for t in kept_truths) == sum(int((t != VOID).sum()) for t in truths)
    assert [p.shape for p in kept_predictions] == [t.shape for t in kept_truths]


def test_voc_class_names_file_and_grey_masks(copy_of):
    root = copy_of("voc")
    (root / "labelmap.txt").unlink()
    (root / "class_names.txt").write_text("background\nround\nangular\n")
    for mask in (root / "SegmentationClass").glob("*.png"):
        with Image.open(mask) as image:
            Image.fromarray(np.asarray(image), mode="L").save(mask)
    data = open_dataset("segmentation", root)
    assert data.class_names == ("background", "round", "angular")
    assert VOID in np.unique(data.sample("val", 0).mask)


def test_voc_rgb_masks_map_through_the_labelmap_colours(copy_of):
    root = copy_of("voc")
    reference = open_dataset("segmentation", root).sample("train", 0).mask
    colors = dict(enumerate(dataset_writers.VOC_COLORS))
    entry = open_dataset("segmentation", root).splits["train"][0]
    rgb = np.zeros(reference.shape + (3,), np.uint8)
    for label, color in colors.items():
        rgb[reference == label] = color
    rgb[reference == VOID] = colors[0]  # labelmap colours have no void
    Image.fromarray(rgb).save(entry.mask)
    mask = open_dataset("segmentation", root).sample("train", 0).mask
    np.testing.assert_array_equal(mask, np.where(reference == VOID, 0, reference))


def test_digest_names_the_contents_not_the_place(datasets, tmp_path):
    first = open_dataset("classification", datasets["imagefolder"]).digest
    moved = Path(shutil.copytree(datasets["imagefolder"], tmp_path / "elsewhere"))
    assert open_dataset("classification", moved).digest == first
    image = next((moved / "train").rglob("*.jpg"))
    image.write_bytes(image.read_bytes() + b"\0")  # one byte more, still a valid JPEG
    assert open_dataset("classification", moved).digest != first


# ---------------------------------------------------------------------- odd image files
def _odd_images(upright: np.ndarray) -> dict[str, Image.Image]:
    """The same picture as grey, RGBA (half transparent), 16-bit grey PNG and EXIF-rotated JPEG."""
    grey = Image.fromarray(upright).convert("L")
    rgba = Image.fromarray(upright).convert("RGBA")
    alpha = np.full(upright.shape[:2], 255, np.uint8)
    alpha[:, : upright.shape[1] // 2] = 0
    rgba.putalpha(Image.fromarray(alpha))
    sixteen = Image.fromarray((np.asarray(grey, np.uint16) * 257).astype(np.uint16))
    return {"grey.png": grey, "rgba.png": rgba, "16bit.png": sixteen}


def test_grey_rgba_16bit_and_exif_rotated_images_load_upright_rgb(tmp_path):
    from cvexport.images import load_image

    from cvexport.models.photos import photo

    # a photograph (JPEG keeps it close), 60 wide and 40 high
    upright = np.asarray(Image.fromarray(photo("astronaut")).resize((60, 40), Image.BILINEAR))
    root = tmp_path / "folder"
    for split in ("train", "val"):
        for name, image in _odd_images(upright).items():
            (root / split / "odd").mkdir(parents=True, exist_ok=True)
            image.save(root / split / "odd" / name)
        # stored rotated (40 wide, 60 high) with EXIF orientation 6: viewers turn it upright
        stored = Image.fromarray(np.rot90(upright, k=1).copy())
        exif = Image.Exif()
        exif[0x0112] = 6
        stored.save(root / split / "odd" / "exif.jpg", exif=exif, quality=95)
        (root / split / "plain").mkdir()  # a classifier needs a second class
        Image.fromarray(upright).save(root / split / "plain" / "plain.png")
    data = open_dataset("classification", root)
    by_name = {entry.image.name: i for i, entry in enumerate(data.splits["train"])}
    for name, index in by_name.items():
        image = data.sample("train", index).image
        assert image.dtype == np.uint8 and image.shape == (40, 60, 3), name
        assert data.splits["train"][index].width == 60 and data.splits["train"][index].height == 40, name
    grey = data.sample("train", by_name["grey.png"]).image
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    np.testing.assert_array_equal(data.sample("train", by_name["16bit.png"]).image, grey)
    rgba = data.sample("train", by_name["rgba.png"]).image
    assert (rgba[:, :30] == 255).all()  # transparent half composited on white
    np.testing.assert_array_equal(rgba[:, 30:], upright[:, 30:])
    exif = data.sample("train", by_name["exif.jpg"]).image.astype(int)
    assert np.abs(exif - upright).mean() < 8  # upright, JPEG noise only
    assert np.abs(exif - upright[::-1, ::-1]).mean() > 30  # not turned the wrong way
    assert exif.shape == load_image(root / "train" / "odd" / "exif.jpg").shape


def test_coco_boxes_are_checked_against_the_upright_size(copy_of):
    root = copy_of("coco")
    path = root / "annotations" / "train.json"
    ann = json.loads(path.read_text())
    first = next(image for image in ann["images"] if abs(image["width"] - image["height"]) > 8)
    width, height = first["width"], first["height"]
    file = root / "images" / first["file_name"]
    with Image.open(file) as image:
        upright = np.asarray(image.convert("RGB"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways (height x width), viewers turn it upright
    Image.fromarray(np.rot90(upright, k=1).copy()).save(file, exif=exif)
    assert open_dataset("detection", root).splits["train"][ann["images"].index(first)].width == width
    # A box that fits the file as stored (sideways) but not the upright picture.
    box = [1, width - 5, 4, 4] if width > height else [height - 5, 1, 4, 4]
    ann["annotations"].append({"id": 999, "image_id": first["id"], "category_id": 3, "bbox": box})
    path.write_text(json.dumps(ann))
    with pytest.raises(CvexportError, match=rf"\(id 999\) on '{Path(first['file_name']).name}': bbox .* reaches "
                                            rf"outside the {width}x{height} image"):
        open_dataset("detection", root)


# ----------------------------------------------------------------------------- bad data
def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _first_annotation(data):
    return data["annotations"][0]


BAD_COCO = {
    "missing annotation file": (lambda root: (root / "annotations" / "val.json").unlink(),
                                r"annotation file .*val\.json not found"),
    "invalid json": (lambda root: (root / "annotations" / "train.json").write_text("{"), r"train\.json is not valid JSON"),
    "absolute file_name": (lambda root: _edit_json(root / "annotations" / "train.json", lambda d: d["images"][0]
                                                   .update(file_name=str((root / "images" / d["images"][0]["file_name"])
                                                                         .resolve()))),
                           r"annotations/train\.json images\[0\] '/.*': 'file_name' must be a path relative to"),
    "file_name climbing out": (lambda root: _edit_json(root / "annotations" / "train.json", lambda d: d["images"][0]
                                                       .update(file_name="../annotations/train.json")),
                               r"images\[0\] '\.\./annotations/train\.json': 'file_name' must be a path relative"),
    "image listed but absent": (lambda root: next((root / "images" / "train").glob("00001.jpg")).unlink(),
                                r"annotations/train\.json images\[1\] 'train/00001\.jpg': image .* not found"),
    "box outside image": (lambda root: _edit_json(root / "annotations" / "train.json", lambda d: _first_annotation(d)
                                                  .update(bbox=[5, 5, 5000, 10])),
                          r"annotations/train\.json annotations\[0\] \(id 1\) on '00000\.jpg': bbox .* reaches outside"),
    "negative box origin": (lambda root: _edit_json(root / "annotations" / "train.json", lambda d: _first_annotation(d)
                                                    .update(bbox=[-20, 5, 10, 10])), r"annotations\[0\].*outside"),
    "zero width box": (lambda root: _edit_json(root / "annotations" / "train.json", lambda d: _first_annotation(d)
                                               .update(bbox=[5, 5, 0, 10])),
                       r"annotations\[0\] \(id 1\) on '00000\.jpg': bbox \[5, 5, 0, 10\] has a non-positive width"),
    "unknown category": (lambda root: _edit_json(root / "annotations" / "val.json", lambda d: _first_annotation(d)
                                                 .update(category_id=42)),
                         r"annotations/val\.json annotations\[0\] \(id 1\) .*category_id 42 is not a category \(ids: 3, 7\)"),
    "unknown image id": (lambda root: _edit_json(root / "annotations" / "train.json", lambda d: _first_annotation(d)
                                                 .update(image_id=4242)),
                         r"annotations\[0\] \(id 1\): image_id 4242 is not an id in 'images'"),
    "list as image id": (lambda root: _edit_json(root / "annotations" / "train.json", lambda d: _first_annotation(d)
                                                 .update(image_id=[1])),
                         r"annotations\[0\] \(id 1\): image_id \[1\] is not an id in 'images'"),
    "object as category id": (lambda root: _edit_json(root / "annotations" / "train.json",
                                                       lambda d: _first_annotation(d).update(category_id={"id": 3})),
                              r"annotations\[0\] \(id 1\) .*category_id \{\"id\": 3\} is not a category"),
    "duplicate image id": (lambda root: _edit_json(root / "annotations" / "train.json",
                                                   lambda d: d["images"][1].update(id=d["images"][0]["id"])),
                           r"images\[1\]: id 1 appears twice"),
    "declared size differs": (lambda root: _edit_json(root / "annotations" / "train.json",
                                                      lambda d: d["images"][0].update(width=d["images"][0]["width"] + 7)),
                              r"images\[0\] 'train/00000\.jpg': declared \d+x\d+ but the image is"),
    "splits disagree on categories": (lambda root: _edit_json(root / "annotations" / "val.json",
                                                              lambda d: d["categories"][0].update(name="other")),
                                      r"val\.json: categories .* differ from annotations/train\.json"),
    "corrupt image": (lambda root: next((root / "images" / "val").glob("00000.jpg")).write_bytes(b"not a jpeg"),
                      r"val\.json images\[0\] 'val/00000\.jpg': .* is not a readable image"),
}

BAD_FOLDER = {
    "empty class folder": (lambda root: [p.unlink() for p in (root / "val" / "cross").iterdir()],
                           r"class folder .*val/cross is empty"),
    "class folder with no images": (lambda root: [p.rename(p.with_suffix(".txt"))
                                                  for p in (root / "train" / "diamond").iterdir()],
                                    r"class folder .*train/diamond is empty"),
    "val lacks a class": (lambda root: shutil.rmtree(root / "val" / "triangle"),
                          r"val/ has other class folders than train/ \(missing triangle\)"),
    "no train folder": (lambda root: shutil.rmtree(root / "train"), r"no train/ folder"),
    "corrupt image": (lambda root: (root / "train" / "cross" / "0000.jpg").write_bytes(b"\xff\xd8 broken"),
                      r"train/cross/0000\.jpg: .* is not a readable image"),
}


def _first_mask(root: Path) -> Path:
    return root / "SegmentationClass" / (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]


def _resize_mask(root: Path) -> None:
    path = _first_mask(root).with_suffix(".png")
    with Image.open(path) as mask:
        mask.resize((mask.width + 3, mask.height)).save(path)


def _paint_value(root: Path, value: int) -> None:
    path = _first_mask(root).with_suffix(".png")
    with Image.open(path) as mask:
        values = np.asarray(mask).copy()
        palette = mask.getpalette()
    values[:2, :2] = value
    out = Image.fromarray(values, mode="P")
    out.putpalette(palette)
    out.save(path)


BAD_VOC = {
    "mask size differs": (_resize_mask, r"Segmentation/train\.txt line 1 'train_00000': mask .*train_00000\.png "
                                        r"is \d+x\d+ pixels but its image train_00000\.jpg is \d+x\d+"),
    "values that are not classes": (lambda root: _paint_value(root, 7),
                                    r"line 1 'train_00000': mask .* has values 7 that are not classes \(0\.\.2"),
    "listed image absent": (lambda root: (root / "JPEGImages" / "val_00001.jpg").unlink(),
                            r"Segmentation/val\.txt line 2 'val_00001': no image"),
    "mask absent": (lambda root: (root / "SegmentationClass" / "train_00002.png").unlink(),
                    r"train\.txt line 3 'train_00002': no mask .*train_00002\.png"),
    "missing split list": (lambda root: (root / "ImageSets" / "Segmentation" / "val.txt").unlink(),
                           r"split list .*val\.txt not found"),
    "no class names": (lambda root: (root / "labelmap.txt").unlink(), r"no labelmap\.txt or class_names\.txt"),
    "rgb mask with other colours": (lambda root: Image.new("RGB", Image.open(_first_mask(root).with_suffix(".png"))
                                                           .size, (1, 2, 3)).save(_first_mask(root).with_suffix(".png")),
                                    r"mask .* has colours \(1,2,3\) that are no class in labelmap\.txt"),
}

CASES = ([("coco", name, *case) for name, case in BAD_COCO.items()]
         + [("imagefolder", name, *case) for name, case in BAD_FOLDER.items()]
         + [("voc", name, *case) for name, case in BAD_VOC.items()])


@pytest.mark.parametrize("fmt,name,breaks,message", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_data_is_one_line_naming_the_file_and_nothing_is_written(copy_of, tmp_path, capsys, fmt, name,
                                                                    breaks, message):
    root = copy_of(fmt)
    breaks(root)
    with pytest.raises(CvexportError, match=message):
        open_dataset(TASK_OF[fmt], root)
    run_dir = tmp_path / "run"
    code = main(["train", MODEL_OF[fmt], "--data", str(root), "--run-dir", str(run_dir), "--max-steps", "1"])
    assert code == 2
    err = one_line_stderr(capsys)
    assert str(root) in err or "annotations/" in err or "ImageSets/" in err
    assert not run_dir.exists()  # checked before the run directory is made


def test_a_dataset_of_another_format_says_which_layout_is_expected(datasets, tmp_path, capsys):
    code = main(["train", "ssd", "--data", str(datasets["imagefolder"]), "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert "annotations/train.json not found; a COCO dataset needs" in one_line_stderr(capsys)
    code = main(["train", "style", "--data", str(datasets["imagefolder"]), "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert "--data applies to the ssd, classifier and fcn models" in one_line_stderr(capsys)
    code = main(["train", "fcn", "--data", str(tmp_path / "nowhere")])
    assert code == 2
    assert "no such directory" in one_line_stderr(capsys)


def test_sample_images_serve_as_calibration_pictures(datasets):
    from cvexport.export.quantize import calibration_batches
    from cvexport.registry import get_spec

    data = open_dataset("classification", datasets["imagefolder"])
    train = len(data.splits["train"])
    pictures = data.sample_images(None, "train", range(train + 1))
    np.testing.assert_array_equal(pictures[train], pictures[0])  # indices wrap round the split
    assert pictures[1].shape == data.sample("train", 1).image.shape
    batches = list(calibration_batches(data.sample_images, get_spec("classifier"), 5, batch_size=4))
    assert [b.shape for b in batches] == [(4, 3, 64, 64), (1, 3, 64, 64)]
