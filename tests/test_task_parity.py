"""Parity of the classifier, FCN and style bundles: ONNX Runtime vs the PyTorch reference.

One parametrization over model x precision (and uint8 input once per model), batch 1 and 4,
on val images, with each task's own comparison (top-1 agreement, pixel agreement, PSNR) and
its tolerance from issue 3. The SSD has its own file (tests/test_parity.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from cvexport.images import letterbox
from cvexport.preprocess import to_network_input
from cvexport.registry import get_spec
from cvexport.runtime import create_runner
from cvexport.tasks import get_task

MODELS = ("classifier", "fcn", "style")
MATRIX = [(m, p, "float") for m in MODELS for p in ("fp32", "fp16")] + [(m, "fp32", "uint8") for m in MODELS]


def _frames(bundle) -> list[np.ndarray]:
    spec = get_spec(bundle.manifest["model"])
    return get_task(spec.task).parity_frames(spec)


@pytest.mark.parametrize("model,precision,input_format", MATRIX, ids=["-".join(m) for m in MATRIX])
def test_bundle_matches_pytorch(build_bundle, model, precision, input_format):
    bundle = build_bundle(model=model, precision=precision, input_format=input_format)
    task = get_task(bundle.task)
    reference, test = create_runner(bundle, "torch"), create_runner(bundle, "ort")
    frames = _frames(bundle)
    for batch in (1, 4):
        parity = task.new_parity()
        for start in range(0, len(frames) - batch + 1, batch):
            feed = {bundle.input["name"]: to_network_input(frames[start:start + batch], bundle.input)}
            task.compare(reference.infer(feed), test.infer(feed), precision, parity)
        assert parity.images == len(frames) - len(frames) % batch
        assert parity.passed(task.TOLERANCES[precision]), (batch, parity.summary())


@pytest.mark.parametrize("model", MODELS)
def test_each_image_of_a_batch_gets_its_own_result(build_bundle, model):
    """Batch of 4 == four batches of 1, output by output."""
    bundle = build_bundle(model=model, precision="fp32")
    runner = create_runner(bundle, "ort")
    frames = _frames(bundle)[:4]
    batched = runner.infer({bundle.input["name"]: to_network_input(frames, bundle.input)})
    for i, frame in enumerate(frames):
        single = runner.infer({bundle.input["name"]: to_network_input([frame], bundle.input)})
        for name, value in single.items():
            np.testing.assert_allclose(batched[name][i], value[0], atol=1e-4, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("model", MODELS)
def test_parity_fails_against_another_network(build_bundle, model, tmp_path):
    """Negative control: the same graph built from other (untrained) weights must fail fp32
    parity against the shipped model's reference, so the check can fail."""
    import torch

    from cvexport.checkpoint import save_checkpoint

    spec = get_spec(model)
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, spec.build().state_dict(), {"model": model})
    shipped, untrained = build_bundle(model=model, precision="fp32"), None
    from cvexport.build import BuildOptions, build
    from cvexport.bundle import load_bundle

    build_options = BuildOptions(model=model, weights=str(other), out=str(tmp_path / "b"), verify_images=0)
    untrained = load_bundle(build(build_options, log=lambda line: None))
    task = get_task(spec.task)
    feed = {shipped.input["name"]: to_network_input(_frames(shipped)[:4], shipped.input)}
    parity = task.compare(create_runner(shipped, "torch").infer(feed), create_runner(untrained, "ort").infer(feed), "fp32")
    assert not parity.passed(task.TOLERANCES["fp32"]), parity.summary()


@pytest.mark.parametrize("model", MODELS)
def test_predictions_map_back_to_each_original_image(build_bundle, model):
    """Predictor on images of other sizes: results come back per image, at the original size."""
    from cvexport.runtime.predictor import Predictor

    bundle = build_bundle(model=model, precision="fp32")
    frame = _frames(bundle)[0]
    images = [frame, np.ascontiguousarray(np.concatenate([frame, frame], axis=1)), frame[: frame.shape[0] // 2]]
    with Predictor(bundle) as predictor:
        results = predictor.predict(images)
    assert len(results) == 3
    if bundle.task == "classification":
        assert all(r["class_name"] == bundle.class_names[r["class_id"]] and 0 < r["score"] <= 1 for r in results)
        assert [t["score"] for t in results[0]["top"]] == sorted((t["score"] for t in results[0]["top"]), reverse=True)
    else:
        for image, result in zip(images, results):
            assert result.shape[:2] == image.shape[:2]
        # The square frame fills the input exactly: mapping back must be the raw output itself.
        width, height = bundle.input["width"], bundle.input["height"]
        fitted, box_map = letterbox(frame, width, height)
        raw = create_runner(bundle, "ort").infer({bundle.input["name"]: to_network_input([fitted], bundle.input)})
        direct = get_task(bundle.task).to_predictions(raw, [box_map], bundle.class_names, width, height)[0]
        np.testing.assert_array_equal(results[0], direct)
