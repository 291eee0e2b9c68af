"""``build --input uint8 --frame-size WxH``: the graph takes a fixed camera's frames and
letterboxes them itself (Resize + Pad), results map back exactly as for the Python letterbox."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvexport.detection import predictions_as_outputs
from cvexport.errors import CvexportError
from cvexport.images import letterbox, letterbox_map
from cvexport.runtime import create_runner
from cvexport.runtime.predictor import Predictor, prepare_batch

FRAME = (640, 480)  # width, height: a 4:3 camera


def _camera_frames(count: int, size=FRAME) -> list[np.ndarray]:
    """Val photographs with shapes, stretched to the camera's frame size (non-square content)."""
    from PIL import Image

    from cvexport.registry import get_spec
    from cvexport.tasks import get_task

    spec = get_spec("ssd")
    images = get_task("detection").sample_images(spec, "val", range(count))
    return [np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)) for image in images]


def test_composed_letterbox_maps_boxes_as_the_two_fits_in_turn():
    outer, inner = letterbox_map(300, 500, *FRAME), letterbox_map(*FRAME, 256, 256)
    boxes = np.array([[0.2, 0.3, 0.6, 0.9], [0.0, 0.0, 1.0, 1.0]])
    in_frame = inner.boxes_to_original(boxes, 256, 256) / np.array([*FRAME, *FRAME])
    np.testing.assert_allclose(outer.then(inner).boxes_to_original(boxes, 256, 256),
                               outer.boxes_to_original(in_frame, *FRAME), atol=1e-9)


@pytest.mark.parametrize("model", ["ssd", "fcn"])
def test_frame_bundle_takes_camera_frames_and_matches_pytorch(build_bundle, model):
    bundle = build_bundle(model=model, input_format="uint8", frame_size=FRAME)
    contract = bundle.input
    assert (contract.width, contract.height, contract.dtype) == (*FRAME, "uint8")
    from cvexport.registry import get_spec

    height, width = get_spec(model).input_size
    assert contract.network_size == (width, height)
    assert bundle.manifest.to_dict() == json.loads((bundle.path / "manifest.json").read_text())  # letterbox kept
    sections = {p.value for n in __import__("onnx").load(str(bundle.onnx_path)).graph.node
                for p in n.metadata_props if p.key == "cvexport.section"}
    assert {"letterbox", "normalize"} <= sections
    frames = _camera_frames(4)
    batch = prepare_batch(bundle, frames)
    assert batch.feed["images"].shape == (4, FRAME[1], FRAME[0], 3)
    np.testing.assert_array_equal(batch.feed["images"][0], frames[0])  # the frame goes in untouched
    from cvexport.tasks import get_task

    parity = get_task(bundle.task).new_parity("fp32").add(create_runner(bundle, "torch").infer(batch.feed),
                                                          create_runner(bundle, "ort").infer(batch.feed))
    assert parity.passed(), parity.summary()


def test_frame_bundle_results_agree_with_the_python_letterbox(build_bundle):
    """The two resizes differ (Pillow's antialiased bilinear vs Resize's half-pixel bilinear):
    detections on camera frames must still be the same objects."""
    from cvexport.tasks import get_task

    in_graph = build_bundle(model="ssd", input_format="uint8", frame_size=FRAME)
    python = build_bundle(model="ssd", input_format="uint8")
    frames = _camera_frames(8)
    with Predictor(in_graph) as a, Predictor(python) as b:
        got, expected = a.predict(frames), b.predict(frames)
    assert sum(len(d) for d in expected) >= 8
    for detections in got:
        for box in detections.xyxy:
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= FRAME[0] and 0 <= y1 < y2 <= FRAME[1], box
    # Matched as sets by class at IoU >= 0.5, as INT8 parity does: same objects, boxes within the
    # resize difference.
    parity = get_task("detection").new_parity("int8")
    for mine, theirs in zip(got, expected):
        parity.add(predictions_as_outputs(theirs), predictions_as_outputs(mine))
    assert parity.match_fraction >= 0.8, parity.summary()


def test_other_image_sizes_are_fitted_to_the_frame_first(build_bundle):
    bundle = build_bundle(model="fcn", input_format="uint8", frame_size=FRAME)
    image = _camera_frames(1, size=(300, 500))[0]
    batch = prepare_batch(bundle, [image])
    np.testing.assert_array_equal(batch.feed["images"][0], letterbox(image, *FRAME)[0])
    with Predictor(bundle) as predictor:
        labels = predictor.predict(image)[0]
    assert labels.labels.shape == image.shape[:2]


