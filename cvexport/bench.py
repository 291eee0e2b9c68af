"""``cvexport bench``: latency and throughput of a bundle on one or more backends.

Each timed iteration is what an application pays per batch: fit real uint8 images of
varied sizes to the network input (the bundle's fit + ``to_network_input``), ``runner.infer``,
then map the detections back to each image (``task.to_predictions``). The three stages are
timed separately and together; runners that expose ``last_timings`` (TensorRT) add their
host-to-device, compute and device-to-host split from CUDA events. Warm-up runs are not
recorded. The result is one JSON-able dict that also records the machine (``cpu``: the
CPU model, its SIMD / int8 dot-product flags and the instruction-set class, from
:func:`cvexport.cpu.cpu_info`), the thread count and the library versions, since a latency
without them cannot be compared later.

INT8 bundles on ``ort`` are also timed against fp32: whether INT8 pays depends on the CPU (on
AVX2-only cores without VNNI it may not), so the bundle's network is exported again as fp32 from
its own ``weights.safetensors``, timed with the same ONNX Runtime settings and iterations, and the
record says plainly whether INT8 was faster (``int8_vs_fp32``).
"""

from __future__ import annotations

import gc
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cvexport.bundle import Bundle, library_versions, load_bundle
from cvexport.cpu import cpu_info, describe_cpu
from cvexport.int8_gain import int8_statement, int8_vs_fp32, ms_text
from cvexport.errors import CvexportError, stderr_warning
from cvexport.runtime import AUTO, check_backends, open_or_skip
from cvexport.runtime.base import Runner

BENCH_FORMAT = "cvexport-bench/1"
PERCENTILES = (50, 90, 95, 99)
STAGES = ("end_to_end", "preprocess", "inference", "postprocess")
# Keys of ``Runner.last_timings`` (ms, CUDA events) -> the stage names recorded for them.
DEVICE_STAGES = {"h2d_ms": "h2d", "compute_ms": "compute", "d2h_ms": "d2h"}
# Camera and photo shapes, landscape and portrait, so the fit's cost (resize, padding, crop) varies as in use.
IMAGE_SIZES = ((640, 480), (1280, 720), (480, 640), (1920, 1080), (320, 240), (800, 600), (720, 1280), (256, 256))


# ------------------------------------------------------------------------------ machine
def machine_info(threads: int | None) -> dict[str, Any]:
    """Where the numbers were taken: CPU, cores, threads asked for, GPU, load."""
    import torch

    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(torch.cuda.current_device()) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_info()["model"],
        "cores": os.cpu_count(),
        "cores_available": available,
        "threads": threads,  # None: each backend's own default
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
        # A busy machine makes every percentile worse; the load says whether it was.
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def bundle_info(bundle: Bundle) -> dict[str, Any]:
    """What a benchmark record says about the bundle, its task's build options included
    (detection: ``nms`` and thresholds)."""
    from cvexport.tasks import get_task

    contract = bundle.input
    return {
        "path": str(bundle.path),
        "model": bundle.manifest.model,
        "task": bundle.task,
        "precision": bundle.precision,
        **get_task(bundle.task).options_from_manifest(bundle.manifest),
        "input": {k: getattr(contract, k) for k in ("name", "dtype", "layout", "height", "width")},
        "max_batch": bundle.max_batch,
    }


