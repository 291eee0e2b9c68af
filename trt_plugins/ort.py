"""Run graphs holding TensorRT plugin nodes in ONNX Runtime on CPU.

The plugin nodes run as onnxruntime-extensions Python custom ops backed by our numpy
reference kernels. Those ops must live in the ``ai.onnx.contrib`` domain, so
:func:`rewrite_for_onnxruntime` returns a copy of the model with the plugin nodes
moved there; the exported model itself keeps its TensorRT ("TRT") nodes.

Typical use::

    session = create_session(model)          # rewrite + register + InferenceSession
    outputs = session.run(None, feeds)

Two limits of onnxruntime-extensions Python ops shape the rewrite:

- An op has a fixed number of inputs, so each plugin arity is its own op: the full
  arity keeps the plugin's op_type, a shorter one is suffixed (``EfficientNMS_TRT``
  with anchors, ``EfficientNMS_TRT__2inputs`` without).
- Every declared attribute must be present on the node (ORT fails at session creation
  otherwise), so the rewrite writes all plugin attributes explicitly, absent optional
  ones with the plugin's default. Declared attributes are typed (dt_int64/dt_float/
  dt_string), so int, float and string fields all reach the kernel with their type.

Only float32 boxes/scores/anchors are supported here (the Python op's input types
are fixed); float16 plugin graphs need a Cast in front for CPU runs.
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Sequence

import numpy as np
import onnx
import onnxruntime

from . import PLUGINS
from .contracts import PluginContract, present_inputs
from .efficient_nms import EFFICIENT_NMS, efficient_nms_reference

ORT_DOMAIN = "ai.onnx.contrib"  # onnxruntime_extensions.default_opset_domain()

_lock = threading.Lock()
_registered = False


# op_type -> reference kernel called as kernel(*inputs, **plugin attributes).
_KERNELS: dict[str, Callable[..., tuple[np.ndarray, ...]]] = {
    EFFICIENT_NMS.op_type: efficient_nms_reference,
}


def _ort_op_type(contract: PluginContract, num_inputs: int) -> str:
    """Name of the Python op for one arity of a plugin (see the module docstring)."""
    if num_inputs == len(contract.inputs):
        return contract.op_type
    return f"{contract.op_type}__{num_inputs}inputs"


def _arities(contract: PluginContract) -> range:
    n_required = sum(not spec.optional for spec in contract.inputs)
    return range(n_required, len(contract.inputs) + 1)


def is_plugin_node(node: onnx.NodeProto) -> bool:
    """``node`` is a plugin we know, in its contract's domain or in the default domain.

    The default domain is accepted because some exporters write plugin nodes there.
    """
    contract = PLUGINS.get(node.op_type)
    return contract is not None and node.domain in (contract.domain, "")


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    graphs = []
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            graphs.append(attribute.g)
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            graphs.extend(attribute.graphs)
    return graphs


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Nodes of ``graph`` and of its subgraphs (If/Loop/Scan bodies), depth first."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for subgraph in _subgraphs(node):
            nodes.extend(_all_nodes(subgraph))
    return nodes


def has_plugin_nodes(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds any node of a plugin in trt_plugins.PLUGINS."""
    return any(is_plugin_node(node) for node in _all_nodes(model.graph))


def _rewrite_node(node: onnx.NodeProto) -> None:
    """Move one plugin node to ORT_DOMAIN in place, all plugin attributes written explicitly."""
    contract = PLUGINS[node.op_type]
    # Judge the node as TensorRT would see it, whichever of the accepted domains it uses.
    canonical = onnx.NodeProto()
    canonical.CopyFrom(node)
    canonical.domain = contract.domain
    problems = contract.check_node(canonical)
    if problems:
        raise ValueError(f"{node.op_type} node {node.name!r} is not a valid plugin node: " + "; ".join(problems))
    values = contract.attribute_values(node)
    inputs = present_inputs(node)
    replacement = onnx.helper.make_node(
        _ort_op_type(contract, len(inputs)),
        inputs,
        list(node.output),
        name=node.name,
        domain=ORT_DOMAIN,
        **{spec.name: spec.coerce(values[spec.name]) for spec in contract.attributes},
    )
    node.CopyFrom(replacement)


def rewrite_for_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose plugin nodes run as onnxruntime-extensions Python ops.

    ``model`` is not modified. Plugin nodes (also inside subgraphs) move to the
    ``ai.onnx.contrib`` domain, which is added to opset_import. Raises ValueError for a
    plugin node that breaks its contract (the kernel could not run it faithfully).
    """
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    touched = False
    for node in _all_nodes(rewritten.graph):
        if is_plugin_node(node):
            _rewrite_node(node)
            touched = True
    if touched and all(opset.domain != ORT_DOMAIN for opset in rewritten.opset_import):
        rewritten.opset_import.append(onnx.helper.make_opsetid(ORT_DOMAIN, 1))
    return rewritten


def _register(contract: PluginContract, kernel: Callable[..., tuple[np.ndarray, ...]]) -> None:
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    dtypes = {
        onnx.TensorProto.FLOAT: PyCustomOpDef.dt_float,
        onnx.TensorProto.INT32: PyCustomOpDef.dt_int32,
    }
    attr_types = {"int": PyCustomOpDef.dt_int64, "float": PyCustomOpDef.dt_float, "string": PyCustomOpDef.dt_string}
    # The first allowed dtype of each tensor: float32 for the float tensors of our plugins.
    outputs = [dtypes[spec.dtypes[0]] for spec in contract.outputs]
    attrs = {spec.name: attr_types[spec.type] for spec in contract.attributes}
    for num_inputs in _arities(contract):
        inputs = [dtypes[spec.dtypes[0]] for spec in contract.inputs[:num_inputs]]
        onnx_op(op_type=_ort_op_type(contract, num_inputs), inputs=inputs, outputs=outputs, attrs=attrs)(kernel)


def register_custom_ops() -> None:
    """Register the Python kernels of all plugins with onnxruntime-extensions, once per process.

    Must run before a session is created; session_options() and create_session() call it.
    """
    global _registered
    with _lock:
        if _registered:
            return
        for op_type, kernel in _KERNELS.items():
            _register(PLUGINS[op_type], kernel)
        _registered = True


def session_options(base: onnxruntime.SessionOptions | None = None) -> onnxruntime.SessionOptions:
    """Session options with the onnxruntime-extensions library (and our kernels) registered.

    ``base`` is updated in place and returned; a new SessionOptions if None.
    """
    from onnxruntime_extensions import get_library_path

    register_custom_ops()
    options = base if base is not None else onnxruntime.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return options


def create_session(
    model: onnx.ModelProto | str | os.PathLike,
    base_options: onnxruntime.SessionOptions | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> onnxruntime.InferenceSession:
    """An InferenceSession for ``model`` with its plugin nodes running on our reference kernels.

    Args:
        model: a ModelProto or a path to one (the file is not changed).
        base_options: options to start from (updated in place, see session_options).
        providers: execution providers; the plugin nodes always run on CPU.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    rewritten = rewrite_for_onnxruntime(model)
    return onnxruntime.InferenceSession(
        rewritten.SerializeToString(), session_options(base_options), providers=list(providers)
    )
