"""A bundle's manifest.json as typed, frozen values: the one reader and the one writer of it.

``Manifest.from_dict`` reads a manifest that passed :func:`cvexport.manifest_schema.check_manifest`
(``load_bundle`` runs both, in that order), so every field it reads has its type already;
everything outside the bundle layer reads these attributes and never indexes the JSON.
``Manifest.to_dict`` gives back exactly the dict it was read from: the same keys in the same
order, unknown extra keys kept (each part remembers the keys it was read with and the values of
those it does not model). :func:`write_manifest` writes such a dict as ``cvexport build`` always
has, so bundles stay byte-identical.

No torch, no onnx here: loading a bundle must stay cheap.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from cvexport.int8_graphs import INT8_CPU_GRAPHS


def write_manifest(path: str | Path, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest`` (a dict, e.g. ``Manifest.to_dict()``) to ``path`` as every bundle's
    manifest.json is written: JSON indented by 2, key order kept, one final newline."""
    Path(path).write_text(json.dumps(manifest, indent=2) + "\n")


@dataclass(frozen=True)
class _Part:
    """What a part keeps to be written back as it was read: its keys in their order, and the
    values of the keys it does not model (a newer cvexport's fields, a user's notes)."""

    keys: tuple[str, ...] = field(default=(), kw_only=True, repr=False)
    extra: Mapping[str, Any] = field(default_factory=dict, kw_only=True, repr=False)

    def _write(self, known: Mapping[str, Any]) -> dict[str, Any]:
        """``known`` (the modelled fields as JSON values; None where unset) laid out in the order
        read; fields set after reading and never read come after them."""
        out: dict[str, Any] = {}
        for key in self.keys:
            if key in known:
                out[key] = known[key]
            elif key in self.extra:
                out[key] = copy.deepcopy(self.extra[key])
        for key, value in known.items():
            if key not in out and value is not None:
                out[key] = value
        for key, value in self.extra.items():
            if key not in out:
                out[key] = copy.deepcopy(value)
        return out


def _unmodelled(source: Mapping[str, Any], modelled: Iterable[str]) -> dict[str, Any]:
    modelled = set(modelled)
    return {key: copy.deepcopy(value) for key, value in source.items() if key not in modelled}


def _raw(source: Mapping[str, Any], key: str) -> Any:
    """A free-form section kept as read (a deep copy, so the caller's dict can change freely)."""
    return copy.deepcopy(source.get(key))


@dataclass(frozen=True)
class FileEntry(_Part):
    """A file of the bundle and its sha256; a graph also records its ``opset`` (the TensorRT-ready
    one) or the ``isa_class`` of the CPUs it is made for (an INT8 CPU graph)."""

    file: str
    sha256: str
    opset: int | None = None
    isa_class: str | None = None

    FIELDS = ("file", "sha256", "opset", "isa_class")

    @classmethod
    def from_dict(cls, source: Mapping[str, Any]) -> FileEntry:
        return cls(file=source["file"], sha256=source["sha256"], opset=source.get("opset"),
                   isa_class=source.get("isa_class"), keys=tuple(source), extra=_unmodelled(source, cls.FIELDS))

    def to_dict(self) -> dict[str, Any]:
        return self._write({name: getattr(self, name) for name in self.FIELDS})


@dataclass(frozen=True)
class GraphLetterbox(_Part):
    """A graph that letterboxes the camera's frames itself (``build --frame-size``): the network
    size it letterboxes them to."""

    network_width: int
    network_height: int

    @classmethod
    def from_dict(cls, source: Mapping[str, Any]) -> GraphLetterbox:
        return cls(network_width=source["network_width"], network_height=source["network_height"],
                   keys=tuple(source), extra=_unmodelled(source, ("network_width", "network_height")))

    def to_dict(self) -> dict[str, Any]:
        return self._write({"network_width": self.network_width, "network_height": self.network_height})


