"""PyTorch -> ONNX with the torch.export-based exporter, and graph-level precision changes."""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Sequence

import onnx


def export_module(module, example_shape: Sequence[int], max_batch: int, *, input_name: str,
                  output_names: list[str]) -> onnx.ModelProto:
    """Export ``module`` (eval mode) with a dynamic batch dimension 1..``max_batch``.

    Weights are stored inside the model (no external-data file) and the result passes
    ``onnx.checker`` full check.
    """
    import torch

    example = torch.zeros(tuple(example_shape), dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    # The exporter is chatty (progress lines, deprecation notes); keep the CLI's output readable.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=[input_name], output_names=output_names,
            dynamic_shapes=({0: batch},), external_data=False, optimize=True, verify=False,
        )
    model = program.model_proto
    strip_exporter_metadata(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def strip_exporter_metadata(model: onnx.ModelProto) -> None:
    """Drop the per-node metadata the exporter and its optimizer write (``pkg.torch.onnx.stack_trace``
    and friends): it carries absolute paths of the checkout and of site-packages, so the same
    weights built in two directories would give two different files. cvexport's own tags
    (``cvexport.section``) are added later and kept."""
    for node in [*model.graph.node, *(n for f in model.functions for n in f.node)]:
        keep = [p for p in node.metadata_props if p.key.startswith("cvexport.")]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Mixed precision: weights and activations in FP16, graph inputs and outputs stay FP32.

    TensorRT 11 has no FP16 builder flag, so the precision has to live in the graph itself.
    """
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(model, keep_io_types=True)
