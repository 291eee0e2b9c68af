"""Fine-tuning on a user's dataset (cvexport.models.finetune, ``cvexport train MODEL --data DIR``)
and what follows from it: the head re-initialized for the dataset's classes and the rest kept,
resumable runs, the class names travelling from the checkpoint into the bundle, ``run`` and
``verify``. The slow tests train a few hundred steps from the shipped weights and from scratch on
datasets written here (other classes than the shipped models) and build ``--fp16`` bundles."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import one_line_stderr
from cvexport.checkpoint import load_checkpoint, read_metadata
from cvexport.cli import main
from cvexport.errors import CvexportError
from cvexport.models import dataset_writers
from cvexport.models.dataset_reading import VOID
from cvexport.models.finetune import HEAD_LR_SCALE, build_start
from cvexport.registry import get_spec


# ---------------------------------------------------------------------------- the head
def _shipped(name: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(get_spec(name).weights_path())[0]


@pytest.mark.parametrize("name,classes,side,head", [
    ("ssd", 2, 256, ("cls_predictors.",)),
    ("classifier", 5, 64, ("fc.",)),
    ("fcn", 3, 128, ("classifier.", "upsample.")),
])
def test_head_is_new_for_the_classes_and_every_other_layer_kept(name, classes, side, head):
    torch.manual_seed(0)
    model, groups, start = build_start(get_spec(name), classes, side, "shipped")
    shipped = _shipped(name)
    state = model.state_dict()
    kept = [k for k in shipped if not k.startswith(head)]
    assert kept and all(torch.equal(state[k].float(), shipped[k].float()) for k in kept)
    new = [k for k in state if k.startswith(head) and k.endswith("weight")]
    assert new and all(state[k].shape != shipped[k].shape for k in new)  # sized for the dataset's classes
    assert start.record["kind"] == "shipped" and start.record["file"] == get_spec(name).weights
    head_ids = {id(p) for p in groups[1]["params"]}
    assert groups[1]["lr_scale"] == HEAD_LR_SCALE and "lr_scale" not in groups[0]
    assert head_ids == {id(p) for n, p in model.named_parameters() if n.startswith(head)}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))
    with torch.no_grad():
        outputs = model.eval()(torch.zeros(1, 3, side, side))
    if name == "ssd":
        assert outputs[0].shape[-1] == classes + 1  # + background
    else:
        assert outputs.shape[1] == classes


def test_classifier_fc_is_xavier_and_fcn_upsampling_bilinear():
    from cvexport.models.fcn import bilinear_kernel

    torch.manual_seed(0)
    classifier, _, _ = build_start(get_spec("classifier"), 5, 64, "shipped")
    bound = float(np.sqrt(6.0 / (512 + 5)))  # Xavier-uniform
    weight = classifier.fc.weight
    assert weight.abs().max() <= bound and weight.abs().max() > 0.8 * bound and weight.std() > 0.4 * bound
    assert torch.count_nonzero(classifier.fc.bias) == 0
    fcn, _, _ = build_start(get_spec("fcn"), 3, 128, "shipped")
    torch.testing.assert_close(fcn.upsample.weight, bilinear_kernel(3, 3, 64))


def test_scratch_keeps_nothing_of_the_shipped_weights():
    torch.manual_seed(0)
    model, _, start = build_start(get_spec("classifier"), 5, 64, "scratch")
    shipped = _shipped("classifier")
    assert start.record == {"kind": "scratch"}
    assert not torch.equal(model.layer1[0].conv1.weight, shipped["layer1.0.conv1.weight"].float())


# ----------------------------------------------------------------- tiny end-to-end runs
@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return dataset_writers.write_imagefolder(tmp_path_factory.mktemp("data") / "shapes", train_per_class=2,
                                             val_per_class=2)


@pytest.fixture(scope="module")
def tiny_run(folder, tmp_path_factory):
    """A classifier fine-tuned 2 steps on the 5-class ImageFolder: (run dir, weights)."""
    run_dir = tmp_path_factory.mktemp("run")
    out = run_dir / "classifier.safetensors"
    assert main(["train", "classifier", "--data", str(folder), "--run-dir", str(run_dir), "--max-steps", "2"]) == 0
    return run_dir, out


def test_checkpoint_records_classes_input_size_dataset_and_recipe(tiny_run, folder):
    from cvexport.models.user_datasets import open_dataset

    _, out = tiny_run
    meta = read_metadata(out)
    names = sorted(dataset_writers.FOLDER_CLASSES)
    assert meta["class_names"] == names and meta["model"] == "classifier"
    assert meta["input_size"] == 64
    assert meta["dataset"]["sha256"] == open_dataset("classification", folder).digest
    assert meta["dataset"]["path"] == str(folder.resolve()) and meta["dataset"]["format"] == "imagefolder"
    assert meta["train"]["steps_done"] == 2 and meta["train"]["head_lr_scale"] == HEAD_LR_SCALE
    assert 0.0 <= meta["metrics"]["val_top1"] <= 1.0
    assert meta["throughput"]["threads"] == 1 and meta["throughput"]["images_per_s"] > 0
    spec = get_spec("classifier").for_weights(out)
    assert spec.class_names == tuple(names) and spec.dataset == meta["dataset"]
    assert get_spec("classifier").class_names != spec.class_names  # the registry keeps the shipped defaults
    model = get_spec("classifier").load_model(out)
    assert model.fc.out_features == len(names)


def test_bundle_from_custom_weights_names_its_classes_in_manifest_run_and_verify(tiny_run, folder, tmp_path, capsys):
    _, out = tiny_run
    bundle = tmp_path / "bundle"
    assert main(["build", "classifier", "--weights", str(out), "--fp16", "--out", str(bundle), "--backend", "ort"]) == 0
    log = capsys.readouterr().out
    assert "checking on the val split of imagefolder dataset" in log
    assert "verify ort: top-1" in log and "on 10 val images" in log
    manifest = json.loads((bundle / "manifest.json").read_text())
    names = sorted(dataset_writers.FOLDER_CLASSES)
    assert manifest["class_names"] == names
    assert manifest["dataset"]["path"] == str(folder.resolve())
    assert "fine-tuned on the imagefolder dataset 'shapes'" in manifest["description"]
    assert manifest["outputs"][0]["shape"][-1] == len(names)
    for backend in ("ort", "torch"):
        results = tmp_path / f"results-{backend}"
        image = next((folder / "val" / "cross").glob("*.jpg"))
        assert main(["run", str(bundle), str(image), "--out", str(results), "--backend", backend]) == 0
        printed = capsys.readouterr().out
        predictions = json.loads((results / "predictions.json").read_text())
        assert predictions["class_names"] == names
        top = predictions["images"][0]["classification"]
        assert top["class_name"] in names and f"{image}: {top['class_name']}" in printed
    streamed = tmp_path / "stream"
    assert main(["stream", str(bundle), str(folder / "val" / "ellipse"), "--out", str(streamed), "--no-video",
                 "--status", "none"]) == 0
    frames = [json.loads(line) for line in (streamed / "ellipse.jsonl").read_text().splitlines()]
    assert len(frames) == 2 and all(frame["classification"]["class_name"] in names for frame in frames)
    assert {t["class_name"] for t in frames[0]["classification"]["top"]} == set(names)
    capsys.readouterr()
    report = tmp_path / "verify.json"
    assert main(["verify", str(bundle), "--data", str(folder), "--json", str(report)]) == 0
    verified = json.loads(report.read_text())
    assert verified["val_images"] == 10 and verified["data"].startswith("imagefolder dataset")
    assert verified["rows"][0]["backend"] == "torch" and 0.0 <= verified["rows"][0]["top1"] <= 1.0
    assert main(["verify", str(bundle)]) == 0  # the recorded dataset is found by itself
    capsys.readouterr()


def test_moved_data_is_said_not_guessed(tiny_run, folder, tmp_path, capsys):
    _, out = tiny_run
    moved = Path(shutil.copytree(folder, tmp_path / "moved"))
    weights = tmp_path / "weights.safetensors"
    tensors, meta = load_checkpoint(out)
    from cvexport.checkpoint import save_checkpoint

    save_checkpoint(weights, tensors, {**meta, "dataset": {**meta["dataset"], "path": str(tmp_path / "gone")}})
    bundle = tmp_path / "bundle"
    assert main(["build", "classifier", "--weights", str(weights), "--out", str(bundle), "--backend", "ort"]) == 0
    log = capsys.readouterr().out
    assert "task metric not measured" in log and f"cvexport verify {bundle} --data DIR" in log
    assert "verify ort" not in log
    assert main(["verify", str(bundle)]) == 2
    assert "gone, which is not there; pass --data DIR" in one_line_stderr(capsys)
    assert main(["verify", str(bundle), "--data", str(moved)]) == 0
    capsys.readouterr()
    other = dataset_writers.write_voc(tmp_path / "voc", train=1, val=1)
    assert main(["verify", str(bundle), "--data", str(other)]) == 2  # not an ImageFolder
    one_line_stderr(capsys)
    # The recorded dataset changed in place: said, not measured on silently; --data takes it as it is.
    recorded = tmp_path / "changed"
    shutil.copytree(folder, recorded)
    next((recorded / "val" / "cross").iterdir()).unlink()
    save_checkpoint(weights, tensors, {**meta, "dataset": {**meta["dataset"], "path": str(recorded)}})
    changed = tmp_path / "changed-bundle"
    assert main(["build", "classifier", "--weights", str(weights), "--out", str(changed), "--backend", "ort"]) == 0
    assert "has changed since the weights were trained on it" in capsys.readouterr().out
    assert main(["verify", str(changed)]) == 2
    assert "has changed since the weights were trained on it" in one_line_stderr(capsys)
    assert main(["verify", str(changed), "--data", str(recorded)]) == 0
    capsys.readouterr()
    (moved / "val" / "cross").rename(moved / "val" / "plus")
    (moved / "train" / "cross").rename(moved / "train" / "plus")
    assert main(["verify", str(bundle), "--data", str(moved)]) == 2
    assert "has classes [diamond, ellipse, plus, rectangle, triangle], bundle" in one_line_stderr(capsys)


def test_fine_tuning_writes_a_contact_sheet_of_the_users_samples(tiny_run):
    from PIL import Image

    run_dir, _ = tiny_run
    with Image.open(run_dir / "contact_sheet.png") as sheet:
        # 10 training pictures, 64 px enlarged to 192, 8 a row: 2 rows
        assert sheet.size == (8 * (192 + 4) + 4, 2 * (192 + 4) + 4)


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_contact_sheet_draws_the_users_boxes_and_masks(tmp_path, fmt):
    from PIL import Image

    from cvexport.palette import BOX_PALETTE as BOX_COLORS
    from cvexport.models.finetune import FittedSamples, write_contact_sheet
    from cvexport.models.user_datasets import open_dataset
    from cvexport.palette import MASK_PALETTE as MASK_COLORS

    root = dataset_writers.WRITERS[fmt](tmp_path / fmt, train=3, val=1, size=48)
    data = open_dataset("detection" if fmt == "coco" else "segmentation", root)
    path = write_contact_sheet(tmp_path / "run", FittedSamples(data, "train", 64))
    with Image.open(path) as sheet:
        pixels = np.asarray(sheet.convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(v) for v in c) for c in np.unique(pixels, axis=0)}
    if fmt == "coco":  # both classes' boxes are drawn in their colours
        assert {tuple(BOX_COLORS[0]), tuple(BOX_COLORS[1])} <= colours
    else:  # round and angular in the mask palette; void borders white
        assert {tuple(MASK_COLORS[1]), tuple(MASK_COLORS[2])} <= colours
        assert tuple(MASK_COLORS[VOID % len(MASK_COLORS)]) not in colours


def test_building_from_the_resume_state_names_the_file_to_build_from(tiny_run, tmp_path, capsys):
    run_dir, out = tiny_run
    last = run_dir / "last.safetensors"
    assert main(["build", "classifier", "--weights", str(last), "--out", str(tmp_path / "b"), "--backend", "ort"]) == 2
    err = one_line_stderr(capsys)
    assert f"checkpoint {last} is the resume state of a training run (step 2, with its optimizer state)" in err
    assert f"not weights to build from; build from {out}" in err
    assert not (tmp_path / "b").exists()
    lone = tmp_path / "elsewhere" / "last.safetensors"
    lone.parent.mkdir()
    shutil.copy(last, lone)
    with pytest.raises(CvexportError, match=r"run the same 'cvexport train classifier \.\.\.' again to resume"):
        get_spec("classifier").load_model(lone)


def test_build_refuses_weights_of_another_model(tiny_run, tmp_path, capsys):
    _, out = tiny_run
    assert main(["build", "fcn", "--weights", str(out), "--out", str(tmp_path / "b"), "--backend", "ort"]) == 2
    assert "holds weights of model 'classifier', not 'fcn'" in one_line_stderr(capsys)
    assert not (tmp_path / "b").exists()


def test_runs_resume_and_refuse_other_data(folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "classifier", "--data", str(folder), "--run-dir", str(run_dir)]
    assert main(args + ["--max-steps", "1"]) == 0
    capsys.readouterr()
    assert main(args + ["--max-steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert f"resuming from {run_dir / 'last.safetensors'}" in printed
    assert read_metadata(run_dir / "classifier.safetensors")["train"]["steps_done"] == 3
    other = dataset_writers.write_imagefolder(tmp_path / "other", train_per_class=2, val_per_class=1, seed=5)
    assert main(["train", "classifier", "--data", str(other), "--run-dir", str(run_dir), "--max-steps", "4"]) == 2
    err = one_line_stderr(capsys)
    assert "holds a run started with another dataset (dataset files removed 5 (val/cross/0001.jpg, " in err
    assert "changed 15 (train/cross/0000.jpg, " in err and "Pass --fresh to start it over" in err
    assert main(args + ["--max-steps", "4", "--lr", "0.05"]) == 2  # another recipe is another run, too
    assert "another config (config lr 0.01 -> 0.05)" in one_line_stderr(capsys)
    assert main(args + ["--max-steps", "1", "--lr", "0.05", "--fresh"]) == 0
    assert "resuming" not in capsys.readouterr().out


def test_a_changed_dataset_is_said_file_by_file_and_a_run_without_checkpoint_starts_over(folder, tmp_path, capsys):
    """Issue #22: a run that died in its first epoch (an unreadable image) left run.json but no
    checkpoint; after the file is removed, the rerun starts over instead of being refused."""
    data = Path(shutil.copytree(folder, tmp_path / "data"))
    run_dir = tmp_path / "run"
    args = ["train", "classifier", "--data", str(data), "--run-dir", str(run_dir), "--max-steps", "1"]
    assert main(args) == 0
    capsys.readouterr()
    (data / "train" / "cross" / "0001.jpg").unlink()
    assert main(args) == 2  # a checkpoint of the run on 10 images: not continued on 9
    err = one_line_stderr(capsys)
    assert ("holds a run started with another config, dataset (config batch_size 10 -> 9; config train_size 10 -> 9; "
            "dataset files removed 1 (train/cross/0001.jpg))") in err
    assert "A run resumes only on the data it started with" in err
    (run_dir / "last.safetensors").unlink()  # as a run that died before its first checkpoint leaves it
    (run_dir / "metrics.jsonl").unlink()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert (f"{run_dir} holds no checkpoint of the run started there with another config, dataset: "
            "starting over") in printed
    assert json.loads((run_dir / "run.json").read_text())["config"]["train_size"] == 9


def test_training_threads_are_chosen_and_given_back(folder, tmp_path):
    from cvexport.models.finetune import DEFAULT_THREADS, finetune
    from cvexport.models.user_datasets import open_dataset

    before = torch.get_num_threads()
    data = open_dataset("classification", folder)
    seen = []
    record = finetune(get_spec("classifier"), data, tmp_path / "run", tmp_path / "w.safetensors", max_steps=1,
                      log=lambda line: seen.append(line))
    assert record["throughput"]["threads"] == DEFAULT_THREADS == 1
    assert any(line.endswith(", 1 thread") for line in seen)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("args,message", [
    (["--input-size", "100"], "--input-size 100 does not fit ssd: use a side a multiple of 32 in 64..1024"),
    (["--lr", "-1"], "--lr -1.0 must be a positive learning rate"),
    (["--scratch", "--pretrained", "x.pth"], "--scratch and --pretrained exclude each other"),
])
def test_bad_flags_are_one_line(tmp_path, capsys, args, message):
    model = "ssd" if "--input-size" in args or "--lr" in args else "classifier"
    assert main(["train", model, "--data", str(tmp_path), *args]) == 2
    err = one_line_stderr(capsys)
    assert message in err
    assert main(["train", "ssd", "--input-size", "128"]) == 2
    assert "--input-size applies to fine-tuning on your data: add --data DIR" in one_line_stderr(capsys)


# --------------------------------------------------------------- slow: does it learn?
# Datasets written here with other classes than the shipped models (2 detection classes, 5
# ImageFolder classes, background + 2 VOC classes); the same steps from the shipped weights and
# from scratch (same recipe, same data order), sized to keep CI short: small batches, the SSD at
# a 128 px input. Measured on the 2-core AMD EPYC, 1 thread, beside a training job: classifier
# top-1 0.825 vs 0.175 from scratch (chance 0.20), FCN mIoU 0.821 vs 0.391 (all background 0.22),
# SSD mAP@0.5 0.818 vs 0.067 at 150 steps (NMS IoU 0.35; 0.852 at 0.45 from the 8-phase SSD); 20-40 s
# per run. The SSD learns these two classes early: 0.841 vs 0.067 at 90 steps, 0.717 vs 0.040 at the
# 60 steps run here (measured on the same machine), still 0.3 above its 0.4 floor, in 40 % of the
# time. The README's figures are the full recipe's.
SLOW = {
    "classifier": {"write": lambda root: dataset_writers.write_imagefolder(root, train_per_class=40, val_per_class=16),
                   "steps": 100, "flags": ["--batch-size", "16"], "metric": "val_top1", "at_least": 0.6,
                   "beats_scratch_by": 0.3},
    "fcn": {"write": lambda root: dataset_writers.write_voc(root, train=160, val=48),
            "steps": 100, "flags": ["--batch-size", "8"], "metric": "val_miou", "at_least": 0.65,
            "beats_scratch_by": 0.15},
    "ssd": {"write": lambda root: dataset_writers.write_coco(root, train=160, val=48),
            "steps": 60, "flags": ["--batch-size", "8", "--input-size", "128"], "metric": "val_map50",
            "at_least": 0.4, "beats_scratch_by": 0.2},
}


def _chance(data) -> float:
    """The metric of a model that knows nothing: the majority class for top-1, everything
    background for mIoU, no detection for mAP."""
    from cvexport.metrics import segmentation_scores

    if data.task == "classification":
        labels = [entry.label for entry in data.splits["val"]]
        return max(labels.count(c) for c in set(labels)) / len(labels)
    if data.task == "segmentation":
        _, truths = data.images_and_truths("val")
        predictions, truths = data.metric_inputs([np.zeros_like(t) for t in truths], truths)
        return segmentation_scores(predictions, truths, len(data.class_names))["miou"]
    return 0.0


@pytest.fixture(scope="module")
def learnt(tmp_path_factory):
    """``learnt(model) -> (dataset, fine-tuned record and weights, scratch record)``, trained once."""
    from cvexport.models.user_datasets import open_dataset
    from cvexport.registry import get_spec as spec_of

    done: dict[str, tuple] = {}

    def _learn(name: str):
        if name not in done:
            case = SLOW[name]
            root = tmp_path_factory.mktemp(f"learn-{name}")
            data = open_dataset(spec_of(name).task, case["write"](root / "data"))
            records = {}
            for start in ("shipped", "scratch"):
                out = root / f"{start}.safetensors"
                flags = ["--scratch"] if start == "scratch" else []
                assert main(["train", name, "--data", str(data.root), "--run-dir", str(root / start), "--out", str(out),
                             "--max-steps", str(case["steps"]), *case["flags"], *flags]) == 0
                records[start] = (read_metadata(out), out)
            done[name] = (data, records)
        return done[name]

    return _learn


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW))
def test_fine_tuning_beats_chance_and_scratch(learnt, name, capsys):
    data, records = learnt(name)
    case = SLOW[name]
    fine, scratch = (records[start][0]["metrics"][case["metric"]] for start in ("shipped", "scratch"))
    chance = _chance(data)
    with capsys.disabled():
        print(f"\n{name} on {data.describe()}: {case['metric']} fine-tuned {fine:.4f}, from scratch {scratch:.4f}, "
              f"chance {chance:.4f}; {case['steps']} steps; throughput {records['shipped'][0]['throughput']}")
    assert records["shipped"][0]["train"]["steps_done"] == case["steps"]
    assert fine >= case["at_least"] and fine >= chance + 0.3
    assert fine >= scratch + case["beats_scratch_by"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW))
def test_fp16_bundle_of_fine_tuned_weights_passes_parity_and_names_its_classes(learnt, name, tmp_path, capsys):
    data, records = learnt(name)
    bundle = tmp_path / "bundle"
    code = main(["build", name, "--weights", str(records["shipped"][1]), "--fp16", "--out", str(bundle),
                 "--backend", "ort"])
    log = capsys.readouterr().out
    assert code == 0, log  # a parity or metric failure exits 3 and writes nothing
    manifest = json.loads((bundle / "manifest.json").read_text())
    parity = json.loads((bundle / "parity.json").read_text())
    assert manifest["class_names"] == list(data.class_names) and manifest["precision"] == "fp16"
    assert parity["passed"] and parity["verify"][1]["backend"] == "ort" and parity["verify"][1]["passed"]
    metric = {"classifier": "top1", "fcn": "miou", "ssd": "map50"}[name]
    assert parity["verify"][1][metric] > _chance(data)  # measured on the user's val split
    results = tmp_path / "results"
    pictures = [str(entry.image) for entry in data.splits["val"][:3]]
    assert main(["run", str(bundle), *pictures, "--out", str(results)]) == 0
    printed = capsys.readouterr().out
    predictions = json.loads((results / "predictions.json").read_text())
    assert predictions["class_names"] == list(data.class_names)
    if name == "ssd":
        found = {d["class_name"] for image in predictions["images"] for d in image["detections"]}
        assert found and found <= set(data.class_names)
        assert any(f"  {n}" in printed for n in found)
    elif name == "classifier":
        assert all(image["classification"]["class_name"] in data.class_names for image in predictions["images"])
    else:
        assert any(n in printed for n in data.class_names[1:])  # "round: 12.3%, ..."


def test_another_input_size_is_recorded_and_built_for(tmp_path, capsys):
    from cvexport.build import BuildOptions, input_contract
    from cvexport.models.tinyssd import make_anchors

    data = dataset_writers.write_coco(tmp_path / "coco", train=2, val=1, size=96)
    out = tmp_path / "ssd.safetensors"
    assert main(["train", "ssd", "--data", str(data), "--run-dir", str(tmp_path / "run"), "--out", str(out),
                 "--max-steps", "1", "--input-size", "128"]) == 0
    assert "input 128x128" in capsys.readouterr().out
    spec = get_spec("ssd").for_weights(out)
    assert spec.input_size == (128, 128) and spec.class_names == dataset_writers.COCO_CLASSES
    model = get_spec("ssd").load_model(out)
    assert model.anchors.shape == make_anchors(128).shape != make_anchors(256).shape
    assert model.cls_predictors[0].out_channels % (len(spec.class_names) + 1) == 0
    contract = input_contract(spec, BuildOptions(model="ssd"))
    assert (contract["height"], contract["width"]) == (128, 128)


@pytest.mark.parametrize("meta,message", [
    ({"input_size": 100}, "records input_size 100, not a side a multiple of 32 in 64..1024 for ssd"),
    ({"input_size": "256"}, "records input_size '256', not a side a multiple of 32 in 64..1024 for ssd"),
    ({"class_names": ["a", "a"]}, "records class_names ['a', 'a'], not a list of distinct non-empty names"),
    ({"model": "fcn"}, "holds weights of model 'fcn', not 'ssd'"),
])
def test_checkpoint_metadata_that_does_not_fit_is_one_line(tmp_path, meta, message):
    """A checkpoint is checked against the same rules training applies before anything is built."""
    from cvexport.checkpoint import save_checkpoint
    from cvexport.errors import CvexportError

    tensors, shipped = load_checkpoint(get_spec("ssd").weights_path())
    path = tmp_path / "odd.safetensors"
    save_checkpoint(path, tensors, {**shipped, "class_names": ["round", "angular"], **meta})
    with pytest.raises(CvexportError, match=re.escape(message)) as excinfo:
        get_spec("ssd").for_weights(path)
    assert "\n" not in str(excinfo.value)
