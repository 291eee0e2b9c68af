"""Tests that keep the fake ``tensorrt`` (``tests/fakes/tensorrt_fake.py``) honest."""

from __future__ import annotations

import enum

import pytest
from fakes.tensorrt_fake import (
    API_RANGES,
    FakeTensorRT,
    api_for,
    api_tag_for,
    fake_name_problems,
    fake_names,
    load_api,
    make_bundle,
)

# --------------------------------------------------------------------------------------
# Tests of the fake itself
# --------------------------------------------------------------------------------------
FAKE_VERSIONS = ("10.3.0", "10.8.0", "10.9.0", "10.16.0", "11.0.0", "11.1.0", "11.4.1")


@pytest.mark.parametrize("version", FAKE_VERSIONS)
def test_fake_defines_only_names_the_real_bindings_define(version):
    fake = FakeTensorRT(version)
    assert fake_name_problems(fake, api_for(version)) == []
    names = fake_names(fake)
    assert {"Builder", "IBuilderConfig", "OnnxParser", "Runtime", "BuilderFlag", "init_libnvinfer_plugins"} <= names[""]


def test_the_name_check_finds_a_name_the_bindings_lack():
    fake = FakeTensorRT("11.0.0")
    fake.IBuilderConfig.set_quantization_flag = lambda self, flag: None  # a 10.x method, removed in 11.0
    fake.BuilderFlag = enum.IntEnum("BuilderFlag", ["FP16", "TF32"])
    fake.make_engine = lambda: None
    assert fake_name_problems(fake, api_for("11.0.0")) == [
        "BuilderFlag.FP16", "IBuilderConfig.set_quantization_flag", "tensorrt.make_engine"]
    assert fake_name_problems(FakeTensorRT("10.8.0"), api_for("10.8.0")) == []


def test_fake_enums_follow_the_version():
    assert {"FP16", "INT8"} <= set(FakeTensorRT("10.16.0").BuilderFlag.__members__)
    assert not {"FP16", "INT8"} & set(FakeTensorRT("11.0.0").BuilderFlag.__members__)
    assert "EXPLICIT_BATCH" not in FakeTensorRT("11.1.0").NetworkDefinitionCreationFlag.__members__
    assert "SAME_COMPUTE_CAPABILITY" not in FakeTensorRT("10.8.0").HardwareCompatibilityLevel.__members__
    assert "SAME_COMPUTE_CAPABILITY" in FakeTensorRT("10.9.0").HardwareCompatibilityLevel.__members__
    assert hasattr(FakeTensorRT("10.8.0").get_plugin_registry(), "get_plugin_creator")
    assert not hasattr(FakeTensorRT("11.0.0").get_plugin_registry(), "get_plugin_creator")
    fake = FakeTensorRT("10.3.0")
    assert fake.Logger.WARNING == fake.ILogger.Severity.WARNING  # through the ILogger base, as in the wheel


def test_api_lists_cover_the_versions():
    assert [api_tag_for(v) for v in ("10.0.1", "10.8.0", "10.9.0", "10.15.1", "10.16.1", "11.0.0", "11.5.0")] == [
        "v10.3.0", "v10.3.0", "v10.9.0", "v10.9.0", "v10.16", "v11.0", "v11.1"]
    with pytest.raises(LookupError):
        api_tag_for("9.3.0")
    for _, tag in API_RANGES:
        api = load_api(tag)
        assert api["tag"] == tag and api["classes"]["IBuilderConfig"] and api["enums"]["BuilderFlag"]


def test_config_rejects_attributes_the_real_config_lacks():
    config = FakeTensorRT("10.8.0").Builder(None).create_builder_config()
    config.builder_optimization_level = 5
    config.plugins_to_serialize = ["/lib/libvc.so"]
    with pytest.raises(AttributeError, match="builder_optimisation_level"):
        config.builder_optimisation_level = 5  # a typo the real pybind object refuses
    with pytest.raises(AttributeError, match="num_optimization_profiles"):
        config.num_optimization_profiles = 2  # read-only property
    config.int8_calibrator = None  # exists (deprecated) in 10.x ...
    config_11 = FakeTensorRT("11.0.0").Builder(None).create_builder_config()
    with pytest.raises(AttributeError):
        config_11.int8_calibrator = None  # ... and is gone in 11.0
    with pytest.raises(AttributeError):
        FakeTensorRT("10.8.0").Runtime(None).engine_host_code = True


def test_timing_cache_mismatch_and_unreadable_blobs():
    config = FakeTensorRT("10.8.0", gpu="GPU A").Builder(None).create_builder_config()
    other_gpu = FakeTensorRT("10.8.0", gpu="GPU B").Builder(None).create_builder_config()
    other_version = FakeTensorRT("10.9.0", gpu="GPU A").Builder(None).create_builder_config()
    blob = bytes(config.create_timing_cache(b"").serialize())
    assert config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False) is True
    assert other_gpu.set_timing_cache(other_gpu.create_timing_cache(blob), ignore_mismatch=False) is False
    assert other_gpu.set_timing_cache(other_gpu.create_timing_cache(blob), ignore_mismatch=True) is True
    assert other_version.create_timing_cache(blob) is None
    assert config.create_timing_cache(b"\x00garbage") is None
    with pytest.raises(TypeError):
        config.set_timing_cache(None, ignore_mismatch=False)


def test_parser_gives_the_network_the_graphs_inputs(tmp_path):
    fake = FakeTensorRT("10.8.0")
    bundle = make_bundle(tmp_path / "b", with_plugin=True, extra_inputs=True)
    network = fake.Builder(None).create_network(0)
    parser = fake.OnnxParser(network, None)
    assert parser.parse_from_file(str(bundle.path / "model.onnx")) and parser.num_errors == 0
    assert [network.get_input(i).name for i in range(network.num_inputs)] == ["input", "boxes", "scores"]
    assert network.get_input(1).shape == (-1, 10, 4)
    assert FakeTensorRT("10.8.0", vc_plugin_libraries=["/x/libnvinfer_vc_plugin.so"]).OnnxParser(
        network, None).get_used_vc_plugin_libraries() == ["/x/libnvinfer_vc_plugin.so"]
    config = fake.Builder(None).create_builder_config()
    assert fake.Builder(None).build_serialized_network(network, config) is None  # no profile for the inputs
    assert fake._names("build_error") == ["input input has dynamic dimensions but no profile shape"]


def test_progress_monitor_is_driven_and_can_cancel(tmp_path):
    fake = FakeTensorRT("10.8.0", build_phases=(("Building engine", 2),))
    events = []

    class Monitor(fake.IProgressMonitor):
        def phase_start(self, phase_name, parent_phase, num_steps):
            events.append(("start", phase_name, parent_phase, num_steps))

        def step_complete(self, phase_name, step):
            events.append(("step", step))
            return step == 0

        def phase_finish(self, phase_name):
            events.append(("finish", phase_name))

    builder = fake.Builder(None)
    network = builder.create_network(0)
    config = builder.create_builder_config()
    config.progress_monitor = Monitor()
    assert builder.build_serialized_network(network, config) is None
    assert events == [("start", "Building engine", None, 2), ("step", 0), ("step", 1)]
