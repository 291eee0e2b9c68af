"""COCO detection datasets (``ssd``): ``DIR/annotations/{train,val}.json``, images under
``DIR/images/`` (``file_name`` relative to it); boxes ``[x, y, width, height]`` in pixels of the
upright image; categories of any ids (in id order they become class 0, 1, ...); ``iscrowd``
boxes are left out. A split without a box (no or empty 'annotations', only crowd regions; in
val mAP would be undefined) is refused, and a file under two image ids is warned about.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cvexport.errors import CvexportError
from cvexport.models.dataset_reading import MAX_LISTED, SPLITS, DatasetCheck, DatasetFormat, Entry

# Box coordinates may reach this far past the image (pixels) before they count as outside it:
# tools that derive boxes from polygons round outwards. Such boxes are clipped to the image.
BOX_SLACK = 1.0


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


def read_coco(root: Path, check: DatasetCheck):
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



COCO = DatasetFormat(
    name="coco",
    layout="COCO detection: DIR/annotations/train.json and val.json, images under DIR/images/",
    read=read_coco,
    split_annotations=("annotations/train.json", "annotations/val.json"),
)
