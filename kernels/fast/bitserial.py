"""Fast bit-serial (binary-decomposed) convolution and GEMM; same contract as golden.bitserial.

acc:i32 = Σ_valid (x − x_zp)(w − w_zp[m]) + bias[m], the accumulator of conv_acc / matmul_acc, as
    α_x·α_w·Σ_{i,j} c_i·c_j·popcount(X_i AND W_j) + α_x·bw[m]·Σx̃ + bx·Σ_valid (w − w_zp[m]) + bias[m]
(encodings, c, α, β, bx, bw: see golden.bitserial; but signed values here in offset binary, code
v + 2^(B−1) with β = −2^(B−1), so that every c_k = 2^k and α ∈ {1, 2}: the plane pairs' weights
α_x·α_w·c_i·c_j are powers of two). Popcount sums in int64 lanes; the corrections and the result
in int32 lanes, modulo 2^32 (the result wraps like the direct fast kernels' int32 accumulator;
the golden one raises).

Layout. Reduction order (kh, kw, c) per group (channels fastest), planes lsb_first in uint64
words, K padded with zero bits to KW = ceil(K/64) words. Weights (plan time): (M + 3, B_w, KW),
3 zero rows past M so that a block of 4 channels may run past the last one. Activations (run
time, per image and group): (B_x, KW, P), positions contiguous, built in two passes:
(1) pixel words: bit c mod 64 of word [k, c div 64, pixel] = plane k of x[c, pixel], code
    ((v + add) >> shift) & mask (unsigned x; signed x + 2^(B−1); bipolar (x + 1) >> 1), 8 pixels
    per uint64 (SWAR decode and range check, an 8x8 byte transpose per 8 channels x 8 pixels, 8 of
    them at once in vectors);
(2) im2col of whole pixel words: row copies when C/group is a multiple of 64, else per position
    with funnel shifts to bit offset (i·kW + j)·C/group; Σx̃ per position from the popcounts.
Padding: when x_zp is a value of the activation encoding, taps outside the image hold x_zp's plane
bits, so x − x_zp = 0 there and the window needs no border correction. Otherwise they hold zero
planes and Σ_valid (w − w_zp), which depends on the position only through the interval of kernel
rows and columns inside the image, takes one value per (row class, column class): the interior
class applied in the vector loop, the border positions patched after it.

Inner loop (`_tiles`), register-resident: per chunk of CHUNK positions, blocks of TILE = 4
channels x LANES = 32 positions. The popcount sums are LLVM vectors <32 x i64> (`_Lanes`, a Numba
type whose values are SSA vectors, so loop-carried values live in registers: 16 zmm on AVX-512)
and the block's results <32 x i32> (`_Sums`, 8 zmm). The results start at the corrections; the
plane pairs' weighted popcounts accumulate by Horner's rule, pairs by descending weight 2^e: each
pair adds Σ_t popcount(x & w) over all KW words (per word: one vector load of x, the 4 weight words
broadcast, 4 AND + popcount + add), the sums double between weights (no multiply, no narrowing per
pair); results += sums (modulo 2^32); stored once. Popcount is LLVM's vector llvm.ctpop:
zmm vpopcntq on AVX-512 VPOPCNTDQ (this VM, Zen 4/5), a vpshufb nibble table + vpsadbw on AVX2
(both lowerings compiled and run by the tests), LLVM's bit-twiddling expansion elsewhere.
GEMM: B's columns are the positions (packed at plan time, (B_b, KW, N) padded to LANES) and A's
rows the channel blocks (packed per call, (rows + 3, B_a, KW)), so one row of A (a GEMV) still
fills the vectors. Parallel: numba prange over position chunks (and pixel blocks / word rows in
packing); threads = numba.set_num_threads.
"""
import functools

import numpy as np
from llvmlite import ir as llir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from npusim_kernels.fast._jit import njit

TILE = 4  # output channels per block (weights hold TILE − 1 zero rows past M)
LANES = 32  # positions per register block: 4 zmm (AVX-512) or 8 ymm (AVX2) per channel
CHUNK = 128  # positions per parallel work item (a multiple of LANES)
PIX_BLOCK = 1024  # pixels per parallel work item of the activation packing
_LSB8 = np.uint64(0x0101010101010101)   # bit 0 of each byte
_GATHER8 = np.uint64(0x0102040810204080)  # moves bit 0 of byte t to bit 56 + t


