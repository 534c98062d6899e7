"""Fast float requantization (Numba), bit-exact with onnxruntime's MlasRequantizeOutput (x86),
and the float output of its integer GEMMs (scale_float).

f:f32 = f32(acc_i32)·scale_f32; f = min(max(f, qmin − y_zp), qmax − y_zp);
y = rne(f) + y_zp (cvtps2dq, round half to even). See golden.requant for the ORT sources.
"""
import numpy as np

from npusim_kernels.fast import rows
from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.bound import channel_rows


@njit
def _requant_rows(lo, hi, acc_2d, scale_f32, channels, y_zp, qmin, qmax, out):
    """out[r, i] = rne(clamp(f32(acc[r, i])·scale[r mod C or 0], qmin − y_zp, qmax − y_zp)) + y_zp
    for the rows lo <= r < hi (a row core, npusim_kernels.fast.rows).

    acc (outer·C, inner) int32, scale (C,) or (1,) (C = channels); out has acc's shape and the
    output dtype and is written in the same single pass (no int32 temporary). The clamp bounds
    are integers, so rne(f) + y_zp lies in [qmin, qmax] and the cast to out's dtype is exact.
    """
    n = acc_2d.shape[1]
    lo_f = np.float32(qmin - y_zp)
    hi_f = np.float32(qmax - y_zp)
    z = np.int32(y_zp)
    per_ch = scale_f32.shape[0] > 1
    for r in range(lo, hi):
        s = scale_f32[r % channels] if per_ch else scale_f32[0]
        src = acc_2d[r]
        dst = out[r]
        for i in range(n):
            f = np.float32(src[i]) * s
            f = min(max(f, lo_f), hi_f)
            dst[i] = np.int32(np.rint(f)) + z


_REQUANT = rows.over_rows(_requant_rows)


def requantize_f32(acc_i32, scale_f32, axis, y_zp, qmin, qmax, out_dtype):
    """y:out_dtype = clamp(rne(clamp(f32(acc)·scale, qmin − y_zp, qmax − y_zp)) + y_zp), as MLAS does.

    acc_i32: int32 ndarray; scale_f32: float32 of size 1 or acc.shape[axis]; y_zp: int;
    qmin/qmax: output range; rounding: half to even; saturation: float clamp before rounding.
    One Numba pass writes the output dtype directly.
    """
    acc = np.ascontiguousarray(acc_i32, np.int32)
    return requantize_f32_for(acc.shape, scale_f32, axis, y_zp, qmin, qmax, out_dtype)(acc)


def requantize_f32_for(acc_shape, scale_f32, axis, y_zp, qmin, qmax, out_dtype):
    """-> Bound y(acc_i32): requantize_f32 of int32 accumulators of this shape, with the (outer·C,
    inner) rows view, the scale vector and the integer parameters settled here, once (a session
    binds one per accumulator shape): each call allocates y and makes one Numba call, split over
    rows on threads for a large tensor (rows.row_bound)."""
    s = np.ascontiguousarray(scale_f32, np.float32).reshape(-1)
    shape = tuple(acc_shape)
    if s.size > 1 and shape:
        outer, c, inner = channel_rows(shape, axis)
        view = (outer * c, inner)
    else:
        c, view = 1, rows.flat_rows(shape)
    return rows.row_bound(_REQUANT, (s, c, int(y_zp), int(qmin), int(qmax)), ((0, view),), rows=view[0],
                          elements=view[0] * view[1], dtype=np.int32, out=out_dtype, shape=shape, view=view)


@njit
def _scale_float(acc_2d, m_f32, bias_f32, out):
    """out[r, n] = f32(f32(acc[r, n])·m[n or 0]) (+ bias[n] when bias has N entries), one pass."""
    rows, cols = acc_2d.shape
    per_col = m_f32.shape[0] > 1
    has_bias = bias_f32.shape[0] > 0
    for r in range(rows):
        for n in range(cols):
            f = np.float32(acc_2d[r, n]) * (m_f32[n] if per_col else m_f32[0])
            if has_bias:
                f = f + bias_f32[n]
            out[r, n] = f


def scale_float(acc_i32, a_scale, b_scale, alpha, bias):
    """y:f32[..., n] = f32(f32(acc[..., n]) · m[n]) [+ bias[n]], m[n] = f32(f32(alpha · a_scale) · b_scale[n]).

    onnxruntime's float GEMM output (MLAS scale-bias processor, multiply then add, no FMA);
    see golden.requant.scale_float for the sources. acc_i32: int32 (..., N); b_scale: size 1 or N;
    bias: float32 (N,) or None.
    """
    acc = np.ascontiguousarray(acc_i32, np.int32)
    m = (np.float32(alpha) * np.float32(np.asarray(a_scale, np.float32).reshape(-1)[0])
         * np.asarray(b_scale, np.float32).reshape(-1)).astype(np.float32)
    b = np.zeros(0, np.float32) if bias is None else np.ascontiguousarray(bias, np.float32).reshape(-1)
    n = acc.shape[-1] if acc.ndim else 1
    if m.size not in (1, n) or b.size not in (0, n):
        raise ValueError(f"scale_float: {m.size} scales and {b.size} biases for {n} columns")
    y = np.empty(acc.shape, np.float32)
    _scale_float(acc.reshape(-1, n), m, b, y.reshape(-1, n))
    return y
