"""The ``Task`` base class and ``register_task``: what every task is asked, with the defaults.

The registry's look-ups (``get_task``, ``all_tasks``) live in :mod:`cvexport.tasks`, which
imports the built-in task modules; those import this module only, so there is no import circle.
See :mod:`cvexport.tasks` for what a task is and which methods the pipeline calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from cvexport.errors import CvexportError
from cvexport.int8_graphs import INT8_CPU_GRAPHS

if TYPE_CHECKING:
    import onnx
    from PIL.Image import Image

    from cvexport.annotators import Annotator
    from cvexport.compare import Parity
    from cvexport.export.precision import Int8Options
    from cvexport.manifest import Manifest


# The build variants most tasks test (``Task.build_variants``): every precision with float input,
# and uint8 input (the in-graph normalization section) once, at fp32.
EVERY_PRECISION_AND_UINT8 = (
    {"precision": "fp32", "input_format": "float"},
    {"precision": "fp16", "input_format": "float"},
    {"precision": "int8", "input_format": "float"},
    {"precision": "fp32", "input_format": "uint8"},
)


@dataclass(frozen=True)
class ContractOutput:
    """An output the task's runtime reads, as a bundle's manifest and graph must give it: its
    dtype and dims. A dim is an int, or a symbol the schema checks against the manifest and the
    graph (cvexport.manifest_schema): "B" the batch (any), "K" postprocess.max_detections, "C"
    len(class_names), "H" / "W" the network input's height / width. An optional output is
    checked where a bundle has it."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]
    required: bool = True


