"""INT8 post-training quantization of an exported network core with ONNX Runtime's quantizer.

``quantize_core`` takes the float core (the graph ``export_module`` returns, before any
decode/NMS section is appended) and calibration batches in the core's input contract, and
returns a quantized ``onnx.ModelProto`` in one of these forms:

- ``"qdq-trt"``: QuantizeLinear/DequantizeLinear pairs laid out for TensorRT's explicit
  quantization. Symmetric INT8 everywhere (zero points 0, never UINT8), per-channel weights,
  biases left in float, Q/DQ only on the inputs of weighted ops (Conv, ConvTranspose, Gemm,
  MatMul) and never on their outputs; TensorRT propagates a Q backwards over ReLU/MaxPool and
  fuses it into the producing convolution, so no other op needs Q/DQ. Passes
  ``cvexport.backends.trt.compat.check_model``. ONNX Runtime CPU runs it too, but about 1.5x slower
  than the float core: with no Q after a Conv, ORT cannot fuse it into QLinearConv and runs
  DequantizeLinear + float Conv.
- ``"qdq-cpu"``: QDQ with UINT8 activations (asymmetric), INT8 per-channel weights and INT32
  biases: the "U8S8" form ONNX Runtime's CPU provider fuses into QLinearConv. Not for TensorRT.
- ``"qoperator"``: the same numbers as explicit QLinearConv / QLinearMatMul operators; after
  ORT's graph optimizations both CPU forms are the same graph of QLinearConv kernels.
  Not for TensorRT either (the parser has no QLinear* ops).

``sensitive_nodes`` names the detection heads (the last weighted layers before the outputs),
so they can be passed as ``exclude`` to keep them in float. ``calibration_batches`` draws
calibration images from a model's own training split, prepared exactly as the runtime does.
``postprocess_scores`` turns a core's outputs into the detection contract, to measure what
quantization does to detections.
"""

from __future__ import annotations

import tempfile
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import onnx

from cvexport.errors import CvexportError

METHODS = ("minmax", "entropy", "percentile")
FORMS = ("qdq-trt", "qdq-cpu", "qdq-cpu-7bit", "qoperator")
# Calibration used when none is named. Measured on the SSD (mAP@0.5 equal within 0.003 for
# every method): for qdq-trt, entropy has the smallest score errors (worst |d score| 0.3 vs
# 0.5 for minmax); for the CPU forms, which also quantize the head outputs (logits), entropy
# clips the rare confident logits and costs 0.15 mAP@0.5, so minmax.
DEFAULT_METHOD = {"qdq-trt": "entropy", "qdq-cpu": "minmax", "qdq-cpu-7bit": "minmax", "qoperator": "minmax"}

# Fewer images than this give activation ranges that depend on the particular images drawn.
MIN_CALIBRATION_IMAGES = 64
# Calibration keeps every calibrated activation of a chunk of batches in memory; at most this
# many batches are collected before they are reduced to ranges / histograms.
CALIBRATION_CHUNK_BATCHES = 4
# Histogram size for the percentile and entropy calibrations (TensorRT's calibrators use 2048).
HISTOGRAM_BINS = 2048

# Ops whose inputs and weights get Q/DQ: the ones TensorRT runs as INT8 kernels. TensorRT's
# placement advice is to quantize every input of weighted ops and, by default, not their
# outputs; a Q in front of a Conv is moved back across ReLU / MaxPool and fused into the
# previous Conv, so those need no Q/DQ of their own.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# For ONNX Runtime CPU, ops with QLinear* / 8-bit kernels that keep a conv chain in UINT8.
# The float tail of a detector (Transpose, Reshape, Concat, Softmax) stays float: Softmax
# and a Concat of differently-scaled heads would lose precision in 8 bits.
CPU_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Relu", "Clip", "MaxPool", "AveragePool",
           "GlobalAveragePool", "Add", "Mul")


class QuantizeError(CvexportError, ValueError):
    """Bad arguments to quantization (unknown method or form, no calibration data, ...)."""


class CalibrationWarning(UserWarning):
    """The calibration set is too small for trustworthy activation ranges."""


