"""The QONNX models of ../shared/qonnx-zoo, loaded as published, against qonnx's own executor.

The reference is what a qonnx user runs: `execute_onnx` on `ModelWrapper(cleanup_model(...))`
(qonnx==1.0.0, live). Every activation quantizer's codes must be equal bit for bit (the k-th
Quant/BipolarQuant on a non-constant input of the published model against the k-th of the
cleaned one), and the float output equal, except kwsmlp's: its last MatMul output is the graph
output, with non-power-of-two scales; qonnx sums it in float32 (onnxruntime's MatMul), npusim
has the exact integer accumulator times one float32 scale, so the two differ by a few units in
the last place of the largest output (measured over 20 input sets: at most 3; asserted: 4).
"""
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import npusim
from npusim import cli

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model

ZOO = Path(__file__).resolve().parents[2] / "shared" / "qonnx-zoo"
# model -> (input values, the host islands it keeps, the output's largest difference in ULP of its
# largest value,
# activation codes per input set: 784 + 3·64, 490 + 3·256, 64 + 2·32)
MODELS = {
    "TFC_2W2A": ("unit", ["Sub_57", "Div_60", "Mul_61", "Add_62"], 0, 976),  # TensorNorm tail after the last MatMul
    "kwsmlp_w3a3": ("normal", [], 4, 1258),
    "qkeras_jettagging": ("normal", ["MatMul_0", "Add_3", "Softmax_0"], 0, 128),  # float first layer; softmax tail
}


@lru_cache(maxsize=None)
def _models(name):
    path = ZOO / f"{name}.onnx"
    if not path.exists():
        pytest.skip(f"{path} is not there (test material beside the clone)")
    return str(path), onnx.load(path), cleanup_model(ModelWrapper(str(path)))


def _activation_quants(model):
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [(n.output[0], inits[n.input[1]].astype(np.float64), float(inits[n.input[2]]) if n.op_type == "Quant"
             else 0.0) for n in model.graph.node if n.op_type in ("Quant", "BipolarQuant") and n.input[0] not in inits]


@pytest.mark.parametrize("mode", ["ort", "npu"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_model_bit_exact_with_qonnx(name, mode):
    path, raw, clean = _models(name)
    kind, islands, max_ulp, codes = MODELS[name]
    sess = npusim.InferenceSession(path, mode=mode)
    assert sess.host_fallback == islands  # one island per float node, as qonnx runs them
    ours_q, ref_q = _activation_quants(raw), _activation_quants(clean.model)
    assert len(ours_q) == len(ref_q) >= 3
    inp = raw.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    compared = 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        x = (rng.uniform(0, 1, shape) if kind == "unit" else rng.standard_normal(shape) * 2).astype(np.float32)
        ref = execute_onnx(clean, {clean.graph.input[0].name: x}, return_full_exec_context=True)
        got = sess.run_all({inp.name: x})
        for (ours, _, _), (theirs, scale, zp) in zip(ours_q, ref_q):
            want = np.round(ref[theirs].astype(np.float64) / scale + zp).astype(np.int64)
            np.testing.assert_array_equal(np.asarray(got[ours]).astype(np.int64), want, err_msg=f"{name} {ours}")
            compared += want.size
            if ours == ours_q[-1][0]:
                assert len(np.unique(want)) > 1  # the last layer's codes are not constant
        out, want = got[raw.graph.output[0].name], ref[clean.graph.output[0].name]
        assert out.dtype == want.dtype == np.float32 and out.shape == want.shape
        assert np.abs(out - want).max() <= max_ulp * np.spacing(np.abs(want).max()), (name, out - want)
    assert compared == 3 * codes



def test_cli_runs_benches_and_verifies_a_qonnx_model_against_qonnx(capsys):
    """run and bench take the published model (bench without an onnxruntime time: onnxruntime
    cannot load it); verify compares it with qonnx's executor (npusim.verify_refs), bit-exact."""
    path, _, _ = _models("qkeras_jettagging")
    assert cli.main(["run", path]) == 0
    assert "global_out: float32 (1, 5)" in capsys.readouterr().out
    assert cli.main(["bench", path]) == 0
    assert "onnxruntime n/a" in capsys.readouterr().out
    assert cli.main(["verify", path]) == 0
    out = capsys.readouterr().out
    assert "against qonnx's executor" in out and "activation quantizer codes: 3 compared, 3 bit-exact" in out
    assert out.rstrip().endswith("BIT-EXACT")


def test_verify_kwsmlp_float_output_within_its_stated_bound():
    """kwsmlp's float output (its last MatMul, non-power-of-two scales) is not identical to
    qonnx's float32 sum: verify says "within float rounding" with the bound, every code exact."""
    from npusim.verify import verify

    path, raw, _ = _models("kwsmlp_w3a3")
    inp = raw.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    feeds = [{inp.name: (np.random.default_rng(s).standard_normal(shape) * 2).astype(np.float32)} for s in range(3)]
    report = verify(path, feeds)
    assert report.against == "qonnx" and report.verdict == "within float rounding" and not report.bit_exact
    assert len(report.intermediates) == 4 and all(c.exact == c.elements for c in report.intermediates)
    (f,) = report.float_outputs
    assert 0 < f.max_ulp <= 4 and f.max_abs <= f.bound < 1e-3 and f.within
