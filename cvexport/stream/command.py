"""``cvexport stream BUNDLE SOURCE [SOURCE ...] --out DIR``: the command line of real-time streams.

``add_parser(subparsers)`` registers the subcommand; ``run(args)`` executes it and returns the
exit status (0; 130 / 143 after a clean stop by SIGINT / SIGTERM, outputs complete); user
mistakes raise :class:`cvexport.errors.CvexportError`, which the CLI prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

from cvexport.argtypes import pixels, positive_int
from cvexport.stream.source_counts import CountingOptions
from cvexport.errors import CvexportError, stderr_warning
from cvexport.signals import SIGNAL_EXIT, install_stop_signals, restore_signals
from cvexport.stream.outputs import SUMMARY, SUMMARY_FORMAT



def _seconds(allow_zero: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
        if value != value or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{text} must be {'0 or more' if allow_zero else 'more than 0'}")
        return value
    return parse


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``stream`` on an argparse subparsers object (``set_defaults(func=run)``)."""
    p = subparsers.add_parser(
        "stream", help="run a bundle on video files, image folders, cameras or network streams in real time: "
        "per-frame JSONL, annotated mp4 and a summary per source",
        description="Sources: a video file, an image file, folder or glob (name order), a V4L2 camera "
        "(/dev/video0, v4l2:///dev/video0, 0) or a network stream (rtsp://, rtmp://, tcp://, udp://, http(s)://, "
        "srt://); several at once are batched together. Outputs: DIR/<name>.jsonl, DIR/<name>.mp4, DIR/summary.json.")
    p.add_argument("bundle", help="bundle directory written by 'cvexport build'")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="video file, image folder or glob, camera or URL")
    p.add_argument("--out", required=True, help="directory for <name>.jsonl, <name>.mp4 and summary.json")
    p.add_argument("--force", action="store_true",
                   help="replace files at those output paths that 'cvexport stream' did not write (never a source)")
    p.add_argument("--backend", default="auto", help="auto (default: the fastest CPU backend that keeps the "
                   "bundle's answers, measured once per bundle and CPU), ort, openvino, openvino-bf16, openvino-gpu, "
                   "openvino-npu, torch, or on GPUs ort-cuda, ort-trt, trt")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for inference (default: the backend's own, one per core, for ort and openvino; "
                        "one fewer than the cores for torch, whose idle threads spin and slow the other stages)")
    p.add_argument("--realtime", action="store_true",
                   help="pace files and image folders at their frame rate and drop frames when behind, as a camera "
                        "(default: every frame of a file is processed, as fast as possible)")
    p.add_argument("--frames", type=positive_int, help="stop each source after this many processed frames")
    p.add_argument("--duration", type=_seconds(), help="stop after this many seconds")
    p.add_argument("--loop", action="store_true", help="start files and image folders again at their end")
    p.add_argument("--stride", type=positive_int, default=1, help="process every N-th frame only (default 1)")
    p.add_argument("--no-video", dest="video", action="store_false",
                   help="write the JSONL and summary only, no annotated mp4 (saves the encoding time)")
    p.add_argument("--track", action="store_true",
                   help="detectors: give each box a track id across frames (ByteTrack; 'track_id' in the JSONL, "
                        "'#ID' in the video, 'tracks' in summary.json)")
    p.add_argument("--track-lost-seconds", type=_seconds(allow_zero=True), default=1.0,
                   help="with --track: how long a track lives on unmatched (default 1.0)")
    p.add_argument("--line", action="append", default=[], metavar="X1,Y1,X2,Y2",
                   help="count tracked boxes crossing this line, in / out per class (implies --track; repeat for "
                        "more lines; pixels, or fractions of the frame when every number is at most 1; 'in' is the "
                        "left-hand side walking from the first point to the second)")
    p.add_argument("--zone", action="append", default=[], metavar="X1,Y1,X2,Y2,X3,Y3,...",
                   help="count tracked boxes inside this polygon and entering it, per class (implies --track; "
                        "repeat for more zones; pixels or fractions as --line)")
    p.add_argument("--count-frames", type=positive_int, default=CountingOptions.min_frames,
                   help="with --line / --zone: frames a box must be seen on the new side before it counts "
                        f"(default {CountingOptions.min_frames})")
    p.add_argument("--count-margin", type=pixels, default=CountingOptions.margin, metavar="PIXELS",
                   help="with --line / --zone: pixels either side of a line or edge where a box is on neither side, "
                        f"so a box jittering on it counts once (default {CountingOptions.margin:g})")
    p.add_argument("--on-source-error", choices=("fail", "skip"), default="fail",
                   help="with several sources, one that cannot be opened or is lost for good: fail (default) stops "
                        "with an error; skip warns and goes on with the others")
    from cvexport.runtime.preparers import PREPARERS

    p.add_argument("--preprocess", choices=tuple(PREPARERS), default="exact",
                   help="exact (default): the bundle's fit (letterbox, stretch, ...) as 'cvexport run' applies it to each "
                        "decoded RGB frame, results equal "
                        "Predictor.predict; ffmpeg: FFmpeg's scaler straight from the decoded frame to the network "
                        "size (faster, slightly different pixels)")
    p.add_argument("--fps", type=_seconds(), default=30.0,
                   help="frame rate of image-folder sources, for --realtime and their mp4 (default 30)")
    p.add_argument("--timeout", type=_seconds(), default=10.0,
                   help="live sources: seconds to wait for a connection or for data before it counts as lost "
                        "(default 10)")
    p.add_argument("--reconnect-timeout", type=_seconds(allow_zero=True), default=60.0,
                   help="live sources: give up after this many seconds without a connection (default 60; 0: never "
                        "reconnect; inf: keep trying)")
    p.add_argument("--camera-size", metavar="WxH", help="V4L2 capture size, e.g. 1280x720 (default: the camera's)")
    p.add_argument("--camera-fps", help="V4L2 frame rate, e.g. 30")
    p.add_argument("--camera-format", help="V4L2 pixel format, e.g. mjpeg or yuyv422")
    p.add_argument("--rtsp-transport", choices=("tcp", "udp"), help="RTSP transport (default: FFmpeg's, udp then tcp)")
    p.add_argument("--status", choices=("auto", "live", "plain", "none"), default="auto",
                   help="auto (default): a live table on a terminal, a line per source every --status-interval "
                        "seconds otherwise")
    p.add_argument("--status-interval", type=_seconds(), default=5.0, help="seconds between plain status lines")
    from cvexport.stream.live_view import parse_serve

    p.add_argument("--serve", type=parse_serve, metavar="[HOST:]PORT",
                   help="serve a live view while it runs: a page with each source's annotated video and figures, "
                        "/status.json, Prometheus /metrics, /video/N.mjpg (host 127.0.0.1 unless given; port 0: any)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    return execute(args)


# Backends whose inference threads default to one fewer than the cores (pipeline_threads); the
# others keep their own default, one thread per core. ONNX Runtime was here while its idle
# workers spun (cvexport.backends.ort.loader); since they sleep, its default is faster in every
# stream configuration measured: 720p H.264, SSD fp32, 2-core AMD EPYC (AVX-512 VNNI/BF16), idle,
# one run, 1 vs 2 threads: JSONL 52.1 vs 65.5 fps (exact letterbox), 52.9 vs 77.1 (ffmpeg), with
# the annotated mp4 48.8 vs 53.5 and 50.8 vs 62.8 (benchmarks/results/stream.md). torch's
# OpenMP threads still spin.
CPU_BACKENDS = ("torch",)


def pipeline_threads() -> int:
    """Inference threads when --threads is not given, for backends whose idle threads spin
    (CPU_BACKENDS): the cores this process may use, less one.

    Measured on a 2-core AMD EPYC when ONNX Runtime's workers still spun: one SSD fp32 inference
    cost 10 ms of CPU time with one thread and 20 ms with two (the second worker spinning),
    for at most ~15 % less wall time when nothing else runs; in a pipeline that CPU is taken
    from decoding, preprocessing and encoding, which need 4-15 ms of it per 720p frame
    (summary.json's ``cpu_ms_per_frame``, benchmarks/stream_benchmark.py).
    """
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def _default_predictor(bundle, backend: str, threads: int | None):
    from cvexport.runtime.predictor import Predictor

    return Predictor(bundle, backend=backend, threads=threads)


def _gather(items: list, attempt: Callable, policy: str, total: int, warn: Callable[[str], None],
            skipped: Callable | None = None) -> list:
    """``attempt(item)`` for each item. A CvexportError fails the command when ``policy`` is "fail"
    or there is a single source (``total``); with "skip" it is warned about, the item left out
    (and handed to ``skipped(item, error)``), an error only if nothing is left."""
    kept, errors = [], []
    for item in items:
        try:
            kept.append(attempt(item))
        except CvexportError as exc:
            if policy == "fail" or total == 1:
                raise
            errors.append(exc)
            warn(f"{exc}; skipping it (--on-source-error skip)")
            if skipped is not None:
                skipped(item, exc)
    if not kept:
        raise CvexportError(f"no source could be opened (all {total} failed, see the warnings); the last: {errors[-1]}")
    return kept


def execute(args, make_predictor: Callable | None = None) -> int:
    """Run ``stream`` for parsed ``args``. ``make_predictor(bundle, backend, threads)`` builds the
    predictor (tests pass one that wraps it, e.g. to make inference slower than the source)."""
    from cvexport.atomic import write_text_atomic
    from cvexport.bundle import load_bundle
    from cvexport.tasks import get_task
    from cvexport.stream.outputs import check_outputs, remove_outputs, source_inputs
    from cvexport.stream.pipeline import Pipeline, PipelineOptions, StreamSource, skipped_entry
    from cvexport.stream.sources import (ReadOptions, SourceEvents, mask_credentials, open_reader, parse_source,
                                         unique_names)
    from cvexport.stream.stats import SourceStats
    from cvexport.stream.status import StatusView

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CvexportError(f"--out {out} is a file; pass a directory")
    if args.camera_size and not _is_size(args.camera_size):
        raise CvexportError(f"--camera-size {args.camera_size!r} is not WIDTHxHEIGHT, e.g. 1280x720")
    counting = _counting_options(args)  # a mistyped shape is one line before any source is opened
    policy = args.on_source_error
    # (argument position, summary entry) of each source left out by --on-source-error skip.
    skipped: list[tuple[int, dict]] = []
    parsed = _gather(list(enumerate(args.sources)), lambda item: (item[0], parse_source(item[1])), policy,
                     len(args.sources), stderr_warning,
                     lambda item, exc: skipped.append((item[0], skipped_entry(mask_credentials(item[1]), exc))))
    positions = [position for position, _ in parsed]
    specs = unique_names([spec for _, spec in parsed])
    # Before any work: no output may be a source or a file this command did not write.
    output_names = [SUMMARY] + [f"{spec.name}{suffix}" for spec in specs
                                for suffix in ((".jsonl", ".mp4") if args.video else (".jsonl",))]
    inputs = source_inputs(specs)
    check_outputs(out, output_names, inputs, force=args.force)
    args.track = args.track or bool(counting)  # counting follows track ids
    bundle = load_bundle(args.bundle)
    if args.track and not get_task(bundle.task).trackable:
        raise CvexportError(f"--track follows a detector's boxes; this bundle's task is {bundle.task}")
    if args.track:
        import importlib.util

        if importlib.util.find_spec("trackers") is None:  # before any work, not a traceback from a thread
            raise CvexportError("--track needs roboflow's trackers package: pip install 'cvexport[track]'")

    reconnect = None if args.reconnect_timeout == float("inf") else args.reconnect_timeout
    read_options = ReadOptions(fps=args.fps, loop=args.loop, open_timeout=args.timeout, read_timeout=args.timeout,
                               reconnect_timeout=reconnect, camera_size=args.camera_size, camera_fps=args.camera_fps,
                               camera_format=args.camera_format, rtsp_transport=args.rtsp_transport)
    if args.loop and any(spec.live for spec in specs):
        stderr_warning("--loop applies to files and image folders; live sources reconnect instead")

    from cvexport.backend_choice import resolve_recorded

    args.backend, args.backend_choice = resolve_recorded(bundle, args.backend)  # summary.json: what auto chose from
    if args.threads is None and args.backend in CPU_BACKENDS:
        args.threads = pipeline_threads()
    make_predictor = make_predictor or _default_predictor
    predictor = make_predictor(bundle, args.backend, args.threads)
    view = StatusView(args.status, interval=args.status_interval)
    opened: list = []
    live_view = None
    try:
        if getattr(args, "serve", None):
            from cvexport.stream.live_view import LiveView

            live_view = LiveView.bind(*args.serve)  # a port in use: an error before any source opens

        def open_one(item):
            position, spec = item
            events = SourceEvents(log=view.log)
            src = StreamSource(spec, open_reader(spec, read_options, events), events, SourceStats(spec.name),
                               live=spec.live)
            opened.append(src)
            return position, src

        def skip_source(item, exc):
            position, spec = item
            skipped.append((position, skipped_entry(spec.text, exc, spec)))

        # Opened last, after the model is loaded: a live source starts delivering at once.
        try:
            kept = _gather(list(zip(positions, specs)), open_one, policy, len(args.sources), stderr_warning,
                           skip_source)
        except BaseException:
            for src in opened:  # the ones opened before another failed
                src.reader.close()
            raise
        sources = [src for _, src in kept]
        try:
            out.mkdir(parents=True, exist_ok=True)
            # Checked again now that the model is loaded and the sources open: time has passed.
            remove_outputs(check_outputs(out, output_names, inputs, force=args.force))
            options = PipelineOptions(realtime=args.realtime, frames=args.frames, duration=args.duration,
                                      stride=args.stride, video=args.video, preprocess=args.preprocess,
                                      on_source_error=policy,
                                      track_lost_seconds=args.track_lost_seconds if args.track else None,
                                      counting=counting)
            pipeline = Pipeline(predictor, sources, out, options, view.log)
            if live_view is not None:
                live_view.start(sources)
                pipeline.live_view = live_view
                view.log(f"live view: {live_view.url}")
            order = [position for position, _ in kept]
            return _run_pipeline(pipeline, view, args, predictor, out, write_text_atomic, order, skipped)
        finally:
            for src in sources:
                if not src.threads:  # never started; a started decoder closes its own reader
                    src.reader.close()
    finally:
        if live_view is not None:
            live_view.close()  # the stream has ended: so has its live view
        view.close()
        close = getattr(predictor, "__exit__", None)
        if close is not None:
            close(None, None, None)


def _is_size(text: str) -> bool:
    parts = text.lower().split("x")
    return len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts)


