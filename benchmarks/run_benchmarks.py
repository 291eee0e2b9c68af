"""Latency of every registered model on every backend available here, in one run on one machine.

For each model: the PyTorch eager reference pipeline (model + Python post-processing: for
the SSD torchvision NMS, for the others softmax / argmax / clamp; i.e. the ``torch`` backend), ONNX Runtime fp32 / fp16 / int8 bundles, and
TensorRT where it exists. Each is reported as a ratio to PyTorch eager and to the floor, and
each model says whether INT8 beat fp32 on this CPU in this run.

The floor is the model's FLOPs at this machine's best matrix-multiply rate (fp32, and int8 for
INT8): the best over several implementations and sizes (ONNX Runtime MatMul / MatMulInteger,
torch.matmul, numpy, torch's int8 mm and quantized linear; each recorded in the JSON), measured
in this same run (before and after the networks) because these machines are too noisy to
compare across runs. A floor is never above a network time measured in the run: when a network
beats the floor from the rates, the floor is lowered to that time and the results say so, so
"inference / floor" is always >= 1.00. Every result names the CPU it was measured on
(``cvexport.cpu``): the floors and the INT8 gain depend on it (AVX-512 VNNI vs AVX2 only).

    python benchmarks/run_benchmarks.py [--iters 200] [--models ssd,classifier] [--out benchmarks/results]

Writes ``results.json`` and ``results.md`` (the table the README quotes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/floors.py, however this file is loaded
import floors  # noqa: E402
from results_files import write_results  # noqa: E402

# Frames of each network's own input size keep the comparison on what differs between
# backends; letterboxing large camera frames is the same PIL code for all of them.
THREADS = 2


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
    from cvexport.backends.ort.loader import create_session

    model = onnx.load(str(bundle.onnx_path))
    sections = node_sections(model)
    frames = [np.full((bundle.input.height, bundle.input.width, 3), 127, np.uint8)]
    feed = {bundle.input.name: to_network_input(frames, bundle.input)}
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
    build(BuildOptions.of(model=model, precision=precision, nms=nms, max_batch=4, out=str(out), verify_images=0),
          log=lambda _: None)
    return load_bundle(out)


def _bench(bundle, backend: str, iters: int) -> dict[str, Any]:
    from cvexport.bench import run_benchmark

    # INT8 vs fp32 is compared below from the fp32 bundle measured in this run, not re-exported.
    record = run_benchmark(bundle, [backend], batch=1, warmup=max(5, iters // 10), iters=iters, threads=THREADS,
                           warn=lambda _: None, compare_int8=False)
    return record["results"].get(backend, {})


def floor_precision(label: str) -> str | None:
    """Which floor a pipeline is compared with: int8 for INT8 rows, none for TensorRT (a GPU;
    the floors are CPU GEMM rates), fp32 for the rest."""
    if label.startswith("trt"):
        return None
    return "int8" if "int8" in label else "fp32"


def model_floors(flops: int, measurements: list[dict[str, Any]], rows: dict[str, Any]) -> dict[str, Any]:
    """Per precision: the floor at the best measured GEMM rate, bounded by the measured inference
    p50 of the pipelines compared with it (:func:`floors.bounded_floor`), and the GEMM it came from."""
    out = {}
    for precision in ("fp32", "int8"):
        best = floors.best_rate(measurements, precision)
        measured = {label: row["latency_ms"]["inference"]["p50"] for label, row in rows.items()
                    if "latency_ms" in row and floor_precision(label) == precision}
        floor = floors.bounded_floor(flops, best["ops_per_s"] if best else None, measured)
        out[precision] = {**{k: (round(v, 4) if isinstance(v, float) else v) for k, v in floor.items()},
                          "gemm": {k: best[k] for k in ("impl", "size", "ops_per_s")} if best else None}
    return out


def model_table(rows: dict[str, Any], model_floor: dict[str, Any]) -> dict[str, Any]:
    reference = rows["torch eager fp32"]["latency_ms"]["end_to_end"]["p50"]
    table = {}
    for label, row in rows.items():
        if "latency_ms" not in row:
            table[label] = row
            continue
        latency = row["latency_ms"]
        precision = floor_precision(label)
        floor_ms = model_floor[precision]["ms"] if precision else None
        table[label] = {
            "end_to_end_p50_ms": latency["end_to_end"]["p50"],
            "inference_p50_ms": latency["inference"]["p50"],
            "postprocess_p50_ms": latency["postprocess"]["p50"],
            "speedup_vs_torch_eager": round(reference / latency["end_to_end"]["p50"], 2),
            "inference_vs_floor": floors.ratio_to_floor(latency["inference"]["p50"], floor_ms),
            "floor": precision,
            **({"graph": row["graph"]} if "graph" in row else {}),
        }
    return table


def int8_comparison(rows: dict[str, Any], cpu: dict[str, Any]) -> dict[str, Any]:
    """Did the ORT INT8 bundle beat the ORT fp32 bundle (inference p50) in this run, on this CPU."""
    from cvexport.int8_gain import int8_statement, int8_vs_fp32

    fp32, int8 = rows.get("ort fp32", {}), rows.get("ort int8", {})
    if "latency_ms" not in fp32 or "latency_ms" not in int8:
        reason = int8.get("error") or fp32.get("error") or "not measured"
        return {"error": reason, "cpu": cpu,
                "statement": f"INT8 vs fp32 on this CPU: not compared ({reason})"}
    comparison = int8_vs_fp32(fp32["latency_ms"]["inference"]["p50"], int8["latency_ms"]["inference"]["p50"], cpu)
    comparison["int8_graph"] = int8.get("graph")
    comparison["statement"] = int8_statement(comparison)
    return comparison


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--models", help="comma-separated models to measure (default: all registered)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    import cvexport.bench as bench
    from cvexport.bundle import library_versions
    from cvexport.cpu import cpu_info, describe_cpu
    from cvexport.registry import get_spec, list_models
    from cvexport.backends.trt.environment import trt_unavailable_reason

    names = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else list(list_models())
    specs = [get_spec(name) for name in names]  # an unknown name fails here, before any measuring
    started = time.perf_counter()
    cpu = cpu_info()
    print(f"measuring on {describe_cpu(cpu)}, {THREADS} threads", flush=True)
    gemm_before = floors.measure_gemm_rates(THREADS, rounds=1)
    results: dict[str, Any] = {"machine": bench.machine_info(THREADS), "cpu": cpu, "versions": library_versions(),
                               "threads": THREADS, "iters": args.iters, "models": {}}
    measured: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="cvexport-bench-"))
    trt_reason = trt_unavailable_reason()
    for spec in specs:
        name = spec.name
        print(f"{name} ...", flush=True)
        # The images bench uses are made at the network's size, so pre-processing is only a copy.
        bench.IMAGE_SIZES = [spec.input_size[::-1]]
        detection = spec.task == "detection"
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
        if trt_reason is None:
            rows["trt fp16"] = _bench(_bundle(name, "fp16", "efficient" if detection else None, root), "trt", args.iters)
        measured[name] = {"spec": spec, "rows": rows, "flops": model_flops(spec),
                          "share": section_share(fp32, max(20, args.iters // 4))}
    # Measured again after the networks: the best of both is the rate, so a burst of load during
    # one of the two measurements does not raise every floor.
    gemm = floors.merge_measurements(gemm_before, floors.measure_gemm_rates(THREADS, rounds=1))
    best = {precision: floors.best_rate(gemm, precision) for precision in ("fp32", "int8")}
    results["gemm"] = {"threads": THREADS, "sizes": list(floors.SIZES), "best": best, "measurements": gemm}
    # Kept for readers of the earlier format: the best rates.
    results["matmul_rates"] = {"fp32_flops_per_s": best["fp32"] and best["fp32"]["ops_per_s"],
                               "int8_ops_per_s": best["int8"] and best["int8"]["ops_per_s"]}
    for name, entry in measured.items():
        spec, rows, flops = entry["spec"], entry["rows"], entry["flops"]
        model_floor = model_floors(flops, gemm, rows)
        results["models"][name] = {
            "input_size": list(spec.input_size), "flops": flops,
            "floors": model_floor,
            "floor_fp32_ms": model_floor["fp32"]["ms"], "floor_int8_ms": model_floor["int8"]["ms"],
            "rows": model_table(rows, model_floor), "int8_vs_fp32": int8_comparison(rows, cpu),
            "ort_fp32_section_share": entry["share"],
            "trt": "measured" if trt_reason is None else f"not measured: {trt_reason}",
        }
    results["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, "results", results, markdown(results))


def _rate(entry: dict[str, Any] | None, unit: str) -> str:
    if not entry:
        return "none measured"
    return f"{entry['ops_per_s'] / 1e9:.1f} {unit} ({entry['impl']}, {entry['size']}x{entry['size']})"


def markdown(results: dict[str, Any]) -> str:
    from cvexport.cpu import describe_cpu

    gemm = results["gemm"]
    sizes = "/".join(str(size) for size in gemm["sizes"])
    lines = [
        f"Measured on CPU: {describe_cpu(results['cpu'])}; {results['threads']} threads; batch 1, frames of each "
        f"network's input size, {results['iters']} iterations, p50; {results['seconds']:.0f} s in all.",
        "",
        f"GEMM rates measured in this run with {gemm['threads']} threads (each implementation's best over "
        f"{sizes} square, before and after the networks; every one in results.json): "
        f"fp32 GFLOP/s: {floors.rates_summary(gemm['measurements'], 'fp32')}; "
        f"int8 GOP/s: {floors.rates_summary(gemm['measurements'], 'int8')}. "
        f"Best: fp32 {_rate(gemm['best']['fp32'], 'GFLOP/s')}, int8 {_rate(gemm['best']['int8'], 'GOP/s')}.",
        "",
        "Floor: the model's FLOPs at the best GEMM rate of its precision; where a network's measured inference "
        "beat that, the floor is that measurement instead (said below), so inference / floor is >= 1.00. "
        "TensorRT runs on the GPU and has no CPU floor.",
        "",
    ]
    for name, model in results["models"].items():
        model_floor = model["floors"]
        lines += [
            f"**{name}** ({model['input_size'][1]}x{model['input_size'][0]}): {model['flops'] / 1e9:.2f} GFLOP per "
            f"image; floor {floors.floor_label(model_floor['fp32'], 'fp32')}, "
            f"{floors.floor_label(model_floor['int8'], 'int8')}. ORT fp32 kernel time by section: "
            + ", ".join(f"{k} {v:.1%}" for k, v in model["ort_fp32_section_share"].items()) + ".",
            "",
            "| pipeline | end to end ms | inference ms | post-processing ms | speed-up vs torch eager | inference / floor |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for label, row in model["rows"].items():
            if "error" in row:
                lines.append(f"| {label} | not run: {row['error']} | | | | |")
                continue
            ratio = row["inference_vs_floor"]
            lines.append(f"| {label} | {row['end_to_end_p50_ms']:.2f} | {row['inference_p50_ms']:.2f} | "
                         f"{row['postprocess_p50_ms']:.3f} | {row['speedup_vs_torch_eager']:.2f}x | "
                         + (f"{ratio:.2f}x |" if ratio is not None else "n/a (GPU) |"))
        graph = model["int8_vs_fp32"].get("int8_graph")
        statement = model["int8_vs_fp32"]["statement"] + (f"; ORT ran the bundle's {graph} graph." if graph else ".")
        lines += ["", statement, "", f"TensorRT: {model['trt']}", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
