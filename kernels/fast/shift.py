"""Fast integer shifts with every rounding mode, the bipolar sign and multi-thresholds (Numba);
same names, signatures and numbers as golden.shift.

Written apart from the golden kernel: golden rounds every mode from floor and the remainder;
here the sign-symmetric modes round the magnitude and put the sign back, CEIL is −floor(−v),
and HALF_EVEN adds 2^(k−1) − 1 plus the parity of floor(v / 2^k) before one floor shift;
golden counts the thresholds one comparison at a time, here a binary search finds the count.
"""
import numpy as np

from npusim_kernels.fast._jit import njit

MODES = ("FLOOR", "CEIL", "DOWN", "UP", "HALF_EVEN", "HALF_UP", "HALF_DOWN")


@njit(inline="always")
def _round_pot(v, k, mode):
    """R(v / 2^k), 1 <= k <= 62, mode an index into MODES; int64 in/out."""
    if mode == 0:
        return v >> k
    if mode == 1:
        return -((-v) >> k)
    if mode == 4:
        return (v + (np.int64(1) << (k - 1)) - 1 + ((v >> k) & 1)) >> k
    mag = -v if v < 0 else v
    if mode == 2:
        mag = mag >> k
    elif mode == 3:
        mag = (mag + (np.int64(1) << k) - 1) >> k
    elif mode == 5:
        mag = (mag + (np.int64(1) << (k - 1))) >> k
    else:
        mag = (mag + (np.int64(1) << (k - 1)) - 1) >> k
    return -mag if v < 0 else mag


@njit
def _round_shift_core(x3, x_zp, shift, mode, y_zp, qmin, qmax, out):
    """out[o, c, i] = clamp(R(((x − x_zp)·2^max(−s, 0) + y_zp·2^max(s, 0)) / 2^max(s, 0)), qmin, qmax),
    s = shift[c] (or shift[0]); x3 (outer, C, inner) integer, out int64."""
    no, nc, ni = x3.shape
    for c in range(nc):
        s = shift[c] if shift.size > 1 else shift[0]
        left = -s if s < 0 else np.int64(0)
        k = s if s > 0 else np.int64(0)
        for o in range(no):
            for i in range(ni):
                v = ((np.int64(x3[o, c, i]) - x_zp) << left) + (y_zp << k)
                r = _round_pot(v, k, mode) if k > 0 else v
                out[o, c, i] = min(max(r, qmin), qmax)


def round_shift(x, x_zp, shift, axis, rounding, y_zp, qmin, qmax, out_dtype):
    """y = clamp(R((x − x_zp) · 2^−shift + y_zp), qmin, qmax); see golden.shift.round_shift
    (x any integer width, computed in int64; shift size 1 or x.shape[axis], each in −31..62)."""
    if rounding not in MODES:
        raise ValueError(f"round_shift: rounding must be one of {', '.join(MODES)}, got {rounding!r}")
    x = np.asarray(x)
    s = np.ascontiguousarray(shift, np.int64).reshape(-1)
    if s.size > 1:
        ax = axis % x.ndim
        x3 = np.ascontiguousarray(x).reshape(int(np.prod(x.shape[:ax], dtype=np.int64)), x.shape[ax], -1)
    else:
        x3 = np.ascontiguousarray(x).reshape(1, 1, -1)
    out = np.empty(x3.shape, np.int64)
    _round_shift_core(x3, np.int64(x_zp), s, MODES.index(rounding), np.int64(y_zp), np.int64(qmin),
                      np.int64(qmax), out)
    return out.reshape(x.shape).astype(out_dtype)


@njit
def _sign_core(x, x_zp, out):
    for i in range(x.size):
        out[i] = 1 if x[i] >= x_zp else -1


def sign(x, x_zp):
    """y:int8 = +1 if x ≥ x_zp else −1 (bipolar; NaN -> −1, −0.0 -> +1); see golden.shift.sign."""
    x = np.asarray(x)
    flt = x.dtype.kind == "f" or float(x_zp) != int(x_zp)
    xf = np.ascontiguousarray(x, np.float64 if flt else np.int64).reshape(-1)
    out = np.empty(x.size, np.int8)
    _sign_core(xf, np.float64(x_zp) if flt else np.int64(x_zp), out)
    return out.reshape(x.shape)


@njit
def _multithreshold_core(x3, thresholds, levels, base, step, out):
    """out[o, c, i] = base[c] + step[c]·(number of thresholds[c, :levels[c]] ≤ x3[o, c, i]), by
    binary search in the ascending row (NaN x: 0)."""
    no, nc, ni = x3.shape
    for c in range(nc):
        r = c if thresholds.shape[0] > 1 else 0
        n = levels[r]
        for o in range(no):
            for i in range(ni):
                v = x3[o, c, i]
                lo, hi = 0, n  # count = first index whose threshold exceeds v
                if v != v:
                    hi = 0
                while lo < hi:
                    mid = (lo + hi) // 2
                    if thresholds[r, mid] <= v:
                        lo = mid + 1
                    else:
                        hi = mid
                out[o, c, i] = base[r] + step[r] * lo


def multithreshold(x, thresholds, base, step, axis):
    """y:int64 = base[c] + step[c]·#{k : x ≥ thresholds[c, k]}; see golden.shift.multithreshold
    (rows ascending, padded with 2^31 for integer x or NaN for float x)."""
    x = np.asarray(x)
    t = np.ascontiguousarray(thresholds)
    flt = x.dtype.kind == "f"
    levels = (np.sum(~np.isnan(t), axis=1) if flt else np.full(t.shape[0], t.shape[1])).astype(np.int64)
    if t.shape[0] > 1:
        ax = axis % x.ndim
        x3 = np.ascontiguousarray(x).reshape(int(np.prod(x.shape[:ax], dtype=np.int64)), x.shape[ax], -1)
    else:
        x3 = np.ascontiguousarray(x).reshape(1, 1, -1)
    x3 = x3.astype(np.float64 if flt else np.int64)
    out = np.empty(x3.shape, np.int64)
    base, step = (np.ascontiguousarray(v, np.int64).reshape(-1) for v in (base, step))
    _multithreshold_core(x3, t.astype(np.float64 if flt else np.int64), levels, base, step, out)
    return out.reshape(x.shape)
