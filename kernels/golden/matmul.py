"""Golden integer matmul (MatMulInteger / QLinearMatMul / QGemm accumulator).

acc:i32[..., i, j] = Σ_k (a[..., i, k] − a_zp[i]) · (b[..., k, j] − b_zp[j])
N-D with numpy matmul broadcasting. Computed in int64; a result outside int32 is a
ValueError naming the first offending index. No rounding, no saturation.
"""
import numpy as np

from npusim_kernels.golden.conv import check_i32


def matmul_acc(a, a_zp, b, b_zp):
    """acc:i32 = Σ_k (a − a_zp)·(b − b_zp), numpy matmul broadcasting; exact, overflow → ValueError.

    a: integer (..., M, K) (1-D promoted as numpy does); a_zp: int scalar, or int array (M,)
    per row; b: integer (..., K, N); b_zp: int scalar or int32 array (N,) per column.
    """
    a64 = np.asarray(a).astype(np.int64)
    b64 = np.asarray(b).astype(np.int64)
    azp = np.asarray(a_zp, np.int64)
    bzp = np.asarray(b_zp, np.int64)
    if azp.ndim == 1 and a64.ndim >= 2:
        azp = azp.reshape(-1, 1)  # per row of a
    bzp = bzp.reshape(-1) if bzp.size > 1 else bzp.reshape(())  # (N,) broadcasts over columns
    acc = np.matmul(a64 - azp, b64 - bzp)
    check_i32(np.atleast_1d(acc), "matmul_acc Σ(a−a_zp)(b−b_zp)")
    return acc.astype(np.int32)


def pack_matmul_b(b_kn, b_zp):
    """Plan-time preparation of a constant B (K, N) for `matmul_acc_packed` (golden: the arrays as given)."""
    return np.asarray(b_kn), np.asarray(b_zp, np.int32)


def matmul_acc_packed(a, a_zp, packed):
    """matmul_acc with B and b_zp from `pack_matmul_b`."""
    b_kn, b_zp = packed
    return matmul_acc(a, a_zp, b_kn, b_zp)


def add_bias_i32(acc_i32, bias_i32):
    """acc:i32 + bias:i32 (numpy broadcasting; QGemm's C), exact in int64; a sum outside int32 is
    a ValueError naming the first offending index (the fast kernel wraps, as onnxruntime does)."""
    total = np.asarray(acc_i32, np.int64) + np.asarray(bias_i32, np.int64)
    check_i32(np.atleast_1d(total), "gemm Σ(a−a_zp)(b−b_zp)+C")
    return total.astype(np.int32)


def matmul_acc_packed_for(a_shape, a_dtype, a_zp, packed, bias=None):
    """-> acc(a) = matmul_acc_packed(a, a_zp, packed) [+ bias (N,), add_bias_i32] (golden: nothing
    is settled ahead)."""
    if bias is None:
        return lambda a: matmul_acc_packed(a, a_zp, packed)
    return lambda a: add_bias_i32(matmul_acc_packed(a, a_zp, packed), bias)
