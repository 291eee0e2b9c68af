"""The build's export phase: trained weights -> the torch model (built once) -> the checked ONNX graphs.

The torch model built here is the one the build's checks use as their fp32 reference too
(``cvexport.build.gates``), so a build loads its weights into a network once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cvexport.backends.trt.compat import TRT_VERSION, check_model
from cvexport.errors import CvexportError


@dataclass(frozen=True)
class Exported:
    """What the export made: the bundle's graphs keyed by manifest entry (``"onnx"``, and the
    INT8 CPU graphs), the float graph an INT8 build times itself against (None otherwise), the
    TensorRT compatibility report of ``"onnx"`` and, for INT8, the calibration settings used."""

    graphs: dict[str, Any]
    fp32: Any
    compat: Any
    int8: Any

    @property
    def onnx(self):
        """The TensorRT-ready graph (``model.onnx``)."""
        return self.graphs["onnx"]


def load_weights(spec, task, options, log: Callable[[str], None]) -> tuple[Path, Any]:
    """The weights file the bundle is built from (the task may make it first: style's
    ``--style IMAGE`` trains a network) and the torch model with those weights."""
    prepared = task.prepare_weights(spec, options, log)
    weights = prepared or (Path(options.weights) if options.weights else spec.weights_path())
    return weights, spec.load_model(weights)


def export_graphs(model, spec, task, options, log: Callable[[str], None]) -> Exported:
    """The task's graphs of ``model`` at ``options.precision``, each checked once: the
    TensorRT-ready graph by the TensorRT compatibility check (which starts with onnx.checker's
    full check), the others by onnx.checker's full check. A graph TensorRT would refuse is a
    one-line error naming the first problems."""
    import onnx

    from cvexport.build.int8 import int8_options

    log(f"exporting {spec.name} ({spec.description}) as {options.precision}{task.describe(options)}, "
        f"batch 1..{options.max_batch}, {options.input_format} input")
    # Too few images: the quantizer's CalibrationWarning reaches the log once, through warn=log.
    int8 = int8_options(options)
    graphs = task.export_graphs(model, spec, options, int8=int8, warn=log)
    fp32 = graphs.pop("fp32", None)  # INT8 only: to measure INT8's gain on this CPU
    for key, graph in [*graphs.items(), ("fp32", fp32)]:
        if key != "onnx" and graph is not None:
            onnx.checker.check_model(graph, full_check=True)
    compat = check_model(graphs["onnx"])
    if not compat.ok:
        raise CvexportError(
            "the exported graph would not build on TensorRT: "
            + "; ".join(f.message for f in compat.by_severity("error"))[:400]
            + " (run 'cvexport inspect' on the ONNX for the full report)"
        )
    log(f"TensorRT compatibility ({TRT_VERSION} operator table): OK, "
        f"{len(compat.by_severity('warning'))} warnings")
    return Exported(graphs=graphs, fp32=fp32, compat=compat, int8=int8)
