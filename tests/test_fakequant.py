"""The float64 fake-quantization reference of mode "npu" (npusim.fakequant).

1. Its exact arithmetic (TwoProduct, floor_half_up, round_half_away, mbqm) against Python's
   `fractions.Fraction`, with constructed exact ties and values 2^−31 beside a tie, where plain
   float64 rounding of x·m gives the wrong integer.
2. Each arithmetic op, run through `evaluate` on a one-node graph, against the golden integer
   kernels of kernels/golden/fixedpoint.py on random data, both roundings, bit-exact.
3. The digits zoo model against onnxruntime: within 1 LSB on at least 99% of elements.
"""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from npusim import fakequant as F
from npusim.errors import NpusimError
from npusim.ir import Graph, Node, Tensor, qrange, storage

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
I32 = st.integers(-2 ** 31, 2 ** 31 - 1)
M0 = st.integers(2 ** 30, 2 ** 31 - 1)  # QuantizeMultiplier's M0 of a nonzero multiplier
ROUNDINGS = pytest.mark.parametrize("rounding", ["double", "single"])


# ---------------------------------------------------------------- exact definitions (Fraction)

def exact_floor_half_up(v: Fraction) -> int:
    return math.floor(v + Fraction(1, 2))


def exact_round_half_away(v: Fraction) -> int:
    return int(math.copysign(math.floor(abs(v) + Fraction(1, 2)), v))


def exact_mbqm(x: int, m0: int, n: int, rounding: str) -> int:
    """MBQM of docs/npu_arithmetic.md on Python integers and Fractions.

    double: x' = sat(x·2^l); SRDHM = trunc((x'·m0 + nudge) / 2^31) (gemmlowp's formula, kept
    literally: C++ division truncates toward zero); RDBPOT = round_half_away(· / 2^r).
    single: floor(x·m0 / 2^(31+n) + 1/2). Both saturated to int32.
    """
    if rounding == "double":
        xs = min(max(x * 2 ** max(-n, 0), -2 ** 31), 2 ** 31 - 1)
        p = xs * m0
        s = p + (2 ** 30 if p >= 0 else 1 - 2 ** 30)
        high = abs(s) // 2 ** 31 * (1 if s >= 0 else -1)
        y = exact_round_half_away(Fraction(high, 2 ** max(n, 0)))
    else:
        y = exact_floor_half_up(Fraction(x * m0) / Fraction(2) ** (31 + n))
    return min(max(y, -2 ** 31), 2 ** 31 - 1)


# ---------------------------------------------------------------- 1. exact arithmetic

@SETTINGS
@given(x=I32, m0=st.integers(0, 2 ** 31 - 1), k=st.integers(-40, 40))
def test_two_product_is_exact(x, m0, k):
    m = math.ldexp(m0, -31)
    p, e = F.two_product(np.float64(math.ldexp(x, k)), np.float64(m))
    assert Fraction(float(p)) + Fraction(float(e)) == Fraction(x) * Fraction(2) ** k * Fraction(m)
    assert abs(Fraction(float(e))) <= Fraction(math.ulp(float(p))) / 2


def _pair(x, m0, n):
    """(p, e) = x·m0·2^−(31+n) exactly, p the float64 nearest."""
    p, e = F.two_product(np.float64(x), np.float64(math.ldexp(m0, -31)))
    return np.ldexp(p, -n), np.ldexp(e, -n)


@SETTINGS
@given(x=I32, m0=st.integers(0, 2 ** 31 - 1), n=st.integers(-20, 62))
@example(x=1, m0=2 ** 30, n=0)  # 0.5
@example(x=-1, m0=2 ** 30, n=0)  # -0.5
@example(x=-5, m0=2 ** 30, n=0)  # -2.5
@example(x=2 ** 31 - 1, m0=2 ** 31 - 1, n=-20)
def test_rounding_functions_against_fractions(x, m0, n):
    p, e = _pair(x, m0, n)
    v = Fraction(x * m0) / Fraction(2) ** (31 + n)
    assume(abs(v) < 2 ** 51)  # their stated domain (beyond it mbqm saturates anyway)
    assert float(F.floor_half_up(p, e)) == exact_floor_half_up(v)
    assert float(F.round_half_away(p, e)) == exact_round_half_away(v)


@st.composite
def exact_ties(draw):
    """(x, m0, n) with x·m0 / 2^(31+n) exactly half an odd integer: x = r·2^j, m0 = q·2^k
    (q, r odd), 31 + n = j + k + 1."""
    j, k = draw(st.integers(0, 29)), draw(st.integers(0, 30))
    q = 2 * draw(st.integers(0, 2 ** (30 - k) - 1)) + 1
    r = 2 * draw(st.integers(-2 ** (29 - j), 2 ** (29 - j) - 1)) + 1
    return r * 2 ** j, q * 2 ** k, j + k + 1 - 31


