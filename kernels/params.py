"""Offline parameter derivation of mode "npu": float64 scales -> integer multipliers and tables.

Run once per session at plan time, never per inference (the integer runtime is golden.fixedpoint
and fast.fixedpoint, which both re-export these under their own names). Kept apart from the
integer kernels as TFLite keeps QuantizeMultiplier apart from its reference kernels, so that the
fast kernels need not import the golden ones.

A pair (m0, n) stands for the real m0 · 2^−(31 + n): m0 the Q31 multiplier in [0, 2^31), n the
right shift (negative: a left shift).
"""
import math
from fractions import Fraction

import numpy as np

ROUNDINGS = ("double", "single")
ADD_LEFT_SHIFT = 20  # TFLite's left_shift for 8-bit Add: (a − a_zp)·2^20 keeps 11 bits of headroom
ADD_LEFT_SHIFT_16 = 15  # and for an int16 output: (a − a_zp)·2^15 < 2^31 for any 16-bit a


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


def quantize_multiplier_int(real):
    """(m0, n) of one real multiplier as Python ints: quantize_multiplier of a scalar."""
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
    return (quantize_multiplier_int(a_scale / t), quantize_multiplier_int(b_scale / t),
            quantize_multiplier_int(t / (2.0 ** int(left_shift) * y_scale)))


def mul_params(a_scale, b_scale, y_scale):
    """(m, n) for fixed_mul: QM(a_scale · b_scale / y_scale), float64 left to right."""
    return quantize_multiplier_int(float(a_scale) * float(b_scale) / float(y_scale))


def global_avgpool_params(x_scale, y_scale, hw):
    """(m, n) for fixed_global_avgpool over hw spatial elements, as TFLite's MEAN derives them
    (reference_ops::QuantizedMeanOrSum): (m0, n0) = QM(x_scale / y_scale) (float64 of the float32
    scales), k = floor(log2 hw) capped at 32 and at 31 + (−n0) (and at least 0), then
    m = floor(m0·2^k / hw) (truncated: m may be below 2^30) and n = n0 + k. For a power-of-two hw
    this is QM(x_scale / (y_scale·hw)); otherwise the truncation of m shows in the last bit."""
    m0, n0 = quantize_multiplier_int(float(x_scale) / float(y_scale))
    hw = int(hw)
    k = max(min(hw.bit_length() - 1, 32, 31 - n0), 0)
    return (m0 << k) // hw, n0 + k


def avgpool_params(x_scale, y_scale, kernel):
    """(m0_by_count, n_by_count): int32[prod(kernel) + 1], entry c = QM(x_scale / (y_scale · c)).

    Indexed by the divisor onnxruntime uses at an output position (1..prod(kernel)); entry 0
    is (0, 0) and never used.
    """
    k = int(np.prod(kernel))
    real = np.zeros(k + 1)
    real[1:] = float(x_scale) / (float(y_scale) * np.arange(1, k + 1, dtype=np.float64))
    return quantize_multiplier(real)


SOFTMAX_DIFF_INTEGER_BITS = 5  # TFLite's kScaledDiffIntegerBits: exp's input x_scale·(x − max) in Q5.26


