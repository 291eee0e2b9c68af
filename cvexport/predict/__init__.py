"""Offline batch inference over image files, folders, globs and videos: ``cvexport predict``.

In-process it runs one :class:`~cvexport.runtime.predictor.Predictor`; with ``--ray`` it runs
a Ray Data pipeline whose actors each open the bundle once. Both produce the same rows
(keyed by input path and frame index) through the same code (:func:`predict_inputs`) and the
same store, so results are identical to ``Predictor.predict`` on the same frames.

One idea per module:

* ``inputs``: files, folders and globs -> the input files, each once;
* ``rows``: a prediction -> its stored row (the task's record), the Parquet schema, JSON lines;
* ``batching``: frames of consecutive inputs in shared batches, results per whole input;
* ``store``: the ``--out`` folder (Parquet parts, commits on size and time, the lock, resume);
* ``stopping``: SIGINT / SIGTERM as a clean stop;
* ``ray_plan`` / ``ray_pipeline``: the actor pool's plan, and the Ray Data pipeline;
* ``run``: :func:`batch_predict`, the run itself; ``command``: its command line.
"""

from __future__ import annotations

from cvexport.predict.batching import InputResult, predict_inputs
from cvexport.predict.inputs import InputFile, expand_inputs
from cvexport.predict.options import PredictOptions
from cvexport.predict.ray_pipeline import ray_failure
from cvexport.predict.ray_plan import PoolPlan, call_groups, check_ray_address, plan_pool
from cvexport.predict.rows import decode_array, jsonl_record, prediction_row
from cvexport.predict.run import batch_predict
from cvexport.predict.store import FAILURES_FILE, JSONL_DIR, PARTS_DIR, RUN_FILE, ResultStore, read_results

__all__ = [
    "FAILURES_FILE", "JSONL_DIR", "PARTS_DIR", "RUN_FILE", "InputFile", "InputResult", "PoolPlan", "PredictOptions",
    "ResultStore", "batch_predict", "call_groups", "check_ray_address", "decode_array", "expand_inputs",
    "jsonl_record", "plan_pool", "prediction_row", "predict_inputs", "ray_failure", "read_results",
]
