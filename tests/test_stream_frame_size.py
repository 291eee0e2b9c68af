"""``cvexport stream`` on a ``build --frame-size`` bundle (uint8 frames, letterboxed in the graph):
both preprocessing modes map results back to the frame's pixels, and frames of another size
are pointed out once per source."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_helpers import box_iou, read_jsonl, stream

FRAME = (640, 480)  # the camera size the bundle is built for (as tests/test_frame_size.py)


@pytest.fixture(scope="module")
def frame_bundle(build_bundle):
    return build_bundle(model="ssd", input_format="uint8", frame_size=FRAME)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from cvexport.stream.synthetic import write_video

    root = tmp_path_factory.mktemp("clips")
    write_video(root / "cam.mp4", *FRAME, 3, seed=6)
    write_video(root / "small.mp4", 320, 240, 2, seed=6)
    return root


def test_ffmpeg_preprocess_undoes_the_in_graph_letterbox(frame_bundle, clips):
    """--preprocess ffmpeg fits the frame as exact does, so the fit that maps results back must
    include the graph's own letterbox to the network size, as Predictor.prepare_one's does."""
    import av

    from cvexport.runtime.predictor import Predictor
    from cvexport.stream.pipeline import Pipeline, PipelineOptions
    from cvexport.stream.sources import RawFrame

    with Predictor(frame_bundle) as predictor:
        exact = Pipeline(predictor, [], Path("."), PipelineOptions(preprocess="exact"), print)
        fast = Pipeline(predictor, [], Path("."), PipelineOptions(preprocess="ffmpeg"), print)
        for name in ("cam.mp4", "small.mp4"):  # the built size, and one fitted to it first
            with av.open(str(clips / name)) as container:
                frame = next(container.decode(video=0))
            raw = RawFrame(0, frame.width, frame.height, None, 0.0, 0.0, video=frame)
            a, b = exact._prepare_one(raw), fast._prepare_one(raw)
            name_in = predictor.bundle.input.name
            assert a.prepared.feed[name_in].shape == b.prepared.feed[name_in].shape, name
            assert a.prepared.letterbox == b.prepared.letterbox, name


def test_frame_bundle_stream_boxes_and_size_note(frame_bundle, clips, tmp_path, capsys):
    # Exact preprocessing: Predictor.predict's results, in the frame's pixels.
    assert stream(frame_bundle.path, clips / "cam.mp4", "--out", tmp_path / "exact", "--no-video") == 0
    assert "differ from the" not in capsys.readouterr().err  # frames of the built size: nothing to say
    # FFmpeg's scaler, and a second source of another size.
    assert stream(frame_bundle.path, clips / "cam.mp4", clips / "small.mp4", "--out", tmp_path / "fast",
                  "--no-video", "--preprocess", "ffmpeg") == 0
    err = capsys.readouterr().err
    # Said once for the source whose frames differ (two frames), never for the other.
    assert err.count("differ from the 640x480 frames this bundle was built for") == 1
    assert "warning: source small: frames of 320x240" in err
    exact = [line["detections"] for line in read_jsonl(tmp_path / "exact" / "cam.jsonl")]
    fast = [line["detections"] for line in read_jsonl(tmp_path / "fast" / "cam.jsonl")]
    assert len(exact) == len(fast) == 3 and sum(len(d) for d in exact) >= 3
    # The same objects where the frame shows them (other resampling, so close, not equal).
    matched = [any(e["class_id"] == f["class_id"] and box_iou(e["box"], f["box"]) >= 0.7 for f in got)
               for want, got in zip(exact, fast) for e in want]
    assert sum(matched) >= 0.8 * len(matched)
