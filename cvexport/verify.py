"""``cvexport verify``: does a bundle still do its job on each backend?

Two questions per backend, answered on the model's val split and compared with the
PyTorch fp32 reference (backend "torch") on the very same network inputs:

- task metric: mAP@0.5 and mAP@0.5:0.95 of the detections in pixels of each original
  image, through the Predictor's path (letterbox, ``to_network_input``, ``runner.infer``,
  ``task.to_predictions``); a row fails when it drops more than ``max_map_drop`` points.
- output parity: detections matched to the reference by class and IoU (match fraction,
  min IoU, max |delta score|) within the tolerance of the bundle's precision.

The metric is measured on what the bundle outputs, i.e. at its build-time score threshold
(0.25 by default). Training evaluates at 0.01, where low-score detections still add recall,
so the numbers here are lower than the training record; only rows of one report compare.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from cvexport.bench import stderr_warning, check_backends, open_or_skip, open_runner
from cvexport.bundle import Bundle, load_bundle
from cvexport.compare import TOLERANCES, DetectionParity, DetectionTolerance, compare_detections
from cvexport.errors import CvexportError

DEFAULT_VAL_IMAGES = 256
DEFAULT_MAX_MAP_DROP = 1.0  # mAP points (0-100 scale)
REFERENCE = "torch"
# Precisions with no parity contract of their own borrow this one's, and say so.
FALLBACK_PRECISION = "fp16"
METRICS = (("map50", "mAP@0.5"), ("map", "mAP@0.5:0.95"))


def tolerance_for(precision: str) -> tuple[DetectionTolerance, str | None]:
    """The parity tolerance of ``precision`` and, when it has none, the fallback's plus a note saying so."""
    if precision in TOLERANCES:
        return TOLERANCES[precision], None
    return TOLERANCES[FALLBACK_PRECISION], (
        f"no parity tolerance is defined for {precision}; using {FALLBACK_PRECISION}'s")


def _pixel_detections(predictions: list[list[dict[str, Any]]]):
    """``task.to_predictions`` output -> ImageDetections per image, for the metric."""
    from cvexport.metrics import ImageDetections

    return [
        ImageDetections(
            boxes=np.asarray([d["box"] for d in dets], dtype=np.float64).reshape(-1, 4),
            classes=np.asarray([d["class_id"] for d in dets], dtype=np.int64),
            scores=np.asarray([d["score"] for d in dets], dtype=np.float64),
        )
        for dets in predictions
    ]


def _ground_truth(samples) -> list:
    from cvexport.metrics import ImageDetections

    out = []
    for sample in samples:
        height, width = sample.image.shape[:2]
        scale = np.array([width, height, width, height], dtype=np.float64)
        out.append(ImageDetections(boxes=sample.boxes.astype(np.float64) * scale, classes=sample.labels))
    return out


def _row(backend: str, metrics: dict[str, float], reference: dict[str, float], parity: DetectionParity | None,
         tolerance: DetectionTolerance, max_map_drop: float) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": backend, "reference": parity is None, **metrics}
    reasons = []
    for key, label in METRICS:
        drop = (reference[key] - metrics[key]) * 100.0
        row[f"{key}_drop_points"] = round(drop, 4)
        if drop > max_map_drop:
            reasons.append(f"{label} {metrics[key]:.4f} is {drop:.2f} points below torch's {reference[key]:.4f} "
                           f"(allowed {max_map_drop:g})")
    row["metric_passed"] = not reasons
    if parity is None:
        row.update(match_fraction=None, min_iou=None, max_score_delta=None, parity_passed=None, parity=None)
    else:
        row.update(
            match_fraction=parity.match_fraction,
            min_iou=parity.min_iou if parity.matched else None,  # 1.0 would claim a perfect overlap of nothing
            max_score_delta=parity.max_score_delta if parity.matched else None,
            parity_passed=parity.passed(tolerance),
            parity=parity.to_dict(),
        )
        if not row["parity_passed"]:
            denominator = max(parity.reference_detections, parity.test_detections)
            reasons.append(f"parity: {parity.matched}/{denominator} detections matched torch "
                           f"(needs {tolerance.min_match_fraction:.0%})" + "".join(f"; {f}" for f in parity.failures))
    row["passed"] = not reasons
    row["reasons"] = reasons
    return row


