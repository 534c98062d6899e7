"""Bit-serial engine end to end: a digits model quantized to W4A4 and to mixed per-layer widths
(convs and a gemm), and two published low-bit QONNX MLPs (matmuls), run identically with the
direct int8 kernels, the bit-serial popcount kernels (fast and golden) and the auto choice."""
from pathlib import Path

import numpy as np
import pytest

import npusim
import npusim_models as zoo
from npusim.quantize import FeedsReader, quantize


MIXED = {"conv1": {"wbits": 3, "abits": 2}, "dwconv2": {"wbits": 2, "abits": 5},
         "pwconv3": {"wbits": 6, "abits": 3}, "conv4": {"wbits": 2, "abits": 4}, "fc": {"wbits": 8, "abits": 8}}


@pytest.fixture(scope="module", params=["w4a4", "mixed"])
def model(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("eng") / f"{request.param}.onnx"
    kw = {"wbits": 4, "abits": 4} if request.param == "w4a4" else {"layer_bits": MIXED}
    return quantize(zoo.path("digits_float"), out, FeedsReader(zoo.sample_inputs("digits_float", 16, seed=0)), progress=False, **kw).onnx


@pytest.mark.parametrize("mode", ["ort", "npu"])
def test_bitserial_equals_direct_and_golden(model, mode):
    feeds = zoo.sample_inputs("digits_float", 3, seed=9)
    direct = npusim.InferenceSession(model, mode=mode, engine="direct")
    convs = [n for n in direct.graph.nodes if n.op == "conv"]
    widths = {(direct.graph.tensors[n.inputs[1]].dtype, direct.graph.tensors[n.inputs[0]].dtype) for n in convs}
    assert all(w != "i8" or x != "u8" for w, x in widths), widths  # really sub-byte layers
    runs = {"direct-golden": npusim.InferenceSession(model, mode=mode, engine="direct", kernels="golden"),
            "bitserial": npusim.InferenceSession(model, mode=mode, engine="bitserial"),
            "bitserial-golden": npusim.InferenceSession(model, mode=mode, engine="bitserial", kernels="golden"),
            "auto": npusim.InferenceSession(model, mode=mode)}
    assert all(n.attrs["engine"] == "bitserial" for n in runs["bitserial"].graph.nodes if n.op in ("conv", "gemm"))
    assert_same_runs(direct, runs, feeds)


def assert_same_runs(direct, runs, feeds):
    for f in feeds:
        want = direct.run_all(f)
        for name, sess in runs.items():
            got = sess.run_all(f)
            for k in want:
                np.testing.assert_array_equal(got[k], want[k], err_msg=f"{name}: {k}")


@pytest.mark.parametrize("name", ["TFC_2W2A", "kwsmlp_w3a3"])
def test_bitserial_matmul_in_qonnx_mlps(name):
    """Brevitas MLPs with 2- and 3-bit MatMuls (A i2 x B i2; i8 x i3 and u3 x i3; one row of A)."""
    path = Path(__file__).resolve().parents[2] / "shared" / "qonnx-zoo" / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path} is not there (test material beside the clone)")
    direct = npusim.InferenceSession(str(path), engine="direct")
    inp = direct.get_inputs()[0]
    rng = np.random.default_rng(5)
    feeds = [{inp.name: rng.uniform(0, 1, inp.shape).astype(np.float32)} for _ in range(3)]
    runs = {"bitserial": npusim.InferenceSession(str(path), engine="bitserial"),
            "bitserial-golden": npusim.InferenceSession(str(path), engine="bitserial", kernels="golden")}
    matmuls = [n for n in runs["bitserial"].graph.nodes if n.op == "matmul"]
    assert len(matmuls) == 4 and all(n.attrs["engine"] == "bitserial" for n in matmuls)
    assert_same_runs(direct, runs, feeds)


def test_auto_picks_bitserial_only_for_narrow_layers():
    from npusim.registry import choose_engine

    assert choose_engine("auto", "i8", "u8") == "direct"
    assert choose_engine("auto", "i1", "u1") == "bitserial"
    assert choose_engine("direct", "i1", "u1") == "direct"
    assert choose_engine("bitserial", "i8", "u8") == "bitserial"
    assert choose_engine("auto", "f32", "u8") == "direct"
    assert choose_engine("auto", "i2", "u2", taps=9, depthwise=True) == "direct"
    for wb in range(1, 9):
        for xb in range(1, 9):
            assert choose_engine("auto", f"i{wb}", f"u{xb}", taps=9) == ("bitserial" if wb * xb <= 12 else "direct")
            assert choose_engine("auto", f"i{wb}", f"u{xb}", taps=1) == ("bitserial" if wb * xb == 1 else "direct")
            # against the direct conv on vpdpbusd byte quads (a CPU with VNNI)
            assert choose_engine("auto", f"i{wb}", f"u{xb}", taps=9, dpbusd=True) == \
                ("bitserial" if wb * xb <= 4 else "direct")
            assert choose_engine("auto", f"i{wb}", f"u{xb}", taps=1, dpbusd=True) == "direct"
            assert choose_engine("auto", f"i{wb}", f"u{xb}", op="gemm") == ("bitserial" if wb * xb <= 16 else "direct")
            assert choose_engine("auto", f"i{wb}", f"u{xb}", op="matmul", rows=1) == "bitserial"
