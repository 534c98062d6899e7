"""Fast 2-D integer convolution, same contract as golden.conv.conv_acc.

acc:i32[n, m, oh, ow] = Σ_{c, kh, kw} (x − x_zp)·(w − w_zp[m]) + bias[m]; padding contributes 0.
Int32 result that wraps modulo 2^32 on overflow (the golden kernel raises instead).

Dense / grouped path: im2col of d = x − x_zp (Numba), then per group a float32 BLAS sgemm
(numpy.matmul) over K-chunks of at most kc terms, kc·max|d|·max|w − w_zp| < 2^24: every
partial sum, in whatever order BLAS adds, is an integer below 2^24 and so exact in float32;
each chunk is converted to int32 and added to the int32 accumulator. If not even one term
fits (operands wider than 12 bits) an int32 multiply-add loop is used instead.
Depthwise path (group == C == M): direct int32 loop in NHWC, channels innermost (vectorized).
"""
import numpy as np

from npusim_kernels.fast._jit import njit

F32_EXACT = 1 << 24  # every integer of magnitude < 2^24 is exact in float32


def _out_hw(h, w, kh, kw, strides, pads, dilations):
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    return oh, ow


@njit
def _pad_sub_f32(x_chw, x_zp, top, left, bottom, right):
    """d:f32 (C, H+top+bottom, W+left+right) = x − x_zp inside, 0 in the padding (exact)."""
    c, h, w = x_chw.shape
    d = np.zeros((c, h + top + bottom, w + left + right), np.float32)
    for b in range(c):
        for i in range(h):
            for j in range(w):
                d[b, top + i, left + j] = np.float32(np.int32(x_chw[b, i, j]) - np.int32(x_zp))
    return d


@njit
def _im2col(d_chw, c0, cg, kh, kw, sh, sw, dh, dw, oh, ow):
    """col:f32 (cg·kh·kw, oh·ow), row k = (c, i, j) in OIHW weight order."""
    col = np.empty((cg * kh * kw, oh * ow), np.float32)
    r = 0
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                for y in range(oh):
                    src = d_chw[c0 + c, y * sh + i * dh]
                    base = y * ow
                    for x in range(ow):
                        col[r, base + x] = src[x * sw + j * dw]
                r += 1
    return col


@njit
def _gemm_i32(wd_i32, col_f32, out_i32):
    """out_i32 += wd·col in int32 (wraps), for operands too wide for the float32 path."""
    m, k = wd_i32.shape
    p = col_f32.shape[1]
    for a in range(m):
        for r in range(k):
            wv = wd_i32[a, r]
            for q in range(p):
                out_i32[a, q] += np.int32(wv * np.int32(col_f32[r, q]))


def _gemm_acc(wd_i32, col_f32, kc, out_i32):
    """out_i32 += wd·col: float32 sgemm over K-chunks of kc (exact, see module doc), else int32."""
    if kc <= 0:
        _gemm_i32(np.ascontiguousarray(wd_i32), col_f32, out_i32)
        return
    wd_f32 = wd_i32.astype(np.float32)
    for k0 in range(0, wd_i32.shape[1], kc):
        out_i32 += np.matmul(wd_f32[:, k0:k0 + kc], col_f32[k0:k0 + kc]).astype(np.int32)


@njit
def _pad_sub_nhwc(x_nhwc, x_zp, top, left, bottom, right):
    """d:i32 (N, H+top+bottom, W+left+right, C) = x − x_zp inside, 0 in the padding."""
    n, h, w, c = x_nhwc.shape
    d = np.zeros((n, h + top + bottom, w + left + right, c), np.int32)
    for a in range(n):
        for i in range(h):
            for j in range(w):
                for b in range(c):
                    d[a, top + i, left + j, b] = np.int32(x_nhwc[a, i, j, b]) - np.int32(x_zp)
    return d


@njit
def _conv_depthwise_nhwc(d_nhwc, wd_hwc, kh, kw, sh, sw, dh, dw, oh, ow):
    """acc:i32 (N, OH, OW, C) = Σ_{i,j} d[n, y·sh + i·dh, x·sw + j·dw, c]·wd[i, j, c].

    Channels innermost (contiguous), so the loop vectorizes for any stride; a private
    accumulator row avoids aliasing with the input.
    """
    n, c = d_nhwc.shape[0], d_nhwc.shape[3]
    out = np.empty((n, oh, ow, c), np.int32)
    acc = np.empty(c, np.int32)
    for a in range(n):
        for y in range(oh):
            for x in range(ow):
                acc[:] = 0
                for i in range(kh):
                    for j in range(kw):
                        src = d_nhwc[a, y * sh + i * dh, x * sw + j * dw]
                        wv = wd_hwc[i, j]
                        for ch in range(c):
                            acc[ch] += wv[ch] * src[ch]
                out[a, y, x] = acc
    return out


def conv_acc(x_nchw, x_zp, w_oihw, w_zp, bias_i32, strides, pads, dilations, group):
    """acc:i32 (N, M, OH, OW) = Σ (x − x_zp)·(w − w_zp[m]) + bias[m]; int32, wraps on overflow.

    x_nchw: integer (N, C, H, W); x_zp: int; w_oihw: integer (M, C/group, kH, kW);
    w_zp: int32 (M,); bias_i32: int32 (M,); strides (sH, sW); pads (top, left, bottom, right);
    dilations (dH, dW); group: int. No rounding, no saturation.
    """
    n, c, h, w = x_nchw.shape
    m, cg, kh, kw = w_oihw.shape
    assert c == cg * group and m % group == 0, "channel / group mismatch"
    oh, ow = _out_hw(h, w, kh, kw, strides, pads, dilations)
    top, left, bottom, right = (int(p) for p in pads)
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(s) for s in dilations)
    zp = np.int64(x_zp)
    wd = w_oihw.astype(np.int32) - np.asarray(w_zp, np.int32).reshape(m, 1, 1, 1)
    if group == c == m:
        x_nhwc = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
        d = _pad_sub_nhwc(x_nhwc, zp, top, left, bottom, right)
        wd_hwc = np.ascontiguousarray(wd.reshape(m, kh, kw).transpose(1, 2, 0))
        acc = _conv_depthwise_nhwc(d, wd_hwc, kh, kw, sh, sw, dh, dw, oh, ow).transpose(0, 3, 1, 2)
        acc = np.ascontiguousarray(acc)
    else:
        wd = wd.reshape(m, cg * kh * kw)
        x_abs = max(abs(int(x_nchw.min(initial=0)) - int(zp)), abs(int(x_nchw.max(initial=0)) - int(zp)), 1)
        kc = (F32_EXACT - 1) // (x_abs * max(1, int(np.abs(wd).max(initial=0))))
        mg = m // group
        acc = np.zeros((n, m, oh * ow), np.int32)
        pointwise = kh == kw == sh == sw == 1 and top == left == bottom == right == 0
        for a in range(n):
            d = _pad_sub_f32(x_nchw[a], zp, top, left, bottom, right)
            for g in range(group):
                if pointwise:  # the input itself is the column matrix
                    col = d[g * cg:(g + 1) * cg].reshape(cg, oh * ow)
                else:
                    col = _im2col(d, g * cg, cg, kh, kw, sh, sw, dh, dw, oh, ow)
                _gemm_acc(wd[g * mg:(g + 1) * mg], col, kc, acc[a, g * mg:(g + 1) * mg])
        acc = acc.reshape(n, m, oh, ow)
    acc += np.asarray(bias_i32, np.int32).reshape(1, m, 1, 1)
    return acc