@dataclass(frozen=True)
class TaskOption:
    """A build option one task owns: ``BuildOptions.task_options[name]`` and the CLI flag ``--name``."""

    name: str
    help: str
    type: Callable[[str], Any] = str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class Task:
    """Defaults for every task; see the module docstring for the whole interface."""

    name: ClassVar[str]
    options: ClassVar[tuple[TaskOption, ...]] = ()
    core_outputs: ClassVar[tuple[str, ...]]  # outputs of the exported network, before the task's sections
    TOLERANCES: ClassVar[Mapping[str, Any]]  # precision -> tolerance its Parity understands
    METRICS: ClassVar[tuple]  # cvexport.metrics.Metric, the first one is the task's headline metric
    # BuildOptions fields and task options (other than ``model``) of each bundle the parity tests
    # build (ONNX Runtime on CPU: the fp32 and fp16 ones; TensorRT on a GPU: all).
    build_variants: ClassVar[tuple[dict[str, Any], ...]] = ()
    # Val images a build's verify step measures at most (None: as many as asked).
    build_verify_images: ClassVar[int | None] = None
    # INT8 bundles also carry ONNX Runtime's U8S8 CPU graphs (False: the TensorRT QDQ graph runs on CPU too).
    int8_cpu_graphs: ClassVar[bool] = True

    # ------------------------------------------------------------ the bundle's contract
    # The outputs a bundle of the task gives (``output_contract``).
    outputs: ClassVar[tuple[ContractOutput, ...]]
    # Whether a bundle names its classes (``class_names``, one per class).
    has_classes: ClassVar[bool] = True
    # The output whose values index ``class_names`` (where Triton's label_filename goes); None: none.
    labelled_output: ClassVar[str | None] = None
    # The NMS flavors a bundle's ``postprocess`` section may name; a task that sets them has its
    # bundles carry that section (thresholds, max detections). None: no such section.
    postprocess_nms_flavors: ClassVar[tuple[str, ...] | None] = None
    # The graph tensor [B, anchors, C] of class scores whose C must match ``class_names`` (a
    # graph whose outputs keep only the best classes shows the count there); None: none.
    class_scores_tensor: ClassVar[str | None] = None
    # Whether the task's results survive an input showing only part of the picture (fit
    # resize_crop, cvexport.images.InputFit): one answer per picture, nothing mapped back onto it.
    accepts_cropped_input: ClassVar[bool] = False
    # Its predictions are boxes a tracker can follow from frame to frame (stream --track, --line, --zone).
    trackable: ClassVar[bool] = False

    def output_contract(self) -> tuple[ContractOutput, ...]:
        """The outputs a bundle of the task must give (required) or may add (optional), with
        their dtypes and symbolic dims: what the manifest schema checks, for every task alike."""
        return self.outputs

    # ------------------------------------------------------------------ build options
    def option(self, options, name: str) -> Any:
        """The value of this task's option ``name`` in a build's options (None when not given)."""
        return options.task_options.get(name)

    def check_options(self, spec, options) -> None:
        """One-line errors for options another task owns, then for values of its own that cannot work."""
        own = {option.name for option in self.options}
        foreign = [name for name in options.task_options if name not in own]
        if foreign:
            owners = {o.name: task for task in _TASKS.values() for o in task.options}  # every task registered
            unknown = [name for name in foreign if name not in owners]
            if unknown:
                raise CvexportError(f"unknown build option {', '.join(unknown)}; see 'cvexport build --help'")
            flags = ", ".join(owners[name].option_flag(name) for name in foreign)
            verb = "apply" if len(foreign) > 1 else "applies"
            raise CvexportError(f"{flags} {verb} only to {owners[foreign[0]].name} models; "
                                f"'{spec.name}' is a {self.name} model")
        self.validate_options(spec, options)

    def option_flag(self, name: str) -> str:
        return next(o.flag for o in self.options if o.name == name)

    def validate_options(self, spec, options) -> None:
        """Values of the task's own options that cannot work -> CvexportError."""

    def describe(self, options) -> str:
        """What the build log adds after the precision (", NMS 'onnx'")."""
        return ""

    def out_suffix(self, options) -> str:
        """What the default bundle directory name adds for the task's options."""
        return ""

    def options_from_manifest(self, manifest: Manifest) -> dict[str, Any]:
        """The task options a bundle was built with (to export its network again)."""
        return {}

    def prepare_weights(self, spec, options, log: Callable[[str], None]):
        """Weights the task makes for these options (a path), or None to use ``--weights`` or the shipped ones."""
        return None

    # ------------------------------------------------------------------------- export
    def export_graphs(self, model, spec, options, int8: Int8Options | None = None,
                      warn: Callable[[str], None] = print) -> dict[str, onnx.ModelProto]:
        """The complete graphs, keyed by manifest entry (see
        :func:`cvexport.export.precision.precision_graphs`): the network exported at the
        build's precision, finished by ``append_sections`` in FP32 and the input section."""
        from cvexport.export.precision import Int8Plan, export_task_graphs

        plan = None
        if int8 is not None:
            from cvexport.export.quantize import calibration_batches

            plan = Int8Plan(options=int8,
                            calibration=list(calibration_batches(self.sample_images, spec, int8.calib_images)),
                            keep_float=lambda core, form: self.int8_kept_float(spec, core, form),
                            cpu_graphs=self.int8_cpu_graphs)
        finish = lambda core: self.append_sections(core, model, spec, options)  # noqa: E731
        return export_task_graphs(model, spec, options, list(self.core_output_names(spec.detection_head)), finish,
                                  plan, warn)

    def core_output_names(self, head=None) -> tuple[str, ...]:
        """The exported network's outputs (``core_outputs``; a detector's head may name others)."""
        return self.core_outputs

    # A user's module (cvexport.user_module) may declare this task: its outputs are checked by
    # check_module_outputs, and its bundles start from module_defaults (the task's build options).
    takes_modules: ClassVar[bool] = False
    module_defaults: ClassVar[Mapping[str, Any]] = {}

    def check_module_outputs(self, model, outputs: tuple, shape: tuple[int, int, int], head,
                             wrong: Callable[[int, str, str], Exception], where: str) -> int:
        """The class count of a module's outputs (one forward on a (batch, height, width)
        ``shape`` input), or ``wrong(index, expected shape, why)`` raised for the first output
        that is not what the task (and ``head``) needs."""
        raise NotImplementedError

    def append_sections(self, core: onnx.ModelProto, model, spec, options) -> onnx.ModelProto:
        """The task's FP32 sections after the network, ending in the output contract."""
        raise NotImplementedError

    def int8_keep_float(self, core: onnx.ModelProto, form: str) -> list[str]:
        """Nodes INT8 keeps in float in the graph of quantize ``form`` (where quantizing them
        costs measurable accuracy)."""
        return []

    def int8_kept_float(self, spec, core: onnx.ModelProto, form: str) -> list[str]:
        """What an INT8 build of ``spec`` keeps in float in the graph of ``form``: the task's
        ``int8_keep_float``, and, for a network without data of its own here (a torchvision
        builder, a user's module: measured on none of the project's data), in ONNX Runtime's
        U8S8 CPU graphs also :func:`cvexport.export.quantize.u8_sensitive_nodes` (heads and
        products of two activations).

        Why: those graphs round every activation to 8 bits where the TensorRT form rounds only
        the inputs of weighted layers. SSDlite320-MobileNetV3 trained with ``cvexport train``
        on the shape data (benchmarks/torchvision_int8_gates.py; AMD EPYC, AVX-512 VNNI, AVX2
        path forced): with everything quantized the 7-bit graph matched 1018/1524 detections
        on the 8 parity pictures (gate 70 %) and lost 2.4 points of mAP@0.5 on 64 val images
        (verify allows 1); the VNNI graph matched 1008/1496, the same failure, so it is not the
        7-bit weights. Heads alone in float: 71 % but -1.9 points; heads and the SE gates' Mul:
        1025/1429 and +0.05 points; the build's 7-bit graph (the detector's first conv in float
        too): 1022/1414 and -0.85 points, both gates passed, 1.08x fp32's speed (3 % slower than
        with all quantized). The depthwise convolutions in float (31 of them) did not help
        (67.7 %; with the heads -1.5 points). The project's own models keep their measured
        choices (their INT8 graphs are unchanged)."""
        kept = self.int8_keep_float(core, form)
        if spec.has_own_data or form not in {graph.form for graph in INT8_CPU_GRAPHS}:
            return kept
        from cvexport.export.quantize import u8_sensitive_nodes

        return kept + [name for name in u8_sensitive_nodes(core) if name not in kept]

    def manifest_entries(self, spec, options) -> dict[str, Any]:
        return {}

    def reference_outputs(self, model, array: np.ndarray, manifest: Manifest) -> dict[str, np.ndarray]:
        """The PyTorch fp32 answer for a network input in the bundle's input contract."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------- data
    # A model of this project has its own generated data (``own_*``); a model that has none here
    # (a torchvision builder, a user's module) is calibrated and parity-checked on real
    # photographs, and its metric needs the user's labelled data (``--data``).
    parity_image_count: ClassVar[int] = 8

    def sample_images(self, spec, split: str, indices, seed: int = 0) -> list[np.ndarray]:
        """uint8 RGB images (calibration, benchmarks): the model's own dataset, or photographs."""
        if not spec.has_own_data:
            from cvexport.models.photos import photo_samples

            return photo_samples(split, indices, spec.input_size[0], seed)
        return self.own_images(spec, split, indices, seed)

    def parity_frames(self, spec) -> list[np.ndarray]:
        """uint8 frames the build's parity check runs."""
        if not spec.has_own_data:
            return self.sample_images(spec, "val", range(self.parity_image_count))
        return self.own_parity_frames(spec)

    def val_samples(self, spec, count: int) -> tuple[list[np.ndarray], list[Any]]:
        """The first ``count`` val images and their truth, as ``metrics`` takes it."""
        if not spec.has_own_data:
            raise CvexportError(f"{spec.name} has no labelled data of its own here: measure its metric on yours "
                                "with --data DIR")
        return self.own_val_samples(spec, count)

    def own_images(self, spec, split: str, indices, seed: int = 0) -> list[np.ndarray]:
        """uint8 RGB images of the model's own dataset."""
        raise NotImplementedError

    def own_parity_frames(self, spec) -> list[np.ndarray]:
        return self.own_images(spec, "val", range(self.parity_image_count))

    def own_val_samples(self, spec, count: int) -> tuple[list[np.ndarray], list[Any]]:
        """The first ``count`` val images of the model's own dataset and their truth."""
        raise NotImplementedError

    # -------------------------------------------------------------------------- parity
    def new_parity(self, precision: str, manifest: Manifest | None = None) -> Parity:
        """Empty parity statistics bound to the tolerance of ``precision`` and, where the task's
        comparison depends on them, to the settings in the bundle's ``manifest`` (detection: its
        score threshold, at which a detection may come or go by rounding alone)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------- results
    # The pictures ``render`` draws of one image's result: file suffix -> annotator
    # (cvexport.annotators), and the suffix of the one a stream's video shows.
    pictures: ClassVar[Mapping[str, Annotator]] = {}
    video_suffix: ClassVar[str] = "annotated"

    def to_predictions(self, outputs: Mapping[str, np.ndarray], letterboxes: Sequence,
                       class_names: Sequence[str], input_width: int, input_height: int) -> list[Any]:
        """Raw outputs of a batch -> one result (cvexport.results) per image, in each original image's pixels."""
        raise NotImplementedError

    def metric_note(self, manifest: Manifest) -> str | None:
        """What a reader of the verify report must know about the metric."""
        return None

    def metrics(self, predictions: list[Any], truths: list[Any], bundle) -> dict[str, float]:
        raise NotImplementedError

    def record(self, prediction: Any) -> dict[str, Any]:
        """The JSON entry of one image's result: its ``to_record()``, the one JSON form every
        command writes (a result carries the class names it was made with)."""
        return prediction.to_record()

    def describe_prediction(self, prediction: Any) -> str:
        raise NotImplementedError

    def render(self, image: np.ndarray, prediction: Any) -> dict[str, Image]:
        """Pictures to write for one image: suffix -> PIL image, one per annotator of ``pictures``."""
        return {suffix: annotator.annotate(image, prediction) for suffix, annotator in self.pictures.items()}

    def video_picture(self, image: np.ndarray, prediction: Any) -> Image:
        """The picture of one frame's result that a stream's video shows (``video_suffix``)."""
        return self.pictures[self.video_suffix].annotate(image, prediction)

    def draws_on_yuv420(self) -> bool:
        """Whether the video's annotator can draw on a decoded yuv420p frame in place
        (:meth:`video_picture_yuv420`), which spares a stream the frame's RGB round trip."""
        return hasattr(self.pictures[self.video_suffix], "annotate_yuv420")

    def video_picture_yuv420(self, planes: np.ndarray, prediction: Any) -> None:
        """:meth:`video_picture` drawn in place on a decoded frame's yuv420p planes
        (:mod:`cvexport.yuv420`); only where :meth:`draws_on_yuv420`."""
        self.pictures[self.video_suffix].annotate_yuv420(planes, prediction)


_TASKS: dict[str, Task] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``."""
    if cls.name in _TASKS:
        raise ValueError(f"task {cls.name!r} registered twice")
    _TASKS[cls.name] = cls()
    return cls
