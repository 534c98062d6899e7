"""Eltwise / pool / LUT kernels: golden == ORT 1.32 CPU (single-node models), fast == golden."""
import re

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import npusim_kernels.fast.eltwise as fe
import npusim_kernels.fast.lut as fl
import npusim_kernels.fast.pool as fp
import npusim_kernels.golden.eltwise as ge
import npusim_kernels.golden.lut as gl
import npusim_kernels.golden.pool as gp

import onnx
import onnxruntime as ort
from onnx import TensorProto as TP, helper  # noqa: E402

DTYPES = [np.uint8, np.int8]
TT = {np.uint8: TP.UINT8, np.int8: TP.INT8}


def run_ort(op, inputs, out_type, attrs=None, domain="com.microsoft", opset=21, const_idx=()):
    names, vis, inits, feeds = [], [], [], {}
    for i, x in enumerate(inputs):
        n, x = f"i{i}", np.asarray(x)
        names.append(n)
        if i in const_idx:
            inits.append(onnx.numpy_helper.from_array(x, n))
        else:
            vis.append(helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(x.dtype), x.shape))
            feeds[n] = x
    node = helper.make_node(op, names, ["y"], domain=domain or None, **(attrs or {}))
    g = helper.make_graph([node], "g", vis, [helper.make_tensor_value_info("y", out_type, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def qparams(rng, dt, n):
    info = np.iinfo(dt)
    scales = [np.float32(2.0 ** rng.integers(-8, 0)) if rng.random() < 0.3 else np.float32(rng.uniform(0.002, 0.2))
              for _ in range(n)]
    zps = [dt(rng.integers(info.min, info.max + 1)) for _ in range(n)]
    return scales, zps


SHAPES = [((37,), (37,)), ((3, 1), (1, 45)), ((2, 33), (33,)), ((5, 7), (5, 1)), ((1,), (70,)), ((70,), ()),
          ((4, 1, 3), (1, 5, 1))]


@pytest.mark.parametrize("seed", range(24))
def test_qlinear_add_mul_vs_ort(seed):
    rng = np.random.default_rng(seed)
    dt = DTYPES[seed % 2]
    info = np.iinfo(dt)
    sa, sb = SHAPES[seed % len(SHAPES)]
    a = rng.integers(info.min, info.max + 1, sa).astype(dt)
    b = rng.integers(info.min, info.max + 1, sb).astype(dt)
    (s0, s1, s2), (z0, z1, z2) = qparams(rng, dt, 3)
    for op, fn in (("QLinearAdd", ge.qlinear_add), ("QLinearMul", ge.qlinear_mul)):
        y = run_ort(op, [a, s0, z0, b, s1, z1, s2, z2], TT[dt], const_idx=(1, 2, 4, 5, 6, 7))
        np.testing.assert_array_equal(fn(a, s0, z0, b, s1, z1, s2, z2, info.min, info.max, dt), y)


@pytest.mark.parametrize("scalar_first", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_qlinear_add_scalar_operand_vs_ort(seed, scalar_first):
    """A scalar operand enters MLAS's fixed part through an FMA, not a separately rounded product.

    Found on the PP-OCRv4 detector (int8, x + constant 127, scales below): a separately rounded
    s * r_s differed from onnxruntime on 1.1% of the elements.
    """
    rng = np.random.default_rng(300 + seed)
    dt = DTYPES[seed % 2]
    info = np.iinfo(dt)
    x = rng.integers(info.min, info.max + 1, (1, 384, 5, 5)).astype(dt)
    c = np.array(info.max if seed < 2 else rng.integers(info.min, info.max + 1), dtype=dt)
    if seed == 0:
        sx, sc, sy, zx, zc, zy = (np.float32(0.07290849), np.float32(0.023622047), np.float32(0.023529412),
                                  dt(0), dt(0), dt(info.min))
    else:
        (sx, sc, sy), (zx, zc, zy) = qparams(rng, dt, 3)
    a, b, (sa, za, sb, zb) = (c, x, (sc, zc, sx, zx)) if scalar_first else (x, c, (sx, zx, sc, zc))
    y = run_ort("QLinearAdd", [a, sa, za, b, sb, zb, sy, zy], TT[dt], const_idx=(1, 2, 4, 5, 6, 7))
    np.testing.assert_array_equal(ge.qlinear_add(a, sa, za, b, sb, zb, sy, zy, info.min, info.max, dt), y)
    np.testing.assert_array_equal(fe.qlinear_add(a, sa, za, b, sb, zb, sy, zy, info.min, info.max, dt), y)


@pytest.mark.parametrize("seed", range(10))
def test_qlinear_add_mul_every_input_pair_vs_ort(seed):
    """All 65536 (a, b) code pairs at once, so rounding ties near .5 are certain to be hit.

    Seed 0 is a PP-OCR classifier add where v = 138.500004 lands 1 ulp above the tie only if
    MLAS's fixed part k = zp_y - (r_a*zp_a + r_b*zp_b) is contracted into an FMA.
    """
    rng = np.random.default_rng(500 + seed)
    dt = DTYPES[seed % 2]
    info = np.iinfo(dt)
    codes = np.arange(256) + info.min
    a, b = (v.ravel().astype(dt) for v in np.meshgrid(codes, codes))
    if seed == 0:
        (s0, s1, s2), (z0, z1, z2) = (np.float32(0.039322637), np.float32(0.054454364), np.float32(0.064625576)), \
            (dt(132), dt(128), dt(118))
    else:
        (s0, s1, s2), (z0, z1, z2) = qparams(rng, dt, 3)
    for op, gf, ff in (("QLinearAdd", ge.qlinear_add, fe.qlinear_add), ("QLinearMul", ge.qlinear_mul, fe.qlinear_mul)):
        y = run_ort(op, [a, s0, z0, b, s1, z1, s2, z2], TT[dt], const_idx=(1, 2, 4, 5, 6, 7))
        np.testing.assert_array_equal(gf(a, s0, z0, b, s1, z1, s2, z2, info.min, info.max, dt), y, err_msg=op)
        np.testing.assert_array_equal(ff(a, s0, z0, b, s1, z1, s2, z2, info.min, info.max, dt), y, err_msg=op)


@pytest.mark.parametrize("seed", range(12))
def test_pool_lut_softmax_concat_vs_ort(seed):
    rng = np.random.default_rng(100 + seed)
    dt = DTYPES[seed % 2]
    info = np.iinfo(dt)
    (xs, ys), (xz, yz) = qparams(rng, dt, 2)
    x = rng.integers(info.min, info.max + 1, (2, 3, 5, 7)).astype(dt)
    c = (1, 2, 3, 4)
    y = run_ort("QLinearGlobalAveragePool", [x, xs, xz, ys, yz], TT[dt], {"channels_last": 0}, const_idx=c)
    np.testing.assert_array_equal(gp.qlinear_global_avgpool(x, xs, xz, ys, yz, info.min, info.max, dt), y)
    k = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
    s = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    pads = [int(rng.integers(0, k[0])), int(rng.integers(0, k[1])), int(rng.integers(0, k[0])), int(rng.integers(0, k[1]))]
    cip, cm = seed % 2, (seed // 2) % 2
    y = run_ort("QLinearAveragePool", [x, xs, xz, ys, yz], TT[dt],
                {"kernel_shape": k, "strides": s, "pads": pads, "count_include_pad": cip, "ceil_mode": cm}, const_idx=c)
    np.testing.assert_array_equal(gp.qlinear_avgpool(x, xs, xz, ys, yz, info.min, info.max, dt, k, s, pads, cip, cm), y)
    dil = [int(rng.integers(1, 3)), 1]
    y = run_ort("MaxPool", [x], TT[dt], {"kernel_shape": k, "strides": s, "pads": pads, "dilations": dil, "ceil_mode": cm},
                domain="", opset=22)
    np.testing.assert_array_equal(gp.maxpool(x, k, s, pads, dil, cm), y)
    y = run_ort("QLinearSigmoid", [x, xs * 8, xz, np.float32(1 / 256), yz], TT[dt], const_idx=c)
    np.testing.assert_array_equal(gl.apply_lut(x, gl.sigmoid_lut(xs * 8, xz, np.float32(1 / 256), yz, dt)), y)
    alpha = np.float32(rng.uniform(0.01, 0.5))
    y = run_ort("QLinearLeakyRelu", [x, xs, xz, ys, yz], TT[dt], {"alpha": float(alpha)}, const_idx=c)
    np.testing.assert_array_equal(gl.apply_lut(x, gl.leaky_relu_lut(alpha, xs, xz, ys, yz, dt)), y)
    ysm, yzsm = np.float32(1 / 256), dt(info.min)
    for opset, axis in ((13, -1), (13, 1), (12, 2)):
        y = run_ort("QLinearSoftmax", [x, xs, xz, ysm, yzsm], TT[dt], {"axis": axis, "opset": opset}, const_idx=c)
        np.testing.assert_array_equal(gl.qlinear_softmax(x, xs, xz, ysm, yzsm, axis, opset, dt), y)
    x2 = rng.integers(info.min, info.max + 1, (2, 4, 5, 7)).astype(dt)
    y = run_ort("QLinearConcat", [ys, yz, x, xs, xz, x2, ys, yz], TT[dt], {"axis": 1}, const_idx=(0, 1, 3, 4, 6, 7))
    np.testing.assert_array_equal(gl.qlinear_concat([x, x2], [xs, ys], [xz, yz], ys, yz, 1, dt), y)


def test_fma_f32_single_rounding():
    # 1 + 2^-24 + 2^-60: mul-then-add rounds to 1 (tie to even); fused rounds up.
    x, y, z = np.float32(1 + 2.0**-12), np.float32(1 + 2.0**-12), np.float32(-2.0**-11)
    # (1 + 2^-12)^2 - 2^-11 = 1 + 2^-24 exactly: a float32 tie, resolved to even (1.0)
    assert ge.fma_f32(x, y, z) == np.float32(1.0) == fe.fma_f32(x, y, z)
    z2 = np.float32(-2.0**-11 + 2.0**-35)
    assert ge.fma_f32(x, y, z2) == np.float32(1 + 2.0**-23) == fe.fma_f32(x, y, z2)


small = st.integers(1, 6)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(DTYPES), st.integers(0, 6), st.integers(0, 2**31), st.booleans())
def test_fast_eq_golden_eltwise(dt, shape_i, seed, edge):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dt)
    sa, sb = SHAPES[shape_i]
    a = rng.integers(info.min, info.max + 1, sa).astype(dt)
    b = rng.integers(info.min, info.max + 1, sb).astype(dt)
    (s0, s1, s2), (z0, z1, z2) = qparams(rng, dt, 3)
    if edge:  # extremes: zero points at type min/max, scales power of two ± 1 ulp
        z0, z1, z2 = dt(info.min), dt(info.max), dt(info.min)
        s0 = np.nextafter(np.float32(0.125), np.float32(1))
        s2 = np.nextafter(np.float32(0.0625), np.float32(0))
        a.reshape(-1)[:2] = [info.min, info.max][:a.size]
    for name in ("qlinear_add", "qlinear_mul"):
        args = (a, s0, z0, b, s1, z1, s2, z2, info.min, info.max, dt)
        np.testing.assert_array_equal(getattr(fe, name)(*args), getattr(ge, name)(*args))



@pytest.mark.parametrize("name", ["qlinear_add", "qlinear_mul"])
def test_eltwise_out_of_int32_range_gives_qmin(name):
    """v = a·2^24: cvtps2dq turns v >= 2^31 (a >= 128) into INT32_MIN, which saturates to qmin,
    while 100·2^24 and 127·2^24 saturate to qmax; b is a broadcast scalar 1 (zero points 0)."""
    a = np.array([[0, 100, 127, 128, 255]], np.uint8)
    b = np.array([1], np.uint8)
    args = (a, np.float32(2.0**24), 0, b, np.float32(1.0 if name == "qlinear_mul" else 0.5), 0, np.float32(1.0), 0,
            0, 255, np.uint8)
    for kernels in (ge, fe):
        np.testing.assert_array_equal(getattr(kernels, name)(*args), [[0, 255, 255, 0, 0]])

@settings(max_examples=40, deadline=None)
@given(st.sampled_from(DTYPES), small, small, small, st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**31),
       st.booleans(), st.booleans())
def test_fast_eq_golden_pool(dt, c, h, w, kh, sh, seed, cip, cm):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dt)
    x = rng.integers(info.min, info.max + 1, (1, c, h + kh, w + 1)).astype(dt)
    (xs, ys), (xz, yz) = qparams(rng, dt, 2)
    k, s, pads = [kh, 2], [sh, 1], [kh - 1, 1, 0, 1]
    np.testing.assert_array_equal(fp.qlinear_avgpool(x, xs, xz, ys, yz, info.min, info.max, dt, k, s, pads, cip, cm),
                                  gp.qlinear_avgpool(x, xs, xz, ys, yz, info.min, info.max, dt, k, s, pads, cip, cm))
    np.testing.assert_array_equal(fp.maxpool(x, k, s, pads, [1, 2], cm), gp.maxpool(x, k, s, pads, [1, 2], cm))
    np.testing.assert_array_equal(fp.qlinear_global_avgpool(x, xs, xz, ys, yz, info.min, info.max, dt),
                                  gp.qlinear_global_avgpool(x, xs, xz, ys, yz, info.min, info.max, dt))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(DTYPES), st.integers(1, 3), st.integers(0, 2**31), st.booleans())
