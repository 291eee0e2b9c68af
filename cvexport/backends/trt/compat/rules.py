"""The rules: each takes the indexed graph and yields findings (see the package docstring for the table)."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np
import onnx

from cvexport.backends.trt.compat.graph_index import IndexedGraph, _attr, _dtype_name, _io_summary, _short_list, _walk_graphs
from cvexport.backends.trt.compat.operators import (
    BIAS_INPUTS, CLAMPED_INT64_INPUTS, CONSTANT_INPUTS, INT32_MAX, INT32_MIN, MAX_OPSET, MIN_OPSET,
    QUANT_TYPES, RECOMMENDED_MIN_OPSET, REDUCE_OPS, RESIZE_COORD_MODES, RESIZE_MAX_AXES,
    RESIZE_MODES, RESIZE_NEAREST_MODES, TOPK_MAX_K, TRT_SUPPORTED_OPS, TRT_UNSUPPORTED_OPS,
    TRT_VERSION, _DEFAULT_DOMAINS, _UNSUPPORTED_CONSTANT_ATTRS,
)
from cvexport.backends.trt.compat.report import Finding

# --------------------------------------------------------------------------------------
# Rules. Each takes the indexed graph and yields findings.
# --------------------------------------------------------------------------------------
def _rule_dangling_inputs(g: IndexedGraph) -> Iterator[Finding]:
    """Rule dangling-input: every node input must be a graph input, an initializer or some
    node's output (an enclosing graph's, for subgraphs); ONNX Runtime refuses to load a graph
    where one is not, and TensorRT's parser fails on it. Graph outputs are held to the same."""
    nodes = iter(g.nodes)  # g.nodes is in _walk_graphs order, which the walk below follows
    yield from _dangling_in(g, g.model.graph, frozenset(), nodes, top=True)


def _dangling_in(
    g: IndexedGraph, graph: onnx.GraphProto, outer: frozenset[str], nodes: Iterator[onnx.NodeProto], top: bool
) -> Iterator[Finding]:
    known = set(outer)
    known.update(vi.name for vi in graph.input)
    known.update(t.name for t in graph.initializer)
    known.update(t.values.name for t in graph.sparse_initializer)
    own = [next(nodes) for _ in graph.node]
    for node in own:
        known.update(name for name in node.output if name)
    visible = frozenset(known)
    for node in own:
        label = g.label(node)
        for name in node.input:
            if name and name not in visible:  # "" is an omitted optional input
                yield Finding(
                    "dangling-input", "error", label,
                    f"{node.op_type} node '{label}' reads tensor '{name}', which is no graph input, "
                    f"initializer or node output",
                )
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else (
                    attr.graphs if attr.type == onnx.AttributeProto.GRAPHS else []):
                yield from _dangling_in(g, sub, visible, nodes, top=False)
    for vi in graph.output:
        if vi.name not in visible:
            where = "graph" if top else f"subgraph '{graph.name}'"
            yield Finding(
                "dangling-input", "error", vi.name,
                f"{where} output '{vi.name}' is no graph input, initializer or node output",
            )


def _rule_unsupported_ops(g: IndexedGraph) -> Iterator[Finding]:
    """Rule unsupported-op: default-domain ops the parser has no importer for."""
    for node in g.nodes:
        if node.domain not in _DEFAULT_DOMAINS or node.op_type in g.plugins:
            continue  # custom domains and plugins are the plugin rule's business
        if node.op_type in TRT_SUPPORTED_OPS:
            continue
        why = (
            f"listed as unsupported in onnx-tensorrt operators.md (TensorRT {TRT_VERSION})"
            if node.op_type in TRT_UNSUPPORTED_OPS
            else f"not in the TensorRT {TRT_VERSION} ONNX operator table"
        )
        yield Finding("unsupported-op", "error", g.label(node), f"{node.op_type} is {why}")


