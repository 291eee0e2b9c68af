"""Data-only descriptions of TensorRT plugin nodes in ONNX graphs.

TensorRT's ONNX parser turns a node whose ``op_type`` names a registered plugin
into that plugin: every node attribute becomes a plugin field, except
``plugin_version`` and ``plugin_namespace``, which the parser itself consumes to
find the plugin creator. A :class:`PluginContract` states what such a node must
look like so that exports can be checked here, without TensorRT installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import onnx
from onnx import AttributeProto, TensorProto

# Read by the TensorRT ONNX parser, never passed to the plugin creator.
PARSER_ATTRIBUTES = ("plugin_version", "plugin_namespace")

_ATTRIBUTE_TYPES = {
    "int": AttributeProto.INT,
    "float": AttributeProto.FLOAT,
    "string": AttributeProto.STRING,
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a plugin node.

    Attributes:
        name: the plugin's name for the tensor (documentation, messages).
        dtypes: allowed ``onnx.TensorProto`` element types.
        rank: the allowed rank, or a tuple of allowed ranks.
        optional: the tensor may be left out (only trailing inputs may be).
    """

    name: str
    dtypes: tuple[int, ...]
    rank: int | tuple[int, ...]
    optional: bool = False

    @property
    def ranks(self) -> tuple[int, ...]:
        return (self.rank,) if isinstance(self.rank, int) else tuple(self.rank)


@dataclass(frozen=True)
class AttributeSpec:
    """One plugin attribute (a plugin field after parsing).

    Attributes:
        name: attribute name, as the plugin creator reads it.
        type: "int", "float" or "string" (the ONNX attribute type).
        required: the plugin creator refuses a node without it.
        default: the value the plugin uses when the attribute is absent.
        allowed: the only values accepted, or None for any.
        min, max: inclusive numeric bounds, or None.
        min_exclusive: ``min`` itself is rejected (e.g. ``iou_threshold > 0``).
    """

    name: str
    type: str
    required: bool
    default: Any = None
    allowed: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False

    def __post_init__(self) -> None:
        if self.type not in _ATTRIBUTE_TYPES:
            raise ValueError(f"attribute {self.name}: unknown type {self.type!r}")

    def problems(self, value: Any) -> list[str]:
        """Why ``value`` (already of the right Python type) is not acceptable; [] if it is."""
        out = []
        if self.allowed is not None and value not in self.allowed:
            out.append(f"attribute {self.name}={value!r} is not one of {list(self.allowed)}")
        if self.min is not None:
            too_small = value <= self.min if self.min_exclusive else value < self.min
            if too_small:
                bound = ">" if self.min_exclusive else ">="
                out.append(f"attribute {self.name}={value!r} must be {bound} {self.min}")
        if self.max is not None and value > self.max:
            out.append(f"attribute {self.name}={value!r} must be <= {self.max}")
        return out

    def coerce(self, value: Any) -> Any:
        """``value`` as this attribute's Python type (so 0 for a float attribute is 0.0)."""
        if self.type == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"attribute {self.name} must be an int, got {value!r}")
            return int(value)
        if self.type == "float":
            return float(value)
        if not isinstance(value, str):
            raise ValueError(f"attribute {self.name} must be a string, got {value!r}")
        return value


def _attribute_value(attribute: AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attribute)
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _type_name(attr_type: int) -> str:
    return AttributeProto.AttributeType.Name(attr_type)


def _dtype_names(dtypes: Sequence[int]) -> str:
    return "/".join(TensorProto.DataType.Name(d) for d in dtypes)


def _tensor_problems(kind: str, spec: TensorSpec, type_proto: onnx.TypeProto) -> list[str]:
    """Dtype and rank problems of one tensor whose type is known."""
    if type_proto.WhichOneof("value") != "tensor_type":
        return [f"{kind} {spec.name} must be a tensor"]
    tensor_type = type_proto.tensor_type
    out = []
    if tensor_type.elem_type != TensorProto.UNDEFINED and tensor_type.elem_type not in spec.dtypes:
        out.append(
            f"{kind} {spec.name} has dtype {TensorProto.DataType.Name(tensor_type.elem_type)},"
            f" expected {_dtype_names(spec.dtypes)}"
        )
    if tensor_type.HasField("shape"):
        rank = len(tensor_type.shape.dim)
        if rank not in spec.ranks:
            out.append(f"{kind} {spec.name} has rank {rank}, expected {' or '.join(map(str, spec.ranks))}")
    return out


def present_inputs(node: onnx.NodeProto) -> list[str]:
    """Input names without trailing "" (ONNX's spelling of an omitted optional input)."""
    names = list(node.input)
    while names and not names[-1]:
        names.pop()
    return names


