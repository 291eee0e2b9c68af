"""One exported network core -> the graphs of a precision (fp32, fp16, int8), sections appended.

Every task exports its network alone (the "core"), hands it here with a ``finish`` callable
that appends the task's output sections (class probabilities, decode + NMS, ArgMax, clip),
and gets back the graphs keyed by manifest entry. Precision changes touch only the core: the
sections stay FP32, where rounding would change decisions (saturated probabilities, ties).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx

from cvexport.int8_graphs import INT8_CPU_GRAPHS


@dataclass(frozen=True)
class Int8Options:
    calib_images: int = 128
    method: str | None = None  # None: the quantizer's default for each form


@dataclass(frozen=True)
class Int8Plan:
    """What the task hands the exporter for an INT8 build, so the exporter never asks for the task."""

    options: Int8Options
    calibration: list[np.ndarray]  # float32 NCHW batches in the core's input contract
    keep_float: Callable[[onnx.ModelProto, str], list[str]]  # (core, quantize form) -> nodes kept in float
    cpu_graphs: bool = True  # also make INT8_CPU_GRAPHS (False: the TensorRT form serves the CPU too)


def precision_graphs(core: onnx.ModelProto, spec, precision: str, finish: Callable[[onnx.ModelProto], onnx.ModelProto],
                     int8: Int8Plan | None = None, warn: Callable[[str], None] = print) -> dict[str, Any]:
    """``{"onnx": graph}``, plus for INT8 one graph per entry of ``INT8_CPU_GRAPHS`` (unless
    the plan says the TensorRT form must serve the CPU too) and ``"fp32"``,
    the float graph, which is not part of the bundle but lets the build measure INT8's gain.

    ``"onnx"`` is always the TensorRT-ready graph. The CPU graphs are the same network
    quantized in the U8S8 form ONNX Runtime's CPU provider fuses (on the SSD with VNNI: 1.7x
    faster than fp32 there, where the TensorRT QDQ form ran 1.5x slower).
    """
    from cvexport.export.torch_export import to_fp16

    if precision == "fp16":
        return {"onnx": finish(to_fp16(core))}
    if precision == "int8":
        import warnings

        from cvexport.export.quantize import quantize_core

        if int8 is None:
            raise ValueError("an int8 export needs an Int8Plan (calibration batches and the layers kept in float)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            graphs = {"onnx": finish(quantize_core(core, int8.calibration, method=int8.options.method,
                                                   exclude=int8.keep_float(core, "qdq-trt"), form="qdq-trt"))}
            if int8.cpu_graphs:
                for graph in INT8_CPU_GRAPHS:
                    graphs[graph.key] = finish(quantize_core(core, int8.calibration, form=graph.form,
                                                             exclude=int8.keep_float(core, graph.form)))
        for warning in {str(w.message) for w in caught if issubclass(w.category, UserWarning)}:
            warn(f"warning: {warning}")
        graphs["fp32"] = finish(core)
        return graphs
    return {"onnx": finish(core)}


def export_task_graphs(model, spec, options, output_names: list[str],
                       finish: Callable[[onnx.ModelProto], onnx.ModelProto], int8: Int8Plan | None = None,
                       warn: Callable[[str], None] = print) -> dict[str, Any]:
    """Export ``model`` (the network alone, float NCHW ``input``, batch 1..``options.max_batch``)
    as the core and return :func:`precision_graphs` of it at ``options.precision``, each graph
    finished by the task's ``finish`` sections and then the input section of ``options.input_format``."""
    from cvexport.export.torch_export import export_module

    height, width = spec.input_size
    core = export_module(model.eval(), (1, 3, height, width), options.max_batch, input_name="input",
                         output_names=output_names)
    return precision_graphs(core, spec, options.precision, lambda c: _with_input(finish(c), spec, options), int8, warn)


def _with_input(model: onnx.ModelProto, spec, options) -> onnx.ModelProto:
    """``--input uint8``: the graph takes uint8 NHWC frames and normalizes them itself; with
    ``--frame-size`` it takes the camera's frames at that size and letterboxes them too."""
    if options.input_format != "uint8":
        return model
    from cvexport.export import sections
    from cvexport.export.graph import GraphEditor

    editor = GraphEditor(model)
    sections.uint8_input(editor, spec, options.frame_size)
    return editor.model
