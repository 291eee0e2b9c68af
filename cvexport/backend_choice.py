"""``--backend auto``: the fastest CPU backend and precision that keeps a bundle's answers, chosen
per bundle and per CPU by measuring once, and remembered outside the bundle.

Why measure instead of a rule: which backend is fastest depends on the CPU's units, not on the
model alone. On a Sapphire Rapids (AMX) OpenVINO's bf16 ran the SSD 2.1x faster than ONNX
Runtime's fp32; on AVX2-only and AMD AVX-512 machines the two were equal within noise. And a
faster precision is only a choice where it keeps the answers: bf16 has 8 bits of mantissa, so
each candidate first passes the bundle's parity check against the PyTorch fp32 reference, at
the tolerance of the precision it computes at (``cvexport.precisions.judged_precision``).

What is measured, once per (bundle, CPU, backend versions): each candidate that opens here
(``ort``, ``openvino``, ``openvino-bf16`` where the CPU has bf16 units) runs the task's
parity pictures against the torch reference, then all candidates are timed at batch 1 in
interleaved rounds (so a busy moment slows every candidate alike) and their p50s compared.
ONNX Runtime stays the choice unless a candidate that passed parity is faster by more than
``MIN_GAIN``: on CPUs where ORT is as fast, nothing changes.

Where it is remembered: one JSON file per key under ``$CVEXPORT_CACHE_DIR`` (default
``$XDG_CACHE_HOME/cvexport`` or ``~/.cache/cvexport``) in ``backend-choice/``. The key hashes
the bundle's manifest (which holds every file's sha256, so a rebuilt bundle is measured
afresh, never served a stale choice), the CPU's model and flags, and the versions of ONNX
Runtime and OpenVINO. ``CVEXPORT_BACKEND`` names the backend the commands' ``auto`` default
stands for without measuring (for reproducible runs, such as the test suite's).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cvexport.bundle import Bundle, load_bundle
from cvexport.cpu import cpu_info, describe_cpu
from cvexport.errors import CvexportError, stderr_warning
from cvexport.precisions import judged_precision
from cvexport.runtime import AUTO

# The CPU candidates, in order of preference on a tie (ORT first: the reference CPU path).
CANDIDATES = ("ort", "openvino", "openvino-bf16")
# A candidate replaces ORT only when its p50 is at most this fraction of ORT's: below 10 % the
# difference is within what these shared machines' noise moves between runs.
MIN_GAIN = 0.9
ROUNDS = 20
WARMUP = 3
PINNED_VARIABLE = "CVEXPORT_BACKEND"
CACHE_VARIABLE = "CVEXPORT_CACHE_DIR"
VERSION = 2  # of the record's layout
METRIC_IMAGES = 64  # val images of the metric check (where the bundle has labelled data)


@dataclass
class Candidate:
    """One backend as measured for a bundle on this CPU."""

    backend: str
    opened: bool
    why_not: str | None = None  # why it could not open, or failed parity
    judged_at: str | None = None  # the precision whose tolerance judged it
    parity: str | None = None  # the parity summary
    parity_passed: bool | None = None
    p50_ms: float | None = None
    metric: str | None = None  # the task metric on val images and its drop vs torch, where there is labelled data
    metric_passed: bool | None = None  # None: not measured (no labelled data here)


@dataclass
class BackendChoice:
    """The chosen backend and the table it was chosen from."""

    backend: str
    candidates: list[Candidate]
    cpu: str
    measured_at: str
    key: str
    cached: bool = False
    versions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        record = asdict(self)
        record.pop("cached")
        return {"version": VERSION, **record}

    @classmethod
    def from_dict(cls, record: dict) -> "BackendChoice":
        if record.get("version") != VERSION:
            raise ValueError(f"backend choice record version {record.get('version')!r}")
        fields = {k: v for k, v in record.items() if k != "version"}
        fields["candidates"] = [Candidate(**c) for c in fields["candidates"]]
        return cls(**fields, cached=True)


def cache_dir() -> Path:
    given = os.environ.get(CACHE_VARIABLE, "").strip()
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "cvexport"


def _versions() -> dict:
    from importlib import metadata

    found = {}
    for package in ("onnxruntime", "openvino"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def choice_key(bundle: Bundle) -> str:
    """The cache key: the bundle's manifest bytes, the CPU, the backends' versions."""
    info = cpu_info()
    material = json.dumps({"manifest": hashlib.sha256((bundle.path / "manifest.json").read_bytes()).hexdigest(),
                           "cpu": [info["model"], info["flags"], info["isa_class"], info["cores"]],
                           "versions": _versions(), "candidates": CANDIDATES, "version": VERSION}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:32]


def cached_choice(bundle: Bundle) -> BackendChoice | None:
    """The remembered choice for this bundle on this CPU, or None (an unreadable record counts as none)."""
    path = cache_dir() / "backend-choice" / f"{choice_key(bundle)}.json"
    try:
        return BackendChoice.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def choose_backend(bundle: Bundle | str, log: Callable[[str], None] | None = None,
                   remeasure: bool = False) -> BackendChoice:
    """The remembered choice, else a fresh measurement (remembered for next time)."""
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if not remeasure:
        found = cached_choice(bundle)
        if found is not None:
            return found
    if log is not None:
        log(f"auto: measuring the CPU backends for {bundle.path.name} on this CPU once (remembered in {cache_dir()})")
    choice = measure_backends(bundle)
    _remember(choice)
    return choice


def resolve_backend(bundle: Bundle | str, backend: str, log: Callable[[str], None] = stderr_warning) -> str:
    """``backend``, or for ``auto`` the backend it stands for here (:func:`resolve_recorded`)."""
    return resolve_recorded(bundle, backend, log)[0]


def resolve_recorded(bundle: Bundle | str, backend: str,
                     log: Callable[[str], None] = stderr_warning) -> tuple[str, dict | None]:
    """(the backend to run, what an output records of how it was chosen). ``backend`` itself
    and None, unless it is ``auto``: then ``$CVEXPORT_BACKEND`` and that pin when it is set, else
    the measured choice (logged, with what it was chosen over) and its whole table."""
    if backend != AUTO:
        return backend, None
    pinned = os.environ.get(PINNED_VARIABLE, "").strip()
    if pinned:
        if pinned == AUTO:
            raise CvexportError(f"{PINNED_VARIABLE}=auto names no backend; set it to one (ort, openvino, ...) or unset it")
        return pinned, {"backend": pinned, "pinned_by": PINNED_VARIABLE}
    choice = choose_backend(bundle, log)
    log(f"auto: {choice.backend} ({summary_line(choice)})")
    return choice.backend, choice.to_dict()


def summary_line(choice: BackendChoice) -> str:
    parts = []
    for c in choice.candidates:
        if not c.opened:
            continue
        mark = "" if c.parity_passed else " failed parity"
        mark += " failed the metric" if c.metric_passed is False else ""
        parts.append(f"{c.backend} {c.p50_ms:.2f} ms{mark}" if c.p50_ms is not None else f"{c.backend}{mark}")
    remembered = ", remembered" if choice.cached else ""
    return f"p50 at batch 1: {', '.join(parts)}; {choice.cpu}{remembered}"


def measure_backends(bundle: Bundle, candidates=CANDIDATES) -> BackendChoice:
    """Each candidate's answers against the torch reference, then interleaved batch-1 timing of
    those that kept them.

    Kept means: parity on the task's parity pictures within the tolerance of the precision the
    candidate computes at, and, where the bundle has labelled data (the model's own, or the
    dataset its weights record), ``verify``'s rows on ``METRIC_IMAGES`` val images: the task
    metric within 1 point of torch's as well. Parity alone let through an INT8 SSD on OpenVINO
    whose mAP@0.5 was 1.8 points below torch's (32 val images, 2-core AMD EPYC)."""
    from cvexport.compare import compare_runners
    from cvexport.registry import bundle_spec
    from cvexport.runtime import create_runner
    from cvexport.runtime.predictor import prepare_batch
    from cvexport.tasks import get_task

    task = get_task(bundle.task)
    spec = bundle_spec(bundle)
    frames = task.parity_frames(spec)
    if not frames:
        raise CvexportError(f"auto: the {bundle.task} task gave no parity pictures to judge the backends on; "
                            "name a backend with --backend")
    feeds = [prepare_batch(bundle, frames[i:i + 1]).feed for i in range(len(frames))]
    table = {name: Candidate(name, opened=False) for name in candidates}
    runners = {}
    try:
        for name in candidates:
            try:
                runners[name] = create_runner(bundle, name)
                table[name].opened = True
            except CvexportError as exc:
                table[name].why_not = str(exc)
        with create_runner(bundle, "torch") as reference:
            judged = {name: judged_precision(bundle.precision, getattr(runner, "compute_precision", None))
                      for name, runner in runners.items()}
            parities = compare_runners({"torch": reference, **runners}, "torch", feeds,
                                       lambda name: task.new_parity(judged[name], bundle.manifest))
            for name, parity in parities.items():
                row = table[name]
                row.judged_at, row.parity, row.parity_passed = judged[name], parity.summary(), parity.passed()
                if not row.parity_passed:
                    row.why_not = f"parity at {judged[name]}'s tolerance: {parity.summary()}"
            kept = [name for name in runners if table[name].parity_passed]
            if kept and (spec.has_own_data or bundle.manifest.dataset is not None):
                _check_metric(bundle, table, kept, reference)
        timed = [name for name in runners if table[name].parity_passed and table[name].metric_passed is not False]
        for name, p50 in _interleaved_p50(runners, timed, feeds[0]).items():
            table[name].p50_ms = p50
    finally:
        for runner in runners.values():
            runner.close()
    return BackendChoice(backend=_pick(table), candidates=list(table.values()), cpu=describe_cpu(),
                         measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), key=choice_key(bundle),
                         versions=_versions())


