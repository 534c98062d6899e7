"""Fast fixed-point kernels of mode "npu" (Numba); same names, signatures and numbers as
golden.fixedpoint (docs/npu_arithmetic.md).

The offline float64 helpers (quantize_multiplier, *_params, softmax_table) are re-exported from
npusim_kernels.params, as the golden module does: they run once per session, not per inference;
the argument checks are npusim_kernels.checks, shared likewise. The integer primitives are
written independently of the golden ones (SRDHM as VQRDMULH's (p + 2^30) >> 31 instead of
gemmlowp's truncating division; RDBPOT as a biased arithmetic shift instead of mask/threshold),
so the bit-exact tests compare two derivations of the same numbers.
"""
import functools
import math

import numpy as np

from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.bound import Bound, channel_rows
from npusim_kernels.fast import pool as _pool
from npusim_kernels.fast.pool import window_span
from npusim_kernels.checks import (
    I32_MAX, I32_MIN, add_operands, check_int, check_range, check_rounding, mul_operands, pool_codes_operand,
    pool_operand)
from npusim_kernels.params import (  # noqa: F401  (offline helpers, part of this kernel set's names)
    ADD_LEFT_SHIFT, ADD_LEFT_SHIFT_16, ROUNDINGS, add_left_shift, add_params, avgpool_params,
    global_avgpool_params, hard_swish_table, mul_params, quantize_multiplier, softmax_params)


def _single(rounding):
    """rounding str -> the bool the Numba cores take (True: single rounding)."""
    check_rounding(rounding)
    return rounding == "single"


@njit(inline="always")
def _sat32(v):
    return min(max(v, np.int64(I32_MIN)), np.int64(I32_MAX))


@njit(inline="always")
def _srdhm1(a, b):
    """floor(a·b / 2^31 + 1/2) (VQRDMULH); INT32_MIN·INT32_MIN -> INT32_MAX. int64 in/out."""
    if a == I32_MIN and b == I32_MIN:
        return np.int64(I32_MAX)
    return (a * b + np.int64(1 << 30)) >> 31


@njit(inline="always")
def _rdbpot1(x, e):
    """round_half_away(x / 2^e), 0 <= e <= 62: (x + 2^(e−1) − [x < 0]) >> e. int64 in/out."""
    if e == 0:
        return x
    return (x + (np.int64(1) << (e - 1)) - np.int64(x < 0)) >> e


@njit(inline="always")
def _mbqm_consts(m0, n, single):
    """The constants of _mbqm1 for one (m0, n) under either rounding, hoisted out of the element
    loops: k = (m, L1, c1, s1, L2, R, bias, nm, path), all int64, such that for every int32 x

        v = sat32(x·2^L1);  h = (v·m + c1) >> s1;  g = sat32(h)·2^L2;
        MBQM(x) = sat32((g + bias − nm·[g < 0]) >> R)

    double: L1 = clip(−n, 0, 32), (c1, s1) = (2^30, 31) (SRDHM; m0 >= 0, so never
            INT32_MIN·INT32_MIN), L2 = 0, R = clip(n, 0, 62), bias = 2^(R−1), nm = 1
            (RDBPOT, half away from zero), or bias = nm = 0 when R = 0.
    single: t = 31 + n; 1 <= t <= 62: (c1, s1) = (2^(t−1), t); t > 62: m = 0 (the result is 0);
            t < 1: (c1, s1) = (0, 0), L2 = min(−t, 32) (sat32(sat32(x·m0)·2^−t)); L1 = R = 0.
    path = 0 (single rounding, 1 <= t) or 1 (double, n >= 0) when L1 = L2 = 0 (multipliers below 1,
    as scale ratios are) skips the steps with them and the ones that change nothing there (the R
    stage in single rounding, the final saturation in double rounding); else 2. The clips change
    no result (an int32 shifted left by 32 saturates unless 0; an int32 / 2^62 rounds to 0) and
    keep every shift in int64."""
    z = np.int64(0)
    if single:
        t = np.int64(31) + n
        if t > 62:
            return z, z, z, z, z, z, z, z, z
        if t >= 1:
            return np.int64(m0), z, np.int64(1) << (t - 1), t, z, z, z, z, z
        return np.int64(m0), z, z, z, min(-t, np.int64(32)), z, z, z, np.int64(2)
    r = min(max(n, z), np.int64(62))
    left = min(max(-n, z), np.int64(32))
    bias = (np.int64(1) << r) >> 1
    return np.int64(m0), left, np.int64(1 << 30), np.int64(31), z, r, bias, np.int64(r > 0), np.int64(2 if left else 1)


