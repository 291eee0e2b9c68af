"""``stream --out``: never a source, never a file the command did not write (unless --force),
and a re-run replaces its own outputs. The refusals come before any work, in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from stream_helpers import read_jsonl, stream, stream_cli

from cvexport.errors import CvexportError


@pytest.fixture(scope="module")
def classifier(build_bundle):
    return build_bundle(model="classifier", precision="fp32")


def _video(path: Path, frames: int = 3) -> Path:
    from cvexport.stream.synthetic import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, 96, 64, frames, seed=7)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_an_output_is_never_a_source(classifier, tmp_path):
    user = tmp_path / "userdir"
    source = _video(user / "hd.mp4")
    before = _snapshot(user)
    for extra in ((), ("--force",)):  # not even with --force
        with pytest.raises(CvexportError, match="would be written over the source") as caught:
            stream(classifier.path, source, "--out", user, *extra)
        assert "\n" not in str(caught.value)
        assert _snapshot(user) == before  # nothing replaced, nothing written
    # Two sources, one living in --out: b/clip.mp4 is named "clip", a/clip.mp4 too, before it.
    a, b = _video(tmp_path / "a" / "clip.mp4"), _video(tmp_path / "b" / "clip.mp4")
    before = _snapshot(b.parent)
    with pytest.raises(CvexportError, match="would be written over the source"):
        stream(classifier.path, a, b, "--out", b.parent, "--force")
    assert _snapshot(b.parent) == before
    # A symlink in --out to a source, and a hard link to one, are that source.
    (tmp_path / "symlink").mkdir()
    (tmp_path / "symlink" / "clip.mp4").symlink_to(a)
    with pytest.raises(CvexportError, match="clip.mp4 would be written over the source"):
        stream(classifier.path, a, "--out", tmp_path / "symlink", "--force")
    (tmp_path / "hardlink").mkdir()
    os.link(a, tmp_path / "hardlink" / "clip.jsonl")
    with pytest.raises(CvexportError, match="clip.jsonl would be written over the source"):
        stream(classifier.path, a, "--out", tmp_path / "hardlink", "--force", "--no-video")
    assert a.read_bytes() == before["clip.mp4"] == b.read_bytes()


def test_files_the_command_did_not_write_are_kept(classifier, tmp_path):
    source = _video(tmp_path / "videos" / "tiny.mp4")
    user = tmp_path / "userdir"
    user.mkdir()
    (user / "tiny.jsonl").write_text('{"my": "notes"}\n')
    (user / "summary.json").write_text('{"my": "summary"}\n')
    before = _snapshot(user)
    with pytest.raises(CvexportError, match=r"holds .*summary.json, which 'cvexport stream' did not write"):
        stream(classifier.path, source, "--out", user)
    (user / "summary.json").unlink()
    with pytest.raises(CvexportError, match=r"holds .*tiny.jsonl, which 'cvexport stream' did not write"):
        stream(classifier.path, source, "--out", user)
    result = stream_cli(classifier.path, source, "--out", user)  # through the CLI: one line, exit 2
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "--force" in result.stderr
    assert _snapshot(user) == {"tiny.jsonl": before["tiny.jsonl"]}
    # --force replaces them; a re-run then replaces its own outputs without it.
    (user / "summary.json").write_text('{"my": "summary"}\n')
    assert stream(classifier.path, source, "--out", user, "--force", "--no-video") == 0
    assert json.loads((user / "summary.json").read_text())["format"].startswith("cvexport-stream-summary/")
    assert len(read_jsonl(user / "tiny.jsonl")) == 3
    assert stream(classifier.path, source, "--out", user, "--frames", 1) == 0
    assert len(read_jsonl(user / "tiny.jsonl")) == 1 and (user / "tiny.mp4").exists()


def test_image_folder_that_is_also_out(classifier, tmp_path):
    """Outputs land beside the images; a re-run reads the same images, not its own outputs."""
    from PIL import Image

    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 60, 3), 70 * i, np.uint8)).save(folder / f"p{i}.png")
    images = _snapshot(folder)
    for source in (folder, folder / "*"):
        assert stream(classifier.path, source, "--out", folder) == 0
        entry = json.loads((folder / "summary.json").read_text())["sources"][0]
        assert entry["frames_in"] == entry["frames_processed"] == 3
        assert sorted(p.name for p in folder.iterdir()) == ["p0.png", "p1.png", "p2.png", "shots.jsonl", "shots.mp4",
                                                            "summary.json"]
    assert {name: data for name, data in _snapshot(folder).items() if name.endswith(".png")} == images
