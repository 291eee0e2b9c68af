"""End-to-end parity of every model: exported bundles on ONNX Runtime vs the PyTorch reference.

One parametrization over tests/model_matrix.py (every registered model x its task's build
variants; INT8 has its own slow test below), batch 1 and 4, on the task's parity frames (for
the SSD an empty and a crowded image among them), with each task's own comparison (detections
as sets by class and IoU, top-1 agreement, pixel agreement, PSNR) and tolerance. A mismatch fails.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from cvexport.images import letterbox
from cvexport.preprocess import to_network_input
from cvexport.registry import get_spec, list_models
from cvexport.runtime import create_runner
from cvexport.tasks import get_task
from model_matrix import build_matrix

FLOAT_CASES = [case for case in build_matrix() if case.precision != "int8"]

# Detection at fp32 is checked at a lower threshold than the default: many more (and harder,
# near-tie) detections to match. FP16 stays at the shipped 0.25: measured at 0.1, 109/112 on the
# parity frames; every miss scored 0.10-0.12 and sat on an NMS knife edge (IoU 0.44998 with a
# kept box against the 0.45 threshold), where any rounding flips the decision.
DETECTION_SCORE_THRESHOLD = {"fp32": 0.1, "fp16": 0.25}


def _options(case) -> dict:
    kwargs = case.kwargs
    if case.task == "detection":
        kwargs["score_threshold"] = DETECTION_SCORE_THRESHOLD[case.precision]
    return kwargs


def _frames(bundle) -> list[np.ndarray]:
    spec = get_spec(bundle.manifest.model)
    return get_task(spec.task).parity_frames(spec)


def _feed(bundle, frames):
    return {bundle.input.name: to_network_input(frames, bundle.input)}


@pytest.mark.parametrize("case", FLOAT_CASES, ids=[case.id for case in FLOAT_CASES])
def test_bundle_matches_pytorch(build_bundle, case):
    bundle = build_bundle(**_options(case))
    task = get_task(bundle.task)
    reference, test = create_runner(bundle, "torch"), create_runner(bundle, "ort")
    frames = _frames(bundle)
    for batch in (1, 4):
        parity = task.new_parity(case.precision, bundle.manifest)  # as build and verify bind it
        for start in range(0, len(frames) - batch + 1, batch):
            feed = _feed(bundle, frames[start:start + batch])
            parity.add(reference.infer(feed), test.infer(feed))
        assert parity.images == len(frames) - len(frames) % batch
        if bundle.task == "detection":
            assert parity.reference_detections >= 20, "too few detections for a meaningful comparison"
        assert parity.passed(), (batch, parity.summary())


@pytest.mark.parametrize("model", list_models())
def test_each_image_of_a_batch_gets_its_own_result(build_bundle, model):
    """Batch of 4 == four batches of 1, output by output (peers have shipped 'only image 0' bugs)."""
    bundle = build_bundle(model=model, precision="fp32")
    runner = create_runner(bundle, "ort")
    frames = _frames(bundle)[:4]
    batched = runner.infer(_feed(bundle, frames))
    for i, frame in enumerate(frames):
        single = runner.infer(_feed(bundle, [frame]))
        for name, value in single.items():
            np.testing.assert_allclose(batched[name][i], value[0], atol=1e-4, rtol=1e-4, err_msg=name)
    if bundle.task == "detection":
        counts = [int(n) for n in batched["num_detections"][:, 0]]
        assert counts[0] == 0 and max(counts) >= 4, counts  # the empty image stays empty, a crowded one is not


@pytest.mark.parametrize("model", list_models())
def test_parity_fails_against_another_network(build_bundle, model, tmp_path):
    """Negative control: the same graph built from other (untrained) weights must fail fp32
    parity against the shipped model's reference, so the check can fail."""
    import torch

    from cvexport.build import BuildOptions, build
    from cvexport.bundle import load_bundle
    from cvexport.checkpoint import save_checkpoint

    spec = get_spec(model)
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, spec.build().state_dict(), {"model": model})
    shipped = build_bundle(model=model, precision="fp32")
    untrained = load_bundle(build(BuildOptions(model=model, weights=str(other), out=str(tmp_path / "b"),
                                               verify_images=0, engine="ort"), log=lambda line: None))
    feed = _feed(shipped, _frames(shipped)[:4])
    parity = get_task(spec.task).new_parity("fp32").add(create_runner(shipped, "torch").infer(feed),
                                                        create_runner(untrained, "ort").infer(feed))
    assert not parity.passed(), parity.summary()


