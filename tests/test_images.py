"""Image loading, array coercion and letterboxing (cvexport/images.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cvexport.errors import CvexportError
from cvexport.images import LETTERBOX_FILL, Letterbox, as_rgb_array, letterbox, load_image


def _gradient(height: int, width: int) -> np.ndarray:
    """A deterministic uint8 RGB image whose pixels differ (rows, columns, channels)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(((x * 7) % 256, (y * 5) % 256, ((x + y) * 3) % 256), axis=-1).astype(np.uint8)


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


# ----------------------------------------------------------------------------- load_image
def test_load_png_rgb_exact(tmp_path):
    pixels = _gradient(20, 30)
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels).save(path)
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
    np.testing.assert_array_equal(image, pixels)
    np.testing.assert_array_equal(load_image(str(path)), pixels)  # str path too


def test_load_jpeg(tmp_path):
    pixels = np.full((24, 40, 3), (200, 60, 30), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=95)
    image = load_image(path)
    assert image.dtype == np.uint8 and image.shape == (24, 40, 3)
    assert np.abs(image.astype(int) - pixels).max() <= 4  # lossy, but a flat colour survives


def test_load_grey_becomes_three_equal_channels(tmp_path):
    grey = (np.arange(12 * 16).reshape(12, 16) % 256).astype(np.uint8)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, mode="L").save(path)
    image = load_image(path)
    assert image.shape == (12, 16, 3) and image.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], grey)


def test_load_rgba_composites_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, :5, 3] = 255  # left half opaque
    rgba[:, 5:, 3] = 0  # right half fully transparent (colour underneath must not show)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    image = load_image(path)
    assert image.shape == (10, 10, 3)
    assert (image[:, :5] == (10, 20, 30)).all()
    assert (image[:, 5:] == 255).all()


def test_load_palette(tmp_path):
    palette_image = Image.new("P", (8, 6))
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 9))
    palette_image.putdata([0] * 24 + [2] * 24)
    path = tmp_path / "palette.png"
    palette_image.save(path)
    image = load_image(path)
    assert image.shape == (6, 8, 3)
    assert (image[:3] == (255, 0, 0)).all()
    assert (image[3:] == (0, 0, 255)).all()


def test_load_palette_with_transparency_composites_on_white(tmp_path):
    palette_image = Image.new("P", (8, 6))
    palette_image.putpalette([0, 0, 0, 0, 255, 0] + [0] * (768 - 6))
    palette_image.putdata([0] * 24 + [1] * 24)
    path = tmp_path / "palette_t.png"
    palette_image.save(path, transparency=0)  # index 0 (black) is transparent
    image = load_image(path)
    assert (image[:3] == 255).all()
    assert (image[3:] == (0, 255, 0)).all()


def _write_truncated_png(path):
    full = path.with_name("full.png")
    Image.fromarray(_gradient(64, 64)).save(full)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_truncated_jpeg(path):
    full = path.with_name("full.jpg")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full, quality=90)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "name, make, needle",
    [
        ("missing.png", lambda p: None, "not found"),
        ("a_directory.png", lambda p: p.mkdir(), "directory"),
        ("corrupt.png", lambda p: p.write_bytes(b"this is not an image at all" * 10), "corrupt"),
        ("empty.jpg", lambda p: p.write_bytes(b""), "not a readable image"),
        ("fake.jpg", lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200)), "corrupt"),
        ("truncated.png", _write_truncated_png, "truncated"),
        ("truncated.jpg", _write_truncated_jpeg, "truncated"),
        ("tiny.png", lambda p: Image.new("RGB", (1, 1)).save(p), "1x1"),
    ],
)
def test_load_image_errors_are_one_line(tmp_path, name, make, needle):
    path = tmp_path / name
    make(path)
    with pytest.raises(CvexportError) as excinfo:
        load_image(path)
    message = _one_line_error(excinfo)
    assert name in message
    assert needle in message


