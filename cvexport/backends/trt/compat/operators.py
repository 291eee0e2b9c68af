"""TensorRT's ONNX parser as data: which operators it imports, from which opsets, and the
limits of the ones the rules look into (TopK's K, Resize modes, quantization types)."""

from __future__ import annotations


import numpy as np
import onnx


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
