"""``cvexport bench BUNDLE``: latency and throughput of a bundle per backend."""

from __future__ import annotations

import json

from cvexport.argtypes import positive_int as _positive_int
from cvexport.commands.common import backend_names


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="latency and throughput of a bundle per backend (table, JSON, plot)")
    p.add_argument("bundle", help="bundle directory written by 'cvexport build'")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="torch, ort (default), ort-cuda, ort-trt, trt, openvino, openvino-bf16, openvino-gpu, openvino-npu "
                        "or auto (the measured choice, with the table it chose from); repeat or comma-separate for several "
                        "(one that cannot run here is then skipped with a warning)")
    p.add_argument("--batch", type=_positive_int, default=1, help="images per inference call (default 1)")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations first (default 10)")
    p.add_argument("--iters", type=_positive_int, default=100, help="timed iterations (default 100)")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for the backend (default: its own)")
    p.add_argument("--json", help="write the full record (machine, versions, every sample) to this file")
    p.add_argument("--plot", help="write a PNG of the latency distributions to this file")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.console import Console

    from cvexport.atomic import check_file_target, write_text_atomic
    from cvexport.bench import auto_table, results_table, run_benchmark, write_plot

    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_file_target(path, option)  # before minutes of measuring
    record = run_benchmark(args.bundle, backend_names(args.backend), batch=args.batch, warmup=args.warmup,
                           iters=args.iters, threads=args.threads)
    if "auto" in record:
        Console().print(auto_table(record))
    Console().print(results_table(record))
    if args.json:
        write_text_atomic(args.json, json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        write_plot(record, args.plot)
        print(f"wrote {args.plot}")
    return 0
