"""torchvision's one-stage detectors (SSD300, SSDlite320, RetinaNet, FCOS) as cvexport networks.

torchvision's detectors take a list of images and loop per image, per level and per class in
Python (transform, anchors, ``postprocess_detections``), which torch.export unrolls or refuses.
cvexport splits them where its other detectors split: the exported core is the backbone and
head alone (batch in, raw head tensors out, levels concatenated in anchor order); the anchors
are a build-time constant from the model's own anchor generator at the bundle's input size;
the post-processing is graph sections built from the model's :class:`DetectionHead` (per-class
top-k and softmax for SSD, per-level top-k and sigmoid for RetinaNet, centerness and the
linear coder for FCOS). The reference for parity is torchvision's own ``forward`` on the same
images: code nobody here wrote (:meth:`torchvision_inference`).

Two-stage detectors (Faster/Mask/Keypoint R-CNN) are not offered: their box head runs after
the RPN's NMS, so the network does not end before post-processing (see docs/models.md).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from cvexport.detection_heads import TORCHVISION_WH_CLAMP, DetectionHead


@dataclass(frozen=True)
class DetectorPreset:
    """How cvexport builds and decodes one torchvision detector builder.

    head: its post-processing (``topk_candidates`` filled in from the model at build time).
    fit: how an image becomes its input (``stretch``: SSD's fixed size; ``top_left``: keep
        aspect and pad bottom/right, torchvision's GeneralizedRCNNTransform batch).
    side: the input side (fixed for SSD; the default for RetinaNet/FCOS, torchvision's min_size).
    class_key, anchors_per_location: the head tensor whose dim 0 is anchors x classes.
    """

    head: DetectionHead
    fit: str
    side: int
    fixed_side: bool
    class_key: str
    anchors_per_location: int


def _softmax_ssd(topk: int) -> DetectionHead:
    return DetectionHead(scoring="softmax", coder="ssd", variances=(0.1, 0.2), wh_clamp=TORCHVISION_WH_CLAMP,
                         candidates="per_class", topk_candidates=topk, clip=True, background=True)


def _retinanet(topk: int) -> DetectionHead:
    return DetectionHead(scoring="sigmoid", coder="ssd", variances=(1.0, 1.0), wh_clamp=TORCHVISION_WH_CLAMP,
                         candidates="per_level", topk_candidates=topk, clip=True, background=True)


def _fcos(topk: int) -> DetectionHead:
    return DetectionHead(scoring="sigmoid_centerness", coder="linear", candidates="per_level", topk_candidates=topk,
                         clip=True, background=True)


# The head's topk_candidates are torchvision's defaults (checked against the built model in the tests).
PRESETS = {
    "ssd300_vgg16": DetectorPreset(_softmax_ssd(400), "stretch", 300, True,
                                   "head.classification_head.module_list.0.weight", 4),
    "ssdlite320_mobilenet_v3_large": DetectorPreset(_softmax_ssd(300), "stretch", 320, True,
                                                    "head.classification_head.module_list.0.1.weight", 6),
    "retinanet_resnet50_fpn": DetectorPreset(_retinanet(1000), "top_left", 800, False,
                                             "head.classification_head.cls_logits.weight", 9),
    "retinanet_resnet50_fpn_v2": DetectorPreset(_retinanet(1000), "top_left", 800, False,
                                                "head.classification_head.cls_logits.weight", 9),
    "fcos_resnet50_fpn": DetectorPreset(_fcos(1000), "top_left", 800, False,
                                        "head.classification_head.cls_logits.weight", 1),
}
# SSDlite's MobileNetV3 tail: torchvision builds it reduced when no backbone weights are given
# (its COCO weights), full when trained from ImageNet backbone weights (its reference scripts).
# This key's dim 0 tells which a state dict holds.
SSDLITE_TAIL_KEY = "backbone.features.1.0.3.0.weight"
SSDLITE_REDUCED_TAIL_CHANNELS = 80
# Builder name -> feature key of the core's outputs: torchvision's head dict keys, in the order
# of DetectionHead.core_outputs (class logits, box offsets, centerness).
HEAD_OUTPUTS = ("cls_logits", "bbox_regression", "bbox_ctrness")


def builder_options(name: str, state) -> dict[str, Any]:
    """Builder arguments the state dict's shapes decide (SSDlite's tail)."""
    if name == "ssdlite320_mobilenet_v3_large" and SSDLITE_TAIL_KEY in state:
        return {"reduced_tail": int(state[SSDLITE_TAIL_KEY].shape[0]) == SSDLITE_REDUCED_TAIL_CHANNELS}
    return {}


def start_options(name: str, from_imagenet: bool) -> dict[str, Any]:
    """Builder arguments of a network trained from scratch or from ImageNet backbone weights:
    SSDlite's tail is full from ImageNet weights (as torchvision's reference training builds
    it), reduced otherwise (as torchvision's builder does without backbone weights)."""
    if name == "ssdlite320_mobilenet_v3_large":
        return {"reduced_tail": not from_imagenet}
    return {}


def build_detector(name: str, num_classes: int, side: int, reduced_tail: bool = True):
    """The torchvision detector ``name`` for ``num_classes`` (background included, torchvision's
    count) at ``side`` x ``side``, built offline, as a :func:`core_class` instance in eval mode."""
    from torchvision import models

    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": num_classes}
    if not PRESETS[name].fixed_side:
        kwargs.update(min_size=side, max_size=side)
    with _ssdlite_tail(name, reduced_tail):
        model = models.get_model(name, **kwargs)
    model.__class__ = core_class(type(model))
    return model.eval()


@contextlib.contextmanager
def _ssdlite_tail(name: str, reduced: bool):
    """torchvision's SSDlite builder chooses the tail from ``weights_backbone`` and takes no
    argument for it; building the full tail offline means handing it a backbone builder with
    ``reduced_tail=False`` for the duration of the call."""
    if name != "ssdlite320_mobilenet_v3_large" or reduced:
        yield
        return
    from torchvision.models.detection import ssdlite

    original = ssdlite.mobilenet_v3_large
    ssdlite.mobilenet_v3_large = functools.partial(_full_tail, original)
    try:
        yield
    finally:
        ssdlite.mobilenet_v3_large = original


def _full_tail(builder: Callable, **kwargs):
    kwargs["reduced_tail"] = False
    return builder(**kwargs)


@functools.lru_cache(maxsize=None)
def core_class(cls: type) -> type:
    """A subclass of a torchvision detector whose ``forward`` is the batch-wise core (backbone
    + head -> its raw tensors), with the anchors of its input size and torchvision's own
    inference beside it. Same state dict (no wrapper prefix)."""
    def forward(self, x):
        features = self.backbone(x)
        features = list(features.values()) if isinstance(features, dict) else [features]
        outputs = self.head(features)
        return tuple(outputs[key] for key in HEAD_OUTPUTS if key in outputs)

    return type(f"{cls.__name__}Core", (cls,), {
        "forward": forward, "__module__": __name__, "anchors": property(_anchors),
        "anchor_levels": property(lambda self: _anchor_grid(self)[1]),
        "input_side": property(_input_side), "torchvision_inference": _torchvision_inference,
        "torchvision_losses": _torchvision_losses,
    })


def _input_side(model) -> int:
    transform = model.transform
    return int(transform.fixed_size[0]) if transform.fixed_size else int(transform.min_size[0])


def _anchor_grid(model):
    """(anchors Tensor[N, 4] in pixels, anchors per level), computed once per model by its own
    anchor generator for one image filling the input (what torchvision computes for it)."""
    cached = model.__dict__.get("_cvexport_anchor_grid")
    if cached is not None:
        return cached
    import torch
    from torchvision.models.detection.image_list import ImageList

    side = _input_side(model)
    images = torch.zeros((1, 3, side, side))
    with torch.no_grad():
        features = model.backbone(images)
        features = list(features.values()) if isinstance(features, dict) else [features]
        anchors = model.anchor_generator(ImageList(images, [(side, side)]), features)[0]
    per_location = anchors.shape[0] // sum(f.shape[-2] * f.shape[-1] for f in features)
    levels = tuple(int(f.shape[-2] * f.shape[-1] * per_location) for f in features)
    model.__dict__["_cvexport_anchor_grid"] = (anchors, levels)
    return anchors, levels


def _anchors(model):
    """Tensor[N, 4] anchors in (x1, y1, x2, y2), normalized to the input."""
    anchors, _ = _anchor_grid(model)
    return anchors / float(_input_side(model))


def _torchvision_inference(model, images, score_threshold: float, iou_threshold: float, max_detections: int):
    """torchvision's own ``forward`` (transform, anchors, postprocess_detections) on float
    images (Tensor[3, H, W] in 0..1) with these NMS settings: a list of dicts of boxes (pixels
    of each image), scores and labels, exactly what the user's torchvision code returns."""
    import torch

    saved = {key: getattr(model, key) for key in ("score_thresh", "nms_thresh", "detections_per_img")}
    model.score_thresh, model.nms_thresh, model.detections_per_img = score_threshold, iou_threshold, max_detections
    try:
        with torch.no_grad():
            return type(model).__mro__[1].forward(model, list(images))
    finally:
        for key, value in saved.items():
            setattr(model, key, value)


def _torchvision_losses(model, images, targets) -> dict:
    """torchvision's own training losses (``loss_dict = model(images, targets)`` in train mode,
    as its reference scripts call it): ``images`` float Tensor[3, H, W] in 0..1, ``targets``
    dicts of ``boxes`` (pixels, xyxy) and ``labels`` (class index + 1; 0 is the background)."""
    if not model.training:
        raise RuntimeError("torchvision_losses needs the model in train mode (model.train())")
    return type(model).__mro__[1].forward(model, list(images), list(targets))


def torchvision_detections(model, images: Sequence, head: DetectionHead, config, input_size) -> dict:
    """torchvision's own answer in cvexport's detection contract (Tensor[B, K] outputs, boxes
    normalized to the input): label 0 (the background by torchvision's convention, never a
    positive in training) is not an output class, the others shift down by one."""
    import torch

    height, width = input_size
    k = config.max_detections
    results = model.torchvision_inference(images, config.score_threshold, config.iou_threshold, k)
    batch = len(results)
    out = {"num_detections": torch.zeros((batch, 1), dtype=torch.int32),
           "detection_boxes": torch.zeros((batch, k, 4)), "detection_scores": torch.zeros((batch, k)),
           "detection_classes": torch.zeros((batch, k), dtype=torch.int32)}
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    for index, result in enumerate(results):
        keep = result["labels"] > 0 if head.background else torch.ones_like(result["labels"], dtype=torch.bool)
        boxes, scores, labels = result["boxes"][keep][:k], result["scores"][keep][:k], result["labels"][keep][:k]
        n = int(scores.numel())
        out["num_detections"][index, 0] = n
        out["detection_boxes"][index, :n] = boxes / scale
        out["detection_scores"][index, :n] = scores
        out["detection_classes"][index, :n] = (labels - (1 if head.background else 0)).to(torch.int32)
    return out


def defaults(name: str) -> dict[str, Any]:
    """torchvision's own thresholds for the builder, read from the model it builds (meta device:
    no memory, no init): the bundle's defaults."""
    import torch

    with torch.device("meta"):
        model = build_detector(name, 2, PRESETS[name].side)
    return {"score_threshold": float(model.score_thresh), "iou_threshold": float(model.nms_thresh),
            "max_detections": int(model.detections_per_img), "topk_candidates": int(model.topk_candidates),
            "mean": tuple(float(v) for v in model.transform.image_mean),
            "std": tuple(float(v) for v in model.transform.image_std)}
