"""Golden bit-serial (binary-decomposed) convolution and GEMM: AND + popcount over bit planes.

Encodings (each operand, 1..8 bits, stored in an 8-bit container, uint8 or int8):
* "unsigned", B bits: v = Σ_{k<B} 2^k·b_k, values 0 .. 2^B − 1.
* "signed" (two's complement), B bits: v = −2^(B−1)·b_{B−1} + Σ_{k<B−1} 2^k·b_k, values −2^(B−1) .. 2^(B−1) − 1.
  The planes b_k are the low B bits of the value's 8-bit two's complement.
* "bipolar", 1 bit only: v = 2·b − 1, stored as −1 / +1 (b = 1 for +1).
Written uniformly v = α·ṽ + β with ṽ = Σ_k c_k·b_k (c_k = ±2^k as above): α = 1, β = 0 for
unsigned and signed; α = 2, β = −1, c_0 = 1 for bipolar.

Planes are packed lsb_first into uint64 words along the reduction axis: element t of a row is
bit t mod 64 of word t div 64; the row is padded with zero bits to a multiple of 64.

Convolution (NCHW / OIHW, reduction order (c, kh, kw) per group) and GEMM compute the same
int32 accumulator as conv_acc / matmul_acc, acc = Σ_valid (x − x_zp)(w − w_zp[m]) + bias[m]:
with bx = β_x − x_zp, bw[m] = β_w − w_zp[m] and padded taps holding all-zero planes (ṽ = 0),
    Σ_valid (α_x·x̃ + bx)(α_w·w̃ + bw)
      = α_x·α_w·Σ_{i,j} c_i·c_j·popcount(X_i AND W_j)      (padded taps add 0: their planes are 0)
      + α_x·bw[m]·Σ x̃                                       (per output position, x̃ = 0 at pads)
      + bx·Σ_valid (w − w_zp[m])                             (per channel; only valid taps)
The last sum is the weight sum over the taps inside the image: the same for every interior
position, smaller at the border. Computed in int64; a result outside int32 is a ValueError.
"""
import numpy as np

from npusim_kernels.golden.conv import check_i32, conv_out_hw


def _check_codes(v, bits, signed, bipolar, what):
    """ValueError unless every value of `v` lies in the declared encoding's range."""
    if not 1 <= bits <= 8:
        raise ValueError(f"{what}: bit width {bits} outside 1..8")
    if bipolar:
        if bits != 1:
            raise ValueError(f"{what}: bipolar encoding needs 1 bit, got {bits}")
        bad = (v != -1) & (v != 1)
        rng = "-1 or +1"
    else:
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        bad = (v < lo) | (v > hi)
        rng = f"{lo}..{hi}"
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what}: value {int(v[idx])} at index {idx} outside the "
                         f"{bits}-bit {'bipolar' if bipolar else 'signed' if signed else 'unsigned'} range {rng}")


