"""Small datasets in the standard formats, drawn by the project's generators (shapes on real
photographs), with other classes than the shipped models: for the tests of ``train --data``
and for trying the commands on a fresh clone::

    python -m cvexport.models.dataset_writers coco DIR         # 2 classes: round, angular
    python -m cvexport.models.dataset_writers imagefolder DIR  # 5 classes: ellipse ... cross
    python -m cvexport.models.dataset_writers voc DIR          # background + round, angular

Pictures are the generators' camera frames (random aspect ratio and size), saved as JPEG, so
the letterbox path of training and of the runtime is exercised as with real photographs. The
class lists differ from the shipped ones on purpose: the detector's and the FCN's three shapes
become "round" (ellipse) and "angular" (rectangle, triangle); the classifier gets five of the
source task's shapes instead of its eight target objects.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cvexport.models.detection_data import CLASS_NAMES as SHAPES

# Generator class -> dataset class, for the detector and the FCN.
MERGED = {"ellipse": "round", "rectangle": "angular", "triangle": "angular"}
COCO_CLASSES = ("angular", "round")
# COCO category ids need not be 0.. or contiguous: these check the reader maps them in id order.
COCO_IDS = {"angular": 3, "round": 7}
FOLDER_CLASSES = ("ellipse", "rectangle", "triangle", "diamond", "cross")
VOC_CLASSES = ("background", "round", "angular")
VOC_COLORS = ((0, 0, 0), (128, 0, 0), (0, 128, 0))  # Pascal VOC's first palette colours
JPEG_QUALITY = 92


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=JPEG_QUALITY)


def write_coco(root: str | Path, train: int = 64, val: int = 32, seed: int = 0, size: int = 256) -> Path:
    """A COCO detection dataset at ``root``: ``train`` + ``val`` frames (long side about 1-3x
    ``size``), classes COCO_CLASSES with ids COCO_IDS."""
    from cvexport.models.detection_data import make_frame

    root = Path(root)
    categories = [{"id": COCO_IDS[name], "name": name, "supercategory": "shape"} for name in COCO_CLASSES]
    for split, count in (("train", train), ("val", val)):
        images, annotations = [], []
        for index in range(count):
            frame = make_frame(split, index, seed=seed, view="camera", size=size)
            height, width = frame.image.shape[:2]
            name = f"{split}/{index:05d}.jpg"
            _save_jpeg(frame.image, root / "images" / name)
            images.append({"id": index + 1, "file_name": name, "width": width, "height": height})
            for box, label in zip(frame.boxes, frame.labels):
                x1, y1, x2, y2 = (float(v) for v in box * np.array([width, height, width, height]))
                annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                    "category_id": COCO_IDS[MERGED[SHAPES[int(label)]]],
                                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                    "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root


def write_imagefolder(root: str | Path, train_per_class: int = 40, val_per_class: int = 16, seed: int = 0) -> Path:
    """An ImageFolder dataset at ``root``: FOLDER_CLASSES, objects drawn with any of the fills,
    on camera frames of random shape."""
    from cvexport.models.classification_data import FILLS, SOURCE_CLASSES, make_frame

    root = Path(root)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for number, name in enumerate(FOLDER_CLASSES):
            for k in range(per_class):
                # Source label = shape * len(FILLS) + fill, and make_frame draws label = index mod 30.
                label = number * len(FILLS) + k % len(FILLS)
                index = label + len(SOURCE_CLASSES) * (k // len(FILLS))
                frame = make_frame("source", split, index, seed=seed, view="camera")
                _save_jpeg(frame.image, root / split / name / f"{k:04d}.jpg")
    return root


def _void_borders(mask: np.ndarray) -> np.ndarray:
    """``mask`` with VOC's void label (255) on the pixels along class borders, as VOC marks them."""
    edge = np.zeros(mask.shape, dtype=bool)
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[1:] |= mask[:-1] != mask[1:]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:, 1:] |= mask[:, :-1] != mask[:, 1:]
    out = mask.copy()
    out[edge] = 255
    return out


def write_voc(root: str | Path, train: int = 64, val: int = 32, seed: int = 0, size: int = 128) -> Path:
    """A VOC-style segmentation dataset at ``root``: VOC_CLASSES in ``labelmap.txt`` (CVAT's
    format), palette PNG masks with void (255) along object borders, JPEG images."""
    from PIL import Image

    from cvexport.models.segmentation_data import SEG_CLASSES, make_frame

    root = Path(root)
    remap = np.zeros(256, dtype=np.uint8)
    for generator_id, name in enumerate(SEG_CLASSES):
        remap[generator_id] = VOC_CLASSES.index(MERGED.get(name, "background"))
    palette = [0] * 768
    for index, color in enumerate(VOC_COLORS):
        palette[3 * index : 3 * index + 3] = color
    palette[3 * 255 : 3 * 256] = (224, 224, 192)  # VOC's void colour
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("val", val)):
        ids = []
        for index in range(count):
            frame = make_frame(split, index, seed=seed, view="camera", size=size)
            image_id = f"{split}_{index:05d}"
            _save_jpeg(frame.image, root / "JPEGImages" / f"{image_id}.jpg")
            mask = Image.fromarray(_void_borders(remap[frame.mask]), mode="P")
            mask.putpalette(palette)
            mask.save(root / "SegmentationClass" / f"{image_id}.png")
            ids.append(image_id)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "".join(
        f"{name}:{','.join(str(c) for c in color)}::\n" for name, color in zip(VOC_CLASSES, VOC_COLORS)))
    return root


WRITERS = {"coco": write_coco, "imagefolder": write_imagefolder, "voc": write_voc}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="write a small demo dataset in a standard format")
    parser.add_argument("format", choices=sorted(WRITERS))
    parser.add_argument("root", help="directory to write (created)")
    args = parser.parse_args(argv)
    root = WRITERS[args.format](args.root)
    print(f"wrote a {args.format} dataset to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
