"""Is INT8 faster than fp32 here? One record from two inference times measured alike on one CPU,
and the plain line that says so. ``build`` (at build time) and ``bench`` (on demand) both make
it, from their own measurements, so it lives below both.
"""

from __future__ import annotations

from typing import Any

from cvexport.cpu import cpu_info, describe_cpu

# INT8 counts as faster than fp32 only from this speed-up on: below it, the difference is within
# what these shared machines vary from run to run.
FASTER_MARGIN = 1.05


def int8_vs_fp32(fp32_ms: float, int8_ms: float, cpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """The comparison record from two inference times (p50, ms) measured alike on one CPU:
    ``speedup`` = fp32 / int8, ``faster`` when that is at least ``FASTER_MARGIN``, and the CPU."""
    if fp32_ms <= 0 or int8_ms <= 0:
        raise ValueError(f"inference times must be positive, got fp32 {fp32_ms} ms and int8 {int8_ms} ms")
    speedup = round(fp32_ms / int8_ms, 2)
    return {"fp32_inference_ms_p50": round(float(fp32_ms), 4), "int8_inference_ms_p50": round(float(int8_ms), 4),
            "speedup": speedup, "faster": speedup >= FASTER_MARGIN, "cpu": cpu if cpu is not None else cpu_info()}


def int8_statement(comparison: dict[str, Any]) -> str:
    """One plain line from :func:`int8_vs_fp32`'s record, e.g. ``INT8 on this CPU (AMD EPYC, ...):
    inference 17.00 ms vs fp32 16.50 ms: not faster (0.97x)``."""
    speedup = comparison["speedup"]
    if comparison["faster"]:
        verdict = f"{speedup:.2f}x faster"
    elif speedup >= 1.0:
        verdict = (f"not clearly faster ({speedup:.2f}x, within the {FASTER_MARGIN - 1:.0%} that runs vary on "
                   "this machine)")
    else:
        verdict = f"not faster ({speedup:.2f}x)"
    return (f"INT8 on this CPU ({describe_cpu(comparison['cpu'])}): inference "
            f"{ms_text(comparison['int8_inference_ms_p50'])} ms vs fp32 {ms_text(comparison['fp32_inference_ms_p50'])} ms: "
            f"{verdict}")


def ms_text(value: float) -> str:
    """A time in ms as tables and lines print it: 2 decimals, 1 from 100 ms on."""
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}"
