"""Planning a ``cvexport predict --ray`` run without Ray itself: whether ``--ray``'s argument is
an address, which inputs go to each actor call, and the actor pool's size and resources.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from cvexport.errors import CvexportError
from cvexport.predict.inputs import InputFile
from cvexport.predict.options import GPU_BACKENDS


@dataclass(frozen=True)
class PoolPlan:
    """The actor pool of a Ray run: how many actors, and what each claims from the cluster."""

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
