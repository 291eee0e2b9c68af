"""``cvexport predict``: images, folders, globs and videos into resumable Parquet, in-process and
on Ray Data, with results identical to ``Predictor.predict`` on the same frames.

The images and the video are written by the tests. The Ray tests share one local Ray session
of 2 CPUs (this machine's size, where an over-asking actor pool deadlocks) and run each
pipeline under a timeout, so a hang fails instead of stalling the suite.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

pytest.importorskip("pyarrow", reason="cvexport predict writes Parquet (pip install pyarrow)")

from cli_helpers import one_line_stderr  # noqa: E402
from cvexport.predict import (  # noqa: E402
    FAILURES_FILE,
    JSONL_DIR,
    PARTS_DIR,
    PredictOptions,
    batch_predict,
    call_groups,
    decode_array,
    expand_inputs,
    plan_pool,
    read_results,
)
from cvexport.errors import CvexportError  # noqa: E402
from cvexport.results import LabelMap, StylizedImage  # noqa: E402
from cvexport.runtime.predictor import Predictor  # noqa: E402

VIDEO_FRAMES = 9
RAY_TIMEOUT_S = 240  # generous for a loaded 2-core machine; a deadlock never finishes


def _shapes(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A picture of the shapes the test models know (ellipses, rectangles, triangles)."""
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(60, 200, 3)))
    draw = ImageDraw.Draw(image)
    for kind in range(3):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        x1, y1 = x0 + int(rng.integers(width // 5, width // 2)), y0 + int(rng.integers(height // 5, height // 2))
        color = tuple(int(v) for v in rng.integers(0, 255, 3))
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=color)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=color)
        else:
            draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=color)
    return image


def _write_video(path: Path, frames: list[np.ndarray], fps: int = 10) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _decoded_frames(path: Path) -> list[np.ndarray]:
    """The video's frames as the test decodes them itself (PyAV, RGB)."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A folder of images (varied sizes and modes, one in a subfolder, a text file to skip) and
    a short video beside it."""
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(7)
    photos = root / "photos"
    (photos / "more").mkdir(parents=True)
    _shapes(rng, 200, 150).save(photos / "a.png")
    _shapes(rng, 97, 233).save(photos / "b.jpg", quality=92)
    _shapes(rng, 320, 240).convert("L").save(photos / "c_grey.png")
    _shapes(rng, 180, 180).convert("RGBA").save(photos / "more" / "d_rgba.png")
    (photos / "notes.txt").write_text("not an image; folders skip it")
    base = np.asarray(_shapes(rng, 160, 112))
    _write_video(root / "clip.mp4", [np.roll(base, 4 * t, axis=1) for t in range(VIDEO_FRAMES)])
    return root


@pytest.fixture(scope="module")
def ssd(build_bundle):
    return build_bundle(model="ssd")


def _expected(bundle, media: Path, stride: int = 1) -> dict[tuple[str, int], dict]:
    """(input path, frame) -> the row fields Predictor.predict gives for that frame."""
    from cvexport.images import load_image

    keys, images = [], []
    for path in sorted(p for p in (media / "photos").rglob("*") if p.suffix in (".png", ".jpg")):
        keys.append((str(path), 0))
        images.append(load_image(path))
    for index, frame in enumerate(_decoded_frames(media / "clip.mp4")):
        if index % stride == 0:
            keys.append((str(media / "clip.mp4"), index))
            images.append(frame)
    predictor = Predictor(bundle)
    expected = {}
    for key, image, prediction in zip(keys, images, predictor.predict(images)):
        expected[key] = {"width": image.shape[1], "height": image.shape[0],
                         "result": json.loads(json.dumps(predictor.task.record(prediction))),
                         # Label maps and stylized pictures are stored as arrays too, exactly.
                         "array": np.asarray(prediction) if isinstance(prediction, (LabelMap, StylizedImage)) else None}
    return expected


def _stored(out: Path) -> dict[tuple[str, int], dict]:
    rows = read_results(out).to_pylist()
    keys = [(row["input"], row["frame"]) for row in rows]
    assert len(keys) == len(set(keys)), "an input/frame was stored twice"
    return {(row["input"], row["frame"]): row for row in rows}