def _rule_topk(g: IndexedGraph) -> Iterator[Finding]:
    """Rule topk-k: K must be a known constant no larger than TensorRT's TopK limit."""
    for node in g.nodes:
        if node.op_type != "TopK" or node.domain not in _DEFAULT_DOMAINS:
            continue
        label = g.label(node)
        if g.opset < 10:
            k = _attr(node, "k")
        elif len(node.input) > 1 and g.is_constant(node.input[1]):
            value = g.constant(node.input[1])
            k = None if value is None else int(np.asarray(value).reshape(-1)[0])
        else:
            k = None
        if k is None:
            yield Finding(
                "topk-k", "warning", label,
                f"K is not a constant, so the {TOPK_MAX_K} limit cannot be checked statically; "
                f"the engine build fails if K exceeds it",
            )
        elif k > TOPK_MAX_K:
            yield Finding(
                "topk-k", "error", label, f"K={k} exceeds TensorRT's TopK limit of {TOPK_MAX_K}"
            )
        if _attr(node, "sorted", 1) != 1:
            yield Finding(
                "topk-k", "warning", label,
                "sorted=0: operators.md requires sorted=1 (TensorRT always returns sorted values)",
            )


def _rule_constant_inputs(g: IndexedGraph) -> Iterator[Finding]:
    """Rules reduce-axes / constant-input: inputs the parser must read at build time.

    Reduce ops take ``axes`` as input 1 from opset 18 (ReduceSum from 13); torch exports
    sometimes compute it with Shape/Range arithmetic, which the parser cannot use.
    """
    for node in g.nodes:
        if node.domain not in _DEFAULT_DOMAINS:
            continue
        if node.op_type in REDUCE_OPS:
            required, rule = ((1, "axes"),), "reduce-axes"
        elif node.op_type in CONSTANT_INPUTS:
            required, rule = CONSTANT_INPUTS[node.op_type], "constant-input"
        else:
            continue
        for idx, name in required:
            if idx < len(node.input) and node.input[idx] and not g.is_constant(node.input[idx]):
                yield Finding(
                    rule, "error", g.label(node),
                    f"{node.op_type} input '{name}' ({node.input[idx]}) must be an initializer "
                    f"or Constant for TensorRT",
                )


def _rule_quantization(g: IndexedGraph) -> Iterator[Finding]:
    """Rule quantization: TensorRT imports symmetric INT8/FP8/FP4/INT4 Q/DQ only."""
    for node in g.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.domain not in _DEFAULT_DOMAINS:
            continue
        yield from _check_qdq_node(g, node)


def _check_qdq_node(g: IndexedGraph, node: onnx.NodeProto) -> Iterator[Finding]:
    label = g.label(node)
    is_dq = node.op_type == "DequantizeLinear"
    zp = node.input[2] if len(node.input) > 2 and node.input[2] else None

    if is_dq:
        x_type = g.elem_type(node.input[0])
        if x_type == onnx.TensorProto.INT32:
            yield Finding("quantization", "error", label, _int32_dq_message(g, node))
        elif x_type is not None and x_type not in QUANT_TYPES:
            yield Finding(
                "quantization", "error", label,
                f"DequantizeLinear input is {_dtype_name(x_type)}; TensorRT imports "
                f"{_quant_types_text()} only",
            )

    if zp is not None:
        zp_type = g.elem_type(zp)
        # INT32 zero points belong to INT32 DequantizeLinear, already reported above.
        if zp_type is not None and zp_type not in QUANT_TYPES and zp_type != onnx.TensorProto.INT32:
            hint = ""
            if zp_type == onnx.TensorProto.UINT8:
                hint = " (the parser would quietly treat UINT8 as INT8)"
            yield Finding(
                "quantization", "error", label,
                f"zero point '{zp}' is {_dtype_name(zp_type)}; TensorRT quantizes to "
                f"{_quant_types_text()} only{hint}",
            )
        value = g.constant(zp)
        if value is None:
            yield Finding(
                "quantization", "warning", label,
                f"zero point '{zp}' is not a readable constant; TensorRT requires it to be zero",
            )
        elif np.any(np.asarray(value, dtype=np.float64) != 0):
            yield Finding(
                "quantization", "error", label,
                f"zero point '{zp}' is non-zero; TensorRT supports symmetric quantization only",
            )
    elif not is_dq and _attr(node, "output_dtype", 0) == 0:
        # ONNX defaults a zero-point-less QuantizeLinear to UINT8; TensorRT picks INT8, so
        # ONNX Runtime and TensorRT would saturate differently.
        yield Finding(
            "quantization", "warning", label,
            "QuantizeLinear has no zero point: ONNX quantizes to UINT8 here but TensorRT to "
            "INT8; add an INT8 zero point of 0 so both agree",
        )

    out_dtype = _attr(node, "output_dtype", 0)
    if not is_dq and out_dtype and out_dtype not in QUANT_TYPES:
        yield Finding(
            "quantization", "error", label,
            f"output_dtype {_dtype_name(out_dtype)} is not a TensorRT quantized type",
        )

    scale = g.constant(node.input[1]) if len(node.input) > 1 else None
    if scale is not None and np.any(np.asarray(scale, dtype=np.float64) <= 0):
        yield Finding("quantization", "error", label, "scale has non-positive values")


