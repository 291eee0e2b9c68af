"""Reading user images and fitting them to a network input, and undoing it.

How an image becomes the network input is part of a model's spec and of its bundle's manifest
(:class:`InputFit`, one of :data:`FITS`): cvexport's own models are letterboxed, torchvision's
models follow the transforms they were trained with. Every fit is one per-axis scale and offset
(:class:`Letterbox`), so one object maps results back whatever the fit.

Every failure a user can cause becomes a one-line :class:`CvexportError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvexport.errors import CvexportError

LETTERBOX_FILL = 114  # neutral grey, as most detector pipelines pad
# How an image becomes the network input (``ModelSpec.fit``, the manifest's ``input.fit``):
# letterbox: keep aspect, centred, grey padding (cvexport's models; the default);
# stretch: resize to exactly the input size (torchvision SSD300 / SSDlite320: fixed_size);
# top_left: keep aspect, content at the top-left, the rest the mean colour (torchvision
#   RetinaNet / FCOS: GeneralizedRCNNTransform's batch_images pads normalized zeros there);
# resize_crop: shorter side to side / crop_fraction, then a centred crop (torchvision's
#   ImageClassification eval transform, e.g. resize 256 then crop 224).
FITS = ("letterbox", "stretch", "top_left", "resize_crop")


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3), upright and flattened.

    The one reader of image files: every input goes through :func:`as_rgb_array`'s rules
    (EXIF orientation applied; 16-bit data scaled to 8 bits; transparency composited on white).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise CvexportError(f"image not found: {path}")
    if path.is_dir():
        raise CvexportError(f"{path} is a directory; pass image files")
    try:
        with Image.open(path) as image:
            image.load()  # decodes fully, so truncated files fail here and not later
            array = _pil_to_rgb(image, str(path))
    except Image.DecompressionBombError:
        raise CvexportError(f"{path} has too many pixels to decode safely; downscale it first") from None
    except UnidentifiedImageError:
        raise CvexportError(f"{path} is not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CvexportError(f"{path} is corrupt or truncated ({exc}); re-export or re-copy the file") from None
    if array.shape[0] < 2 or array.shape[1] < 2:
        raise CvexportError(f"{path} is only {array.shape[1]}x{array.shape[0]} pixels; pass a real image")
    return array


def as_rgb_array(image, name: str = "image") -> np.ndarray:
    """Any single image -> uint8 RGB (H, W, 3), C-contiguous. The same rules for every kind of input,
    so a file, the PIL image opened from it and its pixels as an array give identical results:

    * a path (``str`` or ``os.PathLike``): read by :func:`load_image`;
    * a PIL image: its EXIF orientation is applied (as for files; applying it twice is harmless,
      Pillow drops the tag once it is applied); modes ``I;16*`` and ``I`` are 16-bit data, ``F`` is
      float data (the rules below);
    * an array (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, whose dtype sets the scale:
      uint8 as is; uint16 is 16-bit (0..65535) and becomes its high byte (so an 8-bit image
      multiplied by 257 or 256 gives that image back, as Pillow reads 16-bit colour PNGs);
      bool is 0 / 255; other integers must hold 0..255; floats must hold 0..1 (the
      scikit-image / matplotlib / torchvision convention) and are rounded from x 255. Values out of
      range, NaN, 2 or 5 channels and empty arrays are refused with a :class:`CvexportError`
      rather than guessed at or clipped: convert 0..255 floats with ``.astype(np.uint8)``.

    Transparency (RGBA, LA, PA, palette or grey with a transparent colour) is composited on
    white, for every kind of input: pixels under full transparency hold arbitrary colours
    (often black) that dropping alpha would show to the network, and white is what viewers and
    documents show behind a transparent picture, so results match what the user sees; the
    rendered pictures (annotations, overlays) show the same white.

    ``name`` says which input an error is about (e.g. ``images[3]``); paths name themselves.
    """
    import os

    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if _is_pil_image(image):
        return _pil_to_rgb(image, name)
    if isinstance(image, (bytes, bytearray, memoryview)):
        raise CvexportError(f"{name} is {type(image).__name__}, not a path, PIL image or array; "
                            f"save the encoded bytes to a file, or decode them first (PIL.Image.open(io.BytesIO(data)))")
    if not isinstance(image, np.ndarray) and not hasattr(image, "__array__"):
        raise CvexportError(f"{name} is a {type(image).__name__}; pass a path, a PIL image or an "
                            "(H, W), (H, W, 3) or (H, W, 4) array")
    try:
        array = np.asarray(image)
    except Exception as exc:  # an object whose __array__ fails
        raise CvexportError(f"{name} ({type(image).__name__}) cannot be read as an array ({exc}); "
                            "pass a numpy array") from None
    return _array_to_rgb(array, name)


def _is_pil_image(image) -> bool:
    from PIL import Image

    return isinstance(image, Image.Image)


def _pil_to_rgb(image, name: str) -> np.ndarray:
    """A PIL image (any mode) -> uint8 RGB, upright, 16-bit scaled, transparency on white."""
    from PIL import Image, ImageOps

    if image.width == 0 or image.height == 0:
        raise CvexportError(f"{name} is empty ({image.width}x{image.height} pixels); pass a real image")
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block must not become a traceback
        raise CvexportError(f"{name} has unreadable EXIF data ({exc}); re-save the image without it") from None
    image = upright if upright is not None else image
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image)
        if image.mode == "I" and values.size and (values.min() < 0 or values.max() > 65535):
            raise CvexportError(f"{name} is a 32-bit integer image with values {values.min()}..{values.max()}; "
                                "only 16-bit (0..65535) integer images are read; convert it to 8 or 16 bits")
        return _array_to_rgb(values.astype(np.uint16), name)
    if image.mode == "F":
        return _array_to_rgb(np.asarray(image, dtype=np.float32), name)
    try:
        if image.mode == "La":  # premultiplied; Pillow converts it to LA only
            image = image.convert("LA")
        if image.mode in ("RGBA", "LA", "PA", "RGBa") or (
            image.mode in ("P", "L", "RGB") and "transparency" in image.info
        ):
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
        rgb = image.convert("RGB")
    except ValueError as exc:  # a mode Pillow cannot convert
        raise CvexportError(f"{name} has image mode {image.mode}, which cannot be converted to RGB ({exc}); "
                            "convert it to RGB first") from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    """An image array (see :func:`as_rgb_array`) -> uint8 RGB."""
    from PIL import Image

    shape = tuple(array.shape)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        hint = ""
        if array.ndim == 3 and array.shape[0] in (1, 3, 4):
            hint = " (channels first? use array.transpose(1, 2, 0))"
        raise CvexportError(f"{name} array has shape {shape}; expected (H, W), (H, W, 1), (H, W, 3) RGB "
                            f"or (H, W, 4) RGBA{hint}")
    if array.size == 0:
        raise CvexportError(f"{name} array has shape {shape}, it is empty; pass an image with pixels")
    array = _to_uint8(array, name)
    if array.shape[-1] == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=-1))
    if array.shape[-1] == 4:  # the same compositing as for files and PIL images
        return _pil_to_rgb(Image.fromarray(np.ascontiguousarray(array), mode="RGBA"), name)
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise CvexportError(f"{name} array is {dtype} with values {low}..{high}; integer images must hold "
                                "0..255 (or be uint16 for 16-bit data): convert with .astype(np.uint8) or rescale")
        return array.astype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        if not np.isfinite(array).all():
            raise CvexportError(f"{name} array ({dtype}) holds NaN or infinite values; pass finite pixel values")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            raise CvexportError(f"{name} array is {dtype} with values {low:g}..{high:g}; float images must hold "
                                "0..1; for 0..255 data pass uint8 (.astype(np.uint8))")
        return np.rint(array.astype(np.float64) * 255.0).astype(np.uint8)
    kind = "complex" if np.issubdtype(dtype, np.complexfloating) else f"dtype {dtype}"
    raise CvexportError(f"{name} array has {kind} values; pass uint8 (0..255), uint16 (0..65535) or float (0..1) pixels")


@dataclass(frozen=True)
class Letterbox:
    """How an original image was placed into the network input: scaled by (``scale_x``,
    ``scale_y``) then offset by (``pad_x``, ``pad_y``) pixels. Whatever the :class:`InputFit`:
    stretch has unequal scales, top_left zero offsets, resize_crop negative offsets (the
    picture overhangs the input and is cropped)."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    original_width: int
    original_height: int

    def content(self) -> tuple[int, int, int, int]:
        """(left, top, width, height) in whole pixels of the network input: where the picture lies."""
        return (int(self.pad_x), int(self.pad_y), round(self.scale_x * self.original_width),
                round(self.scale_y * self.original_height))

    def boxes_to_original(self, boxes: np.ndarray, input_width: int, input_height: int) -> np.ndarray:
        """boxes (ndarray[D, 4]) in (x1, y1, x2, y2) normalized to the network input ->
        pixels of the original image, clipped to it."""
        out = np.asarray(boxes, dtype=np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] * input_width - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] * input_height - self.pad_y) / self.scale_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.original_width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.original_height)
        return out

    def then(self, inner: "Letterbox") -> "Letterbox":
        """This fit (original -> frame) followed by ``inner`` (frame -> network input), as one
        fit of the original (the composition of the two per-axis affine maps)."""
        return Letterbox(self.scale_x * inner.scale_x, self.scale_y * inner.scale_y,
                         self.pad_x * inner.scale_x + inner.pad_x, self.pad_y * inner.scale_y + inner.pad_y,
                         self.original_width, self.original_height)

    def map_to_original(self, array: np.ndarray, labels: bool = False) -> np.ndarray:
        """A dense network output (ndarray[H_in, W_in] or [H_in, W_in, C], uint8) -> the same over
        the original image: the padding is cut away, the rest resized to the original size
        (nearest for ``labels``, so class ids never blend; bilinear for pictures)."""
        from PIL import Image

        if self.pad_x < 0 or self.pad_y < 0:
            raise CvexportError("a centre-cropped input (fit resize_crop) shows the network only part of the picture, "
                                "so a dense output cannot be mapped back over all of it; use another fit")
        left, top, new_w, new_h = self.content()
        content = np.ascontiguousarray(array[top : top + new_h, left : left + new_w])
        resample = Image.NEAREST if labels else Image.BILINEAR
        return np.asarray(Image.fromarray(content).resize((self.original_width, self.original_height), resample))