# --------------------------------------------------------------------------------------
# Calibration data
# --------------------------------------------------------------------------------------
def calibration_batches(sample_images: Callable[..., list[np.ndarray]], spec, count: int, batch_size: int = 16, *,
                        seed: int = 0) -> Iterator[np.ndarray]:
    """``count`` images of ``spec``'s own training split as float32 NCHW batches, drawn with
    ``sample_images(spec, "train", indices, seed=seed)`` (the task's, which hands them over).

    Each image goes through the runtime's preprocessing (the spec's fit to the input size,
    :class:`cvexport.images.InputFit`, then ``to_network_input`` with the bundle's float
    contract: /255, minus ``spec.mean``, over ``spec.std``), so the calibrated ranges are those
    the deployed network sees.
    """
    from cvexport.images import InputFit
    from cvexport.preprocess import to_network_input

    if count < 1 or batch_size < 1:
        raise QuantizeError(f"calibration needs count >= 1 and batch_size >= 1 (got {count}, {batch_size})")
    height, width = spec.input_size
    contract = {"dtype": "float32", "mean": spec.mean, "std": spec.std}
    how = InputFit.of(spec)
    for start in range(0, count, batch_size):
        images = sample_images(spec, "train", range(start, min(count, start + batch_size)), seed=seed)
        yield to_network_input([how.apply(image, width, height)[0] for image in images], contract)


class _BatchReader:
    """ONNX Runtime ``CalibrationDataReader`` over a list of batches (``set_range`` included)."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self.input_name = input_name
        self.batches = batches
        self.set_range(0, len(batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        batch = self.batches[self._next]
        self._next += 1
        return {self.input_name: batch}

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self.batches))

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def _collect_batches(core: onnx.ModelProto, calibration: Iterable[np.ndarray]) -> list[np.ndarray]:
    expected = _static_input_shape(core)
    batches = []
    for index, batch in enumerate(calibration):
        array = np.asarray(batch)
        if array.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected[1:], array.shape[1:])):
            raise QuantizeError(
                f"calibration batch {index} has shape {tuple(array.shape)}; the core takes "
                f"{['N' if d is None else d for d in expected]} float32"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise QuantizeError(
                f"calibration batch {index} is {array.dtype}; pass float32 batches in the core's input "
                "contract (see calibration_batches)"
            )
        if array.shape[0]:
            batches.append(np.ascontiguousarray(array, dtype=np.float32))
    if not batches:
        raise QuantizeError("no calibration images were given")
    return batches


def _static_input_shape(core: onnx.ModelProto) -> list[int | None]:
    if len(core.graph.input) != 1:
        raise QuantizeError(f"expected a core with one input, found {len(core.graph.input)}")
    dims = core.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


# --------------------------------------------------------------------------------------
# Graph helpers
# --------------------------------------------------------------------------------------
def sensitive_nodes(core: onnx.ModelProto, weighted_ops: Sequence[str] = WEIGHTED_OPS) -> list[str]:
    """Names of the weighted nodes (Conv, Gemm, MatMul...) whose outputs reach a graph output
    without passing through another weighted node: a detector's class and box heads.

    Found from the graph structure alone, in graph order, so it works for any exported core.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in core.graph.node:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in core.graph.output}
    found = []
    for node in core.graph.node:
        if node.op_type not in weighted_ops:
            continue
        seen: set[str] = set()
        queue = deque(node.output)
        reaches = False
        while queue and not reaches:
            tensor = queue.popleft()
            if tensor in seen:
                continue
            seen.add(tensor)
            if tensor in outputs:
                reaches = True
                break
            for consumer in consumers.get(tensor, []):
                if consumer.op_type not in weighted_ops:
                    queue.extend(consumer.output)
        if reaches:
            found.append(node.name)
    return found


def u8_sensitive_nodes(core: onnx.ModelProto) -> list[str]:
    """Names of the nodes where the U8S8 CPU forms' extra 8-bit steps cost most, in graph
    order: the heads (:func:`sensitive_nodes`; in these forms their outputs, the logits, are
    8-bit too) and every Mul (a product of two activations, each rounded before it and the
    product rounded again: MobileNetV3's squeeze-and-excitation gates)."""
    heads = set(sensitive_nodes(core))
    constants = {t.name for t in core.graph.initializer}
    constants |= {out for node in core.graph.node if node.op_type == "Constant" for out in node.output}

    def product_of_activations(node: onnx.NodeProto) -> bool:
        return node.op_type == "Mul" and not any(name in constants for name in node.input)

    return [node.name for node in core.graph.node if node.name in heads or product_of_activations(node)]


