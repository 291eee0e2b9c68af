"""What a bundle's manifest.json must hold, written in code, and its agreement with the graphs.

``load_bundle`` runs both stages, so a corrupt or inconsistent manifest is one
:class:`CvexportError` line at load instead of an IndexError in ``cvexport run`` or a bundle
that silently runs as something it is not:

- :func:`check_manifest`: required keys, types, value ranges and enums, and what the fields
  say about each other (input dtype and layout, the task's output contract, the INT8 CPU
  graphs only in INT8 bundles, the task of a registered model). Unknown extra keys are fine.
- :func:`check_graphs`: each graph the manifest records (``onnx`` and the optional INT8 CPU
  graphs ``onnx_cpu`` / ``onnx_cpu_avx2``) read once, structure only: its input (name, dtype,
  layout, channels, height, width, batch), its outputs (names, order, dtypes, shapes), its
  precision and NMS flavor; then the class count the graph implies against ``class_names``
  and the detections it keeps against ``postprocess.max_detections``. A graph file that is
  missing or does not parse is left to :meth:`Bundle.verify_file` and the runners, which say
  so where the graph is used; one that parses but disagrees with the manifest is reported as
  the sha256 mismatch it is when the manifest's sha256 does not match it either.

Every message names the bundle, the field, what was found and what was expected, and ends
with the way out: rebuild the bundle with ``cvexport build``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, NoReturn

from cvexport.errors import CvexportError
from cvexport.int8_graphs import INT8_CPU_GRAPHS
from cvexport.precisions import PRECISIONS

# The enums, as cvexport.build defines them (a test keeps them in step; importing build here
# would import torch on every load). What depends on the task (its outputs, classes, NMS
# flavors) the task says: cvexport.task_base.Task.output_contract and friends.
# input dtype -> the layout that dtype comes in (cvexport.build.input_contract, cvexport.preprocess)
INPUT_LAYOUTS = {"float32": "NCHW", "uint8": "NHWC"}
LAYOUTS = ("NCHW", "NHWC")
CHANNELS = ("RGB",)
OUTPUT_DTYPES = ("float32", "float16", "int32", "int64", "uint8", "int8", "bool")

EFFICIENT_NMS_OP = "EfficientNMS_TRT"
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MISSING = object()


def cpu_graph_keys() -> tuple[str, ...]:
    """Manifest keys of the optional INT8 CPU graphs (cvexport.int8_graphs.INT8_CPU_GRAPHS)."""
    return tuple(graph.key for graph in INT8_CPU_GRAPHS)


def rebuild_hint(manifest: Any) -> str:
    """What to do about a bad bundle: the build command, with the model and precision where the
    manifest still tells them."""
    manifest = manifest if isinstance(manifest, dict) else {}
    model = manifest.get("model")
    model = model if isinstance(model, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", model) else "MODEL"
    precision = manifest.get("precision")
    flag = f" --{precision}" if isinstance(precision, str) and precision in PRECISIONS else ""
    return f"rebuild the bundle with 'cvexport build {model}{flag}'"


def _show(value: Any) -> str:
    """A found value as one short line of JSON ("missing" when the key is absent)."""
    if value is _MISSING:
        return "missing"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _dims(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _count(names: list) -> str:
    return f"{len(names)} name" + ("" if len(names) == 1 else "s")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Checker:
    """Raises the one-line errors for one bundle."""

    def __init__(self, where: Path, manifest: dict[str, Any]):
        self.where = where
        self.manifest = manifest

    def hint(self) -> str:
        return rebuild_hint(self.manifest)

    def fail(self, field: str, found: str, expected: str) -> NoReturn:
        raise CvexportError(f"bundle {self.where}: manifest field '{field}' is {found}, expected {expected}; "
                            f"{self.hint()}")

    def bad(self, field: str, value: Any, expected: str) -> NoReturn:
        self.fail(field, _show(value), expected)

    # ----------------------------------------------------------------- typed reads
    def get(self, container: dict, key: str, field: str, expected: str, required: bool = True) -> Any:
        value = container.get(key, _MISSING)
        if value is _MISSING and required:
            self.bad(field, value, expected)
        return value

    def mapping(self, container: dict, key: str, field: str, what: str, required: bool = True):
        value = self.get(container, key, field, f"an object with {what}", required)
        if value is not _MISSING and not isinstance(value, dict):
            self.bad(field, value, f"an object with {what}")
        return value

    def string(self, container: dict, key: str, field: str, required: bool = True) -> Any:
        value = self.get(container, key, field, "a non-empty string", required)
        if value is not _MISSING and not (isinstance(value, str) and value.strip()):
            self.bad(field, value, "a non-empty string")
        return value

    def enum(self, container: dict, key: str, field: str, choices, required: bool = True) -> Any:
        expected = "one of " + ", ".join(json.dumps(c) for c in choices)
        value = self.get(container, key, field, expected, required)
        if value is not _MISSING and not (isinstance(value, str) and value in choices):
            self.bad(field, value, expected)
        return value

    def integer(self, container: dict, key: str, field: str, minimum: int, required: bool = True) -> Any:
        expected = f"an integer >= {minimum}"
        value = self.get(container, key, field, expected, required)
        if value is not _MISSING and not (_is_int(value) and value >= minimum):
            self.bad(field, value, expected)
        return value

    def number(self, container: dict, key: str, field: str, low: float, high: float, low_open: bool,
               high_open: bool) -> float:
        expected = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        value = self.get(container, key, field, expected)
        if not (_is_number(value) and math.isfinite(value)
                and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)):
            self.bad(field, value, expected)
        return value


# ------------------------------------------------------------------------- the schema
def check_manifest(manifest: dict[str, Any], where: Path) -> None:
    """The manifest on its own (format and top-level required keys are checked by the caller)."""
    from cvexport.tasks import get_task, task_names

    c = _Checker(where, manifest)
    c.string(manifest, "model", "model")
    task = get_task(c.enum(manifest, "task", "task", tuple(task_names())))
    _check_registered_task(c, manifest["model"], task.name)
    precision = c.enum(manifest, "precision", "precision", PRECISIONS)
    _check_file_entry(c, manifest, "onnx", opset=True)
    if "weights" in manifest:
        _check_file_entry(c, manifest, "weights")
    for graph in INT8_CPU_GRAPHS:
        if graph.key in manifest:
            _check_file_entry(c, manifest, graph.key, isa_class=graph.isa_class)
            if precision != "int8":
                c.fail(graph.key, f"present while field 'precision' is {_show(precision)}",
                       "INT8 CPU graphs only in an int8 bundle")
    _check_input(c, manifest, task)
    _check_class_names(c, manifest, task)
    if task.postprocess_nms_flavors is not None:
        _check_postprocess(c, manifest, task.postprocess_nms_flavors)
    _check_outputs(c, manifest, task)


def _check_registered_task(c: _Checker, model: str, task: str) -> None:
    """A model this cvexport knows is always built as its own task."""
    from cvexport.registry import get_spec, list_models

    if model in list_models() and get_spec(model).task != task:
        c.bad("task", task, f"{_show(get_spec(model).task)}, the task of model {_show(model)}")


def _check_file_entry(c: _Checker, manifest: dict, key: str, opset: bool = False, isa_class: str | None = None):
    entry = c.mapping(manifest, key, key, "file and sha256")
    file = c.string(entry, "file", f"{key}.file")
    if PurePosixPath(file).is_absolute() or PureWindowsPath(file).is_absolute() or ".." in re.split(r"[\\/]", file):
        c.bad(f"{key}.file", file, "a file name inside the bundle")
    sha = c.get(entry, "sha256", f"{key}.sha256", "64 lowercase hex digits")
    if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        c.bad(f"{key}.sha256", sha, "64 lowercase hex digits")
    if opset:
        c.integer(entry, "opset", f"{key}.opset", 1, required=False)
    if isa_class is not None:
        c.enum(entry, "isa_class", f"{key}.isa_class", (isa_class,), required=False)


def _check_input(c: _Checker, manifest: dict, task) -> None:
    contract = c.mapping(manifest, "input", "input", "name, dtype, layout, height, width, max_batch, mean and std")
    c.string(contract, "name", "input.name")
    dtype = c.enum(contract, "dtype", "input.dtype", tuple(INPUT_LAYOUTS))
    layout = c.enum(contract, "layout", "input.layout", LAYOUTS)
    if layout != INPUT_LAYOUTS[dtype]:
        c.bad("input.layout", layout, f"{_show(INPUT_LAYOUTS[dtype])} for input.dtype {_show(dtype)}")
    c.enum(contract, "channels", "input.channels", CHANNELS, required=False)
    c.integer(contract, "height", "input.height", 1)
    c.integer(contract, "width", "input.width", 1)
    c.integer(contract, "max_batch", "input.max_batch", 1)
    if "letterbox" in contract:  # build --frame-size: the graph letterboxes the camera's frames itself
        fit = c.mapping(contract, "letterbox", "input.letterbox", "network_width and network_height")
        c.integer(fit, "network_width", "input.letterbox.network_width", 1)
        c.integer(fit, "network_height", "input.letterbox.network_height", 1)
        if dtype != "uint8":
            c.bad("input.letterbox", fit, "absent: only a uint8 input letterboxes in the graph")
    _check_fit(c, contract, task)
    # (x / 255 - mean) / std per channel: a mean within the pixel range, a positive std
    for key, in_range, what in (("mean", lambda v: 0.0 <= v <= 1.0, "in [0, 1]"), ("std", lambda v: v > 0.0, "> 0")):
        expected = f"a list of 3 finite numbers {what} (one per RGB channel)"
        values = c.get(contract, key, f"input.{key}", expected)
        if not (isinstance(values, list) and len(values) == 3
                and all(_is_number(v) and math.isfinite(v) and in_range(v) for v in values)):
            c.bad(f"input.{key}", values, expected)


def _check_fit(c: _Checker, contract: dict, task) -> None:
    """How an image becomes the input: ``fit`` (absent in older bundles: the letterbox), with a
    ``crop_fraction`` exactly when it is resize_crop, and one the bundle can apply."""
    from cvexport.images import FITS, InputFit

    fit = c.enum(contract, "fit", "input.fit", FITS, required=False)
    if fit == "resize_crop":
        c.number(contract, "crop_fraction", "input.crop_fraction", 0.0, 1.0, low_open=True, high_open=False)
        reason = InputFit("resize_crop", contract["crop_fraction"]).refusal(task, in_graph="letterbox" in contract)
        if reason is not None:
            c.fail("input.fit", '"resize_crop"', f"another fit ({reason})")
    elif "crop_fraction" in contract:
        c.bad("input.crop_fraction", contract["crop_fraction"], 'absent: only fit "resize_crop" crops')


def _check_class_names(c: _Checker, manifest: dict, task) -> None:
    needed = task.has_classes
    expected = "a list of distinct non-empty strings" + (", one per class" if needed else "")
    names = c.get(manifest, "class_names", "class_names", expected, required=needed)
    if names is _MISSING:
        return
    if not isinstance(names, list) or (needed and not names):
        c.bad("class_names", names, expected)
    seen = set()
    for index, name in enumerate(names):
        if not (isinstance(name, str) and name.strip()):
            c.fail("class_names", f"{_show(names)} with {_show(name)} at index {index}", expected)
        if name in seen:
            c.fail("class_names", f"{_show(names)} with {_show(name)} twice", expected)
        seen.add(name)


def _check_postprocess(c: _Checker, manifest: dict, nms_flavors: tuple[str, ...]) -> None:
    post = c.mapping(manifest, "postprocess", "postprocess", "score_threshold, iou_threshold and max_detections")
    c.number(post, "score_threshold", "postprocess.score_threshold", 0.0, 1.0, low_open=False, high_open=True)
    c.number(post, "iou_threshold", "postprocess.iou_threshold", 0.0, 1.0, low_open=True, high_open=False)
    c.integer(post, "max_detections", "postprocess.max_detections", 1)
    c.enum(post, "nms", "postprocess.nms", nms_flavors, required=False)
    head = c.mapping(post, "head", "postprocess.head", "the detector's head (scoring, coder, candidates, ...)",
                     required=False)
    if isinstance(head, dict):
        from cvexport.detection_heads import DetectionHead

        try:
            DetectionHead.from_record(head)
        except (TypeError, ValueError) as exc:
            c.bad("postprocess.head", head, f"a detector head record ({exc})")


def _output_field(name: str, key: str) -> str:
    return f"outputs[{name}].{key}"


def _check_outputs(c: _Checker, manifest: dict, task) -> None:
    expected_list = "a list of {name, dtype, shape} objects, one per graph output"
    outputs = c.get(manifest, "outputs", "outputs", expected_list)
    if not isinstance(outputs, list) or not outputs:
        c.bad("outputs", outputs, expected_list)
    names = []
    for index, output in enumerate(outputs):
        if not isinstance(output, dict):
            c.bad(f"outputs[{index}]", output, "an object with name, dtype and shape")
        name = c.string(output, "name", f"outputs[{index}].name")
        c.enum(output, "dtype", _output_field(name, "dtype"), OUTPUT_DTYPES)
        shape = c.get(output, "shape", _output_field(name, "shape"), "a list of dimensions")
        if not (isinstance(shape, list) and shape
                and all((_is_int(d) and d >= 0) or isinstance(d, str) for d in shape)):
            c.bad(_output_field(name, "shape"), shape, "a list of dimensions (integers, or names for dynamic ones)")
        names.append(name)
    if len(set(names)) != len(names):
        c.bad("outputs", names, "each output name once")
    by_name = {o["name"]: o for o in outputs}
    contract = task.output_contract()
    required = [rule.name for rule in contract if rule.required]
    absent = [name for name in required if name not in by_name]
    if absent:
        c.fail("outputs", f"{_show(names)}, without {', '.join(absent)}",
               f"the outputs of a {task.name} bundle: {', '.join(required)}")
    for rule in contract:
        if rule.name not in by_name:
            continue
        output = by_name[rule.name]
        if output["dtype"] != rule.dtype:
            c.bad(_output_field(rule.name, "dtype"), output["dtype"], f"{_show(rule.dtype)} for a {task.name} bundle")
        shape = output["shape"]
        literal_ok = all(not (_is_int(want) and _is_int(got) and got != want) for want, got in zip(rule.dims, shape))
        if len(shape) != len(rule.dims) or not literal_ok:
            c.bad(_output_field(rule.name, "shape"), shape,
                  f"{_dims(rule.dims)} for a {task.name} bundle (B batch, K max detections, C classes, H x W input)")


# ------------------------------------------------------------------------- the graphs
def check_graphs(manifest: dict[str, Any], where: Path) -> None:
    """Each graph the (schema-checked) manifest records, against the manifest."""
    from cvexport.digest import sha256_file

    c = _Checker(where, manifest)
    for key in ("onnx", *(g.key for g in INT8_CPU_GRAPHS if g.key in manifest)):
        path = where / manifest[key]["file"]
        model = _read_graph(path)
        if model is None:
            continue  # missing or unreadable: Bundle.verify_file and the runners say so where it is used
        try:
            _check_graph(c, manifest, key, model)
            continue
        except CvexportError as exc:
            error = exc
        # A graph that disagrees with its manifest and with its sha256 was damaged or replaced.
        found = sha256_file(path)
        if found != manifest[key]["sha256"]:
            c.fail(f"{key}.sha256", _show(manifest[key]["sha256"]),
                   f"{_show(found)}, the sha256 of {manifest[key]['file']} (the file is corrupt or was replaced)")
        raise error


def _read_graph(path: Path):
    """The ModelProto of ``path`` (weights are embedded and come along), or None."""
    import onnx

    if not path.is_file():
        return None
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf DecodeError and friends: not a graph
        return None


def _dims_of(value_info) -> list:
    """[int or name, ...] of a graph input/output; None when it records no shape."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]


