"""The float64 fake-quantization reference of mode "npu" (docs/npu_arithmetic.md).

`evaluate(graph, feeds, rounding)` runs a quantized IR graph with float64 values instead of
the NPU's integers, independently of the fixed-point kernels: every quantized tensor is
taken as its centered integers x − x_zp (the scales are folded into each layer's real
multiplier), convolutions, matmuls and sums are float64 (all exact integers below 2^53), and
requantization multiplies by the exact real value M0·2^−(31+n) of the layer's fixed-point
multiplier. The pair (M0, n) is derived here too, in exact rational arithmetic
(`quantize_multiplier_exact`, TFLite's QuantizeMultiplier by its definition), from the same
float64 real multipliers; the products, sums, roundings and clamps are this module's own.

Exactness: m = M0·2^−31 is a float64 (M0 < 2^31), and for an integer x with |x| ≤ 2^31 the
product x·m is kept as an unevaluated sum p + e (Dekker's TwoProduct, `two_product`), so a
tie (k + 1/2 exactly) is told apart from a value 2^−31 beside it, which float64 alone cannot
represent once |x·m| ≥ 2^22. The rounding rules are then applied to p + e exactly
(`round_half_away`, `floor_half_up`):
    double: y = round_half_away(floor(x'·m + 1/2) · 2^−r),  x' = sat_i32(x·2^l)
            (l = max(−n, 0), r = max(n, 0); gemmlowp SRDHM then RDBPOT. SRDHM's nudge
            1 − 2^30 for negative products with truncating division is floor(v + 1/2): a
            negative tie goes up, −2.5 -> −2, not away from zero; RDBPOT is half away)
    single: y = floor(x·m·2^−n + 1/2)  (TFLite single rounding, half toward +inf)
both saturated to int32, then y = clamp(y + y_zp, qmin, qmax) in the output's storage type.
A 16x8 layer (attrs acc = "i64", npusim.frontend.sixteen) keeps its accumulator in int64 (|acc| < 2^47)
and requantizes as TFLite's int64 MBQM does in either mode (`mbqm_i64`: the multiplier reduced
to Q0.15, one rounding half toward +infinity).

Max pool, quantize / dequantize, dynamic quantize, the float output of integer GEMMs
(scale_float), leaky-relu and sigmoid (evaluated per element, not through a table), sign,
window padding and data movement are written here in plain NumPy as ONNX and onnxruntime
define them; the float32 logistic inside sigmoid is onnxruntime's own (MLAS's approximation
defines the op), computed by onnxruntime. Shared with the runtime (`SHARED`): host islands,
which run through the runtime's host-island code on onnxruntime, and mode "ort"'s float32 global
average pool (npusim.islands), whose order of additions onnxruntime's kernels define, through
the registry's entry on the golden kernel; `shared_tensors(graph)` names
what they produce, so that a comparison with this reference does not count those tensors as
checked.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import ir
from .errors import NpusimError

ROUNDINGS = ("double", "single")
_I32_MIN, _I32_MAX = -float(2 ** 31), float(2 ** 31 - 1)
_SPLIT = 134217729.0  # 2^27 + 1, Veltkamp's splitter for float64 (53 = 26 + 27 bits)
_ADD_LEFT_SHIFT = {8: 20, 16: 15}  # TFLite integer Add's L, by the output's storage bits


# ---------------------------------------------------------------- exact float64 arithmetic

def _split(a):
    """Veltkamp: a = hi + lo exactly, hi with at most 26 significant bits, lo with at most 26."""
    c = _SPLIT * a
    hi = c - (c - a)
    return hi, a - hi


def two_product(a, b):
    """Dekker's TwoProduct: (p, e) with p = fl(a·b) and a·b = p + e exactly (float64 arrays).

    Exact while a·b neither overflows (|a·b| < 2^996) nor underflows (every partial product a
    normal float64); here a, b are integers ≤ 2^53 and multiples of 2^−31, far inside.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = al * bl - (((p - ah * bh) - al * bh) - ah * bl)
    return p, e


def floor_half_up(p, e=0.0):
    """floor(v + 1/2) of the exact value v = p + e (half toward +infinity), as float64 integers.

    p, e float64 with |e| ≤ ulp(p)/2 (a TwoProduct pair, or e = 0) and |p| < 2^51. With
    f = floor(p), the answer is f + [p + e ≥ f + 1/2]; d = p − (f + 1/2) is computed exactly
    (Sterbenz) whenever it could decide the comparison, so `d ≥ −e` is the exact test.
    """
    p = np.asarray(p, np.float64)
    f = np.floor(p)
    d = p - (f + 0.5)
    return f + (d >= -np.asarray(e, np.float64))


def round_half_away(p, e=0.0):
    """round half away from zero of the exact value v = p + e, as float64 integers.

    Same domain as `floor_half_up`: sign(v) · floor(|v| + 1/2), taken on the magnitude pair.
    """
    p = np.asarray(p, np.float64)
    s = np.where(p < 0, -1.0, 1.0)
    return s * floor_half_up(s * p, s * np.asarray(e, np.float64))


def mbqm(x, m0, n, rounding):
    """MBQM of docs/npu_arithmetic.md, in float64: x·M0·2^−(31+n) rounded by `rounding`, sat. int32.

    x: float64 integers, |x| ≤ 2^31 (an int32 value); m0: integers 0 ≤ M0 < 2^31; n: integer
    right shifts (negative: left shift), broadcast against x. Returns float64 integers in int32
    range. "double": round_half_away(floor(x'·M0/2^31 + 1/2) / 2^r), x' = sat_i32(x·2^l);
    "single": floor(x·M0/2^(31+n) + 1/2). A shift n > 62 gives 0 here as in the integer rules.
    """
    x = np.asarray(x, np.float64)
    m = np.ldexp(np.asarray(m0, np.float64), -31)  # exact: M0 has at most 31 bits
    n = np.asarray(n, np.int64)
    if rounding == "double":
        x = np.clip(np.ldexp(x, np.maximum(-n, 0)), _I32_MIN, _I32_MAX)
        high = floor_half_up(*two_product(x, m))  # SRDHM: |high| ≤ 2^31 − 1
        y = round_half_away(np.ldexp(high, -np.maximum(n, 0)))  # RDBPOT: an exact power-of-two scaling
    elif rounding == "single":
        p, e = two_product(x, m)
        y = floor_half_up(np.ldexp(p, -n), np.ldexp(e, -n))
    else:
        raise NpusimError(f"unknown rounding {rounding!r}; expected one of {', '.join(ROUNDINGS)}")
    return np.clip(y, _I32_MIN, _I32_MAX)


# ---------------------------------------------------------------- offline multipliers

