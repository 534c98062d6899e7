"""Fast QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear (Numba); same numbers as golden."""
import math

import numpy as np
from numba.extending import overload

from npusim_kernels.fast import rows
from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.eltwise import rne_f32

F32 = np.float32


def _as(v, dtype):
    """v as an array of `dtype` (converted as astype does; no copy when it already is one)."""
    return v if type(v) is np.ndarray and v.dtype == dtype else np.asarray(v).astype(dtype)


def _param_view(shape, param, zp, axis, block_size, zp_dtype):
    """(rows, inner) of an x of `shape` and the scale / zero point as (S,) arrays, row r using entry
    r mod S: per tensor rows.flat_rows with S = 1, per axis (prod(shape[:axis])·C, rest) with S = C
    = shape[axis]; blocked parameters are expanded to x's shape, x seen as (n, 1)."""
    p = _as(param, F32)
    z = _as(0 if zp is None else zp, zp_dtype)
    size = math.prod(shape)
    if p.size == 1 and (block_size in (None, 0) or p.ndim == 0):
        return rows.flat_rows(shape), p.reshape(1), z.reshape(1)
    axis = axis % len(shape)
    if block_size:
        def full(v):
            v = np.repeat(v, block_size, axis=axis).take(range(shape[axis]), axis=axis)
            return np.ascontiguousarray(np.broadcast_to(v, shape)).reshape(-1)
        return (size, 1), full(p), full(z)
    return (math.prod(shape[:axis + 1]), math.prod(shape[axis + 1:])), p.reshape(-1), z.reshape(-1)


@njit
def _quantize_rows(lo, hi, x, s, z, qmin, qmax, out):
    """out[r, i] = clamp(rne(f32(x / s[k])), qmin − z[k], qmax − z[k]) + z[k], k = r mod S, for the
    rows lo <= r < hi (a row core, npusim_kernels.fast.rows), float32 lanes (the bounds and the sum
    are integers below 2^24 in magnitude, exact in float32); the clamp comes first (the same:
    rounding is monotone and the bounds are integers), and v > lo is false for NaN, so NaN gives
    qmin as maxps does in MLAS."""
    for r in range(lo, hi):
        sc = s[r % s.size]
        zc = np.float32(z[r % z.size])
        lo_f = np.float32(qmin) - zc
        hi_f = np.float32(qmax) - zc
        src, dst = x[r], out[r]
        for i in range(src.size):
            v = np.float32(src[i] / sc)
            v = v if v > lo_f else lo_f
            v = v if v < hi_f else hi_f
            dst[i] = np.int32(rne_f32(v) + zc)


def _minus_zp(x, z):
    """f32(x − z) of an integer code and its zero point."""


@overload(_minus_zp, inline="always")
def _minus_zp_impl(x, z):
    if x.bitwidth <= 16:  # both exact in float32: one float32 subtraction, exact
        return lambda x, z: np.float32(np.float32(x) - np.float32(z))
    return lambda x, z: np.float32(np.int64(x) - np.int64(z))


@njit
def _dequantize_rows(lo, hi, x, s, z, out):
    """out[r, i] = f32(f32(x − z[k]) · s[k]), k = r mod S, for the rows lo <= r < hi (a row core)
    (float32 lanes for codes of up to 16 bits)."""
    for r in range(lo, hi):
        sc = s[r % s.size]
        zc = z[r % z.size]
        src, dst = x[r], out[r]
        for i in range(src.size):
            dst[i] = np.float32(_minus_zp(src[i], zc) * sc)


_QUANTIZE = rows.over_rows(_quantize_rows)
_DEQUANTIZE = rows.over_rows(_dequantize_rows)


def quantize_linear(x, y_scale, y_zp, axis, block_size, qmin, qmax, out_dtype):
    """y = clamp(round_half_even(f32(x / y_scale)), qmin − y_zp, qmax − y_zp) + y_zp (divides);
    float16 x and y_scale are taken in float32 (exact); NaN gives qmin."""
    x = np.ascontiguousarray(np.asarray(x), F32)
    return quantize_linear_for(x.shape, y_scale, y_zp, axis, block_size, qmin, qmax, out_dtype)(x)


def quantize_linear_for(x_shape, y_scale, y_zp, axis, block_size, qmin, qmax, out_dtype):
    """-> y(x): quantize_linear of inputs of this shape, the rows view and the parameter vectors
    settled once (a session binds one per input shape); split over rows on threads for a large
    tensor (rows.row_bound)."""
    shape = tuple(x_shape)
    view, s, z = _param_view(shape, y_scale, y_zp, axis or 0, block_size, np.int32)
    return rows.row_bound(_QUANTIZE, (s, z, int(qmin), int(qmax)), ((0, view),), rows=view[0],
                          elements=math.prod(shape), dtype=F32, out=out_dtype, shape=shape, view=view)


def dequantize_linear(x, x_scale, x_zp, axis, block_size, out_dtype=F32):
    """y = out_dtype(f32(x − x_zp) · f32(x_scale)); float16 out: one round to nearest even."""
    x = np.ascontiguousarray(x)
    return dequantize_linear_for(x.shape, x.dtype, x_scale, x_zp, axis, block_size, out_dtype)(x)


def dequantize_linear_for(x_shape, x_dtype, x_scale, x_zp, axis, block_size, out_dtype=F32):
    """-> y(x): dequantize_linear of inputs of this shape and dtype, the view and the parameter
    vectors settled once."""
    shape = tuple(x_shape)
    view, s, z = _param_view(shape, x_scale, x_zp, axis or 0, block_size, x_dtype)
    f32 = rows.row_bound(_DEQUANTIZE, (s, z), ((0, view),), rows=view[0], elements=math.prod(shape), out=F32,
                         shape=shape, view=view)
    return f32 if np.dtype(out_dtype) == F32 else lambda x: f32(x).astype(out_dtype)


@njit
def _minmax(x):
    lo = np.float32(0.0)
    hi = np.float32(0.0)
    for i in range(x.size):
        lo = min(lo, x[i])
        hi = max(hi, x[i])
    return lo, hi


def dynamic_quantize_linear(x):
    """(y:u8, scale:f32, zp:u8); formula as golden.quantize.dynamic_quantize_linear."""
    x = np.asarray(x, F32)
    lo, hi = _minmax(np.ascontiguousarray(x).ravel())
    lo, hi = F32(lo), F32(hi)
    scale = F32(1.0) if hi == lo else F32(F32(hi - lo) / F32(255.0))
    zp = np.uint8(np.rint(np.clip(F32(F32(0.0) - F32(lo / scale)), F32(0), F32(255))))
    return quantize_linear(x, scale, zp, None, None, 0, 255, np.uint8), scale, zp
