"""torchvision's builders through cvexport (issue #24, "Measured"): parity, latency, graph size.

For each torchvision builder cvexport builds (detectors, classifiers, segmenters), with
deterministic non-flat test weights (nothing can be downloaded: detectors get
tests/detector_weights.py's ``detector_test_weights``, classifiers and segmenters torchvision's
own initialisation under a fixed seed), in one run:

1. **Parity** per model and precision: bundles built through the real CLI
   (``cvexport build NAME --weights W.pth --classes C.txt [--input-size S] [--fp16|--int8]``),
   and the build's own parity check read back from the bundle's ``parity.json`` (not
   re-implemented here). For detectors the build compares against torchvision's own inference
   (``model.eval()(images)``: its transform, anchors and ``postprocess_detections``); the
   numbers are those of the build's ``parity ...`` log line (matched / total, min IoU, max
   |dscore|). Classifiers: top-1 agreement (and max |dprob|); segmenters: pixel agreement. A
   build the parity gate refuses writes no bundle: its one-line error is recorded instead.
2. **Latency** at batch 1, from the same uint8 frame at the network's size to the model's
   answer, three pipelines interleaved in one run (p50 over ``--runs`` after warm-up; ratios
   taken within the run): the fp32 bundle on ONNX Runtime (normalization in numpy, decode + NMS /
   softmax / argmax in the graph); torch eager (detectors: torchvision's own model called as its
   users do, ``model([image])``, Python post-processing included; classifiers + softmax,
   segmenters ``["out"]`` + argmax); and torchvision's own ``torch.onnx.export`` of the same
   model (the legacy TorchScript exporter, ``dynamo=False``, fixed batch 1 and size, as
   torchvision's test/test_onnx.py does) on ONNX Runtime, where it exports.
3. **Graph size and op counts** of the bundle's graph and of torchvision's export, side by side.

RetinaNet, FCOS and the segmenters are built at 256x256 (``--input-size 256``) to keep the run
affordable on 2 cores; SSD300 and SSDlite320 have fixed sizes; classifiers run at 224.

    python benchmarks/torchvision_zoo.py [--models a,b] [--quick] [--runs 20] [--out benchmarks/results]

``--quick`` builds fp32 only and times 5 runs (a check of the script, not a measurement). Writes
``torchvision_zoo.{json,md}`` after every model, so an interrupted run keeps what it measured.
Every result names the CPU (``lscpu``'s model name and its AVX-512 / VNNI / AMX flags).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # tests/detector_weights.py: the detectors' test weights
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/results_files.py
from results_files import write_results  # noqa: E402

NAME = "torchvision_zoo"
# One thread for every pipeline: the machine's 2 cores are shared with other jobs, and one
# thread each keeps the three pipelines on equal terms.
THREADS = 1
RUNS, WARMUP = 20, 2
QUICK_RUNS, QUICK_WARMUP = 5, 1
SEED = 0
# Test weights of classifiers and segmenters: the logits' spread on random images.
LOGIT_STD = 2.0
# Class names per task (detectors: labels 1..N, torchvision's background 0 not listed).
CLASS_COUNTS = {"detection": 3, "classification": 10, "segmentation": 4}
PHOTO_INDEX = 5  # the val photograph the latency frame is cut from (cvexport.models.photos)


@dataclass(frozen=True)
class ZooModel:
    """One builder as measured here: its task, the input side, whether ``--input-size`` is passed
    (not for SSD's fixed sizes), and whether an INT8 bundle is built too."""

    name: str
    task: str
    side: int
    pass_size: bool
    int8: bool = False


MODELS = (
    ZooModel("ssdlite320_mobilenet_v3_large", "detection", 320, False, int8=True),
    ZooModel("retinanet_resnet50_fpn", "detection", 256, True),
    ZooModel("fcos_resnet50_fpn", "detection", 256, True),
    ZooModel("ssd300_vgg16", "detection", 300, False),
    ZooModel("resnet18", "classification", 224, False, int8=True),
    ZooModel("mobilenet_v3_large", "classification", 224, False, int8=True),
    ZooModel("efficientnet_b0", "classification", 224, False),
    ZooModel("convnext_tiny", "classification", 224, False),
    ZooModel("lraspp_mobilenet_v3_large", "segmentation", 256, True),
    ZooModel("deeplabv3_mobilenet_v3_large", "segmentation", 256, True),
)


# ----------------------------------------------------------------------------- the machine
def cpu_line() -> dict[str, Any]:
    """The CPU as the brief asks it named: lscpu's model name and the AVX-512 / AVX-VNNI / AMX
    flags of /proc/cpuinfo (none is a finding too: AVX2 only), and the core count."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    flags = sorted(set(re.findall(r"avx512[a-z_0-9]*|avx_vnni|amx[a-z_0-9]*", text)))
    return {"model_name": model.group(1).strip() if model else "unknown", "simd_flags": flags,
            "cores": os.cpu_count()}


def cvexport_commit() -> str:
    """The commit of the cvexport measured (the numbers change with the product)."""
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "unknown"


def describe(cpu: dict[str, Any]) -> str:
    flags = " ".join(cpu["simd_flags"]) or "no AVX-512 / AVX-VNNI / AMX flags"
    return f"{cpu['model_name']}, {cpu['cores']} cores, {flags}"


# ----------------------------------------------------------------------------- weights
def torchvision_model(zoo: ZooModel, num_classes: int):
    """torchvision's own model for the builder, built offline the way its users build it
    (``get_model(name, weights=None, ...)``), in eval mode: the eager pipeline and the export."""
    import torchvision

    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if zoo.task != "classification":
        kwargs["weights_backbone"] = None
    if zoo.task == "segmentation":
        kwargs["aux_loss"] = False
    if zoo.task == "detection" and zoo.pass_size:
        kwargs.update(min_size=zoo.side, max_size=zoo.side)
    return torchvision.models.get_model(zoo.name, **kwargs).eval()


def test_weights(zoo: ZooModel, num_classes: int) -> dict:
    """Deterministic non-flat weights: the detectors' test weights (tests/detector_weights.py),
    else :func:`network_test_weights`."""
    if zoo.task == "detection":
        from detector_weights import detector_test_weights

        from cvexport.torchvision_zoo import build_network

        return detector_test_weights(build_network(zoo.name, num_classes, zoo.side), zoo.side, seed=SEED)
    return network_test_weights(zoo, num_classes)


def network_test_weights(zoo: ZooModel, num_classes: int) -> dict:
    """A classifier's or segmenter's weights whose answers differ from class to class.

    torchvision's own initialisation under a seed is flat for some builders: mobilenet_v3_large's
    and efficientnet_b0's logits come out with a spread of 1e-10 (every probability 1/C, in fp16
    too), so parity would compare ties. As the detectors' test weights do: fan-in scaled
    convolutions and linears (activations keep their scale through the depth), then the head
    (the tensors cvexport reads the class count from) scaled so the logits spread by LOGIT_STD."""
    import torch

    from cvexport.torchvision_zoo import HEAD_KEYS

    torch.manual_seed(SEED)
    model = torchvision_model(zoo, num_classes)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    keys = next(keys for prefix, keys in HEAD_KEYS if zoo.name.startswith(prefix))
    heads = [model.get_submodule(key.rsplit(".", 1)[0]) for key in keys]
    images = torch.rand((2, 3, zoo.side, zoo.side), generator=torch.Generator().manual_seed(SEED)) * 2 - 1
    with torch.no_grad():
        out = model(images)
        out = out["out"] if isinstance(out, dict) else out
        scale = LOGIT_STD / max(float(out.std()), 1e-12)
        for head in heads:
            head.weight.mul_(scale)
    return {k: v.clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- builds
def build_bundle(zoo: ZooModel, precision: str, weights: Path, classes: Path, out: Path,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """``cvexport build`` through the CLI, as a user runs it; the parity.json it wrote, or the
    one-line error of a refused build."""
    argv = [sys.executable, "-m", "cvexport.cli", "build", zoo.name, "--weights", str(weights),
            "--classes", str(classes), "--out", str(out), "--backend", "ort"]
    argv += ["--input-size", str(zoo.side)] if zoo.pass_size else []
    argv += [] if precision == "fp32" else [f"--{precision}"]
    command = " ".join(["cvexport", *argv[3:]])
    log(f"$ {command}")
    started = time.perf_counter()
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": path})
    seconds = round(time.perf_counter() - started, 1)
    for line in done.stdout.splitlines():
        log(f"  {line}")
    record: dict[str, Any] = {"command": command, "exit_code": done.returncode, "seconds": seconds}
    if done.returncode != 0:
        record["error"] = first_error_line(done.stderr)
        log(f"  FAILED ({done.returncode}): {record['error']}")
        return record
    import json

    record["bundle"] = str(out)
    record["parity"] = json.loads((out / "parity.json").read_text())
    return record


def first_error_line(stderr: str) -> str:
    """The CLI's one-line error (``cvexport: error: ...``), else the last line of a traceback."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("cvexport: error:"):
            return line
    return lines[-1] if lines else "(no output)"


