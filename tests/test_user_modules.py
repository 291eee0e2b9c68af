"""``cvexport build --module FILE.py:factory``: a user's own nn.Module, end to end.

Tiny modules are written into tmp_path (a conv classifier, a segmenter, an anchored detector
and a decoded-boxes detector with seeded weights and non-flat outputs); each is built at 64x64
(fp32, max batch 2) and the bundle's answer is compared with the module's own, computed here
from a fresh import of the same file (detections through an independent decode + NMS written
below, compared as sets by the detection task's parity). Every bad input is one line.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from cvexport.build import BuildOptions, build
from cvexport.bundle import load_bundle
from cvexport.cli import main
from cvexport.errors import CvexportError
from tests.cli_helpers import one_line_stderr

SIDE = 64
NAMES = ("cat", "dog", "bird", "fish")

COMMON = """
import torch
from torch import nn


def body():
    # 64x64 -> 16 channels at 8x8
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())


def grid_centres(cells=8):
    steps = (torch.arange(cells, dtype=torch.float32) + 0.5) / cells
    cy, cx = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack((cx.reshape(-1), cy.reshape(-1)), -1)  # [cells*cells, 2], row by row
"""

MODULES = {
    "classifier.py": COMMON + """
class Classifier(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.body = body()
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


def make_model(num_classes):
    torch.manual_seed(0)
    return Classifier(num_classes)


def wrong_rank(num_classes):
    model = make_model(num_classes)
    model.forward = lambda x: model.fc(model.body(x).mean((2, 3)))[:, :, None]
    return model


def two_outputs():
    model = make_model(3)
    model.forward = lambda x: (model.fc(model.body(x).mean((2, 3))), x)
    return model


def raises(num_classes):
    raise ValueError("no such backbone: resnet9000\\nsecond line")


def not_a_module():
    return 42
""",
    "segmenter.py": COMMON + """
class Segmenter(nn.Module):
    def __init__(self, num_classes=3, scale=8):
        super().__init__()
        self.body = body()
        self.head = nn.Conv2d(16, num_classes, 1)
        self.scale = scale

    def forward(self, x):
        return nn.functional.interpolate(self.head(self.body(x)) * 4, scale_factor=self.scale, mode="nearest")


def make_segmenter():
    torch.manual_seed(2)
    model = Segmenter()
    for parameter in model.parameters():  # weights far from the init: labels that vary by pixel
        parameter.data.normal_(0, 0.5)
    return model


def half_size():
    return Segmenter(scale=4)
""",
    "detectors.py": COMMON + """
SIZES = (0.2, 0.35)


class AnchorDetector(nn.Module):
    # TinySSD's contract: class logits [B, N, C+1] (background column 0), box offsets [B, N, 4]
    # against anchors [N, 4] (normalized xyxy), two anchors per cell, pixel by pixel.
    def __init__(self, num_classes=2, rows=None):
        super().__init__()
        self.num_classes = num_classes
        self.body = body()
        self.cls = nn.Conv2d(16, len(SIZES) * (num_classes + 1), 3, padding=1)
        self.box = nn.Conv2d(16, len(SIZES) * 4, 3, padding=1)
        centres = grid_centres().repeat_interleave(len(SIZES), 0)
        sizes = torch.tensor(SIZES).repeat(64)[:, None].expand(-1, 2)
        anchors = torch.cat((centres - sizes / 2, centres + sizes / 2), -1)
        self.register_buffer("anchors", anchors[:rows], persistent=False)

    def forward(self, x):
        f = self.body(x)
        b = x.shape[0]
        logits = self.cls(f).permute(0, 2, 3, 1).reshape(b, -1, self.num_classes + 1) * 6
        offsets = self.box(f).permute(0, 2, 3, 1).reshape(b, -1, 4)
        return logits, offsets


def make_anchored(num_classes=2):
    torch.manual_seed(3)
    return AnchorDetector(num_classes)


def short_anchors():
    torch.manual_seed(3)
    return AnchorDetector(2, rows=100)


class DecodedDetector(nn.Module):
    # YOLO-style: the network decodes its boxes (normalized xyxy) and gives class logits.
    cvexport_head = {"head": "xyxy", "scores": "sigmoid"}

    def __init__(self, num_classes=3, pixels_cxcywh=False):
        super().__init__()
        self.body = body()
        self.pred = nn.Conv2d(16, 4 + num_classes, 1)
        self.register_buffer("centres", grid_centres(), persistent=False)
        self.pixels_cxcywh = pixels_cxcywh

    def forward(self, x):
        b = x.shape[0]
        p = self.pred(self.body(x)).permute(0, 2, 3, 1).reshape(b, 64, -1)
        centre = self.centres + 0.1 * torch.tanh(p[..., :2])
        size = 0.05 + 0.15 * torch.sigmoid(p[..., 2:4])
        if self.pixels_cxcywh:  # (cx, cy, w, h) in the input's pixels, probabilities already
            scale = torch.tensor([x.shape[3], x.shape[2]] * 2, dtype=x.dtype)
            return torch.cat((centre, size), -1) * scale, torch.sigmoid(p[..., 4:] * 5)
        return torch.cat((centre - size / 2, centre + size / 2), -1), p[..., 4:] * 5


def make_decoded():
    torch.manual_seed(4)
    return DecodedDetector()


def make_pixels():
    torch.manual_seed(4)
    return DecodedDetector(pixels_cxcywh=True)
""",
}


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    folder = tmp_path_factory.mktemp("modules")
    for name, text in MODULES.items():
        (folder / name).write_text(textwrap.dedent(text))
    return folder


def _fresh(modules, file: str, factory: str, *args):
    """The module the file's factory makes, imported here on its own (not through cvexport)."""
    import importlib.util

    found = importlib.util.spec_from_file_location(f"reference_{file[:-3]}", modules / file)
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return getattr(module, factory)(*args).eval()


def _pictures(count: int, seed: int) -> list[np.ndarray]:
    from cvexport.models.photos import photo_samples

    return photo_samples("val", range(count), 80, seed=seed)


def _build(modules, reference: str, task: str, out, **values):
    from cvexport.user_module import ModuleRequest

    head = {key: values.pop(key) for key in ("head", "scores", "box_units", "background") if key in values}
    request = ModuleRequest(reference=f"{modules}/{reference}", task=task, input_size=(SIDE, SIDE), head=head,
                            mean=values.pop("mean", None), std=values.pop("std", None))
    return load_bundle(build(BuildOptions(model=request.name, module=request, max_batch=2, out=str(out),
                                          engine="ort", **values), log=lambda line: None))


# --------------------------------------------------------------------------- classification
@pytest.fixture(scope="module")
def classifier_bundle(modules, tmp_path_factory):
    """Built from a state dict of other weights than the factory's init, with class names."""
    tmp = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(11)
    trained = _fresh(modules, "classifier.py", "make_model", len(NAMES))
    for parameter in trained.parameters():
        parameter.data.normal_(0, 0.5)
    torch.save(trained.state_dict(), tmp / "trained.pth")
    (tmp / "names.txt").write_text("\n".join(NAMES) + "\n")
    bundle = _build(modules, "classifier.py:make_model", "classification", tmp / "bundle",
                    weights=str(tmp / "trained.pth"), classes=str(tmp / "names.txt"))
    return bundle, trained


def test_classifier_answers_as_the_module(classifier_bundle):
    from cvexport.runtime.predictor import Predictor, prepare_batch

    bundle, trained = classifier_bundle
    manifest = bundle.manifest
    assert manifest.model == "module:classifier.py:make_model" and tuple(manifest.class_names) == NAMES
    assert (manifest.input.height, manifest.input.width) == (SIDE, SIDE)
    assert "weights of trained.pth" in manifest.description
    assert '"passed": true' in (bundle.path / "parity.json").read_text()
    pictures = _pictures(3, seed=5)
    with torch.no_grad():
        expected = torch.softmax(trained(torch.from_numpy(prepare_batch(bundle, pictures).feed["input"])), -1).numpy()
    assert np.ptp(expected, axis=0).max() > 0.1  # answers that differ by picture: the comparison can fail
    for backend in ("ort", "torch"):  # torch: rebuilt from the module file the bundle records
        with Predictor(bundle, backend) as predictor:
            got = predictor.predict(pictures)
        np.testing.assert_allclose(np.stack([p.probabilities for p in got]), expected, atol=1e-5)
        assert [p.class_id for p in got] == list(expected.argmax(1))


def test_changed_or_missing_module_file_is_one_line(classifier_bundle, modules, tmp_path, capsys):
    bundle, _ = classifier_bundle
    path = modules / "classifier.py"
    text = path.read_text()
    picture = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(_pictures(1, seed=1)[0]).save(picture)
    argv = ["run", str(bundle.path), str(picture), "--backend", "torch", "--out", str(tmp_path / "out")]
    try:
        path.write_text(text + "\n# edited\n")
        assert main(argv) == 2
        assert "classifier.py has changed since" in one_line_stderr(capsys)
        path.unlink()
        assert main(argv) == 2
        assert "is gone" in one_line_stderr(capsys)
    finally:
        path.write_text(text)
    # ONNX Runtime needs nothing but the bundle.
    assert main(argv[:3] + ["--out", str(tmp_path / "ort")]) == 0


def test_rebuild_from_the_bundles_checkpoint(classifier_bundle, modules, tmp_path):
    """A bundle's weights.safetensors builds again: its class names make the factory's count."""
    bundle, _ = classifier_bundle
    again = _build(modules, "classifier.py:make_model", "classification", tmp_path / "again", verify_images=0,
                   weights=str(bundle.path / "weights.safetensors"))
    assert tuple(again.manifest.class_names) == NAMES
    assert again.verify_file("onnx").read_bytes() == bundle.verify_file("onnx").read_bytes()


def test_without_weights_the_factorys_init_is_recorded(modules, tmp_path):
    """No --weights: the factory's own init, said in the log; a HEIGHTxWIDTH input; the factory
    is called with the class file's count."""
    from cvexport.user_module import ModuleRequest

    (tmp_path / "names.txt").write_text("a\nb\n")
    lines = []
    request = ModuleRequest(reference=f"{modules}/classifier.py:make_model", task="classification",
                            input_size=(48, 64))
    out = build(BuildOptions(model=request.name, module=request, classes=str(tmp_path / "names.txt"), max_batch=1,
                             out=str(tmp_path / "b"), engine="ort", verify_images=0), log=lines.append)
    bundle = load_bundle(out)
    assert any("keeps the initialization its factory gives" in line for line in lines)
    assert (bundle.manifest.input.height, bundle.manifest.input.width) == (48, 64)
    assert tuple(bundle.manifest.class_names) == ("a", "b")
    assert "its factory's initialization" in bundle.manifest.description


# ----------------------------------------------------------------------------- segmentation
def test_segmenter_answers_as_the_module(modules, tmp_path):
    from cvexport.runtime.predictor import Predictor, prepare_batch

    bundle = _build(modules, "segmenter.py:make_segmenter", "segmentation", tmp_path / "bundle",
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert tuple(bundle.manifest.class_names) == ("class_1", "class_2", "class_3")
    assert list(bundle.manifest.input.mean) == [0.5] * 3 and list(bundle.manifest.input.std) == [0.25] * 3
    pictures = _pictures(2, seed=7)
    feed = prepare_batch(bundle, pictures).feed
    with torch.no_grad():
        expected = _fresh(modules, "segmenter.py", "make_segmenter")(torch.from_numpy(feed["input"])).argmax(1).numpy()
    assert len(np.unique(expected)) > 1
    with Predictor(bundle, "ort") as predictor:
        labels = np.asarray(predictor.infer(feed)["labels"])
    assert (labels == expected).mean() > 0.999


# -------------------------------------------------------------------------------- detection
def _reference_detections(boxes: torch.Tensor, scores: torch.Tensor, manifest) -> dict[str, np.ndarray]:
    """Candidates above the threshold, per-class NMS, the best K: the detection contract, written
    here from torchvision's batched_nms (not cvexport's post-processing)."""
    import torchvision

    post = manifest.postprocess
    k = post.max_detections
    out = {"num_detections": np.zeros((len(boxes), 1), np.int32), "detection_boxes": np.zeros((len(boxes), k, 4)),
           "detection_scores": np.zeros((len(boxes), k)), "detection_classes": np.zeros((len(boxes), k), np.int32)}
    for b in range(len(boxes)):
        anchor, cls = torch.nonzero(scores[b] > post.score_threshold, as_tuple=True)
        keep = torchvision.ops.batched_nms(boxes[b, anchor], scores[b, anchor, cls], cls, post.iou_threshold)[:k]
        n = len(keep)
        out["num_detections"][b, 0] = n
        out["detection_boxes"][b, :n] = boxes[b, anchor[keep]].numpy()
        out["detection_scores"][b, :n] = scores[b, anchor[keep], cls[keep]].numpy()
        out["detection_classes"][b, :n] = cls[keep].numpy()
    return out


def _same_detections(bundle, reference: dict, got: dict) -> None:
    from cvexport.tasks import get_task

    parity = get_task("detection").new_parity("fp32", bundle.manifest).add(reference, got)
    assert parity.reference_detections > 10, "too few detections to compare"
    assert parity.passed(), parity.summary()


def test_anchored_detector_answers_as_the_module(modules, tmp_path):
    from cvexport.runtime.predictor import Predictor, prepare_batch

    # Through the command line: the head declared by the flag.
    assert main(["build", "--module", f"{modules}/detectors.py:make_anchored", "--task", "detection", "--input-size",
                 str(SIDE), "--head", "anchors", "--max-batch", "2", "--backend", "ort",
                 "--out", str(tmp_path / "bundle")]) == 0
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.manifest.model == "module:detectors.py:make_anchored"
    assert bundle.manifest.postprocess.iou_threshold == 0.45
    pictures = _pictures(2, seed=9)
    feed = prepare_batch(bundle, pictures).feed
    model = _fresh(modules, "detectors.py", "make_anchored")
    with torch.no_grad():
        logits, offsets = model(torch.from_numpy(feed["input"]))
    # SSD decoding (variances 0.1, 0.2) against the module's anchors; softmax, background dropped.
    anchors = model.anchors
    centre, size = (anchors[:, :2] + anchors[:, 2:]) / 2, anchors[:, 2:] - anchors[:, :2]
    xy = centre + offsets[..., :2] * 0.1 * size
    wh = size * torch.exp(offsets[..., 2:] * 0.2)
    boxes = torch.cat((xy - wh / 2, xy + wh / 2), -1)
    reference = _reference_detections(boxes, torch.softmax(logits, -1)[..., 1:], bundle.manifest)
    with Predictor(bundle, "ort") as predictor:
        _same_detections(bundle, reference, predictor.infer(feed))


def test_decoded_detector_answers_as_the_module(modules, tmp_path):
    """The YOLO-style head, declared by the module's cvexport_head attribute: decoded boxes,
    sigmoid scores, no background, clipped to the input (needs the detection task's decoded
    sections)."""
    from cvexport.runtime.predictor import Predictor, prepare_batch

    bundle = _build(modules, "detectors.py:make_decoded", "detection", tmp_path / "bundle")
    assert tuple(bundle.manifest.class_names) == ("class_1", "class_2", "class_3")
    pictures = _pictures(2, seed=11)
    feed = prepare_batch(bundle, pictures).feed
    with torch.no_grad():
        boxes, logits = _fresh(modules, "detectors.py", "make_decoded")(torch.from_numpy(feed["input"]))
    reference = _reference_detections(boxes.clamp(0, 1), torch.sigmoid(logits), bundle.manifest)
    with Predictor(bundle, "ort") as predictor:
        _same_detections(bundle, reference, predictor.infer(feed))


def test_decoded_head_flags_override_the_attribute(modules, tmp_path, capsys):
    """--head cxcywh --box-units pixels --scores probabilities over the class attribute's
    xyxy/sigmoid: the same network's boxes in pixels (centre, size) and scores already in 0..1,
    on a non-square input."""
    from cvexport.runtime.predictor import Predictor, prepare_batch

    height, width = SIDE, 2 * SIDE
    assert main(["build", "--module", f"{modules}/detectors.py:make_pixels", "--task", "detection", "--input-size",
                 f"{height}x{width}", "--head", "cxcywh", "--box-units", "pixels", "--scores", "probabilities",
                 "--max-batch", "2", "--backend", "ort", "--out", str(tmp_path / "bundle")]) == 0
    bundle = load_bundle(tmp_path / "bundle")
    pictures = _pictures(2, seed=13)
    feed = prepare_batch(bundle, pictures).feed
    with torch.no_grad():
        boxes, scores = _fresh(modules, "detectors.py", "make_pixels")(torch.from_numpy(feed["input"]))
    centre, size = boxes[..., :2], boxes[..., 2:]
    corners = torch.cat((centre - size / 2, centre + size / 2), -1) / torch.tensor([width, height] * 2)
    reference = _reference_detections(corners.clamp(0, 1), scores, bundle.manifest)
    with Predictor(bundle, "ort") as predictor:
        _same_detections(bundle, reference, predictor.infer(feed))
    # bench rebuilds the network from the module file; verify without --data says what it needs.
    from cvexport.bench import run_benchmark

    record = run_benchmark(bundle, ("torch",), batch=1, warmup=0, iters=1)
    assert "torch" in record["results"]
    capsys.readouterr()
    assert main(["verify", str(bundle.path)]) == 2
    assert "has no labelled data of its own here" in one_line_stderr(capsys)


# ---------------------------------------------------------------------------- one-line errors
def _error(capsys, modules, reference: str, *flags: str, task: str = "classification") -> str:
    file = reference.partition(":")[0]
    argv = ["build", "--module", f"{modules}/{reference}" if file.endswith(".py") and "/" not in file else reference,
            "--task", task, "--input-size", str(SIDE), "--backend", "ort", "--max-batch", "2", *flags]
    assert main(argv) == 2
    return one_line_stderr(capsys)


def test_module_errors_are_one_line(modules, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    assert "file /nowhere/net.py not found" in _error(capsys, modules, "/nowhere/net.py:make")
    assert "classifier.py has no attribute 'make_it'" in _error(capsys, modules, "classifier.py:make_it")
    assert "expected FILE.py:FACTORY" in _error(capsys, modules, f"{modules}/classifier.py")
    assert "no module named 'no_such_pkg.nets'" in _error(capsys, modules, "no_such_pkg.nets:make")
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise RuntimeError('CUDA not available\\nmore')\n")
    assert "importing broken.py raised RuntimeError: CUDA not available" in _error(capsys, modules,
                                                                                   f"{broken}:make")
    line = _error(capsys, modules, "classifier.py:raises", "--classes", str(names))
    assert "raises(3) raised ValueError: no such backbone: resnet9000" in line
    assert "make_model() takes the class count; pass --classes" in _error(capsys, modules, "classifier.py:make_model")
    assert "returned a int, not a torch.nn.Module" in _error(capsys, modules, "classifier.py:not_a_module")


def test_output_errors_are_one_line(modules, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n")
    line = _error(capsys, modules, "classifier.py:wrong_rank", "--classes", str(names))
    assert "output 0 (logits) has shape [2, 3, 1], expected [2, C] (batch, classes)" in line
    line = _error(capsys, modules, "classifier.py:two_outputs")
    assert "returns 2 outputs, expected 1 (logits)" in line
    line = _error(capsys, modules, "segmenter.py:half_size", task="segmentation")
    assert f"output 0 (logits) has shape [2, 3, 32, 32], expected [2, C, {SIDE}, {SIDE}]" in line
    line = _error(capsys, modules, "detectors.py:short_anchors", "--head", "anchors", task="detection")
    assert "output 1 (box_offsets) has shape [2, 128, 4], expected [2, 100, 4] (N = the rows of model.anchors)" in line
    line = _error(capsys, modules, "detectors.py:make_anchored", "--head", "xyxy", "--scores", "sigmoid",
                  task="detection")
    assert "output 0 (boxes) has shape [2, 128, 3], expected [2, 128, 4]" in line
    line = _error(capsys, modules, "detectors.py:make_anchored", task="detection")
    assert "a detector declares its outputs: --head anchors" in line
    line = _error(capsys, modules, "detectors.py:make_anchored", "--head", "xyxy", task="detection")
    assert "--scores sigmoid, softmax or probabilities" in line
    line = _error(capsys, modules, "classifier.py:make_model", "--classes", str(names), "--head", "anchors")
    assert "--task classification has none" in line


def test_class_file_and_weights_errors_are_one_line(modules, tmp_path, capsys):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nb\n")
    assert "lists 'b' more than once" in _error(capsys, modules, "classifier.py:make_model", "--classes", str(names))
    # A factory that ignores the count: the file must list as many names as the module outputs.
    names.write_text("a\nb\n")
    line = _error(capsys, modules, "segmenter.py:make_segmenter", "--classes", str(names), task="segmentation")
    assert "lists 2 names, but" in line and "has 3 classes" in line
    other = _fresh(modules, "classifier.py", "make_model", 5).state_dict()
    torch.save(other, tmp_path / "five.pth")
    names.write_text("a\nb\nc\n")
    line = _error(capsys, modules, "classifier.py:make_model", "--classes", str(names), "--weights",
                  str(tmp_path / "five.pth"))
    assert "five.pth does not fit the module: 'fc.weight' has shape [5, 16], expected [3, 16]" in line
    torch.save({"body.0.weight": other["body.0.weight"]}, tmp_path / "part.pth")
    line = _error(capsys, modules, "classifier.py:make_model", "--classes", str(names), "--weights",
                  str(tmp_path / "part.pth"))
    assert "part.pth does not fit the module: missing 'body.0.bias' (and 4 more)" in line
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    line = _error(capsys, modules, "classifier.py:make_model", "--classes", str(names), "--weights",
                  str(tmp_path / "junk.pth"))
    assert "junk.pth cannot be read as a torch state dict" in line


def test_flag_errors_are_one_line(modules, capsys):
    assert main(["build", "--module", f"{modules}/classifier.py:make_model", "--input-size", "64"]) == 2
    assert "needs --task" in one_line_stderr(capsys)
    assert main(["build", "ssd", "--task", "detection"]) == 2
    assert "--task go with --module" in one_line_stderr(capsys)
    assert main(["build", "ssd", "--module", f"{modules}/classifier.py:make_model"]) == 2
    assert "not both" in one_line_stderr(capsys)
    assert main(["build", "--module", f"{modules}/classifier.py:make_model", "--task", "classification",
                 "--input-size", "64", "--mean", "123.7,116.3,103.5"]) == 2
    assert "give values of x / 255" in one_line_stderr(capsys)


def test_module_specs_come_from_their_checkpoint():
    from pathlib import Path

    from cvexport.registry import get_spec
    from cvexport.user_module import ModuleRequest

    request = ModuleRequest(reference="nets/my_net.py:make_model", task="detection", input_size=(64, 64))
    assert request.name == "module:my_net.py:make_model"
    options = BuildOptions(model=request.name, module=request, precision="fp16", task_options={"nms": "efficient"})
    assert options.resolved_out() == Path("bundles/my_net-make_model-fp16-efficient")

    spec = get_spec("module:net.py:make")
    assert spec.family == "module"
    with pytest.raises(CvexportError, match="made from its checkpoint"):
        spec.for_weights(None)
