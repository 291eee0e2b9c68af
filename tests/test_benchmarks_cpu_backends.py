"""benchmarks/cpu_backends.py's own logic on tiny inputs: the idle / hog interleaving (on a fake
clock and a fake hog), the within-run speed-ups against ORT fp32 and the table's rows. Nothing is
built or timed."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def cpu_backends():
    return load_benchmark("cpu_backends")


class FakeHog:
    """Records when it was resumed; ``busy`` is what the measurement toggles."""

    def __init__(self):
        self.on = False
        self.switches = []

    def busy(self, on: bool) -> None:
        self.on = on
        self.switches.append(on)

    def cpu_seconds(self) -> float:
        return 0.0


def test_idle_and_hog_alternate_and_each_call_is_timed_in_both(cpu_backends, monkeypatch):
    hog = FakeHog()
    now = [0.0]

    def clock() -> float:
        return now[0]

    def call(cost_idle_ms: float, cost_hog_ms: float):
        def run():  # the fake clock advances by the call's cost under the hog's current state
            now[0] += (cost_hog_ms if hog.on else cost_idle_ms) / 1e3
        return run

    # The other-load counter reads /proc; here it only has to be entered and left.
    class NoLoad:
        def __init__(self, hog):
            pass

        @contextmanager
        def counting(self):
            yield

        def cores(self):
            return None

    monkeypatch.setattr(cpu_backends, "OtherLoad", NoLoad)
    counts = {"a": 0, "b": 0}

    def counted(name, run):
        def wrapped():
            counts[name] += 1
            run()
        return wrapped

    calls = {"a": counted("a", call(10, 15)), "b": counted("b", call(4, 12))}
    result = cpu_backends.idle_and_hog_p50(calls, hog, rounds=4, warmup=1, clock=clock, per_turn=2)
    assert result["p50_ms"]["idle"] == {"a": pytest.approx(10), "b": pytest.approx(4)}
    assert result["p50_ms"]["hog"] == {"a": pytest.approx(15), "b": pytest.approx(12)}
    # Each call: 1 warm-up, then per round and condition one untimed call and 2 timed ones.
    assert counts == {"a": 1 + 4 * 2 * 3, "b": 1 + 4 * 2 * 3}
    # Idle first on even rounds, hog first on odd ones; the hog is left stopped.
    assert hog.switches == [False, True, True, False, False, True, True, False, False]


def _record(auto: str = "openvino-bf16") -> dict:
    def row(idle, hog, parity="36/36 matched", passed=True, judged="fp32", threads=2):
        return {"opened": True, "parity": parity, "parity_passed": passed, "judged_at": judged, "idle": idle,
                "hog": hog, "hog_over_idle": round(hog / idle, 2), "threads": threads}

    fp32 = {"backends": {"ort": row(10.0, 20.0, threads=0), "openvino": row(12.0, 14.0),
                         "openvino-bf16": row(5.0, 6.0, judged="fp16"),
                         "torch": {"opened": True, "parity": "the reference", "parity_passed": None, "idle": 40.0,
                                   "hog": 200.0, "hog_over_idle": 5.0, "threads": 2}},
            "auto": auto, "load_average_before": [1.0, 1.0, 1.0], "load_average_after": [1.2, 1.0, 1.0],
            "other_load_cores": {"idle": 0.1, "hog": 0.2}}
    int8 = {"backends": {"ort": row(8.0, 9.0, passed=False, parity="30/36 matched", threads=0),
                         "openvino-bf16": {"opened": False, "why_not": "no bf16 units"}},
            "auto": "ort", "other_load_cores": {}}
    return {"cpu": {"model_name": "Test CPU", "simd_flags": ["avx512f"], "cores": 2}, "commit": "abc",
            "created": "now", "settings": {"hog": "pinned", "rounds": 4},
            "results": {"ssd": {"fp32": fp32, "int8": int8, "fp16": {"error": "build refused: parity"}}}}


def test_speedups_are_ort_fp32_idle_over_each_rows_p50(cpu_backends):
    found = cpu_backends.speedups(_record())
    assert found["ssd/fp32/ort"] == {"idle": 1.0, "hog": 0.5}
    assert found["ssd/fp32/openvino-bf16"] == {"idle": 2.0, "hog": pytest.approx(1.67)}
    assert found["ssd/int8/ort"] == {"idle": 1.25, "hog": pytest.approx(1.11)}
    assert "ssd/int8/openvino-bf16" not in found  # did not open: no time, no ratio


def test_table_marks_the_auto_pick_the_missed_goal_and_what_did_not_run(cpu_backends):
    text = cpu_backends.markdown(_record())
    lines = {line.split(" | ")[2]: line for line in text.splitlines() if line.startswith("| ssd | fp32 |")}
    assert "**(auto)**" in lines["openvino-bf16 **(auto)**"]
    assert "| 5.00 | 6.00 | 1.20 | 2.00 |" in lines["openvino-bf16 **(auto)**"]
    assert "| 10.00 | 20.00 | **2.00** | 1.00 |" in lines["ort"]  # over the 1.5 goal: bold
    assert "PASS 36/36 matched (at fp32 tolerance)" in lines["ort"]
    assert "| torch | the reference | 40.00 | 200.00 | **5.00** | 0.25 |" in text
    assert "FAIL 30/36 matched" in text
    assert "does not open: no bf16 units" in text
    assert "| ssd | fp16 | — | build failed: build refused: parity |" in text
    assert "Test CPU, 2 cores, avx512f" in text
    assert "| 0 (default) |" in lines["ort"] and "| 2 |" in lines["openvino"]
    assert "other processes took 0.1 cores idle, 0.2 cores under the hog; auto: openvino-bf16" in text
