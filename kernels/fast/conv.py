"""Fast 2-D integer convolution, same contract as golden.conv.conv_acc; NCHW in, NCHW out.

acc:i32[n, m, oh, ow] = Σ_{c, kh, kw} (x − x_zp)·(w − w_zp[m]) + bias[m]; padding contributes 0.
Int32 result that wraps modulo 2^32 on overflow (the golden kernel raises instead).
Every path is one Numba call (no per-call Python loops); the path is chosen by `conv_acc`:

* depthwise (group == C == M) with output rows wider than DW_CL_MAX_OW: `_conv_depthwise`, a direct
  int32 loop per channel over a zero-padded plane of d = x − x_zp split by row and column phase (mod sH, sW), so every
  tap is a contiguous run at a fixed offset for any stride; the whole output plane is accumulated in an int32 buffer
  over the kH·kW taps in passes of up to 9 taps, with uint64 indices and no per-tap array
  views (views cost a refcount each; signed indices block vectorization). Exact: int32, wraps.
* depthwise with narrow output rows (the last stages of a MobileNet: many channels, small planes,
  where the per-channel loops above are short and their set-up dominates): `_conv_depthwise_cl`,
  the same phase-split geometry channels-last, vectorized over channels (one NCHW -> HWC
  transpose in, one back). Exact: int32, wraps.
* dense / grouped when x − x_zp and w − w_zp fit int16 (every 8-bit and narrower model) and the
  host has AVX2 or AVX-512BW (`pairmadd.LANES`): `_conv_words`, in panels of output positions (whole
  register tiles, PANEL_WORDS words): an im2col of 32-bit words, then `pairmadd.gemm_words` on a
  register-resident MR × NR tile with the weights packed at plan time (instruction mapping and
  integer semantics in pairmadd's doc). Two kinds of words:
  - byte quads when x is 8-bit, every w − w_zp fits int8 and the CPU has VNNI (`DPBUSD_LANES`):
    x's bytes as u8 (s8 x as x + 128, zero point likewise) in onnxruntime's K order (kH, kW, C/group),
    planes bordered with the zero point's byte, weights w − w_zp as s8, Σ x_u8·wd by vpdpbusd, and
    x_zp_u8·Σ_k wd subtracted in the bias (at bind time): Σ (x − x_zp)·wd exactly, mod 2^32. The same
    quads with `saturate` (u8 x, raw s8 weights) give onnxruntime's saturated pairs (vpmaddubsw),
    on every AVX2 CPU: the emulation of a CPU without VNNI costs no more than the exact path.
  - int16 pairs otherwise: d = x − x_zp in zero-bordered int16 planes (a 1x1 stride-1 conv without
    padding reads x itself), col[k/2, p] = pair_word(d[k, p], d[k + 1, p]) (K = C/group·kH·kW in OIHW
    order; the partner of an odd K's last row is a copy, its packed weight 0), vpmaddwd / vpdpwssd,
    exact mod 2^32.
  The im2col runs one loop per word row and output row, or per word row for a 1x1 stride-1 conv and
  for any stride-1 conv (output rows computed over the planes' width, the extra columns dropped).
* otherwise (wider operands, e.g. 16-bit models, or no AVX2; or a single output position, as in
  squeeze-excite blocks, where the int32 dot product measured 1-3 µs faster than a register tile
  of which one column is used): `_conv_gemm_i32`, im2col of d into
  int32 (K, OH·OW), then an int32 GEMM on tiles of 4 output rows × 2 reduction rows (each column
  element loaded once per 4 rows, each accumulator load/store shared by 2 terms). Exact: int32
  multiply-add, wraps modulo 2^32 like the contract.
"""
import functools
import math

import numpy as np
from numba import prange

from npusim_kernels.fast import pairmadd
from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.bound import Bound

CL_CHUNK = 256  # channels-last depthwise: words per chunk of output positions
DW_CL_MAX_OW = (8, 12)  # depthwise channels-last up to this output width (stride 1, stride > 1): measured on
# znver4, channels-last is 2x the speed at OW 5 (and OW 10 strided), even at OW 10 (and 20 strided), slower beyond
PARALLEL_MIN_MACS = 1 << 23  # a conv's multiply-adds per worker thread (8M, ~0.15 ms of the pair kernel):
# a second worker costs a wake-up (tens of µs on a VM, workers sleep: OMP_WAIT_POLICY, see _jit) and
# ~7 µs of split even on a tiny layer. Measured at 2 threads on the detector at 640x640, npusim alone:
# 44-54 ms with the split, 63-64 ms without (2-core znver5 VM)
PANEL_WORDS = 1 << 17  # im2col words per panel (512 KiB; measured best of 128 KiB, 512 KiB, 2 MiB and none here)


def _out_hw(h, w, kh, kw, strides, pads, dilations):
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    return oh, ow


@njit
def _weights(w_mk, w_zp):
    """wd:i32 (M, K) = w − w_zp[m], and max|wd| (at least 1) as int64."""
    m, k = w_mk.shape
    wd = np.empty((m, k), np.int32)
    mx = 1
    for o in range(m):
        z = np.int32(w_zp[o])
        for r in range(k):
            v = np.int32(w_mk[o, r]) - z
            wd[o, r] = v
            mx = max(mx, abs(np.int64(v)))
    return wd, mx


@njit
def _im2col(x_chw, c0, cg, x_zp, kh, kw, sh, sw, dh, dw, top, left, oh, ow, col):
    """col[(c, i, j), y·OW + x] = x[c0 + c, y·sH − top + i·dH, x·sW − left + j·dW] − x_zp, 0 outside.

    Rows in OIHW weight order; col's dtype (int32 or float32) holds every value exactly.
    """
    h, w = x_chw.shape[1], x_chw.shape[2]
    z = np.int32(x_zp)
    r = 0
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                for y in range(oh):
                    iy = y * sh - top + i * dh
                    base = y * ow
                    if iy < 0 or iy >= h:
                        for x in range(ow):
                            col[r, base + x] = 0
                        continue
                    src = x_chw[c0 + c, iy]
                    for x in range(ow):
                        ix = x * sw - left + j * dw
                        if ix >= 0 and ix < w:
                            col[r, base + x] = np.int32(src[ix]) - z
                        else:
                            col[r, base + x] = 0
                r += 1