def test_fast_eq_golden_maxpool(dt, nd, seed, cm):
    """1-D, 2-D (the row kernel) and 3-D (the generic one) pools: kernels, strides, dilations and pads at
    either end drawn per dimension (pads below the window's span, as ONNX requires), ceil_mode,
    windows clipped at the borders, inputs down to shorter than a window (no interior column, rows of
    padding only), values at the dtype's extremes."""
    rng = np.random.default_rng(seed)
    info = np.iinfo(dt)
    k = [int(v) for v in rng.integers(1, 4, nd)]
    dil = [int(v) for v in rng.integers(1, 3, nd)]
    s = [int(v) for v in rng.integers(1, 4, nd)]
    span = [(kk - 1) * d + 1 for kk, d in zip(k, dil)]
    pads = [int(rng.integers(0, sp)) for sp in span] + [int(rng.integers(0, sp)) for sp in span]
    least = [max(1, sp - pads[i] - pads[nd + i]) for i, sp in enumerate(span)]  # down to rows shorter than a window
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4))) + tuple(int(m + rng.integers(0, 9)) for m in least)
    x = rng.choice(np.array([info.min, info.max, 0, 1], dt), shape)
    x[..., ::3] = rng.integers(info.min, info.max + 1, x[..., ::3].shape)
    np.testing.assert_array_equal(fp.maxpool(x, k, s, pads, dil, cm), gp.maxpool(x, k, s, pads, dil, cm))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(DTYPES), small, small, st.integers(0, 2**31), st.sampled_from([(13, -1), (13, 0), (12, 1)]))
