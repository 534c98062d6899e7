"""Golden lookup-table ops: com.microsoft QLinearSigmoid, QLinearLeakyRelu, QLinearSoftmax.

Tables are built offline in float32 exactly as ORT builds them
(contrib_ops/cpu/quantization/qlinear_lookup_table.cc, qlinear_activations.cc,
qlinear_softmax.cc); applying a table is the kernel.
"""
import numpy as np

from npusim_kernels.golden.eltwise import fma_f32
from npusim_kernels.golden.quantize import quantize_linear

F32 = np.float32

# MLAS logistic rational approximation (logistic.cpp, Eigen's coefficients).
_LOGISTIC_ALPHA = [F32(v) for v in (4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
                                    8.51377133304701e-03, 2.48287947061529e-01)]
_LOGISTIC_BETA = [F32(v) for v in (6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06,
                                   1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01)]


def mlas_logistic(x):
    """MlasLogisticKernelFma3: x clamped to [-18, 18]; p = x·P(x²), q = Q(x²) by Horner with
    fused multiply-adds; y = clamp(f32(p / q) + 0.5, 0, 1), all float32."""
    x = np.clip(np.asarray(x, F32), F32(-18.0), F32(18.0))
    x2 = (x * x).astype(F32)
    p = fma_f32(x2, _LOGISTIC_ALPHA[0], _LOGISTIC_ALPHA[1])
    for a in _LOGISTIC_ALPHA[2:]:
        p = fma_f32(p, x2, a)
    p = (p * x).astype(F32)
    q = fma_f32(x2, _LOGISTIC_BETA[0], _LOGISTIC_BETA[1])
    for b in _LOGISTIC_BETA[2:]:
        q = fma_f32(q, x2, b)
    y = ((p / q).astype(F32) + F32(0.5)).astype(F32)
    return np.clip(y, F32(0.0), F32(1.0))


def _dequantized_codes(x_scale, x_zp, dtype):
    """Index i (0..255) holds f32(x_scale · (T(i) − x_zp)), T(i) = i reinterpreted as dtype."""
    codes = np.arange(256, dtype=np.uint8).view(dtype).astype(np.int64)
    return (F32(x_scale) * (codes - int(x_zp)).astype(F32)).astype(F32)


def _build_table(fx, y_scale, y_zp, dtype):
    info = np.iinfo(dtype)
    return quantize_linear(fx, y_scale, y_zp, None, None, info.min, info.max, dtype)


def sigmoid_lut(x_scale, x_zp, y_scale, y_zp, dtype):
    """QLinearSigmoid table (256 entries of dtype, indexed by the input byte)."""
    return _build_table(mlas_logistic(_dequantized_codes(x_scale, x_zp, dtype)), y_scale, y_zp, dtype)


def leaky_relu_lut(alpha, x_scale, x_zp, y_scale, y_zp, dtype):
    """QLinearLeakyRelu table: f(v) = v if v >= 0 else f32(alpha · v)."""
    v = _dequantized_codes(x_scale, x_zp, dtype)
    f = np.where(v >= 0, v, (F32(alpha) * v).astype(F32)).astype(F32)
    return _build_table(f, y_scale, y_zp, dtype)


def requant_lut(x_scale, x_zp, y_scale, y_zp, dtype):
    """Identity table (QLinearConcat requantization): quantize(dequantize(code))."""
    return _build_table(_dequantized_codes(x_scale, x_zp, dtype), y_scale, y_zp, dtype)


def apply_lut(x, table):
    """y[i] = table[byte(x[i])]; x u8/i8 (an i8 value indexes by its two's-complement byte)."""
    x = np.asarray(x)
    return np.asarray(table)[x.view(np.uint8).astype(np.intp)]


def apply_lut_for(x_shape, x_dtype, table):
    """-> y(x) = apply_lut(x, table) (golden: nothing is settled ahead)."""
    return lambda x: apply_lut(x, table)


