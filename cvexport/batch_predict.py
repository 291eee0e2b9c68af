"""Offline batch inference over image files, folders, globs and videos: ``cvexport predict``.

In-process it runs one :class:`~cvexport.runtime.predictor.Predictor`; with ``--ray`` it runs
a Ray Data pipeline whose actors each open the bundle once. Both produce the same rows
(keyed by input path and frame index) through the same code (:func:`predict_inputs`) and the
same store, so results are identical to ``Predictor.predict`` on the same frames.

The output directory (``--out``)::

    run.json                  the bundle (onnx sha256), stride and counts; marks the folder as ours
    predictions/part-*.parquet  one row per image or video frame; each part holds whole inputs
    jsonl/part-*.jsonl        the same rows as JSON lines (--jsonl), one file per Parquet part
    failures.json             inputs that could not be read, with the reason

A part is written beside its final name and renamed into place, and only ever holds complete
inputs, so the Parquet parts say exactly which inputs are done: a rerun into the same
``--out`` skips them (failed inputs are tried again) and an interrupted run loses at most the
inputs not yet committed. A part is committed once it holds ROWS_PER_PART rows or its oldest
input has waited COMMIT_SECONDS, so a hard kill (SIGKILL, the OOM killer, a lost machine) loses
seconds of work. SIGINT and SIGTERM stop cleanly: the inputs complete so far are committed and
the command exits 130 / 143 (a second signal stops without finishing the batch in flight).

Parts are never compacted. Each commit is one file, so a slow run (under ROWS_PER_PART /
COMMIT_SECONDS rows a second) writes a part every COMMIT_SECONDS, 1200 an hour; reading which
inputs a part holds costs about 1 ms (measured on a loaded 2-core machine, 3000 parts of 30
rows), so a rerun after a day of such a run spends ~30 s on it, and pyarrow reads the folder as
one table whatever its file count. Compaction would rewrite committed results, and since no
rename replaces several files at once, a kill between writing the merged part and deleting its
sources would leave rows twice, breaking the rule that the parts say exactly what is done.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from cvexport.errors import CvexportError, counted
from cvexport.video_decode import DecodeStats, read_frames
from cvexport.media import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_image_name, is_video_name, kind_of

RAY_HINT = 'pip install "cvexport[ray]"'
RUN_FILE = "run.json"
RUN_FORMAT = "cvexport-predictions/1"
PARTS_DIR = "predictions"
JSONL_DIR = "jsonl"
FAILURES_FILE = "failures.json"
# A part is committed once it holds this many rows (or at the end): small enough that an
# interrupted run loses little, large enough that a big archive is not thousands of files.
ROWS_PER_PART = 2048
# ... or once its oldest input has waited this many seconds: a fast run fills parts by rows, a
# slow one (a CPU, big images, long videos) would otherwise hold minutes of results in memory
# only, and lose them all to a SIGKILL. Shorter means more, smaller files (see above): 3 s keeps
# a slow day-long run near 30 000 parts, which a rerun scans in about half a minute.
COMMIT_SECONDS = 3.0
# How often the committer thread looks at the buffer's age.
COMMIT_POLL_SECONDS = 0.25
GPU_BACKENDS = frozenset({"ort-cuda", "ort-trt", "trt"})


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputFile:
    path: str  # absolute: the key of its rows, the same whatever the working directory of a rerun
    kind: str  # "image" or "video"


def _is_media(path: Path) -> bool:
    return path.is_file() and (is_image_name(path) or is_video_name(path))


def expand_inputs(specs: Iterable[str]) -> list[InputFile]:
    """Image/video files, folders (searched recursively, media files only) and globs -> the
    files to read, in a stable order, each once. A named file is taken whatever its suffix
    (an unreadable one is recorded as failed later); a path that does not exist, a glob or a
    folder with no media files is a one-line error before any work."""
    found: dict[str, InputFile] = {}

    def add(path: Path) -> None:
        absolute = os.path.abspath(path)
        found.setdefault(absolute, InputFile(absolute, kind_of(path)))

    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if _is_media(p))
            if not files:
                raise CvexportError(f"folder {spec} holds no image or video files "
                                    f"({', '.join(sorted(IMAGE_SUFFIXES + VIDEO_SUFFIXES))})")
            for file in files:
                add(file)
        elif path.is_file():
            add(path)
        elif glob.has_magic(spec):
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            files = [m for m in matches if _is_media(m)]
            if not files:
                raise CvexportError(f"'{spec}' matches no image or video files")
            for file in files:
                add(file)
        elif path.exists():
            raise CvexportError(f"{spec} is neither a file nor a folder; pass images, videos or folders of them")
        else:
            raise CvexportError(f"input not found: {spec}")
    return list(found.values())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


# --------------------------------------------------------------------------------------
# Prediction: frames of consecutive inputs share batches; results come back per input
# --------------------------------------------------------------------------------------
@dataclass
class InputResult:
    item: InputFile
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    read: bool = False  # every frame read
    pending: int = 0  # frames read but not yet predicted
    lost_frames: int = 0  # of a damaged video: frames skipped as undecodable (cvexport.video_decode)

    @property
    def finished(self) -> bool:
        return self.error is not None or (self.read and self.pending == 0)


def prediction_row(task, item: InputFile, frame: int, time_s: float | None, image: np.ndarray,
                   prediction: Any, class_names: Sequence[str] = ()) -> dict[str, Any]:
    """One stored row: the task's JSON record, and the prediction itself where it is an array
    (a segmentation label map, a stylized picture) as .npy bytes, exact."""
    array = None
    exact = prediction.exact_array()
    if exact is not None:
        buffer = io.BytesIO()
        np.save(buffer, exact, allow_pickle=False)
        array = buffer.getvalue()
    return {"input": item.path, "frame": int(frame), "kind": item.kind, "time_s": time_s,
            "width": int(image.shape[1]), "height": int(image.shape[0]),
            "result": json.dumps(task.record(prediction, class_names), sort_keys=True), "array": array}


def predict_inputs(predictor, items: Iterable[InputFile], batch: int, stride: int = 1,
                   stop: Callable[[], bool] | None = None) -> Iterator[InputResult]:
    """Each input's rows (or its failure), in input order, as soon as the input is complete.
    Frames are predicted in batches of ``batch`` across input boundaries, so a folder of
    single images still runs full batches; a file that fails drops its frames, not the batch.

    ``stop()``, asked before each frame is read, ends the run early (a signal): the frames
    already read are still predicted, so every input read whole comes out, and the input being
    read is dropped (a part only ever holds whole inputs; a rerun does it again)."""
    pending: list[tuple[InputResult, int, float | None, np.ndarray]] = []
    order: deque[InputResult] = deque()
    task = predictor.task

    def flush() -> None:
        live = [entry for entry in pending if entry[0].error is None]
        pending.clear()
        if live:
            prepared = predictor.prepare([entry[3] for entry in live])
            predictions = predictor.finish(predictor.infer(prepared.feed), prepared)
            for (state, frame, time_s, image), prediction in zip(live, predictions):
                state.rows.append(prediction_row(task, state.item, frame, time_s, image, prediction,
                                                 predictor.bundle.class_names))
        for state in order:
            state.pending = 0

    def finished() -> Iterator[InputResult]:
        while order and order[0].finished:
            yield order.popleft()

    stopped = stop or (lambda: False)
    for item in items:
        if stopped():
            break
        state = InputResult(item)
        order.append(state)
        decoded = DecodeStats()
        try:
            for frame, time_s, image in read_frames(item, stride, stats=decoded):
                if stopped():
                    break
                pending.append((state, frame, time_s, image))
                state.pending += 1
                if len(pending) >= batch:
                    flush()
            else:
                state.read = True
                state.lost_frames = decoded.lost
        except CvexportError as exc:
            state.error = str(exc)
            state.rows.clear()
        if not state.read and state.error is None:  # stopped while reading it: drop it
            order.pop()
            pending[:] = [entry for entry in pending if entry[0] is not state]
            break
        yield from finished()
    flush()
    yield from finished()


# --------------------------------------------------------------------------------------
# The output directory
# --------------------------------------------------------------------------------------
def _arrow_schema():
    import pyarrow as pa

    return pa.schema([("input", pa.string()), ("frame", pa.int64()), ("kind", pa.string()),
                      ("time_s", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
                      ("result", pa.string()), ("array", pa.binary())])


def _is_ours(path: Path) -> bool:
    try:
        return json.loads((path / RUN_FILE).read_text(encoding="utf-8")).get("format") == RUN_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


# The temporary directory atomic_path makes beside each of our files (".part-....parquet.k3j2x9a1"):
# a run killed while writing one leaves it behind.
_LEFTOVER = re.compile(r"\.(run\.json|failures\.json|part-[^/\\]+\.(parquet|jsonl))\.[A-Za-z0-9_]+")


def _is_leftover(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and _LEFTOVER.fullmatch(path.name) is not None


def _is_ours_or_fresh(path: Path) -> bool:
    """Ours (run.json), or holding only what a run killed before its run.json landed left."""
    return _is_ours(path) or all(_is_leftover(entry) for entry in path.iterdir())


class ResultStore:
    """The --out directory: which inputs are done, and committing more of them atomically.

    ``add`` buffers complete inputs; a part is committed when it holds ROWS_PER_PART rows (by
    ``add``) or, once ``start`` has run, when its oldest input has waited COMMIT_SECONDS (by a
    thread, so inputs finished before a long video are not held until the video ends); ``finish``
    commits the rest. The folder is locked for the run: two runs into one --out would predict
    the same inputs twice."""

    def __init__(self, out: str | os.PathLike, identity: dict[str, Any], jsonl: bool = False):
        from cvexport.atomic import OutputPathError, check_dir_target

        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise CvexportError("cvexport predict writes Parquet, which needs pyarrow: pip install pyarrow "
                                f"(or {RAY_HINT}, which brings it)") from None
        out = Path(out)
        # Checked here rather than left to check_dir_target, whose refusal offers a --force:
        # predict has none, on purpose. It writes into --out rather than replacing it, and the
        # likely mistake (--out naming the photos folder, or home) is one a force would delete.
        if out.is_dir() and any(out.iterdir()) and not _is_ours_or_fresh(out):
            raise OutputPathError(f"--out {out} holds files that cvexport predict did not write (it has no "
                                  f"{RUN_FILE}); nothing was written. Choose a new or empty folder, or one an earlier "
                                  "predict wrote")
        self.out = check_dir_target(out, _is_ours_or_fresh, "cvexport predict output", option="--out")
        self.identity = identity
        self.jsonl = jsonl
        self.parts = self.out / PARTS_DIR
        # Unique per run: a time alone repeats when two runs start within a second, and a
        # part written under an existing name would replace (lose) the inputs it held.
        self.run_stamp = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:8]
        self.sequence = 0
        self.buffer: list[dict[str, Any]] = []
        self.buffered_inputs: list[str] = []
        self.committed_rows = 0
        self.committed_inputs = 0
        # The buffer, failures and counters are shared with the committer thread.
        self._lock = threading.Lock()
        self._oldest: float | None = None  # when the oldest uncommitted result was added (monotonic)
        self._failures_changed = True  # failures.json is written by the first commit
        self._stopping = threading.Event()
        self._timer: threading.Thread | None = None
        self._timer_error: BaseException | None = None
        self._lock_fd: int | None = None
        self._open()

    def _open(self) -> None:
        from cvexport.atomic import write_text_atomic

        self.out.mkdir(parents=True, exist_ok=True)
        locked = self._lock_folder()
        try:
            run_path = self.out / RUN_FILE
            if run_path.is_file():
                previous = json.loads(run_path.read_text(encoding="utf-8"))
                for key, what in (("onnx_sha256", "bundle"), ("stride", "--stride")):
                    if previous.get(key) != self.identity.get(key):
                        raise CvexportError(
                            f"--out {self.out} holds results of another {what} ({key} {previous.get(key)!s:.16}, "
                            f"now {self.identity.get(key)!s:.16}); choose another --out, or delete it to start over")
            if locked:  # no other run is writing here: what a killed run left half-written goes
                for folder in (self.out, self.parts, self.out / JSONL_DIR):
                    for entry in (folder.iterdir() if folder.is_dir() else ()):
                        if _is_leftover(entry):
                            shutil.rmtree(entry, ignore_errors=True)
            if not run_path.is_file():
                write_text_atomic(run_path, json.dumps({"format": RUN_FORMAT, **self.identity}, indent=2) + "\n")
            self.parts.mkdir(exist_ok=True)
            self.done = self._done_inputs()
            self.failures = {path: reason for path, reason in self._read_failures().items() if path not in self.done}
            self._reconcile_jsonl()
        except BaseException:
            self._unlock_folder()
            raise

    def _lock_folder(self) -> bool:
        """An exclusive lock on --out for this run (released by ``finish``, or by the system when
        the process dies, SIGKILL included); False where the file system has no locks."""
        try:
            import fcntl
        except ImportError:  # not on a POSIX system
            return False
        fd = os.open(self.out, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CvexportError(f"--out {self.out} is in use by another cvexport predict run; wait for it to end "
                                "(a rerun then resumes it), or choose another --out") from None
        except OSError:  # some network file systems: go on unguarded
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _unlock_folder(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def _part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet"))

    def _done_inputs(self) -> set[str]:
        import pyarrow.parquet as pq

        done: set[str] = set()
        for part in self._part_files():
            try:
                done.update(pq.read_table(part, columns=["input"]).column("input").unique().to_pylist())
            except Exception as exc:  # pyarrow raises several kinds for a damaged file
                raise CvexportError(f"{part} is not readable Parquet ({_first_line(exc)}); delete that part to "
                                    "redo its inputs") from None
        return done

    def _read_failures(self) -> dict[str, str]:
        try:
            data = json.loads((self.out / FAILURES_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {entry["input"]: entry["reason"] for entry in data.get("failures", []) if isinstance(entry, dict)}

    def _reconcile_jsonl(self) -> None:
        """JSON lines follow the Parquet parts (the record of what is done): a JSONL part
        whose Parquet part never landed is removed, and with --jsonl every Parquet part gets
        its JSONL part, also those of earlier runs without --jsonl."""
        directory = self.out / JSONL_DIR
        parquet_stems = {part.stem for part in self._part_files()}
        if directory.is_dir():
            for stale in directory.glob("part-*.jsonl"):
                if stale.stem not in parquet_stems:
                    stale.unlink()
        if self.jsonl:
            for part in self._part_files():
                if not (directory / f"{part.stem}.jsonl").is_file():
                    self._write_jsonl(part)

    def _write_jsonl(self, part: Path) -> None:
        import pyarrow.parquet as pq

        from cvexport.atomic import write_text_atomic

        directory = self.out / JSONL_DIR
        directory.mkdir(exist_ok=True)
        lines = [json.dumps(jsonl_record(row)) for row in pq.read_table(part).to_pylist()]
        write_text_atomic(directory / f"{part.stem}.jsonl", "".join(line + "\n" for line in lines))

    def start(self) -> None:
        """Commit on time from now on, until ``finish``."""
        self._timer = threading.Thread(target=self._commit_on_time, name="cvexport-predict-commit", daemon=True)
        self._timer.start()

    def _commit_on_time(self) -> None:
        while not self._stopping.wait(COMMIT_POLL_SECONDS):
            try:
                with self._lock:
                    if self._oldest is not None and time.monotonic() - self._oldest >= COMMIT_SECONDS:
                        self._commit()
            except BaseException as exc:  # a full disk, say: raised in the main thread by the next add()
                self._timer_error = exc
                return

    def add(self, result: InputResult) -> None:
        if self._timer_error is not None:
            raise self._timer_error
        with self._lock:
            if self._oldest is None:
                self._oldest = time.monotonic()
            if result.error is not None:
                self.failures[result.item.path] = result.error
                self._failures_changed = True
                return
            if self.failures.pop(result.item.path, None) is not None:
                self._failures_changed = True
            self.buffer.extend(result.rows)
            self.buffered_inputs.append(result.item.path)
            if len(self.buffer) >= ROWS_PER_PART:
                self._commit()

    def commit(self) -> None:
        """The buffered inputs as one Parquet part (then its JSONL part), then the failures."""
        with self._lock:
            self._commit()

    def _commit(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from cvexport.atomic import atomic_path, write_text_atomic

        if self.buffer:
            self.sequence += 1
            part = self.parts / f"part-{self.run_stamp}-{self.sequence:05d}.parquet"
            table = pa.Table.from_pylist(self.buffer, schema=_arrow_schema())
            with atomic_path(part) as tmp:
                pq.write_table(table, tmp)
            self.done.update(self.buffered_inputs)
            self.committed_rows += len(self.buffer)
            self.committed_inputs += len(self.buffered_inputs)
            self.buffer, self.buffered_inputs = [], []
            if self.jsonl:
                self._write_jsonl(part)
        if self._failures_changed:
            failures = [{"input": path, "reason": reason} for path, reason in sorted(self.failures.items())]
            if failures or (self.out / FAILURES_FILE).exists():
                write_text_atomic(self.out / FAILURES_FILE, json.dumps({"failures": failures}, indent=2) + "\n")
            self._failures_changed = False
        self._oldest = None

    def finish(self, summary: dict[str, Any]) -> None:
        """Stop committing on time, commit the rest, record the run in run.json, unlock."""
        from cvexport.atomic import write_text_atomic

        self._stopping.set()
        if self._timer is not None:
            self._timer.join()
        try:
            self.commit()
            run_path = self.out / RUN_FILE
            record = json.loads(run_path.read_text(encoding="utf-8"))
            record.update(summary, done_inputs=len(self.done), failed_inputs=len(self.failures))
            write_text_atomic(run_path, json.dumps(record, indent=2) + "\n")
        finally:
            self._unlock_folder()


def jsonl_record(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as JSON: the task's record inline. Array predictions (label maps, stylized
    pictures) stay in the Parquet part's ``array`` column only."""
    record = {key: row[key] for key in ("input", "frame", "kind", "time_s", "width", "height")}
    record.update(json.loads(row["result"]))
    return record