# ------------------------------------------------------------------------------ measuring
def bench_images(spec, count: int) -> list[np.ndarray]:
    """``count`` uint8 RGB val images of the model's own data (real photographs with objects),
    resized to ``IMAGE_SIZES`` in turn."""
    from PIL import Image

    from cvexport.tasks import get_task

    images = []
    for i, image in enumerate(get_task(spec.task).sample_images(spec, "val", range(count))):
        width, height = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        images.append(np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR)))
    return images


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """min / mean / percentiles / max / std of one stage, in ms."""
    values = np.asarray(samples_ms, dtype=np.float64)
    stats = {"min": float(values.min()), "mean": float(values.mean())}
    stats.update({f"p{p}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))})
    stats.update({"max": float(values.max()), "std": float(values.std())})
    return {k: round(v, 4) for k, v in stats.items()}


def _measure(runner: Runner, task, bundle: Bundle, images: list[np.ndarray], batch: int, warmup: int,
             iters: int) -> dict[str, list[float]]:
    """Per-iteration times (ms) of each stage; the first ``warmup`` iterations are dropped."""
    from cvexport.runtime.predictor import finish_batch, prepare_batch

    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    gc.collect()  # a collection of earlier garbage should not land in the first timed runs
    for i in range(warmup + iters):
        start = (i * batch) % len(images)
        chunk = [images[(start + j) % len(images)] for j in range(batch)]
        t0 = time.perf_counter()
        prepared = prepare_batch(bundle, chunk)
        t1 = time.perf_counter()
        outputs = runner.infer(prepared.feed)
        t2 = time.perf_counter()
        finish_batch(task, bundle, outputs, prepared)
        t3 = time.perf_counter()
        if i < warmup:
            continue
        for stage, seconds in zip(STAGES, (t3 - t0, t1 - t0, t2 - t1, t3 - t2)):
            samples[stage].append(seconds * 1e3)
        for key, stage in DEVICE_STAGES.items():
            value = (getattr(runner, "last_timings", None) or {}).get(key)
            if value is not None:
                samples.setdefault(stage, []).append(float(value))
    return samples


def _effective_threads(backend: str, threads: int | None) -> int | None:
    if backend == "torch":
        import torch

        return torch.get_num_threads()
    return threads  # ONNX Runtime / TensorRT: None means the library's default


def run_benchmark(bundle: Bundle | str, backends: Sequence[str] = ("ort",), batch: int = 1, warmup: int = 10,
                  iters: int = 100, threads: int | None = None,
                  warn: Callable[[str], None] = stderr_warning, compare_int8: bool = True) -> dict[str, Any]:
    """Benchmark ``bundle`` on each backend; returns the JSON-able record (see the module docstring).

    ``results[backend]`` holds ``latency_ms[stage]`` statistics (stages: end_to_end,
    preprocess, inference, postprocess, and h2d / compute / d2h where the runner reports
    them), the raw ``samples_ms``, ``throughput_ips`` (images per second, end to end) and, for
    ONNX Runtime, ``graph`` (the bundle graph the runner chose on this machine). ``cpu`` is
    :func:`cvexport.cpu.cpu_info`. For an INT8 bundle measured on ``ort`` (and ``compare_int8``),
    ``int8_vs_fp32`` compares its inference with an fp32 graph of the same weights (see
    :func:`cvexport.int8_gain.int8_vs_fp32`), or holds ``error`` when that graph could not be made.
    """
    import torch

    from cvexport.registry import bundle_spec
    from cvexport.tasks import get_task

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    names = check_backends(backends)
    if not 1 <= batch <= bundle.max_batch:
        raise CvexportError(f"--batch {batch} is outside 1..{bundle.max_batch}, the range this bundle was built for; "
                            f"rebuild it with --max-batch {batch}")
    if warmup < 0:
        raise CvexportError(f"--warmup {warmup} must be 0 or more")
    if iters < 1:
        raise CvexportError(f"--iters {iters} must be at least 1")
    task = get_task(bundle.task)
    machine = machine_info(threads)
    load = machine["load_average"]
    busy = bool(load) and load[0] >= machine["cores_available"]
    # The weights' own spec: a --module bundle's task and size are recorded in its weights only.
    images = bench_images(bundle_spec(bundle), max(2 * batch, len(IMAGE_SIZES)))
    record: dict[str, Any] = {
        "format": BENCH_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bundle": bundle_info(bundle),
        "settings": {"backends": names, "batch": batch, "warmup": warmup, "iters": iters, "threads": threads},
        "machine": machine,
        "cpu": cpu_info(),
        "versions": library_versions(),
        "images": {"count": len(images), "sizes": [list(image.shape[1::-1]) for image in images]},
        "results": {},
        "skipped": {},
    }
    chosen = {}
    if AUTO in names:
        from cvexport.backend_choice import choose_backend

        choice = choose_backend(bundle, log=warn)
        record["auto"] = choice.to_dict()
        chosen[AUTO] = choice.backend
    torch_threads = torch.get_num_threads()
    for label in names:
        backend = chosen.get(label, label)
        started = time.perf_counter()
        # One runner at a time: two live backends would compete for the same cores and memory.
        runner, why = open_or_skip(bundle, backend, threads, several=len(names) > 1, warn=warn)
        if runner is None:
            record["skipped"][label] = why
            continue
        setup = time.perf_counter() - started
        if busy and not record["results"]:
            # Said once, and only once something will be measured, so input errors stay one line.
            warn(f"the machine is busy (load average {load[0]} on {machine['cores_available']} cores); "
                 "timings will be noisy")
        graph = getattr(runner, "graph", None)  # ONNX Runtime: which of the bundle's graphs runs on this CPU
        try:
            samples = _measure(runner, task, bundle, images, batch, warmup, iters)
            used_threads = _effective_threads(backend, threads)
        finally:
            runner.close()
            # TorchRunner sets the process-wide torch thread count; give the caller theirs back.
            torch.set_num_threads(torch_threads)
        total_seconds = sum(samples["end_to_end"]) / 1e3
        record["results"][label] = {
            "backend": backend,
            "threads": used_threads,
            **({"graph": graph} if isinstance(graph, str) else {}),
            "setup_seconds": round(setup, 3),
            "throughput_ips": round(batch * iters / total_seconds, 3),
            "inference_throughput_ips": round(batch * iters / (sum(samples["inference"]) / 1e3), 3),
            "latency_ms": {stage: latency_stats(values) for stage, values in samples.items()},
            "samples_ms": {stage: [round(v, 4) for v in values] for stage, values in samples.items()},
        }
    if not record["results"]:
        raise CvexportError(f"none of the backends {', '.join(names)} can run here (see the warnings above)")
    if compare_int8 and bundle.precision == "int8" and "ort" in record["results"]:
        record["int8_vs_fp32"] = _compare_with_fp32(bundle, task, images, batch, warmup, iters, threads, record, warn)
    return record


# ------------------------------------------------------------------------------ INT8 vs fp32
def fp32_graph(bundle: Bundle, warn: Callable[[str], None] = stderr_warning):
    """The fp32 ONNX graph of an INT8 bundle's network (onnx.ModelProto), exported again from the
    bundle's own weights through the build's export path, with the same input contract, batch
    range and task sections (detection: the same NMS and thresholds), for the classes and
    input size of those weights and the frame size of a ``--frame-size`` bundle."""
    from dataclasses import replace

    from cvexport.build import BuildOptions
    from cvexport.registry import bundle_spec
    from cvexport.tasks import get_task

    # As the build made it: the weights' own spec (fine-tuned weights bring their classes and
    # size), fitting frames in the graph as the bundle's manifest says.
    spec = replace(bundle_spec(bundle), fit=bundle.input.fit, crop_fraction=bundle.input.crop_fraction)
    task = get_task(spec.task)
    letterboxed = bundle.input.letterbox is not None
    options = BuildOptions(
        model=spec.name, precision="fp32", max_batch=bundle.max_batch,
        input_format="uint8" if bundle.input.dtype == "uint8" else "float",
        frame_size=(int(bundle.input.width), int(bundle.input.height)) if letterboxed else None,
        task_options=task.options_from_manifest(bundle.manifest),
    )
    model = spec.load_model(bundle.verify_file("weights"))
    return task.export_graphs(model, spec, options, int8=None, warn=warn)["onnx"]


class _GraphRunner(Runner):
    """ONNX Runtime on the CPU provider over a graph held in memory, with the bundle's contract."""

    name = "ort"

    def __init__(self, bundle: Bundle, model_bytes: bytes, threads: int | None):
        from cvexport.backends.ort.loader import create_session

        super().__init__(bundle)
        self.session = create_session(model_bytes, ["CPUExecutionProvider"], threads)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _infer(self, array: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, {self.input_name: array})))

    def close(self) -> None:
        self.session = None


