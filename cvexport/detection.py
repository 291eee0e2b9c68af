"""The detection task: how an SSD-style model is exported, checked and read back.

- ``export_graphs``: torch export of the network at the build's precision, then the decode and
  NMS sections (standard ONNX or the EfficientNMS_TRT plugin) and the fixed output contract.
- ``reference_outputs``: the PyTorch answer in that same contract.
- ``parity_frames`` / ``compare``: the parity check ``build`` and the tests run.
- ``to_predictions`` / ``render``: typed detections in pixels of each original image.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from cvexport.compare import TOLERANCES, DetectionParity, compare_detections, valid_detections
from cvexport.errors import CvexportError
from cvexport.metrics import Metric
from cvexport.ops.detection import NmsConfig

# Build variants of the TensorRT GPU matrix (tests/gpu_matrix.py): BuildOptions fields per bundle.
# Both NMS flavors at every precision; uint8 input (in-graph normalization) once per flavor, at fp32.
GPU_BUILD_VARIANTS = (
    *({"nms": nms, "precision": precision, "input_format": "float"}
      for nms in ("onnx", "efficient") for precision in ("fp32", "fp16", "int8")),
    *({"nms": nms, "precision": "fp32", "input_format": "uint8"} for nms in ("onnx", "efficient")),
)

NMS_FLAVORS = ("onnx", "efficient")


def nms_config(manifest: dict[str, Any]) -> NmsConfig:
    post = manifest["postprocess"]
    return NmsConfig(post["score_threshold"], post["iou_threshold"], post["max_detections"])


def build_nms_config(spec, options) -> NmsConfig:
    """The NMS settings of a build: the options where given, else the spec's defaults."""
    defaults = spec.defaults
    pick = lambda value, key: defaults[key] if value is None else value  # noqa: E731
    return NmsConfig(pick(options.score_threshold, "score_threshold"), pick(options.iou_threshold, "iou_threshold"),
                     pick(options.max_detections, "max_detections"))


def check_options(spec, options) -> None:
    """One-line errors for detection build options that cannot work."""
    from cvexport.trt_compat import TOPK_MAX_K as TRT_MAX_TOPK

    config, nms = build_nms_config(spec, options), options.nms or "onnx"
    num_anchors, num_classes = spec.build().anchors.shape[0], len(spec.class_names)
    if nms not in NMS_FLAVORS:
        raise CvexportError(f"unknown --nms '{nms}'; choose one of: {', '.join(NMS_FLAVORS)}")
    if not 1 <= config.max_detections <= min(TRT_MAX_TOPK, num_anchors * num_classes):
        raise CvexportError(
            f"--max-detections {config.max_detections} is outside 1..{min(TRT_MAX_TOPK, num_anchors * num_classes)} "
            "(TensorRT's TopK limit is 3840)"
        )
    if not 0.0 <= config.score_threshold < 1.0:
        raise CvexportError(f"--score-threshold {config.score_threshold} must be in [0, 1)")
    if not 0.0 < config.iou_threshold <= 1.0:
        raise CvexportError(f"--iou-threshold {config.iou_threshold} must be in (0, 1]")
    from cvexport.trt_plugins.efficient_nms import DENSE_PATH_THRESHOLD

    if nms == "efficient" and config.score_threshold < DENSE_PATH_THRESHOLD:
        # Below it the plugin's dense path can put rejected candidates (score -32768) in the output.
        raise CvexportError(
            f"--score-threshold {config.score_threshold} is below {DENSE_PATH_THRESHOLD}, where EfficientNMS_TRT "
            "switches to a dense path that can return rejected boxes; raise it or use --nms onnx"
        )


def describe(options) -> str:
    return f", NMS '{options.nms or 'onnx'}'"


def export_graphs(model, spec, options, int8=None, warn: Callable[[str], None] = print) -> dict[str, Any]:
    """The complete detection graphs as onnx.ModelProto, keyed by manifest entry (see
    :func:`cvexport.export.precision.precision_graphs`)."""
    from cvexport.export.precision import export_task_graphs

    anchors = model.anchors.detach().cpu().numpy()
    config, nms = build_nms_config(spec, options), options.nms or "onnx"
    # The exported core is the network alone (class logits, box offsets): precision changes
    # apply to it, while the sections appended after it (class probabilities, decode, NMS) stay FP32.
    if nms == "efficient":
        check_candidate_limit(model, spec, anchors, config, warn)
    finish = lambda c: _append_sections(c, spec, anchors, config, nms)  # noqa: E731
    return export_task_graphs(model, spec, options, ["class_logits", "box_offsets"], finish, int8, warn)


