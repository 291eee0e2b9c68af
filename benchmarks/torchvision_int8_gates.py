"""INT8 of torchvision builders against their own fp32, on data they were trained on.

The INT8 gate is ``cvexport verify BUNDLE --data DIR``: the bundle's task metric on the user's
val split, at most 1 point below the PyTorch fp32 reference of the same weights (exit status
non-zero otherwise). Test weights cannot answer it (their metric means nothing), so this trains
first, with ``cvexport train NAME --data DIR``:

- SSDlite320: the checkpoint of benchmarks/torchvision_finetune.py (its ``--work`` folder),
  trained on the project's shape data written as COCO;
- resnet18: the project's shipped classifier, which is a torchvision ResNet-18 fine-tuned on the
  course's shapes (8 classes, 64 px), given as a plain torchvision state dict (.pth) the way a
  user brings one; its val images are written as an ImageFolder for ``--data``. (A resnet18
  trained from scratch here for a few epochs stayed at chance, top-1 0.2, where INT8's gate
  means nothing: near-flat probabilities flip top-1 under any rounding.)

For each: build fp32 and INT8 bundles and verify both with ``--data``; the table gives the
metric of each backend row against the torch row and each verify's exit status. Writes
``benchmarks/results/torchvision_int8_gates.{json,md}``.

    python benchmarks/torchvision_int8_gates.py [--work /tmp/cvexport-tv-finetune]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def cli(args: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "cvexport.cli", *args], cwd=HERE)


def gate(name: str, checkpoint: Path, data: Path, work: Path, extra: list[str], label: str | None = None) -> dict:
    """fp32 and INT8 bundles of ``checkpoint`` verified on ``data``."""
    found = {}
    for precision in ("fp32", "int8"):
        bundle = work / f"{label or name}-{precision}"
        flags = [] if precision == "fp32" else ["--int8"]
        build_rc = cli(["build", name, "--weights", str(checkpoint), "--out", str(bundle), "--force", *flags, *extra])
        report = work / f"{label or name}-{precision}-verify.json"
        report.unlink(missing_ok=True)  # never a previous run's answer
        verify_rc = cli(["verify", str(bundle), "--data", str(data), "--json", str(report)]) if build_rc == 0 else None
        rows = json.loads(report.read_text())["rows"] if report.is_file() else []
        found[precision] = {"build_rc": build_rc, "verify_rc": verify_rc, "rows": rows}
        parity = bundle / "parity.json"
        if build_rc == 0 and parity.is_file():
            # The build's own timing of the INT8 graph ORT runs on this CPU against fp32 (batch 1,
            # interleaved, medians): what keeping nodes in float costs.
            found[precision]["int8_vs_fp32"] = json.loads(parity.read_text()).get("int8_vs_fp32")
    return found


def shipped_classifier_as_user_files(work: Path, per_class: int = 16) -> tuple[Path, Path, Path]:
    """(ImageFolder of the shipped classifier's val images, its weights as a torchvision
    resnet18 state dict .pth, its class names file)."""
    import torch
    from PIL import Image

    from cvexport.checkpoint import load_checkpoint
    from cvexport.models.classification_data import make_sample
    from cvexport.registry import get_spec

    spec = get_spec("classifier")
    tensors, _ = load_checkpoint(spec.weights_path())
    weights, names, folder = work / "classifier-resnet18.pth", work / "classifier-names.txt", work / "classifier-folder"
    # An ImageFolder's classes are its sorted folder names (torchvision's convention): the head's
    # rows are put in that order, as a user's ImageFolder-trained classifier has them.
    order = sorted(spec.class_names)
    rows = torch.tensor([spec.class_names.index(name) for name in order])
    state = dict(tensors)
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][rows], state["fc.bias"][rows]
    torch.save(state, weights)
    names.write_text("\n".join(order) + "\n")
    for split in ("train", "val"):
        for index in range(per_class * len(spec.class_names)):
            sample = make_sample("target", split, index)
            target = folder / split / spec.class_names[sample.label] / f"{index:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(sample.image).save(target)
    return folder, weights, names


def main() -> int:
    from cvexport.cpu import describe_cpu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/cvexport-tv-finetune", help="torchvision_finetune.py's folder")
    parser.add_argument("--only-classifier", action="store_true", help="measure resnet18 again, keep the rest")
    args = parser.parse_args()
    work = Path(args.work)
    target = HERE / "benchmarks" / "results"
    results = {"cpu": describe_cpu(), "models": {}}
    if args.only_classifier and (target / "torchvision_int8_gates.json").is_file():
        results = json.loads((target / "torchvision_int8_gates.json").read_text())
    ssdlite = work / "run" / "ssdlite320_mobilenet_v3_large.safetensors"
    if ssdlite.is_file() and not args.only_classifier:
        results["models"]["ssdlite320_mobilenet_v3_large"] = gate(
            "ssdlite320_mobilenet_v3_large", ssdlite, work / "coco", work, [])
        # torchvision's score threshold 0.001 keeps 300 detections per picture, most of them
        # noise-level scores that INT8 moves across the cut; the same at a deployment threshold:
        results["models"]["ssdlite320_mobilenet_v3_large --score-threshold 0.05"] = gate(
            "ssdlite320_mobilenet_v3_large", ssdlite, work / "coco", work, ["--score-threshold", "0.05"],
            label="ssdlite-t005")
    folder, resnet, names = shipped_classifier_as_user_files(work)
    results["models"]["resnet18"] = gate("resnet18", resnet, folder, work, ["--classes", str(names),
                                                                           "--input-size", "64"])
    (target / "torchvision_int8_gates.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# INT8 of torchvision builders: verify --data against the fp32 torch reference", "",
             f"CPU: {results['cpu']}; run with CVEXPORT_CPU_ISA={os.environ.get('CVEXPORT_CPU_ISA', '(not set)')} "
             "(avx2: ONNX Runtime runs the 7-bit model.cpu-avx2.onnx graph, the one for CPUs without VNNI, "
             "and the build gates it). Weights: see the script's docstring (SSDlite trained with `cvexport train --data`; "
             "resnet18 the shipped classifier's ResNet-18 as a user's state dict).", "",
             "| model | bundle | row | metrics | verify exit |", "| --- | --- | --- | --- | --- |"]
    for name, found in results["models"].items():
        for precision, record in found.items():
            for row in record["rows"]:
                metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float))
                lines.append(f"| {name} | {precision} | {row.get('backend', '?')} | {metrics} | {record['verify_rc']} |")
            if record.get("int8_vs_fp32"):
                lines.append(f"| {name} | {precision} | speed | {record['int8_vs_fp32'].get('statement', '')} | |")
            if not record["rows"]:
                lines.append(f"| {name} | {precision} | (build exit {record['build_rc']}) | | {record['verify_rc']} |")
    lines += ["", "verify exits non-zero when a backend's metric is more than 1 point below the torch (fp32) row."]
    (target / "torchvision_int8_gates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
