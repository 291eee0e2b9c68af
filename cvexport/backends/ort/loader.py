"""An ONNX Runtime session for a serialized graph: TensorRT plugin nodes rewritten and their CPU
kernels registered, and the execution provider asked for, or an error.

Its own module, below both the runtime and the export: the runtime opens bundles with it, and
the export calibrates and measures graphs with it, without either importing the other.
"""

from __future__ import annotations

from cvexport.errors import CvexportError


# ONNX Runtime's intra-op pool does not spin. A spinning pool keeps its threads busy-waiting
# between the pieces of each operator and for a while after a run, on cores that another
# process (or our own decoder, or another backend) needs: when that process holds a core, the
# spinner and the work it waits for share the core. SSD fp32, batch 1, on a 2-core AMD EPYC
# (AVX-512 VNNI/BF16, no AMX), each setting timed on its own with a one-core busy loop stopped and
# resumed between blocks: spinning 10.5 ms idle / 19.6 ms with the loop (1.86x), not spinning
# 11.0 / 14.4 ms (1.31x). A spinning ORT run also slowed the OpenVINO run after it from 10.1 to
# 19.6 ms. Results are the same either way: this only decides how waiting threads wait.
SESSION_CONFIG = {"session.intra_op.allow_spinning": "0"}


def create_session(model_bytes: bytes, providers: list, threads: int | None = None, options=None):
    """An InferenceSession for serialized ONNX ``model_bytes``; plugin nodes are rewritten and
    their CPU kernels registered when the graph has any. ``options``: base SessionOptions
    (profiling, say); a fresh one when None. ``threads``: intra-op threads (None: ONNX
    Runtime's default, one per physical core). ``SESSION_CONFIG`` applies unless ``options``
    already sets a key of it."""
    import onnx
    import onnxruntime as ort

    from trt_plugins import ort as plugin_ort

    options = options if options is not None else ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    for key, value in SESSION_CONFIG.items():
        if not _has_config(options, key):
            options.add_session_config_entry(key, value)
    try:
        model = onnx.load_from_string(model_bytes)
        if plugin_ort.has_plugin_nodes(model):
            model_bytes = plugin_ort.rewrite_for_onnxruntime(model).SerializeToString()
            options = plugin_ort.session_options(options)
    except Exception as exc:  # protobuf DecodeError, or an invalid plugin node
        raise CvexportError(f"the ONNX model could not be parsed ({exc.__class__.__name__}); rebuild the bundle") from None
    available = set(ort.get_available_providers())
    missing = [p if isinstance(p, str) else p[0] for p in providers]
    missing = [p for p in missing if p not in available]
    if missing:
        raise CvexportError(
            f"ONNX Runtime here lacks {', '.join(missing)}; install onnxruntime-gpu (pip install 'cvexport[gpu]') "
            "or use --backend ort"
        )
    try:
        session = ort.InferenceSession(model_bytes, sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own exception types for invalid graphs
        raise CvexportError(f"ONNX Runtime could not load the model: {str(exc).splitlines()[0]}") from None
    check_provider(session, providers)
    return session


def check_provider(session, providers: list) -> None:
    """The session must run on the first provider asked for: ONNX Runtime only logs a warning
    when, say, the TensorRT provider fails to start (missing libnvinfer, CUDA mismatch) and
    silently runs everything on the next one."""
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    got = session.get_providers()
    if wanted not in got:
        raise CvexportError(
            f"ONNX Runtime could not start {wanted} (the session fell back to {', '.join(got) or 'nothing'}); "
            "check that its CUDA / TensorRT libraries are installed and on the library path, or use --backend ort"
        )


def _has_config(options, key: str) -> bool:
    try:  # ONNX Runtime raises for a key never set
        options.get_session_config_entry(key)
    except RuntimeError:
        return False
    return True