@intrinsic
def _popcount(typingctx, v):
    """llvm.ctpop.i64 of a uint64, as int64 (popcnt / vpopcntq when the CPU has them)."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return sig, codegen


class _Lanes(types.Type):
    """LANES 64-bit integers as one LLVM vector <LANES x i64>: a value of this type lives in vector
    registers (loop-carried values become vector phis), so a block of sums stays out of memory."""

    def __init__(self):
        super().__init__(name=f"i64x{LANES}")


class _Sums(types.Type):
    """LANES 32-bit integers as one LLVM vector <LANES x i32> (vector registers, like `_Lanes`): a block's
    int32 results, computed modulo 2^32."""

    def __init__(self):
        super().__init__(name=f"i32x{LANES}")


_LANES, _SUMS = _Lanes(), _Sums()
_VEC = llir.VectorType(llir.IntType(64), LANES)
_VEC32 = llir.VectorType(llir.IntType(32), LANES)


@register_model(_Lanes)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


@register_model(_Sums)
class _SumsModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC32)


def _words(arr, bits=64):
    """A contiguous 1-D array of `bits`-bit integers."""
    return isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" \
        and isinstance(arr.dtype, types.Integer) and arr.dtype.bitwidth == bits


def _lanes_ptr(context, builder, arrty, arr, idx, vty=_VEC):
    """Pointer to LANES elements of `arr` from `idx`, as a pointer to the vector type `vty`."""
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [idx]), vty.as_pointer())


def _splat(builder, v, vty=_VEC):
    one = builder.insert_element(llir.Constant(vty, llir.Undefined), v, llir.Constant(llir.IntType(32), 0))
    return builder.shuffle_vector(one, one, llir.Constant(llir.VectorType(llir.IntType(32), LANES), [0] * LANES))


def _splat32(builder, v):
    """LANES copies of the 64-bit integer v truncated to 32 bits."""
    return _splat(builder, builder.trunc(v, llir.IntType(32)), _VEC32)


@intrinsic
def _vsplat(typingctx, v):
    """LANES copies of the 64-bit integer v."""
    if isinstance(v, types.Integer) and v.bitwidth == 64:
        return _LANES(v), lambda context, builder, sig, args: _splat(builder, args[0])


@intrinsic
def _vload(typingctx, arr, idx):
    """arr[idx : idx + LANES] of a contiguous 1-D 64-bit array (no bounds check)."""
    if _words(arr) and isinstance(idx, types.Integer):
        return _LANES(arr, idx), lambda context, builder, sig, args: builder.load(
            _lanes_ptr(context, builder, sig.args[0], *args), align=8)


@intrinsic
def _vload32(typingctx, arr, idx):
    """arr[idx : idx + LANES] of a contiguous 1-D int32 array (no bounds check)."""
    if _words(arr, 32) and isinstance(idx, types.Integer):
        return _SUMS(arr, idx), lambda context, builder, sig, args: builder.load(
            _lanes_ptr(context, builder, sig.args[0], *args, _VEC32), align=4)


@intrinsic
def _vstore32(typingctx, arr, idx, v):
    """arr[idx : idx + LANES] = v for a contiguous 1-D int32 array (no bounds check)."""
    if _words(arr, 32) and isinstance(idx, types.Integer) and v == _SUMS:
        def codegen(context, builder, sig, args):
            builder.store(args[2], _lanes_ptr(context, builder, sig.args[0], args[0], args[1], _VEC32), align=4)
            return context.get_dummy_value()
        return types.none(arr, idx, v), codegen


@intrinsic
def _vsums(typingctx, v):
    """LANES copies of the 64-bit integer v modulo 2^32."""
    if isinstance(v, types.Integer) and v.bitwidth == 64:
        return _SUMS(v), lambda context, builder, sig, args: _splat32(builder, args[0])


@intrinsic
def _vsums_mul_add(typingctx, acc, x, c):
    """acc + c·x lane by lane modulo 2^32: x int32 lanes (`_Sums`), c a 64-bit integer (truncated)."""
    if acc == _SUMS and x == _SUMS and isinstance(c, types.Integer) and c.bitwidth == 64:
        return _SUMS(acc, x, c), lambda context, builder, sig, args: builder.add(
            args[0], builder.mul(args[1], _splat32(builder, args[2])))


@intrinsic
def _vsums_add(typingctx, acc, x):
    """acc + x lane by lane modulo 2^32, x int64 lanes (`_Lanes`, truncated)."""
    if acc == _SUMS and x == _LANES:
        return _SUMS(acc, x), lambda context, builder, sig, args: builder.add(
            args[0], builder.trunc(args[1], _VEC32))


@intrinsic
def _vpopcount_and_add(typingctx, acc, x, w):
    """acc + popcount(x & w) lane by lane, w a 64-bit word (broadcast): llvm.ctpop on the vector,
    vpopcntq with AVX-512 VPOPCNTDQ, a vpshufb nibble-table count on AVX2, scalar otherwise."""
    if acc == _LANES and x == _LANES and isinstance(w, types.Integer) and w.bitwidth == 64:
        def codegen(context, builder, sig, args):
            ctpop = cgutils.get_or_insert_function(builder.module, llir.FunctionType(_VEC, [_VEC]),
                                                   f"llvm.ctpop.v{LANES}i64")
            return builder.add(args[0], builder.call(ctpop, [builder.and_(args[1], _splat(builder, args[2]))]))
        return _LANES(acc, x, w), codegen


@intrinsic
def _vadd(typingctx, a, b):
    """a + b lane by lane (`_Lanes`, modulo 2^64)."""
    if a == _LANES and b == _LANES:
        return _LANES(a, b), lambda context, builder, sig, args: builder.add(args[0], args[1])


def _i32(*v):
    return tuple(np.int32(e) for e in v)


def _encoding(bits, signed, bipolar, what):
    """-> (c int64 (B,) plane weights c_k = 2^k (read-only), α, β, code parameters (lo, hi, bad, add, shift, mask),
    int32); a ValueError naming `what` for a bit width the encoding does not have.

    Valid values are lo..hi except `bad`; code = ((v + add) >> shift) & mask holds the plane bits and
    v = α·Σ_k c_k·bit k of code + β. Signed values in offset binary (code v + 2^(B−1), β = −2^(B−1)),
    not golden's two's complement with c_(B−1) < 0, so that every plane weight is a power of two."""
    if not 1 <= bits <= 8:
        raise ValueError(f"{what}: bit width {bits} outside 1..8")
    if bipolar and bits != 1:
        raise ValueError(f"{what}: bipolar encoding needs 1 bit, got {bits}")
    return _encoding_of(int(bits), bool(signed), bool(bipolar))


@functools.cache
def _encoding_of(bits, signed, bipolar):
    """`_encoding` of a valid bit width, built once (it runs on every call of the kernels)."""
    c = np.array([1 << k for k in range(bits)], np.int64)
    c.flags.writeable = False
    if bipolar:
        return c, 2, -1, _i32(-1, 1, 0, 1, 1, 1)
    if signed:
        half = 1 << (bits - 1)
        return c, 1, -half, _i32(-half, half - 1, 1 << 20, half, 0, (1 << bits) - 1)
    return c, 1, 0, _i32(0, (1 << bits) - 1, 1 << 20, 0, 0, (1 << bits) - 1)


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


def _as_u8(v, code_args):
    """(v flat as uint8, code_args + (flip,)): the kernels read one container type (one compiled
    specialization) and decode a value as u − 2·(u & flip), flip = 128 for an int8 container."""
    return v.reshape(-1).view(np.uint8), code_args + (np.int32(128 if v.dtype == np.int8 else 0),)


@njit(parallel=True)
def _pack_planes(codes, rows, nb, kw_n, words, r_step, k_step, q_step):
    """words[r·r_step + k·k_step + q·q_step] = bits k of codes[r, 64q .. 64q + 63], code t at bit t
    (lsb_first), for r < rows, k < nb, q < KW. codes: uint8 (rows, 64·KW) flat; 8 codes per multiply."""
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
                words[r * r_step + k * k_step + q * q_step] = word


@njit(parallel=True)
def _tiles(xt, nb_x, p_stride, ww, m_base, nb_w, kw_n, log_alpha, sx, bw, rx, tab, edge_pos, edge_cls, bias, out,
           out_base, n_pos, n_ch):
    """out[out_base + m·n_pos + p] = i32(Σ_{j,i} 2^(i+j+log_alpha)·Σ_t popcount(xt[i, t, p] & ww[mm, j, t])
        + sx[p]·bw[mm] + rx[p]·tab[mm, cls(p)] + bias[mm]),  mm = m_base + m, m < n_ch, p < n_pos,
    where cls(p) = 0 except at positions edge_pos[e] (cls edge_cls[e]; patched after the vector loop).

    xt: uint64 (nb_x, KW, p_stride) flat, positions contiguous, p_stride = n_pos rounded up to
    LANES; sx, rx: int32 (p_stride,), modulo 2^32 (the values past n_pos are read, their sums dropped);
    ww: uint64 (M + 3, nb_w, KW) flat (rows past M zero, so a block of TILE channels may run past
    the group); out: int32, flat. prange over chunks of CHUNK positions; per chunk, blocks of TILE
    channels x LANES positions whose results stay in registers (`_Sums`, int32 lanes): they start at
    the corrections; the plane pairs' sum P = Σ_{j,i} 2^e·Σ_t popcount(x & w), e = i + j + log_alpha,
    builds up in int64 lanes (`_Lanes`) by Horner's rule: for e descending, the pairs of weight 2^e
    add their popcounts over all KW words (one vector load of x per word for the TILE channels,
    their weight words broadcast), then P doubles (P + P) unless e = 0; no multiply. Then
    results += P, all modulo 2^32 (wraps); stored once."""
    ws = np.uint64(nb_w * kw_n)  # one weight row
    ws2, ws3 = np.uint64(2) * ws, np.uint64(3) * ws  # unsigned offsets and indices: no wrap-around checks
    ps = np.uint64(p_stride)
    last = m_base + n_ch - 1
    for ck in prange((n_pos + CHUNK - 1) // CHUNK):
        p0 = ck * CHUNK
        ln = min(CHUNK, n_pos - p0)
        tail = np.empty(TILE * LANES, np.int32)
        e0, e1 = np.searchsorted(edge_pos, p0), np.searchsorted(edge_pos, p0 + CHUNK)  # this chunk's edges
        for m0 in range(0, n_ch, TILE):
            mm = m_base + m0
            m1, m2, m3 = min(mm + 1, last), min(mm + 2, last), min(mm + 3, last)  # past the group: unused
            for pb in range(0, ln, LANES):
                q0 = p0 + pb
                vs, vr = _vload32(sx, q0), _vload32(rx, q0)
                s0 = _vsums_mul_add(_vsums_mul_add(_vsums(bias[mm]), vs, bw[mm]), vr, tab[mm, 0])
                s1 = _vsums_mul_add(_vsums_mul_add(_vsums(bias[m1]), vs, bw[m1]), vr, tab[m1, 0])
                s2 = _vsums_mul_add(_vsums_mul_add(_vsums(bias[m2]), vs, bw[m2]), vr, tab[m2, 0])
                s3 = _vsums_mul_add(_vsums_mul_add(_vsums(bias[m3]), vs, bw[m3]), vr, tab[m3, 0])
                a0 = a1 = a2 = a3 = _vsplat(np.int64(0))
                for e in range(nb_w + nb_x - 2 + log_alpha, -1, -1):  # Horner: weights 2^e, e = i + j + log_alpha
                    d = e - log_alpha
                    for j in range(max(0, d - nb_x + 1), min(d, nb_w - 1) + 1):  # the pairs (j, i = d − j)
                        r0 = np.uint64(mm * nb_w * kw_n + j * kw_n)
                        xo = np.uint64((d - j) * kw_n * p_stride + q0)
                        for t in range(r0, r0 + np.uint64(kw_n)):
                            x = _vload(xt, xo)
                            a0 = _vpopcount_and_add(a0, x, ww[t])
                            a1 = _vpopcount_and_add(a1, x, ww[t + ws])
                            a2 = _vpopcount_and_add(a2, x, ww[t + ws2])
                            a3 = _vpopcount_and_add(a3, x, ww[t + ws3])
                            xo += ps
                    if e > 0:
                        a0, a1, a2, a3 = _vadd(a0, a0), _vadd(a1, a1), _vadd(a2, a2), _vadd(a3, a3)
                s0, s1, s2, s3 = _vsums_add(s0, a0), _vsums_add(s1, a1), _vsums_add(s2, a2), _vsums_add(s3, a3)
                o = out_base + m0 * n_pos + q0
                if pb + LANES <= ln and m0 + TILE <= n_ch:
                    _vstore32(out, o, s0)
                    _vstore32(out, o + n_pos, s1)
                    _vstore32(out, o + 2 * n_pos, s2)
                    _vstore32(out, o + 3 * n_pos, s3)
                else:  # the last positions or channels: through `tail`
                    _vstore32(tail, 0, s0)
                    _vstore32(tail, LANES, s1)
                    _vstore32(tail, 2 * LANES, s2)
                    _vstore32(tail, 3 * LANES, s3)
                    for dm in range(min(TILE, n_ch - m0)):
                        for p in range(min(LANES, ln - pb)):
                            out[o + dm * n_pos + p] = tail[dm * LANES + p]
            for dm in range(min(TILE, n_ch - m0)):
                t0 = tab[mm + dm, 0]
                o = out_base + (m0 + dm) * n_pos
                for e in range(e0, e1):
                    q = edge_pos[e]
                    out[o + q] = np.int32(np.int64(out[o + q]) + rx[q] * (tab[mm + dm, edge_cls[e]] - t0))


@intrinsic
def _load_u64(typingctx, arr, idx):
    """The 8 bytes arr[idx : idx + 8] of a contiguous 1-D uint8 array as one little-endian uint64
    (an unaligned load; no bounds check)."""
    if _words(arr, 8) and isinstance(idx, types.Integer):
        return types.uint64(arr, idx), lambda context, builder, sig, args: builder.load(
            _lanes_ptr(context, builder, sig.args[0], *args, llir.IntType(64)), align=1)


_HI8 = np.uint64(0x8080808080808080)  # bit 7 of each byte
_LO7 = np.uint64(0x7F7F7F7F7F7F7F7F)


@njit
def _bytes_out_of_range(t, tlo, span, check_bad, tbad):
    """Nonzero iff some byte b of t (8 bytes at once) has (b − tlo) mod 256 > span, or equals tbad when
    check_bad. tlo, span, tbad: one byte value broadcast to the 8 bytes (× 0x0101…01)."""
    d = ((t | _HI8) - (tlo & _LO7)) ^ ((t ^ ~tlo) & _HI8)  # b − tlo per byte, mod 256
    s = (d & _LO7) + (_LO7 - (span & _LO7))                # bit 7 set iff (d mod 128) > (span mod 128)
    over = (d | s) if (span & _HI8) == 0 else (d & s)
    if check_bad:
        z = t ^ tbad
        over |= (z - _LSB8) & ~z                            # bit 7 of a byte equal to tbad (some byte: exact)
    return over & _HI8


@njit
def _transpose8(a0, a1, a2, a3, a4, a5, a6, a7):
    """The 8x8 byte matrix a_i (byte j of word i), transposed: word j holds byte j of every a_i."""
    m, sh = np.uint64(0x00000000FFFFFFFF), np.uint64(32)
    a0, a4 = (a0 & m) | ((a4 & m) << sh), ((a0 >> sh) & m) | (a4 & ~m)
    a1, a5 = (a1 & m) | ((a5 & m) << sh), ((a1 >> sh) & m) | (a5 & ~m)
    a2, a6 = (a2 & m) | ((a6 & m) << sh), ((a2 >> sh) & m) | (a6 & ~m)
    a3, a7 = (a3 & m) | ((a7 & m) << sh), ((a3 >> sh) & m) | (a7 & ~m)
    m, sh = np.uint64(0x0000FFFF0000FFFF), np.uint64(16)
    a0, a2 = (a0 & m) | ((a2 & m) << sh), ((a0 >> sh) & m) | (a2 & ~m)
    a1, a3 = (a1 & m) | ((a3 & m) << sh), ((a1 >> sh) & m) | (a3 & ~m)
    a4, a6 = (a4 & m) | ((a6 & m) << sh), ((a4 >> sh) & m) | (a6 & ~m)
    a5, a7 = (a5 & m) | ((a7 & m) << sh), ((a5 >> sh) & m) | (a7 & ~m)
    m, sh = np.uint64(0x00FF00FF00FF00FF), np.uint64(8)
    a0, a1 = (a0 & m) | ((a1 & m) << sh), ((a0 >> sh) & m) | (a1 & ~m)
    a2, a3 = (a2 & m) | ((a3 & m) << sh), ((a2 >> sh) & m) | (a3 & ~m)
    a4, a5 = (a4 & m) | ((a5 & m) << sh), ((a4 >> sh) & m) | (a5 & ~m)
    a6, a7 = (a6 & m) | ((a7 & m) << sh), ((a6 >> sh) & m) | (a7 & ~m)
    return a0, a1, a2, a3, a4, a5, a6, a7


_V8 = llir.VectorType(llir.IntType(64), 8)


def _shuffle8(builder, a, b, mask):
    return builder.shuffle_vector(a, b, llir.Constant(llir.VectorType(llir.IntType(32), 8), mask))


@intrinsic
def _transpose8x8_store(typingctx, grp, g0, nbk, b, pw, d):
    """`_transpose8` of 8 blocks at once: for l < 8, the 8 words _transpose8(grp[g0 + b + l], grp[g0 + nbk + b + l],
    .., grp[g0 + 7·nbk + b + l]) go to pw[d + 8·l .. d + 8·l + 7]. Vectors of 8 uint64 (one zmm, two ymm on
    AVX2): the byte transpose lane by lane (lane l: block b + l), then an 8x8 transpose of the words by shuffles,
    so the stores are contiguous. grp, pw: contiguous 1-D uint64 arrays (no bounds check)."""
    if _words(grp) and _words(pw) and all(isinstance(v, types.Integer) for v in (g0, nbk, b, d)):
        def codegen(context, builder, sig, args):
            grp_v, g0_v, nbk_v, b_v, pw_v, d_v = args
            i64 = llir.IntType(64)
            a = [builder.load(_lanes_ptr(context, builder, sig.args[0], grp_v, builder.add(
                builder.add(g0_v, builder.mul(nbk_v, llir.Constant(i64, g))), b_v), _V8), align=8) for g in range(8)]
            for mask, sh, pairs in ((0x00000000FFFFFFFF, 32, ((0, 4), (1, 5), (2, 6), (3, 7))),
                                    (0x0000FFFF0000FFFF, 16, ((0, 2), (1, 3), (4, 6), (5, 7))),
                                    (0x00FF00FF00FF00FF, 8, ((0, 1), (2, 3), (4, 5), (6, 7)))):
                m, nm, shv = (llir.Constant(_V8, [v] * 8) for v in (mask, ~mask & (2 ** 64 - 1), sh))
                for i, j in pairs:  # as in _transpose8
                    a[i], a[j] = (builder.or_(builder.and_(a[i], m), builder.shl(builder.and_(a[j], m), shv)),
                                  builder.or_(builder.and_(builder.lshr(a[i], shv), m), builder.and_(a[j], nm)))
            even, odd = [0, 8, 2, 10, 4, 12, 6, 14], [1, 9, 3, 11, 5, 13, 7, 15]  # words: a[e][l] -> t[l][e]
            s = [_shuffle8(builder, a[i & ~1], a[i | 1], odd if i & 1 else even) for i in range(8)]
            lo2, hi2 = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
            qv = {}
            for base in (0, 4):  # rows base .. base + 3: lanes (l, l + 4) for l = 0, 1, 2, 3
                qv[base, 0] = _shuffle8(builder, s[base], s[base + 2], lo2)
                qv[base, 2] = _shuffle8(builder, s[base], s[base + 2], hi2)
                qv[base, 1] = _shuffle8(builder, s[base + 1], s[base + 3], lo2)
                qv[base, 3] = _shuffle8(builder, s[base + 1], s[base + 3], hi2)
            data = context.make_array(sig.args[4])(context, builder, pw_v).data
            for l in range(4):
                for h, mask in ((0, [0, 1, 2, 3, 8, 9, 10, 11]), (4, [4, 5, 6, 7, 12, 13, 14, 15])):
                    t = _shuffle8(builder, qv[0, l], qv[4, l], mask)  # lane l + h of every row
                    ptr = builder.gep(data, [builder.add(d_v, llir.Constant(i64, 8 * (l + h)))])
                    builder.store(t, builder.bitcast(ptr, _V8.as_pointer()), align=8)
            return context.get_dummy_value()
        return types.none(grp, g0, nbk, b, pw, d), codegen


@njit
def _pixel_block(xf, base, cg, hw, nb, q, b0, nbk, cwg, tlo8, span8, check_bad, tbad8, flip8, add8, mask8, sh, pw):
    """One work item of `_pixel_words`: word q (channels 64q ..) of the pixels 8·b0 .. 8·(b0 + nbk) − 1;
    returns nonzero iff a value is out of range. (A plain function: inside the prange body the loops
    along b did not vectorize as well.)"""
    grp = np.zeros(nb * 8 * nbk, np.uint64)
    over = np.uint64(0)
    for c in range(64 * q, min(cg, 64 * q + 64)):
        src = np.uint64(base + c * hw + 8 * b0)
        cb = np.uint64(c % 8)
        g = (c % 64) // 8
        for k in range(nb):
            kk = np.uint64(k)
            dst = (k * 8 + g) * nbk
            for b in range(nbk):
                u = _load_u64(xf, src + np.uint64(8 * b))
                if k == 0:  # the range check, once per value (the branch is hoisted out of the loop)
                    over |= _bytes_out_of_range(u ^ flip8, tlo8, span8, check_bad, tbad8)
                code = ((((u & _LO7) + add8) ^ (u & _HI8)) >> sh) & mask8
                grp[dst + b] |= ((code >> kk) & _LSB8) << cb
    for k in range(nb):
        g0 = k * 8 * nbk
        o = np.uint64((k * cwg + q) * hw + 8 * b0)
        for b in range(0, nbk - 7, 8):  # 8 blocks at once, then the last nbk mod 8 one by one
            _transpose8x8_store(grp, g0, nbk, b, pw, o + np.uint64(8 * b))
        for b in range(nbk - nbk % 8, nbk):
            r = _transpose8(grp[g0 + b], grp[g0 + nbk + b], grp[g0 + 2 * nbk + b], grp[g0 + 3 * nbk + b],
                            grp[g0 + 4 * nbk + b], grp[g0 + 5 * nbk + b], grp[g0 + 6 * nbk + b], grp[g0 + 7 * nbk + b])
            d = o + np.uint64(8 * b)
            pw[d], pw[d + 1], pw[d + 2], pw[d + 3] = r[0], r[1], r[2], r[3]
            pw[d + 4], pw[d + 5], pw[d + 6], pw[d + 7] = r[4], r[5], r[6], r[7]
    return over


@njit(parallel=True)
def _pixel_words(xf, base, cg, hw, nb, code_args, pw):
    """pw[k, c div 64, pix] = the word whose bit c mod 64 is bit k of code(xf[base + c·H·W + pix]), for the H·W
    pixels of cg channels (bits past cg zero); returns nonzero iff some value is outside lo..hi or equals `bad`
    (code = ((v + add) >> shift) & mask; v = u − 2·(u & flip) of the uint8 u, see `_as_u8`).
    pw: uint64 (nb, ceil(cg/64), H·W) flat.

    Eight pixels at a time, SWAR: one uint64 load holds a channel's codes of 8 pixels (byte e: pixel 8b + e),
    decoded in the bytes (byte b + add mod 256, >> shift, & mask; t = u ^ flip is v + flip, checked against
    lo + flip .. hi + flip); bit k of the 8 codes goes to bit c mod 8 of their bytes in the group word
    grp[k, c mod 64 div 8, b] (these loops run along contiguous blocks b and vectorize); an 8x8 byte transpose
    of the 8 group words of a block gives its 8 pixel words. Work items: PIX_BLOCK pixels of one 64-channel
    word, in parallel; the H·W mod 8 last pixels one by one."""
    lo, hi, bad, add, shift, mask, flip = code_args
    tlo, thi = max(lo + flip, 0), min(hi + flip, 255)
    check_bad = lo <= bad and bad <= hi
    tlo8, span8, tbad8 = np.uint64(tlo) * _LSB8, np.uint64(thi - tlo) * _LSB8, np.uint64((bad + flip) & 255) * _LSB8
    flip8, add8, mask8, sh = np.uint64(flip) * _LSB8, np.uint64(add) * _LSB8, np.uint64(mask) * _LSB8, np.uint64(shift)
    cwg = (cg + 63) // 64
    nblk = hw // 8
    per = PIX_BLOCK // 8
    n_items = (nblk + per - 1) // per
    nbad = 0
    for it in prange(cwg * n_items):
        q, b0 = it // n_items, (it % n_items) * per
        nbad += _pixel_block(xf, base, cg, hw, nb, q, b0, min(per, nblk - b0), cwg, tlo8, span8, check_bad, tbad8,
                             flip8, add8, mask8, sh, pw) != 0
    for pix in range(8 * nblk, hw):  # the last H·W mod 8 pixels
        for q in range(cwg):
            for k in range(nb):
                word = np.uint64(0)
                for c in range(64 * q, min(cg, 64 * q + 64)):
                    u = np.int32(xf[base + c * hw + pix])
                    v = u - 2 * (u & flip)
                    nbad += (v < lo) | (v > hi) | (v == bad)
                    word |= ((np.uint64(((v + add) >> shift) & mask) >> np.uint64(k)) & np.uint64(1)) << np.uint64(c % 64)
                pw[(k * cwg + q) * hw + pix] = word
    return nbad


@njit(parallel=True)
def _im2col_words(pw, nb, cg, h, w, kh, kw, sh, sw, dh, dw, top, left, oh, ow, kw_n, p_stride, xc, x_alpha, pad_code,
                  xt, sx):
    """xt[k, :, p] (rows of p_stride words) = output position p's window of pixel words pw[k, :, y, x], tap (i, j) at
    bit offset (i·kW + j)·cg; a tap outside the image holds bit k of pad_code in each of its cg bits (pad_code: the
    code of x_zp, 0 when x_zp has none); sx[p] = α·Σ_k xc[k]·popcount(xt[k, :, p]) = α·Σ x̃.

    cg a multiple of 64: every tap is whole words, copied row by row (contiguous for stride 1; one run over all
    the rows inside the image when source and destination rows have the same length, e.g. stride 1 with
    'same' padding); otherwise per position, words appended by funnel shifts."""
    cwg = (cg + 63) // 64
    n_pos = oh * ow
    ps = np.uint64(p_stride)
    plane = np.uint64(h * w)
    if cg % 64 == 0:
        for r in prange(nb * kw_n):  # one word row of xt: plane k, tap (i, j), word q
            k, t = r // kw_n, r % kw_n
            fill = np.uint64(0) - np.uint64((pad_code >> k) & 1)  # all ones or all zeros
            tap, q = t // cwg, t % cwg
            i, j = tap // kw, tap % kw
            x_lo = min(ow, max(0, (left - j * dw + sw - 1) // sw))   # first ox inside the image
            x_hi = max(x_lo, min(ow, (w - 1 + left - j * dw) // sw + 1))  # one past the last
            y_lo = min(oh, max(0, (top - i * dh + sh - 1) // sh))    # the same for oy
            y_hi = max(y_lo, min(oh, (h - 1 + top - i * dh) // sh + 1))
            row = np.uint64(r * p_stride)
            for o in range(np.uint64(y_lo * ow)):  # the rows above and below the image
                xt[row + o] = fill
            for o in range(np.uint64(y_hi * ow), np.uint64(oh * ow)):
                xt[row + o] = fill
            src = np.uint64((k * cwg + q) * h * w + (y_lo * sh + i * dh - top) * w + j * dw - left)  # at oy = y_lo
            if sw == 1 and sh * w == ow and x_lo < x_hi:  # source and destination rows advance alike: one run,
                dst = row + np.uint64(y_lo * ow)  # (y_lo, x_lo) .. (y_hi − 1, x_hi − 1), all inside the plane; its
                for o in range(np.uint64(x_lo), np.uint64(max(0, (y_hi - y_lo - 1) * ow + x_hi))):  # columns outside
                    xt[dst + o] = pw[src + o]  # the image are filled below
            else:
                for oy in range(y_lo, y_hi):
                    dst = row + np.uint64(oy * ow)
                    sy = src + np.uint64((oy - y_lo) * sh * w)  # + ox·sW, ox >= x_lo
                    if sw == 1:
                        for ox in range(np.uint64(x_lo), np.uint64(x_hi)):
                            xt[dst + ox] = pw[sy + ox]
                    else:
                        for ox in range(np.uint64(x_lo), np.uint64(x_hi)):
                            xt[dst + ox] = pw[sy + ox * np.uint64(sw)]
            for oy in range(y_lo, y_hi):  # the columns outside the image
                dst = row + np.uint64(oy * ow)
                for ox in range(np.uint64(x_lo)):
                    xt[dst + ox] = fill
                for ox in range(np.uint64(x_hi), np.uint64(ow)):
                    xt[dst + ox] = fill
        for blk in prange((n_pos + CHUNK - 1) // CHUNK):  # along contiguous positions (vectorizes)
            p0, p1 = np.uint64(blk * CHUNK), np.uint64(min(n_pos, blk * CHUNK + CHUNK))
            for p in range(p0, p1):
                sx[p] = 0
            for k in range(nb):
                ck = x_alpha * xc[k]
                for t in range(kw_n):
                    row = np.uint64((k * kw_n + t) * p_stride)
                    for p in range(p0, p1):
                        sx[p] += ck * _popcount(xt[row + p])
        return
    last = np.uint64(cg - 64 * (cwg - 1))  # bits in a tap's last word
    for p in prange(n_pos):
        oy = p // ow
        ox = p - oy * ow
        s = np.int64(0)
        for k in range(nb):
            col = np.uint64(k * kw_n * p_stride + p)
            cnt = np.int64(0)
            for q in range(np.uint64(kw_n)):
                xt[col + q * ps] = 0
            off = np.uint64(0)
            pad = (pad_code >> k) & 1
            for i in range(kh):
                iy = oy * sh + i * dh - top
                for j in range(kw):
                    ix = ox * sw + j * dw - left
                    inside = iy >= 0 and iy < h and ix >= 0 and ix < w
                    if not inside and pad == 0:  # zero words: only the offset moves
                        off += np.uint64(cg)
                        continue
                    src = np.uint64(k * cwg * h * w + iy * w + ix)
                    for q in range(np.uint64(cwg)):
                        if inside:
                            v = pw[src + q * plane]
                        else:  # the pad's plane bit in each of the tap's bits
                            v = np.uint64(0xFFFFFFFFFFFFFFFF) >> (np.uint64(64) - last) if q + np.uint64(1) == cwg \
                                else np.uint64(0xFFFFFFFFFFFFFFFF)
                        cnt += _popcount(v)
                        wi = col + (off >> np.uint64(6)) * ps
                        b = off & np.uint64(63)
                        xt[wi] |= v << b
                        if b != 0:
                            spill = v >> (np.uint64(64) - b)
                            if spill != 0:
                                xt[wi + ps] |= spill
                        off += np.uint64(64) if q + np.uint64(1) < np.uint64(cwg) else last
            s += xc[k] * cnt
        sx[p] = x_alpha * s


@njit
def _window_classes(n_out, k, stride, dil, pad, size):
    """Taps lo..hi (an interval) of output index o lie inside the input 0..size − 1; positions
    with the same (lo, hi) form a class. -> (class id (n_out,), lo (n_cls,), hi (n_cls,))."""
    ids = np.empty(n_out, np.int64)
    los = np.empty(n_out, np.int64)
    his = np.empty(n_out, np.int64)
    n = 0
    for o in range(n_out):
        lo, hi = 0, k - 1
        while lo < k and o * stride + lo * dil - pad < 0:
            lo += 1
        while hi >= 0 and o * stride + hi * dil - pad >= size:
            hi -= 1
        e = 0
        while e < n and (los[e] != lo or his[e] != hi):
            e += 1
        if e == n:
            los[n], his[n] = lo, hi
            n += 1
        ids[o] = e
    return ids, los[:n], his[:n]


@njit
def _valid_weight_sums(wdsum, kh, kw, h, w, sh, sw, dh, dw, top, left, oh, ow):
    """-> (tab int64 (M, classes), edge_pos, edge_cls int64): Σ_valid (w − w_zp[m]) of position p is
    tab[m, cls(p)], the sum of wdsum[m, i·kW + j] over the taps of p inside the image; class 0 is
    the most common one (the interior), the others are listed by position (edge_pos ascending)."""
    rid, rlo, rhi = _window_classes(oh, kh, sh, dh, top, h)
    cid, clo, chi = _window_classes(ow, kw, sw, dw, left, w)
    m = wdsum.shape[0]
    tab = np.zeros((m, len(rlo) * len(clo)), np.int64)
    for r in range(len(rlo)):
        for c in range(len(clo)):
            for i in range(rlo[r], rhi[r] + 1):
                for j in range(clo[c], chi[c] + 1):
                    for o in range(m):
                        tab[o, r * len(clo) + c] += wdsum[o, i * kw + j]
    cls = np.empty(oh * ow, np.int64)
    for y in range(oh):
        for x in range(ow):
            cls[y * ow + x] = rid[y] * len(clo) + cid[x]
    ref = 0  # the interior class (all taps inside), if there is one
    for e in range(len(rlo) * len(clo)):
        if rlo[e // len(clo)] == 0 and rhi[e // len(clo)] == kh - 1 and clo[e % len(clo)] == 0 and chi[e % len(clo)] == kw - 1:
            ref = e
    edge_pos = np.nonzero(cls != ref)[0]
    edge_cls = cls[edge_pos]
    tab[:, 0], tab[:, ref] = tab[:, ref].copy(), tab[:, 0].copy()  # the interior class becomes 0
    edge_cls[edge_cls == 0] = ref
    return tab, edge_pos, edge_cls


@njit
def _conv_bitserial(xf, code_args, n, c, h, w, nb_x, xc, x_alpha, bx, pad_code, ww, nb_w, log_alpha, bw, wdsum, bias,
                    group, kh, kw, sh, sw, dh, dw, top, left, bottom, right, oh, ow):
    """acc:i32 (N, M, OH·OW) and the count of out-of-range activation values (module doc); pad_code: the
    code of x_zp when x_zp is a value of the encoding (padded taps then hold it), else −1."""
    m = bias.shape[0]
    cg, mg = c // group, m // group
    cwg = (cg + 63) // 64
    n_pos = oh * ow
    kw_n = (kh * kw * cg + 63) // 64
    p_stride = -(-n_pos // LANES) * LANES
    pw = np.empty(nb_x * cwg * h * w, np.uint64)
    xt = np.empty(nb_x * kw_n * p_stride, np.uint64)  # words past n_pos: read, dropped
    sx = np.empty(p_stride, np.int32)
    rx = np.full(p_stride, bx, np.int32)  # modulo 2^32, like every term of the int32 result
    if pad_code >= 0:  # padded taps are x_zp: x − x_zp = 0 there, the window sums need no border classes
        tab = np.empty((m, 1), np.int64)
        for o in range(m):
            tab[o, 0] = wdsum[o].sum()
        edge_pos = edge_cls = np.zeros(0, np.int64)
    else:
        tab, edge_pos, edge_cls = _valid_weight_sums(wdsum, kh, kw, h, w, sh, sw, dh, dw, top, left, oh, ow)
    acc = np.empty(n * m * n_pos, np.int32)
    nbad = 0
    for a in range(n):
        for g in range(group):
            nbad += _pixel_words(xf, (a * c + g * cg) * h * w, cg, h * w, nb_x, code_args, pw)
            _im2col_words(pw, nb_x, cg, h, w, kh, kw, sh, sw, dh, dw, top, left, oh, ow, kw_n, p_stride, xc, x_alpha,
                          max(pad_code, 0), xt, sx)
            _tiles(xt, nb_x, p_stride, ww, g * mg, nb_w, kw_n, log_alpha, sx, bw, rx, tab, edge_pos, edge_cls, bias,
                   acc, (a * m + g * mg) * n_pos, n_pos, mg)
    return acc.reshape(n, m, n_pos), nbad


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
    b = np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (m,)).copy()  # writable: one _tiles type
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
    lo, hi, bad, add, shift, mask = code_args
    x_zp = int(x_zp)
    pad_code = ((x_zp + add) >> shift) & mask if lo <= x_zp <= hi and x_zp != bad else -1
    log_alpha = (x_alpha * w_alpha).bit_length() - 1  # α_x·α_w = 2^log_alpha
    acc, nbad = _conv_bitserial(*_as_u8(x, code_args), n, c, h, w, len(x_c), x_c, x_alpha, x_beta - x_zp, pad_code,
                                words.reshape(-1), len(w_c), log_alpha, bw, wdsum, bias, group,
                                kh, kw, sh, sw, dh, dw, top, left, bottom, right, oh, ow)
    if nbad:
        raise _range_error(x.astype(np.int32), x_bits, x_signed, x_bipolar, "bitserial activations")
    return acc.reshape(n, m, oh, ow)


def pack_bitserial_matrix(b_kn, b_bits, b_signed, b_zp, bipolar=False):
    """Plan-time planes of a constant GEMM operand b: uint8/int8 (K, N), b_zp int or int (N,) per
    column. B's columns play the output positions of `_tiles` (A's rows its channels), so the
    vectors run along N and a GEMV (one row of A) still fills them:
    -> (words uint64 (B, KW, Np) flat, N padded to Np = a multiple of LANES, c int64 (B,), α,
        sb int32 (Np,) = α·Σ_k b̃[:, n], rb int32 (Np,) = β − b_zp[n] modulo 2^32, (N, K))."""
    b = _u8_container(b_kn, "bitserial GEMM b")
    k, n = b.shape
    words, c, alpha, bw, _, _, _ = pack_bitserial_weights(b.T[:, :, None, None], b_bits, b_signed, b_zp, 0, bipolar)
    n_pad = -(-n // LANES) * LANES
    cols = np.zeros((len(c), words.shape[2], n_pad), np.uint64)
    cols[:, :, :n] = words[:n].transpose(1, 2, 0)
    sb = np.zeros(n_pad, np.int32)
    sb[:n] = alpha * (c[:, None] * np.bitwise_count(words[:n]).sum(axis=2, dtype=np.int64).T).sum(axis=0)
    rb = np.zeros(n_pad, np.int32)
    rb[:n] = bw.astype(np.int32)  # modulo 2^32, like every term of the int32 result
    return cols.reshape(-1), c, alpha, sb, rb, (n, k)


@njit(parallel=True)
def _row_codes(af, rows, k, stride, code_args, codes):
    """codes[r·stride + t] = ((v + add) >> shift) & mask for v = u − 2·(u & flip), u = af[r·K + t]
    (uint8, see `_as_u8`); returns the count of bad v."""
    lo, hi, bad, add, shift, mask, flip = code_args
    nbad = 0
    for r in prange(rows):
        nb = np.int32(0)
        src, dst = np.uint64(r * k), np.uint64(r * stride)
        for t in range(np.uint64(k)):
            u = np.int32(af[src + t])
            v = u - 2 * (u & flip)
            nb += np.int32((v < lo) | (v > hi) | (v == bad))
            codes[dst + t] = np.uint8(((v + add) >> shift) & mask)
        nbad += nb
    return nbad


@njit
def _matmul_bitserial(af, rows, k, code_args, nb_a, a_c, a_alpha, a_beta, azp_rows, cols, nb_b, log_alpha, sb, rb,
                      n_cols):
    """acc:i32 (rows, N) and the count of out-of-range values of a: A's rows packed as the weight
    rows of `_tiles` ((rows + 3, B_a, KW), 3 zero rows), B's packed columns as its positions."""
    kw_n = (k + 63) // 64
    codes = np.zeros(rows * 64 * kw_n, np.uint8)
    nbad = _row_codes(af, rows, k, 64 * kw_n, code_args, codes)
    ww = np.zeros((rows + TILE - 1) * nb_a * kw_n, np.uint64)
    _pack_planes(codes, rows, nb_a, kw_n, ww, nb_a * kw_n, kw_n, 1)
    ta = np.empty((rows, 1), np.int64)  # Σ_k (a − a_zp[r]) = α·Σ ã + K·(β − a_zp[r])
    for r in range(rows):
        s = np.int64(0)
        for i in range(nb_a):
            for q in range(kw_n):
                s += a_c[i] * _popcount(ww[(r * nb_a + i) * kw_n + q])
        ta[r, 0] = a_alpha * s + k * (a_beta - azp_rows[r])
    acc = np.empty(rows * n_cols, np.int32)
    zero = np.int64(rows - rows)  # m_base, out_base: int64 as in the conv's call (one compiled _tiles)
    _tiles(cols, nb_b, sb.shape[0], ww, zero, nb_a, kw_n, log_alpha, sb, a_beta - azp_rows, rb, ta,
           np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(rows, np.int64), acc, zero, n_cols, rows)
    return acc.reshape(rows, n_cols), nbad


