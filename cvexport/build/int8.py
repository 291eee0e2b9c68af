"""The INT8 part of a build: its calibration settings, and its gain over fp32 timed on the build's CPU.

The gain record itself (speed-up, verdict, the line that says it) is
:mod:`cvexport.int8_gain`'s, shared with ``cvexport bench``; this module only measures.
"""

from __future__ import annotations

import time
from typing import Any, Callable

# INT8's gain is measured at build time, on the build machine's CPU, at batch 1.
GAIN_WARMUP, GAIN_ROUNDS = 3, 15


def int8_options(options):
    """The calibration settings of an INT8 build (``Int8Options``), None for other precisions."""
    if options.precision != "int8":
        return None
    from cvexport.export.precision import Int8Options

    return Int8Options(method=options.calib_method, **({} if options.calib_images is None
                                                        else {"calib_images": options.calib_images}))


def measure_int8_gain(bundle, fp32_graph, frame: list, log: Callable[[str], None]) -> dict[str, Any]:
    """Inference time of the INT8 graph ONNX Runtime runs on this CPU against the same network
    in fp32 (``fp32_graph``, in memory), on ``frame`` (one uint8 picture), timed alternately (so
    a busy neighbour slows both alike), median of each; the record says plainly whether INT8 is
    faster here."""
    import statistics

    from cvexport.backends.ort.loader import create_session
    from cvexport.backends.ort.runner import OrtRunner
    from cvexport.int8_gain import int8_statement, int8_vs_fp32
    from cvexport.runtime.predictor import prepare_batch

    feed = prepare_batch(bundle, frame).feed
    int8 = OrtRunner(bundle)
    fp32 = create_session(fp32_graph.SerializeToString(), ["CPUExecutionProvider"])
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for round_ in range(GAIN_WARMUP + GAIN_ROUNDS):
        for name, run in (("fp32", lambda: fp32.run(None, feed)), ("int8", lambda: int8.infer(feed))):
            start = time.perf_counter()
            run()
            if round_ >= GAIN_WARMUP:
                times[name].append((time.perf_counter() - start) * 1e3)
    gain = int8_vs_fp32(statistics.median(times["fp32"]), statistics.median(times["int8"]))
    gain["int8_graph"] = bundle.manifest.graph(int8.graph).file
    gain["statement"] = int8_statement(gain)
    log(f"{gain['statement']} ({gain['int8_graph']}, batch 1)")
    return gain
