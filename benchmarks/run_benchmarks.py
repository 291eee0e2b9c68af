"""Latency of every registered model on every backend available here, in one run on one machine.

For each model: the PyTorch eager reference pipeline (model + Python post-processing: for
the SSD torchvision NMS, for the others softmax / argmax / clamp; i.e. the ``torch`` backend), ONNX Runtime fp32 / fp16 / int8 bundles, and
TensorRT where it exists. Each is reported as a ratio to PyTorch eager and to the floor:
the model's FLOPs divided by this machine's matrix-multiply rate (fp32, and int8 for INT8),
both measured in this same run, because these machines are too noisy to compare across runs.

    python benchmarks/run_benchmarks.py [--iters 200] [--out benchmarks/results]

Writes ``results.json`` and ``results.md`` (the table the README quotes).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Frames of each network's own input size keep the comparison on what differs between
# backends; letterboxing large camera frames is the same PIL code for all of them.
THREADS = 2


def _gemm_rate(op: str, a: np.ndarray, b: np.ndarray, out_type: int, threads: int, repeats: int) -> float:
    """Best observed rate, in (multiply + add) per second, of one ONNX Runtime GEMM node on the
    CPU provider: the same kernel library (MLAS) that runs the models being measured."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    size = a.shape[0]
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["c"])], "gemm",
        [helper.make_tensor_value_info("a", helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))],
        [helper.make_tensor_value_info("c", out_type, [size, size])],
        initializer=[numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, {"a": a})
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"a": a})
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def matmul_rate_fp32(threads: int, size: int = 1024, repeats: int = 30) -> float:
    """fp32 GEMM rate in FLOP/s (ONNX Runtime MatMul)."""
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    return _gemm_rate("MatMul", a, b, TensorProto.FLOAT, threads, repeats)


def matmul_rate_int8(threads: int, size: int = 1024, repeats: int = 30) -> float:
    """int8 GEMM rate in op/s (ONNX Runtime MatMulInteger, u8 x s8 -> i32, what QLinearConv uses)."""
    from onnx import TensorProto

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (size, size), dtype=np.uint8)
    b = rng.integers(-127, 127, (size, size), dtype=np.int8)
    return _gemm_rate("MatMulInteger", a, b, TensorProto.INT32, threads, repeats)


