"""Start-up (issue 12, item 5): a second session of an ONNX file reads its import from the cache
(no onnx, no parse); `npusim run` with warm caches imports neither onnx, the quantizer nor scipy; the
note "compiling kernels for this CPU, once" shows when, and only when, this CPU's marker is missing."""
import io
import os
import subprocess
import sys

import numba
import numpy as np

import npusim
import npusim.frontend
import npusim_models as zoo
from npusim import caches
from npusim.registry import kernel_set

kernel_set("fast")  # every kernel's Numba cache located before a test moves numba.config.CACHE_DIR
DIGITS = zoo.path("digits_qdq_pc_s8")


def test_second_session_reads_the_import_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(caches, "IMPORT_DIR", tmp_path)
    first = npusim.InferenceSession(DIGITS)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npz"]

    def no_parse(*_):
        raise AssertionError("parsed again")
    monkeypatch.setattr(npusim.frontend, "read_model", no_parse)
    second = npusim.InferenceSession(DIGITS)
    assert second.get_modelmeta() == first.get_modelmeta()
    assert [(a.name, a.shape, a.type) for a in second.get_inputs()] == [("input", ["N", 1, 8, 8], "tensor(float)")]
    feeds = zoo.sample_inputs("digits_qdq_pc_s8", 1, seed=2)[0]
    np.testing.assert_array_equal(second.run(None, feeds)[0], first.run(None, feeds)[0])
    # another file name (the graph's name) or mode is another entry: parsed, so refused here
    other = tmp_path / "copy.onnx"
    other.write_bytes(DIGITS.read_bytes())
    for path, mode in ((other, "ort"), (DIGITS, "npu")):
        try:
            npusim.InferenceSession(path, mode=mode)
            raise RuntimeError(f"{path} {mode} came from the cache")
        except AssertionError as e:
            assert "parsed again" in str(e)


def test_cli_run_with_warm_caches_imports_no_onnx(tmp_path, monkeypatch):
    """A fresh `npusim run` process once the import cache holds the default model (HOME moved:
    the cache filled here; Numba's cache where it is). Numba's BLAS check would import scipy, when
    installed: npusim.cli hides it (npusim.cli._numba_without_scipy)."""
    monkeypatch.setattr(caches, "IMPORT_DIR", tmp_path / ".cache" / "npusim" / "ir")
    npusim.InferenceSession(zoo.path(zoo.DEFAULT))
    env = dict(os.environ, HOME=str(tmp_path))
    if numba.config.CACHE_DIR:
        env["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR
    code = ("import sys; from npusim.cli import main; main(['run']); "
            "print([m for m in ('onnx', 'ml_dtypes', 'onnxruntime.quantization', 'scipy') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("logits: float32 (1, 10)")
    assert r.stdout.splitlines()[-1] == "[]"


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_compiling_note_without_this_cpus_marker(tmp_path, monkeypatch):
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    marker = caches.compiled_marker()
    assert marker.parent == tmp_path and not marker.exists()
    monkeypatch.setattr(sys, "stderr", Terminal())
    npusim.InferenceSession(DIGITS)
    assert sys.stderr.getvalue() == f"npusim: {caches.COMPILING_NOTE}\n"
    assert marker.exists() and caches.COMPILING_NOTE.startswith("compiling kernels for this CPU, once")
    npusim.InferenceSession(DIGITS)
    assert sys.stderr.getvalue().count("compiling") == 1
    # another CPU (LLVM's features) or Numba version has another marker
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+avx2")
    assert caches.compiled_marker() != marker
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "")
    monkeypatch.setattr(numba, "__version__", "0.0.0")
    assert caches.compiled_marker() != marker


def test_no_compiling_note_off_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    assert caches.note_compiling() == caches.compiled_marker()
    assert capsys.readouterr().err == ""
