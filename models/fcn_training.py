"""Training and evaluation of the FCN (ResNet-18 encoder) on the synthetic segmentation dataset.

The encoder starts from the ResNet-18 pretrained on the classifier's source dataset (the
same checkpoint the classifier fine-tunes), the new 1x1 conv and transposed conv learn at
10x its rate; loss is per-pixel cross-entropy over all classes including background.

Evaluation follows what users get: each val picture is letterboxed to the input as the runtime
does and the predicted label map is mapped back to the picture. Square val and letterboxed
camera frames (16:9, 4:3, 9:16) are reported apart, with the share of letterbox padding
pixels predicted as background (the padding shows nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cvexport.models.classifier_training import (
    HEAD_LR_SCALE,
    load_source,
    pretrain_source,
    round_weights_to_half,
    save_fp16_checkpoint,
)
from cvexport.models.camera_frames import metric_suffix, phase_data, samples_of_kind
from cvexport.models.fcn import FCNResNet18
from cvexport.models.segmentation_data import (
    INPUT_SIZE,
    SEG_CLASSES,
    fit_to_input,
    make_frame,
    make_sample,
    random_crop,
)
from cvexport.models.ssd_training import images_to_tensor

VAL_SIZE = 256
# Val views: "square" is the original val split; the others are camera frames (segmentation_data.make_frame).
EVAL_VIEWS = ("square", "16:9", "4:3", "9:16")


def training_samples(indices, data: str = "square", split: str = "train", seed: int = 0) -> list:
    """The samples a batch is made of, as the network gets them (INPUT_SIZE square); ``data`` is
    one of camera_frames.DATA_KINDS. Square train samples are randomly cropped, val ones used whole."""

    def square(idx: list[int]) -> list:
        samples = [make_sample(split, i, seed=seed) for i in idx]
        if split == "train":
            # Crops are drawn from the batch's own indices: an image gets a new crop each epoch
            # (it lands in a different batch), and a resumed run sees exactly the same crops.
            rng = np.random.default_rng([seed, *idx])
            samples = [random_crop(s, INPUT_SIZE, rng) for s in samples]
        return samples

    return samples_of_kind(indices, data, square, camera=lambda idx: [
        fit_to_input(make_frame(split, i, seed=seed, effects=True), INPUT_SIZE)[0] for i in idx])


def make_batch(indices: np.ndarray, split: str = "train", seed: int = 0, data: str = "square") -> dict[str, Tensor]:
    """{"images": Tensor[B, 3, S, S] float32 normalized (channels-last), "masks": Tensor[B, S, S] int64}
    with S = INPUT_SIZE (see :func:`training_samples`)."""
    samples = training_samples(indices, data, split, seed)
    return {
        "images": images_to_tensor([s.image for s in samples]).contiguous(memory_format=torch.channels_last),
        "masks": torch.from_numpy(np.stack([s.mask for s in samples])).long(),
    }


def segmentation_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Mean per-pixel cross-entropy; also reports the batch's pixel accuracy."""
    logits = model(batch["images"])
    accuracy = (logits.detach().argmax(1) == batch["masks"]).float().mean()
    return F.cross_entropy(logits, batch["masks"]), {"pix_acc": float(accuracy)}


def head_groups(model: FCNResNet18) -> list[dict[str, Any]]:
    """SGD parameter groups: pretrained encoder at the base rate, new layers at HEAD_LR_SCALE x."""
    head = list(model.classifier.parameters()) + list(model.upsample.parameters())
    return [{"params": list(model.encoder.parameters())}, {"params": head, "lr_scale": HEAD_LR_SCALE}]


def val_pictures(view: str, indices, seed: int = 0) -> list:
    """Val pictures of ``view`` as users pass them, with their masks."""
    if view == "square":
        return [make_sample("val", int(i), seed=seed) for i in indices]
    return [make_frame("val", int(i), seed=seed, view=view) for i in indices]


