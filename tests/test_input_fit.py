"""Input fit modes (issue 24): how an image becomes the network input is part of a model's spec
and its manifest, and every path that fits images applies it (cvexport.images.InputFit).

letterbox (cvexport's models), stretch (torchvision SSD), top_left (torchvision RetinaNet/FCOS)
and resize_crop (torchvision classifiers): the geometry and the boxes mapped back, both
preparers, the in-graph fit of ``--frame-size``, the manifest, and a torchvision classifier whose
bundle answers as torchvision's own transform and network do."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from cvexport.errors import CvexportError
from cvexport.images import FITS, LETTERBOX, LETTERBOX_FILL, InputFit
from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_network_input
from test_torchvision_models import (  # noqa: F401 - resnet_bundle: the tiny resnet18 build, reused
    NAMES, SIDE, _error_line, _save, _state_dict, _torch_reference, resnet_bundle)

MEAN_FILL = tuple(round(m * 255) for m in IMAGENET_MEAN)  # (124, 116, 104)
MODES = {
    "letterbox": LETTERBOX,
    "stretch": InputFit("stretch"),
    "top_left": InputFit("top_left", fill=MEAN_FILL),
    "resize_crop": InputFit("resize_crop", 0.875),
}
NETWORK = (96, 64)  # width, height: not square, so the two axes are told apart
ORIGINALS = {"landscape": (640, 360), "portrait": (300, 500), "square": (200, 200)}
RED, BLUE = (230, 20, 20), (20, 20, 230)


class _Spec:
    """What InputFit.of reads from a ModelSpec or an InputContract."""

    def __init__(self, fit: str, crop_fraction: float | None = None, mean=IMAGENET_MEAN):
        self.fit, self.crop_fraction, self.mean = fit, crop_fraction, mean


def _drawn(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """A blue (h, w) picture with a red rectangle in its middle (inside any centre crop), and the
    rectangle as (x1, y1, x2, y2) pixels."""
    image = np.empty((h, w, 3), np.uint8)
    image[...] = BLUE
    box = np.array([round(0.35 * w), round(0.4 * h), round(0.6 * w), round(0.65 * h)])
    image[box[1] : box[3], box[0] : box[2]] = RED
    return image, box.astype(np.float64)


def _red(canvas: np.ndarray) -> np.ndarray:
    """bool (H, W): more red than blue (the half-way point of a red-blue blend), and red at all
    (not the grey or mean-colour padding)."""
    r, g, b = (canvas[..., i].astype(int) for i in range(3))
    return (r - b > 0) & (r - g > 60)


def _found(canvas: np.ndarray) -> np.ndarray:
    """The red rectangle's (x1, y1, x2, y2) in the fitted input, normalized to it (edges where
    the resize blends red into blue: the half-way threshold)."""
    ys, xs = np.nonzero(_red(canvas))
    height, width = canvas.shape[:2]
    return np.array([[xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height]])


def _photo(w: int, h: int) -> np.ndarray:
    """A real photograph resized to (h, w): smooth content, so two resamplers differ by little."""
    from PIL import Image

    from cvexport.models.photos import photo

    return np.asarray(Image.fromarray(photo("chelsea")).resize((w, h), Image.BILINEAR))


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("original", ORIGINALS)
@pytest.mark.parametrize("mode", MODES)
def test_boxes_mapped_back_land_where_they_were_drawn(mode, original):
    how = MODES[mode]
    image, drawn = _drawn(*ORIGINALS[original])
    canvas, fit = how.apply(image, *NETWORK)
    assert canvas.shape == (NETWORK[1], NETWORK[0], 3) and canvas.dtype == np.uint8
    back = fit.boxes_to_original(_found(canvas), *NETWORK)[0]
    # One input pixel of the threshold's uncertainty, in original pixels, plus one of rounding.
    tolerance = np.array([1 / fit.scale_x, 1 / fit.scale_y] * 2) + 1.0
    assert (np.abs(back - drawn) <= tolerance).all(), (back, drawn, tolerance)


@pytest.mark.parametrize("original", ORIGINALS)
def test_each_mode_places_the_picture_as_its_model_was_trained(original):
    w, h = ORIGINALS[original]
    width, height = NETWORK
    image = _drawn(w, h)[0]
    # letterbox: centred, grey bands on both sides of the short axis.
    canvas, fit = MODES["letterbox"].apply(image, width, height)
    left, top, new_w, new_h = fit.content()
    assert left == (width - new_w) // 2 and top == (height - new_h) // 2
    assert (canvas[:top] == LETTERBOX_FILL).all() and (canvas[:, :left] == LETTERBOX_FILL).all()
    # top_left: the same size at (0, 0), the mean colour below and to the right.
    canvas, fit = MODES["top_left"].apply(image, width, height)
    assert fit.content() == (0, 0, new_w, new_h) and fit.pad_x == fit.pad_y == 0
    assert (canvas[new_h:] == MEAN_FILL).all() and (canvas[:, new_w:] == MEAN_FILL).all()
    assert (canvas[:new_h, :new_w] != MEAN_FILL).any(axis=-1).all()  # picture, no padding, up to its edge
    # stretch: the whole input is picture, each axis scaled on its own.
    canvas, fit = MODES["stretch"].apply(image, width, height)
    assert (fit.scale_x, fit.scale_y) == (width / w, height / h) and (fit.pad_x, fit.pad_y) == (0, 0)
    assert (np.abs(canvas.astype(int) - BLUE).max(axis=-1) <= 1)[[0, 0, -1, -1], [0, -1, 0, -1]].all()


@pytest.mark.parametrize("original", ORIGINALS)
def test_resize_crop_is_torchvisions_resize_and_centre_crop(original):
    """Sizes and offsets exactly those of torchvision's Resize(side / crop_fraction) + CenterCrop;
    pixels within Pillow's and torchvision's antialiased bilinear (a level or two)."""
    from torchvision.transforms import v2

    w, h = ORIGINALS[original]
    image = _photo(w, h)
    how, side = MODES["resize_crop"], 64
    canvas, fit = how.apply(image, side, side)
    resize = v2.Resize(round(side / 0.875), antialias=True)
    resized = resize(torch.from_numpy(image).permute(2, 0, 1))
    assert (round(fit.scale_x * w), round(fit.scale_y * h)) == (resized.shape[2], resized.shape[1])
    expected = v2.CenterCrop(side)(resized).permute(1, 2, 0).numpy()
    difference = np.abs(canvas.astype(int) - expected.astype(int))
    assert difference.mean() < 1.5 and np.percentile(difference, 99) <= 8, (difference.mean(), difference.max())
    # The crop overhangs: negative offsets, and the picture's edges lie outside the input.
    assert fit.pad_x <= 0 and fit.pad_y <= 0 and (fit.pad_x < 0 or fit.pad_y < 0 or w == h)


def test_a_fit_composed_with_another_maps_boxes_as_the_two_in_turn():
    """``then`` (a --frame-size bundle: fitted to the frame, then in the graph) for every mode."""
    boxes = np.array([[0.2, 0.3, 0.6, 0.9], [0.4, 0.4, 0.5, 0.5]])
    frame = (160, 120)
    for how in MODES.values():
        outer, inner = how.map(300, 500, *frame), how.map(*frame, *NETWORK)
        in_frame = inner.boxes_to_original(boxes, *NETWORK) / np.array([*frame, *frame])
        np.testing.assert_allclose(outer.then(inner).boxes_to_original(boxes, *NETWORK),
                                   outer.boxes_to_original(in_frame, *frame), atol=1e-9)


@pytest.mark.parametrize("mode", ["letterbox", "stretch", "top_left"])
def test_label_maps_are_mapped_back_over_the_picture(mode):
    """Segmentation: a label map over the network input comes back over the whole picture, the
    red rectangle's labels where the rectangle was."""
    image, drawn = _drawn(300, 500)
    canvas, fit = MODES[mode].apply(image, *NETWORK)
    labels = _red(canvas).astype(np.uint8)
    back = fit.map_to_original(labels, labels=True)
    assert back.shape == (500, 300)
    x1, y1, x2, y2 = drawn.astype(int)
    m = int(np.ceil(1 / min(fit.scale_x, fit.scale_y))) + 1  # an input pixel, in original pixels
    assert back[y1 + m : y2 - m, x1 + m : x2 - m].all()
    assert not back[: y1 - m].any() and not back[y2 + m :].any()
    assert not back[:, : x1 - m].any() and not back[:, x2 + m :].any()


