"""Fixed-point kernels of mode "npu" (docs/npu_arithmetic.md).

Primitives: hand-computed edge cases and an exact rational reference (fractions.Fraction).
Ops: fast == golden bit for bit (hypothesis), and within 1 LSB of onnxruntime (>= 99% exact).
"""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import npusim_kernels.fast.fixedpoint as ff
import npusim_kernels.golden.fixedpoint as gf
from npusim_kernels.golden.requant import requantize_f32
from npusim_kernels.params import quantize_multiplier_int
from test_eltwise_pool_lut import TT, qparams, run_ort

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
KERNELS = [pytest.param(gf, id="golden"), pytest.param(ff, id="fast")]
ROUNDINGS = ["double", "single"]
DTYPES = [np.uint8, np.int8]
HYP = settings(max_examples=60, deadline=None)


# ---------------------------------------------------------------- exact rational references

def floor_half_up(v):
    """floor(v + 1/2) of a Fraction: round half toward +infinity."""
    return math.floor(v + Fraction(1, 2))


def round_half_away(v):
    return int(math.copysign(math.floor(abs(v) + Fraction(1, 2)), v))


def sat32(v):
    return min(max(v, I32_MIN), I32_MAX)


def ref_srdhm(a, b):
    return I32_MAX if a == b == I32_MIN else floor_half_up(Fraction(a * b, 2 ** 31))


def ref_mbqm(x, m0, n, rounding):
    if rounding == "single":
        return sat32(floor_half_up(Fraction(x * m0) / Fraction(2) ** (31 + n)))
    xs = sat32(x * 2 ** max(-n, 0))
    return sat32(round_half_away(Fraction(ref_srdhm(xs, m0), 2 ** max(n, 0))))


# ---------------------------------------------------------------- primitives: hand-computed

@pytest.mark.parametrize("k", KERNELS)
def test_rdbpot_edges(k):
    cases = [  # (x, e, round_half_away(x / 2^e))
        (5, 1, 3), (-5, 1, -3), (6, 2, 2), (-6, 2, -2), (-7, 2, -2), (7, 2, 2), (-2, 2, -1), (2, 2, 1),
        (-1, 1, -1), (1, 1, 1), (-1, 2, 0), (123, 0, 123), (-123, 0, -123),
        (I32_MIN, 31, -1), (I32_MAX, 31, 1), (-2 ** 30, 31, -1), (2 ** 30 - 1, 31, 0), (-2 ** 30 + 1, 31, 0),
        (I32_MIN, 32, -1), (I32_MAX, 32, 0), (2 ** 31, 32, 1), (I32_MIN, 33, 0),
        (2 ** 62 - 1, 62, 1), (-2 ** 61, 62, -1), (2 ** 61 - 1, 62, 0), (-2 ** 61 + 1, 62, 0)]
    x, e, want = (np.array(c, np.int64) for c in zip(*cases))
    np.testing.assert_array_equal(k.rdbpot(x, e), want)


@pytest.mark.parametrize("k", KERNELS)
def test_srdhm_edges(k):
    cases = [  # (a, b, floor(a·b / 2^31 + 1/2)); ties go up: −0.5 -> 0, −1.5 -> −1
        (I32_MIN, I32_MIN, I32_MAX), (I32_MIN, I32_MAX, -I32_MAX), (I32_MAX, I32_MAX, I32_MAX - 1),
        (I32_MIN, 1, -1), (I32_MIN, -1, 1), (-1, 1, 0), (1, 2 ** 30, 1), (-1, 2 ** 30, 0),
        (3, 2 ** 30, 2), (-3, 2 ** 30, -1), (5, 2 ** 30, 3), (-5, 2 ** 30, -2), (0, I32_MIN, 0),
        (2 ** 30, 2 ** 30, 2 ** 29), (-2 ** 30, 2 ** 30, -2 ** 29)]
    a, b, want = (np.array(c, np.int64) for c in zip(*cases))
    y = k.srdhm(a, b)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, want)


