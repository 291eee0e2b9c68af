"""``cvexport build``: trained weights -> a verified bundle directory, written atomically."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from cvexport.atomic import atomic_path, check_dir_target
from cvexport.bundle import BUNDLE_FORMAT, MANIFEST, ONNX_FILE, PARITY_FILE, WEIGHTS_FILE, library_versions, load_bundle
from cvexport.digest import sha256_file
from cvexport.cpu import cpu_info, describe_cpu
from cvexport.errors import CvexportError
from cvexport.int8_graphs import INT8_CPU_GRAPHS
from cvexport.precisions import PRECISIONS
from cvexport.registry import get_spec
from cvexport.tasks import get_task
from cvexport.backends.trt.compat import TRT_VERSION, check_model

CALIB_METHODS = ("minmax", "entropy", "percentile")
INPUT_FORMATS = ("float", "uint8")
PARITY_BATCHES = (1, 4)


@dataclass(frozen=True)
class BuildOptions:
    """What ``build`` makes. ``task_options`` holds the options the model's task owns (see
    ``Task.options``: detection's ``nms`` and thresholds, style's ``style``); its task refuses
    the others."""

    model: str
    precision: str = "fp32"
    max_batch: int = 8
    input_format: str = "float"
    weights: str | None = None
    out: str | None = None
    verify_images: int = 64  # val images for the task metric recorded in the report; 0 skips it
    calib_images: int | None = None  # INT8 only: calibration images from the model's own train split (None: 128)
    calib_method: str | None = None  # INT8 only: None = entropy for TensorRT's graph, minmax for CPU's
    force: bool = False  # replace --out even when it holds files that are not a bundle
    engine: str = "auto"  # auto: also build (or reuse) a TensorRT engine where TensorRT works; trt: require it; ort: none
    # uint8 input only: (width, height) of the camera's frames, letterboxed to the network in the graph
    frame_size: tuple[int, int] | None = None
    task_options: Mapping[str, Any] = field(default_factory=dict)  # only the options given

    @classmethod
    def of(cls, **values: Any) -> "BuildOptions":
        """Options from flat values: this class's fields, and the rest as task options
        (``BuildOptions.of(model="ssd", nms="efficient")``); None values count as not given."""
        own = {f.name for f in fields(cls)}
        task = {name: value for name, value in values.items() if name not in own and value is not None}
        return cls(**{name: value for name, value in values.items() if name in own}, task_options=task)

    def resolved_out(self) -> Path:
        if self.out:
            return Path(self.out)
        suffix = get_task(get_spec(self.model).task).out_suffix(self)
        suffix += "" if self.input_format == "float" else f"-{self.input_format}"
        suffix += "" if self.frame_size is None else f"-{self.frame_size[0]}x{self.frame_size[1]}"
        return Path("bundles") / f"{self.model}-{self.precision}{suffix}"


class ParityError(CvexportError):
    exit_code = 3


def is_bundle_dir(path: Path) -> bool:
    """Whether ``path`` is a directory its manifest calls a cvexport bundle (so a rebuild may replace it)."""
    try:
        return json.loads((Path(path) / MANIFEST).read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_options(options: BuildOptions) -> None:
    if options.precision not in PRECISIONS:
        raise CvexportError(f"unknown precision '{options.precision}'; choose one of: {', '.join(PRECISIONS)}")
    if options.input_format not in INPUT_FORMATS:
        raise CvexportError(f"unknown --input '{options.input_format}'; choose one of: {', '.join(INPUT_FORMATS)}")
    if not 1 <= options.max_batch <= 256:
        raise CvexportError(f"--max-batch {options.max_batch} must be between 1 and 256")
    if options.calib_method is not None and options.calib_method not in CALIB_METHODS:
        raise CvexportError(f"unknown --calib-method '{options.calib_method}'; choose one of: {', '.join(CALIB_METHODS)}")
    if options.calib_images is not None and options.calib_images < 1:
        raise CvexportError(f"--calib-images {options.calib_images} must be at least 1")
    if options.frame_size is not None:
        if options.input_format != "uint8":
            raise CvexportError("--frame-size makes the graph take the camera's uint8 frames: add --input uint8")
        width, height = options.frame_size
        if not (16 <= width <= 8192 and 16 <= height <= 8192):
            raise CvexportError(f"--frame-size {width}x{height} is outside 16..8192 pixels per side")
    if options.precision != "int8":
        given = [flag for flag, value in (("--calib-images", options.calib_images), ("--calib-method", options.calib_method))
                 if value is not None]
        if given:
            raise CvexportError(f"{' and '.join(given)} apply only to --int8 builds; add --int8 or drop them")


def input_contract(spec, options: BuildOptions) -> dict[str, Any]:
    height, width = spec.input_size
    uint8 = options.input_format == "uint8"
    contract = {
        "name": "images" if uint8 else "input",
        "layout": "NHWC" if uint8 else "NCHW",
        "dtype": "uint8" if uint8 else "float32",
        "height": height,
        "width": width,
        "channels": "RGB",
        "max_batch": options.max_batch,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "normalization": "in graph: (x / 255 - mean) / std" if uint8 else "by caller: (x / 255 - mean) / std",
        "resize": "letterbox (keep aspect, pad grey 114, centred)",
    }
    if options.frame_size is not None:
        # The graph takes the camera's frames as they come and letterboxes them itself.
        contract["width"], contract["height"] = options.frame_size
        contract["letterbox"] = {"in_graph": True, "network_width": width, "network_height": height,
                                 "resize": "k x k box prefilter when shrinking 2x or more (AveragePool), "
                                           "then linear, half_pixel (ONNX Resize)"}
        contract["resize"] = (f"letterbox in graph from {options.frame_size[0]}x{options.frame_size[1]} frames "
                              f"to {width}x{height} (keep aspect, pad grey 114, centred); other sizes are "
                              "letterboxed to the frame size first by the runtime")
    return contract


def run_parity(bundle_dir: Path, precision: str, log: Callable[[str], None],
               frames: list | None = None) -> dict[str, Any]:
    """ONNX Runtime vs the PyTorch fp32 reference on val images at batch 1 and 4, for every
    graph in the bundle (the TensorRT-ready one, and the CPU form where there is one); ``frames``
    (uint8 RGB pictures) default to the task's parity frames of the model's own data."""
    from cvexport.registry import bundle_spec
    from cvexport.runtime import create_runner
    from cvexport.backends.ort.runner import OrtRunner
    from cvexport.runtime.predictor import prepare_batch

    bundle = load_bundle(bundle_dir)
    task = get_task(bundle.task)
    if frames is None:
        frames = task.parity_frames(bundle_spec(bundle))
    reference_runner = create_runner(bundle, "torch")
    tolerance = task.TOLERANCES[precision]
    cpu = cpu_info()
    report: dict[str, Any] = {"reference": "torch fp32", "tolerance": tolerance.__dict__, "cpu": cpu, "graphs": {}}
    passed = True
    failures: list[str] = []
    compared_nothing = []  # failing checks that compared nothing (the advice differs)
    for graph in ("onnx", *(g.key for g in INT8_CPU_GRAPHS)):
        if graph not in bundle.manifest:
            continue
        made_for = next((g.isa_class for g in INT8_CPU_GRAPHS if g.key == graph), None)
        if made_for not in (None, cpu["isa_class"]):
            # Its kernels compute other numbers here (16-bit saturation without VNNI): checking it
            # on this CPU would judge the CPU, not the graph. It is checked where it runs.
            note = (f"not checked on this CPU ({describe_cpu(cpu)}): it is made for {made_for} CPUs; "
                    f"run 'cvexport verify' on one")
            report["graphs"][bundle.manifest[graph]["file"]] = {"skipped": note}
            log(f"parity {bundle.manifest[graph]['file']}: {note}")
            continue
        test_runner = OrtRunner(bundle, graph=graph)
        for batch in PARITY_BATCHES:
            if batch > bundle.max_batch:
                continue
            parity = task.new_parity(precision, bundle.manifest)
            # Fewer pictures than the batch (a small user dataset): repeated to fill one, so the
            # batch is still checked rather than skipped by the loop below.
            pictures = frames if len(frames) >= batch or not frames else (frames * batch)[:batch]
            for start in range(0, len(pictures) - batch + 1, batch):
                feed = prepare_batch(bundle, pictures[start:start + batch]).feed
                parity.add(reference_runner.infer(feed), test_runner.infer(feed))
            ok = parity.passed()
            passed &= ok
            if not ok:
                compared_nothing.append(parity.compared() == 0)
                # A check of nothing is not outside the tolerance; its summary says what it is.
                outside = "" if compared_nothing[-1] else \
                    f", outside the {precision} tolerance ({_tolerance_text(tolerance)})"
                failures.append(f"parity of {bundle.manifest[graph]['file']} at batch {batch}: {parity.summary()}"
                                f"{outside}")
            report["graphs"].setdefault(bundle.manifest[graph]["file"], {})[str(batch)] = {**parity.to_dict(), "passed": ok}
            log(f"parity {bundle.manifest[graph]['file']} ({precision}, onnxruntime cpu) batch {batch}: "
                f"{parity.summary()} -> {'PASS' if ok else 'FAIL'}")
    report["passed"] = passed
    report["failures"] = failures
    report["compared_nothing"] = bool(compared_nothing) and all(compared_nothing)
    return report


def _tolerance_text(tolerance) -> str:
    return ", ".join(f"{key} {value}" for key, value in tolerance.__dict__.items() if value is not None)


# What to try when a precision's gate fails.
GATE_ADVICE = {
    "int8": "try more calibration images (--calib-images 256) or another --calib-method (entropy, percentile, minmax), "
            "or build --fp16",
    "fp16": "build --fp32, and report the model if fp16 should hold",
    "fp32": "this is a bug in the export: please report it with the lines above",
}
# When the parity checks failed only for comparing nothing, the export is not in question.
NOTHING_COMPARED_ADVICE = (
    "with nothing compared the export is neither confirmed nor refuted: check that the weights give results on "
    "such pictures ('cvexport run' on a few), that --frame-size is the camera's real frame size and, for a "
    "detector, that --score-threshold is below the scores it gives"
)
# A --frame-size whose frames give the network less than this fraction of its input's pixels
# (the rest is upscaling or padding) leaves it too little picture to find objects in.
MIN_FRAME_DETAIL = 0.25


def frame_size_warning(spec, frame_size: tuple[int, int] | None) -> str | None:
    """A line to warn with when ``frame_size`` frames, letterboxed to the network input, bring it
    less than MIN_FRAME_DETAIL of its pixels' worth of picture (None otherwise). Upscaling adds
    no detail, so the picture's worth is the frame's own pixels where it is enlarged."""
    from cvexport.images import letterbox_fit

    if frame_size is None:
        return None
    height, width = spec.input_size
    frame_w, frame_h = frame_size
    new_w, new_h, _, _ = letterbox_fit(frame_w, frame_h, width, height)
    detail_w, detail_h = min(frame_w, new_w), min(frame_h, new_h)
    fraction = detail_w * detail_h / (width * height)
    if fraction >= MIN_FRAME_DETAIL:
        return None
    return (f"--frame-size {frame_w}x{frame_h} gives the {width}x{height} network {detail_w}x{detail_h} pixels of "
            f"picture ({fraction:.1%} of its input; the rest is upscaling or padding): expect few or no detections "
            "and a poor task metric; build with the camera's real frame size")


# INT8's gain is measured at build time, on the build machine's CPU, at batch 1.
GAIN_WARMUP, GAIN_ROUNDS = 3, 15


def measure_int8_gain(bundle_dir: Path, fp32_graph, log: Callable[[str], None]) -> dict[str, Any]:
    """Inference time of the INT8 graph ONNX Runtime runs on this CPU against the same network
    in fp32, timed alternately (so a busy neighbour slows both alike), median of each; the
    record says plainly whether INT8 is faster here."""
    import statistics

    from cvexport.int8_gain import int8_statement, int8_vs_fp32
    from cvexport.backends.ort.loader import create_session
    from cvexport.backends.ort.runner import OrtRunner
    from cvexport.runtime.predictor import prepare_batch

    from cvexport.registry import bundle_spec

    bundle = load_bundle(bundle_dir)
    frame = get_task(bundle.task).parity_frames(bundle_spec(bundle))[:1]
    feed = prepare_batch(bundle, frame).feed
    int8 = OrtRunner(bundle)
    fp32 = create_session(fp32_graph.SerializeToString(), ["CPUExecutionProvider"])
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for round_ in range(GAIN_WARMUP + GAIN_ROUNDS):
        for name, run in (("fp32", lambda: fp32.run(None, feed)), ("int8", lambda: int8.infer(feed))):
            start = time.perf_counter()
            run()
            if round_ >= GAIN_WARMUP:
                times[name].append((time.perf_counter() - start) * 1e3)
    gain = int8_vs_fp32(statistics.median(times["fp32"]), statistics.median(times["int8"]))
    gain["int8_graph"] = bundle.manifest[int8.graph]["file"]
    gain["statement"] = int8_statement(gain)
    log(f"{gain['statement']} ({gain['int8_graph']}, batch 1)")
    return gain


def build(options: BuildOptions, log: Callable[[str], None] = print) -> Path:
    """Export, check and write a bundle; returns its directory. Raises CvexportError on bad input
    and ParityError when ONNX Runtime disagrees with PyTorch (nothing is written then)."""
    import onnx

    started = time.perf_counter()
    # Weights fine-tuned on a user's dataset bring their own class names and input size.
    spec = get_spec(options.model).for_weights(options.weights)
    _check_options(options)
    if (warning := frame_size_warning(spec, options.frame_size)) is not None:
        log(f"warning: {warning}")
    if options.engine not in ENGINE_CHOICES:
        raise CvexportError(f"unknown engine choice '{options.engine}'; choose one of: {', '.join(ENGINE_CHOICES)}")
    if options.engine == "trt":
        _require_tensorrt()  # fail before spending a minute on the export
    out = check_dir_target(options.resolved_out(), is_bundle_dir, "cvexport bundle", force=options.force)
    task = get_task(spec.task)
    task.check_options(spec, options)
    prepared = task.prepare_weights(spec, options, log)
    weights = prepared or (Path(options.weights) if options.weights else spec.weights_path())
    model = spec.load_model(weights)
    data = _training_data(spec, log)
    log(f"exporting {spec.name} ({spec.description}) as {options.precision}{task.describe(options)}, "
        f"batch 1..{options.max_batch}, {options.input_format} input")
    int8 = None
    if options.precision == "int8":
        from cvexport.export.precision import Int8Options

        # Too few images: the quantizer's CalibrationWarning reaches the log once, through warn=log.
        int8 = Int8Options(method=options.calib_method, **({} if options.calib_images is None
                                                            else {"calib_images": options.calib_images}))
    graphs = task.export_graphs(model, spec, options, int8=int8, warn=log)
    for candidate in graphs.values():
        onnx.checker.check_model(candidate, full_check=True)
    fp32_graph = graphs.pop("fp32", None)  # INT8 only: to measure INT8's gain on this CPU
    graph = graphs["onnx"]
    compat = check_model(graph)
    if not compat.ok:
        raise CvexportError(
            "the exported graph would not build on TensorRT: "
            + "; ".join(f.message for f in compat.by_severity("error"))[:400]
            + " (run 'cvexport inspect' on the ONNX for the full report)"
        )
    log(f"TensorRT compatibility ({TRT_VERSION} operator table): OK, "
        f"{len(compat.by_severity('warning'))} warnings")
    with atomic_path(out, is_bundle_dir, "cvexport bundle", force=options.force) as tmp:
        tmp.mkdir()
        files = {"onnx": ONNX_FILE, **{g.key: g.file for g in INT8_CPU_GRAPHS}}
        for key, candidate in graphs.items():
            onnx.save_model(candidate, str(tmp / files[key]))
        shutil.copyfile(weights, tmp / WEIGHTS_FILE)
        manifest = {
            "format": BUNDLE_FORMAT,
            "model": spec.name,
            "task": spec.task,
            "description": spec.description,
            "precision": options.precision,
            "onnx": {"file": ONNX_FILE, "sha256": sha256_file(tmp / ONNX_FILE), "opset": graph.opset_import[0].version},
            **{g.key: {"file": g.file, "sha256": sha256_file(tmp / g.file), "form": g.description,
                       "isa_class": g.isa_class} for g in INT8_CPU_GRAPHS if g.key in graphs},
            "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(tmp / WEIGHTS_FILE), "source": Path(weights).name},
            "input": input_contract(spec, options),
            "outputs": [
                {"name": o.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(o.type.tensor_type.elem_type).name,
                 "shape": [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim]}
                for o in graph.graph.output
            ],
            "class_names": list(spec.class_names),
            **({"dataset": spec.dataset} if spec.dataset is not None else {}),
            **task.manifest_entries(spec, options),
            "trt_compat": {"ok": compat.ok, "checked_against": TRT_VERSION,
                           "warnings": [f.message for f in compat.by_severity("warning")]},
            "versions": library_versions(),
        }
        if int8 is not None:
            manifest["int8"] = {"calibration_images": int8.calib_images, "calibration_split": "train",
                                "method": int8.method or "entropy (onnx), minmax (CPU graphs)",
                                "activations": "symmetric int8 (onnx)", "weights": "per-channel symmetric int8",
                                "bias": "float"}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        report = run_parity(tmp, options.precision, log, frames=_parity_pictures(data) if data else None)
        only_nothing_compared = report["compared_nothing"]  # no failure yet, or only checks of nothing
        custom = spec.dataset is not None or tuple(spec.class_names) != tuple(get_spec(spec.name).class_names)
        if options.verify_images and custom and data is None:
            # The model's own val split has other classes than these weights: its metric would mean nothing.
            log("task metric not measured: the weights' training data is not at hand; measure it with "
                f"'cvexport verify {out} --data DIR'")
        elif options.verify_images:
            from cvexport.verify import verify_rows

            # Some task metrics are costly (style: VGG-19 losses per output); the task may cap the count.
            images = min(options.verify_images, task.build_verify_images or options.verify_images)
            report["verify"] = verify_rows(tmp, ["ort"], val_images=images, log=log, data=data)
            # The build's parity gate is run_parity above; here the task metric gates, and a
            # wider-sample parity shortfall is recorded and said, not hidden.
            for row in report["verify"]:
                if not row["metric_passed"]:
                    report["passed"] = False
                    only_nothing_compared = False
                    report["failures"] += [f"verify {row['backend']} on {images} val images: {reason}"
                                           for reason in row["reasons"] if not reason.startswith("parity:")]
                elif not row["reference"] and not row["parity_passed"]:
                    log(f"warning: on {images} val images {row['backend']}: {row['parity_summary']}, "
                        f"below the {options.precision} parity tolerance (see parity.json 'verify'); the task "
                        "metric is within tolerance")
        if fp32_graph is not None:
            report["int8_vs_fp32"] = measure_int8_gain(tmp, fp32_graph, log)
        report["build_seconds"] = round(time.perf_counter() - started, 1)
        (tmp / PARITY_FILE).write_text(json.dumps(report, indent=2) + "\n")
        if not report["passed"]:
            advice = NOTHING_COMPARED_ADVICE if only_nothing_compared else GATE_ADVICE[options.precision]
            raise ParityError(
                f"build check failed: {'; '.join(report['failures'])}. Nothing was written to {out}; {advice}"
            )
    log(f"wrote {out} in {time.perf_counter() - started:.1f} s")
    if options.engine != "ort":
        _engine_step(out, log)
    return out


ENGINE_CHOICES = ("auto", "trt", "ort")
PARITY_PICTURES = 8


def _training_data(spec, log: Callable[[str], None]):
    """The user dataset the weights were fine-tuned on (recorded in their checkpoint), opened and
    checked, when it is still where it was; None for the shipped data or when it is not."""
    if spec.dataset is None:
        return None
    from cvexport.verify import recorded_dataset

    try:
        data = recorded_dataset(spec.dataset, spec.task, spec.class_names)
    except CvexportError as exc:
        log(f"note: {exc}")
        return None
    log(f"checking on the val split of {data.describe()}")
    return data


def _parity_pictures(data) -> list:
    """Up to PARITY_PICTURES pictures of the user's data for the parity check: val first, then train."""
    from cvexport.images import load_image

    entries = (data.splits["val"] + data.splits["train"])[:PARITY_PICTURES]
    return [load_image(entry.image) for entry in entries]


def _require_tensorrt() -> None:
    from cvexport.backends.trt.environment import trt_unavailable_reason

    reason = trt_unavailable_reason()
    if reason is not None:
        raise CvexportError(f"--backend trt: {reason}")


def _engine_step(out: Path, log: Callable[[str], None]) -> None:
    """Build (or reuse) the bundle's TensorRT engine where TensorRT and a GPU are usable."""
    from cvexport.backends.trt.builder import ensure_engine
    from cvexport.backends.trt.environment import trt_unavailable_reason
    from cvexport.backends.trt.settings import EngineOptions

    reason = trt_unavailable_reason()
    if reason is not None:
        log(f"TensorRT engine not built ({reason}); the bundle runs on ONNX Runtime (--backend ort)")
        return
    bundle = load_bundle(out)
    log(f"TensorRT engine: {ensure_engine(bundle, EngineOptions.from_bundle(bundle), log)}")