def bitserial_matmul_acc(a, a_zp, a_bits, a_signed, packed_b, a_bipolar=False):
    """acc:i32 (..., M, N) = Σ_k (a − a_zp[i])·(b − b_zp[j]) by AND + popcount; int32, wraps.

    a: uint8/int8 (..., M, K) or (K,) in the declared encoding; a_zp: int, or int (M,) per row;
    packed_b: from `pack_bitserial_matrix`. A value outside the encoding is a ValueError naming it.
    """
    cols, b_c, b_alpha, sb, rb, (nn, kk) = packed_b
    av = _u8_container(a, "bitserial GEMM a")
    a_c, a_alpha, a_beta, code_args = _encoding(a_bits, a_signed, a_bipolar, "bitserial GEMM a")
    if av.shape[-1] != kk:
        raise ValueError(f"bitserial GEMM: a has K={av.shape[-1]}, b has K={kk}")
    lead = av.shape[:-1]
    rows = int(np.prod(lead, dtype=np.int64))
    mrows = lead[-1] if lead else 1
    azp = np.broadcast_to(np.asarray(a_zp, np.int64).reshape(-1), (mrows,))
    azp_rows = np.tile(azp, rows // mrows if mrows else 0)
    af, code_args = _as_u8(av, code_args)
    acc, nbad = _matmul_bitserial(af, rows, kk, code_args, len(a_c), a_c, a_alpha, a_beta, azp_rows,
                                  cols, len(b_c), (a_alpha * b_alpha).bit_length() - 1, sb, rb, nn)
    if nbad:
        raise _range_error(av.astype(np.int32), a_bits, a_signed, a_bipolar, "bitserial GEMM a")
    return acc.reshape(lead + (nn,))