def read_results(out: str | os.PathLike):
    """Every stored row of ``out`` as a pyarrow Table (``np.load(io.BytesIO(row['array']))``
    gives an array prediction back)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((Path(out) / PARTS_DIR).glob("part-*.parquet"))
    if not parts:
        return _arrow_schema().empty_table()
    return pa.concat_tables([pq.read_table(part) for part in parts])


def decode_array(data: bytes | None) -> np.ndarray | None:
    return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PredictOptions:
    bundle: str
    inputs: tuple[str, ...]
    out: str
    backend: str = "ort"
    batch: int | None = None  # frames per inference (default: the bundle's max batch)
    stride: int = 1
    jsonl: bool = False
    threads: int | None = None
    ray: str | None = None  # None: in-process; "local": start (or reuse) a local Ray; else an address
    actors: int | None = None  # Ray actor pool size (None: from the cluster's resources)


def batch_predict(options: PredictOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Predict every input into ``options.out``; returns the run's summary (counts, seconds).

    Called in the main thread, SIGINT and SIGTERM stop the run cleanly instead of raising or
    ending the process: the inputs complete so far are committed and the summary's
    ``stopped_by`` names the signal (the command exits 130 / 143); the caller's handlers are
    put back afterwards."""
    from cvexport.bundle import load_bundle
    from cvexport.runtime import check_backends

    backend = check_backends([options.backend])[0]
    if options.stride < 1 or (options.batch is not None and options.batch < 1):
        raise CvexportError("--stride and --batch must be at least 1")
    if options.actors is not None and options.ray is None:
        raise CvexportError("--actors sizes the Ray actor pool; add --ray, or drop --actors")
    if options.ray is not None:
        check_ray_address(options.ray)
    ray = _import_ray() if options.ray is not None else None  # before any work: a missing extra is one line
    bundle = load_bundle(options.bundle)
    bundle.verify_file("onnx")  # a corrupt bundle is one line here, not one failure per actor
    batch = min(options.batch or bundle.max_batch, bundle.max_batch)
    if options.batch and options.batch > bundle.max_batch:
        log(f"note: --batch {options.batch} is above the bundle's max batch; using {bundle.max_batch}")
    items = expand_inputs(options.inputs)
    # The predictor is opened before --out is touched: a backend that cannot open this bundle
    # (torch without its weights, say) is one line and leaves nothing behind. With --ray it is
    # opened here only to check (a CPU backend; the driver may have no GPU): one line now, not a
    # remote traceback from every actor.
    from cvexport.runtime.predictor import Predictor

    predictor = None
    if ray is None:
        predictor = Predictor(bundle, backend=backend, threads=options.threads)
    elif backend not in GPU_BACKENDS:
        Predictor(bundle, backend=backend, threads=1).runner.close()
    identity = {"bundle": str(Path(options.bundle).resolve()), "model": bundle.manifest["model"],
                "task": bundle.task, "precision": bundle.precision, "onnx_sha256": bundle.manifest["onnx"]["sha256"],
                "class_names": bundle.class_names, "stride": options.stride}
    try:
        store = ResultStore(options.out, identity, jsonl=options.jsonl)
        try:
            todo = [item for item in items if item.path not in store.done]
            skipped = len(items) - len(todo)
            log(f"{counted(len(items), 'input')}: {skipped} already done in {store.out}, {len(todo)} to predict"
                + (f" on Ray ({options.ray})" if ray else ""))
            if ray is not None and todo:
                _connect(ray, options.ray, log)  # before ours: ray.init installs its own SIGTERM handler
        except BaseException:
            store.finish({})
            raise
        summary, stop = _run(store, predictor, ray, options, bundle, todo, batch, backend, skipped, log)
    finally:
        if predictor is not None:
            predictor.runner.close()
    frames, seconds = summary["last_run_frames"], summary["last_run_seconds"]
    rate = f" ({frames / seconds:.1f} frames/s)" if seconds > 0 and frames else ""
    failed = f"; {len(store.failures)} failed (see {store.out / FAILURES_FILE})" if store.failures else ""
    log(f"predicted {counted(frames, 'frame')} of {counted(store.committed_inputs, 'input')} in {seconds:.1f} s"
        f"{rate}{failed}; results in {store.parts}")
    if stop.signal is not None:
        left = sum(item.path not in store.done and item.path not in store.failures for item in todo)
        log(f"stopped by {stop.signal}: {counted(left, 'input')} left to predict; the same command resumes"
            if left else f"stopped by {stop.signal}, with every input done")
    return {**summary, "inputs": len(items), "done": len(store.done), "failed": len(store.failures),
            "frames": frames, "stopped_by": stop.signal}


