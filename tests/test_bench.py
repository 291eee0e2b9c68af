"""``cvexport bench`` (cvexport/bench.py): the record's fields and internal consistency, the
table, the plot and the one-line errors. Tiny iteration counts; nothing here asserts speed."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

import cvexport.bench as bench
from cvexport.cli import main
from cvexport.errors import CvexportError
from cli_helpers import one_line_stderr

STAT_KEYS = ("min", "mean", "p50", "p90", "p95", "p99", "max")
ITERS = 3


@pytest.fixture(scope="module")
def bundle(build_bundle):
    return build_bundle(precision="fp32")


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
    assert "…" not in text  # nothing truncated
    assert max(len(line) for line in text.splitlines()) <= 80


def test_device_timings_are_recorded_when_the_runner_has_them(bundle, monkeypatch):
    """TensorRT's runner exposes last_timings (CUDA events); a stand-in exercises that path without a GPU."""
    real = bench.create_runner

    class WithTimings:
        def __init__(self, runner):
            self.runner = runner
            self.last_timings = {}

        def infer(self, feed):
            self.last_timings = {"h2d_ms": 0.1, "compute_ms": 1.0, "d2h_ms": 0.05, "total_ms": 1.15}
            return self.runner.infer(feed)

        def close(self):
            self.runner.close()

    monkeypatch.setattr(bench, "create_runner", lambda b, backend, threads=None: WithTimings(real(b, backend, threads)))
    record = bench.run_benchmark(bundle, ["ort"], batch=1, warmup=1, iters=2, warn=lambda line: None)
    stages = record["results"]["ort"]["latency_ms"]
    assert stages["h2d"]["mean"] == pytest.approx(0.1) and stages["compute"]["max"] == pytest.approx(1.0)
    assert stages["d2h"]["p50"] == pytest.approx(0.05)


def _unavailable(backend_name: str, message: str):
    real = bench.create_runner

    def create(b, backend, threads=None):
        if backend == backend_name:
            raise CvexportError(message)
        return real(b, backend, threads)

    return create


def test_unusable_backend_alone_is_a_one_line_error(bundle, monkeypatch, capsys):
    monkeypatch.setattr(bench, "create_runner", _unavailable("trt", "TensorRT is not installed; pip install tensorrt"))
    assert main(["bench", str(bundle.path), "--backend", "trt", "--iters", "1", "--warmup", "0"]) == 2
    assert "TensorRT is not installed; pip install tensorrt" in one_line_stderr(capsys)


def test_unusable_backend_among_several_is_skipped(bundle, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "create_runner", _unavailable("ort-cuda", "install onnxruntime-gpu"))
    out = tmp_path / "b.json"
    code = main(["bench", str(bundle.path), "--backend", "ort-cuda", "--backend", "ort", "--iters", "1",
                 "--warmup", "0", "--json", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert list(record["results"]) == ["ort"] and "onnxruntime-gpu" in record["skipped"]["ort-cuda"]
    err = capsys.readouterr().err
    assert "warning: skipping backend ort-cuda: install onnxruntime-gpu" in err and "error" not in err


def test_cpu_fallback_of_a_gpu_provider_counts_as_unusable(bundle, monkeypatch):
    """ONNX Runtime quietly runs on the CPU when CUDA cannot start; bench must not label that 'ort-cuda'."""
    real = bench.create_runner
    monkeypatch.setattr(bench, "create_runner", lambda b, backend, threads=None: real(b, "ort", threads))
    with pytest.raises(CvexportError, match="could not start CUDAExecutionProvider"):
        bench.run_benchmark(bundle, ["ort-cuda"], iters=1, warmup=0)


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


def test_cpu_model_is_named():
    assert bench.cpu_model().strip()