@st.composite
def near_ties(draw):
    """(x, m0, n) with x·m0 / 2^t = (odd)/2 ± 2^−t, t = 31 + n in 2..32: x ≡ (2^(t−1) ± 1)·m0^−1
    (mod 2^t) for an odd m0, plus a random multiple of 2^t (so |x·m| reaches 2^30)."""
    t = draw(st.integers(2, 32))
    m0 = 2 * draw(st.integers(2 ** 29, 2 ** 30 - 1)) + 1
    side = draw(st.sampled_from([-1, 1]))
    x0 = (2 ** (t - 1) + side) * pow(m0, -1, 2 ** t) % 2 ** t
    c = draw(st.integers(-(2 ** 31 >> t) - 1, 2 ** 31 >> t))
    x = x0 + c * 2 ** t
    assume(-2 ** 31 <= x < 2 ** 31 and abs(x * m0) < 2 ** (50 + t))  # the domain |v| < 2^51
    return x, m0, t - 31


def _check_rounding(x, m0, n):
    v = Fraction(x * m0) / Fraction(2) ** (31 + n)
    p, e = _pair(x, m0, n)
    assert float(F.floor_half_up(p, e)) == exact_floor_half_up(v)
    assert float(F.round_half_away(p, e)) == exact_round_half_away(v)
    return v


@SETTINGS
@given(exact_ties())
def test_exact_ties(case):
    v = _check_rounding(*case)
    assert v.denominator == 2


@SETTINGS
@given(near_ties())
def test_near_ties(case):
    """Values 2^−t beside a tie; at t = 31, 32 and |v| ≥ 2^22 float64 cannot even represent them."""
    x, m0, n = case
    v = _check_rounding(x, m0, n)
    assert abs(v - math.floor(v) - Fraction(1, 2)) == Fraction(1, 2 ** (31 + n))


def test_naive_float_rounding_is_wrong_where_the_exact_pair_is_right():
    """x·m0 ≡ 2^30 − 1 (mod 2^31): x·m = K + 1/2 − 2^−31 with K odd, just below a tie. float64's
    ulp there is 2^−23, so fl(x·m) lands on the tie K + 1/2 itself, and both floor(fl + 1/2) and
    np.round (half to even: K + 1) give K + 1; the exact answer is K."""
    m0 = 2 ** 31 - 15
    x = (2 ** 30 - 1) * pow(m0, -1, 2 ** 31) % 2 ** 31
    v = Fraction(x * m0, 2 ** 31)
    want = math.floor(v)
    assert v - want == Fraction(1, 2) - Fraction(1, 2 ** 31) and want % 2 == 1
    naive = x * math.ldexp(m0, -31)
    assert naive == want + 0.5  # the float64 product is the tie
    assert np.round(naive) == want + 1 and math.floor(naive + 0.5) == want + 1  # both wrong
    assert float(F.floor_half_up(*_pair(x, m0, 0))) == want
    assert float(F.round_half_away(*_pair(x, m0, 0))) == want
    assert int(F.mbqm(np.float64(x), m0, 0, "single")) == want
    assert int(F.mbqm(np.float64(x), m0, 0, "double")) == want


@SETTINGS
@given(x=I32, m0=st.one_of(M0, st.just(0)), n=st.integers(-40, 75), rounding=st.sampled_from(["double", "single"]))
@example(x=-5, m0=2 ** 30, n=0, rounding="double")  # SRDHM of an exact negative tie: −2.5 -> −2
@example(x=-6, m0=2 ** 30, n=1, rounding="double")  # RDBPOT of −1.5 -> −2 (half away)
@example(x=-2 ** 31, m0=2 ** 31 - 1, n=-31, rounding="double")  # saturating left shift
@example(x=2 ** 31 - 1, m0=2 ** 31 - 1, n=-40, rounding="single")  # saturated result
def test_mbqm_against_fractions(x, m0, n, rounding):
    assume(rounding == "double" or abs(x * m0) < 2 ** 62)
    assert int(F.mbqm(np.float64(x), m0, n, rounding)) == exact_mbqm(x, m0, n, rounding)


def test_double_rounding_rounds_a_negative_srdhm_tie_up_and_an_rdbpot_tie_away():
    """gemmlowp's SRDHM (nudge 1 − 2^30, truncating division) is floor(v + 1/2): −2.5 -> −2.
    RDBPOT is half away from zero: −1.5 -> −2. Single rounding is half up throughout."""
    assert exact_mbqm(-5, 2 ** 30, 0, "double") == -2
    assert int(F.mbqm(np.float64(-5), 2 ** 30, 0, "double")) == -2  # SRDHM(−5, 2^30) = ⌊−2.5 + 1/2⌋
    assert int(F.mbqm(np.float64(-6), 2 ** 30, 1, "double")) == -2  # RDBPOT(−3, 1): −1.5 -> −2
    assert int(F.mbqm(np.float64(-6), 2 ** 30, 1, "single")) == -1  # ⌊−1.5 + 1/2⌋
    assert int(F.mbqm(np.float64(5), 2 ** 30, 0, "double")) == 3
