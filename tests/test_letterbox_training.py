"""Training on what inference sees (issue #13): camera frames letterboxed as the runtime does,
camera effects, val views reported apart, ghosts on the padding counted, contact sheets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvexport.images import LETTERBOX_FILL, letterbox
from cvexport.models import camera_frames, detection_data, segmentation_data, classification_data


# --------------------------------------------------------------------------- frame shapes
@pytest.mark.parametrize("view, shape", [("16:9", (360, 640)), ("4:3", (480, 640)), ("9:16", (640, 360))])
def test_val_views_have_fixed_camera_shapes(view, shape):
    rng = np.random.default_rng(0)
    assert camera_frames.frame_shape(rng, view, 256) == shape


def test_random_frames_cover_portrait_square_and_wider_than_16_9():
    rng = np.random.default_rng(0)
    shapes = [camera_frames.frame_shape(rng, "camera", 256) for _ in range(400)]
    aspects = np.array([w / h for h, w in shapes])
    long_sides = np.array([max(s) for s in shapes])
    assert 0.15 < np.mean(aspects == 1.0) < 0.35  # SQUARE_SHARE, no padding
    assert aspects.min() < 0.6 and aspects.max() > 16 / 9 + 0.3  # portrait and wider than 16:9
    assert long_sides.min() >= 224 and long_sides.max() <= 800 and long_sides.min() < 256 < long_sides.max()


def test_unknown_view_is_refused():
    with pytest.raises(ValueError, match="unknown view"):
        camera_frames.frame_shape(np.random.default_rng(0), "5:4", 256)


# ------------------------------------------------------------------------ letterbox maps
def test_fit_boxes_puts_boxes_on_the_drawn_pixels():
    """A rectangle drawn on a 640x360 frame lands, after the runtime's letterbox, where fit_boxes says."""
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[90:270, 160:480] = 255  # (x1, y1, x2, y2) = (160, 90, 480, 270) pixels
    image, box_map = camera_frames.fit_image(frame, 256)
    box = camera_frames.fit_boxes(np.array([[160 / 640, 90 / 360, 480 / 640, 270 / 360]]), box_map, 256)[0] * 256
    rows, cols = np.nonzero(image[..., 0] > 127)
    np.testing.assert_allclose([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], box, atol=1.0)
    # The runtime maps it back to the frame exactly.
    np.testing.assert_allclose(box_map.boxes_to_original(box[None] / 256, 256, 256)[0], [160, 90, 480, 270], atol=1e-3)


def test_fit_labels_pads_with_background_and_maps_back():
    mask = np.zeros((90, 160), np.uint8)
    mask[20:60, 40:100] = 2
    _, box_map = letterbox(np.zeros((90, 160, 3), np.uint8), 128, 128)
    fitted = camera_frames.fit_labels(mask, box_map, 128)
    assert fitted.shape == (128, 128) and fitted.dtype == np.uint8
    content = camera_frames.content_box(box_map, 128) * 128
    assert (fitted[: int(content[1])] == 0).all() and (fitted[int(np.ceil(content[3])):] == 0).all()
    assert set(np.unique(fitted)) == {0, 2}  # nearest: no blended ids
    back = box_map.map_to_original(fitted, labels=True)
    assert back.shape == mask.shape and (back == mask).mean() > 0.98


def test_content_box_is_where_the_picture_is():
    image, box_map = letterbox(np.full((360, 640, 3), 7, np.uint8), 256, 256)
    x1, y1, x2, y2 = camera_frames.content_box(box_map, 256) * 256
    assert (x1, x2) == (0, 256) and (y1, y2) == (box_map.pad_y, box_map.pad_y + 144)
    assert (image[int(y1) : int(y2)] == 7).all()
    assert (image[: int(y1)] == LETTERBOX_FILL).all() and (image[int(y2) :] == LETTERBOX_FILL).all()


# ---------------------------------------------------------------------------- effects
def test_camera_effects_are_deterministic_and_keep_the_format():
    frame = detection_data.make_frame("train", 3).image
    outs = [camera_frames.camera_effects(frame, np.random.default_rng(seed)) for seed in range(16)]
    again = camera_frames.camera_effects(frame, np.random.default_rng(5))
    assert np.array_equal(outs[5], again)
    assert all(o.shape == frame.shape and o.dtype == np.uint8 for o in outs)
    changed = [not np.array_equal(o, frame) for o in outs]
    assert any(changed) and not all(changed)  # some frames stay clean (CLEAN_SHARE)


