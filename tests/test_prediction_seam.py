"""The per-frame prediction seam (``Predictor.prepare_one`` / ``infer_batch`` / ``split`` /
``finish_one``) that streams batch frames of several sources through: exactly what ``predict``
gives, and what the whole-batch path (stack, infer, the task's ``to_predictions`` over the batch)
gives, for every task and for frames of mixed sizes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from cvexport.registry import get_spec, list_models
from cvexport.tasks import get_task

FRAME = (640, 480)  # the camera size of the --frame-size bundle (as tests/test_stream_frame_size.py)


def _mixed_frames(bundle) -> list[np.ndarray]:
    """Four pictures the model reacts to, of four sizes (wide, tall, small, the parity size)."""
    spec = get_spec(bundle.manifest.model)
    frames = get_task(spec.task).parity_frames(spec)
    a, b = frames[1 % len(frames)], frames[2 % len(frames)]
    return [np.ascontiguousarray(np.concatenate([a, b], axis=1)),
            np.ascontiguousarray(np.concatenate([b, a], axis=0)),
            np.ascontiguousarray(a[: a.shape[0] // 2, : a.shape[1] // 3]),
            b]


def _as_json(results) -> str:
    """Results (cvexport.results objects) compared exactly: every field, numbers as JSON writes
    them, arrays by their bytes."""
    def exact(value):
        if dataclasses.is_dataclass(value):
            return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return [value.shape, value.dtype.str, value.tobytes().hex()]

    return json.dumps(results, default=exact)


def _whole_batch(predictor, images) -> list:
    """The batch path the seam replaces, written out: every image letterboxed (and fitted once
    more by a --frame-size graph), normalized as one stacked batch, run once, and the task's
    ``to_predictions`` over the whole batch with every image's fit."""
    from cvexport.images import letterbox, letterbox_map
    from cvexport.preprocess import to_network_input

    contract = predictor.bundle.input
    fitted = [letterbox(image, contract.width, contract.height) for image in images]
    fits = [fit for _, fit in fitted]
    if contract.letterbox is not None:
        in_graph = letterbox_map(contract.width, contract.height, *contract.network_size)
        fits = [fit.then(in_graph) for fit in fits]
    outputs = predictor.runner.infer({contract.name: to_network_input([frame for frame, _ in fitted], contract)})
    return predictor.task.to_predictions(outputs, fits, predictor.bundle.class_names, *contract.network_size)


def _seam(predictor, images) -> list:
    prepared = [predictor.prepare_one(image) for image in images]
    outputs = predictor.infer_batch(prepared)
    return [predictor.finish_one(mine, item) for mine, item in zip(predictor.split(outputs, len(prepared)), prepared)]


@pytest.fixture(scope="module")
def bundles(build_bundle):
    built = {model: build_bundle(model=model, precision="fp32") for model in list_models()}
    built["ssd --frame-size"] = build_bundle(model="ssd", input_format="uint8", frame_size=FRAME)
    return built


@pytest.mark.parametrize("name", [*list_models(), "ssd --frame-size"])
def test_per_frame_steps_give_what_predict_and_the_whole_batch_give(bundles, name):
    from cvexport.runtime.predictor import Predictor

    bundle = bundles[name]
    images = _mixed_frames(bundle)
    if name == "ssd --frame-size":  # a frame of the built size goes into the graph untouched
        from PIL import Image

        images[3] = np.asarray(Image.fromarray(images[3]).resize(FRAME, Image.BILINEAR))
    with Predictor(bundle) as predictor:
        seam = _as_json(_seam(predictor, images))
        assert seam == _as_json(predictor.predict(images))
        assert seam == _as_json(_whole_batch(predictor, images))
        # Each frame its own result: the comparison above would not notice row 0 given to every frame.
        assert len({_as_json(result) for result in _seam(predictor, images)}) == len(images)
        if predictor.task.name == "detection":
            assert sum(len(result) for result in predictor.predict(images)) >= 3  # something to compare


def test_split_gives_each_frame_its_row_of_every_batched_output(bundles):
    from cvexport.runtime.predictor import Predictor

    with Predictor(bundles["ssd"]) as predictor:
        prepared = [predictor.prepare_one(image) for image in _mixed_frames(predictor.bundle)]
        outputs = predictor.infer_batch(prepared)
        parts = predictor.split(outputs, len(prepared))
    assert len(parts) == len(prepared)
    for name, value in outputs.items():
        assert all(part[name].shape == (1, *value.shape[1:]) for part in parts), name
        np.testing.assert_array_equal(np.concatenate([part[name] for part in parts]), value)


def test_infer_batch_stacks_the_frames_as_prepare_does(bundles):
    """``prepare`` (bench, verify, batch predict) is the per-frame steps stacked: same feed, same fits."""
    from cvexport.runtime.predictor import Predictor, prepare_batch

    bundle = bundles["ssd --frame-size"]
    images = _mixed_frames(bundle)
    with Predictor(bundle) as predictor:
        batch = predictor.prepare(images)
        prepared = [predictor.prepare_one(image) for image in images]
    name = bundle.input.name
    stacked = np.concatenate([item.feed[name] for item in prepared])
    np.testing.assert_array_equal(batch.feed[name], stacked)
    np.testing.assert_array_equal(prepare_batch(bundle, images).feed[name], stacked)
    assert batch.letterboxes == [item.letterbox for item in prepared]


def test_the_ffmpeg_preparer_places_the_picture_as_the_exact_one():
    """Both preparers share the one letterbox geometry: same fit, content where letterbox puts it,
    the letterbox grey elsewhere; only the resampler differs."""
    import av

    from cvexport.images import LETTERBOX_FILL, letterbox_fit
    from cvexport.runtime.preparers import EXACT, FFMPEG

    rng = np.random.default_rng(3)
    for w, h in ((1280, 720), (300, 500), (64, 64)):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        exact, exact_fit = EXACT.fit(frame.to_ndarray(format="rgb24"), 256, 192)
        fast, fast_fit = FFMPEG.fit(frame, 256, 192)
        assert fast_fit == exact_fit and fast.shape == exact.shape == (192, 256, 3) and fast.dtype == np.uint8
        new_w, new_h, pad_x, pad_y = letterbox_fit(w, h, 256, 192)
        padding = np.ones((192, 256), bool)
        padding[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = False
        assert (fast[padding] == LETTERBOX_FILL).all() and (exact[padding] == LETTERBOX_FILL).all()
