"""Tests for the static TensorRT-compatibility checker (no TensorRT needed)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from cvexport.backends.trt.compat import (
    RULE_IDS,
    TOPK_MAX_K,
    TRT_SUPPORTED_OPS,
    CompatReport,
    Finding,
    check_model,
    check_path,
)

FLOAT = TP.FLOAT


# ------------------------------------------------------------------------------ helpers
def vi(name, dtype=FLOAT, shape=None):
    return helper.make_tensor_value_info(name, dtype, shape)


def init(name, values, dtype=None):
    arr = np.asarray(values, dtype=dtype)
    return numpy_helper.from_array(arr, name)


def make(nodes, inputs, outputs, inits=(), opset=17, domains=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets)


def hits(report: CompatReport, rule: str, severity: str | None = None) -> list[Finding]:
    assert rule in RULE_IDS, rule  # a typo here would make a "no findings" assertion vacuous
    assert {f.rule for f in report.findings} <= RULE_IDS
    return [f for f in report.findings if f.rule == rule and severity in (None, f.severity)]


def check(model, **kw) -> CompatReport:
    # An empty plugin registry keeps tests independent of trt_plugins.
    kw.setdefault("plugins", {})
    return check_model(model, **kw)


class FakeContract:
    """Stands in for a trt_plugins contract."""

    plugin_name = "FakeNMS_TRT"
    plugin_version = "1"

    def __init__(self, problems=()):
        self.problems = list(problems)
        self.seen = []

    def check_node(self, node, value_info):
        self.seen.append((node.name, dict(value_info)))
        return list(self.problems)


# ------------------------------------------------------------------------------ clean graph
def clean_detector() -> onnx.ModelProto:
    """Conv+Relu backbone, ReduceMax scores, TopK, NMS, ScatterND and Gather: all TRT-native."""
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMax", ["r", "red_axes"], ["m"], name="reduce", keepdims=0),
        helper.make_node("Reshape", ["m", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("TopK", ["flat", "k"], ["top_v", "top_i"], name="topk", axis=-1),
        helper.make_node("Unsqueeze", ["flat", "unsq_axes"], ["scores"], name="unsq"),
        helper.make_node(
            "NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score_thr"], ["sel"],
            name="nms",
        ),
        helper.make_node("Cast", ["sel"], ["sel32"], name="cast", to=TP.INT32),
        helper.make_node("ScatterND", ["top_v", "sc_idx", "sc_upd"], ["scattered"], name="scatter"),
        helper.make_node("Gather", ["scattered", "g_idx"], ["picked"], name="gather", axis=1),
    ]
    inits = [
        init("W", np.zeros((8, 3, 3, 3)), np.float32),
        init("B", np.zeros(8), np.float32),
        init("red_axes", [1], np.int64),
        init("flat_shape", [0, -1], np.int64),
        init("k", [100], np.int64),
        init("unsq_axes", [1], np.int64),
        init("max_out", [50], np.int64),
        init("iou", [0.5], np.float32),
        init("score_thr", [0.1], np.float32),
        init("sc_idx", [[0, 0]], np.int64),
        init("sc_upd", [1.0], np.float32),
        init("g_idx", [0, 1, 2], np.int64),
    ]
    inputs = [vi("x", FLOAT, ["N", 3, 32, 32]), vi("boxes", FLOAT, ["N", 1024, 4])]
    # Ranks only: the ONNX checker wants a shape on top-level outputs; inference fills the dims.
    outputs = [vi("picked", FLOAT, [None, None]), vi("sel32", TP.INT32, [None, None])]
    return make(nodes, inputs, outputs, inits, opset=18)


def test_clean_graph_is_ok_with_no_errors_or_warnings():
    report = check(clean_detector())
    assert report.ok
    assert report.by_severity("error") == []
    assert report.by_severity("warning") == [], report.format_text()


def test_histogram_inputs_and_outputs():
    report = check(clean_detector())
    assert report.op_histogram == {
        "Conv": 1, "Relu": 1, "ReduceMax": 1, "Reshape": 1, "TopK": 1, "Unsqueeze": 1,
        "NonMaxSuppression": 1, "Cast": 1, "ScatterND": 1, "Gather": 1,
    }
    assert report.inputs == [
        {"name": "x", "dtype": "FLOAT", "shape": ["N", 3, 32, 32]},
        {"name": "boxes", "dtype": "FLOAT", "shape": ["N", 1024, 4]},
    ]
    assert [o["name"] for o in report.outputs] == ["picked", "sel32"]
    assert report.outputs == [
        {"name": "picked", "dtype": "FLOAT", "shape": ["N", 3]},  # filled in by shape inference
        {"name": "sel32", "dtype": "INT32", "shape": ["?", 3]},  # data-dependent row count
    ]


def test_initializers_listed_as_inputs_are_not_reported_as_inputs():
    model = clean_detector()
    model.graph.input.append(vi("W", FLOAT, [8, 3, 3, 3]))  # IR<4 style
    assert [i["name"] for i in check(model).inputs] == ["x", "boxes"]


def test_report_serialises_and_formats():
    model = make(
        [helper.make_node("Unique", ["x"], ["y"], name="uniq")], [vi("x", FLOAT, [4])],
        [vi("y", FLOAT, [None])],
    )
    report = check(model)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["counts"]["error"] == len(report.by_severity("error")) >= 1
    assert {"rule": "unsupported-op", "severity": "error", "node": "uniq"}.items() <= (
        data["findings"][0].items()
    )
    text = report.format_text()
    assert "NOT COMPATIBLE" in text
    assert "unsupported-op [uniq]" in text
    assert "x: FLOAT [4]" in text
    assert "OK" in check(clean_detector()).format_text().splitlines()[0]


# ------------------------------------------------------------------------------ rule 1
@pytest.mark.parametrize("op", ["Unique", "MatMulInteger", "BitShift", "DFT", "TotallyMadeUpOp"])
def test_unsupported_ops_are_errors(op):
    n_in = 2 if op in ("MatMulInteger", "BitShift") else 1
    node = helper.make_node(op, ["x", "x"][:n_in], ["y"], name="bad")
    report = check(make([node], [vi("x", FLOAT, [4])], [vi("y", FLOAT, None)]))
    (finding,) = hits(report, "unsupported-op")
    assert finding.severity == "error" and finding.node == "bad" and op in finding.message
    assert not report.ok


def test_op_table_sanity():
    # A few ops the project relies on, and a few the parser is documented to lack.
    assert {"Conv", "NonMaxSuppression", "ScatterND", "RoiAlign", "GridSample"} <= TRT_SUPPORTED_OPS
    assert not {"Unique", "Compress", "SequenceAt", "MatMulInteger"} & TRT_SUPPORTED_OPS


# ------------------------------------------------------------------------------ rule 2
def _topk_model(k_value=None, k_as_input=False, sorted_=1):
    node = helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", sorted=sorted_)
    inputs = [vi("x", FLOAT, [1, 8000])]
    inits = []
    if k_as_input:
        inputs.append(vi("k", TP.INT64, [1]))
    else:
        inits.append(init("k", [k_value], np.int64))
    return make([node], inputs, [vi("v"), vi("i", TP.INT64)], inits)


@pytest.mark.parametrize(
    "k, expected", [(100, None), (TOPK_MAX_K, None), (TOPK_MAX_K + 1, "error"), (5000, "error")]
)
def test_topk_k_limit(k, expected):
    found = hits(check(_topk_model(k)), "topk-k")
    assert [f.severity for f in found] == ([expected] if expected else [])
    if expected:
        assert str(k) in found[0].message and found[0].node == "topk"


def test_topk_k_from_constant_node_is_read():
    model = _topk_model(1)
    del model.graph.initializer[:]
    const = helper.make_node(
        "Constant", [], ["k"], value=numpy_helper.from_array(np.array([4000], np.int64))
    )
    model.graph.node.insert(0, const)
    assert [f.severity for f in hits(check(model), "topk-k")] == ["error"]


def test_topk_dynamic_k_is_warning():
    found = hits(check(_topk_model(k_as_input=True)), "topk-k")
    assert [f.severity for f in found] == ["warning"]


def test_topk_unsorted_is_warning():
    found = hits(check(_topk_model(10, sorted_=0)), "topk-k")
    assert [f.severity for f in found] == ["warning"] and "sorted" in found[0].message


# ------------------------------------------------------------------------------ rule 3
def _reduce_model(op, opset, axes_source):
    nodes, inputs, inits = [], [vi("x", FLOAT, [2, 3, 4])], []
    if axes_source == "initializer":
        inits.append(init("axes", [1], np.int64))
    elif axes_source == "constant":
        nodes.append(helper.make_node("Constant", [], ["axes"], value_ints=[1]))
    elif axes_source == "input":
        inputs.append(vi("axes", TP.INT64, [1]))
    elif axes_source == "computed":  # Shape -> Slice: only known after evaluation
        nodes += [
            helper.make_node("Shape", ["x"], ["shp"]),
            helper.make_node("Slice", ["shp", "s0", "s1"], ["axes"]),
        ]
        inits += [init("s0", [0], np.int64), init("s1", [1], np.int64)]
    nodes.append(helper.make_node(op, ["x", "axes"], ["y"], name="red"))
    return make(nodes, inputs, [vi("y")], inits, opset=opset)


@pytest.mark.parametrize(
    "op, opset, source, bad",
    [
        ("ReduceMax", 18, "initializer", False),
        ("ReduceMax", 18, "constant", False),
        ("ReduceMax", 18, "input", True),
        ("ReduceMean", 18, "computed", True),
        ("ReduceSum", 13, "input", True),
        ("ReduceSum", 13, "initializer", False),
    ],
)
def test_reduce_axes_must_be_constant(op, opset, source, bad):
    found = hits(check(_reduce_model(op, opset, source)), "reduce-axes")
    assert [(f.severity, f.node) for f in found] == ([("error", "red")] if bad else [])


def test_reduce_axes_attribute_form_is_fine():
    node = helper.make_node("ReduceMax", ["x"], ["y"], axes=[1])
    model = make([node], [vi("x", FLOAT, [2, 3])], [vi("y")], opset=17)
    assert hits(check(model), "reduce-axes") == []


def test_cumsum_axis_must_be_constant():
    node = helper.make_node("CumSum", ["x", "axis"], ["y"], name="cs")
    model = make([node], [vi("x", FLOAT, [2, 3]), vi("axis", TP.INT64, [])], [vi("y")])
    assert [f.severity for f in hits(check(model), "constant-input")] == ["error"]


# ------------------------------------------------------------------------------ rule 4
def _qdq_model(zp=None, zp_dtype=np.int8, scale=(0.1,), axis=None, q_only=False):
    """x -> QuantizeLinear [-> DequantizeLinear] -> Relu, per-tensor or per-axis."""
    qparams = ["scale"] + (["zp"] if zp is not None else [])
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", *qparams], ["q"], name="q", **attrs)]
    if not q_only:
        dq = helper.make_node("DequantizeLinear", ["q", *qparams], ["dq"], name="dq", **attrs)
        nodes.append(dq)
    nodes.append(helper.make_node("Relu", ["q" if q_only else "dq"], ["y"]))

    def vec_or_scalar(values, dtype):  # per-tensor params are scalars, per-axis are 1-D
        arr = np.asarray(values, dtype)
        return arr if len(values) > 1 else arr.reshape(())

    inits = [init("scale", vec_or_scalar(scale, np.float32))]
    if zp is not None:
        inits.append(init("zp", vec_or_scalar(zp, zp_dtype)))
    return make(nodes, [vi("x", FLOAT, [1, 4, 8, 8])], [vi("y")], inits, opset=19)


def test_symmetric_int8_qdq_is_clean():
    assert hits(check(_qdq_model(zp=[0])), "quantization") == []


def test_per_axis_activation_scale_is_fine():
    model = _qdq_model(zp=[0, 0, 0, 0], scale=(0.1, 0.2, 0.3, 0.4), axis=1)
    assert hits(check(model), "quantization") == []


def test_fp8_zero_point_is_accepted():
    model = _qdq_model(zp=[0])
    zp = helper.make_tensor("zp", TP.FLOAT8E4M3FN, [], [0.0])
    model.graph.initializer[1].CopyFrom(zp)
    assert hits(check(model), "quantization") == []


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"zp": [3]}, "non-zero"),
        ({"zp": [0], "zp_dtype": np.uint8}, "UINT8"),
        ({"zp": [0, 1, 0, 0], "scale": (0.1,) * 4, "axis": 1}, "non-zero"),
        ({"zp": [0], "scale": (-0.1,)}, "non-positive"),
    ],
)
def test_bad_qdq_is_error(kwargs, needle):
    found = hits(check(_qdq_model(**kwargs)), "quantization", "error")
    assert found and any(needle in f.message for f in found)
    assert {f.node for f in found} <= {"q", "dq"}


def test_quantize_without_zero_point_warns_about_uint8():
    found = hits(check(_qdq_model(zp=None, q_only=True)), "quantization")
    assert [f.severity for f in found] == ["warning"] and "UINT8" in found[0].message


def test_quantized_bias_is_error():
    nodes = [
        helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zp"], ["b"], name="dq_bias"),
        helper.make_node("Conv", ["x", "W", "b"], ["y"], name="conv"),
    ]
    inits = [
        init("W", np.ones((2, 1, 1, 1)), np.float32),
        init("b_q", [5, -5], np.int32),
        init("b_scale", np.float32(0.01)),
        init("b_zp", np.int32(0)),
    ]
    model = make(nodes, [vi("x", FLOAT, [1, 1, 4, 4])], [vi("y")], inits, opset=19)
    found = hits(check(model), "quantization", "error")
    assert [f.node for f in found] == ["dq_bias"]
    assert "quantized bias" in found[0].message and "conv" in found[0].message


# ------------------------------------------------------------------------------ rule 5
def _resize_model(opset=13, scales=(1, 1, 2, 2), shape=(1, 3, 8, 8), sizes=None, **attrs):
    inputs = ["x", "", "scales"] if sizes is None else ["x", "", "", "sizes"]
    node = helper.make_node("Resize", inputs, ["y"], name="rs", **attrs)
    if sizes is None:
        inits = [init("scales", scales, np.float32)]
    else:
        inits = [init("sizes", sizes, np.int64)]
    return make([node], [vi("x", FLOAT, list(shape))], [vi("y")], inits, opset=opset)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
         "nearest_mode": "floor"},
        {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
        {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        {"mode": "cubic", "coordinate_transformation_mode": "pytorch_half_pixel"},
        {"mode": "cubic", "sizes": (1, 3, 16, 16)},
        {"mode": "linear", "scales": (1, 2, 2, 2), "shape": (1, 3, 4, 8, 8)},
        {"opset": 18, "mode": "cubic", "axes": [2, 3], "scales": (2, 2)},
        {"opset": 18, "mode": "cubic", "axes": [-2, -1], "scales": (2, 2)},
    ],
)
def test_supported_resize_is_clean(kwargs):
    assert hits(check(_resize_model(**kwargs)), "resize-mode") == []


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"coordinate_transformation_mode": "tf_crop_and_resize"}, "tf_crop_and_resize"),
        ({"opset": 19, "coordinate_transformation_mode": "half_pixel_symmetric"},
         "half_pixel_symmetric"),
        ({"coordinate_transformation_mode": "tf_half_pixel_for_nn", "nearest_mode": "floor"},
         "round_prefer_floor"),
        ({"opset": 18, "mode": "linear", "antialias": 1}, "antialias"),
        ({"opset": 18, "sizes": (1, 3, 16, 16), "keep_aspect_ratio_policy": "not_larger"},
         "keep_aspect_ratio_policy"),
        ({"mode": "cubic", "scales": (1, 2, 2, 2)}, "2 innermost"),
        ({"mode": "cubic", "sizes": (1, 6, 16, 16)}, "2 innermost"),
        ({"mode": "linear", "scales": (2, 2, 2, 2)}, "3 innermost"),
        ({"opset": 18, "mode": "cubic", "axes": [1, 2], "scales": (2, 2)}, "2 innermost"),
    ],
)
def test_unsupported_resize_is_error(kwargs, needle):
    found = hits(check(_resize_model(**kwargs)), "resize-mode")
    assert found and all(f.severity == "error" and f.node == "rs" for f in found)
    assert any(needle in f.message for f in found), [f.message for f in found]


# ------------------------------------------------------------------------------ rule 6
def test_int64_graph_io_is_warning():
    node = helper.make_node("Identity", ["ids"], ["out"])
    model = make([node], [vi("ids", TP.INT64, [4])], [vi("out", TP.INT64, [4])])
    found = hits(check(model), "int64")
    assert sorted((f.severity, f.node) for f in found) == [("warning", "ids"), ("warning", "out")]


def test_internal_int64_is_info_only():
    report = check(clean_detector())
    found = hits(report, "int64")
    assert [f.severity for f in found] == ["info"]
    assert "flat_shape" in found[0].message


def test_int64_initializer_beyond_int32_is_error():
    node = helper.make_node("Add", ["x", "big"], ["y"])
    model = make([node], [vi("x", TP.INT32, [2])], [vi("y", TP.INT32, [2])],
                 [init("big", [1, 2**40], np.int64)])
    found = hits(check(model), "int64", "error")
    assert [f.node for f in found] == ["big"] and str(2**40) in found[0].message


def test_int64_max_slice_end_is_not_an_error():
    # torch exports x[1:] as Slice(ends=INT64_MAX); the parser clamps that to the dim.
    node = helper.make_node("Slice", ["x", "starts", "ends"], ["y"])
    inits = [init("starts", [1], np.int64), init("ends", [np.iinfo(np.int64).max], np.int64)]
    report = check(make([node], [vi("x", FLOAT, [5])], [vi("y")], inits))
    assert hits(report, "int64", "error") == []


# ------------------------------------------------------------------------------ rule 7
def test_sequence_ops_and_values_are_errors():
    nodes = [
        helper.make_node("SequenceConstruct", ["x", "x"], ["seq"], name="mkseq"),
        helper.make_node("ConcatFromSequence", ["seq"], ["y"], name="cat", axis=0),
    ]
    report = check(make(nodes, [vi("x", FLOAT, [2])], [vi("y")]))
    construct = hits(report, "unsupported-construct", "error")
    assert [f.node for f in construct] == ["seq"] and "sequence" in construct[0].message
    assert {f.node for f in hits(report, "unsupported-op", "error")} == {"mkseq", "cat"}


def test_string_tensor_is_error():
    model = make([helper.make_node("Identity", ["s"], ["t"])], [vi("s", TP.STRING, [2])],
                 [vi("t", TP.STRING, [2])])
    found = hits(check(model), "unsupported-construct", "error")
    assert {f.node for f in found} == {"s", "t"}


def test_string_constant_is_error():
    nodes = [helper.make_node("Constant", [], ["c"], name="labels", value_strings=["a", "b"])]
    found = hits(check(make(nodes, [], [vi("c", TP.STRING, [2])])), "unsupported-construct")
    assert "labels" in {f.node for f in found}


def _loop_model(constant_trip_count: bool):
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
            helper.make_node("Identity", ["acc_out"], ["scan_out"]),
        ],
        "body",
        [vi("iter", TP.INT64, []), vi("cond_in", TP.BOOL, []), vi("acc_in", FLOAT, [1])],
        [vi("cond_out", TP.BOOL, []), vi("acc_out", FLOAT, [1]), vi("scan_out", FLOAT, [1])],
        initializer=[init("one", [1.0], np.float32)],
    )
    node = helper.make_node("Loop", ["M", "cond", "acc0"], ["acc", "scans"], name="loop", body=body)
    inputs = [vi("cond", TP.BOOL, []), vi("acc0", FLOAT, [1])]
    inits = []
    if constant_trip_count:
        inits.append(init("M", np.int64(5)))
    else:
        inputs.insert(0, vi("M", TP.INT64, []))
    return make([node], inputs, [vi("acc"), vi("scans")], inits)


def test_loop_scan_output_needs_constant_trip_count():
    found = hits(check(_loop_model(constant_trip_count=False)), "unsupported-construct")
    assert [(f.severity, f.node) for f in found] == [("error", "loop")]
    assert hits(check(_loop_model(constant_trip_count=True)), "unsupported-construct") == []


def test_loop_body_ops_are_checked_and_counted():
    model = _loop_model(True)
    model.graph.node[0].attribute[0].g.node[1].op_type = "Unique"
    report = check(model)
    assert report.op_histogram["Loop"] == 1 and report.op_histogram["Unique"] == 1
    assert hits(report, "unsupported-op", "error")


# ------------------------------------------------------------------------------ rule 8
def _plugin_model(domain="trt.plugins", op="FakeNMS_TRT"):
    node = helper.make_node(op, ["boxes", "scores"], ["num", "det"], name="nms", domain=domain)
    return make(
        [node], [vi("boxes", FLOAT, [1, 100, 4]), vi("scores", FLOAT, [1, 100, 80])],
        [vi("num", TP.INT32, [1, 1]), vi("det", FLOAT, [1, 10, 4])],
        domains=[domain] if domain else [],
    )


@pytest.mark.parametrize("domain", ["trt.plugins", ""])
def test_plugin_node_is_info_and_contract_problems_are_errors(domain):
    contract = FakeContract(problems=["score_threshold must be > 0", "box_coding unsupported"])
    report = check(_plugin_model(domain), plugins={"FakeNMS_TRT": contract})
    info = hits(report, "plugin", "info")
    assert [(f.node, f.message) for f in info] == [
        ("nms", "runs as TensorRT plugin FakeNMS_TRT v1")
    ]
    errors = hits(report, "plugin", "error")
    assert [f.message for f in errors] == contract.problems
    assert hits(report, "unsupported-op") == [] and hits(report, "custom-domain") == []
    # the contract sees the node's tensors' types
    (name, value_info), = contract.seen
    assert name == "nms" and value_info["boxes"].tensor_type.elem_type == FLOAT


def test_plugin_without_problems_is_ok():
    report = check(_plugin_model(), plugins={"FakeNMS_TRT": FakeContract()})
    assert report.ok and [f.severity for f in hits(report, "plugin")] == ["info"]


def test_plugin_contract_that_raises_is_an_error():
    class Broken(FakeContract):
        def check_node(self, node, value_info):
            raise KeyError("max_output_boxes")

    report = check(_plugin_model(), plugins={"FakeNMS_TRT": Broken()})
    assert any("KeyError" in f.message for f in hits(report, "plugin", "error"))


def test_unknown_custom_domain_node_is_error():
    report = check(_plugin_model(domain="com.microsoft", op="FusedConv"))
    found = hits(report, "custom-domain")
    assert [(f.severity, f.node) for f in found] == [("error", "nms")]
    assert "com.microsoft::FusedConv" in found[0].message


def test_unknown_plugin_op_in_default_domain_is_unsupported():
    found = hits(check(_plugin_model(domain="")), "unsupported-op")
    assert [(f.severity, f.node) for f in found] == [("error", "nms")]


def test_model_local_function_is_inlined():
    fn = helper.make_function(
        "local", "MyAct", ["a"], ["b"], [helper.make_node("Relu", ["a"], ["b"])],
        opset_imports=[helper.make_opsetid("", 17)],
    )
    node = helper.make_node("MyAct", ["x"], ["y"], domain="local")
    model = make([node], [vi("x", FLOAT, [2])], [vi("y", FLOAT, [2])], domains=["local"])
    model.functions.append(fn)
    report = check(model)
    assert report.ok and report.op_histogram == {"Relu": 1}


def _efficient_nms_model(num_detections_dtype=TP.INT32, **overrides):
    from trt_plugins import EFFICIENT_NMS

    attrs = dict(score_threshold=0.25, iou_threshold=0.45, max_output_boxes=100,
                 background_class=-1, score_activation=0, box_coding=0)
    node = EFFICIENT_NMS.make_node(
        ["boxes", "scores"],
        ["num_detections", "detection_boxes", "detection_scores", "detection_classes"],
        name="nms", **attrs,
    )
    for a in node.attribute:  # break the node after make_node has validated it
        if a.name in overrides:
            a.i = overrides[a.name]
    return make(
        [node], [vi("boxes", FLOAT, [1, 1000, 4]), vi("scores", FLOAT, [1, 1000, 80])],
        [vi("num_detections", num_detections_dtype, [1, 1]),
         vi("detection_boxes", FLOAT, [1, 100, 4]), vi("detection_scores", FLOAT, [1, 100]),
         vi("detection_classes", TP.INT32, [1, 100])],
        domains=[EFFICIENT_NMS.domain],
    )


def test_real_plugin_registry():
    pytest.importorskip("trt_plugins.efficient_nms")
    report = check_model(_efficient_nms_model())  # default registry
    found = hits(report, "plugin")
    assert [(f.severity, f.message) for f in found] == [
        ("info", "runs as TensorRT plugin EfficientNMS_TRT v1")
    ], report.format_text()
    assert report.ok
    assert hits(report, "custom-domain") == [] and hits(report, "unsupported-op") == []

    bad_attr = check_model(_efficient_nms_model(score_activation=5))
    assert any("score_activation" in f.message for f in hits(bad_attr, "plugin", "error"))
    bad_type = check_model(_efficient_nms_model(num_detections_dtype=TP.INT64))
    assert any("num_detections" in f.message for f in hits(bad_type, "plugin", "error"))


# ------------------------------------------------------------------------------ rule 9
def test_dynamic_non_batch_dims_are_info():
    model = make([helper.make_node("Relu", ["x"], ["y"])], [vi("x", FLOAT, ["N", 3, "H", "W"])],
                 [vi("y")])
    found = hits(check(model), "dynamic-dim")
    assert [(f.severity, f.node) for f in found] == [("info", "x")]
    assert "dim 2=H" in found[0].message and "dim 0" not in found[0].message
    assert hits(check(clean_detector()), "dynamic-dim") == []  # only the batch is dynamic


@pytest.mark.parametrize(
    "opset, severity", [(8, "error"), (11, "warning"), (13, None), (24, None), (25, "warning")]
)
def test_opset_range(opset, severity):
    model = make([helper.make_node("Relu", ["x"], ["y"])], [vi("x", FLOAT, [2])], [vi("y")],
                 opset=opset)
    assert [f.severity for f in hits(check(model), "opset")] == ([severity] if severity else [])


def test_shape_inference_failure_is_warning():
    node = helper.make_node("Add", ["a", "b"], ["c"])  # float + int: type error
    model = make([node], [vi("a", FLOAT, [2]), vi("b", TP.INT32, [2])], [vi("c")])
    assert [f.severity for f in hits(check(model), "shape-inference")] == ["warning"]


def _external_data_model(tmp_path):
    node = helper.make_node("Add", ["x", "w"], ["y"])
    weights = init("w", np.ones(4096), np.float32)
    model = make([node], [vi("x", FLOAT, [4096])], [vi("y", FLOAT, [4096])], [weights])
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, location="m.data", size_threshold=0)
    return path


def test_external_data_is_warning(tmp_path):
    path = _external_data_model(tmp_path)
    report = check_path(path)
    found = hits(report, "external-data")
    assert [f.severity for f in found] == ["warning"] and "w" in found[0].message
    assert report.ok
    # the same warning from an in-memory model that still references its data file
    model = onnx.load(path, load_external_data=False)
    assert hits(check(model), "external-data")


def test_check_path_missing_external_data_is_value_error(tmp_path):
    path = _external_data_model(tmp_path)
    (tmp_path / "m.data").unlink()
    with pytest.raises(ValueError, match="m.data"):
        check_path(path)


def test_check_path_round_trip(tmp_path):
    path = tmp_path / "clean.onnx"
    onnx.save(clean_detector(), path)
    assert check_path(path).op_histogram["TopK"] == 1


@pytest.mark.parametrize("content", [None, b"definitely not a protobuf \xff\xfe", b""])
def test_check_path_bad_files_raise_one_line_value_error(tmp_path, content):
    path = tmp_path / "broken.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError) as excinfo:
        check_path(path)
    message = str(excinfo.value)
    assert "broken.onnx" in message and "\n" not in message


# ------------------------------------------------------- onnx checker and dangling inputs
def _dangling_model():
    """Add reads 'ghost', which no node, graph input or initializer provides."""
    node = helper.make_node("Add", ["x", "ghost"], ["y"], name="add_ghost")
    return make([node], [vi("x", FLOAT, [1, 4])], [vi("y", FLOAT, [1, 4])])


def test_dangling_input_is_an_error_naming_node_and_tensor():
    report = check(_dangling_model())
    assert not report.ok
    (found,) = hits(report, "dangling-input")
    assert found.severity == "error" and found.node == "add_ghost"
    assert "'ghost'" in found.message and "add_ghost" in found.message
    assert "NOT COMPATIBLE" in report.format_text().splitlines()[0]


def test_onnx_checker_failure_is_a_one_line_error_naming_the_tensor():
    (found,) = hits(check(_dangling_model()), "onnx-checker")
    assert found.severity == "error"
    assert "ghost" in found.message and "\n" not in found.message
    assert found.message.startswith("ONNX checker failed: ")


def test_check_path_reports_dangling_input(tmp_path):
    path = tmp_path / "broken.onnx"
    onnx.save(_dangling_model(), path)
    report = check_path(path)
    assert not report.ok
    assert {f.rule for f in report.by_severity("error")} >= {"onnx-checker", "dangling-input"}


def test_dangling_graph_output_is_an_error():
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    model = make([node], [vi("x", FLOAT, [2])], [vi("y", FLOAT, [2]), vi("nowhere", FLOAT, [2])])
    found = hits(check(model), "dangling-input", "error")
    assert [f.node for f in found] == ["nowhere"] and "'nowhere'" in found[0].message


def _if_model(branch_reads: str):
    """An If whose then-branch reads ``branch_reads``; 'x' is an outer-scope graph input."""
    then_graph = helper.make_graph(
        [helper.make_node("Relu", [branch_reads], ["t"], name="then_relu")], "then_g", [], [vi("t", FLOAT, [2])])
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"], name="else_neg")], "else_g", [], [vi("e", FLOAT, [2])])
    node = helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_graph, else_branch=else_graph)
    return make([node], [vi("cond", TP.BOOL, []), vi("x", FLOAT, [2])], [vi("y", FLOAT, [2])])


def test_subgraph_may_read_outer_scope_but_not_nothing():
    assert check(_if_model("x")).ok  # outer-scope reads are legal
    report = check(_if_model("ghost"))
    found = hits(report, "dangling-input", "error")
    assert [f.node for f in found] == ["then_relu"] and "'ghost'" in found[0].message
    assert hits(report, "onnx-checker", "error")


def test_omitted_optional_input_is_not_dangling():
    node = helper.make_node("Clip", ["x", "", "hi"], ["y"], name="clip")
    model = make([node], [vi("x", FLOAT, [2])], [vi("y", FLOAT, [2])], [init("hi", 6.0, np.float32)])
    report = check(model)
    assert report.ok and hits(report, "dangling-input") == [] and hits(report, "onnx-checker") == []


def test_type_error_fails_the_onnx_checker():
    node = helper.make_node("Add", ["a", "b"], ["c"], name="mixed")  # float + int: ORT refuses it
    model = make([node], [vi("a", FLOAT, [2]), vi("b", TP.INT32, [2])], [vi("c", FLOAT, [2])])
    report = check(model)
    assert not report.ok and [f.severity for f in hits(report, "onnx-checker")] == ["error"]


def test_plugin_node_in_default_domain_passes_the_onnx_checker():
    # TensorRT's parser accepts plugin nodes in the default domain; onnx.checker would ask for
    # an ONNX schema, so the checker sees them in their plugin's domain.
    report = check(_plugin_model(domain=""), plugins={"FakeNMS_TRT": FakeContract()})
    assert report.ok and hits(report, "onnx-checker") == []


def test_exported_efficient_nms_graph_passes_the_onnx_checker():
    report = check_model(_efficient_nms_model())
    assert hits(report, "onnx-checker") == [] and hits(report, "dangling-input") == []
