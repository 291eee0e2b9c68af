"""The detection task: how an SSD-style model is exported, checked and read back.

- ``export_graph``: torch export of the network, optional FP16, then the decode and NMS
  sections (standard ONNX or the EfficientNMS_TRT plugin) and the fixed output contract.
- ``reference_outputs``: the PyTorch answer in that same contract.
- ``parity_batches`` / ``compare``: the parity check ``build`` and the tests run.
- ``to_predictions`` / ``annotate``: typed detections in pixels of each original image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cvexport.compare import TOLERANCES, DetectionParity, compare_detections, valid_detections
from cvexport.errors import CvexportError
from cvexport.ops.detection import NmsConfig

NMS_FLAVORS = ("onnx", "efficient")


def nms_config(manifest: dict[str, Any]) -> NmsConfig:
    post = manifest["postprocess"]
    return NmsConfig(post["score_threshold"], post["iou_threshold"], post["max_detections"])


def validate_options(config: NmsConfig, nms: str, num_anchors: int, num_classes: int) -> None:
    from cvexport.export.sections import TRT_MAX_TOPK

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


@dataclass(frozen=True)
class Int8Options:
    calib_images: int = 128
    method: str | None = None  # None: the quantizer's default for each form


def export_graphs(model, spec, *, config: NmsConfig, nms: str, precision: str, max_batch: int,
                  input_format: str, int8: Int8Options | None = None,
                  warn: Callable[[str], None] = print) -> dict[str, Any]:
    """The complete detection graphs as onnx.ModelProto, keyed by manifest entry.

    ``"onnx"`` is always the TensorRT-ready graph. For INT8 there is also ``"onnx_cpu"``:
    the same network quantized in the U8S8 form ONNX Runtime's CPU provider fuses, which
    measured 1.7x faster than fp32 there, where the TensorRT QDQ form ran 1.5x slower.
    """
    from cvexport.export.torch_export import export_module, to_fp16

    anchors = model.anchors.detach().cpu().numpy()
    validate_options(config, nms, anchors.shape[0], len(spec.class_names))
    height, width = spec.input_size
    # The exported core is the network alone (class logits, box offsets): precision changes
    # apply to it, while the sections appended after it (class probabilities, decode, NMS) stay FP32.
    core = export_module(model.eval(), (1, 3, height, width), max_batch,
                         input_name="input", output_names=["class_logits", "box_offsets"])
    finish = lambda c: _append_sections(c, spec, anchors, config, nms, input_format)  # noqa: E731
    if precision == "fp16":
        # Only the network goes to FP16; the decode and NMS sections appended below stay FP32.
        return {"onnx": finish(to_fp16(core))}
    if precision == "int8":
        import warnings

        from cvexport.export.quantize import calibration_batches, quantize_core

        int8 = int8 or Int8Options()
        batches = list(calibration_batches(spec, int8.calib_images))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graphs = {"onnx": finish(quantize_core(core, batches, method=int8.method, form="qdq-trt")),
                      "onnx_cpu": finish(quantize_core(core, batches, form="qdq-cpu"))}
        for warning in {str(w.message) for w in caught if issubclass(w.category, UserWarning)}:
            warn(f"warning: {warning}")
        return graphs
    return {"onnx": finish(core)}


def _append_sections(core, spec, anchors: np.ndarray, config: NmsConfig, nms: str, input_format: str):
    """Decode + NMS (or the EfficientNMS plugin), the output contract, and uint8 input if asked."""
    from cvexport.export import sections
    from cvexport.export.graph import GraphEditor

    height, width = spec.input_size
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
    if input_format == "uint8":
        with editor.section("normalize"):
            sections.normalize_uint8_nhwc(editor, "input", spec.mean, spec.std, height, width)
    return editor.model


def reference_outputs(model, array: np.ndarray, manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """The PyTorch fp32 answer for a network input in the bundle's input contract."""
    from cvexport.ops.detection import postprocess
    from cvexport.preprocess import to_float_nchw

    with torch.no_grad():
        cls_logits, box_offsets = model(to_float_nchw(array, manifest["input"]))
        out = postprocess(cls_logits, box_offsets, model.anchors, nms_config(manifest))
    return {k: v.numpy() for k, v in out.items()}


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