# ----------------------------------------------------------------------------- parity.json
def parity_rows(task: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per graph and batch of a build's parity.json: the numbers of its log line, and
    that line's text (detections: matched/total, min IoU, max |dscore|; classifiers: top-1
    agreement, max |dprob|; segmenters: pixel agreement)."""
    rows = []
    for graph, batches in report.get("graphs", {}).items():
        if "skipped" in batches:
            rows.append({"graph": graph, "batch": None, "text": f"skipped: {batches['skipped']}", "passed": None})
            continue
        for batch, entry in sorted(batches.items(), key=lambda item: int(item[0])):
            rows.append({"graph": graph, "batch": int(batch), "text": parity_text(task, entry),
                         "passed": entry.get("passed"), **parity_numbers(task, entry)})
    return rows


def parity_numbers(task: str, entry: dict[str, Any]) -> dict[str, Any]:
    if task == "detection":
        return {"matched": entry["matched"], "total": entry["compared"], "images": entry["images"],
                "min_iou": entry["min_iou"], "max_score_delta": entry["max_score_delta"],
                "missing": entry.get("missing", 0), "extra": entry.get("extra", 0),
                "boundary_flips": entry.get("boundary_flips", 0)}
    if task == "classification":
        return {"agree": entry["agree"], "images": entry["images"], "agreement": entry["agreement"],
                "max_prob_delta": entry["max_prob_delta"]}
    return {"pixels": entry["pixels"], "images": entry["images"], "agreement": entry["agreement"]}


def parity_text(task: str, entry: dict[str, Any]) -> str:
    n = parity_numbers(task, entry)
    if task == "detection":
        text = f"{n['matched']}/{n['total']}, min IoU {n['min_iou']:.4f}, max \\|dscore\\| {n['max_score_delta']:.2e}"
        extra = [f"{n[k]} {k}" for k in ("missing", "extra") if n[k]]
        flips = f"; {n['boundary_flips']} boundary flips set aside" if n["boundary_flips"] else ""
        return text + (f" ({', '.join(extra)})" if extra else "") + flips
    if task == "classification":
        return f"top-1 {n['agree']}/{n['images']} ({n['agreement']:.2%}), max \\|dprob\\| {n['max_prob_delta']:.2e}"
    return f"{n['agreement']:.4%} of {n['pixels']} pixels"


# ----------------------------------------------------------------------------- graphs
def graph_stats(path: Path) -> dict[str, Any]:
    """Size on disk (MB, external data included) and op counts of an ONNX graph: nodes and
    distinct op types, subgraphs (Loop / If bodies) included."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    nodes, types = count_ops(model.graph)
    external = {entry.value for init in model.graph.initializer for entry in init.external_data
                if entry.key == "location"}
    size = path.stat().st_size + sum((path.parent / name).stat().st_size for name in external)
    inputs = {i.name for i in model.graph.initializer}
    shapes = [[d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
              for value in model.graph.input if value.name not in inputs]
    return {"mb": round(size / 1e6, 2), "nodes": nodes, "op_types": len(types), "ops": sorted(types),
            "input_shapes": shapes, "tensorrt": tensorrt_check(path)}


def tensorrt_check(path: Path) -> dict[str, Any]:
    """What ``cvexport inspect`` says of the graph: TensorRT compatible or not (its error count
    and first error), the same checker for both graphs."""
    from cvexport.backends.trt.compat import check_path

    report = check_path(path).to_dict()
    errors = [f"{f['rule']}: {f['message']}" for f in report["findings"] if f["severity"] == "error"]
    return {"ok": report["ok"], "trt_version": report["trt_version"], "errors": report["counts"]["error"],
            "warnings": report["counts"]["warning"], "first_error": errors[0][:200] if errors else None}


def tensorrt_text(check: dict[str, Any]) -> str:
    if check["ok"]:
        return f"OK ({check['warnings']} warnings)"
    return f"NOT COMPATIBLE ({check['errors']} errors; first: {check['first_error']})"


def count_ops(graph) -> tuple[int, set[str]]:
    """(node count, op types) of an ONNX graph and every subgraph of its nodes' attributes."""
    nodes, types = 0, set()
    for node in graph.node:
        nodes += 1
        types.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}")
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                sub_nodes, sub_types = count_ops(sub)
                nodes += sub_nodes
                types |= sub_types
    return nodes, types


