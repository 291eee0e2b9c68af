"""``build()`` is the whole build: the TensorRT engine step is its argument, not the CLI's."""

from __future__ import annotations

import pytest

from cvexport.build import BuildOptions, build
from cvexport.errors import CvexportError
from cvexport.backends.trt.environment import trt_unavailable_reason

needs_no_trt = pytest.mark.skipif(trt_unavailable_reason() is None, reason="TensorRT is usable here")


@needs_no_trt
def test_engine_trt_fails_before_any_work_without_tensorrt(tmp_path):
    lines = []
    with pytest.raises(CvexportError, match="--backend trt: "):
        build(BuildOptions(model="classifier", out=str(tmp_path / "b"), engine="trt"), log=lines.append)
    assert lines == [] and not (tmp_path / "b").exists()


@needs_no_trt
def test_engine_auto_says_why_no_engine_was_built(tmp_path):
    lines = []
    out = build(BuildOptions(model="classifier", out=str(tmp_path / "b"), verify_images=0), log=lines.append)
    assert (out / "manifest.json").is_file()
    assert lines[-1].startswith("TensorRT engine not built (") and "--backend ort" in lines[-1]


def test_unknown_engine_choice(tmp_path):
    with pytest.raises(CvexportError, match="unknown engine choice 'gpu'"):
        build(BuildOptions(model="classifier", out=str(tmp_path / "b"), engine="gpu"), log=lambda line: None)