def _run(store: ResultStore, predictor, ray, options: PredictOptions, bundle, todo: list[InputFile], batch: int,
         backend: str, skipped: int, log) -> tuple[dict[str, Any], "_StopRequest"]:
    """Predict ``todo`` into ``store`` under SIGINT / SIGTERM handlers (main thread only); the
    run's summary, and what stopped it. Whatever ends the run (a signal, an error, a lost
    cluster), the inputs already complete are committed."""
    from cvexport.signals import install_stop_signals, restore_signals

    # In-process, the first signal lets the batch in flight finish (its inputs are complete
    # once it is predicted); on Ray, nothing returns sooner than the blocks already on their
    # way, so the wait for them ends at once.
    stop = _StopRequest(drains=predictor is not None)
    previous = install_stop_signals(stop)
    started = time.perf_counter()
    frames = lost = 0
    try:
        if predictor is not None:
            results = predict_inputs(predictor, todo, batch, options.stride, stop=stop.requested)
        else:
            results = _ray_results(ray, options, str(bundle.path.resolve()), todo, batch, log) if todo else iter(())
        store.start()
        try:
            for result in _until_stopped(results, stop):
                frames += len(result.rows)
                if result.error is not None:
                    log(f"failed: {result.error}")
                if result.lost_frames:  # the rule stream keeps too: the good frames, the loss counted
                    lost += result.lost_frames
                    log(f"warning: {result.item.path}: {counted(result.lost_frames, 'frame')} could not be decoded "
                        f"and {'was' if result.lost_frames == 1 else 'were'} skipped; its rows keep the video's own "
                        "frame numbers")
                store.add(result)
        except _Interrupted:
            pass
        finally:
            seconds = time.perf_counter() - started
            summary = {"backend": backend, "ray": options.ray, "last_run_frames": frames,
                       "last_run_lost_frames": lost,
                       "last_run_seconds": round(seconds, 3), "last_run_skipped": skipped,
                       "last_run_stopped_by": stop.signal}
            store.finish(summary)
    finally:
        # Only now: a signal during the final commit is recorded, not acted on half-way.
        restore_signals(previous)
    return summary, stop


