"""Fast upsampling kernels, same contracts as golden.upsample (see its docstring for the arithmetic).

conv_transpose_acc: per output channel and tap, one vectorized multiply-add plane over the input,
added into an int32 accumulator that wraps modulo 2^32 on overflow (the golden kernel raises
instead). resize_nearest: a gather per output row, repeated rows copied. resize_bilinear: TFLite's
Q10 taps computed once per axis, then an int64 Q20 sum per output element and one rounding.
"""
import math

import numpy as np

from npusim_kernels.fast import rows
from npusim_kernels.fast._jit import njit

COORDS = ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners")


@njit
def _conv_transpose_core(x, x_zp, w, w_zp, bias, sh, sw, top, left, dh, dw, group, acc):
    """Per batch and output channel o: acc[o] = bias[o], then per tap (i, j) one plane
    P[iy, ix] = Σ_c (w[c, m, i, j] − w_zp[o])·(x[c, iy, ix] − x_zp) over o's group (a contiguous
    multiply-add over the input plane, vectorized; weights equal to w_zp are skipped), added at
    acc[o, iy·sh − top + i·dh, ix·sw − left + j·dw] where that lies inside. int32 throughout,
    wrapping modulo 2^32 (the order of the sums does not change the result modulo 2^32)."""
    n, c, h, wi = x.shape
    mg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    cg = c // group
    oh, ow = acc.shape[2], acc.shape[3]
    d = np.empty((c, h * wi), np.int32)
    plane = np.empty(h * wi, np.int32)
    for b in range(n):
        for ci in range(c):
            for iy in range(h):
                for ix in range(wi):
                    d[ci, iy * wi + ix] = np.int32(x[b, ci, iy, ix]) - np.int32(x_zp)
        for o in range(acc.shape[1]):
            g, m = o // mg, o % mg
            z = np.int32(w_zp[o])
            bo = np.int32(bias[o])
            for r in range(oh):
                for q in range(ow):
                    acc[b, o, r, q] = bo
            for i in range(kh):
                for j in range(kw):
                    plane[:] = 0
                    for ci in range(g * cg, (g + 1) * cg):
                        wv = np.int32(np.int32(w[ci, m, i, j]) - z)
                        if wv == 0:
                            continue
                        dc = d[ci]
                        for k in range(h * wi):
                            plane[k] = np.int32(plane[k] + wv * dc[k])
                    for iy in range(h):
                        r = iy * sh - top + i * dh
                        if r < 0 or r >= oh:
                            continue
                        for ix in range(wi):
                            q = ix * sw - left + j * dw
                            if 0 <= q < ow:
                                acc[b, o, r, q] = np.int32(acc[b, o, r, q] + plane[iy * wi + ix])


def conv_transpose_acc(x_nchw, x_zp, w_iohw, w_zp, bias_i32, strides, pads_tl, dilations, out_hw, group):
    """acc:i32 (N, M, OH, OW) = Σ (x − x_zp)·(w − w_zp[m]) + bias[m] scattered; wraps modulo 2^32."""
    x = np.ascontiguousarray(x_nchw)
    w = np.ascontiguousarray(w_iohw)
    if x.shape[1] != w.shape[0] or x.shape[1] % group:
        raise ValueError(f"conv_transpose_acc: x has {x.shape[1]} channels, weight {w.shape} with group={group}")
    m = w.shape[1] * group
    acc = np.empty((x.shape[0], m, int(out_hw[0]), int(out_hw[1])), np.int32)
    _conv_transpose_core(x, np.int32(x_zp), w, np.ascontiguousarray(w_zp, np.int32),
                         np.ascontiguousarray(bias_i32, np.int32), int(strides[0]), int(strides[1]),
                         int(pads_tl[0]), int(pads_tl[1]), int(dilations[0]), int(dilations[1]), int(group), acc)
    return acc


