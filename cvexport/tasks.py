"""Task name -> the module that knows how to export, check and read back that kind of model.

Every task module offers the same functions, so ``build``, ``verify``, ``bench``, the
runners and ``cvexport run`` never branch on the task:

- ``check_options(spec, options)``, ``describe(options)``: task-specific build options.
- ``export_graphs(model, spec, options, int8, warn) -> {"onnx": ModelProto, ...}``: the
  network core at the build's precision plus the task's output sections.
- ``manifest_entries(spec, options)``: what the manifest says about the outputs.
- ``reference_outputs(model, array, manifest)``: the PyTorch fp32 answer in the output contract.
- ``sample_images(spec, split, indices)``, ``parity_frames(spec)``: images of the model's own data.
- ``TOLERANCES``, ``new_parity()``, ``compare(reference, test, precision, parity)``: parity.
- ``to_predictions(outputs, letterboxes, class_names, width, height)``: results per original image.
- ``METRICS``, ``metric_note(manifest)``, ``val_samples(spec, count)``, ``metrics(predictions, truths, bundle)``:
  the task metric ``verify`` reports.
- ``record(prediction)``, ``describe_prediction(prediction, class_names)``, ``render(image, prediction)``:
  what ``cvexport run`` writes and prints.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from cvexport.errors import CvexportError

_TASK_MODULES = {
    "detection": "cvexport.detection",
    "classification": "cvexport.classification",
    "segmentation": "cvexport.segmentation",
    "style": "cvexport.style",
}


def get_task(name: str) -> ModuleType:
    if name not in _TASK_MODULES:
        raise CvexportError(f"task '{name}' is not supported by this cvexport; upgrade cvexport or rebuild the bundle")
    return importlib.import_module(_TASK_MODULES[name])
