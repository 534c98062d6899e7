"""Fast bit-serial (binary-decomposed) convolution and GEMM; same contract as golden.bitserial.

acc:i32 = Σ_valid (x − x_zp)(w − w_zp[m]) + bias[m], the accumulator of conv_acc / matmul_acc, as
    α_x·α_w·Σ_{i,j} c_i·c_j·popcount(X_i AND W_j) + α_x·bw[m]·Σx̃ + bx·Σ_valid (w − w_zp[m]) + bias[m]
(encodings, c, α, β, bx, bw: see golden.bitserial). Partial sums in int64; the result is stored
as int32 by truncation (wraps modulo 2^32 like the direct fast kernels; the golden one raises).

Layout. Reduction order (kh, kw, c) per group (channels fastest), planes lsb_first in uint64
words, rows padded with zero bits to KW = ceil(K/64) words: weights (G, Mg4, B_w, KW) and
activations (P4, B_x, KW), Mg4 and P4 rounded up to the 4×4 register tile (zero rows).
Activation packing, per image and group: (1) codes: x → its plane bits (x & (2^B − 1); bipolar
(x + 1) >> 1) in a zero-padded HWC byte image, channels padded to 64 (the range check rides
along); (2) per pixel and plane, 8 code bytes at a time → 8 bits by one multiply
(((v >> k) & 0x0101..01)·0x0102040810204080) >> 56, lsb_first); (3) im2col of whole pixel
words, appended at bit offset (i·kW + j)·C/group (funnel shift when C/group is not a multiple
of 64), plus Σx̃ of each row. Border taps read zero pixels; the Σ_valid(w − w_zp) term is the
full per-channel sum minus the taps outside the image (border positions only).

Inner loop: a 4-position × 4-channel tile, for each plane pair 16 AND + popcount + add chains
over the KW words of four activation rows and four weight rows (each load serves 4 chains).
Popcount is LLVM's llvm.ctpop.i64; on this machine (AMD EPYC Zen 5, AVX-512 VPOPCNTDQ) the
tile loop vectorizes over words to zmm vpandq + vpopcntq + vpaddq (checked with inspect_asm);
CPUs without popcnt get LLVM's bit-twiddling expansion (same result). Parallel: numba prange
over position tiles (and over rows in the packing steps); threads = numba.set_num_threads.
"""
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from npusim_kernels.fast._jit import njit

TILE = 4  # register tile: TILE positions × TILE output channels
_LSB8 = np.uint64(0x0101010101010101)   # bit 0 of each byte
_GATHER8 = np.uint64(0x0102040810204080)  # moves bit 0 of byte t to bit 56 + t


