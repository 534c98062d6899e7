"""Fast float requantization (Numba), bit-exact with onnxruntime's MlasRequantizeOutput (x86).

f:f32 = f32(acc_i32)·scale_f32; f = min(max(f, qmin − y_zp), qmax − y_zp);
y = rne(f) + y_zp (cvtps2dq, round half to even). See golden.requant for the ORT sources.
"""
import numpy as np

from npusim_kernels.fast._jit import njit


@njit
def _requant(acc_3d, scale_f32, y_zp, qmin, qmax, out):
    """out[a, c, i] = rne(clamp(f32(acc[a, c, i])·scale[c or 0], qmin − y_zp, qmax − y_zp)) + y_zp.

    acc (outer, C, inner) int32, scale (C,) or (1,); out has acc's shape and the output dtype
    and is written in the same single pass (no int32 temporary). The clamp bounds are integers,
    so rne(f) + y_zp lies in [qmin, qmax] and the cast to out's dtype is exact.
    """
    o, c, n = acc_3d.shape
    lo = np.float32(qmin - y_zp)
    hi = np.float32(qmax - y_zp)
    z = np.int32(y_zp)
    per_ch = scale_f32.shape[0] > 1
    for a in range(o):
        for ch in range(c):
            s = scale_f32[ch] if per_ch else scale_f32[0]
            src = acc_3d[a, ch]
            dst = out[a, ch]
            for i in range(n):
                f = np.float32(src[i]) * s
                f = min(max(f, lo), hi)
                dst[i] = np.int32(np.rint(f)) + z


def requantize_f32(acc_i32, scale_f32, axis, y_zp, qmin, qmax, out_dtype):
    """y:out_dtype = clamp(rne(clamp(f32(acc)·scale, qmin − y_zp, qmax − y_zp)) + y_zp), as MLAS does.

    acc_i32: int32 ndarray; scale_f32: float32 of size 1 or acc.shape[axis]; y_zp: int;
    qmin/qmax: output range; rounding: half to even; saturation: float clamp before rounding.
    One Numba pass writes the output dtype directly.
    """
    acc = np.ascontiguousarray(acc_i32, np.int32)
    s = np.ascontiguousarray(scale_f32, np.float32).reshape(-1)
    shape = acc.shape
    if s.size > 1 and acc.ndim:
        ax = axis % acc.ndim
        outer = 1
        for v in shape[:ax]:
            outer *= v
        acc3 = acc.reshape(outer, shape[ax], -1)
    else:
        acc3 = acc.reshape(1, 1, -1)
    y = np.empty(acc3.shape, out_dtype)
    _requant(acc3, s, int(y_zp), int(qmin), int(qmax), y)
    return y.reshape(shape)
