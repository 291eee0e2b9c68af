"""A small, shared training loop: deterministic from a seed, resumable, with progress and metrics.

Each model family supplies a batch maker, a loss and (optionally) an evaluation; this
module owns the loop, the optimizer schedule, checkpoints and the metrics file.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from cvexport.checkpoint import load_checkpoint, save_checkpoint

RESUME_FILE = "last.safetensors"  # in a run directory: where fit() resumes from
# What fit() records in RESUME_FILE's metadata (its tensors are "model.*" and "optim.*"): where to resume.
RESUME_KEYS = ("epoch", "next_batch", "step")


def is_resume_state(meta: dict[str, Any]) -> bool:
    """Whether checkpoint metadata ``meta`` is a run's resume state (written by :func:`fit`), not
    deployable weights: those record their model and classes, never where a loop stopped."""
    return all(key in meta for key in RESUME_KEYS) and "config" in meta


@dataclass
class TrainConfig:
    epochs: int = 12
    batch_size: int = 32
    train_size: int = 2048
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_steps: int = 50
    seed: int = 0
    max_steps: int | None = None  # stop early (tests and smoke runs)
    optimizer: str = "sgd"  # "sgd" (momentum) or "adam" (betas 0.9/0.999; momentum unused)
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 1% of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{key}"] = value
    return tensors


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state_dict = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)


def fit(
    model: nn.Module,
    make_batch: Callable[[np.ndarray], Any],
    loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]],
    config: TrainConfig,
    run_dir: str | Path,
    param_groups: Iterable[dict[str, Any]] | None = None,
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Train ``model`` with SGD or Adam (``config.optimizer``); returns the final record (losses and evaluation).

    ``make_batch(indices)`` builds a batch from dataset indices; epoch order is a permutation
    drawn from (seed, epoch), so a resumed run sees exactly the batches an uninterrupted one would.
    ``run_dir/last.safetensors`` is written after each epoch and picked up again when ``resume``.
    ``param_groups`` may give per-group ``lr_scale`` (fine-tuning: new head at 10x).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    groups = list(param_groups) if param_groups is not None else [{"params": list(model.parameters())}]
    for group in groups:
        group.setdefault("lr_scale", 1.0)
        group["lr"] = config.lr * group["lr_scale"]
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    elif config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    else:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; use 'sgd' or 'adam'")
    steps_per_epoch = config.train_size // config.batch_size
    # The schedule always spans the whole recipe; max_steps only stops early, so a stopped
    # run resumed later follows exactly the learning rates an uninterrupted one would.
    schedule_steps = steps_per_epoch * config.epochs
    stop_at = schedule_steps if config.max_steps is None else min(schedule_steps, config.max_steps)
    epoch, next_batch, step = 0, 0, 0
    last = run_dir / RESUME_FILE
    if resume and last.exists():
        tensors, meta = load_checkpoint(last)
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        _restore_optimizer(optimizer, tensors)
        epoch, next_batch, step = meta["epoch"], meta.get("next_batch", 0), meta["step"]
        print(f"resuming from {last}: epoch {epoch + 1}, batch {next_batch}, step {step}")
    metrics_file = run_dir / "metrics.jsonl"
    record: dict[str, Any] = {}
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("train", total=stop_at, completed=step, info="")
        while epoch < config.epochs and step < stop_at:
            model.train()
            order = np.random.default_rng([config.seed, epoch]).permutation(config.train_size)
            sums: dict[str, float] = {}
            count = 0
            started = time.perf_counter()
            while next_batch < steps_per_epoch and step < stop_at:
                indices = order[next_batch * config.batch_size : (next_batch + 1) * config.batch_size]
                factor = _lr_factor(step, schedule_steps, config.warmup_steps)
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * group["lr_scale"] * factor
                loss, parts = loss_fn(model, make_batch(indices))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                next_batch += 1
                count += 1
                for key, value in {"loss": float(loss.detach()), **parts}.items():
                    sums[key] = sums.get(key, 0.0) + value
                progress.update(task, advance=1, description=f"train epoch {epoch + 1}/{config.epochs}",
                                info=" ".join(f"{k}={v / count:.4f}" for k, v in sums.items()))
            if next_batch >= steps_per_epoch:
                epoch, next_batch = epoch + 1, 0
            record = {"epoch": epoch, "step": step, "seconds": round(time.perf_counter() - started, 1),
                      **{k: v / max(count, 1) for k, v in sums.items()}}
            with open(metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            state = {f"model.{k}": v for k, v in model.state_dict().items()}
            save_checkpoint(last, {**state, **_optimizer_tensors(optimizer)},
                            {"epoch": epoch, "next_batch": next_batch, "step": step, "config": asdict(config)})
    record = {**record, "epoch": epoch, "step": step}
    if evaluate is not None:
        model.eval()
        record.update(evaluate(model))
        with open(metrics_file, "a") as f:
            f.write(json.dumps({"step": step, **{k: v for k, v in record.items() if k.startswith("val_")}}) + "\n")
    return record


def train_model(spec, run_dir: str | Path, out: str | Path, *, epochs: int | None = None,
                max_steps: int | None = None, val_images: int | None = None, resume: bool = True) -> dict[str, Any]:
    """Run a registered model's training recipe and write its deployable weights to ``out``."""
    import shutil

    recipe = spec.trainer()
    phases = recipe.default_config()
    for phase in phases:  # overrides apply to every phase (smoke runs, shorter recipes)
        if epochs is not None:
            phase.epochs = epochs
        if max_steps is not None:
            phase.max_steps = max_steps
    run_dir = Path(run_dir)
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    kwargs = {} if val_images is None else {"val_size": val_images}
    model, record = recipe.train(run_dir, phases, **kwargs)
    record["train_seconds"] = round(time.perf_counter() - started, 1)
    recipe.save_weights(model, out, record, phases)
    return record
