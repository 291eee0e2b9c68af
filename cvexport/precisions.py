"""The precisions a bundle can be built at: one list for the build, the manifest schema and the
TensorRT settings (kept in a module of its own so that none of them imports another's weight)."""

PRECISIONS = ("fp32", "fp16", "int8")