def check_candidate_limit(model, spec, anchors: np.ndarray, config: NmsConfig, warn: Callable[[str], None]) -> int:
    """EfficientNMS_TRT lets only its top CANDIDATE_LIMIT scores (2000 on Jetson TX1/TX2) into
    NMS: with more candidates than that above the threshold and enough of them suppressed, it
    returns fewer detections than PyTorch. Refuse settings that already need more on the
    parity frames; warn when they need more than Jetson TX's limit. Returns the most needed."""
    from cvexport.export.sections import efficient_nms_constants
    from cvexport.ops.detection import class_scores
    from cvexport.preprocess import to_network_input
    from cvexport.trt_plugins.efficient_nms import CANDIDATE_LIMIT, JETSON_TX_CANDIDATE_LIMIT, candidates_needed

    contract = {"dtype": "float32", "mean": spec.mean, "std": spec.std}
    with torch.no_grad():
        logits, offsets = model(torch.from_numpy(to_network_input(parity_frames(spec), contract)))
    variances, anchors_cs = efficient_nms_constants(anchors)
    needed = int(candidates_needed(offsets.numpy() * variances, class_scores(logits).numpy(), anchors_cs,
                                   score_threshold=config.score_threshold, iou_threshold=config.iou_threshold,
                                   max_output_boxes=config.max_detections, box_coding=1).max())
    if needed > CANDIDATE_LIMIT:
        raise CvexportError(
            f"--score-threshold {config.score_threshold} with --max-detections {config.max_detections} needs {needed} "
            f"NMS candidates on the parity images, above EfficientNMS_TRT's fixed {CANDIDATE_LIMIT}: it would return "
            "fewer detections than the model; raise --score-threshold, lower --max-detections, or use --nms onnx"
        )
    if needed > JETSON_TX_CANDIDATE_LIMIT:
        warn(f"warning: these NMS settings need up to {needed} candidates on the parity images; EfficientNMS_TRT "
             f"keeps {JETSON_TX_CANDIDATE_LIMIT} on Jetson TX1/TX2, where it would return fewer detections")
    return needed


def manifest_entries(spec, options) -> dict[str, Any]:
    config = build_nms_config(spec, options)
    return {
        "boxes": "detection_boxes in (x1, y1, x2, y2) normalized to the network input; rows past num_detections are padding",
        "postprocess": {"nms": options.nms or "onnx", "per_class": True, "score_threshold": config.score_threshold,
                        "iou_threshold": config.iou_threshold, "max_detections": config.max_detections},
    }


def _append_sections(core, spec, anchors: np.ndarray, config: NmsConfig, nms: str):
    """Class probabilities, decode + NMS (or the EfficientNMS plugin) and the output contract."""
    from cvexport.export import sections
    from cvexport.export.graph import GraphEditor

    editor = GraphEditor(core)
    with editor.section("scores"):
        scores = sections.class_probabilities(editor, "class_logits")
    if nms == "onnx":
        with editor.section("decode"):
            boxes = sections.decode_boxes(editor, "box_offsets", anchors)
        with editor.section("nms"):
            sections.nms_onnx(editor, boxes, scores, anchors.shape[0], config)
    else:
        with editor.section("nms"):
            sections.efficient_nms(editor, "box_offsets", scores, anchors, config)
    sections.detection_outputs(editor, config.max_detections)
    return editor.model


