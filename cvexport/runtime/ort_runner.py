"""ONNX Runtime backend (CPU here; CUDA / TensorRT execution providers where installed).

Graphs with TensorRT plugin nodes run through the CPU reference kernels in
``cvexport.trt_plugins``, so the very graph TensorRT consumes also runs here.
"""

from __future__ import annotations

import numpy as np

from cvexport.bundle import Bundle
from cvexport.cpu import isa_class
from cvexport.errors import CvexportError
from cvexport.export.precision import cpu_graph_for
from cvexport.runtime.base import Runner

PROVIDERS = {
    "ort": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def create_session(model_bytes: bytes, providers: list, threads: int | None = None, options=None):
    """An InferenceSession for serialized ONNX ``model_bytes``; plugin nodes are rewritten and
    their CPU kernels registered when the graph has any. ``options``: base SessionOptions
    (profiling, say); a fresh one when None."""
    import onnx
    import onnxruntime as ort

    from cvexport.trt_plugins import ort as plugin_ort

    options = options if options is not None else ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
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


def provider_settings(bundle: Bundle, providers: list[str]) -> list:
    """Providers with their options: the TensorRT execution provider keeps its engine and timing
    caches inside the bundle (so a second start does not rebuild) and gets the bundle's precision
    (onnxruntime TensorRT EP options ``trt_*``); the others take their defaults."""
    import onnxruntime as ort

    settings: list = []
    for name in providers:
        if name != "TensorrtExecutionProvider" or name not in ort.get_available_providers():
            settings.append(name)  # a missing provider is reported by create_session, not here
            continue
        cache = bundle.path / "engines" / "ort-trt"
        cache.mkdir(parents=True, exist_ok=True)
        settings.append((name, {
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
            "trt_fp16_enable": bundle.precision == "fp16", "trt_int8_enable": bundle.precision == "int8",
        }))
    return settings


class OrtRunner(Runner):
    name = "ort"

    def __init__(self, bundle: Bundle, providers: list[str] | None = None, threads: int | None = None,
                 graph: str | None = None):
        super().__init__(bundle)
        providers = providers or PROVIDERS["ort"]
        if graph is None:
            # On the CPU provider an INT8 bundle's CPU graph for this CPU's instruction set is
            # the fast and accurate one (chosen when the session is made, so a bundle moves
            # between machines); GPUs take the TensorRT-ready graph.
            graph = cpu_graph_for(bundle.manifest, isa_class()) if providers == PROVIDERS["ort"] else "onnx"
        self.graph = graph
        path = bundle.verify_file(graph)
        self.session = create_session(path.read_bytes(), provider_settings(bundle, providers), threads)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _infer(self, array: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {self.input_name: array})
        return dict(zip(self.output_names, values))

    def close(self) -> None:
        self.session = None