class _Interrupted(BaseException):
    """Raised by the signal handler into a wait for results, to stop at once."""


class _StopRequest:
    """The signal handler's state: the first SIGINT / SIGTERM asks the run to stop, after the
    batch in flight where it ``drains`` (in-process), at once otherwise; a second stops at
    once. "At once" is an exception raised into the wait for the next result only, never into
    a commit: a part written twice would hold its inputs twice."""

    def __init__(self, drains: bool):
        self.drains = drains
        self.signal: str | None = None
        self.count = 0
        self.waiting = False  # the main thread is waiting for the next result

    def __call__(self, name: str) -> None:
        self.count += 1
        self.signal = self.signal or name
        if self.waiting and (self.count > 1 or not self.drains):
            raise _Interrupted(name)

    def requested(self) -> bool:
        return self.signal is not None


def _until_stopped(results: Iterable[InputResult], stop: _StopRequest) -> Iterator[InputResult]:
    """``results``, with the wait for each marked for the signal handler, and ended once a
    stop is asked for where nothing drains."""
    iterator = iter(results)
    while stop.signal is None or stop.drains:
        stop.waiting = True
        try:
            result = next(iterator, None)
        finally:
            stop.waiting = False
        if result is None:
            return
        yield result


# --------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------
def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra, with pyarrow
    except ImportError as exc:
        raise CvexportError(f"--ray needs Ray Data ({_first_line(exc)}); install it: {RAY_HINT}") from None
    return ray