def model_flops(spec) -> int:
    """FLOPs of one forward pass at batch 1 (torch's FLOP counter: 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = spec.load_model()
    height, width = spec.input_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, height, width))
    return int(counter.get_total_flops())


def section_share(bundle, iters: int) -> dict[str, float]:
    """Share of ONNX Runtime kernel time per graph section (decode, nms, normalize, network),
    from ORT's own profiler on the bundle's graph at batch 1."""
    import onnx
    import onnxruntime as ort

    from cvexport.export.graph import node_sections
    from cvexport.preprocess import to_network_input
    from cvexport.runtime.ort_runner import create_session

    model = onnx.load(str(bundle.onnx_path))
    sections = node_sections(model)
    frames = [np.full((bundle.input["height"], bundle.input["width"], 3), 127, np.uint8)]
    feed = {bundle.input["name"]: to_network_input(frames, bundle.input)}
    profile_dir = tempfile.mkdtemp(prefix="cvexport-profile-")
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(profile_dir, "ort")
    session = create_session(model.SerializeToString(), ["CPUExecutionProvider"], THREADS, options=options)
    for _ in range(iters):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        node = event["name"][: -len("_kernel_time")]
        key = sections.get(node, "network")
        totals[key] = totals.get(key, 0.0) + float(event["dur"])
    whole = sum(totals.values()) or 1.0
    return {key: round(value / whole, 4) for key, value in sorted(totals.items())}


def _bundle(model: str, precision: str, nms: str | None, root: Path):
    from cvexport.build import BuildOptions, build
    from cvexport.bundle import load_bundle

    out = root / f"{model}-{precision}-{nms}"
    build(BuildOptions(model=model, precision=precision, nms=nms, max_batch=4, out=str(out), verify_images=0),
          log=lambda _: None)
    return load_bundle(out)


def _bench(bundle, backend: str, iters: int) -> dict[str, Any]:
    from cvexport.bench import run_benchmark

    record = run_benchmark(bundle, [backend], batch=1, warmup=max(5, iters // 10), iters=iters, threads=THREADS,
                           warn=lambda _: None)
    return record["results"].get(backend, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    import cvexport.bench as bench
    from cvexport.bundle import library_versions
    from cvexport.registry import get_spec, list_models

    started = time.perf_counter()
    rates = {"fp32_flops_per_s": matmul_rate_fp32(THREADS), "int8_ops_per_s": matmul_rate_int8(THREADS)}
    results: dict[str, Any] = {"machine": bench.machine_info(THREADS), "versions": library_versions(),
                               "threads": THREADS, "iters": args.iters,
                               "matmul_rates": rates, "models": {}}
    root = Path(tempfile.mkdtemp(prefix="cvexport-bench-"))
    for name in list_models():
        spec = get_spec(name)
        # The images bench uses are made at the network's size, so pre-processing is only a copy.
        bench.IMAGE_SIZES = [spec.input_size[::-1]]
        detection = spec.task == "detection"
        flops = model_flops(spec)
        floor_fp32_ms = flops / rates["fp32_flops_per_s"] * 1e3
        floor_int8_ms = flops / rates["int8_ops_per_s"] * 1e3
        rows: dict[str, Any] = {}
        fp32 = _bundle(name, "fp32", "onnx" if detection else None, root)
        rows["torch eager fp32"] = _bench(fp32, "torch", args.iters)
        rows["ort fp32"] = _bench(fp32, "ort", args.iters)
        rows["ort fp16"] = _bench(_bundle(name, "fp16", "onnx" if detection else None, root), "ort", args.iters)
        try:
            int8 = _bundle(name, "int8", "onnx" if detection else None, root)
            rows["ort int8"] = _bench(int8, "ort", args.iters)
        except Exception as exc:  # INT8 may not be available for every model yet; say so in the results
            rows["ort int8"] = {"error": str(exc).splitlines()[0]}
        from cvexport.trt.builder import trt_unavailable_reason

        trt_reason = trt_unavailable_reason()
        if trt_reason is None:
            rows["trt fp16"] = _bench(_bundle(name, "fp16", "efficient" if detection else None, root), "trt", args.iters)
        reference = rows["torch eager fp32"]["latency_ms"]["end_to_end"]["p50"]
        table = {}
        for label, row in rows.items():
            if "latency_ms" not in row:
                table[label] = row
                continue
            latency = row["latency_ms"]
            floor = floor_int8_ms if "int8" in label else floor_fp32_ms
            table[label] = {
                "end_to_end_p50_ms": latency["end_to_end"]["p50"],
                "inference_p50_ms": latency["inference"]["p50"],
                "postprocess_p50_ms": latency["postprocess"]["p50"],
                "speedup_vs_torch_eager": round(reference / latency["end_to_end"]["p50"], 2),
                "inference_vs_floor": round(latency["inference"]["p50"] / floor, 2),
            }
        results["models"][name] = {
            "input_size": list(spec.input_size), "flops": flops, "floor_fp32_ms": round(floor_fp32_ms, 3), "floor_int8_ms": round(floor_int8_ms, 3),
            "rows": table, "ort_fp32_section_share": section_share(fp32, max(20, args.iters // 4)),
            "trt": "measured" if trt_reason is None else f"not measured: {trt_reason}",
        }
    results["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    rates = results["matmul_rates"]
    lines = [
        f"Machine: {machine.get('cpu', '?')}, {results['threads']} threads; "
        f"fp32 GEMM {rates['fp32_flops_per_s'] / 1e9:.1f} GFLOP/s, int8 GEMM {rates['int8_ops_per_s'] / 1e9:.1f} GOP/s "
        f"(measured in this run); batch 1, frames of each network's input size, {results['iters']} iterations, p50.",
        "",
    ]
    for name, model in results["models"].items():
        lines += [
            f"**{name}** ({model['input_size'][1]}x{model['input_size'][0]}): {model['flops'] / 1e9:.2f} GFLOP per image; floor {model['floor_fp32_ms']:.2f} ms fp32, "
            f"{model['floor_int8_ms']:.2f} ms int8. ORT fp32 kernel time by section: "
            + ", ".join(f"{k} {v:.1%}" for k, v in model["ort_fp32_section_share"].items()) + ".",
            "",
            "| pipeline | end to end ms | inference ms | post-processing ms | speed-up vs torch eager | inference / floor |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, row in model["rows"].items():
            if "error" in row:
                lines.append(f"| {label} | not run: {row['error']} | | | | |")
                continue
            lines.append(f"| {label} | {row['end_to_end_p50_ms']:.2f} | {row['inference_p50_ms']:.2f} | "
                         f"{row['postprocess_p50_ms']:.3f} | {row['speedup_vs_torch_eager']:.2f}x | "
                         f"{row['inference_vs_floor']:.2f}x |")
        lines += ["", f"TensorRT: {model['trt']}", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
