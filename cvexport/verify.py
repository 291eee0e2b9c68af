"""``cvexport verify``: does a bundle still do its job on each backend?

Two questions per backend, answered on the model's val split and compared with the
PyTorch fp32 reference (backend "torch") on the very same network inputs:

- task metric (the task's ``METRICS``: mAP for detection, top-1 for classification, mIoU for
  segmentation, style/content loss for style transfer) of the results in pixels of each
  original image, through the Predictor's path (letterbox, ``to_network_input``,
  ``runner.infer``, ``task.to_predictions``); a row fails when a metric is worse than torch's
  by more than ``max_drop`` (points for fractions such as mAP, percent for losses).
- output parity: the task's comparison of raw outputs (detections matched by class and IoU,
  top-1 agreement, pixel agreement, PSNR) within the tolerance of the bundle's precision.

A bundle built from weights fine-tuned on a user's dataset is measured on that dataset's val
split: the one given with ``--data DIR`` (its classes must be the bundle's), else the one its
manifest records when it is still there. The metric is the same evaluator on the same path
(COCO mAP, top-1, mIoU; VOC's void pixels left out).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from cvexport.errors import stderr_warning
from cvexport.precisions import judged_precision
from cvexport.runtime import check_backends, create_runner, open_or_skip
from cvexport.runtime.base import Runner
from cvexport.bundle import Bundle, load_bundle
from cvexport.errors import CvexportError

DEFAULT_VAL_IMAGES = 256
DEFAULT_MAX_DROP = 1.0  # points for fraction metrics (0-100 scale), percent for the others
REFERENCE = "torch"
# Precisions with no parity contract of their own borrow this one's, and say so.
FALLBACK_PRECISION = "fp16"


def tolerance_for(task, precision: str) -> tuple[Any, str | None]:
    """The task's parity tolerance of ``precision`` and, when it has none, the fallback's plus a note saying so."""
    if precision in task.TOLERANCES:
        return task.TOLERANCES[precision], None
    return task.TOLERANCES[FALLBACK_PRECISION], (
        f"no parity tolerance is defined for {precision}; using {FALLBACK_PRECISION}'s")


def _row(task, backend: str, metrics: dict[str, float], reference: dict[str, float], parity, tolerance,
         max_drop: float) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": backend, "reference": parity is None, **metrics}
    reasons = []
    for metric in task.METRICS:
        drop = metric.worsening(reference[metric.key], metrics[metric.key])
        row[f"{metric.key}_drop"] = round(drop, 4)
        if drop > max_drop:
            reasons.append(f"{metric.label} {metrics[metric.key]:.4f} is {drop:.2f} {metric.unit} worse than torch's "
                           f"{reference[metric.key]:.4f} (allowed {max_drop:g})")
    row["metric_passed"] = not reasons
    if parity is None:
        row.update(parity_passed=None, parity=None, parity_summary=None)
    else:
        row.update(parity_passed=parity.passed(tolerance), parity=parity.to_dict(), parity_summary=parity.summary())
        if not row["parity_passed"]:
            # A check of nothing is not outside the tolerance; its summary says what it is.
            outside = f", outside the tolerance {tolerance}" if parity.compared() else ""
            reasons.append(f"parity: {parity.summary()}{outside}" + "".join(f"; {f}" for f in parity.failures))
    row["passed"] = not reasons
    row["reasons"] = reasons
    return row


def recorded_dataset(record: dict[str, Any], task: str, class_names: Sequence[str]):
    """The user dataset a checkpoint or manifest records (``dataset``: format, path, sha256),
    opened and checked, with the classes the weights were trained for; a one-line error when it
    is gone or has other classes."""
    from pathlib import Path

    from cvexport.models.user_datasets import check_classes, open_dataset

    path = Path(str(record.get("path", "")))
    if not path.is_dir():
        raise CvexportError(f"the weights were trained on the {record.get('format', 'user')} dataset at {path}, which "
                            "is not there; pass --data DIR with its val split")
    data = open_dataset(task, path)
    check_classes(data, class_names, "the weights were trained for")
    recorded = record.get("sha256")
    if recorded and data.digest != recorded:
        # Measuring on changed data without saying so would pass off another split as the trained-on one.
        raise CvexportError(f"the {data.format} dataset at {path} has changed since the weights were trained on it "
                            f"(sha256 {data.digest[:12]}, recorded {str(recorded)[:12]}); pass --data DIR to "
                            "measure on it as it is now")
    return data


def bundle_dataset(bundle: Bundle, data_dir: str | None):
    """The user dataset to verify ``bundle`` on: ``data_dir`` (checked against the bundle's
    classes), else the one its manifest records; None for a bundle of the shipped data."""
    from cvexport.models.user_datasets import check_classes, open_dataset

    if data_dir is not None:
        data = open_dataset(bundle.task, data_dir, bundle.manifest.model)
        check_classes(data, bundle.class_names, f"bundle {bundle.path} was built for")
        return data
    if bundle.manifest.dataset is not None:
        return recorded_dataset(bundle.manifest.dataset, bundle.task, bundle.class_names)
    return None


def verify_rows(bundle: Bundle | str, backends: Sequence[str] = ("ort",), val_images: int | None = None,
                max_drop: float = DEFAULT_MAX_DROP, log: Callable[[str], None] | None = None,
                warn: Callable[[str], None] = stderr_warning, data=None,
                reference: Runner | None = None) -> list[dict[str, Any]]:
    """One row per backend, the torch reference first (see the module docstring).

    Each row: backend, the task's metric values, ``<key>_drop`` per metric, parity (the full
    statistics), parity_summary, metric_passed, parity_passed, passed, reasons (why it failed;
    empty when it passed). Backends that cannot run here are an error when they are the only
    one asked for, else skipped with a warning. ``data``: a user dataset
    (:class:`cvexport.models.user_datasets.UserDataset`) whose val split replaces the model's own
    (default: the one the bundle's manifest records, if any). ``reference``: an open torch runner
    of this bundle to use (the build has one), left open; by default one is made and closed here.
    """
    from cvexport.compare import compare_runners
    from cvexport.registry import get_spec
    from cvexport.runtime.predictor import finish_batch, prepare_batch
    from cvexport.tasks import get_task

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    val_images = DEFAULT_VAL_IMAGES if val_images is None else val_images
    if val_images < 1:
        raise CvexportError(f"--val-images {val_images} must be at least 1")
    if not max_drop >= 0:  # also rejects NaN
        raise CvexportError(f"--max-drop {max_drop} must be 0 or more")
    names = [n for n in check_backends(backends, allow_auto=False) if n != REFERENCE]
    if not names:
        raise CvexportError(f"{REFERENCE} is the reference every backend is compared with; name a backend to verify "
                            "against it, e.g. --backend ort")
    task = get_task(bundle.task)
    tolerance, tolerance_note = tolerance_for(task, bundle.precision)
    if data is None:
        data = bundle_dataset(bundle, None)

    runners = {REFERENCE: reference if reference is not None else create_runner(bundle, REFERENCE)}
    try:
        for name in names:
            runner, _ = open_or_skip(bundle, name, None, several=len(names) > 1, warn=warn)
            if runner is not None:
                runners[name] = runner
        if names and len(runners) == 1:
            raise CvexportError(f"none of the backends {', '.join(names)} can run here (see the warnings above)")
        if data is not None:
            images, truths = data.images_and_truths("val", val_images)
        else:
            images, truths = task.val_samples(get_spec(bundle.manifest.model), val_images)
        predictions: dict[str, list] = {name: [] for name in runners}
        # Each backend is judged at the precision it computes at (OpenVINO's bf16 on an fp32
        # bundle: fp16's tolerance), which may be coarser than the bundle's.
        judged = {name: judged_precision(bundle.precision, getattr(runner, "compute_precision", None))
                  for name, runner in runners.items() if name != REFERENCE}
        tolerances = {name: tolerance_for(task, precision) for name, precision in judged.items()}
        batches = (prepare_batch(bundle, images[start:start + bundle.max_batch])
                   for start in range(0, len(images), bundle.max_batch))
        parity = compare_runners(
            runners, REFERENCE, batches,
            lambda name: task.new_parity(judged[name] if tolerances[name][1] is None else FALLBACK_PRECISION,
                                         bundle.manifest),
            feed=lambda batch: batch.feed,
            on_outputs=lambda name, batch, outputs: predictions[name].extend(
                finish_batch(task, bundle, outputs, batch)))
    finally:
        for runner in runners.values():
            if runner is not reference:  # the caller's, still in use
                runner.close()

    if data is not None:  # e.g. VOC's void pixels are no class to score
        metrics = {name: task.metrics(*data.metric_inputs(preds, truths), bundle)
                   for name, preds in predictions.items()}
    else:
        metrics = {name: task.metrics(preds, truths, bundle) for name, preds in predictions.items()}
    rows = [_row(task, name, metrics[name], metrics[REFERENCE], parity.get(name),
                 tolerances[name][0] if name in tolerances else tolerance, max_drop)
            for name in runners]
    for row in rows:
        if judged.get(row["backend"], bundle.precision) != bundle.precision:
            row["judged_at"] = judged[row["backend"]]
    if log is not None:
        for note in dict.fromkeys([tolerance_note, *(note for _, note in tolerances.values())]):
            if note:
                log(f"verify: {note}")
        for row in rows:
            log(_summary_line(task, row, len(images)))
    return rows


def _summary_line(task, row: dict[str, Any], images: int) -> str:
    line = f"verify {row['backend']}: " + ", ".join(f"{m.label} {row[m.key]:.4f}" for m in task.METRICS)
    line += f" on {images} val images"
    if row["reference"]:
        return line + " (reference)"
    return line + f"; {row['parity_summary']} -> {'PASS' if row['passed'] else 'FAIL'}"


def verify_bundle(bundle: Bundle | str, backends: Sequence[str] = ("ort",), val_images: int | None = None,
                  max_drop: float = DEFAULT_MAX_DROP, log: Callable[[str], None] | None = None,
                  warn: Callable[[str], None] = stderr_warning, data_dir: str | None = None) -> dict[str, Any]:
    """The full report: bundle, settings, tolerance used, notes, ``rows`` (``verify_rows``) and
    ``passed``; ``data_dir``: the user dataset whose val split to measure on (see the module docstring)."""
    from cvexport.tasks import get_task

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    task = get_task(bundle.task)
    val_images = DEFAULT_VAL_IMAGES if val_images is None else val_images
    data = bundle_dataset(bundle, data_dir)
    rows = verify_rows(bundle, backends, val_images, max_drop, log=log, warn=warn, data=data)
    tolerance, tolerance_note = tolerance_for(task, bundle.precision)
    note = task.metric_note(bundle.manifest)
    notes = [note] if note else []
    if tolerance_note:
        notes.append(tolerance_note)
    notes += [f"{row['backend']} computes at a coarser precision than the bundle's: its parity is judged by "
              f"{row['judged_at']}'s tolerance" for row in rows if "judged_at" in row]
    return {
        "bundle": str(bundle.path),
        "model": bundle.manifest.model,
        "task": bundle.task,
        "precision": bundle.precision,
        "split": "val",
        "data": data.describe() if data is not None else "the model's own val split",
        "val_images": min(val_images, len(data.splits["val"])) if data is not None else val_images,
        "score_threshold": bundle.manifest.postprocess.score_threshold if bundle.manifest.postprocess else None,
        "metrics": [{"key": m.key, "label": m.label, "higher_is_better": m.higher_is_better, "unit": m.unit}
                    for m in task.METRICS],
        "max_drop": max_drop,
        "tolerance": {"precision": bundle.precision if tolerance_note is None else FALLBACK_PRECISION,
                      **tolerance.__dict__},
        "notes": notes,
        "rows": rows,
        "passed": all(row["passed"] for row in rows),
    }


def verify_table(report: dict[str, Any]):
    """A rich Table of the report's rows."""
    from rich import box
    from rich.table import Table

    title = f"{report['model']} {report['precision']}: {report['val_images']} val images"
    if report.get("score_threshold") is not None:
        title += f", score threshold {report['score_threshold']}"
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), title=title)
    table.add_column("backend", no_wrap=True)
    for metric in report["metrics"]:
        table.add_column(metric["label"], justify="right", no_wrap=True)
    table.add_column("worse by", justify="right", no_wrap=True)
    table.add_column("parity vs torch")
    table.add_column("result", no_wrap=True)
    for row in report["rows"]:
        worst = max(report["metrics"], key=lambda m: row[f"{m['key']}_drop"])
        # + 0.0 turns -0.0 into 0.0.
        delta = f"{round(row[worst['key'] + '_drop'], 2) + 0.0:+.2f} {worst['unit']}"
        result = "reference" if row["reference"] else "[green]PASS[/green]" if row["passed"] else "[red]FAIL[/red]"
        table.add_row(row["backend"], *(f"{row[m['key']]:.4f}" for m in report["metrics"]),
                      "-" if row["reference"] else delta, row["parity_summary"] or "-", result)
    return table
