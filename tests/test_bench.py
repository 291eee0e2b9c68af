"""``cvexport bench`` (cvexport/bench.py): the record's fields and internal consistency, the
table, the plot and the one-line errors; the INT8-vs-fp32 statement; and the floors of
benchmarks/run_benchmarks.py (benchmarks/floors.py) from given rates and times. Tiny iteration
counts; nothing here asserts speed."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import cvexport.bench as bench
import cvexport.int8_gain as int8_gain
import cvexport.runtime as runtime
from cvexport.cli import main
from cvexport.cpu import cpu_info, describe_cpu
from cvexport.errors import CvexportError
from benchmark_modules import load_benchmark
from cli_helpers import one_line_stderr

STAT_KEYS = ("min", "mean", "p50", "p90", "p95", "p99", "max")
ITERS = 3


@pytest.fixture(scope="module")
def cli_run(bundle, tmp_path_factory):
    """One CLI run on torch and ort: (exit code, record from --json, --plot path, torch threads before/after)."""
    import torch

    out = tmp_path_factory.mktemp("bench")
    threads_before = torch.get_num_threads()
    code = main(["bench", str(bundle.path), "--backend", "torch,ort", "--batch", "2", "--warmup", "1",
                 "--iters", str(ITERS), "--threads", "1", "--json", str(out / "bench.json"),
                 "--plot", str(out / "bench.png")])
    record = json.loads((out / "bench.json").read_text())
    return code, record, out / "bench.png", (threads_before, torch.get_num_threads())



def test_cli_run_succeeds_and_records_machine(cli_run, bundle):
    code, record, _, _ = cli_run
    assert code == 0
    assert record["format"] == bench.BENCH_FORMAT
    assert record["settings"] == {"backends": ["torch", "ort"], "batch": 2, "warmup": 1, "iters": ITERS, "threads": 1}
    assert record["bundle"]["model"] == "ssd" and record["bundle"]["precision"] == "fp32"
    assert record["bundle"]["nms"] == "onnx" and record["bundle"]["max_batch"] == bundle.max_batch
    machine = record["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["threads"] == 1
    assert "gpu" in machine and "load_average" in machine
    assert {"torch", "onnxruntime", "numpy"} <= set(record["versions"])
    assert record["images"]["count"] >= 4 and len({tuple(s) for s in record["images"]["sizes"]}) > 1
    assert record["skipped"] == {}


def test_cli_record_names_the_cpu(cli_run):
    _, record, _, _ = cli_run
    assert record["cpu"] == cpu_info()
    assert {"model", "flags", "isa_class", "forced", "cores"} <= set(record["cpu"])
    assert record["cpu"]["isa_class"] in ("vnni", "avx2")
    assert "int8_vs_fp32" not in record  # an fp32 bundle has nothing to compare
    graph = record["results"]["ort"].get("graph")  # which bundle graph ORT chose on this CPU
    assert graph is None or graph == "onnx"  # an fp32 bundle has no other


def test_every_backend_has_all_stages(cli_run):
    _, record, _, _ = cli_run
    assert list(record["results"]) == ["torch", "ort"]
    for backend, result in record["results"].items():
        assert result["backend"] == backend and result["threads"] in (1, None)
        assert result["throughput_ips"] > 0 and result["inference_throughput_ips"] > 0
        assert set(bench.STAGES) <= set(result["latency_ms"])
        for stage in bench.STAGES:
            assert set(STAT_KEYS) <= set(result["latency_ms"][stage])
            assert len(result["samples_ms"][stage]) == ITERS  # the warm-up iteration is not recorded


def test_percentiles_are_ordered(cli_run):
    _, record, _, _ = cli_run
    for result in record["results"].values():
        for stats in result["latency_ms"].values():
            values = [stats[k] for k in ("min", "p50", "p90", "p95", "p99", "max")]
            assert values == sorted(values), stats
            assert stats["min"] <= stats["mean"] <= stats["max"]


def test_stages_add_up_to_at_most_end_to_end(cli_run):
    _, record, _, _ = cli_run
    for result in record["results"].values():
        samples = result["samples_ms"]
        parts = np.sum([samples[s] for s in ("preprocess", "inference", "postprocess")], axis=0)
        # Samples are rounded to 0.1 us each; the stages leave out only the loop's own bookkeeping.
        assert np.all(parts <= np.asarray(samples["end_to_end"]) + 1e-3)
        assert np.all(parts >= 0.5 * np.asarray(samples["end_to_end"]))


def test_torch_thread_count_is_restored(cli_run):
    _, _, _, (before, after) = cli_run
    assert before == after


def test_plot_is_a_png(cli_run):
    from PIL import Image

    _, _, plot, _ = cli_run
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as image:
        image.verify()
    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200


def test_table_fits_80_columns(cli_run):
    from rich.console import Console

    _, record, _, _ = cli_run
    buffer = io.StringIO()
    Console(file=buffer, width=80, color_system=None).print(bench.results_table(record))
    text = buffer.getvalue()
    assert "torch" in text and "ort" in text and "infer" in text and "p99" in text
    assert describe_cpu(record["cpu"]) in " ".join(text.split())  # the caption wraps; the words are all there
    assert "…" not in text  # nothing truncated
    assert max(len(line) for line in text.splitlines()) <= 80


def test_device_timings_are_recorded_when_the_runner_has_them(bundle, monkeypatch):
    """TensorRT's runner exposes last_timings (CUDA events); a stand-in exercises that path without a GPU."""
    real = runtime.create_runner

    class WithTimings:
        def __init__(self, runner):
            self.runner = runner
            self.last_timings = {}

        def infer(self, feed):
            self.last_timings = {"h2d_ms": 0.1, "compute_ms": 1.0, "d2h_ms": 0.05, "total_ms": 1.15}
            return self.runner.infer(feed)

        def close(self):
            self.runner.close()

    monkeypatch.setattr(runtime, "create_runner", lambda b, backend, threads=None: WithTimings(real(b, backend, threads)))
    record = bench.run_benchmark(bundle, ["ort"], batch=1, warmup=1, iters=2, warn=lambda line: None)
    stages = record["results"]["ort"]["latency_ms"]
    assert stages["h2d"]["mean"] == pytest.approx(0.1) and stages["compute"]["max"] == pytest.approx(1.0)
    assert stages["d2h"]["p50"] == pytest.approx(0.05)


