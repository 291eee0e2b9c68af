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
    ``onnx.checker`` full check. The example's batch is min(2, max_batch) whatever
    ``example_shape[0]`` says: traced from a batch of 1, torch.export specializes some networks
    to that batch (a ViT's graph came out with a fixed batch of 1, a ConvNeXt's failed a batch
    guard), while a batch of 2 keeps the dimension symbolic. A graph whose batch still came out
    fixed is a one-line error rather than a bundle that refuses every other batch.
    """
    import torch

    _refuse_over_protobuf_limit(module)
    shape = (min(2, max_batch), *tuple(example_shape)[1:])
    example = torch.zeros(shape, dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1, max=max(2, max_batch))
    # The exporter is chatty (progress lines, deprecation notes); keep the CLI's output readable.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=[input_name], output_names=output_names,
            dynamic_shapes=({0: batch},), external_data=False, optimize=True, verify=False,
        )
    model = program.model_proto
    if max_batch > 1:
        _require_symbolic_batch(model, input_name)
    strip_exporter_metadata(model)
    onnx.checker.check_model(model, full_check=True)
    return model


# A protobuf message (an ONNX file with its weights inside) cannot exceed 2 GiB; keep room for the graph.
PROTOBUF_LIMIT_BYTES = 2**31 - 64 * 2**20


def _refuse_over_protobuf_limit(module) -> None:
    """One line instead of the exporter's failure minutes later: a network whose float32 weights
    alone exceed what one ONNX file holds (vit_h_14, regnet_y_128gf: about 2.5 GB)."""
    from cvexport.errors import CvexportError

    size = sum(t.numel() * 4 for t in [*module.parameters(), *module.buffers()] if t.is_floating_point())
    if size > PROTOBUF_LIMIT_BYTES:
        raise CvexportError(f"the network's float32 weights take {size / 2**30:.2f} GiB, more than the 2 GiB one ONNX "
                            "file can hold with its weights inside (a bundle keeps them inside); export a smaller "
                            "model")


def _require_symbolic_batch(model: onnx.ModelProto, input_name: str) -> None:
    """A one-line CvexportError when the exported input's dim 0 is a number, not a symbol."""
    from cvexport.errors import CvexportError

    graph_input = next(i for i in model.graph.input if i.name == input_name)
    batch = graph_input.type.tensor_type.shape.dim[0]
    if not batch.dim_param:
        raise CvexportError(f"the exported graph's input '{input_name}' has a fixed batch of {batch.dim_value}, not "
                            "a dynamic one; this network cannot be exported for batches, build it with --max-batch 1")


def strip_exporter_metadata(model: onnx.ModelProto) -> None:
    """Drop the per-node metadata the exporter and its optimizer write (``pkg.torch.onnx.stack_trace``
    and friends): it carries absolute paths of the checkout and of site-packages, so the same
    weights built in two directories would give two different files. cvexport's own tags
    (``cvexport.section``) are added later and kept."""
    for node in [*model.graph.node, *(n for f in model.functions for n in f.node)]:
        keep = [p for p in node.metadata_props if p.key.startswith("cvexport.")]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)


# The largest finite float16 (np.finfo(np.float16).max). onnxconverter_common clamps every
# weight to +-1e4 by default, far inside fp16's range: deeplabv3_mobilenet_v3_large with the
# zoo benchmark's test weights (head conv weights up to 13875, 34 of its 1024 over 1e4) lost its
# head to the clamp and its fp16 labels agreed with torch fp32 on 98.50% of pixels (gate 99.5%);
# clamping at fp16's own limit instead gives 99.98%, what torch's own .half() gives (AMD EPYC,
# ONNX Runtime CPU, 8 photographs at 256x256). Weights inside +-1e4 round exactly as before.
FP16_MAX = 65504.0


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Mixed precision: weights and activations in FP16, graph inputs and outputs stay FP32.

    TensorRT 11 has no FP16 builder flag, so the precision has to live in the graph itself.
    Weights round to fp16 unchanged up to its largest finite value (:data:`FP16_MAX`); a node
    with a weight beyond it stays float32 (:func:`_nodes_beyond_fp16`) rather than have it clamped.
    """
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = float16.convert_float_to_float16(model, keep_io_types=True, max_finite_val=FP16_MAX,
                                                     node_block_list=_nodes_beyond_fp16(model))
    _float_outputs(converted, {o.name for o in model.graph.output
                               if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT})
    return converted


def _nodes_beyond_fp16(model: onnx.ModelProto) -> list[str]:
    """Names of the top-level nodes that read a float32 initializer with a value fp16 cannot
    hold (|w| > FP16_MAX, or inf/nan): float16 would turn it into +-65504 (the clamp) or inf, a
    different network, where the node in float32 between two Casts computes the same one. Every
    reader of such an initializer is listed: the converter keeps an initializer float32 only when
    no converted node reads it."""
    import numpy as np
    from onnx import numpy_helper

    beyond = {init.name for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT
              and not np.all(np.abs(numpy_helper.to_array(init)) <= FP16_MAX)}
    readers = [node for node in model.graph.node if beyond.intersection(node.input)]
    if not all(node.name for node in readers):  # the converter blocks nodes by name
        return []
    return [node.name for node in readers]


def _float_outputs(model: onnx.ModelProto, names: set[str]) -> None:
    """Graph outputs that were float32 stay float32. The converter misses one when the network
    ends in an op it keeps in float32 (a segmenter's final bilinear Resize): it casts that op's
    result back to float16 and declares the graph output float16, so the task's sections after
    it saw a float16 tensor declared float. A Cast to float32 restores the contract."""
    for output in model.graph.output:
        if output.name not in names or output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            continue
        half = f"{output.name}_fp16"
        for node in model.graph.node:
            node.output[:] = [half if name == output.name else name for name in node.output]
            node.input[:] = [half if name == output.name else name for name in node.input]
        model.graph.node.append(onnx.helper.make_node("Cast", [half], [output.name], name=f"{output.name}_to_float32",
                                                      to=onnx.TensorProto.FLOAT))
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