@njit
def _gemm_i32(wd, col, bias, out):
    """out:i32 (Mg, P) = wd (Mg, K) · col (K, P) + bias (Mg,), int32 multiply-add (wraps).

    Tile of 4 output rows × 2 reduction rows: each loaded column element serves 4 rows and
    each accumulator load/store serves 2 terms. P == 1 is a dot product.
    """
    m, k = wd.shape
    p = col.shape[1]
    if p == 1:
        for o in range(m):
            s = np.int32(bias[o])
            for r in range(k):
                s += wd[o, r] * col[r, 0]
            out[o, 0] = s
        return
    m4 = m - m % 4
    k2 = k - k % 2
    for o in range(0, m4, 4):
        r0, r1, r2, r3 = out[o], out[o + 1], out[o + 2], out[o + 3]
        b0, b1, b2, b3 = bias[o], bias[o + 1], bias[o + 2], bias[o + 3]
        for q in range(p):
            r0[q] = b0
            r1[q] = b1
            r2[q] = b2
            r3[q] = b3
        for r in range(0, k2, 2):
            w0, w1, w2, w3 = wd[o, r], wd[o + 1, r], wd[o + 2, r], wd[o + 3, r]
            u0, u1, u2, u3 = wd[o, r + 1], wd[o + 1, r + 1], wd[o + 2, r + 1], wd[o + 3, r + 1]
            s, t = col[r], col[r + 1]
            for q in range(p):
                v, u = s[q], t[q]
                r0[q] += w0 * v + u0 * u
                r1[q] += w1 * v + u1 * u
                r2[q] += w2 * v + u2 * u
                r3[q] += w3 * v + u3 * u
        if k2 < k:
            w0, w1, w2, w3 = wd[o, k2], wd[o + 1, k2], wd[o + 2, k2], wd[o + 3, k2]
            s = col[k2]
            for q in range(p):
                v = s[q]
                r0[q] += w0 * v
                r1[q] += w1 * v
                r2[q] += w2 * v
                r3[q] += w3 * v
    for o in range(m4, m):
        row = out[o]
        for q in range(p):
            row[q] = bias[o]
        for r in range(k):
            wv = wd[o, r]
            src = col[r]
            for q in range(p):
                row[q] += wv * src[q]


@njit
def _conv_gemm_i32(x_nchw, x_zp, wd, bias, group, kh, kw, sh, sw, dh, dw, top, left, oh, ow):
    """acc:i32 (N, M, OH·OW) through int32 im2col + int32 GEMM (exact, wraps)."""
    n, c = x_nchw.shape[0], x_nchw.shape[1]
    m, k = wd.shape
    cg, mg = c // group, m // group
    acc = np.empty((n, m, oh * ow), np.int32)
    col = np.empty((k, oh * ow), np.int32)
    for a in range(n):
        for g in range(group):
            _im2col(x_nchw[a], g * cg, cg, x_zp, kh, kw, sh, sw, dh, dw, top, left, oh, ow, col)
            _gemm_i32(wd[g * mg:(g + 1) * mg], col, bias[g * mg:(g + 1) * mg], acc[a, g * mg:(g + 1) * mg])
    return acc


@njit
def _pair_rows(col, d0, src, s0, s1, n, sw, z):
    """col[d0 + x] = pair_word(src[s0 + x·sW] − z, src[s1 + x·sW] − z) for x < n (uint64 indices, literal
    strides 1 and 2: LLVM vectorizes both)."""
    n_u, du, a0, a1 = np.uint64(n), np.uint64(d0), np.uint64(s0), np.uint64(s1)
    if sw == 1:
        for e in range(n_u):
            col[du + e] = pairmadd.pair_word(np.int32(src[a0 + e]) - z, np.int32(src[a1 + e]) - z)
    elif sw == 2:
        for e in range(n_u):
            col[du + e] = pairmadd.pair_word(np.int32(src[a0 + np.uint64(2) * e]) - z,
                                             np.int32(src[a1 + np.uint64(2) * e]) - z)
    else:
        sw_u = np.uint64(sw)
        for e in range(n_u):
            col[du + e] = pairmadd.pair_word(np.int32(src[a0 + sw_u * e]) - z, np.int32(src[a1 + sw_u * e]) - z)


@njit
def _pad_planes(xf, xbase, cg, h, w, z, top, left, hp, wq, xp):
    """xp[(c·HP + top + i)·WQ + left + j] = x[c, i, j] − x_zp (int16) for the cg channels at xf[xbase:],
    0 elsewhere: zero-bordered planes of HP × WQ."""
    zz = np.int32(z)
    xp[:] = 0
    for c in range(cg):
        for i in range(h):
            dst, src = np.uint64((c * hp + top + i) * wq + left), np.uint64(xbase + (c * h + i) * w)
            for e in range(np.uint64(w)):
                xp[dst + e] = np.int32(xf[src + e]) - zz


