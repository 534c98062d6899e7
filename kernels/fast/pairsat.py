"""Fast int16 pair saturation of onnxruntime's u8·s8 kernels without VNNI; contract of golden.pairsat.

excess = Σ_j (sat16(p_j) − p_j), p_j = a[2j]·b[2j] + a[2j+1]·b[2j+1] on raw u8 a and s8 b, pairs
in the kernel's K order (matmul: k; conv: (kh·KW + kw)·Cg + c per group, padding = raw x_zp).

Only a few pairs can saturate at all: with a in 0..255, |p_j| > 32767 needs b[2j] and b[2j+1]
of the same sign with 255·(|b[2j]| + |b[2j+1]|) > 32767. So the weights are scanned once for
such "risky" pairs (at plan time for a convolution), and at run time a risky pair is skipped
too when the largest activations it can meet (per input channel, or per column of a) keep it
inside int16; the rest are evaluated for every output position. The exact accumulator comes
from the ordinary kernels and the excess is added to it (int32, wrapping as onnxruntime's
int32 accumulator does). The cost is
(risky pairs left)·(output positions), in int32 SIMD lanes (the clamp is branch-free): a small
fraction of the convolution on real weights, about one more convolution when every pair is
risky; a convolution whose risky pairs the channel maxima all rule out reads x once.
"""
import numpy as np

from npusim_kernels.batching import batched_2d
from npusim_kernels.fast._jit import njit

_A_MAX = 255  # the u8 operand's range bounds |p_j| without reading the activations


@njit
def _can_saturate(a0_max, a1_max, b0, b1):
    """A pair with u8 operands at most a0_max, a1_max (>= 0) can leave int16 only if this holds."""
    hi = a0_max * max(b0, 0) + a1_max * max(b1, 0)
    lo = a0_max * min(b0, 0) + a1_max * min(b1, 0)
    return hi > 32767 or lo < -32768


@njit
def _risky(b0, b1):
    return _can_saturate(_A_MAX, _A_MAX, b0, b1)


