"""Fast int64-accumulator convolution and matmul (Numba): TFLite's 16x8 kernels; same names,
signatures and numbers as golden.acc64 (acc:i64 = Σ (x − x_zp)·(w − w_zp) + bias, |acc| < 2^47).

Direct loops over output positions (no im2col buffer), the accumulator pinned to int64.
"""
import numba
import numpy as np

from npusim_kernels.fast._jit import njit
from npusim_kernels.checks import check_acc_i64


@njit(locals={"acc": numba.int64})
def _conv_core(x, x_zp, w, w_zp, bias, sh, sw, top, left, dh, dw, group, out):
    n_, c_, h_, w_ = x.shape
    m_, cg, kh, kw = w.shape
    mg = m_ // group
    _, _, oh_, ow_ = out.shape
    for n in range(n_):
        for m in range(m_):
            c0 = (m // mg) * cg
            wz = np.int64(w_zp[m])
            for oy in range(oh_):
                for ox in range(ow_):
                    acc = np.int64(bias[m])
                    for c in range(cg):
                        for i in range(kh):
                            iy = oy * sh - top + i * dh
                            if iy < 0 or iy >= h_:
                                continue
                            for j in range(kw):
                                ix = ox * sw - left + j * dw
                                if ix < 0 or ix >= w_:
                                    continue
                                acc += (np.int64(x[n, c0 + c, iy, ix]) - x_zp) * (np.int64(w[m, c, i, j]) - wz)
                    out[n, m, oy, ox] = acc


def conv_acc_i64(x_nchw, x_zp, w_oihw, w_zp, bias_i64, strides, pads, dilations, group):
    """acc:i64 (N, M, OH, OW) = Σ (x − x_zp)·(w[m] − w_zp[m]) + bias[m]; see golden.acc64."""
    n, c, h, w = x_nchw.shape
    m, cg, kh, kw = w_oihw.shape
    if c != cg * group or m % group:
        raise ValueError(f"conv_acc_i64: {c} input channels, weights {w_oihw.shape}, group {group}")
    oh = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    wz = np.ascontiguousarray(np.broadcast_to(np.asarray(w_zp, np.int64).reshape(-1), (m,)))
    bias = np.zeros(m, np.int64) if bias_i64 is None else np.ascontiguousarray(bias_i64, np.int64).reshape(-1)
    out = np.empty((n, m, max(oh, 0), max(ow, 0)), np.int64)
    _conv_core(np.ascontiguousarray(x_nchw), np.int64(x_zp), np.ascontiguousarray(w_oihw), wz, bias,
               strides[0], strides[1], pads[0], pads[1], dilations[0], dilations[1], group, out)
    check_acc_i64(out, "conv_acc_i64 Σ(x−x_zp)(w−w_zp)+bias")
    return out


@njit(locals={"acc": numba.int64})
def _matmul_core(a, a_zp, b, b_zp, bias, out):
    rows, k_ = a.shape
    n_ = b.shape[1]
    for r in range(rows):
        for j in range(n_):
            acc = np.int64(bias[j])
            bz = np.int64(b_zp[j])
            for k in range(k_):
                acc += (np.int64(a[r, k]) - a_zp) * (np.int64(b[k, j]) - bz)
            out[r, j] = acc


def matmul_acc_i64(a, a_zp, b, b_zp, bias_i64):
    """acc:i64 (..., M, N) = Σ_k (a − a_zp)·(b[k, j] − b_zp[j]) + bias[j]; see golden.acc64."""
    a = np.asarray(a)
    k, n = b.shape
    if a.shape[-1] != k:
        raise ValueError(f"matmul_acc_i64: a {a.shape} and b {b.shape} do not chain")
    a2 = np.ascontiguousarray(a.reshape(-1, k))
    bz = np.ascontiguousarray(np.broadcast_to(np.asarray(b_zp, np.int64).reshape(-1), (n,)))
    bias = np.zeros(n, np.int64) if bias_i64 is None else np.ascontiguousarray(bias_i64, np.int64).reshape(-1)
    out = np.empty((a2.shape[0], n), np.int64)
    _matmul_core(a2, np.int64(a_zp), np.ascontiguousarray(b), bz, bias, out)
    check_acc_i64(out, "matmul_acc_i64 Σ(a−a_zp)(b−b_zp)+bias")
    return out.reshape(a.shape[:-1] + (n,))
