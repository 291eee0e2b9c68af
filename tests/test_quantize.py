"""INT8 quantization of a network core (cvexport.export.quantize), on a small random conv net."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from cvexport.cpu import isa_class
from cvexport.errors import CvexportError
from cvexport.export.quantize import (
    CalibrationWarning,
    QuantizeError,
    calibration_batches,
    ort_session,
    postprocess_scores,
    quantize_core,
    sensitive_nodes,
)
from cvexport.backends.trt.compat import check_model

HEADS = ["head_cls", "head_box", "head_deep"]


def _conv(name, x, out, cin, cout, rng, k=3):
    w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
    b = rng.normal(0, 0.1, cout).astype(np.float32)
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name, pads=[k // 2] * 4)
    return node, [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]


def small_core(seed: int = 0) -> onnx.ModelProto:
    """A detector-shaped core: two trunk convs, two heads on the trunk, one deeper trunk conv
    feeding a third head; heads flattened into the outputs. Input [N, 3, 16, 16]."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(*args, **kw):
        node, tensors = _conv(*args, rng=rng, **kw)
        nodes.append(node)
        inits.extend(tensors)

    conv("trunk1", "input", "c1", 3, 8)
    nodes += [helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
              helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2])]
    conv("trunk2", "p1", "c2", 8, 16)
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"], name="relu2"))
    conv("head_cls", "r2", "h_cls", 16, 6)
    conv("head_box", "r2", "h_box", 16, 4)
    conv("trunk3", "r2", "c3", 16, 16)
    nodes.append(helper.make_node("Relu", ["c3"], ["r3"], name="relu3"))
    conv("head_deep", "r3", "h_deep", 16, 4, k=1)
    for head, out in (("h_cls", "scores"), ("h_box", "box_offsets"), ("h_deep", "deep")):
        nodes.append(helper.make_node("Flatten", [head], [out], name=f"flatten_{out}"))
    graph = helper.make_graph(
        nodes, "small_core",
        [helper.make_tensor_value_info("input", TP.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info(n, TP.FLOAT, ["batch", None]) for n in ("scores", "box_offsets", "deep")],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def random_batches(count: int, batch: int = 8, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 1, (batch, 3, 16, 16)).astype(np.float32) for _ in range(count)]


@pytest.fixture(scope="module")
def core():
    return small_core()


@pytest.fixture(scope="module")
def calib():
    return random_batches(8)  # 64 images: enough not to warn


@pytest.fixture(scope="module")
def trt_int8(core, calib):
    return quantize_core(core, calib, method="minmax", form="qdq-trt")


def run(model, x):
    session = ort_session(model, threads=1)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))


def relative_error(ref: dict, test: dict) -> float:
    """Worst output's max |difference| over that output's max |value|."""
    return max(float(np.abs(ref[k] - test[k]).max() / np.abs(ref[k]).max()) for k in ref)


def producers(model):
    return {out: node for node in model.graph.node for out in node.output}


def constant(model, name):
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t), t.data_type
    return None, None