@njit
def _gather_planes(lo, hi, x, i0, i1, i2, i3, y):
    """The output planes lo <= p < hi of y (N'·C', OH, OW) (a row core, npusim_kernels.fast.rows),
    plane p = (a, b), a = p div C', b = p mod C': y[p, c, d] = x[i0[a], i1[b], i2[c], i3[d]], row
    by row: an output row whose source row is the previous row's (nearest upsampling repeats rows)
    is a copy of that output row; any other gathers its source row along W."""
    cb = i1.size
    for p in range(lo, hi):
        src_plane = x[i0[p // cb], i1[p % cb]]
        for c in range(i2.size):
            dst = y[p, c]
            if c and i2[c] == i2[c - 1]:
                prev = y[p, c - 1]
                for d in range(dst.size):
                    dst[d] = prev[d]
            else:
                src = src_plane[i2[c]]
                for d in range(dst.size):
                    dst[d] = src[i3[d]]


_GATHER = rows.over_rows(_gather_planes)


def resize_nearest(x, idx0, idx1, idx2, idx3):
    """y[a, b, c, d] = x[idx0[a], idx1[b], idx2[c], idx3[d]] of a 4-D x."""
    x = np.ascontiguousarray(x)
    return resize_nearest_for(x.shape, x.dtype, idx0, idx1, idx2, idx3)(x)


def resize_nearest_for(x_shape, x_dtype, idx0, idx1, idx2, idx3):
    """-> Bound y(x): resize_nearest of 4-D inputs of this shape and dtype with these source indices
    (settled once, as int64 arrays), split over output planes on threads for a large output."""
    idx = tuple(np.ascontiguousarray(i, np.int64).reshape(-1) for i in (idx0, idx1, idx2, idx3))
    shape = tuple(i.size for i in idx)
    planes = shape[0] * shape[1]
    return rows.row_bound(_GATHER, idx, ((0, None),), rows=planes, elements=math.prod(shape), out=x_dtype,
                          shape=shape, view=(planes,) + shape[2:])


@njit
def _axis_taps(size_in, size_out, align, half, pytorch):
    """(lo, hi, f) of one axis in TFLite's Q10 coordinates (golden.upsample's docstring)."""
    if align and size_out > 1:
        s10 = (1024 * (size_in - 1) + (size_out - 1) // 2) // (size_out - 1)
    else:
        s10 = (1024 * size_in + size_out // 2) // size_out
    lo = np.empty(size_out, np.int64)
    hi = np.empty(size_out, np.int64)
    f = np.empty(size_out, np.int64)
    for o in range(size_out):
        if pytorch and size_out == 1:
            v = 0
        elif half:
            v = o * s10 + s10 // 2 - 512
        else:
            v = o * s10
        t = v // 1024 if v >= 0 else -((-v) // 1024)  # truncation toward zero
        lo[o] = max(t, 0)
        u = v + 1023
        hi[o] = min(u // 1024 if u >= 0 else -((-u) // 1024), size_in - 1)
        f[o] = v - 1024 * lo[o]
    return lo, hi, f


@njit
def _bilinear_core(x, ylo, yhi, fy, xlo, xhi, fx, single, y):
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            for r in range(ylo.size):
                w1y = fy[r]
                w0y = 1024 - w1y
                for q in range(xlo.size):
                    w1x = fx[q]
                    w0x = 1024 - w1x
                    s = (np.int64(x[b, c, ylo[r], xlo[q]]) * w0y * w0x + np.int64(x[b, c, yhi[r], xlo[q]]) * w1y * w0x
                         + np.int64(x[b, c, ylo[r], xhi[q]]) * w0y * w1x
                         + np.int64(x[b, c, yhi[r], xhi[q]]) * w1y * w1x)
                    if single:
                        v = (s + 524288) >> 20
                    elif s > 0:
                        v = (s + 524288) >> 20
                    else:
                        v = -((524288 - s) >> 20)
                    y[b, c, r, q] = v


def resize_bilinear(x_nchw, out_hw, coord, rounding):
    """TFLite's integer bilinear resize of H and W; see golden.upsample.resize_bilinear."""
    if coord not in COORDS:
        raise ValueError(f"resize_bilinear: coord must be one of {COORDS}, got {coord!r}")
    if rounding not in ("double", "single"):
        raise ValueError(f"rounding must be 'double' or 'single', got {rounding!r}")
    x = np.ascontiguousarray(x_nchw)
    flags = (coord == "align_corners", coord in ("half_pixel", "pytorch_half_pixel"), coord == "pytorch_half_pixel")
    ty = _axis_taps(x.shape[2], int(out_hw[0]), *flags)
    tx = _axis_taps(x.shape[3], int(out_hw[1]), *flags)
    y = np.empty(x.shape[:2] + (int(out_hw[0]), int(out_hw[1])), x.dtype)
    _bilinear_core(x, *ty, *tx, rounding == "single", y)
    return y