def test_load_image_too_many_pixels_is_one_line_error(tmp_path, monkeypatch):
    """Pillow refuses images above 2 * MAX_IMAGE_PIXELS (DecompressionBombError, an Exception but
    not an OSError); a user passing a huge image must still get a one-line error. The limit is
    lowered here so the test needs no giant file."""
    path = tmp_path / "huge.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels > 2 * 100
    with pytest.raises(CvexportError) as excinfo:
        load_image(path)
    assert "huge.png" in _one_line_error(excinfo)


# --------------------------------------------------------------------------- as_rgb_array
@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((4, 5), 7, np.uint8), np.full((4, 5, 3), 7, np.uint8)),
        (np.full((4, 5, 1), 9, np.uint8), np.full((4, 5, 3), 9, np.uint8)),
        (np.full((4, 5, 3), (1, 2, 3), np.uint8), np.full((4, 5, 3), (1, 2, 3), np.uint8)),
        (np.full((4, 5, 4), (1, 2, 3, 255), np.uint8), np.full((4, 5, 3), (1, 2, 3), np.uint8)),  # opaque
        (np.full((4, 5, 4), (1, 2, 3, 0), np.uint8), np.full((4, 5, 3), 255, np.uint8)),  # transparent: white
        (np.full((4, 5, 3), (0.0, 1.0, 0.2), np.float32), np.full((4, 5, 3), (0, 255, 51), np.uint8)),  # 0..1 scaled
        (np.full((4, 5), 1.0, np.float64), np.full((4, 5, 3), 255, np.uint8)),
        (np.full((4, 5, 3), (0.0, 0.5, 0.999), np.float32), np.full((4, 5, 3), (0, 128, 255), np.uint8)),  # rounded
        (np.full((4, 5, 3), (0, 100, 255), np.int64), np.full((4, 5, 3), (0, 100, 255), np.uint8)),  # 0..255 ints
        (np.full((4, 5, 3), (0, 257 * 100, 65535), np.uint16), np.full((4, 5, 3), (0, 100, 255), np.uint8)),  # 16-bit
        (np.array([[True, False]] * 3), np.repeat(np.array([[255, 0]] * 3, np.uint8)[..., None], 3, axis=-1)),
    ],
    ids=["HW-u8", "HW1-u8", "HW3-u8", "HW4-u8-opaque", "HW4-u8-clear", "f32-unit", "f64-HW-unit", "f32-round",
         "i64-255", "u16", "bool"],
)
def test_as_rgb_array_shapes_and_dtypes(array, expected):
    out = as_rgb_array(array)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, expected)


def test_as_rgb_array_pil_and_path(tmp_path):
    pixels = _gradient(6, 9)
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(pixels)), pixels)
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(pixels[..., 0], mode="L"))[..., 2], pixels[..., 0])
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(as_rgb_array(path), pixels)
    with pytest.raises(CvexportError):
        as_rgb_array(tmp_path / "nope.png")


@pytest.mark.parametrize("shape", [(4, 5, 2), (4, 5, 5), (10,), (2, 4, 5, 3), (), (4, 5, 0)])
def test_as_rgb_array_bad_shape(shape):
    with pytest.raises(CvexportError) as excinfo:
        as_rgb_array(np.zeros(shape, np.uint8))
    assert "shape" in _one_line_error(excinfo)


# ------------------------------------------------------------------------------ letterbox
NET_W = NET_H = 256