def test_a_cropped_fit_refuses_what_it_cannot_map_back():
    from cvexport.tasks import get_task

    fit = MODES["resize_crop"].map(300, 500, 64, 64)
    with pytest.raises(CvexportError, match="resize_crop") as excinfo:
        fit.map_to_original(np.zeros((64, 64), np.uint8), labels=True)
    assert "\n" not in str(excinfo.value)
    for task in ("detection", "segmentation", "style"):
        with pytest.raises(CvexportError, match=f"a {task} result could not be mapped back"):
            MODES["resize_crop"].check(get_task(task))
    MODES["resize_crop"].check(get_task("classification"))
    with pytest.raises(CvexportError, match="--frame-size"):
        MODES["resize_crop"].check(get_task("classification"), in_graph=True)


@pytest.mark.parametrize("fit, fraction, message", [
    ("squash", None, "unknown input fit 'squash'; choose one of: letterbox, stretch, top_left, resize_crop"),
    ("resize_crop", None, "needs a crop_fraction in"),
    ("resize_crop", 1.5, "needs a crop_fraction in"),
    ("letterbox", 0.875, "applies only to fit resize_crop"),
])
def test_bad_fits_are_one_line(fit, fraction, message):
    with pytest.raises(CvexportError, match=message.replace("(", r"\(")) as excinfo:
        InputFit.of(_Spec(fit, fraction))
    assert "\n" not in str(excinfo.value)


