"""Which x86 CPU this is, as far as INT8 kernels and reported numbers care.

The machines cvexport runs on are one kind but not one CPU: some have AVX-512 and VNNI, some
only AVX2. ONNX Runtime's u8 x s8 convolution kernels differ between them in speed *and* in
result: without VNNI, pairs of u8 x s8 products are summed in 16 bits with saturation
(``vpmaddubsw``), so full-range INT8 weights lose accuracy there. Every choice that depends on
the instruction set goes through :func:`cpu_info`, and every reported number carries it.

``CVEXPORT_CPU_ISA`` forces the instruction-set class (``vnni`` or ``avx2``) so that tests and
users can run either path on any machine; the model name then says it was forced.
"""

from __future__ import annotations

import os
import platform
import re
from functools import lru_cache

from cvexport.errors import CvexportError

FORCE_VARIABLE = "CVEXPORT_CPU_ISA"
# The instruction-set classes cvexport dispatches on.
ISA_CLASSES = ("vnni", "avx2")
# Flags worth naming next to a number: the SIMD width and the int8 dot-product instructions.
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                  "amx_int8", "amx_tile", "asimd", "asimddp", "i8mm")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@lru_cache(maxsize=1)
def _read_cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first processor in /proc/cpuinfo; platform names elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            text = file.read()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU", frozenset()
    model = re.search(r"^(?:model name|Model|Hardware)\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M)
    return (model.group(1).strip() if model else platform.machine() or "unknown CPU",
            frozenset(flags.group(1).split()) if flags else frozenset())


def isa_class(flags: frozenset[str] | None = None) -> str:
    """``"vnni"`` where the CPU has an 8-bit dot product that accumulates in 32 bits (AVX-512
    VNNI, AVX-VNNI, AMX), else ``"avx2"``; ``CVEXPORT_CPU_ISA`` overrides the detection."""
    forced = os.environ.get(FORCE_VARIABLE, "").strip().lower()
    if forced:
        if forced not in ISA_CLASSES:
            raise CvexportError(f"{FORCE_VARIABLE}={forced!r} is not a known instruction-set class; "
                                f"use one of: {', '.join(ISA_CLASSES)}, or unset it")
        return forced
    flags = _read_cpuinfo()[1] if flags is None else flags
    return "vnni" if any(f in flags for f in VNNI_FLAGS) else "avx2"


def cpu_info() -> dict:
    """What to record beside a measured number: the CPU's model, its relevant flags, the
    instruction-set class cvexport dispatches on and whether that class was forced."""
    model, flags = _read_cpuinfo()
    forced = bool(os.environ.get(FORCE_VARIABLE, "").strip())
    return {
        "model": model,
        "flags": [f for f in REPORTED_FLAGS if f in flags],
        "isa_class": isa_class(flags),
        "forced": forced,
        "cores": os.cpu_count(),
    }


def describe_cpu(info: dict | None = None) -> str:
    """One line for logs and tables: ``AMD EPYC, 2 cores, avx2 avx512f avx512_vnni (class vnni)``."""
    info = info or cpu_info()
    flags = " ".join(info["flags"]) or "no AVX2"
    forced = f", forced by {FORCE_VARIABLE}" if info["forced"] else ""
    return f"{info['model']}, {info['cores']} cores, {flags} (class {info['isa_class']}{forced})"
