"""The CPU settings a session gets, read back from the library (issue #25): ONNX Runtime's
intra-op pool without spinning (unless the caller's options say otherwise) and with the threads
asked for, and OpenVINO's compiled model unpinned, at the latency hint and the backend's
precision. Why these settings: the comments at cvexport/backends/ort/loader.py
``SESSION_CONFIG`` and cvexport/backends/openvino/loader.py ``compile_graph``; the numbers per
model: benchmarks/results/cpu_backends.md. Nothing is timed."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from cvexport.backends.ort import loader as ort_loader


def _tiny_graph() -> bytes:
    """y = relu(x), x float32 [1, 4]: enough for a session or a compiled model."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.mark.parametrize("threads", [None, 1])
def test_an_onnxruntime_session_does_not_spin_and_has_the_threads_asked_for(threads):
    session = ort_loader.create_session(_tiny_graph(), ["CPUExecutionProvider"], threads=threads)
    options = session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == (threads or 0)


def test_spinning_asked_for_in_the_callers_options_is_kept():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    session = ort_loader.create_session(_tiny_graph(), ["CPUExecutionProvider"], options=options)
    assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_an_openvino_cpu_model_is_compiled_unpinned_at_the_latency_hint_and_its_precision():
    ov = pytest.importorskip("openvino")
    from cvexport.backends.openvino.loader import TARGETS, compile_graph

    compiled, names = compile_graph(_tiny_graph(), TARGETS["openvino"])
    assert names == ["y"]
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    threaded, _ = compile_graph(_tiny_graph(), TARGETS["openvino"], threads=1)
    assert threaded.get_property("INFERENCE_NUM_THREADS") == 1
    assert threaded.get_property("ENABLE_CPU_PINNING") is False