def test_top_left_pads_with_the_models_own_mean():
    assert InputFit.of(_Spec("top_left")).fill == MEAN_FILL
    assert InputFit.of(_Spec("top_left", mean=(0.5, 0.5, 0.5))).fill == (128, 128, 128)
    assert InputFit.of(_Spec("letterbox")).fill == (LETTERBOX_FILL,) * 3
    # After normalization the padding is about 0, as torchvision's batch_images pads.
    padded = to_network_input([np.tile(np.array(MEAN_FILL, np.uint8), (2, 2, 1))],
                              {"dtype": "float32", "mean": IMAGENET_MEAN, "std": IMAGENET_STD})
    assert np.abs(padded).max() < 0.01


# ----------------------------------------------------------------------------- preparers
@pytest.mark.parametrize("mode", MODES)
def test_exact_and_ffmpeg_preparers_give_the_same_geometry(mode):
    """Both preparers place the picture by the one geometry: the same Letterbox, the same padding
    colour; only the resampler differs (FFmpeg scales YUV planes: a few levels on a photo)."""
    import av

    from cvexport.runtime.preparers import EXACT, FFMPEG

    how = MODES[mode]
    for w, h in (*ORIGINALS.values(), NETWORK):
        frame = av.VideoFrame.from_ndarray(_photo(w, h), format="rgb24").reformat(format="yuv420p")
        exact, exact_fit = EXACT.fit(frame.to_ndarray(format="rgb24"), *NETWORK, how)
        fast, fast_fit = FFMPEG.fit(frame, *NETWORK, how)
        assert fast_fit == exact_fit == how.map(w, h, *NETWORK)
        assert fast.shape == exact.shape == (NETWORK[1], NETWORK[0], 3) and fast.dtype == np.uint8
        left, top, new_w, new_h = exact_fit.content()
        padding = np.ones(NETWORK[::-1], bool)
        padding[max(top, 0) : top + new_h, max(left, 0) : left + new_w] = False
        assert (fast[padding] == how.fill).all() and (exact[padding] == how.fill).all()
        assert np.abs(fast.astype(int) - exact.astype(int))[~padding].mean() < 3


# ----------------------------------------------------------------------------- in graph
def _fit_section(how: InputFit, frame: tuple[int, int], network_hw: tuple[int, int]) -> onnx.ModelProto:
    """The in-graph fit (build --frame-size) on an Identity network that shows its input."""
    from onnx import helper

    from cvexport.export.graph import GraphEditor
    from cvexport.export.sections import fit_frames_uint8_nhwc

    shape = ["batch", 3, *network_hw]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["shown"])], "fit",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("shown", TensorProto.FLOAT, shape)])
    editor = GraphEditor(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]))
    fit_frames_uint8_nhwc(editor, "input", IMAGENET_MEAN, IMAGENET_STD, network_hw, frame, how=how)
    return editor.model


