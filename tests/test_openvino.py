"""The OpenVINO backend (cvexport/backends/openvino) and ``--backend auto`` (cvexport/backend_choice.py).

OpenVINO runs here on the CPU; its GPU and NPU devices are absent, which is one of the paths
tested (a one-line refusal). bf16 runs where the CPU has bf16 units (AMX, AVX-512 BF16); the
refusal on CPUs without them is tested everywhere by handing ``check_target`` a CPU that lacks them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_helpers import one_line_stderr
from cvexport.cli import main
from cvexport.errors import CvexportError

pytest.importorskip("openvino")  # a test extra: absent only where someone installed without it

MODELS = ("ssd", "classifier", "fcn", "style")


def _parity(bundle, backend: str, frames=None):
    """(parity statistics, judged precision) of ``backend`` against the torch reference on the
    task's parity pictures, judged as verify and auto judge it."""
    from cvexport.compare import compare_runners
    from cvexport.precisions import judged_precision
    from cvexport.registry import bundle_spec
    from cvexport.runtime import create_runner
    from cvexport.runtime.predictor import prepare_batch
    from cvexport.tasks import get_task

    task = get_task(bundle.task)
    frames = frames if frames is not None else task.parity_frames(bundle_spec(bundle))
    feeds = [prepare_batch(bundle, frames[i:i + 4]).feed for i in range(0, len(frames), 4)]
    with create_runner(bundle, "torch") as reference, create_runner(bundle, backend) as runner:
        judged = judged_precision(bundle.precision, runner.compute_precision)
        parity = compare_runners({"torch": reference, backend: runner}, "torch", feeds,
                                 lambda _: task.new_parity(judged, bundle.manifest))[backend]
    return parity, judged


def _has_bf16() -> bool:
    from cvexport.backends.openvino.loader import openvino_core

    return "BF16" in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.parametrize("model", MODELS)
def test_f32_keeps_every_models_fp32_answers(build_bundle, model):
    """OpenVINO at an explicit f32 gives the torch answers within fp32's tolerance (on CPUs with
    bf16 units its default would not: that is why the precision is always asked for)."""
    parity, judged = _parity(build_bundle(model=model, precision="fp32"), "openvino")
    assert judged == "fp32"
    assert parity.compared() and parity.passed(), parity.summary()


def test_the_int8_and_uint8_frame_bundles_run_with_their_own_contracts(build_bundle):
    """The INT8 bundle's QDQ graph (judged at int8's tolerance) and a bundle that takes uint8
    camera frames and letterboxes them in the graph (fp32) both run and keep their answers."""
    parity, judged = _parity(build_bundle(precision="int8"), "openvino")
    assert judged == "int8" and parity.passed(), parity.summary()
    parity, _ = _parity(build_bundle(model="ssd", input_format="uint8", frame_size=(640, 480)), "openvino")
    assert parity.passed(), parity.summary()


def test_bf16_is_judged_as_a_coarser_precision(build_bundle):
    """An fp32 bundle on openvino-bf16 is judged by fp16's tolerance, in verify as in auto."""
    from cvexport.verify import verify_bundle

    if not _has_bf16():
        pytest.skip("this CPU has no bf16 units (openvino-bf16 is refused here; see the refusal test)")
    report = verify_bundle(build_bundle(model="classifier", precision="fp32"), ["openvino-bf16"], val_images=16)
    (row,) = [r for r in report["rows"] if r["backend"] == "openvino-bf16"]
    assert row["judged_at"] == "fp16"
    assert any("openvino-bf16" in note and "fp16" in note for note in report["notes"])


# What a process does after OpenVINO: runners opened and closed in any order, one of them on
# another thread, then a signal. Run in a fresh process: the crash it guards against kills the
# process it happens in.
SIGNAL_AFTER_RUNNERS = """
import gc, os, signal, sys, threading
from cvexport.bundle import load_bundle
from cvexport.runtime import create_runner

bundle = load_bundle(sys.argv[1])
first, second = create_runner(bundle, "openvino"), create_runner(bundle, "openvino")
first.close(); del first; gc.collect()  # first in, first out
second.close(); del second; gc.collect()
holder = [create_runner(bundle, "openvino")]
worker = threading.Thread(target=lambda: (holder[0].close(), holder.clear(), gc.collect()))
worker.start(); worker.join()  # freed on another thread
caught = []
signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
os.kill(os.getpid(), signal.SIGINT)
print("caught", len(caught))
"""


def test_a_signal_after_openvino_runners_is_handled_not_a_crash(build_bundle):
    """Ctrl-C after OpenVINO runners were closed out of order, or on another thread, reaches
    the process's handler. Each OpenVINO Core swaps the thread's alternate signal stack for its
    own and unmaps it when freed; with a Core per runner that left the main thread's signal
    stack unmapped, and the signal was a silent segfault (exit 139) instead of a clean stop."""
    import subprocess
    import sys

    bundle = build_bundle(model="classifier", precision="fp32")
    result = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_RUNNERS, str(bundle.path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-1500:]}"
    assert result.stdout.strip().endswith("caught 1")


