"""cvexport: PyTorch vision models to ONNX, ONNX Runtime and TensorRT, with parity checks.

Importing the package is cheap and needs no GPU: heavy and optional modules (torch export,
onnxruntime, tensorrt) are imported by the functions that use them.
"""

__version__ = "0.1.0"