def _assert_matches(stored: dict, expected: dict) -> None:
    assert sorted(stored) == sorted(expected)
    for key, want in expected.items():
        row = stored[key]
        assert (row["width"], row["height"]) == (want["width"], want["height"]), key
        assert json.loads(row["result"]) == want["result"], key
        if want["array"] is None:
            assert row["array"] is None
        else:
            np.testing.assert_array_equal(decode_array(row["array"]), want["array"])


def _options(bundle, inputs, out, **kwargs) -> PredictOptions:
    return PredictOptions(bundle=str(bundle.path), inputs=tuple(str(i) for i in inputs), out=str(out), **kwargs)


# ------------------------------------------------------------------ inputs
def test_inputs_expand_folders_globs_and_files_once(media):
    photos = media / "photos"
    items = expand_inputs([str(photos), str(media / "*.mp4"), str(photos / "a.png")])
    assert [Path(i.path).relative_to(media).as_posix() for i in items] == [
        "photos/a.png", "photos/b.jpg", "photos/c_grey.png", "photos/more/d_rgba.png", "clip.mp4"]
    assert [i.kind for i in items] == ["image"] * 4 + ["video"]
    assert all(Path(i.path).is_absolute() for i in items)


@pytest.mark.parametrize("spec,message", [
    ("missing.png", "input not found: missing.png"),
    ("empty", "holds no image or video files"),
    ("*.nothing", "matches no image or video files"),
])
def test_bad_inputs_are_one_line_errors_before_any_work(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CvexportError, match=message.replace("*", r"\*")):
        expand_inputs([spec])


def test_call_groups_batch_images_and_keep_videos_alone(media):
    items = expand_inputs([str(media / "photos"), str(media / "clip.mp4"), str(media / "photos" / "a.png")])
    groups = call_groups(items + items[:2], 3)  # images after the video start a new group
    assert [[Path(i.path).name for i in group] for group in groups] == [
        ["a.png", "b.jpg", "c_grey.png"], ["d_rgba.png"], ["clip.mp4"], ["a.png", "b.jpg"]]


# ------------------------------------------------------------------ in-process
def test_in_process_matches_predictor(ssd, media, tmp_path):
    out = tmp_path / "out"
    # batch 3 makes batches that cross input boundaries, and a video's frames share them.
    summary = batch_predict(_options(ssd, [media / "photos", media / "clip.mp4"], out, batch=3, jsonl=True),
                            log=lambda line: None)
    assert summary["failed"] == 0 and summary["done"] == 5 and summary["frames"] == 4 + VIDEO_FRAMES
    stored = _stored(out)
    _assert_matches(stored, _expected(ssd, media))
    assert sum(len(json.loads(r["result"])["detections"]) for r in stored.values()) > 0  # not all empty
    times = [stored[(str(media / "clip.mp4"), i)]["time_s"] for i in range(VIDEO_FRAMES)]
    assert times == pytest.approx([i / 10 for i in range(VIDEO_FRAMES)])
    # The JSON lines hold the same rows.
    lines = [json.loads(line) for part in sorted((out / JSONL_DIR).glob("*.jsonl")) for line in part.open()]
    assert {(r["input"], r["frame"]): r["detections"] for r in lines} == \
        {key: json.loads(row["result"])["detections"] for key, row in stored.items()}


def test_video_stride(ssd, media, tmp_path):
    out = tmp_path / "out"
    batch_predict(_options(ssd, [media / "clip.mp4"], out, stride=4), log=lambda line: None)
    stored = _stored(out)
    assert sorted(frame for _, frame in stored) == [0, 4, 8]
    expected = {k: v for k, v in _expected(ssd, media, stride=4).items() if k[0].endswith("clip.mp4")}
    _assert_matches(stored, expected)


def test_segmentation_label_maps_are_stored_exactly(build_bundle, media, tmp_path):
    fcn = build_bundle(model="fcn")
    out = tmp_path / "out"
    batch_predict(_options(fcn, [media / "photos", media / "clip.mp4"], out), log=lambda line: None)
    _assert_matches(_stored(out), _expected(fcn, media))


