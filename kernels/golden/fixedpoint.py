"""Golden fixed-point kernels of mode "npu": integer-only requantization and elementwise ops.

The contract is docs/npu_arithmetic.md (gemmlowp fixedpoint.h, TFLite common.h and
reference/integer_ops). Everything at run time is integer (int64 NumPy here); the only floats
are offline, in the *_params / quantize_multiplier / softmax_table helpers.

Conventions used throughout:
  m0:  the Q31 multiplier, int in [0, 2^31) (0 only for a zero or underflowed multiplier);
  n:   the right shift (negative = left shift); (m0, n) stands for the real m0 · 2^−(31 + n);
  rounding: "double" (gemmlowp/TFLite default: SRDHM then RDBPOT) or "single"
            (TFLITE_SINGLE_ROUNDING: one rounding, half toward +infinity).
Every op ends with y = clamp(result + y_zp, qmin, qmax) in int64 and a cast to out_dtype.
"""
import math

import numpy as np

from npusim_kernels.golden import pool as _pool

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
ROUNDINGS = ("double", "single")
ADD_LEFT_SHIFT = 20  # TFLite's left_shift for 8-bit Add: (a − a_zp)·2^20 keeps 11 bits of headroom
ADD_LEFT_SHIFT_16 = 15  # and for an int16 output: (a − a_zp)·2^15 < 2^31 for any 16-bit a


def _check_rounding(rounding):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be 'double' or 'single', got {rounding!r}")


def _check_range(v, lo, hi, what):
    v = np.asarray(v)
    bad = (v < lo) | (v > hi)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what} out of [{lo}, {hi}] at index {idx}: {int(v[idx])}")


# ---------------------------------------------------------------- offline (float64) helpers

def quantize_multiplier(real):
    """(m0:int32, n:int32) per element of `real` (float64 array-like), TFLite QuantizeMultiplier.

    real == 0 -> (0, 0). Else q, e = frexp(real) (0.5 <= q < 1), m0 = round_half_away(q·2^31)
    (q·2^31 + 1/2 is exact in float64), and m0 == 2^31 becomes (2^30, e + 1); n = −e.
    n > 62 (real < 2^−63) underflows to (0, 0). real < 0, inf or nan is a ValueError.
    The pair stands for exactly m0 · 2^−(31 + n), within 2^−31 relative of real.
    """
    r = np.asarray(real, np.float64)
    m0 = np.zeros(r.shape, np.int32)
    n = np.zeros(r.shape, np.int32)
    for idx in np.ndindex(*r.shape):
        v = float(r[idx])
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"quantize_multiplier: real multiplier must be finite and >= 0, got {v} at {idx}")
        if v == 0.0:
            continue
        q, e = math.frexp(v)
        m = math.floor(q * 2.0 ** 31 + 0.5)
        if m == 2 ** 31:
            m, e = 2 ** 30, e + 1
        if -e > 62:
            continue
        m0[idx], n[idx] = m, -e
    return m0, n


def _qm_int(real):
    m0, n = quantize_multiplier(real)
    return int(m0), int(n)


def add_left_shift(out_dtype):
    """TFLite Add's left shift L: 15 for a 16-bit output (add.cc: int16), else 20."""
    return ADD_LEFT_SHIFT_16 if np.dtype(out_dtype).itemsize == 2 else ADD_LEFT_SHIFT


def add_params(a_scale, b_scale, y_scale, left_shift=ADD_LEFT_SHIFT):
    """((ma, na), (mb, nb), (my, ny)) for fixed_add, TFLite integer Add with L = left_shift
    (add_left_shift of the output type; float64): t = 2·max(a_scale, b_scale);
    QM(a_scale / t), QM(b_scale / t), QM(t / (2^L · y_scale))."""
    a_scale, b_scale, y_scale = float(a_scale), float(b_scale), float(y_scale)
    t = 2.0 * max(a_scale, b_scale)
    return _qm_int(a_scale / t), _qm_int(b_scale / t), _qm_int(t / (2.0 ** int(left_shift) * y_scale))