@njit(inline="always")
def _mbqm1(x, k, path):
    """MBQM of one int32 value x (int64) with the constants k of _mbqm_consts; int64 result in
    int32 range. Branch-free but for `path` (k's own, or a larger one: path 2 is right for any
    k, and path 0 or 1 for any k of the same rounding with path <= it); a loop keeps it
    invariant, even with several multipliers, so LLVM unswitches the loop on it once.
    v·m is a product of two int32 values (vpmuldq)."""
    m, l1, c1, s1, l2, r, bias, nm, _ = k
    if path == 0:
        return _sat32((np.int64(np.int32(_sat32(x))) * np.int64(np.int32(m)) + c1) >> s1)
    if path == 1:
        h = (np.int64(np.int32(_sat32(x))) * np.int64(np.int32(m)) + c1) >> s1
        return (h + bias - (np.int64(h < 0) & nm)) >> r
    v = np.int64(np.int32(_sat32(x << l1)))
    g = _sat32((v * np.int64(np.int32(m)) + c1) >> s1) << l2
    return _sat32((g + bias - (np.int64(g < 0) & nm)) >> r)


@njit
def _srdhm_core(a, b, out):
    for i in range(out.size):
        out[i] = _srdhm1(np.int64(a[i]), np.int64(b[i]))


@njit
def _rdbpot_core(x, e, out):
    for i in range(out.size):
        out[i] = _rdbpot1(np.int64(x[i]), np.int64(e[i]))


@njit
def _mbqm_core(x, m0, n, single, out):
    for i in range(out.size):
        k = _mbqm_consts(np.int64(m0[i]), np.int64(n[i]), single)
        out[i] = _mbqm1(np.int64(x[i]), k, k[8])


def _flat_i64(*arrays):
    """Broadcast, then flat contiguous int64 copies; returns (shape, flats...)."""
    bs = np.broadcast_arrays(*[np.asarray(v, np.int64) for v in arrays])
    return (bs[0].shape,) + tuple(np.ascontiguousarray(v).reshape(-1) for v in bs)


def srdhm(a, b):
    """SaturatingRoundingDoublingHighMul, elementwise, int32 in/out; see golden.fixedpoint.srdhm."""
    shape, a, b = _flat_i64(a, b)
    check_range(a, I32_MIN, I32_MAX, "srdhm a")
    check_range(b, I32_MIN, I32_MAX, "srdhm b")
    out = np.empty(a.size, np.int32)
    _srdhm_core(a, b, out)
    return out.reshape(shape)


def rdbpot(x, e):
    """RoundingDivideByPOT, int64, |x| <= 2^62, 0 <= e <= 62; see golden.fixedpoint.rdbpot."""
    shape, x, e = _flat_i64(x, e)
    check_range(x, -(2 ** 62), 2 ** 62, "rdbpot x")
    check_range(e, 0, 62, "rdbpot exponent")
    out = np.empty(x.size, np.int64)
    _rdbpot_core(x, e, out)
    return out.reshape(shape)


def mbqm(x, m0, n, rounding):
    """MultiplyByQuantizedMultiplier, broadcasting, int64 out; see golden.fixedpoint.mbqm."""
    single = _single(rounding)
    shape, x, m0, n = _flat_i64(x, m0, n)
    check_range(x, I32_MIN, I32_MAX, "mbqm x")
    check_range(m0, 0, I32_MAX, "mbqm m0")
    out = np.empty(x.size, np.int64)
    _mbqm_core(x, m0, n, single, out)
    return out.reshape(shape)


def _check_m0(*m0s):
    """The scalar multipliers of one op in [0, I32_MAX] (the message of _params' check)."""
    for i, m in enumerate(m0s):
        if not 0 <= m <= I32_MAX:
            raise ValueError(f"m0 out of [0, {I32_MAX}] at index ({i},): {int(m)}")


def _params(m0, n, size=None):
    """Multiplier parameters as flat int64 arrays, m0 checked; size (if given) must match or be 1."""
    m = np.ascontiguousarray(m0, np.int64).reshape(-1)
    s = np.ascontiguousarray(n, np.int64).reshape(-1)
    if m.size != s.size:
        raise ValueError(f"m0 has {m.size} elements but n has {s.size}")
    if size is not None and m.size not in (1, size):
        raise ValueError(f"multiplier parameters of size {m.size}, expected 1 or {size}")
    check_range(m, 0, I32_MAX, "m0")
    return m, s


# ---------------------------------------------------------------- requantize / rescale