def _dtype_of(value_info) -> str:
    import onnx

    elem = value_info.type.tensor_type.elem_type
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem).name
    except Exception:
        return onnx.TensorProto.DataType.Name(elem).lower() if elem in onnx.TensorProto.DataType.values() else str(elem)


def _graph_precision(graph) -> str:
    """int8 with QDQ nodes, fp16 with float16 weights or casts, fp32 otherwise."""
    from onnx import TensorProto

    if any(node.op_type in QDQ_OPS for node in graph.node):
        return "int8"
    if any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer):
        return "fp16"
    for node in graph.node:
        for attr in node.attribute:
            if (node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT16) or \
                    (node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT16):
                return "fp16"
    return "fp32"


def _check_graph(c: _Checker, manifest: dict, key: str, model) -> None:
    from cvexport.tasks import get_task

    graph = model.graph
    file = manifest[key]["file"]
    contract = manifest["input"]

    def mismatch(field: str, found: Any, actual: Any, detail: str) -> NoReturn:
        if key == "onnx":
            c.fail(field, _show(found), f"{_show(actual)} as in {file} ({detail})")
        raise CvexportError(
            f"bundle {c.where}: {file} (manifest field '{key}') has {_show(actual)} ({detail}), expected "
            f"{_show(found)} as manifest field '{field}' and {manifest['onnx']['file']} say; {c.hint()}")

    if key == "onnx" and "opset" in manifest["onnx"]:
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        if opset is not None and opset != manifest["onnx"]["opset"]:
            mismatch("onnx.opset", manifest["onnx"]["opset"], opset, "its default-domain opset")

    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        mismatch("input.name", contract["name"], [i.name for i in inputs], f"the graph takes {len(inputs)} inputs")
    graph_input = inputs[0]
    shape = _dims_of(graph_input)
    described = f"its input {_show(graph_input.name)} is {_dims(shape or [])} {_dtype_of(graph_input)}"
    if graph_input.name != contract["name"]:
        mismatch("input.name", contract["name"], graph_input.name, described)
    if _dtype_of(graph_input) != contract["dtype"]:
        mismatch("input.dtype", contract["dtype"], _dtype_of(graph_input), described)
    if shape is not None:
        if len(shape) != 4:
            mismatch("input.layout", contract["layout"], f"{len(shape)} dimensions", described)
        nchw = shape[1] == 3 and shape[3] != 3
        nhwc = shape[3] == 3 and shape[1] != 3
        if (contract["layout"] == "NCHW" and nhwc) or (contract["layout"] == "NHWC" and nchw):
            mismatch("input.layout", contract["layout"], "NHWC" if nhwc else "NCHW", described)
        channels, height, width = (shape[1], shape[2], shape[3]) if contract["layout"] == "NCHW" else \
            (shape[3], shape[1], shape[2])
        if _is_int(channels) and channels != 3:
            mismatch("input.channels", contract.get("channels", "RGB"), f"{channels} channels", described)
        for field, value in (("height", height), ("width", width)):
            if _is_int(value) and value != contract[field]:
                mismatch(f"input.{field}", contract[field], value, described)
        if _is_int(shape[0]) and shape[0] > 0 and contract["max_batch"] > shape[0]:
            mismatch("input.max_batch", contract["max_batch"], f"a fixed batch of {shape[0]}", described)

    outputs = manifest["outputs"]
    names = [o.name for o in graph.output]
    if names != [o["name"] for o in outputs]:
        mismatch("outputs", [o["name"] for o in outputs], names, "its outputs, in order")
    for output, graph_output in zip(outputs, graph.output):
        dims = _dims_of(graph_output)
        described = f"its output {_show(graph_output.name)} is {_dims(dims or [])} {_dtype_of(graph_output)}"
        if _dtype_of(graph_output) != output["dtype"]:
            mismatch(_output_field(output["name"], "dtype"), output["dtype"], _dtype_of(graph_output), described)
        if dims is not None and (len(dims) != len(output["shape"]) or any(
                (_is_int(a) or _is_int(b)) and a != b for a, b in zip(dims, output["shape"]))):
            mismatch(_output_field(output["name"], "shape"), output["shape"], dims, described)

    precision = _graph_precision(graph)
    wanted = "int8" if key != "onnx" else manifest["precision"]
    if precision != wanted:
        mismatch("precision", wanted, precision, "by its nodes and weights")

    if get_task(manifest["task"]).postprocess_nms_flavors is not None:
        efficient = any(node.op_type == EFFICIENT_NMS_OP for node in graph.node)
        nms = manifest["postprocess"].get("nms")
        if nms is not None and (nms == "efficient") != efficient:
            mismatch("postprocess.nms", nms, "efficient" if efficient else "onnx",
                     f"{'an' if efficient else 'no'} {EFFICIENT_NMS_OP} node")
    if key == "onnx":
        _check_symbols(c, manifest, model)