@torch.no_grad()
def evaluate_view(model: nn.Module, view: str = "square", size: int = VAL_SIZE, seed: int = 0,
                  batch_size: int = 32) -> dict[str, float]:
    """Metrics on the first ``size`` val pictures of ``view``, through the users' path: letterbox,
    network, label map mapped back to each picture.

    Returns (names suffixed by ``camera_frames.metric_suffix(view)``): ``val_miou`` (macro over
    all classes including background) and ``val_pixel_acc`` over the pictures' pixels
    (``cvexport.metrics.segmentation_scores``), and ``val_padding_background``: the share of
    letterbox padding pixels predicted as background (1.0 when there is no padding).
    """
    from cvexport.metrics import segmentation_scores

    model.eval()
    predicted, truth = [], []
    padding_pixels = padding_background = 0
    for start in range(0, size, batch_size):
        pictures = val_pictures(view, range(start, min(size, start + batch_size)), seed)
        fitted = [fit_to_input(picture, INPUT_SIZE) for picture in pictures]
        labels = model(images_to_tensor([sample.image for sample, _ in fitted])).argmax(1).numpy().astype(np.uint8)
        for label_map, picture, (_, box_map) in zip(labels, pictures, fitted):
            padding = _padding(box_map)
            padding_pixels += int(padding.sum())
            padding_background += int((label_map[padding] == 0).sum())
            predicted.append(box_map.map_to_original(label_map, labels=True))
            truth.append(picture.mask)
    scores = segmentation_scores(predicted, truth, len(SEG_CLASSES))
    key = metric_suffix(view)
    return {f"val_miou{key}": scores["miou"], f"val_pixel_acc{key}": scores["pixel_acc"],
            f"val_padding_background{key}": padding_background / padding_pixels if padding_pixels else 1.0}


def _padding(box_map) -> np.ndarray:
    """bool (INPUT_SIZE, INPUT_SIZE): True on the letterbox padding."""
    from cvexport.models.camera_frames import fit_labels

    picture = np.ones((box_map.original_height, box_map.original_width), dtype=np.uint8)
    return fit_labels(picture, box_map, INPUT_SIZE) == 0


def evaluate(model: nn.Module, size: int = VAL_SIZE, seed: int = 0, views=("square",)) -> dict[str, float]:
    """:func:`evaluate_view` on every view of ``views`` (square val only unless asked), plus
    ``val_images`` (pictures per view)."""
    record: dict[str, float] = {}
    for view in views:
        record.update(evaluate_view(model, view, size=size, seed=seed))
    return {**record, "val_images": size}


def source_backbone(run_dir: Path, config: Any, val_size: int) -> nn.Module:
    """The source-pretrained ResNet-18: the classifier run's (``run_dir.parent/classifier``) when it
    was trained with ``config``, else pretrained here into ``run_dir/phase1`` (resumable)."""
    backbone = load_source(run_dir.parent / "classifier" / "source.safetensors", config)
    if backbone is None:
        backbone, _ = pretrain_source(run_dir, config, val_size)
    return backbone


def default_config() -> list[Any]:
    """The recipe that produced the shipped checkpoint.

    Phase 1 is the classifier's source pretraining (reused from its run dir when present).
    Phase 2: 2048 train images (cropped 160 -> 128), 12 epochs of 16 (1536 steps), base lr
    0.01 for the encoder and 0.1 for the new layers, weight decay 1e-3 (val mIoU 0.763).
    Phases 3 and 4: warm restarts of phase 2 with new shuffling seeds (the loss was still
    falling and train pixel accuracy equalled val's: under-fitted, not over-fitted); val mIoU
    0.790 after phase 3, 0.806 after phase 4, but only 0.70 on letterboxed 16:9 and 4:3 frames.
    Phases 5 and 6: fine-tuning on square samples and camera frames together (``extra["data"] =
    "mixed"``), so the letterbox padding and camera effects are learnt and square is kept:
    mIoU square / 16:9 / 4:3 0.813 / 0.780 / 0.775 after phase 5, 0.818 / 0.828 / 0.821 after
    phase 6 (3.8 min per epoch of 256 steps on one core), padding predicted background 99.8 %.
    """
    from cvexport.models.classifier_training import default_config as classifier_config
    from cvexport.models.training import TrainConfig

    return [
        classifier_config()[0],
        TrainConfig(epochs=12, batch_size=16, train_size=2048, lr=0.01, weight_decay=1e-3, warmup_steps=30, seed=0),
        TrainConfig(epochs=12, batch_size=16, train_size=2048, lr=0.01, weight_decay=1e-3, warmup_steps=30, seed=1),
        TrainConfig(epochs=12, batch_size=16, train_size=2048, lr=0.01, weight_decay=1e-3, warmup_steps=30, seed=2),
        TrainConfig(epochs=3, batch_size=16, train_size=4096, lr=0.01, weight_decay=1e-3, warmup_steps=30, seed=3,
                    extra={"data": "mixed"}),
        TrainConfig(epochs=3, batch_size=16, train_size=4096, lr=0.01, weight_decay=1e-3, warmup_steps=30, seed=4,
                    extra={"data": "mixed"}),
    ]