def opset_of(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def torchvision_export(model, example, path: Path, opset: int) -> str | None:
    """torchvision's own graph: ``torch.onnx.export`` with the legacy exporter at a fixed batch
    and size, as its test/test_onnx.py does; None when it exports, else ``does not export: ...``."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(path), opset_version=opset, dynamo=False,
                              do_constant_folding=True)
    except Exception as exc:  # any failure of the exporter is the finding
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"does not export: {type(exc).__name__}: {first[:300]}"
    return None


# ----------------------------------------------------------------------------- latency
def interleaved_p50(pipelines: dict[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, float]:
    """p50 in ms of each pipeline, measured in turns (the order rotates each round) so that a
    burst of load from other jobs falls on all of them alike."""
    names = list(pipelines)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + runs):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            pipelines[name]()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - started) * 1e3)
    return {name: round(statistics.median(values), 3) for name, values in times.items()}


def ratios(p50: dict[str, float], reference: str) -> dict[str, float]:
    """How many times faster each pipeline is than ``reference`` (its p50 over theirs)."""
    return {name: round(p50[reference] / value, 2) for name, value in p50.items() if name != reference and value > 0}


BUNDLE, EAGER, EXPORT = "cvexport bundle, ORT fp32", "torch eager", "torchvision export, ORT"


def measure_latency(zoo: ZooModel, bundle_dir: Path, state: dict, num_classes: int, work: Path,
                    runs: int, warmup: int, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from cvexport.backends.ort.loader import create_session
    from cvexport.bundle import load_bundle
    from cvexport.models.photos import photo_samples
    from cvexport.preprocess import to_network_input

    torch.set_num_threads(THREADS)
    bundle = load_bundle(bundle_dir)
    contract = bundle.input
    frame = photo_samples("val", [PHOTO_INDEX], zoo.side, SEED)[0]
    providers = ["CPUExecutionProvider"]
    session = create_session(bundle.onnx_path.read_bytes(), providers, THREADS)

    model = torchvision_model(zoo, num_classes)
    model.load_state_dict(state)  # strict: the eager model is the bundle's network, key by key
    detection = zoo.task == "detection"

    def image() -> torch.Tensor:  # torchvision's detectors take 0..1 float images, CHW
        return torch.from_numpy(frame).permute(2, 0, 1).float().div_(255)

    def normalized() -> np.ndarray:
        return to_network_input([frame], contract)

    output_names = [output.name for output in session.get_outputs()]

    def run_bundle():
        return dict(zip(output_names, session.run(None, {contract.name: normalized()})))

    def run_eager():
        with torch.no_grad():
            if detection:
                return model([image()])
            out = model(torch.from_numpy(normalized()))
            return out["out"].argmax(1) if zoo.task == "segmentation" else out.softmax(1)

    record: dict[str, Any] = {"frame": f"val photograph {PHOTO_INDEX}, {zoo.side}x{zoo.side}",
                              "bundle_graph": graph_stats(bundle.onnx_path)}
    pipelines = {BUNDLE: run_bundle, EAGER: run_eager}

    path = work / f"{zoo.name}-torchvision.onnx"
    example = ([image()],) if detection else (torch.from_numpy(normalized()),)
    started = time.perf_counter()
    failure = torchvision_export(model, example, path, opset_of(bundle.onnx_path))
    record["torchvision_export_seconds"] = round(time.perf_counter() - started, 1)
    if failure is None:
        try:
            tv_session = create_session(path.read_bytes(), providers, THREADS)
            tv_input = tv_session.get_inputs()[0].name
            tv_feed = (lambda: image().numpy()) if detection else normalized

            def run_export():
                return tv_session.run(None, {tv_input: tv_feed()})

            record["torchvision_graph"] = graph_stats(path)
            pipelines[EXPORT] = run_export
        except Exception as exc:  # exported but ONNX Runtime refuses it: also a finding
            failure = f"exports, but ONNX Runtime refuses it: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    if failure:
        record["torchvision_export"] = failure
        log(f"  torchvision export: {failure}")
    record["answers"] = answers(zoo.task, {name: run() for name, run in pipelines.items()})
    log(f"  timing {', '.join(pipelines)}: {warmup} warm-up + {runs} runs each, interleaved")
    record["p50_ms"] = interleaved_p50(pipelines, runs, warmup)
    record["speedup_vs_torch_eager"] = ratios(record["p50_ms"], EAGER)
    return record


def answers(task: str, outputs: dict[str, Any]) -> dict[str, Any]:
    """What each pipeline answered on the latency frame, so a reader sees the three compute the
    same thing and that the test weights are not flat: detections (count, top score) per
    pipeline, top-1 class, or the classes present in the label map and the largest one's share."""
    out = {}
    for name, result in outputs.items():
        if task == "detection":
            if name == BUNDLE:
                count = int(np.asarray(result["num_detections"]).reshape(-1)[0])
                scores = np.asarray(result["detection_scores"])[0, :count]
            elif name == EAGER:
                scores = result[0]["scores"].numpy()
            else:  # torchvision's export: its dict flattened, boxes, scores, labels
                scores = np.asarray(result[1])
            out[name] = {"detections": int(len(scores)), "top_score": round(float(scores.max(initial=0.0)), 4)}
        elif task == "classification":  # bundle: probabilities; eager: softmax; export: logits
            scores = result["probabilities"] if name == BUNDLE else result.numpy() if name == EAGER else result[0]
            out[name] = {"top1": int(np.asarray(scores).argmax())}
        else:  # bundle: labels; eager: argmax; export: the logits
            labels = result["labels"] if name == BUNDLE else result.numpy() if name == EAGER else result[0].argmax(1)
            labels = np.asarray(labels).reshape(-1)
            counts = np.bincount(labels.astype(np.int64))
            out[name] = {"classes_present": int((counts > 0).sum()),
                         "largest_share": round(float(counts.max() / labels.size), 4)}
    return out


# ----------------------------------------------------------------------------- the run
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated builders (default: all of "
                        + ", ".join(m.name for m in MODELS) + ")")
    parser.add_argument("--quick", action="store_true", help="fp32 builds only, 5 timed runs: a check of the script")
    parser.add_argument("--runs", type=int, help=f"timed runs per pipeline (default {RUNS}, {QUICK_RUNS} with --quick)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--work", help="folder for weights, bundles and exports (default: a new temporary one)")
    args = parser.parse_args()

    import torch

    from cvexport.bundle import library_versions

    known = {m.name: m for m in MODELS}
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"not measured here: {', '.join(unknown)} (choose from {', '.join(known)})")
    runs = args.runs or (QUICK_RUNS if args.quick else RUNS)
    warmup = QUICK_WARMUP if args.quick else WARMUP
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cvexport-tvzoo-"))
    work.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, flush=True)

    cpu = cpu_line()
    from cvexport.cpu import cpu_info

    out_json = Path(args.out) / f"{NAME}.json"
    kept = {}
    if args.models and out_json.exists():  # a partial run: the other models' results stay
        import json

        previous = json.loads(out_json.read_text())
        kept = {k: {"run_started": previous["started"], "commit": previous.get("commit", "unknown"), **v}
                for k, v in previous["models"].items() if k not in names}
    record: dict[str, Any] = {
        "cpu": cpu, "cvexport_cpu": cpu_info(),
        "machine_note": "shared with other jobs while measured (2 cores; other helpers building and testing)",
        "threads": THREADS, "runs": runs, "warmup": warmup, "quick": args.quick, "versions": library_versions(),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": cvexport_commit(), "models": {},
    }
    log(f"measuring on {describe(cpu)}; {THREADS} thread per pipeline; work folder {work}")
    started = time.perf_counter()
    for name in names:
        zoo = known[name]
        log(f"== {name} ({zoo.task}, {zoo.side}x{zoo.side})")
        classes_n = CLASS_COUNTS[zoo.task]
        head_classes = classes_n + 1 if zoo.task == "detection" else classes_n
        classes = work / f"classes-{zoo.task}.txt"
        classes.write_text("\n".join(f"class_{chr(ord('a') + i)}" for i in range(classes_n)) + "\n")
        weights = work / f"{name}.pth"
        state = test_weights(zoo, head_classes)
        torch.save(state, weights)
        entry: dict[str, Any] = {"task": zoo.task, "input": f"{zoo.side}x{zoo.side}", "classes": classes_n,
                                 "run_started": record["started"], "commit": record["commit"], "builds": {}}
        precisions = ["fp32"] if args.quick else ["fp32", "fp16"] + (["int8"] if zoo.int8 else [])
        for precision in precisions:
            build = build_bundle(zoo, precision, weights, classes, work / f"{name}-{precision}", log)
            if "parity" in build:
                build["parity_rows"] = parity_rows(zoo.task, build["parity"])
                build["parity_passed"] = build["parity"]["passed"]
                build["parity_tolerance"] = build["parity"]["tolerance"]
                build["parity_cpu"] = build["parity"]["cpu"]
                del build["parity"]
            entry["builds"][precision] = build
        fp32 = entry["builds"]["fp32"]
        if "bundle" in fp32:
            try:
                latency = measure_latency(zoo, Path(fp32["bundle"]), state, head_classes, work, runs, warmup, log)
                entry["latency"] = latency
                log(f"  p50 ms {latency['p50_ms']}; speed-up vs eager {latency['speedup_vs_torch_eager']}")
            except Exception as exc:  # recorded, and the other models still measured
                entry["latency"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
                log(f"  latency not measured: {entry['latency']['error']}")
        else:
            entry["latency"] = {"error": "no fp32 bundle: " + fp32.get("error", "")}
        record["models"] = {m.name: ({**kept, **record["models"], name: entry})[m.name] for m in MODELS
                            if m.name in kept or m.name in record["models"] or m.name == name}
        record["seconds"] = round(time.perf_counter() - started, 1)
        _write_quietly(args.out, record)
    write_results(args.out, NAME, record, markdown(record))
    return 0


def _write_quietly(out: str, record: dict[str, Any]) -> None:
    """The results so far, without printing the table (printed once, at the end)."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        write_results(out, NAME, record, markdown(record))


# ----------------------------------------------------------------------------- the table
def _ms(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "-"


def _graph_cells(graph: dict[str, Any]) -> str:
    shapes = " ".join("[" + ", ".join(str(d) for d in shape) + "]" for shape in graph.get("input_shapes", []))
    check = tensorrt_text(graph["tensorrt"]) if "tensorrt" in graph else "-"
    return f"{graph['mb']:.1f} | {graph['nodes']} | {graph['op_types']} | {shapes or '-'} | {check}"


def markdown(record: dict[str, Any]) -> str:
    cpu = record["cpu"]
    versions = record["versions"]
    lines = [
        "# torchvision's builders through cvexport (issue #24): parity, latency, graphs",
        "",
        f"CPU: **{describe(cpu)}** (lscpu model name; AVX-512 / AVX-VNNI / AMX flags from /proc/cpuinfo). "
        f"The machine was {record['machine_note']}. torch {versions.get('torch')}, torchvision "
        f"{versions.get('torchvision')}, onnxruntime {versions.get('onnxruntime')}; {record['threads']} thread per "
        f"pipeline; cvexport {record.get('commit', 'unknown')}; started {record['started']}, "
        f"{record.get('seconds', 0):.0f} s in all"
        + ("; **--quick: a check of the script, not a measurement**" if record["quick"] else "") + ".",
        "",
    ]
    runs: dict[str, list[str]] = {}
    for name, entry in record["models"].items():
        run = f"run started {entry.get('run_started', record['started'])} on cvexport " \
              f"{entry.get('commit', record.get('commit', 'unknown'))}"
        runs.setdefault(run, []).append(name)
    if len(runs) > 1:
        lines += ["Models measured in more than one run (each model's figures, ratios included, come from one run): "
                  + "; ".join(f"{run}: {', '.join(names)}" for run, names in runs.items()) + ".", ""]
    lines += [
        "Weights: deterministic and non-flat, nothing downloaded (detectors: tests/detector_weights.py; classifiers "
        "and segmenters: fan-in scaled layers, seed 0, the head scaled to a logit spread of 2 — torchvision's own "
        "seeded initialisation gives mobilenet_v3_large and efficientnet_b0 logits that differ by 1e-10, every "
        "probability 1/C, which would make parity compare ties). Classes: 3 for detectors (+ background), 10 for "
        "classifiers, 4 for segmenters. RetinaNet, FCOS and the segmenters are built at 256x256 to keep the run "
        "affordable (their defaults are 800 and 520); SSD300 and SSDlite320 have fixed sizes; classifiers run at 224.",
        "",
        "## Parity (the build's own check, read from each bundle's parity.json)",
        "",
        "Reference: torch fp32. For detectors that is torchvision's own inference (`model.eval()(images)`: its "
        "transform, anchors and `postprocess_detections`) at the bundle's thresholds (torchvision's defaults); "
        "detections matched as sets (class, IoU, score). Columns are the numbers of the build's `parity` log "
        "lines: detectors matched/total, min IoU, max |dscore|; classifiers top-1 agreement, max |dprob|; "
        "segmenters pixel agreement. 8 pictures at batch 1 and at batch 4 (32 for classifiers).",
        "",
        "| model | input | precision | graph | batch 1 | batch 4 | gate | build s |",
        "| --- | --- | --- | --- | --- | --- | --- | ---: |",
    ]
    for name, entry in record["models"].items():
        for precision, build in entry["builds"].items():
            if "error" in build:
                error = build["error"].replace("|", "\\|")  # a table cell
                lines.append(f"| {name} | {entry['input']} | {precision} | - | build refused: {error} "
                             f"| | FAIL (exit {build['exit_code']}) | {build['seconds']:.0f} |")
                continue
            graphs: dict[str, dict] = {}
            for row in build["parity_rows"]:
                graphs.setdefault(row["graph"], {})[row["batch"]] = row
            for graph, by_batch in graphs.items():
                if None in by_batch:  # a graph the build did not check on this CPU
                    cells, gate = [by_batch[None]["text"], ""], "not checked"
                else:
                    cells = [by_batch[b]["text"] if b in by_batch else "-" for b in (1, 4)]
                    gate = "PASS" if all(row["passed"] for row in by_batch.values()) else "FAIL"
                lines.append(f"| {name} | {entry['input']} | {precision} | {graph} | {cells[0]} | {cells[1]} | "
                             f"{gate} | {build['seconds']:.0f} |")
    tolerances = {(entry["task"], precision): build["parity_tolerance"] for entry in record["models"].values()
                  for precision, build in entry["builds"].items() if "parity_tolerance" in build}
    if tolerances:
        lines += ["", "The gates' tolerances (cvexport's, per task and precision): " + "; ".join(
            f"{task} {precision}: " + ", ".join(f"{k} {v}" for k, v in tolerance.items() if v is not None)
            for (task, precision), tolerance in tolerances.items()) + "."]
    if any("int8" in entry["builds"] for entry in record["models"].values()):
        lines += ["", "INT8: the parity gate only confirms it is the same model (scores move, detections near the "
                  "threshold come and go); cvexport's INT8 accuracy gate is the task metric (`verify --data`: within "
                  "1 point of fp32), which these builds skip: test weights have no training data to measure it on."]
    lines += [
        "",
        "## Latency at batch 1 (p50 ms, one run, interleaved)",
        "",
        f"From the same uint8 frame at the network's size to the answer; {record['warmup']} warm-up + "
        f"{record['runs']} runs per pipeline, in turns. Bundle: the fp32 bundle's graph on ONNX Runtime (numpy "
        "normalization; decode + NMS, softmax or argmax in the graph). Eager: torchvision's model in torch (detectors "
        "called as `model([image])`, its transform and Python post-processing included; classifiers + softmax; "
        "segmenters `['out']` + argmax). torchvision export: `torch.onnx.export(model, ..., dynamo=False)` at a "
        "fixed batch 1 and size (as torchvision's test/test_onnx.py), same opset as the bundle, on ONNX Runtime. "
        "Speed-up = eager p50 / pipeline p50, within this run.",
        "",
        "| model | input | bundle ORT ms | torch eager ms | torchvision export ORT ms | bundle vs eager | "
        "export vs eager | bundle vs export |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for name, entry in record["models"].items():
        latency = entry.get("latency", {})
        if "error" in latency:
            lines.append(f"| {name} | {entry['input']} | not measured: {latency['error']} | | | | | |")
            continue
        p50, speed = latency["p50_ms"], latency["speedup_vs_torch_eager"]
        export = p50.get(EXPORT)
        export_cell = _ms(export) if export is not None else latency.get("torchvision_export", "-")
        versus = f"{export / p50[BUNDLE]:.2f}x" if export else "-"
        lines.append(f"| {name} | {entry['input']} | {_ms(p50[BUNDLE])} | {_ms(p50[EAGER])} | {export_cell} | "
                     f"{speed[BUNDLE]:.2f}x | {f'{speed[EXPORT]:.2f}x' if EXPORT in speed else '-'} | {versus} |")
        said = "; ".join(f"{pipeline}: " + ", ".join(f"{k} {v}" for k, v in answer.items())
                         for pipeline, answer in latency["answers"].items())
        notes.append(f"- {name}: {said}")
    lines += ["", "What each pipeline answered on the timed frame (the three compute the same thing; the weights "
              "are not flat):", "", *notes]
    lines += [
        "",
        "## Graphs (size on disk, nodes with Loop/If bodies, distinct op types)",
        "",
        "Input: the graph's input shape (torchvision's export traces the list of one image, so its input is one "
        "image and its batch is not a dimension). TensorRT: what `cvexport inspect` (its TensorRT "
        "operator-table check, no TensorRT needed) says of each graph.",
        "",
        "| model | bundle MB | nodes | op types | input | TensorRT | torchvision export MB | nodes | op types | input "
        "| TensorRT |",
        "| --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name, entry in record["models"].items():
        latency = entry.get("latency", {})
        if "bundle_graph" not in latency:
            continue
        ours, theirs = latency["bundle_graph"], latency.get("torchvision_graph")
        their_cells = _graph_cells(theirs) if theirs else f"{latency.get('torchvision_export', '-')} | | | |"
        lines.append(f"| {name} | {_graph_cells(ours)} | {their_cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
