"""Property test (issue 10): random single-op models of every op the front end takes, npusim mode
"ort" (fast kernels) against the onnxruntime on this machine, bit for bit, dtype included.

Each example builds one ONNX model with onnx.helper (QOperator ops, and the QDQ forms
DequantizeLinear -> op -> QuantizeLinear that onnxruntime's optimizer fuses), runs it in
onnxruntime's default session and in npusim, and requires (1) the model to import as integer IR
ops with no host op (a comparison of onnxruntime with itself would prove nothing) and (2) every
output equal, dtype included. Drawn: u8/s8 activations, s8/u8 weights, per-tensor and
per-channel scales, reduction lengths K from 1 to 300 (odd and even), zero points at the type
extremes, strides / pads / dilations / auto_pad / groups / depthwise / 1-D for convolutions.

Saturation. On CPUs without VNNI, onnxruntime's u8 x s8 GEMM and conv kernels add adjacent
products into a saturating int16 (npusim.ortisa / `ort_isa`). The draw `saturating=False` keeps
such ops exact on every CPU: s8 weights within ±63, so |a0·b0 + a1·b1| <= 2·255·63 < 2^15.
The draw `saturating=True` (u8 activations 200..255, s8 weights ±(100..127) with the same sign
for each pair of adjacent reduction indices) is where the saturation bites: on a CPU without
VNNI it checks the emulation against the live onnxruntime (on a VNNI CPU both sides are exact;
the AVX2 arithmetic is then checked against recorded outputs in test_ort_isa.py).

Settings: the suite's derandomized profile (tests/conftest.py), a fixed number of examples per test;
the file runs in about 30 s here (about 50 s with the saturating draw).
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, note, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import npusim

PROFILE = dict(deadline=None, suppress_health_check=list(HealthCheck))
DRAWS = [pytest.param(False, id="exact-range"), pytest.param(True, id="saturating")]

ONNX_TYPE = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
             np.dtype(np.int32): TensorProto.INT32, np.dtype(np.float32): TensorProto.FLOAT}
RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}
U8, S8 = np.dtype(np.uint8), np.dtype(np.int8)
# (activation, weight) element types onnxruntime's integer GEMM / conv kernels take
ACT_WEIGHT = [(U8, S8), (U8, U8), (S8, S8)]


# ---------------------------------------------------------------- building and checking

class Case:
    """One model under construction: nodes, graph inputs (fed), initializers, outputs."""

    def __init__(self, rng):
        self.rng = rng
        self.nodes, self.inputs, self.consts, self.outputs = [], {}, {}, []

    def feed(self, name, x):
        self.inputs[name] = x
        return name

    def const(self, name, v):
        self.consts[name] = np.asarray(v)
        return name

    def node(self, op, ins, outs, domain="", **attrs):
        self.nodes.append(helper.make_node(op, ins, outs, domain=domain, name=f"{op}_{len(self.nodes)}", **attrs))

    def model(self) -> bytes:
        inputs = [helper.make_tensor_value_info(k, ONNX_TYPE[v.dtype], v.shape) for k, v in self.inputs.items()]
        g = helper.make_graph(self.nodes, "g", inputs,
                              [onnx.ValueInfoProto(name=o) for o in self.outputs],
                              [numpy_helper.from_array(v, k) for k, v in self.consts.items()])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
        m.ir_version = 10
        return m.SerializeToString()

    def check(self, *ir_ops):
        """onnxruntime (default session) == npusim mode "ort", fast kernels; the model imports as
        integer IR ops including `ir_ops`, with no host op."""
        model = self.model()
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        want = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"]).run(None, self.inputs)
        sess = npusim.InferenceSession(model, mode="ort", kernels="fast")
        ops = [n.op for n in sess.graph.nodes]
        note(f"npusim IR ops: {ops}")
        assert "host" not in ops and set(ir_ops) <= set(ops), f"expected integer ops {ir_ops}, got {ops}"
        got = sess.run(None, self.inputs)
        for name, g, w in zip(self.outputs, got, want):
            assert g.dtype == w.dtype, f"{name}: dtype {g.dtype}, onnxruntime {w.dtype}"
            if not np.array_equal(g, w):
                d = np.abs(g.astype(np.float64) - w.astype(np.float64))
                raise AssertionError(f"{name}: {np.count_nonzero(d)} of {d.size} differ, max |diff| {d.max()}, "
                                     f"first at {np.unravel_index(np.argmax(d > 0), d.shape)}: npusim "
                                     f"{g.flat[np.argmax(d > 0)]}, onnxruntime {w.flat[np.argmax(d > 0)]}")


def zero_point(draw, dt, what=""):
    lo, hi = RANGE[dt]
    return np.array(draw(st.sampled_from([lo, hi, (lo + hi + 1) // 2, lo + 1, hi - 1]) | st.integers(lo, hi),
                         label=f"{what}_zp"), dt)


def activations(rng, dt, shape, saturating):
    lo, hi = RANGE[dt]
    if saturating and dt == U8:
        return rng.integers(200, 256, shape).astype(dt)
    return rng.integers(lo, hi + 1, shape).astype(dt)


def weights(rng, dt, shape, saturating, k_axis=None, act=U8):
    """Weights of `dt` for activations of `act`. With u8 activations, s8 weights lie within ±63
    (no saturating pair), or, saturating, within ±(100..127) with one sign for each pair
    (2j, 2j + 1) along the reduction axis `k_axis`. u8 weights and s8 x s8 take the whole range."""
    lo, hi = RANGE[dt]
    if dt == U8 or act == S8:
        return rng.integers(lo, hi + 1, shape).astype(dt)
    if not saturating:
        return rng.integers(-63, 64, shape).astype(dt)
    mag = rng.integers(100, 128, shape)
    sign_shape = list(shape)
    sign_shape[k_axis] = (shape[k_axis] + 1) // 2
    sign = np.repeat(rng.choice([-1, 1], sign_shape), 2, axis=k_axis).take(range(shape[k_axis]), axis=k_axis)
    return (mag * sign).astype(dt)


def scale(draw, what, lo=1e-3, hi=0.1, ties=False):
    """A scale in [lo, hi]; a power of two when `ties` (or when drawn so)."""
    pow2 = st.sampled_from([2.0 ** k for k in range(int(np.ceil(np.log2(lo))), int(np.floor(np.log2(hi))) + 1)])
    return np.float32(draw(pow2 if ties else pow2 | st.floats(lo, hi), label=f"{what}_scale"))


def scales(draw, rng, what, n, per_channel, ties=False):
    if not per_channel:
        return scale(draw, what, ties=ties)
    if ties:
        return (2.0 ** rng.integers(-9, -4, n)).astype(np.float32)
    return rng.uniform(1e-3, 0.05, n).astype(np.float32)


def out_scale(draw, real_step, ties=False):
    """An output scale around the typical size of the result, so that some outputs clip and most
    do not. With `ties` a power of two: with power-of-two input scales the requantization
    multiplier is then 2^-k (k about 5..11 here), and about one result in 2^k is an exact tie."""
    if ties:
        return np.float32(2.0 ** (np.round(np.log2(real_step)) - draw(st.sampled_from([3, 5, 7]), label="y_log2")))
    return np.float32(real_step * draw(st.sampled_from([0.05, 0.3, 1.0, 3.0]), label="y_scale_factor"))


def draw_ties(draw):
    """Power-of-two scales throughout, so that the float requantization meets exact ties."""
    return draw(st.booleans(), label="power_of_two_scales")


def k_split(draw, k_max=300):
    """A reduction length: small, around 8/16/32/64/128/256 ± 1, or anything up to k_max."""
    return draw(st.sampled_from([1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257,
                                 299, 300]) | st.integers(1, k_max), label="K")


# ---------------------------------------------------------------- convolutions

def conv_geometry(draw):
    """(spatial dims, kernel, strides, dilations, pads, auto_pad, input spatial size)."""
    nd = draw(st.sampled_from([2, 2, 1]), label="spatial_dims")
    k = tuple(draw(st.integers(1, 5), label="kernel") for _ in range(nd))
    s = tuple(draw(st.integers(1, 3), label="stride") for _ in range(nd))
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]), label="auto_pad")
    # onnxruntime refuses dilation with SAME_UPPER / SAME_LOWER
    d = tuple(draw(st.integers(1, 2), label="dilation") if not auto_pad.startswith("SAME") else 1 for _ in range(nd))
    pads = tuple(draw(st.integers(0, 2), label="pad") for _ in range(2 * nd)) if auto_pad == "NOTSET" else None
    span = [dd * (kk - 1) + 1 for kk, dd in zip(k, d)]  # the dilated window
    lo = span if auto_pad == "VALID" else [1] * nd  # smallest input: SAME_* pads as needed
    if auto_pad == "NOTSET":  # explicit pads, each smaller than the window; at least one output
        pads = tuple(min(p, span[i % nd] - 1) for i, p in enumerate(pads))
        lo = [max(1, sp - pads[i] - pads[i + nd]) for i, sp in enumerate(span)]
    size = tuple(draw(st.integers(lo[i], lo[i] + 5), label="in_size") for i in range(nd))
    return nd, k, s, d, pads, auto_pad, size


def conv_attrs(k, s, d, pads, auto_pad, group):
    a = dict(kernel_shape=list(k), strides=list(s), dilations=list(d), group=group)
    if auto_pad == "NOTSET":
        a["pads"] = list(pads)
    else:
        a["auto_pad"] = auto_pad
    return a


def draw_conv(draw, rng, saturating, xt, wt):
    nd, k, s, d, pads, auto_pad, size = conv_geometry(draw)
    kind = draw(st.sampled_from(["plain", "grouped", "depthwise"]), label="group_kind")
    taps = int(np.prod(k))
    cg = 1 if kind == "depthwise" else max(1, min(k_split(draw) // taps, 300 // taps))
    # ConvSym kernels need 16+ output channels (depthwise: 16+ channels); fewer take the GEMM paths
    group = 1 if kind == "plain" else draw(st.integers(2, 4) if kind == "grouped" else st.sampled_from([3, 16, 24, 32])
                                          | st.integers(1, 48), label="group" if kind == "grouped" else "channels")
    mg = 1 if kind == "depthwise" else draw(st.sampled_from([1, 8, 16, 32]) | st.integers(1, 40), label="out_per_group")
    n = draw(st.integers(1, 2), label="batch")
    x = activations(rng, xt, (n, cg * group) + size, saturating)
    # w (M, Cg, *k); the reduction order onnxruntime pairs along is (taps, Cg) with Cg fastest
    w = weights(rng, wt, (mg * group, cg) + k, saturating, k_axis=1, act=xt)
    note(f"conv {nd}-D x {x.shape} {xt} w {w.shape} {wt} group {group} kernel {k} strides {s} dilations {d} "
         f"pads {pads} auto_pad {auto_pad}")
    return x, w, conv_attrs(k, s, d, pads, auto_pad, group)


@pytest.mark.parametrize("saturating", DRAWS)
@settings(max_examples=150, **PROFILE)
@given(data=st.data())
def test_qlinearconv(saturating, data):
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    xt, wt = draw(st.sampled_from(ACT_WEIGHT), label="types")
    x, w, attrs = draw_conv(draw, c.rng, saturating, xt, wt)
    m = w.shape[0]
    per_channel, ties = draw(st.booleans(), label="per_channel"), draw_ties(draw)
    x_s, w_s = scale(draw, "x", ties=ties), scales(draw, c.rng, "w", m, per_channel, ties)
    # onnxruntime takes one weight zero point for all channels; 0 for s8 weights in practice
    w_zp = zero_point(draw, wt, "w") if wt == U8 else np.array(draw(st.sampled_from([0, 0, 5, -3]), label="w_zp"), wt)
    w_zp = np.full(m, w_zp, wt) if per_channel and draw(st.booleans(), label="w_zp_vector") else w_zp
    ins = [c.feed("x", x), c.const("x_scale", x_s), c.const("x_zp", zero_point(draw, xt, "x")), c.const("w", w),
           c.const("w_scale", w_s), c.const("w_zp", w_zp)]
    k = int(np.prod(w.shape[1:]))
    ins += [c.const("y_scale", out_scale(draw, x_s * float(np.max(w_s)) * 40 * np.sqrt(k) * 40, ties)),
            c.const("y_zp", zero_point(draw, xt, "y"))]
    if draw(st.booleans(), label="bias"):
        ins.append(c.const("b", c.rng.integers(-2 ** 16, 2 ** 16, m).astype(np.int32)))
    c.node("QLinearConv", ins, ["y"], **attrs)
    c.outputs = ["y"]
    c.check("conv", "requantize")


@settings(max_examples=40, **PROFILE)
@given(data=st.data())
def test_convinteger(data):
    """ConvInteger: onnxruntime runs the weights as the GEMM's A operand (exact on every CPU)."""
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    wt = draw(st.sampled_from([S8, U8]), label="w_type")
    x, w, attrs = draw_conv(draw, c.rng, False, U8, wt)
    w = weights(c.rng, wt, w.shape, False, act=S8)  # whole range: the weights are the GEMM's s8/u8 A operand
    ins = [c.feed("x", x), c.const("w", w), c.const("x_zp", zero_point(draw, U8, "x")),
           c.const("w_zp", zero_point(draw, wt, "w"))]
    c.node("ConvInteger", ins, ["y"], **attrs)
    c.outputs = ["y"]
    c.check("conv")