def _check_symbols(c: _Checker, manifest: dict, model) -> None:
    """The class count and detections per image the graph implies, against the manifest (the
    outputs already agree with the graph; the input size is checked against it above)."""
    from cvexport.tasks import get_task

    task = get_task(manifest["task"])
    by_name = {o["name"]: o for o in manifest["outputs"]}
    contract = manifest["input"]
    names = manifest.get("class_names", [])
    for rule in task.output_contract():
        name = rule.name
        if name not in by_name:
            continue
        shape = by_name[name]["shape"]
        for want, got in zip(rule.dims, shape):
            if not _is_int(got):
                continue
            if want == "C" and got != len(names):
                c.fail("class_names", f"{_show(names)} ({_count(names)})",
                       f"{got}, one per class of output {_show(name)} {_dims(shape)}")
            if want == "K" and got != manifest["postprocess"]["max_detections"]:
                c.bad("postprocess.max_detections", manifest["postprocess"]["max_detections"],
                      f"{got}, the rows of output {_show(name)} {_dims(shape)}")
            if want in ("H", "W"):
                field = "height" if want == "H" else "width"
                # The network's size: the input's, unless the graph letterboxes frames to it.
                where, value = ((f"input.letterbox.network_{field}", contract["letterbox"][f"network_{field}"])
                                if "letterbox" in contract else (f"input.{field}", contract[field]))
                if got != value:
                    c.bad(where, value, f"{got}, the {field} of output {_show(name)} {_dims(shape)}")
    if task.class_scores_tensor is not None:
        classes = _scored_classes(model, task.class_scores_tensor)
        if classes is not None and classes != len(names):
            c.fail("class_names", f"{_show(names)} ({_count(names)})",
                   f"{classes}, the classes the graph scores "
                   f"({_show(task.class_scores_tensor)} is [batch, anchors, {classes}])")


def _scored_classes(model, tensor: str) -> int | None:
    """C of the graph's class probabilities ``tensor`` [B, anchors, C] (before NMS keeps the
    best), by shape inference; None when the graph does not tell."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return None
    for info in (*inferred.graph.value_info, *inferred.graph.output):
        if info.name == tensor:
            dims = _dims_of(info)
            return dims[-1] if dims and _is_int(dims[-1]) and dims[-1] > 0 else None
    return None
