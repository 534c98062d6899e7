"""Golden int64-accumulator convolution and matmul: TFLite's 16x8 kernels (16-bit activations,
8-bit weights; reference_integer_ops conv.h / fully_connected.h, int16 variants).

acc:i64 = Σ (x − x_zp)·(w − w_zp) + bias, exact. TFLite's 16x8 has x_zp = w_zp = 0 and an int64
bias; the zero points are kept here so that uint16 activations (onnxruntime's QUInt16, zero
point near 2^15) take the same kernel. |x − x_zp| <= 65535 and |w − w_zp| <= 255 make each
product < 2^24, so a window of up to 2^23 taps cannot overflow int64; the result must stay
inside ±2^47, the input range of the int64 MultiplyByQuantizedMultiplier that follows
(fixedpoint.mbqm_i64), else ValueError naming the first offending index. No rounding, no
saturation.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from npusim_kernels.checks import check_acc_i64


def conv_acc_i64(x_nchw, x_zp, w_oihw, w_zp, bias_i64, strides, pads, dilations, group):
    """acc:i64 (N, M, OH, OW) = Σ_{c,kh,kw} (x − x_zp)·(w[m] − w_zp[m]) + bias[m].

    x_nchw: integer (N, C, H, W), 8 or 16 bits; x_zp: int; w_oihw: integer (M, C/group, kH, kW);
    w_zp: int or int array (M,); bias_i64: integer (M,) or None; strides (sH, sW); pads (top,
    left, bottom, right) -- padded positions contribute 0; dilations (dH, dW); group: int.
    """
    n, c, h, w = x_nchw.shape
    m, cg, kh, kw = w_oihw.shape
    if c != cg * group or m % group:
        raise ValueError(f"conv_acc_i64: {c} input channels, weights {w_oihw.shape}, group {group}")
    xc = np.pad(np.asarray(x_nchw, np.int64) - int(x_zp), [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    wz = np.broadcast_to(np.asarray(w_zp, np.int64).reshape(-1), (m,))
    wc = np.asarray(w_oihw, np.int64) - wz[:, None, None, None]
    span = ((kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1)
    win = sliding_window_view(xc, span, axis=(2, 3))[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]
    mg = m // group
    acc = np.concatenate([np.einsum("nchwij,mcij->nmhw", win[:, g * cg:(g + 1) * cg], wc[g * mg:(g + 1) * mg])
                          for g in range(group)], axis=1)
    if bias_i64 is not None:
        acc = acc + np.asarray(bias_i64, np.int64).reshape(1, m, 1, 1)
    check_acc_i64(acc, "conv_acc_i64 Σ(x−x_zp)(w−w_zp)+bias")
    return acc


def matmul_acc_i64(a, a_zp, b, b_zp, bias_i64):
    """acc:i64 (..., M, N) = Σ_k (a − a_zp)·(b[k, j] − b_zp[j]) + bias[j] (TFLite 16x8 FullyConnected).

    a: integer (..., M, K), 8 or 16 bits; a_zp: int; b: integer (K, N) (a constant weight);
    b_zp: int or int array (N,); bias_i64: integer (N,) or None.
    """
    acc = np.matmul(np.asarray(a, np.int64) - int(a_zp),
                    np.asarray(b, np.int64) - np.asarray(b_zp, np.int64).reshape(-1))
    if bias_i64 is not None:
        acc = acc + np.asarray(bias_i64, np.int64).reshape(-1)
    check_acc_i64(np.atleast_1d(acc), "matmul_acc_i64 Σ(a−a_zp)(b−b_zp)+bias")
    return acc