def _restore_float_inputs(model: onnx.ModelProto, original: onnx.ModelProto, names: Iterable[str]) -> None:
    """Feed excluded nodes their original float activations again.

    ONNX Runtime's QDQ quantizer rewires *every* consumer of a quantized tensor to the
    DequantizeLinear output when only one consumer is quantized, so a head excluded from
    quantization would still see INT8-rounded inputs. Put the original tensor back where it
    still exists (it may not: the asymmetric forms fold a ReLU into the Q range and drop it),
    then remove Q/DQ nodes left without consumers.
    """
    names = set(names)
    before = {n.name: list(n.input) for n in original.graph.node if n.name in names}

    def sources(m: onnx.ModelProto) -> dict[str, str]:
        # tensor -> what produces it: a node's name, or "graph input" / "initializer"
        found = {i.name: "graph input" for i in m.graph.input}
        found.update({t.name: "initializer" for t in m.graph.initializer})
        found.update({out: f"node {n.name}" for n in m.graph.node for out in n.output})
        return found

    was_from, now_from = sources(original), sources(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.name not in before:
            continue
        for i, (now, was) in enumerate(zip(node.input, before[node.name])):
            dq = producers.get(now)
            # Only when the original tensor is still made by the same producer: ORT's asymmetric
            # forms drop a ReLU and hand its output name to the Conv before it.
            if now != was and dq is not None and dq.op_type == "DequantizeLinear" \
                    and now_from.get(was) == was_from.get(was):
                node.input[i] = was
    _drop_dead_qdq(model)


def _prune_opset_imports(model: onnx.ModelProto) -> None:
    """Drop the opset imports of domains no node uses (ORT's optimizer declares every domain
    it knows, e.g. com.microsoft.nchwc and org.pytorch.aten)."""
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    used |= {f.domain for f in model.functions}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)


def _drop_dead_qdq(model: onnx.ModelProto) -> None:
    graph = model.graph
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)


# --------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------
def _form_settings(form: str, per_channel: bool) -> dict[str, Any]:
    from onnxruntime.quantization import QuantFormat, QuantType

    if form == "qdq-trt":
        return {
            "quant_format": QuantFormat.QDQ,
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "op_types_to_quantize": list(WEIGHTED_OPS),
            "per_channel": per_channel,
            "extra_options": {
                "ActivationSymmetric": True,  # zero point 0 on every activation
                "WeightSymmetric": True,  # zero point 0 on every weight (also the default)
                "QuantizeBias": False,  # float bias: TensorRT cannot import an INT32 bias DQ
                "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),  # inputs only
                "DedicatedQDQPair": True,  # one Q/DQ pair per consumer, as ORT advises for TensorRT
            },
            "symmetric_ranges": True,  # calibrate symmetric ranges (percentile of |x|)
        }
    if form in ("qdq-cpu", "qdq-cpu-7bit", "qoperator"):
        return {
            "quant_format": QuantFormat.QOperator if form == "qoperator" else QuantFormat.QDQ,
            "activation_type": QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "op_types_to_quantize": list(CPU_OPS),
            "per_channel": per_channel,
            # 7-bit weights (-64..64): without VNNI, x86 kernels sum pairs of u8 x s8 products in
            # 16 bits with saturation; 2 * 255 * 64 still fits, 2 * 255 * 127 does not.
            "reduce_range": form == "qdq-cpu-7bit",
            "extra_options": {
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
            },
            "symmetric_ranges": False,
        }
    raise QuantizeError(f"unknown quantization form '{form}'; choose one of: {', '.join(FORMS)}")


def _calibration_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in table:
        raise QuantizeError(f"unknown calibration method '{method}'; choose one of: {', '.join(METHODS)}")
    return table[method]


