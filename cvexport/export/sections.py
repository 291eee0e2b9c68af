"""Graph sections: each function appends one well-named piece to an ONNX graph.

All sections use standard ONNX ops that ONNX Runtime, OpenVINO and TensorRT (>= 8.5)
accept, and stay inside TensorRT's limits: TopK K <= 3840, constant reduce axes,
no Unique/Compress/Sequence ops. The exception is :func:`efficient_nms`, which emits the
TensorRT ``EfficientNMS_TRT`` plugin node (run on CPU by ``trt_plugins``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cvexport.export.graph import FLOAT, INT32, UINT8, GraphEditor
from cvexport.ops.boxes import CENTER_VARIANCE, SIZE_VARIANCE
from cvexport.ops.detection import NmsConfig

DETECTION_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")


def normalize_uint8_nhwc(
    editor: GraphEditor, float_input: str, mean: Sequence[float], std: Sequence[float], height: int, width: int,
    new_input: str = "images",
) -> str:
    """Replace the float NCHW input with a uint8 NHWC one (camera frames) and normalize in-graph.

    ``x = (uint8 / 255 - mean) / std`` folded into one Mul and one Add per channel.
    Returns the new input's name; the old input name is now produced inside the graph.
    """
    start = len(editor.graph.node)
    name = editor.replace_input(float_input, new_input, UINT8, ["batch", height, width, 3])
    scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))
    shift = -np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
    as_float = editor.op("Cast", [name], "frames_float", to=FLOAT)
    nchw = editor.op("Transpose", [as_float], "frames_nchw", perm=[0, 3, 1, 2])
    scaled = editor.op("Mul", [nchw, editor.const(scale.reshape(1, 3, 1, 1), "norm_scale")], "frames_scaled")
    editor.op("Add", [scaled, editor.const(shift.reshape(1, 3, 1, 1), "norm_shift")], "normalize",
              outputs=[float_input])
    editor.prepend_nodes_from(start)
    return name


def class_probabilities(editor: GraphEditor, class_logits: str, name: str = "scores", drop_background: bool = True) -> str:
    """Softmax over the last axis; with ``drop_background`` the background column (index 0) is
    dropped, as :func:`cvexport.ops.detection.class_scores`.

    Args:
        class_logits: Tensor[..., C + 1] name (background at index 0), or Tensor[..., C].
    Returns:
        Name of Tensor[..., C]: class probabilities.

    A section of its own, appended after any precision change of the network, so it runs in
    FP32: in FP16 every probability above 0.9995 rounds to 1.0, and NMS then breaks those ties
    by anchor order instead of by score.
    """
    if not drop_background:
        return editor.op("Softmax", [class_logits], name, axis=-1, outputs=[name])
    probabilities = editor.op("Softmax", [class_logits], "class_softmax", axis=-1)
    return editor.op("Slice", [probabilities, editor.const(np.array([1], np.int64), "drop_background_start"),
                               editor.const(np.array([np.iinfo(np.int64).max], np.int64), "drop_background_end"),
                               editor.const(np.array([-1], np.int64), "drop_background_axis")], name)


def uint8_input(editor: GraphEditor, spec, frame_size: tuple[int, int] | None = None) -> str:
    """The ``normalize`` section for a model spec: a uint8 NHWC ``images`` input replaces the
    float NCHW ``input`` (see :func:`normalize_uint8_nhwc`); with ``frame_size`` (width,
    height) the input is the camera's frame at that size and a section named after the spec's
    fit (``letterbox``, ``stretch``, ``top_left``) before it fits the frame to the network (see
    :func:`fit_frames_uint8_nhwc`; resize_crop is refused in one line)."""
    from cvexport.images import InputFit

    height, width = spec.input_size
    if frame_size is None:
        with editor.section("normalize"):
            return normalize_uint8_nhwc(editor, "input", spec.mean, spec.std, height, width)
    return fit_frames_uint8_nhwc(editor, "input", spec.mean, spec.std, (height, width), frame_size,
                                 how=InputFit.of(spec))


def fit_frames_uint8_nhwc(editor: GraphEditor, float_input: str, mean: Sequence[float], std: Sequence[float],
                          network_hw: tuple[int, int], frame_size: tuple[int, int], new_input: str = "images",
                          how=None) -> str:
    """Replace the float NCHW input with uint8 NHWC camera frames of ``frame_size`` (width,
    height), fitted to ``network_hw`` in the graph by ``how`` (a :class:`cvexport.images.InputFit`;
    None: the letterbox), then normalized as :func:`normalize_uint8_nhwc` does.

    The fit: for a shrink by 2x or more an AveragePool box prefilter
    (:func:`cvexport.images.box_prefilter`, which stands in for the antialiasing TensorRT's
    Resize lacks), then Resize "linear" with "half_pixel" coordinates to the size of
    :meth:`cvexport.images.InputFit.place`, then for letterbox a Pad "constant" with the
    letterbox grey, content centred; for top_left a Pad of the bottom and right with the fill
    colour (Pad takes one constant, so the frames are shifted by the fill per channel, padded
    with 0 and shifted back); stretch needs no Pad. The output sizes come from the input's own
    shape plus constants, so the batch stays dynamic. Returns the new input's name.
    """
    from cvexport.images import LETTERBOX, box_prefilter

    how = LETTERBOX if how is None else how
    how.check(in_graph=True)  # resize_crop: one line, the graph does not crop
    prefix = how.mode  # names the section and its nodes (the letterbox's as they always were)
    frame_w, frame_h = frame_size
    height, width = network_hw
    new_w, new_h, pad_x, pad_y = how.place(frame_w, frame_h, width, height)
    start = len(editor.graph.node)
    name = editor.replace_input(float_input, new_input, UINT8, ["batch", frame_h, frame_w, 3])
    with editor.section(prefix):
        as_float = editor.op("Cast", [name], "frames_float", to=FLOAT)
        nchw = editor.op("Transpose", [as_float], "frames_nchw", perm=[0, 3, 1, 2])
        k = box_prefilter(frame_w, frame_h, new_w, new_h)
        if k > 1:
            nchw = editor.op("AveragePool", [nchw], f"{prefix}_prefilter", kernel_shape=[k, k], strides=[k, k])
        batch_channels = editor.op("Slice", [editor.op("Shape", [nchw], "frames_shape"),
                                             editor.const(np.array([0], np.int64), "bc_start"),
                                             editor.const(np.array([2], np.int64), "bc_end")], "frames_bc")
        sizes = editor.op("Concat", [batch_channels, editor.const(np.array([new_h, new_w], np.int64), f"{prefix}_hw")],
                          f"{prefix}_sizes", axis=0)
        fitted = editor.op("Resize", [nchw, "", "", sizes], f"{prefix}_resized", mode="linear",
                           coordinate_transformation_mode="half_pixel")
        pads = np.array([0, 0, pad_y, pad_x, 0, 0, height - new_h - pad_y, width - new_w - pad_x], np.int64)
        if how.mode == "letterbox":
            fitted = editor.op("Pad", [fitted, editor.const(pads, f"{prefix}_pads"),
                                       editor.const(np.float32(how.fill[0]), f"{prefix}_fill")],
                               f"{prefix}_padded", mode="constant")
        elif how.mode == "top_left" and pads.any():
            fill = editor.const(np.asarray(how.fill, np.float32).reshape(1, 3, 1, 1), f"{prefix}_fill")
            shifted = editor.op("Sub", [fitted, fill], f"{prefix}_less_fill")
            padded = editor.op("Pad", [shifted, editor.const(pads, f"{prefix}_pads"),
                                       editor.const(np.float32(0.0), f"{prefix}_zero")],
                               f"{prefix}_padded_zero", mode="constant")
            fitted = editor.op("Add", [padded, fill], f"{prefix}_padded")
    with editor.section("normalize"):
        scale = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))
        shift = -np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
        scaled = editor.op("Mul", [fitted, editor.const(scale.reshape(1, 3, 1, 1), "norm_scale")], "frames_scaled")
        editor.op("Add", [scaled, editor.const(shift.reshape(1, 3, 1, 1), "norm_shift")], "normalize",
                  outputs=[float_input])
    editor.prepend_nodes_from(start)
    return name


def _split_xy_wh(editor: GraphEditor, boxes: str, name: str) -> tuple[str, str]:
    """[..., 4] -> ([..., 2], [..., 2]) along the last axis."""
    return editor.op("Split", [boxes, editor.const(np.array([2, 2], np.int64), f"{name}_split")],
                     name, num_outputs=2, axis=-1)


def decode_boxes(editor: GraphEditor, box_offsets: str, anchors: np.ndarray) -> str:
    """SSD centre/size decoding with variances (0.1, 0.2), as :func:`cvexport.ops.boxes.decode_offsets`.

    Args:
        box_offsets: Tensor[B, N, 4] name.
        anchors: ndarray[N, 4] in (x1, y1, x2, y2), normalized; becomes a constant.
    Returns:
        Name of Tensor[B, N, 4] in (x1, y1, x2, y2), normalized, not clipped.
    """
    a = np.asarray(anchors, dtype=np.float32)
    anchor_wh = (a[:, 2:] - a[:, :2])[None]
    anchor_xy = ((a[:, :2] + a[:, 2:]) / 2)[None]
    off_xy, off_wh = _split_xy_wh(editor, box_offsets, "offsets")
    xy = editor.op("Add", [editor.op("Mul", [off_xy, editor.const(anchor_wh * CENTER_VARIANCE, "anchor_wh_scaled")],
                                     "decode_dxy"), editor.const(anchor_xy, "anchor_xy")], "decode_xy")
    wh = editor.op("Mul", [editor.op("Exp", [editor.op("Mul", [off_wh, editor.const(np.float32(SIZE_VARIANCE), "size_variance")],
                                                       "decode_scaled_wh")], "decode_exp_wh"),
                           editor.const(anchor_wh, "anchor_wh")], "decode_wh")
    half = editor.op("Mul", [wh, editor.const(np.float32(0.5), "half")], "decode_half_wh")
    top_left = editor.op("Sub", [xy, half], "decode_top_left")
    bottom_right = editor.op("Add", [xy, half], "decode_bottom_right")
    return editor.op("Concat", [top_left, bottom_right], "decoded_boxes", axis=-1)


def nms_onnx(editor: GraphEditor, boxes: str, scores: str, num_anchors: int, config: NmsConfig) -> tuple[str, str, str, str]:
    """Per-class NMS and top-K with standard ONNX ops, batch-aware, fixed-shape outputs.

    Args:
        boxes: Tensor[B, N, 4] in (x1, y1, x2, y2).
        scores: Tensor[B, N, C] object-class probabilities.
    Returns names of the four contract outputs (see ``DETECTION_OUTPUTS``); rows past
    num_detections are zeros, as TensorRT's EfficientNMS plugin pads them.

    NonMaxSuppression yields (batch, class, box) triples for the whole batch; their scores are
    scattered back into a dense [B, C, N] map (-1 elsewhere), so a per-image TopK over C * N picks
    each image's best K detections on its own without a Loop.
    """
    k = config.max_detections
    scores_t = editor.op("Transpose", [scores], "scores_per_class", perm=[0, 2, 1])  # [B, C, N]
    selected = editor.op(
        "NonMaxSuppression",
        [boxes, scores_t, editor.const(np.array([k], np.int64), "max_per_class"),
         editor.const(np.array([config.iou_threshold], np.float32), "iou_threshold"),
         editor.const(np.array([config.score_threshold], np.float32), "score_threshold")],
        "nms_selected", center_point_box=0,
    )  # [S, 3] int64: (batch, class, box)
    selected_scores = editor.op("GatherND", [scores_t, selected], "nms_selected_scores")  # [S]
    empty = editor.op("ConstantOfShape", [editor.op("Shape", [scores_t], "scores_shape")], "nms_empty",
                      value=_tensor(np.array([-1.0], np.float32)))
    dense = editor.op("ScatterND", [empty, selected, selected_scores], "nms_dense_scores")  # [B, C, N]
    flat = editor.op("Reshape", [dense, editor.const(np.array([0, -1], np.int64), "flat_shape")], "nms_flat_scores")
    top_scores, top_index = editor.op("TopK", [flat, editor.const(np.array([k], np.int64), "top_k")], "nms_topk",
                                      num_outputs=2, axis=-1, largest=1, sorted=1)  # [B, K]
    valid = editor.op("GreaterOrEqual", [top_scores, editor.const(np.float32(0.0), "zero_score")], "nms_valid")
    count = editor.op("ReduceSum", [editor.op("Cast", [valid], "nms_valid_int", to=INT32),
                                    editor.const(np.array([1], np.int64), "reduce_axis")],
                      "num_detections", outputs=["num_detections"], keepdims=1)
    n_const = editor.const(np.array(num_anchors, np.int64), "num_anchors")
    class_index = editor.op("Div", [top_index, n_const], "nms_class_index")
    box_index = editor.op("Sub", [top_index, editor.op("Mul", [class_index, n_const], "nms_class_offset")],
                          "nms_box_index")
    gathered = editor.op("GatherND", [boxes, editor.op("Unsqueeze", [box_index, editor.const(np.array([-1], np.int64), "last_axis")],
                                                       "nms_box_index_col")], "nms_boxes", batch_dims=1)  # [B, K, 4]
    valid_col = editor.op("Unsqueeze", [valid, editor.const(np.array([-1], np.int64), "last_axis_b")], "nms_valid_col")
    out_boxes = editor.op("Where", [valid_col, gathered, editor.const(np.float32(0.0), "zero_box")],
                          "detection_boxes", outputs=["detection_boxes"])
    out_scores = editor.op("Where", [valid, top_scores, editor.const(np.float32(0.0), "zero_pad")],
                           "detection_scores", outputs=["detection_scores"])
    out_classes = editor.op("Where", [valid, editor.op("Cast", [class_index], "nms_class_int", to=INT32),
                                      editor.const(np.int32(0), "pad_class")],
                            "detection_classes", outputs=["detection_classes"])
    return count, out_boxes, out_scores, out_classes


def efficient_nms_constants(anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the EfficientNMS section feeds the plugin besides the network's outputs: the offset
    variances (ndarray[4]) it multiplies in, and the anchors (ndarray[1, N, 4]) in (cx, cy, w, h)."""
    a = np.asarray(anchors, dtype=np.float32)
    anchors_cs = np.concatenate(((a[:, :2] + a[:, 2:]) / 2, a[:, 2:] - a[:, :2]), axis=-1)[None]
    variances = np.array([CENTER_VARIANCE, CENTER_VARIANCE, SIZE_VARIANCE, SIZE_VARIANCE], np.float32)
    return variances, anchors_cs


