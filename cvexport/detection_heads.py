"""What a detector's network outputs and how its post-processing turns them into detections.

One :class:`DetectionHead` per model, data only: the detection task builds its graph sections
(cvexport.export.sections) and its PyTorch reference (cvexport.ops.detection) from it, so a
new detector family is a new head value, not a new code path. The project's TinySSD is the
default head; torchvision's one-stage detectors and a user's declared module are other values.

Network outputs (the exported core, batch first, levels concatenated in anchor order):

- ``coder`` "ssd": ``class_logits`` [B, N, C(+1)] and ``box_offsets`` [B, N, 4] (centre/size
  offsets against ``anchors`` [N, 4], normalized xyxy, scaled by ``variances``);
- ``coder`` "linear" (FCOS): ``box_offsets`` [B, N, 4] are the left/top/right/bottom distances
  from each anchor's centre in units of its size; with ``scoring`` "sigmoid_centerness" a third
  output ``centerness`` [B, N, 1];
- ``coder`` "xyxy" / "cxcywh": the network decodes itself: ``boxes`` [B, N, 4] (normalized to
  the input, or pixels with ``box_units`` "pixels") and ``class_scores`` [B, N, C] (YOLO-style
  heads); no anchors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCORINGS = ("softmax", "sigmoid", "sigmoid_centerness", "probabilities")
CODERS = ("ssd", "linear", "xyxy", "cxcywh")
CANDIDATES = ("all", "per_class", "per_level")
# torchvision's BoxCoder clamps the exp() of the size offsets at log(1000 / 16)
# (torchvision/models/detection/_utils.py: bbox_xform_clip).
TORCHVISION_WH_CLAMP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class DetectionHead:
    """A detector's outputs and post-processing, as data.

    scoring: "softmax" over the class column (column 0 the background, dropped), "sigmoid" per
        class, "sigmoid_centerness" (FCOS: sqrt(sigmoid(class) * sigmoid(centerness))), or
        "probabilities" (already scores in 0..1).
    coder: see the module docstring.
    variances: the "ssd" coder's (centre, size) scales: 1 / torchvision's BoxCoder weights
        (SSD's 10, 10, 5, 5 -> 0.1, 0.2; RetinaNet's 1, 1, 1, 1 -> 1, 1).
    wh_clamp: the "ssd" coder clamps the scaled size offsets at this before exp(); None: no clamp.
    candidates: which (anchor, class) pairs reach NMS: "all" above the score threshold,
        "per_class" the top ``topk_candidates`` anchors per class (torchvision's SSD),
        "per_level" the top ``topk_candidates`` (anchor, class) pairs per feature level
        (RetinaNet, FCOS; the level sizes come from the model).
    clip: clip boxes to the input before NMS (torchvision does; TinySSD does not).
    background: the score columns include a background (torchvision's label 0, and the
        softmax's column 0) that is never output: output class i is column i + 1.
    box_units: decoded boxes' units, "normalized" (0..1 of the input) or "pixels".
    """

    scoring: str = "softmax"
    coder: str = "ssd"
    variances: tuple[float, float] = (0.1, 0.2)
    wh_clamp: float | None = None
    candidates: str = "all"
    topk_candidates: int | None = None
    clip: bool = False
    background: bool = True
    box_units: str = "normalized"

    def __post_init__(self):
        for name, value, allowed in (("scoring", self.scoring, SCORINGS), ("coder", self.coder, CODERS),
                                     ("candidates", self.candidates, CANDIDATES),
                                     ("box_units", self.box_units, ("normalized", "pixels"))):
            if value not in allowed:
                raise ValueError(f"DetectionHead.{name} {value!r} is not one of {allowed}")
        if self.candidates != "all" and not self.topk_candidates:
            raise ValueError(f"candidates {self.candidates!r} needs topk_candidates")
        if self.scoring == "sigmoid_centerness" and self.coder != "linear":
            raise ValueError("centerness scoring comes with the linear (FCOS) coder")

    @property
    def anchored(self) -> bool:
        """The boxes are offsets against anchors (the model gives ``anchors``)."""
        return self.coder in ("ssd", "linear")

    @property
    def core_outputs(self) -> tuple[str, ...]:
        """The exported network's output names, in the order the module returns them."""
        if not self.anchored:
            return ("boxes", "class_scores")
        if self.scoring == "sigmoid_centerness":
            return ("class_logits", "box_offsets", "centerness")
        return ("class_logits", "box_offsets")

    @property
    def is_tinyssd(self) -> bool:
        """Today's SSD post-processing exactly (every bundle built before heads existed)."""
        return self == TINYSSD_HEAD

    def to_record(self) -> dict:
        """The manifest's ``postprocess.head`` entry."""
        record = {"scoring": self.scoring, "coder": self.coder, "candidates": self.candidates, "clip": self.clip,
                  "background": self.background}
        if self.coder == "ssd":
            record.update(variances=list(self.variances), wh_clamp=self.wh_clamp)
        if self.topk_candidates:
            record["topk_candidates"] = self.topk_candidates
        if not self.anchored:
            record["box_units"] = self.box_units
        return record

    @classmethod
    def from_record(cls, record) -> "DetectionHead":
        """The head a manifest's ``postprocess.head`` records (see :meth:`to_record`)."""
        values = dict(record)
        if "variances" in values:
            values["variances"] = tuple(values["variances"])
        return cls(**values)


TINYSSD_HEAD = DetectionHead()
