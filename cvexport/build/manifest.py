"""The manifest a build writes: one function gathers every entry (``build_manifest``), next to the
input contract it records and the test a rebuild uses to know a bundle directory it may replace.

The manifest is a plain dict here; :mod:`cvexport.manifest_schema` is what checks it on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cvexport.backends.trt.compat import TRT_VERSION
from cvexport.bundle import BUNDLE_FORMAT, MANIFEST, ONNX_FILE, WEIGHTS_FILE, library_versions
from cvexport.digest import sha256_file
from cvexport.int8_graphs import INT8_CPU_GRAPHS


def is_bundle_dir(path: Path) -> bool:
    """Whether ``path`` is a directory its manifest calls a cvexport bundle (so a rebuild may replace it)."""
    try:
        return json.loads((Path(path) / MANIFEST).read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def input_contract(spec, options) -> dict[str, Any]:
    """The manifest's ``input``: what the graph takes, and how an image becomes it (``fit``,
    the spec's: the runtime applies it, and ``resize`` says it in words)."""
    from cvexport.images import InputFit
    from cvexport.tasks import get_task

    how = InputFit.of(spec)
    how.check(get_task(spec.task), in_graph=options.frame_size is not None)
    height, width = spec.input_size
    uint8 = options.input_format == "uint8"
    contract = {
        "name": "images" if uint8 else "input",
        "layout": "NHWC" if uint8 else "NCHW",
        "dtype": "uint8" if uint8 else "float32",
        "height": height,
        "width": width,
        "channels": "RGB",
        "max_batch": options.max_batch,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "normalization": "in graph: (x / 255 - mean) / std" if uint8 else "by caller: (x / 255 - mean) / std",
        "resize": how.describe(width, height),
        "fit": how.mode,
        **({"crop_fraction": how.crop_fraction} if how.crop_fraction is not None else {}),
    }
    if options.frame_size is not None:
        # The graph takes the camera's frames as they come and fits them itself.
        contract["width"], contract["height"] = options.frame_size
        contract["letterbox"] = {"in_graph": True, "network_width": width, "network_height": height,
                                 "resize": "k x k box prefilter when shrinking 2x or more (AveragePool), "
                                           "then linear, half_pixel (ONNX Resize)"}
        fitted = "letterboxed" if how.mode == "letterbox" else f"fitted ({how.mode})"
        contract["resize"] = (f"{how.mode} in graph from {options.frame_size[0]}x{options.frame_size[1]} frames "
                              f"to {width}x{height} ({how.details(width, height)}); other sizes are "
                              f"{fitted} to the frame size first by the runtime")
    return contract


def build_manifest(directory: Path, spec, task, options, exported, weights: Path) -> dict[str, Any]:
    """The manifest of the bundle whose graphs and weights are already written to ``directory``
    (their sha256 are read from there): ``exported`` is :class:`cvexport.build.export.Exported`,
    ``weights`` the file the weights were copied from (its name is recorded as their source).
    Key order is the file's order: a change here changes every bundle's bytes."""
    import onnx

    graph = exported.onnx
    manifest = {
        "format": BUNDLE_FORMAT,
        "model": spec.name,
        "task": spec.task,
        "description": spec.description,
        "precision": options.precision,
        "onnx": {"file": ONNX_FILE, "sha256": sha256_file(directory / ONNX_FILE), "opset": graph.opset_import[0].version},
        **{g.key: {"file": g.file, "sha256": sha256_file(directory / g.file), "form": g.description,
                   "isa_class": g.isa_class} for g in INT8_CPU_GRAPHS if g.key in exported.graphs},
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(directory / WEIGHTS_FILE), "source": Path(weights).name},
        "input": input_contract(spec, options),
        "outputs": [
            {"name": o.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type).name,
             "shape": [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]}
            for o in graph.graph.output
        ],
        "class_names": list(spec.class_names),
        **({"dataset": spec.dataset} if spec.dataset is not None else {}),
        **task.manifest_entries(spec, options),
        "trt_compat": {"ok": exported.compat.ok, "checked_against": TRT_VERSION,
                       "warnings": [f.message for f in exported.compat.by_severity("warning")]},
        "versions": library_versions(),
        **({"int8": _int8_entry(exported.int8)} if exported.int8 is not None else {}),
    }
    return manifest


def _int8_entry(int8) -> dict[str, Any]:
    """How an INT8 bundle was calibrated and quantized (the manifest's last entry)."""
    return {"calibration_images": int8.calib_images, "calibration_split": "train",
            "method": int8.method or "entropy (onnx), minmax (CPU graphs)",
            "activations": "symmetric int8 (onnx)", "weights": "per-channel symmetric int8", "bias": "float"}
