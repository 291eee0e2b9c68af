"""A tiny editor for appending named pieces to an ONNX graph.

Graph sections (decode, NMS, normalization, argmax) are functions that take a
:class:`GraphEditor` and tensor names and return the names of what they added, so each
section stays a short, readable description of the ops it contributes.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Any, Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphEditor:
    """Appends nodes, constants, inputs and outputs to a copy of ``model``; never mutates the original."""

    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.graph = self.model.graph
        self._taken = {v.name for v in itertools.chain(self.graph.input, self.graph.output, self.graph.initializer)}
        for node in self.graph.node:
            self._taken.update(node.output)
            self._taken.add(node.name)
        self._counter = itertools.count()
        self._section: str | None = None

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Tag every node appended inside the block with ``cvexport.section = name`` (node
        metadata), so profilers and reports can attribute time and ops to each section."""
        previous, self._section = self._section, name
        try:
            yield
        finally:
            self._section = previous

    def fresh(self, hint: str) -> str:
        """A tensor or node name not used anywhere in the graph yet."""
        name = hint
        while name in self._taken:
            name = f"{hint}_{next(self._counter)}"
        self._taken.add(name)
        return name

    def const(self, value: Any, name: str, dtype: Any = None) -> str:
        """Add an initializer holding ``value``; returns its tensor name."""
        array = np.asarray(value, dtype=dtype)
        tensor_name = self.fresh(name)
        self.graph.initializer.append(numpy_helper.from_array(array, tensor_name))
        return tensor_name

    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        name: str,
        num_outputs: int = 1,
        domain: str = "",
        outputs: Sequence[str] | None = None,
        **attrs: Any,
    ) -> Any:
        """Append one node; returns its output name (or a tuple of names when several)."""
        out = list(outputs) if outputs is not None else [self.fresh(f"{name}_out{i}" if num_outputs > 1 else name) for i in range(num_outputs)]
        for o in out:
            self._taken.add(o)
        self.append_node(
            helper.make_node(op_type, list(inputs), out, name=self.fresh(f"{name}_node"), domain=domain, **attrs)
        )
        return out[0] if len(out) == 1 else tuple(out)

    def append_node(self, node: onnx.NodeProto) -> None:
        """Append a node (also one built elsewhere, such as a plugin node made from its contract)."""
        self._taken.update(node.output)
        if self._section is not None:
            node.metadata_props.add(key=SECTION_KEY, value=self._section)
        self.graph.node.append(node)

    def ensure_opset(self, domain: str, version: int) -> None:
        if not any(o.domain == domain for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid(domain, version))

    @property
    def opset(self) -> int:
        return next(o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx"))

    def replace_outputs(self, outputs: Sequence[tuple[str, int, Sequence[Any]]]) -> None:
        """Make ``outputs`` — (name, element type, shape) — the graph's only outputs."""
        del self.graph.output[:]
        for name, elem_type, shape in outputs:
            self.graph.output.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def replace_input(self, old: str, new_name: str, elem_type: int, shape: Sequence[Any]) -> str:
        """Swap graph input ``old`` for a new one; returns the new name. Consumers of ``old`` are
        left pointing at ``old``, which the caller must now produce with a section."""
        kept = [i for i in self.graph.input if i.name != old]
        if len(kept) == len(self.graph.input):
            raise KeyError(f"graph has no input named {old!r}")
        del self.graph.input[:]
        new = helper.make_tensor_value_info(self.fresh(new_name), elem_type, list(shape))
        self.graph.input.extend([new, *kept])
        return new.name

    def prepend_nodes_from(self, start: int) -> None:
        """Move nodes appended since index ``start`` to the front (keeps the node list topologically sorted)."""
        added = list(self.graph.node[start:])
        original = list(self.graph.node[:start])
        del self.graph.node[:]
        self.graph.node.extend(added + original)


SECTION_KEY = "cvexport.section"


def node_sections(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> the graph section that added it (nodes of the exported network are absent)."""
    return {
        node.name: prop.value
        for node in model.graph.node
        for prop in node.metadata_props
        if prop.key == SECTION_KEY
    }


FLOAT = TensorProto.FLOAT
INT32 = TensorProto.INT32
UINT8 = TensorProto.UINT8
