"""``cvexport verify`` (cvexport/verify.py): metric and parity rows, a failing backend, the
JSON report and the one-line errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import cvexport.bench as bench
import cvexport.runtime as runtime
from cvexport.bundle import Bundle
from cvexport.cli import main
from cvexport.detection import TOLERANCES
from cvexport.errors import CvexportError
from cvexport.verify import tolerance_for, verify_bundle, verify_rows
from cli_helpers import one_line_stderr


@pytest.fixture(scope="module")
def report(bundle):
    return verify_bundle(bundle, ["ort"], val_images=32, warn=lambda line: None)



def test_ort_row_passes_and_matches_torch(report):
    torch_row, ort_row = report["rows"]
    assert torch_row["backend"] == "torch" and torch_row["reference"] and torch_row["passed"]
    assert ort_row["backend"] == "ort" and not ort_row["reference"]
    assert ort_row["passed"] and ort_row["parity_passed"] and ort_row["metric_passed"] and ort_row["reasons"] == []
    assert ort_row["map50"] == pytest.approx(torch_row["map50"], abs=0.005)
    assert ort_row["map"] == pytest.approx(torch_row["map"], abs=0.005)
    assert ort_row["parity"]["match_fraction"] == 1.0 and ort_row["parity"]["images"] == 32
    assert "detections matched" in ort_row["parity_summary"]
    assert report["passed"]


def test_report_says_which_threshold_and_tolerance(report):
    assert report["score_threshold"] == 0.25 and report["val_images"] == 32 and report["split"] == "val"
    assert report["tolerance"]["precision"] == "fp32"
    assert report["tolerance"]["min_iou"] == TOLERANCES["fp32"].min_iou
    assert any("0.25" in note and "0.01" in note for note in report["notes"])


def test_verify_rows_is_the_table_build_can_record(bundle):
    rows = verify_rows(bundle, ["ort"], val_images=4)
    assert [row["backend"] for row in rows] == ["torch", "ort"]
    json.dumps(rows)  # JSON-able as it is, for parity.json


class DroppingRunner:
    """Wraps a real runner and loses the second half of every image's detections."""

    def __init__(self, runner):
        self.runner = runner

    def infer(self, feed):
        out = {k: np.array(v) for k, v in self.runner.infer(feed).items()}
        n = out["num_detections"].reshape(-1)
        kept = n // 2
        for i, k in enumerate(kept):
            out["detection_boxes"][i, k:] = 0
            out["detection_scores"][i, k:] = 0
            out["detection_classes"][i, k:] = 0
        out["num_detections"] = kept.reshape(out["num_detections"].shape).astype(out["num_detections"].dtype)
        return out

    def close(self):
        self.runner.close()


def test_broken_backend_fails_with_exit_1(bundle, monkeypatch, tmp_path, capsys):
    real = runtime.create_runner

    def create(b, backend, threads=None):
        runner = real(b, backend, threads)
        return DroppingRunner(runner) if backend == "ort" else runner

    monkeypatch.setattr(runtime, "create_runner", create)
    out = tmp_path / "verify.json"
    assert main(["verify", str(bundle.path), "--val-images", "16", "--json", str(out)]) == 1
    stdout = capsys.readouterr().out
    assert "FAIL ort: " in stdout and "parity" in stdout
    written = json.loads(out.read_text())
    assert not written["passed"] and not written["rows"][1]["passed"] and written["rows"][0]["passed"]
    assert written["rows"][1]["parity"]["match_fraction"] < 1.0


class AddingRunner(DroppingRunner):
    """Wraps a real runner and adds one detection scoring ``score`` to the first image, in a corner."""

    def __init__(self, runner, score):
        super().__init__(runner)
        self.score = score

    def infer(self, feed):
        out = {k: np.array(v) for k, v in self.runner.infer(feed).items()}
        n = int(out["num_detections"][0, 0])
        out["detection_boxes"][0, n] = [0.0, 0.0, 0.01, 0.01]
        out["detection_scores"][0, n] = self.score
        out["num_detections"][0, 0] = n + 1
        return out


@pytest.mark.parametrize("above, passes", [(5e-5, True), (0.5, False)])
def test_verify_sets_aside_a_flip_at_the_bundles_score_threshold(bundle, monkeypatch, above, passes):
    """A detection within fp32's rounding of the bundle's threshold (0.25) that only the backend
    gives may have crossed it by rounding: a boundary flip. A confident one is a mismatch."""
    real = runtime.create_runner

    def create(b, backend, threads=None):
        runner = real(b, backend, threads)
        return AddingRunner(runner, 0.25 + above) if backend == "ort" else runner

    monkeypatch.setattr(runtime, "create_runner", create)
    row = verify_rows(bundle, ["ort"], val_images=8)[1]
    assert row["parity"]["score_threshold"] == bundle.manifest.postprocess.score_threshold == 0.25
    assert row["parity"]["boundary_flips"] == (1 if passes else 0)
    assert row["parity_passed"] is passes, row["parity_summary"]


def test_cli_writes_json_and_exits_0(bundle, tmp_path, capsys):
    out = tmp_path / "sub" / "verify.json"
    assert main(["verify", str(bundle.path), "--backend", "torch,ort", "--val-images", "8", "--json", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "PASS" in stdout and "score threshold 0.25" in stdout
    written = json.loads(out.read_text())
    assert written["passed"] and [r["backend"] for r in written["rows"]] == ["torch", "ort"]
    assert written["max_drop"] == 1.0 and [m["key"] for m in written["metrics"]] == ["map50", "map"]


def test_precision_without_a_tolerance_borrows_fp16s(bundle):
    import cvexport.detection as detection

    tolerance, note = tolerance_for(detection, "bf16")
    assert tolerance == TOLERANCES["fp16"] and "bf16" in note and "fp16" in note
    assert tolerance_for(detection, "fp32") == (TOLERANCES["fp32"], None)
    assert tolerance_for(detection, "int8") == (TOLERANCES["int8"], None)
    other = Bundle(path=bundle.path, manifest=dataclasses.replace(bundle.manifest, precision="bf16"))
    report = verify_bundle(other, ["ort"], val_images=4)
    assert report["tolerance"]["precision"] == "fp16"
    assert any("no parity tolerance is defined for bf16" in note for note in report["notes"])


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--backend", "tensorflow"], "unknown backend 'tensorflow'"),
        (["--max-drop", "-1"], "--max-drop -1"),
        (["--max-map-drop", "nan"], "--max-drop nan"),
    ],
)
def test_bad_input_is_a_one_line_error(bundle, capsys, args, needle):
    assert main(["verify", str(bundle.path), "--val-images", "1", *args]) == 2
    assert needle in one_line_stderr(capsys)


def test_missing_bundle_is_a_one_line_error(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "bundle not found" in one_line_stderr(capsys)


def test_unusable_backend_alone_is_a_one_line_error(bundle, monkeypatch, capsys):
    real = runtime.create_runner

    def create(b, backend, threads=None):
        if backend == "trt":
            raise CvexportError("TensorRT is not installed; pip install tensorrt")
        return real(b, backend, threads)

    monkeypatch.setattr(runtime, "create_runner", create)
    assert main(["verify", str(bundle.path), "--backend", "trt", "--val-images", "1"]) == 2
    assert "TensorRT is not installed" in one_line_stderr(capsys)


def test_zero_val_images_is_refused(bundle):
    with pytest.raises(CvexportError, match="--val-images 0"):
        verify_rows(bundle, ["ort"], val_images=0)
