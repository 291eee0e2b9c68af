"""``cvexport build MODEL``: export a model to a verified bundle."""

from __future__ import annotations

from cvexport.argtypes import frame_size as _frame_size
from cvexport.argtypes import positive_int as _positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("build", help="export a model to a verified bundle (ONNX + manifest + parity report)")
    p.add_argument("model", nargs="?", help="model name (see 'cvexport list'); or --module")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_const", const="fp16", dest="precision",
                           help="mixed-precision FP16 graph (inputs, outputs and NMS stay FP32)")
    precision.add_argument("--fp32", action="store_const", const="fp32", dest="precision", help="FP32 graph (default)")
    precision.add_argument("--int8", action="store_const", const="int8", dest="precision",
                           help="post-training INT8: a TensorRT-ready QDQ graph plus a faster CPU form for ONNX Runtime")
    p.add_argument("--calib-images", type=_positive_int, default=None,
                   help="INT8 calibration images from the model's train split (default 128)")
    p.add_argument("--calib-method", help="INT8 calibration: minmax, entropy or percentile "
                   "(default entropy for the TensorRT graph, minmax for the CPU form)")
    p.add_argument("--max-batch", type=_positive_int, default=8, help="largest batch the bundle accepts (default 8)")
    p.add_argument("--input", dest="input_format", default="float",
                   help="float: float32 NCHW already normalized (default); uint8: camera frames NHWC, normalized in-graph")
    p.add_argument("--frame-size", type=_frame_size, metavar="WxH",
                   help="with --input uint8: the graph takes a fixed camera's frames at this size (e.g. 1280x720) "
                   "and letterboxes them itself, so frames reach the engine untouched")
    p.add_argument("--weights", help="safetensors checkpoint to export instead of the shipped one; for a torchvision "
                   "builder (see 'cvexport list'), required: its state dict (.pth) or a checkpoint cvexport wrote")
    p.add_argument("--classes", metavar="FILE", help="with a torchvision state dict or --module: class names, one "
                   "per line (default: the checkpoint's, else class_1..N)")
    p.add_argument("--input-size", type=_input_size, metavar="SIDE|HxW", help="with a torchvision state dict: the "
                   "square input side to build for (default: the builder's eval crop, 520 for a segmenter); "
                   "with --module (required): the network's input, SIDE or HEIGHTxWIDTH")
    module = p.add_argument_group("your own module (--module)")
    module.add_argument("--module", metavar="FILE.py:FACTORY", help="build your nn.Module: the function that returns "
                        "it, in a .py file or an importable package.module (called with the class count if it takes "
                        "one)")
    module.add_argument("--task", choices=("detection", "classification", "segmentation"),
                        help="with --module: what the module outputs (classification [B, C]; segmentation "
                        "[B, C, H, W]; detection: see --head)")
    module.add_argument("--head", choices=("anchors", "xyxy", "cxcywh"), help="with --module --task detection: "
                        "anchors (class logits [B, N, C+1] with background column 0 and box offsets [B, N, 4] "
                        "against the module's anchors [N, 4]) or xyxy|cxcywh (decoded boxes [B, N, 4] and class "
                        "scores [B, N, C]); default: the module's cvexport_head attribute")
    module.add_argument("--scores", choices=("sigmoid", "softmax", "probabilities"),
                        help="with --head: how the class scores read (anchors: softmax by default)")
    module.add_argument("--box-units", choices=("normalized", "pixels"),
                        help="with --head xyxy|cxcywh: boxes normalized to the input (default) or in its pixels")
    module.add_argument("--background", action="store_const", const=True, default=None,
                        help="with --scores softmax: column 0 of the scores is the background (never output)")
    module.add_argument("--variances", type=_floats(2), metavar="C,S",
                        help="with --head anchors: the box offsets' centre and size scales (default 0.1,0.2)")
    module.add_argument("--mean", type=_floats(3), metavar="R,G,B",
                        help="with --module: the mean of x / 255 the module was trained with (default ImageNet's)")
    module.add_argument("--std", type=_floats(3), metavar="R,G,B",
                        help="with --module: the std of x / 255 the module was trained with (default ImageNet's)")
    p.add_argument("--out", help="bundle directory (default bundles/MODEL-PRECISION[-FLAVOR])")
    p.add_argument("--force", action="store_true",
                   help="replace --out even when it is a directory of other files (they are deleted)")
    p.add_argument("--backend", default="auto", choices=("auto", "trt", "ort"),
                   help="auto (default): also build a TensorRT engine when TensorRT and a GPU are usable; "
                   "trt: require it; ort: ONNX bundle only")
    # Each task's own options (detection: --nms and thresholds; style: --style); the task of
    # the model built refuses the ones it does not own.
    for option in _task_options():
        p.add_argument(option.flag, dest=option.name, type=option.type, metavar=option.metavar,
                       help=option.help, default=None)
    p.set_defaults(func=run, precision="fp32")


