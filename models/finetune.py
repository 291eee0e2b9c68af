"""Fine-tuning a reference model on a user's dataset (``cvexport train MODEL --data DIR``).

As taught (d2l, "Fine-Tuning"): keep every layer of a trained network but the task head, give
the head a fresh initialization for the dataset's classes, and train the whole network with the
head at HEAD_LR_SCALE x the base learning rate. The head is the detector's class predictors, the
classifier's ``fc`` (Xavier-uniform, as the course does) and the FCN's final 1x1 conv with its
transposed conv (bilinear again: its shape follows the class count). The start is, in order:
``--scratch`` (random weights: the baseline fine-tuning should beat), a torchvision ImageNet
ResNet-18 (``--pretrained FILE`` or the torch hub cache; classifier and FCN), else the shipped
weights. The run says which it used and the checkpoint records it. What differs by task (the
network and its head, batches, loss, val metric, contact-sheet cells, default recipe) are the
task's hooks (:mod:`cvexport.models.training_tasks`); this module is the run around them.
torchvision's builders (``resnet18``, ``ssdlite320_mobilenet_v3_large``, ...) have hooks of their
own (:mod:`cvexport.models.training_tasks.torchvision_builders`: torchvision's losses and input
fit) and other starts: torchvision's random init, ``--pretrained`` backbone weights, or
``--weights`` of the whole network ("weights").

Samples are fitted to the network input by the runtime's letterbox, so the model learns on what
it will be given; training pictures are flipped left-right at random (``augment``). The loop is
:func:`cvexport.models.training.fit`: resumable from ``RUN_DIR/last.safetensors``, a rich
progress bar with the loss, the throughput (img/s) and the ETA; ``RUN_DIR/contact_sheet.png``
shows training samples as the network gets them, with their boxes, masks or class names, as the
shipped models' training writes one. At the end the task metric is
measured on the val split through the users' path (letterbox, network, results mapped back to
each picture): COCO mAP, top-1, mIoU.

Threads: training runs on DEFAULT_THREADS intra-op thread unless told otherwise (``--threads``).
Measured on the 2-core AMD EPYC this project runs on (fwd + bwd + SGD step, median of 6,
alternating): while other jobs used the cores, ResNet-18 at 64 px batch 32 took 0.28 s with 1
thread vs 3.26 s with torch's default 2, TinySSD at 256 px batch 16 1.90 s vs 4.02 s, the FCN at
128 px batch 16 0.77 s vs 3.52 s; on the idle machine 2 threads were faster, 0.16 vs 0.27 s,
0.93 vs 1.38 s and 0.22 vs 0.38 s. Two threads wait for each other whenever a neighbour holds a
core (up to 11x slower); one thread never does and costs at most 1.7x on an idle machine.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from cvexport.errors import CvexportError, counted
from cvexport.models.training_tasks.base import FineTuning
from cvexport.models.training_tasks.registry import fine_tuning
from cvexport.models.user_datasets import UserDataset

HEAD_LR_SCALE = 10.0  # the new head learns 10x faster than the kept layers (d2l)
DEFAULT_THREADS = 1  # see the module docstring
MIN_STEPS = 300  # default epochs are raised until the run has at least this many steps
RUN_FILE = "run.json"  # what a run directory was started with, checked before it resumes
DATASET_FILES = "dataset_files"  # run.json: {file: sha256 prefix} of the data, beside the identity: names what changed
CONTACT_CELLS = 16  # training samples on the run's contact sheet
CACHE_BYTES = 512 << 20  # fitted train samples are kept in memory up to this size
STARTS = ("shipped", "imagenet", "scratch", "weights")  # "weights": a torchvision builder's --weights file


@dataclass
class Start:
    """Where a run's weights come from: kind (one of STARTS), what to print, what to record."""

    kind: str
    text: str
    record: dict[str, Any]


# ------------------------------------------------------------------------------ models
def hooks_of(spec) -> FineTuning:
    """The fine-tuning hooks of ``spec``: a torchvision builder's own
    (:mod:`cvexport.models.training_tasks.torchvision_builders`), else its task's; a model whose
    task has none is one line."""
    if spec.family == "torchvision":
        from cvexport.models.training_tasks.torchvision_builders import torchvision_fine_tuning

        return torchvision_fine_tuning(spec)
    return fine_tuning(spec.task, f"--data applies to the ssd, classifier and fcn models and torchvision's builders, "
                                  f"not '{spec.name}'")


