"""What a compatibility check reports: findings (rule, severity, node, message) and the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


from cvexport.errors import CvexportError
from cvexport.backends.trt.compat.operators import TRT_VERSION

Severity = Literal["error", "warning", "info"]
RULE_IDS: frozenset[str] = frozenset(
    """
    onnx-checker dangling-input
    unsupported-op topk-k reduce-axes constant-input quantization resize-mode int64
    unsupported-construct plugin custom-domain dynamic-dim opset external-data shape-inference
    """.split()
)
_SEVERITY_ORDER = ("error", "warning", "info")


# --------------------------------------------------------------------------------------
# Report types
# --------------------------------------------------------------------------------------
@dataclass
class Finding:
    """One problem or remark. ``node`` names the node (or tensor) it is about, if any."""

    rule: str
    severity: Severity
    node: str | None
    message: str


@dataclass
class CompatReport:
    """Everything ``check_model`` found, plus a summary of the graph's interface."""

    findings: list[Finding] = field(default_factory=list)
    op_histogram: dict[str, int] = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing would stop TensorRT from building the engine."""
        return not any(f.severity == "error" for f in self.findings)

    def by_severity(self, severity: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for ``--json`` output and bundle manifests)."""
        return {
            "ok": self.ok,
            "trt_version": TRT_VERSION,
            "counts": {s: len(self.by_severity(s)) for s in _SEVERITY_ORDER},
            "findings": [asdict(f) for f in self.findings],
            "op_histogram": dict(self.op_histogram),
            "inputs": [dict(io) for io in self.inputs],
            "outputs": [dict(io) for io in self.outputs],
        }

    def format_text(self) -> str:
        """A readable multi-line report: verdict, interface, op counts, findings."""
        counts = {s: len(self.by_severity(s)) for s in _SEVERITY_ORDER}
        verdict = "OK" if self.ok else "NOT COMPATIBLE"
        lines = [
            f"TensorRT {TRT_VERSION} compatibility: {verdict} "
            f"({counts['error']} errors, {counts['warning']} warnings, {counts['info']} notes)"
        ]
        for title, ios in (("inputs", self.inputs), ("outputs", self.outputs)):
            lines.append(f"{title}:")
            lines.extend(
                f"  {io['name']}: {io['dtype']} {_format_shape(io['shape'])}" for io in ios
            )
        ops = sorted(self.op_histogram.items(), key=lambda kv: (-kv[1], kv[0]))
        lines.append("ops: " + ", ".join(f"{op} x{n}" for op, n in ops))
        for severity in _SEVERITY_ORDER:
            for f in self.by_severity(severity):
                where = f" [{f.node}]" if f.node else ""
                lines.append(f"{severity.upper():7} {f.rule}{where}: {f.message}")
        return "\n".join(lines)


def _format_shape(shape: list | None) -> str:
    if shape is None:
        return "[?]"
    return "[" + ", ".join(str(d) for d in shape) + "]"


class ModelLoadError(CvexportError, ValueError):
    """The file is missing or is not a readable ONNX model."""
