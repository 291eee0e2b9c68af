"""``cvexport run BUNDLE IMAGE [IMAGE ...] --out DIR``: predictions JSON and pictures of images."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cvexport.argtypes import positive_int as _positive_int
from cvexport.errors import CvexportError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="run a bundle on images: predictions JSON and pictures (annotated images, "
                              "colorized masks and overlays, stylized images)")
    p.add_argument("bundle", help="bundle directory written by 'cvexport build'")
    p.add_argument("images", nargs="+", help="image files (any format Pillow reads; grey and RGBA are converted)")
    p.add_argument("--backend", default="auto", help="auto (default: the fastest CPU backend that keeps the "
                   "bundle's answers, measured once per bundle and CPU), ort (ONNX Runtime), openvino, openvino-bf16, "
                   "openvino-gpu, openvino-npu, torch (the PyTorch reference), or on GPUs ort-cuda, ort-trt, trt")
    p.add_argument("--out", required=True, help="directory for predictions.json and the pictures")
    p.add_argument("--force", action="store_true",
                   help="replace a predictions.json in --out that 'cvexport run' did not write")
    p.add_argument("--threads", type=_positive_int, help="CPU threads for the backend")
    p.set_defaults(func=run)


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


def run(args) -> int:
    from cvexport.atomic import atomic_path, check_file_target, write_text_atomic
    from cvexport.backend_choice import resolve_recorded
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
    args.backend, backend_choice = resolve_recorded(args.bundle, args.backend)  # the file names what ran
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
                        **written, **task.record(prediction)})
        print(f"{path}: {task.describe_prediction(prediction)}")
    payload = {"format": PREDICTIONS_FORMAT, "bundle": str(args.bundle), "backend": args.backend,
               "backend_choice": backend_choice,
               "model": predictor.bundle.manifest.model,
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