def mul_params(a_scale, b_scale, y_scale):
    """(m, n) for fixed_mul: QM(a_scale · b_scale / y_scale), float64 left to right."""
    return _qm_int(float(a_scale) * float(b_scale) / float(y_scale))


def global_avgpool_params(x_scale, y_scale, hw):
    """(m, n) for fixed_global_avgpool over hw spatial elements: QM(x_scale / (y_scale · hw))."""
    return _qm_int(float(x_scale) / (float(y_scale) * int(hw)))


def avgpool_params(x_scale, y_scale, kernel):
    """(m0_by_count, n_by_count): int32[prod(kernel) + 1], entry c = QM(x_scale / (y_scale · c)).

    Indexed by the divisor onnxruntime uses at an output position (1..prod(kernel)); entry 0
    is (0, 0) and never used.
    """
    k = int(np.prod(kernel))
    real = np.zeros(k + 1)
    real[1:] = float(x_scale) / (float(y_scale) * np.arange(1, k + 1, dtype=np.float64))
    return quantize_multiplier(real)


def softmax_table(x_scale, y_scale):
    """(E:int32[256], m, n) for fixed_softmax.

    E[d] = round_half_away(2^16 · exp(−x_scale · d)), d = 0..255 (E[0] = 65536, E > 0 while
    x_scale·d < ~11.8, then 0); (m, n) = QM(2^−15 / y_scale) (P in Q15 -> output units).
    """
    d = np.arange(256, dtype=np.float64)
    e = np.floor(65536.0 * np.exp(-float(x_scale) * d) + 0.5).astype(np.int32)
    m, n = _qm_int(2.0 ** -15 / float(y_scale))
    return e, m, n


# ---------------------------------------------------------------- integer primitives

def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul (gemmlowp; the NEON VQRDMULH instruction), elementwise.

    a, b: int32 values (broadcast); returns int32. p = a·b (int64); a == b == INT32_MIN ->
    INT32_MAX (the one saturating case); else trunc((p + nudge) / 2^31), nudge = 2^30 if
    p >= 0 else 1 − 2^30. That equals floor(a·b / 2^31 + 1/2): round half toward +infinity
    (so −2.5 -> −2), NOT half away from zero.
    """
    a, b = np.broadcast_arrays(np.asarray(a, np.int64), np.asarray(b, np.int64))
    _check_range(a, I32_MIN, I32_MAX, "srdhm a")
    _check_range(b, I32_MIN, I32_MAX, "srdhm b")
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
    _check_range(x, -(2 ** 62), 2 ** 62, "rdbpot x")
    _check_range(e, 0, 62, "rdbpot exponent")
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
    _check_rounding(rounding)
    x, m0, n = np.broadcast_arrays(np.asarray(x, np.int64), np.asarray(m0, np.int64), np.asarray(n, np.int64))
    _check_range(x, I32_MIN, I32_MAX, "mbqm x")
    _check_range(m0, 0, I32_MAX, "mbqm m0")
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
    _check_range(x, -(2 ** 47) + 1, 2 ** 47 - 1, "mbqm_i64 x")
    _check_range(m0, 0, I32_MAX, "mbqm_i64 m0")
    t = 15 + n
    _check_range(t, 1, 2 ** 62, "mbqm_i64 total shift 15 + n")
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


def _check_8bit(x, zp, what, dtypes=(np.uint8, np.int8)):
    """x as an array, after checking that its dtype is one of `dtypes` (u8/i8 by default) and its
    zero point inside the type's range."""
    x = np.asarray(x)
    if x.dtype not in dtypes:
        raise ValueError(f"{what} must be {' or '.join(np.dtype(d).name for d in dtypes)}, got {x.dtype}")
    info = np.iinfo(x.dtype)
    if not info.min <= int(zp) <= info.max:
        raise ValueError(f"{what} zero point {int(zp)} outside {x.dtype} range")
    return x