@dataclass(frozen=True)
class PluginContract:
    """What an ONNX node for one TensorRT plugin must look like.

    ``attributes`` lists the plugin fields; ``plugin_version`` and
    ``plugin_namespace`` are handled here for every plugin (see PARSER_ATTRIBUTES).
    """

    op_type: str
    plugin_version: str
    domain: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    attributes: tuple[AttributeSpec, ...]
    doc: str = ""

    def attribute_spec(self, name: str) -> AttributeSpec | None:
        return next((spec for spec in self.attributes if spec.name == name), None)

    def check_node(
        self, node: onnx.NodeProto, value_info: Mapping[str, onnx.TypeProto] | None = None
    ) -> list[str]:
        """Human-readable problems of ``node`` against this contract; [] means it conforms.

        Args:
            node: the plugin node.
            value_info: optional tensor name -> TypeProto; the dtype and rank of every
                input/output found there are checked (unknown dtype or shape is not a problem).
        """
        problems: list[str] = []
        if node.op_type != self.op_type:
            problems.append(f"op_type is {node.op_type!r}, expected {self.op_type!r}")
        if node.domain != self.domain:
            problems.append(f"domain is {node.domain!r}, expected {self.domain!r}")
        problems += self._attribute_problems(node)
        problems += self._arity_problems(node)
        if value_info:
            problems += self._type_problems(node, value_info)
        return problems

    def _attribute_problems(self, node: onnx.NodeProto) -> list[str]:
        problems = []
        seen = set()
        for attribute in node.attribute:
            if attribute.name in seen:
                problems.append(f"attribute {attribute.name} is given twice")
            seen.add(attribute.name)
            if attribute.name in PARSER_ATTRIBUTES:
                problems += self._parser_attribute_problems(attribute)
                continue
            spec = self.attribute_spec(attribute.name)
            if spec is None:
                problems.append(f"unknown attribute {attribute.name} (not a field of {self.op_type})")
            elif attribute.type != _ATTRIBUTE_TYPES[spec.type]:
                problems.append(
                    f"attribute {spec.name} has type {_type_name(attribute.type)},"
                    f" expected {_type_name(_ATTRIBUTE_TYPES[spec.type])}"
                )
            else:
                problems += spec.problems(_attribute_value(attribute))
        for spec in self.attributes:
            if spec.required and spec.name not in seen:
                problems.append(f"missing required attribute {spec.name}")
        return problems

    def _parser_attribute_problems(self, attribute: AttributeProto) -> list[str]:
        if attribute.type != AttributeProto.STRING:
            return [f"attribute {attribute.name} must be a STRING, got {_type_name(attribute.type)}"]
        value = _attribute_value(attribute)
        if attribute.name == "plugin_version" and value != self.plugin_version:
            return [f"plugin_version is {value!r}, expected {self.plugin_version!r}"]
        return []

    def _arity_problems(self, node: onnx.NodeProto) -> list[str]:
        problems = []
        inputs = present_inputs(node)
        n_required = sum(not spec.optional for spec in self.inputs)
        if not n_required <= len(inputs) <= len(self.inputs):
            problems.append(
                f"{len(inputs)} inputs, expected {n_required}..{len(self.inputs)}"
                f" ({', '.join(spec.name for spec in self.inputs)})"
            )
        for spec, name in zip(self.inputs, inputs):
            if not name and not spec.optional:
                problems.append(f"required input {spec.name} is empty")
        n_out_required = sum(not spec.optional for spec in self.outputs)
        if not n_out_required <= len(node.output) <= len(self.outputs):
            problems.append(
                f"{len(node.output)} outputs, expected {len(self.outputs)}"
                f" ({', '.join(spec.name for spec in self.outputs)})"
            )
        return problems

    def _type_problems(self, node: onnx.NodeProto, value_info: Mapping[str, onnx.TypeProto]) -> list[str]:
        problems = []
        for kind, specs, names in (("input", self.inputs, node.input), ("output", self.outputs, node.output)):
            for spec, name in zip(specs, names):
                if name and name in value_info:
                    problems += _tensor_problems(kind, spec, value_info[name])
        return problems

    def attribute_values(self, node: onnx.NodeProto) -> dict[str, Any]:
        """Plugin field values of ``node``, defaults filled in for absent optional ones.

        Parser attributes (plugin_version, plugin_namespace) and unknown attributes are
        left out. Raises ValueError if a required attribute is missing.
        """
        given = {a.name: _attribute_value(a) for a in node.attribute}
        missing = [spec.name for spec in self.attributes if spec.required and spec.name not in given]
        if missing:
            raise ValueError(f"{self.op_type} node {node.name!r}: missing required attributes {missing}")
        return {spec.name: given.get(spec.name, spec.default) for spec in self.attributes}

    def make_node(
        self,
        inputs: Sequence[str],
        outputs: Sequence[str],
        name: str | None = None,
        **attributes: Any,
    ) -> onnx.NodeProto:
        """A node for this plugin, with ``plugin_version`` set and attributes type-coerced.

        Only the given attributes are written (absent optional ones take the plugin's
        defaults in TensorRT). Raises ValueError if the node would not pass check_node.
        """
        unknown = sorted(set(attributes) - {spec.name for spec in self.attributes})
        if unknown:
            raise ValueError(f"{self.op_type}: unknown attributes {unknown}")
        coerced = {key: self.attribute_spec(key).coerce(value) for key, value in attributes.items()}
        node = onnx.helper.make_node(
            self.op_type,
            list(inputs),
            list(outputs),
            name=name,
            domain=self.domain,
            plugin_version=self.plugin_version,
            **coerced,
        )
        problems = self.check_node(node)
        if problems:
            raise ValueError(f"{self.op_type} node {name!r}: " + "; ".join(problems))
        return node