@njit
def _scan_gemm(b):
    """Risky pairs of b (K, N): arrays (column, k0) with k0 even and k0 + 1 < K."""
    k, n = b.shape
    cols = np.empty(n * (k // 2), np.int64)
    ks = np.empty(n * (k // 2), np.int64)
    r = 0
    for j in range(n):
        for k0 in range(0, k - 1, 2):
            if _risky(np.int64(b[k0, j]), np.int64(b[k0 + 1, j])):
                cols[r] = j
                ks[r] = k0
                r += 1
    return cols[:r], ks[:r]


@njit
def _gemm_excess(a, b, cols, ks):
    """a (M, K) read as a^T (K, M), so each pair's two rows are contiguous; a risky pair is
    skipped when the column maxima of a keep it inside int16; branch-free inner loop: the
    excess e = clamp(p, −32768, 32767) − p is added everywhere (0 where p fits)."""
    m = a.shape[0]
    at = np.ascontiguousarray(a.T)
    a_max = np.zeros(at.shape[0], np.int64)
    for k in range(at.shape[0]):
        for i in range(m):
            a_max[k] = max(a_max[k], np.int64(at[k, i]))
    out_t = np.zeros((b.shape[1], m), np.int32)
    count = 0
    for r in range(cols.shape[0]):
        j, k0 = cols[r], ks[r]
        b0, b1 = np.int32(b[k0, j]), np.int32(b[k0 + 1, j])
        if not _can_saturate(a_max[k0], a_max[k0 + 1], np.int64(b0), np.int64(b1)):
            continue
        src0, src1, dst = at[k0], at[k0 + 1], out_t[j]
        hits = 0
        for i in range(m):
            p = np.int32(src0[i]) * b0 + np.int32(src1[i]) * b1
            e = min(max(p, -32768), 32767) - p
            dst[i] += e
            hits += e != 0
        count += hits
    return out_t.T.copy(), count


def matmul_pair_excess(a, b):
    """Pair excess of a matmul with numpy broadcasting: a (..., M, K) u8, b (..., K, N) s8 ->
    (excess:i32 (..., M, N), saturated pair count); each matrix product pairs from k = 0."""
    a, b = np.asarray(a), np.asarray(b)
    if b.ndim == 2:  # one weight matrix: all rows of a in one product
        e, count = _gemm_excess(np.ascontiguousarray(a.reshape(-1, a.shape[-1])), b, *_scan_gemm(b))
        return e.reshape(a.shape[:-1] + (b.shape[-1],)), int(count)
    excess, count = batched_2d(lambda x, y: _gemm_excess(x, y, *_scan_gemm(y)), a, b)
    return excess, int(count)


@njit
def _scan_conv(w):
    """Risky pairs of raw weights (M, Cg, kH, kW) in NHWC K order: one row (m, c0, i0, j0, w0,
    c1, i1, j1, w1) each, k = (i·kW + j)·Cg + c."""
    m, cg, kh, kw = w.shape
    k = kh * kw * cg
    rows = np.empty((m * (k // 2), 9), np.int64)
    r = 0
    for o in range(m):
        for k0 in range(0, k - 1, 2):
            t0, c0 = divmod(k0, cg)
            t1, c1 = divmod(k0 + 1, cg)
            i0, j0 = divmod(t0, kw)
            i1, j1 = divmod(t1, kw)
            w0, w1 = np.int64(w[o, c0, i0, j0]), np.int64(w[o, c1, i1, j1])
            if _risky(w0, w1):
                rows[r, 0], rows[r, 1], rows[r, 2], rows[r, 3], rows[r, 4] = o, c0, i0, j0, w0
                rows[r, 5], rows[r, 6], rows[r, 7], rows[r, 8] = c1, i1, j1, w1
                r += 1
    return rows[:r].copy()


def pack_conv_pair_weights(w_oihw):
    """Plan-time weight preparation for `conv_pair_excess`: (risky pair rows, weight shape)."""
    w = np.ascontiguousarray(w_oihw)
    return _scan_conv(w), w.shape


@njit(inline="always")
def _pair_row(xf, o0, o1, stride, w0, w1, outf, d, ow):
    """outf[d + q] += e(p), p = xf[o0 + q·stride]·w0 + xf[o1 + q·stride]·w1, e = clamp16(p) − p,
    for q < ow; returns how many e ≠ 0. Flat arrays and uint64 offsets (no per-row views, which
    cost a refcount each; unsigned indices, so Numba emits no negative-index wrap-around and
    LLVM vectorizes), int32 lanes; strides 1 and 2 are literal (stride 2 an interleaved load)."""
    hits = 0
    o0, o1, d = np.uint64(o0), np.uint64(o1), np.uint64(d)
    if stride == 1:
        for q in range(np.uint64(ow)):
            p = np.int32(xf[o0 + q]) * w0 + np.int32(xf[o1 + q]) * w1
            e = min(max(p, np.int32(-32768)), np.int32(32767)) - p
            outf[d + q] += e
            hits += e != 0
    elif stride == 2:
        for q in range(np.uint64(ow)):
            p = np.int32(xf[o0 + np.uint64(2) * q]) * w0 + np.int32(xf[o1 + np.uint64(2) * q]) * w1
            e = min(max(p, np.int32(-32768)), np.int32(32767)) - p
            outf[d + q] += e
            hits += e != 0
    else:
        st = np.uint64(stride)
        for q in range(np.uint64(ow)):
            p = np.int32(xf[o0 + q * st]) * w0 + np.int32(xf[o1 + q * st]) * w1
            e = min(max(p, np.int32(-32768)), np.int32(32767)) - p
            outf[d + q] += e
            hits += e != 0
    return hits


@njit
def _conv_excess(x, x_zp, rows, m, mg, cg, sh, sw, dh, dw, top, left, bottom, right, oh, ow):
    """Per image: each channel's maximum (x_zp included where there is padding) first; a risky
    pair is dropped when those maxima keep it inside int16. Only if a pair is left, x is copied
    zero-padded with the raw x_zp (int16, C × (H + top + bottom) × (W + left + right)) and a
    branch-free loop over the output plane adds e = clamp(p, −32768, 32767) − p everywhere (0
    where p fits). With no pair left the excess is all zeros and nothing else is read."""
    n, c, h, w = x.shape
    out = np.zeros((n, m, oh, ow), np.int32)
    outf = out.reshape(-1)
    hp, wp = h + top + bottom, w + left + right
    xp = np.empty((0, 0, 0), np.int16)
    padded = top + bottom + left + right > 0
    ch_max = np.zeros(c, np.int64)
    live = np.empty(rows.shape[0], np.int64)
    count = 0
    for a in range(n):
        for ch in range(c):
            mx = np.int32(x_zp) if padded else np.int32(0)
            plane = x[a, ch]
            for i in range(h):
                for j in range(w):
                    mx = max(mx, np.int32(plane[i, j]))
            ch_max[ch] = mx
        nl = 0
        for r in range(rows.shape[0]):
            base = (rows[r, 0] // mg) * cg
            if _can_saturate(ch_max[base + rows[r, 1]], ch_max[base + rows[r, 5]], rows[r, 4], rows[r, 8]):
                live[nl] = r
                nl += 1
        if nl == 0:
            continue
        if xp.shape[0] == 0:
            xp = np.empty((c, hp, wp), np.int16)
        for ch in range(c):
            for i in range(hp):
                for j in range(wp):
                    xp[ch, i, j] = np.int16(x_zp)
            for i in range(h):
                for j in range(w):
                    xp[ch, top + i, left + j] = np.int16(x[a, ch, i, j])
        xf = xp.reshape(-1)
        for t in range(nl):
            r = live[t]
            o = rows[r, 0]
            base = (o // mg) * cg
            b0 = ((base + rows[r, 1]) * hp + rows[r, 2] * dh) * wp + rows[r, 3] * dw
            b1 = ((base + rows[r, 5]) * hp + rows[r, 6] * dh) * wp + rows[r, 7] * dw
            w0, w1 = np.int32(rows[r, 4]), np.int32(rows[r, 8])
            d = (a * m + o) * oh * ow
            for y in range(oh):
                count += _pair_row(xf, b0 + y * sh * wp, b1 + y * sh * wp, sw, w0, w1, outf, d + y * ow, ow)
    return out, count


def conv_pair_excess(x_nchw, x_zp, packed, strides, pads, dilations, group):
    """(excess:i32 (N, M, OH, OW), saturated pair count) of a convolution of raw u8 x_nchw
    (N, C, H, W) with the raw s8 weights packed by `pack_conv_pair_weights`; NHWC K order."""
    rows, (m, cg, kh, kw) = packed
    n, c, h, w = x_nchw.shape
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    out, count = _conv_excess(np.ascontiguousarray(x_nchw), int(x_zp), rows, m, m // int(group), cg,
                              int(strides[0]), int(strides[1]), int(dilations[0]), int(dilations[1]),
                              int(pads[0]), int(pads[1]), int(pads[2]), int(pads[3]), oh, ow)
    return out, int(count)
