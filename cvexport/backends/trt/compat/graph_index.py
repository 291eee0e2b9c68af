"""A model indexed once (producers, consumers, constants, types) so each rule asks simple questions."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np
import onnx
from onnx import numpy_helper

from cvexport.backends.trt.compat.operators import _DEFAULT_DOMAINS, _NAMES_SHOWN

# --------------------------------------------------------------------------------------
# Graph context shared by the rules
# --------------------------------------------------------------------------------------
class IndexedGraph:
    """Indexes a model once so each rule can ask simple questions about it."""

    def __init__(self, model: onnx.ModelProto, plugins: dict):
        self.model = model
        self.plugins = plugins
        self.opset = _default_opset(model)
        self.nodes: list[onnx.NodeProto] = list(walk_nodes(model.graph))
        self.node_labels = {id(n): _label(n, i) for i, n in enumerate(self.nodes)}
        self.initializers: dict[str, onnx.TensorProto] = {}
        self.types: dict[str, onnx.TypeProto] = {}
        self.constant_nodes: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
        for graph in _walk_graphs(model.graph):
            self._index_graph(graph)
        for node in self.nodes:
            for idx, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((node, idx))
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS and node.output:
                self.constant_nodes[node.output[0]] = node
        top = model.graph
        init_names = {t.name for t in top.initializer}
        self.graph_inputs = [vi for vi in top.input if vi.name not in init_names]
        self.graph_outputs = list(top.output)

    def _index_graph(self, graph: onnx.GraphProto) -> None:
        for t in graph.initializer:
            self.initializers[t.name] = t
            type_proto = onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims))
            self.types.setdefault(t.name, type_proto)
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            self.types[vi.name] = vi.type

    def label(self, node: onnx.NodeProto) -> str:
        return self.node_labels[id(node)]

    def is_constant(self, name: str) -> bool:
        """An initializer or Constant output: what the parser treats as weights."""
        return name in self.initializers or name in self.constant_nodes

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor, or None if not constant or not readable here."""
        if name in self.initializers:
            return _tensor_to_array(self.initializers[name])
        node = self.constant_nodes.get(name)
        return None if node is None else _constant_node_value(node)

    def elem_type(self, name: str) -> int | None:
        """ONNX element type of a tensor, when shape inference or the graph knows it."""
        if name in self.initializers:
            return self.initializers[name].data_type
        node = self.constant_nodes.get(name)
        if node is not None:
            return _constant_node_dtype(node)
        tp = self.types.get(name)
        if tp is not None and tp.HasField("tensor_type"):
            return tp.tensor_type.elem_type or None
        return None

    def static_shape(self, name: str) -> list[int | None] | None:
        tp = self.types.get(name)
        if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else None for d in tp.tensor_type.shape.dim]


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in _DEFAULT_DOMAINS:
            return imp.version
    return 1  # ONNX says an absent default-domain import means opset 1


def _walk_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph (If branches, Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _walk_graphs(g)


def walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its subgraphs (If / Loop / Scan bodies), outer first."""
    for g in _walk_graphs(graph):
        yield from g.node


def _label(node: onnx.NodeProto, index: int) -> str:
    # Unnamed nodes are common in hand-built graphs; op type plus position still finds them.
    return node.name or f"{node.op_type}#{index}"


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _tensor_to_array(tensor: onnx.TensorProto) -> np.ndarray | None:
    # External tensors whose data was not loaded, and exotic dtypes, read as "unknown".
    if tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.raw_data:
        return None
    try:
        return numpy_helper.to_array(tensor)
    except Exception:
        return None


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return _tensor_to_array(a.t)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
    return None


def _constant_node_dtype(node: onnx.NodeProto) -> int | None:
    for a in node.attribute:
        if a.name == "value":
            return a.t.data_type
        if a.name in ("value_int", "value_ints"):
            return onnx.TensorProto.INT64
        if a.name in ("value_float", "value_floats"):
            return onnx.TensorProto.FLOAT
        if a.name in ("value_string", "value_strings"):
            return onnx.TensorProto.STRING
    return None


def _dtype_name(elem_type: int | None) -> str:
    if not elem_type:
        return "UNDEFINED"
    return onnx.TensorProto.DataType.Name(elem_type)


def _io_summary(vi: onnx.ValueInfoProto) -> dict:
    """name / dtype / shape, with symbolic dims as their names and unknown dims as '?'."""
    tp = vi.type
    if not tp.HasField("tensor_type"):
        return {"name": vi.name, "dtype": tp.WhichOneof("value") or "UNDEFINED", "shape": None}
    tt = tp.tensor_type
    shape = None
    if tt.HasField("shape"):
        shape = [_dim_text(d) for d in tt.shape.dim]
    return {"name": vi.name, "dtype": _dtype_name(tt.elem_type), "shape": shape}


def _dim_text(dim: onnx.TensorShapeProto.Dimension) -> int | str:
    if dim.HasField("dim_value"):
        return dim.dim_value
    # Shape inference invents "unk__N" names for dims it cannot name; they mean "unknown".
    if not dim.dim_param or dim.dim_param.startswith("unk__"):
        return "?"
    return dim.dim_param


def _short_list(names: Iterable[str]) -> str:
    names = list(names)
    shown = ", ".join(names[:_NAMES_SHOWN])
    hidden = len(names) - _NAMES_SHOWN
    return shown + (f", ... ({hidden} more)" if hidden > 0 else "")