@njit
def _requant_core(acc_3d, m0, n, single, y_zp, qmin, qmax, out):
    """out[o, c, i] = clamp(MBQM(acc[o, c, i], m0[c or 0], n[c or 0]) + y_zp, qmin, qmax).

    acc (outer, C, inner) of any int dtype (values int32); out the output dtype, written in one
    pass; the multiplier constants are hoisted per channel.
    """
    no, nc, ni = acc_3d.shape
    per_ch = m0.shape[0] > 1
    lo = np.int64(qmin) - y_zp
    hi = np.int64(qmax) - y_zp
    for c in range(nc):
        k = _mbqm_consts(m0[c if per_ch else 0], n[c if per_ch else 0], single)
        for o in range(no):
            src = acc_3d[o, c]
            dst = out[o, c]
            for i in range(ni):
                v = _mbqm1(np.int64(src[i]), k, k[8])
                dst[i] = min(max(v, lo), hi) + y_zp


def _channels_3d(acc, axis, n_params):
    """acc (contiguous) as (outer, C, inner) around `axis` for per-channel parameters, else (1, 1, size)."""
    return acc.reshape(channel_rows(acc.shape, axis if n_params > 1 else None))


def requantize_fixed(acc_i32, m0, n, axis, y_zp, qmin, qmax, out_dtype, rounding):
    """y:out_dtype = clamp(MBQM(acc, m0[c], n[c]) + y_zp, qmin, qmax); see golden.fixedpoint.

    acc_i32: int32; m0, n: size 1 or acc.shape[axis]. One Numba pass, no temporaries.
    """
    acc = np.asarray(acc_i32)
    if acc.dtype != np.int32:
        raise ValueError(f"requantize_fixed: acc must be int32, got {acc.dtype}")
    return requantize_fixed_for(acc.shape, m0, n, axis, y_zp, qmin, qmax, out_dtype, rounding)(acc)


def requantize_fixed_for(acc_shape, m0, n, axis, y_zp, qmin, qmax, out_dtype, rounding):
    """-> Bound y(acc_i32): requantize_fixed of int32 accumulators of this shape, the (outer, C,
    inner) view and the multiplier vectors settled once (a session binds one per shape)."""
    single = _single(rounding)
    shape = tuple(acc_shape)
    m, s = _params(m0, n, shape[axis] if shape else 1)
    rows = channel_rows(shape, axis if m.size > 1 else None)
    return Bound(_requant_core, (m, s, single, int(y_zp), int(qmin), int(qmax)), ((0, rows),), dtype=np.int32,
                 out=out_dtype, shape=shape, view=rows)


@njit(inline="always")
def _mbqm_i64_1(x, rm, t):
    """TFLite's int64 MBQM of one value with the Q0.15 multiplier rm and total shift t = 15 + n."""
    if t > 62:
        return np.int64(0)
    return _sat32((x * rm + (np.int64(1) << (t - 1))) >> t)


@njit(inline="always")
def _q15(m0):
    """m0 (Q0.31) -> TFLite's reduced Q0.15 multiplier, capped at 0x7FFF."""
    return np.int64(0x7FFF) if m0 >= 0x7FFF0000 else (m0 + np.int64(1 << 15)) >> 16


@njit
def _mbqm_i64_core(x, m0, n, out):
    for i in range(out.size):
        out[i] = _mbqm_i64_1(x[i], _q15(m0[i]), np.int64(15) + n[i])


def _check_i64_args(x, m0, n):
    check_range(x, -(2 ** 47) + 1, 2 ** 47 - 1, "mbqm_i64 x")
    check_range(m0, 0, I32_MAX, "mbqm_i64 m0")
    check_range(np.asarray(n, np.int64) + 15, 1, 2 ** 62, "mbqm_i64 total shift 15 + n")


def mbqm_i64(x, m0, n):
    """TFLite's MultiplyByQuantizedMultiplier(int64 x, ...), broadcasting; see golden.fixedpoint.mbqm_i64."""
    shape, x, m0, n = _flat_i64(x, m0, n)
    _check_i64_args(x, m0, n)
    out = np.empty(x.size, np.int64)
    _mbqm_i64_core(x, m0, n, out)
    return out.reshape(shape)


@njit
def _requant_i64_core(acc_3d, m0, n, y_zp, qmin, qmax, out):
    no, nc, ni = acc_3d.shape
    per_ch = m0.shape[0] > 1
    lo = np.int64(qmin) - y_zp
    hi = np.int64(qmax) - y_zp
    for c in range(nc):
        k = c if per_ch else 0
        rm, t = _q15(m0[k]), np.int64(15) + n[k]
        for o in range(no):
            for i in range(ni):
                v = _mbqm_i64_1(acc_3d[o, c, i], rm, t)
                out[o, c, i] = min(max(v, lo), hi) + y_zp