def test_each_camera_effect_changes_the_frame(monkeypatch):
    frame = detection_data.make_frame("train", 3).image
    effects = {"BLUR_CHANCE": 0.0, "NOISE_CHANCE": 0.0, "EXPOSURE_CHANCE": 0.0, "JPEG_CHANCE": 0.0}
    monkeypatch.setattr(camera_frames, "CLEAN_SHARE", 0.0)
    for name in effects:
        for other, off in effects.items():
            monkeypatch.setattr(camera_frames, other, 1.0 if other == name else off)
        out = camera_frames.camera_effects(frame, np.random.default_rng(0))
        assert not np.array_equal(out, frame), name


# ----------------------------------------------------------------------- data modules
def test_frames_are_pure_functions_of_split_index_seed_and_view():
    a = detection_data.make_frame("train", 11, effects=True)
    b = detection_data.make_frame("train", 11, effects=True)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    clean = detection_data.make_frame("train", 11)
    assert np.array_equal(clean.boxes, a.boxes)  # effects are drawn after the scene
    views = {v: detection_data.make_frame("val", 2, view=v).image.shape for v in ("16:9", "4:3", "9:16")}
    assert views == {"16:9": (360, 640, 3), "4:3": (480, 640, 3), "9:16": (640, 360, 3)}
    assert not np.array_equal(detection_data.make_frame("val", 2, seed=1, view="16:9").image,
                              detection_data.make_frame("val", 2, view="16:9").image)


def test_detection_frames_boxes_stay_in_the_picture_at_anchor_scales():
    for index in range(40):
        sample, box_map = detection_data.fit_to_input(detection_data.make_frame("val", index, view="16:9"))
        assert sample.image.shape == (256, 256, 3)
        content = camera_frames.content_box(box_map, 256)
        if len(sample.boxes):
            assert (sample.boxes[:, :2] >= content[:2] - 1e-6).all()
            assert (sample.boxes[:, 2:] <= content[2:] + 1e-6).all()
            side = np.sqrt((sample.boxes[:, 2] - sample.boxes[:, 0]) * (sample.boxes[:, 3] - sample.boxes[:, 1]))
            assert side.min() >= detection_data.MIN_SCALE - 1e-3  # as on square samples, in network units


def test_segmentation_frames_pad_with_background():
    sample, box_map = segmentation_data.fit_to_input(segmentation_data.make_frame("val", 4, view="16:9"))
    assert sample.image.shape == (128, 128, 3) and sample.mask.shape == (128, 128)
    top = int(box_map.pad_y)
    assert top > 0 and (sample.mask[:top] == 0).all() and (sample.image[:top] == LETTERBOX_FILL).all()
    assert sample.mask[top:-top].any()


def test_classification_frames_keep_their_label():
    for index in range(8):
        frame = classification_data.make_frame("target", "val", index, view="4:3")
        sample, _ = classification_data.fit_to_input(frame)
        assert frame.image.shape == (120, 160, 3) and sample.image.shape == (64, 64, 3)
        assert sample.label == classification_data.make_sample("target", "val", index).label == index % 8


# ----------------------------------------------------------------------- SSD evaluation
def test_padding_share_hand_computed():
    from cvexport.models.ssd_training import padding_share

    content = np.array([0.0, 0.25, 1.0, 0.75])
    boxes = np.array([
        [0.1, 0.3, 0.3, 0.5],  # inside: 0
        [0.1, 0.0, 0.3, 0.2],  # all in the top band: 1
        [0.1, 0.15, 0.3, 0.35],  # half in the band: 0.5
        [0.1, 0.7, 0.3, 0.9],  # a quarter inside: 0.75
        [0.1, 0.25, 0.3, 0.25],  # no area: counted as padding
    ])
    np.testing.assert_allclose(padding_share(boxes, content), [0.0, 1.0, 0.5, 0.75, 1.0])


class _GhostDetector(torch.nn.Module):
    """A stand-in SSD whose only confident detection is one anchor's box: class "rectangle"."""

    def __init__(self, box: list[float]):
        super().__init__()
        from cvexport.models.tinyssd import make_anchors
        from cvexport.ops.boxes import box_iou

        self.anchors = make_anchors()
        self.index = int(box_iou(torch.tensor([box]), self.anchors).argmax())

    def forward(self, images):
        n = self.anchors.shape[0]
        logits = torch.zeros(images.shape[0], n, 4)
        logits[..., 0] = 10.0  # background everywhere
        logits[:, self.index] = torch.tensor([0.0, 0.0, 10.0, 0.0])
        return logits, torch.zeros(images.shape[0], n, 4)


