"""TrtRunner on CPU: the fake ``tensorrt`` (tests/fakes/tensorrt_fake.py) and a fake slice of torch's CUDA API.

The fake execution context computes ``y = relu(input)``; a CUDA graph captured from it replays
against the state the context's last enqueue left, as a real one reads buffers the context
owns. That makes replaying a shape's graph after the context ran another shape visible as
wrong (NaN) outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from fakes.tensorrt_fake import FakeTorch, make_bundle

from cvexport.errors import CvexportError
from cvexport.backends.trt import runner as trt_runner
from cvexport.backends.trt import environment as trt_environment
from cvexport.backends.trt.settings import EngineOptions


@pytest.fixture
def runner_for(tmp_path, fake_trt, monkeypatch):
    """``runner_for(version, cuda_graph=..., **bundle/options)`` -> (TrtRunner, fake tensorrt)."""

    def make(version="10.8.0", *, cuda_graph=False, lines=None, fake_kwargs=None, options=None, **bundle_kwargs):
        fake = fake_trt(version, **(fake_kwargs or {}))
        monkeypatch.setattr(trt_runner, "_import_torch", lambda: FakeTorch(fake._device))
        bundle = make_bundle(tmp_path / f"b{len(list(tmp_path.iterdir()))}", "fp32", **bundle_kwargs)
        log = (lines if lines is not None else []).append
        runner = trt_runner.TrtRunner(bundle, options(bundle) if options else None, cuda_graph=cuda_graph, log=log)
        return runner, fake

    return make


def _batch(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def _run(runner, array):
    return runner._infer(array)["y"]


def test_runner_builds_loads_and_runs(runner_for):
    lines = []
    runner, fake = runner_for(lines=lines)
    x = _batch(2, 0)
    np.testing.assert_array_equal(_run(runner, x), np.maximum(x, 0))
    assert runner.engine_metadata.trt_version == "10.8.0"
    assert any(line.startswith("building TensorRT engine") for line in lines)
    assert fake._names("execute") == [(2, 3, 8, 8)]
    with pytest.raises(CvexportError, match="rejected input shape"):
        _run(runner, _batch(5, 1))  # beyond the profile's max batch 4
    runner.close()
    with pytest.raises(CvexportError, match="closed"):
        _run(runner, x)


SHAPE_SEQUENCE = [2, 2, 2, 4, 4, 2, 2, 4, 2, 2, 2]


@pytest.mark.parametrize("version", ["10.8.0", "11.1.0"])
def test_cuda_graph_is_never_replayed_after_another_shape_ran(runner_for, version):
    lines = []
    runner, fake = runner_for(version, cuda_graph=True, lines=lines)
    for step, batch in enumerate(SHAPE_SEQUENCE):
        x = _batch(batch, step)
        np.testing.assert_array_equal(_run(runner, x), np.maximum(x, 0), err_msg=f"call {step} (batch {batch})")
    assert fake._names("stale_replay") == []
    # plain, capture+replay, replay | 4: plain, capture+replay | 2: plain, capture+replay | 4: plain |
    # 2: plain, capture+replay, replay
    assert fake._device.replays == 6
    captures = fake._names("capture")
    assert captures.count((2, 3, 8, 8)) == 3 and captures.count((4, 3, 8, 8)) == 1
    # one log line per shape, not one per recapture
    assert [line for line in lines if line.startswith("captured")] == [
        "captured a CUDA graph for input shape [2, 3, 8, 8]", "captured a CUDA graph for input shape [4, 3, 8, 8]"]
    assert not any("capture failed" in line for line in lines)


def test_each_shape_runs_plainly_once_before_capture(runner_for):
    runner, fake = runner_for(cuda_graph=True)
    for step, batch in enumerate([1, 3, 1, 3]):  # alternating shapes: never two in a row, never a graph
        _run(runner, _batch(batch, step))
    assert fake._names("capture") == [] and fake._device.replays == 0
    assert len(fake._names("execute")) == 4


def test_capture_failure_falls_back_to_plain_runs(runner_for, monkeypatch):
    lines = []
    runner, fake = runner_for(cuda_graph=True, lines=lines)
    _run(runner, _batch(2, 0))
    state = runner._thread_state()
    monkeypatch.setattr(state.context, "_plain_run_needed", True)  # TensorRT refuses the capture
    for step in range(3):
        x = _batch(2, step)
        np.testing.assert_array_equal(_run(runner, x), np.maximum(x, 0))
    assert sum("CUDA graph capture failed" in line for line in lines) == 1
    assert fake._device.replays == 0


def test_runner_and_builder_share_the_process_logger(runner_for):
    runner, fake = runner_for()
    logger = trt_environment.trt_logger(fake)
    runtimes = fake._names("Runtime")
    assert runtimes == [logger] and fake._names("Builder") == [logger]
    assert fake._plugin_logger is logger
    assert fake._names("init_libnvinfer_plugins") == [""]  # the builder did it; the runner reuses it


def test_runner_allows_host_code_for_version_compatible_plans(runner_for):
    libraries = ["/opt/tensorrt/lib/libnvinfer_vc_plugin.so"]
    runner, fake = runner_for("10.8.0", fake_kwargs={"vc_plugin_libraries": libraries}, with_plugin=True,
                              options=lambda bundle: EngineOptions.from_bundle(bundle, version_compatible=True))
    assert ("runtime.engine_host_code_allowed", True) in fake._calls
    x = _batch(1, 0)
    np.testing.assert_array_equal(_run(runner, x), np.maximum(x, 0))