def requantize_fixed_i64(acc_i64, m0, n, axis, y_zp, qmin, qmax, out_dtype):
    """y:out_dtype = clamp(MBQM_i64(acc, m0[c], n[c]) + y_zp, qmin, qmax); see golden.fixedpoint."""
    acc = np.asarray(acc_i64)
    if acc.dtype != np.int64:
        raise ValueError(f"requantize_fixed_i64: acc must be int64, got {acc.dtype}")
    acc = np.ascontiguousarray(acc)
    shape = acc.shape
    m, s = _params(m0, n, shape[axis] if acc.ndim else 1)
    _check_i64_args(acc, m, s)
    acc3 = _channels_3d(acc, axis, m.size)
    out = np.empty(acc3.shape, out_dtype)
    _requant_i64_core(acc3, m, s, np.int64(y_zp), int(qmin), int(qmax), out)
    return out.reshape(shape)


@njit
def _rescale_core(x, x_zp, m0, n, single, y_zp, qmin, qmax, out):
    k = _mbqm_consts(m0, n, single)
    lo = np.int64(qmin) - y_zp
    hi = np.int64(qmax) - y_zp
    for i in range(x.size):
        v = _mbqm1(np.int64(x[i]) - x_zp, k, k[8])
        out[i] = min(max(v, lo), hi) + y_zp


def fixed_rescale(x, x_zp, m0, n, y_zp, qmin, qmax, out_dtype, rounding):
    """y = clamp(MBQM(x − x_zp, m0, n) + y_zp, qmin, qmax); see golden.fixedpoint.fixed_rescale."""
    single = _single(rounding)
    m, s = _params(m0, n, 1)
    x = np.ascontiguousarray(x)
    if x.dtype.kind not in "iu" or x.dtype.itemsize > 4:
        raise ValueError(f"fixed_rescale: x must be an integer type of at most 32 bits, got {x.dtype}")
    out = np.empty(x.shape, out_dtype)
    _rescale_core(x.reshape(-1), int(x_zp), int(m[0]), int(s[0]), single, int(y_zp), int(qmin), int(qmax),
                  out.reshape(-1))
    return out


# ---------------------------------------------------------------- add / mul

@functools.lru_cache(maxsize=1024)
def _split_2d(a_shape, b_shape):
    """(outer, inner, (a_outer, a_inner), (b_outer, b_inner)) when both operands broadcast as
    (outer, inner) blocks (each either full or 1 in each part), else None. Covers equal shapes,
    scalars, per-channel operands ((N, C, 1, 1) against (N, C, H, W)) and trailing ones ((W,))."""
    nd = max(len(a_shape), len(b_shape))
    a = (1,) * (nd - len(a_shape)) + tuple(a_shape)
    b = (1,) * (nd - len(b_shape)) + tuple(b_shape)
    out = tuple(max(x, y) for x, y in zip(a, b))

    def part(s, lo, hi):
        """1 if the operand is all-1 over out[lo:hi], the full size if it matches, None otherwise."""
        full = int(np.prod(out[lo:hi], dtype=np.int64))
        if all(s[i] == out[i] for i in range(lo, hi)):
            return full
        if all(s[i] == 1 for i in range(lo, hi)):
            return 1
        return None

    for k in range(nd + 1):
        pa = (part(a, 0, k), part(a, k, nd))
        pb = (part(b, 0, k), part(b, k, nd))
        if None not in pa + pb:
            return (int(np.prod(out[:k], dtype=np.int64)), int(np.prod(out[k:], dtype=np.int64)), pa, pb), out
    return None, out


@njit(inline="always")
def _add_stage(v, zp, left, k, path):
    """The per-operand stage of fixed_add: MBQM((v − zp)·2^L, m0, n) (int32, checked by the wrapper)."""
    return _mbqm1((np.int64(v) - zp) << left, k, path)


@njit(inline="always")
def _add_rows(a2, b2, a_zp, b_zp, left, ka, kb, ky, path, lo, hi, y_zp, out):
    no, ni = out.shape
    ao, bo, bi = a2.shape[0] == no, b2.shape[0] == no, b2.shape[1] == ni
    for o in range(no):
        ra = a2[o if ao else 0]
        rb = b2[o if bo else 0]
        dst = out[o]
        if bi:
            for i in range(ni):
                s = _add_stage(ra[i], a_zp, left, ka, path) + _add_stage(rb[i], b_zp, left, kb, path)
                dst[i] = min(max(_mbqm1(s, ky, path), lo), hi) + y_zp
        else:
            b1 = _add_stage(rb[0], b_zp, left, kb, path)
            for i in range(ni):
                s = _add_stage(ra[i], a_zp, left, ka, path) + b1
                dst[i] = min(max(_mbqm1(s, ky, path), lo), hi) + y_zp