@dataclass(frozen=True)
class InputContract(_Part):
    """The graph's one input: float32 NCHW normalized by the caller, or uint8 NHWC normalized
    in the graph, (x / 255 - mean) / std per RGB channel either way. ``width`` x ``height`` is
    what the graph takes; with ``letterbox`` the network itself runs at another size (the graph
    fits the frames to it, by ``fit`` too).

    ``fit``: how an image becomes that input (:data:`cvexport.images.FITS`); "letterbox" for
    bundles whose manifest predates the field, which were all letterboxed. ``crop_fraction``:
    crop side / resize side, for fit "resize_crop" only."""

    name: str
    dtype: str
    layout: str
    height: int
    width: int
    max_batch: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: str | None = None
    letterbox: GraphLetterbox | None = None
    fit: str = "letterbox"
    crop_fraction: float | None = None

    SCALARS = ("name", "dtype", "layout", "height", "width", "max_batch", "channels")

    @classmethod
    def from_dict(cls, source: Mapping[str, Any]) -> InputContract:
        in_graph = source.get("letterbox")
        return cls(**{name: source.get(name) for name in cls.SCALARS},
                   mean=tuple(source["mean"]), std=tuple(source["std"]),
                   letterbox=GraphLetterbox.from_dict(in_graph) if in_graph is not None else None,
                   fit=source.get("fit", "letterbox"), crop_fraction=source.get("crop_fraction"),
                   keys=tuple(source),
                   extra=_unmodelled(source, (*cls.SCALARS, "mean", "std", "letterbox", "fit", "crop_fraction")))

    def to_dict(self) -> dict[str, Any]:
        # An older manifest without "fit" is written back without it (it reads as the letterbox).
        fit = self.fit if "fit" in self.keys or self.fit != "letterbox" else None
        return self._write({**{name: getattr(self, name) for name in self.SCALARS},
                            "mean": list(self.mean), "std": list(self.std),
                            "letterbox": self.letterbox.to_dict() if self.letterbox is not None else None,
                            "fit": fit, "crop_fraction": self.crop_fraction})

    @property
    def network_size(self) -> tuple[int, int]:
        """(width, height) of the network itself: the input's, or for a graph that letterboxes
        camera frames itself (``build --frame-size``) the size it letterboxes them to."""
        if self.letterbox is not None:
            return int(self.letterbox.network_width), int(self.letterbox.network_height)
        return int(self.width), int(self.height)


