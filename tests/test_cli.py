"""The ``cvexport`` command line (cvexport/cli.py), in-process, plus one run of the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvexport.cli import main
from cvexport.errors import CvexportError
from cli_helpers import one_line_stderr


@pytest.fixture(scope="module")
def small_bundle(build_bundle):
    return build_bundle(precision="fp32", max_batch=2)


@pytest.fixture(scope="module")
def ort_runner(bundle):
    from cvexport.runtime import create_runner

    with create_runner(bundle, "ort") as runner:
        yield runner


@pytest.fixture(scope="module")
def sample_images():
    """uint8 RGB val images that contain objects (so detections are expected), at non-square sizes."""
    from cvexport.models.detection_data import make_sample

    samples = [make_sample("val", i) for i in range(16)]
    with_objects = [s.image for s in samples if len(s.boxes) >= 2][:3]
    sizes = [(320, 240), (200, 300), (256, 256)]
    return [np.asarray(Image.fromarray(img).resize(size, Image.BILINEAR)) for img, size in zip(with_objects, sizes)]



# ------------------------------------------------------------------------ entry point
def test_console_script_list():
    script = Path(sys.executable).parent / "cvexport"
    assert script.is_file(), f"console script not installed at {script}"
    proc = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    own = proc.stdout.split("\n\n")[0]  # torchvision's builders follow after a blank line
    rows = [line.split()[:2] for line in own.splitlines()]
    assert rows == [["classifier", "classification"], ["fcn", "segmentation"], ["ssd", "detection"], ["style", "style"]]
    assert proc.stderr == ""


def test_list_in_process(capsys):
    from cvexport.registry import list_models

    assert main(["list"]) == 0
    own = capsys.readouterr().out.split("\n\n")[0]  # torchvision's builders follow after a blank line
    assert [line.split()[0] for line in own.splitlines()] == list_models()


# ------------------------------------------------------------------------------ build
def test_build_unknown_model(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["build", "resnet9000", "--out", str(out)]) == 2
    err = one_line_stderr(capsys)
    assert "unknown model" in err and "resnet9000" in err and "ssd" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--nms", "bogus"], "--nms"),
        (["--input", "bogus"], "--input"),
        (["--max-detections", "5000"], "--max-detections"),
        (["--score-threshold", "1.5"], "--score-threshold"),
        (["--iou-threshold", "0"], "--iou-threshold"),
        (["--max-batch", "1000"], "--max-batch"),
    ],
)
def test_build_bad_options_one_line_and_nothing_written(tmp_path, capsys, args, needle):
    out = tmp_path / "bundle"
    assert main(["build", "ssd", *args, "--out", str(out)]) == 2
    err = one_line_stderr(capsys)
    assert needle in err and args[1] in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temp leftovers beside --out


@pytest.mark.parametrize("args", [["--max-batch", "0"], ["--max-detections", "-3"], ["--max-batch", "two"]])
def test_build_bad_integer_rejected_by_parser(tmp_path, capsys, args):
    out = tmp_path / "bundle"
    with pytest.raises(SystemExit) as excinfo:
        main(["build", "ssd", *args, "--out", str(out)])
    assert excinfo.value.code == 2
    assert args[1] in capsys.readouterr().err
    assert not out.exists()


def test_build_missing_weights_file(tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(["build", "ssd", "--weights", str(tmp_path / "none.safetensors"), "--out", str(out)]) == 2
    assert "not found" in one_line_stderr(capsys)
    assert not out.exists()


# -------------------------------------------------------------------------------- run
def _truncated_png(path: Path) -> None:
    full = path.with_name("full.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()


@pytest.mark.parametrize(
    "name, make",
    [
        ("missing.png", lambda p: None),
        ("corrupt.png", lambda p: p.write_bytes(b"definitely not a png" * 20)),
        ("truncated.png", _truncated_png),
        ("folder.png", lambda p: p.mkdir()),
    ],
)
def test_run_bad_image_one_line_no_predictions(bundle, tmp_path, capsys, name, make):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(good)
    bad = tmp_path / name
    make(bad)
    out = tmp_path / "out"
    # the bad file is checked before any work, even after a good one
    assert main(["run", str(bundle.path), str(good), str(bad), "--out", str(out)]) == 2
    err = one_line_stderr(capsys)
    assert name in err
    assert not (out / "predictions.json").exists()
    assert not out.exists() or list(out.iterdir()) == []


def test_run_missing_bundle(tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["run", str(tmp_path / "no_bundle"), str(image), "--out", str(tmp_path / "out")]) == 2
    assert "bundle not found" in one_line_stderr(capsys)
    assert not (tmp_path / "out").exists()


def test_run_unknown_backend(bundle, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["run", str(bundle.path), str(image), "--backend", "tflite", "--out", str(tmp_path / "out")]) == 2
    assert "unknown backend" in one_line_stderr(capsys)
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_run_out_is_a_file(bundle, tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    out = tmp_path / "out"
    out.write_text("a file")
    assert main(["run", str(bundle.path), str(image), "--out", str(out)]) == 2
    assert "--out" in one_line_stderr(capsys)
    assert out.read_text() == "a file"


def _write_inputs(tmp_path: Path, sample_images) -> list[Path]:
    """An RGB PNG, a grey PNG and an RGBA PNG (half transparent) from the sample images."""
    rgb, grey_src, rgba_src = sample_images
    paths = [tmp_path / "colour.png", tmp_path / "grey.png", tmp_path / "alpha.png"]
    Image.fromarray(rgb).save(paths[0])
    Image.fromarray(grey_src).convert("L").save(paths[1])
    rgba = np.dstack([rgba_src, np.full(rgba_src.shape[:2], 255, np.uint8)])
    rgba[: rgba.shape[0] // 4, :, 3] = 0
    Image.fromarray(rgba, mode="RGBA").save(paths[2])
    return paths


def _run(bundle, paths, out, backend="ort") -> dict:
    assert main(["run", str(bundle.path), *map(str, paths), "--backend", backend, "--out", str(out)]) == 0
    return json.loads((out / "predictions.json").read_text())


def test_run_grey_and_rgba_images(bundle, tmp_path, capsys, sample_images):
    paths = _write_inputs(tmp_path, sample_images)
    out = tmp_path / "out"
    payload = _run(bundle, paths, out)
    assert payload["backend"] == "ort" and payload["model"] == "ssd" and payload["precision"] == "fp32"
    records = payload["images"]
    assert [r["image"] for r in records] == [str(p) for p in paths]
    for record, path in zip(records, paths):
        with Image.open(path) as original:
            width, height = original.size
        assert (record["width"], record["height"]) == (width, height)
        annotated = out / record["annotated"]
        assert annotated.is_file()
        with Image.open(annotated) as drawn:
            assert drawn.format == "PNG" and drawn.size == (width, height) and drawn.mode == "RGB"
        for det in record["detections"]:
            assert set(det) == {"box", "class_id", "class_name", "score"}
            x1, y1, x2, y2 = det["box"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
            assert det["class_name"] == bundle.class_names[det["class_id"]]
            assert det["score"] > bundle.manifest.postprocess.score_threshold
    assert sum(len(r["detections"]) for r in records) > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["predictions.json"] + [f"{i:04d}-{p.stem}.annotated.png" for i, p in enumerate(paths)]
    )
    stdout = capsys.readouterr().out
    assert "wrote" in stdout and "pictures of 3 images" in stdout


def test_run_same_file_stem_in_two_folders_keeps_both_annotations(bundle, tmp_path, sample_images):
    paths = []
    for folder, image in zip(("a", "b"), sample_images[:2]):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "frame.png")
        Image.fromarray(image).save(paths[-1])
    out = tmp_path / "out"
    records = _run(bundle, paths, out)["images"]
    names = [r["annotated"] for r in records]
    assert len(set(names)) == 2, f"both images were annotated to the same file: {names}"
    for record in records:
        with Image.open(out / record["annotated"]) as drawn:
            assert drawn.size == (record["width"], record["height"])


def test_run_torch_backend_matches_ort_detection_counts(bundle, tmp_path, sample_images):
    paths = _write_inputs(tmp_path, sample_images)
    ort_records = _run(bundle, paths, tmp_path / "ort")["images"]
    torch_payload = _run(bundle, paths, tmp_path / "torch", backend="torch")
    torch_records = torch_payload["images"]
    assert torch_payload["backend"] == "torch"
    ort_counts = [len(r["detections"]) for r in ort_records]
    assert [len(r["detections"]) for r in torch_records] == ort_counts
    assert sum(ort_counts) > 0
    for ort_rec, torch_rec in zip(ort_records, torch_records):
        assert sorted(d["class_id"] for d in ort_rec["detections"]) == sorted(
            d["class_id"] for d in torch_rec["detections"]
        )


# --------------------------------------------------------------------- runner contract
def test_batch_above_built_maximum(small_bundle):
    from cvexport.runtime import create_runner

    assert small_bundle.max_batch == 2
    with create_runner(small_bundle, "ort") as runner:
        ok = runner.infer({"input": np.zeros((2, 3, 256, 256), np.float32)})
        assert ok["detection_boxes"].shape == (2, 100, 4)
        with pytest.raises(CvexportError) as excinfo:
            runner.infer({"input": np.zeros((3, 3, 256, 256), np.float32)})
    message = str(excinfo.value)
    assert "--max-batch" in message and "\n" not in message


def test_predictor_splits_batches_above_maximum(small_bundle, sample_images):
    from cvexport.runtime.predictor import Predictor

    images = list(sample_images) + [sample_images[0]]
    with Predictor(small_bundle, backend="ort") as predictor:
        results = predictor.predict(images)
        single = predictor.predict([sample_images[0]])
    assert len(results) == 4
    assert results[0] == results[3] == single[0]


@pytest.mark.parametrize(
    "feed",
    [
        {"input": np.zeros((1, 3, 256, 256), np.float64)},
        {"input": np.zeros((1, 3, 256, 256), np.uint8)},
        {"input": np.zeros((1, 3, 256, 256), np.float16)},
        {"input": np.zeros((1, 3, 128, 128), np.float32)},
        {"input": np.zeros((3, 256, 256), np.float32)},
        {"input": np.zeros((1, 256, 256, 3), np.float32)},
        {"input": np.zeros((0, 3, 256, 256), np.float32)},
        {"images": np.zeros((1, 3, 256, 256), np.float32)},
        {"input": np.zeros((1, 3, 256, 256), np.float32), "extra": np.zeros(1, np.float32)},
    ],
    ids=["float64", "uint8", "float16", "small", "no-batch-dim", "nhwc", "empty-batch", "wrong-name", "extra-input"],
)
def test_runner_rejects_bad_input(ort_runner, feed):
    with pytest.raises(CvexportError) as excinfo:
        ort_runner.infer(feed)
    assert "\n" not in str(excinfo.value)


def test_runner_accepts_good_input(ort_runner):
    outputs = ort_runner.infer({"input": np.zeros((3, 3, 256, 256), np.float32)})
    assert outputs["num_detections"].shape == (3, 1)
    assert outputs["detection_classes"].dtype == np.int32
    assert ort_runner.last_inference_seconds is not None and ort_runner.last_inference_seconds > 0