def quantize_multiplier_exact(real: float) -> tuple[int, int]:
    """(M0, n) with M0·2^−(31+n) the real multiplier rounded to 31 significant bits, TFLite's
    QuantizeMultiplier by its definition, in exact rationals: real = q·2^e with 1/2 ≤ q < 1,
    M0 = round_half_away(q·2^31), and M0 = 2^31 (q rounded up to 1) becomes (2^30, e + 1);
    n = −e. real == 0 and real < 2^−63 (n > 62) give (0, 0); negative or non-finite: ValueError."""
    if not math.isfinite(real) or real < 0:
        raise ValueError(f"real multiplier must be finite and >= 0, got {real}")
    r = Fraction(real)  # exact: every float64 is a rational
    if r == 0:
        return 0, 0
    e = 0
    while r >= Fraction(2) ** e:
        e += 1
    while r < Fraction(2) ** (e - 1):
        e -= 1
    m0 = math.floor(r / Fraction(2) ** e * 2 ** 31 + Fraction(1, 2))  # q > 0: half away = half up
    if m0 == 2 ** 31:
        m0, e = 2 ** 30, e + 1
    return (0, 0) if -e > 62 else (m0, -e)


def _qm(real):
    """(M0, n) of each real multiplier (float64 array-like) as float64 / int64 arrays."""
    pairs = [quantize_multiplier_exact(float(r)) for r in np.asarray(real, np.float64).reshape(-1)]
    return np.array([p[0] for p in pairs], np.float64), np.array([p[1] for p in pairs], np.int64)


