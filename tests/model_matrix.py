"""The one list of models and their build variants the tests iterate over, and the thread
runner of tests/test_trt_gpu.py.

``build_matrix()``: every registered model (the registry) x the build variants its task
declares (``Task.build_variants``). The CPU parity tests (tests/test_parity.py) run its
float-precision cases on ONNX Runtime; the TensorRT GPU tests run all of them.

Importable without TensorRT or a GPU, so tests/test_model_matrix.py checks on any machine that
the matrix cannot be wrong (every variant a build would accept, a tolerance for every
precision, every registered model present) and that a failing worker thread fails its test.

Each task declares ``build_variants``: the ``BuildOptions`` fields and task options (other
than ``model``) of each bundle its models get on the GPU. A model's cases are those variants;
its tolerances and comparison are the task's own (``TOLERANCES[precision]``, ``new_parity``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from cvexport.build import BuildOptions
from cvexport.registry import get_spec, list_models
from cvexport.tasks import Task, get_task


@dataclass(frozen=True)
class BuildCase:
    """One model built with one variant: ``build_bundle(**case.kwargs)``."""

    model: str
    task: str
    options: tuple[tuple[str, Any], ...]  # the variant's BuildOptions fields, in declared order

    @property
    def kwargs(self) -> dict[str, Any]:
        return {"model": self.model, **dict(self.options)}

    def build_options(self, **extra: Any) -> BuildOptions:
        return BuildOptions.of(**self.kwargs, **extra)

    @property
    def precision(self) -> str:
        return self.build_options().precision

    @property
    def task_object(self) -> Task:
        return get_task(self.task)

    @property
    def tolerance(self):
        return self.task_object.TOLERANCES[self.precision]

    @property
    def id(self) -> str:
        return "-".join([self.model, *(str(value) for _, value in self.options)])


def build_matrix() -> list[BuildCase]:
    """Every registered model x its task's ``build_variants``, in registry order.

    Raises LookupError when a model's task declares no variants, so a new model cannot drop
    out of the GPU tests unnoticed."""
    cases = []
    for name in list_models():
        spec = get_spec(name)
        task = get_task(spec.task)
        variants = task.build_variants
        if not variants:
            raise LookupError(f"task '{task.name}' declares no build_variants, so model '{name}' "
                              "would be missing from the TensorRT GPU tests")
        cases.extend(BuildCase(name, spec.task, tuple(variant.items())) for variant in variants)
    return cases


def find_case(model: str, **options: Any) -> BuildCase:
    """The one case of ``model`` whose variant has these option values."""
    found = [c for c in build_matrix() if c.model == model and all(dict(c.options).get(k) == v for k, v in options.items())]
    if len(found) != 1:
        raise LookupError(f"{len(found)} matrix cases match {model} {options}: {[c.id for c in found]}")
    return found[0]


class WorkerThreadError(AssertionError):
    """One or more worker threads raised (or did not finish); the first error is the cause."""


def run_in_threads(work: Callable[[int], Any], count: int, timeout: float = 300.0) -> list[Any]:
    """Run ``work(index)`` for index 0..count-1, each on its own thread, all started together.

    Returns the results by index. Raises WorkerThreadError, chained from the first worker's
    exception and naming every failed thread, when any worker raised, and when any thread is
    still running after ``timeout`` seconds: a worker's failure is never swallowed.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    barrier = threading.Barrier(count)  # every thread has started before any works: real overlap
    results: list[Any] = [None] * count
    errors: list[tuple[int, BaseException]] = []
    lock = threading.Lock()

    def target(index: int) -> None:
        try:
            barrier.wait(timeout)
            results[index] = work(index)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            with lock:
                errors.append((index, exc))

    threads = [threading.Thread(target=target, args=(i,), name=f"worker-{i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [thread.name for thread in threads if thread.is_alive()]
    with lock:
        failed = sorted(errors, key=lambda item: item[0])
    if failed:
        details = "; ".join(f"worker-{i}: {type(exc).__name__}: {exc}" for i, exc in failed)
        extra = f" ({', '.join(hung)} still running after {timeout:g} s)" if hung else ""
        raise WorkerThreadError(f"{len(failed)} of {count} worker threads failed{extra}: {details}") from failed[0][1]
    if hung:
        raise WorkerThreadError(f"{', '.join(hung)} still running after {timeout:g} s (of {count} worker threads)")
    return results