# ---------------------------------------------------------------- matrix products

def draw_matmul_operands(draw, rng, saturating, at, bt, min_rank=1):
    k = k_split(draw)
    m, n = draw(st.integers(1, 9), label="M"), draw(st.integers(1, 40), label="N")
    lead = draw(st.sampled_from([(), (), (2,), (2, 3)]), label="batch")
    a = activations(rng, at, lead + (m, k), saturating)
    b = weights(rng, bt, (k, n), saturating, k_axis=0, act=at)
    note(f"A {a.shape} {at}, B {b.shape} {bt}")
    return a, b


@pytest.mark.parametrize("saturating", DRAWS)
@settings(max_examples=60, **PROFILE)
@given(data=st.data())
def test_qlinearmatmul(saturating, data):
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    at, bt = draw(st.sampled_from(ACT_WEIGHT), label="types")
    a, b = draw_matmul_operands(draw, c.rng, saturating, at, bt)
    per_column, ties = draw(st.booleans(), label="per_column"), draw_ties(draw)
    a_s, b_s = scale(draw, "a", ties=ties), scales(draw, c.rng, "b", b.shape[1], per_column, ties)
    b_zp = zero_point(draw, bt, "b")
    ins = [c.feed("a", a), c.const("a_scale", a_s), c.const("a_zp", zero_point(draw, at, "a")), c.const("b", b),
           c.const("b_scale", b_s), c.const("b_zp", np.full(b.shape[1], b_zp, bt) if per_column else b_zp),
           c.const("y_scale", out_scale(draw, a_s * float(np.max(b_s)) * 1600 * np.sqrt(b.shape[0]), ties)),
           c.const("y_zp", zero_point(draw, at, "y"))]
    c.node("QLinearMatMul", ins, ["y"])
    c.outputs = ["y"]
    c.check("matmul", "requantize")