@pytest.mark.parametrize(
    "width, height, new_size, pad",
    [
        (640, 480, (256, 192), (0, 32)),  # landscape: scale 0.4
        (300, 600, (128, 256), (64, 0)),  # portrait: scale 256 / 600
        (100, 100, (256, 256), (0, 0)),  # square, upscaled
        (512, 512, (256, 256), (0, 0)),  # square, downscaled
    ],
    ids=["landscape", "portrait", "square-up", "square-down"],
)
def test_letterbox_geometry(width, height, new_size, pad):
    image = np.full((height, width, 3), 200, np.uint8)
    canvas, box_map = letterbox(image, NET_W, NET_H)
    assert canvas.shape == (NET_H, NET_W, 3) and canvas.dtype == np.uint8
    new_w, new_h = new_size
    pad_x, pad_y = pad
    assert (box_map.pad_x, box_map.pad_y) == (pad_x, pad_y)
    assert box_map.scale_x == pytest.approx(new_w / width) and box_map.scale_y == pytest.approx(new_h / height)
    assert (box_map.original_width, box_map.original_height) == (width, height)
    # content where the resized image goes, grey fill elsewhere
    assert (canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] == 200).all()
    fill = np.ones((NET_H, NET_W), bool)
    fill[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = False
    assert (canvas[fill] == LETTERBOX_FILL).all()


def _to_network(box_map: Letterbox, boxes_px: np.ndarray) -> np.ndarray:
    """Original pixels -> normalized network input (the forward map the letterbox applied)."""
    out = np.asarray(boxes_px, dtype=np.float64).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] * box_map.scale_x + box_map.pad_x) / NET_W
    out[:, [1, 3]] = (out[:, [1, 3]] * box_map.scale_y + box_map.pad_y) / NET_H
    return out


SIZES = [(640, 480), (300, 600), (100, 100), (333, 157), (157, 333), (1000, 999)]
SIZE_IDS = ["landscape", "portrait", "square", "odd-landscape", "odd-portrait", "near-square"]


@pytest.mark.parametrize("width, height", SIZES, ids=SIZE_IDS)
def test_letterbox_drawn_box_round_trip(width, height):
    """A box drawn in original pixels is found at its mapped place in the network input, and the
    box found there maps back to the original within a pixel (plus the resize's own blur)."""
    x1, y1, x2, y2 = round(width * 0.2), round(height * 0.3), round(width * 0.7), round(height * 0.9)
    image = np.zeros((height, width, 3), np.uint8)
    image[y1:y2, x1:x2] = (255, 0, 0)
    canvas, box_map = letterbox(image, NET_W, NET_H)
    red = (canvas[..., 0] > 127) & (canvas[..., 1] < 60) & (canvas[..., 2] < 60)
    rows, cols = np.flatnonzero(red.any(axis=1)), np.flatnonzero(red.any(axis=0))
    found = np.array([[cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]], dtype=np.float64)
    found_norm = found / [NET_W, NET_H, NET_W, NET_H]
    expected_norm = _to_network(box_map, np.array([[x1, y1, x2, y2]]))
    # where the letterbox says the box lands = where it really is, to a network pixel
    np.testing.assert_allclose(found_norm * NET_W, expected_norm * NET_W, atol=1.0)
    back = box_map.boxes_to_original(found_norm, NET_W, NET_H)
    # one network pixel is 1 / scale original pixels
    tol = 1.0 + 1.0 / min(box_map.scale_x, box_map.scale_y)
    np.testing.assert_allclose(back, [[x1, y1, x2, y2]], atol=tol)


@pytest.mark.parametrize("width, height", SIZES, ids=SIZE_IDS)
def test_letterbox_boxes_to_original_inverts_forward_map(width, height):
    _, box_map = letterbox(np.zeros((height, width, 3), np.uint8), NET_W, NET_H)
    boxes = np.array([[0, 0, width, height], [width * 0.1, height * 0.25, width * 0.6, height * 0.5], [3, 4, 5, 9]])
    back = box_map.boxes_to_original(_to_network(box_map, boxes), NET_W, NET_H)
    assert back.shape == (3, 4)
    np.testing.assert_allclose(back, boxes, atol=1.0)


@pytest.mark.parametrize("width, height", SIZES, ids=SIZE_IDS)
def test_boxes_to_original_clips_to_the_image(width, height):
    _, box_map = letterbox(np.zeros((height, width, 3), np.uint8), NET_W, NET_H)
    # whole network input (padding included) and a box hanging off every side
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [-0.2, -0.3, 1.4, 1.1]])
    back = box_map.boxes_to_original(boxes, NET_W, NET_H)
    np.testing.assert_allclose(back, [[0, 0, width, height]] * 2, atol=1e-9)


