"""Fast lookup-table ops (Numba); same names, signatures and numbers as golden.lut.
Table building is offline (scalar loops over 256 codes); applying the table is the kernel."""
import numpy as np

from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.eltwise import fma_f32
from npusim_kernels.fast.quantize import dequantize_linear, quantize_linear

F32 = np.float32
_ALPHA = np.array([4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
                   8.51377133304701e-03, 2.48287947061529e-01], F32)
_BETA = np.array([6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06,
                  1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01], F32)


@njit
def _logistic(x, alpha, beta, out):
    """MLAS logistic (FMA3 kernel): clamp to [-18, 18], p = x·P(x²), q = Q(x²), clamp(p/q + 0.5, 0, 1)."""
    for i in range(x.size):
        v = min(max(x[i], np.float32(-18.0)), np.float32(18.0))
        v2 = np.float32(v * v)
        p = fma_f32(v2, alpha[0], alpha[1])
        for j in range(2, alpha.size):
            p = fma_f32(p, v2, alpha[j])
        p = np.float32(p * v)
        q = fma_f32(v2, beta[0], beta[1])
        for j in range(2, beta.size):
            q = fma_f32(q, v2, beta[j])
        y = np.float32(np.float32(p / q) + np.float32(0.5))
        out[i] = min(max(y, np.float32(0.0)), np.float32(1.0))


def _codes(x_scale, x_zp, dtype):
    codes = np.arange(256, dtype=np.uint8).view(dtype).astype(np.int64)
    return (F32(x_scale) * (codes - int(x_zp)).astype(F32)).astype(F32)


def _table(f, y_scale, y_zp, dtype):
    info = np.iinfo(dtype)
    return quantize_linear(f, y_scale, y_zp, None, None, info.min, info.max, dtype)


def sigmoid_lut(x_scale, x_zp, y_scale, y_zp, dtype):
    """QLinearSigmoid table (256 x dtype)."""
    f = np.empty(256, F32)
    _logistic(_codes(x_scale, x_zp, dtype), _ALPHA, _BETA, f)
    return _table(f, y_scale, y_zp, dtype)


def leaky_relu_lut(alpha, x_scale, x_zp, y_scale, y_zp, dtype):
    """QLinearLeakyRelu table: v if v >= 0 else f32(alpha·v)."""
    v = _codes(x_scale, x_zp, dtype)
    return _table(np.where(v >= 0, v, (F32(alpha) * v).astype(F32)).astype(F32), y_scale, y_zp, dtype)


@njit
def _apply(xb, table, out):
    for i in range(xb.size):
        out[i] = table[xb[i]]


def apply_lut(x, table):
    """y[i] = table[byte(x[i])]."""
    x = np.ascontiguousarray(x)
    table = np.asarray(table)
    out = np.empty(x.size, table.dtype)
    _apply(x.view(np.uint8).ravel(), table, out)
    return out.reshape(x.shape)


def softmax_exp_table(x_scale, reduce_len, is_signed):
    """QLinearSoftmax float32 table, built in float64 (see golden.lut.softmax_exp_table)."""
    x_scale = F32(x_scale)
    shift = max(0.0, np.log(np.float64(np.finfo(F32).max) / np.float64(reduce_len)) - 5.0) / np.float64(x_scale)
    i = np.arange(256, dtype=np.float64)
    vals = np.exp((i - 255 + shift) * np.float64(x_scale)).astype(F32)
    table = np.zeros(256, F32)
    idx = ((np.arange(256) - 128) & 0xFF) if is_signed else np.arange(256)
    table[idx] = vals
    return table


@njit
def _softmax_rows(rows, table, is_signed, ys, y_zp, qmax, out):
    for r in range(rows.shape[0]):
        xmax = np.int64(rows[r, 0])
        for j in range(rows.shape[1]):
            xmax = max(xmax, np.int64(rows[r, j]))
        base = 127 - xmax if is_signed else 255 - xmax
        vsum = np.float32(0.0)
        for j in range(rows.shape[1]):
            vsum = np.float32(vsum + table[(base + np.int64(rows[r, j])) & 0xFF])
        for j in range(rows.shape[1]):
            e = table[(base + np.int64(rows[r, j])) & 0xFF]
            q = np.int64(np.rint(np.float64(e) * np.float64(ys) / np.float64(vsum))) + y_zp
            out[r, j] = min(q, qmax)


def qlinear_softmax(x, x_scale, x_zp, y_scale, y_zp, axis, opset, dtype):
    """QLinearSoftmax; formula as golden.lut.qlinear_softmax."""
    x = np.asarray(x)
    axis = axis % x.ndim
    if opset < 13:
        xt = x
        rows = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
    else:
        xt = np.moveaxis(x, axis, -1)
        rows = np.ascontiguousarray(xt).reshape(-1, x.shape[axis])
    is_signed = x.dtype == np.int8
    table = softmax_exp_table(x_scale, rows.shape[1], is_signed)
    out = np.empty(rows.shape, np.int64)
    _softmax_rows(rows, table, is_signed, F32(np.floor(F32(1.0) / F32(y_scale))), int(y_zp),
                  int(np.iinfo(dtype).max), out)
    y = out.astype(dtype)
    return y.reshape(x.shape) if opset < 13 else np.moveaxis(y.reshape(xt.shape), -1, axis)


def qlinear_concat(inputs, input_scales, input_zps, y_scale, y_zp, axis, dtype):
    """QLinearConcat: copy when (scale, zp) match the output's, else requantize each element as
    golden.lut.requant_lut builds the table entry of its code, y = quantize(f32(x_scale·f32(x −
    x_zp)), y_scale, y_zp) (dequantize, then quantize: SIMD lanes instead of a byte gather)."""
    parts = []
    info = np.iinfo(dtype)
    for x, s, z in zip(inputs, input_scales, input_zps):
        x = np.asarray(x, dtype)
        same = F32(s) == F32(y_scale) and int(z) == int(y_zp)
        parts.append(x if same else quantize_linear(dequantize_linear(x, s, z, None, None), y_scale, y_zp, None, None,
                                                    info.min, info.max, dtype))
    return np.concatenate(parts, axis=axis)
