"""``cvexport inspect TARGET``: op histogram, I/O contract and a static TensorRT-compatibility report."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="op histogram, I/O contract and a static TensorRT-compatibility report")
    p.add_argument("target", help="a bundle directory or an .onnx file")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=run)


def run(args) -> int:
    from cvexport.atomic import check_file_target, write_text_atomic
    from cvexport.bundle import load_bundle
    from cvexport.backends.trt.compat import check_path

    if args.json:
        check_file_target(args.json, "--json")
    target = Path(args.target)
    onnx_path = load_bundle(target).verify_file("onnx") if target.is_dir() else target
    report = check_path(onnx_path)
    print(f"{onnx_path}")
    print(report.format_text())
    if args.json:
        write_text_atomic(args.json, json.dumps(report.to_dict(), indent=2) + "\n")
    return 0 if report.ok else 1
