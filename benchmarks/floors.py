"""Matrix-multiply rates of this machine, and the latency floors derived from them.

A floor is the time a network's FLOPs would take at the best GEMM rate measured in the same run.
One GEMM node of one library is not that rate: on an AVX2 EPYC, ONNX Runtime's MatMul ran at
74.5 GFLOP/s while torch's matmul reached 124 GFLOP/s in the same minute, and the SSD "beat" the
floor derived from the former. So the rate is the best over several implementations and sizes,
each recorded, and a floor is never above a network time measured in the same run: when a
network beats the floor from the rates, the floor becomes that network's time and says so.

The pure functions (:func:`best_rate`, :func:`bounded_floor`, :func:`floor_label`) take given
numbers and time nothing; :func:`measure_gemm_rates` does the measuring.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Callable, Iterable, Mapping

import numpy as np

# Square GEMM sizes: big enough that the kernels reach their steady rate, small enough that the
# whole measurement takes seconds on 2 cores.
SIZES = (256, 512, 1024)
# Timing budget of one (implementation, size) per round; every candidate gets ROUNDS rounds,
# interleaved, so a burst of load on the shared machine does not spoil one implementation only.
BUDGET_S = 0.15
ROUNDS = 2
MIN_REPEATS = 3


# ------------------------------------------------------------------------------ pure functions
def best_rate(measurements: Iterable[Mapping[str, Any]], precision: str) -> dict[str, Any] | None:
    """The measurement with the highest ``ops_per_s`` among those of ``precision`` ("fp32" or
    "int8") that have a rate (failed implementations carry ``error`` instead); None if none has."""
    usable = [m for m in measurements if m.get("precision") == precision and m.get("ops_per_s")]
    return dict(max(usable, key=lambda m: m["ops_per_s"])) if usable else None


def bounded_floor(flops: float, rate: float | None, measured_ms: Mapping[str, float | None]) -> dict[str, Any]:
    """The floor of a network of ``flops`` (FLOPs, or int8 ops) at ``rate`` per second, never above
    a network time measured in the same run.

    ``measured_ms``: label -> measured inference time (ms) of each pipeline compared against this
    floor (missing or None: not measured). Returns ``ms`` (the floor), ``gemm_ms`` (FLOPs / rate;
    None without a rate) and ``bounded_by`` (the label whose time became the floor because it beat
    ``gemm_ms``, else None). A ratio "measured / ms" of any of those pipelines is then >= 1.
    """
    gemm_ms = flops / rate * 1e3 if rate else None
    times = {label: float(ms) for label, ms in measured_ms.items() if ms is not None and ms > 0}
    fastest = min(times, key=times.__getitem__) if times else None
    if fastest is not None and (gemm_ms is None or times[fastest] < gemm_ms):
        return {"ms": times[fastest], "gemm_ms": gemm_ms, "bounded_by": fastest}
    return {"ms": gemm_ms, "gemm_ms": gemm_ms, "bounded_by": None}


def floor_label(floor: Mapping[str, Any], precision: str) -> str:
    """``3.83 ms fp32`` or ``0.66 ms int8 (bounded by the measured ort int8 inference; the GEMM
    rate gave 0.99 ms)`` for the Markdown."""
    if floor.get("ms") is None:
        return f"no {precision} floor (no {precision} GEMM rate measured)"
    text = f"{floor['ms']:.2f} ms {precision}"
    if floor.get("bounded_by"):
        gemm = f"; the GEMM rate gave {floor['gemm_ms']:.2f} ms" if floor.get("gemm_ms") is not None else ""
        text += f" (bounded by the measured {floor['bounded_by']} inference{gemm})"
    return text


def ratio_to_floor(measured_ms: float, floor_ms: float | None) -> float | None:
    """measured / floor, rounded down to 2 decimals so a ratio never reads below 1.00 by rounding."""
    if not floor_ms:
        return None
    return float(np.floor(measured_ms / floor_ms * 100) / 100)


def merge_measurements(*runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (precision, impl, size): the fastest over ``runs`` (lists from
    :func:`measure_gemm_rates`, e.g. one before the networks and one after), keeping an error
    only where no run measured a rate."""
    merged: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        for m in run:
            key = (m.get("precision"), m.get("impl"), m.get("size"))
            old = merged.get(key)
            if old is None or (m.get("ops_per_s") or 0) > (old.get("ops_per_s") or 0):
                merged[key] = dict(m)
    return list(merged.values())


def rates_summary(measurements: Iterable[Mapping[str, Any]], precision: str) -> str:
    """``onnxruntime MatMul 74.5, torch.matmul 124.0`` - each implementation's best over its sizes, in G/s."""
    best: dict[str, float] = {}
    for m in measurements:
        if m.get("precision") == precision and m.get("ops_per_s"):
            best[m["impl"]] = max(best.get(m["impl"], 0.0), m["ops_per_s"])
    return ", ".join(f"{impl} {rate / 1e9:.1f}" for impl, rate in best.items()) or "none measured"


