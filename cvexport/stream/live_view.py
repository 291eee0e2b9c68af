"""``cvexport stream --serve [HOST:]PORT``: the stream's live view in a browser.

Paths served, and nothing else (no files, no directory listing; anything else is a 404):

* ``/``: a small page with every source's annotated video and its figures, which it polls from
  ``/status.json`` twice a second;
* ``/status.json``: ``{"sources": [...]}``, each source's
  :func:`cvexport.stream.status.source_status` (the terminal status shows the same figures)
  plus its ``index`` and ``video`` path;
* ``/metrics``: the same figures in Prometheus' text format (``prometheus_client``);
* ``/video/<index>.mjpg``: the source's annotated video as MJPEG (``multipart/x-mixed-replace``),
  which every browser shows in an ``<img>``.

The server is the standard library's :class:`http.server.ThreadingHTTPServer` with daemon
threads: no new dependency, one thread per viewer is what MJPEG needs, and a viewer left hanging
never keeps the process alive.

The pipeline is never slowed by a viewer. The sink thread hands over its newest annotated
picture (:meth:`LiveView.offer`: a reference kept, no copy, no encoding, nothing that blocks)
and only while a viewer watches that source (:meth:`LiveView.watched`); pictures nobody fetched
in time are replaced by newer ones. The JPEG is made in the viewers' threads, once per picture
whatever the number of viewers, and each viewer takes the newest picture when it is ready for
one, at most at the source's frame rate: a slow viewer skips pictures, a fast one waits.
"""

from __future__ import annotations

import argparse
import http.server
import io
import json
import re
import threading
import time
from typing import Any

from cvexport.errors import CvexportError

DEFAULT_HOST = "127.0.0.1"  # only this machine, unless --serve names a host
JPEG_QUALITY = 80
MAX_VIEW_FPS = 30.0  # pictures per second sent to a viewer when the source's rate is unknown
VIEWER_TIMEOUT_S = 10.0  # a viewer that takes no data this long is dropped
WAIT_S = 0.25  # viewer threads look at the stop flag this often while they wait for a picture
BOUNDARY = "cvexportframe"
_VIDEO_PATH = re.compile(r"^/video/(0|[1-9][0-9]{0,5})\.mjpg$")  # one spelling per source


def parse_serve(text: str) -> tuple[str, int]:
    """``--serve`` value ``[HOST:]PORT`` -> (host, port); host 127.0.0.1 when not given, port 0
    lets the system choose. An argparse type: a bad value is one line, exit 2."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]") if sep else DEFAULT_HOST  # [::1]:8080
    if not port_text.isdigit() or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(f"'{text}' is not [HOST:]PORT with a port from 0 to 65535, e.g. 8080 "
                                         "or 0.0.0.0:8080")
    if sep and not host:
        raise argparse.ArgumentTypeError(f"'{text}' names no host before the ':'")
    return host, int(port_text)


def encode_jpeg(picture, fmt: str) -> bytes:
    """A picture as the sink drew it -> JPEG bytes. ``fmt``: "yuv420p" (planes of
    :mod:`cvexport.yuv420`, converted by FFmpeg's scaler) or "rgb24" (an RGB array or PIL image)."""
    from PIL import Image

    if fmt == "yuv420p":
        import av

        picture = av.VideoFrame.from_ndarray(picture, format="yuv420p").to_ndarray(format="rgb24")
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


class _Slot:
    """One source's newest picture, its JPEG once made, and how many viewers watch it."""

    def __init__(self, src):
        self.src = src
        self.cond = threading.Condition()
        self.viewers = 0
        self.picture: tuple[Any, str] | None = None
        self.seq = 0  # pictures offered so far
        self.offered_at = 0.0
        fps = getattr(src.reader, "fps", None) or MAX_VIEW_FPS
        self.min_interval = 1.0 / min(float(fps), MAX_VIEW_FPS)
        self.encode_lock = threading.Lock()
        self.jpeg: tuple[int, bytes] | None = None  # (seq, JPEG) of the latest picture encoded

    def jpeg_for(self, seq: int, picture: tuple[Any, str]) -> bytes:
        """The JPEG of picture ``seq``, encoded by the first viewer that asks for it."""
        with self.encode_lock:
            if self.jpeg is None or self.jpeg[0] != seq:
                self.jpeg = (seq, encode_jpeg(*picture))
            return self.jpeg[1]


class LiveView:
    """The live view's server: :meth:`bind` (before the work starts, so a port in use is an
    error at once), :meth:`start` with the pipeline's sources, :meth:`offer` from the sink
    threads, :meth:`close` when the stream has ended."""

    def __init__(self, server: http.server.ThreadingHTTPServer):
        self.server = server
        self.slots: list[_Slot] = []
        self.by_source: dict[int, _Slot] = {}
        self.closed = threading.Event()
        self.thread: threading.Thread | None = None

    @classmethod
    def bind(cls, host: str, port: int) -> LiveView:
        handler = type("Handler", (_Handler,), {})
        try:
            server = _Server((host, port), handler)
        except OSError as exc:
            raise CvexportError(f"--serve {host}:{port}: cannot listen there ({exc.strerror or exc})") from None
        view = cls(server)
        handler.view = view
        return view

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self, sources: list) -> None:
        """Serve ``sources`` (StreamSource objects, in the order of their /video/<index>.mjpg)."""
        self.slots = [_Slot(src) for src in sources]
        self.by_source = {id(slot.src): slot for slot in self.slots}
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": WAIT_S},
                                       name="live-view", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------ from the sink threads
    def watched(self, src) -> bool:
        """Whether a viewer wants a new picture of ``src`` now: someone watches it and the last
        picture is at least a frame interval old (so a picture drawn only for the viewers is
        drawn at most at the source's rate)."""
        slot = self.by_source.get(id(src))
        return slot is not None and slot.viewers > 0 and \
            time.perf_counter() - slot.offered_at >= slot.min_interval * 0.9

    def offer(self, src, picture, fmt: str) -> None:
        """The newest annotated picture of ``src`` ("yuv420p" planes or "rgb24"), kept by
        reference: the caller must not draw on it afterwards. Never blocks for long."""
        slot = self.by_source.get(id(src))
        if slot is None:
            return
        with slot.cond:
            slot.picture = (picture, fmt)
            slot.seq += 1
            slot.offered_at = time.perf_counter()
            slot.cond.notify_all()

    # ------------------------------------------------------------------ what the pages show
    def status(self) -> dict:
        from cvexport.stream.status import source_status

        now = time.perf_counter()
        return {"sources": [{"index": index, "video": f"/video/{index}.mjpg", **source_status(slot.src, now)}
                            for index, slot in enumerate(self.slots)]}

    def metrics(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry)

    # ------------------------------------------------------------------ end
    def close(self) -> None:
        """Stop serving: viewers' connections end, the port is free again."""
        if self.closed.is_set():
            return
        self.closed.set()
        for slot in self.slots:
            with slot.cond:
                slot.cond.notify_all()
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()


