"""Same weights and options -> the same bundle graphs, from any checkout directory.

Builds every registered model at every precision (and the SSD's EfficientNMS flavour) in this
checkout and in another one (a ``git worktree`` of another commit, in another directory), each
with its own sources on ``sys.path``, then compares file by file: the sha256 of every graph
in the bundle (``model.onnx`` and the INT8 CPU graphs), of the weights and of ``manifest.json``,
``parity.json`` with its measured times taken out (``build_seconds`` and the INT8 vs fp32
timing record, which differ between two runs of the same code), and the section tags of the
graph nodes. Any difference is listed. Writes ``benchmarks/results/reproducibility.{json,md}``.

    git worktree add /tmp/cvexport-before <commit>
    python benchmarks/reproducibility.py --other /tmp/cvexport-before
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
VARIANTS = [
    {"model": model, "precision": precision}
    for model in ("ssd", "classifier", "fcn", "style") for precision in ("fp32", "fp16", "int8")
] + [{"model": "ssd", "precision": "fp32", "nms": "efficient"}]

# Run inside a checkout: its own sources, whatever version of the build API it has.
BUILD_SCRIPT = """
import json, sys
from cvexport.build import BuildOptions, build
import cvexport
values = json.loads(sys.argv[1])
assert cvexport.__file__.startswith(sys.argv[3]), cvexport.__file__
of = getattr(BuildOptions, "of", None)
options = (of or BuildOptions)(out=sys.argv[2], verify_images=0, engine="ort", **values)
build(options, log=lambda line: None)
"""


def _prepare(checkout: Path) -> dict[str, str]:
    """Environment that imports ``cvexport`` from ``checkout``. This checkout is the installed
    one; another gets the links the install makes (models/ and trt_plugins/ under cvexport/)."""
    if checkout == HERE:
        return dict(os.environ)
    for name in ("models", "trt_plugins"):
        link = checkout / "cvexport" / name
        if not link.exists():
            link.symlink_to(checkout / name, target_is_directory=True)
    return {**os.environ, "PYTHONPATH": str(checkout)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _sections(path: Path) -> dict[str, int]:
    import onnx

    model = onnx.load(str(path))
    tags = Counter(next((p.value for p in node.metadata_props if p.key == "cvexport.section"), "network")
                   for node in model.graph.node)
    return dict(sorted(tags.items()))


# parity.json fields that are measured times: two builds by the same code differ in them.
TIMED_PARITY_FIELDS = ("build_seconds", "int8_vs_fp32")


def _parity_without_times(path: Path) -> str:
    report = json.loads(path.read_text())
    for field in TIMED_PARITY_FIELDS:
        report.pop(field, None)
    return hashlib.sha256(json.dumps(report, sort_keys=True).encode()).hexdigest()


def _bundle_facts(bundle: Path) -> dict:
    facts = {"files": {}, "sections": _sections(bundle / "model.onnx")}
    for path in sorted(bundle.glob("*.onnx")) + [bundle / "weights.safetensors", bundle / "manifest.json"]:
        facts["files"][path.name] = _sha256(path)
    facts["files"]["parity.json (times out)"] = _parity_without_times(bundle / "parity.json")
    manifest = json.loads((bundle / "manifest.json").read_text())
    facts["weights_source"] = manifest["weights"].get("source")
    return facts


def build_all(checkout: Path, out: Path, weights_dir: Path, reuse: bool = False) -> dict[str, dict]:
    """Every variant built in ``checkout`` from the checkpoints in ``weights_dir`` (one set for
    both checkouts: the comparison is of the code). ``reuse``: a bundle already in ``out`` from
    an earlier run of the same checkout is read, not built again."""
    env = _prepare(checkout)
    results = {}
    for variant in VARIANTS:
        name = "-".join(str(v) for v in variant.values())
        target = out / name
        if reuse and (target / "parity.json").is_file():
            results[name] = _bundle_facts(target)
            continue
        values = {**variant, "weights": str(weights_dir / f"{variant['model']}.safetensors")}
        subprocess.run([sys.executable, "-c", BUILD_SCRIPT, json.dumps(values), str(target), str(checkout)],
                       cwd=checkout, env=env, check=True)
        results[name] = _bundle_facts(target)
        print(f"{checkout}: {name} {results[name]['files']['model.onnx'][:12]}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--other", required=True, help="another checkout (e.g. a git worktree of an older commit)")
    parser.add_argument("--out", default="/tmp/cvexport-reproducibility")
    parser.add_argument("--reuse-other", action="store_true",
                        help="read the other checkout's bundles left in --out by an earlier run instead of building them again")
    args = parser.parse_args()
    other = Path(args.other).resolve()
    out = Path(args.out)

    def commit(path: Path) -> str:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=path, capture_output=True,
                              text=True).stdout.strip()

    weights_dir = other / "models" / "weights"
    this_results = build_all(HERE, out / "this", weights_dir)
    other_results = build_all(other, out / "other", weights_dir, reuse=args.reuse_other)
    rows, identical = [], True
    for name, facts in this_results.items():
        theirs = other_results[name]
        differ = [f for f in sorted(set(facts["files"]) | set(theirs["files"]))
                  if facts["files"].get(f) != theirs["files"].get(f)]
        same_sections = facts["sections"] == theirs["sections"]
        identical &= not differ and same_sections
        rows.append({"bundle": name, "graphs": sorted(facts["files"]), "differ": differ,
                     "sections_equal": same_sections, "sections": facts["sections"],
                     "model_onnx_sha256": facts["files"]["model.onnx"],
                     "weights_source": [facts["weights_source"], theirs["weights_source"]]})
    record = {"this": {"path": str(HERE), "commit": commit(HERE)}, "other": {"path": str(other), "commit": commit(other)},
              "identical": identical, "bundles": rows}
    results = HERE / "benchmarks" / "results"
    (results / "reproducibility.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# Reproducible bundles: {record['this']['commit']} in {HERE} vs {record['other']['commit']} in {other}",
             "", "| bundle | graphs compared | identical | section tags equal | model.onnx sha256 |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['bundle']} | {', '.join(r['graphs'])} | {'yes' if not r['differ'] else 'NO: ' + ', '.join(r['differ'])} "
              f"| {'yes' if r['sections_equal'] else 'NO'} | {r['model_onnx_sha256'][:16]} |" for r in rows]
    (results / "reproducibility.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