def letterbox_fit(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Where a (h, w) image goes in a (height, width) letterbox: (new_w, new_h, pad_x, pad_y),
    the resized size keeping the aspect ratio and the top-left offset of the centred content.
    The aspect-keeping size of :meth:`InputFit.place` (letterbox and top_left)."""
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    return new_w, new_h, (width - new_w) // 2, (height - new_h) // 2


def box_prefilter(w: int, h: int, new_w: int, new_h: int) -> int:
    """The whole-pixel box filter (k x k average, stride k) the in-graph letterbox applies before
    its bilinear resize when it shrinks by 2x or more: plain bilinear samples only a few source
    pixels per output pixel there and aliases (measured on 1280x720 -> 256x144 frames: 60 % of
    the SSD's detections kept against Pillow's antialiased resize). 1 means none."""
    return max(1, min(w // new_w, h // new_h))


@dataclass(frozen=True)
class InputFit:
    """How an image becomes the network input: ``mode`` one of :data:`FITS`, ``crop_fraction``
    (crop side / resize side, in (0, 1]) for resize_crop only, ``fill`` the uint8 RGB of the
    padding (letterbox grey; top_left the model's mean colour, which normalizes to about 0 as
    torchvision's zero padding of normalized batches does).

    The one geometry of every preparer (Pillow's, FFmpeg's), the Predictor, INT8 calibration,
    bench and the in-graph fit of ``build --frame-size`` (:meth:`place`)."""

    mode: str = "letterbox"
    crop_fraction: float | None = None
    fill: tuple[int, int, int] = (LETTERBOX_FILL,) * 3

    def __post_init__(self):
        if self.mode not in FITS:
            raise CvexportError(f"unknown input fit {self.mode!r}; choose one of: {', '.join(FITS)}")
        cropped = self.mode == "resize_crop"
        fraction = self.crop_fraction
        if cropped and not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
                            and 0.0 < fraction <= 1.0):
            raise CvexportError(f"fit resize_crop needs a crop_fraction in (0, 1] (crop side / resize side), "
                                f"not {fraction!r}")
        if not cropped and fraction is not None:
            raise CvexportError(f"crop_fraction {fraction!r} applies only to fit resize_crop, not {self.mode}")

    @classmethod
    def of(cls, source) -> "InputFit":
        """The fit of a :class:`cvexport.registry.ModelSpec` or a bundle's
        :class:`cvexport.manifest.InputContract` (both have ``fit``, ``crop_fraction`` and ``mean``)."""
        mode = getattr(source, "fit", None) or "letterbox"
        fill = (tuple(int(round(float(m) * 255.0)) for m in source.mean) if mode == "top_left"
                else (LETTERBOX_FILL,) * 3)
        return cls(mode, getattr(source, "crop_fraction", None), fill)

    def refusal(self, task=None, in_graph: bool = False) -> str | None:
        """Why a bundle of ``task`` (a :class:`cvexport.task_base.Task`; None: not asked) could not
        apply this fit (None when it can): resize_crop crops the picture, so only a task whose
        results survive that (``accepts_cropped_input``: a classifier's one answer per picture)
        takes it, and the graph of ``build --frame-size`` (``in_graph``) does not crop. One rule
        for the build, its graph section and the manifest check."""
        if self.mode != "resize_crop":
            return None
        if task is not None and not task.accepts_cropped_input:
            return (f"fit resize_crop crops the picture, so a {task.name} result could not be mapped back over "
                    "all of it; use letterbox, stretch or top_left")
        if in_graph:
            return ("--frame-size fits camera frames in the graph, which does not centre-crop (fit resize_crop); "
                    "build without --frame-size, the runtime crops each image")
        return None

    def check(self, task=None, in_graph: bool = False) -> None:
        """:meth:`refusal` as a one-line :class:`CvexportError`."""
        if (reason := self.refusal(task, in_graph)) is not None:
            raise CvexportError(reason)

    def place(self, w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
        """Where a (h, w) image goes in a (height, width) input: (new_w, new_h, pad_x, pad_y), the
        size it is resized to and the input pixel its top-left corner lands on (negative for
        resize_crop: the resized picture overhangs the input on both sides)."""
        if self.mode == "letterbox":
            return letterbox_fit(w, h, width, height)
        if self.mode == "stretch":
            return width, height, 0, 0
        if self.mode == "top_left":
            new_w, new_h, _, _ = letterbox_fit(w, h, width, height)
            return new_w, new_h, 0, 0
        # resize_crop, as torchvision's Resize(short) + CenterCrop: the longer side by the same
        # ratio, truncated; the crop anchored at int(round(overhang / 2)).
        short = self.resize_side(width, height)
        if w <= h:
            new_w, new_h = short, int(short * h / w)
        else:
            new_w, new_h = int(short * w / h), short
        return new_w, new_h, -int(round((new_w - width) / 2.0)), -int(round((new_h - height) / 2.0))

    def resize_side(self, width: int, height: int) -> int:
        """resize_crop: the side the picture's shorter side is resized to, round(side /
        crop_fraction) for the larger input side (so the crop fits both; inputs are square in
        practice), e.g. 256 for a 224 crop of fraction 0.875."""
        return max(1, round(max(width, height) / self.crop_fraction))

    def map(self, w: int, h: int, width: int, height: int) -> Letterbox:
        """The :class:`Letterbox` of fitting a (h, w) image into (height, width)."""
        new_w, new_h, pad_x, pad_y = self.place(w, h, width, height)
        # Rounding makes the two axes' effective scales differ slightly; keep both.
        return Letterbox(new_w / w, new_h / h, float(pad_x), float(pad_y), w, h)

    def is_identity(self, w: int, h: int, width: int, height: int) -> bool:
        """Whether a (h, w) image goes in unchanged (no resize, no padding, no crop)."""
        return self.place(w, h, width, height) == (width, height, 0, 0) and (w, h) == (width, height)

    def apply_by(self, resize, w: int, h: int, width: int, height: int) -> tuple[np.ndarray, Letterbox]:
        """Fit a (h, w) image into (height, width); ``resize(new_w, new_h)`` gives the image as
        uint8 RGB (new_h, new_w, 3), by whatever resampler the caller has (Pillow's, FFmpeg's
        scaler). The part of the resized image inside the input is kept, the rest of the input
        is :attr:`fill`.

        Returns (uint8 (height, width, 3) canvas, the :class:`Letterbox` that undoes it).
        """
        new_w, new_h, pad_x, pad_y = self.place(w, h, width, height)
        resized = resize(new_w, new_h)
        if (new_w, new_h, pad_x, pad_y) == (width, height, 0, 0):
            canvas = np.array(resized, dtype=np.uint8)  # a copy: the caller's may be a shared buffer
        else:
            canvas = np.empty((height, width, 3), dtype=np.uint8)
            canvas[...] = np.asarray(self.fill, dtype=np.uint8)
            left, top = max(pad_x, 0), max(pad_y, 0)  # on the canvas
            skip_x, skip_y = max(-pad_x, 0), max(-pad_y, 0)  # of the resized image (cropped away)
            cw, ch = min(new_w - skip_x, width - left), min(new_h - skip_y, height - top)
            canvas[top : top + ch, left : left + cw] = resized[skip_y : skip_y + ch, skip_x : skip_x + cw]
        return canvas, self.map(w, h, width, height)

    def apply(self, image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Letterbox]:
        """Fit uint8 RGB ``image`` into (height, width), resized by Pillow's bilinear filter
        (antialiased when shrinking, as torchvision's resize of PIL images and its tensor resize
        with antialias=True).

        Returns (uint8 (height, width, 3) canvas, the :class:`Letterbox` that undoes it).
        """
        from PIL import Image

        def resize(new_w: int, new_h: int) -> np.ndarray:
            return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))

        return self.apply_by(resize, image.shape[1], image.shape[0], width, height)

    def describe(self, width: int, height: int) -> str:
        """What the fit does, for the manifest's ``input.resize`` (free text, for people)."""
        return f"{self.mode} ({self.details(width, height)})"

    def details(self, width: int, height: int) -> str:
        """:meth:`describe` without the mode's name."""
        if self.mode == "letterbox":
            return f"keep aspect, pad grey {LETTERBOX_FILL}, centred"
        if self.mode == "stretch":
            return f"resize to exactly {width}x{height}, aspect not kept, no padding"
        if self.mode == "top_left":
            return ("keep aspect, content at the top-left, pad bottom/right with the mean colour "
                    f"{','.join(str(v) for v in self.fill)}")
        return (f"shorter side to {self.resize_side(width, height)} keeping aspect, then centre crop {width}x{height}")


LETTERBOX = InputFit()


def letterbox_map(w: int, h: int, width: int, height: int) -> Letterbox:
    """The :class:`Letterbox` of letterboxing a (h, w) image into (height, width)."""
    return LETTERBOX.map(w, h, width, height)


def letterbox_by(resize, w: int, h: int, width: int, height: int) -> tuple[np.ndarray, Letterbox]:
    """:meth:`InputFit.apply_by` of the letterbox: keep aspect, centred, pad :data:`LETTERBOX_FILL`."""
    return LETTERBOX.apply_by(resize, w, h, width, height)


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, Letterbox]:
    """:meth:`InputFit.apply` of the letterbox: resize uint8 RGB ``image`` to fit (height, width)
    keeping its aspect ratio (Pillow's bilinear filter), pad the rest grey.

    Returns (uint8 (height, width, 3) canvas, the :class:`Letterbox` that undoes it).
    """
    return LETTERBOX.apply(image, width, height)