def test_boxes_to_original_empty_and_input_untouched():
    _, box_map = letterbox(np.zeros((50, 80, 3), np.uint8), NET_W, NET_H)
    assert box_map.boxes_to_original(np.zeros((0, 4)), NET_W, NET_H).shape == (0, 4)
    boxes = np.array([[0.5, 0.5, 0.6, 0.6]])
    box_map.boxes_to_original(boxes, NET_W, NET_H)
    np.testing.assert_array_equal(boxes, [[0.5, 0.5, 0.6, 0.6]])


def test_letterbox_non_square_network_input():
    image = np.full((100, 100, 3), 50, np.uint8)
    canvas, box_map = letterbox(image, 320, 160)
    assert canvas.shape == (160, 320, 3)
    assert (box_map.pad_x, box_map.pad_y) == (80, 0)
    assert box_map.scale_x == pytest.approx(1.6) and box_map.scale_y == pytest.approx(1.6)
    back = box_map.boxes_to_original(np.array([[80 / 320, 0.0, 240 / 320, 1.0]]), 320, 160)
    np.testing.assert_allclose(back, [[0, 0, 100, 100]], atol=1e-9)


# ------------------------------------------------------------------------- 16-bit images
def _png16(path, array: np.ndarray) -> None:
    """Write uint16 ``array`` ((H, W), (H, W, 2|3|4)) as a 16-bit PNG by hand: Pillow cannot write
    16-bit colour PNGs, and this keeps the test free of other image libraries."""
    import struct
    import zlib

    array = np.asarray(array, dtype=np.uint16)
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    height, width = array.shape[:2]
    raw = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("factor", [257, 256], ids=["x257", "x256"])
def test_16bit_grey_png_matches_its_8bit_copy(tmp_path, factor):
    """A 16-bit grey PNG was read as an all-white picture (Pillow's I;16 -> RGB clips at 255)."""
    grey = (np.arange(24 * 32).reshape(24, 32) % 256).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * factor).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    np.testing.assert_array_equal(load_image(tmp_path / "grey16.png"), load_image(tmp_path / "grey8.png"))


@pytest.mark.parametrize("channels", [1, 2, 3, 4], ids=["grey", "grey-alpha", "rgb", "rgba"])
def test_16bit_png_every_colour_type_matches_its_8bit_copy(tmp_path, channels):
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 256, (12, 10, channels), dtype=np.uint8)
    if channels in (2, 4):
        pixels[..., -1] = rng.choice([0, 128, 255], size=pixels.shape[:2])
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode).save(tmp_path / "p8.png")
    _png16(tmp_path / "p16.png", pixels.astype(np.uint16)[..., 0] * 257 if channels == 1 else pixels.astype(np.uint16) * 257)
    eight, sixteen = load_image(tmp_path / "p8.png"), load_image(tmp_path / "p16.png")
    np.testing.assert_array_equal(sixteen, eight)


def test_16bit_tiff_big_endian_and_mode_i(tmp_path):
    """Pillow opens 16-bit TIFFs as I;16 / I;16B and 32-bit integer ones as I: all read as 16-bit data."""
    grey = (np.arange(16 * 20).reshape(16, 20) * 7 % 256).astype(np.uint8)
    wide = grey.astype(np.uint16) * 257
    Image.frombytes("I;16B", (20, 16), wide.astype(">u2").tobytes()).save(tmp_path / "big.tif")
    Image.fromarray(wide.astype(np.int32)).save(tmp_path / "i32.tif")
    expected = np.repeat(grey[..., None], 3, axis=-1)
    for name in ("big.tif", "i32.tif"):
        np.testing.assert_array_equal(load_image(tmp_path / name), expected, err_msg=name)


def test_16bit_arrays_and_pil_images_match_8bit():
    """uint16 arrays were clipped at 255; 16-bit data is scaled to 8 bits (its high byte) everywhere."""
    pixels = _gradient(9, 11)
    expected = as_rgb_array(pixels)
    np.testing.assert_array_equal(as_rgb_array(pixels.astype(np.uint16) * 257), expected)
    np.testing.assert_array_equal(as_rgb_array(pixels.astype(np.uint16) * 256 + 255), expected)
    grey = pixels[..., 0]
    grey_expected = as_rgb_array(grey)
    np.testing.assert_array_equal(as_rgb_array(grey.astype(np.uint16) * 257), grey_expected)
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(grey.astype(np.uint16) * 257)), grey_expected)
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(grey.astype(np.int32) * 257)), grey_expected)