def efficient_nms(editor: GraphEditor, box_offsets: str, scores: str, anchors: np.ndarray,
                  config: NmsConfig) -> tuple[str, str, str, str]:
    """One ``EfficientNMS_TRT`` plugin node that decodes and suppresses (TensorRT's fastest path).

    The plugin's centre/size decoding has no variances, so they are folded into the raw
    offsets with one Mul first; anchors go in as a [1, N, 4] (cx, cy, w, h) constant
    (box_coding = 1). Scores are already probabilities, so score_activation = 0, and the
    background column is already dropped, so background_class = -1.
    """
    from trt_plugins.efficient_nms import EFFICIENT_NMS

    variances, anchors_cs = efficient_nms_constants(anchors)
    scaled = editor.op("Mul", [box_offsets, editor.const(variances, "box_variances")], "offsets_scaled")
    node = EFFICIENT_NMS.make_node(
        inputs=[scaled, scores, editor.const(anchors_cs, "anchors_center_size")],
        outputs=list(DETECTION_OUTPUTS),
        name=editor.fresh("efficient_nms"),
        score_threshold=float(config.score_threshold),
        iou_threshold=float(config.iou_threshold),
        max_output_boxes=int(config.max_detections),
        background_class=-1,
        score_activation=0,
        class_agnostic=0,
        box_coding=1,
    )
    editor.append_node(node)
    editor.ensure_opset(EFFICIENT_NMS.domain, 1)
    return DETECTION_OUTPUTS  # type: ignore[return-value]


def argmax_labels(editor: GraphEditor, logits: str, name: str = "labels") -> str:
    """Per-pixel class: logits Tensor[B, C, H, W] -> Tensor[B, H, W] int32 label map.

    ArgMax gives int64; the contract is int32, which TensorRT computes natively.
    """
    index = editor.op("ArgMax", [logits], "argmax_class", axis=1, keepdims=0)
    return editor.op("Cast", [index], name, to=INT32, outputs=[name])


def clip_image(editor: GraphEditor, image: str, name: str = "stylized") -> str:
    """Clamp a float image Tensor[B, 3, H, W] to the displayable range [0, 1]."""
    return editor.op("Clip", [image, editor.const(np.float32(0.0), "image_min"), editor.const(np.float32(1.0), "image_max")],
                     name, outputs=[name])


def detection_outputs(editor: GraphEditor, k: int) -> None:
    """Declare the fixed-shape detection contract as the graph's outputs."""
    editor.replace_outputs([
        ("num_detections", INT32, ["batch", 1]),
        ("detection_boxes", FLOAT, ["batch", k, 4]),
        ("detection_scores", FLOAT, ["batch", k]),
        ("detection_classes", INT32, ["batch", k]),
    ])


def _tensor(array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(array)
