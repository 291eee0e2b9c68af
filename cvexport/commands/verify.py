"""``cvexport verify BUNDLE``: task metric and parity vs PyTorch per backend on the val split."""

from __future__ import annotations

import json

from cvexport.argtypes import positive_int as _positive_int
from cvexport.commands.common import backend_names


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("verify", help="task metric and parity vs PyTorch per backend on the val split "
                              "(exit 1 when a backend fails)")
    p.add_argument("bundle", help="bundle directory written by 'cvexport build'")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="ort (default), openvino, openvino-bf16, openvino-gpu, openvino-npu, auto (the backend it stands for "
                        "here), ort-cuda, ort-trt or trt; repeat or comma-separate for several "
                        "(torch, the reference, always runs)")
    p.add_argument("--val-images", type=_positive_int, default=256, help="val images to measure on (default 256)")
    p.add_argument("--data", metavar="DIR",
                   help="measure on the val split of your dataset (COCO, ImageFolder or VOC, as for 'train --data'; "
                   "default: the one the bundle was fine-tuned on, if any, else the model's own)")
    p.add_argument("--max-drop", "--max-map-drop", dest="max_drop", type=float, default=1.0, metavar="N",
                   help="largest worsening of the task metric vs torch that still passes: points for mAP, top-1 "
                        "and mIoU, percent for style losses (default 1.0)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from cvexport.atomic import check_file_target, write_text_atomic
    from cvexport.backend_choice import resolve_backend
    from cvexport.verify import verify_bundle, verify_table

    if args.json:
        check_file_target(args.json, "--json")
    # auto is verified as the backend it stands for on this CPU (the row names that one).
    backends = list(dict.fromkeys(resolve_backend(args.bundle, name) for name in backend_names(args.backend)))
    report = verify_bundle(args.bundle, backends, val_images=args.val_images,
                           max_drop=args.max_drop, data_dir=args.data)
    Console().print(verify_table(report))
    print(f"measured on: {report['data']}")
    for note in report["notes"]:
        print(f"note: {note}")
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    failed = [row for row in report["rows"] if not row["passed"]]
    for row in failed:
        print(f"FAIL {row['backend']}: " + "; ".join(row["reasons"]))
    if failed:
        return 1
    print(f"PASS: all {len(report['rows'])} rows within tolerance")
    return 0