@dataclass(frozen=True)
class PoolPlan:
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    threads: int  # CPU threads of each actor's runner


def plan_pool(resources: dict[str, float], backend: str, work_items: int, threads: int | None = None,
              actors: int | None = None) -> PoolPlan:
    """Actor pool size and per-actor resources from the cluster's resources.

    Ray schedules by the resources tasks and actors request, and an actor holds them for its
    whole life. Actors asking for every CPU (two actors of 1 CPU on a 2-CPU machine) leave
    nothing for any task Ray Data still needs, and the run waits forever without an error.
    So one CPU (half the cluster when it has fewer than two) is always left unclaimed and
    the actors share the rest as fractions: the pool can never claim more than exists. A CPU
    backend gets one actor per CPU, each running one thread (separate single-threaded
    sessions overlap one another's decoding and post-processing); a GPU backend gets one
    actor per GPU. ``actors`` and ``threads`` override the counts, never the reservation.
    """
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    if cpus <= 0:
        raise CvexportError("the Ray cluster reports no CPUs; start its nodes with CPUs (ray start --num-cpus N)")
    reserve = min(1.0, cpus / 2)
    gpu = backend in GPU_BACKENDS
    if gpu and gpus < 1:
        raise CvexportError(f"--backend {backend} needs a GPU, and the Ray cluster has none; use --backend ort, "
                            "or add GPU nodes (ray start --num-gpus N)")
    if actors is not None and gpu and actors > gpus:
        raise CvexportError(f"--actors {actors}: each actor of --backend {backend} takes a GPU, and the Ray cluster "
                            f"has {gpus:g}")
    count = actors or max(1, min(int(gpus if gpu else cpus), work_items))
    return PoolPlan(count, min(1.0, (cpus - reserve) / count), 1.0 if gpu else 0.0, threads or 1)