def requantize_pairs(attrs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(M0[c], n[c]) of a requantize node (docs/npu_arithmetic.md). The real multiplier is
    (x_scale·alpha)·w_scale[c] / y_scale in float64, left to right (alpha: QGemm's, else 1).
    WESS (`wess_shift` s[c], w_scale[c] = w_layer·2^−s[c] exactly, w_layer the largest):
    one pair from x_scale·w_layer / y_scale, and n[c] = n + s[c]."""
    xs = float(np.asarray(attrs["x_scale"], np.float64).reshape(-1)[0]) * float(attrs.get("alpha", 1.0))
    ws = np.asarray(attrs["w_scale"], np.float64).reshape(-1)
    ys = float(np.asarray(attrs["y_scale"], np.float64).reshape(-1)[0])
    if "wess_shift" not in attrs:
        return _qm(xs * ws / ys)
    s = np.asarray(attrs["wess_shift"], np.int64).reshape(-1)
    w_layer = float(ws.max())
    if s.shape != ws.shape or any(Fraction(float(w)) != Fraction(w_layer) / 2 ** int(k) for w, k in zip(ws, s)):
        raise ValueError(f"wess_shift {s.tolist()} does not give the weight scales w_layer·2^-s")
    m0, n = _qm(xs * w_layer / ys)
    return np.full(s.shape, m0[0]), n[0] + s


# ---------------------------------------------------------------- windows (ONNX conv / pool attributes)

def _pads(attrs, k, spatial):
    """(strides, pads [begin..., end...], dilations) for input spatial sizes `spatial`.
    auto_pad SAME_*: output ceil(in / stride), total padding max(0, (out − 1)·s + (k − 1)·d + 1 − in),
    the odd cell at the end (SAME_UPPER) or the beginning (SAME_LOWER); VALID: none."""
    nd = len(k)
    s = [int(v) for v in attrs["strides"]]
    d = [int(v) for v in attrs["dilations"]]
    mode = attrs["auto_pad"]
    if mode == "VALID":
        return s, [0] * (2 * nd), d
    if mode not in ("SAME_UPPER", "SAME_LOWER"):
        return s, [int(v) for v in attrs["pads"]], d
    begin, end = [], []
    for i in range(nd):
        out = -(-spatial[i] // s[i])
        total = max(0, (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - spatial[i])
        small, big = total // 2, total - total // 2
        begin.append(big if mode == "SAME_LOWER" else small)
        end.append(total - begin[-1])
    return s, begin + end, d


def _pool_out(size, k, s, pb, pe, d, ceil_mode):
    """Output length of a pooling window (ONNX): (size + pb + pe − ((k − 1)·d + 1)) / s + 1, floored
    or, with ceil_mode, ceiled, a ceiled last window dropped if it starts past input + pb."""
    span = size + pb + pe - ((k - 1) * d + 1)
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    return out - 1 if (out - 1) * s >= size + pb else out


# ---------------------------------------------------------------- ops (float64 values)

def _centered(x, zp):
    """x − zp as float64 (an absent zero point, None, is 0)."""
    return np.asarray(x, np.float64) - (0.0 if zp is None else np.asarray(zp, np.float64))


def _out(y, attrs):
    """y = clamp(result + y_zp, qmin, qmax) in the output's storage type."""
    lo, hi = (int(attrs["qmin"]), int(attrs["qmax"])) if "qmin" in attrs else ir.qrange(attrs["dtype"])
    return np.clip(y + float(attrs["y_zp"]), lo, hi).astype(ir.storage(attrs["dtype"]))


def _acc(acc, what, wide=False):
    """An accumulator (exact float64 integers) as int32, wrapping modulo 2^32 as the NPU's int32
    accumulator does (docs/npu_arithmetic.md; npusim.overflow bounds it, verify counts it). wide
    (a 16x8 layer, attrs acc = "i64"): as int64, and |acc| must stay below 2^47 (TFLite)."""
    if not wide:
        return ((acc.astype(np.int64) + 2 ** 31) % 2 ** 32 - 2 ** 31).astype(np.int32)
    lo, hi = -float(2 ** 47) + 1, float(2 ** 47) - 1
    if acc.size and (acc.min() < lo or acc.max() > hi):
        idx = tuple(int(i) for i in np.argwhere((acc < lo) | (acc > hi))[0])
        raise ValueError(f"{what}: int64 accumulator overflow at index {idx}: {int(acc[idx])}")
    return acc.astype(np.int64)


def _wide(node):
    return node.attrs.get("acc") == "i64"


def _conv(node, rounding, x, w, b=None, x_zp=None, w_zp=None):
    """acc = Σ (x − x_zp)(w − w_zp[m]) + bias[m] in float64, over im2col windows (1-D or 2-D)."""
    m = w.shape[0]
    k = w.shape[2:]
    nd = len(k)
    strides, pads, dil = _pads(node.attrs, k, x.shape[2:])
    xc = np.pad(_centered(x, None if x_zp is None else np.asarray(x_zp).reshape(-1)[0]),
                [(0, 0), (0, 0)] + [(pads[i], pads[i + nd]) for i in range(nd)])
    wc = _centered(w, None if w_zp is None else np.broadcast_to(np.asarray(w_zp).reshape(-1), (m,)).reshape(
        (m,) + (1,) * (nd + 1)))
    span = tuple((k[i] - 1) * dil[i] + 1 for i in range(nd))
    win = sliding_window_view(xc, span, axis=tuple(range(2, 2 + nd)))  # (N, C, *out_full, *span)
    win = win[(slice(None),) * 2 + tuple(slice(None, None, s) for s in strides)
              + tuple(slice(None, None, d) for d in dil)]  # (N, C, *out, *k)
    g = int(node.attrs["group"])
    n_, c = x.shape[:2]
    win = win.reshape((n_, g, c // g) + win.shape[2:])
    wc = wc.reshape((g, m // g) + wc.shape[1:])
    sp, kk = "hw"[:nd], "rs"[:nd]
    acc = np.einsum(f"ngc{sp}{kk},gmc{kk}->ngm{sp}", win, wc, optimize=True)
    acc = acc.reshape((n_, m) + acc.shape[3:])
    if b is not None:
        acc = acc + np.asarray(b, np.float64).reshape((m,) + (1,) * nd)
    return (_acc(acc, "conv Σ(x−x_zp)(w−w_zp)+bias", _wide(node)),)


def _matmul_f64(a, b, a_zp, b_zp):
    azp = np.asarray(0 if a_zp is None else a_zp, np.float64)
    if azp.ndim == 1 and azp.size > 1:
        azp = azp.reshape(-1, 1)  # per row of a
    bzp = np.asarray(0 if b_zp is None else b_zp, np.float64).reshape(-1)
    return np.matmul(_centered(a, azp), _centered(b, bzp if bzp.size > 1 else bzp[0]))


def _matmul(node, rounding, a, b, a_zp=None, b_zp=None):
    """acc = Σ_k (a − a_zp)(b − b_zp) in float64, numpy matmul broadcasting."""
    return (_acc(_matmul_f64(a, b, a_zp, b_zp), "matmul Σ(a−a_zp)(b−b_zp)", _wide(node)),)


def _gemm(node, rounding, a, b, c=None, a_zp=None, b_zp=None):
    """acc = (a − a_zp)ᵀ?(b − b_zp[n])ᵀ? + C in float64 (QGemm; alpha lives in the requantize)."""
    a = a.T if int(node.attrs["transA"]) else a
    b = b.T if int(node.attrs["transB"]) else b
    acc = _matmul_f64(a, b, None if a_zp is None else np.asarray(a_zp).reshape(()), b_zp)
    if c is not None:
        acc = acc + np.asarray(c, np.float64)
    return (_acc(acc, "gemm Σ(a−a_zp)(b−b_zp)+C", _wide(node)),)


def mbqm_i64(x, m0, n):
    """TFLite's MultiplyByQuantizedMultiplier(int64 x, ...) of the 16x8 conv / fully connected, in
    float64: rm = floor((M0 + 2^15) / 2^16) (0x7FFF from M0 >= 0x7FFF0000 on), then
    y = floor(x·rm·2^−(15+n) + 1/2), the same under both rounding rules; saturated to int32.
    x: float64 integers, |x| < 2^47, so x·rm < 2^62 is held exactly as a TwoProduct pair."""
    m0 = np.asarray(m0, np.float64)
    rm = np.where(m0 < float(0x7FFF0000), np.floor((m0 + 2.0 ** 15) / 2.0 ** 16), float(0x7FFF))
    t = -(15 + np.asarray(n, np.int64))
    p, e = two_product(x, rm)
    return np.clip(floor_half_up(np.ldexp(p, t), np.ldexp(e, t)), _I32_MIN, _I32_MAX)


def _requantize(node, rounding, acc):
    """y = clamp(MBQM(acc, M0[c], n[c]) + y_zp), per tensor / per channel along `axis` / WESS;
    an int64 accumulator (a 16x8 layer) with TFLite's int64 MBQM (`mbqm_i64`)."""
    a = node.attrs
    m0, n = requantize_pairs(a)
    if m0.size > 1:
        shape = [1] * acc.ndim
        shape[int(a["axis"]) % acc.ndim] = m0.size
        m0, n = m0.reshape(shape), n.reshape(shape)
    if acc.dtype == np.int64:
        return (_out(mbqm_i64(acc.astype(np.float64), m0, n), a),)
    return (_out(mbqm(acc, m0, n, rounding), a),)


def _add(node, rounding, x, y):
    """TFLite integer Add (L = 20; 15 for a 16-bit output):
    y = MBQM(MBQM((a−a_zp)·2^L, Ma) + MBQM((b−b_zp)·2^L, Mb), My)."""
    a = node.attrs
    sa, sb, sy = float(a["a_scale"]), float(a["b_scale"]), float(a["y_scale"])
    shift = _ADD_LEFT_SHIFT[8 * ir.storage(a["dtype"]).itemsize]
    t = 2.0 * max(sa, sb)
    (ma, na), (mb, nb), (my, ny) = _qm(sa / t), _qm(sb / t), _qm(t / (2.0 ** shift * sy))
    xa = mbqm(np.ldexp(_centered(x, a["a_zp"]), shift), ma, na, rounding)
    xb = mbqm(np.ldexp(_centered(y, a["b_zp"]), shift), mb, nb, rounding)
    return (_out(mbqm(xa + xb, my, ny, rounding), a),)


def _mul(node, rounding, x, y):
    """TFLite integer Mul: y = MBQM((a − a_zp)(b − b_zp), M, n), real = a_scale·b_scale/y_scale."""
    a = node.attrs
    m0, n = _qm(float(a["a_scale"]) * float(a["b_scale"]) / float(a["y_scale"]))
    return (_out(mbqm(_centered(x, a["a_zp"]) * _centered(y, a["b_zp"]), m0, n, rounding), a),)


def _global_avgpool(node, rounding, x):
    """TFLite's MEAN: acc = Σ (x − x_zp) over the N spatial elements; (M, n) = QM(x_scale/y_scale);
    y = MBQM(acc, ⌊M·2^k/N⌋, n + k)."""
    a = node.attrs
    axes = tuple(range(1, x.ndim - 1)) if int(a.get("channels_last", 0)) else tuple(range(2, x.ndim))
    count = int(np.prod([x.shape[i] for i in axes]))
    acc = _centered(x, a["x_zp"]).sum(axis=axes, keepdims=True)
    m0, n = quantize_multiplier_exact(float(a["x_scale"]) / float(a["y_scale"]))
    # TFLite's MEAN folds 1/count into the multiplier: 2^k/count, k = ⌊log2 count⌋ (≤ 32, ≤ 31 − n,
    # ≥ 0), the product truncated to an integer
    k = max(min(math.floor(math.log2(count)), 32, 31 - n), 0)
    return (_out(mbqm(acc, math.floor(Fraction(m0 * 2 ** k, count)), n + k, rounding), a),)


def _avgpool(node, rounding, x):
    """acc = Σ (x − x_zp) over each window clipped to the input; count as kernels/golden/pool.py
    (Πkernel with count_include_pad, else the clipped window size). One quantization on both sides
    (TFLite's AVERAGE_POOL_2D): y = clamp(round_half_away((acc + count·x_zp) / count), qmin, qmax),
    the mean of the codes (padded cells, when counted, hold x_zp). Else one QM per distinct count:
    y = clamp(MBQM(acc, QM(x_scale/(y_scale·count))) + y_zp)."""
    a = node.attrs
    k = tuple(int(v) for v in a["kernel_shape"])
    nd = len(k)
    strides, pads, _ = _pads(a, k, x.shape[2:])
    outs = [_pool_out(x.shape[2 + i], k[i], strides[i], pads[i], pads[i + nd], 1, int(a["ceil_mode"]))
            for i in range(nd)]
    # pad so that every window (ceil-mode ones too) lies inside; padded cells count 0
    ends = [(outs[i] - 1) * strides[i] + k[i] - pads[i] - x.shape[2 + i] for i in range(nd)]
    width = [(0, 0), (0, 0)] + [(pads[i], max(ends[i], 0)) for i in range(nd)]
    sel = (slice(None),) * 2 + tuple(slice(0, (outs[i] - 1) * strides[i] + 1, strides[i]) for i in range(nd))
    axes = tuple(range(2, 2 + nd))
    acc = sliding_window_view(np.pad(_centered(x, a["x_zp"]), width), k, axis=axes)[sel].sum(
        axis=tuple(range(-nd, 0)))
    if int(a["count_include_pad"]):
        count = np.full(acc.shape[2:], float(np.prod(k)))
    else:
        inside = np.pad(np.ones(x.shape[2:]), width[2:])
        count = sliding_window_view(inside, k)[sel[2:]].sum(axis=tuple(range(-nd, 0)))
    if float(a["x_scale"]) == float(a["y_scale"]) and int(a["x_zp"]) == int(a["y_zp"]):
        codes = acc + count * float(a["x_zp"])  # exact integers
        q = np.sign(codes) * np.floor_divide(2.0 * np.abs(codes) + count, 2.0 * count)  # floor_divide is exact
        return (np.clip(q, int(a["qmin"]), int(a["qmax"])).astype(ir.storage(a["dtype"])),)
    distinct, where = np.unique(count, return_inverse=True)
    m0, n = _qm(float(a["x_scale"]) / (float(a["y_scale"]) * distinct))
    where = where.reshape(count.shape)
    return (_out(mbqm(acc, m0[where], n[where], rounding), a),)


def _fixed(v):
    """The Q0.31 raw of a real constant, round half away: how gemmlowp states (and checks) its constants."""
    return round_half_away(np.ldexp(np.asarray(v, np.float64), 31))


def _srdhm(a, b):
    """gemmlowp's SRDHM of int32 raws as the exact real floor(a·b/2^31 + 1/2), saturated to int32."""
    return np.clip(floor_half_up(*two_product(a, np.ldexp(np.asarray(b, np.float64), -31))), _I32_MIN, _I32_MAX)


def _pot(x, e):
    """x·2^e rounded half away from zero (e < 0, gemmlowp's RDBPOT) or saturated to int32 (e > 0)."""
    return round_half_away(np.ldexp(x, e)) if e < 0 else np.clip(np.ldexp(x, e), _I32_MIN, _I32_MAX)


def _exp_q31(a):
    """gemmlowp's exp of Q5.26 raws a <= 0 as Q0.31 raws, from its definition: a = q − r, q the
    residue of a in [−1/4, 0), r a multiple of 1/4; exp(q) by its Taylor polynomial at −1/8
    (z = q + 1/8: e^(−1/8)·(z + (z^4/4 + z^3)/3 + z^2)/2 ... as gemmlowp groups it), times
    exp(−2^j) for each power of two 2^j (1/4 .. 16) in r; constants rounded from their reals."""
    q = np.mod(a, 2.0 ** 24) - 2.0 ** 24  # raw residue of a modulo 1/4 (= 2^24 raw), minus 1/4
    z = _pot(q, 5) + 2.0 ** 28
    z2 = _srdhm(z, z)
    z3, z4 = _srdhm(z2, z), _srdhm(z2, z2)
    poly = _pot(_srdhm(_pot(z4, -2) + z3, _fixed(1 / 3)) + z2, -1)
    c = _fixed(math.exp(-1 / 8))
    y = c + _srdhm(c, z + poly)
    quarters = (q - a) / 2.0 ** 24  # r in units of 1/4: an integer 0..127
    for j in range(7):
        y = np.where(np.mod(np.floor(quarters / 2 ** j), 2) == 1, _srdhm(y, _fixed(math.exp(-(2.0 ** (j - 2))))), y)
    return np.where(a == 0, _I32_MAX, y)


def _reciprocal_q31(s):
    """(Q0.31 raw of 2^b/S, b) for Q12.19 raws S > 0 (TFLite's GetReciprocal): S·2^c in [2^31, 2^32),
    x = S·2^c − 2^31, 1/(1 + x) by gemmlowp's three Newton-Raphson steps in Q2.29 from 48/17 − 32/17·d,
    d = (1 + x)/2 rounded up; b = 12 − c."""
    _, e = np.frexp(s)  # S = f·2^e, 1/2 <= f < 1: e is the bit length of S
    c = 32 - e
    d = np.floor((np.ldexp(s, c) - 2.0 ** 31 + _I32_MAX + 1) / 2)
    v = round_half_away(np.ldexp(48 / 17, 29)) + _srdhm(d, round_half_away(np.ldexp(-32 / 17, 29)))
    for _ in range(3):
        v = v + _pot(_srdhm(v, 2.0 ** 29 - _srdhm(d, v)), 2)
    return _pot(v, 1), 12 - c


def _softmax(node, rounding, x):
    """TFLite's reference int8 softmax (reference_ops::Softmax) per row: d = x − max(row); below
    diff_min = −floor(31·2^26/2^ls) the probability is 0; else e = exp(MBQM(d, M, −ls)) in Q0.31 with
    (M, −ls) = QM(min(x_scale·2^26, 2^31 − 1 or, single rounding, 2^30 − 1)); S = Σ RDBPOT(e, 12)
    (Q12.19, must fit int32); (R, b) = reciprocal of S; p = SRDHM(R, e);
    y = clamp(floor(p·QM(2^−31/y_scale)·2^−b + 1/2) + y_zp). Rows along `axis` (opset ≥ 13) or the
    flattened dims [axis:] (opset < 13), as ONNX Softmax defines them."""
    a = node.attrs
    axis = int(a["axis"]) % x.ndim
    if int(a.get("opset", 13)) < 13:
        rows = np.asarray(x).reshape(int(np.prod(x.shape[:axis])), -1)
    else:
        rows = np.moveaxis(x, axis, -1)
    cap = 2.0 ** 31 - 1 if rounding == "double" else 2.0 ** 30 - 1
    m_in, n_in = quantize_multiplier_exact(min(float(a["x_scale"]) * 2.0 ** 26, cap))
    if n_in > 0:
        raise ValueError(f"softmax: x_scale {float(a['x_scale'])} below 2^-26")
    diff_min = -math.floor(Fraction(31 * 2 ** 26, 2 ** -n_in))
    xv = np.asarray(rows, np.float64)
    d = xv - xv.max(axis=-1, keepdims=True)
    live = d >= diff_min
    e = np.where(live, _exp_q31(mbqm(np.where(live, d, 0.0), m_in, n_in, rounding)), 0.0)
    s = _pot(e, -12).sum(axis=-1, keepdims=True)  # exact integers
    if s.max(initial=0) > _I32_MAX:
        raise ValueError("softmax: the sum of exponentials (Q12.19) leaves int32")
    r, b = _reciprocal_q31(s)
    m_out, n_out = quantize_multiplier_exact(2.0 ** -31 / float(a["y_scale"]))
    y = _out(mbqm(_srdhm(r, e), m_out, n_out + b, "single"), a)
    return (y.reshape(x.shape) if int(a.get("opset", 13)) < 13 else np.moveaxis(y, -1, axis),)


def _qconcat(node, rounding, *xs):
    """Each input rescaled: y = clamp(MBQM(x − x_zp, QM(x_scale/y_scale)) + y_zp), or copied when
    its (scale, zp) equal (y_scale, y_zp); then concatenated along `axis`."""
    a = node.attrs
    ys, yz = float(a["y_scale"]), int(a["y_zp"])
    parts = []
    for x, s, z in zip(xs, a["x_scales"], a["x_zps"]):
        if float(s) == ys and int(z) == yz:
            parts.append(np.asarray(x).astype(ir.storage(a["dtype"])))
        else:
            m0, n = _qm(float(s) / ys)
            parts.append(_out(mbqm(_centered(x, z), m0, n, rounding), a))
    return (np.concatenate(parts, axis=int(a["axis"]) % parts[0].ndim),)


def _round_shift(node, rounding, x):
    """QONNX's exact shift: y = clamp(R((x − x_zp)·2^−shift[c] + y_zp), qmin, qmax), R the node's
    own rounding mode (FLOOR, CEIL, DOWN, UP, HALF_EVEN, HALF_UP, HALF_DOWN; not the NPU's
    `rounding`). a = (x − x_zp)·2^−shift is an exact float64; the rounding is decided on a by
    exact comparisons (its floor f, a ≠ f, a − (f + 1/2) as in `floor_half_up`) and on the
    sign of v = a + y_zp, which the sign-symmetric modes need."""
    a = node.attrs
    shift = np.asarray(a["shift"], np.int64).reshape(-1)
    if shift.size > 1:
        shape = [1] * x.ndim
        shape[int(a["axis"]) % x.ndim] = shift.size
        shift = shift.reshape(shape)
    v = np.ldexp(_centered(x, a["x_zp"]), -shift)
    z = float(a["y_zp"])
    f = np.floor(v)
    frac = v != f
    d = np.where(frac, v - (f + 0.5), -0.5)  # sign of (v − f) − 1/2, exact
    pos, neg = v > -z, v < -z  # the sign of v + y_zp
    lower = f + z  # floor(v + y_zp)
    up = {"FLOOR": np.zeros_like(frac), "CEIL": frac, "DOWN": frac & neg, "UP": frac & pos,
          "HALF_EVEN": (d > 0) | ((d == 0) & (np.mod(lower, 2) == 1)),
          "HALF_UP": (d > 0) | ((d == 0) & pos), "HALF_DOWN": (d > 0) | ((d == 0) & neg)}[a["rounding"]]
    return (np.clip(lower + up, int(a["qmin"]), int(a["qmax"])).astype(ir.storage(a["dtype"])),)


def _sign(node, rounding, x):
    """Bipolar sign: +1 where x ≥ x_zp, else −1 (int8)."""
    return (np.where(np.asarray(x) >= node.attrs["x_zp"], 1, -1).astype(np.int8),)


def _multithreshold(node, rounding, x):
    """FINN's MultiThreshold: y = base[c] + step[c]·#{k : x ≥ thresholds[c, k]} (comparisons only, exact)."""
    a = node.attrs
    t = np.asarray(a["thresholds"])
    shape = [1] * x.ndim
    if t.shape[0] > 1:
        shape[int(a["axis"]) % x.ndim] = t.shape[0]
    count = (np.asarray(x)[..., None] >= t.reshape(shape + [t.shape[1]])).sum(axis=-1)
    y = np.asarray(a["base"]).reshape(shape) + np.asarray(a["step"]).reshape(shape) * count
    return (y.astype(ir.storage(a["dtype"])),)


def _maxpool(node, rounding, x):
    """ONNX MaxPool of an integer tensor (N, C, *spatial): the largest value of each window;
    padding cells hold the type's minimum, so they never win over an input cell."""
    a = node.attrs
    k = tuple(int(v) for v in a["kernel_shape"])
    nd = len(k)
    strides, pads, dil = _pads(a, k, x.shape[2:])
    outs = [_pool_out(x.shape[2 + i], k[i], strides[i], pads[i], pads[i + nd], dil[i], int(a["ceil_mode"]))
            for i in range(nd)]
    span = [(k[i] - 1) * dil[i] + 1 for i in range(nd)]
    need = [(outs[i] - 1) * strides[i] + span[i] for i in range(nd)]  # padded length the windows reach
    width = [(0, 0)] * 2 + [(pads[i], max(need[i] - pads[i] - x.shape[2 + i], 0)) for i in range(nd)]
    xp = np.pad(x, width, constant_values=np.iinfo(x.dtype).min)
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None),) * 2 + tuple(slice(0, outs[i] * strides[i], strides[i]) for i in range(nd))
              + tuple(slice(None, None, d) for d in dil)]
    return (win.max(axis=tuple(range(-nd, 0))).astype(x.dtype),)


def _per_axis(p, shape, axis, block):
    """A scale or zero point as an array broadcasting against x: one value, one per index of
    `axis`, or (block > 0) one per `block` consecutive indices of `axis`."""
    p = np.asarray(p)
    if p.size == 1:
        return p.reshape(())
    axis %= len(shape)
    if block:
        return np.repeat(p, block, axis=axis).take(np.arange(shape[axis]), axis=axis)
    return p.reshape([p.size if i == axis else 1 for i in range(len(shape))])


def _quantize(node, rounding, x):
    """ONNX QuantizeLinear as onnxruntime computes it: v = f32(x / y_scale) (float32 division),
    y = clamp(round_half_even(v) + y_zp, qmin, qmax); NaN gives qmin."""
    a = node.attrs
    x = np.asarray(x, np.float32)
    s = _per_axis(np.asarray(a["scale"], np.float32), x.shape, int(a["axis"]), int(a["block_size"]))
    z = _per_axis(np.asarray(a["zp"], np.float64), x.shape, int(a["axis"]), int(a["block_size"]))
    v = np.rint(np.divide(x, s, dtype=np.float32).astype(np.float64)) + z
    v[np.isnan(v)] = -np.inf
    return (np.clip(v, int(a["qmin"]), int(a["qmax"])).astype(ir.storage(a["dtype"])),)


def _dequantize(node, rounding, x):
    """ONNX DequantizeLinear: y = f32(f32(x − x_zp)·x_scale), rounded to the output type (float16
    when the scale is)."""
    a = node.attrs
    xv = np.asarray(x, np.int64)
    s = _per_axis(np.asarray(a["scale"], np.float32), xv.shape, int(a["axis"]), int(a["block_size"]))
    z = _per_axis(np.asarray(a["zp"], np.int64), xv.shape, int(a["axis"]), int(a["block_size"]))
    y = np.multiply((xv - z).astype(np.float32), s, dtype=np.float32)
    return (y.astype(ir.storage(a.get("dtype", "f32"))),)


def _dequantized(x, a):
    """v = f32(x_scale·f32(x − x_zp)), as onnxruntime's lookup-table builders dequantize a code."""
    return np.multiply(np.float32(a["x_scale"]), (np.asarray(x, np.int64) - int(a["x_zp"])).astype(np.float32),
                       dtype=np.float32)


def _requantized(f, a):
    """QuantizeLinear(f) with (y_scale, y_zp) and the output type's range."""
    q = np.rint(np.divide(f, np.float32(a["y_scale"]), dtype=np.float32).astype(np.float64)) + int(a["y_zp"])
    lo, hi = ir.qrange(a["dtype"])
    return (np.clip(q, lo, hi).astype(ir.storage(a["dtype"])),)


def _leaky_relu(node, rounding, x):
    """com.microsoft QLinearLeakyRelu, element by element (the runtime looks it up in a table):
    f = v if v ≥ 0 else f32(alpha·v) on the dequantized v, then QuantizeLinear(f)."""
    v = _dequantized(x, node.attrs)
    return _requantized(np.where(v >= 0, v, np.multiply(np.float32(node.attrs["alpha"]), v, dtype=np.float32)),
                        node.attrs)


_ORT_SIGMOID = []  # one onnxruntime session of a lone float Sigmoid, made on first use


def _ort_sigmoid(v):
    """onnxruntime's float32 Sigmoid (MLAS's logistic approximation is onnxruntime's definition of
    the op, so onnxruntime itself computes it here, not npusim's kernels)."""
    if not _ORT_SIGMOID:
        import onnx
        import onnxruntime as ort
        from onnx import helper

        f = onnx.TensorProto.FLOAT
        g = helper.make_graph([helper.make_node("Sigmoid", ["v"], ["f"])], "sigmoid",
                              [helper.make_tensor_value_info("v", f, None)], [helper.make_tensor_value_info("f", f, None)])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        so = ort.SessionOptions()
        so.log_severity_level = 4
        _ORT_SIGMOID.append(ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]))
    return _ORT_SIGMOID[0].run(None, {"v": np.ascontiguousarray(v, np.float32)})[0]


def _sigmoid(node, rounding, x):
    """com.microsoft QLinearSigmoid, element by element (the runtime looks it up in a table):
    f = onnxruntime's float32 Sigmoid of the dequantized v, then QuantizeLinear(f)."""
    return _requantized(_ort_sigmoid(_dequantized(x, node.attrs)), node.attrs)


def _dynamic_quantize(node, rounding, x):
    """ONNX DynamicQuantizeLinear (uint8), in float32 as onnxruntime computes it: lo = min(x, 0),
    hi = max(x, 0), scale = f32((hi − lo) / 255) (1 when hi = lo), zp = round_half_even(clamp(
    f32(0 − f32(lo / scale)), 0, 255)), y = clamp(round_half_even(f32(x / scale)) + zp, 0, 255)."""
    x = np.asarray(x, np.float32)
    lo = np.float32(min(float(x.min()) if x.size else 0.0, 0.0))
    hi = np.float32(max(float(x.max()) if x.size else 0.0, 0.0))
    scale = np.float32(1.0) if hi == lo else np.float32(np.float32(hi - lo) / np.float32(255))
    zp = np.rint(np.clip(np.float32(0) - np.float32(lo / scale), 0, 255))
    y = np.rint(np.divide(x, scale, dtype=np.float32).astype(np.float64)) + zp
    return np.clip(y, 0, 255).astype(np.uint8), np.float32(scale).reshape(()), np.uint8(zp).reshape(())


def _scale_float(node, rounding, acc, a_scale, bias=None):
    """The float output of onnxruntime's integer GEMMs: y = f32(f32(acc)·m) [+ bias], m = f32(f32(alpha·a_scale)
    ·b_scale) per output column, one float32 rounding per operation (no fused multiply-add)."""
    a = node.attrs
    m = np.multiply(np.float32(np.float32(a["alpha"]) * np.float32(a_scale)), np.asarray(a["b_scale"], np.float32),
                    dtype=np.float32).reshape(-1)
    y = np.multiply(np.asarray(acc, np.int64).astype(np.float32), m if m.size > 1 else m[0], dtype=np.float32)
    return (y if bias is None else np.add(y, np.asarray(bias, np.float32).reshape(-1), dtype=np.float32),)


# ---------------------------------------------------------------- data movement (values unchanged)

def _reshape(node, rounding, x, shape):
    """ONNX Reshape: 0 copies the input's dimension (unless allowzero), −1 is inferred."""
    dims = [int(v) for v in shape]
    if not int(node.attrs.get("allowzero", 0)):
        dims = [x.shape[i] if v == 0 else v for i, v in enumerate(dims)]
    return (np.reshape(x, dims),)


def _flatten(node, rounding, x):
    axis = int(node.attrs.get("axis", 1))  # ONNX: in [-r, r]
    axis = axis + x.ndim if axis < 0 else axis
    return (np.reshape(x, (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))),)