def _int32_dq_message(g: IndexedGraph, node: onnx.NodeProto) -> str:
    for consumer, idx in g.consumers.get(node.output[0], []):
        if BIAS_INPUTS.get(consumer.op_type) == idx:
            return (
                f"quantized bias: INT32 DequantizeLinear feeds the bias of "
                f"{consumer.op_type} {g.label(consumer)}; TensorRT needs a float bias "
                f"(export the bias unquantized)"
            )
    return f"DequantizeLinear of INT32; TensorRT imports {_quant_types_text()} only"


def _quant_types_text() -> str:
    return "/".join(_dtype_name(t) for t in sorted(QUANT_TYPES))


def _rule_resize(g: IndexedGraph) -> Iterator[Finding]:
    """Rule resize-mode: attribute combinations the Resize importer rejects."""
    for node in g.nodes:
        if node.op_type == "Resize" and node.domain in _DEFAULT_DOMAINS:
            for problem in _resize_problems(g, node):
                yield Finding("resize-mode", "error", g.label(node), problem)


def _resize_problems(g: IndexedGraph, node: onnx.NodeProto) -> Iterator[str]:
    mode = _attr(node, "mode", "nearest")
    if mode not in RESIZE_MODES:
        yield f"mode '{mode}' is not supported"
    if g.opset >= 11:
        coord = _attr(node, "coordinate_transformation_mode", "half_pixel")
        nearest = _attr(node, "nearest_mode", "round_prefer_floor")
        if coord not in RESIZE_COORD_MODES:
            yield (
                f"coordinate_transformation_mode '{coord}' is not supported "
                f"(supported: {', '.join(sorted(RESIZE_COORD_MODES))})"
            )
        if nearest not in RESIZE_NEAREST_MODES:
            yield f"nearest_mode '{nearest}' is not supported"
        if coord == "tf_half_pixel_for_nn" and nearest != "round_prefer_floor":
            yield "tf_half_pixel_for_nn only works with nearest_mode round_prefer_floor"
    if _attr(node, "antialias", 0):
        yield "antialias=1 is not supported"
    policy = _attr(node, "keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        yield f"keep_aspect_ratio_policy '{policy}' is not supported (only 'stretch')"
    yield from _resize_axes_problems(g, node, mode)


def _resize_axes_problems(g: IndexedGraph, node: onnx.NodeProto, mode: str) -> Iterator[str]:
    """Which axes a Resize scales: linear/cubic kernels only reach the innermost ones."""
    scales_idx = 2 if g.opset >= 11 else 1
    scales_name = node.input[scales_idx] if len(node.input) > scales_idx else ""
    axes = _attr(node, "axes")
    if axes and scales_name and not g.is_constant(scales_name):
        rank = len(g.static_shape(node.input[0]) or [])
        if list(axes) != list(range(rank)):
            yield "the axes attribute must list every axis in order when scales is a tensor"
    limit = RESIZE_MAX_AXES.get(mode)
    if limit is None:
        return
    factors = _resize_factors(g, node, scales_name)
    if factors is None:
        return
    rank = len(g.static_shape(node.input[0]) or []) if axes else len(factors)
    if not rank:
        return
    scaled = [axis % rank for axis, f in factors.items() if f != 1]
    if any(axis < rank - limit for axis in scaled):
        yield (
            f"{mode} resize may only scale the {limit} innermost axes "
            f"(scales axes {sorted(scaled)} of a rank-{rank} input)"
        )


def _resize_factors(g: IndexedGraph, node: onnx.NodeProto, scales_name: str) -> dict[int, float] | None:
    """axis -> scale factor, from constant scales or from constant sizes and a static input."""
    axes = _attr(node, "axes")
    if scales_name and g.is_constant(scales_name):
        value = g.constant(scales_name)
        if value is not None and value.size:
            return dict(zip(axes or range(value.size), value.reshape(-1).astype(float).tolist()))
    sizes_name = node.input[3] if len(node.input) > 3 else ""
    in_shape = g.static_shape(node.input[0])
    if sizes_name and g.is_constant(sizes_name) and in_shape and not axes:
        sizes = g.constant(sizes_name)
        if sizes is not None and sizes.size == len(in_shape):
            return {
                axis: (float(s) / d) if d else 1.0
                for axis, (s, d) in enumerate(zip(sizes.reshape(-1).tolist(), in_shape))
            }
    return None


def _rule_int64(g: IndexedGraph) -> Iterator[Finding]:
    """Rule int64: INT64 at the network boundary, and INT64 constants beyond INT32 range.

    TensorRT 8.x narrows INT64 to INT32 (and TensorRT 10 still casts INT64 plugin inputs),
    so I/O bindings change type and large values get clamped. Inside shape arithmetic
    INT64 is harmless, hence only a note there.
    """
    io_names = set()
    boundary = [(v, "input") for v in g.graph_inputs] + [(v, "output") for v in g.graph_outputs]
    for vi, kind in boundary:
        io_names.add(vi.name)
        if g.elem_type(vi.name) == onnx.TensorProto.INT64:
            yield Finding(
                "int64", "warning", vi.name,
                f"graph {kind} '{vi.name}' is INT64: TensorRT 8.x (JetPack 5) narrows INT64 "
                f"I/O to INT32, so the binding type depends on the TensorRT version; prefer INT32",
            )
    internal = [
        name for name in _int64_tensor_names(g) if name not in io_names
    ]
    if internal:
        yield Finding(
            "int64", "info", None,
            f"{len(internal)} internal INT64 tensors (fine for shape arithmetic): "
            f"{_short_list(internal)}",
        )
    yield from _int64_out_of_range(g)


def _int64_tensor_names(g: IndexedGraph) -> list[str]:
    names = [n for n, t in g.initializers.items() if t.data_type == onnx.TensorProto.INT64]
    names += [n for n in g.constant_nodes if g.elem_type(n) == onnx.TensorProto.INT64]
    names += [n for n in g.types if g.elem_type(n) == onnx.TensorProto.INT64]
    return list(dict.fromkeys(names))  # de-duplicate, keep order


def _int64_out_of_range(g: IndexedGraph) -> Iterator[Finding]:
    for name in [*g.initializers, *g.constant_nodes]:
        if g.elem_type(name) != onnx.TensorProto.INT64 or _only_clamped_uses(g, name):
            continue
        value = g.constant(name)
        if value is None or value.size == 0:
            continue
        lo, hi = int(value.min()), int(value.max())
        if lo < INT32_MIN or hi > INT32_MAX:
            yield Finding(
                "int64", "error", name,
                f"INT64 constant '{name}' holds values outside INT32 (min {lo}, max {hi}); "
                f"TensorRT's INT32 narrowing would clamp them",
            )


def _only_clamped_uses(g: IndexedGraph, name: str) -> bool:
    uses = g.consumers.get(name, [])
    return bool(uses) and all(
        idx in CLAMPED_INT64_INPUTS.get(node.op_type, ()) for node, idx in uses
    )


def _rule_unsupported_constructs(g: IndexedGraph) -> Iterator[Finding]:
    """Rule unsupported-construct: values and patterns the parser has no representation for."""
    for name, tp in g.types.items():
        kind = tp.WhichOneof("value")
        if kind and kind != "tensor_type":
            yield Finding(
                "unsupported-construct", "error", name,
                f"'{name}' is a {kind.replace('_type', '')} value; TensorRT only handles tensors",
            )
        elif kind == "tensor_type" and tp.tensor_type.elem_type == onnx.TensorProto.STRING:
            yield Finding(
                "unsupported-construct", "error", name,
                f"'{name}' is a STRING tensor; TensorRT has no string type",
            )
    for node in g.nodes:
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
            bad = [a.name for a in node.attribute if a.name in _UNSUPPORTED_CONSTANT_ATTRS]
            if bad:
                yield Finding(
                    "unsupported-construct", "error", g.label(node),
                    f"Constant with {bad[0]} is not supported",
                )
        elif node.op_type == "Loop" and node.domain in _DEFAULT_DOMAINS:
            yield from _check_loop_scan_outputs(g, node)


def _check_loop_scan_outputs(g: IndexedGraph, node: onnx.NodeProto) -> Iterator[Finding]:
    # Loop inputs are (M, cond, carried...); outputs are (carried..., scan...). Scan
    # outputs need a length known at build time, i.e. a constant trip count M.
    n_carried = max(len(node.input) - 2, 0)
    n_scan = len(node.output) - n_carried
    trip_count = node.input[0] if node.input else ""
    if n_scan > 0 and not (trip_count and g.is_constant(trip_count)):
        yield Finding(
            "unsupported-construct", "error", g.label(node),
            f"Loop has {n_scan} scan output(s) but no constant trip count; TensorRT needs "
            f"the scan-output length at build time",
        )


def _rule_plugins(g: IndexedGraph) -> Iterator[Finding]:
    """Rules plugin / custom-domain: nodes TensorRT resolves through its plugin registry."""
    for node in g.nodes:
        label = g.label(node)
        contract = g.plugins.get(node.op_type)
        if contract is not None:
            name, version = _plugin_identity(node.op_type, contract)
            yield Finding("plugin", "info", label, f"runs as TensorRT plugin {name} v{version}")
            try:
                problems = list(contract.check_node(node, dict(g.types)))
            except Exception as exc:  # a broken contract must not hide the rest of the report
                problems = [f"plugin contract check raised {type(exc).__name__}: {exc}"]
            for problem in problems:
                yield Finding("plugin", "error", label, str(problem))
        elif node.domain not in _DEFAULT_DOMAINS:
            yield Finding(
                "custom-domain", "error", label,
                f"{node.domain}::{node.op_type} is not an ONNX op and no known TensorRT plugin "
                f"provides it",
            )


def _plugin_identity(op_type: str, contract: Any) -> tuple[str, str]:
    name = getattr(contract, "plugin_name", None) or getattr(contract, "name", None) or op_type
    version = getattr(contract, "plugin_version", None) or getattr(contract, "version", None) or "1"
    return str(name), str(version)


def _rule_dynamic_dims(g: IndexedGraph) -> Iterator[Finding]:
    """Rule dynamic-dim: non-batch dynamic input dims need optimization profiles."""
    for vi in g.graph_inputs:
        shape = _io_summary(vi)["shape"] or []
        dynamic = [f"dim {i}={d}" for i, d in enumerate(shape) if i > 0 and not isinstance(d, int)]
        if dynamic:
            yield Finding(
                "dynamic-dim", "info", vi.name,
                f"input '{vi.name}' has dynamic {', '.join(dynamic)}; the engine needs an "
                f"optimization profile covering them",
            )


def _rule_opset(g: IndexedGraph) -> Iterator[Finding]:
    """Rule opset: the parser imports opsets MIN_OPSET..MAX_OPSET."""
    if g.opset < MIN_OPSET:
        yield Finding(
            "opset", "error", None, f"opset {g.opset} is below TensorRT's minimum {MIN_OPSET}"
        )
    elif g.opset < RECOMMENDED_MIN_OPSET:
        yield Finding(
            "opset", "warning", None,
            f"opset {g.opset} is old; export with opset {RECOMMENDED_MIN_OPSET}..{MAX_OPSET}",
        )
    elif g.opset > MAX_OPSET:
        yield Finding(
            "opset", "warning", None,
            f"opset {g.opset} is newer than TensorRT {TRT_VERSION} supports ({MAX_OPSET})",
        )


def _rule_external_data(g: IndexedGraph) -> Iterator[Finding]:
    """Rule external-data: the parser must be given the model path to find the weights."""
    external = [
        t.name for t in _all_tensors(g.model) if t.data_location == onnx.TensorProto.EXTERNAL
    ]
    if external:
        yield Finding(
            "external-data", "warning", None,
            f"{len(external)} tensors use external data ({_short_list(external)}); parse from "
            f"the file path and ship the data files beside the .onnx",
        )


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    for graph in _walk_graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield a.t


RULES: tuple[Callable[[IndexedGraph], Iterable[Finding]], ...] = (
    _rule_dangling_inputs,
    _rule_unsupported_ops,
    _rule_topk,
    _rule_constant_inputs,
    _rule_quantization,
    _rule_resize,
    _rule_int64,
    _rule_unsupported_constructs,
    _rule_plugins,
    _rule_dynamic_dims,
    _rule_opset,
    _rule_external_data,
)
