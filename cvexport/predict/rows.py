"""One stored row per image or video frame: its Parquet schema, a prediction -> its row, and a
row -> its JSON line.

A row holds the task's one JSON form (``task.record``, what ``run`` and ``stream`` write too)
and, where the prediction is an array (a segmentation label map, a stylized picture), that
array exactly, as .npy bytes.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from cvexport.predict.inputs import InputFile


def arrow_schema():
    """The columns of every Parquet part (pyarrow, an optional dependency, is imported on use)."""
    import pyarrow as pa

    return pa.schema([("input", pa.string()), ("frame", pa.int64()), ("kind", pa.string()),
                      ("time_s", pa.float64()), ("width", pa.int32()), ("height", pa.int32()),
                      ("result", pa.string()), ("array", pa.binary())])


def prediction_row(task, item: InputFile, frame: int, time_s: float | None, image: np.ndarray,
                   prediction: Any) -> dict[str, Any]:
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
            "result": json.dumps(task.record(prediction), sort_keys=True), "array": array}


def jsonl_record(row: dict[str, Any]) -> dict[str, Any]:
    """A stored row as JSON: the task's record inline. Array predictions (label maps, stylized
    pictures) stay in the Parquet part's ``array`` column only."""
    record = {key: row[key] for key in ("input", "frame", "kind", "time_s", "width", "height")}
    record.update(json.loads(row["result"]))
    return record


def decode_array(data: bytes | None) -> np.ndarray | None:
    """A row's ``array`` bytes -> the array prediction (None for tasks whose predictions are not arrays)."""
    return None if data is None else np.load(io.BytesIO(data), allow_pickle=False)
