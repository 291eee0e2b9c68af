"""Graph sections alone, on ONNX Runtime, against the PyTorch reference functions."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from cvexport.detection import TOLERANCES, DetectionParity
from cvexport.export import sections
from cvexport.export.graph import GraphEditor
from cvexport.ops.boxes import decode_offsets, multibox_prior
from cvexport.ops.detection import NmsConfig, postprocess

NUM_CLASSES = 3


def _identity_model(inputs: dict[str, list]) -> onnx.ModelProto:
    """A graph whose inputs pass straight through Identity nodes, to hang sections on."""
    values = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()]
    nodes = [helper.make_node("Identity", [name], [f"{name}_id"]) for name in inputs]
    outputs = [helper.make_tensor_value_info(f"{name}_id", TensorProto.FLOAT, shape) for name, shape in inputs.items()]
    graph = helper.make_graph(nodes, "sections", values, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


@pytest.fixture(scope="module")
def anchors() -> np.ndarray:
    return torch.cat([multibox_prior((6, 6), (0.2, 0.272), (1, 2, 0.5)),
                      multibox_prior((3, 3), (0.37, 0.447), (1, 2, 0.5))]).numpy()


def test_decode_section_matches_torch(anchors):
    n = anchors.shape[0]
    editor = GraphEditor(_identity_model({"offsets": ["batch", n, 4]}))
    decoded = sections.decode_boxes(editor, "offsets_id", anchors)
    editor.replace_outputs([(decoded, TensorProto.FLOAT, ["batch", n, 4])])
    offsets = np.random.default_rng(0).normal(0, 1.5, size=(3, n, 4)).astype(np.float32)
    got = _run(editor.model, {"offsets": offsets})[decoded]
    expected = decode_offsets(torch.from_numpy(anchors), torch.from_numpy(offsets)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _random_detections(rng: np.random.Generator, batch: int, n: int):
    """Crowded random heads: many overlapping candidates per class, different per image."""
    offsets = rng.normal(0, 1.0, size=(batch, n, 4)).astype(np.float32)
    logits = rng.normal(0, 2.0, size=(batch, n, NUM_CLASSES + 1)).astype(np.float32)
    logits[1:, :, 0] += 2.0  # later images have fewer confident objects than image 0
    logits[-1, :, 0] = 20.0  # the last image has no object at all
    return offsets, logits


@pytest.mark.parametrize("config", [NmsConfig(0.25, 0.45, 50), NmsConfig(0.05, 0.6, 20), NmsConfig(0.5, 0.3, 100)],
                         ids=["default", "low-threshold-small-k", "strict"])
def test_onnx_nms_section_matches_torch(anchors, config):
    n = anchors.shape[0]
    editor = GraphEditor(_identity_model({"offsets": ["batch", n, 4], "scores": ["batch", n, NUM_CLASSES]}))
    boxes = sections.decode_boxes(editor, "offsets_id", anchors)
    sections.nms_onnx(editor, boxes, "scores_id", n, config)
    sections.detection_outputs(editor, config.max_detections)
    offsets, logits = _random_detections(np.random.default_rng(1), batch=4, n=n)
    scores = torch.softmax(torch.from_numpy(logits), -1)[..., 1:].numpy()
    got = _run(editor.model, {"offsets": offsets, "scores": scores})
    expected = {k: v.numpy() for k, v in postprocess(torch.from_numpy(logits), torch.from_numpy(offsets),
                                                     torch.from_numpy(anchors), config).items()}
    # Every image gets its own count, and the image with no objects gets none.
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
    assert expected["num_detections"][0, 0] > 0 and expected["num_detections"][-1, 0] == 0
    parity = DetectionParity(TOLERANCES["fp32"]).add(expected, got)
    assert parity.passed(), parity.to_dict()
    # Padding past num_detections follows the contract.
    for b, count in enumerate(got["num_detections"][:, 0]):
        assert np.all(got["detection_classes"][b, count:] == 0)
        assert np.all(got["detection_scores"][b, count:] == 0)
        assert np.all(got["detection_boxes"][b, count:] == 0)
    assert got["num_detections"].dtype == np.int32 and got["detection_classes"].dtype == np.int32


def test_uint8_section_normalizes_like_the_float_contract():
    from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_network_input

    editor = GraphEditor(_identity_model({"input": ["batch", 3, 8, 8]}))
    name = sections.normalize_uint8_nhwc(editor, "input", IMAGENET_MEAN, IMAGENET_STD, 8, 8)
    editor.replace_outputs([("input_id", TensorProto.FLOAT, ["batch", 3, 8, 8])])
    frames = np.random.default_rng(2).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    got = _run(editor.model, {name: frames})["input_id"]
    expected = to_network_input(list(frames), {"dtype": "float32", "mean": IMAGENET_MEAN, "std": IMAGENET_STD})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert [i.name for i in editor.model.graph.input] == [name]