def test_detection_parity_catches_a_wrong_threshold(build_bundle):
    """Negative control within one network: a bundle built with another score threshold fails
    fp32 parity against the reference at this threshold."""
    strict = build_bundle(model="ssd", precision="fp32", score_threshold=0.1)
    loose = build_bundle(model="ssd", precision="fp32", score_threshold=0.05)
    feed = _feed(strict, _frames(strict)[:strict.max_batch])
    parity = get_task("detection").new_parity("fp32").add(create_runner(strict, "torch").infer(feed),
                                                          create_runner(loose, "ort").infer(feed))
    assert not parity.passed()


@pytest.mark.parametrize("model", list_models())
def test_predictions_map_back_to_each_original_image(build_bundle, model):
    """Predictor on images of other sizes: results come back per image, at the original size."""
    from cvexport.runtime.predictor import Predictor

    bundle = build_bundle(model=model, precision="fp32")
    task = get_task(bundle.task)
    frame = _frames(bundle)[1]
    images = [frame, np.ascontiguousarray(np.concatenate([frame, frame], axis=1)), frame[: frame.shape[0] // 2]]
    with Predictor(bundle) as predictor:
        results = predictor.predict(images)
    assert len(results) == 3
    width, height = bundle.input.width, bundle.input.height
    if bundle.task == "classification":
        for r in results:
            (class_id, name, score), *_ = r.top()
            assert class_id == r.class_id and name == bundle.class_names[class_id] and 0 < score <= 1
        scores = [score for _, _, score in results[0].top()]
        assert scores == sorted(scores, reverse=True)
    elif bundle.task == "detection":
        for image, detections in zip(images, results):
            for box in detections.xyxy:
                x1, y1, x2, y2 = box
                assert 0 <= x1 <= x2 <= image.shape[1] and 0 <= y1 <= y2 <= image.shape[0], box
    else:
        for image, result in zip(images, results):
            assert np.asarray(result).shape[:2] == image.shape[:2]
    # The square frame fills the input exactly: mapping back must be the raw output itself.
    fitted, box_map = letterbox(frame, width, height)
    raw = create_runner(bundle, "ort").infer(_feed(bundle, [fitted]))
    direct = task.to_predictions(raw, [box_map], bundle.class_names, width, height)[0]
    assert results[0] == direct


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["vnni", "avx2"])
def test_int8_ssd_keeps_accuracy_and_stays_tensorrt_ready(build_bundle, monkeypatch, isa):
    """INT8: ONNX Runtime on a CPU runs the graph made for its instruction set (each path
    forced here), the QDQ graph is what TensorRT gets; the task metric (mAP@0.5 and
    mAP@0.5:0.95) must stay within 1 point of PyTorch's."""
    from cvexport.cpu import FORCE_VARIABLE, isa_class
    from cvexport.backends.ort.runner import OrtRunner
    from cvexport.backends.trt.compat import check_path
    from cvexport.verify import verify_bundle

    bundle = build_bundle(precision="int8")
    assert check_path(bundle.onnx_path).ok
    quantized = {n.op_type for n in onnx.load(str(bundle.onnx_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= quantized
    feed = _feed(bundle, _frames(bundle)[:4])
    parity = get_task("detection").new_parity("int8").add(create_runner(bundle, "torch").infer(feed),
                                                          OrtRunner(bundle, graph="onnx").infer(feed))
    assert parity.passed(), parity.to_dict()

    real = isa_class()
    monkeypatch.setenv(FORCE_VARIABLE, isa)
    assert create_runner(bundle, "ort").graph == {"vnni": "onnx_cpu", "avx2": "onnx_cpu_avx2"}[isa]
    if isa == "vnni" and real != "vnni":
        pytest.skip("the VNNI graph computes other numbers on a CPU without VNNI (16-bit saturation); "
                    "its accuracy is measured on a VNNI CPU")
    report = verify_bundle(bundle, ["ort"], val_images=64, max_drop=1.0)
    assert report["passed"], report
    row = next(r for r in report["rows"] if r["backend"] == "ort")
    assert row["map50_drop"] <= 1.0 and row["map_drop"] <= 1.0
