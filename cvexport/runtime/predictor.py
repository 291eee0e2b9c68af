"""High-level inference: images in, results in each original image's pixels out (detections, top classes, label maps, stylized images)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cvexport.bundle import Bundle, load_bundle
from cvexport.images import as_rgb_array, letterbox
from cvexport.preprocess import to_network_input
from cvexport.runtime import create_runner
from cvexport.tasks import get_task


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

    def infer(self, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw outputs for network inputs that already follow the bundle's input contract."""
        return self.runner.infer(tensors)

    def predict(self, images: Sequence[Any]) -> list[list[dict[str, Any]]]:
        """One result per image (see the task's ``to_predictions``). ``images``: paths, PIL images or
        uint8/float arrays (grey, RGB, RGBA)."""
        contract = self.bundle.input
        width, height = contract["width"], contract["height"]
        results: list[list[dict[str, Any]]] = []
        arrays = [as_rgb_array(image) for image in images]
        for start in range(0, len(arrays), self.bundle.max_batch):
            chunk = arrays[start : start + self.bundle.max_batch]
            fitted = [letterbox(image, width, height) for image in chunk]
            feed = {contract["name"]: to_network_input([f[0] for f in fitted], contract)}
            outputs = self.runner.infer(feed)
            results.extend(self.task.to_predictions(outputs, [f[1] for f in fitted], self.bundle.class_names,
                                                    width, height))
        return results