ACT_DTYPES = (np.uint8, np.int8, np.uint16, np.int16)  # activations of fixed_add, fixed_mul and the pools


def _headroom(zp, dtype):
    """max |x − zp| over x's whole type."""
    info = np.iinfo(dtype)
    return max(int(zp) - int(info.min), int(info.max) - int(zp))


def _add_operands(a, a_zp, b, b_zp, out_dtype):
    """(a, b, L) for fixed_add after its checks: 8/16-bit operands, zero points in range, and
    |x − x_zp|·2^L inside int32 for every value of either type (L = add_left_shift(out_dtype))."""
    a = _check_8bit(a, a_zp, "fixed_add a", ACT_DTYPES)
    b = _check_8bit(b, b_zp, "fixed_add b", ACT_DTYPES)
    shift = add_left_shift(out_dtype)
    if max(_headroom(a_zp, a.dtype), _headroom(b_zp, b.dtype)) << shift > I32_MAX:
        raise ValueError(f"fixed_add: {a.dtype} + {b.dtype} inputs shifted by {shift} overflow int32 "
                         f"(output {np.dtype(out_dtype).name})")
    return a, b, shift


def _mul_operands(a, a_zp, b, b_zp):
    """(a, b) for fixed_mul after its checks: 8/16-bit operands, zero points in range, and
    max|a − a_zp|·max|b − b_zp| over the types inside int32."""
    a = _check_8bit(a, a_zp, "fixed_mul a", ACT_DTYPES)
    b = _check_8bit(b, b_zp, "fixed_mul b", ACT_DTYPES)
    if _headroom(a_zp, a.dtype) * _headroom(b_zp, b.dtype) > I32_MAX:
        raise ValueError(f"fixed_mul: products of {a.dtype} (zp {int(a_zp)}) and {b.dtype} (zp {int(b_zp)}) "
                         f"can leave int32")
    return a, b


def fixed_add(a, a_zp, b, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding):
    """TFLite integer Add, 8- or 16-bit in (int16: TFLite's 16x8 Add, zero points allowed),
    numpy broadcasting. params = add_params(..., add_left_shift(out_dtype)).

    L = add_left_shift(out_dtype) (20; 15 for a 16-bit output), and |a − a_zp|·2^L must fit
    int32 for every value of a's type (else ValueError: a 16-bit input needs a 16-bit output):
    a' = MBQM((a − a_zp)·2^L, ma, na), b' likewise (|a'|, |b'| <= 2^30: the sum fits int32);
    y = clamp(MBQM(a' + b', my, ny) + y_zp, qmin, qmax).
    """
    (ma, na), (mb, nb), (my, ny) = params
    a, b, shift = _add_operands(a, a_zp, b, b_zp, out_dtype)
    a1 = mbqm((a.astype(np.int64) - int(a_zp)) << shift, ma, na, rounding)
    b1 = mbqm((b.astype(np.int64) - int(b_zp)) << shift, mb, nb, rounding)
    return _finish(mbqm(a1 + b1, my, ny, rounding), y_zp, qmin, qmax, out_dtype)


def fixed_mul(a, a_zp, b, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding):
    """TFLite integer Mul, 8- or 16-bit in, numpy broadcasting. params = mul_params(...) = (m, n).

    prod:i32 = (a − a_zp)·(b − b_zp): max|a − a_zp|·max|b − b_zp| over the types must be < 2^31
    (always for 8 bits; for 16 bits, TFLite's zero points 0 give <= 2^30), else ValueError;
    y = clamp(MBQM(prod, m, n) + y_zp, qmin, qmax).
    """
    m, n = params
    a, b = _mul_operands(a, a_zp, b, b_zp)
    prod = (a.astype(np.int64) - int(a_zp)) * (b.astype(np.int64) - int(b_zp))
    return _finish(mbqm(prod, m, n, rounding), y_zp, qmin, qmax, out_dtype)