def reference_outputs(model, array: np.ndarray, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """The PyTorch fp32 answer for a network input in the bundle's input contract."""
    from cvexport.ops.detection import postprocess
    from cvexport.preprocess import to_float_nchw

    with torch.no_grad():
        cls_logits, box_offsets = model(to_float_nchw(array, manifest["input"]))
        out = postprocess(cls_logits, box_offsets, model.anchors, nms_config(manifest))
    return {k: v.numpy() for k, v in out.items()}


def sample_images(spec, split: str, indices, seed: int = 0) -> list[np.ndarray]:
    """uint8 RGB images of the model's own dataset (calibration, benchmarks)."""
    from cvexport.models.detection_data import make_sample

    return [make_sample(split, int(i), seed=seed, size=spec.input_size[0]).image for i in indices]


def parity_frames(spec, count: int = 8) -> list[np.ndarray]:
    """uint8 frames for the parity check: val images including an empty and a crowded one."""
    from cvexport.models.detection_data import make_sample

    height, _ = spec.input_size
    samples = [make_sample("val", i, size=height) for i in range(64)]
    empty = [s for s in samples if len(s.boxes) == 0][:1]
    crowded = sorted(samples, key=lambda s: -len(s.boxes))[:1]
    rest = [s for s in samples if all(s is not e for e in empty + crowded)]
    return [s.image for s in (empty + crowded + rest)[:count]]


def compare(reference: dict[str, np.ndarray], test: dict[str, np.ndarray], precision: str,
            parity: DetectionParity | None = None) -> DetectionParity:
    return compare_detections(reference, test, TOLERANCES[precision], parity)


def new_parity() -> DetectionParity:
    return DetectionParity()


def to_predictions(outputs: dict[str, np.ndarray], letterboxes: Sequence, class_names: Sequence[str],
                   input_width: int, input_height: int) -> list[list[dict[str, Any]]]:
    """Per image, a list of {"box": [x1, y1, x2, y2] pixels of the original, "class_id", "class_name", "score"}."""
    results = []
    for index, box_map in enumerate(letterboxes):
        boxes, scores, classes = valid_detections(outputs, index)
        pixels = box_map.boxes_to_original(boxes, input_width, input_height)
        results.append([
            {"box": [round(float(v), 2) for v in box], "class_id": int(c), "class_name": class_names[int(c)],
             "score": round(float(s), 5)}
            for box, s, c in zip(pixels, scores, classes)
        ])
    return results


PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


def annotate(image: np.ndarray, detections: list[dict[str, Any]]):
    """A PIL image with each detection's box, class name and score drawn on it."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for det in detections:
        color = PALETTE[det["class_id"] % len(PALETTE)]
        x1, y1, x2, y2 = det["box"]
        draw.rectangle((x1, y1, x2, y2), outline=color, width=max(2, round(min(canvas.size) / 200)))
        label = f"{det['class_name']} {det['score']:.2f}"
        text_box = draw.textbbox((x1, y1), label)
        top = max(0, y1 - (text_box[3] - text_box[1]) - 4)
        draw.rectangle((x1, top, x1 + text_box[2] - text_box[0] + 4, top + text_box[3] - text_box[1] + 4), fill=color)
        draw.text((x1 + 2, top + 1), label, fill=(255, 255, 255))
    return canvas


# ------------------------------------------------------------------ task metric (verify)
METRICS = (Metric("map50", "mAP@0.5"), Metric("map", "mAP@0.5:0.95"))


def metric_note(manifest: dict[str, Any]) -> str | None:
    """What a reader of the verify report must know about the metric."""
    return (f"mAP is measured at the bundle's score threshold {manifest['postprocess']['score_threshold']} "
            "(what it outputs); it is lower than at the 0.01 threshold training evaluation uses, so compare it "
            "only with the torch row here")


def val_samples(spec, count: int) -> tuple[list[np.ndarray], list[Any]]:
    """The first ``count`` val images and their ground truth (boxes in pixels, classes)."""
    from cvexport.metrics import ImageDetections
    from cvexport.models.detection_data import make_sample

    samples = [make_sample("val", i, size=spec.input_size[0]) for i in range(count)]
    truths = []
    for sample in samples:
        height, width = sample.image.shape[:2]
        scale = np.array([width, height, width, height], dtype=np.float64)
        truths.append(ImageDetections(boxes=sample.boxes.astype(np.float64) * scale, classes=sample.labels))
    return [s.image for s in samples], truths


def metrics(predictions: list[list[dict[str, Any]]], truths: list[Any], bundle) -> dict[str, float]:
    """COCO mAP@0.5 and mAP@0.5:0.95 of ``to_predictions`` output against ``val_samples`` truth."""
    from cvexport.metrics import ImageDetections, detection_map

    detections = [
        ImageDetections(
            boxes=np.asarray([d["box"] for d in dets], dtype=np.float64).reshape(-1, 4),
            classes=np.asarray([d["class_id"] for d in dets], dtype=np.int64),
            scores=np.asarray([d["score"] for d in dets], dtype=np.float64),
        )
        for dets in predictions
    ]
    return detection_map(detections, truths, bundle.class_names)


# ------------------------------------------------------------------------ cvexport run
def record(prediction: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON entry of one image's prediction."""
    return {"detections": prediction}


def describe_prediction(prediction: list[dict[str, Any]], class_names=None) -> str:
    """One line per detection (the names are already in the prediction)."""
    return f"{len(prediction)} detections" + "".join(
        f"\n  {d['class_name']:<10} {d['score']:.3f}  box {d['box']}" for d in prediction)


def render(image: np.ndarray, prediction: list[dict[str, Any]]) -> dict[str, Any]:
    """Pictures to write for one image: suffix -> PIL image."""
    return {"annotated": annotate(image, prediction)}