def verify_rows(bundle: Bundle | str, backends: Sequence[str] = ("ort",), val_images: int | None = None,
                max_map_drop: float = DEFAULT_MAX_MAP_DROP, log: Callable[[str], None] | None = None,
                warn: Callable[[str], None] = stderr_warning) -> list[dict[str, Any]]:
    """One row per backend, the torch reference first (see the module docstring).

    Each row: backend, map50, map, map50_drop_points, map_drop_points, match_fraction,
    min_iou, max_score_delta, parity (the full statistics), metric_passed, parity_passed,
    passed, reasons (why it failed; empty when it passed). Backends that cannot run here are
    an error when they are the only one asked for, else skipped with a warning.
    """
    from cvexport.images import letterbox
    from cvexport.metrics import detection_map
    from cvexport.models.detection_data import make_sample
    from cvexport.preprocess import to_network_input
    from cvexport.tasks import get_task

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    val_images = DEFAULT_VAL_IMAGES if val_images is None else val_images
    if val_images < 1:
        raise CvexportError(f"--val-images {val_images} must be at least 1")
    if not max_map_drop >= 0:  # also rejects NaN
        raise CvexportError(f"--max-map-drop {max_map_drop} must be 0 or more (mAP points)")
    if bundle.task != "detection":
        raise CvexportError(f"verify measures detection bundles only so far; {bundle.path} is a {bundle.task} bundle")
    names = [n for n in check_backends(backends) if n != REFERENCE]
    task = get_task(bundle.task)
    tolerance, tolerance_note = tolerance_for(bundle.precision)
    contract = bundle.input
    width, height = contract["width"], contract["height"]

    runners = {REFERENCE: open_runner(bundle, REFERENCE)}
    try:
        for name in names:
            runner, _ = open_or_skip(bundle, name, None, several=len(names) > 1, warn=warn)
            if runner is not None:
                runners[name] = runner
        if names and len(runners) == 1:
            raise CvexportError(f"none of the backends {', '.join(names)} can run here (see the warnings above)")
        samples = [make_sample("val", i, size=height) for i in range(val_images)]
        predictions: dict[str, list] = {name: [] for name in runners}
        parity = {name: DetectionParity() for name in runners if name != REFERENCE}
        for start in range(0, len(samples), bundle.max_batch):
            fitted = [letterbox(s.image, width, height) for s in samples[start:start + bundle.max_batch]]
            feed = {contract["name"]: to_network_input([f[0] for f in fitted], contract)}
            boxes = [f[1] for f in fitted]
            reference = runners[REFERENCE].infer(feed)
            for name, runner in runners.items():
                outputs = reference if name == REFERENCE else runner.infer(feed)
                if name != REFERENCE:
                    compare_detections(reference, outputs, tolerance, parity[name])
                predictions[name].extend(task.to_predictions(outputs, boxes, bundle.class_names, width, height))
    finally:
        for runner in runners.values():
            runner.close()

    truth = _ground_truth(samples)
    metrics = {name: detection_map(_pixel_detections(preds), truth, bundle.class_names)
               for name, preds in predictions.items()}
    rows = [_row(name, metrics[name], metrics[REFERENCE], parity.get(name), tolerance, max_map_drop)
            for name in runners]
    if log is not None:
        if tolerance_note:
            log(f"verify: {tolerance_note}")
        for row in rows:
            log(_summary_line(row, len(samples)))
    return rows


def _summary_line(row: dict[str, Any], images: int) -> str:
    line = f"verify {row['backend']}: mAP@0.5 {row['map50']:.4f}, mAP@0.5:0.95 {row['map']:.4f} on {images} val images"
    if row["reference"]:
        return line + " (reference)"
    p = row["parity"]
    return (line + f"; {p['matched']}/{max(p['reference_detections'], p['test_detections'])} detections match torch "
            f"-> {'PASS' if row['passed'] else 'FAIL'}")


def verify_bundle(bundle: Bundle | str, backends: Sequence[str] = ("ort",), val_images: int | None = None,
                  max_map_drop: float = DEFAULT_MAX_MAP_DROP, log: Callable[[str], None] | None = None,
                  warn: Callable[[str], None] = stderr_warning) -> dict[str, Any]:
    """The full report: bundle, settings, tolerance used, notes, ``rows`` (``verify_rows``) and ``passed``."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    val_images = DEFAULT_VAL_IMAGES if val_images is None else val_images
    rows = verify_rows(bundle, backends, val_images, max_map_drop, log=log, warn=warn)
    tolerance, tolerance_note = tolerance_for(bundle.precision)
    threshold = bundle.manifest.get("postprocess", {}).get("score_threshold")
    notes = [
        f"mAP is measured at the bundle's score threshold {threshold} (what it outputs); it is lower than at the "
        "0.01 threshold training evaluation uses, so compare it only with the torch row here",
    ]
    if tolerance_note:
        notes.append(tolerance_note)
    return {
        "bundle": str(bundle.path),
        "model": bundle.manifest["model"],
        "precision": bundle.precision,
        "split": "val",
        "val_images": val_images,
        "score_threshold": threshold,
        "max_map_drop_points": max_map_drop,
        "tolerance": {"precision": bundle.precision if tolerance_note is None else FALLBACK_PRECISION,
                      **tolerance.__dict__},
        "notes": notes,
        "rows": rows,
        "passed": all(row["passed"] for row in rows),
    }


def verify_table(report: dict[str, Any]):
    """A rich Table of the report's rows (fits 80 columns)."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0),
                  title=f"{report['model']} {report['precision']}: {report['val_images']} val images, "
                        f"score threshold {report['score_threshold']}")
    for name in ("backend", "mAP50", "mAP50-95", "Δ pts", "matched", "min IoU", "max Δscore", "result"):
        table.add_column(name, justify="left" if name in ("backend", "result") else "right", no_wrap=True)
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for row in report["rows"]:
        # The worse of the two metrics, signed as backend minus torch; + 0.0 turns -0.0 into 0.0.
        delta = round(-max(row["map50_drop_points"], row["map_drop_points"]), 2) + 0.0
        result = "reference" if row["reference"] else "[green]PASS[/green]" if row["passed"] else "[red]FAIL[/red]"
        table.add_row(
            row["backend"], f"{row['map50']:.4f}", f"{row['map']:.4f}", "-" if row["reference"] else f"{delta:+.2f}",
            fmt(row["match_fraction"], ".2%"), fmt(row["min_iou"], ".4f"), fmt(row["max_score_delta"], ".1e"), result,
        )
    return table
