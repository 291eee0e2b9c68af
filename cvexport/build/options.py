"""What a build makes (``BuildOptions``) and the checks its values pass before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from cvexport.errors import CvexportError
from cvexport.precisions import PRECISIONS
from cvexport.registry import get_spec
from cvexport.tasks import get_task

CALIB_METHODS = ("minmax", "entropy", "percentile")
INPUT_FORMATS = ("float", "uint8")
ENGINE_CHOICES = ("auto", "trt", "ort")


@dataclass(frozen=True)
class BuildOptions:
    """What ``build`` makes. ``task_options`` holds the options the model's task owns (see
    ``Task.options``: detection's ``nms`` and thresholds, style's ``style``); its task refuses
    the others."""

    model: str
    precision: str = "fp32"
    max_batch: int = 8
    input_format: str = "float"
    weights: str | None = None
    out: str | None = None
    verify_images: int = 64  # val images for the task metric recorded in the report; 0 skips it
    calib_images: int | None = None  # INT8 only: calibration images from the model's own train split (None: 128)
    calib_method: str | None = None  # INT8 only: None = entropy for TensorRT's graph, minmax for CPU's
    force: bool = False  # replace --out even when it holds files that are not a bundle
    engine: str = "auto"  # auto: also build (or reuse) a TensorRT engine where TensorRT works; trt: require it; ort: none
    # uint8 input only: (width, height) of the camera's frames, letterboxed to the network in the graph
    frame_size: tuple[int, int] | None = None
    # a torchvision builder's weights given as a state dict: its class names (one per line) and
    # the input side to build for (default: the builder's eval crop, 520 for a segmenter)
    classes: str | None = None
    input_size: int | None = None
    # ``build --module``: the user's factory, task, input size and head (cvexport.user_module.ModuleRequest)
    module: Any = None
    task_options: Mapping[str, Any] = field(default_factory=dict)  # only the options given

    @classmethod
    def of(cls, **values: Any) -> "BuildOptions":
        """Options from flat values: this class's fields, and the rest as task options
        (``BuildOptions.of(model="ssd", nms="efficient")``); None values count as not given."""
        own = {f.name for f in fields(cls)}
        task = {name: value for name, value in values.items() if name not in own and value is not None}
        return cls(**{name: value for name, value in values.items() if name in own}, task_options=task)

    def resolved_out(self) -> Path:
        if self.out:
            return Path(self.out)
        if self.module is not None:
            from cvexport.user_module import bundle_stem

            name, task = bundle_stem(self.module.name), self.module.task
        else:
            name, task = self.model, get_spec(self.model).task
        suffix = get_task(task).out_suffix(self)
        suffix += "" if self.input_format == "float" else f"-{self.input_format}"
        suffix += "" if self.frame_size is None else f"-{self.frame_size[0]}x{self.frame_size[1]}"
        return Path("bundles") / f"{name}-{self.precision}{suffix}"


def check_options(options: BuildOptions) -> None:
    """A one-line CvexportError for the first value out of range (the task's own options are
    its task's to check: ``Task.check_options``)."""
    if options.precision not in PRECISIONS:
        raise CvexportError(f"unknown precision '{options.precision}'; choose one of: {', '.join(PRECISIONS)}")
    if options.input_format not in INPUT_FORMATS:
        raise CvexportError(f"unknown --input '{options.input_format}'; choose one of: {', '.join(INPUT_FORMATS)}")
    if not 1 <= options.max_batch <= 256:
        raise CvexportError(f"--max-batch {options.max_batch} must be between 1 and 256")
    if options.calib_method is not None and options.calib_method not in CALIB_METHODS:
        raise CvexportError(f"unknown --calib-method '{options.calib_method}'; choose one of: {', '.join(CALIB_METHODS)}")
    if options.calib_images is not None and options.calib_images < 1:
        raise CvexportError(f"--calib-images {options.calib_images} must be at least 1")
    if options.frame_size is not None:
        if options.input_format != "uint8":
            raise CvexportError("--frame-size makes the graph take the camera's uint8 frames: add --input uint8")
        width, height = options.frame_size
        if not (16 <= width <= 8192 and 16 <= height <= 8192):
            raise CvexportError(f"--frame-size {width}x{height} is outside 16..8192 pixels per side")
    if options.precision != "int8":
        given = [flag for flag, value in (("--calib-images", options.calib_images), ("--calib-method", options.calib_method))
                 if value is not None]
        if given:
            raise CvexportError(f"{' and '.join(given)} apply only to --int8 builds; add --int8 or drop them")


def with_user_weights(options: BuildOptions, directory: Path, log: Callable[[str], None] = print) -> BuildOptions:
    """The options to build from: for a torchvision builder given a torch state dict, ``weights``
    becomes that file checked and rewritten as a cvexport checkpoint in ``directory`` (with the
    ``classes`` and ``input_size`` given); otherwise the options as they are. ``--classes`` and
    ``--input-size`` go with a state dict only: a cvexport checkpoint records both."""
    from dataclasses import replace

    from cvexport.torchvision_zoo import convert_weights

    if options.module is not None:
        return _with_module_checkpoint(options, directory, log)
    spec = get_spec(options.model)
    given = [flag for flag, value in (("--classes", options.classes), ("--input-size", options.input_size))
             if value is not None]
    state_dict = (spec.family == "torchvision" and options.weights is not None
                  and Path(options.weights).suffix != ".safetensors")
    if given and not state_dict:
        raise CvexportError(f"{' and '.join(given)} apply to a torchvision builder's state dict (--weights FILE.pth); "
                            f"'{options.model}' with {'these weights' if options.weights else 'its shipped weights'} "
                            "records its classes and input size already")
    if not state_dict:
        return options
    if options.input_size is not None and (rule := spec.input_side_rule(options.input_size)) is not None:
        raise CvexportError(f"--input-size {options.input_size} must be {rule}")
    converted = convert_weights(options.model, Path(options.weights),
                                Path(options.classes) if options.classes is not None else None,
                                options.input_size, directory)
    return replace(options, weights=str(converted), classes=None, input_size=None)


def _with_module_checkpoint(options: BuildOptions, directory: Path, log: Callable[[str], None]) -> BuildOptions:
    """``build --module``: the module's weights (or its factory's initialization) checked and
    written as a checkpoint that records the module (cvexport.user_module); the build goes on
    from that checkpoint under the module's model name."""
    from dataclasses import replace

    from cvexport.user_module import prepare_checkpoint

    checkpoint = prepare_checkpoint(options.module, Path(options.weights) if options.weights else None,
                                    Path(options.classes) if options.classes is not None else None, directory, log)
    return replace(options, model=options.module.name, weights=str(checkpoint), classes=None, input_size=None)


def check_engine_choice(options: BuildOptions) -> None:
    # Checked after the frame-size warning, as it always was, so the log reads the same.
    if options.engine not in ENGINE_CHOICES:
        raise CvexportError(f"unknown engine choice '{options.engine}'; choose one of: {', '.join(ENGINE_CHOICES)}")


# A --frame-size whose frames give the network less than this fraction of its input's pixels
# (the rest is upscaling or padding) leaves it too little picture to find objects in.
MIN_FRAME_DETAIL = 0.25


def frame_size_warning(spec, frame_size: tuple[int, int] | None) -> str | None:
    """A line to warn with when ``frame_size`` frames, letterboxed to the network input, bring it
    less than MIN_FRAME_DETAIL of its pixels' worth of picture (None otherwise). Upscaling adds
    no detail, so the picture's worth is the frame's own pixels where it is enlarged."""
    from cvexport.images import letterbox_fit

    if frame_size is None:
        return None
    height, width = spec.input_size
    frame_w, frame_h = frame_size
    new_w, new_h, _, _ = letterbox_fit(frame_w, frame_h, width, height)
    detail_w, detail_h = min(frame_w, new_w), min(frame_h, new_h)
    fraction = detail_w * detail_h / (width * height)
    if fraction >= MIN_FRAME_DETAIL:
        return None
    return (f"--frame-size {frame_w}x{frame_h} gives the {width}x{height} network {detail_w}x{detail_h} pixels of "
            f"picture ({fraction:.1%} of its input; the rest is upscaling or padding): expect few or no detections "
            "and a poor task metric; build with the camera's real frame size")
