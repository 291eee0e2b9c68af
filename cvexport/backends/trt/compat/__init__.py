"""Static TensorRT-compatibility check for ONNX graphs, without TensorRT installed.

The package in reading order: ``operators`` (the parser's operator table as data),
``report`` (findings and the report), ``graph_index`` (a model indexed once), ``rules``
(one function per rule), ``checker`` (the entry points).

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

from cvexport.backends.trt.compat.checker import check_model, check_path
from cvexport.backends.trt.compat.operators import TOPK_MAX_K, TRT_SUPPORTED_OPS, TRT_VERSION
from cvexport.backends.trt.compat.report import RULE_IDS, CompatReport, Finding, ModelLoadError

__all__ = ["RULE_IDS", "TOPK_MAX_K", "TRT_SUPPORTED_OPS", "TRT_VERSION", "CompatReport", "Finding", "ModelLoadError",
           "check_model", "check_path"]
