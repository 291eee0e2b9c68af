"""Entry points: ``check_model`` and ``check_path`` run the ONNX checker, shape inference and every rule."""

from __future__ import annotations

import os
from collections import Counter

import onnx
from onnx import shape_inference

from cvexport.errors import first_line
from cvexport.backends.trt.compat.graph_index import IndexedGraph, _io_summary, _short_list, _walk_graphs, walk_nodes
from cvexport.backends.trt.compat.operators import _DEFAULT_DOMAINS
from cvexport.backends.trt.compat.report import CompatReport, Finding, ModelLoadError, _SEVERITY_ORDER
from cvexport.backends.trt.compat.rules import RULES, _all_tensors

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
    ``trt_plugins.PLUGINS``.
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
    g = IndexedGraph(model, plugins)
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
        raise ModelLoadError(f"cannot read ONNX model {path}: {first_line(exc)}") from None
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
    for node in walk_nodes(view.graph):
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
        from trt_plugins import PLUGINS
    except ImportError as exc:
        return {}, Finding(
            "plugin", "info", None, f"plugin registry unavailable ({first_line(exc)}); plugin "
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
            f"ONNX shape inference failed ({first_line(exc)}); type-based checks may miss issues",
        )
    try:
        return shape_inference.infer_shapes(model, strict_mode=False), problem
    except Exception:
        return model, problem
