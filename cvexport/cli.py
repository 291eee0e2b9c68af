"""The ``cvexport`` command line: assembles the parser from one module per command
(``cvexport/commands/``, plus ``stream``, ``predict`` and ``export-triton``) and runs the command.

User mistakes end in one line on stderr and a non-zero exit (2 for bad input, 3 for a
failed parity check); only bugs in cvexport itself show a traceback.
"""

from __future__ import annotations

import argparse
import sys

from cvexport.errors import CvexportError


def make_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    parser = argparse.ArgumentParser(prog="cvexport", description="PyTorch vision models to ONNX / TensorRT bundles, verified.")
    try:
        parser.add_argument("--version", action="version", version=f"cvexport {version('cvexport')}")
    except PackageNotFoundError:  # running from a source tree that was never installed
        parser.add_argument("--version", action="version", version="cvexport (not installed)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from cvexport import triton
    from cvexport.commands import bench, build, inspect, list_models, run, stylize, train, verify
    from cvexport.predict import command as predict_command
    from cvexport.stream import command as stream_command

    # Each module's add_parser registers its command; 'cvexport --help' lists them in this order.
    commands = (build, run, inspect, train, list_models, bench, verify, stylize, stream_command, predict_command,
                triton)
    for command in commands:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CvexportError as exc:
        print(f"cvexport: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into head & co.
        return 0
    except KeyboardInterrupt:
        print("cvexport: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