def _planes(v, bits, signed, bipolar):
    """-> (planes uint8 0/1 (B, *v.shape), c int64 (B,) plane weights, α, β) with v = α·Σ c_k·planes[k] + β."""
    v = np.asarray(v).astype(np.int64)
    if bipolar:
        return ((v + 1) // 2)[None].astype(np.uint8), np.array([1], np.int64), 2, -1
    low = v & ((1 << bits) - 1)  # the low `bits` bits of the two's complement
    planes = np.stack([(low >> k) & 1 for k in range(bits)]).astype(np.uint8)
    c = np.array([1 << k for k in range(bits)], np.int64)
    if signed:
        c[-1] = -c[-1]
    return planes, c, 1, 0


def _pack_words(bits01):
    """0/1 array (..., K) -> uint64 (..., ceil(K/64)), lsb_first, zero bits past K."""
    k = bits01.shape[-1]
    kpad = -(-k // 64) * 64
    padded = np.zeros(bits01.shape[:-1] + (kpad,), np.uint8)
    padded[..., :k] = bits01
    return np.packbits(padded, axis=-1, bitorder="little").view("<u8")


def _popcount_dot(a_words, a_c, w_words, w_c):
    """Σ_{i,j} a_c[i]·w_c[j]·Σ_words popcount(a_words[i, r] AND w_words[j, m]) -> int64 (R, M).

    a_words: uint64 (A, R, KW) activation planes; w_words: uint64 (W, M, KW) weight planes."""
    out = np.zeros((a_words.shape[1], w_words.shape[1]), np.int64)
    for i in range(a_words.shape[0]):
        for j in range(w_words.shape[0]):
            cnt = np.bitwise_count(a_words[i][:, None, :] & w_words[j][None, :, :]).sum(axis=-1, dtype=np.int64)
            out += a_c[i] * w_c[j] * cnt
    return out


def _plane_sums(words, c):
    """Σ ṽ per row from its packed planes: Σ_i c[i]·popcount(words[i, r, :]) -> int64 (R,)."""
    return sum(c[i] * np.bitwise_count(words[i]).sum(axis=-1, dtype=np.int64) for i in range(len(c)))


def pack_bitserial_weights(w_oihw, w_bits, w_signed, w_zp, bias, bipolar=False):
    """Plan-time weight planes for `bitserial_conv_acc`.

    w_oihw: integer (M, C/group, kH, kW) in the declared encoding; w_bits: 1..8; w_signed: bool;
    w_zp: int or int (M,); bias: int32 (M,) or scalar; bipolar: 1-bit ±1 weights.
    -> (w_words uint64 (B, M, KW), c int64 (B,), α, β, w − w_zp int64 (M, C/group·kH·kW),
        w_zp int64 (M,), bias int64 (M,), (M, C/group, kH, kW)).
    """
    w = np.asarray(w_oihw)
    _check_codes(w.astype(np.int64), w_bits, w_signed, bipolar, "bitserial weights")
    m = w.shape[0]
    w_mk = w.reshape(m, -1).astype(np.int64)
    planes, c, alpha, beta = _planes(w_mk, w_bits, w_signed, bipolar)
    zp = np.broadcast_to(np.asarray(w_zp, np.int64).reshape(-1), (m,)).copy()
    b = np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (m,)).copy()
    return _pack_words(planes), c, alpha, beta, w_mk - zp[:, None], zp, b, w.shape


def bitserial_conv_acc(x_nchw, x_zp, x_bits, x_signed, packed, strides, pads, dilations, group, x_bipolar=False):
    """acc:i32 (N, M, OH, OW) = Σ (x − x_zp)·(w − w_zp[m]) + bias[m], by AND + popcount over bit planes.

    x_nchw: integer (N, C, H, W) in the declared encoding (x_bits, x_signed, x_bipolar); x_zp: int;
    packed: from `pack_bitserial_weights`; strides (sH, sW); pads (top, left, bottom, right);
    dilations (dH, dW); group: int. Exact; a result outside int32 is a ValueError.
    """
    w_words, w_c, w_alpha, w_beta, wd, w_zp, bias, (m, cg, kh, kw) = packed
    x = np.asarray(x_nchw).astype(np.int64)
    _check_codes(x, x_bits, x_signed, x_bipolar, "bitserial activations")
    n, c, h, w = x.shape
    if c != cg * group or m % group:
        raise ValueError(f"bitserial conv: {c} input channels, weights (M={m}, C/group={cg}), group={group}")
    oh, ow = conv_out_hw(h, w, kh, kw, strides, pads, dilations)
    planes, x_c, x_alpha, x_beta = _planes(x, x_bits, x_signed, x_bipolar)
    top, left, bottom, right = pads
    xp = np.pad(planes, ((0, 0), (0, 0), (0, 0), (top, bottom), (left, right)))  # padded taps: zero planes
    valid = np.pad(np.ones((h, w), np.int64), ((top, bottom), (left, right)))
    cols, vcols = [], []
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilations[0], j * dilations[1]
            rs = slice(r0, r0 + strides[0] * (oh - 1) + 1, strides[0])
            cs = slice(c0, c0 + strides[1] * (ow - 1) + 1, strides[1])
            cols.append(xp[..., rs, cs])       # (B, N, C, OH, OW)
            vcols.append(valid[rs, cs])        # (OH, OW)
    col = np.stack(cols, axis=3).reshape(len(x_c), n, group, cg, kh * kw, oh * ow)
    col = col.transpose(0, 1, 2, 5, 3, 4).reshape(len(x_c), n, group, oh * ow, cg * kh * kw)  # (c, i, j) order
    vmask = np.stack(vcols).reshape(kh * kw, oh * ow).T                                         # (P, kH·kW)
    vmask = np.tile(vmask, (1, cg))                                                              # (P, (c, i, j))
    x_words = _pack_words(col)                                                                   # (B, N, G, P, KW)
    mg = m // group
    acc = np.zeros((n, m, oh * ow), np.int64)
    for g in range(group):
        ms = slice(g * mg, (g + 1) * mg)
        vw = vmask @ wd[ms].T                                                                    # (P, Mg)
        for a in range(n):
            xw = x_words[:, a, g]
            dot = _popcount_dot(xw, x_c, w_words[:, ms], w_c)                                    # (P, Mg)
            sx = _plane_sums(xw, x_c)                                                            # (P,)
            bw = w_beta - w_zp[ms]
            acc[a, ms] = (x_alpha * w_alpha * dot + x_alpha * sx[:, None] * bw[None, :]
                          + (x_beta - int(x_zp)) * vw).T
    check_i32(acc, "bitserial_conv_acc Σ(x−x_zp)(w−w_zp)")
    acc += bias[None, :, None]
    check_i32(acc, "bitserial_conv_acc Σ(x−x_zp)(w−w_zp)+bias")
    return acc.reshape(n, m, oh, ow).astype(np.int32)


def pack_bitserial_matrix(b_kn, b_bits, b_signed, b_zp, bipolar=False):
    """Plan-time planes of a constant GEMM operand b: integer (K, N), b_zp int or int (N,) per column:
    the weights of a 1x1 convolution with N output channels and no bias."""
    b = np.asarray(b_kn)
    return pack_bitserial_weights(b.T[:, :, None, None], b_bits, b_signed, b_zp, 0, bipolar)


def bitserial_matmul_acc(a, a_zp, a_bits, a_signed, packed_b, a_bipolar=False):
    """acc:i32 (..., M, N) = Σ_k (a − a_zp[i])·(b − b_zp[j]), by AND + popcount over bit planes.

    a: integer (..., M, K) or (K,) in the declared encoding; a_zp: int, or int (M,) per row;
    packed_b: from `pack_bitserial_matrix`. Exact; a result outside int32 is a ValueError.
    """
    w_words, w_c, w_alpha, w_beta, bd, b_zp, _, (nn, kk, _, _) = packed_b
    a64 = np.asarray(a).astype(np.int64)
    _check_codes(a64, a_bits, a_signed, a_bipolar, "bitserial GEMM a")
    if a64.shape[-1] != kk:
        raise ValueError(f"bitserial GEMM: a has K={a64.shape[-1]}, b has K={kk}")
    lead = a64.shape[:-1]
    rows = a64.reshape(-1, kk)
    mrows = lead[-1] if lead else 1
    azp = np.broadcast_to(np.asarray(a_zp, np.int64).reshape(-1), (mrows,))
    bx = np.tile(np.broadcast_to(azp, (mrows,)), rows.shape[0] // mrows)  # per row of `rows`
    planes, a_c, a_alpha, a_beta = _planes(rows, a_bits, a_signed, a_bipolar)
    a_words = _pack_words(planes)
    dot = _popcount_dot(a_words, a_c, w_words, w_c)
    sa = _plane_sums(a_words, a_c)
    acc = (a_alpha * w_alpha * dot + a_alpha * sa[:, None] * (w_beta - b_zp)[None, :]
           + (a_beta - bx)[:, None] * bd.sum(axis=1)[None, :])
    check_i32(acc, "bitserial_matmul_acc Σ(a−a_zp)(b−b_zp)")
    return acc.reshape(lead + (nn,)).astype(np.int32)