def build_start(spec, num_classes: int, input_side: int, start: str, pretrained=None) -> tuple[nn.Module, list, Start]:
    """(model for ``num_classes`` with its head freshly initialized, SGD parameter groups with
    the head at HEAD_LR_SCALE x, the Start) for ``spec``'s network from ``start`` (one of
    STARTS; "imagenet" takes ``pretrained``, a :class:`cvexport.pretrained.PretrainedFile`,
    "weights" the checked file of :meth:`FineTuning.find_weights`)."""
    from cvexport.digest import sha256_file

    model, head = hooks_of(spec).network(spec, num_classes, input_side, start, pretrained)
    head_ids = {id(p) for p in head}
    body_params = [p for p in model.parameters() if id(p) not in head_ids]
    groups = [{"params": body_params}, {"params": head, "lr_scale": HEAD_LR_SCALE}]
    if start == "shipped":
        record = {"kind": "shipped", "file": spec.weights, "sha256": sha256_file(spec.weights_path())}
        text = f"the shipped {spec.name} weights ({spec.weights}), head re-initialized for {counted(num_classes, 'class', 'classes')}"
    elif start == "imagenet":
        record = {"kind": "imagenet", **pretrained.record()}
        text = f"{pretrained.describe()}, head initialized for {counted(num_classes, 'class', 'classes')}"
    elif start == "weights":
        record = {"kind": "weights", **pretrained.record()}
        text = (f"{pretrained.describe()}, for {counted(num_classes, 'class', 'classes')} (its class head kept where "
                "it has as many, else new)")
    else:
        record = {"kind": "scratch"}
        text = "random weights (from scratch)"
    return model.to(memory_format=torch.channels_last), groups, Start(start, text, record)


def choose_start(spec, scratch: bool, pretrained_file: str | None, weights_file: str | None = None,
                 side: int | None = None) -> tuple[str, Any]:
    """(one of STARTS, the file it reads): ``--scratch``, else ``--weights`` (a torchvision
    builder's whole network, read for a ``side`` input), else ``--pretrained`` or a torchvision
    ResNet-18 in the torch hub cache (classifier, FCN; a torchvision builder's backbone), else the
    hooks' default start (shipped weights; a torchvision builder's random init). The file is read
    and checked here, before any work."""
    hooks = hooks_of(spec)
    given = [flag for flag, value in (("--scratch", scratch), ("--pretrained", pretrained_file),
                                      ("--weights", weights_file)) if value]
    if len(given) > 1:
        raise CvexportError(f"{' and '.join(given)} exclude each other: --scratch starts from random weights, "
                            "--pretrained from ImageNet backbone weights, --weights from the whole network's")
    if scratch:
        return "scratch", None
    if weights_file:
        if not hooks.weights_start:
            raise CvexportError(f"--weights applies to torchvision's builders; '{spec.name}' starts from its shipped "
                                "weights (or --pretrained, --scratch)")
        return "weights", hooks.find_weights(spec, weights_file, side or spec.input_size[0])
    if not hooks.imagenet_start:
        if pretrained_file:
            raise CvexportError(f"--pretrained applies to the classifier and fcn models (a ResNet-18); "
                                f"'{spec.name}' starts from its shipped weights")
        return hooks.default_start, None
    found = hooks.find_pretrained(spec, pretrained_file)
    return ("imagenet", found) if found is not None else (hooks.default_start, None)


# -------------------------------------------------------------------------------- data
class FittedSamples:
    """A split's samples as the network gets them (see :meth:`UserDataset.fitted`), kept in
    memory while they fit in CACHE_BYTES (small datasets are decoded once, not every epoch)."""

    def __init__(self, dataset: UserDataset, split: str, size: int):
        self.dataset, self.split, self.size = dataset, split, size
        per_sample = size * size * 4  # image + mask bytes
        self.cache: dict[int, Any] | None = {} if len(dataset.splits[split]) * per_sample <= CACHE_BYTES else None

    def __getitem__(self, index: int):
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        sample = self.dataset.fitted(self.split, int(index), self.size)[0]
        if self.cache is not None:
            self.cache[index] = sample
        return sample


def batch_maker(samples: FittedSamples, hooks: FineTuning, model: nn.Module, seed: int, augment: bool) -> Callable:
    """``make_batch(indices)`` for :func:`fit`: the task's tensors of those train samples, each
    flipped with probability 1/2 when ``augment`` (drawn from the batch's indices, so a resumed
    run sees the same batches and an image gets a new draw each epoch)."""
    from cvexport.models.ssd_training import images_to_tensor

    def make_batch(indices: np.ndarray) -> dict[str, Tensor]:
        chosen = [samples[int(i)] for i in indices]
        if augment:
            flips = np.random.default_rng([seed, *(int(i) for i in indices)]).random(len(chosen)) < 0.5
            chosen = [hooks.flip(s) if flip else s for s, flip in zip(chosen, flips)]
        images = images_to_tensor([s.image for s in chosen]).contiguous(memory_format=torch.channels_last)
        return hooks.batch(chosen, images, model)

    return make_batch