def check_ray_address(address: str) -> None:
    """'local', 'auto', ray://HOST:PORT or HOST:PORT; anything else is a one-line error. An
    input path is the likely mistake: '--ray photos/' takes photos/ as the address."""
    if address in ("local", "auto") or re.fullmatch(r"(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+", address):
        return
    if Path(address).exists() or glob.has_magic(address):
        raise CvexportError(f"--ray took the input '{address}' as its cluster address; put --ray after the "
                            "inputs, or write --ray=auto / --ray=ray://HOST:PORT")
    raise CvexportError(f"--ray {address} is not a Ray address; use --ray alone (a local Ray), --ray auto, "
                        "or --ray ray://HOST:PORT")


def _connect(ray, address: str, log) -> None:
    import logging

    _quiet_ray_data()
    if ray.is_initialized():
        return  # an embedding program (or a test) already holds a Ray session: use it
    try:
        if address == "local":
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except ConnectionError as exc:
        raise CvexportError(f"cannot reach a Ray cluster at {address} ({_first_line(exc)}); start one with "
                            "'ray start --head', or pass --ray alone for a local Ray") from None
    except Exception as exc:  # Ray raises bare RuntimeError/ValueError for bad addresses
        if isinstance(exc, CvexportError):
            raise
        raise CvexportError(f"cannot start or join Ray ({address}): {_first_line(exc)}") from None


