"""The detection head sections (cvexport.export.head_sections) against their PyTorch form
(cvexport.ops.detection.head_candidates / postprocess_head), for every kind of head, on raw
network outputs fed straight into the sections (no network): fast, and it covers the decoded
(YOLO-style) heads of a user's module as well as torchvision's coders and candidate selection.
The torch form itself is held to torchvision's own inference in tests/test_torchvision_detectors.py."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from cvexport.detection import TOLERANCES, DetectionParity
from cvexport.detection_heads import TORCHVISION_WH_CLAMP, DetectionHead
from cvexport.export.graph import GraphEditor
from cvexport.export.head_sections import append_head_sections
from cvexport.export.sections import detection_outputs
from cvexport.ops.detection import NmsConfig, postprocess_head

BATCH, CLASSES, SIZE = 3, 4, (64, 96)  # (height, width)
LEVELS = (48, 12, 4)
N = sum(LEVELS)
CONFIG = NmsConfig(score_threshold=0.2, iou_threshold=0.5, max_detections=40)

HEADS = {
    "ssd_per_class": DetectionHead(scoring="softmax", coder="ssd", wh_clamp=TORCHVISION_WH_CLAMP,
                                   candidates="per_class", topk_candidates=10, clip=True),
    "retinanet": DetectionHead(scoring="sigmoid", coder="ssd", variances=(1.0, 1.0), wh_clamp=TORCHVISION_WH_CLAMP,
                               candidates="per_level", topk_candidates=20, clip=True),
    "fcos": DetectionHead(scoring="sigmoid_centerness", coder="linear", candidates="per_level", topk_candidates=20,
                          clip=True),
    "decoded_xyxy_pixels_sigmoid": DetectionHead(scoring="sigmoid", coder="xyxy", background=False,
                                                 box_units="pixels", clip=True),
    "decoded_cxcywh_probabilities": DetectionHead(scoring="probabilities", coder="cxcywh", background=False),
    "decoded_xyxy_softmax": DetectionHead(scoring="softmax", coder="xyxy", background=False, clip=True),
}


def _anchors(generator: torch.Generator) -> torch.Tensor:
    centre = torch.rand((N, 2), generator=generator)
    size = 0.05 + 0.3 * torch.rand((N, 2), generator=generator)
    return torch.cat((centre - size / 2, centre + size / 2), dim=-1)


def _outputs(head: DetectionHead, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    columns = CLASSES + (1 if head.background else 0)
    logits = 2.0 * torch.randn((BATCH, N, columns), generator=generator)
    if head.scoring == "probabilities":
        logits = torch.rand((BATCH, N, columns), generator=generator)
    if head.anchored:
        offsets = torch.randn((BATCH, N, 4), generator=generator)  # some boxes end wholly past an edge
        if head.coder == "linear":
            offsets = offsets.abs()  # FCOS distances come out of a ReLU
        else:
            offsets[0, :5, 2:] = 60.0  # beyond the size clamp
        outputs = (logits, offsets)
        return outputs + ((torch.randn((BATCH, N, 1), generator=generator),) if head.scoring == "sigmoid_centerness" else ())
    height, width = SIZE
    scale = torch.tensor([width, height, width, height]) if head.box_units == "pixels" else torch.ones(4)
    xy = torch.rand((BATCH, N, 2), generator=generator) * 0.75  # some boxes end past the edge (clipped)
    wh = 0.05 + 0.3 * torch.rand((BATCH, N, 2), generator=generator)
    boxes = torch.cat((xy, xy + wh) if head.coder == "xyxy" else (xy, wh), dim=-1) * scale
    return boxes, logits


def _graph(head: DetectionHead, outputs, anchors, nms: str) -> onnx.ModelProto:
    """A graph whose inputs are the network's outputs, followed by the head sections."""
    names = head.core_outputs
    inputs = [helper.make_tensor_value_info(f"{name}_raw", TensorProto.FLOAT, ["batch", *value.shape[1:]])
              for name, value in zip(names, outputs)]
    # The sections read the network's outputs by name: Identity nodes give them those names.
    identity = [helper.make_node("Identity", [f"{name}_raw"], [name]) for name in names]
    graph = helper.make_graph(identity, "head", inputs,
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    editor = GraphEditor(model)
    append_head_sections(editor, head, None if anchors is None else anchors.numpy(), LEVELS, N, CLASSES, SIZE, CONFIG, nms)
    detection_outputs(editor, CONFIG.max_detections)
    return editor.model


def _run(model: onnx.ModelProto, head: DetectionHead, outputs) -> dict[str, np.ndarray]:
    from trt_plugins.ort import create_session

    session = create_session(model)
    names = [o.name for o in session.get_outputs()]
    feed = {f"{name}_raw": value.numpy() for name, value in zip(head.core_outputs, outputs)}
    return dict(zip(names, session.run(names, feed)))


@pytest.mark.parametrize("nms", ["onnx", "efficient"])
@pytest.mark.parametrize("kind", sorted(HEADS))
def test_head_sections_equal_the_torch_form(kind, nms):
    head = HEADS[kind]
    generator = torch.Generator().manual_seed(sorted(HEADS).index(kind))
    anchors = _anchors(generator) if head.anchored else None
    outputs = _outputs(head, generator)
    reference = {k: v.numpy() for k, v in postprocess_head(outputs, anchors, LEVELS, head, SIZE, CONFIG).items()}
    graph = _run(_graph(head, outputs, anchors, nms), head, outputs)
    assert (reference["num_detections"] > 0).all()
    parity = DetectionParity(TOLERANCES["fp32"], score_threshold=CONFIG.score_threshold).add(reference, graph)
    assert parity.passed(), parity.summary()
    if head.clip:
        assert graph["detection_boxes"].min() >= 0.0 and graph["detection_boxes"].max() <= 1.0


def test_the_comparison_catches_a_wrong_coder():
    """The same outputs decoded with another variance: the sections no longer match the torch form."""
    head = HEADS["retinanet"]
    generator = torch.Generator().manual_seed(7)
    anchors, outputs = _anchors(generator), _outputs(head, generator)
    reference = {k: v.numpy() for k, v in postprocess_head(outputs, anchors, LEVELS, head, SIZE, CONFIG).items()}
    wrong = DetectionHead(**{**head.to_record(), "variances": (0.1, 0.2), "topk_candidates": 20})
    graph = _run(_graph(wrong, outputs, anchors, "onnx"), wrong, outputs)
    assert not DetectionParity(TOLERANCES["fp32"], score_threshold=CONFIG.score_threshold).add(reference, graph).passed()


def test_head_record_round_trips():
    for head in HEADS.values():
        assert DetectionHead.from_record(head.to_record()) == head
    assert math.isclose(TORCHVISION_WH_CLAMP, math.log(1000 / 16))