def _compare_with_fp32(bundle: Bundle, task, images: list[np.ndarray], batch: int, warmup: int, iters: int,
                       threads: int | None, record: dict[str, Any], warn: Callable[[str], None]) -> dict[str, Any]:
    """Time an fp32 graph of the bundle's weights as the ``ort`` result was timed; the comparison."""
    cpu = record["cpu"]
    try:
        runner = _GraphRunner(bundle, fp32_graph(bundle, warn).SerializeToString(), threads)
    except Exception as exc:  # noqa: BLE001 - the INT8 numbers stand without it; say why it is missing
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        warn(f"could not time fp32 beside INT8 (is INT8 faster on this CPU? not measured): {reason}")
        return {"error": reason, "cpu": cpu}
    try:
        samples = _measure(runner, task, bundle, images, batch, warmup, iters)
    finally:
        runner.close()
    ort = record["results"]["ort"]
    comparison = int8_vs_fp32(latency_stats(samples["inference"])["p50"], ort["latency_ms"]["inference"]["p50"], cpu)
    comparison["int8_graph"] = ort.get("graph")
    comparison["fp32_graph"] = f"exported from {bundle.manifest.weights.file} at fp32 for this comparison"
    comparison["statement"] = int8_statement(comparison)
    return comparison


# ------------------------------------------------------------------------------ reporting
STAGE_LABELS = {"end_to_end": "end to end", "preprocess": "  pre", "inference": "  infer", "postprocess": "  post",
                "h2d": "   h2d", "compute": "   compute", "d2h": "   d2h"}