def _counting_options(args):
    """--line / --zone parsed (one line naming the option for text that is not a shape)."""
    from cvexport.counting import parse_line, parse_zone
    from cvexport.stream.source_counts import CountingOptions

    return CountingOptions(lines=tuple(parse_line(text) for text in args.line),
                           zones=tuple(parse_zone(text) for text in args.zone),
                           min_frames=args.count_frames, margin=args.count_margin)


def _summary_head(args, predictor) -> dict:
    from cvexport.cpu import describe_cpu

    bundle = predictor.bundle
    return {
        "format": SUMMARY_FORMAT,
        "bundle": str(args.bundle), "model": bundle.manifest.model, "task": bundle.task,
        # What the class ids in the JSONL records name (segmentation's class_pixel_fraction is
        # keyed by id), as 'cvexport run' writes them into predictions.json.
        "class_names": list(bundle.class_names),
        "precision": bundle.precision, "backend": args.backend,
        "backend_choice": getattr(args, "backend_choice", None), "threads": args.threads,
        "max_batch": bundle.max_batch, "preprocess": args.preprocess, "realtime": args.realtime,
        "stride": args.stride, "track": args.track,
        "track_lost_seconds": args.track_lost_seconds if args.track else None,
        "lines": list(args.line), "zones": list(args.zone),
        "count_frames": args.count_frames, "count_margin": args.count_margin, "cpu": describe_cpu(),
    }