def fixed_rescale(x, x_zp, m0, n, y_zp, qmin, qmax, out_dtype, rounding):
    """Change of quantization: y = clamp(MBQM(x − x_zp, m0, n) + y_zp, qmin, qmax).

    (m0, n) = QM(x_scale / y_scale); equal scales give (2^30, −1), which is exact, so equal
    scales and zero points copy. x: any int dtype with x − x_zp in int32.
    """
    d = np.asarray(x, np.int64) - int(x_zp)
    return _finish(mbqm(d, m0, n, rounding), y_zp, qmin, qmax, out_dtype)


def _pool_operand(x, x_zp, taps, what):
    """x after the pools' checks: 8- or 16-bit, zero point in range, and a sum of `taps` values
    x − x_zp inside int32 for any values of x's type (taps·max|x − x_zp| < 2^31)."""
    x = _check_8bit(x, x_zp, f"{what} x", ACT_DTYPES)
    if int(taps) * _headroom(x_zp, x.dtype) > I32_MAX:
        raise ValueError(f"{what}: a sum of {int(taps)} {x.dtype} values (zp {int(x_zp)}) can leave int32")
    return x


def fixed_global_avgpool(x_nchw, x_zp, m0, n, y_zp, qmin, qmax, out_dtype, rounding):
    """Global average pool (N, C, *spatial) -> (N, C, 1, ..), 8- or 16-bit x: acc:i32 = Σ (x − x_zp)
    over N_s = Πspatial elements, N_s·max|x − x_zp| < 2^31 (8 bits: N_s up to ~2^23; 16 bits:
    2^15); (m0, n) = global_avgpool_params(x_scale, y_scale, N_s);
    y = clamp(MBQM(acc, m0, n) + y_zp, qmin, qmax)."""
    hw = int(np.prod(np.shape(x_nchw)[2:]))
    x = _pool_operand(x_nchw, x_zp, hw, "fixed_global_avgpool").astype(np.int64)
    acc = (x - int(x_zp)).reshape(x.shape[:2] + (hw,)).sum(axis=2)
    _check_range(acc, I32_MIN, I32_MAX, "fixed_global_avgpool accumulator")
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
    x = _pool_operand(x_nchw, x_zp, np.prod(kernel), "fixed_avgpool").astype(np.int64) - int(x_zp)
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
    _check_range(acc, I32_MIN, I32_MAX, "fixed_avgpool accumulator")
    m = np.asarray(m0_by_count, np.int64)[count]
    s = np.asarray(n_by_count, np.int64)[count]
    return _finish(mbqm(acc, m, s, rounding), y_zp, qmin, qmax, out_dtype)


def fixed_softmax(x, axis, table, m0, n, y_zp, qmin, qmax, out_dtype, rounding):
    """Softmax of an 8-bit tensor along `axis`; (table, m0, n) = softmax_table(x_scale, y_scale).

    Per row: d = max(row) − x (0..255), S:i32 = Σ E[d] (row length <= 32767, so S < 2^31),
    P = floor((E[d]·2^15 + floor(S / 2)) / S) (int64; the probability in Q15, 0..2^15),
    y = clamp(MBQM(P, m0, n) + y_zp, qmin, qmax).
    """
    x = _check_8bit(x, 0, "fixed_softmax x").astype(np.int64)
    axis = axis % x.ndim
    if x.shape[axis] > 32767:
        raise ValueError(f"fixed_softmax: row length {x.shape[axis]} along axis {axis}, at most 32767")
    e = np.asarray(table, np.int64)[x.max(axis=axis, keepdims=True) - x]
    s = e.sum(axis=axis, keepdims=True)
    p = (e * 2 ** 15 + s // 2) // s
    return _finish(mbqm(p, m0, n, rounding), y_zp, qmin, qmax, out_dtype)
