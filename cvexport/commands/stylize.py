"""``cvexport stylize CONTENT STYLE --out FILE``: style transfer by optimization."""

from __future__ import annotations

import json

from cvexport.argtypes import positive_int as _positive_int
from cvexport.commands.common import vgg_weights
from cvexport.errors import CvexportError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("stylize", help="style transfer by optimization (VGG-19 features, as taught): "
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
    p.set_defaults(func=run)


def run(args) -> int:
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

    vgg = vgg_weights(args.vgg_weights)
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
