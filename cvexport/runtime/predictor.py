"""High-level inference: images in, results in each original image's pixels out (detections, top classes, label maps, stylized images)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from cvexport.bundle import Bundle, load_bundle
from cvexport.errors import CvexportError
from cvexport.images import InputFit, Letterbox, as_rgb_array
from cvexport.preprocess import to_network_input
from cvexport.runtime import create_runner
from cvexport.runtime.preparers import EXACT, Preparer
from cvexport.tasks import get_task


@dataclass(frozen=True, eq=False)  # arrays: compare their parts, not these
class Prepared:
    """One image ready for the network: its network input (each array a batch of one) and the
    fit that maps its results back to its own pixels."""

    feed: dict[str, np.ndarray]
    letterbox: Letterbox


@dataclass(frozen=True, eq=False)
class PreparedBatch:
    """Prepared images as one network batch: ``feed`` stacks theirs, ``items`` keeps each (to
    finish them one by one). For callers that run a batch on runners of their own (verify, bench)."""

    feed: dict[str, np.ndarray]
    items: list[Prepared]

    @classmethod
    def of(cls, items: Sequence[Prepared]) -> "PreparedBatch":
        return cls(stack_feeds(items), list(items))

    @property
    def letterboxes(self) -> list[Letterbox]:
        return [item.letterbox for item in self.items]


def prepare_image(bundle: Bundle, image: Any, preparer: Preparer = EXACT) -> Prepared:
    """One image -> the bundle's network input for it: fitted to the input size by ``preparer``
    (uint8 RGB arrays by default; see :mod:`cvexport.runtime.preparers`) with the bundle's fit
    (its manifest's ``input.fit``: letterbox, stretch, top_left or resize_crop), then its input
    contract (float NCHW normalized, or uint8 NHWC). The one preprocessing of every caller."""
    contract = bundle.input
    how = InputFit.of(contract)
    frame, fit = preparer.fit(image, contract.width, contract.height, how)
    if contract.letterbox is not None:
        # The graph fits frames of its camera size to the network size itself, by the same fit
        # (build --frame-size): results come back in network pixels, undone by both fits in turn.
        fit = fit.then(how.map(contract.width, contract.height, *contract.network_size))
    return Prepared({contract.name: to_network_input([frame], contract)}, fit)


def stack_feeds(prepared: Sequence[Prepared]) -> dict[str, np.ndarray]:
    """The network inputs of several prepared images (of any sources) as one batch, in order."""
    return {name: np.concatenate([item.feed[name] for item in prepared]) for name in prepared[0].feed}


def split_outputs(bundle: Bundle, outputs: dict[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
    """Raw outputs of a batch of ``n`` -> each image's, its row (a batch of one) of every output
    the manifest gives a batch dimension; an output without one is every image's."""
    batched = {o.name for o in bundle.manifest.outputs if o.shape and o.shape[0] == "batch"}
    return [{name: (value[i : i + 1] if name in batched else value) for name, value in outputs.items()}
            for i in range(n)]


def finish_image(task, bundle: Bundle, outputs: dict[str, np.ndarray], prepared: Prepared) -> Any:
    """One image's raw outputs (from :func:`split_outputs`) -> its result, in its original pixels."""
    return task.to_predictions(outputs, [prepared.letterbox], bundle.class_names, *bundle.input.network_size)[0]


def prepare_batch(bundle: Bundle, images: Sequence[np.ndarray]) -> PreparedBatch:
    """uint8 RGB images -> one batch of their network inputs (:func:`prepare_image` each)."""
    return PreparedBatch.of([prepare_image(bundle, image) for image in images])


def finish_batch(task, bundle: Bundle, outputs: dict[str, np.ndarray], batch: PreparedBatch) -> list[Any]:
    """Raw outputs of ``batch`` -> the task's result per image (:func:`finish_image` each)."""
    return [finish_image(task, bundle, mine, item)
            for mine, item in zip(split_outputs(bundle, outputs, len(batch.items)), batch.items)]


class Predictor:
    """Load a bundle once, then ``predict`` images on any backend.

    ``predict`` fits each image to the network input (the bundle's fit), runs batches of at most
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

    # The steps of a prediction, one image at a time around one batched inference, for pipelines
    # that time, overlap or batch them across sources (streams); predict is built on them.
    def prepare_one(self, image: Any, preparer: Preparer = EXACT) -> Prepared:
        """One uint8 RGB array (or what ``preparer`` takes: :mod:`cvexport.runtime.preparers`)
        -> its network input and the fit that maps its results back."""
        return prepare_image(self.bundle, image, preparer)

    def infer_batch(self, prepared: Sequence[Prepared]) -> dict[str, np.ndarray]:
        """Raw outputs of prepared images (at most the bundle's max batch, of any sources), run as one batch."""
        return self.infer(stack_feeds(prepared))

    def split(self, outputs: dict[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
        """Raw outputs of a batch of ``n`` -> each image's (:func:`split_outputs`)."""
        return split_outputs(self.bundle, outputs, n)

    def finish_one(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> Any:
        """One image's raw outputs (from :meth:`split`) -> its result, in its original pixels."""
        return finish_image(self.task, self.bundle, outputs, prepared)

    # The same steps a batch at a time (bench, verify, batch predict).
    def prepare(self, images: Sequence[np.ndarray]) -> PreparedBatch:
        """uint8 RGB arrays (at most the bundle's max batch) -> network input + letterboxes."""
        return PreparedBatch.of([self.prepare_one(image) for image in images])

    def infer(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw outputs for network inputs that already follow the bundle's input contract."""
        return self.runner.infer(tensors)

    def finish(self, outputs: dict[str, np.ndarray], batch: PreparedBatch) -> list[Any]:
        """Raw outputs of ``batch`` -> one result per image, in its original pixels."""
        return [self.finish_one(mine, item) for mine, item in zip(self.split(outputs, len(batch.items)), batch.items)]

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
            prepared = [self.prepare_one(array) for array in arrays[start : start + self.bundle.max_batch]]
            outputs = self.infer_batch(prepared)
            parts = self.split(outputs, len(prepared))
            results.extend(self.finish_one(mine, item) for mine, item in zip(parts, prepared))
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
