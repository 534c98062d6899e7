"""Golden fixed-point kernels of mode "npu": integer-only requantization and elementwise ops.

The contract is docs/npu_arithmetic.md (gemmlowp fixedpoint.h, TFLite common.h and
reference/integer_ops). Everything at run time is integer (int64 NumPy here); the only floats
are offline, in the *_params / quantize_multiplier / softmax_table helpers of npusim_kernels.params
(re-exported here; the fast kernel set re-exports the same ones), and the argument checks are
npusim_kernels.checks.

Conventions used throughout:
  m0:  the Q31 multiplier, int in [0, 2^31) (0 only for a zero or underflowed multiplier);
  n:   the right shift (negative = left shift); (m0, n) stands for the real m0 · 2^−(31 + n);
  rounding: "double" (gemmlowp/TFLite default: SRDHM then RDBPOT) or "single"
            (TFLITE_SINGLE_ROUNDING: one rounding, half toward +infinity).
Every op ends with y = clamp(result + y_zp, qmin, qmax) in int64 and a cast to out_dtype.
"""
import numpy as np

from npusim_kernels.checks import (
    I32_MAX, I32_MIN, add_operands, check_int, check_range, check_rounding, mul_operands, pool_codes_operand,
    pool_operand)
from npusim_kernels.params import (  # noqa: F401  (offline helpers, part of this kernel set's names)
    ADD_LEFT_SHIFT, ADD_LEFT_SHIFT_16, ROUNDINGS, add_left_shift, add_params, avgpool_params,
    global_avgpool_params, hard_swish_table, mul_params, quantize_multiplier, softmax_params)
from npusim_kernels.golden import pool as _pool


# ---------------------------------------------------------------- integer primitives