def _bundle_label(info: dict[str, Any]) -> str:
    """``ssd int8 (NMS onnx)``; models without NMS are named without it."""
    return f"{info['model']} {info['precision']}" + (f" (NMS {info['nms']})" if info.get("nms") else "")


def results_table(record: dict[str, Any]):
    """A rich Table, narrow enough for 80 columns: per backend, an end-to-end row with the
    throughput, then one row per stage; latency per batch in ms. The caption names the CPU
    (:func:`cvexport.cpu.describe_cpu`) and, for INT8, says whether it was faster than fp32."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    info, machine, settings = record["bundle"], record["machine"], record["settings"]
    load = machine["load_average"][0] if machine["load_average"] else "?"
    skipped = f"; skipped (cannot run here): {', '.join(record['skipped'])}" if record["skipped"] else ""
    cpu = describe_cpu(record["cpu"]) if "cpu" in record else machine["cpu"]
    caption = Text(f"measured on CPU {cpu}; {machine['cores_available']} of {machine['cores']} cores available, "
                   f"threads {machine['threads'] or 'backend default'}, GPU {machine['gpu'] or 'none'}, "
                   f"load average {load}{skipped}", style="dim")
    comparison = record.get("int8_vs_fp32")
    if comparison:
        line = comparison.get("statement") or (
            f"INT8 vs fp32 on this CPU: not measured ({comparison.get('error', 'unknown reason')})")
        caption.append("\n" + line, style="bold")
    table = Table(
        box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0),
        title=f"{_bundle_label(info)}, batch {settings['batch']}, "
              f"{settings['iters']} iterations after {settings['warmup']} warm-up; ms per batch",
        caption=caption, caption_justify="left",
    )
    table.add_column("stage", no_wrap=True, min_width=10)
    for name in ("min", "mean", "p50", "p90", "p95", "p99", "max"):
        table.add_column(name, justify="right")
    table.add_column("img/s", justify="right")
    for label, result in record["results"].items():
        name = label if result["backend"] == label else f"{label} ({result['backend']})"
        for stage, stats in result["latency_ms"].items():
            first = stage == "end_to_end"
            table.add_row(
                f"[bold]{name}[/bold]" if first else STAGE_LABELS.get(stage, stage),
                *(ms_text(stats[k]) for k in ("min", "mean", "p50", "p90", "p95", "p99", "max")),
                f"{result['throughput_ips']:.1f}" if first else "",
                end_section=stage == list(result["latency_ms"])[-1],
            )
    return table


def write_plot(record: dict[str, Any], path: str | Path) -> None:
    """PNG: end-to-end latency distribution per backend (box plot), and the mean split into stages."""
    try:
        # The object-oriented API renders with Agg without pyplot, so no GUI backend or global state is touched.
        from matplotlib.figure import Figure
    except ImportError:
        raise CvexportError("--plot needs matplotlib; pip install matplotlib") from None

    from cvexport.atomic import atomic_path

    results = record["results"]
    backends = list(results)
    info, settings = record["bundle"], record["settings"]
    figure = Figure(figsize=(11, 0.6 * len(backends) + 3), layout="constrained")
    dist, split = figure.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    rows = np.arange(len(backends))
    dist.boxplot([results[b]["samples_ms"]["end_to_end"] for b in backends], positions=rows,
                 orientation="horizontal", tick_labels=backends, whis=(1, 99), showmeans=True)
    medians = [results[b]["latency_ms"]["end_to_end"]["p50"] for b in backends]
    if max(medians) > 10 * min(medians):  # e.g. torch next to TensorRT: a linear axis would flatten the fast ones
        dist.set_xscale("log")
    dist.set_xlabel("end-to-end latency per batch (ms); whiskers p1-p99, triangle = mean")
    dist.grid(axis="x", alpha=0.3)
    dist.invert_yaxis()  # first backend on top, as in the table
    left = np.zeros(len(backends))
    for stage in ("preprocess", "inference", "postprocess"):
        means = np.array([results[b]["latency_ms"][stage]["mean"] for b in backends])
        split.barh(rows, means, left=left, label=stage)
        left += means
    split.set_xlabel("mean time per batch (ms)")
    split.legend(loc="best", fontsize="small")
    cpu = describe_cpu(record["cpu"]) if "cpu" in record else record["machine"]["cpu"]
    figure.suptitle(f"{_bundle_label(info)}, batch {settings['batch']}, "
                    f"{cpu}", fontsize="medium")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)


def auto_table(record: dict[str, Any]):
    """A rich Table of what ``auto`` chose from (``record["auto"]``, see cvexport.backend_choice):
    per candidate whether it opened, its parity and the precision that judged it, its p50."""
    from rich import box
    from rich.table import Table

    choice = record["auto"]
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0),
                  title=f"auto chose {choice['backend']} (measured {choice['measured_at']}; batch 1, p50 ms)",
                  caption=f"on CPU {choice['cpu']}", caption_justify="left")
    for column in ("candidate", "p50", "judged at", "parity vs torch; metric (drop, points)"):
        table.add_column(column, justify="right" if column == "p50" else "left")
    for c in choice["candidates"]:
        p50 = f"{c['p50_ms']:.2f}" if c["p50_ms"] is not None else "-"
        mark = "" if c["parity_passed"] else " [red]FAIL[/red]" if c["opened"] else ""
        parity = (c["parity"] or "-") + mark if c["opened"] else f"not opened: {c['why_not']}"
        if c.get("metric"):
            parity += f"; metric {c['metric']}" + (" [red]FAIL[/red]" if c["metric_passed"] is False else "")
        table.add_row(f"[bold]{c['backend']}[/bold]" if c["backend"] == choice["backend"] else c["backend"],
                      p50, c["judged_at"] or "-", parity)
    return table
