"""Golden pooling: com.microsoft QLinearGlobalAveragePool / QLinearAveragePool, ONNX MaxPool on ints,
and ONNX GlobalAveragePool on float32 in onnxruntime's summation orders.

Bit-exact with ORT CPU (MLAS qlgavgpool.cpp; contrib_ops/cpu/quantization/qlinear_pool.cc).
"""
import math

import numpy as np

F32 = np.float32


def qlinear_global_avgpool(x_nchw, x_scale, x_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """QLinearGlobalAveragePool (channels_last=0): x (N,C,*spatial) u8/i8 -> y (N,C,1,..,1).

    acc:i32 = Σ x − x_zp·HW;  s = f32(x_scale / f32(y_scale · f32(HW)))
    v = clamp(f32(f32(acc)·s), qmin − y_zp, qmax − y_zp);  y = round_half_even(v) + y_zp
    (channels_last=1 gives the same numbers on the NHWC layout.)
    """
    x = np.asarray(x_nchw, np.int64)
    n, c = x.shape[:2]
    hw = int(np.prod(x.shape[2:]))
    s = F32(F32(x_scale) / F32(F32(y_scale) * F32(hw)))
    if hw >= 0x1000000 or s < F32(2.0**-32) or s >= F32(256.0):
        raise ValueError("QLinearGlobalAveragePool parameter out of computation range")
    acc = x.reshape(n, c, hw).sum(axis=2) - int(x_zp) * hw
    assert np.all(np.abs(acc) < 2**31), "int32 accumulator overflow"
    v = (acc.astype(F32) * s).astype(F32)
    v = np.clip(v, F32(qmin - int(y_zp)), F32(qmax - int(y_zp)))
    y = np.rint(v).astype(np.int64) + int(y_zp)
    return y.astype(out_dtype).reshape((n, c) + (1,) * (x.ndim - 2))


GAP_ORDERS = ("sequential", "lanes4")  # onnxruntime's float GlobalAveragePool kernels, see global_avgpool_f32


def global_avgpool_f32(x_nchw, order):
    """ONNX GlobalAveragePool on float32 as onnxruntime's CPU kernels compute it (MLAS, any x86-64):
    x (N,C,*spatial) f32 -> y (N,C,1,..,1) f32. Per (n, c), over its S = Π spatial values x_0..x_{S-1}
    (row-major), every addition rounded to float32 (nearest even), every sum starting from +0:
    - order "sequential": s = (((0 + x_0) + x_1) + ...) + x_{S-1}: the NCHWc kernel (NchwcPool),
      which onnxruntime's NCHWc transformer substitutes at graph optimization level >= ORT_ENABLE_LAYOUT
      when C is a multiple of MLAS's NCHWc block (8 channels on AVX2, 16 on AVX-512F);
    - order "lanes4": four lanes l_k = Σ x_i over i ≡ k (mod 4), i < 4·floor(S/4), each sequential;
      s = (l_0 + l_2) + (l_1 + l_3), then x_i for i >= 4·floor(S/4) added in order: MLAS's
      MlasPoolGlobalKernel (one SSE register of 4 lanes on every x86 ISA), every other case.
    y = f32(s / f32(S)): a division, not a product with 1/S. A sum that overflows is ±inf, as in
    onnxruntime (no check: float semantics).
    """
    if order not in GAP_ORDERS:
        raise ValueError(f"order {order!r}: expected one of {', '.join(GAP_ORDERS)}")
    x = np.asarray(x_nchw, F32)
    n, c = x.shape[:2]
    rows = x.reshape(n, c, -1)
    size = rows.shape[2]
    lanes = 1 if order == "sequential" else 4
    body = size - size % lanes
    acc = np.zeros((n, c, lanes), F32)
    for i in range(0, body, lanes):
        acc = (acc + rows[:, :, i:i + lanes]).astype(F32)
    s = acc[:, :, 0] if lanes == 1 else \
        ((acc[:, :, 0] + acc[:, :, 2]).astype(F32) + (acc[:, :, 1] + acc[:, :, 3]).astype(F32)).astype(F32)
    for i in range(body, size):
        s = (s + rows[:, :, i]).astype(F32)
    return (s / F32(size)).astype(F32).reshape((n, c) + (1,) * (x.ndim - 2))


def global_avgpool_f32_for(x_shape, order):
    """-> y(x_nchw) = global_avgpool_f32(x_nchw, order) (golden: nothing is settled ahead)."""
    return lambda x_nchw: global_avgpool_f32(x_nchw, order)


def pool_output_size(in_size, kernel, stride, pad_begin, pad_end, dilation, ceil_mode):
    """ORT PoolAttributes::ComputeOutputSize (float division, floor or ceil) and the
    ceil-mode rule that the last window must start inside the input or the begin padding."""
    span = in_size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= in_size + pad_begin:
        out -= 1
    return out


def _windows(spatial, kernel, strides, pads, dilations, ceil_mode):
    nd = len(spatial)
    outs = [pool_output_size(spatial[i], kernel[i], strides[i], pads[i], pads[i + nd],
                             dilations[i], ceil_mode) for i in range(nd)]
    return outs


def qlinear_avgpool(x_nchw, x_scale, x_zp, y_scale, y_zp, qmin, qmax, out_dtype,
                    kernel, strides, pads, count_include_pad, ceil_mode):
    """QLinearAveragePool (channels_last=0), 1-3 spatial dims, u8/i8, no dilation.

    xf = f32(x_scale · f32(x − x_zp));  sum = Σ xf over the window clipped to the input
    (float32, row-major order);  avg = f32(sum / count), count = Πkernel if
    count_include_pad else clipped window size;  v = f32(f32(avg / y_scale) + f32(y_zp))
    y = clamp(round_half_even(v), qmin, qmax). pads = [begin..., end...].
    """
    x = np.asarray(x_nchw)
    nd = x.ndim - 2
    xf = (F32(x_scale) * (x.astype(np.int64) - int(x_zp)).astype(F32)).astype(F32)
    outs = _windows(x.shape[2:], kernel, strides, pads, [1] * nd, ceil_mode)
    y = np.empty(x.shape[:2] + tuple(outs), np.int64)
    for o in np.ndindex(*outs):
        lo = [max(o[i] * strides[i] - pads[i], 0) for i in range(nd)]
        hi = [min(o[i] * strides[i] - pads[i] + kernel[i], x.shape[2 + i]) for i in range(nd)]
        win = xf[(slice(None), slice(None)) + tuple(slice(l, h) for l, h in zip(lo, hi))]
        count = int(np.prod(kernel)) if count_include_pad else int(np.prod([h - l for l, h in zip(lo, hi)]))
        acc = np.zeros(x.shape[:2], F32)
        for idx in np.ndindex(*win.shape[2:]):  # sequential float32 sum, row-major
            acc = (acc + win[(slice(None), slice(None)) + idx]).astype(F32)
        avg = (acc / F32(count)).astype(F32)
        v = ((avg / F32(y_scale)).astype(F32) + F32(y_zp)).astype(F32)
        y[(slice(None), slice(None)) + o] = np.rint(v).astype(np.int64)
    return np.clip(y, qmin, qmax).astype(out_dtype)


def maxpool(x_nchw, kernel, strides, pads, dilations, ceil_mode):
    """ONNX MaxPool on an integer tensor (N,C,*spatial); padded cells never win.
    Output dtype = input dtype; exact (no arithmetic besides max). pads = [begin..., end...]."""
    x = np.asarray(x_nchw)
    nd = x.ndim - 2
    outs = _windows(x.shape[2:], kernel, strides, pads, dilations, ceil_mode)
    y = np.empty(x.shape[:2] + tuple(outs), x.dtype)
    for o in np.ndindex(*outs):
        best = np.full(x.shape[:2], np.iinfo(x.dtype).min, np.int64)
        for k in np.ndindex(*kernel):
            pos = [o[i] * strides[i] - pads[i] + k[i] * dilations[i] for i in range(nd)]
            if all(0 <= p < x.shape[2 + i] for i, p in enumerate(pos)):
                best = np.maximum(best, x[(slice(None), slice(None)) + tuple(pos)])
        y[(slice(None), slice(None)) + o] = best
    return y


def qlinear_global_avgpool_for(x_shape, x_scale, x_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """-> y(x_nchw) = qlinear_global_avgpool(x_nchw, x_scale, ..., out_dtype) (golden: nothing is settled ahead)."""
    return lambda x_nchw: qlinear_global_avgpool(x_nchw, x_scale, x_zp, y_scale, y_zp, qmin, qmax, out_dtype)


def maxpool_for(x_shape, x_dtype, kernel, strides, pads, dilations, ceil_mode):
    """-> y(x_nchw) = maxpool(x_nchw, kernel, strides, pads, dilations, ceil_mode) (golden: nothing is settled ahead)."""
    return lambda x_nchw: maxpool(x_nchw, kernel, strides, pads, dilations, ceil_mode)