def _transpose(node, rounding, x):
    perm = node.attrs.get("perm")
    return (np.transpose(x, list(reversed(range(x.ndim))) if perm is None else [int(p) for p in perm]),)


def _axes_of(node, axes):
    """The axes of squeeze / unsqueeze: the input (opset ≥ 13) or the attribute; None if neither."""
    a = axes if axes is not None else node.attrs.get("axes")
    return None if a is None else [int(v) for v in np.asarray(a).reshape(-1)]


def _squeeze(node, rounding, x, axes=None):
    ax = _axes_of(node, axes)
    drop = {i for i in range(x.ndim) if x.shape[i] == 1} if ax is None else {v % x.ndim for v in ax}
    return (np.reshape(x, [d for i, d in enumerate(x.shape) if i not in drop]),)


def _unsqueeze(node, rounding, x, axes=None):
    ax = _axes_of(node, axes)
    rank = x.ndim + len(ax)
    ones = {v % rank for v in ax}
    dims = iter(x.shape)
    return (np.reshape(x, [1 if i in ones else next(dims) for i in range(rank)]),)


def _slice(node, rounding, x, starts, ends, axes=None, steps=None):
    """ONNX Slice: per axis, negative starts/ends count from the end, then are clamped to
    [0, dim] (step > 0) or [0, dim − 1] / [−1, dim − 1] (step < 0); the indices taken are
    start, start + step, ... short of end."""
    axes = range(len(starts)) if axes is None else [int(v) % x.ndim for v in axes]
    steps = [1] * len(starts) if steps is None else [int(v) for v in steps]
    y = np.asarray(x)
    for st, en, ax, sp in zip(starts, ends, axes, steps):
        dim = x.shape[ax]
        st, en = int(st) + (dim if int(st) < 0 else 0), int(en) + (dim if int(en) < 0 else 0)
        if sp > 0:
            st, en = min(max(st, 0), dim), min(max(en, 0), dim)
        else:
            st, en = min(max(st, 0), dim - 1), min(max(en, -1), dim - 1)
        y = np.take(y, np.arange(st, en, sp, dtype=np.int64), axis=ax)
    return (y,)


