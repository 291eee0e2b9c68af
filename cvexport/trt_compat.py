"""Static TensorRT-compatibility check for ONNX graphs, without TensorRT installed.

``check_model`` walks an ONNX graph and reports what TensorRT's ONNX parser
(onnx-tensorrt) would reject, silently change, or can only partly honour. It
exists so a model exported on a workstation can be vetted before it is copied
to a Jetson or a GPU box where the parser runs; it is a conservative
approximation of the parser, not a substitute for it.

Each rule is one small function that yields ``Finding`` objects. Rule ids:

====================== =============================================================
rule                   what it flags
====================== =============================================================
onnx-checker           the graph fails ``onnx.checker`` with full shape inference
dangling-input         a node reads a tensor that nothing produces (no graph input,
                       initializer or node output), or a graph output nothing produces
unsupported-op         default-domain op not in the TensorRT 10 support table
topk-k                 TopK K above TensorRT's limit (or not a constant)
reduce-axes            Reduce* op whose ``axes`` input is not a constant
constant-input         other inputs TensorRT needs as build-time constants
quantization           Q/DQ the parser cannot import (zero points, types, bias)
resize-mode            Resize attribute combinations the parser rejects
int64                  INT64 tensors at the I/O, and INT64 values beyond INT32
unsupported-construct  sequences/optionals, strings, dynamic Loop scan outputs
plugin                 a node that runs as a TensorRT plugin, or breaks its contract
custom-domain          a node in a non-ONNX domain that no known plugin provides
dynamic-dim            graph input with a dynamic dimension other than batch
opset                  ONNX opset outside what TensorRT 10 imports well
external-data          tensors stored outside the .onnx file
shape-inference        ONNX shape inference failed (types may be missing)
====================== =============================================================
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from cvexport.errors import CvexportError

Severity = Literal["error", "warning", "info"]
RULE_IDS: frozenset[str] = frozenset(
    """
    onnx-checker dangling-input
    unsupported-op topk-k reduce-axes constant-input quantization resize-mode int64
    unsupported-construct plugin custom-domain dynamic-dim opset external-data shape-inference
    """.split()
)
_SEVERITY_ORDER = ("error", "warning", "info")

# --------------------------------------------------------------------------------------
# Operator support table.
#
# Source: onnx/onnx-tensorrt, docs/operators.md, "Operator Support Matrix" as published
# for TensorRT 10.15 ("supports operators in the inclusive range of opset 9 to opset
# 24"). Per-op restrictions below are paraphrased from that table's Restrictions
# column and cross-checked against the importer/checker source of the 10.1 GA branch
# (onnxOpImporters.cpp, onnxOpCheckers.cpp). Ops added after TensorRT 10.1 (Attention,
# RMSNormalization, RotaryEmbedding, TensorScatter, STFT and the window ops) will not
# import on older TensorRT 10 releases such as the one in JetPack 6.
# --------------------------------------------------------------------------------------
TRT_VERSION = "10.15"
MIN_OPSET = 9  # below this the parser refuses the model
RECOMMENDED_MIN_OPSET = 13  # older opsets keep attribute forms that export poorly
MAX_OPSET = 24  # TensorRT 10.0/10.1 stopped at 20; 10.15 reaches 24

TRT_SUPPORTED_OPS: frozenset[str] = frozenset(
    """
    Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
    BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant
    ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
    DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor
    Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
    Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow
    HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
    IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
    LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod
    Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
    QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
    Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
    ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
    RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter
    ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
    Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter
    ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
    """.split()
)

# Ops the same table marks "N". Anything neither here nor above is simply absent from
# the table (usually newer than the parser); both are reported as unsupported, but the
# message says which, because "listed as N" is a firmer answer than "not listed".
TRT_UNSUPPORTED_OPS: frozenset[str] = frozenset(
    """
    AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im
    CenterCropPad Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear
    ImageDecoder MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial
    NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
    QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase
    SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
    StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
    """.split()
)

# Restriction notes, paraphrased. Rules below enforce the ones marked in comments;
# the rest are surfaced for humans (e.g. in docs or a verbose report).
TRT_OP_RESTRICTIONS: dict[str, str] = {
    "Attention": "Q/K/V and attn_mask must be 4-D; KV-cache inputs/outputs, softcap and "
    "qk_matmul_output_mode are not supported.",
    "AveragePool": "2-D or 3-D pooling only; dilations must be absent or all ones.",
    "Constant": "sparse_value and string values are not supported.",  # unsupported-construct
    "CumSum": "axis must be a build-time constant.",  # constant-input
    "DeformConv": "1-D or 2-D spatial input only; begin/end pads must match per axis.",
    "DequantizeLinear": "INT8, FP8, FP4 or INT4 input; x_zero_point must be zero.",  # quantization
    "Dropout": "training_mode must be a constant that evaluates to false.",  # constant-input
    "EyeLike": "input must have static dimensions.",
    "GridSample": "input must be 4-D.",
    "Hardmax": "the size of the axis dimension must be known at build time.",
    "If": "both branches must produce outputs of the same rank, with different names.",
    "LayerNormalization": "only the first output (Y) is supported.",
    "Loop": "scan-output length cannot be dynamic; loop-carried shapes must not change "
    "between iterations.",  # unsupported-construct (scan outputs)
    "LpPool": "dilations must be absent or all ones.",
    "LSTM": "bidirectional LSTMs need the same activations both ways; input_forget=0, layout=0.",
    "GRU": "bidirectional GRUs need the same activations both ways.",
    "RNN": "bidirectional RNNs need the same activations both ways.",
    "MaxPool": "2-D or 3-D pooling only; Indices output unsupported; dilations all ones.",
    "OneHot": "depth must be a build-time constant.",  # constant-input
    "QuantizeLinear": "y_zero_point must be zero; INT8/FP8/FP4/INT4 output only.",  # quantization
    "RandomNormal": "seed is ignored.",
    "RandomNormalLike": "seed is ignored.",
    "RandomUniform": "seed is ignored.",
    "RandomUniformLike": "seed is ignored.",
    "Resize": "coordinate modes half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, "
    "asymmetric, align_corners; stretch aspect policy; no antialiasing; axes must be "
    "an iota when scales is a tensor; linear resizes at most the 3 innermost axes and "
    "cubic the 2 innermost.",  # resize-mode
    "RotaryEmbedding": "position_ids must be INT64.",
    "ScatterND": "reduction must be none.",
    "STFT": "frame_step and window must be initializers; real-valued input only.",
    "Squeeze": "axes must be resolvable to a constant.",
    "TensorScatter": "past_cache and update must be 4-D; axis must be -2.",
    "TopK": "K must be at most 3840; sorted must be 1.",  # topk-k
    "Unsqueeze": "axes must be resolvable to a constant.",
}

REDUCE_OPS: frozenset[str] = frozenset(op for op in TRT_SUPPORTED_OPS if op.startswith("Reduce"))

# Inputs the parser needs as build-time constants: op -> ((input index, input name), ...).
CONSTANT_INPUTS: dict[str, tuple[tuple[int, str], ...]] = {
    "CumSum": ((1, "axis"),),
    "OneHot": ((1, "depth"),),
    "Dropout": ((2, "training_mode"),),
}

# TopK: ITopKLayer handles K up to 3840 (operators.md words it as "less than 3840").
TOPK_MAX_K = 3840

# Resize: accepted attribute values (onnxOpCheckers.cpp, Resize checker).
RESIZE_MODES = frozenset({"nearest", "linear", "cubic"})
RESIZE_COORD_MODES = frozenset(
    {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
)
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})
# How many innermost axes each interpolation mode may resize (canUseNDResize in the importer).
RESIZE_MAX_AXES = {"linear": 3, "cubic": 2}

# Q/DQ: quantized types TensorRT imports. UINT8 is only allowed as network I/O, and the
# parser turns a UINT8 zero point into INT8, which changes the numbers.
_T = onnx.TensorProto
QUANT_TYPES: frozenset[int] = frozenset({_T.INT8, _T.FLOAT8E4M3FN, _T.INT4, _T.FLOAT4E2M1})
# Consumers whose input at this index is a bias; an INT32 DequantizeLinear feeding it is
# a "quantized bias", which TensorRT cannot import (it wants float bias).
BIAS_INPUTS: dict[str, int] = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}

INT32_MIN, INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)
# Inputs where out-of-range INT64 values are a deliberate "to the end" sentinel that the
# parser clamps to the dimension; flagging them would flag every torch-exported Slice.
CLAMPED_INT64_INPUTS: dict[str, frozenset[int]] = {"Slice": frozenset({1, 2})}

_DEFAULT_DOMAINS = frozenset({"", "ai.onnx"})
_UNSUPPORTED_CONSTANT_ATTRS = frozenset({"sparse_value", "value_string", "value_strings"})
_NAMES_SHOWN = 8  # how many tensor names an aggregated finding lists before "..."


# --------------------------------------------------------------------------------------
# Report types
# --------------------------------------------------------------------------------------
@dataclass
class Finding:
    """One problem or remark. ``node`` names the node (or tensor) it is about, if any."""

    rule: str
    severity: Severity
    node: str | None
    message: str


@dataclass
class CompatReport:
    """Everything ``check_model`` found, plus a summary of the graph's interface."""

    findings: list[Finding] = field(default_factory=list)
    op_histogram: dict[str, int] = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing would stop TensorRT from building the engine."""
        return not any(f.severity == "error" for f in self.findings)

    def by_severity(self, severity: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``--json`` output and bundle manifests)."""
        return {
            "ok": self.ok,
            "trt_version": TRT_VERSION,
            "counts": {s: len(self.by_severity(s)) for s in _SEVERITY_ORDER},
            "findings": [asdict(f) for f in self.findings],
            "op_histogram": dict(self.op_histogram),
            "inputs": [dict(io) for io in self.inputs],
            "outputs": [dict(io) for io in self.outputs],
        }

    def format_text(self) -> str:
        """A readable multi-line report: verdict, interface, op counts, findings."""
        counts = {s: len(self.by_severity(s)) for s in _SEVERITY_ORDER}
        verdict = "OK" if self.ok else "NOT COMPATIBLE"
        lines = [
            f"TensorRT {TRT_VERSION} compatibility: {verdict} "
            f"({counts['error']} errors, {counts['warning']} warnings, {counts['info']} notes)"
        ]
        for title, ios in (("inputs", self.inputs), ("outputs", self.outputs)):
            lines.append(f"{title}:")
            lines.extend(
                f"  {io['name']}: {io['dtype']} {_format_shape(io['shape'])}" for io in ios
            )
        ops = sorted(self.op_histogram.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("ops: " + ", ".join(f"{op} x{n}" for op, n in ops))
        for severity in _SEVERITY_ORDER:
            for f in self.by_severity(severity):
                where = f" [{f.node}]" if f.node else ""
                lines.append(f"{severity.upper():7} {f.rule}{where}: {f.message}")
        return "\n".join(lines)


def _format_shape(shape: list | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join(str(d) for d in shape) + "]"


class ModelLoadError(CvexportError, ValueError):
    """The file is missing or is not a readable ONNX model."""


# --------------------------------------------------------------------------------------
# Graph context shared by the rules
# --------------------------------------------------------------------------------------
class _Graph:
    """Indexes a model once so each rule can ask simple questions about it."""

    def __init__(self, model: onnx.ModelProto, plugins: dict):
        self.model = model
        self.plugins = plugins
        self.opset = _default_opset(model)
        self.nodes: list[onnx.NodeProto] = list(_walk_nodes(model.graph))
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


def _walk_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
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


# --------------------------------------------------------------------------------------
# Rules. Each takes the indexed graph and yields findings.
# --------------------------------------------------------------------------------------
def _rule_dangling_inputs(g: _Graph) -> Iterator[Finding]:
    """Rule dangling-input: every node input must be a graph input, an initializer or some
    node's output (an enclosing graph's, for subgraphs); ONNX Runtime refuses to load a graph
    where one is not, and TensorRT's parser fails on it. Graph outputs are held to the same."""
    nodes = iter(g.nodes)  # g.nodes is in _walk_graphs order, which the walk below follows
    yield from _dangling_in(g, g.model.graph, frozenset(), nodes, top=True)


def _dangling_in(
    g: _Graph, graph: onnx.GraphProto, outer: frozenset[str], nodes: Iterator[onnx.NodeProto], top: bool
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


def _rule_unsupported_ops(g: _Graph) -> Iterator[Finding]:
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


def _rule_topk(g: _Graph) -> Iterator[Finding]:
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


def _rule_constant_inputs(g: _Graph) -> Iterator[Finding]:
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


def _rule_quantization(g: _Graph) -> Iterator[Finding]:
    """Rule quantization: TensorRT imports symmetric INT8/FP8/FP4/INT4 Q/DQ only."""
    for node in g.nodes:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if node.domain not in _DEFAULT_DOMAINS:
            continue
        yield from _check_qdq_node(g, node)


def _check_qdq_node(g: _Graph, node: onnx.NodeProto) -> Iterator[Finding]:
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


def _int32_dq_message(g: _Graph, node: onnx.NodeProto) -> str:
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


def _rule_resize(g: _Graph) -> Iterator[Finding]:
    """Rule resize-mode: attribute combinations the Resize importer rejects."""
    for node in g.nodes:
        if node.op_type == "Resize" and node.domain in _DEFAULT_DOMAINS:
            for problem in _resize_problems(g, node):
                yield Finding("resize-mode", "error", g.label(node), problem)


def _resize_problems(g: _Graph, node: onnx.NodeProto) -> Iterator[str]:
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


def _resize_axes_problems(g: _Graph, node: onnx.NodeProto, mode: str) -> Iterator[str]:
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


def _resize_factors(g: _Graph, node: onnx.NodeProto, scales_name: str) -> dict[int, float] | None:
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


def _rule_int64(g: _Graph) -> Iterator[Finding]:
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


def _int64_tensor_names(g: _Graph) -> list[str]:
    names = [n for n, t in g.initializers.items() if t.data_type == onnx.TensorProto.INT64]
    names += [n for n in g.constant_nodes if g.elem_type(n) == onnx.TensorProto.INT64]
    names += [n for n in g.types if g.elem_type(n) == onnx.TensorProto.INT64]
    return list(dict.fromkeys(names))  # de-duplicate, keep order


def _int64_out_of_range(g: _Graph) -> Iterator[Finding]:
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


def _only_clamped_uses(g: _Graph, name: str) -> bool:
    uses = g.consumers.get(name, [])
    return bool(uses) and all(
        idx in CLAMPED_INT64_INPUTS.get(node.op_type, ()) for node, idx in uses
    )


def _rule_unsupported_constructs(g: _Graph) -> Iterator[Finding]:
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


def _check_loop_scan_outputs(g: _Graph, node: onnx.NodeProto) -> Iterator[Finding]:
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


def _rule_plugins(g: _Graph) -> Iterator[Finding]:
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


def _rule_dynamic_dims(g: _Graph) -> Iterator[Finding]:
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


def _rule_opset(g: _Graph) -> Iterator[Finding]:
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


def _rule_external_data(g: _Graph) -> Iterator[Finding]:
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


RULES: tuple[Callable[[_Graph], Iterable[Finding]], ...] = (
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


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------
def check_model(model: onnx.ModelProto, plugins: dict | None = None) -> CompatReport:
    """Check an ONNX model against TensorRT's ONNX parser; never modifies ``model``.

    First ``onnx.checker.check_model(model, full_check=True)`` (the graph must be valid
    ONNX at all, with strict shape inference); its failure is an ``onnx-checker`` error.

    ``plugins`` maps op_type -> contract object with ``check_node(node, value_info)``
    returning a list of problem strings; ``value_info`` is a dict of tensor name ->
    ``onnx.TypeProto`` (after shape inference, initializers included). Defaults to
    ``cvexport.trt_plugins.PLUGINS``.
    """
    return _check(model, plugins, path=None)


def _check(model: onnx.ModelProto, plugins: dict | None, path: str | None) -> CompatReport:
    findings: list[Finding] = []
    if plugins is None:
        plugins, note = _default_plugins()
        if note:
            findings.append(note)
    checker_problem = _run_onnx_checker(model, plugins, path)
    if checker_problem:
        findings.append(checker_problem)
    model = _inline_local_functions(model, plugins)
    model, inference_problem = _infer_shapes(model)
    if inference_problem:
        findings.append(inference_problem)
    g = _Graph(model, plugins)
    for rule in RULES:
        findings.extend(rule(g))
    findings.sort(key=lambda f: _SEVERITY_ORDER.index(f.severity))  # stable: rule order kept
    return CompatReport(
        findings=findings,
        op_histogram=dict(Counter(n.op_type for n in g.nodes).most_common()),
        inputs=[_io_summary(vi) for vi in g.graph_inputs],
        outputs=[_io_summary(vi) for vi in g.graph_outputs],
    )


def check_path(path: str | os.PathLike) -> CompatReport:
    """Load an .onnx file and check it.

    External weights are not read (only their files' presence is verified), so huge
    models stay cheap to check; constants stored externally count as "unknown".
    Raises ``ModelLoadError`` (a ``ValueError``) with a one-line message when the file,
    or an external data file it names, is missing, or the file is not an ONNX model.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelLoadError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(f"cannot read ONNX model {path}: {_one_line(exc)}") from None
    if not model.graph.node and not model.graph.input and not model.graph.output:
        # protobuf happily parses many non-ONNX byte strings as an empty message
        raise ModelLoadError(f"{path} is not an ONNX model (empty graph)")
    missing = _missing_external_files(model, os.path.dirname(path))
    if missing:
        raise ModelLoadError(
            f"{path} references missing external data file(s): {_short_list(missing)}"
        )
    return _check(model, None, path)


def _missing_external_files(model: onnx.ModelProto, base_dir: str) -> list[str]:
    files = {
        entry.value
        for t in _all_tensors(model)
        if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data
        if entry.key == "location"
    }
    return sorted(f for f in files if not os.path.isfile(os.path.join(base_dir, f)))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# Past this the checker cannot serialize an in-memory model (protobuf's 2 GiB limit).
_CHECKER_MAX_BYTES = 2**31 - 1
_MESSAGE_CHARS = 300


def _whole_one_line(exc: BaseException) -> str:
    """The whole message of ``exc`` on one line (the checker's context lines name the node)."""
    text = " ".join(str(exc).replace("==> Context:", "; context:").split())
    text = text.replace(" ;", ";") or type(exc).__name__
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def _checker_view(model: onnx.ModelProto, plugins: dict) -> onnx.ModelProto:
    """What ``onnx.checker`` should see of ``model``: a copy in which

    - plugin nodes written in the default domain (TensorRT's parser accepts them there)
      move to their plugin's domain, so the checker does not ask for an ONNX schema;
    - initializers whose data lives in external files become typed graph inputs: those
      files are checked by ``check_path``, and a checker given a ModelProto would look
      for them relative to the working directory.
    """
    view = onnx.ModelProto()
    view.CopyFrom(model)
    domains = {imp.domain for imp in view.opset_import}
    for node in _walk_nodes(view.graph):
        contract = plugins.get(node.op_type)
        if contract is not None and node.domain in _DEFAULT_DOMAINS:
            node.domain = str(getattr(contract, "domain", None) or "trt.plugins")
            if node.domain not in domains:
                view.opset_import.append(onnx.helper.make_opsetid(node.domain, 1))
                domains.add(node.domain)
    for graph in _walk_graphs(view.graph):
        external = [t for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        for tensor in external:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
            graph.initializer.remove(tensor)
    return view


def _run_onnx_checker(model: onnx.ModelProto, plugins: dict, path: str | None) -> Finding | None:
    """Rule onnx-checker: ``onnx.checker.check_model(..., full_check=True)``; a failure is an error."""
    view = _checker_view(model, plugins)
    target: onnx.ModelProto | str = view
    if view.ByteSize() > _CHECKER_MAX_BYTES:
        if path is None:
            return Finding(
                "onnx-checker", "info", None,
                "ONNX checker skipped: the model is over 2 GiB in memory; check the file instead",
            )
        target = path  # the file as saved (default-domain plugin nodes would be flagged)
    try:
        onnx.checker.check_model(target, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError, or a protobuf error
        return Finding("onnx-checker", "error", None, f"ONNX checker failed: {_whole_one_line(exc)}")
    return None


def _default_plugins() -> tuple[dict, Finding | None]:
    """cvexport's plugin registry, imported lazily so this module stays light."""
    try:
        from cvexport.trt_plugins import PLUGINS
    except ImportError as exc:
        return {}, Finding(
            "plugin", "info", None, f"plugin registry unavailable ({_one_line(exc)}); plugin "
            f"nodes will be reported as unsupported",
        )
    return dict(PLUGINS), None


def _inline_local_functions(model: onnx.ModelProto, plugins: dict) -> onnx.ModelProto:
    """Inline model-local functions, as the parser does, except ones a plugin overrides."""
    keep = [(f.domain, f.name) for f in model.functions if f.name not in plugins]
    if not keep:
        return model
    try:
        from onnx import inliner

        return inliner.inline_selected_functions(model, keep, exclude=False)
    except Exception:
        return model  # calls then surface as custom-domain findings, which is still honest


def _infer_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Finding | None]:
    """Strict shape inference for types; on failure fall back to what can be inferred."""
    try:
        return shape_inference.infer_shapes(model, check_type=True, strict_mode=True), None
    except Exception as exc:
        problem = Finding(
            "shape-inference", "warning", None,
            f"ONNX shape inference failed ({_one_line(exc)}); type-based checks may miss issues",
        )
    try:
        return shape_inference.infer_shapes(model, strict_mode=False), problem
    except Exception:
        return model, problem
