"""conv / matmul / gemm kernels: golden == onnxruntime (exact), fast == golden (exact), edge values.

onnxruntime is this CPU's: where its u8·s8 kernels saturate int16 pair sums (no VNNI,
npusim.ortisa), the expected accumulator adds golden.pairsat's excess, as mode "ort" does.
"""
import contextlib
import re
import zlib

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from npusim import ortisa
from npusim_kernels.golden import conv as gconv, matmul as gmm, pairsat as gpair, requant as greq
from npusim_kernels.fast import conv as fconv, matmul as fmm, pairmadd, requant as freq

import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_ONNX_T = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
           np.dtype(np.int32): TensorProto.INT32, np.dtype(np.float32): TensorProto.FLOAT}
QRANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def run_ort(op, inputs, attrs, out_dtype, domain="", opset=21):
    """One-node model: inputs[0] is the graph input, the rest are initializers (None = absent)."""
    names, inits = [], []
    for i, v in enumerate(inputs):
        if v is None:
            names.append("")
            continue
        names.append(f"i{i}")
        if i > 0:
            inits.append(numpy_helper.from_array(np.asarray(v), f"i{i}"))
    node = helper.make_node(op, names, ["y"], domain=domain, **attrs)
    x = np.asarray(inputs[0])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("i0", _ONNX_T[x.dtype], x.shape)],
                          [helper.make_tensor_value_info("y", _ONNX_T[np.dtype(out_dtype)], None)], inits)
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(g, opset_imports=ops)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"i0": x})[0]


def rand_q(rng, dtype, shape):
    lo, hi = QRANGE[np.dtype(dtype)]
    return rng.integers(lo, hi + 1, shape).astype(dtype)