def _pad(node, rounding, x, pads, value=None, axes=None):
    """ONNX Pad, constant mode: pads [begin..., end...] over `axes` (all by default); a negative
    pad removes cells. Output cell j of an axis holds input cell j − begin, or `value` (0)."""
    axes = list(range(x.ndim)) if axes is None else [int(v) % x.ndim for v in axes]
    pads = [int(p) for p in pads]
    begin, end = [0] * x.ndim, [0] * x.ndim
    for i, ax in enumerate(axes):
        begin[ax], end[ax] = pads[i], pads[i + len(axes)]
    shape = [x.shape[i] + begin[i] + end[i] for i in range(x.ndim)]
    v = 0 if value is None or np.size(value) == 0 else np.asarray(value).reshape(-1)[0]
    y = np.full(shape, v, x.dtype)
    keep = [max(x.shape[i] - max(-begin[i], 0) - max(-end[i], 0), 0) for i in range(x.ndim)]  # input cells kept
    dst = tuple(slice(max(begin[i], 0), max(begin[i], 0) + keep[i]) for i in range(x.ndim))
    src = tuple(slice(max(-begin[i], 0), max(-begin[i], 0) + keep[i]) for i in range(x.ndim))
    y[dst] = np.asarray(x)[src]
    return (y,)


