"""Fast float requantization (Numba), bit-exact with onnxruntime's MlasRequantizeOutput (x86).

f:f32 = f32(acc_i32)·scale_f32; f = min(max(f, qmin − y_zp), qmax − y_zp);
y = rne(f) + y_zp (cvtps2dq, round half to even). See golden.requant for the ORT sources.
"""
import numpy as np

from npusim_kernels.fast._jit import njit


@njit
def _requant(acc_3d, scale_f32, y_zp, qmin, qmax):
    """acc (outer, C, inner) with scale (C,) or (1,); returns int32 (outer, C, inner)."""
    o, c, n = acc_3d.shape
    out = np.empty((o, c, n), np.int32)
    lo = np.float32(qmin - y_zp)
    hi = np.float32(qmax - y_zp)
    per_ch = scale_f32.shape[0] > 1
    for a in range(o):
        for ch in range(c):
            s = scale_f32[ch] if per_ch else scale_f32[0]
            for i in range(n):
                f = np.float32(acc_3d[a, ch, i]) * s
                f = min(max(f, lo), hi)
                out[a, ch, i] = np.int32(np.rint(f)) + np.int32(y_zp)
    return out


def requantize_f32(acc_i32, scale_f32, axis, y_zp, qmin, qmax, out_dtype):
    """y:out_dtype = clamp(rne(clamp(f32(acc)·scale, qmin − y_zp, qmax − y_zp)) + y_zp), as MLAS does.

    acc_i32: int32 ndarray; scale_f32: float32 of size 1 or acc.shape[axis]; y_zp: int;
    qmin/qmax: output range; rounding: half to even; saturation: float clamp before rounding.
    """
    acc = np.asarray(acc_i32)
    s = np.ascontiguousarray(np.asarray(scale_f32, np.float32).reshape(-1))
    if acc.ndim == 0:
        acc3 = acc.reshape(1, 1, 1)
    elif s.size > 1:
        ax = axis % acc.ndim
        acc3 = acc.reshape(int(np.prod(acc.shape[:ax], dtype=np.int64)), acc.shape[ax], -1)
    else:
        acc3 = acc.reshape(1, 1, -1)
    y = _requant(np.ascontiguousarray(acc3), s, np.int64(y_zp), np.int64(qmin), np.int64(qmax))
    return y.reshape(acc.shape).astype(out_dtype)
