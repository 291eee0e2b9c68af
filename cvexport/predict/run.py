"""Running ``cvexport predict``: :func:`batch_predict` checks the options, bundle and inputs
before any work, opens the store, then predicts what is not done yet, in-process (one
:class:`~cvexport.runtime.predictor.Predictor`) or on Ray, committing as it goes and stopping
cleanly on SIGINT / SIGTERM.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from cvexport.errors import CvexportError, counted
from cvexport.predict.batching import predict_inputs
from cvexport.predict.inputs import InputFile, expand_inputs
from cvexport.predict.options import GPU_BACKENDS, PredictOptions
from cvexport.predict.ray_pipeline import connect, import_ray, ray_results
from cvexport.predict.ray_plan import check_ray_address
from cvexport.predict.stopping import Interrupted, StopRequest, until_stopped
from cvexport.predict.store import FAILURES_FILE, ResultStore


def batch_predict(options: PredictOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Predict every input into ``options.out``; returns the run's summary (counts, seconds).

    Called in the main thread, SIGINT and SIGTERM stop the run cleanly instead of raising or
    ending the process: the inputs complete so far are committed and the summary's
    ``stopped_by`` names the signal (the command exits 130 / 143); the caller's handlers are
    put back afterwards."""
    from cvexport.bundle import load_bundle
    from cvexport.backend_choice import resolve_backend
    from cvexport.runtime import check_backends

    backend = check_backends([options.backend])[0]
    if options.stride < 1 or (options.batch is not None and options.batch < 1):
        raise CvexportError("--stride and --batch must be at least 1")
    if options.actors is not None and options.ray is None:
        raise CvexportError("--actors sizes the Ray actor pool; add --ray, or drop --actors")
    if options.ray is not None:
        check_ray_address(options.ray)
    ray = import_ray() if options.ray is not None else None  # before any work: a missing extra is one line
    bundle = load_bundle(options.bundle)
    bundle.verify_file("onnx")  # a corrupt bundle is one line here, not one failure per actor
    # auto is measured here, on the driver's CPU, once; the actors get the name it resolved to.
    backend = resolve_backend(bundle, backend, log)
    options = dataclasses.replace(options, backend=backend)
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
    identity = {"bundle": str(Path(options.bundle).resolve()), "model": bundle.manifest.model,
                "task": bundle.task, "precision": bundle.precision, "onnx_sha256": bundle.manifest.onnx.sha256,
                "class_names": bundle.class_names, "stride": options.stride}
    try:
        store = ResultStore(options.out, identity, jsonl=options.jsonl)
        try:
            todo = [item for item in items if item.path not in store.done]
            skipped = len(items) - len(todo)
            log(f"{counted(len(items), 'input')}: {skipped} already done in {store.out}, {len(todo)} to predict"
                + (f" on Ray ({options.ray})" if ray else ""))
            if ray is not None and todo:
                connect(ray, options.ray, log)  # before ours: ray.init installs its own SIGTERM handler
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
         backend: str, skipped: int, log) -> tuple[dict[str, Any], StopRequest]:
    """Predict ``todo`` into ``store`` under SIGINT / SIGTERM handlers (main thread only); the
    run's summary, and what stopped it. Whatever ends the run (a signal, an error, a lost
    cluster), the inputs already complete are committed."""
    from cvexport.signals import install_stop_signals, restore_signals

    # In-process, the first signal lets the batch in flight finish (its inputs are complete
    # once it is predicted); on Ray, nothing returns sooner than the blocks already on their
    # way, so the wait for them ends at once.
    stop = StopRequest(drains=predictor is not None)
    previous = install_stop_signals(stop)
    started = time.perf_counter()
    frames = lost = 0
    try:
        if predictor is not None:
            results = predict_inputs(predictor, todo, batch, options.stride, stop=stop.requested)
        else:
            results = ray_results(ray, options, str(bundle.path.resolve()), todo, batch, log) if todo else iter(())
        store.start()
        try:
            for result in until_stopped(results, stop):
                frames += len(result.rows)
                if result.error is not None:
                    log(f"failed: {result.error}")
                if result.lost_frames:  # the rule stream keeps too: the good frames, the loss counted
                    lost += result.lost_frames
                    log(f"warning: {result.item.path}: {counted(result.lost_frames, 'frame')} could not be decoded "
                        f"and {'was' if result.lost_frames == 1 else 'were'} skipped; its rows keep the video's own "
                        "frame numbers")
                store.add(result)
        except Interrupted:
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
