"""``cvexport build``: trained weights -> a verified bundle directory, written atomically.

The phases, one module each:

- ``options``: what to build (``BuildOptions``) and the checks its values pass first;
- ``export``: the weights -> the torch model (built once) -> the checked ONNX graphs;
- ``manifest``: the manifest of the files written;
- ``gates``: parity and task metric against the torch model, before the bundle lands;
- ``int8``: INT8's calibration settings and its gain over fp32 on this CPU;
- ``engine``: the TensorRT engine, where TensorRT runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from cvexport.atomic import atomic_path, check_dir_target
from cvexport.build.engine import engine_step, require_tensorrt
from cvexport.build.export import Exported, export_graphs, load_weights
from cvexport.build.gates import PARITY_BATCHES, ParityError, run_gates, run_parity, training_data
from cvexport.build.int8 import measure_int8_gain
from cvexport.build.manifest import build_manifest, input_contract, is_bundle_dir
from cvexport.build.options import (CALIB_METHODS, ENGINE_CHOICES, INPUT_FORMATS, BuildOptions, check_engine_choice,
                                    check_options, frame_size_warning, with_user_weights)
from cvexport.bundle import MANIFEST, ONNX_FILE, PARITY_FILE, WEIGHTS_FILE, load_bundle, write_manifest
from cvexport.int8_graphs import INT8_CPU_GRAPHS
from cvexport.precisions import PRECISIONS
from cvexport.registry import get_spec
from cvexport.tasks import get_task

# The name the option checks had when they lived here (tests/test_model_matrix.py imports it).
_check_options = check_options

__all__ = ["BuildOptions", "build", "ParityError", "run_parity", "input_contract", "is_bundle_dir",
           "frame_size_warning", "check_options", "CALIB_METHODS", "ENGINE_CHOICES", "INPUT_FORMATS", "PARITY_BATCHES",
           "PRECISIONS"]


def build(options: BuildOptions, log: Callable[[str], None] = print) -> Path:
    """Export, check and write a bundle; returns its directory. Raises CvexportError on bad input
    and ParityError when ONNX Runtime disagrees with PyTorch (nothing is written then)."""
    # A torchvision state dict, or a --module's weights, is rewritten as a checkpoint first; the
    # bundle keeps a copy.
    with tempfile.TemporaryDirectory(prefix="cvexport-weights-") as scratch:
        return _build(with_user_weights(options, Path(scratch), log), log)


def _build(options: BuildOptions, log: Callable[[str], None]) -> Path:
    from cvexport.backends.torch.runner import TorchRunner

    started = time.perf_counter()
    # Weights fine-tuned on a user's dataset bring their own class names and input size.
    spec = get_spec(options.model).for_weights(options.weights)
    check_options(options)
    if (warning := frame_size_warning(spec, options.frame_size)) is not None:
        log(f"warning: {warning}")
    check_engine_choice(options)
    if options.engine == "trt":
        require_tensorrt()  # fail before spending a minute on the export
    out = check_dir_target(options.resolved_out(), is_bundle_dir, "cvexport bundle", force=options.force)
    task = get_task(spec.task)
    task.check_options(spec, options)

    weights, model = load_weights(spec, task, options, log)
    data = training_data(spec, log)
    exported = export_graphs(model, spec, task, options, log)
    with atomic_path(out, is_bundle_dir, "cvexport bundle", force=options.force) as tmp:
        tmp.mkdir()
        _write_files(tmp, exported, weights)
        manifest = build_manifest(tmp, spec, task, options, exported, weights)
        write_manifest(tmp / MANIFEST, manifest)
        bundle = load_bundle(tmp)
        # The model exported above is the checks' fp32 reference: the same weights, loaded once.
        with TorchRunner(bundle, model=model) as reference:
            gates = run_gates(bundle, reference, spec, task, options, data, out, log)
        if exported.fp32 is not None:
            gates.report["int8_vs_fp32"] = measure_int8_gain(bundle, exported.fp32, task.parity_frames(spec)[:1], log)
        gates.report["build_seconds"] = round(time.perf_counter() - started, 1)
        (tmp / PARITY_FILE).write_text(json.dumps(gates.report, indent=2) + "\n")
        gates.raise_if_failed(out, options.precision)
    log(f"wrote {out} in {time.perf_counter() - started:.1f} s")
    if options.engine != "ort":
        engine_step(out, log)
    return out


def _write_files(directory: Path, exported: Exported, weights: Path) -> None:
    """The graphs and the weights, under the names the manifest gives them."""
    import onnx

    files = {"onnx": ONNX_FILE, **{g.key: g.file for g in INT8_CPU_GRAPHS}}
    for key, graph in exported.graphs.items():
        onnx.save_model(graph, str(directory / files[key]))
    shutil.copyfile(weights, directory / WEIGHTS_FILE)
