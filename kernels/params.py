"""Offline parameter derivation of mode "npu": float64 scales -> integer multipliers and tables.

Run once per session at plan time, never per inference (the integer runtime is golden.fixedpoint
and fast.fixedpoint, which both re-export these under their own names). Kept apart from the
integer kernels as TFLite keeps QuantizeMultiplier apart from its reference kernels, so that the
fast kernels need not import the golden ones.

A pair (m0, n) stands for the real m0 · 2^−(31 + n): m0 the Q31 multiplier in [0, 2^31), n the
right shift (negative: a left shift).
"""
import math

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
