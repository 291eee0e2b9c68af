"""benchmarks/torchvision_zoo.py's own logic on tiny inputs: reading a build's parity.json, the
within-run ratios, the interleaved timing (on a fake clock), the op counts of a graph with a
subgraph, the CLI error line and the table's rows for refused builds. Nothing is built or timed."""

from __future__ import annotations


import pytest

from benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def zoo():
    return load_benchmark("torchvision_zoo")


def _detection_entry(matched: int, total: int, min_iou: float, dscore: float, **extra) -> dict:
    # The fields a DetectionParity writes (cvexport/compare.py to_dict), as in a real parity.json.
    return {"score_threshold": 0.001, "reference_detections": total, "test_detections": total, "matched": matched,
            "min_iou": min_iou, "max_score_delta": dscore, "images": 8, "missing": extra.get("missing", 0),
            "extra": extra.get("extra", 0), "boundary_flips": extra.get("boundary_flips", 0), "compared": total,
            "passed": True}


def test_parity_rows_are_the_log_lines_numbers(zoo):
    report = {"graphs": {
        "model.onnx": {"4": _detection_entry(2064, 2400, 0.5001, 0.279, missing=336, extra=336),
                       "1": _detection_entry(2400, 2400, 0.99999, 1.49e-06)},
        "model.cpu.onnx": {"skipped": "not checked on this CPU"},
    }, "passed": True}
    rows = zoo.parity_rows("detection", report)
    assert [(r["graph"], r["batch"]) for r in rows] == [("model.onnx", 1), ("model.onnx", 4), ("model.cpu.onnx", None)]
    assert rows[0]["text"] == "2400/2400, min IoU 1.0000, max \\|dscore\\| 1.49e-06"
    assert rows[1]["text"] == "2064/2400, min IoU 0.5001, max \\|dscore\\| 2.79e-01 (336 missing, 336 extra)"
    flips = {"graphs": {"model.onnx": {"1": _detection_entry(2397, 2398, 0.9995, 1.75e-3, missing=1, extra=1,
                                                             boundary_flips=4)}}}
    assert zoo.parity_rows("detection", flips)[0]["text"] == (
        "2397/2398, min IoU 0.9995, max \\|dscore\\| 1.75e-03 (1 missing, 1 extra); 4 boundary flips set aside")
    assert (rows[1]["matched"], rows[1]["total"]) == (2064, 2400)
    assert rows[2]["text"] == "skipped: not checked on this CPU" and rows[2]["passed"] is None

    classifier = {"graphs": {"model.onnx": {"1": {"images": 32, "agree": 31, "agreement": 31 / 32,
                                                  "max_prob_delta": 2e-3, "passed": False}}}}
    assert zoo.parity_rows("classification", classifier)[0]["text"] == "top-1 31/32 (96.88%), max \\|dprob\\| 2.00e-03"
    segmenter = {"graphs": {"model.onnx": {"1": {"images": 8, "pixels": 1000, "agree": 999, "agreement": 0.999}}}}
    assert zoo.parity_rows("segmentation", segmenter)[0]["text"] == "99.9000% of 1000 pixels"


def test_ratios_are_the_references_time_over_each(zoo):
    assert zoo.ratios({"bundle": 10.0, "eager": 30.0, "export": 40.0}, "eager") == {"bundle": 3.0, "export": 0.75}


