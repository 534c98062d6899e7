"""Fast integer matmul (MatMulInteger / QLinearMatMul / QGemm accumulator), same contract as golden.

acc:i32[..., i, j] = Σ_k (a[..., i, k] − a_zp[i]) · (b[..., k, j] − b_zp[j]); int32, wraps on overflow.
When a − a_zp and b − b_zp fit int16 (8-bit and narrower operands: bounded by the dtype's range, no
data scan) and the host has AVX2 or AVX-512BW: `_mm_pairs`, per batch the rows of a and the columns
of b packed as int16 pair words and pairmadd.gemm_words (vpmaddwd / vpdpwssd; exact, wraps: see
pairmadd). A byte A of at least QUAD_MIN_ROWS rows with one zero point, times a constant B whose
b − b_zp fit int8, on a CPU with VNNI: byte quads instead (`_mm_quads`, vpdpbusd, exact, wraps:
conv's quads, A in the role of x).
Otherwise float32 BLAS sgemm over K-chunks of kc terms with kc·max|a − a_zp|·max|b − b_zp|
< 2^24, so every partial sum is an exact integer in float32; chunks are summed in int32. Operands
wider than 12 bits fall back to an int32 Numba loop.
"""
import math

import numpy as np

from npusim_kernels.fast import pairmadd
from npusim_kernels.fast.pairmadd import DPBUSD, PAIRS  # globals the compiler sees as literals (gemm_words needs them)
from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.bound import Bound

F32_EXACT = 1 << 24
# A with fewer rows than this stays on int16 pairs: the quads' register tiles hold A's rows as
# columns, mostly empty for a few rows. Measured on AVX-512 VNNI, B 1024x1024, 1 thread: 4 rows
# 0.085 ms on quads, 0.040 on pairs; 16 rows 0.098 / 0.124; 64 rows 0.21 / 0.46; 512x4096x512
# 4.9-5.3 / 9-11 ms.
QUAD_MIN_ROWS = 16


@njit
def _mm_i32(a_i32, b_i32):
    """acc:i32 (M, N) = a·b in int32 (wraps); a (M, K), b (K, N)."""
    m, k = a_i32.shape
    n = b_i32.shape[1]
    out = np.zeros((m, n), np.int32)
    for i in range(m):
        for r in range(k):
            av = a_i32[i, r]
            for j in range(n):
                out[i, j] += np.int32(av * b_i32[r, j])
    return out


@njit
def _pack_rows(a2, a_zp, wp, k2):
    """wp[o·K2 + r] = pair_word(a2[o, 2r] − a_zp[o], a2[o, 2r + 1] − a_zp[o]) (a_zp of size 1: every row);
    an odd K's missing partner is 0."""
    m, k = a2.shape
    for o in range(m):
        z = np.int32(a_zp[o if a_zp.size > 1 else 0])
        for r in range(k2):
            odd = np.int32(2 * r + 1 < k)
            wp[o * k2 + r] = pairmadd.pair_word(np.int32(a2[o, 2 * r]) - z,
                                                (np.int32(a2[o, min(2 * r + 1, k - 1)]) - z) * odd)