# ---------------------------------------------------------------------------------------- qdq-trt
def test_qdq_trt_is_symmetric_int8_with_float_bias(trt_int8):
    ops = [n.op_type for n in trt_int8.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert {(o.domain, o.version) for o in trt_int8.opset_import} == {("", 17)}
    assert not any(op.startswith("QLinear") for op in ops)
    for node in trt_int8.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        assert len(node.input) == 3, f"{node.name} has no explicit zero point"
        zp, dtype = constant(trt_int8, node.input[2])
        assert dtype == TP.INT8, f"{node.name}: zero point is {TP.DataType.Name(dtype)}"
        assert not np.any(zp), f"{node.name}: non-zero zero point"
        if node.op_type == "DequantizeLinear":
            _, x_type = constant(trt_int8, node.input[0])
            assert x_type in (None, TP.INT8)  # activations (None) or INT8 weights, never INT32 bias
    prod = producers(trt_int8)
    for conv in (n for n in trt_int8.graph.node if n.op_type == "Conv"):
        bias, dtype = constant(trt_int8, conv.input[2])
        assert dtype == TP.FLOAT and conv.input[2] not in prod, f"{conv.name}: bias is not a float initializer"
        assert prod[conv.input[0]].op_type == "DequantizeLinear"  # activation input quantized
        assert prod[conv.input[1]].op_type == "DequantizeLinear"  # weight quantized
    # Conv outputs are not quantized (TensorRT placement: inputs of weighted ops only).
    for node in trt_int8.graph.node:
        if node.op_type == "QuantizeLinear":
            assert prod.get(node.input[0]) is None or prod[node.input[0]].op_type != "Conv"


def test_qdq_trt_passes_the_tensorrt_check(trt_int8):
    report = check_model(trt_int8, plugins={})
    assert report.ok, report.format_text()
    assert not [f for f in report.findings if f.rule == "quantization"]


def test_qdq_trt_runs_on_ort_close_to_float(core, trt_int8):
    x = random_batches(1, batch=16, seed=7)[0]
    err = relative_error(run(core, x), run(trt_int8, x))
    assert 0 < err < 0.08, err  # INT8: a few percent of the output range, and not bit-identical


def test_input_and_dynamic_batch_are_kept(core, trt_int8):
    assert [i.name for i in trt_int8.graph.input] == ["input"]
    assert [o.name for o in trt_int8.graph.output] == ["scores", "box_offsets", "deep"]
    for batch in (1, 3):
        out = run(trt_int8, random_batches(1, batch=batch, seed=3)[0])
        assert out["scores"].shape == (batch, 6 * 8 * 8)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods(core, calib, method):
    model = quantize_core(core, calib, method=method, form="qdq-trt")
    assert check_model(model, plugins={}).ok
    x = random_batches(1, batch=16, seed=7)[0]
    assert relative_error(run(core, x), run(model, x)) < 0.15


# ---------------------------------------------------------------------------------------- exclude
def test_sensitive_nodes_are_the_heads(core):
    assert sensitive_nodes(core) == HEADS


def test_exclude_keeps_the_named_nodes_in_float(core, calib, trt_int8):
    model = quantize_core(core, calib, method="minmax", form="qdq-trt", exclude=HEADS)
    prod = producers(model)
    convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
    for name in HEADS:
        node = convs[name]
        assert all(prod.get(t) is None or prod[t].op_type not in ("DequantizeLinear", "QuantizeLinear")
                   for t in node.input), f"{name} still reads a dequantized tensor"
        assert constant(model, node.input[1])[1] == TP.FLOAT
    for name in ("trunk1", "trunk2", "trunk3"):
        assert prod[convs[name].input[0]].op_type == "DequantizeLinear"
    assert check_model(model, plugins={}).ok
    x = random_batches(1, batch=16, seed=7)[0]
    ref = run(core, x)
    assert relative_error(ref, run(model, x)) <= relative_error(ref, run(trt_int8, x)) + 1e-6


def test_exclude_unknown_node_is_an_error(core, calib):
    with pytest.raises(QuantizeError, match="not_a_node"):
        quantize_core(core, calib, exclude=["not_a_node"])


# ---------------------------------------------------------------------------------------- CPU forms
# Full-range u8 x s8 weights are exact only where the CPU sums products in 32 bits (VNNI);
# without it ORT's kernels saturate 16-bit pair sums, which is why those CPUs get the 7-bit form.
needs_vnni = pytest.mark.skipif(isa_class() != "vnni", reason="full-range U8S8 kernels saturate without VNNI; "
                                "this CPU runs the 7-bit form instead (tested below)")


@pytest.mark.parametrize("form", [pytest.param("qdq-cpu", marks=needs_vnni), pytest.param("qoperator", marks=needs_vnni),
                                  "qdq-cpu-7bit"])
def test_cpu_forms_run_close_to_float(core, calib, form):
    model = quantize_core(core, calib, form=form)
    ops = {n.op_type for n in model.graph.node}
    assert ("QLinearConv" in ops) == (form == "qoperator")
    x = random_batches(1, batch=16, seed=7)[0]
    assert relative_error(run(core, x), run(model, x)) < 0.08


@pytest.mark.parametrize("form, low, high", [("qdq-cpu", -127, 127), ("qdq-cpu-7bit", -64, 64)])
def test_cpu_form_weight_range(core, calib, form, low, high):
    """The 7-bit form's weights cannot saturate a 16-bit sum of two u8 x s8 products."""
    model = quantize_core(core, calib, form=form)
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TP.INT8 and t.dims]
    assert weights
    lowest, highest = min(int(w.min()) for w in weights), max(int(w.max()) for w in weights)
    assert low <= lowest and highest <= high
    assert lowest == low or highest == high  # per-channel ranges use the whole grid
    assert 2 * 255 * max(-lowest, highest) <= 32767 or form == "qdq-cpu"