@njit
def _im2col_pairs(src, base, z, hs, ws, kk, kh, kw, sh, sw, dh, dw, ow, q0, q1, col, ldc):
    """col[r·ldc + q − q0] = pair_word(d(2r, q), d(2r + 1, q)) for output positions q0 <= q < q1 (q = y·OW + x):
    the pair-word im2col of `pairmadd`. d(k = (c, i, j), q) = src[base + (c·HS + y·sH + i·dH)·WS + x·sW
    + j·dW] − z, from planes of HS × WS that hold every tap (zero-bordered, or x itself for a 1x1
    stride-1 conv without padding); k in OIHW weight order. For an odd K the partner of the last
    row is a copy of it (its packed weight is 0). Words past q1 − q0 are left unset.
    Per pair one loop (`_pair_rows`) over the positions, or over each output row's part if
    consecutive rows are not contiguous.
    """
    for r in range((kk + 1) // 2):
        k0, k1 = 2 * r, min(2 * r + 1, kk - 1)
        b0 = base + (k0 // (kh * kw) * hs + (k0 // kw) % kh * dh) * ws + k0 % kw * dw
        b1 = base + (k1 // (kh * kw) * hs + (k1 // kw) % kh * dh) * ws + k1 % kw * dw
        if sh == sw == 1 and ow == ws:  # consecutive rows are contiguous
            _pair_rows(col, r * ldc, src, b0 + q0, b1 + q0, q1 - q0, 1, z)
        else:
            for y in range(q0 // ow, (q1 - 1) // ow + 1):
                x0, x1 = max(0, q0 - y * ow), min(ow, q1 - y * ow)
                s = y * sh * ws + x0 * sw
                _pair_rows(col, r * ldc + y * ow + x0 - q0, src, b0 + s, b1 + s, x1 - x0, sw, z)


@njit
def _byte(v, flip):
    """The u8 operand of a byte: v's two's-complement byte, XOR flip (0x80 turns s8 v into v + 128)."""
    return np.uint32(np.uint8(v)) ^ flip


@njit
def _quad_rows(col, d0, src, s0, s1, s2, s3, n, sw, flip):
    """col[d0 + x] = quad_word of the bytes src[s_i + x·sW] (`_byte`) for x < n (uint64 indices, literal
    stride 1: LLVM vectorizes it)."""
    n_u, du = np.uint64(n), np.uint64(d0)
    a0, a1, a2, a3 = np.uint64(s0), np.uint64(s1), np.uint64(s2), np.uint64(s3)
    if sw == 1:
        for e in range(n_u):
            col[du + e] = pairmadd.quad_word(_byte(src[a0 + e], flip), _byte(src[a1 + e], flip),
                                             _byte(src[a2 + e], flip), _byte(src[a3 + e], flip))
    else:
        sw_u = np.uint64(sw)
        for e in range(n_u):
            col[du + e] = pairmadd.quad_word(_byte(src[a0 + sw_u * e], flip), _byte(src[a1 + sw_u * e], flip),
                                             _byte(src[a2 + sw_u * e], flip), _byte(src[a3 + sw_u * e], flip))


@njit
def _tap_offset(k, cg, kw, hs, ws, dh, dw):
    """Offset in planes of HS × WS of onnxruntime's im2col row k = (i·kW + j)·Cg + c of a group."""
    t = k // cg
    return ((k % cg) * hs + t // kw * dh) * ws + t % kw * dw


@njit
def _im2col_quads(src, base, flip, hs, ws, kk, cg, kw, sh, sw, dh, dw, ow, q0, q1, col, ldc):
    """col[r·ldc + q − q0] = quad_word(b(4r, q), .., b(4r + 3, q)) for output positions q0 <= q < q1: the
    byte-quad im2col of `pairmadd` (op DPBUSD / MADDUBS), in onnxruntime's K order k = (i·kW + j)·Cg + c
    (so that its pairs (2j, 2j + 1) are onnxruntime's). b(k, q) = `_byte`(src[base + offset(k) + y·sH·WS
    + x·sW], flip) from planes of HS × WS that hold every tap (bordered with the zero point's byte, or
    x itself for a 1x1 stride-1 conv without padding). Rows past K repeat row K − 1 (their packed
    weights are 0). Words past q1 − q0 are left unset."""
    for r in range((kk + 3) // 4):
        b0 = base + _tap_offset(4 * r, cg, kw, hs, ws, dh, dw)
        b1 = base + _tap_offset(min(4 * r + 1, kk - 1), cg, kw, hs, ws, dh, dw)
        b2 = base + _tap_offset(min(4 * r + 2, kk - 1), cg, kw, hs, ws, dh, dw)
        b3 = base + _tap_offset(min(4 * r + 3, kk - 1), cg, kw, hs, ws, dh, dw)
        if sh == sw == 1 and ow == ws:  # consecutive rows are contiguous
            _quad_rows(col, r * ldc, src, b0 + q0, b1 + q0, b2 + q0, b3 + q0, q1 - q0, 1, flip)
        else:
            for y in range(q0 // ow, (q1 - 1) // ow + 1):
                x0, x1 = max(0, q0 - y * ow), min(ow, q1 - y * ow)
                s = y * sh * ws + x0 * sw
                _quad_rows(col, r * ldc + y * ow + x0 - q0, src, b0 + s, b1 + s, b2 + s, b3 + s, x1 - x0, sw, flip)


@njit
def _pad_bytes(xf, xbase, cg, h, w, zq, flip, top, left, hp, wq, xp):
    """xp[(c·HP + top + i)·WQ + left + j] = `_byte`(x[c, i, j], flip) (uint8) for the cg channels at xf[xbase:],
    the zero point's byte zq elsewhere: bordered planes of HP × WQ."""
    for e in range(xp.size):
        xp[e] = zq
    for c in range(cg):
        for i in range(h):
            dst, src = np.uint64((c * hp + top + i) * wq + left), np.uint64(xbase + (c * h + i) * w)
            for e in range(np.uint64(w)):
                xp[dst + e] = _byte(xf[src + e], flip)


@njit
def _padded_hw(h, w, kh, kw, sh, sw, dh, dw, top, left, oh, ow):
    """(HP, WQ): rows and columns of a zero-bordered plane that hold every tap of the output."""
    return max(top + h, (oh - 1) * sh + (kh - 1) * dh + 1), max(left + w, (ow - 1) * sw + (kw - 1) * dw + 1)


@njit
def _words_jobs(op, lanes, col, xp, xq, out, j0, j1, xf, z, flip, direct, c, h, w, top, left, hp, wq, k, cg, kh, kw,
                sh, sw, dh, dw, oh, ow, ow_c, p_c, ldc, per, splits, tiles, m, mg, group, wp, bias, acc):
    """Jobs j0 <= j < j1 of `_conv_words`. Job j is image and group (a, g) = divmod(j // per, group),
    then, of that image's group, panel (j % per) // splits (output positions q0 <= q < q1, ldc each)
    and row block (j % per) % splits (whole MR tiles of the group's mg rows). Per job: the panel's
    im2col into `col` (pair words for op PAIRS, byte quads otherwise; from x itself when `direct`,
    else from the bordered planes xp (int16 d) or xq (bytes) of (a, g), written when the job's
    image or group differs from the previous job's), then `pairmadd.gemm_words` into acc[a, g·mg + o,
    q] for the block's rows o (weights and bias from the group's row g·mg + o0); when computed rows
    are wider than the output (ow_c > ow) into `out` first, of which the valid columns are copied.
    col, xp / xq and out are this worker's own."""
    kwords = (k + 1) // 2 if op == pairmadd.PAIRS else (k + 3) // 4
    p = oh * ow
    wide = ow_c > ow
    padded = -1
    for job in range(j0, j1):
        ag = job // per
        a, g = ag // group, ag % group
        xbase = (a * c + g * cg) * h * w
        if not direct and ag != padded:
            if op == pairmadd.PAIRS:
                _pad_planes(xf, xbase, cg, h, w, z, top, left, hp, wq, xp)
            else:
                _pad_bytes(xf, xbase, cg, h, w, np.uint8(_byte(z, flip)), flip, top, left, hp, wq, xq)
            padded = ag
        q0 = job % per // splits * ldc
        q1 = min(p_c, q0 + ldc)
        o0 = job % splits * tiles // splits * pairmadd.MR
        o1 = min(mg, (job % splits + 1) * tiles // splits * pairmadd.MR)
        if op == pairmadd.PAIRS:
            if direct:
                _im2col_pairs(xf, xbase, z, hp, wq, k, kh, kw, sh, sw, dh, dw, ow_c, q0, q1, col, ldc)
            else:
                _im2col_pairs(xp, 0, np.int32(0), hp, wq, k, kh, kw, sh, sw, dh, dw, ow_c, q0, q1, col, ldc)
        elif direct:
            _im2col_quads(xf, xbase, flip, hp, wq, k, cg, kw, sh, sw, dh, dw, ow_c, q0, q1, col, ldc)
        else:
            _im2col_quads(xq, 0, np.uint32(0), hp, wq, k, cg, kw, sh, sw, dh, dw, ow_c, q0, q1, col, ldc)
        m0 = g * mg + o0
        if not wide:
            pairmadd.gemm_words(op, lanes, col, ldc, wp[m0 * kwords:], kwords, bias[m0:], acc, (a * m + m0) * p + q0,
                                p, o1 - o0, q1 - q0, kwords)
            continue
        pairmadd.gemm_words(op, lanes, col, ldc, wp[m0 * kwords:], kwords, bias[m0:], out, 0, ldc, o1 - o0, q1 - q0,
                            kwords)
        for o in range(o1 - o0):  # the valid columns x < OW of each computed row y
            for y in range(q0 // ow_c, (q1 - 1) // ow_c + 1):
                x0, x1 = max(0, q0 - y * ow_c), min(ow, q1 - y * ow_c)
                s, d = np.uint64(o * ldc + y * ow_c + x0 - q0), np.uint64((a * m + m0 + o) * p + y * ow + x0)
                for x in range(np.uint64(max(0, x1 - x0))):
                    acc[d + x] = out[s + x]


@njit(parallel=True)
def _conv_words(op, lanes, threads, x_nchw, x_zp, flip, wp, bias, m, k, group, kh, kw, sh, sw, dh, dw, top, left, oh,
                ow):
    """acc:i32 (N, M, OH·OW) through an im2col of words and `pairmadd.gemm_words` (wraps), in panels of
    whole register tiles of output positions, about PANEL_WORDS words of im2col each (a panel stays
    in cache between the im2col and the GEMM). op PAIRS: pair words of d = x − x_zp from zero-bordered
    int16 planes, weights w − w_zp, exact. op DPBUSD / MADDUBS: quads of x's bytes (s8 x as x + 128)
    from planes bordered with x_zp's byte, weights packed as s8 quads, bias corrected for the zero
    point by the caller (conv_acc_packed_for; flip: 0x80 for s8 x, else 0); DPBUSD exact, MADDUBS
    onnxruntime's saturated pairs.
    A stride-1 conv with padded planes wider than the output computes rows of the planes' width WQ
    (the WQ − OW extra columns read the next row: junk, in bounds, never copied out), so that each
    word row's im2col is one contiguous run instead of OH short ones.
    Threads (`threads`, Numba's count, which the session bounds): the jobs are the panels of every
    image and group (a batch is one parallel region), each panel split into row blocks of whole MR
    tiles when there are fewer jobs than threads (each block then makes its own im2col of the panel,
    a 1/M share of the work); worker t takes a contiguous run of jobs with its own im2col buffer,
    bordered planes and wide-row buffer (`_words_jobs`). `threads` is at most one per
    PARALLEL_MIN_MACS multiply-adds of the layer (conv_acc_packed_for): waking a worker costs more
    than a small layer's work. Every output element is written by one job, so the result does not
    depend on the thread count."""
    n, c, h, w = x_nchw.shape
    cg, mg = c // group, m // group
    kwords = (k + 1) // 2 if op == pairmadd.PAIRS else (k + 3) // 4
    direct = kh == kw == sh == sw == 1 and oh == h and ow == w  # 1x1, stride 1, no padding: x is the plane
    hp, wq = (h, w) if direct else _padded_hw(h, w, kh, kw, sh, sw, dh, dw, top, left, oh, ow)
    wide = sh == sw == 1 and wq > ow
    ow_c = wq if wide else ow  # columns per computed output row
    p_c = oh * ow_c
    nr = pairmadd.tile_columns(lanes)
    panel = max(1, PANEL_WORDS // (kwords * nr)) * nr  # whole register tiles
    ldc = min(panel, -(-p_c // nr) * nr)
    panels = -(-p_c // ldc)  # per image and group
    tiles = -(-mg // pairmadd.MR)
    splits = min(tiles, max(1, -(-threads // (n * group * panels))))
    per = panels * splits  # jobs per image and group
    jobs = n * group * per
    workers = min(threads, jobs)
    col = np.empty(workers * kwords * ldc, np.int32)
    planes = 0 if direct else cg * hp * wq + wq  # + wq: the junk columns' reads
    xp = np.empty(workers * planes if op == pairmadd.PAIRS else 0, np.int16)
    xq = np.empty(0 if op == pairmadd.PAIRS else workers * planes, np.uint8)
    out = np.empty(workers * mg * ldc if wide else 0, np.int32)
    acc = np.empty(n * m * oh * ow, np.int32)
    xf = x_nchw.reshape(-1)
    z = np.int32(x_zp)
    flip = np.uint32(flip)
    if workers == 1:  # no parallel region: launching one costs a few µs even on one thread
        _words_jobs(op, lanes, col, xp, xq, out, 0, jobs, xf, z, flip, direct, c, h, w, top, left, hp, wq, k, cg, kh,
                    kw, sh, sw, dh, dw, oh, ow, ow_c, p_c, ldc, per, splits, tiles, m, mg, group, wp, bias, acc)
    else:
        xs, qs, os_ = xp.size // workers, xq.size // workers, out.size // workers
        for t in prange(workers):
            _words_jobs(op, lanes, col[t * kwords * ldc:(t + 1) * kwords * ldc], xp[t * xs:(t + 1) * xs],
                        xq[t * qs:(t + 1) * qs], out[t * os_:(t + 1) * os_], t * jobs // workers,
                        (t + 1) * jobs // workers, xf, z, flip, direct, c, h, w, top, left, hp, wq, k, cg, kh, kw, sh,
                        sw, dh, dw, oh, ow, ow_c, p_c, ldc, per, splits, tiles, m, mg, group, wp, bias, acc)
    return acc


def _conv_words_for(op, lanes):
    """`_conv_words` with op and lanes constants of the closure (the micro-kernel needs them literal):
    one compiled function per variant, only the ones a model uses."""
    @njit
    def conv_words(threads, x_nchw, x_zp, flip, wp, bias, m, k, group, kh, kw, sh, sw, dh, dw, top, left, oh, ow):
        return _conv_words(op, lanes, threads, x_nchw, x_zp, flip, wp, bias, m, k, group, kh, kw, sh, sw, dh, dw, top,
                           left, oh, ow)
    return conv_words


# (op, lanes) -> dense / grouped conv through `pairmadd.gemm_words`
CONV_WORDS = {(op, lanes): _conv_words_for(op, lanes)
              for op in (pairmadd.PAIRS, pairmadd.DPBUSD, pairmadd.MADDUBS) for lanes in (16, 8)}

@njit
def _dw_phases(kh, kw, sh, sw, dh, dw, oh, ow):
    """Phase-split geometry of a depthwise conv: (HQ, WQ, offs). Input rows and columns split by
    phase (row mod sH, col mod sW) into sH·sW sub-planes of HQ × WQ positions; tap t = (i, j) of
    output (y, x) is then position offs[t] + y·WQ + x (offs[t] = sub-plane ((i·dH) mod sH,
    (j·dW) mod sW), row (i·dH) div sH, column (j·dW) div sW)."""
    wq = ow + ((kw - 1) * dw) // sw
    hq = oh + ((kh - 1) * dh) // sh
    offs = np.empty(kh * kw, np.int64)
    for i in range(kh):
        for j in range(kw):
            offs[i * kw + j] = (((i * dh) % sh) * sw + (j * dw) % sw) * hq * wq + ((i * dh) // sh) * wq + (j * dw) // sw
    return hq, wq, offs


@njit
def _dw_taps(buf, plane, wdf, offs, t0, nt, base_in, base_out, length):
    """buf[base_out + x] += Σ_{t < nt} wdf[t0 + t]·plane[base_in + offs[t] + x] for x < length (int32, wraps).

    Taps go in passes of 9, 5, 3 and 1, each pass one contiguous loop over x (one load/store of
    buf per pass). Indices are uint64: Numba then emits no negative-index wrap-around and
    LLVM vectorizes the loop (16-lane vpmulld/vpaddd on AVX-512).
    """
    n_u, bi, bo = np.uint64(length), np.uint64(base_in), np.uint64(base_out)
    t = 0
    while t + 9 <= nt:  # a whole 3x3 kernel in one pass
        w0, w1, w2, w3, w4 = wdf[t0 + t], wdf[t0 + t + 1], wdf[t0 + t + 2], wdf[t0 + t + 3], wdf[t0 + t + 4]
        w5, w6, w7, w8 = wdf[t0 + t + 5], wdf[t0 + t + 6], wdf[t0 + t + 7], wdf[t0 + t + 8]
        o0, o1, o2 = bi + np.uint64(offs[t]), bi + np.uint64(offs[t + 1]), bi + np.uint64(offs[t + 2])
        o3, o4, o5 = bi + np.uint64(offs[t + 3]), bi + np.uint64(offs[t + 4]), bi + np.uint64(offs[t + 5])
        o6, o7, o8 = bi + np.uint64(offs[t + 6]), bi + np.uint64(offs[t + 7]), bi + np.uint64(offs[t + 8])
        for x in range(n_u):
            buf[bo + x] += (w0 * plane[o0 + x] + w1 * plane[o1 + x] + w2 * plane[o2 + x]
                            + w3 * plane[o3 + x] + w4 * plane[o4 + x] + w5 * plane[o5 + x]
                            + w6 * plane[o6 + x] + w7 * plane[o7 + x] + w8 * plane[o8 + x])
        t += 9
    while t + 5 <= nt:
        w0, w1, w2, w3, w4 = wdf[t0 + t], wdf[t0 + t + 1], wdf[t0 + t + 2], wdf[t0 + t + 3], wdf[t0 + t + 4]
        o0, o1, o2 = bi + np.uint64(offs[t]), bi + np.uint64(offs[t + 1]), bi + np.uint64(offs[t + 2])
        o3, o4 = bi + np.uint64(offs[t + 3]), bi + np.uint64(offs[t + 4])
        for x in range(n_u):
            buf[bo + x] += (w0 * plane[o0 + x] + w1 * plane[o1 + x] + w2 * plane[o2 + x]
                            + w3 * plane[o3 + x] + w4 * plane[o4 + x])
        t += 5
    while t + 3 <= nt:
        w0, w1, w2 = wdf[t0 + t], wdf[t0 + t + 1], wdf[t0 + t + 2]
        o0, o1, o2 = bi + np.uint64(offs[t]), bi + np.uint64(offs[t + 1]), bi + np.uint64(offs[t + 2])
        for x in range(n_u):
            buf[bo + x] += w0 * plane[o0 + x] + w1 * plane[o1 + x] + w2 * plane[o2 + x]
        t += 3
    while t < nt:
        w0 = wdf[t0 + t]
        o0 = bi + np.uint64(offs[t])
        for x in range(n_u):
            buf[bo + x] += w0 * plane[o0 + x]
        t += 1


@njit
def _dw_plane(plane, xf, xbase, h, w, top, left, sh, sw, hq, wq, z):
    """plane[phase-split position of input (i, j)] = x[xbase + i·W + j] − z (int32) for the inputs
    a tap reads (`_dw_phases`); the other positions (padding) are left as they are (0)."""
    for i in range(h):
        r = top + i
        if r // sh >= hq:
            break
        src = xbase + np.uint64(i * w)
        if sw == 2:  # both column phases in one loop over input column pairs (measured 3x the speed
            row0 = (r % sh) * 2 * hq + r // sh  # of a loop per phase); phase of column j: (left + j) mod 2
            da = np.uint64((row0 + (left % 2) * hq) * wq + left // 2)
            db = np.uint64((row0 + (1 - left % 2) * hq) * wq + (left + 1) // 2)
            npair = max(0, min(w // 2, wq - (left + 1) // 2))
            for e in range(np.uint64(npair)):
                plane[da + e] = np.int32(xf[src + np.uint64(2) * e]) - z
                plane[db + e] = np.int32(xf[src + np.uint64(2) * e + np.uint64(1)]) - z
            for j in range(2 * npair, w):
                if (left + j) // 2 < wq:
                    plane[np.uint64((row0 + ((left + j) % 2) * hq) * wq + (left + j) // 2)] = \
                        np.int32(xf[src + np.uint64(j)]) - z
            continue
        for p in range(sw):
            j0 = (p - left) % sw  # first input column of column phase p
            q0 = (left + j0) // sw
            cnt = min((w - j0 + sw - 1) // sw, wq - q0)
            if cnt <= 0:
                continue
            dst = np.uint64((((r % sh) * sw + p) * hq + r // sh) * wq + q0)
            s0 = src + np.uint64(j0)
            if sw == 1:
                for e in range(np.uint64(cnt)):
                    plane[dst + e] = np.int32(xf[s0 + e]) - z
            else:
                sw_u = np.uint64(sw)
                for e in range(np.uint64(cnt)):
                    plane[dst + e] = np.int32(xf[s0 + e * sw_u]) - z


@njit
def _dw_jobs(plane, buf, t, step, jobs, xf, wdf, bias, offs, c, h, w, top, left, sh, sw, hq, wq, oh, ow, nt, z, acc):
    """Channels (of all images) t, t + step, ... < jobs of `_conv_depthwise`, with this worker's plane
    and row buffer: the channel's phase-split plane, the taps over OH·WQ positions, the OW valid
    columns of each row out."""
    hw_u, ow_u, wq_u = np.uint64(h * w), np.uint64(ow), np.uint64(wq)
    for job in range(t, jobs, step):
        ch = job % c
        _dw_plane(plane, xf, np.uint64(job) * hw_u, h, w, top, left, sh, sw, hq, wq, z)
        b = bias[ch]
        for q in range(np.uint64(oh * wq)):
            buf[q] = b
        _dw_taps(buf, plane, wdf, offs, ch * nt, nt, 0, 0, oh * wq)
        obase = np.uint64(job * oh) * ow_u
        for y in range(np.uint64(oh)):
            for x in range(ow_u):
                acc[obase + y * ow_u + x] = buf[y * wq_u + x]


@njit(parallel=True)
def _conv_depthwise(threads, x_nchw, x_zp, wd, bias, kh, kw, sh, sw, dh, dw, top, left, oh, ow):
    """acc:i32 (N, C, OH, OW) = Σ_{i,j} d[n, c, y·sH + i·dH, x·sW + j·dW]·wd[c, i·kW + j] + bias[c].

    d = x − x_zp, zero-padded, in one flat int32 scratch plane per channel (reused; the
    padding is written 0 once). Rows and columns are split by phase (row mod sH, col mod sW)
    into sH·sW sub-planes of HQ rows × WQ columns, so for any stride tap (i, j) of output
    (y, x) sits at sub-plane ((i·dH) mod sH, (j·dW) mod sW), row y + (i·dH) div sH, column
    x + (j·dW) div sW: one fixed offset per tap. The OH output rows are then one flat loop
    of OH·WQ (WQ − OW junk columns per row, never copied out).
    Threads (`threads`, Numba's count): worker t takes the channels (of all images) t, t + T, ..., with its
    own plane and row buffer (`_dw_jobs`), `threads` as in _conv_pairs; each output channel is one worker's, whatever the count.
    """
    n, c, h, w = x_nchw.shape
    hq, wq, offs = _dw_phases(kh, kw, sh, sw, dh, dw, oh, ow)
    nt = kh * kw
    plen = sh * sw * hq * wq + wq  # + wq: junk columns of the last row stay in bounds
    jobs = n * c
    workers = min(threads, jobs)
    planes = np.empty(workers * plen, np.int32)
    for i in range(planes.size):  # a plain loop: np.zeros here would be a parallel region of its own (parfor)
        planes[i] = 0
    bufs = np.empty(workers * oh * wq, np.int32)
    acc = np.empty(n * c * oh * ow, np.int32)
    xf = x_nchw.reshape(-1)  # flat views made once: a view per row would cost a refcount each
    wdf = wd.reshape(-1)
    z = np.int32(x_zp)
    if workers == 1:  # no parallel region (see _conv_pairs)
        _dw_jobs(planes, bufs, 0, 1, jobs, xf, wdf, bias, offs, c, h, w, top, left, sh, sw, hq, wq, oh, ow, nt, z, acc)
    else:
        for t in prange(workers):
            _dw_jobs(planes[t * plen:(t + 1) * plen], bufs[t * oh * wq:(t + 1) * oh * wq], t, workers, jobs, xf, wdf,
                     bias, offs, c, h, w, top, left, sh, sw, hq, wq, oh, ow, nt, z, acc)
    return acc.reshape(n, c, oh, ow)


@njit
def _dw_taps_cl(buf, xs, wt, offs, nt, lc, base_in, n):
    """buf[e] += Σ_{t < nt} wt[t·LC + e]·xs[base_in + offs[t] + e] for e < n (int32, wraps): the taps'
    weight rows wt are as long as the chunk, so each pass is one contiguous loop (uint64 indices,
    vectorized over channels and positions). Passes of 9, 3 and 1 taps."""
    n_u, bi, lc_u = np.uint64(n), np.uint64(base_in), np.uint64(lc)
    t = 0
    while t + 9 <= nt:
        o0, o1, o2 = bi + np.uint64(offs[t]), bi + np.uint64(offs[t + 1]), bi + np.uint64(offs[t + 2])
        o3, o4, o5 = bi + np.uint64(offs[t + 3]), bi + np.uint64(offs[t + 4]), bi + np.uint64(offs[t + 5])
        o6, o7, o8 = bi + np.uint64(offs[t + 6]), bi + np.uint64(offs[t + 7]), bi + np.uint64(offs[t + 8])
        w0 = np.uint64(t) * lc_u
        w1, w2, w3, w4 = w0 + lc_u, w0 + np.uint64(2) * lc_u, w0 + np.uint64(3) * lc_u, w0 + np.uint64(4) * lc_u
        w5, w6, w7, w8 = w0 + np.uint64(5) * lc_u, w0 + np.uint64(6) * lc_u, w0 + np.uint64(7) * lc_u, w0 + np.uint64(8) * lc_u
        for e in range(n_u):
            buf[e] += (wt[w0 + e] * xs[o0 + e] + wt[w1 + e] * xs[o1 + e] + wt[w2 + e] * xs[o2 + e]
                       + wt[w3 + e] * xs[o3 + e] + wt[w4 + e] * xs[o4 + e] + wt[w5 + e] * xs[o5 + e]
                       + wt[w6 + e] * xs[o6 + e] + wt[w7 + e] * xs[o7 + e] + wt[w8 + e] * xs[o8 + e])
        t += 9
    while t + 3 <= nt:
        o0, o1, o2 = bi + np.uint64(offs[t]), bi + np.uint64(offs[t + 1]), bi + np.uint64(offs[t + 2])
        w0 = np.uint64(t) * lc_u
        w1, w2 = w0 + lc_u, w0 + np.uint64(2) * lc_u
        for e in range(n_u):
            buf[e] += wt[w0 + e] * xs[o0 + e] + wt[w1 + e] * xs[o1 + e] + wt[w2 + e] * xs[o2 + e]
        t += 3
    while t < nt:
        o0, w0 = bi + np.uint64(offs[t]), np.uint64(t) * lc_u
        for e in range(n_u):
            buf[e] += wt[w0 + e] * xs[o0 + e]
        t += 1


@njit
def _conv_depthwise_cl(x_nchw, x_zp, wd, bias, kh, kw, sh, sw, dh, dw, top, left, oh, ow):
    """_conv_depthwise channels-last, for small planes: d = x − x_zp transposed once into zero-padded,
    phase-split (`_dw_phases`) int32 positions of C channels each; the output is computed in chunks
    of L = max(1, CL_CHUNK // C) positions of one output row, each chunk one vector loop per pass of
    taps over L·C words with the taps' weights and the bias tiled L times; then back to NCHW.
    Exact: int32 multiply-add, wraps."""
    n, c, h, w = x_nchw.shape
    hq, wq, offs = _dw_phases(kh, kw, sh, sw, dh, dw, oh, ow)
    nt = kh * kw
    ln = max(1, min(ow, CL_CHUNK // c))
    lc = ln * c
    wt = np.empty(nt * lc, np.int32)
    bt = np.empty(lc, np.int32)
    for t in range(nt):  # written in order (measured 5-10 % faster than reading wd in order)
        for q in range(ln):
            for ch in range(c):
                wt[t * lc + q * c + ch] = wd[ch, t]
    for q in range(ln):
        for ch in range(c):
            bt[q * c + ch] = bias[ch]
    offs_e = offs * c
    xs = np.zeros(sh * sw * hq * wq * c, np.int32)
    buf = np.empty(lc, np.int32)
    acc = np.empty(n * c * oh * ow, np.int32)
    xf = x_nchw.reshape(-1)
    z = np.int32(x_zp)
    c_u, hw_u, ohw_u = np.uint64(c), np.uint64(h * w), np.uint64(oh * ow)
    for a in range(n):
        for i in range(h):
            r = top + i
            if r // sh >= hq:
                break
            for j in range(w):
                q = left + j
                if q // sw >= wq:
                    break
                dst = np.uint64(((((r % sh) * sw + q % sw) * hq + r // sh) * wq + q // sw) * c)
                src = np.uint64((a * c * h + i) * w + j)
                for ch in range(c_u):
                    xs[dst + ch] = np.int32(xf[src + ch * hw_u]) - z
        for y in range(oh):
            for x0 in range(0, ow, ln):
                ne = min(ln, ow - x0) * c
                for e in range(np.uint64(ne)):
                    buf[e] = bt[e]
                _dw_taps_cl(buf, xs, wt, offs_e, nt, lc, (y * wq + x0) * c, ne)
                for q in range(min(ln, ow - x0)):
                    dst, src = np.uint64(a * c * oh * ow + y * ow + x0 + q), np.uint64(q * c)
                    for ch in range(c_u):
                        acc[dst + ch * ohw_u] = buf[src + ch]
    return acc.reshape(n, c, oh, ow)


_BYTE_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def _vec_i32(v, m):
    """v as a contiguous int32 (m,) array; a per-tensor scalar is repeated. No copy if already so."""
    if type(v) is np.ndarray and v.dtype == np.int32 and v.shape == (m,) and v.flags.c_contiguous:
        return v
    return np.ascontiguousarray(np.broadcast_to(np.asarray(v, np.int32).reshape(-1), (m,)))


def pack_conv_weights(w_oihw, w_zp, bias_i32):
    """Plan-time weight preparation (done once per session, not per inference):
    -> (wd:i32 (M, K) = w − w_zp[m], K = C/group·kH·kW, max|wd| (>= 1), bias:i32 (M,), (M, C/group, kH, kW),
    pairs, quads): pairs = `pairmadd.pack_pairs` of wd and bias when every wd fits int16, else None;
    quads = (the s8 quad words of wd in onnxruntime's K order (kH, kW, C/group), `pairmadd.pack_quads`;
    Σ_k wd[m, k]:i64 (M,)) when every wd fits int8, else None."""
    m, cg, kh, kw = w_oihw.shape
    wd, w_abs = _weights(np.ascontiguousarray(w_oihw).reshape(m, cg * kh * kw), _vec_i32(w_zp, m))
    bias = _vec_i32(bias_i32, m)
    pairs = pairmadd.pack_pairs(wd, bias) if w_abs <= pairmadd.I16_ABS else None
    quads = None
    if int(wd.min(initial=0)) >= -128 and int(wd.max(initial=0)) <= 127:
        hwc = wd.reshape(m, cg, kh, kw).transpose(0, 2, 3, 1).reshape(m, -1)
        quads = pairmadd.pack_quads(hwc.astype(np.int8)), wd.sum(axis=1, dtype=np.int64)
    return wd, int(w_abs), bias, (m, cg, kh, kw), pairs, quads


def conv_acc(x_nchw, x_zp, w_oihw, w_zp, bias_i32, strides, pads, dilations, group):
    """acc:i32 (N, M, OH, OW) = Σ (x − x_zp)·(w − w_zp[m]) + bias[m]; int32, wraps on overflow.

    x_nchw: integer (N, C, H, W); x_zp: int; w_oihw: integer (M, C/group, kH, kW);
    w_zp: int32 (M,); bias_i32: int32 (M,); strides (sH, sW); pads (top, left, bottom, right);
    dilations (dH, dW); group: int. No rounding, no saturation. Path: see the module doc.
    """
    return conv_acc_packed(x_nchw, x_zp, pack_conv_weights(w_oihw, w_zp, bias_i32), strides, pads, dilations, group)


@functools.lru_cache(maxsize=4096)
def _geometry(x_shape, x_dtype, x_zp, strides, pads, dilations, group, w_shape, lanes, dw_cl_max_ow):
    """Settled once per input shape and dtype, zero point, window and weights: (geo = (kH, kW, sH, sW,
    dH, dW, top, left, OH, OW), output shape, path): path "depthwise" or "depthwise_cl" (channels-last
    up to the output widths dw_cl_max_ow, module doc), "pairs" (the pair kernel for any data of x's
    dtype), "gemm", or "data" when the dtype does not bound |x − x_zp| (read x)."""
    m, cg, kh, kw = w_shape
    n, c, h, w = x_shape
    assert c == cg * group and m % group == 0, "channel / group mismatch"
    oh, ow = _out_hw(h, w, kh, kw, strides, pads, dilations)
    geo = (kh, kw, int(strides[0]), int(strides[1]), int(dilations[0]), int(dilations[1]), int(pads[0]), int(pads[1]),
           int(oh), int(ow))
    if group == c == m:
        return geo, (n, m, oh, ow), "depthwise_cl" if ow <= dw_cl_max_ow[geo[3] > 1] else "depthwise"
    if not lanes or oh * ow <= 1:
        return geo, (n, m, oh, ow), "gemm"
    if x_dtype not in _BYTE_RANGE:
        return geo, (n, m, oh, ow), "data"
    lo, hi = _BYTE_RANGE[x_dtype]  # the dtype's range bounds |x − x_zp| without reading the data
    return geo, (n, m, oh, ow), "pairs" if max(abs(lo - x_zp), abs(hi - x_zp)) <= pairmadd.I16_ABS else "gemm"


def conv_acc_packed(x_nchw, x_zp, packed, strides, pads, dilations, group):
    """conv_acc with weights, weight zero points and bias from `pack_conv_weights`; the pair variant
    is pairmadd.LANES at call time (tests set it to run each one); the threads Numba's count at call
    time (a kernel that read it itself could not be cached: Numba reaches it through a ctypes pointer)."""
    x = np.ascontiguousarray(x_nchw)
    return conv_acc_packed_for(x.shape, x.dtype, x_zp, packed, strides, pads, dilations, group)(x)


def conv_acc_packed_for(x_shape, x_dtype, x_zp, packed, strides, pads, dilations, group, saturate=False):
    """-> acc(x_nchw): conv_acc_packed of inputs of this shape and dtype, with the geometry, the
    path and the word variant (pairmadd.LANES and DPBUSD_LANES now) settled here, once (a session
    binds one per input shape): each call is one Numba call on x and precomputed arguments, and the
    output reshape. Dense and grouped convs of byte x with weights that fit int8 run on byte quads:
    vpdpbusd where the CPU has VNNI (exact), else int16 pairs.
    saturate: onnxruntime's u8·s8 arithmetic without VNNI instead (npusim.ortisa): each pair of
    raw u8 x · raw s8 w products summed into a saturating int16 (the MADDUBS quads: vpmaddubsw),
    in onnxruntime's K order, padding the raw x_zp; exact + golden.pairsat's conv_pair_excess.
    Only for u8 x and weights with zero points 0 (then wd is w), on AVX2 or AVX-512BW: None
    otherwise (the caller adds the excess itself)."""
    wd, w_abs, bias, w_shape, pairs, quads = packed
    zp = int(x_zp)
    group = int(group)
    lanes = pairmadd.LANES if pairs is not None else 0
    geo, out_shape, path = _geometry(tuple(x_shape), np.dtype(x_dtype), zp, tuple(strides), tuple(pads),
                                     tuple(dilations), group, w_shape, lanes, DW_CL_MAX_OW)
    if saturate and (path != "pairs" or quads is None or np.dtype(x_dtype) != np.uint8):
        return None
    # threads: Numba's count at each call (the session's limit), one per PARALLEL_MIN_MACS at most
    cap = max(1, math.prod(out_shape) * math.prod(w_shape[1:]) // PARALLEL_MIN_MACS)
    if path == "depthwise":
        return Bound(_conv_depthwise, (zp, wd, bias) + geo, cap=cap)
    if path == "depthwise_cl":
        return Bound(_conv_depthwise_cl, (zp, wd, bias) + geo)
    k = w_shape[1] * w_shape[2] * w_shape[3]
    pair_args = (zp, 0, pairs[0], pairs[1], w_shape[0], k, group) + geo if lanes else None
    gemm_args = (zp, wd, bias, group) + geo
    if path == "pairs":
        op, word_lanes = (pairmadd.MADDUBS, lanes) if saturate else (pairmadd.DPBUSD, pairmadd.DPBUSD_LANES)
        if quads is not None and word_lanes:  # byte quads: x's bytes, the zero point's share in the bias
            flip = 0x80 if np.dtype(x_dtype) == np.int8 else 0
            qbias = np.concatenate([(bias - (zp + 128 if flip else zp) * quads[1]).astype(np.int32),
                                    np.zeros(pairmadd.MR - 1, np.int32)])
            core, args = CONV_WORDS[op, word_lanes], (zp, flip, quads[0], qbias, w_shape[0], k, group) + geo
        else:
            core, args = CONV_WORDS[pairmadd.PAIRS, lanes], pair_args
        return Bound(core, args, cap=cap, shape=out_shape)
    gemm = Bound(_conv_gemm_i32, gemm_args, shape=out_shape)
    if path == "gemm":
        return gemm
    pair_words = Bound(CONV_WORDS[pairmadd.PAIRS, lanes], pair_args, cap=cap, shape=out_shape)

    def run_data(x):  # the data bounds |x − x_zp|: read it
        x = np.ascontiguousarray(x)
        x_abs = max(abs(int(x.min(initial=0)) - zp), abs(int(x.max(initial=0)) - zp))
        return pair_words(x) if x_abs <= pairmadd.I16_ABS else gemm(x)
    return run_data
