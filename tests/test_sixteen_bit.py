"""16-bit activations and float16 outputs.

- A16W8 QDQ models made by onnxruntime's own quantizer (QUInt16 / QInt16 activations, QInt8
  weights; opset 21 Q/DQ and the com.microsoft Q/DQ of `UseQDQContribOps`): mode "ort" is
  bit-exact with onnxruntime, dtype included; the 16-bit Q/DQ are integer IR ops in 16-bit storage.
- Mode "npu": the convs, gemms, matmuls, adds and pools onnxruntime runs in float become integer
  layers (TFLite 16x8; no host island left for them), bit-exact with the float64 reference
  (npusim.fakequant).
- float16: DequantizeLinear with a float16 scale returns float16, bit for bit onnxruntime's.
- Kernels: the 16x8 accumulators and TFLite's int64 MultiplyByQuantizedMultiplier against
  independent integer arithmetic; fast == golden (hypothesis, derandomized).
No u8 activation meets s8 weights in an integer kernel here (onnxruntime computes every 16-bit
layer in float), so no test depends on the CPU's u8·s8 pair saturation.
"""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import npusim
from npusim.fakequant import evaluate, mbqm_i64 as ref_mbqm_i64
from npusim.ir import is_quantized, storage
from npusim_kernels.fast import acc64 as facc, fixedpoint as ffp
from npusim_kernels.golden import conv as gconv
from npusim_kernels.golden import acc64 as gacc, fixedpoint as gfp

import onnx
import onnxruntime as ort
from onnx import TensorProto as TP, helper, numpy_helper  # noqa: E402
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None)


# ---------------------------------------------------------------- models