@njit
def _pack_columns(b2, b_zp, col, ldc):
    """col[r·ldc + c] = pair_word(b2[2r, c] − b_zp[c], b2[2r + 1, c] − b_zp[c]); an odd K's missing partner
    is a copy (its row word in `_pack_rows` is 0)."""
    k, n = b2.shape
    for r in range((k + 1) // 2):
        r1 = min(2 * r + 1, k - 1)
        for c in range(n):
            z = np.int32(b_zp[c])
            col[r * ldc + c] = pairmadd.pair_word(np.int32(b2[2 * r, c]) - z, np.int32(b2[r1, c]) - z)


@njit
def _mm_packed(lanes, a2, a_zp, col, ldc, n):
    """acc:i32 (M, N) = (a2 (M, K) − a_zp) · B with B's columns packed by `_pack_columns` (exact, wraps)."""
    m, k = a2.shape
    k2 = (k + 1) // 2
    wp = np.zeros((m + pairmadd.MR - 1) * k2, np.int32)
    _pack_rows(a2, a_zp, wp, k2)
    out = np.empty((m, n), np.int32)
    pairmadd.gemm_words(PAIRS, lanes, col, ldc, wp, k2, np.zeros(m + pairmadd.MR - 1, np.int32),
                        out.reshape(-1), 0, n, m, n, k2)
    return out


@njit
def _mm_pairs(lanes, a3, a_zp, b3, b_zp):
    """acc:i32 (B, M, N) = (a3 (B, M, K) − a_zp[m]) · (b3 (B, K, N) − b_zp[n]), every difference within
    int16: per batch the columns of b packed as pair words, then `_mm_packed` (exact, wraps)."""
    nb, m, k = a3.shape
    n = b3.shape[2]
    nr = pairmadd.tile_columns(lanes)
    ldc = -(-n // nr) * nr
    col = np.empty((k + 1) // 2 * ldc, np.int32)
    out = np.empty((nb, m, n), np.int32)
    for i in range(nb):
        _pack_columns(b3[i], b_zp, col, ldc)
        out[i] = _mm_packed(lanes, a3[i], a_zp, col, ldc, n)
    return out


@njit
def _mm_quads(lanes, a2, flip, wp, qbias, n):
    """acc:i32 (M, N) = Σ_k (a2[m, k] ⊕ flip)·wq[n, k] + qbias[n] by vpdpbusd on byte quads (exact, wraps),
    computed as its transpose, B's columns the register tiles' rows (wq = B − b_zp transposed, as s8
    quads packed at plan time: `pack_matmul_b`) and A's rows their columns: A's bytes as u8 (an s8 A
    flipped by 0x80 to a + 128; the zero point's share is in qbias), 4 consecutive k per word, packed
    here; a K not a multiple of 4 ends in bytes 0 whose weights are 0."""
    m, k = a2.shape
    k4 = (k + 3) // 4
    nr = pairmadd.tile_columns(lanes)
    ldc = -(-m // nr) * nr
    a4 = np.zeros((m, 4 * k4), np.uint8)  # rows of whole words, the tail bytes 0
    a4[:, :k] = a2.view(np.uint8)
    words = a4.view(np.uint32)
    fw = np.uint32(flip) * np.uint32(0x01010101)
    col = np.zeros(k4 * ldc, np.int32)
    for c0 in range(0, m, 16):  # a transpose in blocks of 16 rows of A (16 columns of col)
        for r in range(k4):
            for c in range(c0, min(c0 + 16, m)):
                col[r * ldc + c] = np.int32(words[c, r] ^ fw)
    out_t = np.empty(n * m, np.int32)
    pairmadd.gemm_words(DPBUSD, lanes, col, ldc, wp, k4, qbias, out_t, 0, m, n, m, k4)
    return np.ascontiguousarray(out_t.reshape(n, m).T)


@njit
def _mm_quads_zmm(a2, flip, wp, qbias, n):
    """_mm_quads with the AVX-512 VNNI micro-kernel (the lane count must be a literal)."""
    return _mm_quads(16, a2, flip, wp, qbias, n)


@njit
def _mm_quads_ymm(a2, flip, wp, qbias, n):
    """_mm_quads with the AVX-VNNI micro-kernel."""
    return _mm_quads(8, a2, flip, wp, qbias, n)


@njit
def _with_bias(out, bias):
    """out (M, N) + bias (N,) in place, int32, wraps; an empty bias adds nothing."""
    if bias.size:
        for r in range(out.shape[0]):
            out[r] += bias
    return out


@njit
def _mm_packed_zmm(a2, a_zp, col, ldc, n, bias):
    """_mm_packed with the AVX-512BW micro-kernel (the lane count must be a literal), + bias (N,) or ()."""
    return _with_bias(_mm_packed(16, a2, a_zp, col, ldc, n), bias)


@njit
def _mm_packed_ymm(a2, a_zp, col, ldc, n, bias):
    """_mm_packed with the AVX2 micro-kernel, + bias (N,) or ()."""
    return _with_bias(_mm_packed(8, a2, a_zp, col, ldc, n), bias)


@njit
def _mm_pairs_zmm(a3, a_zp, b3, b_zp):
    """_mm_pairs with the AVX-512BW micro-kernel (the lane count must be a literal)."""
    return _mm_pairs(16, a3, a_zp, b3, b_zp)


@njit
def _mm_pairs_ymm(a3, a_zp, b3, b_zp):
    """_mm_pairs with the AVX2 micro-kernel."""
    return _mm_pairs(8, a3, a_zp, b3, b_zp)


MM_PAIRS = {16: _mm_pairs_zmm, 8: _mm_pairs_ymm}  # pairmadd lane count -> batched matmul
MM_PACKED = {16: _mm_packed_zmm, 8: _mm_packed_ymm}  # pairmadd lane count -> matmul with B packed at plan time
MM_QUADS = {16: _mm_quads_zmm, 8: _mm_quads_ymm}  # pairmadd.DPBUSD_LANES -> the same on byte quads
_BYTE_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127)}


def _max_diff(v, zp):
    """max |v − zp| (at least 1): v's range from its dtype for bytes, else from the data."""
    lo, hi = _BYTE_RANGE[v.dtype] if v.dtype in _BYTE_RANGE else (int(v.min(initial=0)), int(v.max(initial=0)))
    return max(1, hi - int(zp.min()), int(zp.max()) - lo)


def matmul_acc(a, a_zp, b, b_zp):
    """acc:i32 = Σ_k (a − a_zp)·(b − b_zp), numpy matmul broadcasting; int32, wraps on overflow.

    a: integer (..., M, K); a_zp: int scalar, or int array (M,) per row; b: integer (..., K, N);
    b_zp: int scalar or int32 array (N,) per column. No rounding, no saturation. Path: module doc.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    azp = np.asarray(a_zp, np.int32)
    bzp = np.asarray(b_zp, np.int32)
    vec_a, vec_b = a.ndim == 1, b.ndim == 1
    if vec_a:
        a = a[None, :]
    if vec_b:
        b = b[:, None]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a, b = (v if v.shape[:-2] == batch else np.broadcast_to(v, batch + v.shape[-2:]) for v in (a, b))
    (m, k), n = a.shape[-2:], b.shape[-1]
    azp = np.broadcast_to(azp.reshape(-1), (m,)).astype(np.int32)  # a writeable copy
    bzp = np.broadcast_to(bzp.reshape(-1), (n,)).astype(np.int32)
    a_abs, b_abs = _max_diff(a, azp), _max_diff(b, bzp)
    kc = (F32_EXACT - 1) // (a_abs * b_abs)
    if pairmadd.LANES and max(a_abs, b_abs) <= pairmadd.I16_ABS:
        a3, b3 = (np.ascontiguousarray(v).reshape((-1,) + v.shape[-2:]) for v in (a, b))
        acc = MM_PAIRS[pairmadd.LANES](a3, azp, b3, bzp)
        acc = acc.reshape(batch + (m, n))
    else:
        ad = a.astype(np.int32) - azp.reshape(-1, 1)
        bd = b.astype(np.int32) - bzp
        if kc > 0:
            af, bf = ad.astype(np.float32), bd.astype(np.float32)
            acc = np.zeros(batch + (m, n), np.int32)
            for k0 in range(0, k, kc):
                acc += np.matmul(af[..., k0:k0 + kc], bf[..., k0:k0 + kc, :]).astype(np.int32)
        else:
            a2 = ad.reshape((-1, m, k))
            b2 = bd.reshape((-1, k, n))
            acc = np.stack([_mm_i32(np.ascontiguousarray(x), np.ascontiguousarray(y)) for x, y in zip(a2, b2)])
            acc = acc.reshape(batch + (m, n))
    if vec_a:
        acc = acc[..., 0, :]
    if vec_b:
        acc = acc[..., 0]
    return acc


def pack_matmul_b(b_kn, b_zp):
    """Plan-time preparation of a constant B (K, N) for `matmul_acc_packed` (done once per session):
    -> (b, b_zp:i32 (N,), col, ldc, quads): col = B's columns as pair words (`_pack_columns`; rows of
    ldc, a multiple of every variant's tile width) when every b − b_zp fits int16, else None; quads =
    (wd = b − b_zp transposed as s8 quads (`pairmadd.pack_quads`), Σ_k wd per column as int64) when
    every b − b_zp fits int8, else None."""
    b = np.ascontiguousarray(b_kn)
    k, n = b.shape
    bzp = np.broadcast_to(np.asarray(b_zp, np.int32).reshape(-1), (n,)).astype(np.int32)
    ldc = -(-n // pairmadd.tile_columns(16)) * pairmadd.tile_columns(16)  # also a multiple of the AVX2 width
    col = None
    if _max_diff(b, bzp) <= pairmadd.I16_ABS:
        col = np.zeros((k + 1) // 2 * ldc, np.int32)
        _pack_columns(b, bzp, col, ldc)
    quads = None
    wd = b.astype(np.int64) - bzp
    if k and n and -128 <= wd.min() and wd.max() <= 127:
        quads = pairmadd.pack_quads(np.ascontiguousarray(wd.T, np.int8)), wd.sum(axis=0)
    return b, bzp, col, ldc, quads


def matmul_acc_packed(a, a_zp, packed):
    """matmul_acc(a, a_zp, b, b_zp) with B and b_zp from `pack_matmul_b`. A byte `a` whose differences
    fit int16 takes one Numba call (`_mm_packed` on a's rows, leading dimensions folded into M when
    a_zp is one value; the pair variant pairmadd.LANES at call time); anything else goes through
    matmul_acc."""
    a = np.asarray(a)
    return matmul_acc_packed_for(a.shape, a.dtype, a_zp, packed)(a)


def matmul_acc_packed_for(a_shape, a_dtype, a_zp, packed, bias=None):
    """-> acc(a): matmul_acc_packed of A of this shape and dtype, + bias (int32 (N,), QGemm's C as a
    row; wraps) when given; the path, the pair variant (pairmadd.LANES now) and the rows view
    settled once (a session binds one per input shape)."""
    row = np.zeros(0, np.int32) if bias is None else np.ascontiguousarray(bias, np.int32)
    b, bzp, col, ldc, quads = packed
    lanes = pairmadd.LANES
    a_shape = tuple(a_shape)
    byte = _BYTE_RANGE.get(np.dtype(a_dtype)) if a_shape else None
    k, n = b.shape
    if quads is not None and pairmadd.DPBUSD_LANES and np.dtype(a_dtype) in (np.uint8, np.int8) \
            and np.size(a_zp) == 1 and a_shape[-1] == k and math.prod(a_shape[:-1]) >= QUAD_MIN_ROWS:
        flip = 0x80 if np.dtype(a_dtype) == np.int8 else 0
        zp = int(np.asarray(a_zp).reshape(-1)[0]) + (128 if flip else 0)
        qbias = np.concatenate([(row.astype(np.int64) if row.size else 0) - zp * quads[1],
                                np.zeros(pairmadd.MR - 1, np.int64)]).astype(np.int32)  # mod 2^32, as the sums
        return Bound(MM_QUADS[pairmadd.DPBUSD_LANES], (flip, quads[0], qbias, n), ((0, (-1, k)),),
                     shape=a_shape[:-1] + (n,))
    if byte is not None and col is not None and lanes and a_shape[-1] == k:
        azp = np.asarray(a_zp, np.int32).reshape(-1)
        z_lo, z_hi = (int(azp[0]),) * 2 if azp.size == 1 else (int(azp.min(initial=0)), int(azp.max(initial=0)))
        if (azp.size == 1 or (len(a_shape) == 2 and azp.size == a_shape[0])) \
                and max(byte[1] - z_lo, z_hi - byte[0]) <= pairmadd.I16_ABS:
            return Bound(MM_PACKED[lanes], (azp, col, ldc, n, row), ((0, (-1, k)),), shape=a_shape[:-1] + (n,))
    if bias is None:
        return lambda a: matmul_acc(a, a_zp, b, bzp)
    return lambda a: add_bias_i32(matmul_acc(a, a_zp, b, bzp), row)


def add_bias_i32(acc_i32, bias_i32):
    """acc:i32 + bias:i32 (numpy broadcasting; QGemm's C), int32, wraps modulo 2^32 on overflow as
    onnxruntime's int32 accumulator does (the golden kernel raises instead)."""
    return np.add(acc_i32, np.asarray(bias_i32, np.int32), dtype=np.int32)