def _add_core_for(path):
    """The Numba core of fixed_add for one MBQM path (_mbqm_consts; the largest of the three
    multipliers'), a constant of the closure: each path is its own compiled function, so only the
    ones a model needs are compiled (three MBQMs per element are too many for LLVM to unswitch,
    and all three paths in one loop nest took ~12 s to compile).

    out[o, i] = clamp(MBQM(a'[o, i] + b'[o, i], my, ny) + y_zp, qmin, qmax), a' and b' the
    per-operand stages of a2[o or 0, i] and b2[o or 0, i or 0] (2-D block broadcast; a2 always
    runs along the row, the wrapper swaps the operands otherwise). Two contiguous inner loops:
    b along the row, or b one value per row (its stage hoisted); both vectorize.
    """
    @njit
    def add_core(a2, b2, a_zp, b_zp, left, ma, na, mb, nb, my, ny, single, y_zp, qmin, qmax, out):
        ka, kb, ky = _mbqm_consts(ma, na, single), _mbqm_consts(mb, nb, single), _mbqm_consts(my, ny, single)
        _add_rows(a2, b2, a_zp, b_zp, left, ka, kb, ky, path, np.int64(qmin) - y_zp, np.int64(qmax) - y_zp, y_zp,
                  out)
    return add_core


_ADD_CORES = tuple(_add_core_for(path) for path in range(3))


@njit
def _mul_core(a2, b2, a_zp, b_zp, m0, n, single, y_zp, qmin, qmax, out):
    """out[o, i] = clamp(MBQM((a − a_zp)·(b − b_zp), m0, n) + y_zp, qmin, qmax) (|product| < 2^31),
    a = a2[o or 0, i], b = b2[o or 0, i or 0]; loops as fixed_add's core."""
    no, ni = out.shape
    ao, bo, bi = a2.shape[0] == no, b2.shape[0] == no, b2.shape[1] == ni
    k = _mbqm_consts(m0, n, single)
    lo = np.int64(qmin) - y_zp
    hi = np.int64(qmax) - y_zp
    for o in range(no):
        ra = a2[o if ao else 0]
        rb = b2[o if bo else 0]
        dst = out[o]
        if bi:
            for i in range(ni):
                p = (np.int64(ra[i]) - a_zp) * (np.int64(rb[i]) - b_zp)
                dst[i] = min(max(_mbqm1(p, k, k[8]), lo), hi) + y_zp
        else:
            b1 = np.int64(rb[0]) - b_zp
            for i in range(ni):
                p = (np.int64(ra[i]) - a_zp) * b1
                dst[i] = min(max(_mbqm1(p, k, k[8]), lo), hi) + y_zp


def fixed_add(a, a_zp, b, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding):
    """TFLite integer Add (L = 20; 15 for a 16-bit output), 8/16-bit, numpy broadcasting; see
    golden.fixedpoint.fixed_add."""
    a, b = np.asarray(a), np.asarray(b)
    return fixed_add_for(a.shape, a.dtype, a_zp, b.shape, b.dtype, b_zp, params, y_zp, qmin, qmax, out_dtype,
                         rounding)(a, b)


def fixed_add_for(a_shape, a_dtype, a_zp, b_shape, b_dtype, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding):
    """-> y(a, b): fixed_add of operands of these shapes and dtypes, the checks, the 2-D blocks,
    the operand order and the MBQM path settled once (a Bound when the operands broadcast as
    blocks; else their broadcast is copied at each call)."""
    single = _single(rounding)
    _, _, left = add_operands(np.empty(0, a_dtype), a_zp, np.empty(0, b_dtype), b_zp, out_dtype)
    (ma, na), (mb, nb), (my, ny) = params
    _check_m0(ma, mb, my)
    blocks = _operand_blocks(a_shape, b_shape)
    if blocks is None:
        return _broadcast_first(fixed_add_for, a_zp, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding)
    shape, view, ins, swap = blocks
    if swap:  # the sum is symmetric: the operand that runs along the row goes first
        a_zp, b_zp, ma, na, mb, nb = b_zp, a_zp, mb, nb, ma, na
    # Python ints: typed int64 as np.int64 would be, but much cheaper to dispatch
    path = max(int(_mbqm_consts(m, n, single)[8]) for m, n in ((ma, na), (mb, nb), (my, ny)))
    args = tuple(int(v) for v in (a_zp, b_zp, left, ma, na, mb, nb, my, ny)) + (single, int(y_zp), int(qmin),
                                                                                 int(qmax))
    return Bound(_ADD_CORES[path], args, ins, out=out_dtype, shape=shape, view=view)


def fixed_mul(a, a_zp, b, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding):
    """TFLite integer Mul, 8/16-bit, numpy broadcasting; see golden.fixedpoint.fixed_mul."""
    a, b = np.asarray(a), np.asarray(b)
    return fixed_mul_for(a.shape, a.dtype, a_zp, b.shape, b.dtype, b_zp, params, y_zp, qmin, qmax, out_dtype,
                         rounding)(a, b)