def test_fast_eq_golden_lut(dt, n, d, seed, opset_axis):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dt)
    (xs, ys), (xz, yz) = qparams(rng, dt, 2)
    x = rng.integers(info.min, info.max + 1, (n, d, 3)).astype(dt)
    np.testing.assert_array_equal(fl.sigmoid_lut(xs, xz, ys, yz, dt), gl.sigmoid_lut(xs, xz, ys, yz, dt))
    np.testing.assert_array_equal(fl.leaky_relu_lut(0.1, xs, xz, ys, yz, dt), gl.leaky_relu_lut(0.1, xs, xz, ys, yz, dt))
    t = gl.sigmoid_lut(xs, xz, ys, yz, dt)
    np.testing.assert_array_equal(fl.apply_lut(x, t), gl.apply_lut(x, t))
    opset, axis = opset_axis
    np.testing.assert_array_equal(fl.qlinear_softmax(x, xs, xz, np.float32(1 / 256), dt(info.min), axis, opset, dt),
                                  gl.qlinear_softmax(x, xs, xz, np.float32(1 / 256), dt(info.min), axis, opset, dt))
    args = ([x, x[:, :1]], [xs, ys], [xz, yz], ys, yz, 1, dt)
    np.testing.assert_array_equal(fl.qlinear_concat(*args), gl.qlinear_concat(*args))
    wide = rng.integers(info.min, info.max + 1, (n, d, 131)).astype(dt)  # whole shuffle blocks and a tail
    args = ([wide, x, wide[..., 5:]], [xs, ys, xs], [xz, yz, yz], ys, yz, -1, dt)
    np.testing.assert_array_equal(fl.qlinear_concat(*args), gl.qlinear_concat(*args))


