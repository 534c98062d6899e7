"""Golden QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear (ONNX opsets 13..21+),
bit-exact with ORT CPU (core/providers/cpu/quantization/quantize_linear.cc, MLAS quantize.cpp).

int4/uint4 values live unpacked in int8/uint8 arrays; the caller passes qmin/qmax.
"""
import numpy as np

F32 = np.float32


def _expand(param, x_shape, axis, block_size):
    """Broadcast a scale / zero point to x's shape: scalar (per tensor), 1-D along `axis`
    (per axis), or same rank with x.shape[axis] / block_size along `axis` (blocked)."""
    p = np.asarray(param)
    if p.size == 1 and (block_size in (None, 0) or p.ndim == 0):
        return p.reshape(())
    axis = axis % len(x_shape)
    if block_size:
        return np.repeat(p, block_size, axis=axis).take(range(x_shape[axis]), axis=axis)
    shape = [1] * len(x_shape)
    shape[axis] = p.size
    return p.reshape(shape)


def quantize_linear(x, y_scale, y_zp, axis, block_size, qmin, qmax, out_dtype):
    """y = clamp(round_half_even(f32(x / y_scale)), qmin − y_zp, qmax − y_zp) + y_zp.

    x float32 or float16, y_scale likewise (scalar, per-axis 1-D, or blocked); float16 values
    convert to float32 exactly, and onnxruntime quantizes float16 in float32 too
    (ParQuantizeLinearStd / BlockedQuantizeLinear<MLFloat16>). y_zp integer or None (0).
    ORT DIVIDES by the scale (MlasQuantizeLinear: _mm*_div_ps), it does not multiply by a
    reciprocal. Rounding: half to even. Saturation to [qmin, qmax]; NaN gives qmin (MLAS clamps
    with max(v, qmin − zp) first, and maxps returns its second operand when the first is NaN).
    """
    x = np.asarray(x).astype(F32)
    s = _expand(np.asarray(y_scale).astype(F32), x.shape, axis or 0, block_size)
    z = 0 if y_zp is None else _expand(np.asarray(y_zp).astype(np.int64), x.shape, axis or 0, block_size)
    v = (x / s).astype(F32)
    q = np.rint(np.where(np.isnan(v), -np.inf, v))
    q = np.clip(q, qmin - np.asarray(z, np.float64), qmax - np.asarray(z, np.float64)).astype(np.int64) + z
    return np.asarray(q).astype(out_dtype)


def dequantize_linear(x, x_scale, x_zp, axis, block_size, out_dtype=F32):
    """y = out_dtype(f32(x − x_zp) · f32(x_scale)) (one float32 multiply); per tensor / axis / block.

    out_dtype float32, or float16 when the scale is float16 (DequantizeLinear-19+): the float32
    product is then rounded once to float16, to nearest even, as onnxruntime's
    static_cast<MLFloat16>(float) does (a float16 scale converts to float32 exactly).
    """
    x = np.asarray(x).astype(np.int64)
    s = _expand(np.asarray(x_scale).astype(F32), x.shape, axis or 0, block_size)
    z = 0 if x_zp is None else _expand(np.asarray(x_zp).astype(np.int64), x.shape, axis or 0, block_size)
    return ((x - z).astype(F32) * s).astype(F32).astype(out_dtype)


def dynamic_quantize_linear(x):
    """DynamicQuantizeLinear, float32 -> (y:u8, y_scale:f32, y_zp:u8).

    lo = min(min(x), 0), hi = max(max(x), 0);  scale = f32((hi − lo) / 255)  (1.0 if hi == lo)
    zp = round_half_even(clamp(f32(0 − f32(lo / scale)), 0, 255));  y = quantize_linear(x, scale, zp)
    """
    x = np.asarray(x, F32)
    lo = min(F32(x.min()) if x.size else F32(0), F32(0))
    hi = max(F32(x.max()) if x.size else F32(0), F32(0))
    scale = F32(1.0) if hi == lo else F32(F32(hi - lo) / F32(255.0))
    zp_f = F32(F32(0.0) - F32(lo / scale))
    zp = np.uint8(np.rint(np.clip(zp_f, F32(0), F32(255))))
    return quantize_linear(x, scale, zp, None, None, 0, 255, np.uint8), scale, zp


def quantize_linear_for(x_shape, y_scale, y_zp, axis, block_size, qmin, qmax, out_dtype):
    """-> y(x) = quantize_linear(x, y_scale, ..., out_dtype) (golden: nothing is settled ahead)."""
    return lambda x: quantize_linear(x, y_scale, y_zp, axis, block_size, qmin, qmax, out_dtype)


def dequantize_linear_for(x_shape, x_dtype, x_scale, x_zp, axis, block_size, out_dtype=F32):
    """-> y(x) = dequantize_linear(x, x_scale, ..., out_dtype) (golden: nothing is settled ahead)."""
    return lambda x: dequantize_linear(x, x_scale, x_zp, axis, block_size, out_dtype)
