"""One module per ``cvexport`` command: each has ``add_parser(subparsers)``, which registers its
subcommand with ``set_defaults(func=run)``, and ``run(args)``, which executes it and returns the
exit status (as ``cvexport.stream.command``, ``cvexport.predict.command`` and ``cvexport.triton``).
Heavy modules (torch, onnx, ...) are imported inside ``run``, so ``cvexport --help`` stays fast."""