@pytest.mark.parametrize("saturating", DRAWS)
@settings(max_examples=50, **PROFILE)
@given(data=st.data())
def test_matmulinteger(saturating, data):
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    at, bt = draw(st.sampled_from(ACT_WEIGHT + [(S8, U8)]), label="types")
    a, b = draw_matmul_operands(draw, c.rng, saturating, at, bt)
    ins = [c.feed("a", a), c.const("b", b)]
    zps = draw(st.sampled_from(["none", "scalar", "per_column"]), label="zero_points")
    if zps != "none":
        b_zp = zero_point(draw, bt, "b")
        ins += [c.const("a_zp", zero_point(draw, at, "a")),
                c.const("b_zp", np.full(b.shape[1], b_zp, bt) if zps == "per_column" else b_zp)]
    c.node("MatMulInteger", ins, ["y"])
    c.outputs = ["y"]
    c.check("matmul")


@pytest.mark.parametrize("saturating", DRAWS)
@settings(max_examples=60, **PROFILE)
@given(data=st.data())
def test_qgemm(saturating, data):
    """com.microsoft QGemm, with y_scale (quantized output) and without (float output)."""
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    at, bt = draw(st.sampled_from(ACT_WEIGHT), label="types")
    k, m, n = k_split(draw), draw(st.integers(1, 9), label="M"), draw(st.integers(1, 40), label="N")
    ta, tb = draw(st.booleans(), label="transA"), draw(st.booleans(), label="transB")
    a = activations(c.rng, at, (k, m) if ta else (m, k), saturating)
    b = weights(c.rng, bt, (n, k) if tb else (k, n), saturating, k_axis=1 if tb else 0, act=at)
    per_column, ties = draw(st.booleans(), label="per_column"), draw_ties(draw)
    a_s, b_s = scale(draw, "a", ties=ties), scales(draw, c.rng, "b", n, per_column, ties)
    b_zp = zero_point(draw, bt, "b")
    ins = [c.feed("a", a), c.const("a_scale", a_s), c.const("a_zp", zero_point(draw, at, "a")), c.const("b", b),
           c.const("b_scale", b_s), c.const("b_zp", np.full(n, b_zp, bt) if per_column else b_zp)]
    c_shape = draw(st.sampled_from([None, (n,), (1, n), (m, n)]), label="C_shape")
    ins.append(c.const("c", c.rng.integers(-30000, 30001, c_shape).astype(np.int32)) if c_shape else "")
    float_out = draw(st.booleans(), label="float_output")
    if not float_out:
        ins += [c.const("y_scale", out_scale(draw, a_s * float(np.max(b_s)) * 1600 * np.sqrt(k), ties)),
                c.const("y_zp", zero_point(draw, at, "y"))]
    alpha = draw(st.sampled_from([1.0, 0.5, 2.0]) if ties else st.sampled_from([1.0, 1.5]) | st.floats(0.1, 4.0),
                 label="alpha")
    note(f"QGemm A {a.shape} {at} B {b.shape} {bt} transA {ta} transB {tb} C {c_shape} float {float_out}")
    c.node("QGemm", ins, ["y"], domain="com.microsoft", alpha=float(alpha), transA=int(ta), transB=int(tb))
    c.outputs = ["y"]
    c.check("gemm", "scale_float" if float_out else "requantize")


