"""``cvexport predict`` stopped early: SIGTERM and SIGINT stop cleanly (every complete input
committed, exit 143 / 130), a SIGKILL loses seconds of work rather than the run, and a rerun
resumes with every input stored exactly once.

The kill tests run real ``cvexport predict`` processes (``python -m cvexport.cli``). Their
inference is slowed by a fixed sleep, put in by a ``sitecustomize`` module on PYTHONPATH (so it
reaches Ray's worker processes too): each run then outlasts the commits the test waits for on
any machine, while the signals, the commits and the files are the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pq = pytest.importorskip("pyarrow.parquet", reason="cvexport predict writes Parquet (pip install pyarrow)")

from cvexport.predict import PARTS_DIR, RUN_FILE, PredictOptions, batch_predict, read_results  # noqa: E402
from cvexport.predict import batching, store  # noqa: E402 - the modules whose names the tests patch
from cvexport.runtime.predictor import Predictor  # noqa: E402

IMAGES = 100
# Per inference call (--batch 1: per image). 100 images take at least 12 s, longer than the
# two timed commits (3 s apart) the kill test waits for, after a start of 1-3 s; few enough
# that the rerun (at full speed) is short.
SLOW_INFER_S = 0.12
WAIT_S = 60  # for a part to appear or a stopped process to exit; a hang fails, it does not stall
RAY_START_S = 120  # a local Ray's start on a loaded 2-core machine takes 10-30 s
# Imported by every Python process started with it on PYTHONPATH: once cvexport's predictor
# module loads, Predictor.infer sleeps first.
SITECUSTOMIZE = f"""
import importlib.abc, importlib.machinery, sys, time

class _SlowInfer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "cvexport.runtime.predictor":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            infer = module.Predictor.infer

            def slow_infer(self, feed):
                time.sleep({SLOW_INFER_S})
                return infer(self, feed)

            module.Predictor.infer = slow_infer

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _SlowInfer())
"""


@pytest.fixture(scope="module")
def slow_env(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("slow")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def ssd(build_bundle):
    return build_bundle(model="ssd")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(3)
    for index in range(IMAGES):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / f"{index:04d}.png")
    return folder


def _predict_command(bundle, images: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cvexport.cli", "predict", str(bundle.path), str(images), "--out", str(out),
            "--batch", "1", "--threads", "1", *extra]


def _start_slow(bundle, images: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_predict_command(bundle, images, out, *extra), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _parts(out: Path) -> list[Path]:
    return sorted((out / PARTS_DIR).glob("part-*.parquet"))


def _wait_for_parts(out: Path, process: subprocess.Popen, count: int, wait_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + wait_s
    while len(_parts(out)) < count:
        if process.poll() is not None:
            pytest.fail(f"predict ended (exit {process.returncode}) before committing {count} part(s) on its own: "
                        f"{process.communicate()[1][-1500:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {count} part(s) in {out / PARTS_DIR} after {wait_s} s of a run that takes longer: "
                        "parts are not committed on time")
        time.sleep(0.1)


def _stored_inputs(out: Path) -> list[str]:
    return read_results(out).column("input").to_pylist()


def _resume_and_check_all_once(ssd, images: Path, out: Path, done_before: int) -> None:
    result = subprocess.run(_predict_command(ssd, images, out), capture_output=True, text=True, timeout=WAIT_S * 2)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{IMAGES} inputs: {done_before} already done" in result.stdout, result.stdout
    assert f"{IMAGES - done_before} to predict" in result.stdout
    stored = _stored_inputs(out)
    assert sorted(stored) == sorted(str(path) for path in images.iterdir())  # every input, exactly once


def test_sigterm_stops_cleanly_commits_and_the_rerun_resumes(ssd, images, slow_env, tmp_path):
    out = tmp_path / "out"
    process = _start_slow(ssd, images, out, slow_env)
    _wait_for_parts(out, process, 1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM" in stdout and "the same command resumes" in stdout
    assert "Traceback" not in stderr
    stored = _stored_inputs(out)
    assert 0 < len(stored) < IMAGES and len(set(stored)) == len(stored)
    assert json.loads((out / RUN_FILE).read_text())["last_run_stopped_by"] == "SIGTERM"  # the final commit ran
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # a clean stop leaves no temp files
    _resume_and_check_all_once(ssd, images, out, len(stored))


def test_sigkill_loses_seconds_not_the_run(ssd, images, slow_env, tmp_path):
    out = tmp_path / "out"
    process = _start_slow(ssd, images, out, slow_env)
    _wait_for_parts(out, process, 2)  # committed on time, and again
    process.kill()
    process.communicate(timeout=WAIT_S)
    assert process.returncode == -signal.SIGKILL
    for part in _parts(out):
        assert pq.read_table(part).num_rows > 0  # each part whole and readable
    stored = pq.read_table(out / PARTS_DIR).column("input").to_pylist()  # the folder as one table, too
    assert 0 < len(stored) < IMAGES and len(set(stored)) == len(stored)
    _resume_and_check_all_once(ssd, images, out, len(stored))
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # what the kill left mid-write is gone


@pytest.mark.slow
def test_ray_driver_commits_on_time_and_stops_cleanly_on_sigterm(ssd, images, slow_env, tmp_path):
    """On Ray the driver commits as blocks come back, on time too, and SIGTERM (which ray.init
    would make a plain exit) stops it as in-process: 143, all complete inputs kept."""
    pytest.importorskip("ray.data", reason="needs Ray Data (pip install 'cvexport[ray]')")
    out = tmp_path / "out"
    # One actor: a big machine's pool would finish the slowed images before two commits.
    process = _start_slow(ssd, images, out, slow_env, "--ray", "--actors", "1")
    _wait_for_parts(out, process, 2, wait_s=RAY_START_S + WAIT_S)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=WAIT_S)
    assert process.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM" in stdout and "Traceback" not in stderr
    stored = _stored_inputs(out)
    assert 0 < len(stored) < IMAGES and len(set(stored)) == len(stored)
    assert json.loads((out / RUN_FILE).read_text())["last_run_stopped_by"] == "SIGTERM"
    _resume_and_check_all_once(ssd, images, out, len(stored))  # resumed in-process: the same store


# ------------------------------------------------------------------ in-process
def _options(bundle, inputs, out: Path, **kwargs) -> PredictOptions:
    return PredictOptions(bundle=str(bundle.path), inputs=tuple(str(i) for i in inputs), out=str(out), **kwargs)


class _Unhandled(Exception):
    """Raised by the test's own SIGINT handler: predict did not handle the signal itself."""


