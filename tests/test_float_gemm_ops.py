"""Integer forms of onnxruntime's float-output integer GEMMs: DynamicQuantizeMatMul,
MatMulIntegerToFloat, QGemm without y_scale, and quantize_dynamic's DynamicQuantizeLinear ->
MatMulInteger -> Cast -> Mul chain (which onnxruntime's optimizer fuses to DynamicQuantizeMatMul).

* They import as dynamic_quantize + matmul / gemm + scale_float, no host op left.
* The float order (f32(acc)·((alpha·a_scale)·b_scale[n]), then + bias) equals the exact-arithmetic
  references `exact__*` recorded with the onnxruntime AVX2 fixtures (../shared/ort-fixtures);
  the recorded AVX2 outputs themselves are test_ort_isa's (ort_isa="avx2").
* Live against this CPU's onnxruntime on data whose u8·s8 pair sums cannot leave int16
  (|b| <= 63), so the comparison holds on every x86-64 family.
"""
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import npusim

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "ort-fixtures" / "avx2"
FLOAT_CASES = ["dynamicquantizematmul_K129_M7_N64", "dynamicquantizematmul_K129_M7_N64_stress",
               "matmulintegertofloat_u8s8_K129_M7_N64", "matmulintegertofloat_u8s8_K129_M7_N64_stress",
               "qgemm_u8s8_K129_M7_N64_float", "qgemm_u8s8_K129_M7_N64_float_stress",
               "quantize_dynamic_matmul_K129_M7_N64", "quantize_dynamic_matmul_K129_M7_N64_stress"]
_NP = {TensorProto.UINT8: np.uint8, TensorProto.INT8: np.int8, TensorProto.FLOAT: np.float32,
       TensorProto.INT32: np.int32}


def _ops(sess):
    return [n.op for n in sess.graph.nodes]


@pytest.mark.skipif(not FIXTURES.exists(), reason=f"onnxruntime AVX2 fixtures not found at {FIXTURES}")
@pytest.mark.parametrize("kernels", ["fast", "golden"])
@pytest.mark.parametrize("case", FLOAT_CASES)
def test_exact_float_order(case, kernels):
    """npusim with exact int32 sums (an exact onnxruntime family, on any machine) + scale_float ==
    the fixtures' exact-arithmetic reference (test_ort_isa checks the recorded AVX2 outputs)."""
    z = np.load(FIXTURES / f"{case}.npz")
    feeds = {k[len("in__"):]: z[k] for k in z.files if k.startswith("in__")}
    sess = npusim.InferenceSession(str(FIXTURES / f"{case}.onnx"), kernels=kernels, ort_isa="avx512vnni")
    assert "host" not in _ops(sess) and "scale_float" in _ops(sess)
    (y,) = sess.run(None, feeds)
    assert y.dtype == z["exact__y"].dtype == np.float32
    np.testing.assert_array_equal(y, z["exact__y"])


def _model(op, inputs, consts, out_type, attrs=None):
    """One com.microsoft node; inputs: [(name, onnx type, shape)] graph inputs; consts: {name: array}."""
    names = [n for n, *_ in inputs]
    node_inputs = [n if (n in names or n in consts) else "" for n in op[1]]
    node = helper.make_node(op[0], node_inputs, ["y"], domain="com.microsoft", **(attrs or {}))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info("y", out_type, None)],
                          [numpy_helper.from_array(v, k) for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    return m.SerializeToString()


def _check(model, feeds, integer=True):
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)
    for kernels in ("fast", "golden"):
        sess = npusim.InferenceSession(model, kernels=kernels)
        assert ("host" not in _ops(sess)) == integer, _ops(sess)
        got = sess.run(None, feeds)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


def _weights(rng, dtype, shape):
    """B of the given type; s8 weights within ±63, so no u8·s8 pair sum leaves int16 on any CPU."""
    return (rng.integers(-63, 64, shape) if dtype == np.int8 else rng.integers(0, 256, shape)).astype(dtype)


@pytest.mark.parametrize("seed", range(12))
def test_dynamic_quantize_matmul_live(seed):
    rng = np.random.default_rng(seed)
    bt = [np.int8, np.uint8][seed % 2]
    m, k, n = int(rng.integers(1, 9)), [1, 2, 31, 64, 129, 300][seed % 6], int(rng.integers(1, 40))
    lead = [(), (2,), (2, 3)][seed % 3]
    per_col = seed % 4 >= 2
    consts = {"b": _weights(rng, bt, (k, n)),
              "b_scale": rng.uniform(1e-3, 0.05, n if per_col else ()).astype(np.float32)}
    if seed % 3:
        consts["b_zero_point"] = _weights(rng, bt, n if per_col else ())
    if seed % 5 != 4:
        consts["bias"] = rng.standard_normal(n).astype(np.float32)
    x = (rng.standard_normal(lead + (m, k)) * rng.uniform(0.1, 10) + [0, 3, -3][seed % 3]).astype(np.float32)
    model = _model(("DynamicQuantizeMatMul", ["a", "b", "b_scale", "b_zero_point", "bias"]),
                   [("a", TensorProto.FLOAT, x.shape)], consts, TensorProto.FLOAT)
    _check(model, {"a": x})


