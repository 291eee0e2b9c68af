"""The output directory of ``cvexport predict`` (``--out``): which inputs are done, and
committing more of them atomically.

::

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

import json
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cvexport.errors import CvexportError, first_line
from cvexport.predict.batching import InputResult
from cvexport.predict.options import RAY_HINT
from cvexport.predict.rows import arrow_schema, jsonl_record

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
                raise CvexportError(f"{part} is not readable Parquet ({first_line(exc)}); delete that part to "
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
            table = pa.Table.from_pylist(self.buffer, schema=arrow_schema())
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


def read_results(out: str | os.PathLike):
    """Every stored row of ``out`` as a pyarrow Table (``np.load(io.BytesIO(row['array']))``
    gives an array prediction back)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((Path(out) / PARTS_DIR).glob("part-*.parquet"))
    if not parts:
        return arrow_schema().empty_table()
    return pa.concat_tables([pq.read_table(part) for part in parts])