def test_16bit_copy_gives_identical_network_input(tmp_path):
    from cvexport.preprocess import IMAGENET_MEAN, IMAGENET_STD, to_network_input

    pixels = _gradient(30, 50)
    Image.fromarray(pixels[..., 1], mode="L").save(tmp_path / "g8.png")
    Image.fromarray(pixels[..., 1].astype(np.uint16) * 257).save(tmp_path / "g16.png")
    for contract in ({"dtype": "uint8"}, {"dtype": "float32", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}):
        feeds = [to_network_input([letterbox(as_rgb_array(image), 64, 64)[0]], contract)
                 for image in (tmp_path / "g8.png", tmp_path / "g16.png", pixels[..., 1].astype(np.uint16) * 257)]
        np.testing.assert_array_equal(feeds[1], feeds[0])
        np.testing.assert_array_equal(feeds[2], feeds[0])


# ------------------------------------------------------------------------ float / int rules
@pytest.mark.parametrize(
    "array, needle",
    [
        (np.full((4, 5, 3), (0.0, 128.0, 255.0), np.float32), "0..1"),  # 0..255 floats are ambiguous: refused
        (np.full((4, 5, 3), -0.5, np.float64), "0..1"),
        (np.full((4, 5, 3), np.nan, np.float32), "NaN"),
        (np.full((4, 5, 3), (-5, 100, 1000), np.int16), "0..255"),  # no silent clipping
        (np.full((4, 5, 3), 70000, np.int64), "0..255"),
        (np.full((4, 5, 3), 1 + 2j), "complex"),
        (np.full((4, 5, 3), "a"), "dtype"),
    ],
    ids=["f32-255", "f64-negative", "nan", "i16-out-of-range", "i64-big", "complex", "str"],
)
def test_as_rgb_array_refuses_values_it_would_have_to_guess(array, needle):
    with pytest.raises(CvexportError) as excinfo:
        as_rgb_array(array)
    assert needle in _one_line_error(excinfo)


@pytest.mark.parametrize("thing", [None, 3, 2.5, {"a": 1}, b"\x89PNG", object()],
                         ids=["None", "int", "float", "dict", "bytes", "object"])
def test_as_rgb_array_refuses_non_images(thing):
    with pytest.raises(CvexportError) as excinfo:
        as_rgb_array(thing)
    message = _one_line_error(excinfo)
    assert type(thing).__name__ in message and "path" in message


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 5, 3), (5, 0), (0, 4, 4)])
def test_as_rgb_array_refuses_empty_arrays(shape):
    with pytest.raises(CvexportError) as excinfo:
        as_rgb_array(np.zeros(shape, np.uint8))
    assert "empty" in _one_line_error(excinfo)


def test_as_rgb_array_refuses_zero_size_pil_image():
    with pytest.raises(CvexportError) as excinfo:
        as_rgb_array(Image.new("RGB", (0, 0)))
    assert "empty" in _one_line_error(excinfo)


# --------------------------------------------------------------------------- EXIF orientation
def _quadrants(height: int, width: int) -> np.ndarray:
    """Four flat colours, one per quadrant, so a rotation or mirror is visible even after JPEG."""
    image = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    image[:h, :w], image[:h, w:] = (255, 0, 0), (0, 255, 0)
    image[h:, :w], image[h:, w:] = (0, 0, 255), (255, 255, 255)
    return image


def _with_orientation(pixels: np.ndarray, path, orientation: int, **save) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif, **save)


def test_jpeg_exif_orientation_6_is_applied(tmp_path):
    """A phone JPEG with orientation 6 (rotate 90 degrees clockwise to display) was processed sideways."""
    pixels = _quadrants(40, 64)
    path = tmp_path / "phone.jpg"
    _with_orientation(pixels, path, 6, quality=95)
    image = load_image(path)
    assert image.shape == (64, 40, 3)
    upright = np.rot90(pixels, k=-1)  # 90 degrees clockwise
    # compare away from the quadrant edges, where JPEG blurs
    for y, x in ((8, 8), (8, 32), (56, 8), (56, 32)):
        assert np.abs(image[y, x].astype(int) - upright[y, x]).max() <= 12, (y, x, image[y, x], upright[y, x])
    with Image.open(path) as opened:  # the same picture given as a PIL image
        np.testing.assert_array_equal(as_rgb_array(opened), image)


