"""What ``Predictor.predict`` accepts as images, and the one-line errors for what it refuses.

Most tests use a predictor with a recording fake runner (no bundle, fast); one uses a real
classifier bundle to check the whole path.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from cvexport.errors import CvexportError
from cvexport.manifest import InputContract, OutputSpec
from cvexport.runtime.predictor import Predictor

NET = 32


class _RecordingRunner:
    def __init__(self):
        self.feeds: list[np.ndarray] = []

    def infer(self, tensors):
        (batch,) = tensors.values()
        self.feeds.append(batch.copy())
        return {"scores": np.zeros((len(batch), 1), np.float32)}

    def close(self):
        pass


class _EchoTask:
    """One result per image: the original size the letterbox recorded."""

    @staticmethod
    def to_predictions(outputs, letterboxes, class_names, width, height):
        return [{"size": (box.original_width, box.original_height)} for box in letterboxes]


def _predictor(max_batch: int = 3) -> Predictor:
    predictor = Predictor.__new__(Predictor)
    contract = InputContract(name="input", dtype="uint8", layout="NHWC", height=NET, width=NET, max_batch=max_batch,
                             mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    predictor.bundle = SimpleNamespace(input=contract, max_batch=max_batch, class_names=["thing"], task="fake",
                                       manifest=SimpleNamespace(outputs=(OutputSpec.from_dict(
                                           {"name": "scores", "dtype": "float32", "shape": ["batch", 1]}),)))
    predictor.backend = "fake"
    predictor.runner = _RecordingRunner()
    predictor.task = _EchoTask()
    return predictor


from test_images import _gradient, _one_line_error as _one_line  # noqa: E402 - the image tests' helpers


# ------------------------------------------------------------------------- single images
def test_single_array_is_one_image_not_one_per_row():
    """One (512, W, 3) array without a list gave 512 results, one per row."""
    predictor = _predictor()
    results = predictor.predict(_gradient(512, 40))
    assert results == [{"size": (40, 512)}]
    assert len(predictor.runner.feeds) == 1 and predictor.runner.feeds[0].shape == (1, NET, NET, 3)


def test_single_grey_array_is_one_image():
    assert _predictor().predict(_gradient(20, 30)[..., 0]) == [{"size": (30, 20)}]


@pytest.mark.parametrize("kind", [str, Path], ids=["str", "Path"])
def test_single_path_is_one_image_not_its_characters(tmp_path, kind):
    """One path string without a list was read character by character: "image not found: a"."""
    path = tmp_path / "a_photo.png"
    Image.fromarray(_gradient(20, 30)).save(path)
    assert _predictor().predict(kind(path)) == [{"size": (30, 20)}]


def test_single_missing_path_names_the_whole_path(tmp_path):
    missing = tmp_path / "absent.png"
    with pytest.raises(CvexportError) as excinfo:
        _predictor().predict(str(missing))
    message = _one_line(excinfo)
    assert str(missing) in message and "not found" in message


def test_single_pil_image_is_one_image():
    assert _predictor().predict(Image.fromarray(_gradient(20, 30))) == [{"size": (30, 20)}]


def test_single_image_same_result_as_list_of_one(tmp_path):
    pixels = _gradient(25, 35)
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    predictor = _predictor()
    for image in (pixels, str(path), path, Image.fromarray(pixels)):
        assert predictor.predict(image) == predictor.predict([image])
    feeds = predictor.runner.feeds
    for feed in feeds[1:]:
        np.testing.assert_array_equal(feed, feeds[0])


# --------------------------------------------------------------------------- collections
def test_4d_array_is_a_batch_of_images():
    stack = np.stack([_gradient(20, 30)] * 5)
    predictor = _predictor(max_batch=2)
    assert predictor.predict(stack) == [{"size": (30, 20)}] * 5
    assert [len(feed) for feed in predictor.runner.feeds] == [2, 2, 1]


def test_list_tuple_and_generator_of_mixed_images(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(_gradient(10, 12)).save(path)
    images = [_gradient(20, 30), str(path), Image.fromarray(_gradient(7, 9)), _gradient(5, 6)[..., 0]]
    expected = [{"size": (30, 20)}, {"size": (12, 10)}, {"size": (9, 7)}, {"size": (6, 5)}]
    predictor = _predictor()
    assert predictor.predict(images) == expected
    assert predictor.predict(tuple(images)) == expected
    assert predictor.predict(image for image in images) == expected


def test_empty_list_gives_no_results():
    predictor = _predictor()
    assert predictor.predict([]) == []
    assert predictor.runner.feeds == []


# -------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "images, needles",
    [
        (np.zeros((0, 0, 3), np.uint8), ["empty", "(0, 0, 3)"]),  # was ZeroDivisionError
        (np.zeros((0, 10, 3), np.uint8), ["empty"]),
        (np.zeros((20, 30, 2), np.uint8), ["shape", "(20, 30, 2)"]),
        (np.zeros((20, 30, 5), np.uint8), ["shape", "(20, 30, 5)"]),
        (np.zeros((2, 20, 30, 5), np.uint8), ["images[0]", "shape"]),
        (np.zeros((2, 2, 20, 30, 3), np.uint8), ["5-D"]),
        (np.zeros((0, 20, 30, 3), np.uint8), ["empty"]),
        (np.zeros(10, np.uint8), ["shape"]),
        (None, ["NoneType", "path"]),
        (42, ["int", "path"]),
        ({"image": "x.png"}, ["dict", "path"]),
        ([np.zeros((8, 8, 3), np.uint8), None], ["images[1]", "NoneType"]),
        ([np.zeros((8, 8, 3), np.uint8), np.zeros((0, 0, 3), np.uint8)], ["images[1]", "empty"]),
        (np.full((8, 8, 3), 200.0, np.float32), ["0..1", "uint8"]),
        (Image.new("RGB", (0, 0)), ["empty"]),
    ],
    ids=["0x0", "0xW", "2-channels", "5-channels", "batch-5-channels", "5-D", "empty-batch", "1-D", "None", "int",
         "dict", "None-in-list", "empty-in-list", "float-255", "zero-size-pil"],
)
def test_bad_input_is_one_line_error(images, needles):
    predictor = _predictor()
    with pytest.raises(CvexportError) as excinfo:
        predictor.predict(images)
    message = _one_line(excinfo)
    for needle in needles:
        assert needle in message, message
    assert predictor.runner.feeds == []  # nothing ran: every image is checked before any inference


def test_bad_path_in_list_stops_before_any_inference(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_gradient(10, 10)).save(good)
    predictor = _predictor(max_batch=1)
    with pytest.raises(CvexportError) as excinfo:
        predictor.predict([good, tmp_path / "missing.png"])
    assert "missing.png" in _one_line(excinfo)
    assert predictor.runner.feeds == []


# ------------------------------------------------------------------------- real bundle
def test_classifier_bundle_single_16bit_and_exif_inputs(build_bundle, tmp_path):
    """End to end with a real (classifier) bundle: a single image gives a list of one; a 16-bit copy
    gives the same result as the 8-bit image; a file with EXIF orientation 6 gives the result of
    the upright picture."""
    bundle = build_bundle(model="classifier", precision="fp32")  # shared with test_task_parity
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    grey = pixels[..., 1]
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "sideways.png", exif=exif)
    with Predictor(bundle) as predictor:
        single = predictor.predict(pixels)
        assert isinstance(single, list) and len(single) == 1
        assert single == predictor.predict([pixels])
        assert predictor.predict(tmp_path / "grey16.png") == predictor.predict(grey)
        assert predictor.predict(grey.astype(np.uint16) * 257) == predictor.predict(grey)
        assert predictor.predict(str(tmp_path / "sideways.png")) == predictor.predict(
            np.ascontiguousarray(np.rot90(pixels, -1)))


def test_prepare_infer_finish_is_predict(build_bundle):
    """The three steps bench, verify and streams use give exactly what ``predict`` gives."""
    from cvexport.runtime.predictor import Predictor

    bundle = build_bundle(model="classifier", precision="fp32")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 90), (120, 64), (64, 64))]
    with Predictor(bundle) as predictor:
        batch = predictor.prepare(images)
        assert len(batch.letterboxes) == 3 and next(iter(batch.feed.values())).shape[0] == 3
        stepped = predictor.finish(predictor.infer(batch.feed), batch)
        assert stepped == predictor.predict(images)