# ------------------------------------------------------------------ resume and failures
def test_rerun_skips_inputs_already_done(ssd, media, tmp_path):
    out = tmp_path / "out"
    photos = media / "photos"
    batch_predict(_options(ssd, [photos / "a.png", photos / "b.jpg"], out), log=lambda line: None)
    first_parts = sorted((out / PARTS_DIR).iterdir())
    lines = []
    summary = batch_predict(_options(ssd, [photos, media / "clip.mp4"], out), log=lines.append)
    assert "5 inputs: 2 already done" in lines[0] and "3 to predict" in lines[0]
    assert summary["frames"] == 2 + VIDEO_FRAMES  # only the new inputs were predicted
    assert set(first_parts) < set((out / PARTS_DIR).iterdir())  # earlier parts kept as they were
    _assert_matches(_stored(out), _expected(ssd, media))
    again = batch_predict(_options(ssd, [photos, media / "clip.mp4"], out), log=lambda line: None)
    assert again["frames"] == 0 and again["done"] == 5


def test_interrupted_run_keeps_complete_inputs_and_resumes(ssd, media, tmp_path, monkeypatch):
    from cvexport.predict import batching, store

    out = tmp_path / "out"
    monkeypatch.setattr(store, "ROWS_PER_PART", 1)  # commit after every input
    real_read = batching.read_frames

    def read_then_interrupt(item, stride=1, **kwargs):
        if item.path.endswith("d_rgba.png"):
            raise KeyboardInterrupt
        return real_read(item, stride, **kwargs)

    monkeypatch.setattr(batching, "read_frames", read_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        batch_predict(_options(ssd, [media / "photos", media / "clip.mp4"], out, batch=1), log=lambda line: None)
    done = {Path(key[0]).name for key in _stored(out)}
    assert done == {"a.png", "b.jpg", "c_grey.png"}
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temp files left
    monkeypatch.setattr(batching, "read_frames", real_read)
    summary = batch_predict(_options(ssd, [media / "photos", media / "clip.mp4"], out), log=lambda line: None)
    assert summary["frames"] == 1 + VIDEO_FRAMES
    _assert_matches(_stored(out), _expected(ssd, media))


def _corrupt_inputs(tmp_path: Path, media: Path) -> list[Path]:
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((media / "photos" / "a.png").read_bytes()[:200])
    fake_video = tmp_path / "fake.mp4"
    fake_video.write_bytes(b"this is not a video")
    return [truncated, fake_video]


def test_a_damaged_video_keeps_its_good_frames_under_their_own_numbers(ssd, tmp_path):
    """The rule stream keeps (cvexport.video_decode): frames after a damaged stretch are predicted
    under the video's own frame numbers and the loss is counted, where predict used to fail the
    whole video at the first bad packet."""
    from cvexport.stream.synthetic import write_video
    from cvexport.video_decode import DecodeStats, read_frames

    video = tmp_path / "zeroed.mp4"
    write_video(video, 160, 120, 30, fps=30, seed=2)
    data = bytearray(video.read_bytes())
    start, end = len(data) * 2 // 5, len(data) * 3 // 5
    data[start:end] = bytes(end - start)
    video.write_bytes(bytes(data))
    lines: list[str] = []
    summary = batch_predict(_options(ssd, [video], tmp_path / "out"), log=lines.append)
    frames = sorted(frame for _, frame in _stored(tmp_path / "out"))
    stats = DecodeStats()
    assert frames == [index for index, _, _ in read_frames(str(video), stats=stats)]  # stream's numbers
    assert summary["failed"] == 0 and frames[-1] == 29
    assert 0 < summary["last_run_lost_frames"] == stats.lost == 30 - len(frames)
    assert any("could not be decoded" in line and "zeroed.mp4" in line for line in lines)


def test_unreadable_files_are_recorded_as_failed_and_the_rest_goes_on(ssd, media, tmp_path):
    out = tmp_path / "out"
    truncated, fake_video = _corrupt_inputs(tmp_path, media)
    summary = batch_predict(_options(ssd, [media / "photos", truncated, fake_video, media / "clip.mp4"], out),
                            log=lambda line: None)
    assert summary["failed"] == 2 and summary["done"] == 5
    _assert_matches(_stored(out), _expected(ssd, media))
    failures = {f["input"]: f["reason"] for f in json.loads((out / FAILURES_FILE).read_text())["failures"]}
    assert set(failures) == {str(truncated), str(fake_video)}
    assert "corrupt or truncated" in failures[str(truncated)]
    assert "not a readable video" in failures[str(fake_video)]
    assert all("\n" not in reason for reason in failures.values())
    # Fixed, the file is done on the next run and leaves the failures.
    truncated.write_bytes((media / "photos" / "a.png").read_bytes())
    summary = batch_predict(_options(ssd, [truncated, fake_video], out), log=lambda line: None)
    assert summary["frames"] == 1 and summary["failed"] == 1
    failures = [f["input"] for f in json.loads((out / FAILURES_FILE).read_text())["failures"]]
    assert failures == [str(fake_video)]


def test_rerun_with_another_bundle_or_stride_is_refused(ssd, build_bundle, media, tmp_path):
    out = tmp_path / "out"
    batch_predict(_options(ssd, [media / "photos" / "a.png"], out), log=lambda line: None)
    with pytest.raises(CvexportError, match="holds results of another bundle"):
        batch_predict(_options(build_bundle(model="classifier"), [media / "photos"], out), log=lambda line: None)
    with pytest.raises(CvexportError, match="holds results of another --stride"):
        batch_predict(_options(ssd, [media / "photos"], out, stride=2), log=lambda line: None)


def test_out_holding_other_files_is_refused(ssd, media, tmp_path, capsys):
    from cvexport.cli import main

    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(CvexportError, match="holds files that cvexport predict did not write"):
        batch_predict(_options(ssd, [media / "photos"], tmp_path), log=lambda line: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    # predict has no --force (it would delete the folder's files), so the refusal offers none.
    assert main(["predict", str(ssd.path), str(media / "photos"), "--out", str(tmp_path)]) == 2
    message = one_line_stderr(capsys)
    assert "--force" not in message and "Choose a new or empty folder" in message
    (tmp_path / "mine.txt").unlink()
    (tmp_path / "mine.txt").mkdir()  # a folder of that name is no temp leftover either
    assert main(["predict", str(ssd.path), str(media / "photos"), "--out", str(tmp_path)]) == 2
    one_line_stderr(capsys)


def test_cli_exit_codes_and_one_line_errors(ssd, media, tmp_path, capsys):
    from cvexport.cli import main

    truncated, _ = _corrupt_inputs(tmp_path, media)
    out = tmp_path / "out"
    assert main(["predict", str(ssd.path), str(media / "photos" / "a.png"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 input: 0 already done" in printed and "predicted 1 frame of 1 input in" in printed  # singular
    assert main(["predict", str(ssd.path), str(truncated), "--out", str(out)]) == 1  # a failed input
    assert "failed:" in capsys.readouterr().out
    assert main(["predict", str(ssd.path), str(tmp_path / "absent.png"), "--out", str(out)]) == 2
    assert "input not found" in one_line_stderr(capsys)
    assert main(["predict", str(ssd.path), str(truncated), "--out", str(out), "--actors", "2"]) == 2
    assert "add --ray" in one_line_stderr(capsys)


def test_ray_missing_is_a_one_line_install_hint(ssd, media, tmp_path, monkeypatch, capsys):
    import sys

    from cvexport.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import fails as if not installed
    assert main(["predict", str(ssd.path), str(media / "photos"), "--out", str(tmp_path / "o"), "--ray"]) == 2
    assert 'pip install "cvexport[ray]"' in one_line_stderr(capsys)
    assert not (tmp_path / "o").exists()


def test_input_taken_as_ray_address_is_a_one_line_error(ssd, media, tmp_path, capsys):
    from cvexport.cli import main

    photos = str(media / "photos")
    # argparse gives '--ray photos' the folder as its ADDRESS; only one input is left.
    assert main(["predict", str(ssd.path), str(media / "clip.mp4"), "--ray", photos, "--out", str(tmp_path / "o")]) == 2
    assert "put --ray after the inputs" in one_line_stderr(capsys)
    assert main(["predict", str(ssd.path), photos, "--ray=nonsense", "--out", str(tmp_path / "o")]) == 2
    assert "is not a Ray address" in one_line_stderr(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("ray", [None, "local"], ids=["in-process", "ray"])
def test_backend_that_cannot_open_the_bundle_fails_before_any_output(ssd, media, tmp_path, ray):
    import shutil

    from cvexport.bundle import load_bundle

    if ray:
        pytest.importorskip("ray", reason="needs Ray Data (pip install 'cvexport[ray]')")
    broken = tmp_path / "bundle"
    shutil.copytree(ssd.path, broken)
    (broken / "weights.safetensors").unlink()  # the torch backend needs it; ONNX Runtime does not
    with pytest.raises(CvexportError, match="missing weights.safetensors"):
        batch_predict(_options(load_bundle(broken), [media / "photos"], tmp_path / "o", backend="torch", ray=ray),
                      log=lambda line: None)
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ the Ray actor pool plan
@pytest.mark.parametrize("cpus", [0.5, 1, 1.5, 2, 3, 4, 7.5, 16, 64])
def test_pool_never_claims_the_cpu_left_for_ray_data(cpus):
    plan = plan_pool({"CPU": cpus}, "ort", work_items=1000)
    left = cpus - plan.actors * plan.cpus_per_actor
    assert left >= min(1.0, cpus / 2) - 1e-9
    assert plan.actors >= 1 and 0 < plan.cpus_per_actor <= 1 and plan.threads == 1 and plan.gpus_per_actor == 0


def test_pool_on_two_cpus_and_on_gpus():
    two = plan_pool({"CPU": 2.0}, "ort", work_items=50)
    assert (two.actors, two.cpus_per_actor) == (2, 0.5)  # not the 2 x 1 CPU that hung
    assert plan_pool({"CPU": 2.0}, "ort", work_items=1).actors == 1  # no idle actors for little work
    gpu = plan_pool({"CPU": 32.0, "GPU": 4.0}, "trt", work_items=50)
    assert (gpu.actors, gpu.gpus_per_actor, gpu.cpus_per_actor) == (4, 1.0, 1.0)
    with pytest.raises(CvexportError, match="needs a GPU, and the Ray cluster has none"):
        plan_pool({"CPU": 8.0}, "ort-cuda", work_items=5)
    one = plan_pool({"CPU": 2.0}, "ort", work_items=50, threads=2, actors=1)
    assert (one.actors, one.cpus_per_actor, one.threads) == (1, 1.0, 2)


# ------------------------------------------------------------------ on Ray
@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray", reason="needs Ray Data (pip install 'cvexport[ray]')")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # this machine's size: the deadlock case
    yield ray
    ray.shutdown()


def _within_timeout(function, *args, **kwargs):
    """``function(*args, **kwargs)``, failing the test if it has not returned after RAY_TIMEOUT_S."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as exc:  # handed to the test thread below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(RAY_TIMEOUT_S)
    if thread.is_alive():
        pytest.fail(f"the Ray pipeline did not finish within {RAY_TIMEOUT_S} s: it hangs (actor pool deadlock?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_ray_matches_in_process_and_predictor(ray_session, ssd, media, tmp_path):
    truncated, fake_video = _corrupt_inputs(tmp_path, media)
    inputs = [media / "photos", truncated, media / "clip.mp4", fake_video]
    lines = []
    summary = _within_timeout(batch_predict, _options(ssd, inputs, tmp_path / "ray", batch=3, jsonl=True, ray="local"),
                              log=lines.append)
    assert any(line.startswith("Ray: 2 actors, each 0.50 CPU") for line in lines), lines
    assert summary["done"] == 5 and summary["failed"] == 2
    _assert_matches(_stored(tmp_path / "ray"), _expected(ssd, media))
    batch_predict(_options(ssd, inputs, tmp_path / "local", batch=3, jsonl=True), log=lambda line: None)
    assert _stored(tmp_path / "ray") == _stored(tmp_path / "local")
    failed = lambda out: json.loads((out / FAILURES_FILE).read_text())  # noqa: E731
    assert failed(tmp_path / "ray") == failed(tmp_path / "local")
    # Resumed on Ray: nothing is left but the two failures, which are tried again.
    again = _within_timeout(batch_predict, _options(ssd, inputs, tmp_path / "ray", ray="local"), log=lambda line: None)
    assert again["frames"] == 0 and again["failed"] == 2


@pytest.mark.slow
def test_cli_ray_alone_starts_a_local_ray(ssd, media, tmp_path):
    """A fresh process: '--ray' alone starts Ray itself (as from a fresh clone), then stops it."""
    import subprocess
    import sys

    pytest.importorskip("ray", reason="needs Ray Data (pip install 'cvexport[ray]')")
    out = tmp_path / "out"
    command = [sys.executable, "-c", "import sys; from cvexport.cli import main; sys.exit(main(sys.argv[1:]))",
               "predict", str(ssd.path), str(media / "photos"), str(media / "clip.mp4"), "--out", str(out), "--ray"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=RAY_TIMEOUT_S + 60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "on Ray (local)" in result.stdout
    _assert_matches(_stored(out), _expected(ssd, media))