def _check_metric(bundle: Bundle, table: dict[str, Candidate], names: list[str], reference) -> None:
    """``verify``'s rows for ``names`` on ``METRIC_IMAGES`` val images: each candidate's task
    metric next to torch's, within verify's default allowed drop."""
    from cvexport.verify import verify_rows

    rows = verify_rows(bundle, names, val_images=METRIC_IMAGES, reference=reference, warn=lambda _: None)
    for row in rows:
        if row["reference"]:
            continue
        candidate = table[row["backend"]]
        candidate.metric_passed = row["metric_passed"]
        candidate.metric = ", ".join(f"{key} {row[key]:.4f} ({row[key + '_drop']:+.2f})"
                                     for key in row if f"{key}_drop" in row)
        if not row["metric_passed"]:
            candidate.why_not = "; ".join(row["reasons"])


def _interleaved_p50(runners: dict, names: list[str], feed: dict) -> dict[str, float]:
    """p50 latency (ms) of each named runner on ``feed``: rounds of one timed call each, so that
    load which comes and goes during the measurement lands on every candidate alike. Each timed
    call follows an untimed one of the same runner: a backend's threads linger after its run
    (torch's OpenMP spins; a spinning ORT slowed the OpenVINO call after it from 10.1 to 19.6 ms
    on a 2-core EPYC), and the next candidate must not pay for them."""
    for _ in range(WARMUP):
        for name in names:
            runners[name].infer(feed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(ROUNDS):
        for name in names:
            runners[name].infer(feed)
            start = time.perf_counter()
            runners[name].infer(feed)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: float(np.median(values)) for name, values in samples.items()}


def _pick(table: dict[str, Candidate]) -> str:
    """ORT unless a candidate that passed parity is faster than ``MIN_GAIN`` of ORT's p50; the
    fastest passing one when ORT itself did not pass (or did not open)."""
    passing = [c for c in table.values() if c.parity_passed and c.metric_passed is not False and c.p50_ms is not None]
    if not passing:
        raise CvexportError("auto: no CPU backend kept this bundle's answers on this CPU ("
                            + "; ".join(f"{c.backend}: {c.why_not}" for c in table.values()) + ")")
    fastest = min(passing, key=lambda c: c.p50_ms)
    ort = table.get("ort")
    if ort is not None and ort in passing and fastest.p50_ms > MIN_GAIN * ort.p50_ms:
        return "ort"
    return fastest.backend


def _remember(choice: BackendChoice) -> None:
    from cvexport.atomic import write_text_atomic

    folder = cache_dir() / "backend-choice"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / f"{choice.key}.json", json.dumps(choice.to_dict(), indent=2) + "\n")
    except OSError as exc:  # a read-only home still runs, measuring each time
        stderr_warning(f"auto: could not remember the choice in {folder} ({exc.strerror}); it is measured each start")