def test_interleaved_timing_rotates_and_takes_medians(zoo, monkeypatch):
    clock = [0.0]
    calls: list[str] = []
    costs = {"a": [1, 2, 3, 100, 5], "b": [10, 10, 10, 10, 10]}  # ms per call; a's warm-up is its first

    def pipeline(name):
        def run():
            calls.append(name)
            clock[0] += costs[name][sum(c == name for c in calls) - 1] / 1e3
        return run

    monkeypatch.setattr(zoo.time, "perf_counter", lambda: clock[0])
    p50 = zoo.interleaved_p50({"a": pipeline("a"), "b": pipeline("b")}, runs=4, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b"]  # the order rotates each round
    assert p50 == {"a": pytest.approx(4.0), "b": pytest.approx(10.0)}  # median of 2, 3, 100, 5


def test_op_counts_include_subgraphs(zoo, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    then = helper.make_graph([helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Neg", ["t"], ["y1"])], "then",
                             [], [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y2"])], "else",
                              [], [helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1])])
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    stats = zoo.graph_stats(path)
    assert (stats["nodes"], stats["op_types"]) == (5, 4)
    assert stats["ops"] == ["Identity", "If", "Neg", "Relu"]
    assert zoo.opset_of(path) == 17
    assert stats["input_shapes"] == [[1], []]
    assert stats["tensorrt"]["ok"] is (stats["tensorrt"]["errors"] == 0)


def test_first_error_line_prefers_the_clis_line(zoo):
    stderr = "some warning\ncvexport: error: build check failed: parity of model.onnx at batch 1: ...\n"
    assert zoo.first_error_line(stderr).startswith("cvexport: error: build check failed")
    traceback = "Traceback (most recent call last):\n  ...\nRuntimeError: boom\n"
    assert zoo.first_error_line(traceback) == "RuntimeError: boom"
    assert zoo.first_error_line("") == "(no output)"


def test_tensorrt_text(zoo):
    assert zoo.tensorrt_text({"ok": True, "warnings": 2}) == "OK (2 warnings)"
    assert zoo.tensorrt_text({"ok": False, "errors": 1, "first_error": "int64: x"}) == \
        "NOT COMPATIBLE (1 errors; first: int64: x)"


def test_table_says_refused_builds_and_missing_exports(zoo):
    record = {
        "cpu": {"model_name": "Test CPU", "simd_flags": [], "cores": 2}, "machine_note": "shared", "threads": 1,
        "runs": 4, "warmup": 1, "quick": False, "versions": {}, "started": "now", "seconds": 1.0,
        "models": {"m": {
            "task": "classification", "input": "64x64", "classes": 10,
            "builds": {
                "fp32": {"seconds": 3.0, "parity_passed": True, "parity_tolerance": {"min_top1_agreement": 1.0},
                         "parity_rows": [
                    {"graph": "model.onnx", "batch": 1, "text": "top-1 32/32 (100.00%), max \\|dprob\\| 1e-07",
                     "passed": True},
                    {"graph": "model.cpu.onnx", "batch": None, "text": "skipped: elsewhere", "passed": None}]},
                "int8": {"seconds": 9.0, "exit_code": 3, "error": "cvexport: error: build check failed: max |dprob| x"},
            },
            "latency": {"p50_ms": {zoo.BUNDLE: 10.0, zoo.EAGER: 20.0}, "speedup_vs_torch_eager": {zoo.BUNDLE: 2.0},
                        "torchvision_export": "does not export: RuntimeError: y", "answers": {},
                        "bundle_graph": {"mb": 1.0, "nodes": 5, "op_types": 3}},
        }},
    }
    text = zoo.markdown(record)
    assert "Test CPU, 2 cores, no AVX-512" in text
    assert "classification fp32: min_top1_agreement 1.0." in text
    refused = ("| m | 64x64 | int8 | - | build refused: cvexport: error: build check failed: max \\|dprob\\| x | | "
               "FAIL (exit 3) | 9 |")
    assert refused in text
    assert "| m | 64x64 | fp32 | model.onnx | top-1 32/32 (100.00%), max \\|dprob\\| 1e-07 | - | PASS | 3 |" in text
    assert "| m | 64x64 | fp32 | model.cpu.onnx | skipped: elsewhere |  | not checked | 3 |" in text
    assert "| m | 64x64 | 10.0 | 20.0 | does not export: RuntimeError: y | 2.00x | - | - |" in text
    assert "| m | 1.0 | 5 | 3 | - | - | does not export: RuntimeError: y | | | | |" in text