def test_frame_size_needs_uint8_input():
    from cvexport.build import BuildOptions, build

    with pytest.raises(CvexportError, match="--frame-size .* add --input uint8"):
        build(BuildOptions(model="ssd", frame_size=FRAME, out="/nonexistent/never-written"))


@pytest.mark.parametrize("text", ["1280by720", "1280x", "0x720", "x"])
def test_frame_size_flag_is_parsed_or_refused_in_one_line(text, capsys):
    from cvexport.cli import make_parser

    with pytest.raises(SystemExit):
        make_parser().parse_args(["build", "ssd", "--input", "uint8", "--frame-size", text])
    assert "--frame-size" in capsys.readouterr().err


# ------------------------------------------------------- frame sizes that leave the network little
@pytest.mark.parametrize("frame, warned", [((16, 16), True), ((64, 64), True), ((8192, 16), True),
                                          ((128, 128), False), ((640, 480), False), ((1280, 720), False),
                                          ((3840, 1080), False)])
def test_frame_size_that_leaves_the_network_few_pixels_is_warned(frame, warned):
    from cvexport.build import frame_size_warning
    from cvexport.registry import get_spec

    line = frame_size_warning(get_spec("ssd"), frame)
    assert (line is not None) is warned, line
    if warned:
        assert line.startswith(f"--frame-size {frame[0]}x{frame[1]} gives the 256x256 network") and "\n" not in line
    assert frame_size_warning(get_spec("ssd"), None) is None


def test_a_16x16_frame_build_is_warned_and_refused_for_comparing_nothing(tmp_path):
    """Issue 22: '--frame-size 16x16' built with "parity 0/0 detections matched -> PASS"."""
    from cvexport.build import BuildOptions, ParityError, build

    lines = []
    out = tmp_path / "b"
    with pytest.raises(ParityError) as info:
        build(BuildOptions(model="ssd", input_format="uint8", frame_size=(16, 16), out=str(out), verify_images=0,
                           engine="ort"), log=lines.append)
    assert lines[0].startswith("warning: --frame-size 16x16 gives the 256x256 network 16x16 pixels")
    message = str(info.value)
    assert "nothing compared (neither run gave a detection on the 8 images)" in message and "\n" not in message
    assert "outside the" not in message and "bug in the export" not in message
    assert "--frame-size is the camera's real frame size" in message
    assert not out.exists()


# ------------------------------------------------------------------ run and the built frame size
def test_run_warns_once_per_frame_size_other_than_the_built_one(build_bundle, tmp_path, capsys):
    from PIL import Image

    from cvexport.cli import main

    bundle = build_bundle(model="ssd", input_format="uint8", frame_size=FRAME)
    paths = []
    for i, size in enumerate([(1280, 720), FRAME, (1280, 720), (300, 500)]):
        paths.append(tmp_path / f"in{i}.png")
        Image.fromarray(_camera_frames(1, size=size)[0]).save(paths[-1])
    capsys.readouterr()
    assert main(["run", str(bundle.path), *map(str, paths), "--out", str(tmp_path / "out")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cvexport: warning:")]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("cvexport: warning: frames of 1280x720 differ from the 640x480 frames")
    assert warnings[1].startswith("cvexport: warning: frames of 300x500 differ")
    # Frames of the built size are not warned about.
    assert main(["run", str(bundle.path), str(paths[1]), "--out", str(tmp_path / "out")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_bench_fp32_graph_of_a_frame_bundle_takes_its_frames(build_bundle):
    import onnx

    from cvexport.bench import fp32_graph

    bundle = build_bundle(model="ssd", input_format="uint8", frame_size=FRAME)
    dims = lambda value: [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]  # noqa: E731
    graph, built = fp32_graph(bundle, warn=lambda line: None), onnx.load(str(bundle.onnx_path))
    assert dims(graph.graph.input[0])[1:] == dims(built.graph.input[0])[1:] == [FRAME[1], FRAME[0], 3]
    assert [dims(o) for o in graph.graph.output] == [dims(o) for o in built.graph.output]
