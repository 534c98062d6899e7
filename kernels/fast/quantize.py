"""Fast QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear (Numba); same numbers as golden."""
import numpy as np

from npusim_kernels.fast._jit import njit

F32 = np.float32


def _expand(param, x_shape, axis, block_size, dtype):
    """scale / zero point broadcast to x's shape, flattened (per tensor, per axis, blocked)."""
    p = np.asarray(param).astype(dtype)
    if p.size == 1 and (block_size in (None, 0) or p.ndim == 0):
        return np.full(int(np.prod(x_shape)), p.reshape(()), dtype)
    axis = axis % len(x_shape)
    if block_size:
        p = np.repeat(p, block_size, axis=axis).take(range(x_shape[axis]), axis=axis)
    else:
        shape = [1] * len(x_shape)
        shape[axis] = p.size
        p = p.reshape(shape)
    return np.ascontiguousarray(np.broadcast_to(p, x_shape)).ravel()


@njit
def _quantize_core(x, s, z, qmin, qmax, out):
    for i in range(x.size):
        v = np.float32(x[i] / s[i])
        q = np.rint(np.float64(v)) if v == v else -np.inf  # NaN gives qmin, as in MLAS
        q = min(max(q, np.float64(qmin - z[i])), np.float64(qmax - z[i]))
        out[i] = np.int64(q) + z[i]


@njit
def _dequantize_core(x, s, z, out):
    for i in range(x.size):
        out[i] = np.float32(np.float32(np.int64(x[i]) - z[i]) * s[i])


def quantize_linear(x, y_scale, y_zp, axis, block_size, qmin, qmax, out_dtype):
    """y = clamp(round_half_even(f32(x / y_scale)), qmin − y_zp, qmax − y_zp) + y_zp (divides);
    float16 x and y_scale are taken in float32 (exact); NaN gives qmin."""
    x = np.asarray(x).astype(F32)
    s = _expand(y_scale, x.shape, axis or 0, block_size, F32)
    z = _expand(0 if y_zp is None else y_zp, x.shape, axis or 0, block_size, np.int64)
    out = np.empty(x.size, np.int64)
    _quantize_core(np.ascontiguousarray(x).ravel(), s, z, int(qmin), int(qmax), out)
    return out.reshape(x.shape).astype(out_dtype)


def dequantize_linear(x, x_scale, x_zp, axis, block_size, out_dtype=F32):
    """y = out_dtype(f32(x − x_zp) · f32(x_scale)); float16 out: one round to nearest even."""
    x = np.asarray(x)
    s = _expand(x_scale, x.shape, axis or 0, block_size, F32)
    z = _expand(0 if x_zp is None else x_zp, x.shape, axis or 0, block_size, np.int64)
    out = np.empty(x.size, F32)
    _dequantize_core(np.ascontiguousarray(x).ravel().astype(np.int64), s, z, out)
    return out.reshape(x.shape).astype(out_dtype, copy=False)


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