def _unavailable(backend_name: str, message: str):
    real = runtime.create_runner

    def create(b, backend, threads=None):
        if backend == backend_name:
            raise CvexportError(message)
        return real(b, backend, threads)

    return create


def test_unusable_backend_alone_is_a_one_line_error(bundle, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "create_runner", _unavailable("trt", "TensorRT is not installed; pip install tensorrt"))
    assert main(["bench", str(bundle.path), "--backend", "trt", "--iters", "1", "--warmup", "0"]) == 2
    assert "TensorRT is not installed; pip install tensorrt" in one_line_stderr(capsys)


def test_unusable_backend_among_several_is_skipped(bundle, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(runtime, "create_runner", _unavailable("ort-cuda", "install onnxruntime-gpu"))
    out = tmp_path / "b.json"
    code = main(["bench", str(bundle.path), "--backend", "ort-cuda", "--backend", "ort", "--iters", "1",
                 "--warmup", "0", "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert list(record["results"]) == ["ort"] and "onnxruntime-gpu" in record["skipped"]["ort-cuda"]
    err = capsys.readouterr().err
    assert "warning: skipping backend ort-cuda: install onnxruntime-gpu" in err and "error" not in err


def test_cpu_fallback_of_a_gpu_provider_counts_as_unusable():
    """ONNX Runtime quietly runs on the CPU when CUDA cannot start; a session must not be labelled 'ort-cuda'."""
    from cvexport.backends.ort.loader import check_provider

    class FellBack:
        def get_providers(self):
            return ["CPUExecutionProvider"]

    with pytest.raises(CvexportError, match="could not start CUDAExecutionProvider .*fell back to CPUExecutionProvider"):
        check_provider(FellBack(), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(CvexportError, match="could not start TensorrtExecutionProvider"):
        check_provider(FellBack(), [("TensorrtExecutionProvider", {"trt_fp16_enable": True}), "CPUExecutionProvider"])
    check_provider(FellBack(), ["CPUExecutionProvider"])  # what was asked for: fine


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--backend", "tensorflow"], "unknown backend 'tensorflow'"),
        (["--backend", "ort,nope"], "unknown backend 'nope'"),
        (["--batch", "9"], "--batch 9 is outside 1..8"),
        (["--warmup", "-1"], "--warmup -1"),
    ],
)
def test_bad_input_is_a_one_line_error(bundle, capsys, args, needle):
    assert main(["bench", str(bundle.path), "--iters", "1", *args]) == 2
    assert needle in one_line_stderr(capsys)


def test_missing_bundle_is_a_one_line_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope")]) == 2
    assert "bundle not found" in one_line_stderr(capsys)


def test_machine_info_names_the_cpu_as_cpu_info_does():
    assert bench.machine_info(None)["cpu"] == cpu_info()["model"]


# ------------------------------------------------------------------------------ INT8 vs fp32
FAKE_CPU = {"model": "AMD EPYC 7B13", "flags": ["avx2", "fma"], "isa_class": "avx2", "forced": False, "cores": 2}


def test_int8_not_faster_is_said_plainly():
    comparison = int8_gain.int8_vs_fp32(fp32_ms=16.5, int8_ms=17.0, cpu=FAKE_CPU)
    assert comparison == {"fp32_inference_ms_p50": 16.5, "int8_inference_ms_p50": 17.0, "speedup": 0.97,
                          "faster": False, "cpu": FAKE_CPU}
    line = int8_gain.int8_statement(comparison)
    assert line == (f"INT8 on this CPU ({describe_cpu(FAKE_CPU)}): inference 17.00 ms vs fp32 16.50 ms: "
                    "not faster (0.97x)")
    assert "AMD EPYC 7B13" in line and "class avx2" in line


def test_int8_faster_is_said_plainly():
    comparison = int8_gain.int8_vs_fp32(fp32_ms=29.0, int8_ms=16.5, cpu=FAKE_CPU)
    assert comparison["faster"] is True and comparison["speedup"] == 1.76
    assert int8_gain.int8_statement(comparison).endswith("inference 16.50 ms vs fp32 29.00 ms: 1.76x faster")


def test_int8_within_noise_is_not_called_faster():
    comparison = int8_gain.int8_vs_fp32(fp32_ms=10.2, int8_ms=10.0, cpu=FAKE_CPU)
    assert comparison["faster"] is False and comparison["speedup"] == 1.02
    line = int8_gain.int8_statement(comparison)
    assert "not clearly faster (1.02x" in line and "1.02x faster" not in line


def test_int8_comparison_defaults_to_this_cpu():
    assert int8_gain.int8_vs_fp32(2.0, 1.0)["cpu"] == cpu_info()
    with pytest.raises(ValueError):
        int8_gain.int8_vs_fp32(0.0, 1.0)


@pytest.fixture(scope="module")
def int8_bundle(build_bundle):
    return build_bundle(model="classifier", precision="int8")


@pytest.mark.slow
def test_int8_bundle_is_compared_with_fp32_of_its_weights(int8_bundle):
    record = bench.run_benchmark(int8_bundle, ["ort"], batch=1, warmup=0, iters=2, warn=lambda line: None)
    comparison = record["int8_vs_fp32"]
    assert "error" not in comparison, comparison
    assert set(comparison) >= {"fp32_inference_ms_p50", "int8_inference_ms_p50", "speedup", "faster", "cpu",
                               "statement"}
    assert comparison["cpu"] == record["cpu"] == cpu_info()
    assert comparison["int8_inference_ms_p50"] == record["results"]["ort"]["latency_ms"]["inference"]["p50"]
    assert comparison["faster"] == (comparison["speedup"] >= int8_gain.FASTER_MARGIN)
    assert comparison["statement"] == int8_gain.int8_statement(comparison)
    graph = record["results"]["ort"].get("graph")
    assert graph is None or int8_bundle.manifest.graph(graph) is not None
    assert comparison["int8_graph"] == graph
    json.dumps(record)  # JSON-able as written by --json

    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=80, color_system=None).print(bench.results_table(record))
    text = " ".join(buffer.getvalue().split())
    assert comparison["statement"] in text


@pytest.mark.slow
def test_fp32_graph_of_an_int8_bundle_is_float(int8_bundle):
    import onnx

    graph = bench.fp32_graph(int8_bundle, warn=lambda line: None)
    ops = {node.op_type for node in graph.graph.node}
    assert not ops & {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger"}
    assert [i.name for i in graph.graph.input] == [int8_bundle.input.name]
    assert [o.name for o in graph.graph.output] == int8_bundle.manifest.output_names
    onnx.checker.check_model(graph)


@pytest.fixture(scope="module")
def custom_size_bundle(build_bundle, tmp_path_factory):
    """A classifier bundle of weights for 2 classes at 96x96 (as 'train --data --input-size 96'
    writes them: class names and input size in the checkpoint's metadata)."""
    from cvexport.checkpoint import save_checkpoint
    from cvexport.registry import get_spec

    spec = get_spec("classifier").with_classes(["cat", "dog"], 96)
    weights = tmp_path_factory.mktemp("weights") / "two.safetensors"
    save_checkpoint(weights, spec.build().state_dict(),
                    {"model": "classifier", "class_names": ["cat", "dog"], "input_size": 96})
    return build_bundle(model="classifier", precision="fp32", weights=str(weights))


def test_fp32_graph_is_exported_for_the_bundles_own_weights(custom_size_bundle):
    """The INT8-vs-fp32 comparison times the bundle's network: the same input size and classes."""
    import onnx

    dims = lambda value: [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]  # noqa: E731
    graph = bench.fp32_graph(custom_size_bundle, warn=lambda line: None)
    built = onnx.load(str(custom_size_bundle.onnx_path))
    assert dims(graph.graph.input[0])[1:] == dims(built.graph.input[0])[1:] == [3, 96, 96]
    assert [dims(o) for o in graph.graph.output] == [dims(o) for o in built.graph.output]
    assert dims(graph.graph.output[0])[1:] == [2]


def test_int8_comparison_failure_is_recorded_not_fatal(int8_bundle, monkeypatch):
    def broken(bundle, warn=None):
        raise RuntimeError("weights unreadable")

    monkeypatch.setattr(bench, "fp32_graph", broken)
    warnings = []
    record = bench.run_benchmark(int8_bundle, ["ort"], warmup=0, iters=1, warn=warnings.append)
    assert record["int8_vs_fp32"] == {"error": "weights unreadable", "cpu": record["cpu"]}
    assert any("weights unreadable" in line for line in warnings)
    assert "ort" in record["results"]
    skipped = bench.run_benchmark(int8_bundle, ["ort"], warmup=0, iters=1, warn=warnings.append, compare_int8=False)
    assert "int8_vs_fp32" not in skipped


# ------------------------------------------------------------------------------ floors (benchmarks/)
_load = load_benchmark


@pytest.fixture(scope="module")
def floors():
    return _load("floors")


@pytest.fixture(scope="module")
def run_benchmarks(floors):
    return _load("run_benchmarks")


GFLOP = 1e9
MEASUREMENTS = [
    {"precision": "fp32", "impl": "onnxruntime MatMul", "size": 1024, "ops_per_s": 74.5 * GFLOP},
    {"precision": "fp32", "impl": "onnxruntime MatMul", "size": 512, "ops_per_s": 70.0 * GFLOP},
    {"precision": "fp32", "impl": "torch.matmul", "size": 1024, "ops_per_s": 124.0 * GFLOP},
    {"precision": "fp32", "impl": "numpy matmul", "size": 512, "ops_per_s": 110.0 * GFLOP},
    {"precision": "int8", "impl": "onnxruntime MatMulInteger u8s8", "size": 1024, "ops_per_s": 200.0 * GFLOP},
    {"precision": "int8", "impl": "torch._int_mm s8s8", "size": 512, "error": "RuntimeError: no CPU kernel"},
    {"precision": "int8", "impl": "torch quantized.linear u8s8", "size": 512, "ops_per_s": 260.0 * GFLOP},
]


def test_best_rate_is_the_best_over_implementations_and_sizes(floors):
    assert floors.best_rate(MEASUREMENTS, "fp32")["impl"] == "torch.matmul"
    assert floors.best_rate(MEASUREMENTS, "fp32")["ops_per_s"] == 124.0 * GFLOP
    best_int8 = floors.best_rate(MEASUREMENTS, "int8")
    assert (best_int8["impl"], best_int8["size"]) == ("torch quantized.linear u8s8", 512)  # errors are skipped
    assert floors.best_rate(MEASUREMENTS[5:6], "int8") is None
    assert floors.best_rate([], "fp32") is None
    summary = floors.rates_summary(MEASUREMENTS, "fp32")
    assert summary == "onnxruntime MatMul 74.5, torch.matmul 124.0, numpy matmul 110.0"


def test_merged_measurements_keep_the_faster_of_each(floors):
    later = [{"precision": "fp32", "impl": "onnxruntime MatMul", "size": 1024, "ops_per_s": 130.0 * GFLOP},
             {"precision": "fp32", "impl": "torch.matmul", "size": 1024, "ops_per_s": 100.0 * GFLOP},
             {"precision": "int8", "impl": "torch._int_mm s8s8", "size": 512, "ops_per_s": 300.0 * GFLOP}]
    merged = floors.merge_measurements(MEASUREMENTS, later)
    assert len(merged) == len(MEASUREMENTS)
    rates = {(m["impl"], m["size"]): m.get("ops_per_s") for m in merged}
    assert rates[("onnxruntime MatMul", 1024)] == 130.0 * GFLOP and rates[("torch.matmul", 1024)] == 124.0 * GFLOP
    assert rates[("torch._int_mm s8s8", 512)] == 300.0 * GFLOP
    assert floors.best_rate(merged, "fp32")["impl"] == "onnxruntime MatMul"


def test_floor_is_never_above_a_measured_network_time(floors):
    # The issue: 1.97 GFLOP at the 74.5 GFLOP/s of one ORT MatMul node is a 26.4 ms "floor", and
    # ORT ran the SSD in 18.7 ms (0.71x of it).
    flops = 1.97 * GFLOP
    floor = floors.bounded_floor(flops, 74.5 * GFLOP, {"torch eager fp32": 40.0, "ort fp32": 18.7, "ort fp16": None})
    assert floor["gemm_ms"] == pytest.approx(26.44, abs=0.01)
    assert floor["ms"] == 18.7 and floor["bounded_by"] == "ort fp32"
    assert floors.ratio_to_floor(18.7, floor["ms"]) == 1.0
    assert floors.ratio_to_floor(40.0, floor["ms"]) >= 1.0
    label = floors.floor_label(floor, "fp32")
    assert "bounded by the measured ort fp32 inference; the GEMM rate gave 26.44 ms" in label
    # A network slower than the GEMM floor leaves it alone.
    floor = floors.bounded_floor(flops, 124.0 * GFLOP, {"ort fp32": 18.7})
    assert floor["ms"] == pytest.approx(15.89, abs=0.01) and floor["bounded_by"] is None
    assert floors.floor_label(floor, "fp32") == "15.89 ms fp32"
    # No rate at all: the fastest measurement is the only floor there is; nothing measured: none.
    only = floors.bounded_floor(flops, None, {"ort int8": 3.0})
    assert only == {"ms": 3.0, "gemm_ms": None, "bounded_by": "ort int8"}
    assert floors.bounded_floor(flops, None, {})["ms"] is None


def test_floor_holds_for_any_rates_and_times(floors):
    rng = np.random.default_rng(0)
    for _ in range(200):
        flops = float(rng.uniform(0.1, 10)) * GFLOP
        rate = float(rng.uniform(10, 2000)) * GFLOP
        times = {f"row{i}": float(rng.uniform(0.01, 100)) for i in range(rng.integers(1, 5))}
        floor = floors.bounded_floor(flops, rate, times)
        assert floor["ms"] <= min(times.values()) and floor["ms"] <= floor["gemm_ms"]
        assert all(floors.ratio_to_floor(t, floor["ms"]) >= 1.0 for t in times.values())


def _row(inference_ms: float, end_to_end_ms: float | None = None, graph: str | None = None) -> dict:
    end = end_to_end_ms or inference_ms * 1.2
    row = {"latency_ms": {"end_to_end": {"p50": end}, "inference": {"p50": inference_ms}, "postprocess": {"p50": 0.05}}}
    return {**row, "graph": graph} if graph else row


def test_benchmark_rows_never_read_below_their_floor(run_benchmarks):
    rows = {"torch eager fp32": _row(11.0), "ort fp32": _row(4.68), "ort fp16": _row(4.70),
            "ort int8": _row(0.5, graph="onnx_cpu"), "trt fp16": _row(0.2)}
    model_floor = run_benchmarks.model_floors(int(1.97 * GFLOP), MEASUREMENTS, rows)
    assert model_floor["fp32"]["gemm"]["impl"] == "torch.matmul" and model_floor["fp32"]["bounded_by"] == "ort fp32"
    assert model_floor["fp32"]["ms"] == 4.68  # the TensorRT (GPU) time bounds no CPU floor
    assert model_floor["int8"]["bounded_by"] == "ort int8" and model_floor["int8"]["ms"] == 0.5
    table = run_benchmarks.model_table(rows, model_floor)
    for label, row in table.items():
        if label.startswith("trt"):
            assert row["inference_vs_floor"] is None
        else:
            assert row["inference_vs_floor"] >= 1.0, (label, row)
    assert table["ort fp32"]["inference_vs_floor"] == 1.0 and table["ort int8"]["graph"] == "onnx_cpu"
    json.dumps(model_floor)


def test_benchmark_says_whether_int8_beat_fp32(run_benchmarks):
    slower = run_benchmarks.int8_comparison({"ort fp32": _row(16.5), "ort int8": _row(17.0)}, FAKE_CPU)
    assert slower["faster"] is False and slower["statement"].endswith("not faster (0.97x)")
    faster = run_benchmarks.int8_comparison({"ort fp32": _row(29.0), "ort int8": _row(16.5, graph="onnx_cpu")},
                                            FAKE_CPU)
    assert faster["faster"] is True and faster["int8_graph"] == "onnx_cpu" and faster["cpu"] == FAKE_CPU
    missing = run_benchmarks.int8_comparison({"ort fp32": _row(16.5), "ort int8": {"error": "no INT8 yet"}}, FAKE_CPU)
    assert "error" in missing and "no INT8 yet" in missing["statement"]


def test_markdown_names_the_cpu_and_the_floors(run_benchmarks, floors):
    rows = {"torch eager fp32": _row(11.0), "ort fp32": _row(4.68), "ort int8": _row(5.0)}
    model_floor = run_benchmarks.model_floors(int(1.97 * GFLOP), MEASUREMENTS, rows)
    results = {
        "cpu": FAKE_CPU, "threads": 2, "iters": 10, "seconds": 120.0,
        "gemm": {"threads": 2, "sizes": [256, 512, 1024], "measurements": MEASUREMENTS,
                 "best": {p: floors.best_rate(MEASUREMENTS, p) for p in ("fp32", "int8")}},
        "models": {"ssd": {"input_size": [256, 256], "flops": int(1.97 * GFLOP), "floors": model_floor,
                           "rows": run_benchmarks.model_table(rows, model_floor),
                           "int8_vs_fp32": run_benchmarks.int8_comparison(rows, FAKE_CPU),
                           "ort_fp32_section_share": {"network": 1.0}, "trt": "not measured: no GPU"}},
    }
    text = run_benchmarks.markdown(results)
    assert f"Measured on CPU: {describe_cpu(FAKE_CPU)}" in text
    assert "torch.matmul 124.0" in text and "Best: fp32 124.0 GFLOP/s (torch.matmul, 1024x1024)" in text
    assert "bounded by the measured ort fp32 inference" in text
    assert "inference 5.00 ms vs fp32 4.68 ms: not faster (0.94x)" in text
    ratios = [float(line.split("|")[-2].strip().rstrip("x")) for line in text.splitlines()
              if line.startswith("| ") and line.split("|")[-2].strip().endswith("x") and "pipeline" not in line]
    assert ratios and min(ratios) >= 1.0


def test_titles_name_nms_only_for_detection():
    assert bench._bundle_label({"model": "ssd", "precision": "int8", "nms": "onnx"}) == "ssd int8 (NMS onnx)"
    assert bench._bundle_label({"model": "fcn", "precision": "fp16", "nms": None}) == "fcn fp16"
