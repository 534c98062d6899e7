"""Fast integer matmul (MatMulInteger / QLinearMatMul / QGemm accumulator), same contract as golden.

acc:i32[..., i, j] = Σ_k (a[..., i, k] − a_zp[i]) · (b[..., k, j] − b_zp[j]); int32, wraps on overflow.
Float32 BLAS sgemm over K-chunks of kc terms with kc·max|a − a_zp|·max|b − b_zp| < 2^24, so every
partial sum is an exact integer in float32; chunks are summed in int32. Operands wider than 12
bits fall back to an int32 Numba loop.
"""
import numpy as np

from npusim_kernels.fast._jit import njit

F32_EXACT = 1 << 24


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


def matmul_acc(a, a_zp, b, b_zp):
    """acc:i32 = Σ_k (a − a_zp)·(b − b_zp), numpy matmul broadcasting; int32, wraps on overflow.

    a: integer (..., M, K); a_zp: int scalar, or int array (M,) per row; b: integer (..., K, N);
    b_zp: int scalar or int32 array (N,) per column. No rounding, no saturation.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    azp = np.asarray(a_zp, np.int32)
    bzp = np.asarray(b_zp, np.int32)
    if azp.ndim == 1 and a.ndim >= 2:
        azp = azp.reshape(-1, 1)
    bzp = bzp.reshape(-1) if bzp.size > 1 else bzp.reshape(())
    ad = a.astype(np.int32) - azp
    bd = b.astype(np.int32) - bzp
    vec_a, vec_b = ad.ndim == 1, bd.ndim == 1
    if vec_a:
        ad = ad[None, :]
    if vec_b:
        bd = bd[:, None]
    batch = np.broadcast_shapes(ad.shape[:-2], bd.shape[:-2])
    ad = np.broadcast_to(ad, batch + ad.shape[-2:])
    bd = np.broadcast_to(bd, batch + bd.shape[-2:])
    k = ad.shape[-1]
    maxprod = max(1, int(np.abs(ad).max(initial=0))) * max(1, int(np.abs(bd).max(initial=0)))
    kc = (F32_EXACT - 1) // maxprod
    if kc > 0:
        af, bf = ad.astype(np.float32), bd.astype(np.float32)
        acc = np.zeros(batch + (ad.shape[-2], bd.shape[-1]), np.int32)
        for k0 in range(0, k, kc):
            acc += np.matmul(af[..., k0:k0 + kc], bf[..., k0:k0 + kc, :]).astype(np.int32)
    else:
        a2 = ad.reshape((-1,) + ad.shape[-2:])
        b2 = bd.reshape((-1,) + bd.shape[-2:])
        acc = np.stack([_mm_i32(np.ascontiguousarray(x), np.ascontiguousarray(y)) for x, y in zip(a2, b2)])
        acc = acc.reshape(batch + acc.shape[-2:])
    if vec_a:
        acc = acc[..., 0, :]
    if vec_b:
        acc = acc[..., 0]
    return acc


def add_bias_i32(acc_i32, bias_i32):
    """acc:i32 + bias:i32 (numpy broadcasting; QGemm's C), int32, wraps modulo 2^32 on overflow as
    onnxruntime's int32 accumulator does (the golden kernel raises instead)."""
    return np.add(acc_i32, np.asarray(bias_i32, np.int32), dtype=np.int32)
