"""High-level inference: images in, results in each original image's pixels out (detections, top classes, label maps, stylized images)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cvexport.bundle import Bundle, load_bundle
from cvexport.errors import CvexportError
from cvexport.images import Letterbox, as_rgb_array, letterbox, letterbox_map
from cvexport.preprocess import to_network_input
from cvexport.runtime import create_runner
from cvexport.tasks import get_task


@dataclass
class PreparedBatch:
    """Network input for a batch of images, and how each was fitted (to map results back)."""

    feed: dict[str, np.ndarray]
    letterboxes: list


def prepare_batch(bundle: Bundle, images: Sequence[np.ndarray]) -> PreparedBatch:
    """uint8 RGB images -> the bundle's network input: letterbox to its size, then its input
    contract (float NCHW normalized, or uint8 NHWC). The one preprocessing of every caller."""
    contract = bundle.input
    width, height = contract.width, contract.height
    if contract.letterbox is None:
        fitted = [letterbox(image, width, height) for image in images]
    else:
        # The graph letterboxes frames of its camera size itself (build --frame-size): those go in
        # untouched; other images are first fitted to that size here, and both fits are undone.
        in_graph = letterbox_map(width, height, *contract.network_size)
        fitted = [_fit_to_frame(image, width, height, in_graph) for image in images]
    return PreparedBatch({contract.name: to_network_input([f[0] for f in fitted], contract)},
                         [f[1] for f in fitted])


def _fit_to_frame(image: np.ndarray, width: int, height: int, in_graph: Letterbox) -> tuple[np.ndarray, Letterbox]:
    """(the frame the graph takes, the fit from ``image`` to the network input) for a bundle
    whose graph letterboxes (height, width) frames itself with ``in_graph``."""
    if image.shape[1] == width and image.shape[0] == height:
        return image, Letterbox(1.0, 1.0, 0.0, 0.0, width, height).then(in_graph)
    frame, fit = letterbox(image, width, height)
    return frame, fit.then(in_graph)


def finish_batch(task, bundle: Bundle, outputs: dict[str, np.ndarray], batch: PreparedBatch) -> list[Any]:
    """Raw outputs of ``batch`` -> the task's result per image, in each original image's pixels."""
    return task.to_predictions(outputs, batch.letterboxes, bundle.class_names, *bundle.input.network_size)


class Predictor:
    """Load a bundle once, then ``predict`` images on any backend.

    ``predict`` fits each image to the network input (letterbox), runs batches of at most
    the bundle's maximum, and maps results back to each original image. Safe to call from
    several threads: the runner's session is shared and each call keeps its own buffers.
    """

    def __init__(self, bundle: Bundle | str, backend: str = "ort", threads: int | None = None):
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.backend = backend
        self.runner = create_runner(self.bundle, backend, threads=threads)
        self.task = get_task(self.bundle.task)

    def __enter__(self) -> "Predictor":
        return self

    def __exit__(self, *exc) -> None:
        self.runner.close()

    # The three steps of a prediction, for pipelines that time or overlap them (bench, streams).
    def prepare(self, images: Sequence[np.ndarray]) -> PreparedBatch:
        """uint8 RGB arrays (at most the bundle's max batch) -> network input + letterboxes."""
        return prepare_batch(self.bundle, images)

    def infer(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw outputs for network inputs that already follow the bundle's input contract."""
        return self.runner.infer(tensors)

    def finish(self, outputs: dict[str, np.ndarray], batch: PreparedBatch) -> list[Any]:
        """Raw outputs of ``batch`` -> one result per image, in its original pixels."""
        return finish_batch(self.task, self.bundle, outputs, batch)

    def predict(self, images: Any) -> list[Any]:
        """Results for ``images``, always as a list with one result per image, in order (each result
        as the task's ``to_predictions`` gives it: detections, top classes, a label map or a picture).

        ``images`` is either one image or several:

        * one image: a path (``str`` or ``os.PathLike``), a PIL image, or one (H, W) / (H, W, C)
          array; the result is a list of one (``predict(x)[0]`` is its result);
        * several: a list, tuple or other iterable of such images, or one (N, H, W, C) array
          (N images); an empty list gives an empty list.

        Each image follows :func:`cvexport.images.as_rgb_array`'s rules (EXIF orientation applied,
        16-bit data scaled to 8 bits, transparency composited on white, floats in 0..1). Every image
        is read and checked before any inference; anything unusable (a missing file, an empty
        or 2/5-channel array, an object that is no image) raises a one-line :class:`CvexportError`
        naming it.
        """
        arrays = _as_image_arrays(images)
        results: list[Any] = []
        for start in range(0, len(arrays), self.bundle.max_batch):
            batch = self.prepare(arrays[start : start + self.bundle.max_batch])
            results.extend(self.finish(self.infer(batch.feed), batch))
        return results


def _as_image_arrays(images: Any) -> list[np.ndarray]:
    """``predict``'s argument -> uint8 RGB arrays, one per image (see ``Predictor.predict``)."""
    if not isinstance(images, (list, tuple, np.ndarray)) and hasattr(images, "__array__"):
        images = np.asarray(images)  # a tensor or other array-like: one image or a batch, by its shape
    if _is_single_image(images):
        return [as_rgb_array(images)]
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise CvexportError(f"image array has shape {images.shape} ({images.ndim}-D); pass one image as "
                                "(H, W) or (H, W, C), several as (N, H, W, C) or a list")
        if len(images) == 0:
            raise CvexportError(f"image batch has shape {images.shape}, it is empty; pass at least one image")
    elif isinstance(images, (dict, bytes, bytearray, memoryview)) or not isinstance(images, Iterable):
        raise CvexportError(f"images is a {type(images).__name__}; pass a path, a PIL image or an image array, "
                            "or a list of them")
    return [as_rgb_array(image, name=f"images[{index}]") for index, image in enumerate(images)]


def _is_single_image(images: Any) -> bool:
    from PIL import Image

    if isinstance(images, (str, os.PathLike, Image.Image)):
        return True
    return isinstance(images, np.ndarray) and images.ndim in (2, 3)
