"""TensorRT on a real GPU: engine build, TrtRunner parity with ONNX Runtime (CPU) and PyTorch.

The matrix is per task (tests/model_matrix.py): every registered model with the build variants
its task declares in ``build_variants`` (detection: both NMS flavors; every task:
fp32/fp16/int8, and uint8 input at fp32), compared with the task's own ``compare`` at the
task's own ``TOLERANCES[precision]``. tests/test_model_matrix.py checks that matrix on CPU.

Skipped cleanly where TensorRT or a CUDA GPU is missing (the ``gpu``/``trt`` markers, see
conftest.py): ``tensorrt`` is imported only inside the fixtures and tests
(``pytest.importorskip``), never at collection time.
"""

from __future__ import annotations

import numpy as np
import pytest

from cvexport.build import PARITY_BATCHES
from cvexport.preprocess import to_network_input
from model_matrix import build_matrix, find_case, run_in_threads

pytestmark = [pytest.mark.trt, pytest.mark.gpu]

MATRIX = build_matrix()
THREADS = 3


@pytest.fixture(scope="module")
def gpu():
    pytest.importorskip("tensorrt")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU; none is present")
    return torch.cuda.get_device_name(0)


def _frames(bundle):
    from cvexport.registry import bundle_spec
    from cvexport.tasks import get_task

    return get_task(bundle.task).parity_frames(bundle_spec(bundle))


def _feeds(bundle, frames, batch):
    for start in range(0, len(frames) - batch + 1, batch):
        yield {bundle.input.name: to_network_input(frames[start:start + batch], bundle.input)}


@pytest.mark.parametrize("case", MATRIX, ids=[case.id for case in MATRIX])
def test_trt_matches_ort_and_torch(gpu, build_bundle, tmp_path, case):
    bundle = build_bundle(**case.kwargs)
    assert (bundle.task, bundle.precision) == (case.task, case.precision)
    _engine_matches_ort_and_torch(bundle, tmp_path)


# torchvision's builders with the user's weights (issue 24): the head sections of each
# detector family in both NMS flavors, and a classifier and a segmenter, at small sizes.
ZOO_CASES = [
    ("ssdlite320_mobilenet_v3_large", None, "fp32", "onnx"), ("ssdlite320_mobilenet_v3_large", None, "fp16", "onnx"),
    ("ssdlite320_mobilenet_v3_large", None, "int8", "onnx"), ("ssdlite320_mobilenet_v3_large", None, "fp16", "efficient"),
    ("retinanet_resnet50_fpn", 256, "fp16", "onnx"), ("retinanet_resnet50_fpn", 256, "fp32", "efficient"),
    ("fcos_resnet50_fpn", 256, "fp16", "onnx"), ("ssd300_vgg16", None, "fp16", "onnx"),
    ("resnet18", 224, "int8", None), ("mobilenet_v3_large", 224, "fp16", None),
    ("lraspp_mobilenet_v3_large", 256, "fp16", None),
]


@pytest.mark.parametrize("name, side, precision, nms", ZOO_CASES, ids=["-".join(map(str, c)) for c in ZOO_CASES])
def test_trt_zoo_matches_ort_and_torch(gpu, tmp_path, name, side, precision, nms):
    from cvexport.build import BuildOptions, build
    from cvexport.bundle import load_bundle
    from cvexport.registry import get_spec
    from detector_weights import zoo_weights_file

    weights = zoo_weights_file(name, side or get_spec(name).input_size[0], tmp_path)
    task_options = {} if nms is None else {"nms": nms, **({"score_threshold": 0.05} if nms == "efficient" else {})}
    out = build(BuildOptions(model=name, weights=str(weights), input_size=side, precision=precision, max_batch=4,
                             out=str(tmp_path / "bundle"), task_options=task_options, engine="ort"))
    _engine_matches_ort_and_torch(load_bundle(out), tmp_path)


def _engine_matches_ort_and_torch(bundle, tmp_path):
    """The bundle's TensorRT engine against the torch backend and ONNX Runtime, at every parity
    batch, with the task's own comparison at the bundle precision's tolerance."""
    from cvexport.runtime import create_runner
    from cvexport.backends.ort.runner import OrtRunner
    from cvexport.backends.trt.runner import TrtRunner
    from cvexport.tasks import get_task

    task, precision = get_task(bundle.task), bundle.precision
    tolerance = task.TOLERANCES[precision]
    trt_runner = TrtRunner(bundle, cache_dir=tmp_path / "engines", log=lambda line: None)
    assert trt_runner.engine_path.is_file() and trt_runner.engine_metadata.precision == precision
    torch_runner = create_runner(bundle, "torch")
    # The very graph TensorRT built its engine from (for INT8 the QDQ graph, not the CPU form).
    ort_runner = OrtRunner(bundle, graph="onnx")
    frames = _frames(bundle)
    with trt_runner:
        for batch in PARITY_BATCHES:
            if batch > bundle.max_batch:
                continue
            feeds = list(_feeds(bundle, frames, batch))
            assert feeds, f"{len(frames)} parity frames give no batch of {batch}"
            vs_torch, vs_ort = (task.new_parity(precision, bundle.manifest) for _ in range(2))
            for feed in feeds:
                got = trt_runner.infer(feed)
                assert set(got) == set(bundle.manifest.output_names)
                for spec in bundle.manifest.outputs:
                    assert got[spec.name].dtype == np.dtype(spec.dtype), spec.name
                    assert got[spec.name].shape[0] == batch
                vs_torch.add(torch_runner.infer(feed), got)
                vs_ort.add(ort_runner.infer(feed), got)
                timings = trt_runner.last_timings
                assert set(timings) == {"h2d_ms", "compute_ms", "d2h_ms", "total_ms"}
                assert all(v >= 0 for v in timings.values())
            assert vs_torch.passed(tolerance), f"batch {batch} vs torch: {vs_torch.summary()}"
            assert vs_ort.passed(tolerance), f"batch {batch} vs ort: {vs_ort.summary()}"


def test_engine_is_reused_and_cuda_graph_matches(gpu, build_bundle, tmp_path):
    from cvexport.backends.trt.runner import TrtRunner
    from cvexport.backends.trt.builder import ensure_engine

    bundle = build_bundle(**find_case("ssd", nms="efficient", precision="fp16", input_format="float").kwargs)
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


# One fp32 float-input case per model: threading is the runner's, but each task has its own outputs.
THREAD_CASES = [next(c for c in MATRIX if c.model == model and c.precision == "fp32"
                     and dict(c.options).get("input_format", "float") == "float")
                for model in dict.fromkeys(c.model for c in MATRIX)]


@pytest.mark.parametrize("case", THREAD_CASES, ids=[case.model for case in THREAD_CASES])
def test_threads_get_their_own_contexts(gpu, build_bundle, tmp_path, case):
    from cvexport.backends.trt.runner import TrtRunner

    bundle = build_bundle(**case.kwargs)
    feeds = list(_feeds(bundle, _frames(bundle), 1))
    with TrtRunner(bundle, cache_dir=tmp_path, log=lambda line: None) as runner:
        expected = [runner.infer(feed) for feed in feeds]
        # A worker's exception (or a hung worker) fails the test via WorkerThreadError.
        results = run_in_threads(lambda index: [runner.infer(feed) for feed in feeds], THREADS)
        assert len(runner._states) == 1 + THREADS, "each thread must get its own execution context"
    assert len(results) == THREADS
    for outputs in results:
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected):
            assert set(got) == set(want)
            for name in want:
                np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