@pytest.mark.parametrize(
    "orientation, upright",
    [
        (1, lambda a: a),
        (2, lambda a: a[:, ::-1]),
        (3, lambda a: np.rot90(a, 2)),
        (4, lambda a: a[::-1]),
        (5, lambda a: np.transpose(a, (1, 0, 2))),
        (6, lambda a: np.rot90(a, -1)),
        (7, lambda a: np.rot90(a, 2).transpose(1, 0, 2)),
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_every_exif_orientation_png_lossless(tmp_path, orientation, upright):
    pixels = _gradient(6, 10)
    path = tmp_path / f"o{orientation}.png"
    _with_orientation(pixels, path, orientation)
    np.testing.assert_array_equal(load_image(path), upright(pixels))
    with Image.open(path) as opened:
        np.testing.assert_array_equal(as_rgb_array(opened), upright(pixels))


def test_exif_orientation_applied_to_16bit_grey(tmp_path):
    grey = (np.arange(6 * 10).reshape(6, 10) * 4).astype(np.uint8)
    path = tmp_path / "o6-16.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(grey.astype(np.uint16) * 257).save(path, exif=exif)
    np.testing.assert_array_equal(load_image(path)[..., 0], np.rot90(grey, -1))


# ------------------------------------------------------------------------------ transparency
def _rgba_pixels() -> np.ndarray:
    rgba = np.zeros((8, 12, 4), np.uint8)
    rgba[..., :3] = _gradient(8, 12)
    rgba[..., 3] = np.array([0, 64, 128, 255])[np.arange(12) % 4]
    return rgba


def test_rgba_same_result_as_path_pil_image_and_array(tmp_path):
    """RGBA was composited on white from a file but had its alpha dropped as a PIL image or array."""
    rgba = _rgba_pixels()
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    from_path = as_rgb_array(path)
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(rgba, mode="RGBA")), from_path)
    np.testing.assert_array_equal(as_rgb_array(rgba), from_path)
    np.testing.assert_array_equal(as_rgb_array(rgba.astype(np.uint16) * 257), from_path)
    np.testing.assert_array_equal(as_rgb_array(rgba / 255.0), from_path)
    alpha = rgba[..., 3:].astype(float) / 255
    expected = rgba[..., :3] * alpha + 255 * (1 - alpha)  # on white
    assert np.abs(from_path.astype(float) - expected).max() <= 1


def test_la_same_result_as_path_pil_image_and_rgba(tmp_path):
    rgba = _rgba_pixels()
    la = np.dstack([rgba[..., 0], rgba[..., 3]])
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    with Image.open(path) as check:
        assert check.mode == "LA"
    from_path = as_rgb_array(path)
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(la, mode="LA")), from_path)
    grey_rgba = np.dstack([np.repeat(rgba[..., :1], 3, axis=-1), rgba[..., 3]])
    np.testing.assert_array_equal(as_rgb_array(grey_rgba), from_path)


def test_palette_with_transparency_same_result_as_path_and_pil_image(tmp_path):
    palette_image = Image.new("P", (8, 6))
    palette_image.putpalette([0, 0, 0, 0, 255, 0] + [0] * (768 - 6))
    palette_image.putdata([0] * 24 + [1] * 24)
    palette_image.info["transparency"] = 0
    path = tmp_path / "palette_t.png"
    palette_image.save(path, transparency=0)
    from_path = load_image(path)
    assert (from_path[:3] == 255).all() and (from_path[3:] == (0, 255, 0)).all()
    np.testing.assert_array_equal(as_rgb_array(palette_image), from_path)
    with Image.open(path) as opened:
        np.testing.assert_array_equal(as_rgb_array(opened), from_path)