@pytest.mark.parametrize("seed", range(12))
def test_matmul_integer_to_float_live(seed):
    rng = np.random.default_rng(100 + seed)
    at, bt = [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)][seed % 3]  # onnxruntime has no s8·u8
    m, k, n = int(rng.integers(1, 9)), [1, 2, 7, 64, 129, 300][seed % 6], int(rng.integers(1, 40))
    lead = [(), (3,)][seed % 2]
    per_col = seed % 3 != 0
    lo, hi = (0, 255) if at == np.uint8 else (-128, 127)
    a = rng.integers(lo, hi + 1, lead + (m, k)).astype(at)
    consts = {"b": _weights(rng, bt, (k, n)), "a_scale": np.float32(rng.uniform(1e-3, 0.05)),
              "b_scale": rng.uniform(1e-3, 0.05, n if per_col else ()).astype(np.float32)}
    if seed % 2:
        consts["a_zero_point"] = np.array([lo, hi, (lo + hi) // 2][seed % 3], at)
        consts["b_zero_point"] = _weights(rng, bt, n if per_col else ())
    if seed % 4 != 3:
        consts["bias"] = (rng.standard_normal(n) * 10).astype(np.float32)
    model = _model(("MatMulIntegerToFloat", ["a", "b", "a_scale", "b_scale", "a_zero_point", "b_zero_point", "bias"]),
                   [("a", {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}[at], a.shape)], consts,
                   TensorProto.FLOAT)
    _check(model, {"a": a})


@pytest.mark.parametrize("seed", range(12))
def test_qgemm_float_live(seed):
    rng = np.random.default_rng(200 + seed)
    at, bt = [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)][seed % 3]
    m, k, n = int(rng.integers(1, 9)), [1, 2, 31, 64, 129, 300][seed % 6], int(rng.integers(1, 40))
    ta, tb = seed % 2, (seed // 2) % 2
    per_col = seed % 4 >= 2
    lo, hi = (0, 255) if at == np.uint8 else (-128, 127)
    a = rng.integers(lo, hi + 1, (k, m) if ta else (m, k)).astype(at)
    consts = {"a_scale": np.float32(rng.uniform(1e-3, 0.05)), "a_zero_point": np.array([lo, hi, 0][seed % 3], at),
              "b": _weights(rng, bt, (n, k) if tb else (k, n)),
              "b_scale": rng.uniform(1e-3, 0.05, n if per_col else ()).astype(np.float32),
              "b_zero_point": _weights(rng, bt, n if per_col else ())}
    c_shape = [None, (n,), (m, n)][seed % 3]
    if c_shape:
        consts["c"] = rng.integers(-20000, 20001, c_shape).astype(np.int32)
    alpha = [1.0, float(np.float32(rng.uniform(0.25, 2.0)))][seed % 2]
    model = _model(("QGemm", ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "c"]),
                   [("a", {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}[at], a.shape)], consts,
                   TensorProto.FLOAT, {"alpha": alpha, "transA": ta, "transB": tb})
    _check(model, {"a": a})


def test_quantize_dynamic_chain_live(tmp_path):
    """quantize_dynamic's DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul (-> Add bias)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(7)
    k, n = 129, 48
    w = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Add", ["t", "bias"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, n])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "bias")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "f.onnx")
    # reduce_range: 7-bit weights, |w| <= 64, so 255·64·2 < 2^15 (what onnxruntime advises on AVX2)
    quantize_dynamic(tmp_path / "f.onnx", tmp_path / "q.onnx", weight_type=QuantType.QInt8, reduce_range=True)
    q = onnx.load(tmp_path / "q.onnx")
    assert [nd.op_type for nd in q.graph.node if nd.op_type in ("DynamicQuantizeLinear", "MatMulInteger")] == \
        ["DynamicQuantizeLinear", "MatMulInteger"]
    wq = numpy_helper.to_array(next(i for i in q.graph.initializer if i.name.endswith("_quantized")))
    assert 32 < np.abs(wq.astype(int)).max() <= 64
    x = (rng.standard_normal((4, k)) * 2).astype(np.float32)
    _check(q.SerializeToString(), {"x": x})


def test_unsupported_parameters_stay_on_host():
    """A per-row a_scale (onnxruntime rescales its output in a second pass) keeps the node on the
    host, and the result is still onnxruntime's."""
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (5, 16)).astype(np.uint8)
    consts = {"b": _weights(rng, np.int8, (16, 8)), "a_scale": rng.uniform(0.01, 0.02, (5, 1)).astype(np.float32),
              "b_scale": np.float32(0.02)}
    model = _model(("MatMulIntegerToFloat", ["a", "b", "a_scale", "b_scale"]), [("a", TensorProto.UINT8, a.shape)],
                   consts, TensorProto.FLOAT)
    _check(model, {"a": a}, integer=False)


def test_qgemm_y_scale_without_zero_point_stays_on_host():
    """QGemm with y_scale but no y_zero_point: onnxruntime outputs float32, f32(acc)·(alpha·a_s·b_s / y_s)
    (it picks the requantizing form by y_zero_point alone). No integer form here: the node runs on
    the host, with onnxruntime's dtype (it used to become a u8 requantize)."""
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (3, 16)).astype(np.uint8)
    consts = {"a_scale": np.float32(0.02), "a_zero_point": np.array(3, np.uint8), "b": _weights(rng, np.int8, (16, 4)),
              "b_scale": np.float32(0.03), "b_zero_point": np.array(0, np.int8), "y_scale": np.float32(0.01)}
    model = _model(("QGemm", ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "c", "y_scale"]),
                   [("a", TensorProto.UINT8, a.shape)], consts, TensorProto.FLOAT)
    _check(model, {"a": a}, integer=False)