def test_quantize_multiplier_edges():
    cases = [  # (real, m0, n)
        (1.0, 2 ** 30, -1), (0.5, 2 ** 30, 0), (0.75, 3 * 2 ** 29, 0), (2.0 ** -31, 2 ** 30, 30),
        (3.0, 3 * 2 ** 29, -2), (2.0 ** 40, 2 ** 30, -41), (0.0, 0, 0),
        (1 - 2.0 ** -33, 2 ** 30, -1),  # q·2^31 = 2^31 − 1/4 rounds to 2^31: renormalized
        (1 - 2.0 ** -32, 2 ** 30, -1),  # q·2^31 = 2^31 − 1/2: the tie goes away from zero, to 2^31
        (1 - 2.0 ** -31, I32_MAX, 0),
        (0.5 + 2.0 ** -33, 2 ** 30, 0),  # 2^30 + 1/4 rounds down
        (0.5 + 2.0 ** -32, 2 ** 30 + 1, 0),  # 2^30 + 1/2 rounds up
        (2.0 ** -63, 2 ** 30, 62), (2.0 ** -63 * (1 - 2.0 ** -40), 2 ** 30, 62),  # rounds up into range
        (2.0 ** -64, 0, 0), (1e-30, 0, 0)]  # underflow: n would be > 62
    real, m0, n = zip(*cases)
    gm, gn = gf.quantize_multiplier(real)
    assert gm.dtype == np.int32 and gn.dtype == np.int32
    np.testing.assert_array_equal(gm, m0)
    np.testing.assert_array_equal(gn, n)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="quantize_multiplier"):
            gf.quantize_multiplier([0.5, bad])


@pytest.mark.parametrize("k", KERNELS)
def test_mbqm_edges(k):
    cases = [  # (x, m0, n, double, single)
        (5, 2 ** 30, 1, 2, 1),  # 5·0.25 = 1.25: SRDHM gives 2.5 -> 3, then 1.5 -> 2; single: 1
        (-6, 2 ** 30, 1, -2, -1),  # −1.5: SRDHM −3 exactly, then −1.5 -> −2 (away); single −1.5 -> −1 (up)
        (-1, 2 ** 30, 0, 0, 0),  # −0.5 -> 0 both (SRDHM rounds half up)
        (1, 2 ** 30, 0, 1, 1), (-3, 2 ** 30, 1, -1, -1), (-5, 2 ** 30, 2, -1, -1),
        (7, 2 ** 30, -1, 7, 7), (-7, 2 ** 30, -1, -7, -7),  # (2^30, −1) is 1.0: exact
        # left shifts saturate x·2^l to int32 BEFORE the multiply (NEON's vqshl, then vqrdmulh), so a
        # double-rounding result can land below the saturated value; single rounding saturates the product
        (I32_MAX, 2 ** 30, -1, 2 ** 30, I32_MAX), (I32_MIN, 2 ** 30, -1, -2 ** 30, I32_MIN),
        (2 ** 30, 2 ** 30, -2, 2 ** 30, I32_MAX), (1, 2 ** 30, -40, 2 ** 30, I32_MAX),
        (-1, 2 ** 30, -40, -2 ** 30, I32_MIN), (0, 2 ** 30, -40, 0, 0), (3, 3 * 2 ** 29, -3, 18, 18),
        (I32_MIN, 2 ** 30, 31, -1, 0),  # −0.5: double −2^30 exactly, then −0.5 -> −1 (away); single -> 0 (up)
        (3, I32_MAX, 1, 2, 1),  # 1.4999..: double rounds 2.9999.. to 3, then 1.5 to 2; single gives 1
        (I32_MIN, I32_MAX, 31, -1, -1),
        (I32_MIN, 2 ** 30, 32, 0, 0), (I32_MIN, 2 ** 30, 62, 0, 0), (I32_MIN, I32_MAX, 61, 0, 0),
        (I32_MIN, 2 ** 30, 100, 0, 0), (I32_MAX, I32_MAX, 100, 0, 0)]  # n > 62: shifts act as 62 / 63
    x, m0, n, want_d, want_s = (np.array(c, np.int64) for c in zip(*cases))
    # the hand values above are re-derived by the rational reference, so a typo cannot pass silently
    for i in range(len(cases)):
        assert ref_mbqm(int(x[i]), int(m0[i]), int(n[i]), "double") == want_d[i], cases[i]
        assert ref_mbqm(int(x[i]), int(m0[i]), int(n[i]), "single") == want_s[i], cases[i]
    np.testing.assert_array_equal(k.mbqm(x, m0, n, "double"), want_d)
    np.testing.assert_array_equal(k.mbqm(x, m0, n, "single"), want_s)