def _conv_transpose(node, rounding, x, w, b=None, x_zp=None, w_zp=None):
    """ONNX ConvTranspose as a convolution: x − x_zp with s − 1 zeros between its elements, padded
    by the dilated kernel span − 1 on both sides, correlated with the flipped kernel w − w_zp[m]:
    the full output (in − 1)·s + (k − 1)·d + 1 per axis, output_padding zeros after it, then the
    window [pad_begin, pad_begin + out). pads / out from auto_pad, output_shape or pads as ONNX
    defines them; acc = that + bias[m], exact in float64, wrapped to int32. 1-D or 2-D."""
    a = node.attrs
    nd = w.ndim - 2
    c, mg, k = w.shape[0], w.shape[1], w.shape[2:]
    g = int(a["group"])
    m = mg * g
    s, d = [int(v) for v in a["strides"]], [int(v) for v in a["dilations"]]
    op = [int(v) for v in a["output_padding"]] or [0] * nd
    full = [(x.shape[2 + i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 for i in range(nd)]
    want = [int(v) for v in a.get("output_shape", ())][-nd:] if a.get("output_shape") else []
    if want or a["auto_pad"] in ("SAME_UPPER", "SAME_LOWER"):
        out = want or [x.shape[2 + i] * s[i] for i in range(nd)]
        extra = [full[i] + op[i] - out[i] for i in range(nd)]
        begin = [e // 2 if a["auto_pad"] == "SAME_UPPER" else e - e // 2 for e in extra]
    else:
        pads = [0] * (2 * nd) if a["auto_pad"] == "VALID" else [int(v) for v in a["pads"]] or [0] * (2 * nd)
        begin = pads[:nd]
        out = [full[i] + op[i] - pads[i] - pads[i + nd] for i in range(nd)]
    span = [(k[i] - 1) * d[i] + 1 for i in range(nd)]
    spread = np.zeros(x.shape[:2] + tuple(full[i] + span[i] - 1 + op[i] for i in range(nd)))
    spread[(slice(None),) * 2 + tuple(slice(span[i] - 1, span[i] - 1 + full[i] - span[i] + 1, s[i])
                                      for i in range(nd))] = _centered(x, None if x_zp is None else
                                                                       np.asarray(x_zp).reshape(-1)[0])
    spread = np.pad(spread, [(0, 0)] * 2 + [(0, span[i] - 1) for i in range(nd)])
    win = sliding_window_view(spread, span, axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None),) * 2 + tuple(slice(None, full[i] + op[i]) for i in range(nd))
              + tuple(slice(None, None, di) for di in d)]  # (N, C, *full+op, *k)
    zp = np.zeros(m) if w_zp is None else np.asarray(w_zp, np.float64).reshape(-1)
    zp = np.resize(zp, m).reshape(g, 1, mg)  # one per output channel; an axis-1 set repeats per group
    wc = np.asarray(w, np.float64).reshape((g, c // g, mg) + k) - zp.reshape((g, 1, mg) + (1,) * nd)
    wc = wc[(Ellipsis,) + (slice(None, None, -1),) * nd]  # flipped: the scatter as a correlation
    n = x.shape[0]
    sp, kk = "hw"[:nd], "rs"[:nd]
    acc = np.einsum(f"ngc{sp}{kk},gcm{kk}->ngm{sp}", win.reshape((n, g, c // g) + win.shape[2:]), wc,
                    optimize=True).reshape((n, m) + win.shape[2:2 + nd])
    acc = acc[(slice(None),) * 2 + tuple(slice(begin[i], begin[i] + out[i]) for i in range(nd))]
    if b is not None:
        acc = acc + np.asarray(b, np.float64).reshape((m,) + (1,) * nd)
    return (_acc(acc, "conv_transpose Σ(x−x_zp)(w−w_zp)+bias"),)


def _resize_sizes(a, shape):
    """(output shape, float32 scales) of ONNX Resize: the sizes, or floor(f32(scale)·in)."""
    if a["sizes"]:
        out = [int(v) for v in a["sizes"]]
        return out, [np.float32(o) / np.float32(i) for o, i in zip(out, shape)]
    scales = [np.float32(v) for v in a["scales"]]
    return [int(np.floor(sc * np.float32(i))) for sc, i in zip(scales, shape)], scales


def _nearest_source(o, size_in, size_out, scale, coord, nearest_mode):
    """The input index of output index o, in float32 arithmetic as onnxruntime's Resize."""
    f32, h = np.float32, np.float32(0.5)
    of = f32(o)
    if coord in ("pytorch_half_pixel", "align_corners") and size_out == 1:
        v = f32(0)
    elif coord == "align_corners":
        v = of * f32(size_in - 1) / f32(size_out - 1)
    elif coord == "asymmetric":
        v = of / scale
    else:
        v = (of + h) / scale - h
    v = float(v)  # exact; the rounding below is decided in float64
    whole = math.floor(v)
    if nearest_mode == "floor":
        i = whole
    elif nearest_mode == "ceil":
        i = math.ceil(v)
    elif v - whole == 0.5 and nearest_mode == "round_prefer_floor":
        i = whole
    else:
        i = int(math.copysign(math.floor(abs(v) + 0.5), v))  # std::round: half away from zero
    return min(max(i, 0), size_in - 1)


def _bilinear_axis(size_in, size_out, coord):
    """TFLite's Q10 source coordinate per output index (ResizeBilinearInteger): the two taps and
    the weight of the upper one, as float64 integers."""
    if coord == "align_corners" and size_out > 1:
        s10 = (1024 * (size_in - 1) + (size_out - 1) // 2) // (size_out - 1)
    else:
        s10 = (1024 * size_in + size_out // 2) // size_out
    o = np.arange(size_out, dtype=np.float64)
    if coord == "pytorch_half_pixel" and size_out == 1:
        v = np.zeros(1)
    elif coord in ("half_pixel", "pytorch_half_pixel"):
        v = o * s10 + (s10 // 2 - 512)
    else:
        v = o * s10
    lo = np.maximum(np.trunc(v / 1024.0), 0.0)
    hi = np.minimum(np.trunc((v + 1023.0) / 1024.0), size_in - 1)
    return lo.astype(np.intp), hi.astype(np.intp), v - 1024.0 * lo


def _resize(node, rounding, x):
    """ONNX Resize on codes. nearest: each output element is the input element at the index of
    `_nearest_source` per axis. linear: TFLite's RESIZE_BILINEAR of H and W on the raw codes,
    y20 = Σ x·w_y·w_x (Q10 weights, exact in float64), y = round(y20·2^−20) half away from zero
    ("double") or half up ("single"). When (y_scale, y_zp) ≠ (x_scale, x_zp):
    y = clamp(MBQM(v − x_zp, QM(x_scale/y_scale)) + y_zp)."""
    a = node.attrs
    out, scales = _resize_sizes(a, x.shape)
    if a["mode"] == "nearest":
        idx = [np.array([_nearest_source(o, x.shape[i], out[i], scales[i], a["coord"], a["nearest_mode"])
                         for o in range(out[i])]) for i in range(x.ndim)]
        v = np.asarray(x)[np.ix_(*idx)]
    else:
        (y0, y1, fy), (x0, x1, fx) = (_bilinear_axis(x.shape[i], out[i], a["coord"]) for i in (2, 3))
        xv = np.asarray(x, np.float64)
        wy, wx = fy[:, None], fx[None, :]
        y20 = (xv[:, :, y0][:, :, :, x0] * (1024 - wy) * (1024 - wx) + xv[:, :, y1][:, :, :, x0] * wy * (1024 - wx)
               + xv[:, :, y0][:, :, :, x1] * (1024 - wy) * wx + xv[:, :, y1][:, :, :, x1] * wy * wx)
        q = np.ldexp(y20, -20)
        v = (round_half_away(q) if rounding == "double" else floor_half_up(q)).astype(np.asarray(x).dtype)
    if float(a["x_scale"]) == float(a["y_scale"]) and int(a["x_zp"]) == int(a["y_zp"]):
        return (v,)
    m0, n = _qm(float(a["x_scale"]) / float(a["y_scale"]))
    return (_out(mbqm(_centered(v, a["x_zp"]), m0, n, rounding), a),)


def _concat(node, rounding, *xs):
    return (np.concatenate(xs, axis=int(node.attrs["axis"])),)


def _shape(node, rounding, x):
    """ONNX Shape: x's dimensions from attrs start to end (Python slice semantics, as ONNX's)."""
    dims = list(np.shape(x))
    return (np.asarray(dims[int(node.attrs.get("start", 0)):node.attrs.get("end")], np.int64),)


def _identity(node, rounding, x):
    return (x,)


ARITHMETIC = {"conv": _conv, "matmul": _matmul, "gemm": _gemm, "requantize": _requantize, "add": _add,
              "mul": _mul, "global_avgpool": _global_avgpool, "avgpool": _avgpool, "softmax": _softmax,
              "qconcat": _qconcat, "round_shift": _round_shift, "sign": _sign,
              "multithreshold": _multithreshold, "maxpool": _maxpool,
              "quantize": _quantize, "dequantize": _dequantize, "leaky_relu": _leaky_relu, "sigmoid": _sigmoid,
              "dynamic_quantize": _dynamic_quantize, "scale_float": _scale_float,
              "reshape": _reshape, "flatten": _flatten, "transpose": _transpose, "squeeze": _squeeze,
              "unsqueeze": _unsqueeze, "slice": _slice, "pad": _pad, "concat": _concat, "identity": _identity,
              "conv_transpose": _conv_transpose, "resize": _resize, "shape": _shape}
# islands that onnxruntime runs (through the runtime's own host-island code), and mode "ort"'s
# float32 GlobalAveragePool, whose numbers are onnxruntime's order of additions (through the
# registry's entry on the golden kernel; a mode "npu" graph has none)
SHARED = ("host", "global_avgpool_f32")


def shared_tensors(graph: ir.Graph) -> dict[str, str]:
    """{tensor: op} of every tensor the reference computes with the runtime's own code (SHARED):
    a comparison with the reference checks nothing there."""
    return {o: n.op for n in graph.nodes if n.op in SHARED for o in n.outputs}


# ---------------------------------------------------------------- graph

def evaluate(graph: ir.Graph, feeds: dict, rounding: str = "double") -> dict[str, np.ndarray]:
    """Every tensor of `graph` (constants, inputs, intermediates, outputs) for one inference,
    computed by the float64 reference; quantized tensors in their integer storage dtype.

    rounding: "double" (gemmlowp) or "single" (TFLite single rounding), as mode "npu".
    """
    from .registry import OPS, kernel_set
    from .session import prepare_host, check_feeds

    if rounding not in ROUNDINGS:
        raise NpusimError(f"unknown rounding {rounding!r}; expected one of {', '.join(ROUNDINGS)}")
    feeds = check_feeds(graph, feeds)
    K = kernel_set("golden")
    values = {**graph.constants, **{name: feeds[name] for name in graph.inputs}}
    for node in graph.nodes:
        xs = [values[i] if i else None for i in node.inputs]
        while xs and xs[-1] is None:
            xs.pop()  # absent trailing optional inputs take their defaults
        try:
            if node.op in ARITHMETIC:
                outs = ARITHMETIC[node.op](node, rounding, *xs)
            elif node.op == "host":
                outs = prepare_host(node, None, K, graph)[0](*xs)
            elif node.op in SHARED:
                outs = OPS[node.op].prepare(node, graph.constants.get, K)(*xs)
            else:
                raise NpusimError(f"node {node.name!r}: op {node.op!r} is not supported by the float64 reference")
        except NpusimError:
            raise
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise NpusimError(f"node {node.source or node.name!r} ({node.op}): {msg}") from None
        values.update(zip(node.outputs, outs))
    return values
