"""What INT8 keeps in float per graph form (cvexport.task_base.Task.int8_kept_float): a network
without data of its own here (torchvision builder, user's module) keeps its heads and its
products of two activations (squeeze-and-excitation gates) in float in the U8S8 CPU graphs;
the project's own models keep exactly the task's measured choice."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from cvexport.export.quantize import quantize_core, sensitive_nodes, u8_sensitive_nodes
from cvexport.int8_graphs import INT8_CPU_GRAPHS
from cvexport.registry import get_spec
from cvexport.tasks import get_task

CPU_FORMS = [graph.form for graph in INT8_CPU_GRAPHS]


def se_core() -> onnx.ModelProto:
    """A MobileNetV3-shaped core, input [N, 3, 16, 16]: stem conv, depthwise conv, a
    squeeze-and-excitation gate (GlobalAveragePool, 1x1 conv, HardSigmoid, Mul with the
    features), a Mul by a constant, and two heads."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(name, x, out, cin, cout, k=3, group=1):
        w = rng.normal(0, np.sqrt(2.0 / (cin // group * k * k)), (cout, cin // group, k, k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}.w"))
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"{name}.b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [out], name=name,
                                      pads=[k // 2] * 4, group=group))

    conv("stem", "input", "s", 3, 8)
    nodes.append(helper.make_node("Relu", ["s"], ["s_relu"], name="stem_relu"))
    conv("depthwise", "s_relu", "d", 8, 8, group=8)
    nodes.append(helper.make_node("GlobalAveragePool", ["d"], ["pooled"], name="se_pool"))
    conv("se_fc", "pooled", "se_logits", 8, 8, k=1)
    nodes.append(helper.make_node("HardSigmoid", ["se_logits"], ["gate"], name="se_gate"))
    nodes.append(helper.make_node("Mul", ["d", "gate"], ["gated"], name="se_mul"))
    inits.append(numpy_helper.from_array(np.full((1,), 0.5, np.float32), "half"))
    nodes.append(helper.make_node("Mul", ["gated", "half"], ["halved"], name="scale_mul"))
    conv("head_cls", "halved", "cls", 8, 6)
    conv("head_box", "halved", "box", 8, 4)
    for head, out in (("cls", "scores"), ("box", "box_offsets")):
        nodes.append(helper.make_node("Flatten", [head], [out], name=f"flatten_{out}"))
    graph = helper.make_graph(nodes, "se_core", [helper.make_tensor_value_info("input", TP.FLOAT, ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info(n, TP.FLOAT, ["batch", None])
                               for n in ("scores", "box_offsets")], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def core():
    return se_core()


def test_u8_sensitive_nodes_are_the_heads_and_activation_products(core):
    assert sensitive_nodes(core) == ["head_cls", "head_box"]
    # The Mul by a constant is one rounded operand, not two: quantized as before.
    assert u8_sensitive_nodes(core) == ["se_mul", "head_cls", "head_box"]


@pytest.mark.parametrize("form", CPU_FORMS)
def test_a_torchvision_network_keeps_them_in_the_cpu_graphs(core, form):
    task, spec = get_task("detection"), get_spec("ssdlite320_mobilenet_v3_large")
    assert not spec.has_own_data
    kept = task.int8_kept_float(spec, core, form)
    assert {"se_mul", "head_cls", "head_box"} <= set(kept)
    assert set(task.int8_keep_float(core, form)) <= set(kept)  # the task's own choice too
    assert len(kept) == len(set(kept))


def test_the_tensorrt_graph_is_unchanged(core):
    task, spec = get_task("detection"), get_spec("ssdlite320_mobilenet_v3_large")
    assert task.int8_kept_float(spec, core, "qdq-trt") == task.int8_keep_float(core, "qdq-trt") == []


@pytest.mark.parametrize("name", ["ssd", "classifier", "fcn"])
@pytest.mark.parametrize("form", ["qdq-trt", *CPU_FORMS])
def test_the_projects_own_models_keep_their_measured_choice(core, name, form):
    """Their INT8 graphs stay byte for byte what they were: same exclusions, same quantizer."""
    spec = get_spec(name)
    task = get_task(spec.task)
    assert spec.has_own_data
    assert task.int8_kept_float(spec, core, form) == task.int8_keep_float(core, form)
    if name == "ssd":
        assert task.int8_keep_float(core, form) == (["stem"] if form == "qdq-cpu-7bit" else [])


def test_the_kept_nodes_stay_float_in_the_quantized_graph(core):
    """quantize_core honours the list: no DequantizeLinear feeds the SE Mul or the heads, and
    their weights stay float; the other convolutions read 8-bit activations."""
    task, spec = get_task("detection"), get_spec("ssdlite320_mobilenet_v3_large")
    rng = np.random.default_rng(1)
    calibration = [rng.normal(0, 1, (8, 3, 16, 16)).astype(np.float32) for _ in range(8)]
    kept = task.int8_kept_float(spec, core, "qdq-cpu-7bit")
    model = quantize_core(core, calibration, form="qdq-cpu-7bit", exclude=kept)
    producer = {out: node for node in model.graph.node for out in node.output}
    nodes = {node.name: node for node in model.graph.node}
    floats = {t.name for t in model.graph.initializer if t.data_type == TP.FLOAT}
    for name in ("se_mul", "head_cls", "head_box"):
        assert all(tensor not in producer or producer[tensor].op_type != "DequantizeLinear"
                   for tensor in nodes[name].input), name
    for name in ("head_cls", "head_box"):
        assert nodes[name].input[1] in floats
    assert producer[nodes["depthwise"].input[0]].op_type == "DequantizeLinear"