@pytest.fixture
def sigint_guard():
    """A SIGINT handler for the test, so a signal predict fails to handle fails the test rather
    than interrupting the whole session."""
    def unhandled(signum, frame):
        raise _Unhandled("SIGINT reached the test: predict installed no handler")

    previous = signal.signal(signal.SIGINT, unhandled)
    yield
    signal.signal(signal.SIGINT, previous)


def _signal_on_call(monkeypatch, call: int, signals: int) -> None:
    """Predictor.infer sends SIGINT to this process ``signals`` times during its ``call``-th call."""
    real_infer = Predictor.infer
    calls = []

    def infer(self, feed):
        calls.append(1)
        if len(calls) == call:
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs between the two
        return real_infer(self, feed)

    monkeypatch.setattr(Predictor, "infer", infer)


@pytest.mark.parametrize("signals,kept", [(1, 4), (2, 2)], ids=["first-drains", "second-stops-at-once"])
def test_sigint_in_process_commits_whole_inputs(ssd, images, tmp_path, monkeypatch, sigint_guard, signals, kept):
    """SIGINT during the second batch of two images: the first signal lets that batch finish
    (4 inputs kept), a second one stops at once (the 2 of the first batch kept)."""
    _signal_on_call(monkeypatch, call=2, signals=signals)
    out = tmp_path / "out"
    inputs = sorted(images.iterdir())[:8]
    summary = batch_predict(_options(ssd, inputs, out, batch=2), log=lambda line: None)
    assert summary["stopped_by"] == "SIGINT"
    assert sorted(_stored_inputs(out)) == [str(path) for path in inputs[:kept]]
    assert signal.getsignal(signal.SIGINT).__name__ == "unhandled"  # the caller's handler is back


def test_inputs_are_committed_on_time_while_a_long_input_is_read(ssd, images, tmp_path, monkeypatch):
    """Two images, then an input whose frames come slowly (a long video): the images are
    committed while it is read, not when it ends."""
    monkeypatch.setattr(store, "COMMIT_SECONDS", 0.2)
    real_read = batching.read_frames
    out = tmp_path / "out"
    first, second, long = sorted(images.iterdir())[:3]
    seen: dict[str, list[str]] = {}

    def read(item, stride=1, **kwargs):
        if item.path != str(long):
            yield from real_read(item, stride, **kwargs)
            return
        frame = np.zeros((24, 32, 3), np.uint8)
        for index in range(8):
            time.sleep(0.15)
            yield index, None, frame
        seen["stored while reading"] = sorted(_stored_inputs(out))

    monkeypatch.setattr(batching, "read_frames", read)
    batch_predict(_options(ssd, [first, second, long], out, batch=1), log=lambda line: None)
    assert seen["stored while reading"] == [str(first), str(second)]
    assert sorted(set(_stored_inputs(out))) == sorted(str(p) for p in (first, second, long))


def test_a_second_run_into_the_same_out_is_refused_while_one_runs(ssd, images, slow_env, tmp_path):
    out = tmp_path / "out"
    process = _start_slow(ssd, images, out, slow_env)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (out / RUN_FILE).is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # run.json is written once the folder is locked
        assert process.poll() is None, process.communicate()[1][-1500:]
        second = subprocess.run(_predict_command(ssd, images, out), capture_output=True, text=True, timeout=WAIT_S)
        assert second.returncode == 2
        assert second.stderr.strip().startswith("cvexport: error: ") and "in use by another" in second.stderr
        assert "\n" not in second.stderr.strip()
    finally:
        process.kill()
        process.communicate(timeout=WAIT_S)
