"""The build's gates: the written bundle is checked against the PyTorch fp32 reference before it
is moved into place, and a failure keeps it from landing.

Two gates, each its own sample, recorded in ``parity.json``:

- parity (:func:`run_parity`): every graph of the bundle against the reference on a few
  pictures at batch 1 and 4, within the precision's tolerance;
- the task metric (``verify``'s rows on val images, optional): within verify's allowed drop. Its
  wider-sample parity is recorded and, when short of the tolerance, said, not gated.

Both compare through :func:`cvexport.compare.compare_runners` with the one reference runner the
build made from its own torch model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cvexport.bundle import Bundle, load_bundle
from cvexport.compare import compare_runners
from cvexport.cpu import cpu_info, describe_cpu
from cvexport.errors import CvexportError
from cvexport.int8_graphs import INT8_CPU_GRAPHS
from cvexport.tasks import get_task

PARITY_BATCHES = (1, 4)
PARITY_PICTURES = 8
# The reference's name among the runners compared (the parity report says "torch fp32").
REFERENCE = "torch"

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


class ParityError(CvexportError):
    exit_code = 3


def run_parity(bundle: Bundle | Path, precision: str, log: Callable[[str], None],
               frames: list | None = None, reference=None) -> dict[str, Any]:
    """ONNX Runtime vs the PyTorch fp32 reference on val images at batch 1 and 4, for every
    graph in the bundle (the TensorRT-ready one, and the CPU form where there is one); ``frames``
    (uint8 RGB pictures) default to the task's parity frames of the model's own data.
    ``reference``: an open torch runner of the bundle (default: one made here).

    The reference runs each batch once for all graphs; the report and the log still go graph
    by graph, then batch by batch."""
    from cvexport.backends.ort.runner import OrtRunner
    from cvexport.registry import bundle_spec
    from cvexport.runtime import create_runner

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    task = get_task(bundle.task)
    if frames is None:
        frames = task.parity_frames(bundle_spec(bundle))
    if reference is None:
        reference = create_runner(bundle, "torch")
    tolerance = task.TOLERANCES[precision]
    cpu = cpu_info()
    report: dict[str, Any] = {"reference": "torch fp32", "tolerance": tolerance.__dict__, "cpu": cpu, "graphs": {}}
    skipped: dict[str, str] = {}  # graph key -> why it is not checked here
    checked: dict[str, Any] = {}  # graph key -> its runner
    for graph in ("onnx", *(g.key for g in INT8_CPU_GRAPHS)):
        if bundle.manifest.graph(graph) is None:
            continue
        made_for = next((g.isa_class for g in INT8_CPU_GRAPHS if g.key == graph), None)
        if made_for not in (None, cpu["isa_class"]):
            # Its kernels compute other numbers here (16-bit saturation without VNNI): checking it
            # on this CPU would judge the CPU, not the graph. It is checked where it runs.
            skipped[graph] = (f"not checked on this CPU ({describe_cpu(cpu)}): it is made for {made_for} CPUs; "
                              f"run 'cvexport verify' on one")
        else:
            checked[graph] = OrtRunner(bundle, graph=graph)
    results = {}  # (graph key, batch) -> Parity
    for batch in PARITY_BATCHES:
        if batch > bundle.max_batch:
            continue
        # Fewer pictures than the batch (a small user dataset): repeated to fill one, so the
        # batch is still checked rather than skipped by the range below.
        pictures = frames if len(frames) >= batch or not frames else (frames * batch)[:batch]
        feeds = (_feed(bundle, pictures[start:start + batch]) for start in range(0, len(pictures) - batch + 1, batch))
        parities = compare_runners({REFERENCE: reference, **checked}, REFERENCE, feeds,
                                   lambda _name: task.new_parity(precision, bundle.manifest))
        results.update({(graph, batch): parity for graph, parity in parities.items()})

    passed = True
    failures: list[str] = []
    compared_nothing = []  # failing checks that compared nothing (the advice differs)
    for graph in ("onnx", *(g.key for g in INT8_CPU_GRAPHS)):
        if bundle.manifest.graph(graph) is None:
            continue
        file = bundle.manifest.graph(graph).file
        if graph in skipped:
            report["graphs"][file] = {"skipped": skipped[graph]}
            log(f"parity {file}: {skipped[graph]}")
            continue
        for batch in PARITY_BATCHES:
            if (graph, batch) not in results:
                continue
            parity = results[graph, batch]
            ok = parity.passed()
            passed &= ok
            if not ok:
                compared_nothing.append(parity.compared() == 0)
                # A check of nothing is not outside the tolerance; its summary says what it is.
                outside = "" if compared_nothing[-1] else \
                    f", outside the {precision} tolerance ({_tolerance_text(tolerance)})"
                failures.append(f"parity of {file} at batch {batch}: {parity.summary()}{outside}")
            report["graphs"].setdefault(file, {})[str(batch)] = {**parity.to_dict(), "passed": ok}
            log(f"parity {file} ({precision}, onnxruntime cpu) batch {batch}: "
                f"{parity.summary()} -> {'PASS' if ok else 'FAIL'}")
    report["passed"] = passed
    report["failures"] = failures
    report["compared_nothing"] = bool(compared_nothing) and all(compared_nothing)
    return report


def _feed(bundle: Bundle, pictures: list) -> dict:
    from cvexport.runtime.predictor import prepare_batch

    return prepare_batch(bundle, pictures).feed


def _tolerance_text(tolerance) -> str:
    return ", ".join(f"{key} {value}" for key, value in tolerance.__dict__.items() if value is not None)


@dataclass
class GateReport:
    """The gates' record (``parity.json``'s content, which the build completes with its timings)
    and whether every failure so far is a check that compared nothing (the advice differs)."""

    report: dict[str, Any]
    only_nothing_compared: bool

    def raise_if_failed(self, out: Path, precision: str) -> None:
        if self.report["passed"]:
            return
        advice = NOTHING_COMPARED_ADVICE if self.only_nothing_compared else GATE_ADVICE[precision]
        raise ParityError(
            f"build check failed: {'; '.join(self.report['failures'])}. Nothing was written to {out}; {advice}"
        )


def run_gates(bundle: Bundle, reference, spec, task, options, data, out: Path,
              log: Callable[[str], None]) -> GateReport:
    """Both gates on the bundle written (not yet moved to ``out``): parity on ``data``'s pictures
    (the user dataset the weights were trained on, None for the model's own), then the task
    metric on ``options.verify_images`` val images."""
    from cvexport.registry import get_spec

    report = run_parity(bundle, options.precision, log, frames=_parity_pictures(data) if data else None,
                        reference=reference)
    # No failure yet, or only checks of nothing.
    gate = GateReport(report, only_nothing_compared=report["compared_nothing"])
    custom = spec.dataset is not None or tuple(spec.class_names) != tuple(get_spec(spec.name).class_names)
    if options.verify_images and custom and data is None:
        # The model's own val split has other classes than these weights: its metric would mean nothing.
        log("task metric not measured: the weights' training data is not at hand; measure it with "
            f"'cvexport verify {out} --data DIR'")
    elif options.verify_images:
        _metric_gate(gate, bundle, reference, task, options, data, log)
    return gate


def _metric_gate(gate: GateReport, bundle: Bundle, reference, task, options, data, log: Callable[[str], None]) -> None:
    from cvexport.verify import verify_rows

    report = gate.report
    # Some task metrics are costly (style: VGG-19 losses per output); the task may cap the count.
    images = min(options.verify_images, task.build_verify_images or options.verify_images)
    report["verify"] = verify_rows(bundle, ["ort"], val_images=images, log=log, data=data, reference=reference)
    # The build's parity gate is run_parity; here the task metric gates, and a
    # wider-sample parity shortfall is recorded and said, not hidden.
    for row in report["verify"]:
        if not row["metric_passed"]:
            report["passed"] = False
            gate.only_nothing_compared = False
            report["failures"] += [f"verify {row['backend']} on {images} val images: {reason}"
                                   for reason in row["reasons"] if not reason.startswith("parity:")]
        elif not row["reference"] and not row["parity_passed"]:
            log(f"warning: on {images} val images {row['backend']}: {row['parity_summary']}, "
                f"below the {options.precision} parity tolerance (see parity.json 'verify'); the task "
                "metric is within tolerance")


def training_data(spec, log: Callable[[str], None]):
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