def _task_options():
    from cvexport.tasks import all_tasks

    options = {}
    for task in all_tasks():
        for option in task.options:
            options.setdefault(option.name, option)
    return list(options.values())


# The flags that go with --module only (argparse dest -> flag).
MODULE_FLAGS = {"task": "--task", "head": "--head", "scores": "--scores", "box_units": "--box-units",
                "background": "--background", "variances": "--variances", "mean": "--mean", "std": "--std"}


def _input_size(text: str) -> int | tuple[int, int]:
    """SIDE (an int) or HEIGHTxWIDTH (a pair), each side 1 or more, or argparse's one-line usage error."""
    import argparse

    parts = text.lower().split("x")
    if len(parts) == 1:
        return _positive_int(text)
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"'{text}' is not SIDE or HEIGHTxWIDTH, e.g. 224 or 384x640")
    return int(parts[0]), int(parts[1])


def _floats(count: int):
    """COUNT comma-separated numbers (e.g. 0.485,0.456,0.406), or argparse's one-line usage error."""
    import argparse

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise argparse.ArgumentTypeError(f"'{text}' is not {count} comma-separated numbers")
        return values

    return parse


def _module_request(args):
    """The --module flags as a ModuleRequest (None without --module); module flags without it,
    or with a model name, are one line."""
    from cvexport.errors import CvexportError
    from cvexport.user_module import ModuleRequest

    given = [flag for dest, flag in MODULE_FLAGS.items() if getattr(args, dest) is not None]
    if args.module is None:
        if args.model is None:
            raise CvexportError("name a model to build (see 'cvexport list') or your own with --module FILE.py:FACTORY")
        if given:
            raise CvexportError(f"{', '.join(given)} go with --module FILE.py:FACTORY; '{args.model}' is a model of "
                                "its own")
        return None
    if args.model is not None:
        raise CvexportError(f"build either '{args.model}' or --module {args.module}, not both")
    if args.task is None or args.input_size is None:
        raise CvexportError(f"--module {args.module} needs --task detection|classification|segmentation and "
                            "--input-size SIDE|HxW (the input the module takes)")
    size = args.input_size if isinstance(args.input_size, tuple) else (args.input_size, args.input_size)
    # The contract normalizes x / 255: a mean or std on the 0..255 scale (123.675) is a mistake.
    for flag, values, low in (("--mean", args.mean, "0"), ("--std", args.std, "above 0")):
        if values is not None and not all((0 <= v if flag == "--mean" else 0 < v) and v <= 1 for v in values):
            raise CvexportError(f"{flag} {','.join(f'{v:g}' for v in values)}: give values of x / 255, {low}..1 "
                                "(ImageNet's mean is 0.485,0.456,0.406)")
    head = {key: getattr(args, key) for key in ("head", "scores", "box_units", "background", "variances")
            if getattr(args, key) is not None}
    return ModuleRequest(reference=args.module, task=args.task, input_size=size, head=head, mean=args.mean,
                         std=args.std)


def run(args) -> int:
    from cvexport.build import BuildOptions, build
    from cvexport.errors import CvexportError

    module = _module_request(args)
    input_size = None if module is not None else args.input_size
    if isinstance(input_size, tuple):
        if input_size[0] != input_size[1]:
            raise CvexportError(f"--input-size {input_size[0]}x{input_size[1]}: a torchvision builder is built for a "
                                "square input; give one SIDE")
        input_size = input_size[0]
    options = BuildOptions(
        model=args.model if module is None else module.name, precision=args.precision, max_batch=args.max_batch,
        input_format=args.input_format, weights=args.weights, out=args.out, calib_images=args.calib_images,
        calib_method=args.calib_method, force=args.force, engine=args.backend, frame_size=args.frame_size,
        classes=args.classes, input_size=input_size, module=module,
        task_options={o.name: getattr(args, o.name) for o in _task_options() if getattr(args, o.name) is not None},
    )
    build(options, log=lambda line: print(line, flush=True))
    return 0
