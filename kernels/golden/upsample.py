"""Golden upsampling kernels: transposed convolution (accumulator), nearest and bilinear resize.

conv_transpose_acc, NCHW input, ONNX ConvTranspose weights (C, M/group, kH, kW):
    acc:i32[n, g·Mg + m, oh, ow] = Σ_{c, kh, kw} (x[n, g·Cg + c, ih, iw] − x_zp)·(w[g·Cg + c, m, kh, kw] − w_zp[g·Mg + m])
                                   + bias[g·Mg + m]
    over every (ih, iw, kh, kw) with oh = ih·sH − top + kh·dH, ow = iw·sW − left + kw·dW inside the output.
    Each input pixel scatters its kernel into the output; overlapping taps (stride < span) add.
    Computed in int64; a result outside int32 is a ValueError naming the first index. No rounding.

resize_nearest: y[i0, i1, i2, i3] = x[idx0[i0], idx1[i1], idx2[i2], idx3[i3]], pure selection.

resize_bilinear: TFLite's integer RESIZE_BILINEAR (reference_ops ResizeBilinearInteger) on the raw
codes, NCHW. Per output axis, with I input and O output cells and the Q10 scale
    s10 = floor((2^10·I + floor(O/2)) / O), align_corners (O > 1): floor((2^10·(I−1) + floor((O−1)/2)) / (O−1)),
    v = o·s10 (asymmetric, align_corners) or o·s10 + floor(s10/2) − 2^9 (half_pixel; pytorch_half_pixel
    alike except v = 0 when O = 1),
    lo = max(trunc(v / 2^10), 0), hi = min(trunc((v + 2^10 − 1) / 2^10), I − 1) (trunc toward zero, as C++),
    f = v − 2^10·lo (the Q10 weight of the upper tap, may be negative at the border: then lo = hi).
    y20:i64 = Σ x[taps]·w_y·w_x with w = (2^10 − f) for lo and f for hi: Q20, the weights sum to 2^20.
    y = round(y20 / 2^20): "double" half away from zero ((y20 ± 2^19) / 2^20 truncated, TFLite's
    default), "single" half toward +inf ((y20 + 2^19) >> 20, TFLITE_SINGLE_ROUNDING). The result lies
    between the smallest and the largest tap, so it fits x's type: no saturation.
"""
import numpy as np

from npusim_kernels.golden.conv import check_i32

COORDS = ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners")


