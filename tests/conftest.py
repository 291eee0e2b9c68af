"""Shared fixtures: bundles built once per session, and clean skips for GPU / TensorRT tests."""

from __future__ import annotations

import importlib.util
import os
import tempfile

import numpy as np
import pytest
import torch


# The commands' default backend, auto, measures the CPU backends once per bundle and picks the
# fastest that keeps the answers: which one depends on the CPU the suite runs on. Tests pin it to
# ONNX Runtime so their numbers are the same on every machine (subprocesses inherit this);
# tests of the choice itself unset it. Its record goes to a folder of this run, never ~/.cache.
os.environ["CVEXPORT_BACKEND"] = "ort"
os.environ["CVEXPORT_CACHE_DIR"] = tempfile.mkdtemp(prefix="cvexport-test-cache-")


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def _tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none is present")
    skip_trt = pytest.mark.skip(reason="needs TensorRT; it is not installed")
    for item in items:
        if "gpu" in item.keywords and not _cuda_available():
            item.add_marker(skip_gpu)
        if "trt" in item.keywords and not _tensorrt_available():
            item.add_marker(skip_trt)


@pytest.fixture(autouse=True)
def _restore_random_state():
    """Tests may seed or draw, or set torch's process-wide thread count (a torch runner, a
    training run); leave the generators and the threads as they were, so no test's numbers
    depend on which tests ran before it."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    threads = torch.get_num_threads()
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)
    torch.set_num_threads(threads)


def _unmapped_signal_stack() -> str | None:
    """Where this thread's alternate signal stack points at memory that is no longer mapped, say
    so; else None. Linux only (elsewhere: None)."""
    import ctypes

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    try:
        maps = open("/proc/self/maps").read().splitlines()
        stack = StackT()
        if ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) != 0 or not stack.ss_sp:
            return None
    except (OSError, AttributeError):
        return None
    for line in maps:
        low, high = (int(bound, 16) for bound in line.split()[0].split("-"))
        if low <= stack.ss_sp < high:
            return None
    return f"the main thread's alternate signal stack ({stack.ss_sp:#x}, {stack.ss_size} bytes) is unmapped"


@pytest.fixture(autouse=True)
def _signal_stack_stays_mapped():
    """A library that frees the signal stack it installed (OpenVINO's CPU plugin does, when its
    Core is freed out of order) turns the next signal into a silent segfault of the whole test
    run, far from the cause; this fails the test that left it so instead."""
    yield
    problem = _unmapped_signal_stack()
    if problem is not None and problem not in _REPORTED_STACKS:  # the test that left it, not every one after
        _REPORTED_STACKS.add(problem)
        pytest.fail(problem + ": the next signal would kill this process with no traceback")


_REPORTED_STACKS: set[str] = set()


@pytest.fixture(scope="session")
def build_bundle(tmp_path_factory):
    """``build_bundle(**BuildOptions fields and task options) -> Bundle``, each distinct build built once.

    Builds are keyed by the options they resolve to, defaults filled in, so ``model="ssd"``,
    ``precision="fp32"`` and ``model="ssd", precision="fp32", input_format="float"`` (the same
    build, spelled as different modules spell it) share one bundle instead of building it three
    times. Builds are deterministic (bundles built twice are byte-identical), so sharing changes
    nothing a test sees but the time."""
    from dataclasses import fields

    from cvexport.build import BuildOptions, build
    from cvexport.bundle import load_bundle

    cache: dict[tuple, object] = {}
    root = tmp_path_factory.mktemp("bundles")

    def _key(kwargs) -> tuple:
        options = BuildOptions.of(**kwargs)
        own = tuple((f.name, getattr(options, f.name)) for f in fields(options) if f.name != "task_options")
        return own + tuple(sorted(options.task_options.items()))

    def _build(**kwargs):
        kwargs.setdefault("model", "ssd")
        kwargs.setdefault("verify_images", 0)  # verify has its own tests; keep fixture builds fast
        kwargs.setdefault("engine", "ort")  # engines are built by the tests that check them
        key = _key(kwargs)
        if key not in cache:
            out = root / f"b{len(cache)}"
            build(BuildOptions.of(out=str(out), **kwargs), log=lambda line: None)
            cache[key] = load_bundle(out)
        return cache[key]

    return _build


@pytest.fixture(scope="session")
def bundle(build_bundle):
    """The session's fp32 bundle of the default model (the SSD), which most bundle-level tests
    read; a module that needs another model's bundle defines its own ``bundle``."""
    return build_bundle(precision="fp32")


@pytest.fixture
def fake_trt(monkeypatch):
    """``fake_trt(version, **kwargs)``: install the fake ``tensorrt`` of tests/fakes/tensorrt_fake.py
    (and a fake GPU identity) for the rest of the test; returns the fake module."""
    from fakes.tensorrt_fake import fake_installer

    return fake_installer(monkeypatch)