# ---------------------------------------------------------------- primitives: rational reference

i32 = st.integers(I32_MIN, I32_MAX)
m0s = st.one_of(st.integers(2 ** 30, I32_MAX), st.integers(0, I32_MAX), st.sampled_from([0, 2 ** 30, I32_MAX]))
shifts = st.one_of(st.integers(-33, 64), st.sampled_from([-31, -30, -1, 0, 1, 30, 31, 32, 62, 63]))


@HYP
@given(st.lists(st.tuples(i32, i32), min_size=1, max_size=50))
def test_srdhm_rdbpot_vs_fraction(pairs):
    a, b = (np.array(v, np.int64) for v in zip(*pairs))
    want = [ref_srdhm(int(x), int(y)) for x, y in pairs]
    e = np.abs(b) % 63
    want_r = [round_half_away(Fraction(int(x), 2 ** int(s))) for x, s in zip(a, e)]
    for k in (gf, ff):
        np.testing.assert_array_equal(k.srdhm(a, b), want)
        np.testing.assert_array_equal(k.rdbpot(a, e), want_r)


@HYP
@given(st.lists(st.tuples(i32, m0s, shifts), min_size=1, max_size=50), st.sampled_from(ROUNDINGS))
def test_mbqm_vs_fraction(triples, rounding):
    x, m0, n = (np.array(v, np.int64) for v in zip(*triples))
    want = [ref_mbqm(int(a), int(b), int(c), rounding) for a, b, c in triples]
    for k in (gf, ff):
        np.testing.assert_array_equal(k.mbqm(x, m0, n, rounding), want)


@HYP
@given(st.lists(st.floats(2.0 ** -62, 2.0 ** 40), min_size=1, max_size=30))
def test_quantize_multiplier_vs_fraction(reals):
    m0, n = gf.quantize_multiplier(reals)
    for r, m, s in zip(reals, m0.tolist(), n.tolist()):
        assert 2 ** 30 <= m < 2 ** 31
        err = abs(Fraction(m) / Fraction(2) ** (31 + s) - Fraction(r))
        assert err <= Fraction(r) / 2 ** 31