class _Collector:
    """The status figures as Prometheus metrics, read fresh at every scrape."""

    def __init__(self, view: LiveView):
        self.view = view

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        rows = self.view.status()["sources"]
        counters = {"frames_processed": ("processed", "frames processed"),
                    "frames_dropped": ("dropped", "frames dropped, a newer one having come first"),
                    "frames_corrupt": ("corrupt", "corrupt frames skipped"),
                    "reconnects": ("reconnects", "reconnections of a live source")}
        for name, (key, text) in counters.items():
            family = CounterMetricFamily(f"cvexport_stream_{name}", text, labels=["source"])
            for row in rows:
                family.add_metric([row["name"]], row[key])
            yield family
        gauges = {"fps_in": ("fps_in", "frames decoded per second, last ~2 s", 1.0),
                  "fps_out": ("fps_out", "frames processed per second, last ~2 s", 1.0),
                  "latency_end_to_end_p50_seconds": ("e2e_p50_ms", "end-to-end latency, median of the run", 1e-3),
                  "latency_end_to_end_p95_seconds": ("e2e_p95_ms", "end-to-end latency, 95th percentile", 1e-3)}
        for name, (key, text, scale) in gauges.items():
            family = GaugeMetricFamily(f"cvexport_stream_{name}", text, labels=["source"])
            for row in rows:
                if row[key] is not None:
                    family.add_metric([row["name"]], row[key] * scale)
            yield family
        up = GaugeMetricFamily("cvexport_stream_source_up", "1 while the source delivers frames", labels=["source"])
        for row in rows:
            up.add_metric([row["name"]], 1.0 if row["state"] in ("running", "live", "connected") else 0.0)
        yield up
        counts = GaugeMetricFamily("cvexport_stream_count", "counting totals (line / zone), as the status shows",
                                   labels=["source", "name"])
        for row in rows:
            for name, value in _numbers(row.get("counts") or {}):
                counts.add_metric([row["name"], name], value)
        yield counts