def conv_case(seed):
    """A seeded random QLinearConv configuration (various dtypes, groups, strides, pads...)."""
    rng = np.random.default_rng(seed)
    xt = [np.uint8, np.int8][seed % 2]
    wt = np.int8 if (xt is np.int8 or seed % 3) else np.uint8
    kind = seed % 4  # 0 dense, 1 depthwise, 2 grouped, 3 pointwise
    n = 1 + seed % 2
    if kind == 1:
        c = int(rng.integers(1, 9)); group = c; m = c
    elif kind == 2:
        group = int(rng.integers(2, 4)); c = group * int(rng.integers(1, 4)); m = group * int(rng.integers(1, 4))
    else:
        c = int(rng.integers(1, 12)); m = int(rng.integers(1, 12)); group = 1
    k = (1, 1) if kind == 3 else tuple(int(v) for v in rng.integers(1, 4, 2))
    strides = tuple(int(v) for v in rng.integers(1, 3, 2))
    dil = (1, 1) if kind == 3 else tuple(int(v) for v in rng.integers(1, 3, 2))
    pads = (0, 0, 0, 0) if kind == 3 else tuple(int(v) for v in rng.integers(0, 3, 4))
    h, w = (int(v) for v in rng.integers(max(k) * max(dil), 12, 2))
    x = rand_q(rng, xt, (n, c, h, w))
    wq = rand_q(rng, wt, (m, c // group, *k))
    x_zp = rand_q(rng, xt, ())
    per_ch = seed % 5 != 0
    w_zp = np.zeros(m if per_ch else 1, wt) if seed % 3 == 0 else rand_q(rng, wt, (m if per_ch else 1,))
    bias = rng.integers(-5000, 5000, m).astype(np.int32)
    return dict(x=x, x_zp=x_zp, w=wq, w_zp=w_zp, bias=bias, strides=strides, pads=pads,
                dil=dil, group=group, rng=rng, per_ch=per_ch)


def golden_conv(cs):
    m = cs["w"].shape[0]
    w_zp = np.broadcast_to(cs["w_zp"].astype(np.int32), (m,))
    return gconv.conv_acc(cs["x"], int(cs["x_zp"]), cs["w"], w_zp, cs["bias"], cs["strides"],
                          cs["pads"], cs["dil"], cs["group"])


HOST_SATURATES = ortisa.host_ort_isa() in ortisa.SATURATING


def _u8s8(x, w):
    return HOST_SATURATES and x.dtype == np.uint8 and w.dtype == np.int8


def ort_conv_acc(cs):
    """QLinearConv's accumulator as this CPU's onnxruntime computes it (ConvInteger's is exact)."""
    acc = golden_conv(cs)
    depthwise = cs["w"].shape[1] == 1 and cs["w"].shape[0] == cs["group"]
    if _u8s8(cs["x"], cs["w"]) and not depthwise:
        acc = acc + gpair.conv_pair_excess(cs["x"], int(cs["x_zp"]), cs["w"], cs["strides"], cs["pads"], cs["dil"],
                                           cs["group"])[0]
    return acc


def ort_matmul_acc(a, a_zp, b, b_zp):
    """MatMulInteger / QLinearMatMul / QGemm's accumulator as this CPU's onnxruntime computes it."""
    acc = gmm.matmul_acc(a, a_zp, b, b_zp)
    return acc + gpair.matmul_pair_excess(a, b)[0] if _u8s8(a, b) else acc


def conv_attrs(cs):
    return dict(strides=list(cs["strides"]), pads=[cs["pads"][0], cs["pads"][1], cs["pads"][2], cs["pads"][3]],
                dilations=list(cs["dil"]), group=cs["group"], kernel_shape=list(cs["w"].shape[2:]))


@pytest.mark.parametrize("seed", range(24))
def test_conv_integer_golden_eq_ort(seed):
    cs = conv_case(seed)
    cs["w_zp"] = cs["w_zp"][:1]  # ORT ConvInteger: per-tensor w_zp only
    cs["bias"][:] = 0
    y = run_ort("ConvInteger", [cs["x"], cs["w"], cs["x_zp"], cs["w_zp"]], conv_attrs(cs), np.int32, opset=10)
    np.testing.assert_array_equal(golden_conv(cs), y)


@pytest.mark.parametrize("seed", range(40))
def test_qlinearconv_golden_eq_ort(seed):
    cs = conv_case(seed)
    rng = cs["rng"]
    x_scale = np.float32(rng.uniform(0.001, 0.05))
    w_scale = rng.uniform(0.001, 0.05, cs["w_zp"].size).astype(np.float32)
    acc = ort_conv_acc(cs)
    # choose y_scale so outputs spread over the range and hit ties sometimes
    y_scale = np.float32(x_scale * float(w_scale.max()) * max(1.0, np.abs(acc).max() / 100.0))
    yt = cs["x"].dtype
    y_zp = rand_q(rng, yt, ())
    y = run_ort("QLinearConv", [cs["x"], x_scale, cs["x_zp"], cs["w"], w_scale, cs["w_zp"], y_scale, y_zp,
                                cs["bias"]], conv_attrs(cs), yt)
    scale = greq.ort_output_scale(x_scale, w_scale, y_scale)
    lo, hi = QRANGE[yt]
    want = greq.requantize_f32(acc, scale, 1, int(y_zp), lo, hi, yt)
    np.testing.assert_array_equal(want, y)


def mm_case(seed):
    rng = np.random.default_rng(1000 + seed)
    at = [np.uint8, np.int8][seed % 2]
    bt = np.int8 if (at is np.int8 or seed % 3) else np.uint8
    m, k, n = (int(v) for v in rng.integers(1, 40, 3))
    batch = [(), (2,), (3, 1)][seed % 3]
    a = rand_q(rng, at, batch + (m, k))
    b = rand_q(rng, bt, (k, n))
    a_zp = rand_q(rng, at, ())
    b_zp = rand_q(rng, bt, (n,)) if seed % 4 else rand_q(rng, bt, ())
    return rng, a, a_zp, b, b_zp


@pytest.mark.parametrize("seed", range(12))
def test_matmul_integer_golden_eq_ort(seed):
    rng, a, a_zp, b, b_zp = mm_case(seed)
    y = run_ort("MatMulInteger", [a, b, a_zp, b_zp], {}, np.int32, opset=10)
    np.testing.assert_array_equal(ort_matmul_acc(a, int(a_zp), b, b_zp.astype(np.int32)), y)


@pytest.mark.parametrize("seed", range(16))
def test_qlinearmatmul_golden_eq_ort(seed):
    rng, a, a_zp, b, b_zp = mm_case(seed)
    a_scale = np.float32(rng.uniform(0.001, 0.05))
    b_scale = rng.uniform(0.001, 0.05, b_zp.shape).astype(np.float32)
    acc = ort_matmul_acc(a, int(a_zp), b, b_zp.astype(np.int32))
    y_scale = np.float32(a_scale * float(b_scale.max()) * max(1.0, np.abs(acc).max() / 100.0))
    yt = a.dtype
    y_zp = rand_q(rng, yt, ())
    y = run_ort("QLinearMatMul", [a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp], {}, yt)
    lo, hi = QRANGE[yt]
    want = greq.requantize_f32(acc, greq.ort_output_scale(a_scale, b_scale, y_scale), -1, int(y_zp), lo, hi, yt)
    np.testing.assert_array_equal(want, y)


@pytest.mark.parametrize("seed", range(16))
def test_qgemm_golden_eq_ort(seed):
    """com.microsoft QGemm: Y = requant(C + Σ(A−a_zp)(B−b_zp), alpha·a_s·b_s/y_s), or float Y."""
    rng = np.random.default_rng(2000 + seed)
    at = [np.uint8, np.int8][seed % 2]
    bt = np.int8 if (at is np.int8 or seed % 3) else np.uint8
    m, k, n = (int(v) for v in rng.integers(1, 30, 3))
    ta, tb = seed % 2 == 1, seed % 4 >= 2
    a = rand_q(rng, at, (k, m) if ta else (m, k))
    b = rand_q(rng, bt, (n, k) if tb else (k, n))
    a_zp = rand_q(rng, at, ())
    b_zp = rand_q(rng, bt, (n,)) if seed % 3 else rand_q(rng, bt, ())
    a_scale = np.float32(rng.uniform(0.001, 0.05))
    b_scale = rng.uniform(0.001, 0.05, b_zp.shape).astype(np.float32)
    alpha = float(np.float32(rng.uniform(0.25, 2.0)))
    c = [None, rng.integers(-3000, 3000, (n,)).astype(np.int32), rng.integers(-3000, 3000, (m, n)).astype(np.int32)][seed % 3]
    float_out = seed % 5 == 0
    acc = ort_matmul_acc(a.T if ta else a, int(a_zp), b.T if tb else b, b_zp.astype(np.int32))
    acc = acc + (0 if c is None else c)
    attrs = dict(alpha=alpha, transA=int(ta), transB=int(tb))
    if float_out:
        y = run_ort("QGemm", [a, a_scale, a_zp, b, b_scale, b_zp, c], attrs, np.float32, domain="com.microsoft")
        want = greq.scale_float(acc, a_scale, b_scale, alpha, None)
    else:
        y_scale = np.float32(a_scale * float(b_scale.max()) * max(1.0, np.abs(acc).max() / 100.0))
        y_zp = rand_q(rng, at, ())
        y = run_ort("QGemm", [a, a_scale, a_zp, b, b_scale, b_zp, c, y_scale, y_zp], attrs, at, domain="com.microsoft")
        lo, hi = QRANGE[np.dtype(at)]
        want = greq.requantize_f32(acc, greq.qgemm_scale(alpha, a_scale, b_scale, y_scale), -1, int(y_zp), lo, hi, at)
    np.testing.assert_array_equal(want, y)


# ---- edge values: ties, scales 2^k ± 1 ulp, extreme zero points, type min/max, big sums ----

def _ulp_scales():
    out = []
    for e in (-8, -1, 0, 3):
        s = np.float32(2.0 ** e)
        out += [s, np.nextafter(s, np.float32(0)), np.nextafter(s, np.float32(np.inf))]
    return out


@pytest.mark.parametrize("xt,wt", [(np.uint8, np.int8), (np.uint8, np.uint8), (np.int8, np.int8)])
@pytest.mark.parametrize("mode", ["ties", "extreme", "huge_scale", "sym_big"])
def test_qlinearconv_edges_golden_eq_ort(xt, wt, mode):
    """Ties (scale 2^-k), type min/max inputs and zero points, 32·64-channel ConvSym-sized layers."""
    rng = np.random.default_rng(zlib.crc32(f"{np.dtype(xt).str} {np.dtype(wt).str} {mode}".encode()))
    xlo, xhi = QRANGE[np.dtype(xt)]
    wlo, whi = QRANGE[np.dtype(wt)]
    c, m, hw, k = (64, 32, 9, 3) if mode == "sym_big" else (8, 6, 6, 3)
    if mode == "extreme":
        x = rng.choice([xlo, xhi], (1, c, hw, hw)).astype(xt)
        w = rng.choice([wlo, whi], (m, c, k, k)).astype(wt)
        x_zp, w_zp = xt(xhi if rng.random() < 0.5 else xlo), np.full(m, whi, wt)
        w_zp[::2] = wlo
    else:
        x, w = rand_q(rng, xt, (1, c, hw, hw)), rand_q(rng, wt, (m, c, k, k))
        x_zp = rand_q(rng, xt, ())
        w_zp = np.zeros(m, wt) if mode == "sym_big" else rand_q(rng, wt, (m,))
    cs = dict(x=x, x_zp=x_zp, w=w, w_zp=w_zp, bias=rng.integers(-99, 99, m).astype(np.int32),
              strides=(1, 1), pads=(1, 0, 1, 2), dil=(1, 1), group=1)
    acc = ort_conv_acc(cs)
    scales = _ulp_scales()
    for y_scale in (scales if mode != "huge_scale" else [np.float32(1e-30)]):
        x_scale, w_scale = np.float32(1.0), np.full(m, 0.5, np.float32)  # ·0.5 makes every odd acc a tie
        w_scale[1::3] = scales[int(rng.integers(len(scales)))]
        ys = rand_q(rng, xt, ())
        y = run_ort("QLinearConv", [x, x_scale, x_zp, w, w_scale, w_zp, np.float32(y_scale), ys, cs["bias"]],
                    conv_attrs(cs), xt)
        want = greq.requantize_f32(acc, greq.ort_output_scale(x_scale, w_scale, y_scale), 1, int(ys), xlo, xhi, xt)
        np.testing.assert_array_equal(want, y)
        np.testing.assert_array_equal(freq.requantize_f32(acc, greq.ort_output_scale(x_scale, w_scale, y_scale),
                                                          1, int(ys), xlo, xhi, xt), y)


def test_matmul_integer_big_accumulator_golden_eq_ort():
    """K = 32768 of (0 − 255)·(−128 − 127): |acc| = 2 130 739 200, near the int32 limit."""
    k = 32768
    a = np.zeros((2, k), np.uint8)
    b = np.full((k, 3), -128, np.int8)
    a_zp, b_zp = np.uint8(255), np.int8(127)
    y = run_ort("MatMulInteger", [a, b, a_zp, b_zp], {}, np.int32, opset=10)
    np.testing.assert_array_equal(gmm.matmul_acc(a, 255, b, 127), y)
    np.testing.assert_array_equal(fmm.matmul_acc(a, 255, b, 127), y)


def test_golden_headroom_raises():
    k = 40000  # 40000·255·255 > 2^31
    with pytest.raises(ValueError, match="overflow"):
        gmm.matmul_acc(np.full((1, k), 255, np.uint8), 0, np.full((k, 1), 255, np.uint8), 0)
    with pytest.raises(ValueError, match=r"\(0, 0, 0, 0\)"):
        gconv.conv_acc(np.full((1, k, 1, 1), 255, np.uint8), 0, np.full((1, k, 1, 1), 255, np.uint8),
                       np.zeros(1, np.int32), np.zeros(1, np.int32), (1, 1), (0, 0, 0, 0), (1, 1), 1)


def test_requant_tie_and_clamp_units():
    acc = np.array([1, 3, 5, -1, -3, 2 ** 31 - 1, -(2 ** 31)], np.int32)
    for mod in (greq, freq):
        y = mod.requantize_f32(acc, np.float32(0.5), 0, 0, -128, 127, np.int8)
        np.testing.assert_array_equal(y, [0, 2, 2, 0, -2, 127, -128])  # half to even, then saturate


# ---- fast == golden (exact), hypothesis ----

@st.composite
def conv_params(draw):
    group = draw(st.sampled_from([1, 1, 2, 3, "dw"]))
    if group == "dw":
        c = m = group = draw(st.integers(1, 6))
    else:
        c, m = group * draw(st.integers(1, 3)), group * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = draw(st.integers(max(1, (kh - 1) * dh + 1 - pads[0] - pads[2]), 9))
    w = draw(st.integers(max(1, (kw - 1) * dw + 1 - pads[1] - pads[3]), 9))
    xt = draw(st.sampled_from(["u8", "s8", "u4", "s4"]))
    wt = draw(st.sampled_from(["u8", "s8", "s4"]))
    seed = draw(st.integers(0, 2 ** 31))
    return dict(group=group, c=c, m=m, k=(kh, kw), dil=(dh, dw), pads=pads, strides=strides,
                hw=(h, w), xt=xt, wt=wt, n=draw(st.integers(1, 2)), seed=seed)


_RANGES = {"u8": (0, 255, np.uint8), "s8": (-128, 127, np.int8), "u4": (0, 15, np.uint8), "s4": (-8, 7, np.int8)}


# The word variants this CPU runs: (pair lanes: 16 AVX-512BW, 8 AVX2; vpdpbusd lanes: 16 AVX-512 VNNI,
# 8 AVX-VNNI or VNNI + VL, 0 none), and (0, 0): the int32 loop.
VARIANTS = [(p, d) for p in (16, 8) for d in (16, 8, 0) if p <= pairmadd.LANES and d <= min(p, pairmadd.DPBUSD_LANES)
            and (d == 0 or d == p)] + [(0, 0)]


@contextlib.contextmanager
def variant(lanes):
    """conv_acc_packed runs the given word variant (pair lanes, vpdpbusd lanes) inside."""
    saved = pairmadd.LANES, pairmadd.DPBUSD_LANES
    pairmadd.LANES, pairmadd.DPBUSD_LANES = lanes
    try:
        yield
    finally:
        pairmadd.LANES, pairmadd.DPBUSD_LANES = saved


@contextlib.contextmanager
def depthwise_path(kind):
    """conv_acc_packed takes the given depthwise path ("plane" or "cl", channels-last) for every width."""
    saved, fconv.DW_CL_MAX_OW = fconv.DW_CL_MAX_OW, {"plane": (-1, -1), "cl": (1 << 30, 1 << 30)}[kind]
    try:
        yield
    finally:
        fconv.DW_CL_MAX_OW = saved


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(conv_params(), st.sampled_from(VARIANTS), st.sampled_from(["lo", "hi", "any"]), st.sampled_from(["plane", "cl"]))
def test_conv_fast_eq_golden(p, lanes, zp_kind, dw_path):
    """Every variant and depthwise path; M, P across tile edges (MR = 4, NR = 16·lanes/8 or fewer), K odd and even."""
    rng = np.random.default_rng(p["seed"])
    xlo, xhi, xdt = _RANGES[p["xt"]]
    wlo, whi, wdt = _RANGES[p["wt"]]
    x = rng.integers(xlo, xhi + 1, (p["n"], p["c"], *p["hw"])).astype(xdt)
    w = rng.integers(wlo, whi + 1, (p["m"], p["c"] // p["group"], *p["k"])).astype(wdt)
    x_zp = {"lo": xlo, "hi": xhi, "any": int(rng.integers(xlo, xhi + 1))}[zp_kind]
    w_zp = rng.choice([wlo, whi, (wlo + whi) // 2], p["m"]).astype(np.int32)
    bias = rng.integers(-2 ** 20, 2 ** 20, p["m"]).astype(np.int32)
    args = (x, x_zp, w, w_zp, bias, p["strides"], p["pads"], p["dil"], p["group"])
    with variant(lanes), depthwise_path(dw_path):
        np.testing.assert_array_equal(fconv.conv_acc(*args), gconv.conv_acc(*args))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(conv_params(), st.sampled_from([v for v in VARIANTS if v[0]]), st.sampled_from(["lo", "hi", "any"]),
       st.booleans())
def test_conv_byte_quads_eq_golden(p, lanes, zp_kind, saturate):
    """Dense and grouped convs of byte x and weights that fit int8 run on byte quads (onnxruntime's K
    order): exact with vpdpbusd (where the variant has it, else pairs), or with saturate, onnxruntime's
    saturated u8·s8 pairs (vpmaddubsw), which the golden twin computes as the exact sums + the
    golden pair excess. x at and near its extremes, weights at ±127 / −128, extreme zero points."""
    rng = np.random.default_rng(p["seed"])
    xt = "u8" if saturate else p["xt"].replace("4", "8")
    xlo, xhi, xdt = _RANGES[xt]
    x = rng.choice(np.array([xlo, xhi, xlo + 1, xhi - 1]), (p["n"], p["c"], *p["hw"])).astype(xdt)
    x[..., ::2] = rng.integers(xlo, xhi + 1, x[..., ::2].shape)
    w = rng.choice(np.array([-128, 127, -127, 126, 0, 3]), (p["m"], p["c"] // p["group"], *p["k"])).astype(np.int8)
    x_zp = {"lo": xlo, "hi": xhi, "any": int(rng.integers(xlo, xhi + 1))}[zp_kind]
    w_zp = np.zeros(p["m"], np.int32)
    if not saturate and p["seed"] % 2:  # zero points that keep w − w_zp in int8
        w = np.clip(w, -100, 100).astype(np.int8)
        w_zp = rng.integers(-27, 28, p["m"]).astype(np.int32)
    bias = rng.integers(-2 ** 20, 2 ** 20, p["m"]).astype(np.int32)
    window = (p["strides"], p["pads"], p["dil"], p["group"])
    fp, gp = fconv.pack_conv_weights(w, w_zp, bias), gconv.pack_conv_weights(w, w_zp, bias)
    want = gconv.conv_acc_packed_for(x.shape, x.dtype, x_zp, gp, *window, saturate=saturate)(x)
    with variant(lanes):
        fast = fconv.conv_acc_packed_for(x.shape, x.dtype, x_zp, fp, *window, saturate=saturate)
        if fast is None:  # no saturating kernel for this conv (depthwise, one output position): the caller adds
            assert saturate and (p["group"] == p["c"] == p["m"] or want.shape[2] * want.shape[3] == 1)
            return
        np.testing.assert_array_equal(fast(x), want)


@pytest.mark.parametrize("lanes", VARIANTS)
def test_conv_fast_eq_golden_int16_operands(lanes):
    """int16 operands: within int16 after the zero points (|x − x_zp| = 32767) the pair kernel, one
    past it (x − x_zp = −32773) the int32 loop; both exact. Depthwise: both paths, exact."""
    rng = np.random.default_rng(7)
    w = rng.integers(-20, 21, (5, 4, 3, 3)).astype(np.int16)
    w_dw = rng.integers(-300, 301, (4, 1, 3, 3)).astype(np.int16)
    for x_lo, x_zp in ((-32767, 0), (-32768, 5)):
        x = rng.integers(x_lo, x_lo + 3000, (1, 4, 5, 7)).astype(np.int16)
        x[0, 0, 0, 0] = x_lo
        args = (x, x_zp, w, np.array([1, -2, 3, 0, 4], np.int32), np.zeros(5, np.int32), (1, 1), (1, 1, 1, 1), (1, 1), 1)
        with variant(lanes):
            np.testing.assert_array_equal(fconv.conv_acc(*args), gconv.conv_acc(*args))
        for kind in ("plane", "cl"):
            args = (x, x_zp, w_dw, np.array([3, 0, -7, 1], np.int32), np.arange(4, dtype=np.int32), (1, 2), (1, 0, 1, 2),
                    (1, 1), 4)
            with depthwise_path(kind):
                np.testing.assert_array_equal(fconv.conv_acc(*args), gconv.conv_acc(*args))


@pytest.mark.parametrize("case", [
    # (N, C, M, group, (kH, kW), strides, pads, dilations, (H, W)), chosen to hit each fast path
    (1, 512, 9, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (24, 96)),  # pairs 1x1: plane interleave, 5 panels
    (1, 64, 9, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (40, 40)),    # 3x3 s1: rows of 42 (wide), 4 panels
    (1, 95, 6, 1, (3, 3), (2, 2), (1, 0, 1, 1), (1, 1), (40, 41)),    # stride 2, 2 panels, odd K
    (2, 40, 24, 1, (3, 3), (2, 1), (1, 2, 0, 1), (1, 2), (11, 30)),   # pairs, stride 2, dilated, padded
    (1, 12, 18, 3, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (48, 96)),   # pairs, grouped, M/group = 6
    (1, 7, 8, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (24, 96)),     # pairs 1x1, odd K = 7
    (1, 16, 7, 1, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (24, 90)),   # odd M, padded
    (1, 50, 200, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), (1, 1)),    # P == 1: the int32 dot product
    (1, 9, 10, 1, (1, 1), (3, 3), (0, 0, 0, 0), (1, 1), (14, 14)),    # 1x1 stride 3
    (2, 24, 24, 24, (3, 3), (2, 1), (1, 1, 1, 1), (1, 1), (12, 96)),  # depthwise kW=3, sW=1
    (1, 5, 5, 1, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), (9, 13)),     # odd K = 45
    (1, 40, 40, 40, (5, 5), (1, 1), (2, 2, 2, 2), (1, 2), (3, 96)),   # depthwise kW=5, dilated
    (1, 16, 16, 16, (5, 4), (2, 3), (0, 2, 3, 1), (2, 1), (9, 20)),   # depthwise generic taps
    (1, 16, 16, 16, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (24, 96)),  # depthwise, both strides 2
    (1, 8, 8, 8, (5, 5), (3, 2), (2, 1, 0, 2), (2, 1), (13, 17)),     # depthwise, row phases of 3
    (2, 6, 6, 6, (7, 7), (1, 1), (3, 3, 3, 3), (1, 1), (9, 11)),      # depthwise, 49 taps: 9,9,9,9,9,3,1
    (1, 384, 384, 384, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), (5, 5)),  # depthwise channels-last, chunks of 1 position
    (2, 40, 40, 40, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (20, 20)),   # channels-last s2: chunks of 6, last one of 4
    (1, 20, 20, 20, (3, 5), (3, 2), (2, 1, 0, 2), (2, 1), (9, 12)),    # channels-last, phases, dilated, 15 taps
])
@pytest.mark.parametrize("xt,wt", [("u8", "s8"), ("s8", "s8"), ("u8", "u8")])
def test_conv_fast_eq_golden_paths(case, xt, wt):
    """Layer sizes of the PP-OCR classifier and beyond; operands at the type extremes; every variant
    and both depthwise paths."""
    n, c, m, group, k, strides, pads, dil, hw = case
    rng = np.random.default_rng(zlib.crc32(repr((case, xt, wt)).encode()))
    xlo, xhi, xdt = _RANGES[xt]
    wlo, whi, wdt = _RANGES[wt]
    x = rng.choice(np.array([xlo, xhi, xlo + 1, xhi - 1, (xlo + xhi) // 2]), (n, c, *hw)).astype(xdt)
    x[..., 1::3] = rng.integers(xlo, xhi + 1, x[..., 1::3].shape)
    w = rng.choice(np.array([wlo, whi]), (m, c // group, *k)).astype(wdt)
    w_zp = np.where(np.arange(m) % 2, whi, wlo).astype(np.int32)  # |w − w_zp| up to 255
    for i, x_zp in enumerate((xlo, xhi, (xlo + xhi) // 2)):
        bias = rng.integers(-2 ** 20, 2 ** 20, m).astype(np.int32)
        args = (x, x_zp, w, w_zp, bias, strides, pads, dil, group)
        with variant(VARIANTS[i % len(VARIANTS)]), depthwise_path(("plane", "cl")[i % 2]):
            np.testing.assert_array_equal(fconv.conv_acc(*args), gconv.conv_acc(*args))


@pytest.mark.parametrize("core", ["_dw_taps", "_dw_taps_cl"])
def test_depthwise_taps_vectorized(core):
    """Both depthwise tap loops compile to packed int32 multiplies (vpmulld) on ymm or zmm."""
    import numba
    fresh = numba.njit(getattr(fconv, core).py_func)  # uncached: cached code cannot be inspected
    v = np.zeros(64, np.int32)
    args = (v.copy(), v, v, np.zeros(9, np.int64), 0, 9, 0, 0, 32) if core == "_dw_taps" else \
        (v.copy(), v, v, np.zeros(9, np.int64), 9, 4, 0, 4)
    fresh(*args)
    assert re.search(r"\bvpmulld\s[^\n]*%[yz]mm", fresh.inspect_asm(fresh.signatures[0]))


_WORD_OPS = {"pairs": (pairmadd.PAIRS, r"vp(maddwd|dpwssd)"), "dpbusd": (pairmadd.DPBUSD, r"vpdpbusd"),
             "maddubs": (pairmadd.MADDUBS, r"vpmaddubsw")}


def _sat16(v):
    return np.clip(v, -32768, 32767)


@pytest.mark.parametrize("kind", list(_WORD_OPS))
@pytest.mark.parametrize("lanes", [16, 8])
def test_word_kernel_instructions(kind, lanes):
    """The micro-kernel compiles to its instruction on zmm (16 lanes) or ymm (8): vpmaddwd (or, on
    VNNI, vpdpwssd) for int16 pairs, vpdpbusd for exact u8·s8 quads, vpmaddubsw (+ vpmaddwd by 1)
    for onnxruntime's saturated u8·s8 pairs; its sums on operands at the extremes."""
    op, instruction = _WORD_OPS[kind]
    have = pairmadd.DPBUSD_LANES if kind == "dpbusd" else pairmadd.LANES
    if lanes > have:
        pytest.skip(f"this CPU lacks the {lanes}-lane {kind} variant")
    import numba
    gemm = numba.njit(pairmadd._gemm.py_func)  # uncached: cached code cannot be inspected

    @numba.njit
    def run(col, wp, bias, out):
        gemm(op, lanes, 2, col, 2 * lanes, wp, 3, bias, out, 0, 2 * lanes, 4, 2 * lanes, 3)
    rng = np.random.default_rng(lanes)
    bias = rng.integers(-1000, 1000, 4).astype(np.int32)
    out = np.zeros(8 * lanes, np.int32)
    if kind == "pairs":
        a = rng.integers(-255, 256, (3, 2 * lanes, 2)).astype(np.int16)  # (K2, P, 2)
        w = rng.integers(-255, 256, (4, 3, 2)).astype(np.int16)  # (M, K2, 2)
        want = np.einsum("rcp,orp->oc", a.astype(np.int64), w.astype(np.int64))
    else:
        a = rng.choice(np.array([0, 1, 254, 255], np.uint8), (3, 2 * lanes, 4))  # (K4, P, 4) u8
        w = rng.choice(np.array([-128, -127, 126, 127], np.int8), (4, 3, 4))  # (M, K4, 4) s8
        prod = a.astype(np.int64)[None] * w.astype(np.int64)[:, :, None, :]  # (M, K4, P, 4)
        pairs = prod[..., 0::2] + prod[..., 1::2]
        want = (_sat16(pairs) if kind == "maddubs" else pairs).sum(axis=(1, 3))
        assert kind == "dpbusd" or (np.abs(pairs) > 32767).any()  # the data saturates
    run(a.view("<i4").reshape(-1), w.view("<i4").reshape(-1), bias, out)
    np.testing.assert_array_equal(out.reshape(4, 2 * lanes), want + bias[:, None])
    reg = "zmm" if lanes == 16 else "ymm"
    asm = "".join(gemm.inspect_asm().values())
    assert re.search(rf"{instruction}\s+%{reg}", asm), f"no {instruction} on {reg}"
    assert "vpmulld" not in asm


def test_dpbusd_variant_needs_host_and_build():
    """vpdpbusd runs only where both the CPU and Numba's target features have VNNI."""
    vnni = {"avx2", "avx512bw", "avx512vl", "avx512vnni"}
    assert pairmadd.host_dpbusd_lanes(vnni, vnni) == 16
    assert pairmadd.host_dpbusd_lanes({"avx2", "avxvnni"}, {"avx2", "avxvnni"}) == 8
    assert pairmadd.host_dpbusd_lanes(vnni, {"avx2", "avx512bw"}) == 0  # NUMBA_CPU_FEATURES without VNNI
    assert pairmadd.host_dpbusd_lanes({"avx2", "avx512bw"}, vnni) == 0


def test_pairmadd_variant_needs_host_and_build():
    """A variant runs only where both the CPU and Numba's target features have its instructions."""
    avx2, avx512 = {"avx2"}, {"avx2", "avx512bw"}
    assert pairmadd.host_lanes(avx512, avx512) == 16
    assert pairmadd.host_lanes(avx2, avx512) == 8  # a cache built for AVX-512 never runs zmm code here
    assert pairmadd.host_lanes(avx512, avx2) == 8  # NUMBA_CPU_FEATURES without AVX-512
    assert pairmadd.host_lanes({"sse4.2"}, avx512) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2 ** 31), st.sampled_from([(), (2,), (2, 1)]), st.sampled_from(["u8", "s8", "u4", "s4"]),
       st.booleans(), st.sampled_from(VARIANTS))
def test_matmul_fast_eq_golden(seed, batch, dt, per_col, lanes):
    """Every variant; M, N across tile edges, K odd and even, zero points at the extremes; B packed at
    plan time (matmul_acc_packed) too."""
    rng = np.random.default_rng(seed)
    lo, hi, npdt = _RANGES[dt]
    m, k, n = (int(v) for v in rng.integers(1, 20, 3)) if seed % 3 else (int(v) for v in rng.integers(1, 70, 3))
    a = rng.integers(lo, hi + 1, batch + (m, k)).astype(npdt)
    b = rng.integers(lo, hi + 1, (k, n)).astype(npdt)
    b_zp = rng.choice([lo, hi, (lo + hi) // 2], n if per_col else ()).astype(np.int32)
    a_zp = rng.choice([lo, hi, (lo + hi) // 2], m).astype(np.int32) if seed % 2 else int(rng.choice([lo, hi]))
    want = gmm.matmul_acc(a, a_zp, b, b_zp)
    with variant(lanes):
        np.testing.assert_array_equal(fmm.matmul_acc(a, a_zp, b, b_zp), want)
        np.testing.assert_array_equal(fmm.matmul_acc_packed(a, a_zp, fmm.pack_matmul_b(b, b_zp)), want)
        if not batch:  # QGemm's C as a row, added by the product's kernel: the golden sum (no int32 overflow here)
            c = rng.integers(-2 ** 30, 2 ** 30, n).astype(np.int32)
            got = fmm.matmul_acc_packed_for(a.shape, a.dtype, a_zp, fmm.pack_matmul_b(b, b_zp), c)(a)
            np.testing.assert_array_equal(got, gmm.matmul_acc_packed_for(a.shape, a.dtype, a_zp,
                                                                         gmm.pack_matmul_b(b, b_zp), c)(a))
            np.testing.assert_array_equal(got, gmm.add_bias_i32(want, c))


@pytest.mark.parametrize("lanes", [v for v in VARIANTS if v[1]])
@pytest.mark.parametrize("adt", [np.uint8, np.int8])
def test_matmul_quads_eq_golden(lanes, adt):
    """The byte-quad matmul (vpdpbusd): K of every remainder mod 4, rows at and above QUAD_MIN_ROWS,
    leading dimensions folded into the rows, zero points and values at the extremes, B − b_zp at
    −128 and 127, with and without QGemm's C row."""
    rng = np.random.default_rng(5)
    lo, hi = (0, 255) if adt == np.uint8 else (-128, 127)
    with variant(lanes):
        for k in (1, 2, 3, 4, 37, 64):
            for lead in ((fmm.QUAD_MIN_ROWS,), (3, 7), (fmm.QUAD_MIN_ROWS + 9,)):
                a = rng.integers(lo, hi + 1, lead + (k,)).astype(adt)
                a.reshape(-1)[:2] = lo, hi
                n = int(rng.integers(1, 40))
                b_zp = rng.integers(-20, 21, n).astype(np.int32)
                wd = rng.integers(-128, 128, (k, n))
                wd[0], wd[-1] = -128, 127  # b − b_zp at both ends of int8 where b itself stays int8:
                wd = np.clip(wd, np.maximum(-128, -128 - b_zp), np.minimum(127, 127 - b_zp))
                b = (wd + b_zp).astype(np.int8)
                for a_zp in (lo, hi):
                    for c in (None, rng.integers(-2 ** 20, 2 ** 20, n).astype(np.int32)):
                        bound = fmm.matmul_acc_packed_for(a.shape, a.dtype, a_zp, fmm.pack_matmul_b(b, b_zp), c)
                        assert bound.core in fmm.MM_QUADS.values()
                        want = gmm.matmul_acc(a, a_zp, b, b_zp)
                        np.testing.assert_array_equal(bound(a), want if c is None else gmm.add_bias_i32(want, c))


@pytest.mark.parametrize("lanes", VARIANTS)
def test_matmul_fast_eq_golden_int16_operands(lanes):
    """int16 a: |a − a_zp| = 32767 takes the pair kernel, 32773 the float32 chunks; both exact."""
    rng = np.random.default_rng(11)
    b = rng.integers(-128, 128, (37, 21)).astype(np.int8)
    for a_lo, a_zp in ((-32767, 0), (-32768, 5)):
        a = rng.integers(a_lo, a_lo + 3000, (2, 5, 37)).astype(np.int16)
        a[0, 0, 0] = a_lo
        with variant(lanes):
            np.testing.assert_array_equal(fmm.matmul_acc(a, a_zp, b, 3), gmm.matmul_acc(a, a_zp, b, 3))


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2 ** 31), st.sampled_from([(np.uint8, 0, 255), (np.int8, -128, 127)]), st.booleans(),
       st.integers(-3, 3))
def test_requant_fast_eq_golden(seed, out, per_ch, axis):
    rng = np.random.default_rng(seed)
    dt, lo, hi = out
    acc = rng.integers(-2 ** 31, 2 ** 31, (2, 3, 4)).astype(np.int32) >> int(rng.integers(0, 31))
    axis = axis % 3
    scale = (2.0 ** rng.integers(-30, 0, acc.shape[axis] if per_ch else 1)).astype(np.float32)
    scale = np.where(rng.random(scale.shape) < 0.5, np.nextafter(scale, np.float32(1)), scale).astype(np.float32)
    zp = int(rng.integers(lo, hi + 1))
    np.testing.assert_array_equal(freq.requantize_f32(acc, scale, axis, zp, lo, hi, dt),
                                  greq.requantize_f32(acc, scale, axis, zp, lo, hi, dt))


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2 ** 31), st.booleans(), st.booleans(), st.sampled_from([(), (3,), (2, 5)]))
def test_scale_float_fast_eq_golden(seed, per_col, with_bias, lead):
    """f32(acc)·((alpha·a_scale)·b_scale[n]) (+ bias[n]): int32 extremes, scales 2^k ± 1 ulp, alpha 1 or not."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    acc = rng.integers(-2 ** 31, 2 ** 31, lead + (n,)).astype(np.int32) >> int(rng.integers(0, 31))
    acc.flat[0] = [2 ** 31 - 1, -(2 ** 31), 0][seed % 3]
    b_scale = (2.0 ** rng.integers(-20, 2, n if per_col else 1)).astype(np.float32)
    b_scale = np.where(rng.random(b_scale.shape) < 0.5, np.nextafter(b_scale, np.float32(1)), b_scale)
    a_scale = np.float32(rng.uniform(1e-4, 1.0))
    alpha = [1.0, float(np.float32(rng.uniform(0.1, 3.0)))][seed % 2]
    bias = rng.standard_normal(n).astype(np.float32) * np.float32(100) if with_bias else None
    y = freq.scale_float(acc, a_scale, b_scale, alpha, bias)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, greq.scale_float(acc, a_scale, b_scale, alpha, bias))


def test_scale_float_order_units():
    """The multiplier is rounded to float32 before it meets the accumulator, and the bias is added
    after the product is rounded (no fused multiply-add), as MLAS's scale-bias processor does."""
    a_scale, b_scale = np.float32(1 + 2 ** -12), np.float32(1 + 2 ** -12)  # product 1 + 2^-11 + 2^-24 -> 1 + 2^-11
    acc = np.array([[2 ** 24 - 1]], np.int32)
    for mod in (greq, freq):
        y = mod.scale_float(acc, a_scale, np.array([b_scale]), 1.0, None)
        assert y[0, 0] == np.float32(16785406)  # the unrounded product 1 + 2^-11 + 2^-24 would give 16785408
        # 3 · (1 + 2^-23) = 3 + 1.5 ulp rounds (half to even) to 3 + 2^-21; + (−3) then gives 2^-21 (an FMA: 3·2^-23)
        z = mod.scale_float(np.array([3], np.int32), np.float32(1), np.array([1 + 2 ** -23], np.float32), 1.0,
                            np.array([-3], np.float32))
        assert z[0] == np.float32(2 ** -21)


def test_gemm_bias_add_headroom():
    """QGemm's C is added in int32: the fast kernel wraps as onnxruntime does, the golden one raises."""
    acc = np.array([[2 ** 31 - 10, -5]], np.int32)
    c = np.array([20, 7], np.int32)
    np.testing.assert_array_equal(fmm.add_bias_i32(acc, c), np.array([[-(2 ** 31) + 10, 2]], np.int32))
    np.testing.assert_array_equal(gmm.add_bias_i32(acc[:, 1:], c[1:]), np.array([[2]], np.int32))
    with pytest.raises(ValueError, match=r"overflow at index \(0, 0\)"):
        gmm.add_bias_i32(acc, c)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_conv_threads_split_the_same_sums(threads, monkeypatch):
    """The conv paths' work split (panels x row blocks of the pair path, channels of the depthwise
    path) by Numba's thread count, every layer split (PARALLEL_MIN_MACS 1): one thread (no parallel
    region), more threads than panels, and jobs of several images and groups in one region (each
    worker borders its own planes), give golden's sums."""
    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    monkeypatch.setattr(fconv, "PARALLEL_MIN_MACS", 1)
    rng = np.random.default_rng(threads)
    cases = [((1, 64, 9, 1, (3, 3), (1, 1), (1, 1, 1, 1)), (40, 40)),   # pairs, 4 panels, wide rows
             ((1, 30, 21, 1, (1, 1), (1, 1), (0, 0, 0, 0)), (6, 24)),   # pairs, 1 panel: split by rows
             ((3, 16, 9, 1, (3, 3), (1, 1), (1, 1, 1, 1)), (10, 10)),  # a batch: jobs of 3 images, wide rows
             ((2, 8, 6, 2, (3, 3), (2, 2), (1, 0, 1, 2)), (9, 11)),    # images x groups, strided
             ((2, 24, 24, 24, (3, 3), (2, 1), (1, 1, 1, 1)), (12, 96))]  # depthwise planes
    saved = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        for (n, c, m, group, k, strides, pads), hw in cases:
            x = rng.integers(0, 256, (n, c, *hw)).astype(np.uint8)
            w = rng.integers(-128, 128, (m, c // group, *k)).astype(np.int8)
            args = (x, 3, w, np.zeros(m, np.int32), rng.integers(-99, 99, m).astype(np.int32), strides, pads, (1, 1),
                    group)
            with depthwise_path("plane"):
                np.testing.assert_array_equal(fconv.conv_acc(*args), gconv.conv_acc(*args))
    finally:
        numba.set_num_threads(saved)