@pytest.mark.parametrize("saturating", DRAWS)
@settings(max_examples=40, **PROFILE)
@given(data=st.data())
def test_dynamic_quantize_matmul(saturating, data):
    """com.microsoft DynamicQuantizeMatMul: A float -> u8 at run time, B s8/u8, float bias."""
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    bt = draw(st.sampled_from([S8, U8]), label="b_type")
    a, b = draw_matmul_operands(draw, c.rng, saturating, U8, bt)
    x = (c.rng.standard_normal(a.shape) * draw(st.sampled_from([0.01, 1.0, 100.0]), label="a_spread")
         + draw(st.sampled_from([0.0, 0.0, 2.0, -2.0]), label="a_offset")).astype(np.float32)
    if saturating:  # all positive, zero point 0, codes near 255
        x = c.rng.uniform(0.8, 1.0, a.shape).astype(np.float32)
    per_column = draw(st.booleans(), label="per_column")
    ins = [c.feed("a", x), c.const("b", b), c.const("b_scale", scales(draw, c.rng, "b", b.shape[1], per_column))]
    if draw(st.booleans(), label="b_zp"):
        zp = zero_point(draw, bt, "b")
        ins.append(c.const("b_zp", np.full(b.shape[1], zp, bt) if per_column else zp))
    else:
        ins.append("")
    if draw(st.booleans(), label="bias"):
        ins.append(c.const("bias", c.rng.standard_normal(b.shape[1]).astype(np.float32)))
    c.node("DynamicQuantizeMatMul", ins, ["y"], domain="com.microsoft")
    c.outputs = ["y"]
    c.check("dynamic_quantize", "matmul", "scale_float")


