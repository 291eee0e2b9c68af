"""TensorRT on a real GPU: engine build, TrtRunner parity with ONNX Runtime (CPU) and PyTorch.

Skipped cleanly where TensorRT or a CUDA GPU is missing: ``tensorrt`` is imported only inside
the fixtures (``pytest.importorskip``), never at collection time.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cvexport.build import PARITY_BATCHES
from cvexport.compare import TOLERANCES
from cvexport.detection import compare
from cvexport.preprocess import to_network_input
from cvexport.registry import list_models

pytestmark = [pytest.mark.trt, pytest.mark.gpu]


@pytest.fixture(scope="module")
def gpu():
    pytest.importorskip("tensorrt")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; none is present")
    return torch.cuda.get_device_name(0)


def _frames(bundle):
    from cvexport.registry import get_spec
    from cvexport.tasks import get_task

    return get_task(bundle.task).parity_frames(get_spec(bundle.manifest["model"]))


def _feeds(bundle, frames, batch):
    for start in range(0, len(frames) - batch + 1, batch):
        yield {bundle.input["name"]: to_network_input(frames[start:start + batch], bundle.input)}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("nms", ["onnx", "efficient"])
@pytest.mark.parametrize("model", list_models())
def test_trt_matches_ort_and_torch(gpu, build_bundle, tmp_path, model, nms, precision):
    from cvexport.runtime import create_runner
    from cvexport.runtime.trt_runner import TrtRunner

    bundle = build_bundle(model=model, precision=precision, nms=nms)
    lines: list[str] = []
    trt_runner = TrtRunner(bundle, cache_dir=tmp_path / "engines", log=lines.append)
    assert trt_runner.engine_path.is_file() and trt_runner.engine_metadata.precision == precision
    torch_runner = create_runner(bundle, "torch")
    ort_runner = create_runner(bundle, "ort")
    frames = _frames(bundle)
    tolerance = TOLERANCES[precision]
    with trt_runner:
        for batch in PARITY_BATCHES:
            if batch > bundle.max_batch:
                continue
            vs_torch = vs_ort = None
            for feed in _feeds(bundle, frames, batch):
                got = trt_runner.infer(feed)
                assert set(got) == {o["name"] for o in bundle.manifest["outputs"]}
                for spec in bundle.manifest["outputs"]:
                    assert got[spec["name"]].dtype == np.dtype(spec["dtype"]), spec["name"]
                    assert got[spec["name"]].shape[0] == batch
                vs_torch = compare(torch_runner.infer(feed), got, precision, vs_torch)
                vs_ort = compare(ort_runner.infer(feed), got, precision, vs_ort)
                timings = trt_runner.last_timings
                assert set(timings) == {"h2d_ms", "compute_ms", "d2h_ms", "total_ms"}
                assert all(v >= 0 for v in timings.values())
            assert vs_torch.passed(tolerance), f"batch {batch} vs torch: {vs_torch.to_dict()}"
            assert vs_ort.passed(tolerance), f"batch {batch} vs ort: {vs_ort.to_dict()}"


def test_engine_is_reused_and_cuda_graph_matches(gpu, build_bundle, tmp_path):
    from cvexport.runtime.trt_runner import TrtRunner
    from cvexport.trt.builder import ensure_engine

    bundle = build_bundle(model="ssd", precision="fp16", nms="efficient")
    lines: list[str] = []
    first = ensure_engine(bundle, log=lines.append, cache_dir=tmp_path)
    lines.clear()
    assert ensure_engine(bundle, log=lines.append, cache_dir=tmp_path) == first
    assert any(line.startswith("reusing engine") for line in lines)

    feed = next(_feeds(bundle, _frames(bundle), 1))
    with TrtRunner(bundle, cache_dir=tmp_path, log=lines.append) as plain, \
            TrtRunner(bundle, cache_dir=tmp_path, cuda_graph=True, log=lines.append) as graphed:
        expected = plain.infer(feed)
        for _ in range(3):  # plain run, capture, replay
            got = graphed.infer(feed)
            for name, value in expected.items():
                np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_threads_get_their_own_contexts(gpu, build_bundle, tmp_path):
    from cvexport.runtime.trt_runner import TrtRunner

    bundle = build_bundle(model="ssd", precision="fp32", nms="onnx")
    frames = _frames(bundle)
    feeds = list(_feeds(bundle, frames, 1))
    with TrtRunner(bundle, cache_dir=tmp_path, log=lambda line: None) as runner:
        expected = [runner.infer(feed) for feed in feeds]
        results: dict[int, list] = {}

        def work(index):
            results[index] = [runner.infer(feed) for feed in feeds]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for outputs in results.values():
            for got, want in zip(outputs, expected):
                for name in want:
                    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