def fixed_mul_for(a_shape, a_dtype, a_zp, b_shape, b_dtype, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding):
    """-> y(a, b): fixed_mul of operands of these shapes and dtypes, settled once as fixed_add_for."""
    single = _single(rounding)
    mul_operands(np.empty(0, a_dtype), a_zp, np.empty(0, b_dtype), b_zp)
    m, n = params
    _check_m0(m)
    blocks = _operand_blocks(a_shape, b_shape)
    if blocks is None:
        return _broadcast_first(fixed_mul_for, a_zp, b_zp, params, y_zp, qmin, qmax, out_dtype, rounding)
    shape, view, ins, swap = blocks
    if swap:  # the product is symmetric
        a_zp, b_zp = b_zp, a_zp
    return Bound(_mul_core, (int(a_zp), int(b_zp), int(m), int(n), single, int(y_zp), int(qmin), int(qmax)), ins,
                 out=out_dtype, shape=shape, view=view)


def _operand_blocks(a_shape, b_shape):
    """(output shape, (outer, inner) view, the Bound's inputs, swap) of two operands that broadcast
    as 2-D blocks (`_split_2d`): the operand that runs along the row first (swap: b), each seen
    as its block; None for any other broadcast."""
    split, shape = _split_2d(tuple(a_shape), tuple(b_shape))
    if split is None:
        return None
    outer, inner, pa, pb = split
    swap = pa[1] != inner
    return shape, (outer, inner), ((1, pb), (0, pa)) if swap else ((0, pa), (1, pb)), swap


def _broadcast_first(binder, a_zp, b_zp, *rest):
    """-> y(a, b): binder's kernel on a and b broadcast to their common shape (copied), for operands
    that do not broadcast as 2-D blocks."""
    def run(a, b):
        a, b = (np.ascontiguousarray(v) for v in np.broadcast_arrays(a, b))
        return binder(a.shape, a.dtype, a_zp, b.shape, b.dtype, b_zp, *rest)(a, b)
    return run


# ---------------------------------------------------------------- pooling

@njit
def _gap_core(x, x_zp, m0, n, single, y_zp, qmin, qmax, out):
    k = _mbqm_consts(m0, n, single)
    lo = np.int64(qmin) - y_zp
    hi = np.int64(qmax) - y_zp
    for r in range(x.shape[0]):
        acc = np.int64(0)
        for i in range(x.shape[1]):
            acc += np.int64(x[r, i])
        acc -= x_zp * x.shape[1]
        out[r] = min(max(_mbqm1(acc, k, k[8]), lo), hi) + y_zp


def fixed_global_avgpool(x_nchw, x_zp, m0, n, y_zp, qmin, qmax, out_dtype, rounding):
    """Global average pool, integer; see golden.fixedpoint.fixed_global_avgpool."""
    x = np.asarray(x_nchw)
    return fixed_global_avgpool_for(x.shape, x.dtype, x_zp, m0, n, y_zp, qmin, qmax, out_dtype, rounding)(x)


def fixed_global_avgpool_for(x_shape, x_dtype, x_zp, m0, n, y_zp, qmin, qmax, out_dtype, rounding):
    """-> Bound y(x_nchw): fixed_global_avgpool of inputs of this shape and dtype, checks and rows
    (N·C, spatial) settled once."""
    single = _single(rounding)
    m, s = _params(m0, n, 1)
    nb, c = x_shape[:2]
    hw = math.prod(x_shape[2:])
    pool_operand(np.empty(0, x_dtype), x_zp, hw, "fixed_global_avgpool")
    return Bound(_gap_core, (int(x_zp), int(m[0]), int(s[0]), single, int(y_zp), int(qmin), int(qmax)),
                 ((0, (nb * c, hw)),), out=out_dtype, shape=(nb, c) + (1,) * (len(x_shape) - 2), view=(nb * c,))


@njit(inline="always")
def _window_sum(plane, a, b, e, k, st, pb):
    """(Σ of the codes, number of input cells) of output position (a, b, e)'s window over one plane
    (d0, d1, d2) of codes, the window clipped to the input."""
    d0, d1, d2 = plane.shape
    h0, h1 = window_span(a, st[0], pb[0], k[0], d0)
    w0, w1 = window_span(b, st[1], pb[1], k[1], d1)
    z0, z1 = window_span(e, st[2], pb[2], k[2], d2)
    acc = np.int64(0)
    for h in range(h0, h1):
        for w in range(w0, w1):
            for z in range(z0, z1):
                acc += np.int64(plane[h, w, z])
    return acc, np.int64((h1 - h0) * (w1 - w0) * (z1 - z0))