class Throughput:
    """Wraps ``make_batch`` and the loss so the progress bar shows images per second: the loss of
    step n reports the rate of step n - 1 (from one batch's start to the next's), which
    :func:`fit` averages over the epoch like the loss. The first step of a process reports the
    rate up to its loss (data and forward pass only)."""

    def __init__(self, make_batch: Callable, loss: Callable):
        self._make_batch, self._loss = make_batch, loss
        self._started: float | None = None
        self._previous_rate: float | None = None
        self.steps = self.images = 0  # in this process (a resumed run counts from where it resumed)
        self.began: float | None = None

    def make_batch(self, indices):
        now = time.perf_counter()
        if self._started is not None:
            self._previous_rate = len(indices) / max(now - self._started, 1e-9)
        if self.began is None:
            self.began = now
        self._started = now
        return self._make_batch(indices)

    def loss(self, model, batch):
        loss, parts = self._loss(model, batch)
        size = int(batch["images"].shape[0])
        rate = self._previous_rate or size / max(time.perf_counter() - self._started, 1e-9)
        self.steps += 1
        self.images += size
        return loss, {**parts, "img/s": rate}


def write_contact_sheet(run_dir: Path, samples: FittedSamples) -> Path:
    """``run_dir/contact_sheet.png``: CONTACT_CELLS training samples as the network gets them
    (letterboxed, not flipped) with their boxes, masks or class names drawn, spread evenly over
    the split (an ImageFolder split is sorted by class: its first samples would show one class)."""
    from cvexport.models.contact_sheet import FILE_NAME, save_contact_sheet

    dataset = samples.dataset
    count = len(dataset.splits[samples.split])
    indices = sorted(set(np.linspace(0, count - 1, min(CONTACT_CELLS, count)).round().astype(int).tolist()))
    # through the cache: the run reads them again for free
    cells = [dataset.hooks.contact_cell(samples[index], dataset.class_names) for index in indices]
    return save_contact_sheet(run_dir / FILE_NAME, cells, columns=dataset.hooks.contact_columns)


# ---------------------------------------------------------------------------- evaluate
@torch.no_grad()
def evaluate(model: nn.Module, dataset: UserDataset, size: int, count: int | None = None,
             batch_size: int = 16) -> dict[str, float]:
    """The task metric on the first ``count`` val pictures (all by default), through the users'
    path: letterbox, network, results mapped back to each picture. Detection: ``val_map50`` and
    ``val_map`` (COCO, score threshold 0.01 as COCO evaluation ranks detections); classification:
    ``val_top1``; segmentation: ``val_miou`` and ``val_pixel_acc`` (void pixels left out)."""
    from cvexport.models.ssd_training import images_to_tensor

    model.eval()
    hooks = dataset.hooks
    total = min(count or len(dataset.splits["val"]), len(dataset.splits["val"]))
    predictions: list[Any] = []
    for start in range(0, total, batch_size):
        fitted = [dataset.fitted("val", i, size) for i in range(start, min(total, start + batch_size))]
        outputs = hooks.infer(model, images_to_tensor([sample.image for sample, _ in fitted]))
        predictions += hooks.predictions(model, outputs, fitted, size)
    truths = dataset.truths("val", total)
    predictions, truths = dataset.metric_inputs(predictions, truths)
    return hooks.scores(predictions, truths, dataset.class_names, total)


# --------------------------------------------------------------------------------- run
def _run_identity(spec, dataset: UserDataset, side: int, start: Start, config, augment: bool) -> dict[str, Any]:
    """What a run directory must have been started with to be resumed (max_steps only stops early)."""
    return {"model": spec.name, "dataset": dataset.digest, "class_names": list(dataset.class_names),
            "input_size": side, "start": {k: v for k, v in start.record.items() if k in ("kind", "sha256")},
            "config": {k: v for k, v in asdict(config).items() if k != "max_steps"}, "augment": augment}