def conv_transpose_acc(x_nchw, x_zp, w_iohw, w_zp, bias_i32, strides, pads_tl, dilations, out_hw, group):
    """acc:i32 (N, M, OH, OW) of a transposed convolution; see the module docstring.

    x_nchw: integer (N, C, H, W); x_zp: int; w_iohw: integer (C, M/group, kH, kW); w_zp: int32 (M,);
    bias_i32: int32 (M,); strides (sH, sW); pads_tl (top, left): the output rows / columns cut
    at the beginning; dilations (dH, dW); out_hw (OH, OW); group: int. Exact, overflow → ValueError.
    """
    n, c, h, w = x_nchw.shape
    cw, mg, kh, kw = w_iohw.shape
    assert c == cw and c % group == 0, "channel / group mismatch"
    m, cg = mg * group, c // group
    oh, ow = out_hw
    xd = x_nchw.astype(np.int64) - int(x_zp)
    wd = w_iohw.astype(np.int64) - np.asarray(w_zp, np.int64).reshape(group, 1, mg, 1, 1).repeat(cg, 1).reshape(
        c, mg, 1, 1)
    # every tap lands on a grid ih·s + kh·d; a buffer large enough for all, cropped at (top, left)
    full_h = max((h - 1) * strides[0] + (kh - 1) * dilations[0] + 1, pads_tl[0] + oh)
    full_w = max((w - 1) * strides[1] + (kw - 1) * dilations[1] + 1, pads_tl[1] + ow)
    buf = np.zeros((n, m, full_h, full_w), np.int64)
    for g in range(group):
        xg = xd[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dilations[0], j * dilations[1]
                tap = np.einsum("nchw,cm->nmhw", xg, wd[g * cg:(g + 1) * cg, :, i, j])
                buf[:, g * mg:(g + 1) * mg, r0:r0 + strides[0] * (h - 1) + 1:strides[0],
                    c0:c0 + strides[1] * (w - 1) + 1:strides[1]] += tap
    acc = buf[:, :, pads_tl[0]:pads_tl[0] + oh, pads_tl[1]:pads_tl[1] + ow]
    check_i32(acc, "conv_transpose_acc Σ(x−x_zp)(w−w_zp)")
    acc = acc + np.asarray(bias_i32, np.int64).reshape(1, m, 1, 1)
    check_i32(acc, "conv_transpose_acc Σ(x−x_zp)(w−w_zp)+bias")
    return acc.astype(np.int32)


def resize_nearest(x, idx0, idx1, idx2, idx3):
    """y = x[idx0][:, idx1][:, :, idx2][..., idx3] of a 4-D x; idx*: int64 source indices per output index."""
    y = np.asarray(x)
    for axis, idx in enumerate((idx0, idx1, idx2, idx3)):
        y = np.take(y, np.asarray(idx, np.int64), axis=axis)
    return y


def resize_nearest_for(x_shape, x_dtype, idx0, idx1, idx2, idx3):
    """-> y(x) = resize_nearest(x, idx0, idx1, idx2, idx3) (golden: nothing is settled ahead)."""
    return lambda x: resize_nearest(x, idx0, idx1, idx2, idx3)


def _taps(size_in, size_out, coord):
    """(lo, hi, f) per output index of one axis: TFLite's Q10 source coordinate (module docstring)."""
    if coord not in COORDS:
        raise ValueError(f"resize_bilinear: coord must be one of {COORDS}, got {coord!r}")
    if coord == "align_corners" and size_out > 1:
        s10 = ((1 << 10) * (size_in - 1) + (size_out - 1) // 2) // (size_out - 1)
    else:
        s10 = ((1 << 10) * size_in + size_out // 2) // size_out
    lo, hi, f = [], [], []
    for o in range(size_out):
        if coord in ("half_pixel", "pytorch_half_pixel") and not (coord == "pytorch_half_pixel" and size_out == 1):
            v = o * s10 + s10 // 2 - (1 << 9)
        else:
            v = 0 if coord == "pytorch_half_pixel" else o * s10
        a = max(int(v / 1024), 0)  # C++ division truncates toward zero
        lo.append(a)
        hi.append(min(int((v + 1023) / 1024), size_in - 1))
        f.append(v - 1024 * a)
    return np.array(lo), np.array(hi), np.array(f, np.int64)


def resize_bilinear(x_nchw, out_hw, coord, rounding):
    """TFLite's integer bilinear resize of H and W (module docstring); x: u8/i8/u16/i16 (N, C, H, W),
    out_hw (OH, OW), coord one of COORDS, rounding "double" or "single". Output: x's dtype."""
    x = np.asarray(x_nchw)
    if rounding not in ("double", "single"):
        raise ValueError(f"rounding must be 'double' or 'single', got {rounding!r}")
    ylo, yhi, fy = _taps(x.shape[2], out_hw[0], coord)
    xlo, xhi, fx = _taps(x.shape[3], out_hw[1], coord)
    v = x.astype(np.int64)
    wy0, wy1 = (1024 - fy)[:, None], fy[:, None]
    wx0, wx1 = (1024 - fx)[None, :], fx[None, :]
    y20 = (v[:, :, ylo][:, :, :, xlo] * wy0 * wx0 + v[:, :, yhi][:, :, :, xlo] * wy1 * wx0
           + v[:, :, ylo][:, :, :, xhi] * wy0 * wx1 + v[:, :, yhi][:, :, :, xhi] * wy1 * wx1)
    if rounding == "single":
        y = (y20 + (1 << 19)) >> 20
    else:
        mag = (np.abs(y20) + (1 << 19)) >> 20
        y = np.where(y20 < 0, -mag, mag)
    return y.astype(x.dtype)
