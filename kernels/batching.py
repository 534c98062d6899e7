"""numpy-matmul broadcasting as a list of 2-D products, for kernels whose core is 2-D.

Shape plumbing only, so the golden and the fast kernels share it (their arithmetic stays
written twice): operands are broadcast over their leading (batch) dimensions, 1-D operands are
promoted and the result squeezed as numpy's matmul does.
"""
import numpy as np


def batched_2d(fn, a, b):
    """(out (..., M, N), Σ count) of fn(a_i (M, K), b_i (K, N)) -> (out_i (M, N), count_i) over the
    broadcast batch of a (..., M, K) and b (..., K, N); each a_i, b_i is C-contiguous."""
    a, b = np.asarray(a), np.asarray(b)
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a3 = np.broadcast_to(a2, batch + a2.shape[-2:]).reshape((-1,) + a2.shape[-2:])
    b3 = np.broadcast_to(b2, batch + b2.shape[-2:]).reshape((-1,) + b2.shape[-2:])
    parts = [fn(np.ascontiguousarray(x), np.ascontiguousarray(y)) for x, y in zip(a3, b3)]
    out = np.stack([o for o, _ in parts]).reshape(batch + (a2.shape[-2], b2.shape[-1]))
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out, sum(c for _, c in parts)