@pytest.mark.parametrize("saturating", DRAWS)
@settings(max_examples=40, **PROFILE)
@given(data=st.data())
def test_matmul_integer_to_float(saturating, data):
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    at, bt = draw(st.sampled_from(ACT_WEIGHT), label="types")
    a, b = draw_matmul_operands(draw, c.rng, saturating, at, bt)
    per_column = draw(st.booleans(), label="per_column")
    ins = [c.feed("a", a), c.const("b", b), c.const("a_scale", scale(draw, "a")),
           c.const("b_scale", scales(draw, c.rng, "b", b.shape[1], per_column))]
    if draw(st.booleans(), label="zero_points"):
        zp = zero_point(draw, bt, "b")
        ins += [c.const("a_zp", zero_point(draw, at, "a")),
                c.const("b_zp", np.full(b.shape[1], zp, bt) if per_column else zp)]
    else:
        ins += ["", ""]
    if draw(st.booleans(), label="bias"):
        ins.append(c.const("bias", (c.rng.standard_normal(b.shape[1]) * 10).astype(np.float32)))
    c.node("MatMulIntegerToFloat", ins, ["y"], domain="com.microsoft")
    c.outputs = ["y"]
    c.check("matmul", "scale_float")


# ---------------------------------------------------------------- elementwise, pools, activations

def shape4(draw, max_side=9):
    return (draw(st.integers(1, 2), label="N"), draw(st.integers(1, 17), label="C"),
            draw(st.integers(1, max_side), label="H"), draw(st.integers(1, max_side), label="W"))


def qtype(draw):
    return draw(st.sampled_from([U8, S8]), label="type")


def broadcast_pair(draw, shape):
    """A second operand shape that broadcasts against `shape` (scalar, per channel, full, ...)."""
    kind = draw(st.sampled_from(["same", "scalar", "channel", "row", "leading"]), label="broadcast")
    return {"same": shape, "scalar": (), "channel": (shape[1], 1, 1), "row": (shape[-1],),
            "leading": (1,) + shape[1:]}[kind]


@settings(max_examples=60, **PROFILE)
@given(data=st.data(), op=st.sampled_from(["QLinearAdd", "QLinearMul"]))
def test_qlinear_add_mul(data, op):
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    t = qtype(draw)
    sa = shape4(draw)
    sb = broadcast_pair(draw, sa)
    if draw(st.booleans(), label="swap"):
        sa, sb = sb, sa
    lo, hi = RANGE[t]
    a, b = c.rng.integers(lo, hi + 1, sa).astype(t), c.rng.integers(lo, hi + 1, sb).astype(t)
    a_s, b_s = scale(draw, "a", 1e-3, 1.0), scale(draw, "b", 1e-3, 1.0)
    y_s = out_scale(draw, (a_s + b_s) * 100 if op == "QLinearAdd" else a_s * b_s * 5000)
    ins = [c.feed("a", a), c.const("a_scale", a_s), c.const("a_zp", zero_point(draw, t, "a")),
           c.feed("b", b) if draw(st.booleans(), label="b_is_input") else c.const("b", b),
           c.const("b_scale", b_s), c.const("b_zp", zero_point(draw, t, "b")), c.const("y_scale", y_s),
           c.const("y_zp", zero_point(draw, t, "y"))]
    c.node(op, ins, ["y"], domain="com.microsoft")
    c.outputs = ["y"]
    c.check({"QLinearAdd": "add", "QLinearMul": "mul"}[op])


def unary_q(c, draw, t, x, op, ir_op, y_factor=1.0, **attrs):
    x_s = scale(draw, "x", 1e-3, 0.5)
    ins = [c.feed("x", x), c.const("x_scale", x_s), c.const("x_zp", zero_point(draw, t, "x")),
           c.const("y_scale", out_scale(draw, x_s * y_factor)), c.const("y_zp", zero_point(draw, t, "y"))]
    c.node(op, ins, ["y"], domain="com.microsoft", **attrs)
    c.outputs = ["y"]
    c.check(ir_op)