def test_gemmlowp_exp_and_reciprocal_vs_real():
    """The softmax's fixed-point functions against the real ones: exp of a Q5.26 input in Q0.31
    within 2^9 raw units (2.4e-7; gemmlowp's polynomial and barrel-shifter roundings; measured max
    492), 1/(1 + x) within 2^3 (measured 6); exact at the ends (exp(0) and 1/1 saturate to
    INT32_MAX, exp(−32) = 0)."""
    powers = 2 ** np.arange(32, dtype=np.int64)
    a = -np.unique(np.concatenate([np.arange(0, 2 ** 31, 2 ** 31 // 20011), powers, powers[:31] - 1]))
    e = gf.exp_on_negative_values(a).astype(np.float64)
    assert np.abs(e - np.exp(a / 2.0 ** 26) * 2.0 ** 31).max() <= 2 ** 9
    x = np.unique(np.concatenate([np.arange(0, 2 ** 31, 2 ** 31 // 20011), powers[:31], powers[1:] - 1]))
    r = gf.one_over_one_plus_x(x).astype(np.float64)
    assert np.abs(r - 2.0 ** 31 / (1 + x / 2.0 ** 31)).max() <= 2 ** 3
    np.testing.assert_array_equal(gf.exp_on_negative_values([0, -2 ** 31]), [I32_MAX, 0])
    assert gf.one_over_one_plus_x([0])[0] == I32_MAX


# ---------------------------------------------------------------- ops: fast == golden

def codes(draw, dt, shape):
    info = np.iinfo(dt)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    return np.random.default_rng(seed).integers(info.min, info.max + 1, shape).astype(dt)


def scale(draw):
    return draw(st.one_of(st.floats(1e-3, 0.5), st.sampled_from([2.0 ** -7, 2.0 ** -8, 0.5, 1.0, 1 / 255])))


def zero_point(draw, dt):
    info = np.iinfo(dt)
    return draw(st.one_of(st.integers(info.min, info.max), st.sampled_from([info.min, info.max, 0])))


def both(fn_name, *args):
    y_g = getattr(gf, fn_name)(*args)
    y_f = getattr(ff, fn_name)(*args)
    assert y_f.dtype == y_g.dtype and y_f.shape == y_g.shape
    np.testing.assert_array_equal(y_f, y_g)
    return y_g


def out_range(draw, dt):
    info = np.iinfo(dt)
    lo = draw(st.sampled_from([info.min, info.min, 0 if dt == np.int8 else 10]))
    return lo, draw(st.sampled_from([info.max, info.max, lo + 6 * 16]))  # ReLU6-style narrowed ranges too


@HYP
@given(st.data())
def test_fast_eq_golden_requantize(data):
    d = data.draw
    rng = np.random.default_rng(d(st.integers(0, 2 ** 32 - 1)))
    shape = tuple(d(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    axis = d(st.integers(-len(shape), len(shape) - 1))
    span = d(st.sampled_from([2 ** 12, 2 ** 20, 2 ** 31]))
    acc = rng.integers(max(-span, I32_MIN), min(span, I32_MAX + 1), shape).astype(np.int32)
    if d(st.booleans()):
        acc.reshape(-1)[0] = d(st.sampled_from([I32_MIN, I32_MAX, 0]))
    per_ch = d(st.booleans())
    real = rng.uniform(1e-5, 0.1, shape[axis] if per_ch else 1) * d(st.sampled_from([1.0, 1e-9, 1e4]))
    m0, n = gf.quantize_multiplier(real)
    dt = d(st.sampled_from(DTYPES + [np.int32]))
    info = np.iinfo(dt)
    y_zp = d(st.integers(max(info.min, -128), min(info.max, 255)))
    both("requantize_fixed", acc, m0, n, axis, y_zp, info.min, info.max, dt, d(st.sampled_from(ROUNDINGS)))


ADD_SHAPES = [((2, 3, 4, 5), (2, 3, 4, 5)), ((1, 3, 4, 5), (1, 3, 1, 1)), ((1, 3, 1, 1), (1, 3, 4, 5)),
              ((3, 4, 5), (5,)), ((5,), (3, 4, 5)), ((2, 3, 4), ()), ((), (2, 3, 4)), ((), ()),
              ((2, 1, 4), (1, 3, 1)), ((2, 3, 4, 5), (1, 3, 1, 1)), ((4, 1), (4, 6)), ((7,), (1,))]


@HYP
@given(st.data(), st.sampled_from(ADD_SHAPES), st.sampled_from(["fixed_add", "fixed_mul"]))
def test_fast_eq_golden_add_mul(data, shapes, op):
    d = data.draw
    dt_a = dt_b = dt_y = d(st.sampled_from(DTYPES))  # QLinearAdd/Mul: one type T for A, B and C
    a, b = codes(d, dt_a, shapes[0]), codes(d, dt_b, shapes[1])
    sa, sb, sy = scale(d), scale(d), scale(d)
    params = gf.add_params(sa, sb, sy) if op == "fixed_add" else gf.mul_params(sa, sb, sy)
    qmin, qmax = out_range(d, dt_y)
    both(op, a, zero_point(d, dt_a), b, zero_point(d, dt_b), params, zero_point(d, dt_y), qmin, qmax, dt_y,
         d(st.sampled_from(ROUNDINGS)))


@HYP
@given(st.data())
def test_fast_eq_golden_rescale_global_avgpool_softmax(data):
    d = data.draw
    dt, dt_y = d(st.sampled_from(DTYPES)), d(st.sampled_from(DTYPES))
    rounding = d(st.sampled_from(ROUNDINGS))
    info_y = np.iinfo(dt_y)
    x = codes(d, dt, tuple(d(st.lists(st.integers(1, 7), min_size=3, max_size=4))))
    x_zp, y_zp = zero_point(d, dt), zero_point(d, dt_y)
    m, n = quantize_multiplier_int(scale(d) / scale(d))
    both("fixed_rescale", x, x_zp, m, n, y_zp, info_y.min, info_y.max, dt_y, rounding)
    m, n = gf.global_avgpool_params(scale(d), scale(d), int(np.prod(x.shape[2:])))
    both("fixed_global_avgpool", x, x_zp, m, n, y_zp, info_y.min, info_y.max, dt_y, rounding)


def softmax_rows(draw, dt, shape):
    """Codes for a softmax: random, or rows that reach the edges (all equal: the sum's largest
    value per element; one dominant code; the type's extremes; a small spread, where many
    differences tie)."""
    info = np.iinfo(dt)
    x = codes(draw, dt, shape)
    kind = draw(st.sampled_from(["random", "equal", "dominant", "extremes", "spread"]))
    if kind == "equal":
        x[...] = draw(st.sampled_from([info.min, info.max, 0]))
    elif kind == "dominant":
        x[...] = info.min
        x.reshape(-1)[::3] = info.max
    elif kind == "extremes":
        x = np.where(x.astype(np.int64) % 2 == 0, info.min, info.max).astype(dt)
    elif kind == "spread":
        x = (x.astype(np.int64) % 4 + (info.max - 4)).astype(dt)
    return x


@HYP
@given(st.data())
def test_fast_eq_golden_softmax(data):
    """fixed_softmax: fast == golden for any input scale (diff_min from 2^−7 ... 8: every difference
    counts, or most are cut off), output scale (TFLite's 1/256 and others) and zero point."""
    d = data.draw
    dt, dt_y = d(st.sampled_from(DTYPES)), d(st.sampled_from(DTYPES))
    rounding = d(st.sampled_from(ROUNDINGS))
    x = softmax_rows(d, dt, tuple(d(st.lists(st.integers(1, 9), min_size=1, max_size=4))))
    x_scale = d(st.one_of(st.floats(2.0 ** -26, 8.0), st.sampled_from([2.0 ** -26, 2.0 ** -7, 0.25, 8.0, 40.0])))
    params = gf.softmax_params(x_scale, d(st.sampled_from([1 / 256, 1 / 255, 2.0 ** -7, 0.5])), rounding)
    lo, hi = out_range(d, dt_y)
    both("fixed_softmax", x, d(st.integers(-x.ndim, x.ndim - 1)), params, zero_point(d, dt_y), lo, hi, dt_y,
         rounding)


@HYP
@given(st.data(), st.integers(1, 3))
def test_fast_eq_golden_avgpool_codes(data, nd):
    """fixed_avgpool_codes: fast == golden on random codes and on the type's extremes, with ties
    (codes of a small spread around 0), padding counted or not, ceil mode, 8 and 16 bits."""
    d = data.draw
    dt = d(st.sampled_from(DTYPES + [np.int16, np.uint16]))
    info = np.iinfo(dt)
    kernel = [d(st.integers(1, 4)) for _ in range(nd)]
    strides = [d(st.integers(1, 3)) for _ in range(nd)]
    pads = [d(st.integers(0, k - 1)) for k in kernel] + [d(st.integers(0, k - 1)) for k in kernel]
    x = codes(d, dt, (d(st.integers(1, 2)), d(st.integers(1, 3))) + tuple(d(st.integers(k, k + 6)) for k in kernel))
    kind = d(st.sampled_from(["random", "extremes", "ties"]))
    if kind == "extremes":
        x = np.where(x.astype(np.int64) % 2 == 0, info.min, info.max).astype(dt)
    elif kind == "ties":
        x = (x.astype(np.int64) % 4 + max(info.min, -2)).astype(dt)
    lo, hi = (info.min, info.max) if d(st.booleans()) else out_range(d, np.uint8 if info.min == 0 else np.int8)
    both("fixed_avgpool_codes", x, zero_point(d, dt), kernel, strides, pads, d(st.booleans()), d(st.booleans()),
         lo, hi)


@HYP
@given(st.data(), st.integers(1, 3))
def test_fast_eq_golden_avgpool(data, nd):
    d = data.draw
    dt = d(st.sampled_from(DTYPES))
    info = np.iinfo(dt)
    kernel = [d(st.integers(1, 4)) for _ in range(nd)]
    strides = [d(st.integers(1, 3)) for _ in range(nd)]
    pads = [d(st.integers(0, k - 1)) for k in kernel] + [d(st.integers(0, k - 1)) for k in kernel]
    spatial = [d(st.integers(k, k + 6)) for k in kernel]
    x = codes(d, dt, (d(st.integers(1, 2)), d(st.integers(1, 3))) + tuple(spatial))
    m_by, n_by = gf.avgpool_params(scale(d), scale(d), kernel)
    both("fixed_avgpool", x, zero_point(d, dt), kernel, strides, pads, d(st.booleans()), d(st.booleans()),
         m_by, n_by, zero_point(d, dt), info.min, info.max, dt, d(st.sampled_from(ROUNDINGS)))


# ---------------------------------------------------------------- against onnxruntime (float32, half-even)

class LsbStats:
    """Counts elements and exact ones; every element must be within 1 LSB."""

    def __init__(self):
        self.total = self.exact = 0

    def add(self, y, want):
        d = np.abs(np.asarray(y, np.int64) - np.asarray(want, np.int64))
        assert d.max(initial=0) <= 1, f"{int(d.max())} LSB off"
        self.total += d.size
        self.exact += int(np.sum(d == 0))

    def check(self, min_total=5000, min_exact=0.99):
        assert self.total >= min_total and self.exact / self.total >= min_exact, (self.exact, self.total)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_add_mul_vs_ort(rounding):
    stats = {"QLinearAdd": LsbStats(), "QLinearMul": LsbStats()}
    for seed in range(8):
        rng = np.random.default_rng(700 + seed)
        dt = DTYPES[seed % 2]
        info = np.iinfo(dt)
        sa, sb = ((1, 8, 16, 16), (1, 8, 16, 16)) if seed < 4 else ((1, 8, 16, 16), (1, 8, 1, 1))
        a = rng.integers(info.min, info.max + 1, sa).astype(dt)
        b = rng.integers(info.min, info.max + 1, sb).astype(dt)
        (s0, s1, s2), (z0, z1, z2) = qparams(rng, dt, 3)
        for op, fn, params in (("QLinearAdd", ff.fixed_add, gf.add_params(s0, s1, s2)),
                               ("QLinearMul", ff.fixed_mul, gf.mul_params(s0, s1, s2 * 16))):
            ys = s2 if op == "QLinearAdd" else s2 * np.float32(16)  # keep products mostly in range
            want = run_ort(op, [a, s0, z0, b, s1, z1, ys, z2], TT[dt], const_idx=(1, 2, 4, 5, 6, 7))
            stats[op].add(fn(a, z0, b, z1, params, z2, info.min, info.max, dt, rounding), want)
    # measured (8 seeds): double: add 16,384/16,384 exact, mul 16,281/16,384 (99.37%); single: both all exact
    floor = {"QLinearAdd": 0.998, "QLinearMul": 0.992 if rounding == "double" else 0.998}
    for op, s in stats.items():
        s.check(min_exact=floor[op])


# Double rounding rounds twice (SRDHM to an integer, then RDBPOT): when the right shift n is small,
# the first rounding often lands on a tie of the second, which then rounds away from the exact value
# (avgpool: n = 0..2 for realistic scales). Single rounding rounds the exact product once.
# Measured on the 8 seeds below, exact against onnxruntime (every element within 1 LSB):
#   double: gap 2,010/2,048 (98.15%), avgpool 19,552/21,312 (91.74%), softmax 73,725/73,728 (99.996%)
#   single: gap and avgpool all exact, softmax 73,725/73,728
# (the pools here change the scale: the multiplier path; the global pool is TFLite's MEAN, whose
# multiplier 2^k/N is truncated; TFLite's softmax, gemmlowp fixed point).
# The floors leave ~0.2% for onnxruntime's float32 sums on other CPUs.
MIN_EXACT = {"double": {"gap": 0.978, "avgpool": 0.915, "softmax": 0.998},
             "single": {"gap": 0.998, "avgpool": 0.998, "softmax": 0.998}}


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_pools_softmax_vs_ort(rounding):
    gap, avg, smx = LsbStats(), LsbStats(), LsbStats()
    for seed in range(8):
        rng = np.random.default_rng(800 + seed)
        dt = DTYPES[seed % 2]
        info = np.iinfo(dt)
        (xs, _), (xz, yz) = qparams(rng, dt, 2)
        ys = np.float32(xs * rng.uniform(0.5, 2.0))  # a pool's output scale is close to its input's
        x = rng.integers(info.min, info.max + 1, (2, 16, 12, 12)).astype(dt)
        c = (1, 2, 3, 4)
        xg = rng.integers(info.min, info.max + 1, (4, 64, 7, 7)).astype(dt)
        want = run_ort("QLinearGlobalAveragePool", [xg, xs, xz, ys, yz], TT[dt], {"channels_last": 0}, const_idx=c)
        m, n = gf.global_avgpool_params(xs, ys, 49)
        gap.add(ff.fixed_global_avgpool(xg, xz, m, n, yz, info.min, info.max, dt, rounding), want)
        k, s = [[3, 3], [2, 2], [3, 2], [5, 5]][seed % 4], [[1, 1], [2, 2], [2, 1], [2, 2]][seed % 4]
        pads = [k[0] // 2, k[1] // 2, k[0] // 2, k[1] // 2]
        cip, cm = seed % 2, (seed // 2) % 2
        want = run_ort("QLinearAveragePool", [x, xs, xz, ys, yz], TT[dt],
                       {"kernel_shape": k, "strides": s, "pads": pads, "count_include_pad": cip, "ceil_mode": cm},
                       const_idx=c)
        m_by, n_by = gf.avgpool_params(xs, ys, k)
        avg.add(ff.fixed_avgpool(x, xz, k, s, pads, cip, cm, m_by, n_by, yz, info.min, info.max, dt, rounding), want)
        # y_scale 1/256 (what quantizers choose): ORT multiplies by floor(1 / y_scale), which for 1/255
        # in float32 is 254 (measured: ORT then 8% off by one, npusim correctly rounded)
        ysm, yzsm = np.float32(1 / 256), dt(info.min)
        params = gf.softmax_params(xs * np.float32(4), ysm, rounding)
        for axis in (-1, 1):
            want = run_ort("QLinearSoftmax", [x, xs * np.float32(4), xz, ysm, yzsm], TT[dt],
                           {"axis": axis, "opset": 13}, opset=13, const_idx=c)
            smx.add(ff.fixed_softmax(x, axis, params, yzsm, info.min, info.max, dt, rounding), want)
    gap.check(min_total=2048, min_exact=MIN_EXACT[rounding]["gap"])
    avg.check(min_exact=MIN_EXACT[rounding]["avgpool"])
    smx.check(min_exact=MIN_EXACT[rounding]["softmax"])


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_requantize_vs_requantize_f32(rounding):
    """requantize_fixed against onnxruntime's float32 requantization (requantize_f32, exact with ORT)
    for the same real multiplier x_scale·w_scale[c]/y_scale: within 1 LSB, >= 99% exact."""
    stats = LsbStats()
    for seed in range(6):
        rng = np.random.default_rng(900 + seed)
        dt = DTYPES[seed % 2]
        info = np.iinfo(dt)
        acc = rng.integers(-2 ** 17, 2 ** 17, (1, 32, 12, 12)).astype(np.int32)
        real = (np.float32(rng.uniform(0.002, 0.05)) * rng.uniform(0.001, 0.02, 32).astype(np.float32)
                / np.float32(rng.uniform(0.01, 0.1))).astype(np.float32)
        if seed % 3 == 0:
            real = real[:1]
        y_zp = int(rng.integers(info.min, info.max + 1))
        m0, n = gf.quantize_multiplier(real.astype(np.float64))
        want = requantize_f32(acc, real, 1, y_zp, info.min, info.max, dt)
        stats.add(ff.requantize_fixed(acc, m0, n, 1, y_zp, info.min, info.max, dt, rounding), want)
    stats.check()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("k", KERNELS)
def test_bad_input_is_a_clear_error(k):
    acc = np.zeros((1, 2, 3), np.int32)
    with pytest.raises(ValueError, match="rounding"):
        k.requantize_fixed(acc, [2 ** 30], [0], 1, 0, 0, 255, np.uint8, "nearest")
    with pytest.raises(ValueError, match="acc must be int32"):
        k.requantize_fixed(acc.astype(np.int64), [2 ** 30], [0], 1, 0, 0, 255, np.uint8, "double")
    with pytest.raises(ValueError, match="multiplier parameters of size 3, expected 1 or 2"):
        k.requantize_fixed(acc, [2 ** 30] * 3, [0] * 3, 1, 0, 0, 255, np.uint8, "double")
    with pytest.raises(ValueError, match="m0"):
        k.mbqm([1], [2 ** 31], [0], "double")
    with pytest.raises(ValueError, match="mbqm x"):
        k.mbqm([2 ** 31], [2 ** 30], [0], "single")
    with pytest.raises(ValueError, match="rdbpot exponent"):
        k.rdbpot([1], [63])
    with pytest.raises(ValueError, match="rdbpot x"):
        k.rdbpot([2 ** 62 + 1], [1])
    with pytest.raises(ValueError, match="fixed_add b must be uint8 or int8 or uint16 or int16"):
        k.fixed_add(np.zeros(3, np.uint8), 0, np.zeros(3, np.int32), 0, gf.add_params(1, 1, 1), 0, 0, 255, np.uint8,
                    "double")
    with pytest.raises(ValueError, match="int16 inputs shifted by 20 overflow int32"):  # 16-bit in needs 16-bit out
        k.fixed_add(np.zeros(3, np.uint8), 0, np.zeros(3, np.int16), 0, gf.add_params(1, 1, 1), 0, 0, 255, np.uint8,
                    "double")
    with pytest.raises(ValueError, match="can leave int32"):
        k.fixed_mul(np.zeros(3, np.uint16), 0, np.zeros(3, np.uint16), 0, (2 ** 30, 0), 0, 0, 255, np.uint8, "double")
    with pytest.raises(ValueError, match="zero point 300"):
        k.fixed_mul(np.zeros(3, np.uint8), 300, np.zeros(3, np.uint8), 0, (2 ** 30, 0), 0, 0, 255, np.uint8, "double")
    with pytest.raises(ValueError, match="sum of exponentials"):  # 4096 equal codes: 4096·2^19 = 2^31
        k.fixed_softmax(np.zeros((1, 4096), np.uint8), 1, gf.softmax_params(0.1, 1 / 256, "double"), 0, 0, 255,
                        np.uint8, "double")
    with pytest.raises(ValueError, match="a sum of 65537 int16 codes can leave int32"):
        k.fixed_avgpool_codes(np.zeros((1, 1, 65537), np.int16), 0, [65537], [1], [0, 0], 0, 0, -32768, 32767)
