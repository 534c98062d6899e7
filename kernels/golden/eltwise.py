"""Golden QLinearAdd / QLinearMul (com.microsoft), bit-exact with ORT's x86-64 MLAS kernels.

float32 arithmetic throughout; `fma_f32` is a single-rounding fused multiply-add
(ORT's AVX2 QLinearAdd uses _mm256_fmadd_ps). Rounding: round half to even (cvtps2dq).
"""
import numpy as np

F32 = np.float32


def fma_f32(x, y, z):
    """round_f32(x*y + z) with ONE rounding (exact fused multiply-add), x, y, z float32.

    x*y of two float32 is exact in float64 (24+24 <= 53 bits). The sum s = x*y + z is rounded
    in float64, and TwoSum gives its exact error e. Rounding s to float32 is wrong only if
    s sits exactly on a float32 midpoint while e != 0; then the true value lies on e's side.
    Valid while the result is a normal float32 or zero (no float32 subnormals, no overflow).
    """
    p = np.asarray(x, np.float64) * np.asarray(y, np.float64)
    z64 = np.asarray(z, np.float64)
    s = p + z64
    bb = s - p
    e = (p - (s - bb)) + (z64 - bb)
    low29 = np.asarray(s).view(np.uint64) & np.uint64((1 << 29) - 1)
    tie = (low29 == np.uint64(1 << 28)) & (e != 0)
    s = np.where(tie, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)
    return np.asarray(s).astype(F32)


def cvtps_epi32(v):
    """float32 -> int64 as x86 cvtps2dq: round half to even; out of int32 range -> INT32_MIN."""
    v = np.asarray(v, F32)
    ok = np.abs(v.astype(np.float64)) < 2.0**31
    return np.where(ok, np.rint(np.where(ok, v, 0)), -(2**31)).astype(np.int64)


def broadcast_mode(a_shape, b_shape):
    """Which MLAS kernel ORT's Broadcaster calls: 'vv', 'a_scalar' or 'b_scalar'.

    Decided by the innermost output dim of size > 1: whichever input is 1 there is a
    per-span scalar; if both are full, both are vectors. All-size-1 output -> 'a_scalar'.
    """
    n = max(len(a_shape), len(b_shape))
    a = (1,) * (n - len(a_shape)) + tuple(a_shape)
    b = (1,) * (n - len(b_shape)) + tuple(b_shape)
    for da, db in zip(reversed(a), reversed(b)):
        if max(da, db) == 1:
            continue
        if da == 1:
            return "a_scalar"
        if db == 1:
            return "b_scalar"
        return "vv"
    return "a_scalar"


def _saturate(q, qmin, qmax, out_dtype):
    q = np.clip(q, -32768, 32767)  # packs_epi32 (int32 -> int16)
    return np.clip(q, qmin, qmax).astype(out_dtype)  # packus/packs_epi16


def qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """QLinearAdd, numpy broadcasting, u8/i8 in and out (ORT MlasQLinearAddKernelAvx2Helper).

    r_a = f32(a_scale / y_scale), r_b = f32(b_scale / y_scale)
    k = f32(y_zp) - fma(r_a, a_zp, f32(r_b*b_zp))   (the compiler contracts MLAS's
        ZeroPointC - (r_a*ZeroPointA + r_b*ZeroPointB) into one FMA: found on a PP-OCR add, and
        the only one of three candidate orders that matched onnxruntime on all 15 parameter sets
        where they disagree)
    both vectors, or b scalar per span:  v = fma(a, r_a, fma(b, r_b, k))
    a scalar per span:                   v = fma(b, r_b, fma(a, r_a, k))
        (MLAS folds the scalar into the fixed part with one FMA before the vector loop; the
        order of the two FMAs is what distinguishes the cases)
    y = clamp(clamp(round_half_even(v), int16), qmin, qmax)      (zero points enter via k)
    """
    r_a = F32(F32(a_scale) / F32(y_scale))
    r_b = F32(F32(b_scale) / F32(y_scale))
    k = F32(F32(y_zp) - fma_f32(r_a, F32(a_zp), F32(r_b * F32(b_zp))))
    mode = broadcast_mode(np.shape(a), np.shape(b))
    fa, fb = np.broadcast_arrays(np.asarray(a).astype(F32), np.asarray(b).astype(F32))
    if mode == "a_scalar":
        v = fma_f32(fb, r_b, fma_f32(fa, r_a, k))
    else:
        v = fma_f32(fa, r_a, fma_f32(fb, r_b, k))
    return _saturate(cvtps_epi32(v), qmin, qmax, out_dtype)


def qlinear_mul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """QLinearMul, numpy broadcasting, u8/i8 (ORT MlasQLinearMulKernel, SSE2 path, no FMA).

    prod:i32 = (a - a_zp) * (b - b_zp);  r = f32(f32(a_scale * b_scale) / y_scale)
    v = f32(f32(f32(prod) * r) + f32(y_zp));  y = clamp(clamp(round_half_even(v), int16), qmin, qmax)
    """
    r = F32(F32(F32(a_scale) * F32(b_scale)) / F32(y_scale))
    prod = (np.asarray(a, np.int64) - int(a_zp)) * (np.asarray(b, np.int64) - int(b_zp))
    v = ((prod.astype(F32) * r).astype(F32) + F32(y_zp)).astype(F32)
    return _saturate(cvtps_epi32(v), qmin, qmax, out_dtype)


def qlinear_add_for(a_shape, a_scale, a_zp, b_shape, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """-> y(a, b) = qlinear_add(a, a_scale, ..., out_dtype) (golden: nothing is settled ahead)."""
    return lambda a, b: qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype)


def qlinear_mul_for(a_shape, a_scale, a_zp, b_shape, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """-> y(a, b) = qlinear_mul(a, a_scale, ..., out_dtype) (golden: nothing is settled ahead)."""
    return lambda a, b: qlinear_mul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype)