def call_groups(todo: list[InputFile], batch: int) -> list[list[InputFile]]:
    """The inputs of each actor call: runs of up to ``batch`` consecutive images (one full
    inference batch per call), and each video alone (its frames fill batches by themselves)."""
    groups: list[list[InputFile]] = []
    for item in todo:
        if item.kind == "image" and groups and groups[-1][-1].kind == "image" and len(groups[-1]) < batch:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def _quiet_ray_data() -> None:
    """Ray Data logs its plan, and a progress report every few seconds when the output is not a
    terminal, at INFO; this command prints its own summary, so only warnings and errors stay."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)


class _PredictActor:
    """One Ray actor: opens the bundle once, then predicts the whole inputs of each call and
    returns their rows, each marked with its input's row count so the driver knows when an
    input is complete however Ray splits or orders blocks."""

    def __init__(self, bundle: str, backend: str, threads: int, batch: int, stride: int):
        from cvexport.runtime.predictor import Predictor

        self.predictor = Predictor(bundle, backend=backend, threads=threads)
        self.batch = batch
        self.stride = stride

    def __call__(self, calls: dict[str, np.ndarray]):
        import pyarrow as pa

        items = [InputFile(path, kind) for group in calls["inputs"] for path, kind in json.loads(str(group))]
        rows = []
        for result in predict_inputs(self.predictor, items, self.batch, self.stride):
            if result.error is not None:
                rows.append({**_empty_row(result.item), "error": result.error, "input_rows": 1, "lost_frames": 0})
            else:
                rows.extend({**row, "error": None, "input_rows": len(result.rows), "lost_frames": result.lost_frames}
                            for row in result.rows)
        return pa.Table.from_pylist(rows, schema=_wire_schema())


def _wire_schema():
    """Rows as actors return them: stored columns, plus a failure's reason and the row count
    of the row's input."""
    import pyarrow as pa

    return (_arrow_schema().append(pa.field("error", pa.string())).append(pa.field("input_rows", pa.int64()))
            .append(pa.field("lost_frames", pa.int64())))


def _empty_row(item: InputFile) -> dict[str, Any]:
    return {"input": item.path, "frame": -1, "kind": item.kind, "time_s": None, "width": 0, "height": 0,
            "result": "{}", "array": None}