@settings(max_examples=80, **PROFILE)
@given(data=st.data(), op=st.sampled_from(["QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
                                           "QLinearGlobalAveragePool"]))
def test_qlinear_unary(data, op):
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    t = qtype(draw)
    lo, hi = RANGE[t]
    x = c.rng.integers(lo, hi + 1, shape4(draw)).astype(t)
    if op == "QLinearSigmoid":
        unary_q(c, draw, t, x, op, "sigmoid", y_factor=0.02)
    elif op == "QLinearLeakyRelu":
        unary_q(c, draw, t, x, op, "leaky_relu", alpha=float(draw(st.floats(0.01, 0.9), label="alpha")))
    elif op == "QLinearSoftmax":
        opset = draw(st.sampled_from([1, 13]), label="softmax_opset")
        axis = draw(st.integers(-4, 3), label="axis") if opset == 13 else draw(st.integers(-1, 3), label="axis")
        # outputs in [0, 1]; 1/1000 and 0.003 overflow a float32 e·(1/y_scale) on short rows
        ys = np.float32(draw(st.sampled_from([1 / 256, 1 / 255, 1 / 128, 1 / 1000, 0.003]), label="y_scale"))
        x_s = scale(draw, "x", 1e-3, 0.5)
        ins = [c.feed("x", x), c.const("x_scale", x_s), c.const("x_zp", zero_point(draw, t, "x")),
               c.const("y_scale", ys), c.const("y_zp", zero_point(draw, t, "y"))]
        c.node(op, ins, ["y"], domain="com.microsoft", axis=axis, opset=opset)
        c.outputs = ["y"]
        c.check("softmax")
    else:
        last = draw(st.booleans(), label="channels_last")
        x = x[:, :, 0] if draw(st.booleans(), label="one_spatial_dim") else x
        unary_q(c, draw, t, x, op, "global_avgpool", channels_last=int(last))


def pool_geometry(draw, with_dilation, nd=2):
    k = tuple(draw(st.integers(1, 4), label="kernel") for _ in range(nd))
    s = tuple(draw(st.integers(1, 3), label="stride") for _ in range(nd))
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]), label="auto_pad")
    with_dilation = with_dilation and not auto_pad.startswith("SAME")
    d = tuple(draw(st.integers(1, 2), label="dilation") for _ in range(nd)) if with_dilation else (1,) * nd
    pads = tuple(min(draw(st.integers(0, 2), label="pad"), k[i % nd] - 1) for i in range(2 * nd))
    span = [dd * (kk - 1) + 1 for kk, dd in zip(k, d)]
    size = tuple(draw(st.integers(span[i], span[i] + 6), label="in_size") for i in range(nd))
    a = dict(kernel_shape=list(k), strides=list(s), ceil_mode=int(draw(st.booleans(), label="ceil_mode")))
    if with_dilation:
        a["dilations"] = list(d)
    if auto_pad == "NOTSET":
        a["pads"] = list(pads)
    else:
        a["auto_pad"] = auto_pad
    return a, size


@settings(max_examples=60, **PROFILE)
@given(data=st.data())
def test_qlinear_averagepool(data):
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    t = qtype(draw)
    attrs, size = pool_geometry(draw, with_dilation=False, nd=draw(st.sampled_from([2, 2, 1, 3]), label="spatial_dims"))
    attrs["count_include_pad"] = int(draw(st.booleans(), label="count_include_pad"))
    lo, hi = RANGE[t]
    x = c.rng.integers(lo, hi + 1, shape4(draw)[:2] + size).astype(t)
    note(f"QLinearAveragePool x {x.shape} {t} {attrs}")
    unary_q(c, draw, t, x, "QLinearAveragePool", "avgpool", **attrs)


@settings(max_examples=50, **PROFILE)
@given(data=st.data())
def test_maxpool_quantized(data):
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    t = qtype(draw)
    attrs, size = pool_geometry(draw, with_dilation=True)
    lo, hi = RANGE[t]
    x = c.rng.integers(lo, hi + 1, shape4(draw)[:2] + size).astype(t)
    note(f"MaxPool x {x.shape} {t} {attrs}")
    c.node("MaxPool", [c.feed("x", x)], ["y"], **attrs)
    c.outputs = ["y"]
    c.check("maxpool")


@settings(max_examples=40, **PROFILE)
@given(data=st.data())
def test_qlinear_concat(data):
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    t = qtype(draw)
    base = shape4(draw)
    axis = draw(st.integers(-4, 3), label="axis")
    y_s = scale(draw, "y", 1e-3, 0.5)
    ins = [c.const("y_scale", y_s), c.const("y_zp", zero_point(draw, t, "y"))]
    lo, hi = RANGE[t]
    for i in range(draw(st.integers(1, 4), label="inputs")):
        shape = list(base)
        shape[axis] = draw(st.integers(1, 5), label="concat_len")
        x = c.rng.integers(lo, hi + 1, shape).astype(t)
        same = draw(st.booleans(), label="same_quantization")
        ins += [c.feed(f"x{i}", x), c.const(f"s{i}", y_s if same else scale(draw, "x", 1e-3, 0.5)),
                c.const(f"z{i}", c.consts["y_zp"] if same else zero_point(draw, t, "x"))]
    c.node("QLinearConcat", ins, ["y"], domain="com.microsoft", axis=axis)
    c.outputs = ["y"]
    c.check("qconcat")