def write_contact_sheet(run_dir: str | Path, phases: list[Any], seed: int = 0, per_kind: int = 8) -> Path:
    """A contact sheet of the first ``per_kind`` training samples of each kind of data the
    segmentation phases use, as the network gets them, with their masks (``run_dir/contact_sheet.png``)."""
    from cvexport.models.contact_sheet import FILE_NAME, save_contact_sheet, segmentation_cell

    kinds = [kind for kind in dict.fromkeys(phase_data(config) for config in phases[1:])]
    cells = [segmentation_cell(sample.image, sample.mask)
             for kind in kinds for sample in training_samples(range(per_kind), kind, "train", seed)]
    return save_contact_sheet(Path(run_dir) / FILE_NAME, cells, columns=per_kind // 2)


def train_phases(model: FCNResNet18, phases: list[Any], run_dir: str | Path, val_size: int = VAL_SIZE,
                 first: int = 2) -> dict[str, Any]:
    """Train ``model`` through the segmentation phases ``phases[first - 1:]`` (phase N in
    ``run_dir/phaseN``, resumable), then measure every val view with the weights rounded to fp16
    as shipped. The data seed stays the first segmentation phase's."""
    from cvexport.models.training import fit

    data_seed = phases[1].seed
    record: dict[str, Any] = {}
    for number, config in enumerate(phases, start=1):
        if number < max(first, 2):  # phase 1 is the source pretraining
            continue
        record = fit(
            model,
            make_batch=lambda idx, data=phase_data(config): make_batch(idx, "train", data_seed, data),
            loss_fn=segmentation_loss,
            config=config,
            run_dir=Path(run_dir) / f"phase{number}",
            param_groups=head_groups(model),
        )
    if val_size:
        record.update(evaluate(round_weights_to_half(model), size=val_size, seed=data_seed, views=EVAL_VIEWS))
    return record


def train(run_dir: str | Path, phases: list[Any], val_size: int = VAL_SIZE) -> tuple[FCNResNet18, dict[str, Any]]:
    """Build the FCN on the source-pretrained encoder (phases[0]) and train it through phases[1:]
    in ``run_dir/phase2..`` (resumable). Returns (model in eval mode, record with "val_miou",
    "val_pixel_acc", their letterboxed views', "val_images"); the weights are rounded to fp16
    precision as shipped. Writes the contact sheet of the training data first."""
    from cvexport.models.training import seed_everything

    run_dir = Path(run_dir)
    write_contact_sheet(run_dir, phases, seed=phases[1].seed)
    backbone = source_backbone(run_dir, phases[0], val_size)
    seed_everything(phases[1].seed)
    model = FCNResNet18(len(SEG_CLASSES), backbone).to(memory_format=torch.channels_last)
    record = train_phases(model, phases, run_dir, val_size)
    model.eval()
    return model, record


def save_weights(model: FCNResNet18, path: str | Path, record: dict[str, Any], config: list[Any]) -> None:
    """Write the deployable checkpoint: fp16 weights, class names, input contract, recipe, val metrics."""
    save_fp16_checkpoint(model, path, {"model": "fcn", "architecture": "FCNResNet18", "class_names": list(SEG_CLASSES)},
                         INPUT_SIZE, record, config)
