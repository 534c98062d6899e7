"""Integer shifts with every rounding mode, the bipolar sign and multi-thresholds: the QONNX
Trunc/Quant forms (npusim.frontend.qonnx) that are exact powers of two or monotone steps. Plain int64
NumPy; exact, no float arithmetic (thresholds compare only)."""
import numpy as np


def round_shift(x, x_zp, shift, axis, rounding, y_zp, qmin, qmax, out_dtype):
    """y = clamp(R((x − x_zp) · 2^−shift + y_zp), qmin, qmax), exact integer arithmetic.

    x: integer array (any width; computed in int64); shift: int array of size 1 or
    x.shape[axis], each in −31..62 (negative: a left shift, exact); rounding: one of
    ROUNDINGS' values: FLOOR (arithmetic right shift), CEIL, DOWN (toward zero), UP (away
    from zero), HALF_EVEN, HALF_UP (ties away from zero), HALF_DOWN (ties toward zero).
    The zero point is added before rounding, as qonnx rounds x/s + z (the sign-symmetric
    modes UP, DOWN, HALF_UP, HALF_DOWN are not invariant under integer shifts).
    With v = (x − x_zp)·2^max(−shift, 0) + y_zp·2^k, k = max(shift, 0), f = floor(v / 2^k)
    and rem = v − f·2^k (0 ≤ rem < 2^k), every mode is f or f + 1.
    Saturation: clamp to [qmin, qmax] (clamping before or after rounding is the same, the
    bounds being integers), then the storage dtype.
    """
    v = np.asarray(x).astype(np.int64) - int(x_zp)
    s = np.asarray(shift, np.int64).reshape(-1)
    if s.size > 1:
        shape = [1] * v.ndim
        shape[axis] = s.size
        s = s.reshape(shape)
    else:
        s = s.reshape(())
    k = np.maximum(s, 0)
    v = np.left_shift(v, np.maximum(-s, 0)) + np.left_shift(np.int64(y_zp), k)
    f = np.right_shift(v, k)
    rem = v - np.left_shift(f, k)
    twice, one = np.left_shift(rem, 1), np.left_shift(np.int64(1), k)
    up = {"FLOOR": np.zeros_like(rem, bool),
          "CEIL": rem > 0,
          "DOWN": (rem > 0) & (v < 0),
          "UP": (rem > 0) & (v > 0),
          "HALF_EVEN": (twice > one) | ((twice == one) & (f % 2 == 1)),
          "HALF_UP": (twice > one) | ((twice == one) & (v > 0)),
          "HALF_DOWN": (twice > one) | ((twice == one) & (v < 0))}[rounding]
    return np.clip(f + up, qmin, qmax).astype(out_dtype)


def sign(x, x_zp):
    """y:int8 = +1 if x ≥ x_zp else −1 (bipolar; NaN -> −1, −0.0 -> +1, as qonnx's np.where)."""
    return np.where(np.asarray(x) >= x_zp, np.int8(1), np.int8(-1))


def multithreshold(x, thresholds, base, step, axis):
    """y:int64 = base[c] + step[c] · #{k : x ≥ thresholds[c, k]}, c the index along `axis`
    (or 0 when thresholds has one row): FINN's MultiThreshold, out_bias base and out_scale step.

    x: integer or float array; thresholds: (C, K), ascending per row, of x's kind (int64 for
    integer x, float32 for float x); rows with fewer levels are padded with values no x reaches
    (2^31 for int32 x, NaN for float x: x ≥ NaN is false). base, step: int64 (C,). NaN x counts
    no threshold. Exact: comparisons only, no arithmetic on x.
    """
    x = np.asarray(x)
    t = np.asarray(thresholds)
    c = t.shape[0]
    shape = [1] * x.ndim
    if c > 1:
        shape[axis] = c
    count = np.zeros(np.broadcast_shapes(x.shape, tuple(shape)), np.int64)
    for k in range(t.shape[1]):
        count += x >= t[:, k].reshape(shape)
    return np.asarray(base, np.int64).reshape(shape) + np.asarray(step, np.int64).reshape(shape) * count