def _in_order(order: list[int], entries: list[dict], skipped: list[tuple[int, dict]]) -> list[dict]:
    """Source entries in the order of the SOURCE arguments, skipped ones included."""
    return [entry for _, entry in sorted([*zip(order, entries), *skipped], key=lambda pair: pair[0])]


def _run_pipeline(pipeline, view, args, predictor, out: Path, write_text_atomic, order: list[int],
                  skipped: list[tuple[int, dict]]) -> int:
    signals_seen: list[str] = []

    def on_signal(name: str) -> None:
        signals_seen.append(name)
        if len(signals_seen) == 1:
            view.log(f"{name}: draining the pipeline and closing the outputs (send it again to stop at once)")
            pipeline.stop(name)
        else:
            pipeline.abort.set()

    head = _summary_head(args, predictor)
    # Written before the first output: a run killed with SIGKILL leaves a summary that names its
    # outputs (so the next run into --out knows them as ours) and says it did not finish.
    started = {**head, "finished_at": None, "stopped_by": None,
               "sources": _in_order(order, pipeline.planned_entries(), skipped)}
    write_text_atomic(out / SUMMARY, json.dumps(started, indent=2) + "\n")
    previous = install_stop_signals(on_signal)
    view.attach(pipeline.sources)
    error: BaseException | None = None
    try:
        pipeline.run(tick=view.tick)
    except BaseException as exc:  # summary.json is still written, then the error goes on
        error = exc
    finally:
        restore_signals(previous)
        view.close()
    result = pipeline.summary()
    result["sources"] = _in_order(order, result["sources"], skipped)
    summary = {**head, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **result}
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    for entry in summary["sources"]:
        print(_final_line(entry, out), flush=True)
    print(f"wrote {out / SUMMARY}", flush=True)
    if error is not None:
        raise error
    stopped_by = summary["stopped_by"]
    if stopped_by in SIGNAL_EXIT:
        print(f"cvexport: stopped by {stopped_by}; every output was closed", file=sys.stderr, flush=True)
        return SIGNAL_EXIT[stopped_by]
    return 0


def _final_line(entry: dict, out: Path) -> str:
    e2e = entry["latency_ms"]["end_to_end"]
    latency = "" if not e2e["count"] else f"; end-to-end p50 {e2e['p50']:.1f} ms, p95 {e2e['p95']:.1f} ms"
    fps = "" if entry["fps_out"] is None else f", {entry['fps_out']:.1f} fps"
    files = ", ".join(str(out / name) for name in (entry["jsonl"], entry["video"]) if name)
    state = "" if entry["status"] in ("ended", "stopped") else f" [{entry['status']}: {entry['error']}]"
    return (f"{entry['name'] or entry['source']}: {entry['frames_processed']} of {entry['frames_in']} frames "
            f"processed ({entry['frames_dropped']} dropped, {entry['frames_corrupt_skipped']} corrupt, "
            f"{entry['reconnects']} reconnects){fps}{latency}{' -> ' + files if files else ''}{state}")