# The byte-table shuffles (fl.WIDTH: 64 AVX-512 VBMI vpermi2b, 32 AVX2 vpshufb) and 0, the plain loop.
LUT_NEEDS = {64: "AVX-512 VBMI", 32: "AVX2", 0: ""}


def lut_variant(width):
    if width > fl.WIDTH:
        pytest.skip(f"this CPU lacks {LUT_NEEDS[width]}")
    return fl.SHUFFLE[width]


@pytest.mark.parametrize("width", sorted(LUT_NEEDS))
def test_lut_shuffle_eq_golden(width):
    """Every code, u8/i8/bool tables, u8/i8 inputs, lengths around whole blocks, empty and 1 element."""
    shuffle = lut_variant(width)
    rng = np.random.default_rng(width)
    x = np.concatenate([rng.permutation(256), rng.integers(0, 256, 300)]).astype(np.uint8)
    for t in (rng.integers(0, 256, 256).astype(np.uint8), rng.integers(-128, 128, 256).astype(np.int8),
              rng.integers(0, 2, 256).astype(bool)):
        for xt in (x, x.view(np.int8)):
            for n in (0, 1, 31, 63, 64, 65, 256, 556):
                out = np.empty(n, t.dtype)
                shuffle(xt[:n], t, out)
                np.testing.assert_array_equal(out, gl.apply_lut(xt[:n], t), err_msg=f"{t.dtype}[{xt.dtype}] n={n}")


