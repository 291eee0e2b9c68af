"""The build's phases pass their objects along: one torch model per build (the export's, which
the gates then use as their fp32 reference) and one onnx.checker pass per graph."""

from __future__ import annotations

import json

import onnx

from cvexport.build import BuildOptions, build
from cvexport.registry import ModelSpec


def test_a_build_loads_its_weights_once_and_checks_each_graph_once(tmp_path, monkeypatch):
    loads, checked = [], []
    load_model, check_model = ModelSpec.load_model, onnx.checker.check_model

    def counting_load(self, weights=None):
        loads.append(weights)
        return load_model(self, weights)

    def counting_check(model, *args, **kwargs):
        checked.append(model.graph.output[-1].name if isinstance(model, onnx.ModelProto) else model)
        return check_model(model, *args, **kwargs)

    monkeypatch.setattr(ModelSpec, "load_model", counting_load)
    monkeypatch.setattr(onnx.checker, "check_model", counting_check)
    lines = []
    out = build(BuildOptions(model="classifier", out=str(tmp_path / "b"), max_batch=4, verify_images=4, engine="ort"),
                log=lines.append)

    report = json.loads((out / "parity.json").read_text())
    # Both gates ran against a torch reference: the parity pass and verify's rows.
    assert report["graphs"]["model.onnx"]["1"]["passed"]
    assert [row["backend"] for row in report["verify"]] == ["torch", "ort"]
    assert len(loads) == 1, loads
    # The network alone when exported (ends in logits), then the bundle's graph (ends in probabilities) once.
    assert checked == ["logits", "probabilities"], checked
