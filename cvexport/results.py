"""What a task's ``to_predictions`` gives back for one image: small frozen dataclasses of arrays.

- ``Detections``: boxes (x1, y1, x2, y2) in the original image's pixels, scores, class ids, the
  class names they index, and room for track ids (supervision's ``Detections`` is the model).
- ``Classification``: the class probabilities of the image; its top-k are derived from them.
- ``LabelMap``: a class id per pixel of the original image.
- ``StylizedImage``: the restyled picture at the original image's size.

Every result has ``to_record()``, THE one JSON form of it: ``run``'s predictions.json,
``stream``'s JSONL lines and ``predict``'s Parquet rows all hold exactly this. Its keys, their
order and the rounding are those of every earlier release, so outputs stay byte-identical.
Metrics, parity checks, annotators and printed lines read the arrays; nothing packs records
back into arrays.

Numbers are rounded once, to the precision the records have always written (``BOX_DECIMALS``,
``SCORE_DECIMALS``, ``PROBABILITY_DECIMALS``) with Python's ``round`` (the correctly rounded
decimal; ``np.round`` scales and rints, and differs on some values).

Results compare equal when their fields do (arrays by shape, dtype and values), so tests can
say ``predict(a) == predict(b)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np

BOX_DECIMALS = 2  # 0.01 px: far finer than two backends agree on a box
SCORE_DECIMALS = 5
PROBABILITY_DECIMALS = 6  # classification probabilities and segmentation pixel fractions
TOP_K = 5  # the classes a classification record lists
NO_TRACK = -1  # the track id of a detection in no confirmed track; records write it as null


def rounded(values: Any, decimals: int) -> np.ndarray:
    """``values`` (any shape) as float64, each rounded by Python's ``round`` to ``decimals``."""
    array = np.asarray(values, dtype=np.float64)
    return np.array([round(float(v), decimals) for v in array.ravel()], dtype=np.float64).reshape(array.shape)


def class_name(class_names: Sequence[str], class_id: int) -> str:
    """The name of ``class_id``; ``class N`` where the names stop short (a bundle that names none)."""
    return class_names[class_id] if class_id < len(class_names) else f"class {class_id}"


