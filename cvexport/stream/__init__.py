"""Real-time streams: ``cvexport stream BUNDLE SOURCE ... --out DIR``.

Video files, image folders, V4L2 cameras and network feeds go through one pipeline (one
decoding thread per source, one batching inference stage, one sink per source) and come out
as ``DIR/<name>.jsonl``, ``DIR/<name>.mp4`` and ``DIR/summary.json``.

Modules: :mod:`~cvexport.stream.sources` (what a SOURCE argument means, opening, decoding,
reconnecting), :mod:`~cvexport.stream.pipeline` (threads, queues, batching, dropping, signals),
:mod:`~cvexport.stream.sinks` (JSONL and mp4 writers), :mod:`~cvexport.stream.stats` (counters
and latency percentiles), :mod:`~cvexport.stream.status` (the live view),
:mod:`~cvexport.stream.command` (the CLI) and :mod:`~cvexport.stream.synthetic` (moving shapes
over a photograph, for tests, benchmarks and demos).

Nothing heavy is imported here: PyAV, rich and the runtime load when a stream starts.
"""
