"""Golden float requantization, bit-exact with onnxruntime's MlasRequantizeOutput (x86 SSE path).

ORT (onnxruntime/core/mlas/lib/quantize.cpp, MlasRequantizeOutput / MlasQuantizeLinearVector):
    f:f32 = f32(acc_i32) · scale_f32            (one f32 multiply, IEEE round-to-nearest-even)
    f = min(max(f, f32(qmin − y_zp)), f32(qmax − y_zp))
    y = cvtps2dq(f) + y_zp                        (round half to even, default MXCSR)
The clamp comes before the rounding; since the bounds are integers the result equals
clamp(rne(f) + y_zp, qmin, qmax) and never overflows. Bias, if any, is added to acc in
int32 before the conversion (conv_acc does that).

Output multipliers, computed in float32 left to right:
  QLinearConv, QLinearMatMul:  scale = (x_scale · w_scale[i]) / y_scale
      (qlinearconv.cc: output_scales[i] = X_scale_value * W_scale_data[i] / Y_scale_value;
       qlinearmatmul.cc via matmul_integer_base.h / same formula)
  QGemm (com.microsoft):       scale = (alpha · a_scale) · b_scale[i], then / y_scale if y_scale given
      (contrib_ops/cpu/quantization/quant_gemm.cc, ComputeOutputScale)
Float outputs of the integer GEMMs (QGemm without y_scale, MatMulIntegerToFloat,
DynamicQuantizeMatMul): scale_float.
"""
import numpy as np


def ort_output_scale(x_scale, w_scale, y_scale):
    """scale:f32[i] = (f32(x_scale) · f32(w_scale[i])) / f32(y_scale), each step rounded to f32 (RNE).

    As QLinearConv / QLinearMatMul compute it; returns float32 of w_scale's size (at least 1).
    """
    xs = np.float32(np.asarray(x_scale, np.float32).reshape(-1)[0])
    ws = np.asarray(w_scale, np.float32).reshape(-1)
    ys = np.float32(np.asarray(y_scale, np.float32).reshape(-1)[0])
    return ((xs * ws).astype(np.float32) / ys).astype(np.float32)


def qgemm_scale(alpha, a_scale, b_scale, y_scale=None):
    """scale:f32[i] = ((f32(alpha) · a_scale) · b_scale[i]) [/ y_scale], each step f32 (RNE).

    com.microsoft QGemm: y = requantize_f32(C_i32 + acc_i32, scale, ...) when y_scale is given,
    else the float output of scale_float.
    """
    al = np.float32(alpha)
    as_ = np.float32(np.asarray(a_scale, np.float32).reshape(-1)[0])
    s = ((al * as_) * np.asarray(b_scale, np.float32).reshape(-1)).astype(np.float32)
    if y_scale is not None:
        s = (s / np.float32(np.asarray(y_scale, np.float32).reshape(-1)[0])).astype(np.float32)
    return s


def scale_float(acc_i32, a_scale, b_scale, alpha, bias):
    """y:f32[..., n] = f32(f32(acc[..., n]) · m[n]) [+ bias[n]], m[n] = f32(f32(alpha · a_scale) · b_scale[n]).

    The float output of onnxruntime's integer GEMMs, MLAS_QGEMM_SCALE_BIAS_OUTPUT_PROCESSOR in
    ZeroMode (core/mlas/lib/qpostprocessor.cpp: cvtdq2ps, mulps, then addps of the bias; no FMA):
      QGemm without y_scale:       m = (alpha · a_scale) · b_scale[n]   (quant_gemm.cc, ComputeOutputScale;
                                   acc already holds C, added in int32 with wrap-around)
      MatMulIntegerToFloat,
      DynamicQuantizeMatMul:       m = a_scale · b_scale[n], alpha = 1  (dynamic_quantize_matmul.cc,
                                   ComputeCommon; f32(1 · a_scale) = a_scale exactly), float bias
    acc_i32: int32 (..., N); a_scale: float32 scalar (a run-time value for DynamicQuantizeMatMul);
    b_scale: float32 of size 1 or N (per column = last axis); alpha: float; bias: float32 (N,) or
    None. Every product and sum is one float32 operation rounded to nearest even; no clamp.
    """
    acc = np.asarray(acc_i32)
    assert acc.dtype == np.int32, "acc must be int32"
    m = qgemm_scale(alpha, a_scale, b_scale)
    y = (acc.astype(np.float32) * (m if m.size > 1 else m[0])).astype(np.float32)
    if bias is not None:
        y = (y + np.asarray(bias, np.float32).reshape(-1)).astype(np.float32)
    return y


def requantize_f32(acc_i32, scale_f32, axis, y_zp, qmin, qmax, out_dtype):
    """y:out_dtype = clamp(rne(clamp(f32(acc)·scale, qmin − y_zp, qmax − y_zp)) + y_zp), as MLAS does.

    acc_i32: int32 ndarray; scale_f32: float32 of size 1 (per tensor) or acc.shape[axis]
    (per channel along `axis`); y_zp: int; qmin/qmax: int output range; rounding: half to
    even (cvtps2dq under the default MXCSR); saturation: the float clamp before rounding.
    """
    acc = np.asarray(acc_i32)
    assert acc.dtype == np.int32, "acc must be int32"
    s = np.asarray(scale_f32, np.float32).reshape(-1)
    if s.size == 1:
        s = s[0]
    else:
        shape = [1] * acc.ndim
        shape[axis] = s.size
        s = s.reshape(shape)
    f = (acc.astype(np.float32) * s).astype(np.float32)
    f = np.minimum(np.maximum(f, np.float32(qmin - y_zp)), np.float32(qmax - y_zp))
    return (np.rint(f).astype(np.int64) + int(y_zp)).astype(out_dtype)


def requantize_f32_for(acc_shape, scale_f32, axis, y_zp, qmin, qmax, out_dtype):
    """-> y(acc_i32) = requantize_f32(acc_i32, scale_f32, axis, y_zp, qmin, qmax, out_dtype) (golden:
    nothing is settled ahead; the fast twin settles the layout for accumulators of acc_shape)."""
    return lambda acc_i32: requantize_f32(acc_i32, scale_f32, axis, y_zp, qmin, qmax, out_dtype)
