"""Golden int16 pair saturation of onnxruntime's u8·s8 kernels on CPUs without VNNI.

On x86-64 without AVX-512 VNNI / AVX-VNNI / AMX, MLAS's U8S8 GEMM, GEMV and ConvSym kernels
(AVX2, and AVX-512 BW "core") multiply with `vpmaddubsw`: two adjacent u8·s8 products are
added into one int16 lane **with signed saturation**, and only then widened by `vpmaddwd`
and summed in int32. With VNNI (`vpdpbusd`) or AMX the sum is exact. So onnxruntime computes

    acc_raw[m, n] = Σ_j sat16(a[m, 2j]·b[2j, n] + a[m, 2j+1]·b[2j+1, n])    sat16: clamp to [−32768, 32767]

on the raw stored values (a: u8 0..255, b: s8 −128..127; K zero-padded at the end to even
length, pairs restarting at k = 0 of every GEMM), then subtracts the zero-point terms exactly.
The accumulator therefore differs from the exact Σ (a − a_zp)(b − b_zp) by

    excess[m, n] = Σ_j (sat16(p_j) − p_j),   p_j = a[m, 2j]·b[2j, n] + a[m, 2j+1]·b[2j+1, n],

which is what these functions return (int64 here, no overflow possible for K < 2^31 / 2^16),
with the number of saturated pairs. The pair order along K is the kernel's packing order:
the K index for matmuls; for a convolution onnxruntime's NHWC im2col order per group,
k = (kh·KW + kw)·Cg + c, padded taps holding the raw x zero point (so a pair may span two taps
when Cg is odd). Recorded on an AVX2 CPU: ../shared/ort-fixtures/avx2 (README there).
"""
import numpy as np

from npusim_kernels.batching import batched_2d

I16_MIN, I16_MAX = -(2 ** 15), 2 ** 15 - 1
_CHUNK = 1 << 22  # elements of one (rows, pairs, columns) block of pair sums


def gemm_pair_excess(a_mk, b_kn):
    """(excess:i64 (M, N) = Σ_j sat16(p_j) − p_j, saturated pair count) of raw a (M, K) · b (K, N)."""
    a = np.asarray(a_mk, np.int64)
    b = np.asarray(b_kn, np.int64)
    if a.shape[1] % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        b = np.pad(b, ((0, 1), (0, 0)))
    m, k = a.shape
    n = b.shape[1]
    excess = np.zeros((m, n), np.int64)
    count = 0
    rows = max(1, _CHUNK // max(1, (k // 2) * n))
    for r in range(0, m, rows):
        p = a[r:r + rows, 0::2, None] * b[None, 0::2] + a[r:r + rows, 1::2, None] * b[None, 1::2]
        s = np.clip(p, I16_MIN, I16_MAX)
        excess[r:r + rows] = (s - p).sum(axis=1)
        count += int(np.count_nonzero(s != p))
    return excess, count


def matmul_pair_excess(a, b):
    """Pair excess of a matmul with numpy broadcasting: a (..., M, K) u8, b (..., K, N) s8 ->
    (excess:i32 (..., M, N), saturated pair count); each matrix product pairs from k = 0."""
    excess, count = batched_2d(gemm_pair_excess, a, b)
    return excess.astype(np.int32), count


def conv_cols_hwc(x_nchw, x_zp, kh, kw, strides, pads, dilations, c0, cg):
    """Raw im2col of channels c0..c0+cg in onnxruntime's NHWC order: (N·OH·OW, kH·kW·Cg),
    column (i·kW + j)·Cg + c; positions in the padding hold the raw zero point x_zp."""
    n, _, h, w = x_nchw.shape
    top, left, bottom, right = pads
    xp = np.full((n, cg, h + top + bottom, w + left + right), int(x_zp), np.int64)
    xp[:, :, top:top + h, left:left + w] = x_nchw[:, c0:c0 + cg]
    oh = (h + top + bottom - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + left + right - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    cols = np.empty((n, oh, ow, kh, kw, cg), np.int64)
    for i in range(kh):
        for j in range(kw):
            r0, q0 = i * dilations[0], j * dilations[1]
            win = xp[:, :, r0:r0 + strides[0] * (oh - 1) + 1:strides[0], q0:q0 + strides[1] * (ow - 1) + 1:strides[1]]
            cols[:, :, :, i, j, :] = win.transpose(0, 2, 3, 1)
    return cols.reshape(n * oh * ow, kh * kw * cg), (n, oh, ow)


def pack_conv_pair_weights(w_oihw):
    """Plan-time weight preparation for `conv_pair_excess` (golden: the raw weights as given)."""
    return np.asarray(w_oihw)


def conv_pair_excess(x_nchw, x_zp, packed, strides, pads, dilations, group):
    """(excess:i32 (N, M, OH, OW), saturated pair count) of a convolution of raw u8 x_nchw
    (N, C, H, W) with raw s8 weights (M, C/group, kH, kW) from `pack_conv_pair_weights`;
    pairs along onnxruntime's NHWC im2col K order of each group (module doc)."""
    w = np.asarray(packed, np.int64)
    m, cg, kh, kw = w.shape
    mg = m // group
    out, count = None, 0
    for g in range(group):
        a, (n, oh, ow) = conv_cols_hwc(x_nchw, x_zp, kh, kw, strides, pads, dilations, g * cg, cg)
        if out is None:
            out = np.zeros((n * oh * ow, m), np.int64)
        b = w[g * mg:(g + 1) * mg].transpose(2, 3, 1, 0).reshape(kh * kw * cg, mg)
        e, c = gemm_pair_excess(a, b)
        out[:, g * mg:(g + 1) * mg] = e
        count += c
    return out.reshape(n, oh, ow, m).transpose(0, 3, 1, 2).astype(np.int32), count