@dataclass(frozen=True)
class OutputSpec(_Part):
    """One graph output: its name, dtype and dims (an int, or a name for a dynamic one)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, source: Mapping[str, Any]) -> OutputSpec:
        return cls(name=source["name"], dtype=source["dtype"], shape=tuple(source["shape"]),
                   keys=tuple(source), extra=_unmodelled(source, ("name", "dtype", "shape")))

    def to_dict(self) -> dict[str, Any]:
        return self._write({"name": self.name, "dtype": self.dtype, "shape": list(self.shape)})


@dataclass(frozen=True)
class Postprocess(_Part):
    """The detection settings built into the graph: NMS thresholds, the detections it keeps and
    its NMS flavor (None in bundles that predate the field), and the head it decodes."""

    score_threshold: float
    iou_threshold: float
    max_detections: int
    nms: str | None = None
    # The detector's head (cvexport.detection_heads.DetectionHead.to_record); None: TinySSD's
    head: Mapping[str, Any] | None = None

    FIELDS = ("score_threshold", "iou_threshold", "max_detections", "nms", "head")

    @classmethod
    def from_dict(cls, source: Mapping[str, Any]) -> Postprocess:
        return cls(**{name: source.get(name) for name in cls.FIELDS},
                   keys=tuple(source), extra=_unmodelled(source, cls.FIELDS))

    def to_dict(self) -> dict[str, Any]:
        return self._write({name: copy.deepcopy(getattr(self, name)) for name in self.FIELDS})

    def detection_head(self):
        """The :class:`cvexport.detection_heads.DetectionHead` the graph decodes."""
        from cvexport.detection_heads import TINYSSD_HEAD, DetectionHead

        return TINYSSD_HEAD if self.head is None else DetectionHead.from_record(self.head)


@dataclass(frozen=True)
class Manifest(_Part):
    """A bundle's manifest.json: what the graphs take and give, how they were made, and the
    files with their hashes.

    ``cpu_graphs``: the INT8 graphs for ONNX Runtime's CPU provider the bundle carries, by
    manifest key (:data:`cvexport.int8_graphs.INT8_CPU_GRAPHS`). ``dataset`` (the user data the
    weights were fine-tuned on) and ``int8`` (how the INT8 graphs were calibrated) are records
    kept as written; ``postprocess`` is present in detection bundles."""

    format: str
    model: str
    task: str
    precision: str
    onnx: FileEntry
    input: InputContract
    outputs: tuple[OutputSpec, ...]
    description: str | None = None
    weights: FileEntry | None = None
    cpu_graphs: Mapping[str, FileEntry] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    dataset: Mapping[str, Any] | None = None
    postprocess: Postprocess | None = None
    int8: Mapping[str, Any] | None = None

    SCALARS = ("format", "model", "task", "description", "precision")
    RECORDS = ("dataset", "int8")

    @classmethod
    def from_dict(cls, source: Mapping[str, Any]) -> Manifest:
        """The typed manifest of ``source``, a dict that passed the schema check."""
        cpu_keys = tuple(graph.key for graph in INT8_CPU_GRAPHS)
        return cls(
            **{name: source.get(name) for name in cls.SCALARS},
            onnx=FileEntry.from_dict(source["onnx"]),
            weights=FileEntry.from_dict(source["weights"]) if "weights" in source else None,
            cpu_graphs={key: FileEntry.from_dict(source[key]) for key in cpu_keys if key in source},
            input=InputContract.from_dict(source["input"]),
            outputs=tuple(OutputSpec.from_dict(output) for output in source["outputs"]),
            class_names=tuple(source.get("class_names", ())),
            postprocess=Postprocess.from_dict(source["postprocess"]) if "postprocess" in source else None,
            **{name: _raw(source, name) for name in cls.RECORDS},
            keys=tuple(source),
            extra=_unmodelled(source, (*cls.SCALARS, *cls.RECORDS, *cpu_keys, "onnx", "weights", "input", "outputs",
                                       "class_names", "postprocess")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready dict: read from a dict, exactly that dict."""
        class_names = list(self.class_names) if self.class_names or "class_names" in self.keys else None
        return self._write({
            **{name: getattr(self, name) for name in self.SCALARS},
            "onnx": self.onnx.to_dict(),
            "weights": self.weights.to_dict() if self.weights is not None else None,
            **{key: entry.to_dict() for key, entry in self.cpu_graphs.items()},
            "input": self.input.to_dict(),
            "outputs": [output.to_dict() for output in self.outputs],
            "class_names": class_names,
            "postprocess": self.postprocess.to_dict() if self.postprocess is not None else None,
            **{name: copy.deepcopy(getattr(self, name)) for name in self.RECORDS},
        })

    # ------------------------------------------------------------------------ look-ups
    @property
    def output_names(self) -> list[str]:
        """The graph's outputs, in order."""
        return [output.name for output in self.outputs]

    def graph(self, key: str) -> FileEntry | None:
        """The graph recorded under manifest key ``key`` (``onnx`` or an INT8 CPU graph's), or None."""
        return self.onnx if key == "onnx" else self.cpu_graphs.get(key)

    def file_entry(self, key: str) -> FileEntry | None:
        """The file recorded under manifest key ``key``: a graph's, or ``weights``; None when absent."""
        return self.weights if key == "weights" else self.graph(key)