def quantize_core(
    core: onnx.ModelProto,
    calibration: Iterable[np.ndarray],
    *,
    method: str | None = None,
    exclude: Sequence[str] = (),
    form: str = "qdq-trt",
    per_channel: bool = True,
    percentile: float = 99.999,
    min_images: int = MIN_CALIBRATION_IMAGES,
) -> onnx.ModelProto:
    """Static INT8 quantization of a float network core (see the module docstring for ``form``).

    Args:
        core: the float32 core, one input (float32 NCHW, dynamic batch allowed).
        calibration: float32 NCHW batches in the core's input contract (``calibration_batches``).
            Fewer than ``min_images`` images in total raise a :class:`CalibrationWarning`.
        method: activation-range calibration: "minmax", "entropy" (TensorRT's KL-divergence
            calibration, see ``entropy_amax``) or "percentile" (``percentile`` of |x|; of x,
            both tails, for the asymmetric CPU forms). None: ``DEFAULT_METHOD[form]``.
        exclude: node names kept in float: float weights, float output and, where the tensor
            still exists after quantization, the original float input (the asymmetric CPU forms
            fold a ReLU into the previous Q range, and then the node reads that 8-bit tensor).
            ``sensitive_nodes(core)`` gives a detector's heads.
        per_channel: per-output-channel weight scales (what TensorRT uses for conv weights).
    Returns:
        The quantized model, weights embedded. ``core`` is not modified.
    Raises:
        QuantizeError (a CvexportError and ValueError) for an unknown method, form or node
        name in ``exclude``, or no usable calibration data.
    """
    from onnxruntime.quantization import quant_pre_process, quantize_static

    settings = _form_settings(form, per_channel)
    method = DEFAULT_METHOD[form] if method is None else method
    calibrate_method = _calibration_method(method)
    node_names = {n.name for n in core.graph.node}
    unknown = [name for name in exclude if name not in node_names]
    if unknown:
        raise QuantizeError(f"exclude names node(s) not in the graph: {', '.join(unknown)}")
    batches = _collect_batches(core, calibration)
    images = sum(b.shape[0] for b in batches)
    if images < min_images:
        warnings.warn(
            f"calibrating INT8 ranges on only {images} image(s); use at least {min_images} "
            "representative images or the ranges will fit these few images rather than the data",
            CalibrationWarning,
            stacklevel=2,
        )
    extra = dict(settings.pop("extra_options"))
    symmetric = settings.pop("symmetric_ranges")

    with tempfile.TemporaryDirectory(prefix="cvexport-quant-") as tmp:
        tmp_dir = Path(tmp)
        source, prepared, output = tmp_dir / "core.onnx", tmp_dir / "prepared.onnx", tmp_dir / "int8.onnx"
        onnx.save(core, source)
        with _quiet_ort():
            # ONNX shape inference plus ORT's basic (semantics-preserving) graph optimizations;
            # node names survive, so ``exclude`` still applies. Symbolic shape inference is
            # skipped: it is meant for transformer graphs and fails on this exporter's value_info.
            quant_pre_process(source, prepared, skip_symbolic_shape=True)
            cache = _calibrate(prepared, tmp_dir, core.graph.input[0].name, batches, method,
                               settings["op_types_to_quantize"], symmetric, percentile)
            quantize_static(
                prepared,
                output,
                None,  # ranges come from the cache written by _calibrate
                calibrate_method=calibrate_method,
                calibration_cache_path=cache,
                nodes_to_exclude=list(exclude),
                extra_options=extra,
                **settings,
            )
        model = onnx.load(output)
    if exclude and form != "qoperator":
        _restore_float_inputs(model, core, exclude)
    _prune_opset_imports(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def _calibrate(prepared: Path, tmp_dir: Path, input_name: str, batches: list[np.ndarray], method: str,
               op_types: Sequence[str], symmetric: bool, percentile: float) -> Path:
    """Activation ranges, collected chunk by chunk, written as an ORT calibration cache that
    ``quantize_static`` then reads (its documented ``calibration_cache_path``).

    MinMax and Percentile are ONNX Runtime's calibrators. Entropy is not: through
    ``quantize_static`` ORT's Entropy calibrator runs with 128 bins and 128 quantized bins,
    which leaves one candidate threshold (the full range, i.e. MinMax), and with more bins its
    KL search (value histogram, integer-truncated candidate distribution) clips activations
    far too hard on this detector. Entropy here is TensorRT's: KL divergence on a 2048-bin
    histogram of |x| against its 128-level quantization (see ``entropy_amax``), the histograms
    being collected by ORT's (symmetric) percentile collector.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, create_calibrator, save_tensors_data

    if method == "minmax":
        cal_method, options = CalibrationMethod.MinMax, {"symmetric": symmetric}
    elif method == "percentile":
        cal_method = CalibrationMethod.Percentile
        options = {"symmetric": symmetric, "num_bins": HISTOGRAM_BINS, "percentile": float(percentile)}
    else:
        cal_method = CalibrationMethod.Percentile  # only its |x| histograms are used
        options = {"symmetric": True, "num_bins": HISTOGRAM_BINS, "percentile": 100.0}
    calibrator = create_calibrator(
        prepared, list(op_types), augmented_model_path=str(tmp_dir / "augmented.onnx"),
        calibrate_method=cal_method, extra_options=options,
    )
    # Calibrators keep every calibrated activation of a chunk in memory before reducing it
    # to ranges or histograms; chunks bound that.
    for start in range(0, len(batches), CALIBRATION_CHUNK_BATCHES):
        calibrator.collect_data(_BatchReader(input_name, batches[start : start + CALIBRATION_CHUNK_BATCHES]))
    if method == "entropy":
        ranges = {}
        for name, (hist, edges, lowest, highest) in calibrator.collector.histogram_dict.items():
            amax = entropy_amax(hist, edges)
            ranges[name] = TensorData(lowest=np.array(max(float(lowest), -amax), np.float32),
                                      highest=np.array(min(float(highest), amax), np.float32))
        data = TensorsData(CalibrationMethod.Entropy, ranges)
    else:
        data = calibrator.compute_data()
    cache = tmp_dir / "calibration.json"
    save_tensors_data(data, cache)
    return cache


def entropy_amax(hist: np.ndarray, edges: np.ndarray, levels: int = 128) -> float:
    """TensorRT's entropy calibration of one tensor: the clipping threshold ``amax`` whose
    ``levels``-level quantization of the |x| histogram ``hist`` (bin ``edges``) has the least
    KL divergence from the histogram with everything above ``amax`` folded into the last bin.

    Candidates are every bin edge from ``levels`` bins up; ties go to the larger threshold.
    (The algorithm of "8-bit Inference with TensorRT", GTC 2017, as in pytorch-quantization.)
    """
    hist = np.asarray(hist, dtype=np.float64).copy()
    # The first bin holds the exact zeros a ReLU emits (often half of all values): left in, that
    # spike, smeared over a level, dominates the divergence and drives the threshold far too low.
    # Zeros are exact at any scale, so they carry no information about amax (pytorch-quantization's
    # ``skip_zeros``).
    hist[0] = 0
    if hist.size <= levels or hist.sum() == 0:
        return float(edges[-1])
    best, best_i = np.inf, hist.size
    for i in range(levels, hist.size + 1):
        reference = hist[:i].copy()
        reference[-1] += hist[i:].sum()
        nonzero = hist[:i] > 0
        # merge the i bins into `levels` levels, then spread each level evenly over its non-empty bins
        level = (np.arange(i) * levels) // i
        mass = np.bincount(level[nonzero], weights=hist[:i][nonzero], minlength=levels)
        count = np.bincount(level[nonzero], minlength=levels)
        candidate = np.where(nonzero, mass[level] / np.maximum(count[level], 1), 0.0)
        p = reference / reference.sum()
        q = candidate / candidate.sum()
        support = p > 0
        if np.any(q[support] == 0):
            continue  # infinite divergence
        divergence = float(np.sum(p[support] * np.log(p[support] / q[support])))
        if divergence <= best:
            best, best_i = divergence, i
    return float(edges[best_i])


class _quiet_ort:
    """ORT's quantizer logs through the root logger (pre-processing hints, per-op notes) and
    its histogram calibrators print progress to stdout."""

    def __enter__(self):
        import contextlib
        import io
        import logging

        self._root = logging.getLogger()
        self._level = self._root.level
        self._root.setLevel(max(self._level, logging.ERROR))
        self._stdout = contextlib.redirect_stdout(io.StringIO())
        self._stdout.__enter__()
        return self

    def __exit__(self, *exc):
        self._stdout.__exit__(*exc)
        self._root.setLevel(self._level)
        return False


# --------------------------------------------------------------------------------------
# Measuring the effect: detections from (scores, box_offsets)
# --------------------------------------------------------------------------------------
def postprocess_scores(scores, box_offsets, anchors, config) -> dict[str, np.ndarray]:
    """The detection contract (numpy) from a core's outputs (class probabilities, offsets):
    :func:`cvexport.ops.detection.postprocess_scores` on arrays."""
    import torch

    from cvexport.ops.detection import postprocess_scores as reference

    as_tensor = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    out = reference(as_tensor(scores), as_tensor(box_offsets), as_tensor(anchors), config)
    return {name: value.numpy() for name, value in out.items()}


def ort_session(model: onnx.ModelProto, threads: int | None = None):
    """A CPU InferenceSession for ``model``: the runtime's own session factory."""
    from cvexport.backends.ort.loader import create_session

    return create_session(model.SerializeToString(), ["CPUExecutionProvider"], threads)