def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul (gemmlowp; the NEON VQRDMULH instruction), elementwise.

    a, b: int32 values (broadcast); returns int32. p = a·b (int64); a == b == INT32_MIN ->
    INT32_MAX (the one saturating case); else trunc((p + nudge) / 2^31), nudge = 2^30 if
    p >= 0 else 1 − 2^30. That equals floor(a·b / 2^31 + 1/2): round half toward +infinity
    (so −2.5 -> −2), NOT half away from zero.
    """
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    check_range(a, I32_MIN, I32_MAX, "srdhm a")
    check_range(b, I32_MIN, I32_MAX, "srdhm b")
    p = a * b
    s = p + np.where(p >= 0, 2 ** 30, 1 - 2 ** 30)
    q = np.sign(s) * (np.abs(s) // 2 ** 31)  # C++ '/' truncates toward zero
    q = np.where((a == I32_MIN) & (b == I32_MIN), I32_MAX, q)
    return q.astype(np.int32)


def rdbpot(x, e):
    """RoundingDivideByPOT (gemmlowp), elementwise in int64: round_half_away_from_zero(x / 2^e).

    x: int64 values with |x| <= 2^62, e: ints in 0..62 (gemmlowp allows 0..31; int64 lets a
    WESS-extended shift pass 31). mask = 2^e − 1, rem = x & mask, threshold = (mask >> 1) + (x < 0);
    result = (x >> e) + (rem > threshold), '>>' arithmetic. Returns int64.
    """
    x, e = np.broadcast_arrays(np.asarray(x, np.int64), np.asarray(e, np.int64))
    check_range(x, -(2 ** 62), 2 ** 62, "rdbpot x")
    check_range(e, 0, 62, "rdbpot exponent")
    mask = (np.int64(1) << e) - 1
    rem = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > threshold)


def mbqm(x, m0, n, rounding):
    """MultiplyByQuantizedMultiplier: x·m0·2^−(31+n) rounded, saturated to int32. Broadcasting.

    x: int32 values, m0: ints in [0, 2^31), n: right shifts (negative = left); int64 out.
    double: l = max(−n, 0), r = max(n, 0); x' = saturate_int32(x·2^l);
            result = RDBPOT(SRDHM(x', m0), r)   (r > 62 acts as 62: an int32 / 2^62 rounds to 0)
    single: t = 31 + n; result = floor((x·m0 + 2^(t−1)) / 2^t) for 1 <= t <= 62 (|x·m0| < 2^62
            fits int64); 0 for t > 62; x·m0·2^−t for t < 1.
    Either result is then saturated to [INT32_MIN, INT32_MAX].
    """
    check_rounding(rounding)
    x, m0, n = np.broadcast_arrays(np.asarray(x, np.int64), np.asarray(m0, np.int64), np.asarray(n, np.int64))
    check_range(x, I32_MIN, I32_MAX, "mbqm x")
    check_range(m0, 0, I32_MAX, "mbqm m0")
    if rounding == "double":
        left = np.minimum(np.maximum(-n, 0), 32)  # any nonzero x·2^32 saturates already
        xs = np.clip(x << left, I32_MIN, I32_MAX)
        y = rdbpot(srdhm(xs, m0), np.minimum(np.maximum(n, 0), 62))
    else:
        t = 31 + n
        p = x * m0
        tr = np.clip(t, 1, 62)
        right = (p + (np.int64(1) << (tr - 1))) >> tr
        # t < 1: shift left; |p| >= 2^31 saturates for any shift, so clip p first (no int64 overflow)
        left = np.clip(p, I32_MIN, I32_MAX) << np.minimum(np.maximum(-t, 0), 32)
        y = np.where(t > 62, 0, np.where(t >= 1, right, left))
    return np.clip(y, I32_MIN, I32_MAX)


def reduced_multiplier_q15(m0):
    """The Q0.15 multiplier TFLite's int64 MBQM uses: (m0 + 2^15) >> 16, or 0x7FFF for
    m0 >= 0x7FFF0000 (so it never reaches 2^15). m0: ints in [0, 2^31); int64 out."""
    m0 = np.asarray(m0, np.int64)
    return np.where(m0 < 0x7FFF0000, (m0 + (1 << 15)) >> 16, 0x7FFF)


def mbqm_i64(x, m0, n):
    """MultiplyByQuantizedMultiplier(int64 x, m0, shift = −n) of TFLite's 16x8 conv and fully
    connected kernels (common.cc; the same with and without TFLITE_SINGLE_ROUNDING). Broadcasting.

    x: int64 values with |x| < 2^47 (TFLite's precondition; ValueError otherwise); m0: ints in
    [0, 2^31); n: right shifts with t = 15 + n >= 1. rm = reduced_multiplier_q15(m0), and
    y = (x·rm + 2^(t−1)) >> t: one rounding, half toward +infinity (|x·rm| < 2^62 fits int64;
    t > 62 gives 0). The multiplier is thus rounded to 15 bits: rm·2^−(15+n), not m0·2^−(31+n).
    TFLite assumes the result fits int32; it is saturated to int32 here. int64 out.
    """
    x, m0, n = np.broadcast_arrays(np.asarray(x, np.int64), np.asarray(m0, np.int64), np.asarray(n, np.int64))
    check_range(x, -(2 ** 47) + 1, 2 ** 47 - 1, "mbqm_i64 x")
    check_range(m0, 0, I32_MAX, "mbqm_i64 m0")
    t = 15 + n
    check_range(t, 1, 2 ** 62, "mbqm_i64 total shift 15 + n")
    tr = np.minimum(t, 62)
    y = (x * reduced_multiplier_q15(m0) + (np.int64(1) << (tr - 1))) >> tr
    return np.clip(np.where(t > 62, 0, y), I32_MIN, I32_MAX)


def _finish(v, y_zp, qmin, qmax, out_dtype):
    """y = clamp(v + y_zp, qmin, qmax) in int64, cast to out_dtype."""
    return np.clip(np.asarray(v, np.int64) + int(y_zp), int(qmin), int(qmax)).astype(out_dtype)


def _per_axis(p, shape, axis):
    """A per-tensor (size 1) or per-channel parameter, shaped to broadcast along `axis` of `shape`."""
    p = np.asarray(p, np.int64).reshape(-1)
    if p.size == 1:
        return p[0]
    ndim = len(shape)
    if not ndim or p.size != shape[axis]:
        raise ValueError(f"multiplier parameters of size {p.size}, expected 1 or {shape[axis] if ndim else 1}")
    shape = [1] * ndim
    shape[axis] = p.size
    return p.reshape(shape)


# ---------------------------------------------------------------- ops

def requantize_fixed(acc_i32, m0, n, axis, y_zp, qmin, qmax, out_dtype, rounding):
    """y:out_dtype = clamp(MBQM(acc, m0[c], n[c]) + y_zp, qmin, qmax).

    acc_i32: int32 (conv/matmul/gemm accumulator, bias included); m0, n: int32 of size 1 (per
    tensor) or acc.shape[axis] (per channel along `axis`; WESS channels already carry n + shift).
    """
    acc = np.asarray(acc_i32)
    if acc.dtype != np.int32:
        raise ValueError(f"requantize_fixed: acc must be int32, got {acc.dtype}")
    m, s = _per_axis(m0, acc.shape, axis), _per_axis(n, acc.shape, axis)
    return _finish(mbqm(acc, m, s, rounding), y_zp, qmin, qmax, out_dtype)


def requantize_fixed_for(acc_shape, m0, n, axis, y_zp, qmin, qmax, out_dtype, rounding):
    """-> y(acc_i32) = requantize_fixed(acc_i32, ...) (golden: nothing is settled ahead)."""
    return lambda acc: requantize_fixed(acc, m0, n, axis, y_zp, qmin, qmax, out_dtype, rounding)


def requantize_fixed_i64(acc_i64, m0, n, axis, y_zp, qmin, qmax, out_dtype):
    """y:out_dtype = clamp(MBQM_i64(acc, m0[c], n[c]) + y_zp, qmin, qmax): the requantization of
    TFLite's 16x8 conv / fully connected (int64 accumulator; one rounding in either rounding mode).

    acc_i64: int64 (acc64.conv_acc_i64 / matmul_acc_i64, bias included, |acc| < 2^47); m0, n:
    int32 of size 1 or acc.shape[axis], as for requantize_fixed.
    """
    acc = np.asarray(acc_i64)
    if acc.dtype != np.int64:
        raise ValueError(f"requantize_fixed_i64: acc must be int64, got {acc.dtype}")
    m, s = _per_axis(m0, acc.shape, axis), _per_axis(n, acc.shape, axis)
    return _finish(mbqm_i64(acc, m, s), y_zp, qmin, qmax, out_dtype)


def fixed_add(a, a_zp, b, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding):
    """TFLite integer Add, 8- or 16-bit in (int16: TFLite's 16x8 Add, zero points allowed),
    numpy broadcasting. params = add_params(..., add_left_shift(out_dtype)).

    L = add_left_shift(out_dtype) (20; 15 for a 16-bit output), and |a − a_zp|·2^L must fit
    int32 for every value of a's type (else ValueError: a 16-bit input needs a 16-bit output):
    a' = MBQM((a − a_zp)·2^L, ma, na), b' likewise (|a'|, |b'| <= 2^30: the sum fits int32);
    y = clamp(MBQM(a' + b', my, ny) + y_zp, qmin, qmax).
    """
    (ma, na), (mb, nb), (my, ny) = params
    a, b, shift = add_operands(a, a_zp, b, b_zp, out_dtype)
    a1 = mbqm((a.astype(np.int64) - int(a_zp)) << shift, ma, na, rounding)
    b1 = mbqm((b.astype(np.int64) - int(b_zp)) << shift, mb, nb, rounding)
    return _finish(mbqm(a1 + b1, my, ny, rounding), y_zp, qmin, qmax, out_dtype)


def fixed_add_for(a_shape, a_dtype, a_zp, b_shape, b_dtype, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding):
    """-> y(a, b) = fixed_add(a, a_zp, b, b_zp, ...) (golden: nothing is settled ahead)."""
    return lambda a, b: fixed_add(a, a_zp, b, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding)


def fixed_mul_for(a_shape, a_dtype, a_zp, b_shape, b_dtype, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding):
    """-> y(a, b) = fixed_mul(a, a_zp, b, b_zp, ...) (golden: nothing is settled ahead)."""
    return lambda a, b: fixed_mul(a, a_zp, b, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding)


def fixed_mul(a, a_zp, b, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding):
    """TFLite integer Mul, 8- or 16-bit in, numpy broadcasting. params = mul_params(...) = (m, n).

    prod:i32 = (a − a_zp)·(b − b_zp): max|a − a_zp|·max|b − b_zp| over the types must be < 2^31
    (always for 8 bits; for 16 bits, TFLite's zero points 0 give <= 2^30), else ValueError;
    y = clamp(MBQM(prod, m, n) + y_zp, qmin, qmax).
    """
    m, n = params
    a, b = mul_operands(a, a_zp, b, b_zp)
    prod = (a.astype(np.int64) - int(a_zp)) * (b.astype(np.int64) - int(b_zp))
    return _finish(mbqm(prod, m, n, rounding), y_zp, qmin, qmax, out_dtype)


def fixed_rescale(x, x_zp, m0, n, y_zp, qmin, qmax, out_dtype, rounding):
    """Change of quantization: y = clamp(MBQM(x − x_zp, m0, n) + y_zp, qmin, qmax).

    (m0, n) = QM(x_scale / y_scale); equal scales give (2^30, −1), which is exact, so equal
    scales and zero points copy. x: any int dtype with x − x_zp in int32.
    """
    d = np.asarray(x, np.int64) - int(x_zp)
    return _finish(mbqm(d, m0, n, rounding), y_zp, qmin, qmax, out_dtype)


def fixed_global_avgpool_for(x_shape, x_dtype, x_zp, m0, n, y_zp, qmin, qmax, out_dtype, rounding):
    """-> y(x_nchw) = fixed_global_avgpool(x_nchw, x_zp, ...) (golden: nothing is settled ahead)."""
    return lambda x: fixed_global_avgpool(x, x_zp, m0, n, y_zp, qmin, qmax, out_dtype, rounding)


def fixed_global_avgpool(x_nchw, x_zp, m0, n, y_zp, qmin, qmax, out_dtype, rounding):
    """Global average pool (N, C, *spatial) -> (N, C, 1, ..), 8- or 16-bit x: acc:i32 = Σ (x − x_zp)
    over N_s = Πspatial elements, N_s·max|x − x_zp| < 2^31 (8 bits: N_s up to ~2^23; 16 bits:
    2^15); (m0, n) = global_avgpool_params(x_scale, y_scale, N_s);
    y = clamp(MBQM(acc, m0, n) + y_zp, qmin, qmax)."""
    hw = int(np.prod(np.shape(x_nchw)[2:]))
    x = pool_operand(x_nchw, x_zp, hw, "fixed_global_avgpool").astype(np.int64)
    acc = (x - int(x_zp)).reshape(x.shape[:2] + (hw,)).sum(axis=2)
    check_range(acc, I32_MIN, I32_MAX, "fixed_global_avgpool accumulator")
    y = _finish(mbqm(acc, m0, n, rounding), y_zp, qmin, qmax, out_dtype)
    return y.reshape(x.shape[:2] + (1,) * (x.ndim - 2))


def fixed_avgpool(x_nchw, x_zp, kernel, strides, pads, count_include_pad, ceil_mode,
                  m0_by_count, n_by_count, y_zp, qmin, qmax, out_dtype, rounding):
    """Average pool (N, C, *spatial), 1-3 spatial dims, no dilation; pads = [begin..., end...];
    8- or 16-bit x with Πkernel·max|x − x_zp| < 2^31.

    acc:i32 = Σ (x − x_zp) over the window clipped to the input (padding contributes 0);
    count = Πkernel if count_include_pad else the clipped window size (onnxruntime's divisor;
    output sizes and ceil_mode as golden.pool); (m0, n) = (m0_by_count[count], n_by_count[count])
    from avgpool_params; y = clamp(MBQM(acc, m0, n) + y_zp, qmin, qmax).
    """
    x = pool_operand(x_nchw, x_zp, np.prod(kernel), "fixed_avgpool").astype(np.int64) - int(x_zp)
    nd = x.ndim - 2
    outs = [_pool.pool_output_size(x.shape[2 + i], kernel[i], strides[i], pads[i], pads[i + nd], 1, ceil_mode)
            for i in range(nd)]
    acc = np.empty(x.shape[:2] + tuple(outs), np.int64)
    count = np.empty(tuple(outs), np.int64)
    for o in np.ndindex(*outs):
        lo = [max(o[i] * strides[i] - pads[i], 0) for i in range(nd)]
        hi = [min(o[i] * strides[i] - pads[i] + kernel[i], x.shape[2 + i]) for i in range(nd)]
        win = x[(slice(None), slice(None)) + tuple(slice(l, h) for l, h in zip(lo, hi))]
        acc[(slice(None), slice(None)) + o] = win.reshape(x.shape[:2] + (-1,)).sum(axis=2)
        count[o] = int(np.prod(kernel)) if count_include_pad else int(np.prod([h - l for l, h in zip(lo, hi)]))
    check_range(acc, I32_MIN, I32_MAX, "fixed_avgpool accumulator")
    m = np.asarray(m0_by_count, np.int64)[count]
    s = np.asarray(n_by_count, np.int64)[count]
    return _finish(mbqm(acc, m, s, rounding), y_zp, qmin, qmax, out_dtype)


def fixed_avgpool_codes(x_nchw, x_zp, kernel, strides, pads, count_include_pad, ceil_mode, qmin, qmax):
    """Average pool with one quantization on both sides (x_scale = y_scale, x_zp = y_zp): TFLite's
    reference AVERAGE_POOL_2D (reference_integer_ops/pooling.h), which averages the stored codes.

    (N, C, *spatial), 1-3 spatial dims, no dilation, pads = [begin..., end...]; 8- or 16-bit x with
    Πkernel·max|code| < 2^31. acc:i32 = Σ x over the window clipped to the input, plus x_zp (the
    real 0) for each padded cell when count_include_pad; count = Πkernel if count_include_pad else
    the clipped window size (output sizes and ceil_mode as golden.pool);
    y:x.dtype = clamp(round_half_away_from_zero(acc / count), qmin, qmax). The zero point is not
    subtracted, so a tie rounds away from code 0, not from x_zp (TFLite does the same).
    """
    codes = pool_codes_operand(x_nchw, x_zp, np.prod(kernel), "fixed_avgpool_codes")
    x = codes.astype(np.int64)
    nd = x.ndim - 2
    outs = [_pool.pool_output_size(x.shape[2 + i], kernel[i], strides[i], pads[i], pads[i + nd], 1, ceil_mode)
            for i in range(nd)]
    y = np.empty(x.shape[:2] + tuple(outs), np.int64)
    for o in np.ndindex(*outs):
        lo = [max(o[i] * strides[i] - pads[i], 0) for i in range(nd)]
        hi = [min(o[i] * strides[i] - pads[i] + kernel[i], x.shape[2 + i]) for i in range(nd)]
        win = x[(slice(None), slice(None)) + tuple(slice(l, h) for l, h in zip(lo, hi))]
        size = int(np.prod([h - l for l, h in zip(lo, hi)]))
        count = int(np.prod(kernel)) if count_include_pad else size
        acc = win.reshape(x.shape[:2] + (-1,)).sum(axis=2) + (count - size) * int(x_zp)
        check_range(acc, I32_MIN, I32_MAX, "fixed_avgpool_codes accumulator")
        y[(slice(None), slice(None)) + o] = np.sign(acc) * ((np.abs(acc) + count // 2) // count)
    return np.clip(y, int(qmin), int(qmax)).astype(codes.dtype)


# ---------------------------------------------------------------- gemmlowp fixed-point functions (softmax)
# A Qi.f value (i integer bits, f = 31 − i fractional bits) is an int32 raw r standing for r·2^−f.
# Products of two raws are SRDHM (the result has the sum of the integer bits); sums are int32 adds,
# checked here to stay inside int32 (gemmlowp wraps; none of these sums can leave int32).

EXP_BARREL = ((24, 1672461947), (25, 1302514674), (26, 790015084), (27, 290630308), (28, 39332535),
              (29, 720401), (30, 242))  # (bit of a Q5.26 raw, Q0.31 raw of exp(−2^(bit − 26)))
EXP_MINUS_ONE_EIGHTH = 1895147668  # Q0.31 raw of exp(−1/8)
ONE_THIRD = 715827883  # Q0.31 raw of 1/3
FORTY_EIGHT_17THS, MINUS_THIRTY_TWO_17THS = 1515870810, -1010580540  # Q2.29 raws of 48/17, −32/17


def _i32(v, what):
    check_range(v, I32_MIN, I32_MAX, what)
    return np.asarray(v, np.int64)


def _shl_sat(x, e):
    """SaturatingRoundingMultiplyByPOT<e>, e > 0: saturate_int32(x·2^e)."""
    return np.clip(np.asarray(x, np.int64) << e, I32_MIN, I32_MAX)


def _mul(a, b):
    return srdhm(a, b).astype(np.int64)


def exp_on_negative_values(a_q5_26):
    """gemmlowp exp_on_negative_values for 5 integer bits: Q5.26 raws a <= 0 -> Q0.31 raws of exp(a).

    a = q − r with q = (a mod 1/4) − 1/4 in [−1/4, 0) and r >= 0 a multiple of 1/4 (r < 32).
    exp(q): Taylor polynomial around −1/8 in Q0.31, z = q + 1/8 (q rescaled to Q0.31 by a saturating
    ·2^5): e^(−1/8)·(1 + z + (z^2/2 + z^3/6 + z^4/24)), the bracket as RDBPOT(((RDBPOT(z^4, 2) + z^3)·1/3
    + z^2), 1), every product SRDHM. Then for each bit k of r (2^(k − 26) = 1/4 .. 16) that is set,
    one SRDHM by exp(−2^(k − 26)) in Q0.31 (EXP_BARREL). a = 0 gives INT32_MAX (1.0 saturated).
    """
    a = _i32(a_q5_26, "exp_on_negative_values a")
    check_range(a, I32_MIN, 0, "exp_on_negative_values a")
    q = (a & ((1 << 24) - 1)) - (1 << 24)
    z = _i32(_shl_sat(q, 5) + (1 << 28), "exp z")
    z2 = _mul(z, z)
    z3 = _mul(z2, z)
    z4 = _mul(z2, z2)
    bracket = rdbpot(_i32(_mul(_i32(rdbpot(z4, 2) + z3, "exp z^4/4 + z^3"), ONE_THIRD) + z2, "exp poly"), 1)
    result = _i32(EXP_MINUS_ONE_EIGHTH + _mul(EXP_MINUS_ONE_EIGHTH, _i32(z + bracket, "exp z + poly")), "exp(q)")
    r = q - a
    for bit, m in EXP_BARREL:
        result = np.where((r >> bit) & 1, _mul(result, m), result)
    return np.where(a == 0, I32_MAX, result)


def one_over_one_plus_x(a_q0_31):
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: Q0.31 raws of x in [0, 1) -> Q0.31 raws of 1/(1 + x).

    d = (1 + x)/2 as RoundingHalfSum(a, INT32_MAX) = trunc((a + INT32_MAX + 1) / 2) (a >= 0);
    Newton-Raphson in Q2.29 from v = 48/17 − 32/17·d: three times v += saturate(SRDHM(v, 1 − d·v)·2^2)
    (d·v and the product SRDHM; 1 = 2^29); result saturate_int32(v·2), i.e. v/2 in Q0.31.
    """
    a = _i32(a_q0_31, "one_over_one_plus_x a")
    check_range(a, 0, I32_MAX, "one_over_one_plus_x a")
    d = (a + I32_MAX + 1) // 2
    v = _i32(FORTY_EIGHT_17THS + _mul(d, MINUS_THIRTY_TWO_17THS), "reciprocal start")
    for _ in range(3):
        err = _i32((1 << 29) - _mul(d, v), "reciprocal 1 - d·v")
        v = _i32(v + _shl_sat(_mul(v, err), 2), "reciprocal step")
    return _shl_sat(v, 1)


def fixed_softmax(x, axis, params, y_zp, qmin, qmax, out_dtype, rounding):
    """TFLite's reference int8/uint8 softmax (reference_ops::Softmax, gemmlowp fixed point) along `axis`.

    params = softmax_params(x_scale, y_scale, rounding) = (m_in, ls, diff_min, m_out, n_out). Per row:
    d = x − max(row) (int, <= 0); rows cells with d < diff_min get probability 0. Else
    s = MBQM(d, m_in, −ls, rounding) (Q5.26; TFLite's MultiplyByQuantizedMultiplierGreaterThanOne),
    e = exp_on_negative_values(s) (Q0.31), S:i32 = Σ RDBPOT(e, 12) (Q12.19; ValueError if S leaves
    int32, possible only for rows longer than 4095); with c = 32 − bit_length(S) and b = 12 − c,
    R = one_over_one_plus_x(S·2^c − 2^31) (Q0.31 of 2^b/S); p = SRDHM(R, e) (Q0.31 of e/S·2^−b);
    y = clamp(MBQM_single(p, m_out, n_out + b) + y_zp, qmin, qmax), i.e. floor(p·m_out / 2^(31 + n_out + b)
    + 1/2), which for y_scale = 1/256 is TFLite's RoundingDivideByPOT(p, b + 23) (p >= 0).
    """
    m_in, ls, diff_min, m_out, n_out = params
    x = check_int(x, 0, "fixed_softmax x").astype(np.int64)
    axis = axis % x.ndim
    d = x - x.max(axis=axis, keepdims=True)
    live = d >= diff_min
    s = mbqm(np.where(live, d, 0), m_in, -ls, rounding)
    e = np.where(live, exp_on_negative_values(s), 0)
    total = rdbpot(e, 12).sum(axis=axis, keepdims=True)
    check_range(total, 1, I32_MAX, "fixed_softmax sum of exponentials (Q12.19)")
    c = 32 - np.vectorize(lambda v: int(v).bit_length(), otypes=[np.int64])(total)  # leading zeros of S (uint32)
    recip = one_over_one_plus_x((total << c) - 2 ** 31)
    p = srdhm(recip, e)
    return _finish(mbqm(p, m_out, n_out + 12 - c, "single"), y_zp, qmin, qmax, out_dtype)