def softmax_exp_table(x_scale, reduce_len, is_signed):
    """QLinearSoftmax table (float32[256]), built in float64 then cast:
    shift = max(0, ln(FLT_MAX / reduce_len) − 5) / x_scale
    t[i] = f32(exp((i − 255 + shift) · x_scale)), stored at byte (i − 128) if signed else i."""
    x_scale = F32(x_scale)
    shift = np.log(np.float64(np.finfo(F32).max) / np.float64(reduce_len))
    shift = max(0.0, shift - 5.0) / np.float64(x_scale)
    table = np.zeros(256, F32)
    for i in range(256):
        v = np.exp((np.float64(i) - 255 + shift) * np.float64(x_scale))
        table[(i - 128) & 0xFF if is_signed else i] = F32(v)
    return table


def qlinear_softmax(x, x_scale, x_zp, y_scale, y_zp, axis, opset, dtype):
    """QLinearSoftmax (com.microsoft), u8/i8. x_zp is unused by ORT (softmax is shift invariant).

    opset < 13: rows are the flattened dims [axis:]; opset >= 13: rows along `axis` only.
    Per row: shift the table so max(x) lands on its top entry; vsum:f32 = Σ e (sequential);
    ys = floor(1 / y_scale);  vq = round_half_even(e·ys / vsum, in float64) + y_zp
    y = min(vq, qmax) (u8: 255, i8: 127; vq >= y_zp always). Measured on onnxruntime 1.32:
    the quotient is not rounded to float32 (f32(e·ys) overflows when a row is short, ys > 148·D,
    and rounding it to float32 moves ~1 in 3,000 results), and y_zp is added after the rounding
    (a tie q + 0.5 goes to the even q, whatever y_zp's parity).
    """
    x = np.asarray(x)
    is_signed = x.dtype == np.int8
    axis = axis % x.ndim
    if opset < 13:
        rows = x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
        xt = rows
    else:
        xt = np.moveaxis(x, axis, -1)
        rows = xt.reshape(-1, x.shape[axis])
    d = rows.shape[1]
    table = softmax_exp_table(x_scale, d, is_signed)
    ys = F32(np.floor(F32(1.0) / F32(y_scale)))
    out = np.empty(rows.shape, np.int64)
    for r in range(rows.shape[0]):
        row = rows[r].astype(np.int64)
        xmax = int(row.max())
        if is_signed:
            e = table[(127 - xmax + row) & 0xFF]
        else:
            e = table[255 - xmax + row]
        vsum = F32(0)
        for v in e:
            vsum = F32(vsum + v)
        q = np.rint(e.astype(np.float64) * np.float64(ys) / np.float64(vsum)).astype(np.int64) + int(y_zp)
        out[r] = np.minimum(q, np.iinfo(dtype).max)
    y = out.astype(dtype)
    if opset < 13:
        return y.reshape(x.shape)
    return np.moveaxis(y.reshape(xt.shape), -1, axis)


def qlinear_concat(inputs, input_scales, input_zps, y_scale, y_zp, axis, dtype):
    """QLinearConcat: an input whose (scale, zp) equal (y_scale, y_zp) is copied, any other is
    requantized through `requant_lut` (float32 dequantize, then MlasQuantizeLinear)."""
    parts = []
    for x, s, z in zip(inputs, input_scales, input_zps):
        if F32(s) == F32(y_scale) and int(z) == int(y_zp):
            parts.append(np.asarray(x, dtype))
        else:
            parts.append(apply_lut(np.asarray(x, dtype), requant_lut(s, z, y_scale, y_zp, dtype)))
    return np.concatenate(parts, axis=axis)


def qlinear_concat_for(input_scales, input_zps, y_scale, y_zp, axis, dtype):
    """-> y(*inputs) = qlinear_concat(list(inputs), ...) (the fast kernel settles its tables here)."""
    return lambda *inputs: qlinear_concat(list(inputs), input_scales, input_zps, y_scale, y_zp, axis, dtype)
