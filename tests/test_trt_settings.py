"""The TensorRT layer without TensorRT: version dispatch, engine cache, metadata, clean errors,
and the builder's plumbing driven by the fake ``tensorrt`` module of ``tests/fakes/tensorrt_fake.py`` (held to
NVIDIA's real Python names per version) that records calls."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from fakes.tensorrt_fake import FakeTensorRT, make_bundle

from cvexport.errors import CvexportError
from cvexport.backends.trt import builder as trt_builder
from cvexport.backends.trt import environment as trt_environment
from cvexport.backends.trt import loader as trt_lookup
from cvexport.backends.trt import cache
from cvexport.backends.trt.cache import (
    EngineMetadata,
    check_engine_compatible,
    describe_cache_miss,
    engine_cache_key,
    engine_filename,
    explain_mismatch,
    find_cached_engine,
    key_fields,
    read_metadata,
    write_engine,
)
from cvexport.backends.trt.settings import (
    BatchProfile,
    EngineOptions,
    detect_jetson,
    parse_trt_version,
    plan_builder_settings,
)

INSTALL = "pip install 'cvexport[trt]'"


def _options(precision="fp32", **overrides):
    overrides.setdefault("profile", BatchProfile(1, 4, 4))
    return EngineOptions(precision=precision, input_name="input", input_shape=(3, 8, 8), **overrides)


def _plan(version, precision="fp32", *, is_jetson=False, qdq=False, plugins=(), **overrides):
    return plan_builder_settings(version, _options(precision, **overrides), is_jetson=is_jetson,
                                 graph_has_qdq=qdq, plugins=plugins)


# --- version dispatch ------------------------------------------------------------------


@pytest.mark.parametrize("version", ["10.3.0", "10.8"])
def test_trt10_fp16_sets_the_fp16_flag_on_a_weakly_typed_network(version):
    plan = _plan(version, "fp16")
    assert "FP16" in plan.builder_flags
    assert not plan.strongly_typed
    assert plan.network_flags == ()  # EXPLICIT_BATCH is deprecated and ignored from 10.0
    assert plan.cleared_flags == ()
    assert not plan.warnings


def test_trt11_fp16_uses_the_graph_types_and_says_so():
    plan = _plan("11.0", "fp16")
    assert plan.strongly_typed
    assert "FP16" not in plan.builder_flags and "INT8" not in plan.builder_flags
    assert plan.network_flags == ()  # STRONGLY_TYPED is deprecated and ignored in 11.x: always on
    assert any("precision comes from the graph" in w for w in plan.warnings)


@pytest.mark.parametrize("version", ["10.3.0", "10.8", "11.0"])
def test_fp32_clears_tf32_unless_allowed(version):
    assert _plan(version).cleared_flags == ("TF32",)
    assert _plan(version, allow_tf32=True).cleared_flags == ()
    assert _plan(version).builder_flags == ()


def test_explicit_batch_only_before_10_and_too_old_is_an_error():
    assert _plan("8.6.1").network_flags == ("EXPLICIT_BATCH",)
    with pytest.raises(CvexportError, match="too old"):
        _plan("8.5.2")


def test_int8_needs_qdq():
    assert "INT8" in _plan("10.3.0", "int8", qdq=True).builder_flags
    with pytest.raises(CvexportError, match="calibration"):
        _plan("10.3.0", "int8")
    with pytest.raises(CvexportError, match="QuantizeLinear"):
        _plan("11.0", "int8")
    plan = _plan("11.0", "int8", qdq=True)
    assert plan.builder_flags == () and plan.strongly_typed


def test_memory_pool_optimization_level_and_profile():
    plan = _plan("10.8", workspace_mb=512, optimization_level=5)
    assert plan.memory_pool_limits == {"WORKSPACE": 512 << 20}
    assert plan.optimization_level == 5
    (profile,) = plan.profiles
    assert (profile.name, profile.min, profile.opt, profile.max) == ("input", (1, 3, 8, 8), (4, 3, 8, 8), (4, 3, 8, 8))
    assert _plan("10.8").memory_pool_limits == {}


def test_hardware_compatibility_levels():
    assert _plan("10.3.0", hardware_compatibility="ampere_plus").hardware_compatibility_level == "AMPERE_PLUS"
    with pytest.raises(CvexportError, match="10.9"):
        _plan("10.8", hardware_compatibility="same_compute_capability")
    plan = _plan("10.9", hardware_compatibility="same_compute_capability")
    assert plan.hardware_compatibility_level == "SAME_COMPUTE_CAPABILITY"
    assert _plan("10.8").hardware_compatibility_level is None
    assert any("JetPack" in w for w in _plan("10.3.0", hardware_compatibility="ampere_plus", is_jetson=True).warnings)


def test_version_compatible_flag_runtime_switch_and_plugins():
    plan = _plan("10.8", version_compatible=True)
    assert "VERSION_COMPATIBLE" in plan.builder_flags and plan.runtime_host_code_allowed
    assert not plan.serialize_plugin_libraries
    plan = _plan("10.8", version_compatible=True, plugins=["EfficientNMS_TRT"])
    assert plan.serialize_plugin_libraries and any("EfficientNMS_TRT" in w for w in plan.warnings)


DLA = dict(dla_core=0, profile=BatchProfile(1, 1, 1))


def test_dla_on_jetson_with_trt10():
    plan = _plan("10.3.0", "fp16", is_jetson=True, **DLA)
    assert plan.dla.core == 0 and plan.dla.gpu_fallback
    assert {"FP16", "GPU_FALLBACK"} <= set(plan.builder_flags)
    assert not plan.warnings
    assert any("10.7" in w for w in _plan("10.8", "fp16", is_jetson=True, **DLA).warnings)
    assert any("fallback is off" in w for w in _plan("10.3.0", "fp16", is_jetson=True, gpu_fallback=False,
                                                      **DLA).warnings)


def test_dla_ignored_off_jetson_and_on_trt11_before_11_4():
    plan = _plan("10.3.0", "fp16", is_jetson=False, **DLA)
    assert plan.dla is None and "GPU_FALLBACK" not in plan.builder_flags
    assert any("not a Jetson" in w for w in plan.warnings)
    plan = _plan("11.0", "fp16", is_jetson=True, **DLA)
    assert plan.dla is None and any("no DLA support" in w for w in plan.warnings)
    plan = _plan("11.4.1", "fp16", is_jetson=True, **DLA)
    assert plan.dla is not None and any("AGX Orin" in w for w in plan.warnings)


def test_dla_impossible_combinations():
    with pytest.raises(CvexportError, match="FP16 or INT8"):
        _plan("10.3.0", "fp32", is_jetson=True, **DLA)
    with pytest.raises(CvexportError, match="fixed batch"):
        _plan("10.3.0", "fp16", is_jetson=True, dla_core=0)
    with pytest.raises(CvexportError, match="cannot be combined"):
        _plan("10.3.0", "fp16", is_jetson=True, hardware_compatibility="ampere_plus", **DLA)


def test_option_validation():
    for bad in (dict(precision="fp8"), dict(optimization_level=6), dict(workspace_mb=0), dict(dla_core=-1),
                dict(hardware_compatibility="turing")):
        with pytest.raises(CvexportError):
            EngineOptions(**bad)
    with pytest.raises(CvexportError, match="min <= opt <= max"):
        BatchProfile(2, 1, 4)


def test_parse_version_and_detect_jetson(tmp_path):
    assert parse_trt_version("10.3.0.30") == parse_trt_version("10.3")
    assert (parse_trt_version("11.0.0.post1").major, parse_trt_version("10.8").minor) == (11, 8)
    with pytest.raises(CvexportError):
        parse_trt_version("unknown")
    assert not detect_jetson(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    assert detect_jetson(tmp_path)


# --- tiny bundles ----------------------------------------------------------------------


_make_bundle = make_bundle


def test_options_from_bundle(tmp_path):
    options = EngineOptions.from_bundle(_make_bundle(tmp_path / "a", "fp16"))
    assert (options.precision, options.input_shape, options.profile) == ("fp16", (3, 8, 8), BatchProfile(1, 4, 4))
    options = EngineOptions.from_bundle(_make_bundle(tmp_path / "b", "fp32", layout="NHWC"), opt_batch=1)
    assert (options.input_shape, options.profile) == ((8, 8, 3), BatchProfile(1, 1, 4))
    with pytest.raises(CvexportError, match="exceeds"):
        EngineOptions.from_bundle(_make_bundle(tmp_path / "c"), profile=BatchProfile(1, 1, 8))


# --- cache key and metadata --------------------------------------------------------------

BASE = dict(onnx_sha256="a" * 64, trt_version="10.3.0", gpu_name="Orin", compute_capability="8.7", precision="fp16",
            profile={"input": {"min": [1, 3, 8, 8], "opt": [4, 3, 8, 8], "max": [4, 3, 8, 8]}},
            builder_options={"builder_flags": ["FP16"], "optimization_level": 3, "version_compatible": False,
                             "hardware_compatibility_level": None})
CHANGED = dict(onnx_sha256="b" * 64, trt_version="10.8.0", gpu_name="NVIDIA A100", compute_capability="8.0",
               precision="fp32", profile={"input": {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [4, 3, 8, 8]}},
               builder_options={**BASE["builder_options"], "optimization_level": 5})


def test_cache_key_is_stable_and_order_independent():
    key = engine_cache_key(**BASE)
    assert key == engine_cache_key(**BASE) and len(key) == 64
    reordered = dict(BASE, builder_options=dict(reversed(list(BASE["builder_options"].items()))))
    assert engine_cache_key(**reordered) == key


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_cache_key_changes_with_every_field(name):
    assert engine_cache_key(**dict(BASE, **{name: CHANGED[name]})) != engine_cache_key(**BASE)


def _metadata(**fields):
    fields = key_fields(**dict(BASE, **fields))
    return EngineMetadata(key=cache.key_from_fields(fields), key_fields=fields, model="tiny", build_seconds=1.5,
                          warnings=("a warning",))


def test_metadata_json_round_trip_and_corruption(tmp_path):
    meta = _metadata()
    again = EngineMetadata.from_json(meta.to_json())
    assert again == meta
    assert (again.trt_version, again.gpu_name, again.compute_capability, again.precision) == \
        ("10.3.0", "Orin", "8.7", "fp16")
    with pytest.raises(CvexportError, match="corrupt"):
        EngineMetadata.from_json("{not json")
    with pytest.raises(CvexportError, match="not cvexport-engine"):
        EngineMetadata.from_json(json.dumps({"format": "other"}))


def test_write_and_find_engine(tmp_path):
    meta = _metadata()
    path = tmp_path / engine_filename(meta.key)
    written = write_engine(path, b"engine-bytes", meta)
    assert path.read_bytes() == b"engine-bytes"  # nothing appended to the engine itself
    assert read_metadata(path) == written and written.engine_size == 12 and written.created
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".json"]
    assert find_cached_engine(tmp_path, meta.key) == path
    path.write_bytes(b"engine-bytez")  # same size, different content
    assert find_cached_engine(tmp_path, meta.key) is None
    assert "corrupt" in describe_cache_miss(tmp_path, meta.key, meta.key_fields)


def test_failed_metadata_write_leaves_no_files(tmp_path, monkeypatch):
    meta = _metadata()

    def boom(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EngineMetadata, "to_json", boom)
    with pytest.raises(CvexportError, match="could not write the engine"):
        write_engine(tmp_path / engine_filename(meta.key), b"engine-bytes", meta)
    assert list(tmp_path.iterdir()) == []


def test_failed_engine_write_leaves_no_files(tmp_path, monkeypatch):
    meta = _metadata()
    real = Path.write_bytes

    def half_write(self, data):
        real(self, bytes(data)[:3])
        raise OSError(5, "I/O error")

    monkeypatch.setattr(Path, "write_bytes", half_write)
    with pytest.raises(CvexportError):
        write_engine(tmp_path / engine_filename(meta.key), b"engine-bytes", meta)
    assert list(tmp_path.iterdir()) == []


def test_stale_engine_is_not_found_and_the_reason_is_given(tmp_path):
    old = _metadata()
    write_engine(tmp_path / engine_filename(old.key), b"old", old)
    new_fields = key_fields(**dict(BASE, onnx_sha256="c" * 64))
    new_key = cache.key_from_fields(new_fields)
    assert find_cached_engine(tmp_path, new_key) is None
    assert "the ONNX model changed" in describe_cache_miss(tmp_path, new_key, new_fields)
    options_changed = key_fields(**dict(BASE, builder_options=CHANGED["builder_options"]))
    assert explain_mismatch(old, options_changed) == "builder option optimization_level: 3 -> 5"
    reason = explain_mismatch(old.key_fields, key_fields(**dict(BASE, trt_version="10.8.0", gpu_name="A100")))
    assert "TensorRT version: 10.3.0 -> 10.8.0" in reason and "GPU: Orin -> A100" in reason
    assert "no engine built yet" in describe_cache_miss(tmp_path / "empty", new_key, new_fields)


def test_compatibility_errors_name_both_sides(tmp_path):
    meta = _metadata()
    assert check_engine_compatible(meta, "10.3.0", "Orin", "8.7") == []
    with pytest.raises(CvexportError) as info:
        check_engine_compatible(meta, "10.8.0", "Orin", "8.7", tmp_path / "x.engine")
    message = str(info.value)
    assert "10.3.0" in message and "10.8.0" in message
    assert "cvexport build tiny --backend trt" in message and "delete" in message
    with pytest.raises(CvexportError) as info:
        check_engine_compatible(meta, "10.3.0", "NVIDIA A100", "8.0")
    assert "Orin" in str(info.value) and "NVIDIA A100" in str(info.value)
    assert "rebuild" in check_engine_compatible(meta, "10.3.0", "Orin Nano", "8.7")[0]


def test_compatibility_honours_version_and_hardware_compatible_plans():
    vc = _metadata(builder_options={**BASE["builder_options"], "version_compatible": True})
    assert check_engine_compatible(vc, "10.8.0", "Orin", "8.7") == []
    assert check_engine_compatible(vc, "11.0.0", "Orin", "8.7") == []
    with pytest.raises(CvexportError):
        check_engine_compatible(vc, "10.2.0", "Orin", "8.7")  # older runtime
    hw = _metadata(compute_capability="8.6",
                   builder_options={**BASE["builder_options"], "hardware_compatibility_level": "AMPERE_PLUS"})
    assert check_engine_compatible(hw, "10.3.0", "NVIDIA L4", "8.9") == []
    with pytest.raises(CvexportError):
        check_engine_compatible(hw, "10.3.0", "Tesla T4", "7.5")


# --- no TensorRT installed ---------------------------------------------------------------


def test_clean_errors_without_tensorrt(tmp_path, monkeypatch):
    from cvexport.runtime import create_runner
    from cvexport.backends.trt.runner import TrtRunner

    bundle = _make_bundle(tmp_path / "b")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    for call in (lambda: TrtRunner(bundle), lambda: create_runner(bundle, "trt"),
                 lambda: trt_builder.build_engine(bundle), lambda: trt_builder.ensure_engine(bundle)):
        with pytest.raises(CvexportError, match="not installed") as info:
            call()
        assert INSTALL in str(info.value) and "--backend ort" in str(info.value)
    assert not trt_environment.tensorrt_available()
    assert trt_environment.trt_version() is None
    assert INSTALL in trt_environment.trt_unavailable_reason()


# --- the builder's plumbing, against a fake tensorrt -----------------------------------


def test_fake_trt10_fp16_sets_fp16_and_writes_engine(tmp_path, fake_trt):
    fake = fake_trt("10.8.0")
    bundle = _make_bundle(tmp_path / "b", "fp16")
    lines = []
    path = trt_builder.build_engine(bundle, log=lines.append)
    assert fake._names("set_flag") == ["FP16"]
    assert ("create_network", 0) in fake._calls
    assert ("set_shape", "input", (1, 3, 8, 8), (4, 3, 8, 8), (4, 3, 8, 8)) in fake._calls
    assert ("config.builder_optimization_level", 3) in fake._calls
    assert path.parent == bundle.path / "engines"
    plan = json.loads(path.read_bytes())  # the fake's serialized "plan"
    assert (plan["fake_engine"], plan["flags"], plan["inputs"]) == ("10.8.0", ["FP16"], [["input", [1, 3, 8, 8],
                                                                                          [4, 3, 8, 8]]])
    meta = read_metadata(path)
    assert (meta.trt_version, meta.gpu_name, meta.precision, meta.model) == ("10.8.0", "Fake GPU", "fp16", "tiny")
    timing = json.loads((bundle.path / "engines" / "timing-10.8.0-fake-gpu.cache").read_bytes())
    assert timing == {"timing_cache": {"trt": "10.8.0", "gpu": "Fake GPU"}}
    assert any("building TensorRT engine" in line for line in lines)
    assert not any("timing cache" in line for line in lines)  # none yet: a new one, nothing to say


def test_fake_trt11_fp16_builds_strongly_typed_without_fp16_flag(tmp_path, fake_trt):
    fake = fake_trt("11.0.0")
    bundle = _make_bundle(tmp_path / "b", "fp16")
    lines = []
    trt_builder.build_engine(bundle, log=lines.append)
    assert "FP16" not in fake._names("set_flag")
    assert ("create_network", 0) in fake._calls  # no EXPLICIT_BATCH; strong typing is implicit
    assert any("precision comes from the graph" in line for line in lines)
    assert read_metadata(next((bundle.path / "engines").glob("*.engine"))).builder_options["strongly_typed"]


def test_fake_fp32_clears_tf32_and_applies_workspace(tmp_path, fake_trt):
    fake = fake_trt("10.3.0")
    bundle = _make_bundle(tmp_path / "b", "fp32")
    trt_builder.build_engine(bundle, EngineOptions.from_bundle(bundle, workspace_mb=256), log=lambda line: None)
    assert fake._names("clear_flag") == ["TF32"] and fake._names("set_flag") == []
    assert ("set_memory_pool_limit", "WORKSPACE", 256 << 20) in fake._calls


def test_fake_reuses_cached_engine_and_explains_rebuilds(tmp_path, fake_trt):
    fake = fake_trt("10.8.0")
    bundle = _make_bundle(tmp_path / "b", "fp16")
    first = trt_builder.ensure_engine(bundle, log=lambda line: None)
    lines = []
    assert trt_builder.ensure_engine(bundle, log=lines.append) == first
    assert any(line.startswith("reusing engine") for line in lines)
    assert fake._calls.count(("build_serialized_network",)) == 1
    lines.clear()
    options = EngineOptions.from_bundle(bundle, optimization_level=5)
    second = trt_builder.ensure_engine(bundle, options, log=lines.append)
    assert second != first and fake._calls.count(("build_serialized_network",)) == 2
    assert any("optimization_level: 3 -> 5" in line for line in lines)
    assert trt_lookup.find_engine(bundle, options)[0] == second


def test_fake_any_engine_for_callers_without_options(tmp_path, fake_trt):
    fake_trt("10.8.0")
    bundle = _make_bundle(tmp_path / "b", "fp16")
    assert trt_lookup.find_any_engine(bundle) is None
    narrow = EngineOptions.from_bundle(bundle, profile=BatchProfile(1, 1, 2))  # does not cover max_batch 4
    trt_builder.ensure_engine(bundle, narrow, log=lambda line: None)
    assert trt_lookup.find_any_engine(bundle) is None
    custom = trt_builder.ensure_engine(bundle, EngineOptions.from_bundle(bundle, workspace_mb=64, optimization_level=1),
                                       log=lambda line: None)
    assert trt_lookup.find_any_engine(bundle) == custom
    fake_trt("10.9.0")  # another TensorRT: nothing reusable
    assert trt_lookup.find_any_engine(bundle) is None


def test_fake_missing_plugin_is_named(tmp_path, fake_trt):
    fake_trt("10.8.0", creators=())
    bundle = _make_bundle(tmp_path / "b", "fp16", with_plugin=True)
    with pytest.raises(CvexportError, match="EfficientNMS_TRT \\(version 1\\) is not registered"):
        trt_builder.build_engine(bundle, log=lambda line: None)
    fake = fake_trt("10.8.0")
    trt_builder.build_engine(bundle, log=lambda line: None)
    assert ("get_creator", "EfficientNMS_TRT", "1") in fake._calls
    assert fake._calls.index(("init_libnvinfer_plugins", "")) < fake._calls.index(("create_network", 0))


def test_fake_parse_errors_are_listed(tmp_path, fake_trt):
    fake_trt("10.8.0", parse_errors=("In node 3 (Foo): unsupported op\nmore", "second problem"))
    bundle = _make_bundle(tmp_path / "b", "fp16")
    lines = []
    with pytest.raises(CvexportError, match="could not parse .*2 error"):
        trt_builder.build_engine(bundle, log=lines.append)
    assert [line for line in lines if line.startswith("TensorRT parser")] == [
        "TensorRT parser: In node 3 (Foo): unsupported op", "TensorRT parser: second problem"]
    assert not (bundle.path / "engines").exists() or not list((bundle.path / "engines").glob("*.engine"))


def test_runner_without_cuda_says_so(tmp_path, monkeypatch):
    import torch

    from cvexport.backends.trt.runner import TrtRunner

    monkeypatch.setitem(sys.modules, "tensorrt", FakeTensorRT("10.8.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CvexportError, match="CUDA is not available.*--backend ort"):
        TrtRunner(_make_bundle(tmp_path / "b"))
    assert "CUDA" in trt_environment.trt_unavailable_reason()


def test_precision_must_match_the_bundle(tmp_path, fake_trt):
    fake_trt("10.8.0")
    bundle = _make_bundle(tmp_path / "b", "fp32")
    with pytest.raises(CvexportError, match="precision"):
        trt_builder.build_engine(bundle, replace(EngineOptions.from_bundle(bundle), precision="fp16"))


def test_plugin_graph_with_three_inputs_is_refused_before_building(tmp_path, fake_trt):
    """The network has every graph input; boxes/scores as inputs do not match the one-input contract."""
    fake = fake_trt("10.8.0")
    bundle = _make_bundle(tmp_path / "b", "fp16", extra_inputs=True)
    with pytest.raises(CvexportError, match=r"inputs \['input', 'boxes', 'scores'\] do not match .*\['input'\]"):
        trt_builder.build_engine(bundle, log=lambda line: None)
    assert ("build_serialized_network",) not in fake._calls


def test_plugin_graph_fed_by_the_input_builds(tmp_path, fake_trt):
    fake = fake_trt("11.1.0")
    bundle = _make_bundle(tmp_path / "b", "fp16", with_plugin=True)
    path = trt_builder.build_engine(bundle, log=lambda line: None)
    assert json.loads(path.read_bytes())["inputs"] == [["input", [1, 3, 8, 8], [4, 3, 8, 8]]]
    assert ("get_creator", "EfficientNMS_TRT", "1") in fake._calls


def _timing_lines(lines):
    return [line for line in lines if "timing cache" in line]


@pytest.mark.parametrize("case", ["other GPU", "other TensorRT", "not a cache"])
def test_timing_cache_from_elsewhere_starts_a_new_one(tmp_path, fake_trt, case):
    bundle = _make_bundle(tmp_path / "b", "fp16")
    cache_file = tmp_path / "given.cache"
    if case == "not a cache":
        cache_file.write_bytes(b"\x00\x01 not a timing cache")
    else:
        maker = FakeTensorRT("10.9.0" if case == "other TensorRT" else "10.8.0",
                             gpu="Other GPU" if case == "other GPU" else "Fake GPU")
        cache_file.write_bytes(maker.Builder(None).create_builder_config().create_timing_cache(b"").serialize())
    fake = fake_trt("10.8.0")
    lines = []
    trt_builder.build_engine(bundle, EngineOptions.from_bundle(bundle, timing_cache=str(cache_file)), log=lines.append)
    (line,) = _timing_lines(lines)
    reason = {"other GPU": "was made for another GPU or TensorRT version",
              "other TensorRT": "could not be read by this TensorRT", "not a cache": "could not be read"}[case]
    assert line.startswith(f"timing cache {cache_file} {reason}") and "starting a new empty one" in line
    assert ("create_timing_cache", b"") in fake._calls  # the fresh one ...
    assert fake._calls.count(("set_timing_cache", True)) == 1  # ... is what the build used
    assert json.loads(cache_file.read_bytes()) == {"timing_cache": {"trt": "10.8.0", "gpu": "Fake GPU"}}
    lines.clear()
    trt_builder.build_engine(bundle, EngineOptions.from_bundle(bundle, timing_cache=str(cache_file)), log=lines.append,
                             force=True)
    assert _timing_lines(lines) == [f"using timing cache {cache_file}"]


def test_timing_cache_that_cannot_be_started_builds_without_one(tmp_path, fake_trt, monkeypatch):
    fake = fake_trt("10.8.0")
    monkeypatch.setattr(fake.IBuilderConfig, "create_timing_cache", lambda self, blob: None)
    bundle = _make_bundle(tmp_path / "b", "fp16")
    lines = []
    trt_builder.build_engine(bundle, log=lines.append)
    assert any("building without one" in line for line in lines)
    assert not list((bundle.path / "engines").glob("timing-*"))


def test_progress_monitor_logs_top_level_phases(tmp_path, fake_trt):
    fake_trt("10.8.0", build_phases=(("Building engine", 2), ("Serializing", 1)))
    bundle = _make_bundle(tmp_path / "b", "fp16")
    lines = []
    trt_builder.build_engine(bundle, log=lines.append)
    phases = [line.strip() for line in lines if line.startswith("  ")]
    assert phases[0::2] == ["Building engine (2 steps)", "Serializing (1 steps)"]
    assert phases[1].startswith("Building engine done in ") and phases[3].startswith("Serializing done in ")


@pytest.mark.parametrize("version", ["10.8.0", "11.1.0"])
def test_version_compatible_plan_serializes_the_parsers_plugin_libraries(tmp_path, fake_trt, version):
    libraries = ["/opt/tensorrt/lib/libnvinfer_vc_plugin.so"]
    fake = fake_trt(version, vc_plugin_libraries=libraries)
    bundle = _make_bundle(tmp_path / "b", "fp16", with_plugin=True)
    lines = []
    path = trt_builder.build_engine(bundle, EngineOptions.from_bundle(bundle, version_compatible=True),
                                    log=lines.append)
    assert "VERSION_COMPATIBLE" in fake._names("set_flag")
    assert ("config.plugins_to_serialize", libraries) in fake._calls
    assert json.loads(path.read_bytes())["plugins_to_serialize"] == libraries
    assert any("version-compatible plan with plugin nodes" in line for line in lines)
    plain = trt_builder.build_engine(_make_bundle(tmp_path / "c", "fp16"),
                                     EngineOptions.from_bundle(bundle, version_compatible=True), log=lambda line: None)
    assert json.loads(plain.read_bytes())["plugins_to_serialize"] == []  # no plugin nodes, nothing to embed


@pytest.mark.parametrize("version", ["10.9.0", "10.16.0", "11.1.0"])
def test_same_compute_capability_level_is_set_where_it_exists(tmp_path, fake_trt, version):
    fake = fake_trt(version)
    bundle = _make_bundle(tmp_path / "b", "fp16")
    options = EngineOptions.from_bundle(bundle, hardware_compatibility="same_compute_capability")
    trt_builder.build_engine(bundle, options, log=lambda line: None)
    assert ("config.hardware_compatibility_level", fake.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY) \
        in fake._calls


def test_dla_settings_reach_the_config(tmp_path, fake_trt, monkeypatch):
    fake = fake_trt("10.3.0", dla_cores=2)
    monkeypatch.setattr(trt_lookup, "detect_jetson", lambda: True)
    bundle = _make_bundle(tmp_path / "b", "fp16", max_batch=1)
    trt_builder.build_engine(bundle, EngineOptions.from_bundle(bundle, dla_core=1), log=lambda line: None)
    assert ("config.default_device_type", fake.DeviceType.DLA) in fake._calls
    assert ("config.DLA_core", 1) in fake._calls
    assert {"FP16", "GPU_FALLBACK"} <= set(fake._names("set_flag"))


def test_builder_and_plugins_share_one_logger(tmp_path, fake_trt):
    fake = fake_trt("10.8.0")
    trt_builder.build_engine(_make_bundle(tmp_path / "b", "fp16", with_plugin=True), log=lambda line: None)
    trt_builder.build_engine(_make_bundle(tmp_path / "c", "fp32"), log=lambda line: None)
    logger = trt_environment.trt_logger(fake)
    assert isinstance(logger, fake.Logger) and logger.min_severity == fake.Logger.WARNING
    assert fake._plugin_logger is logger
    assert fake._names("Builder") == [logger, logger]
    assert fake._names("init_libnvinfer_plugins") == [""]  # once per process
    other = FakeTensorRT("10.8.0")
    assert trt_environment.trt_logger(other) is not logger and trt_environment.trt_logger(fake) is logger


def test_trt_extra_stays_on_tensorrt_10():
    """``pip install 'cvexport[trt]'`` must not pull TensorRT 11: ONNX Runtime's TensorRT
    execution provider (``--backend ort-trt``) supports 11.x only from onnxruntime 1.27."""
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    (requirement,) = [Requirement(r) for r in extras["trt"] if Requirement(r).name == "tensorrt"]
    assert requirement.specifier.contains("10.3.0") and requirement.specifier.contains("10.16.1")
    assert not requirement.specifier.contains("10.2.0") and not requirement.specifier.contains("11.0.0")
