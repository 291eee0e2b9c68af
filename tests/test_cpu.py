"""Instruction-set detection and the per-CPU choice of INT8 graph, on every path by forcing it."""

from __future__ import annotations

import pytest

from cvexport.cpu import FORCE_VARIABLE, cpu_info, describe_cpu, isa_class
from cvexport.errors import CvexportError
from cvexport.int8_graphs import INT8_CPU_GRAPHS, cpu_graph_for


@pytest.fixture(autouse=True)
def _detected(monkeypatch):
    monkeypatch.delenv(FORCE_VARIABLE, raising=False)


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "fma", "avx512f", "avx512_vnni"}, "vnni"),  # AVX-512 VNNI (Cascade Lake, Zen 4)
    ({"avx2", "fma", "avx_vnni"}, "vnni"),  # AVX-VNNI without AVX-512 (Alder Lake)
    ({"avx2", "fma", "avx512f", "avx512bw"}, "avx2"),  # AVX-512 without VNNI (Skylake-SP): vpmaddubsw saturates
    ({"avx2", "fma"}, "avx2"),  # AVX2 only (Zen 2/3 EPYC)
    (set(), "avx2"),
])
def test_isa_class_from_flags(flags, expected):
    assert isa_class(frozenset(flags)) == expected


@pytest.mark.parametrize("forced", ["vnni", "avx2", " AVX2 "])
def test_isa_class_can_be_forced(monkeypatch, forced):
    monkeypatch.setenv(FORCE_VARIABLE, forced)
    assert isa_class(frozenset({"avx512_vnni"})) == forced.strip().lower()
    assert isa_class(frozenset()) == forced.strip().lower()
    info = cpu_info()
    assert info["forced"] and info["isa_class"] == forced.strip().lower()
    assert f"forced by {FORCE_VARIABLE}" in describe_cpu(info)


def test_unknown_forced_class_is_one_line(monkeypatch):
    monkeypatch.setenv(FORCE_VARIABLE, "sse2")
    with pytest.raises(CvexportError, match="CVEXPORT_CPU_ISA='sse2' is not a known instruction-set class"):
        isa_class()


def test_cpu_info_names_this_machine():
    info = cpu_info()
    assert info["model"] and info["cores"] >= 1 and not info["forced"]
    assert info["isa_class"] in ("vnni", "avx2")
    assert set(info["flags"]) <= set(open("/proc/cpuinfo").read().split())
    assert info["model"] in describe_cpu(info)


def _manifest(*keys):
    return {key: {"file": f"{key}.onnx"} for key in ("onnx", *keys)}


def test_each_class_gets_its_own_graph():
    everything = _manifest(*(g.key for g in INT8_CPU_GRAPHS))
    assert {g.isa_class for g in INT8_CPU_GRAPHS} == {"vnni", "avx2"}
    for graph in INT8_CPU_GRAPHS:
        assert cpu_graph_for(everything, graph.isa_class) == graph.key


def test_bundles_without_cpu_graphs_run_the_onnx_graph():
    for isa in ("vnni", "avx2"):
        assert cpu_graph_for(_manifest(), isa) == "onnx"  # fp32, fp16, style INT8
    # An INT8 bundle from before the per-CPU graphs: its VNNI graph saturates elsewhere.
    assert cpu_graph_for(_manifest("onnx_cpu"), "vnni") == "onnx_cpu"
    assert cpu_graph_for(_manifest("onnx_cpu"), "avx2") == "onnx"
