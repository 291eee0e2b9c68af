"""The ``cvexport`` command line.

User mistakes end in one line on stderr and a non-zero exit (2 for bad input, 3 for a
failed parity check); only bugs in cvexport itself show a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from cvexport.argtypes import frame_size as _frame_size
from cvexport.argtypes import positive_int as _positive_int
from cvexport.errors import CvexportError, counted


def _add_build(sub) -> None:
    p = sub.add_parser("build", help="export a model to a verified bundle (ONNX + manifest + parity report)")
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
    p.add_argument("--weights", help="safetensors checkpoint to export instead of the shipped one")
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
    p.set_defaults(func=_cmd_build, precision="fp32")


def _task_options():
    from cvexport.tasks import all_tasks

    options = {}
    for task in all_tasks():
        for option in task.options:
            options.setdefault(option.name, option)
    return list(options.values())


def _cmd_build(args) -> int:
    from cvexport.build import BuildOptions, build

    options = BuildOptions(
        model=args.model, precision=args.precision, max_batch=args.max_batch, input_format=args.input_format,
        weights=args.weights, out=args.out, calib_images=args.calib_images, calib_method=args.calib_method,
        force=args.force, engine=args.backend, frame_size=args.frame_size,
        task_options={o.name: getattr(args, o.name) for o in _task_options() if getattr(args, o.name) is not None},
    )
    build(options, log=lambda line: print(line, flush=True))
    return 0


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run a bundle on images: predictions JSON and pictures (annotated images, "
                       "colorized masks and overlays, stylized images)")
    p.add_argument("bundle", help="bundle directory written by 'cvexport build'")
    p.add_argument("images", nargs="+", help="image files (any format Pillow reads; grey and RGBA are converted)")
    p.add_argument("--backend", default="ort", help="torch (the PyTorch reference) or ort (ONNX Runtime, default)")
    p.add_argument("--out", required=True, help="directory for predictions.json and the pictures")
    p.add_argument("--force", action="store_true",
                   help="replace a predictions.json in --out that 'cvexport run' did not write")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for the backend")
    p.set_defaults(func=_cmd_run)


# What 'cvexport run' writes in predictions.json's "format", to know its own file again.
PREDICTIONS_FORMAT = "cvexport-run-predictions/1"
# The keys every predictions.json of 'run' has held, before it carried its format.
_UNMARKED_PREDICTIONS_KEYS = {"bundle", "backend", "model", "precision", "class_names", "images"}


def _previous_run(path: Path) -> dict | None:
    """The predictions.json of an earlier 'cvexport run' at ``path``, or None when there is none.
    A file there that is not one (another program's, or the user's own) is a one-line error."""
    if not path.exists():
        return None
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        previous = None
    if isinstance(previous, dict) and (previous.get("format") == PREDICTIONS_FORMAT or (
            "format" not in previous and _UNMARKED_PREDICTIONS_KEYS <= set(previous)
            and isinstance(previous["images"], list))):
        return previous
    raise CvexportError(f"{path} was not written by 'cvexport run'; refusing to replace it. Choose another --out, "
                        "or pass --force to replace it")


def _cmd_run(args) -> int:
    from cvexport.atomic import atomic_path, check_file_target, write_text_atomic
    from cvexport.errors import stderr_warning
    from cvexport.images import load_image
    from cvexport.preprocess import frame_size_note
    from cvexport.runtime.predictor import Predictor

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CvexportError(f"--out {out} is a file; pass a directory")
    check_file_target(out / "predictions.json", "--out")
    previous = None if args.force else _previous_run(out / "predictions.json")
    images = [load_image(path) for path in args.images]  # every file checked before any work
    predictor = Predictor(args.bundle, backend=args.backend, threads=args.threads)
    for width, height in dict.fromkeys((int(image.shape[1]), int(image.shape[0])) for image in images):
        # A --frame-size bundle letterboxes other sizes twice; said once per size.
        note = frame_size_note(predictor.bundle.input, width, height)
        if note is not None:
            stderr_warning(note)
    results = predictor.predict(images)
    out.mkdir(parents=True, exist_ok=True)
    if previous is not None:
        _remove_previous_pictures(out, previous)
    records = []
    pictures = 0
    task = predictor.task
    for index, (path, image, prediction) in enumerate(zip(args.images, images, results)):
        # The index keeps names unique when two inputs share a stem (a/frame.png, b/frame.jpg).
        written = {}
        for suffix, picture in task.render(image, prediction).items():
            name = f"{index:04d}-{Path(path).stem}.{suffix}.png"
            with atomic_path(out / name) as tmp:
                picture.save(tmp, format="PNG")
            written[suffix] = name
        pictures += len(written)
        records.append({"image": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
                        **written, **task.record(prediction, predictor.bundle.class_names)})
        print(f"{path}: {task.describe_prediction(prediction, predictor.bundle.class_names)}")
    payload = {"format": PREDICTIONS_FORMAT, "bundle": str(args.bundle), "backend": args.backend,
               "model": predictor.bundle.manifest["model"],
               "precision": predictor.bundle.precision,
               "class_names": predictor.bundle.class_names, "images": records}
    write_text_atomic(out / "predictions.json", json.dumps(payload, indent=2) + "\n")
    images_text = f"{len(records)} image{'s' if len(records) != 1 else ''}"
    print(f"wrote {out / 'predictions.json'} and {pictures} picture{'s' if pictures != 1 else ''} of {images_text}"
          if pictures else f"wrote {out / 'predictions.json'} for {images_text}")
    return 0


def _remove_previous_pictures(out: Path, previous: dict) -> None:
    """A re-run into the same --out replaces the pictures the previous run listed in its
    predictions.json (``previous``, one of ours) and nothing else, so no stale picture sits
    beside the new results."""
    try:
        # Only names of the form this command writes (0003-photo.annotated.png), never the input paths.
        names = {value for record in previous.get("images", []) for key, value in record.items()
                 if key != "image" and isinstance(value, str) and re.fullmatch(r"\d{4}-[^/\\]+\.\w+\.png", value)}
    except (AttributeError, TypeError):
        return  # a malformed listing: touch nothing
    for name in names:
        path = out / name
        if path.is_file() and not path.is_symlink():
            path.unlink()


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a reference model from scratch (reproduces the shipped weights), "
                       "or fine-tune it on your own dataset (--data)")
    p.add_argument("model", help="model name (see 'cvexport list')")
    p.add_argument("--data", metavar="DIR",
                   help="fine-tune on your dataset: COCO for ssd (DIR/annotations/{train,val}.json, DIR/images/), "
                   "ImageFolder for classifier (DIR/{train,val}/<class>/), VOC for fcn (DIR/JPEGImages/, "
                   "DIR/SegmentationClass/, DIR/ImageSets/Segmentation/{train,val}.txt, DIR/labelmap.txt or "
                   "DIR/class_names.txt)")
    p.add_argument("--run-dir", help="checkpoints and metrics.jsonl (default runs/MODEL); an existing run resumes")
    p.add_argument("--out", help="final weights file (default RUN_DIR/MODEL.safetensors)")
    p.add_argument("--epochs", type=_positive_int, help="override the recipe's epoch count")
    p.add_argument("--max-steps", type=_positive_int, help="stop after this many steps (smoke runs)")
    p.add_argument("--val-images", type=_positive_int, default=None,
                   help="val images for the final metric (default: 256, with --data the whole val split)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in the run directory")
    fine = p.add_argument_group("fine-tuning (with --data)")
    fine.add_argument("--pretrained", metavar="FILE",
                      help="classifier, fcn: start from this torchvision ResNet-18 state dict (ImageNet weights); "
                      "default: one in $TORCH_HOME/hub/checkpoints if present, else the shipped weights")
    fine.add_argument("--scratch", action="store_true", help="start from random weights (a baseline for fine-tuning)")
    fine.add_argument("--input-size", type=_positive_int, metavar="N", help="network input side (default the model's)")
    fine.add_argument("--batch-size", type=_positive_int, help="images per step (default the model's recipe)")
    fine.add_argument("--lr", type=float, help="base learning rate; the new head learns 10x faster")
    fine.add_argument("--threads", type=_positive_int,
                      help="CPU threads (default 1: fastest on a shared machine, see the README)")
    fine.add_argument("--no-augment", dest="augment", action="store_false",
                      help="do not flip training pictures left-right (for classes where direction matters)")
    p.add_argument("--vgg-weights", metavar="FILE",
                   help="style: VGG-19 features from this torchvision VGG-19 state dict (ImageNet weights); "
                   "default: one in $TORCH_HOME/hub/checkpoints if present, else random features")
    p.set_defaults(func=_cmd_train)


_FINE_TUNING_FLAGS = (("pretrained", "--pretrained"), ("scratch", "--scratch"), ("input_size", "--input-size"),
                      ("batch_size", "--batch-size"), ("lr", "--lr"), ("threads", "--threads"))


def _cmd_train(args) -> int:
    from cvexport.atomic import check_file_target
    from cvexport.registry import get_spec

    spec = get_spec(args.model)
    given = [flag for name, flag in _FINE_TUNING_FLAGS if getattr(args, name) not in (None, False)]
    given += [] if args.augment else ["--no-augment"]
    if args.data is None and given:
        verb = "apply" if len(given) > 1 else "applies"
        raise CvexportError(f"{', '.join(given)} {verb} to fine-tuning on your data: add --data DIR")
    if args.vgg_weights and spec.task != "style":
        raise CvexportError(f"--vgg-weights applies to the style model; '{spec.name}' is a {spec.task} model")
    run_dir = Path(args.run_dir or Path("runs") / spec.name)
    if run_dir.exists() and not run_dir.is_dir():
        raise CvexportError(f"--run-dir {run_dir} is a file, where the run's directory is expected; choose another path")
    out = check_file_target(args.out if args.out else run_dir / f"{spec.name}.safetensors", "--out")
    if args.data is not None:
        return _train_on_data(args, spec, run_dir, out)
    from cvexport.models.training import train_model

    from cvexport.models.vgg_features import RANDOM_VGG, using_vgg_weights

    vgg = _vgg_weights(args.vgg_weights) if spec.task == "style" else None
    if spec.task == "style":
        print(f"VGG-19 features: {vgg.describe() if vgg else RANDOM_VGG}", flush=True)
    # The style network's loss builds its VGG-19 features within the block; its checkpoint records which.
    with using_vgg_weights(vgg):
        record = train_model(spec, run_dir, out, epochs=args.epochs, max_steps=args.max_steps,
                             val_images=args.val_images, resume=not args.fresh)
    print(json.dumps(record, indent=2))
    print(f"wrote {out}; build with: cvexport build {spec.name} --weights {out}")
    return 0


def _train_on_data(args, spec, run_dir: Path, out: Path) -> int:
    """``train MODEL --data DIR``: everything checked (flags, start file, the whole dataset)
    before the run directory is touched."""
    from cvexport.models.finetune import check_input_size, choose_start, finetune
    from cvexport.models.user_datasets import open_dataset

    if spec.task == "style":
        raise CvexportError("--data applies to the ssd, classifier and fcn models; the style model takes its "
                            "style image with 'cvexport build style --style IMAGE'")
    if args.input_size is not None:
        check_input_size(spec, args.input_size)
    if args.lr is not None and not 0 < args.lr < 10:
        raise CvexportError(f"--lr {args.lr} must be a positive learning rate below 10")
    start, pretrained = choose_start(spec, args.scratch, args.pretrained)
    dataset = open_dataset(spec.task, args.data, spec.name)
    record = finetune(spec, dataset, run_dir, out, start=start, pretrained=pretrained, input_size=args.input_size,
                      epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
                      threads=args.threads, augment=args.augment, val_images=args.val_images,
                      resume=not args.fresh, log=lambda line: print(line, flush=True))
    print(json.dumps(record, indent=2))
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_") and isinstance(v, float))
    print(f"val: {metrics} on {counted(record.get('val_images') or 0, 'image')}; throughput {record['throughput']['steps_per_s']} "
          f"steps/s, {record['throughput']['images_per_s']} images/s on {record['throughput']['threads']} thread(s)")
    print(f"wrote {out}; build with: cvexport build {spec.name} --weights {out} --fp16")
    return 0


def _vgg_weights(given: str | None):
    """The torchvision VGG-19 file to use (--vgg-weights, else the hub cache), checked key by key; None: random."""
    from cvexport.pretrained import VGG19, find_pretrained, vgg19_feature_weights

    found = find_pretrained(VGG19, given, "--vgg-weights")
    if found is not None:
        vgg19_feature_weights(found)  # refuse a file that does not fit before any work
    return found


def _add_stylize(sub) -> None:
    p = sub.add_parser("stylize", help="style transfer by optimization (VGG-19 features, as taught): "
                       "CONTENT in the style of STYLE")
    p.add_argument("content", help="content image file")
    p.add_argument("style", help="style image file")
    p.add_argument("--out", required=True, help="output image file (PNG)")
    p.add_argument("--steps", type=_positive_int, default=None, help="Adam steps (default: the method's own)")
    p.add_argument("--size", type=_positive_int, default=None, help="long side of the synthesized image in pixels")
    p.add_argument("--plot", help="also write the loss curves as a PNG (needs matplotlib)")
    p.add_argument("--vgg-weights", metavar="FILE",
                   help="VGG-19 features from this torchvision VGG-19 state dict (ImageNet weights, as the course "
                   "uses); default: one in $TORCH_HOME/hub/checkpoints if present, else random features")
    p.set_defaults(func=_cmd_stylize)


def _cmd_stylize(args) -> int:
    from PIL import Image

    from cvexport.atomic import atomic_path, check_file_target, write_text_atomic
    from cvexport.images import load_image

    content, style = load_image(args.content), load_image(args.style)  # both checked before any work
    out = check_file_target(args.out, "--out")
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise CvexportError(f"--out {out}: use a .png or .jpg file name")
    check_file_target(out.with_suffix(".losses.json"), "--out")
    if args.plot:
        check_file_target(args.plot, "--plot")
    from cvexport.models.vgg_features import RANDOM_VGG
    from cvexport.stylize import save_loss_plot, stylize

    vgg = _vgg_weights(args.vgg_weights)
    print(f"VGG-19 features: {vgg.describe() if vgg else RANDOM_VGG}", flush=True)
    options = {k: v for k, v in (("steps", args.steps), ("size", args.size)) if v is not None}
    image, history = stylize(content, style, progress=True, vgg_weights=vgg, **options)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Image.fromarray(image).save(tmp, format="PNG" if out.suffix.lower() == ".png" else "JPEG")
    last = history[-1]
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]}); final loss " +
          ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float)))
    write_text_atomic(out.with_suffix(".losses.json"), json.dumps(history) + "\n")
    if args.plot:
        save_loss_plot(history, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="op histogram, I/O contract and a static TensorRT-compatibility report")
    p.add_argument("target", help="a bundle directory or an .onnx file")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args) -> int:
    from cvexport.atomic import check_file_target, write_text_atomic
    from cvexport.bundle import load_bundle
    from cvexport.trt_compat import check_path

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


def _add_list(sub) -> None:
    p = sub.add_parser("list", help="list the registered models")
    p.set_defaults(func=_cmd_list)


def _cmd_list(args) -> int:
    from cvexport.registry import get_spec, list_models

    for name in list_models():
        spec = get_spec(name)
        print(f"{name:<12} {spec.task:<16} {spec.description}")
    return 0


def _backend_names(values: list[str] | None, default: str = "ort") -> list[str]:
    """--backend given several times and/or as a comma list -> names in order (checked by the callee)."""
    return [name for value in (values or [default]) for name in value.split(",")]


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="latency and throughput of a bundle per backend (table, JSON, plot)")
    p.add_argument("bundle", help="bundle directory written by 'cvexport build'")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="torch, ort (default), ort-cuda, ort-trt or trt; repeat or comma-separate for several "
                        "(one that cannot run here is then skipped with a warning)")
    p.add_argument("--batch", type=_positive_int, default=1, help="images per inference call (default 1)")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations first (default 10)")
    p.add_argument("--iters", type=_positive_int, default=100, help="timed iterations (default 100)")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for the backend (default: its own)")
    p.add_argument("--json", help="write the full record (machine, versions, every sample) to this file")
    p.add_argument("--plot", help="write a PNG of the latency distributions to this file")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from rich.console import Console

    from cvexport.atomic import check_file_target, write_text_atomic
    from cvexport.bench import results_table, run_benchmark, write_plot

    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_file_target(path, option)  # before minutes of measuring
    record = run_benchmark(args.bundle, _backend_names(args.backend), batch=args.batch, warmup=args.warmup,
                           iters=args.iters, threads=args.threads)
    Console().print(results_table(record))
    if args.json:
        write_text_atomic(args.json, json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        write_plot(record, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="task metric and parity vs PyTorch per backend on the val split "
                       "(exit 1 when a backend fails)")
    p.add_argument("bundle", help="bundle directory written by 'cvexport build'")
    p.add_argument("--backend", action="append", metavar="NAME",
                   help="ort (default), ort-cuda, ort-trt or trt; repeat or comma-separate for several "
                        "(torch, the reference, always runs)")
    p.add_argument("--val-images", type=_positive_int, default=256, help="val images to measure on (default 256)")
    p.add_argument("--data", metavar="DIR",
                   help="measure on the val split of your dataset (COCO, ImageFolder or VOC, as for 'train --data'; "
                   "default: the one the bundle was fine-tuned on, if any, else the model's own)")
    p.add_argument("--max-drop", "--max-map-drop", dest="max_drop", type=float, default=1.0, metavar="N",
                   help="largest worsening of the task metric vs torch that still passes: points for mAP, top-1 "
                        "and mIoU, percent for style losses (default 1.0)")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from rich.console import Console

    from cvexport.atomic import check_file_target, write_text_atomic
    from cvexport.verify import verify_bundle, verify_table

    if args.json:
        check_file_target(args.json, "--json")
    report = verify_bundle(args.bundle, _backend_names(args.backend), val_images=args.val_images,
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


def make_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    parser = argparse.ArgumentParser(prog="cvexport", description="PyTorch vision models to ONNX / TensorRT bundles, verified.")
    try:
        parser.add_argument("--version", action="version", version=f"cvexport {version('cvexport')}")
    except PackageNotFoundError:  # running from a source tree that was never installed
        parser.add_argument("--version", action="version", version="cvexport (not installed)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_build, _add_run, _add_inspect, _add_train, _add_list, _add_bench, _add_verify, _add_stylize):
        add(sub)
    from cvexport import batch_predict, triton
    from cvexport.stream import command as stream_command

    stream_command.add_parser(sub)
    batch_predict.add_parser(sub)
    triton.add_parser(sub)
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