class FakeCore:
    """What check_target reads of OpenVINO's Core, for a CPU of chosen capabilities."""

    def __init__(self, capabilities, devices=("CPU",)):
        self.capabilities, self.available_devices = list(capabilities), list(devices)

    def get_property(self, device, name):
        return {"OPTIMIZATION_CAPABILITIES": self.capabilities, "FULL_DEVICE_NAME": "Test CPU"}[name]


def test_a_precision_or_device_not_here_is_refused_not_run_at_another():
    from cvexport.backends.openvino.loader import TARGETS, check_target

    check_target(FakeCore(["FP32", "BF16", "INT8"]), TARGETS["openvino-bf16"])  # bf16 units: runs
    with pytest.raises(CvexportError, match="no bf16 units.*--backend openvino"):
        check_target(FakeCore(["FP32", "INT8"]), TARGETS["openvino-bf16"])  # an AVX2-only CPU
    check_target(FakeCore(["FP32"]), TARGETS["openvino"])  # f32 needs nothing
    with pytest.raises(CvexportError, match="no GPU device here"):
        check_target(FakeCore(["FP32"]), TARGETS["openvino-gpu"])


def test_missing_devices_and_plugin_graphs_are_one_line_errors(build_bundle, tmp_path, capsys):
    from skimage import data
    from PIL import Image

    picture = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(picture)
    bundle = build_bundle(model="ssd")
    assert main(["run", str(bundle.path), str(picture), "--out", str(tmp_path / "a"), "--backend", "openvino-npu"]) != 0
    assert "no NPU device" in one_line_stderr(capsys)
    efficient = build_bundle(model="ssd", nms="efficient")
    assert main(["run", str(efficient.path), str(picture), "--out", str(tmp_path / "b"), "--backend", "openvino"]) != 0
    assert "EfficientNMS" in one_line_stderr(capsys) and not (tmp_path / "b").exists()


def test_run_on_openvino_answers_as_ort_does(build_bundle, tmp_path):
    """The same picture through ``cvexport run`` on both backends: the same classes, scores
    within fp32 rounding."""
    from skimage import data
    from PIL import Image

    picture = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(picture)
    bundle = build_bundle(model="classifier", precision="fp32")
    answers = {}
    for backend in ("ort", "openvino"):
        assert main(["run", str(bundle.path), str(picture), "--out", str(tmp_path / backend), "--backend", backend]) == 0
        payload = json.loads((tmp_path / backend / "predictions.json").read_text())
        answers[backend] = payload["images"][0]["classification"]
        assert payload["backend"] == backend
    assert answers["ort"]["class_name"] == answers["openvino"]["class_name"]
    assert abs(answers["ort"]["score"] - answers["openvino"]["score"]) < 1e-4


# ----------------------------------------------------------------------------------- auto
def _candidate(backend, p50, passed=True):
    from cvexport.backend_choice import Candidate

    return Candidate(backend, opened=True, parity_passed=passed, p50_ms=p50)


@pytest.mark.parametrize("table,chosen", [
    ({"ort": 10.0, "openvino": 9.5}, "ort"),  # 5 % faster is noise: nothing changes
    ({"ort": 10.0, "openvino": 8.9}, "openvino"),
    ({"ort": 10.0, "openvino": 9.5, "openvino-bf16": 4.0}, "openvino-bf16"),
])
def test_auto_keeps_ort_unless_another_is_clearly_faster(table, chosen):
    from cvexport.backend_choice import _pick

    assert _pick({name: _candidate(name, p50) for name, p50 in table.items()}) == chosen


def test_auto_never_picks_a_backend_that_changed_the_answers():
    from cvexport.backend_choice import Candidate, _pick

    table = {"ort": _candidate("ort", 10.0), "openvino-bf16": _candidate("openvino-bf16", None, passed=False)}
    assert _pick(table) == "ort"
    table = {"ort": Candidate("ort", opened=False, why_not="broken"),
             "openvino-bf16": _candidate("openvino-bf16", None, passed=False)}
    with pytest.raises(CvexportError, match="no CPU backend kept"):
        _pick(table)


def test_auto_measures_once_per_bundle_and_cpu_and_remembers(build_bundle, tmp_path, monkeypatch):
    import cvexport.backend_choice as choice_module

    monkeypatch.delenv("CVEXPORT_BACKEND")
    monkeypatch.setenv("CVEXPORT_CACHE_DIR", str(tmp_path / "cache"))
    bundle = build_bundle(model="classifier", precision="fp32")
    logged = []
    chosen = choice_module.resolve_backend(bundle, "auto", logged.append)
    choice = choice_module.cached_choice(bundle)
    assert choice is not None and choice.backend == chosen
    rows = {c.backend: c for c in choice.candidates}
    assert rows["ort"].parity_passed and rows["ort"].p50_ms > 0 and rows["openvino"].parity_passed
    assert rows[chosen].parity_passed
    if "openvino-bf16" in rows and rows["openvino-bf16"].opened:
        assert rows["openvino-bf16"].judged_at == "fp16"
    assert any("measuring" in line for line in logged)

    def no_second_measurement(*_):
        raise AssertionError("measured again")

    monkeypatch.setattr(choice_module, "measure_backends", no_second_measurement)
    assert choice_module.resolve_backend(bundle, "auto", logged.append) == chosen
    assert "remembered" in logged[-1]
    monkeypatch.setenv("CVEXPORT_BACKEND", "openvino")  # a pin stands for auto without measuring
    assert choice_module.resolve_backend(bundle, "auto", logged.append) == "openvino"


