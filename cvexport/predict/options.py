"""What one ``cvexport predict`` run is asked to do (:class:`PredictOptions`), and the two
settings facts several of its modules share: which backends run on a GPU, and how to install
the Ray extra."""

from __future__ import annotations

from dataclasses import dataclass

RAY_HINT = 'pip install "cvexport[ray]"'
GPU_BACKENDS = frozenset({"ort-cuda", "ort-trt", "trt"})


@dataclass(frozen=True)
class PredictOptions:
    """The command line's options, for :func:`cvexport.predict.run.batch_predict`."""

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
