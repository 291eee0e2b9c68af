"""``cvexport build MODEL``: export a model to a verified bundle."""

from __future__ import annotations

from cvexport.argtypes import frame_size as _frame_size
from cvexport.argtypes import positive_int as _positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("build", help="export a model to a verified bundle (ONNX + manifest + parity report)")
    p.add_argument("model", help="model name (see 'cvexport list')")
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
    p.add_argument("--classes", metavar="FILE", help="with a torchvision state dict: class names, one per line "
                   "(default: class_1..N)")
    p.add_argument("--input-size", type=_positive_int, metavar="SIDE", help="with a torchvision state dict: the "
                   "square input side to build for (default: the builder's eval crop, 520 for a segmenter)")
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


def run(args) -> int:
    from cvexport.build import BuildOptions, build

    options = BuildOptions(
        model=args.model, precision=args.precision, max_batch=args.max_batch, input_format=args.input_format,
        weights=args.weights, out=args.out, calib_images=args.calib_images, calib_method=args.calib_method,
        force=args.force, engine=args.backend, frame_size=args.frame_size, classes=args.classes,
        input_size=args.input_size,
        task_options={o.name: getattr(args, o.name) for o in _task_options() if getattr(args, o.name) is not None},
    )
    build(options, log=lambda line: print(line, flush=True))
    return 0