@njit
def _avg_core(x, x_zp, k, st, pb, count_include_pad, m0, n, single, y_zp, qmin, qmax, out):
    """Integer window sums of (x − x_zp) over the clipped window, MBQM with the count's (m0, n).
    x (N·C, d0, d1, d2), one plane at a time (contiguous reads)."""
    lo = np.int64(qmin) - y_zp
    hi = np.int64(qmax) - y_zp
    for c in range(x.shape[0]):
        for a in range(out.shape[1]):
            for b in range(out.shape[2]):
                for e in range(out.shape[3]):
                    acc, size = _window_sum(x[c], a, b, e, k, st, pb)
                    cnt = k[0] * k[1] * k[2] if count_include_pad else size
                    mk = _mbqm_consts(m0[cnt], n[cnt], single)
                    out[c, a, b, e] = min(max(_mbqm1(acc - x_zp * size, mk, mk[8]), lo), hi) + y_zp


def fixed_avgpool(x_nchw, x_zp, kernel, strides, pads, count_include_pad, ceil_mode,
                  m0_by_count, n_by_count, y_zp, qmin, qmax, out_dtype, rounding):
    """Average pool, integer, 1-3 spatial dims; see golden.fixedpoint.fixed_avgpool."""
    single = _single(rounding)
    x = np.asarray(x_nchw)
    pool_operand(x, x_zp, np.prod(kernel), "fixed_avgpool")
    nd = x.ndim - 2
    m, s = _params(m0_by_count, n_by_count, None)
    if m.size != int(np.prod(kernel)) + 1:
        raise ValueError(f"fixed_avgpool: {m.size} per-count multipliers, expected prod(kernel) + 1 = "
                         f"{int(np.prod(kernel)) + 1}")
    x3, k, st, pb, pe, _ = _pool.lift_to_3d(x, kernel, strides, pads, [1] * nd)
    outs = [_pool.pool_out_size(x3.shape[2 + i], k[i], st[i], pb[i], pe[i], 1, ceil_mode) for i in range(3)]
    nb, c = x.shape[:2]
    out = np.empty((nb * c,) + tuple(outs), out_dtype)
    _avg_core(np.ascontiguousarray(x3).reshape((nb * c,) + x3.shape[2:]), np.int64(x_zp), k, st, pb,
              bool(count_include_pad), m, s, single, np.int64(y_zp), int(qmin), int(qmax), out)
    return out.reshape((nb, c) + tuple(outs[3 - nd:]))


@njit
def _avg_codes_core(x, x_zp, k, st, pb, count_include_pad, qmin, qmax, out):
    """Window sums of the stored codes (+ x_zp per padded cell with count_include_pad), divided by
    the count rounding half away from zero as C does it: (acc ± count/2) / count, truncating."""
    for c in range(x.shape[0]):
        for a in range(out.shape[1]):
            for b in range(out.shape[2]):
                for e in range(out.shape[3]):
                    acc, size = _window_sum(x[c], a, b, e, k, st, pb)
                    cnt = np.int64(k[0] * k[1] * k[2]) if count_include_pad else size
                    acc += (cnt - size) * x_zp
                    half = cnt // 2
                    q = (acc + half) // cnt if acc >= 0 else -((half - acc) // cnt)
                    out[c, a, b, e] = min(max(q, np.int64(qmin)), np.int64(qmax))


def fixed_avgpool_codes(x_nchw, x_zp, kernel, strides, pads, count_include_pad, ceil_mode, qmin, qmax):
    """Average pool of the stored codes (one quantization on both sides; TFLite's AVERAGE_POOL_2D);
    see golden.fixedpoint.fixed_avgpool_codes."""
    x = pool_codes_operand(x_nchw, x_zp, np.prod(kernel), "fixed_avgpool_codes")
    nd = x.ndim - 2
    x3, k, st, pb, pe, _ = _pool.lift_to_3d(x, kernel, strides, pads, [1] * nd)
    outs = [_pool.pool_out_size(x3.shape[2 + i], k[i], st[i], pb[i], pe[i], 1, ceil_mode) for i in range(3)]
    nb, c = x.shape[:2]
    out = np.empty((nb * c,) + tuple(outs), x.dtype)
    _avg_codes_core(np.ascontiguousarray(x3).reshape((nb * c,) + x3.shape[2:]), np.int64(x_zp), k, st, pb,
                    bool(count_include_pad), int(qmin), int(qmax), out)
    return out.reshape((nb, c) + tuple(outs[3 - nd:]))


# ---------------------------------------------------------------- softmax (gemmlowp fixed point)

_EXP_FACTORS = np.array([1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242], np.int64)