class _Contract:
    """An InputContract's fields the torch reference (preprocess.letterbox_frames) reads."""

    def __init__(self, how: InputFit, frame, network):
        self.fit, self.crop_fraction, self.mean = how.mode, how.crop_fraction, IMAGENET_MEAN
        self.width, self.height = frame
        self.network_size = network


@pytest.mark.parametrize("frame", [(640, 480), (200, 360), (96, 64)])
@pytest.mark.parametrize("mode", ["letterbox", "stretch", "top_left"])
def test_the_in_graph_fit_equals_the_host_fit(mode, frame):
    """The graph's fit of camera frames against the runtime's of the same frames: padding
    identical, picture within the two resizes' difference (Pillow's antialiased bilinear vs
    Resize's half-pixel bilinear after the box prefilter), measured against the letterbox's, which
    ``test_frame_size`` holds to the same detections; and equal to the torch reference the
    build's parity check runs."""
    import onnxruntime as ort

    from cvexport.preprocess import letterbox_frames

    how = MODES[mode]
    session = ort.InferenceSession(_fit_section(how, frame, NETWORK[::-1]).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    frames = np.stack([_photo(*frame), _drawn(*frame)[0]])
    got = session.run(["shown"], {"images": frames})[0]
    host = np.stack([how.apply(f, *NETWORK)[0] for f in frames])
    expected = to_network_input(list(host), {"dtype": "float32", "mean": IMAGENET_MEAN, "std": IMAGENET_STD})
    assert got.shape == expected.shape
    # In pixel levels: normalization undone.
    std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1) * 255
    levels = np.abs(got - expected) * std
    left, top, new_w, new_h = how.map(*frame, *NETWORK).content()
    padding = np.ones(NETWORK[::-1], bool)
    padding[top : top + new_h, left : left + new_w] = False
    assert levels[:, :, padding].max(initial=0) < 1e-3  # the fill, exactly (float rounding only)
    assert levels[:, :, ~padding].mean() < 4, levels[:, :, ~padding].mean()
    # The parity check's reference runs the same fit in torch.
    with torch.no_grad():
        reference = letterbox_frames(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), _Contract(how, frame, NETWORK))
    reference = ((reference / 255 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
                 / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)).numpy()
    np.testing.assert_allclose(got, reference, atol=1e-4)


def test_the_letterbox_section_is_the_one_it_always_was():
    """Existing --frame-size bundles stay byte-identical: the letterbox's nodes and names."""
    model = _fit_section(LETTERBOX, (640, 480), (64, 96))
    ops = [(n.op_type, n.name) for n in model.graph.node if n.op_type != "Identity"]
    assert [op for op, _ in ops] == ["Cast", "Transpose", "AveragePool", "Shape", "Slice", "Concat", "Resize", "Pad",
                                     "Mul", "Add"]
    sections = {p.value for n in model.graph.node for p in n.metadata_props if p.key == "cvexport.section"}
    assert sections == {"letterbox", "normalize"}
    stretch = _fit_section(MODES["stretch"], (640, 480), (64, 96))
    assert "Pad" not in [n.op_type for n in stretch.graph.node]


def test_the_graph_does_not_crop():
    with pytest.raises(CvexportError, match="--frame-size .* does not centre-crop"):
        _fit_section(MODES["resize_crop"], (640, 480), (64, 64))


@pytest.fixture(scope="module")
def top_left_ssd(tmp_path_factory):
    """The SSD built as a top_left model (as torchvision's RetinaNet is), both ways: the runtime
    fits each image, or the graph fits 640x480 frames itself."""
    from dataclasses import replace

    from cvexport import registry
    from cvexport.build import BuildOptions, build
    from cvexport.bundle import load_bundle

    root = tmp_path_factory.mktemp("top_left")
    spec = registry._REGISTRY["ssd"]
    bundles = {}
    with pytest.MonkeyPatch.context() as patch:  # the builds only: the bundles' manifests carry the fit
        patch.setitem(registry._REGISTRY, "ssd", replace(spec, fit="top_left"))
        for name, frame_size in (("host", None), ("graph", (640, 480))):
            out = build(BuildOptions(model="ssd", input_format="uint8", frame_size=frame_size, max_batch=2,
                                     verify_images=0, engine="ort", out=str(root / name)), log=lambda line: None)
            bundles[name] = load_bundle(out)
    return bundles