def test_a_rebuilt_bundle_is_measured_afresh(build_bundle, tmp_path):
    """The key covers the manifest, which holds every file's digest: another bundle (here an
    INT8 one of the same model) never reads this one's choice."""
    from cvexport.backend_choice import choice_key

    assert choice_key(build_bundle(model="classifier", precision="fp32")) != \
        choice_key(build_bundle(model="classifier", precision="int8"))


def test_bench_shows_what_auto_chose_from(build_bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CVEXPORT_BACKEND")
    monkeypatch.setenv("CVEXPORT_CACHE_DIR", str(tmp_path / "cache"))
    bundle = build_bundle(model="classifier", precision="fp32")
    record_path = tmp_path / "bench.json"
    assert main(["bench", str(bundle.path), "--backend", "ort,openvino,auto", "--iters", "3", "--warmup", "1",
                 "--json", str(record_path)]) == 0
    printed = capsys.readouterr().out
    record = json.loads(record_path.read_text())
    assert f"auto chose {record['auto']['backend']}" in printed
    assert set(record["results"]) == {"ort", "openvino", "auto"}
    assert record["results"]["auto"]["backend"] == record["auto"]["backend"]
    assert np.isfinite(record["results"]["openvino"]["latency_ms"]["end_to_end"]["p50"])


def test_run_defaults_to_auto_and_records_what_it_chose_from(build_bundle, tmp_path, monkeypatch, capsys):
    from skimage import data
    from PIL import Image

    monkeypatch.delenv("CVEXPORT_BACKEND")
    monkeypatch.setenv("CVEXPORT_CACHE_DIR", str(tmp_path / "cache"))
    picture = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(picture)
    bundle = build_bundle(model="classifier", precision="fp32")
    assert main(["run", str(bundle.path), str(picture), "--out", str(tmp_path / "out")]) == 0
    payload = json.loads((tmp_path / "out" / "predictions.json").read_text())
    choice = payload["backend_choice"]
    assert payload["backend"] == choice["backend"] != "auto"
    assert {c["backend"] for c in choice["candidates"]} >= {"ort", "openvino"}
    assert f"auto: {choice['backend']}" in capsys.readouterr().err


def test_stream_on_openvino_gives_the_predictors_answers(build_bundle, tmp_path):
    """``stream --backend openvino`` on a video: per frame the detections the Predictor on the
    same backend gives (batches may group frames differently: equal within fp32 rounding)."""
    from stream_helpers import decode_video, read_jsonl, stream

    from cvexport.runtime.predictor import Predictor
    from cvexport.stream.synthetic import write_video

    video = tmp_path / "clip.mp4"
    write_video(video, 320, 240, 6, seed=3)
    bundle = build_bundle(model="ssd", precision="fp32")
    assert stream(bundle.path, video, "--out", tmp_path / "out", "--no-video", "--backend", "openvino") == 0
    lines = read_jsonl(tmp_path / "out" / "clip.jsonl")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["backend"] == "openvino" and summary["backend_choice"] is None
    with Predictor(bundle, backend="openvino") as predictor:
        expected = [predictor.task.record(p) for p in predictor.predict(decode_video(video)[0])]
    assert len(lines) == len(expected) == 6
    for line, want in zip(lines, expected):
        got = sorted(line["detections"], key=lambda d: -d["score"])
        want = sorted(want["detections"], key=lambda d: -d["score"])
        assert [d["class_id"] for d in got] == [d["class_id"] for d in want]
        for a, b in zip(got, want):
            assert abs(a["score"] - b["score"]) < 1e-4 and np.allclose(a["box"], b["box"], atol=1e-2)


@pytest.mark.parametrize("isa,graph", [("vnni", "onnx"), ("avx2", "onnx_cpu_avx2")])
def test_int8_runs_the_graph_made_for_the_cpu_class(build_bundle, monkeypatch, isa, graph):
    """Without VNNI, OpenVINO's int8 kernels saturate like ONNX Runtime's: there it runs the
    bundle's 7-bit-weight graph (each path forced here; tests/test_cpu_emulated.py runs the AVX2
    one on emulated AVX2 kernels). Both keep the answers at int8's tolerance."""
    from cvexport.runtime import create_runner

    monkeypatch.setenv("CVEXPORT_CPU_ISA", isa)
    bundle = build_bundle(precision="int8")
    with create_runner(bundle, "openvino") as runner:
        assert runner.graph == graph
    parity, _ = _parity(bundle, "openvino")
    assert parity.passed(), parity.summary()
    fp32 = build_bundle(model="ssd", precision="fp32")
    with create_runner(fp32, "openvino") as runner:  # float bundles have one graph on every CPU
        assert runner.graph == "onnx"