def _numbers(tree: dict, prefix: str = ""):
    """(dotted name, number) for each number in a nested dict of counts."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _numbers(value, name + ".")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield name, float(value)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a viewer's thread never keeps the process alive

    def handle_error(self, request, client_address):
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # a viewer left: nothing to report
        super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    view: LiveView  # set on the subclass LiveView.bind makes
    timeout = VIEWER_TIMEOUT_S
    server_version = "cvexport-live-view"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # the terminal shows the stream's status, not every request

    def do_GET(self):  # noqa: N802 - the base class's name
        path = self.path.split("?", 1)[0]
        try:
            if path == "/":
                self._send(200, "text/html; charset=utf-8", _page(len(self.view.slots)).encode("utf-8"))
            elif path == "/status.json":
                self._send(200, "application/json", json.dumps(self.view.status()).encode("utf-8"))
            elif path == "/metrics":
                self._metrics()
            elif (match := _VIDEO_PATH.match(path)) and int(match.group(1)) < len(self.view.slots):
                self._stream(self.view.slots[int(match.group(1))])
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the viewer left

    def _metrics(self) -> None:
        try:
            from prometheus_client import CONTENT_TYPE_LATEST
        except ImportError:  # an optional dependency: the rest of the live view works without it
            self._send(503, "text/plain; charset=utf-8", b"/metrics needs prometheus_client: "
                       b"pip install prometheus_client\n")
            return
        self._send(200, CONTENT_TYPE_LATEST, self.view.metrics())

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, slot: _Slot) -> None:
        """MJPEG until the viewer leaves or the server closes: the newest picture each time."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        closed = self.view.closed
        with slot.cond:
            slot.viewers += 1
        try:
            sent = 0
            while not closed.is_set():
                with slot.cond:
                    while slot.seq == sent and not closed.is_set():
                        slot.cond.wait(WAIT_S)
                    seq, picture = slot.seq, slot.picture
                if closed.is_set() or picture is None:
                    break
                jpeg = slot.jpeg_for(seq, picture)
                began = time.perf_counter()
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                 .encode("ascii") + jpeg + b"\r\n")
                self.wfile.flush()
                sent = seq
                rest = slot.min_interval - (time.perf_counter() - began)
                if rest > 0:
                    closed.wait(rest)
        finally:
            with slot.cond:
                slot.viewers -= 1


def _page(count: int) -> str:
    """The page: one panel per source (video and figures); the figures come from /status.json."""
    panels = "\n".join(
        f'<section class="source" id="source-{i}"><h2 data-field="name">source {i}</h2>'
        f'<img class="video" alt="source {i} video" data-src="/video/{i}.mjpg">'
        f'<table class="figures"><tbody>{_ROWS}</tbody></table></section>' for i in range(count))
    return _PAGE.replace("{panels}", panels)


# (label, status key, decimals; None: as is) of each figure shown under a video.
_FIGURES = (("state", "state", None), ("fps in", "fps_in", 1), ("fps out", "fps_out", 1),
            ("end-to-end p50 ms", "e2e_p50_ms", 1), ("end-to-end p95 ms", "e2e_p95_ms", 1),
            ("processed", "processed", 0), ("dropped", "dropped", 0), ("corrupt", "corrupt", 0),
            ("reconnects", "reconnects", 0), ("counts", "counts", None))
_ROWS = "".join(f'<tr><th>{label}</th><td data-field="{key}" data-decimals="{"" if d is None else d}">-</td></tr>'
                for label, key, d in _FIGURES)

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cvexport stream: live view</title>
<style>
body { font-family: sans-serif; margin: 1em; background: #111; color: #eee; }
main { display: flex; flex-wrap: wrap; gap: 1em; }
.source { background: #222; padding: .5em; border-radius: 4px; }
.source h2 { margin: 0 0 .3em 0; font-size: 1.1em; }
.video { display: block; max-width: 640px; min-width: 320px; min-height: 180px; background: #000; }
.figures { width: 100%; }
.figures th { text-align: left; font-weight: normal; color: #aaa; padding-right: 1em; }
.figures td { text-align: right; font-variant-numeric: tabular-nums; white-space: pre-line; }
</style></head>
<body><h1>cvexport stream</h1><main>
{panels}
</main>
<script>
// The videos start after the page has loaded: an MJPEG <img> never finishes loading.
window.addEventListener("load", () => {
  for (const img of document.querySelectorAll("img.video")) img.src = img.dataset.src;
});
// Nested counts ({"line 0": {"in": {"car": 3}}}) as one "line 0 in car: 3" line per number.
function lines(tree, prefix) {
  let out = [];
  for (const [key, value] of Object.entries(tree)) {
    const name = prefix ? prefix + " " + key : key;
    if (value !== null && typeof value === "object") out = out.concat(lines(value, name));
    else out.push(name + ": " + value);
  }
  return out;
}
function show(cell, value) {
  const d = cell.dataset.decimals;
  if (value === null || value === undefined) cell.textContent = "-";
  else if (typeof value === "object") cell.textContent = lines(value, "").join("\\n") || "-";
  else if (d !== "" && typeof value === "number") cell.textContent = value.toFixed(Number(d));
  else cell.textContent = String(value);
}
async function poll() {
  try {
    const status = await (await fetch("/status.json", {cache: "no-store"})).json();
    for (const source of status.sources) {
      const panel = document.getElementById("source-" + source.index);
      if (!panel) continue;
      for (const cell of panel.querySelectorAll("[data-field]")) {
        if (cell.tagName === "H2") cell.textContent = source.name;
        else show(cell, source[cell.dataset.field]);
      }
    }
    document.body.dataset.updated = String(Date.now());
  } catch (e) { /* the stream has ended or the server is gone: keep the last figures */ }
}
poll();
setInterval(poll, 500);
</script></body></html>
"""