def test_a_top_left_detector_runs_its_fit_on_the_host_and_in_the_graph(top_left_ssd):
    """Parity of the built graphs passed (the torch reference fits as the graph does), the
    manifest says the fit, and detections through either fit are the same objects (matched as
    sets at IoU >= 0.5, as test_frame_size holds the letterbox)."""
    from PIL import Image

    from cvexport.detection import predictions_as_outputs
    from cvexport.registry import get_spec
    from cvexport.runtime.predictor import Predictor
    from cvexport.tasks import get_task

    for bundle in top_left_ssd.values():
        assert bundle.input.fit == "top_left" and bundle.input.crop_fraction is None
        assert '"passed": true' in (bundle.path / "parity.json").read_text()
    manifest = json.loads((top_left_ssd["graph"].path / "manifest.json").read_text())
    assert manifest["input"]["resize"].startswith("top_left in graph from 640x480 frames to 256x256")
    assert manifest["input"]["fit"] == "top_left"
    task = get_task("detection")
    frames = [np.asarray(Image.fromarray(image).resize((640, 480), Image.BILINEAR))
              for image in task.sample_images(get_spec("ssd"), "val", range(8))]
    with Predictor(top_left_ssd["graph"]) as a, Predictor(top_left_ssd["host"]) as b:
        got, expected = a.predict(frames), b.predict(frames)
    assert sum(len(d) for d in expected) >= 8
    parity = task.new_parity("int8")
    for mine, theirs in zip(got, expected):
        parity.add(predictions_as_outputs(theirs), predictions_as_outputs(mine))
    assert parity.match_fraction >= 0.8, parity.summary()


# ----------------------------------------------------------------------------- manifest
def test_an_old_manifest_without_fit_reads_as_the_letterbox_and_is_written_back_as_read(build_bundle):
    from cvexport.manifest import Manifest

    source = json.loads((build_bundle(model="classifier", precision="fp32").path / "manifest.json").read_text())
    assert source["input"]["fit"] == "letterbox" and "crop_fraction" not in source["input"]
    assert Manifest.from_dict(source).to_dict() == source
    del source["input"]["fit"]  # as every bundle built before the field
    old = Manifest.from_dict(source)
    assert old.input.fit == "letterbox" and old.input.crop_fraction is None
    assert old.to_dict() == source and "fit" not in old.to_dict()["input"]


@pytest.mark.parametrize("change, field, found", [
    ({"fit": "squash"}, "input.fit", '"squash"'),
    ({"fit": "resize_crop"}, "input.crop_fraction", "missing"),
    ({"fit": "resize_crop", "crop_fraction": 0}, "input.crop_fraction", "0"),
    ({"crop_fraction": 0.875}, "input.crop_fraction", "0.875"),
])
def test_the_schema_checks_the_fit(build_bundle, tmp_path, change, field, found):
    import shutil

    from cvexport.bundle import load_bundle

    path = shutil.copytree(build_bundle(model="classifier", precision="fp32").path, tmp_path / "bundle")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["input"].update(change)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CvexportError, match=f"'{field}' is {found}") as excinfo:
        load_bundle(path)
    assert "\n" not in str(excinfo.value)


def test_the_schema_refuses_a_crop_for_a_segmenter(build_bundle, tmp_path):
    import shutil

    from cvexport.bundle import load_bundle

    path = shutil.copytree(build_bundle(model="fcn", precision="fp32").path, tmp_path / "bundle")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["input"].update(fit="resize_crop", crop_fraction=0.875)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CvexportError, match="'input.fit' is \"resize_crop\", expected another fit .*segmentation"):
        load_bundle(path)


# ----------------------------------------------------------------------------- specs
def test_specs_carry_their_fit():
    from cvexport.registry import get_spec, list_models

    for name in list_models():  # cvexport's own models were trained letterboxed
        assert (get_spec(name).fit, get_spec(name).crop_fraction) == ("letterbox", None)
    assert (get_spec("resnet18").fit, get_spec("resnet18").crop_fraction) == ("resize_crop", 0.875)
    assert get_spec("resnet50").crop_fraction == pytest.approx(224 / 232)  # IMAGENET1K_V2: resize 232
    assert get_spec("lraspp_mobilenet_v3_large").fit == "letterbox"
    for spec in (get_spec("resnet18"), get_spec("lraspp_mobilenet_v3_large")):
        assert spec.fit in FITS


