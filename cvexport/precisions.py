"""The precisions a bundle can be built at: one list for the build, the manifest schema and the
TensorRT settings (kept in a module of its own so that none of them imports another's weight)."""

PRECISIONS = ("fp32", "fp16", "int8")


def judged_precision(bundle_precision: str, compute_precision: str | None) -> str:
    """The precision whose parity tolerance a backend's answers are judged by: the bundle's, or
    the coarser one the backend computes at (OpenVINO's bf16 runs an fp32 bundle like an fp16
    build; ``None``: the bundle's own)."""
    if compute_precision is None:
        return bundle_precision
    return max(bundle_precision, compute_precision, key=PRECISIONS.index)
