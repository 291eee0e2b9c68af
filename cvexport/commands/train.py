"""``cvexport train MODEL``: train a reference model from scratch, or fine-tune it on a dataset (``--data``)."""

from __future__ import annotations

import json
from pathlib import Path

from cvexport.argtypes import positive_int as _positive_int
from cvexport.commands.common import vgg_weights
from cvexport.errors import CvexportError, counted


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a reference model from scratch (reproduces the shipped weights), "
                              "or fine-tune it on your own dataset (--data)")
    p.add_argument("model", help="model name (see 'cvexport list')")
    p.add_argument("--data", metavar="DIR",
                   help="fine-tune on your dataset: COCO for ssd (DIR/annotations/{train,val}.json, DIR/images/), "
                   "ImageFolder for classifier (DIR/{train,val}/<class>/), VOC for fcn (DIR/JPEGImages/, "
                   "DIR/SegmentationClass/, DIR/ImageSets/Segmentation/{train,val}.txt, DIR/labelmap.txt or "
                   "DIR/class_names.txt); a torchvision builder reads its task's format")
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
                      "default: one in $TORCH_HOME/hub/checkpoints if present, else the shipped weights. A torchvision "
                      "builder: its backbone's ImageNet state dict (mobilenet_v3_large for ssdlite320/lraspp, resnet50 "
                      "for retinanet/fcos, the classifier itself); default: random weights")
    fine.add_argument("--weights", metavar="FILE",
                      help="torchvision builders: start from this network's weights (a torchvision state dict .pth or "
                      "a cvexport .safetensors checkpoint); its class head is kept where it has the dataset's count")
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
    p.set_defaults(func=run)


_FINE_TUNING_FLAGS = (("pretrained", "--pretrained"), ("weights", "--weights"), ("scratch", "--scratch"),
                      ("input_size", "--input-size"),
                      ("batch_size", "--batch-size"), ("lr", "--lr"), ("threads", "--threads"))


def run(args) -> int:
    from cvexport.atomic import check_file_target
    from cvexport.models.training_tasks.registry import training_task
    from cvexport.registry import get_spec

    spec = get_spec(args.model)
    hooks = training_task(spec.task)
    given = [flag for name, flag in _FINE_TUNING_FLAGS if getattr(args, name) not in (None, False)]
    given += [] if args.augment else ["--no-augment"]
    if args.data is None and given:
        verb = "apply" if len(given) > 1 else "applies"
        raise CvexportError(f"{', '.join(given)} {verb} to fine-tuning on your data: add --data DIR")
    if args.vgg_weights and not hooks.uses_vgg_features:
        raise CvexportError(f"--vgg-weights applies to the style model; '{spec.name}' is a {spec.task} model")
    run_dir = Path(args.run_dir or Path("runs") / spec.name)
    if run_dir.exists() and not run_dir.is_dir():
        raise CvexportError(f"--run-dir {run_dir} is a file, where the run's directory is expected; choose another path")
    out = check_file_target(args.out if args.out else run_dir / f"{spec.name}.safetensors", "--out")
    if args.data is not None:
        return _train_on_data(args, spec, hooks, run_dir, out)
    from cvexport.models.training import train_model

    from cvexport.models.vgg_features import RANDOM_VGG, using_vgg_weights

    vgg = vgg_weights(args.vgg_weights) if hooks.uses_vgg_features else None
    if hooks.uses_vgg_features:
        print(f"VGG-19 features: {vgg.describe() if vgg else RANDOM_VGG}", flush=True)
    # The style network's loss builds its VGG-19 features within the block; its checkpoint records which.
    with using_vgg_weights(vgg):
        record = train_model(spec, run_dir, out, epochs=args.epochs, max_steps=args.max_steps,
                             val_images=args.val_images, resume=not args.fresh)
    print(json.dumps(record, indent=2))
    print(f"wrote {out}; build with: cvexport build {spec.name} --weights {out}")
    return 0


def _train_on_data(args, spec, hooks, run_dir: Path, out: Path) -> int:
    """``train MODEL --data DIR``: everything checked (flags, start file, the whole dataset)
    before the run directory is touched."""
    from cvexport.models.finetune import check_input_size, choose_start, finetune
    from cvexport.models.user_datasets import open_dataset

    if hooks.data_refusal is not None:
        raise CvexportError(hooks.data_refusal)
    if args.input_size is not None:
        check_input_size(spec, args.input_size)
    if args.lr is not None and not 0 < args.lr < 10:
        raise CvexportError(f"--lr {args.lr} must be a positive learning rate below 10")
    start, pretrained = choose_start(spec, args.scratch, args.pretrained, args.weights,
                                     args.input_size or spec.input_size[0])
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