# ---------------------------------------------------------------- a torchvision classifier
def test_a_torchvision_classifier_answers_as_torchvision_on_non_square_photos(resnet_bundle):  # noqa: F811
    """``Predictor`` (what run, stream and predict use) against torchvision itself: v2 Resize(73)
    + CenterCrop(64) + Normalize, then the network with the same weights, on landscape and
    portrait photographs. Top-1 equal, probabilities within 1e-3: Pillow's bilinear (antialiased
    when shrinking) and torchvision's antialiased tensor resize differ by a level on a few pixels
    (0.001 levels on average here, 6e-5 on the probabilities); the pictures are ones where these
    random weights' top two classes are at least 0.02 apart, so top-1 is no coin flip. The
    letterbox, the fit these bundles had before, misses by far more than the tolerance."""
    from torchvision.transforms import v2

    from cvexport.models.photos import photo
    from cvexport.runtime.predictor import Predictor

    bundle, state = resnet_bundle
    contract = bundle.input
    assert (contract.fit, contract.crop_fraction) == ("resize_crop", 0.875)
    assert json.loads((bundle.path / "manifest.json").read_text())["input"]["resize"] == (
        "resize_crop (shorter side to 73 keeping aspect, then centre crop 64x64)")
    portrait = {name: np.ascontiguousarray(photo(name)[:, : photo(name).shape[0] * 2 // 3])
                for name in ("retina", "coins", "hubble_deep_field")}
    pictures = [photo("clock"), photo("hubble_deep_field"), *portrait.values()]  # 400x300, 1000x872; portraits
    assert all(p.shape[0] != p.shape[1] for p in pictures)
    transform = v2.Compose([v2.Resize(round(SIDE / 0.875), antialias=True), v2.CenterCrop(SIDE),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    batch = torch.stack([transform(torch.from_numpy(p.copy()).permute(2, 0, 1)) for p in pictures]).numpy()

    def probabilities(inputs: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(_torch_reference("resnet18", state, len(NAMES), inputs)), -1).numpy()

    expected = probabilities(batch)
    ranked = np.sort(expected, axis=1)
    assert (ranked[:, -1] - ranked[:, -2] > 0.02).all(), expected
    with Predictor(bundle, "ort") as predictor:
        got = np.stack([r.probabilities for r in predictor.predict(pictures)])
    assert (got.argmax(1) == expected.argmax(1)).all(), (got, expected)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    letterboxed = to_network_input([LETTERBOX.apply(p, SIDE, SIDE)[0] for p in pictures], contract)
    assert np.abs(probabilities(letterboxed) - expected).max() > 1e-2


def test_a_torchvision_classifier_refuses_the_in_graph_fit(tmp_path, capsys):
    path = _save(tmp_path, "resnet18", _state_dict("resnet18", 2))
    err = _error_line(capsys, ["build", "resnet18", "--weights", str(path), "--input-size", "32", "--input", "uint8",
                               "--frame-size", "320x240", "--out", str(tmp_path / "b")])
    assert "does not centre-crop (fit resize_crop)" in err


def test_int8_calibration_fits_as_the_spec_says():
    """Calibration ranges come from what the deployed network sees: a torchvision classifier's
    calibration images are resized and centre-cropped, not letterboxed."""
    from dataclasses import replace

    from cvexport.export.quantize import calibration_batches
    from cvexport.models.photos import photo
    from cvexport.registry import get_spec

    spec = replace(get_spec("resnet18"), input_size=(SIDE, SIDE))
    pictures = [photo("chelsea"), photo("rocket"), np.ascontiguousarray(photo("chelsea")[:, 100:300])]

    def sample_images(spec_, split, indices, seed=0):
        return [pictures[i] for i in indices]

    batches = list(calibration_batches(sample_images, spec, 3, batch_size=2))
    contract = {"dtype": "float32", "mean": spec.mean, "std": spec.std}
    expected = to_network_input([InputFit.of(spec).apply(p, SIDE, SIDE)[0] for p in pictures], contract)
    np.testing.assert_array_equal(np.concatenate(batches), expected)
    letterboxed = to_network_input([LETTERBOX.apply(p, SIDE, SIDE)[0] for p in pictures], contract)
    assert np.abs(np.concatenate(batches) - letterboxed).mean() > 0.1
