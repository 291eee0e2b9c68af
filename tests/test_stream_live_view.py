"""``cvexport stream --serve``: the live view's page, /status.json, /metrics and MJPEG video,
against a real stream (a 320x240 synthetic clip, paced with --realtime) in a child process,
plus a headless Chromium loading the page when /usr/bin/chromium is there.

Numbers that move while the stream runs (frames processed, dropped) are checked to lie between
two /status.json readings taken before and after, never against a fixed figure.
"""

from __future__ import annotations

import http.client
import io
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from stream_helpers import PARSER_CODE, REPO, make_parser, read_jsonl, stream, stream_cli

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def ssd(build_bundle):
    return build_bundle(model="ssd", precision="fp32")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from cvexport.stream.synthetic import write_video

    path = tmp_path_factory.mktemp("live_view") / "clip.mp4"
    write_video(path, 320, 240, 90)  # 3 s at 30 fps: moving shapes, so frames differ
    return path


class Served:
    """``cvexport stream ... --serve`` in a child process; ``url`` once it serves."""

    def __init__(self, *argv, timeout: float = 60):
        self.process = subprocess.Popen([sys.executable, "-c", PARSER_CODE, "stream", *map(str, argv),
                                         "--status", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, cwd=REPO)
        self.lines: queue.Queue = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, f"stream ended before serving: {''.join(self.stderr)}"
            if "live view: " in line:
                self.url = line.split("live view: ", 1)[1].strip()
                break
        self.host, port = self.url.removeprefix("http://").rstrip("/").rsplit(":", 1)
        self.port = int(port)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        """(status, body) of GET ``path``, sent as it is (no normalising of ``..``)."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def status(self) -> list[dict]:
        code, body = self.get("/status.json")
        assert code == 200
        return json.loads(body)["sources"]

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self.stdout = self.process.stdout.read()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def served(ssd, clip, tmp_path_factory):
    """The clip looped in real time with the mp4 written: runs through the module's tests, the
    last of which stops it with SIGINT."""
    out = tmp_path_factory.mktemp("served")
    run = Served(ssd.path, clip, "--out", out, "--serve", "0", "--realtime", "--loop", "--backend", "ort")
    run.out = out
    yield run
    run.kill()


def read_mjpeg_parts(served: Served, count: int, index: int = 0) -> list[bytes]:
    """The first ``count`` JPEGs of /video/<index>.mjpg, read part by part as a browser does."""
    connection = http.client.HTTPConnection(served.host, served.port, timeout=10)
    try:
        connection.request("GET", f"/video/{index}.mjpg")
        response = connection.getresponse()
        assert response.status == 200
        kind, _, boundary = response.getheader("Content-Type").partition("; boundary=")
        assert kind == "multipart/x-mixed-replace" and boundary
        parts = []
        while len(parts) < count:
            assert response.fp.readline().strip() == f"--{boundary}".encode()
            headers = {}
            while (line := response.fp.readline().strip()):
                name, _, value = line.decode().partition(":")
                headers[name.lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            parts.append(response.fp.read(int(headers["content-length"])))
            assert response.fp.readline() == b"\r\n"
        return parts
    finally:
        connection.close()


def _decode_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------- without a stream
def test_serve_values_parse_and_default_to_loopback():
    from cvexport.stream.live_view import parse_serve

    assert parse_serve("8080") == ("127.0.0.1", 8080)
    assert parse_serve("0") == ("127.0.0.1", 0)
    assert parse_serve("0.0.0.0:9000") == ("0.0.0.0", 9000)
    assert parse_serve("[::1]:80") == ("::1", 80)
    parser = make_parser()
    for bad in ("http", "70000", ":80", "-1", "host:"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["stream", "b", "s", "--out", "o", "--serve", bad])
        assert exc.value.code == 2


def _fake_source(name: str, counts: dict | None = None):
    from cvexport.stream.sources import SourceEvents
    from cvexport.stream.stats import SourceStats

    src = SimpleNamespace(spec=SimpleNamespace(name=name), stats=SourceStats(name),
                          events=SourceEvents(log=lambda line: None), status="running",
                          reader=SimpleNamespace(fps=30.0))
    src.stats.add_frame({"end_to_end": 0.040, "inference": 0.010}, time.perf_counter())
    if counts is not None:  # what a --line / --zone source's SourceCounts shows
        src.counting = SimpleNamespace(status=lambda: counts)
    return src


def test_status_json_metrics_and_page_come_from_source_status():
    """One function makes every figure: the terminal rows, /status.json (as is), /metrics; a
    source's counts (its SourceCounts' status) pass through untouched."""
    from prometheus_client.parser import text_string_to_metric_families

    from cvexport.stream.live_view import LiveView
    from cvexport.stream.status import StatusView, source_status

    counted = _fake_source("cam", counts={"door": {"in": 3, "out": 1}})
    plain = _fake_source("file")
    view = LiveView.bind("127.0.0.1", 0)
    try:
        view.start([counted, plain])
        host, port = view.server.server_address[:2]
        assert host == "127.0.0.1"
        client = Served.__new__(Served)
        client.host, client.port = host, port
        sources = client.status()
        rows = StatusView("none")
        rows.sources = [counted, plain]
        terminal = rows._rows()
        for index, (entry, row, src) in enumerate(zip(sources, terminal, (counted, plain))):
            assert entry.pop("index") == index and entry.pop("video") == f"/video/{index}.mjpg"
            assert set(entry) == set(row) == set(source_status(src))
            assert entry["e2e_p50_ms"] == pytest.approx(40, rel=0.01) and entry["processed"] == 1
        assert sources[0]["counts"] == {"door": {"in": 3, "out": 1}} and "counts" not in sources[1]
        code, body = client.get("/metrics")
        assert code == 200
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(body.decode()) for s in family.samples}
        assert samples[("cvexport_stream_frames_processed_total", (("source", "cam"),))] == 1
        assert samples[("cvexport_stream_latency_end_to_end_p50_seconds", (("source", "cam"),))] == \
            pytest.approx(0.040, rel=0.01)
        assert samples[("cvexport_stream_count", (("name", "door.in"), ("source", "cam")))] == 3
        code, page = client.get("/")
        assert code == 200 and page.count(b'data-src="/video/') == 2
        assert client.get("/video/2.mjpg")[0] == 404  # only two sources
    finally:
        view.close()


# ---------------------------------------------------------------------- a running stream
def test_serves_on_loopback_and_status_moves(served):
    assert served.url.startswith("http://127.0.0.1:") and served.port > 0
    first = served.status()
    time.sleep(1.0)
    second = served.status()
    assert [s["name"] for s in second] == ["clip"] and second[0]["state"] == "running"
    assert second[0]["processed"] > first[0]["processed"]
    assert 10 < second[0]["fps_in"] < 50  # paced at the clip's 30 fps
    assert second[0]["e2e_p50_ms"] > 0


def test_metrics_parse_as_prometheus_text(served):
    from prometheus_client.parser import text_string_to_metric_families

    before = served.status()[0]
    code, body = served.get("/metrics")
    after = served.status()[0]
    assert code == 200
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    processed = families["cvexport_stream_frames_processed"]
    assert processed.type == "counter"
    (sample,) = processed.samples
    assert sample.name == "cvexport_stream_frames_processed_total" and sample.labels == {"source": "clip"}
    assert before["processed"] <= sample.value <= after["processed"]
    assert families["cvexport_stream_reconnects"].samples[0].value == 0
    assert families["cvexport_stream_fps_out"].type == "gauge"


def test_mjpeg_sends_newer_frames(served):
    first, second = (_decode_jpeg(part) for part in read_mjpeg_parts(served, 2))
    assert first.shape == second.shape == (240, 320, 3)
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 0.5  # the shapes moved


@pytest.mark.parametrize("path", ["/../etc/passwd", "/status.json/../x", "/status.json/", "/etc/passwd",
                                  "/video/0.mjpg/../../x", "/video/00.mjpg", "/video/1.mjpg", "/video/",
                                  "/index.html", "/metrics/x", "/%2e%2e/%2e%2e/etc/passwd"])
def test_unknown_paths_are_404(served, path):
    code, body = served.get(path)
    assert code == 404 and b"root:" not in body


def _video_band(shot: np.ndarray, column: int) -> tuple[int, int]:
    """Rows of the video in a screenshot of the page: the first run of 150+ rows in ``column``
    whose pixels are neither the page's nor the panel's background."""
    backgrounds = (np.array([17, 17, 17]), np.array([34, 34, 34]))
    foreign = np.all([np.abs(shot[:, column, :3].astype(int) - bg).sum(axis=1) > 6 for bg in backgrounds], axis=0)
    start = run = 0
    for row, value in enumerate(foreign):
        run = run + 1 if value else 0
        if run == 1:
            start = row
        if run >= 150:
            return start, start + 150
    raise AssertionError("no video in the screenshot")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no headless browser: {CHROMIUM} is not installed")
def test_browser_shows_moving_video_and_the_status_figures(served, tmp_path):
    from PIL import Image

    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=800,600",
             # Let the page's scripts run (videos start after load, figures after a poll) before
             # the screenshot or the DOM is taken; the MJPEG itself never ends.
             "--virtual-time-budget=2000"]

    def chromium(*extra) -> subprocess.CompletedProcess:
        return subprocess.run([*flags, *extra, served.url], capture_output=True, timeout=30)

    shots = []
    for index in range(2):
        if index:
            time.sleep(1.0)
        png = tmp_path / f"shot{index}.png"
        result = chromium(f"--screenshot={png}")
        assert png.exists(), result.stderr.decode(errors="replace")[-2000:]
        shots.append(np.asarray(Image.open(png).convert("RGB")))
    top, bottom = _video_band(shots[0], column=200)
    areas = [shot[top:bottom, 40:330].astype(int) for shot in shots]
    assert np.abs(areas[0] - areas[1]).mean() > 0.5, "the video did not move between the screenshots"

    before = served.status()[0]
    dom = chromium("--dump-dom").stdout.decode()
    after = served.status()[0]
    cells = dict(re.findall(r'<td data-field="(\w+)"[^>]*>([^<]*)</td>', dom))
    assert re.search(r'<h2 data-field="name">clip</h2>', dom)
    assert cells["state"] == "running"
    for field in ("processed", "dropped"):
        assert before[field] <= int(cells[field]) <= after[field], (field, cells[field], before, after)
    for field in ("corrupt", "reconnects"):
        assert int(cells[field]) == before[field] == after[field] == 0
    for field in ("fps_in", "e2e_p50_ms", "e2e_p95_ms"):
        assert float(cells[field]) > 0
    assert cells["counts"] == "-"  # no counting in this run


def test_sigint_stops_the_stream_and_its_server(served):
    served.process.send_signal(signal.SIGINT)
    assert served.wait(timeout=30) == 130
    stderr = "".join(served.stderr)
    assert "Traceback" not in stderr
    summary = json.loads((served.out / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGINT" and summary["sources"][0]["frames_processed"] > 30
    with pytest.raises(OSError):
        socket.create_connection((served.host, served.port), timeout=2).close()


# ---------------------------------------------------------------------- separate runs
def test_port_in_use_is_one_line(ssd, clip, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = stream_cli(ssd.path, clip, "--out", tmp_path / "out", "--serve", port, "--backend", "ort",
                            timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cvexport: error: --serve 127.0.0.1:{port}: cannot listen")


def _viewer(served: Served, stop: threading.Event, seed: int, got: list) -> None:
    """Connects and leaves again and again: after a part or two, after a few bytes, or at once;
    each whole JPEG read is noted in ``got``. Failures are the server closing as the stream ends."""
    rng = np.random.default_rng(seed)
    while not stop.is_set() and served.process.poll() is None:
        try:
            how = rng.integers(3)
            if how == 0:
                got.extend(len(part) for part in read_mjpeg_parts(served, int(rng.integers(1, 3))))
            elif how == 1:
                with socket.create_connection((served.host, served.port), timeout=5) as s:
                    s.sendall(b"GET /video/0.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
                    s.recv(100)
            else:
                socket.create_connection((served.host, served.port), timeout=5).close()
        except (OSError, http.client.HTTPException, AssertionError, KeyError):
            time.sleep(0.05)


def test_viewers_coming_and_going_change_no_result(ssd, clip, tmp_path):
    """The same frames give the same detections with viewers as without a server; --no-video,
    so the pictures are drawn for the viewers alone."""
    assert stream(ssd.path, clip, "--out", tmp_path / "alone", "--no-video", "--backend", "ort") == 0
    alone = {line["frame"]: line["detections"] for line in read_jsonl(tmp_path / "alone" / "clip.jsonl")}
    assert len(alone) == 90
    run = Served(ssd.path, clip, "--out", tmp_path / "watched", "--serve", "0", "--realtime", "--no-video",
                 "--backend", "ort")
    stop, got = threading.Event(), []
    viewers = [threading.Thread(target=_viewer, args=(run, stop, seed, got), daemon=True) for seed in range(6)]
    try:
        for viewer in viewers:
            viewer.start()
        code = run.wait(timeout=60)
    finally:
        stop.set()
        run.kill()
    for viewer in viewers:
        viewer.join(timeout=10)
    assert code == 0, (code, "".join(run.stderr))
    assert len(got) >= 5 and min(got) > 1000  # the viewers did see the video
    watched = read_jsonl(tmp_path / "watched" / "clip.jsonl")
    assert len(watched) >= 45  # --realtime may drop some on 2 busy cores
    for line in watched:
        assert line["detections"] == alone[line["frame"]], line["frame"]
    assert "Traceback" not in "".join(run.stderr)



def test_first_rate_reading_covers_the_run_so_far():
    """A first /status.json poll gives the rates since the first frame, not over no time at all."""
    from cvexport.stream.stats import SourceStats

    stats = SourceStats("x")
    for i in range(30):
        stats.count_decoded(100.0 + i / 30)
    for _ in range(15):
        stats.add_frame({"end_to_end": 0.01}, 101.0)
    fps_in, fps_out = stats.rates(now=101.0)
    assert fps_in == pytest.approx(30) and fps_out == pytest.approx(15)
