"""Golden 2-D integer convolution (ConvInteger / QLinearConv accumulator), NCHW / OIHW.

acc:i32[n, m, oh, ow] = Σ_{c, kh, kw} (x[n, g·Cg + c, ih, iw] − x_zp) · (w[m, c, kh, kw] − w_zp[m]) + bias[m]
with ih = oh·sH − top + kh·dH, iw = ow·sW − left + kw·dW, g = m // (M / group).
Padded positions hold x_zp, so they contribute 0. Computed in int64; a result outside
int32 is a ValueError naming the first offending (n, m, oh, ow). No rounding, no saturation.
"""
import numpy as np

from npusim_kernels.golden.pairsat import conv_pair_excess, pack_conv_pair_weights

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1


def conv_out_hw(h, w, kh, kw, strides, pads, dilations):
    """(OH, OW) = floor((H + top + bottom − dH·(kH − 1) − 1) / sH) + 1, same for W."""
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    return oh, ow


def check_i32(acc, what):
    """Raise ValueError naming the first index where int64 `acc` leaves the int32 range."""
    bad = (acc < I32_MIN) | (acc > I32_MAX)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what}: int32 accumulator overflow at index {idx}: {int(acc[idx])}")


def conv_acc(x_nchw, x_zp, w_oihw, w_zp, bias_i32, strides, pads, dilations, group):
    """acc:i32 (N, M, OH, OW) = Σ (x − x_zp)·(w − w_zp[m]) + bias[m]; exact, overflow → ValueError.

    x_nchw: integer (N, C, H, W); x_zp: int; w_oihw: integer (M, C/group, kH, kW);
    w_zp: int32 (M,); bias_i32: int32 (M,); strides (sH, sW); pads (top, left, bottom, right);
    dilations (dH, dW); group: int.
    """
    n, c, h, w = x_nchw.shape
    m, cg, kh, kw = w_oihw.shape
    assert c == cg * group and m % group == 0, "channel / group mismatch"
    oh, ow = conv_out_hw(h, w, kh, kw, strides, pads, dilations)
    xd = np.full((n, c, h + pads[0] + pads[2], w + pads[1] + pads[3]), 0, np.int64)
    xd[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + w] = x_nchw.astype(np.int64) - int(x_zp)
    wd = w_oihw.astype(np.int64) - np.asarray(w_zp, np.int64).reshape(m, 1, 1, 1)
    mg = m // group
    acc = np.zeros((n, m, oh, ow), np.int64)
    for g in range(group):
        xg = xd[:, g * cg:(g + 1) * cg]
        wg = wd[g * mg:(g + 1) * mg]
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dilations[0], j * dilations[1]
                patch = xg[:, :, r0:r0 + strides[0] * (oh - 1) + 1:strides[0],
                           c0:c0 + strides[1] * (ow - 1) + 1:strides[1]]
                acc[:, g * mg:(g + 1) * mg] += np.einsum("nchw,mc->nmhw", patch, wg[:, :, i, j])
    check_i32(acc, "conv_acc Σ(x−x_zp)(w−w_zp)")
    acc += np.asarray(bias_i32, np.int64).reshape(1, m, 1, 1)
    check_i32(acc, "conv_acc Σ(x−x_zp)(w−w_zp)+bias")
    return acc.astype(np.int32)


def pack_conv_weights(w_oihw, w_zp, bias_i32):
    """Plan-time weight preparation for `conv_acc_packed` (golden: the arrays as given)."""
    return (np.asarray(w_oihw), np.asarray(w_zp, np.int32), np.asarray(bias_i32, np.int32))


def conv_acc_packed(x_nchw, x_zp, packed, strides, pads, dilations, group):
    """conv_acc with weights, weight zero points and bias from `pack_conv_weights`."""
    w_oihw, w_zp, bias_i32 = packed
    return conv_acc(x_nchw, x_zp, w_oihw, w_zp, bias_i32, strides, pads, dilations, group)


def conv_acc_packed_for(x_shape, x_dtype, x_zp, packed, strides, pads, dilations, group, saturate=False):
    """-> acc(x_nchw) = conv_acc_packed(x_nchw, x_zp, packed, strides, pads, dilations, group) (golden:
    nothing is settled ahead; the fast twin settles the geometry for inputs of x_shape, x_dtype).
    saturate: onnxruntime's u8·s8 sums without VNNI, the exact ones + pairsat.conv_pair_excess
    (u8 x, weights with zero points 0 so that w − w_zp is the raw s8 weight; else None, as the
    fast twin)."""
    if not saturate:
        return lambda x_nchw: conv_acc_packed(x_nchw, x_zp, packed, strides, pads, dilations, group)
    w_oihw, w_zp, _ = packed
    if np.dtype(x_dtype) != np.uint8 or np.any(w_zp) or np.asarray(w_oihw).dtype != np.int8:
        return None

    def saturated(x_nchw):
        e, _ = conv_pair_excess(x_nchw, x_zp, pack_conv_pair_weights(w_oihw), strides, pads, dilations, group)
        acc = conv_acc_packed(x_nchw, x_zp, packed, strides, pads, dilations, group).astype(np.int64) + e
        check_i32(acc, "conv_acc with onnxruntime's pair saturation")
        return acc.astype(np.int32)
    return saturated