# ---------------------------------------------------------------- quantize / dequantize

@settings(max_examples=60, **PROFILE)
@given(data=st.data(), op=st.sampled_from(["QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"]))
def test_quantize_dequantize(data, op):
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    shape = shape4(draw)
    axis = draw(st.integers(-4, 3), label="axis")
    per_axis = draw(st.booleans(), label="per_axis")
    n = shape[axis]
    if op == "DynamicQuantizeLinear":
        x = (c.rng.standard_normal(shape) * draw(st.sampled_from([1e-3, 1.0, 1e3]), label="spread")
             + draw(st.sampled_from([0.0, 5.0, -5.0]), label="offset")).astype(np.float32)
        c.node(op, [c.feed("x", x)], ["y", "y_scale", "y_zp"])
        c.outputs = ["y", "y_scale", "y_zp"]
        c.check("dynamic_quantize")
        return
    t = draw(st.sampled_from([U8, S8, np.dtype(np.int32)]) if op == "DequantizeLinear" else st.sampled_from([U8, S8]),
             label="type")
    s = c.rng.uniform(1e-3, 0.1, n).astype(np.float32) if per_axis else scale(draw, "x")
    if t == np.int32:
        zp = np.zeros(n if per_axis else (), t)
    else:
        zp = (c.rng.integers(*RANGE[t], n).astype(t) if per_axis else zero_point(draw, t))
    if op == "QuantizeLinear":
        x = (c.rng.standard_normal(shape) * 200 * float(np.max(s))).astype(np.float32)
        x.flat[: x.size // 4] = np.round(x.flat[: x.size // 4] / np.max(s) * 2) / 2 * np.max(s)  # ties
    else:
        lo, hi = RANGE.get(t, (-2 ** 20, 2 ** 20))
        x = c.rng.integers(lo, hi + 1, shape).astype(t)
    ins = [c.feed("x", x), c.const("scale", s), c.const("zp", zp)]
    c.node(op, ins, ["y"], axis=axis)
    c.outputs = ["y"]
    c.check({"QuantizeLinear": "quantize", "DequantizeLinear": "dequantize"}[op])


# ---------------------------------------------------------------- QDQ forms onnxruntime fuses

def dq(c, name, s, zp):
    """DequantizeLinear of `x` (a graph input or a constant) -> float tensor name."""
    c.const(f"{name}_s", s)
    c.const(f"{name}_z", zp)
    c.node("DequantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_f"])
    return f"{name}_f"


def q_out(c, draw, t, yf, real_step, ties=False):
    c.const("y_s", out_scale(draw, real_step, ties))
    c.const("y_z", zero_point(draw, t, "y"))
    c.node("QuantizeLinear", [yf, "y_s", "y_z"], ["y"])
    c.outputs = ["y"]


@pytest.mark.parametrize("saturating", DRAWS)
@settings(max_examples=100, **PROFILE)
@given(data=st.data(), op=st.sampled_from(["Conv", "MatMul", "Gemm", "MatMul_float", "Gemm_float"]))
def test_qdq_conv_matmul_gemm(saturating, data, op):
    """DQ(x), DQ(w) -> Conv / MatMul / Gemm [-> Q]: QLinearConv, QLinearMatMul, QGemm,
    MatMulIntegerToFloat (MatMul without Q), QGemm with float output (Gemm without Q)."""
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    xt, wt = draw(st.sampled_from(ACT_WEIGHT), label="types")
    xt = U8 if op.startswith(("Conv", "MatMul")) else xt  # onnxruntime (x86) fuses these with u8 activations only
    ties = draw_ties(draw)
    x_s = scale(draw, "x", ties=ties)
    x_zp = zero_point(draw, xt, "x")
    if op == "Conv":
        x, w, attrs = draw_conv(draw, c.rng, saturating, xt, wt)
        m, axis_n = w.shape[0], 0
    else:
        x, w = draw_matmul_operands(draw, c.rng, saturating, xt, wt)
        if op.startswith("Gemm"):
            x = x.reshape(-1, x.shape[-1])[: draw(st.integers(1, 9), label="M")]
        m, axis_n = w.shape[1], 1
    per_channel = draw(st.booleans(), label="per_channel")
    w_s = scales(draw, c.rng, "w", m, per_channel, ties)
    w_zp = np.array(0, wt) if wt == S8 else zero_point(draw, wt, "w")  # QLinearConv: one zero point
    w_zp = np.full(m, w_zp, wt) if per_channel else w_zp
    xf = dq(c, c.feed("x", x), x_s, x_zp)
    c.const("w", w)
    c.const("w_s", w_s)
    c.const("w_z", w_zp)
    c.node("DequantizeLinear", ["w", "w_s", "w_z"], ["w_f"], axis=axis_n)
    ins = [xf, "w_f"]
    k = int(np.prod(w.shape[1:])) if op == "Conv" else w.shape[0]
    if op in ("Conv", "Gemm", "Gemm_float") and draw(st.booleans(), label="bias"):
        c.const("b", c.rng.integers(-2 ** 15, 2 ** 15, m).astype(np.int32))
        c.const("b_s", (x_s * w_s).astype(np.float32))
        c.const("b_z", np.zeros(np.shape(w_s), np.int32))
        c.node("DequantizeLinear", ["b", "b_s", "b_z"], ["b_f"], axis=0)
        ins.append("b_f")
    float_out = op.endswith("_float")
    yf = "y" if float_out else "y_f"
    c.node(op.split("_")[0], ins, [yf], **(attrs if op == "Conv" else {}))
    if float_out:
        c.outputs = ["y"]
    else:
        q_out(c, draw, xt, yf, x_s * float(np.max(w_s)) * 1600 * np.sqrt(k), ties)
    ir = {"Conv": ("conv", "requantize"), "MatMul": ("matmul", "requantize"), "Gemm": ("gemm", "requantize"),
          "MatMul_float": ("matmul", "scale_float"), "Gemm_float": ("gemm", "scale_float")}[op]
    c.check(*ir)