def _model(nodes, inputs, output, inits):
    vi = [helper.make_tensor_value_info(n, TP.FLOAT, s) for n, s in inputs.items()]
    g = helper.make_graph(nodes, "g", vi, [helper.make_tensor_value_info(output, TP.FLOAT, None)],
                          [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _float_models():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.3, (8, 4, 3, 3))
    b = rng.normal(0, 0.1, 8)
    wm = rng.normal(0, 0.3, (16, 10))
    x4 = {"x": [1, 4, 8, 8]}
    pair = {"x1": [1, 4, 5, 5], "x2": [1, 4, 5, 5]}
    mk = helper.make_node
    return {
        "conv": _model([mk("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), mk("Relu", ["c"], ["y"])],
                       x4, "y", {"w": w, "b": b}),
        "conv_strided_group": _model([mk("Conv", ["x", "w2", "b"], ["y"], pads=[0, 1, 2, 1], strides=[2, 1],
                                         dilations=[1, 2], group=2)], x4, "y",
                                     {"w2": rng.normal(0, 0.3, (8, 2, 3, 2)), "b": b}),
        "gemm": _model([mk("Gemm", ["x", "w", "b"], ["y"], transB=1)], {"x": [3, 16]}, "y",
                       {"w": wm.T, "b": rng.normal(0, 0.1, 10)}),
        "matmul": _model([mk("MatMul", ["x", "w"], ["y"])], {"x": [2, 3, 16]}, "y", {"w": wm}),
        "add_mul": _model([mk("Relu", ["x1"], ["a"]), mk("Sigmoid", ["x2"], ["s"]), mk("Add", ["a", "s"], ["t"]),
                           mk("Mul", ["t", "s"], ["y"])], pair, "y", {}),
        "pools": _model([mk("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                         mk("MaxPool", ["c"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
                         mk("AveragePool", ["m"], ["a"], kernel_shape=[2, 2]),
                         mk("GlobalAveragePool", ["a"], ["y"])], x4, "y", {"w": w, "b": b}),
    }


class _Reader(CalibrationDataReader):
    def __init__(self, model, n=8):
        rng = np.random.default_rng(1)
        shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
        self.data = iter([{k: rng.normal(0, 1, s).astype(np.float32) for k, s in shapes.items()} for _ in range(n)])

    def get_next(self):
        return next(self.data, None)


VARIANTS = [("u16", False, False), ("i16", False, True), ("u16", True, True), ("i16", True, False)]  # (act, ms, pc)
FLOATS = list(_float_models())


@pytest.fixture(scope="module")
def a16w8(tmp_path_factory):
    """{(model, act, contrib, per_channel): path} of onnxruntime-quantized A16W8 models."""
    tmp = tmp_path_factory.mktemp("a16w8")
    out = {}
    for name, m in _float_models().items():
        fp = tmp / f"{name}.onnx"
        onnx.save(m, fp)
        for act, ms, pc in VARIANTS:
            q = tmp / f"{name}_{act}{'_ms' if ms else ''}{'_pc' if pc else ''}.onnx"
            quantize_static(str(fp), str(q), _Reader(m), quant_format=QuantFormat.QDQ, per_channel=pc,
                            activation_type=QuantType.QUInt16 if act == "u16" else QuantType.QInt16,
                            weight_type=QuantType.QInt8, extra_options={"UseQDQContribOps": ms})
            out[(name, act, ms, pc)] = q
    return out


def _feeds(path, seed):
    m = onnx.load(str(path))
    rng = np.random.default_rng(seed)
    return {i.name: rng.normal(0, 1.2, [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in m.graph.input}


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "_".join(map(str, v)))
@pytest.mark.parametrize("name", FLOATS)
def test_a16w8_mode_ort_bit_exact_with_onnxruntime(a16w8, name, variant):
    path = a16w8[(name, *variant)]
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sess = npusim.InferenceSession(str(path), mode="ort")
    for seed in range(3):
        f = _feeds(path, seed)
        for got, want in zip(sess.run(None, f), ref.run(None, f)):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    # every QuantizeLinear of a float input to 16 bits is an integer op storing 16 bits
    qs = [n for n in sess.graph.nodes if n.op == "quantize"]
    want = np.dtype(np.uint16 if variant[0] == "u16" else np.int16)
    assert qs and all(n.attrs["dtype"] == variant[0] and storage(n.attrs["dtype"]) == want for n in qs)


def test_sixteen_bit_qdq_are_integer_ir_ops(a16w8):
    """With com.microsoft Q/DQ (not absorbed into islands), every Q/DQ of the model is an IR op."""
    for act, ms, pc in [v for v in VARIANTS if v[1]]:
        path = a16w8[("conv", act, ms, pc)]
        sess = npusim.InferenceSession(str(path), mode="ort")
        ops = [n.op for n in sess.graph.nodes]
        assert ops.count("quantize") == 2 and ops.count("dequantize") == 4  # x, y; x, w, b, y
        assert [op.split(":")[0] for n in sess.graph.host_nodes() for op in n.attrs["ops"]] == ["Conv"]
        q16 = [n for n in sess.graph.nodes if n.op in ("quantize", "dequantize")
               and sess.graph.tensors[n.outputs[0] if n.op == "quantize" else n.inputs[0]].dtype == act]
        assert len(q16) == 4  # Q, DQ of the input; Q, DQ of the output
        vals = sess.run_all(_feeds(path, 0))
        for n in q16:
            t = n.outputs[0] if n.op == "quantize" else n.inputs[0]
            assert vals[t].dtype == storage(act)


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "_".join(map(str, v)))
@pytest.mark.parametrize("name", FLOATS)
def test_a16w8_mode_npu_integer_and_bit_exact_with_float64_reference(a16w8, name, variant, rounding):
    path = a16w8[(name, *variant)]
    sess = npusim.InferenceSession(str(path), mode="npu", rounding=rounding)
    host_ops = {op.split(":")[0] for n in sess.graph.host_nodes() for op in n.attrs["ops"]}
    assert not host_ops & {"Conv", "Gemm", "MatMul", "MatMulNBits", "Add", "MaxPool", "AveragePool",
                           "GlobalAveragePool"}, host_ops
    if name in ("conv_strided_group", "gemm", "matmul", "pools"):
        assert not sess.host_fallback  # the whole A16W8 model is integer
    wide = [n for n in sess.graph.nodes if n.attrs.get("acc") == "i64"]
    if name in ("conv", "conv_strided_group", "gemm", "matmul", "pools"):
        assert len(wide) == 1 and sess.graph.tensors[wide[0].outputs[0]].dtype == "i64"
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed in range(2):
        f = _feeds(path, seed)
        got, want = sess.run_all(f), evaluate(sess.graph, f, rounding)
        compared = 0
        for t, tensor in sess.graph.tensors.items():
            if t in want and t in got and (is_quantized(tensor.dtype) or tensor.dtype == "i64"):
                assert got[t].dtype == want[t].dtype, t
                np.testing.assert_array_equal(got[t], want[t], err_msg=t)
                compared += 1
        assert compared >= 2
        # one 16x8 layer: its output stays within 2 LSBs of onnxruntime's float computation (the
        # Q0.15 multiplier is within 2^-16 relative of the real one; each side rounds once)
        out = sess.graph.outputs[0]
        lsb = float(next(n for n in sess.graph.nodes if out in n.outputs).attrs["scale"].reshape(-1)[0]) \
            if any(out in n.outputs and n.op == "dequantize" for n in sess.graph.nodes) else None
        if name in ("conv", "conv_strided_group", "gemm"):
            diff = np.abs(got[out].astype(np.float64) - ref.run(None, f)[0].astype(np.float64)).max()
            assert diff <= 2.001 * lsb, (diff, lsb)


def test_a16w8_matmul_npu_within_one_lsb_of_exact(a16w8):
    """onnxruntime's optimizer fuses DequantizeLinear(int8 W) -> MatMul into an 8-bit MatMulNBits
    (accuracy_level 4: it quantizes the 16-bit activations to int8 blocks), far from the exact
    product; mode "npu" unpacks its weights into a 16x8 matmul, within 1 LSB of exact."""
    for variant in VARIANTS:
        path = a16w8[("matmul", *variant)]
        init = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in onnx.load(str(path)).graph.initializer}
        f = _feeds(path, 4)
        lo, hi = (0, 65535) if variant[0] == "u16" else (-32768, 32767)
        xq = np.clip(np.rint(f["x"] / init["x_scale"].astype(np.float32)) + init["x_zero_point"], lo, hi)  # as ORT
        w_axis = (1,) if init["w_scale"].size > 1 else ()
        w = (init["w_quantized"] - init["w_zero_point"]) * init["w_scale"].reshape((1,) * len(w_axis) + (-1,))
        exact = ((xq - init["x_zero_point"]) * init["x_scale"]) @ w
        y = np.clip(np.rint(exact / init["y_scale"]) + init["y_zero_point"], lo, hi)
        want = (y - init["y_zero_point"]) * init["y_scale"]
        got = npusim.InferenceSession(str(path), mode="npu").run(None, f)[0]
        assert np.abs(got - want).max() <= 1.001 * float(init["y_scale"])


MIXED = {  # onnxruntime's mixed precision: one tensor quantized twice, each reader gets its own type
    "s8_to_i16": (QuantType.QInt8, {"r1": [{"quant_type": QuantType.QInt8, "convert": {
        "quant_type": QuantType.QInt16, "recv_nodes": {"add", "mul"}}}]}),
    "u16_to_u8": (QuantType.QUInt16, {"r1": [{"quant_type": QuantType.QUInt16,
                                              "convert": {"quant_type": QuantType.QUInt8, "recv_nodes": {"conv2"}}}]}),
    "i16_symmetric": (QuantType.QInt16, {}),
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Conv -> Relu -> {Conv, Add, Mul} quantized by onnxruntime with mixed 8/16-bit activations
    (s8 where 8-bit layers run on onnxruntime's integer kernels: no u8·s8 pair saturation)."""
    rng = np.random.default_rng(2)
    mk = helper.make_node
    m = _model([mk("Conv", ["x", "w"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
                mk("Relu", ["c1"], ["r1"], name="relu1"), mk("Conv", ["r1", "w2"], ["c2"], name="conv2"), mk("Add", ["r1", "c2"], ["a"], name="add"),
                mk("Mul", ["a", "r1"], ["y"], name="mul")], {"x": [1, 4, 8, 8]}, "y",
               {"w": rng.normal(0, 0.3, (8, 4, 3, 3)), "w2": rng.normal(0, 0.3, (8, 8, 1, 1))})
    tmp = tmp_path_factory.mktemp("mixed")
    onnx.save(m, tmp / "float.onnx")
    out = {}
    for name, (act, overrides) in MIXED.items():
        out[name] = tmp / f"{name}.onnx"
        quantize_static(str(tmp / "float.onnx"), str(out[name]), _Reader(m), quant_format=QuantFormat.QDQ,
                        activation_type=act, weight_type=QuantType.QInt8,
                        extra_options={"TensorQuantOverrides": overrides, "ActivationSymmetric": not overrides})
    return out


@pytest.mark.parametrize("name", list(MIXED))
def test_mixed_precision_ort_bit_exact_and_npu_bit_exact_with_reference(mixed, name):
    """Islands that are partly lowered in mode npu leave smaller islands that still run."""
    path = str(mixed[name])
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ort_sess = npusim.InferenceSession(path, mode="ort")
    npu_sess = npusim.InferenceSession(path, mode="npu")
    host_ops = [len(s.graph.host_nodes()) and sum(len(n.attrs["ops"]) for n in s.graph.host_nodes())
                for s in (ort_sess, npu_sess)]
    assert host_ops[1] < host_ops[0], host_ops  # the 16-bit layers left the islands
    for seed in range(2):
        f = _feeds(path, seed)
        for got, want in zip(ort_sess.run(None, f), ref.run(None, f)):
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        got, want = npu_sess.run_all(f), evaluate(npu_sess.graph, f, "double")
        quantized = [t for t, v in npu_sess.graph.tensors.items() if is_quantized(v.dtype) and t in want and t in got]
        assert len(quantized) >= 4
        for t in quantized:
            np.testing.assert_array_equal(got[t], want[t], err_msg=t)
    if name == "i16_symmetric":  # zero points 0: the Mul fits int32, the Relu is an exact shift
        assert not npu_sess.host_fallback and not npu_sess.graph.host_nodes()


@pytest.mark.parametrize("qtype,zps", [(TP.INT16, (-700, 0)), (TP.UINT16, (30000, 31000)), (TP.INT16, (0, 0))])
def test_sixteen_bit_relu_same_scale_is_integer_and_equals_onnxruntime(qtype, zps):
    """DQ -> Relu -> Q with one scale: mode npu's integer round_shift equals onnxruntime's float."""
    np_q = helper.tensor_dtype_to_np_dtype(qtype).type
    T = numpy_helper.from_array
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "zx"], ["xd"]), helper.make_node("Relu", ["xd"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s", "zy"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "s", "zy"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [2, 300])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)],
                          [T(np.array(3.1e-4, np.float32), "s"), T(np.array(zps[0], np_q), "zx"),
                           T(np.array(zps[1], np_q), "zy")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    data = m.SerializeToString()
    x = np.random.default_rng(5).normal(0, 6, (2, 300)).astype(np.float32)
    sess = npusim.InferenceSession(data, mode="npu")
    assert not sess.host_fallback and "round_shift" in [n.op for n in sess.graph.nodes]
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], want)


# ---------------------------------------------------------------- float16

@pytest.mark.parametrize("qtype", [TP.UINT8, TP.INT8, TP.UINT16, TP.INT16])
def test_float16_quantize_dequantize_keep_onnxruntime_dtype_and_bits(qtype):
    np_q = helper.tensor_dtype_to_np_dtype(qtype).type
    info = np.iinfo(np_q)
    zp = np_q((int(info.min) + int(info.max)) // 3)
    scale = np.float16(0.0123 if info.bits == 8 else 0.00021)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT16, [2, 3, 40])],
                          [helper.make_tensor_value_info("y", TP.FLOAT16, None),
                           helper.make_tensor_value_info("q", qtype, None)],
                          [numpy_helper.from_array(np.array(scale), "s"), numpy_helper.from_array(np.array(zp), "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    data = m.SerializeToString()
    rng = np.random.default_rng(int(qtype))
    x = (rng.normal(0, 1.0, (2, 3, 40)) * float(scale) * (info.max - info.min) / 4).astype(np.float16)
    x.reshape(-1)[:6] = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1e4], np.float32) * np.float32(scale)  # ties, saturation
    sess = npusim.InferenceSession(data)
    assert [n.op for n in sess.graph.nodes] == ["quantize", "dequantize"]  # integer, no host island
    assert sess.get_outputs()[0].type == "tensor(float16)"
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for kernels in ("fast", "golden"):
        got = npusim.InferenceSession(data, kernels=kernels).run(None, {"x": x})
        for g_, w_ in zip(got, want):
            assert g_.dtype == w_.dtype
            np.testing.assert_array_equal(g_.view(np.uint8), w_.view(np.uint8))


# ---------------------------------------------------------------- kernels

def _mbqm_i64_exact(x, m0, n):
    """TFLite's int64 MBQM in Python integers: rm = (m0 + 2^15) >> 16 capped at 0x7FFF,
    floor(x·rm / 2^(15+n) + 1/2), saturated to int32."""
    rm = 0x7FFF if m0 >= 0x7FFF0000 else (m0 + (1 << 15)) >> 16
    v = Fraction(x * rm, 2 ** (15 + n)) + Fraction(1, 2)
    return max(min(v.__floor__(), 2 ** 31 - 1), -(2 ** 31))


EDGE_X = [0, 1, -1, 2 ** 47 - 1, -(2 ** 47) + 1, 2 ** 31, -(2 ** 31), 12345, -12345]
EDGE_M0 = [0, 1 << 30, (1 << 30) + 1, 0x7FFEFFFF, 0x7FFF0000, 2 ** 31 - 1, 1518500250]


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from(EDGE_X), st.integers(-(2 ** 47) + 1, 2 ** 47 - 1)), min_size=1, max_size=8),
       st.one_of(st.sampled_from(EDGE_M0), st.integers(0, 2 ** 31 - 1)), st.integers(-14, 50))
def test_mbqm_i64_is_tflite_int64_multiply_by_quantized_multiplier(xs, m0, n):
    x = np.array(xs, np.int64)
    want = np.array([_mbqm_i64_exact(int(v), m0, n) for v in xs], np.int64)
    np.testing.assert_array_equal(gfp.mbqm_i64(x, m0, n), want)
    np.testing.assert_array_equal(ffp.mbqm_i64(x, m0, n), want)
    np.testing.assert_array_equal(ref_mbqm_i64(x.astype(np.float64), m0, n), want.astype(np.float64))


def test_mbqm_i64_rejects_out_of_range():
    with pytest.raises(ValueError, match="mbqm_i64 x"):
        gfp.mbqm_i64(np.array([2 ** 47]), 1 << 30, 0)
    with pytest.raises(ValueError, match="total shift"):
        ffp.mbqm_i64(np.array([1]), 1 << 30, -15)


@SETTINGS
@given(st.integers(0, 2 ** 31), st.sampled_from([np.uint16, np.int16, np.uint8, np.int8]), st.booleans(),
       st.sampled_from([(1, 1), (2, 1), (2, 3)]), st.sampled_from([(1, 1), (1, 2)]), st.sampled_from([1, 2]))
def test_conv_acc_i64_fast_eq_golden_and_equals_int32_conv_where_it_fits(seed, dt, per_channel, strides, dil, group):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dt)
    x = rng.integers(info.min, int(info.max) + 1, (2, 4, 7, 6)).astype(dt)
    x.reshape(-1)[:4] = [info.min, info.max, info.min, info.max]
    w = rng.integers(-128, 128, (6, 4 // group, 3, 2)).astype(np.int8)
    w.reshape(-1)[:2] = [-128, 127]
    wz = rng.integers(-3, 4, 6) if per_channel else np.int64(0)
    xz = int(rng.integers(info.min, int(info.max) + 1))
    bias = rng.integers(-2 ** 40, 2 ** 40, 6)
    pads = tuple(int(p) for p in rng.integers(0, 3, 4))
    g = gacc.conv_acc_i64(x, xz, w, wz, bias, strides, pads, dil, group)
    f = facc.conv_acc_i64(x, xz, w, wz, bias, strides, pads, dil, group)
    assert g.dtype == f.dtype == np.int64
    np.testing.assert_array_equal(f, g)
    if info.bits == 8:  # the int32 golden conv (written independently) agrees where int32 holds
        small = rng.integers(-1000, 1000, 6).astype(np.int32)
        want = gconv.conv_acc(x, xz, w, np.broadcast_to(wz, (6,)).astype(np.int32), small, strides, pads, dil, group)
        np.testing.assert_array_equal(gacc.conv_acc_i64(x, xz, w, wz, small, strides, pads, dil, group), want)


@SETTINGS
@given(st.integers(0, 2 ** 31), st.sampled_from([np.uint16, np.int16]), st.integers(1, 300))
def test_matmul_acc_i64_fast_eq_golden_exact(seed, dt, k):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dt)
    a = rng.integers(info.min, int(info.max) + 1, (2, 3, k)).astype(dt)
    b = rng.integers(-128, 128, (k, 5)).astype(np.int8)
    az, bz, bias = int(rng.integers(info.min, int(info.max) + 1)), rng.integers(-2, 3, 5), rng.integers(-9, 9, 5)
    g = gacc.matmul_acc_i64(a, az, b, bz, bias)
    want = np.array([[[sum((int(a[i, j, t]) - az) * (int(b[t, c]) - int(bz[c])) for t in range(k)) + int(bias[c])
                       for c in range(5)] for j in range(3)] for i in range(2)], np.int64)
    np.testing.assert_array_equal(g, want)
    np.testing.assert_array_equal(facc.matmul_acc_i64(a, az, b, bz, bias), want)


@SETTINGS
@given(st.integers(0, 2 ** 31), st.sampled_from([np.int16, np.uint16, np.int8]), st.booleans())
def test_requantize_fixed_i64_fast_eq_golden(seed, dt, per_channel):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dt)
    acc = rng.integers(-(2 ** 46), 2 ** 46, (2, 5, 3, 4))
    acc.reshape(-1)[:2] = [2 ** 47 - 1, -(2 ** 47) + 1]
    c = 5 if per_channel else 1
    m0 = rng.integers(1 << 30, 2 ** 31, c).astype(np.int32)
    n = rng.integers(10, 40, c).astype(np.int32)
    y_zp = int(rng.integers(info.min, int(info.max) + 1))
    g = gfp.requantize_fixed_i64(acc, m0, n, 1, y_zp, int(info.min), int(info.max), dt)
    f = ffp.requantize_fixed_i64(acc, m0, n, 1, y_zp, int(info.min), int(info.max), dt)
    assert g.dtype == f.dtype == dt
    np.testing.assert_array_equal(f, g)
    ch = 1 if per_channel else 0
    want = np.clip(np.array([_mbqm_i64_exact(int(acc[0, ch, 0, 0]), int(m0[ch if per_channel else 0]),
                                             int(n[ch if per_channel else 0]))]) + y_zp, info.min, info.max)
    assert int(g[0, ch, 0, 0]) == int(want[0])


@SETTINGS
@given(st.integers(0, 2 ** 31), st.sampled_from(["add", "mul"]), st.sampled_from(["i16", "u16"]),
       st.sampled_from(["double", "single"]), st.sampled_from([((3, 5), (3, 5)), ((2, 3, 4), (3, 1)), ((4,), ())]))
def test_sixteen_bit_add_mul_fast_eq_golden_eq_float64_reference(seed, op, dt, rounding, shapes):
    """TFLite's int16 Add (L = 15) and Mul on 16-bit operands: fast == golden == fakequant. A
    uint16 Mul cannot keep its products in int32 (65535² > 2^31): both kernels refuse it."""
    from npusim.ir import Graph, Node, qrange

    rng = np.random.default_rng(seed)
    lo, hi = qrange(dt)
    npdt = storage(dt)
    zps = [int(rng.integers(lo, hi + 1)) for _ in range(3)]
    if op == "mul":
        zps[:2] = [0, 0]  # TFLite's int16 zero points: the product stays in int32
    a, b = (rng.integers(lo, hi + 1, s).astype(npdt) for s in shapes)
    a.reshape(-1)[:1] = hi
    scales = [float(np.float32(2.0 ** rng.integers(-14, -6) * rng.uniform(1, 2))) for _ in range(3)]
    params = gfp.add_params(*scales, gfp.add_left_shift(npdt)) if op == "add" else gfp.mul_params(*scales)
    args = (a, zps[0], b, zps[1], params, zps[2], lo, hi, npdt, rounding)
    if op == "mul" and dt == "u16":
        for k in (gfp, ffp):
            with pytest.raises(ValueError, match="can leave int32"):
                k.fixed_mul(*args)
        return
    g = getattr(gfp, f"fixed_{op}")(*args)
    np.testing.assert_array_equal(getattr(ffp, f"fixed_{op}")(*args), g)
    attrs = {"a_scale": np.float32(scales[0]), "a_zp": zps[0], "b_scale": np.float32(scales[1]), "b_zp": zps[1],
             "y_scale": np.float32(scales[2]), "y_zp": zps[2], "qmin": lo, "qmax": hi, "dtype": dt}
    graph = Graph("t", (), ("y",), {}, (Node(op, "n", ("a", "b"), ("y",), attrs),), {"a": a, "b": b})
    want = evaluate(graph, {}, rounding)["y"]
    assert want.dtype == g.dtype == npdt
    np.testing.assert_array_equal(g, want)


@SETTINGS
@given(st.integers(0, 2 ** 31), st.sampled_from(["i16", "u16"]), st.sampled_from(["double", "single"]),
       st.booleans(), st.booleans())
def test_sixteen_bit_pools_fast_eq_golden_eq_float64_reference(seed, dt, rounding, include_pad, ceil):
    """avgpool / global_avgpool on 16-bit x: integer window sums, one multiplier per count."""
    from npusim.ir import Graph, Node, qrange

    rng = np.random.default_rng(seed)
    lo, hi = qrange(dt)
    npdt = storage(dt)
    x = rng.integers(lo, hi + 1, (2, 3, 7, 6)).astype(npdt)
    x.reshape(-1)[:3] = [lo, hi, hi]
    x_zp, y_zp = (int(v) for v in rng.integers(lo, hi + 1, 2))
    xs, ys = (np.float32(rng.uniform(1e-5, 1e-3)) for _ in range(2))
    k, st_, pads = (3, 2), (2, 2), (1, 0, 1, 1)
    attrs = {"x_scale": xs, "x_zp": x_zp, "y_scale": ys, "y_zp": y_zp, "qmin": lo, "qmax": hi, "dtype": dt,
             "kernel_shape": k, "strides": st_, "pads": pads, "dilations": (1, 1), "auto_pad": "NOTSET",
             "count_include_pad": int(include_pad), "ceil_mode": int(ceil)}
    m0, n = gfp.avgpool_params(xs, ys, k)
    args = (x, x_zp, k, st_, pads, int(include_pad), int(ceil), m0, n, y_zp, lo, hi, npdt, rounding)
    g = gfp.fixed_avgpool(*args)
    np.testing.assert_array_equal(ffp.fixed_avgpool(*args), g)
    graph = Graph("t", (), ("y",), {}, (Node("avgpool", "n", ("x",), ("y",), attrs),), {"x": x})
    np.testing.assert_array_equal(evaluate(graph, {}, rounding)["y"], g)
    gm0, gn = gfp.global_avgpool_params(xs, ys, 42)
    g = gfp.fixed_global_avgpool(x, x_zp, gm0, gn, y_zp, lo, hi, npdt, rounding)
    np.testing.assert_array_equal(ffp.fixed_global_avgpool(x, x_zp, gm0, gn, y_zp, lo, hi, npdt, rounding), g)
    graph = Graph("t", (), ("y",), {}, (Node("global_avgpool", "n", ("x",), ("y",), attrs),), {"x": x})
    np.testing.assert_array_equal(evaluate(graph, {}, rounding)["y"], g)
    assert g.dtype == npdt and g.shape == (2, 3, 1, 1)


def test_sixteen_bit_pool_sum_that_can_leave_int32_is_refused():
    x = np.zeros((1, 1, 200, 200), np.uint16)  # 40000 values of up to 65535
    for k in (gfp, ffp):
        with pytest.raises(ValueError, match="can leave int32"):
            k.fixed_global_avgpool(x, 0, 1 << 30, 20, 0, 0, 65535, np.uint16, "double")


def _qdq_conv_model(x_dt, k_in, kh, per_channel, x_zp, y_zp, w, w_scale, x_scale, y_scale, bias):
    """x:f32 -> Q(x_dt) -> DQ -> Conv(DQ(w:i8), DQ(bias:i32)) -> Q(x_dt) -> DQ, opset 21."""
    T = numpy_helper.from_array
    np_q = storage(x_dt).type
    m = w.shape[0]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
             helper.make_node("Conv", ["xd", "wd", "bd"], ["c"], pads=[kh // 2] * 4),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    ws = np.asarray(w_scale, np.float32).reshape(-1 if per_channel else ())
    inits = [T(np.float32(x_scale), "xs"), T(np.array(x_zp, np_q), "xz"), T(w, "w"), T(ws, "ws"),
             T(np.zeros(ws.shape, np.int8), "wz"), T(bias, "b"),
             T((np.float32(x_scale) * np.broadcast_to(ws, (m,))).astype(np.float32), "bs"),
             T(np.zeros(m, np.int32), "bz"), T(np.float32(y_scale), "ys"), T(np.array(y_zp, np_q), "yz")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [1, k_in, 5, 4])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model.SerializeToString()


@settings(max_examples=12, deadline=None)
@given(st.data(), st.sampled_from(["u16", "i16"]), st.integers(1, 34), st.sampled_from([1, 3]), st.booleans())
def test_random_a16w8_conv_ort_and_npu(data, x_dt, k_in, kh, per_channel):
    """Random single-conv A16W8 QDQ models, zero points at the extremes, weights near ±127 of one
    sign, K = k_in·kh² from 1 to 306 (odd and even): mode ort equals onnxruntime (dtype included);
    mode npu runs the conv as a 16x8 layer, bit-exact with the float64 reference."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 31)))
    lo, hi = (0, 65535) if x_dt == "u16" else (-32768, 32767)
    x_zp = data.draw(st.sampled_from([lo, hi, (lo + hi) // 2, lo + 1]))
    y_zp = data.draw(st.sampled_from([lo, hi, (lo + hi) // 2]))
    m = 3
    w = rng.integers(100, 128, (m, k_in, kh, kh)) * data.draw(st.sampled_from([1, -1]))
    w = np.clip(w, -127, 127).astype(np.int8)
    w_scale = rng.uniform(1e-3, 1e-2, m if per_channel else 1)
    x_scale = float(rng.uniform(1e-5, 1e-4))
    acc_real = x_scale * float(np.max(w_scale)) * 127 * k_in * kh * kh * (hi - lo)
    y_scale = float(acc_real / (hi - lo) / rng.uniform(0.5, 4))
    bias = rng.integers(-2 ** 20, 2 ** 20, m).astype(np.int32)
    data_bytes = _qdq_conv_model(x_dt, k_in, kh, per_channel, x_zp, y_zp, w, w_scale, x_scale, y_scale, bias)
    x = (rng.uniform(-1.2, 1.2, (1, k_in, 5, 4)) * x_scale * (hi - lo)).astype(np.float32)  # some saturate
    ref = ort.InferenceSession(data_bytes, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = npusim.InferenceSession(data_bytes, mode="ort").run(None, {"x": x})[0]
    assert got.dtype == ref.dtype
    np.testing.assert_array_equal(got, ref)
    sess = npusim.InferenceSession(data_bytes, mode="npu")
    assert not sess.host_fallback and any(n.attrs.get("acc") == "i64" for n in sess.graph.nodes)
    mine, want = sess.run_all({"x": x}), evaluate(sess.graph, {"x": x})
    for t, v in sess.graph.tensors.items():
        if t in want and t in mine and (is_quantized(v.dtype) or v.dtype == "i64"):
            np.testing.assert_array_equal(mine[t], want[t], err_msg=t)
