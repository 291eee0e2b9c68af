"""INT8 of torchvision builders against their own fp32, on data they were trained on.

The INT8 gate is ``cvexport verify BUNDLE --data DIR``: the bundle's task metric on the user's
val split, at most 1 point below the PyTorch fp32 reference of the same weights (exit status
non-zero otherwise). Test weights cannot answer it (their metric means nothing), so this trains
first, with ``cvexport train NAME --data DIR``:

- SSDlite320: the checkpoint of benchmarks/torchvision_finetune.py (its ``--work`` folder),
  trained on the project's shape data written as COCO;
- resnet18: trained here at 64 px on the demo ImageFolder (``dataset_writers imagefolder``).

For each: build fp32 and INT8 bundles and verify both with ``--data``; the table gives the
metric of each backend row against the torch row and each verify's exit status. Writes
``benchmarks/results/torchvision_int8_gates.{json,md}``.

    python benchmarks/torchvision_int8_gates.py [--work /tmp/cvexport-tv-finetune]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def cli(args: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "cvexport.cli", *args], cwd=HERE)


def gate(name: str, checkpoint: Path, data: Path, work: Path, extra: list[str]) -> dict:
    """fp32 and INT8 bundles of ``checkpoint`` verified on ``data``."""
    found = {}
    for precision in ("fp32", "int8"):
        bundle = work / f"{name}-{precision}"
        flags = [] if precision == "fp32" else ["--int8"]
        build_rc = cli(["build", name, "--weights", str(checkpoint), "--out", str(bundle), "--force", *flags, *extra])
        report = work / f"{name}-{precision}-verify.json"
        verify_rc = cli(["verify", str(bundle), "--data", str(data), "--json", str(report)]) if build_rc == 0 else None
        rows = json.loads(report.read_text())["rows"] if report.is_file() else []
        found[precision] = {"build_rc": build_rc, "verify_rc": verify_rc, "rows": rows}
    return found


def main() -> int:
    from cvexport.cpu import describe_cpu

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/cvexport-tv-finetune", help="torchvision_finetune.py's folder")
    parser.add_argument("--classifier-epochs", type=int, default=6)
    args = parser.parse_args()
    work = Path(args.work)
    results = {"cpu": describe_cpu(), "models": {}}
    ssdlite = work / "run" / "ssdlite320_mobilenet_v3_large.safetensors"
    if ssdlite.is_file():
        results["models"]["ssdlite320_mobilenet_v3_large"] = gate(
            "ssdlite320_mobilenet_v3_large", ssdlite, work / "coco", work, [])
    folder = work / "imagefolder"
    if not (folder / "train").is_dir():
        subprocess.check_call([sys.executable, "-m", "cvexport.models.dataset_writers", "imagefolder", str(folder)])
    resnet = work / "resnet18-run" / "resnet18.safetensors"
    if not resnet.is_file():
        cli(["train", "resnet18", "--data", str(folder), "--run-dir", str(work / "resnet18-run"), "--out", str(resnet),
             "--input-size", "64", "--epochs", str(args.classifier_epochs), "--fresh"])
    results["models"]["resnet18"] = gate("resnet18", resnet, folder, work, [])
    target = HERE / "benchmarks" / "results"
    (target / "torchvision_int8_gates.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# INT8 of torchvision builders: verify --data against the fp32 torch reference", "",
             f"CPU: {results['cpu']}. Weights trained here with `cvexport train NAME --data DIR` (see the script).", "",
             "| model | bundle | row | metrics | verify exit |", "| --- | --- | --- | --- | --- |"]
    for name, found in results["models"].items():
        for precision, record in found.items():
            for row in record["rows"]:
                metrics = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float))
                lines.append(f"| {name} | {precision} | {row.get('backend', '?')} | {metrics} | {record['verify_rc']} |")
            if not record["rows"]:
                lines.append(f"| {name} | {precision} | (build exit {record['build_rc']}) | | {record['verify_rc']} |")
    lines += ["", "verify exits non-zero when a backend's metric is more than 1 point below the torch (fp32) row."]
    (target / "torchvision_int8_gates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