@settings(max_examples=90, **PROFILE)
@given(data=st.data(), op=st.sampled_from(["Add", "Mul", "AveragePool", "GlobalAveragePool", "Sigmoid", "LeakyRelu",
                                           "Softmax", "Concat", "MaxPool"]))
def test_qdq_activation_ops(data, op):
    """DQ -> op -> Q for the ops onnxruntime fuses into QLinear* (or, MaxPool, runs on the integers)."""
    draw = data.draw
    c = Case(np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1), label="seed")))
    t = qtype(draw)
    lo, hi = RANGE[t]
    shape = shape4(draw)
    x = c.rng.integers(lo, hi + 1, shape).astype(t)
    x_s, x_zp = scale(draw, "x", 1e-3, 0.5), zero_point(draw, t, "x")
    xf = dq(c, c.feed("x", x), x_s, x_zp)
    attrs, ins, step, ir_op = {}, [xf], x_s, None
    if op in ("Add", "Mul", "Concat"):
        if op == "Concat":
            axis = draw(st.integers(-4, 3), label="axis")
            s2 = list(shape)
            s2[axis] = draw(st.integers(1, 5), label="concat_len")
            attrs = {"axis": axis}
        else:
            s2 = broadcast_pair(draw, shape)
        x2 = c.rng.integers(lo, hi + 1, s2).astype(t)
        b_s = scale(draw, "b", 1e-3, 0.5)
        ins.append(dq(c, c.feed("x2", x2), b_s, zero_point(draw, t, "b")))
        step = {"Add": (x_s + b_s) * 100, "Mul": x_s * b_s * 5000, "Concat": max(x_s, b_s) * 100}[op]
        ir_op = {"Add": "add", "Mul": "mul", "Concat": "qconcat"}[op]
    elif op in ("AveragePool", "MaxPool"):
        attrs, size = pool_geometry(draw, with_dilation=op == "MaxPool")
        if op == "AveragePool":
            attrs["count_include_pad"] = int(draw(st.booleans(), label="count_include_pad"))
        x = c.rng.integers(lo, hi + 1, shape[:2] + size).astype(t)
        c.inputs["x"] = x
        ir_op = {"AveragePool": "avgpool", "MaxPool": "maxpool"}[op]
    else:
        ir_op = {"GlobalAveragePool": "global_avgpool", "Sigmoid": "sigmoid", "LeakyRelu": "leaky_relu",
                 "Softmax": "softmax"}[op]
        if op == "LeakyRelu":
            attrs = {"alpha": float(draw(st.floats(0.01, 0.9), label="alpha"))}
        if op == "Softmax":
            attrs = {"axis": draw(st.integers(-4, 3), label="axis")}
            step = 1 / 256
        if op == "Sigmoid":
            step = 1 / 256
    note(f"QDQ {op} x {c.inputs['x'].shape} {t} {attrs}")
    c.node(op, ins, ["y_f"], **attrs)
    if op == "MaxPool":  # onnxruntime drops the Q/DQ pair around MaxPool when they match
        c.const("y_s", x_s)
        c.const("y_z", x_zp)
        c.node("QuantizeLinear", ["y_f", "y_s", "y_z"], ["y"])
        c.outputs = ["y"]
    else:
        q_out(c, draw, t, "y_f", step)
    c.check(ir_op)