# ------------------------------------------------------------------------------ measuring
def _ort_gemm(op: str, a: np.ndarray, b: np.ndarray, out_type: int, threads: int) -> Callable[[], Any]:
    """One ONNX Runtime GEMM node on the CPU provider (MLAS, the library that runs the models),
    ``b`` a constant initializer as a layer's weights are."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))],
        [helper.make_tensor_value_info("c", out_type, [a.shape[0], b.shape[1]])],
        initializer=[numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a})


def _candidates(threads: int, sizes: Iterable[int]) -> list[tuple[dict[str, Any], Callable[[], Callable[[], Any]]]]:
    """(description, factory of the timed call) for each implementation and size. Factories may
    raise: an implementation this install lacks is recorded with its error, not measured."""
    import torch
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    out: list = []
    for size in sizes:
        f32 = [rng.standard_normal((size, size), dtype=np.float32) for _ in range(2)]
        u8 = rng.integers(0, 255, (size, size), dtype=np.uint8)
        s8 = rng.integers(-127, 127, (size, size), dtype=np.int8)

        def numpy_mm(a=f32[0], b=f32[1]):
            if cores > threads:
                raise RuntimeError(f"numpy's BLAS would use {cores} threads, more than the {threads} the networks get")
            return lambda: a @ b

        def torch_mm(a=torch.from_numpy(f32[0]), b=torch.from_numpy(f32[1])):
            return lambda: torch.matmul(a, b)

        def torch_int_mm(a=torch.from_numpy(s8), b=torch.from_numpy(s8.T.copy())):
            torch._int_mm(a, b)  # raises where this build has no CPU kernel
            return lambda: torch._int_mm(a, b)

        def torch_qlinear(x=f32[0], w=f32[1]):
            # fbgemm / x86 quantized linear: u8 activations x s8 weights -> i32, requantized to u8.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qw = torch.quantize_per_tensor(torch.from_numpy(w), 0.02, 0, torch.qint8)
                packed = torch.ops.quantized.linear_prepack(qw, None)
                qx = torch.quantize_per_tensor(torch.from_numpy(np.abs(x)), 4.0 / 255, 0, torch.quint8)
            return lambda: torch.ops.quantized.linear(qx, packed, 1.0, 0)

        out += [
            ({"precision": "fp32", "impl": "onnxruntime MatMul", "size": size, "threads": threads},
             lambda a=f32[0], b=f32[1]: _ort_gemm("MatMul", a, b, TensorProto.FLOAT, threads)),
            ({"precision": "fp32", "impl": "torch.matmul", "size": size, "threads": threads}, torch_mm),
            ({"precision": "fp32", "impl": "numpy matmul", "size": size, "threads": min(cores, threads)}, numpy_mm),
            ({"precision": "int8", "impl": "onnxruntime MatMulInteger u8s8", "size": size, "threads": threads},
             lambda a=u8, b=s8: _ort_gemm("MatMulInteger", a, b, TensorProto.INT32, threads)),
            ({"precision": "int8", "impl": "torch._int_mm s8s8", "size": size, "threads": threads}, torch_int_mm),
            ({"precision": "int8", "impl": "torch quantized.linear u8s8", "size": size, "threads": threads},
             torch_qlinear),
        ]
    return out


def _best_seconds(call: Callable[[], Any], budget_s: float) -> float:
    call()  # warm-up: first-call allocation and thread-pool start
    call()
    best, spent, repeats = float("inf"), 0.0, 0
    while repeats < MIN_REPEATS or spent < budget_s:
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
    return best


def measure_gemm_rates(threads: int, sizes: Iterable[int] = SIZES, budget_s: float = BUDGET_S,
                       rounds: int = ROUNDS) -> list[dict[str, Any]]:
    """Every available GEMM implementation at every size, best of ``rounds`` interleaved rounds:
    a list of ``{precision, impl, size, threads, ops_per_s, best_ms}`` (2 ops per multiply-add),
    or ``{..., error}`` for an implementation that cannot run here. torch runs with ``threads``
    threads (as the torch eager pipeline is benchmarked), ONNX Runtime with ``threads`` intra-op
    threads (as its sessions are)."""
    import torch

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        calls: list[tuple[dict[str, Any], Callable[[], Any] | None]] = []
        for info, factory in _candidates(threads, sizes):
            try:
                calls.append((info, factory()))
            except Exception as exc:  # noqa: BLE001 - an implementation missing here is recorded, not fatal
                calls.append(({**info, "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"}, None))
        best = [float("inf")] * len(calls)
        for _ in range(rounds):
            for i, (info, call) in enumerate(calls):
                if call is None:
                    continue
                try:
                    best[i] = min(best[i], _best_seconds(call, budget_s))
                except Exception as exc:  # noqa: BLE001
                    info["error"] = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
                    calls[i] = (info, None)
    finally:
        torch.set_num_threads(torch_threads)
    results = []
    for (info, call), seconds in zip(calls, best):
        if call is None or seconds == float("inf"):
            results.append(info)
            continue
        results.append({**info, "ops_per_s": round(2 * info["size"] ** 3 / seconds, 1),
                        "best_ms": round(seconds * 1e3, 4)})
    return results