def softmax_params(x_scale, y_scale, rounding, beta=1.0):
    """(m_in, left_shift, diff_min, m_out, n_out) for fixed_softmax (TFLite's reference int8 softmax,
    softmax.cc Prepare with PreprocessSoftmaxScaling and CalculateInputRadius; float64).

    real = min(beta·x_scale·2^26, cap), cap = 2^31 − 1 ("double") or 2^30 − 1 ("single", TFLite's
    TFLITE_SINGLE_ROUNDING cap); (m_in, −left_shift) = QM(real): x − max (integer) times real is
    the difference in Q5.26; real must be >= 1 (ValueError otherwise: x_scale below 2^−26).
    diff_min = −floor(31·2^26 / 2^left_shift): differences below it give probability 0.
    (m_out, n_out) = QM(2^−31 / y_scale): the Q0.31 probability in output units (y_scale = 1/256
    gives (2^30, 22), TFLite's fixed 8-bit output; any other y_scale is npusim's extension).
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be 'double' or 'single', got {rounding!r}")
    cap = 2.0 ** 31 - 1.0 if rounding == "double" else 2.0 ** 30 - 1.0
    real = min(float(beta) * float(x_scale) * 2.0 ** (31 - SOFTMAX_DIFF_INTEGER_BITS), cap)
    if not real >= 1.0:
        raise ValueError(f"softmax: x_scale {float(x_scale)} below 2^-26, its difference multiplier is < 1")
    m_in, n_in = quantize_multiplier_int(real)
    left_shift = -n_in
    diff_min = -(((1 << SOFTMAX_DIFF_INTEGER_BITS) - 1) << (31 - SOFTMAX_DIFF_INTEGER_BITS) >> left_shift)
    m_out, n_out = quantize_multiplier_int(2.0 ** -31 / float(y_scale))
    return m_in, left_shift, diff_min, m_out, n_out


def hard_swish_table(x_scale, x_zp, y_scale, y_zp, dtype):
    """The 256-entry table (indexed by the input byte) of TFLite's reference int8/uint8 HARD_SWISH
    (reference_ops::HardSwish, multipliers from activations.cc HardSwishPrepare), an offline table
    of an integer function of one code.

    Offline, in float32 as TFLite: hires = x_scale/128; (m_out, e_out) = QM(hires / y_scale) and
    (m_relu, e_relu) = QM(hires / (3/32768)) (e: the left-shift exponent, −n), each multiplier
    reduced to Q0.15: 32767 if m >= 2^31 − 1 − 2^15 else (m + 2^15) >> 16. e_out must be <= 0.
    Per code, in int16 (SRDHM16 = floor(a·b/2^15 + 1/2), INT16_MIN² -> INT16_MAX; RDBPOT as for int32):
    v = (x − x_zp)·2^7; pre = SRDHM16(v, m_out); r = v, if e_relu > 0: r = sat16(r·2^(e_relu − 1)),
    r = SRDHM16(r, m_relu), then sat16(r·2); if e_relu < 0: r = RDBPOT(r, −e_relu); r = (r + 2^15) >> 1
    (hard-sigmoid in Q0.15); p = trunc(r·pre / 2^15) (SQDMULH: toward zero); y = RDBPOT(p, −e_out) + y_zp
    wrapped to int16 as TFLite's int16 sum does (only an output scale below x_scale/64 gets there),
    then clamped to dtype's range.
    """
    info = np.iinfo(dtype)
    hires = np.float32(np.float32(1.0 / 128.0) * np.float32(x_scale))
    (m_out, n_out), (m_relu, n_relu) = (quantize_multiplier_int(float(np.float32(hires / np.float32(s))))
                                        for s in (y_scale, np.float32(3.0 / 32768.0)))
    if n_out < 0:
        raise ValueError(f"hard_swish: output multiplier x_scale/128/y_scale = {float(hires / np.float32(y_scale))} "
                         f"is >= 1 (y_scale below x_scale/128)")
    q15_out, q15_relu = (32767 if m >= 2 ** 31 - 1 - 2 ** 15 else (m + 2 ** 15) >> 16 for m in (m_out, m_relu))
    e_relu = -n_relu

    def sat16(v):
        return max(-2 ** 15, min(2 ** 15 - 1, v))

    def srdhm16(a, b):
        if a == b == -2 ** 15:
            return 2 ** 15 - 1
        p = a * b
        return math.floor(Fraction(p, 2 ** 15) + Fraction(1, 2))

    def rdbpot(v, e):
        return int(math.copysign(math.floor(abs(Fraction(v, 2 ** e)) + Fraction(1, 2)), v)) if e else v

    table = np.empty(256, dtype)
    for byte in range(256):
        code = int(np.array(byte, np.uint8).view(dtype))
        v = (code - int(x_zp)) * 2 ** 7
        pre = srdhm16(v, q15_out)
        r = v
        if e_relu > 0:
            r = sat16(srdhm16(sat16(r * 2 ** (e_relu - 1)), q15_relu) * 2)
        else:
            r = rdbpot(srdhm16(r, q15_relu), -e_relu)
        r = (r + 2 ** 15) >> 1
        p = int(Fraction(r * pre, 2 ** 15))  # truncation toward zero
        y = (rdbpot(p, n_out) + int(y_zp) + 2 ** 15) % 2 ** 16 - 2 ** 15
        table[byte] = min(max(y, info.min), info.max)
    return table
