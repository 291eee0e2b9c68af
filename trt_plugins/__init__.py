"""TensorRT plugin nodes in exported ONNX graphs: contracts and CPU reference kernels.

Importing this package loads only numpy and onnx. ONNX Runtime support lives in
``trt_plugins.ort`` (imports onnxruntime; onnxruntime-extensions on first use).
"""

from .contracts import AttributeSpec, PluginContract, TensorSpec
from .efficient_nms import (
    CANDIDATE_LIMIT,
    EFFICIENT_NMS,
    JETSON_TX_CANDIDATE_LIMIT,
    candidates_needed,
    efficient_nms_reference,
)

# op_type -> contract, for every plugin our exports may emit.
PLUGINS: dict[str, PluginContract] = {contract.op_type: contract for contract in (EFFICIENT_NMS,)}

__all__ = [
    "AttributeSpec",
    "CANDIDATE_LIMIT",
    "EFFICIENT_NMS",
    "JETSON_TX_CANDIDATE_LIMIT",
    "PLUGINS",
    "PluginContract",
    "TensorSpec",
    "candidates_needed",
    "efficient_nms_reference",
]