@intrinsic
def _popcount(typingctx, v):
    """llvm.ctpop.i64 of a uint64, as int64 (popcnt / vpopcntq when the CPU has them)."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return sig, codegen


def _i32(*v):
    return tuple(np.int32(e) for e in v)


def _encoding(bits, signed, bipolar, what):
    """-> (c int64 (B,) plane weights, α, β, code parameters (lo, hi, bad, add, shift, mask)).

    Valid values are lo..hi except `bad`; code = ((v + add) >> shift) & mask holds the plane bits."""
    if not 1 <= bits <= 8:
        raise ValueError(f"{what}: bit width {bits} outside 1..8")
    if bipolar:
        if bits != 1:
            raise ValueError(f"{what}: bipolar encoding needs 1 bit, got {bits}")
        return np.array([1], np.int64), 2, -1, _i32(-1, 1, 0, 1, 1, 1)
    c = np.array([1 << k for k in range(bits)], np.int64)
    if signed:
        c[-1] = -c[-1]
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return c, 1, 0, _i32(lo, hi, 1 << 20, 0, 0, (1 << bits) - 1)


def _range_error(v, bits, signed, bipolar, what):
    lo, hi, bad, *_ = _encoding(bits, signed, bipolar, what)[3]
    idx = tuple(int(i) for i in np.argwhere((v < lo) | (v > hi) | (v == bad))[0])
    name = "bipolar" if bipolar else "signed" if signed else "unsigned"
    return ValueError(f"{what}: value {int(v[idx])} at index {idx} outside the {bits}-bit {name} range")


def _u8_container(v, what):
    v = np.ascontiguousarray(v)
    if v.dtype not in (np.uint8, np.int8):
        raise ValueError(f"{what}: expected a uint8 or int8 container, got {v.dtype}")
    return v


@njit(parallel=True)
def _pack_planes(codes, rows, nb, kw_n, words):
    """words[r, k, q] = bit k of codes[r, 64q + t] at bit t (t < 64), for r < rows, k < nb.

    codes: uint8 (R, 64·KW) flat; words: uint64 (R', nb, KW) flat; 8 codes per multiply."""
    c64 = codes.view(np.uint64)
    for r in prange(rows):
        for k in range(nb):
            kk = np.uint64(k)
            for q in range(kw_n):
                src = (r * kw_n + q) * 8
                word = np.uint64(0)
                for e in range(8):
                    v = (c64[src + e] >> kk) & _LSB8
                    word |= ((v * _GATHER8) >> np.uint64(56)) << np.uint64(8 * e)
                words[(r * nb + k) * kw_n + q] = word


@njit(parallel=True)
def _tiles(xw, nb_x, ww, m_base, nb_w, kw_n, coef, sx, bw, rx, vw, bias, out, n_pos, n_ch):
    """out[m, p] = i32(Σ_{j,i} coef[j, i]·Σ_t popcount(xw[p, i, t] & ww[m_base + m, j, t])
                       + sx[p]·bw[m_base + m] + rx[p]·vw[m_base + m] + bias[m_base + m]),  m < n_ch, p < n_pos.

    xw: uint64 (P4, nb_x, KW) flat, rows past n_pos zero; ww: uint64 (M + 3, nb_w, KW) flat
    (rows past M zero, so a tile may run past the group); out: int32 (n_ch, n_pos). Tiles of
    4 positions × 4 channels, prange over position tiles; int64 sums, int32 truncation (wraps)."""
    kw_u = np.uint64(kw_n)
    for pt in prange((n_pos + TILE - 1) // TILE):
        p0 = pt * TILE
        for m0 in range(0, n_ch, TILE):
            a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = np.int64(0)
            a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = np.int64(0)
            for j in range(nb_w):
                w0 = np.uint64(((m_base + m0) * nb_w + j) * kw_n)
                w1 = w0 + np.uint64(nb_w * kw_n)
                w2 = w1 + np.uint64(nb_w * kw_n)
                w3 = w2 + np.uint64(nb_w * kw_n)
                for i in range(nb_x):
                    x0 = np.uint64(((p0 * nb_x) + i) * kw_n)
                    x1 = x0 + np.uint64(nb_x * kw_n)
                    x2 = x1 + np.uint64(nb_x * kw_n)
                    x3 = x2 + np.uint64(nb_x * kw_n)
                    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.int64(0)
                    s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = np.int64(0)
                    for t in range(kw_u):
                        u0, u1, u2, u3 = xw[x0 + t], xw[x1 + t], xw[x2 + t], xw[x3 + t]
                        v0, v1, v2, v3 = ww[w0 + t], ww[w1 + t], ww[w2 + t], ww[w3 + t]
                        s00 += _popcount(u0 & v0)
                        s01 += _popcount(u0 & v1)
                        s02 += _popcount(u0 & v2)
                        s03 += _popcount(u0 & v3)
                        s10 += _popcount(u1 & v0)
                        s11 += _popcount(u1 & v1)
                        s12 += _popcount(u1 & v2)
                        s13 += _popcount(u1 & v3)
                        s20 += _popcount(u2 & v0)
                        s21 += _popcount(u2 & v1)
                        s22 += _popcount(u2 & v2)
                        s23 += _popcount(u2 & v3)
                        s30 += _popcount(u3 & v0)
                        s31 += _popcount(u3 & v1)
                        s32 += _popcount(u3 & v2)
                        s33 += _popcount(u3 & v3)
                    c = coef[j, i]
                    a00 += c * s00
                    a01 += c * s01
                    a02 += c * s02
                    a03 += c * s03
                    a10 += c * s10
                    a11 += c * s11
                    a12 += c * s12
                    a13 += c * s13
                    a20 += c * s20
                    a21 += c * s21
                    a22 += c * s22
                    a23 += c * s23
                    a30 += c * s30
                    a31 += c * s31
                    a32 += c * s32
                    a33 += c * s33
            tile = ((a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23), (a30, a31, a32, a33))
            for dp in range(TILE):
                p = p0 + dp
                if p < n_pos:
                    row = tile[dp]
                    for dm in range(TILE):
                        m = m0 + dm
                        if m < n_ch:
                            mm = m_base + m
                            out[m, p] = np.int32(row[dm] + sx[p] * bw[mm] + rx[p] * vw[mm] + bias[mm])


@njit(parallel=True)
def _image_codes(xf, base, cg, h, w, top, left, wp, cpad, code_args, codes):
    """codes[(y + top)·Wp + x + left, c] = ((v + add) >> shift) & mask, v = xf[base + (c·H + y)·W + x];
    returns how many v are outside lo..hi or equal `bad`. Padding pixels/channels are left as they are (0).
    int32 arithmetic and uint64 indices, so that LLVM vectorizes the byte loop."""
    lo, hi, bad, add, shift, mask = code_args
    nbad = 0
    for y in prange(h):
        nb = np.int32(0)
        for c in range(cg):
            src = np.uint64(base + (c * h + y) * w)
            dst = np.uint64(((y + top) * wp + left) * cpad + c)
            for x in range(np.uint64(w)):
                v = np.int32(xf[src + x])
                nb += np.int32((v < lo) | (v > hi) | (v == bad))
                codes[dst + x * np.uint64(cpad)] = np.uint8(((v + add) >> shift) & mask)
        nbad += nb
    return nbad


@njit(parallel=True)
def _im2col_words(pw, nb, cwg, cg, wp, kh, kw, sh, sw, dh, dw, ow, n_pos, kw_n, xc, x_alpha, xw, sx):
    """xw[p, k, :] = the pixel words pw[pixel, k, :] of output position p's window, tap (i, j) at bit
    offset (i·kW + j)·cg; sx[p] = α·Σ_k xc[k]·popcount(xw[p, k, :]) = α·Σ x̃ over the window."""
    last = np.uint64(cg - 64 * (cwg - 1))  # bits in a tap's last word
    for p in prange(n_pos):
        oy = p // ow
        ox = p - oy * ow
        s = np.int64(0)
        for k in range(nb):
            row = np.uint64((p * nb + k) * kw_n)
            for q in range(np.uint64(kw_n)):
                xw[row + q] = 0
            off = np.uint64(0)
            for i in range(kh):
                prow = (oy * sh + i * dh) * wp + ox * sw
                for j in range(kw):
                    src = np.uint64(((prow + j * dw) * nb + k) * cwg)
                    for q in range(np.uint64(cwg)):
                        v = pw[src + q]
                        wi = row + (off >> np.uint64(6))
                        b = off & np.uint64(63)
                        xw[wi] |= v << b
                        if b != 0:
                            spill = v >> (np.uint64(64) - b)
                            if spill != 0:
                                xw[wi + np.uint64(1)] |= spill
                        off += np.uint64(64) if q + np.uint64(1) < np.uint64(cwg) else last
            cnt = np.int64(0)
            for q in range(np.uint64(kw_n)):
                cnt += _popcount(xw[row + q])
            s += xc[k] * cnt
        sx[p] = x_alpha * s


@njit(parallel=True)
def _border(out, m_base, n_ch, wdsum, bx, h, w, kh, kw, sh, sw, dh, dw, top, left, ow, n_pos):
    """out[m, p] −= bx·Σ_{taps (i, j) of p outside the image} wdsum[m_base + m, i·kW + j] (int32, wraps)."""
    for p in prange(n_pos):
        oy = p // ow
        ox = p - oy * ow
        inside = True
        for i in range(kh):
            r = oy * sh + i * dh - top
            inside &= (r >= 0) & (r < h)
        for j in range(kw):
            q = ox * sw + j * dw - left
            inside &= (q >= 0) & (q < w)
        if inside:
            continue
        for m in range(n_ch):
            s = np.int64(0)
            for i in range(kh):
                r = oy * sh + i * dh - top
                for j in range(kw):
                    q = ox * sw + j * dw - left
                    if r < 0 or r >= h or q < 0 or q >= w:
                        s += wdsum[m_base + m, i * kw + j]
            out[m, p] = np.int32(np.int64(out[m, p]) - bx * s)


@njit
def _conv_bitserial(xf, n, c, h, w, code_args, nb_x, xc, x_alpha, bx, ww, nb_w, coef, bw, wdsum, bias, group,
                    kh, kw, sh, sw, dh, dw, top, left, bottom, right, oh, ow):
    """acc:i32 (N, M, OH·OW) and the count of out-of-range activation values (module doc)."""
    m = bias.shape[0]
    cg, mg = c // group, m // group
    cwg = (cg + 63) // 64
    hp, wp = h + top + bottom, w + left + right
    n_pos = oh * ow
    kw_n = (kh * kw * cg + 63) // 64
    codes = np.zeros(hp * wp * 64 * cwg, np.uint8)
    pw = np.empty(hp * wp * nb_x * cwg, np.uint64)
    xw = np.zeros(((n_pos + TILE - 1) // TILE * TILE) * nb_x * kw_n, np.uint64)
    sx = np.zeros(xw.shape[0] // (nb_x * kw_n), np.int64)
    rx = np.full(sx.shape[0], bx, np.int64)
    vw = wdsum.sum(axis=1)
    acc = np.empty((n, m, n_pos), np.int32)
    nbad = 0
    for a in range(n):
        for g in range(group):
            nbad += _image_codes(xf, (a * c + g * cg) * h * w, cg, h, w, top, left, wp, 64 * cwg, code_args, codes)
            _pack_planes(codes, hp * wp, nb_x, cwg, pw)
            _im2col_words(pw, nb_x, cwg, cg, wp, kh, kw, sh, sw, dh, dw, ow, n_pos, kw_n, xc, x_alpha, xw, sx)
            out = acc[a, g * mg:(g + 1) * mg]
            _tiles(xw, nb_x, ww, g * mg, nb_w, kw_n, coef, sx, bw, rx, vw, bias, out, n_pos, mg)
            if bx != 0 and top + left + bottom + right > 0:
                _border(out, g * mg, mg, wdsum, bx, h, w, kh, kw, sh, sw, dh, dw, top, left, ow, n_pos)
    return acc, nbad


def pack_bitserial_weights(w_oihw, w_bits, w_signed, w_zp, bias, bipolar=False):
    """Plan-time weight planes for `bitserial_conv_acc` (done once per session).

    w_oihw: uint8/int8 (M, C/group, kH, kW) in the declared encoding; w_bits: 1..8; w_signed: bool;
    w_zp: int or int (M,); bias: int32 (M,) or scalar; bipolar: 1-bit ±1 weights.
    -> (words uint64 (M + 3, B, KW) in (kh, kw, c) order, c int64 (B,), α, bw int64 (M,) = β − w_zp,
        wdsum int64 (M, kH·kW) = Σ_c (w − w_zp[m]), bias int64 (M,), (M, C/group, kH, kW)).
    """
    w = _u8_container(w_oihw, "bitserial weights")
    c, alpha, beta, (lo, hi, bad, add, shift, mask) = _encoding(w_bits, w_signed, bipolar, "bitserial weights")
    v = w.astype(np.int32)
    if ((v < lo) | (v > hi) | (v == bad)).any():
        raise _range_error(v, w_bits, w_signed, bipolar, "bitserial weights")
    m, cg, kh, kw = w.shape
    k = kh * kw * cg
    kw_n = (k + 63) // 64
    codes = np.zeros((m + TILE - 1, 64 * kw_n), np.uint8)
    codes[:m, :k] = (((v + add) >> shift) & mask).transpose(0, 2, 3, 1).reshape(m, k)
    planes = (codes[:, None, :] >> np.arange(len(c), dtype=np.uint8)[None, :, None]) & 1
    words = np.ascontiguousarray(np.packbits(planes, axis=-1, bitorder="little").view("<u8"))
    zp = np.broadcast_to(np.asarray(w_zp, np.int64).reshape(-1), (m,))
    wdsum = (v.reshape(m, cg, kh * kw) - zp[:, None, None]).sum(axis=1, dtype=np.int64)
    b = np.ascontiguousarray(np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (m,)))
    return words, c, alpha, (beta - zp).astype(np.int64), wdsum, b, (m, cg, kh, kw)


def bitserial_conv_acc(x_nchw, x_zp, x_bits, x_signed, packed, strides, pads, dilations, group, x_bipolar=False):
    """acc:i32 (N, M, OH, OW) = Σ (x − x_zp)·(w − w_zp[m]) + bias[m] by AND + popcount; int32, wraps.

    x_nchw: uint8/int8 (N, C, H, W) in the declared encoding (x_bits, x_signed, x_bipolar); x_zp: int;
    packed: from `pack_bitserial_weights`; strides (sH, sW); pads (top, left, bottom, right);
    dilations (dH, dW); group: int. A value outside the encoding is a ValueError naming it.
    """
    words, w_c, w_alpha, bw, wdsum, bias, (m, cg, kh, kw) = packed
    x = _u8_container(x_nchw, "bitserial activations")
    x_c, x_alpha, x_beta, code_args = _encoding(x_bits, x_signed, x_bipolar, "bitserial activations")
    n, c, h, w = x.shape
    group = int(group)
    if c != cg * group or m % group:
        raise ValueError(f"bitserial conv: {c} input channels, weights (M={m}, C/group={cg}), group={group}")
    top, left, bottom, right = (int(p) for p in pads)
    sh, sw = int(strides[0]), int(strides[1])
    dh, dw = int(dilations[0]), int(dilations[1])
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (w + left + right - dw * (kw - 1) - 1) // sw + 1
    coef = (x_alpha * w_alpha) * np.outer(w_c, x_c)
    acc, nbad = _conv_bitserial(x.reshape(-1), n, c, h, w, code_args, len(x_c), x_c, x_alpha, x_beta - int(x_zp),
                                words.reshape(-1), len(w_c), coef, bw, wdsum, bias, group,
                                kh, kw, sh, sw, dh, dw, top, left, bottom, right, oh, ow)
    if nbad:
        raise _range_error(x.astype(np.int32), x_bits, x_signed, x_bipolar, "bitserial activations")
    return acc.reshape(n, m, oh, ow)


def pack_bitserial_matrix(b_kn, b_bits, b_signed, b_zp, bipolar=False):
    """Plan-time planes of a constant GEMM operand b: uint8/int8 (K, N), b_zp int or int (N,) per
    column: the weights of a 1x1 convolution with N output channels and no bias."""
    b = _u8_container(b_kn, "bitserial GEMM b")
    return pack_bitserial_weights(b.T[:, :, None, None], b_bits, b_signed, b_zp, 0, bipolar)


@njit(parallel=True)
def _row_codes(af, rows, k, stride, code_args, codes):
    """codes[r·stride + t] = ((v + add) >> shift) & mask for v = af[r·K + t]; returns the count of bad v."""
    lo, hi, bad, add, shift, mask = code_args
    nbad = 0
    for r in prange(rows):
        nb = np.int32(0)
        src, dst = np.uint64(r * k), np.uint64(r * stride)
        for t in range(np.uint64(k)):
            v = np.int32(af[src + t])
            nb += np.int32((v < lo) | (v > hi) | (v == bad))
            codes[dst + t] = np.uint8(((v + add) >> shift) & mask)
        nbad += nb
    return nbad


@njit
def _matmul_bitserial(af, rows, k, code_args, nb_x, xc, x_alpha, bx_rows, ww, nb_w, coef, bw, vw, n_cols):
    """acc:i32 (N, rows) (transposed) and the count of out-of-range values of a."""
    kw_n = (k + 63) // 64
    rows4 = (rows + TILE - 1) // TILE * TILE
    codes = np.zeros(rows * 64 * kw_n, np.uint8)
    nbad = _row_codes(af, rows, k, 64 * kw_n, code_args, codes)
    xw = np.zeros(rows4 * nb_x * kw_n, np.uint64)
    _pack_planes(codes, rows, nb_x, kw_n, xw)
    sx = np.zeros(rows4, np.int64)
    for r in range(rows):
        s = np.int64(0)
        for i in range(nb_x):
            base = (r * nb_x + i) * kw_n
            cnt = np.int64(0)
            for q in range(kw_n):
                cnt += _popcount(xw[base + q])
            s += xc[i] * cnt
        sx[r] = x_alpha * s
    rx = np.zeros(rows4, np.int64)
    rx[:rows] = bx_rows
    acc = np.empty((n_cols, rows), np.int32)
    _tiles(xw, nb_x, ww, 0, nb_w, kw_n, coef, sx, bw, rx, vw, np.zeros(n_cols, np.int64), acc, rows, n_cols)
    return acc, nbad


def bitserial_matmul_acc(a, a_zp, a_bits, a_signed, packed_b, a_bipolar=False):
    """acc:i32 (..., M, N) = Σ_k (a − a_zp[i])·(b − b_zp[j]) by AND + popcount; int32, wraps.

    a: uint8/int8 (..., M, K) or (K,) in the declared encoding; a_zp: int, or int (M,) per row;
    packed_b: from `pack_bitserial_matrix`. A value outside the encoding is a ValueError naming it.
    """
    words, w_c, w_alpha, bw, wdsum, _, (nn, kk, _, _) = packed_b
    av = _u8_container(a, "bitserial GEMM a")
    x_c, x_alpha, x_beta, code_args = _encoding(a_bits, a_signed, a_bipolar, "bitserial GEMM a")
    if av.shape[-1] != kk:
        raise ValueError(f"bitserial GEMM: a has K={av.shape[-1]}, b has K={kk}")
    lead = av.shape[:-1]
    rows = int(np.prod(lead, dtype=np.int64))
    mrows = lead[-1] if lead else 1
    azp = np.broadcast_to(np.asarray(a_zp, np.int64).reshape(-1), (mrows,))
    bx_rows = np.tile(x_beta - azp, rows // mrows if mrows else 0)
    coef = (x_alpha * w_alpha) * np.outer(w_c, x_c)
    acc, nbad = _matmul_bitserial(av.reshape(-1), rows, kk, code_args, len(x_c), x_c, x_alpha, bx_rows,
                                  words.reshape(-1), len(w_c), coef, bw, wdsum[:, 0], nn)
    if nbad:
        raise _range_error(av.astype(np.int32), a_bits, a_signed, a_bipolar, "bitserial GEMM a")
    return np.ascontiguousarray(acc.T).reshape(lead + (nn,))