def _prepare_run_dir(run_dir: Path, identity: dict[str, Any], resume: bool, dataset_files: dict[str, str] | None = None,
                     log: Callable[[str], None] = print) -> None:
    """Refuse to resume a run directory whose checkpoint was made with anything else, saying
    what differs; ``resume=False`` starts over, removing only the files a run writes there. A run
    that ended before its first checkpoint (a crash in epoch 1) left nothing to resume: another
    setup starts over there. ``dataset_files`` ({name: sha256 prefix}) is recorded beside the
    identity, so a later refusal can name the files that changed."""
    from cvexport.atomic import write_text_atomic
    from cvexport.models.training import RESUME_FILE

    checkpoint = run_dir / RESUME_FILE
    files = [run_dir / RUN_FILE, checkpoint, run_dir / "metrics.jsonl"]
    if not resume:
        for path in files:
            if path.is_file():
                path.unlink()
    recorded = None
    if (run_dir / RUN_FILE).is_file():
        try:
            recorded = json.loads((run_dir / RUN_FILE).read_text())
        except ValueError:
            recorded = {}
        if not isinstance(recorded, dict):
            recorded = {}
    if recorded is None and checkpoint.exists():
        recorded = {}
    identity = json.loads(json.dumps(identity))
    started = {k: v for k, v in (recorded or {}).items() if k != DATASET_FILES}
    if recorded is not None and started != identity:
        changed = sorted(k for k in set(started) | set(identity) if started.get(k) != identity.get(k))
        if not checkpoint.exists():
            earlier = f"started there with another {', '.join(changed)}" if started else f"of its unreadable {RUN_FILE}"
            log(f"{run_dir} holds no checkpoint of the run {earlier}: starting over")
            for path in files[2:]:
                if path.is_file():
                    path.unlink()
        elif not started:
            raise CvexportError(f"--run-dir {run_dir} holds a checkpoint {checkpoint} without a readable {RUN_FILE} "
                                "(what its run was started with); pass --fresh to start it over, or another --run-dir")
        else:
            details = "; ".join(_identity_changes(started, identity, recorded.get(DATASET_FILES), dataset_files))
            why = (" A run resumes only on the data it started with: the train split's images, their order and "
                   "count set every batch and the learning-rate schedule." if "dataset" in changed else "")
            raise CvexportError(f"--run-dir {run_dir} holds a run started with another {', '.join(changed)} "
                                f"({details}), and its checkpoint {checkpoint.name} continues only that run.{why} "
                                "Pass --fresh to start it over, or another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / RUN_FILE, json.dumps({**identity, DATASET_FILES: dataset_files or {}}, indent=2) + "\n")


def _identity_changes(started: dict[str, Any], now: dict[str, Any], started_files: Any,
                      files: dict[str, str] | None) -> list[str]:
    """What differs between the identity a run was started with and this one, item by item:
    the config keys, the dataset's files (added, removed, changed) where both listings exist."""
    def shown(value: Any) -> str:
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."

    def listed(names: list[str]) -> str:
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        return f"{len(names)} ({', '.join(names[:3])}{more})"

    changes = []
    for key in sorted(set(started) | set(now)):
        before, after = started.get(key), now.get(key)
        if before == after:
            continue
        if key == "config" and isinstance(before, dict) and isinstance(after, dict):
            changes += [f"config {k} {shown(before.get(k))} -> {shown(after.get(k))}"
                        for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
        elif key == "dataset" and isinstance(started_files, dict) and started_files and files:
            removed = sorted(set(started_files) - set(files))
            added = sorted(set(files) - set(started_files))
            altered = sorted(n for n in set(files) & set(started_files) if files[n] != started_files[n])
            parts = [f"{word} {listed(names)}" for word, names in (("removed", removed), ("added", added),
                                                                   ("changed", altered)) if names]
            changes.append(f"dataset files {', '.join(parts)}" if parts else
                           f"dataset sha256 {str(before)[:12]} -> {str(after)[:12]}")
        elif key == "dataset":
            changes.append(f"dataset sha256 {str(before)[:12]} -> {str(after)[:12]}")
        else:
            changes.append(f"{key.replace('_', ' ')} {shown(before)} -> {shown(after)}")
    return changes


def finetune(spec, dataset: UserDataset, run_dir: str | Path, out: str | Path, *, start: str = "shipped",
             pretrained=None, input_size: int | None = None, epochs: int | None = None, max_steps: int | None = None,
             batch_size: int | None = None, lr: float | None = None, threads: int | None = None,
             augment: bool = True, val_images: int | None = None, resume: bool = True, seed: int = 0,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune ``spec``'s network on ``dataset`` in ``run_dir`` (resumable) and write the
    deployable checkpoint to ``out``: fp32 weights, with class names, input size, mean/std,
    the dataset's record (format, path, sha256), the start, the recipe and the val metrics in
    its metadata. Returns the record (val metrics, steps, throughput)."""
    from cvexport.checkpoint import save_checkpoint
    from cvexport.models.training import TrainConfig, fit, seed_everything

    hooks = hooks_of(spec)
    dataset = dataset.with_hooks(hooks)  # samples fitted, predicted and scored as this model's hooks do
    recipe = hooks.recipe
    side = int(input_size or spec.input_size[0])
    check_input_size(spec, side)
    train_count = len(dataset.splits["train"])
    batch = min(batch_size or recipe.batch_size, train_count)
    steps_per_epoch = train_count // batch
    if epochs is None:
        epochs = max(recipe.epochs, math.ceil(MIN_STEPS / steps_per_epoch))
    config = TrainConfig(epochs=epochs, batch_size=batch, train_size=train_count, lr=lr or recipe.lr,
                         weight_decay=recipe.weight_decay, warmup_steps=recipe.warmup_steps, seed=seed,
                         max_steps=max_steps)
    previous_threads = torch.get_num_threads()
    threads = threads or DEFAULT_THREADS
    torch.set_num_threads(threads)
    try:
        seed_everything(seed)
        model, groups, begin = build_start(spec, len(dataset.class_names), side, start, pretrained)
        run_dir = Path(run_dir)
        # 16 hex digits a file name enough to tell files apart, and run.json stays small for large datasets
        files = {name: digest[:16] for name, digest in dataset.file_digests.items()}
        _prepare_run_dir(run_dir, _run_identity(spec, dataset, side, begin, config, augment), resume, files, log)
        log(f"fine-tuning {spec.name} on {dataset.describe()}")
        head_rate = f" (head x{HEAD_LR_SCALE:g})" if groups[1]["params"] else ""  # from scratch all is new
        log(f"start: {begin.text}; input {side}x{side}, batch {batch}, {epochs} epochs of {steps_per_epoch} steps"
            f"{f' (stopping after step {max_steps})' if max_steps else ''}, lr {config.lr}{head_rate}, "
            f"{threads} thread{'s' if threads > 1 else ''}")
        samples = FittedSamples(dataset, "train", side)
        log(f"contact sheet of the training data as the network gets it: {write_contact_sheet(run_dir, samples)}")
        meter = Throughput(batch_maker(samples, hooks, model, seed, augment), hooks.loss())
        record = fit(model, meter.make_batch, meter.loss, config, run_dir, param_groups=groups, resume=resume)
        seconds = time.perf_counter() - meter.began if meter.began is not None else 0.0
        throughput = {"steps": meter.steps, "seconds": round(seconds, 1), "threads": threads,
                      "steps_per_s": round(meter.steps / seconds, 3) if seconds else None,
                      "images_per_s": round(meter.images / seconds, 2) if seconds else None}
        record.pop("img/s", None)  # the epoch's mean of per-step rates; the run's rate is in "throughput"
        record.update(evaluate(model, dataset, side, val_images))
        # Val images that are train images measure memory, not the model on new pictures: say so
        # beside the number (a one-class detector scored 1.0000 on a val.json copied from train.json).
        record["val_train_overlap"] = len(dataset.val_in_train(record["val_images"]))
        if record["val_train_overlap"]:
            log(f"note: {record['val_train_overlap']} of the {record['val_images']} val images are train images "
                f"too: the val metrics measure how well the run learnt those pictures by heart, not how it does on "
                "new ones")
        record["throughput"] = throughput
        record["start"] = begin.record
        metrics = {k: v for k, v in record.items() if k.startswith("val_")}
        meta = {
            "model": spec.name,
            "architecture": hooks.architecture(model),
            "class_names": list(dataset.class_names),
            "input_size": side,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "dataset": dataset.record(),
            "start": begin.record,
            "train": {**asdict(config), "augment": augment, "head_lr_scale": HEAD_LR_SCALE,
                      "steps_done": record["step"]},
            "metrics": metrics,
            "throughput": throughput,
            **hooks.checkpoint_metadata(model),
        }
        model.eval()
        save_checkpoint(out, model.state_dict(), meta)
    finally:
        torch.set_num_threads(previous_threads)
    return record


def check_input_size(spec, side: int) -> None:
    """--input-size must be a side the network takes (:meth:`ModelSpec.input_side_rule`)."""
    rule = spec.input_side_rule(side)
    if rule is not None:
        raise CvexportError(f"--input-size {side} does not fit {spec.name}: use a side {rule}")
