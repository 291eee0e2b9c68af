"""No command replaces or deletes anything but its own artifacts.

Every command that writes is pointed at a directory where a file is expected (and, for
``build``, at a file or a foreign directory where a bundle is expected), with a canary file
inside and beside the target: the command must refuse in one line, before doing the work,
and both canaries must survive.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import one_line_stderr
from cvexport.atomic import OutputPathError, atomic_path, write_text_atomic
from cvexport.cli import main


@pytest.fixture(scope="module")
def bundle(build_bundle):
    """The classifier's fp32 bundle here, in place of conftest's SSD one."""
    return build_bundle(model="classifier", precision="fp32")


@pytest.fixture
def guarded(tmp_path):
    """A directory holding a user's file, with another user's file beside it."""
    target = tmp_path / "mine"
    target.mkdir()
    (target / "inside.txt").write_text("keep me")
    (tmp_path / "beside.txt").write_text("keep me too")

    def intact():
        assert (target / "inside.txt").read_text() == "keep me"
        assert (tmp_path / "beside.txt").read_text() == "keep me too"
        assert sorted(p.name for p in target.iterdir()) == ["inside.txt"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["beside.txt", "mine"]  # no temp left behind

    return target, intact


@pytest.fixture
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(path)
    return path


def _commands(bundle, image, target):
    """Each command that writes a file, with ``target`` (a directory) where that file goes."""
    b = str(bundle.path)
    return {
        "bench --json": ["bench", b, "--iters", "1", "--warmup", "0", "--json", str(target)],
        "bench --plot": ["bench", b, "--iters", "1", "--warmup", "0", "--plot", str(target)],
        "verify --json": ["verify", b, "--val-images", "1", "--json", str(target)],
        "inspect --json": ["inspect", b, "--json", str(target)],
        "train --out": ["train", "classifier", "--max-steps", "1", "--run-dir", str(target.parent / "run"),
                        "--out", str(target)],
        "stylize --out": ["stylize", str(image), str(image), "--steps", "1", "--out", str(target)],
        "stylize --plot": ["stylize", str(image), str(image), "--steps", "1", "--out",
                           str(target.parent / "styled.png"), "--plot", str(target)],
    }


COMMANDS = ["bench --json", "bench --plot", "verify --json", "inspect --json", "train --out", "stylize --out",
            "stylize --plot"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_directory_is_never_replaced_by_a_file(bundle, image, guarded, capsys, command):
    target, intact = guarded
    code = main(_commands(bundle, image, target)[command])
    assert code != 0
    err = one_line_stderr(capsys)
    assert "is a directory, where a file is expected" in err and str(target) in err
    intact()


def test_build_refuses_a_directory_of_other_files(guarded, capsys):
    target, intact = guarded
    assert main(["build", "classifier", "--out", str(target)]) != 0
    err = one_line_stderr(capsys)
    assert "holds files that are not a cvexport bundle" in err and "--force" in err
    intact()


def test_build_refuses_a_file(tmp_path, capsys):
    target = tmp_path / "bundle"
    target.write_text("a user's file")
    assert main(["build", "classifier", "--out", str(target)]) != 0
    assert "is a file, where a cvexport bundle directory is expected" in one_line_stderr(capsys)
    assert target.read_text() == "a user's file"


@pytest.mark.slow
def test_build_replaces_a_bundle_and_force_replaces_anything(bundle, tmp_path):
    """A bundle is ours to replace; --force makes any directory ours (its files go)."""
    from cvexport.build import BuildOptions, build, is_bundle_dir

    import shutil

    old = tmp_path / "old"
    shutil.copytree(bundle.path, old)
    (old / "stale-engine.plan").write_text("x")
    build(BuildOptions(model="classifier", out=str(old), verify_images=0), log=lambda line: None)
    assert is_bundle_dir(old) and not (old / "stale-engine.plan").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    build(BuildOptions(model="classifier", out=str(foreign), verify_images=0, force=True), log=lambda line: None)
    assert is_bundle_dir(foreign) and not (foreign / "notes.txt").exists()


@pytest.mark.slow
def test_build_into_an_empty_directory(tmp_path):
    from cvexport.build import BuildOptions, build, is_bundle_dir

    empty = tmp_path / "empty"
    empty.mkdir()
    build(BuildOptions(model="classifier", out=str(empty), verify_images=0), log=lambda line: None)
    assert is_bundle_dir(empty)


def test_run_out_file_refused_and_rerun_replaces_only_its_own_pictures(bundle, image, tmp_path, capsys):
    out = tmp_path / "preds"
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert main(["run", str(bundle.path), str(image), "--out", str(not_a_dir)]) != 0
    assert "is a file" in one_line_stderr(capsys)
    assert not_a_dir.read_text() == "x"

    out.mkdir()
    (out / "user.png").write_bytes(b"not ours")
    other = out / "0000-other.input.png"  # an input inside --out, named like our pictures: never removed
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(other)
    assert main(["run", str(bundle.path), str(image), "--out", str(out)]) == 0
    first = set(p.name for p in out.iterdir())
    assert main(["run", str(bundle.path), str(other), "--out", str(out)]) == 0
    second = set(p.name for p in out.iterdir())
    listed = {v for r in json.loads((out / "predictions.json").read_text())["images"] for k, v in r.items()
              if k != "image" and isinstance(v, str) and v.endswith(".png")}
    assert listed and listed <= second
    assert not any("photo" in name for name in second), "the first run's pictures were left behind"
    assert any("photo" in name for name in first)
    assert (out / "user.png").read_bytes() == b"not ours"
    assert main(["run", str(bundle.path), str(image), "--out", str(out)]) == 0
    assert other.exists(), "an input image listed in predictions.json was deleted"


def test_run_refuses_a_predictions_json_it_did_not_write(bundle, image, tmp_path, capsys):
    out = tmp_path / "labels"
    out.mkdir()
    theirs = '{"images": ["my own labelling, hours of work"]}\n'
    (out / "predictions.json").write_text(theirs)
    assert main(["run", str(bundle.path), str(image), "--out", str(out)]) == 2
    err = one_line_stderr(capsys)
    assert "was not written by 'cvexport run'" in err and "--force" in err
    assert (out / "predictions.json").read_text() == theirs
    assert sorted(p.name for p in out.iterdir()) == ["predictions.json"]  # refused before any work
    (out / "predictions.json").write_text("not even JSON")
    assert main(["run", str(bundle.path), str(image), "--out", str(out)]) == 2
    assert "was not written by 'cvexport run'" in one_line_stderr(capsys)

    assert main(["run", str(bundle.path), str(image), "--out", str(out), "--force"]) == 0
    payload = json.loads((out / "predictions.json").read_text())
    assert payload["format"] == "cvexport-run-predictions/1" and len(payload["images"]) == 1
    # ... and the file is ours from then on: a rerun replaces it without --force.
    assert main(["run", str(bundle.path), str(image), "--out", str(out)]) == 0


def test_run_replaces_its_own_predictions_json_from_before_the_format_marker(bundle, image, tmp_path, capsys):
    out = tmp_path / "preds"
    earlier = tmp_path / "earlier.png"
    earlier.write_bytes(image.read_bytes())
    assert main(["run", str(bundle.path), str(earlier), "--out", str(out)]) == 0
    payload = json.loads((out / "predictions.json").read_text())
    old_picture = out / payload["images"][0]["annotated"]
    assert old_picture.is_file()
    del payload["format"]  # as 'run' wrote it before it marked its files
    (out / "predictions.json").write_text(json.dumps(payload))
    assert main(["run", str(bundle.path), str(image), "--out", str(out)]) == 0
    assert [r["image"] for r in json.loads((out / "predictions.json").read_text())["images"]] == [str(image)]
    assert not old_picture.exists(), "the earlier run's picture was left behind"


def test_run_counts_pictures_and_images_in_the_singular_and_plural(bundle, image, tmp_path, capsys):
    assert main(["run", str(bundle.path), str(image), "--out", str(tmp_path / "one")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("and 1 picture of 1 image")
    assert main(["run", str(bundle.path), str(image), str(image), "--out", str(tmp_path / "two")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("and 2 pictures of 2 images")


def test_atomic_file_write_never_replaces_a_directory(guarded):
    target, intact = guarded
    with pytest.raises(OutputPathError, match="is a directory"):
        write_text_atomic(target, "{}")
    intact()


def test_atomic_file_write_refuses_late_when_a_directory_appears(tmp_path):
    """The target is checked again when the result is moved into place."""
    final = tmp_path / "result.json"
    with pytest.raises(OutputPathError, match="is a directory"):
        with atomic_path(final) as tmp:
            tmp.write_text("{}")
            final.mkdir()
            (final / "theirs.txt").write_text("keep")
    assert (final / "theirs.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_a_file_in_the_way_of_a_parent_directory(tmp_path, bundle, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert main(["inspect", str(bundle.path), "--json", str(blocker / "report.json")]) != 0
    assert "is a file" in one_line_stderr(capsys)
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("args, needle", [
    (["build", "classifier", "--calib-images", "64"], "--calib-images apply only to --int8"),
    (["build", "classifier", "--calib-method", "entropy"], "--calib-method apply only to --int8"),
])
def test_int8_only_options_refused_without_int8(tmp_path, capsys, args, needle):
    assert main(args + ["--out", str(tmp_path / "b")]) != 0
    assert needle in one_line_stderr(capsys)
    assert not (tmp_path / "b").exists()


def test_verify_with_only_the_reference_is_refused(bundle, capsys):
    assert main(["verify", str(bundle.path), "--backend", "torch", "--val-images", "1"]) != 0
    assert "name a backend to verify against it" in one_line_stderr(capsys)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("cvexport ")


@pytest.mark.slow
def test_bundles_are_reproducible_and_carry_no_build_paths(bundle, tmp_path):
    """Same weights and options -> byte-identical model.onnx; no node metadata but cvexport's
    own tags, and no absolute path of this checkout anywhere in the graph or the manifest."""
    import onnx

    from cvexport.build import BuildOptions, build

    again = tmp_path / "again"
    build(BuildOptions(model="classifier", out=str(again), verify_images=0), log=lambda line: None)
    assert (again / "model.onnx").read_bytes() == (bundle.path / "model.onnx").read_bytes()
    model = onnx.load(str(again / "model.onnx"))
    keys = {p.key for n in model.graph.node for p in n.metadata_props}
    assert keys and all(k.startswith("cvexport.") for k in keys), keys
    checkout = str(Path(__file__).resolve().parents[1])
    assert checkout.encode() not in (again / "model.onnx").read_bytes()
    assert checkout not in (again / "manifest.json").read_text()


def test_efficient_nms_refuses_the_dense_path_threshold(tmp_path, capsys):
    assert main(["build", "ssd", "--nms", "efficient", "--score-threshold", "0.005", "--out", str(tmp_path / "b")]) != 0
    assert "below 0.007" in one_line_stderr(capsys)
    assert not (tmp_path / "b").exists()


def test_efficient_nms_settings_past_the_plugins_candidate_cap_are_refused(tmp_path, capsys):
    """At 0.007 / 1000 the parity images need 9775 candidates; the plugin keeps 5000."""
    out = tmp_path / "b"
    assert main(["build", "ssd", "--nms", "efficient", "--score-threshold", "0.007", "--max-detections", "1000",
                 "--out", str(out)]) != 0
    err = one_line_stderr(capsys)
    assert "above EfficientNMS_TRT's fixed 5000" in err and "--nms onnx" in err
    assert not out.exists()


def test_efficient_nms_candidate_check_warns_for_jetson_tx_and_is_quiet_by_default():
    from cvexport.detection import check_candidate_limit
    from cvexport.ops.detection import NmsConfig
    from cvexport.registry import get_spec

    spec = get_spec("ssd")
    model = spec.load_model(spec.weights_path()).eval()
    quiet, warned = [], []
    assert check_candidate_limit(model, spec, NmsConfig(**spec.defaults), quiet.append) < 2000
    assert quiet == []
    # The settings with NMS IoU 0.45: fine on current GPUs, not on Jetson TX1/TX2 (at the
    # default 0.35 they need more than any EfficientNMS_TRT keeps, and the build refuses them).
    needed = check_candidate_limit(model, spec, NmsConfig(0.01, 0.45, 200), warned.append)
    assert 2000 < needed <= 5000
    assert len(warned) == 1 and "Jetson TX1/TX2" in warned[0]
