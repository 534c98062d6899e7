"""Fast QLinearAdd / QLinearMul (Numba); same names, signatures and numbers as golden.eltwise."""
import numpy as np

from npusim_kernels.fast._jit import njit

F32 = np.float32


@njit
def fma_f32(x, y, z):
    """round_f32(x*y + z) with one rounding: exact product in float64, TwoSum error e, and a
    float32-midpoint fix when e != 0 (see golden.eltwise.fma_f32 for the argument)."""
    p = np.float64(x) * np.float64(y)
    z64 = np.float64(z)
    s = p + z64
    bb = s - p
    e = (p - (s - bb)) + (z64 - bb)
    if e != 0.0:
        bits = np.array([s]).view(np.uint64)[0]
        if (bits & np.uint64((1 << 29) - 1)) == np.uint64(1 << 28):
            s = np.nextafter(s, np.inf if e > 0 else -np.inf)
    return np.float32(s)


@njit
def _cvt_sat(v, qmin, qmax):
    """cvtps2dq (half-even; out of range -> INT32_MIN), then int16 and [qmin, qmax] saturation."""
    if abs(np.float64(v)) < 2.0**31:
        q = np.int64(np.rint(v))
    else:
        q = np.int64(-(2**31))
    q = min(max(q, -32768), 32767)
    return min(max(q, qmin), qmax)


@njit
def _add_core(a, b, r_a, r_b, k, mode, qmin, qmax, out):
    for i in range(a.size):
        fa = np.float32(a[i])
        fb = np.float32(b[i])
        if mode == 1:
            v = fma_f32(fb, r_b, fma_f32(fa, r_a, k))
        else:
            v = fma_f32(fa, r_a, fma_f32(fb, r_b, k))
        out[i] = _cvt_sat(v, qmin, qmax)


@njit
def _mul_core(a, b, a_zp, b_zp, r, y_zp_f, qmin, qmax, out):
    for i in range(a.size):
        prod = (np.int32(a[i]) - a_zp) * (np.int32(b[i]) - b_zp)
        v = np.float32(np.float32(np.float32(prod) * r) + y_zp_f)
        out[i] = _cvt_sat(v, qmin, qmax)


def _mode(a_shape, b_shape):
    n = max(len(a_shape), len(b_shape))
    a = (1,) * (n - len(a_shape)) + tuple(a_shape)
    b = (1,) * (n - len(b_shape)) + tuple(b_shape)
    for da, db in zip(reversed(a), reversed(b)):
        if max(da, db) > 1:
            return 1 if da == 1 else (2 if db == 1 else 0)
    return 1


def qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """QLinearAdd; formula, dtypes and rounding as golden.eltwise.qlinear_add."""
    r_a = F32(F32(a_scale) / F32(y_scale))
    r_b = F32(F32(b_scale) / F32(y_scale))
    k = F32(F32(y_zp) - F32(F32(r_a * F32(a_zp)) + F32(r_b * F32(b_zp))))
    ba, bb = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    out = np.empty(ba.shape, np.int64)
    _add_core(np.ascontiguousarray(ba).ravel(), np.ascontiguousarray(bb).ravel(), r_a, r_b, k,
              _mode(np.shape(a), np.shape(b)), int(qmin), int(qmax), out.reshape(-1))
    return out.astype(out_dtype)


def qlinear_mul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """QLinearMul; formula, dtypes and rounding as golden.eltwise.qlinear_mul."""
    r = F32(F32(F32(a_scale) * F32(b_scale)) / F32(y_scale))
    ba, bb = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    out = np.empty(ba.shape, np.int64)
    _mul_core(np.ascontiguousarray(ba).ravel(), np.ascontiguousarray(bb).ravel(), np.int32(a_zp), np.int32(b_zp),
              r, F32(y_zp), int(qmin), int(qmax), out.reshape(-1))
    return out.astype(out_dtype)
