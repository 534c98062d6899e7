"""Fast QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear (Numba); same numbers as golden."""
import math

import numpy as np
from numba.extending import overload

from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.bound import Bound
from npusim_kernels.fast.eltwise import rne_f32

F32 = np.float32


def _as(v, dtype):
    """v as an array of `dtype` (converted as astype does; no copy when it already is one)."""
    return v if type(v) is np.ndarray and v.dtype == dtype else np.asarray(v).astype(dtype)


def _rows(shape, param, zp, axis, block_size, zp_dtype):
    """(outer, C, inner) of an x of `shape` and the scale / zero point as (C,) or (1,) arrays (row
    (a, c) uses entry c, or 0): per tensor (1, 1, n), per axis (prod(shape[:axis]), shape[axis],
    rest); blocked parameters are expanded to x's shape, x seen as (1, n, 1)."""
    p = _as(param, F32)
    z = _as(0 if zp is None else zp, zp_dtype)
    size = math.prod(shape)
    if p.size == 1 and (block_size in (None, 0) or p.ndim == 0):
        return (1, 1, size), p.reshape(1), z.reshape(1)
    axis = axis % len(shape)
    if block_size:
        def full(v):
            v = np.repeat(v, block_size, axis=axis).take(range(shape[axis]), axis=axis)
            return np.ascontiguousarray(np.broadcast_to(v, shape)).reshape(-1)
        return (1, size, 1), full(p), full(z)
    return (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])), p.reshape(-1), z.reshape(-1)


@njit
def _quantize_core(x, s, z, qmin, qmax, out):
    """out[a, c, i] = clamp(rne(f32(x / s[c])), qmin − z[c], qmax − z[c]) + z[c], float32 lanes
    (the bounds and the sum are integers below 2^24 in magnitude, exact in float32); the clamp
    comes first (the same: rounding is monotone and the bounds are integers), and v > lo is
    false for NaN, so NaN gives qmin as maxps does in MLAS."""
    for a in range(x.shape[0]):
        for c in range(x.shape[1]):
            sc = s[c % s.size]
            zc = np.float32(z[c % z.size])
            lo = np.float32(qmin) - zc
            hi = np.float32(qmax) - zc
            src, dst = x[a, c], out[a, c]
            for i in range(src.size):
                v = np.float32(src[i] / sc)
                v = v if v > lo else lo
                v = v if v < hi else hi
                dst[i] = np.int32(rne_f32(v) + zc)


def _minus_zp(x, z):
    """f32(x − z) of an integer code and its zero point."""


@overload(_minus_zp, inline="always")
def _minus_zp_impl(x, z):
    if x.bitwidth <= 16:  # both exact in float32: one float32 subtraction, exact
        return lambda x, z: np.float32(np.float32(x) - np.float32(z))
    return lambda x, z: np.float32(np.int64(x) - np.int64(z))


@njit
def _dequantize_core(x, s, z, out):
    """out[a, c, i] = f32(f32(x − z[c]) · s[c]) (float32 lanes for codes of up to 16 bits)."""
    for a in range(x.shape[0]):
        for c in range(x.shape[1]):
            sc = s[c % s.size]
            zc = z[c % z.size]
            src, dst = x[a, c], out[a, c]
            for i in range(src.size):
                dst[i] = np.float32(_minus_zp(src[i], zc) * sc)


def quantize_linear(x, y_scale, y_zp, axis, block_size, qmin, qmax, out_dtype):
    """y = clamp(round_half_even(f32(x / y_scale)), qmin − y_zp, qmax − y_zp) + y_zp (divides);
    float16 x and y_scale are taken in float32 (exact); NaN gives qmin."""
    x = np.ascontiguousarray(np.asarray(x), F32)
    return quantize_linear_for(x.shape, y_scale, y_zp, axis, block_size, qmin, qmax, out_dtype)(x)


def quantize_linear_for(x_shape, y_scale, y_zp, axis, block_size, qmin, qmax, out_dtype):
    """-> y(x): quantize_linear of inputs of this shape, the (outer, C, inner) view and the
    parameter vectors settled once (a session binds one per input shape)."""
    shape = tuple(x_shape)
    rows, s, z = _rows(shape, y_scale, y_zp, axis or 0, block_size, np.int32)
    return Bound(_quantize_core, (s, z, int(qmin), int(qmax)), ((0, rows),), dtype=F32, out=out_dtype, shape=shape,
                 view=rows)


def dequantize_linear(x, x_scale, x_zp, axis, block_size, out_dtype=F32):
    """y = out_dtype(f32(x − x_zp) · f32(x_scale)); float16 out: one round to nearest even."""
    x = np.ascontiguousarray(x)
    return dequantize_linear_for(x.shape, x.dtype, x_scale, x_zp, axis, block_size, out_dtype)(x)


def dequantize_linear_for(x_shape, x_dtype, x_scale, x_zp, axis, block_size, out_dtype=F32):
    """-> y(x): dequantize_linear of inputs of this shape and dtype, the view and the parameter
    vectors settled once."""
    shape = tuple(x_shape)
    rows, s, z = _rows(shape, x_scale, x_zp, axis or 0, block_size, x_dtype)
    f32 = Bound(_dequantize_core, (s, z), ((0, rows),), out=F32, shape=shape, view=rows)
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