@njit(inline="always")
def _exp_neg1(a):
    """exp of a Q5.26 raw a <= 0 as a Q0.31 raw (gemmlowp exp_on_negative_values): the Taylor
    polynomial of exp around −1/8 on the quarter interval, then one factor exp(−2^j) per set bit."""
    if a == 0:
        return np.int64(I32_MAX)
    frac = (a & np.int64(0xFFFFFF)) - np.int64(1 << 24)  # a mod 1/4, minus 1/4: in [−1/4, 0)
    z = (frac << 5) + np.int64(1 << 28)  # Q0.31, exact: |frac·2^5| <= 2^29
    z2 = _srdhm1(z, z)
    z3 = _srdhm1(z2, z)
    z4 = _srdhm1(z2, z2)
    poly = _rdbpot1(_srdhm1(_rdbpot1(z4, 2) + z3, np.int64(715827883)) + z2, 1)
    c = np.int64(1895147668)
    res = c + _srdhm1(c, z + poly)
    rest = (frac - a) >> 24  # the multiple of 1/4 taken off, in quarters (< 2^7)
    for j in range(7):
        if (rest >> j) & 1:
            res = _srdhm1(res, _EXP_FACTORS[j])
    return res


@njit(inline="always")
def _recip1(total):
    """(Q0.31 raw of 2^b / S, b) for a Q12.19 raw S > 0: normalize S·2^c into [2^31, 2^32), then
    gemmlowp's Newton-Raphson 1/(1 + x) in Q2.29 (three steps) on x = S·2^c − 1."""
    c = np.int64(0)
    while (total << c) < np.int64(1 << 31):
        c += 1
    x = (total << c) - np.int64(1 << 31)
    half = (x + np.int64(I32_MAX) + 1) >> 1
    v = np.int64(1515870810) + _srdhm1(half, np.int64(-1010580540))
    for _ in range(3):
        err = np.int64(1 << 29) - _srdhm1(half, v)
        v = v + _sat32(_srdhm1(v, err) << 2)
    return _sat32(v << 1), np.int64(12) - c


@njit
def _softmax_core(rows, m_in, n_in, single, diff_min, m_out, n_out, y_zp, qmin, qmax, out, exps):
    """Per row: exps of the live differences, their Q12.19 sum, one reciprocal, then each probability
    requantized with one rounding (floor(p·m_out / 2^(31 + n_out + b) + 1/2)). Returns −1 when a row's
    sum leaves int32 (else 0)."""
    k_in = _mbqm_consts(m_in, n_in, single)
    lo = np.int64(qmin) - y_zp
    hi = np.int64(qmax) - y_zp
    for r in range(rows.shape[0]):
        row = rows[r]
        mx = np.int64(row[0])
        for i in range(row.size):
            mx = max(mx, np.int64(row[i]))
        total = np.int64(0)
        for i in range(row.size):
            d = np.int64(row[i]) - mx
            if d >= diff_min:
                exps[i] = _exp_neg1(_mbqm1(d, k_in, k_in[8]))
                total += _rdbpot1(exps[i], np.int64(12))
            else:
                exps[i] = -1
        if total > I32_MAX:
            return -1
        recip, b = _recip1(total)
        t = np.int64(31) + n_out + b
        for i in range(row.size):
            v = np.int64(0)
            if exps[i] >= 0 and t <= 62:
                v = (_srdhm1(recip, exps[i]) * m_out + (np.int64(1) << (t - 1))) >> t
            out[r, i] = min(max(v, lo), hi) + y_zp
    return 0


def fixed_softmax(x, axis, params, y_zp, qmin, qmax, out_dtype, rounding):
    """TFLite's reference int8/uint8 softmax along `axis`; see golden.fixedpoint.fixed_softmax."""
    single = _single(rounding)
    m_in, ls, diff_min, m_out, n_out = (int(v) for v in params)
    _params([m_in, m_out], [-ls, n_out])
    x = np.asarray(x)
    check_int(x, 0, "fixed_softmax x")
    axis = axis % x.ndim
    xt = np.moveaxis(x, axis, -1)
    rows = np.ascontiguousarray(xt).reshape(-1, x.shape[axis])
    out = np.empty(rows.shape, out_dtype)
    if _softmax_core(rows, np.int64(m_in), np.int64(-ls), single, np.int64(diff_min), np.int64(m_out), np.int64(n_out),
                     np.int64(y_zp), int(qmin), int(qmax), out, np.empty(rows.shape[1], np.int64)):
        raise ValueError(f"fixed_softmax sum of exponentials (Q12.19) leaves int32: row length {x.shape[axis]}")
    return np.moveaxis(out.reshape(xt.shape), -1, axis)