class _ArrayFields:
    """Equality by value for dataclasses whose fields hold arrays (the generated ``__eq__``
    compares arrays element-wise and cannot give one answer)."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f in fields(self):  # type: ignore[arg-type]
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, np.ndarray) or isinstance(theirs, np.ndarray):
                if not (isinstance(mine, np.ndarray) and isinstance(theirs, np.ndarray)
                        and mine.dtype == theirs.dtype and np.array_equal(mine, theirs)):
                    return False
            elif mine != theirs:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # arrays are mutable: no hash


# ------------------------------------------------------------------------------ detection
@dataclass(frozen=True, eq=False)
class Detections(_ArrayFields):
    """The detections of one image.

    xyxy (ndarray[N, 4] float64): boxes (x1, y1, x2, y2) in pixels of the original image. float64
        rather than float32: boxes are mapped back from the letterbox in float64 and rounded to
        0.01 px from there; float32 would move about one coordinate in 170 across a rounding edge.
    scores (ndarray[N] float64), class_ids (ndarray[N] int64): per box.
    class_names: what the class ids index (the bundle's).
    track_ids (ndarray[N] int64 or None): the identity of each box across frames, where a tracker
        gave one (``NO_TRACK``: a box in no confirmed track yet); carried through selection.
        Records then give each detection a "track_id" (null for ``NO_TRACK``); without a
        tracker they have no such key, as before.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...] = ()
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        set_field = object.__setattr__  # frozen: normalize the fields once, here
        set_field(self, "xyxy", np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4))
        set_field(self, "scores", np.asarray(self.scores, dtype=np.float64).reshape(-1))
        set_field(self, "class_ids", np.asarray(self.class_ids, dtype=np.int64).reshape(-1))
        set_field(self, "class_names", tuple(self.class_names))
        if self.track_ids is not None:
            set_field(self, "track_ids", np.asarray(self.track_ids, dtype=np.int64).reshape(-1))
        lengths = {len(self.xyxy), len(self.scores), len(self.class_ids)} | (
            set() if self.track_ids is None else {len(self.track_ids)})
        if len(lengths) != 1:
            raise ValueError(f"Detections fields disagree on the number of boxes: xyxy {self.xyxy.shape}, "
                             f"scores {self.scores.shape}, class_ids {self.class_ids.shape}"
                             + ("" if self.track_ids is None else f", track_ids {self.track_ids.shape}"))

    @classmethod
    def empty(cls, class_names: Sequence[str] = ()) -> "Detections":
        """No detections (an image where the model found nothing)."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), tuple(class_names))

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, index: Any) -> "Detections":
        """The detections at ``index``: a boolean mask, indices, a slice or one index (still
        Detections, of one box), as supervision selects (``detections[detections.scores > 0.5]``)."""
        if isinstance(index, (int, np.integer)):
            index = [index]
        return Detections(self.xyxy[index], self.scores[index], self.class_ids[index], self.class_names,
                          None if self.track_ids is None else self.track_ids[index])

    def rounded(self) -> "Detections":
        """These detections at the precision records write (boxes 0.01 px, scores 1e-5)."""
        return Detections(rounded(self.xyxy, BOX_DECIMALS), rounded(self.scores, SCORE_DECIMALS), self.class_ids,
                          self.class_names, self.track_ids)

    def to_record(self) -> dict[str, Any]:
        """{"detections": [{"box": [x1, y1, x2, y2], "class_id", "class_name", "score"}, ...]},
        and "track_id" (int, or null: in no confirmed track) in each where ``track_ids`` is set."""
        entries = [
            {"box": [round(float(v), BOX_DECIMALS) for v in box], "class_id": int(c),
             "class_name": self.class_names[int(c)], "score": round(float(s), SCORE_DECIMALS)}
            for box, s, c in zip(self.xyxy, self.scores, self.class_ids)
        ]
        if self.track_ids is not None:
            for entry, track_id in zip(entries, self.track_ids.tolist()):
                entry["track_id"] = None if track_id == NO_TRACK else track_id
        return {"detections": entries}

    def exact_array(self) -> None:
        """Nothing beyond the record to store (see ``LabelMap.exact_array``)."""
        return None


# ------------------------------------------------------------------------- classification
@dataclass(frozen=True, eq=False)
class Classification(_ArrayFields):
    """The class probabilities of one image (ndarray[C], as the bundle computed them) and the
    class names they are over; ``top_k`` classes go into its record."""

    probabilities: np.ndarray
    class_names: tuple[str, ...] = ()
    top_k: int = TOP_K

    def __post_init__(self) -> None:
        object.__setattr__(self, "probabilities", np.asarray(self.probabilities).reshape(-1))
        object.__setattr__(self, "class_names", tuple(self.class_names))

    @property
    def class_ids(self) -> np.ndarray:
        """The ``top_k`` classes, most probable first (ties: the lower class id first)."""
        return np.argsort(-self.probabilities, kind="stable")[: self.top_k]

    @property
    def class_id(self) -> int:
        """The most probable class."""
        return int(self.class_ids[0])

    def top(self) -> list[tuple[int, str, float]]:
        """(class id, class name, probability at record precision) of the ``top_k`` classes, best first."""
        return [(int(c), self.class_names[int(c)], round(float(self.probabilities[c]), PROBABILITY_DECIMALS))
                for c in self.class_ids]

    def to_record(self) -> dict[str, Any]:
        """{"classification": {"class_id", "class_name", "score" of the best class, "top": [the
        ``top_k`` best as {"class_id", "class_name", "score"}]}}."""
        top = [{"class_id": c, "class_name": name, "score": score} for c, name, score in self.top()]
        return {"classification": {**top[0], "top": top}}

    def exact_array(self) -> None:
        """Nothing beyond the record to store (see ``LabelMap.exact_array``)."""
        return None


# --------------------------------------------------------------------------- segmentation
@dataclass(frozen=True, eq=False)
class LabelMap(_ArrayFields):
    """A class id per pixel of one original image (``labels``, ndarray[H, W] uint8) and the class
    names the ids index. ``np.asarray(label_map)`` is the label array."""

    labels: np.ndarray
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", np.asarray(self.labels))
        object.__setattr__(self, "class_names", tuple(self.class_names))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.labels if dtype is None else self.labels.astype(dtype)

    def class_fractions(self) -> dict[str, float]:
        """Share of the pixels per class present, by class name (``class N`` where the bundle
        names none), in class id order, at record precision."""
        ids, counts = np.unique(self.labels, return_counts=True)
        return {class_name(self.class_names, int(i)): round(float(c) / self.labels.size, PROBABILITY_DECIMALS)
                for i, c in zip(ids, counts)}

    def to_record(self) -> dict[str, Any]:
        """{"class_pixel_fraction": {name: fraction}}; the map itself goes to PNGs and Parquet."""
        return {"class_pixel_fraction": self.class_fractions()}

    def exact_array(self) -> np.ndarray:
        """The result as one array that ``predict`` stores exactly beside its record (the label
        map here, the picture of a ``StylizedImage``; None where the record holds it all)."""
        return self.labels


# ---------------------------------------------------------------------------------- style
@dataclass(frozen=True, eq=False)
class StylizedImage(_ArrayFields):
    """The restyled picture of one image (``image``, ndarray[H, W, 3] uint8 RGB at the original
    image's size). ``np.asarray(stylized)`` is the picture."""

    image: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", np.asarray(self.image))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.image if dtype is None else self.image.astype(dtype)

    def to_record(self) -> dict[str, Any]:
        """Nothing: the picture goes to PNGs and Parquet."""
        return {}

    def exact_array(self) -> np.ndarray:
        """The picture (see ``LabelMap.exact_array``)."""
        return self.image
