"""Drawing on decoded yuv420p frames (cvexport.yuv420, BoxAnnotator.annotate_yuv420): the same
colours FFmpeg gives the encoder for RGB, and the same picture as the RGB annotator's."""

from __future__ import annotations

import numpy as np
import pytest

from cvexport.annotators import BoxAnnotator
from cvexport.results import Detections
from cvexport.yuv420 import fill_rect, paste_rgb, rgb_to_yuv, split_planes

av = pytest.importorskip("av")


def _to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """FFmpeg's own conversion, as the encoder gets an RGB frame."""
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p").to_ndarray()


def _to_rgb(planes: np.ndarray) -> np.ndarray:
    return av.VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray(format="rgb24").astype(int)


def _photo(width: int, height: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((width, height)))


@pytest.mark.parametrize("color", [(0, 0, 0), (255, 255, 255), (230, 25, 75), (60, 180, 75), (0, 130, 200)])
def test_colours_convert_as_ffmpeg_converts_them_for_the_encoder(color):
    flat = np.broadcast_to(np.array(color, np.uint8), (8, 8, 3))
    y, u, v = split_planes(_to_yuv420(flat))
    expected = np.rint(rgb_to_yuv(color))
    assert abs(int(y[0, 0]) - expected[0]) <= 1 and abs(int(u[0, 0]) - expected[1]) <= 1
    assert abs(int(v[0, 0]) - expected[2]) <= 1


@pytest.mark.parametrize("height", [48, 42])  # 42: chroma rows do not pack into whole luma rows
def test_planes_are_views_of_the_frame_and_rectangles_clip(height):
    planes = _to_yuv420(np.zeros((height, 64, 3), np.uint8))
    y, u, v = split_planes(planes)
    assert y.shape == (height, 64) and u.shape == v.shape == (height // 2, 32)
    fill_rect(planes, -5, 10, 20, 500, (255, 255, 255))  # partly outside: clipped, no error
    assert (y[10:, :21] > 230).all() and (y[:10] < 20).all() and (y[:, 21:] < 20).all()
    paste_rgb(planes, 60, height - 3, np.full((10, 10, 3), 255, np.uint8))  # mostly outside
    with pytest.raises(ValueError, match="yuv420p"):
        split_planes(np.zeros((10, 9), np.uint8))


def test_boxes_drawn_on_the_planes_look_as_the_rgb_annotators_boxes():
    """The same detections, one picture drawn in RGB (then converted for the encoder), one in
    place on the frame's planes: the same pixels within subsampling's rounding; every drawn
    pixel is drawn in both."""
    rgb = _photo(320, 240)
    detections = Detections(xyxy=np.array([[20.4, 30.6, 120, 140], [150, 60.5, 300, 230], [-10, 200, 40, 260]]),
                            scores=np.array([0.91, 0.5, 0.33]), class_ids=np.array([0, 1, 0]),
                            class_names=("angular", "round"))
    annotator = BoxAnnotator()
    plain = _to_rgb(_to_yuv420(rgb))
    by_rgb = _to_rgb(_to_yuv420(np.asarray(annotator.annotate(rgb, detections))))
    planes = _to_yuv420(rgb)
    annotator.annotate_yuv420(planes, detections)
    by_planes = _to_rgb(planes)
    drawn_rgb = np.abs(by_rgb - plain).max(axis=2) > 40
    drawn_planes = np.abs(by_planes - plain).max(axis=2) > 40
    assert drawn_rgb.sum() > 1000
    assert (drawn_rgb ^ drawn_planes).sum() <= 0.02 * drawn_rgb.sum()  # the same lines and labels, in place
    assert np.abs(by_rgb - by_planes)[drawn_rgb].mean() < 8  # in the same colours
    assert np.abs(by_rgb - by_planes).mean() < 1.5
