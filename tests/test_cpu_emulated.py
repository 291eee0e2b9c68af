"""The INT8 CPU graphs on the kernels of a CPU without VNNI, on any x86 machine.

ONNX Runtime picks its kernels from the ``cpuid`` instruction. ``qemu-x86_64 -cpu Haswell``
(Debian's qemu-user) answers ``cpuid`` as an AVX2-only CPU and emulates AVX2 exactly, 16-bit
saturation included, so the AVX2 path of ORT's u8 x s8 kernels runs here even on an
AVX-512/VNNI machine. (It reproduced the issue's AVX2 numbers of the SSD INT8 bundle to the
last digit: mAP@0.5 0.8981, mAP@0.5:0.95 0.6718, 277/302 detections matched.) Slow (the
emulated interpreter starts in about ten seconds), so only the small test network runs there.
Skipped where qemu-user is not installed (`apt-get install qemu-user`).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import numpy as np
import onnx
import pytest

from cvexport.export.quantize import quantize_core
from test_quantize import random_batches, relative_error, run, small_core

QEMU = shutil.which("qemu-x86_64")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(QEMU is None or platform.machine() != "x86_64",
                       reason="needs qemu-user on x86-64 (apt-get install qemu-user) to emulate an AVX2-only CPU"),
]

RUN_EMULATED = textwrap.dedent("""
    import site, sys
    site.addsitedir(sys.argv[1])
    import numpy as np, onnxruntime as ort
    x = np.load(sys.argv[2])
    out = {}
    for path in sys.argv[4:]:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for o, value in zip(session.get_outputs(), session.run(None, {"input": x})):
            out[path + ":" + o.name] = value
    np.savez(sys.argv[3], **out)
""")


def _emulated(paths: list[str], x: np.ndarray, tmp_path) -> dict[str, dict[str, np.ndarray]]:
    """Outputs of each ONNX file on ORT's CPU provider as an AVX2-only Haswell runs it."""
    np.save(tmp_path / "x.npy", x)
    script = tmp_path / "run.py"
    script.write_text(RUN_EMULATED)
    python = os.path.realpath(sys.executable)
    site_packages = sysconfig.get_paths()["purelib"]
    result = subprocess.run([QEMU, "-cpu", "Haswell", python, str(script), site_packages, str(tmp_path / "x.npy"),
                             str(tmp_path / "out.npz"), *paths], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = np.load(tmp_path / "out.npz")
    return {path: {key.split(":", 1)[1]: saved[key] for key in saved.files if key.startswith(path + ":")}
            for path in paths}


def test_the_7bit_form_computes_the_same_numbers_without_vnni(tmp_path):
    core = small_core()
    calib = random_batches(8)
    forms = {form: quantize_core(core, calib, form=form) for form in ("qdq-cpu", "qdq-cpu-7bit")}
    paths = {}
    for form, model in forms.items():
        paths[form] = str(tmp_path / f"{form}.onnx")
        onnx.save(model, paths[form])
    x = random_batches(1, batch=16, seed=7)[0]
    avx2 = _emulated(list(paths.values()), x, tmp_path)
    here = {form: run(model, x) for form, model in forms.items()}
    reference = run(core, x)

    # 7-bit weights cannot saturate: the AVX2 kernels give what this machine's kernels give,
    # and that stays close to float.
    for name, value in here["qdq-cpu-7bit"].items():
        np.testing.assert_allclose(avx2[paths["qdq-cpu-7bit"]][name], value, rtol=0, atol=1e-5, err_msg=name)
    assert relative_error(reference, avx2[paths["qdq-cpu-7bit"]]) < 0.08

    # The emulation really runs the AVX2 path: the full-range form's 16-bit sums saturate
    # there, so it computes other numbers than on a VNNI CPU, and worse ones.
    full_avx2 = relative_error(reference, avx2[paths["qdq-cpu"]])
    assert full_avx2 > relative_error(reference, avx2[paths["qdq-cpu-7bit"]])
    from cvexport.cpu import isa_class

    if isa_class() == "vnni":
        assert any(not np.array_equal(avx2[paths["qdq-cpu"]][k], v) for k, v in here["qdq-cpu"].items())


RUN_OPENVINO = textwrap.dedent("""
    import os, site, sys
    site.addsitedir(sys.argv[1])
    sys.path.insert(0, sys.argv[4])
    import numpy as np
    from cvexport.bundle import load_bundle
    from cvexport.runtime import create_runner
    bundle = load_bundle(sys.argv[2])
    with create_runner(bundle, "openvino") as runner:
        out = runner.infer({bundle.input.name: np.load(sys.argv[3])})
        print(runner.graph)
    np.savez(sys.argv[3] + ".out.npz", **out)
""")


def test_openvino_int8_keeps_the_answers_on_avx2_kernels(build_bundle, tmp_path):
    """The SSD INT8 bundle on OpenVINO as an AVX2-only Haswell runs it: the runner picks the
    7-bit graph there (it saw 13/23 detections matched with the full-range QDQ graph), and its
    detections match the torch reference at int8's tolerance."""
    pytest.importorskip("openvino")
    from pathlib import Path

    from cvexport.registry import bundle_spec
    from cvexport.runtime import create_runner
    from cvexport.runtime.predictor import prepare_batch
    from cvexport.tasks import get_task

    bundle = build_bundle(precision="int8")
    task = get_task(bundle.task)
    feed = prepare_batch(bundle, task.parity_frames(bundle_spec(bundle))[:4]).feed
    np.save(tmp_path / "x.npy", feed[bundle.input.name])
    script = tmp_path / "run_openvino.py"
    script.write_text(RUN_OPENVINO)
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "CVEXPORT_CPU_ISA": "avx2"}  # qemu-user shows the host's /proc/cpuinfo
    result = subprocess.run([QEMU, "-cpu", "Haswell", os.path.realpath(sys.executable), str(script),
                             sysconfig.get_paths()["purelib"], str(bundle.path), str(tmp_path / "x.npy"), repo],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "onnx_cpu_avx2"
    saved = np.load(tmp_path / "x.npy.out.npz")
    with create_runner(bundle, "torch") as reference:
        expected = reference.infer(feed)
    parity = task.new_parity("int8", bundle.manifest)
    parity.add(expected, {name: saved[name] for name in saved.files})
    assert parity.passed(), parity.summary()