def test_ghosts_on_the_padding_are_counted_and_dropped_when_they_collapse():
    from cvexport.models.ssd_training import evaluate_view

    # Centred in the top band of a 16:9 frame (picture from y = 56 / 256 = 0.219 to 0.781).
    ghost = _GhostDetector([0.3, 0.0, 0.5, 0.2])
    in_band = ghost.anchors[ghost.index]
    assert in_band[3] <= 0.22  # the anchor the stand-in fires lies in the band
    frames = evaluate_view(ghost, "16:9", size=3)
    assert frames["val_ghosts_16x9"] == 3 and frames["val_collapsed_16x9"] == 3
    assert evaluate_view(ghost, "square", size=3)["val_ghosts"] == 0  # no padding on square val
    # The same box in the middle of the picture is neither.
    centre = evaluate_view(_GhostDetector([0.4, 0.4, 0.6, 0.6]), "16:9", size=3)
    assert centre["val_ghosts_16x9"] == 0 and centre["val_collapsed_16x9"] == 0


def test_ssd_camera_batches_are_letterboxed_frames():
    from cvexport.models import ssd_training
    from cvexport.models.tinyssd import make_anchors

    samples = ssd_training.training_samples(range(12), "camera")
    assert all(s.image.shape == (256, 256, 3) for s in samples)
    assert any((s.image[0] == LETTERBOX_FILL).all() or (s.image[:, 0] == LETTERBOX_FILL).all() for s in samples)
    batch = ssd_training.make_batch(np.arange(4), make_anchors(), data="camera")
    assert batch["images"].shape == (4, 3, 256, 256) and batch["positive"].any()
    with pytest.raises(ValueError, match="unknown training data"):
        ssd_training.training_samples(range(2), "frames")


@pytest.mark.parametrize("trainer", ["ssd_training", "fcn_training"])
def test_recipes_end_with_fine_tuning_on_square_samples_and_camera_frames(trainer):
    import importlib

    recipe = importlib.import_module(f"cvexport.models.{trainer}")
    kinds = [recipe.phase_data(p) for p in recipe.default_config()]
    # Square samples first; camera frames only once mixed phases have taught the model both.
    assert kinds[1] == "square" and "mixed" in kinds and kinds[-1] in ("mixed", "camera")
    first_mixed = kinds.index("mixed")
    assert set(kinds[:first_mixed]) == {"square"} and "square" not in kinds[first_mixed:]


# -------------------------------------------------------------------- FCN evaluation
class _ConstantSegmenter(torch.nn.Module):
    def __init__(self, label: int):
        super().__init__()
        self.label = label

    def forward(self, images):
        logits = torch.zeros(images.shape[0], 4, *images.shape[2:])
        logits[:, self.label] = 1.0
        return logits


def test_fcn_padding_background_share():
    from cvexport.models.fcn_training import evaluate_view

    assert evaluate_view(_ConstantSegmenter(0), "16:9", size=2)["val_padding_background_16x9"] == 1.0
    assert evaluate_view(_ConstantSegmenter(1), "16:9", size=2)["val_padding_background_16x9"] == 0.0
    assert evaluate_view(_ConstantSegmenter(1), "square", size=2)["val_padding_background"] == 1.0  # no padding


@pytest.mark.parametrize("trainer", ["ssd_training", "fcn_training"])
def test_mixed_batches_hold_square_samples_and_camera_frames(trainer):
    import importlib

    recipe = importlib.import_module(f"cvexport.models.{trainer}")
    samples = recipe.training_samples(range(8), "mixed")
    padded = [bool((s.image[0] == LETTERBOX_FILL).all() or (s.image[:, 0] == LETTERBOX_FILL).all()) for s in samples]
    assert len(samples) == 8 and not any(padded[:4]) and any(padded[4:])  # even indices square, odd ones frames
    square = recipe.training_samples([0, 2, 4, 6], "square")  # (the FCN's crops depend on the batch's indices)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(samples[:4], square))


# ---------------------------------------------------------------------- contact sheets
@pytest.mark.parametrize("trainer", ["ssd_training", "fcn_training", "classifier_training"])
def test_contact_sheet_shows_each_kind_of_training_data(tmp_path, trainer):
    import importlib

    from PIL import Image

    recipe = importlib.import_module(f"cvexport.models.{trainer}")
    path = recipe.write_contact_sheet(tmp_path, recipe.default_config(), per_kind=4)
    assert path == tmp_path / "contact_sheet.png"
    with Image.open(path) as sheet:
        assert sheet.format == "PNG" and sheet.width > 300 and sheet.height > 150
