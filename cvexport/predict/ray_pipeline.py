"""``cvexport predict --ray``: joining Ray, and the Ray Data pipeline whose actors each open the
bundle once and predict whole inputs (:func:`ray_results`). Ray is imported only here, and only
when ``--ray`` is given; the pool is planned by cvexport.predict.ray_plan.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

import numpy as np

from cvexport.errors import CvexportError, counted, first_line
from cvexport.predict.batching import InputResult, predict_inputs
from cvexport.predict.inputs import InputFile
from cvexport.predict.options import RAY_HINT, PredictOptions
from cvexport.predict.ray_plan import call_groups, plan_pool
from cvexport.predict.rows import arrow_schema


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra, with pyarrow
    except ImportError as exc:
        raise CvexportError(f"--ray needs Ray Data ({first_line(exc)}); install it: {RAY_HINT}") from None
    return ray


def connect(ray, address: str, log) -> None:
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
        raise CvexportError(f"cannot reach a Ray cluster at {address} ({first_line(exc)}); start one with "
                            "'ray start --head', or pass --ray alone for a local Ray") from None
    except Exception as exc:  # Ray raises bare RuntimeError/ValueError for bad addresses
        if isinstance(exc, CvexportError):
            raise
        raise CvexportError(f"cannot start or join Ray ({address}): {first_line(exc)}") from None


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

    return (arrow_schema().append(pa.field("error", pa.string())).append(pa.field("input_rows", pa.int64()))
            .append(pa.field("lost_frames", pa.int64())))


def _empty_row(item: InputFile) -> dict[str, Any]:
    return {"input": item.path, "frame": -1, "kind": item.kind, "time_s": None, "width": 0, "height": 0,
            "result": "{}", "array": None}


def ray_results(ray, options: PredictOptions, bundle_dir: str, todo: list[InputFile], batch: int,
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
