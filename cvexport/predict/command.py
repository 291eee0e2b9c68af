"""``cvexport predict BUNDLE INPUT [INPUT ...] --out DIR``: the command line of batch inference.

``add_parser(subparsers)`` registers the subcommand; ``run(args)`` executes it and returns the
exit status (0; 1 when an input failed; 130 / 143 after a clean stop by SIGINT / SIGTERM).
"""

from __future__ import annotations

from cvexport.predict.options import RAY_HINT, PredictOptions
from cvexport.predict.run import batch_predict


def add_parser(subparsers) -> None:
    from cvexport.argtypes import positive_int

    p = subparsers.add_parser("predict", help="batch inference over images, folders, globs and videos into "
                              "Parquet (resumable), in-process or on a Ray cluster")
    p.add_argument("bundle", help="bundle directory written by 'cvexport build'")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image or video files, folders (searched recursively) or quoted globs ('photos/**/*.jpg')")
    p.add_argument("--out", required=True, help="results directory; a rerun into it skips inputs already done")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray Data: alone, a local Ray on this machine; 'auto' or ray://HOST:PORT joins a "
                   f"cluster (needs {RAY_HINT})")
    p.add_argument("--backend", default="auto", help="auto (default: the fastest CPU backend that keeps the bundle's "
                   "answers, measured once per bundle on this machine's CPU; with --ray, on the driver's), ort, "
                   "openvino, openvino-bf16, torch, or on GPU workers ort-cuda, ort-trt, trt")
    p.add_argument("--batch", type=positive_int, help="frames per inference (default and most: the bundle's max batch)")
    p.add_argument("--stride", type=positive_int, default=1, help="videos: predict every Nth frame (default 1)")
    p.add_argument("--jsonl", action="store_true", help="also write the rows as JSON lines")
    p.add_argument("--threads", type=positive_int, help="CPU threads per predictor (in-process default: the "
                   "backend's own; on Ray: 1 per actor)")
    p.add_argument("--actors", type=positive_int, help="Ray: actor pool size (default: one per CPU, or per GPU "
                   "for GPU backends)")
    p.set_defaults(func=run)


def run(args) -> int:
    options = PredictOptions(bundle=args.bundle, inputs=tuple(args.inputs), out=args.out, backend=args.backend,
                             batch=args.batch, stride=args.stride, jsonl=args.jsonl, threads=args.threads,
                             ray=args.ray, actors=args.actors)
    from cvexport.signals import SIGNAL_EXIT

    summary = batch_predict(options, log=lambda line: print(line, flush=True))
    if summary["stopped_by"] is not None:
        return SIGNAL_EXIT.get(summary["stopped_by"], 1)
    return 1 if summary["failed"] else 0