# ---------------------------------------------------------------------------------------- arguments
def test_too_few_calibration_images_warn(core):
    with pytest.warns(CalibrationWarning, match="only 8 image"):
        quantize_core(core, random_batches(2, batch=4))


def test_enough_calibration_images_do_not_warn(core, calib):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CalibrationWarning)
        quantize_core(core, iter(calib))  # any iterable, consumed once


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "kl"}, "unknown calibration method 'kl'"),
    ({"form": "qdq-gpu"}, "unknown quantization form 'qdq-gpu'"),
])
def test_unknown_method_or_form(core, calib, kwargs, match):
    with pytest.raises(QuantizeError, match=match) as info:
        quantize_core(core, calib, **kwargs)
    assert isinstance(info.value, CvexportError) and isinstance(info.value, ValueError)


def test_bad_calibration_data(core):
    with pytest.raises(QuantizeError, match="no calibration images"):
        quantize_core(core, [])
    with pytest.raises(QuantizeError, match="shape"):
        quantize_core(core, [np.zeros((2, 3, 8, 8), np.float32)])
    with pytest.raises(QuantizeError, match="uint8"):
        quantize_core(core, [np.zeros((2, 3, 16, 16), np.uint8)])


def test_core_is_not_modified(core, calib):
    before = core.SerializeToString()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        quantize_core(core, calib[:1], exclude=["head_cls"])
    assert core.SerializeToString() == before


# ---------------------------------------------------------------------------------------- data and metric helpers
def test_calibration_batches_follow_the_runtime_contract():
    from cvexport.models.detection_data import make_sample
    from cvexport.preprocess import to_network_input
    from cvexport.registry import get_spec
    from cvexport.tasks import get_task

    spec = get_spec("ssd")
    batches = list(calibration_batches(get_task("detection").sample_images, spec, 5, batch_size=2))
    assert [b.shape for b in batches] == [(2, 3, 256, 256)] * 2 + [(1, 3, 256, 256)]
    assert all(b.dtype == np.float32 for b in batches)
    contract = {"dtype": "float32", "mean": spec.mean, "std": spec.std}
    expected = to_network_input([make_sample("train", 4, size=256).image], contract)
    np.testing.assert_array_equal(batches[2], expected)


def test_postprocess_scores_matches_the_torch_reference():
    import torch

    from cvexport.models.tinyssd import make_anchors
    from cvexport.ops.detection import NmsConfig, class_scores, postprocess

    torch.manual_seed(0)
    anchors = make_anchors()
    logits = torch.randn(2, anchors.shape[0], 4) * 3
    offsets = torch.randn(2, anchors.shape[0], 4) * 0.5
    config = NmsConfig(score_threshold=0.3, iou_threshold=0.45, max_detections=50)
    ref = postprocess(logits, offsets, anchors, config)
    out = postprocess_scores(class_scores(logits).numpy(), offsets.numpy(), anchors.numpy(), config)
    assert int(ref["num_detections"].sum()) > 0
    for key, value in ref.items():
        np.testing.assert_allclose(out[key], value.numpy(), rtol=0, atol=1e-6, err_msg=key)


def test_entropy_amax_clips_outliers_but_not_the_bulk():
    from cvexport.export.quantize import entropy_amax

    rng = np.random.default_rng(0)
    values = np.abs(rng.normal(0, 1, 200_000))
    values[:20] = 40.0  # rare outliers set the max; min/max calibration would waste the grid on them
    values = np.concatenate([values, np.zeros(200_000)])  # ReLU zeros must not drag amax down
    hist, edges = np.histogram(values, bins=2048)
    amax = entropy_amax(hist, edges)
    assert 3.0 < amax < 10.0, amax
    assert entropy_amax(hist[:100], edges[:101]) == edges[100]  # too few bins to clip: the max


def test_default_method_depends_on_the_form(core, calib):
    from cvexport.export.quantize import DEFAULT_METHOD

    assert DEFAULT_METHOD == {"qdq-trt": "entropy", "qdq-cpu": "minmax", "qdq-cpu-7bit": "minmax", "qoperator": "minmax"}
    default = quantize_core(core, calib, form="qdq-cpu")
    assert default.SerializeToString() == quantize_core(core, calib, form="qdq-cpu", method="minmax").SerializeToString()