def test_apply_lut_shapes_and_wide_tables():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (2, 3, 37)).astype(np.int8)
    for t in (rng.integers(0, 256, 256).astype(np.uint8), rng.standard_normal(256).astype(np.float32),
              rng.integers(-2**31, 2**31, 256).astype(np.int32)):
        for xs in (x, x[:, :, ::2], x[:0], x[0, 0, 0]):
            y = fl.apply_lut(xs, t)
            assert y.dtype == t.dtype and y.shape == xs.shape
            np.testing.assert_array_equal(y, gl.apply_lut(xs, t))


@pytest.mark.parametrize("width,op,reg", [(64, r"vperm[it]2b", "zmm"), (32, "vpshufb", "ymm")])
def test_lut_shuffle_instructions(width, op, reg):
    fresh = numba.njit(lut_variant(width).py_func)  # uncached: cached code cannot be inspected
    fresh(np.zeros(64, np.uint8), np.zeros(256, np.uint8), np.zeros(64, np.uint8))
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert re.search(rf"\b{op}\s[^\n]*%{reg}", asm), f"no {op} on {reg}"
    assert "gather" not in asm


def test_lut_width_needs_host_and_build():
    vbmi, avx2 = {"avx2", "avx512bw", "avx512vbmi"}, {"avx2"}
    assert fl.host_width(vbmi, vbmi) == 64
    assert fl.host_width(vbmi, avx2) == 32  # NUMBA_CPU_FEATURES without AVX-512: no zmm code
    assert fl.host_width(avx2, vbmi) == 32
    assert fl.host_width({"avx2", "avx512bw"}, vbmi) == 32  # Skylake-X: BW but no VBMI
    assert fl.host_width({"sse4.2"}, vbmi) == 0


# ---------------------------------------------------------------- float GlobalAveragePool (onnxruntime's orders)

_F32_EDGES = np.array([0.0, -0.0, 1.0, -1.0, 2.0**24, -(2.0**24), 1.0 + 2.0**-23, 3e38, -3e38, 1e-45, 0.1], np.float32)


@settings(max_examples=40)
@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 6), st.integers(1, 7), st.integers(0, 2**31),
       st.sampled_from(["sequential", "lanes4"]))
def test_global_avgpool_f32_fast_equals_golden(n, c, h, w, seed, order):
    """Random values of mixed magnitudes (sums that cancel and round) with edge values mixed in
    (±0, ±2^24, 1 + ulp, ±3e38 whose sums overflow to ±inf, a denormal): same bits in both orders;
    spatial sizes 1..42, below, at and off multiples of 4."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c, h, w)) * 10.0 ** rng.integers(-3, 4, (n, c, 1, 1))).astype(np.float32)
    edge = rng.random(x.shape) < 0.2
    x[edge] = rng.choice(_F32_EDGES, int(edge.sum()))
    want = gp.global_avgpool_f32(x, order)
    got = fp.global_avgpool_f32(x, order)
    assert got.shape == want.shape == (n, c, 1, 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


def test_global_avgpool_f32_orders_differ_and_refuse_others():
    """The two orders give different float32 sums (so a test against onnxruntime tells them apart),
    and an unknown order is refused by both kernel sets."""
    x = np.array([1.0, 2.0**-24, 2.0**-24, 2.0**-24, 2.0**-24], np.float32).reshape(1, 1, 1, 5)
    # sequential: 1 + 2^-24 is a tie, to even: 1, four times. lanes4: l0 + l2 = 1 (the same tie),
    # l1 + l3 = 2^-23 exactly, 1 + 2^-23, then + 2^-24: a tie, to even: 1 + 2^-22
    assert gp.global_avgpool_f32(x, "sequential")[0, 0, 0, 0] == np.float32(0.2)
    assert gp.global_avgpool_f32(x, "lanes4")[0, 0, 0, 0] == np.float32(np.float32(1 + 2.0**-22) / np.float32(5))
    for k in (gp, fp):
        with pytest.raises(ValueError, match="order"):
            k.global_avgpool_f32(x, "pairwise")