def _ray_results(ray, options: PredictOptions, bundle_dir: str, todo: list[InputFile], batch: int,
                 log) -> Iterator[InputResult]:
    """InputResults of ``todo`` from a Ray Data pipeline (Ray already connected): groups of
    inputs as items (one block each, so the pool shares them out), an actor pool predicting
    them, rows streamed back to this process to be stored. Inputs are read by the actor that
    predicts them: frames never cross the object store, and an actor knows when an input is
    complete."""
    groups = call_groups(todo, batch)
    plan = plan_pool(ray.cluster_resources(), options.backend, len(groups), options.threads, options.actors)
    log(f"Ray: {counted(plan.actors, 'actor')}, each {plan.cpus_per_actor:.2f} CPU"
        + (f" + {plan.gpus_per_actor:g} GPU" if plan.gpus_per_actor else "") + f", {counted(plan.threads, 'thread')}")
    items = [{"inputs": json.dumps([[item.path, item.kind] for item in group])} for group in groups]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    dataset = dataset.map_batches(
        _PredictActor,
        fn_constructor_kwargs={"bundle": bundle_dir, "backend": options.backend, "threads": plan.threads,
                               "batch": batch, "stride": options.stride},
        batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor or None)
    by_path = {item.path: item for item in todo}
    partial: dict[str, InputResult] = {}
    for block in _ray_blocks(ray, dataset):
        for row in block.to_pylist():
            item = by_path[row["input"]]
            error, count, lost = row.pop("error"), row.pop("input_rows"), row.pop("lost_frames")
            if error is not None:
                yield InputResult(item, error=error, read=True)
                continue
            result = partial.setdefault(item.path, InputResult(item, lost_frames=lost))
            result.rows.append(row)
            if len(result.rows) == count:
                del partial[item.path]
                result.rows.sort(key=lambda r: r["frame"])
                result.read = True
                yield result
    for result in partial.values():  # never seen; recorded rather than stored incomplete
        yield InputResult(result.item, error=f"{result.item.path}: only {len(result.rows)} of its rows came back "
                          "from the Ray pipeline; rerun to predict it again", read=True)


def _ray_blocks(ray, dataset):
    """The dataset's output blocks; a failure on the cluster (an actor that could not open the
    bundle, a lost node) becomes one line instead of Ray's remote traceback."""
    blocks = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            return
        except ray.exceptions.RayError as exc:
            raise ray_failure(exc) from None
        yield block


def ray_failure(exc: BaseException) -> CvexportError:
    """A Ray error -> one line: the CvexportError raised on a worker where there is one (its
    message is the whole story), else the error's last line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    ours = re.findall(r"CvexportError: (.+)", text)
    if ours:
        return CvexportError(f"on a Ray worker: {ours[-1].strip()}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return CvexportError(f"the Ray pipeline failed ({type(exc).__name__}: {lines[-1] if lines else 'no message'}); "
                         "inputs completed so far are kept, rerun to resume")


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def add_parser(subparsers) -> None:
    from cvexport.argtypes import positive_int

    p = subparsers.add_parser("predict", help="batch inference over images, folders, globs and videos into "
                              "Parquet (resumable), in-process or on a Ray cluster")
    p.add_argument("bundle", help="bundle directory written by 'cvexport build'")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image or video files, folders (searched recursively) or quoted globs ('photos/**/*.jpg')")
    p.add_argument("--out", required=True, help="results directory; a rerun into it skips inputs already done")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray Data: alone, a local Ray on this machine; 'auto' or ray://HOST:PORT joins a "
                   f"cluster (needs {RAY_HINT})")
    p.add_argument("--backend", default="ort", help="ort (default), torch, or on GPU workers ort-cuda, ort-trt, trt")
    p.add_argument("--batch", type=positive_int, help="frames per inference (default and most: the bundle's max batch)")
    p.add_argument("--stride", type=positive_int, default=1, help="videos: predict every Nth frame (default 1)")
    p.add_argument("--jsonl", action="store_true", help="also write the rows as JSON lines")
    p.add_argument("--threads", type=positive_int, help="CPU threads per predictor (in-process default: the "
                   "backend's own; on Ray: 1 per actor)")
    p.add_argument("--actors", type=positive_int, help="Ray: actor pool size (default: one per CPU, or per GPU "
                   "for GPU backends)")
    p.set_defaults(func=run)


def run(args) -> int:
    options = PredictOptions(bundle=args.bundle, inputs=tuple(args.inputs), out=args.out, backend=args.backend,
                             batch=args.batch, stride=args.stride, jsonl=args.jsonl, threads=args.threads,
                             ray=args.ray, actors=args.actors)
    from cvexport.signals import SIGNAL_EXIT

    summary = batch_predict(options, log=lambda line: print(line, flush=True))
    if summary["stopped_by"] is not None:
        return SIGNAL_EXIT.get(summary["stopped_by"], 1)
    return 1 if summary["failed"] else 0
