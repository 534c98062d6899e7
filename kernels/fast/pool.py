"""Fast pooling (Numba); same names, signatures and numbers as golden.pool.
1-D and 2-D inputs are lifted to 3-D with unit kernel/stride/no padding on the extra dims."""
import functools
import math

import numpy as np

from npusim_kernels.fast import rows
from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.bound import Bound
from npusim_kernels.fast.eltwise import rne_f32

F32 = np.float32


@njit
def _gap_rows(lo, hi, x, x_zp, p, y_zp, out):
    """out[r] = clamp(rne(f32(f32(Σ x[r] − x_zp·HW)·s)), qmin − y_zp, qmax − y_zp) + y_zp for the rows
    lo <= r < hi (a row core, npusim_kernels.fast.rows), p = (s, qmin − y_zp, qmax − y_zp) float32;
    the sum in int64 (vectorized)."""
    s, lo_f, hi_f = p[0], p[1], p[2]
    for r in range(lo, hi):
        acc = np.int64(0)
        for i in range(x.shape[1]):
            acc += np.int64(x[r, i])
        acc -= np.int64(x_zp) * x.shape[1]
        v = np.float32(np.float32(acc) * s)
        v = min(max(v, lo_f), hi_f)
        out[r] = np.int64(rne_f32(v)) + y_zp


_GAP = rows.over_rows(_gap_rows)


@functools.lru_cache(maxsize=1024)
def _gap_params(x_scale, y_scale, hw, y_zp, qmin, qmax):
    s = F32(F32(x_scale) / F32(F32(y_scale) * F32(hw)))
    if hw >= 0x1000000 or s < F32(2.0**-32) or s >= F32(256.0):
        raise ValueError("QLinearGlobalAveragePool parameter out of computation range")
    return np.array([s, qmin - y_zp, qmax - y_zp], F32)


def qlinear_global_avgpool(x_nchw, x_scale, x_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """QLinearGlobalAveragePool; formula as golden.pool.qlinear_global_avgpool."""
    x = np.ascontiguousarray(x_nchw)
    return qlinear_global_avgpool_for(x.shape, x_scale, x_zp, y_scale, y_zp, qmin, qmax, out_dtype)(x)


def qlinear_global_avgpool_for(x_shape, x_scale, x_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """-> y(x_nchw): qlinear_global_avgpool of inputs of this shape, parameters and views settled once."""
    n, c = x_shape[:2]
    hw = math.prod(x_shape[2:])
    p = _gap_params(F32(x_scale), F32(y_scale), hw, int(y_zp), int(qmin), int(qmax))
    return rows.row_bound(_GAP, (int(x_zp), p, int(y_zp)), ((0, (n * c, hw)),), rows=n * c, elements=n * c * hw,
                          out=out_dtype, shape=(n, c) + (1,) * (len(x_shape) - 2), view=(n * c,))


@njit
def _gap_f32_sequential(lo, hi, x, out):
    """out[r] = f32(f32(Σ x[r, i], i = 0..S-1 in order, from +0) / f32(S)) for the rows lo <= r < hi of
    x (R, S) (a row core, npusim_kernels.fast.rows). The rows are the inner loop: independent
    float32 chains, each in its own order."""
    size = x.shape[1]
    acc = np.zeros(hi - lo, np.float32)
    for i in range(size):
        for r in range(lo, hi):
            acc[r - lo] = np.float32(acc[r - lo] + x[r, i])
    for r in range(lo, hi):
        out[r] = np.float32(acc[r - lo] / np.float32(size))


@njit
def _gap_f32_lanes4(lo, hi, x, out):
    """out[r] = f32(s / f32(S)) for the rows lo <= r < hi of x (R, S) (a row core): four float32
    lanes a_k = Σ x[r, i], i ≡ k (mod 4), over the first 4·floor(S/4) values; s = (a0 + a2) +
    (a1 + a3) + the rest in order."""
    size = x.shape[1]
    body = size - size % 4
    for r in range(lo, hi):
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for i in range(0, body, 4):
            a0 = np.float32(a0 + x[r, i])
            a1 = np.float32(a1 + x[r, i + 1])
            a2 = np.float32(a2 + x[r, i + 2])
            a3 = np.float32(a3 + x[r, i + 3])
        s = np.float32(np.float32(a0 + a2) + np.float32(a1 + a3))
        for i in range(body, size):
            s = np.float32(s + x[r, i])
        out[r] = np.float32(s / np.float32(size))


_GAP_F32 = {"sequential": rows.over_rows(_gap_f32_sequential), "lanes4": rows.over_rows(_gap_f32_lanes4)}


def global_avgpool_f32(x_nchw, order):
    """ONNX GlobalAveragePool on float32 in onnxruntime's order; formula as golden.pool.global_avgpool_f32."""
    x = np.ascontiguousarray(x_nchw, F32)
    return global_avgpool_f32_for(x.shape, order)(x)


def global_avgpool_f32_for(x_shape, order):
    """-> Bound y(x_nchw): global_avgpool_f32 of float32 inputs of this shape in this order, rows
    (N·C, spatial) settled once."""
    forms = _GAP_F32.get(order)
    if forms is None:
        raise ValueError(f"order {order!r}: expected one of {', '.join(_GAP_F32)}")
    n, c = x_shape[:2]
    size = math.prod(x_shape[2:])
    return rows.row_bound(forms, (), ((0, (n * c, size)),), rows=n * c, elements=n * c * size, dtype=F32, out=F32,
                          shape=(n, c) + (1,) * (len(x_shape) - 2), view=(n * c,))


def pool_out_size(in_size, kernel, stride, pb, pe, dilation, ceil_mode):
    span = in_size + pb + pe - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    return out - 1 if (out - 1) * stride >= in_size + pb else out


def lift_to_3d(x, kernel, strides, pads, dilations):
    nd = x.ndim - 2
    e = 3 - nd
    x3 = x.reshape(x.shape[:2] + (1,) * e + x.shape[2:])
    k = [1] * e + list(kernel)
    st = [1] * e + list(strides)
    pb = [0] * e + list(pads[:nd])
    pe = [0] * e + list(pads[nd:])
    dl = [1] * e + list(dilations)
    return x3, np.array(k, np.int64), np.array(st, np.int64), np.array(pb, np.int64), np.array(pe, np.int64), np.array(dl, np.int64)


@functools.lru_cache(maxsize=1024)
def _geometry(shape, kernel, strides, pads, dilations, ceil_mode):
    """Settled once per input shape and window: ((N·C, D0, D1, D2) of the input lifted to 3-D, kernel,
    strides, pads at the beginning and dilations as int64 (3,) arrays (never written), the lifted
    output shape (N·C, O0, O1, O2), the output shape (N, C, O...))."""
    x3, k, st, pb, pe, dl = lift_to_3d(np.empty(shape, np.uint8), kernel, strides, pads, dilations)
    outs = tuple(int(pool_out_size(x3.shape[2 + i], k[i], st[i], pb[i], pe[i], dl[i], ceil_mode)) for i in range(3))
    n, c = shape[:2]
    return (n * c,) + x3.shape[2:], k, st, pb, dl, (n * c,) + outs, (n, c) + outs[3 - (len(shape) - 2):]


@njit(inline="always")
def window_span(o, stride, pad_begin, k, size):
    """[lo, hi): the input positions of output position o's window, clipped to the input."""
    return max(o * stride - pad_begin, 0), min(o * stride - pad_begin + k, size)


@njit
def _avg_core(xf, k, st, pb, count_include_pad, y_scale, y_zp_f, qmin, qmax, out):
    nc, d0, d1, d2 = xf.shape
    o0, o1, o2 = out.shape[1], out.shape[2], out.shape[3]
    for c in range(nc):
        for a in range(o0):
            h0, h1 = window_span(a, st[0], pb[0], k[0], d0)
            for b in range(o1):
                w0, w1 = window_span(b, st[1], pb[1], k[1], d1)
                for e in range(o2):
                    z0, z1 = window_span(e, st[2], pb[2], k[2], d2)
                    acc = np.float32(0.0)
                    for h in range(h0, h1):
                        for w in range(w0, w1):
                            for z in range(z0, z1):
                                acc = np.float32(acc + xf[c, h, w, z])
                    cnt = k[0] * k[1] * k[2] if count_include_pad else (h1 - h0) * (w1 - w0) * (z1 - z0)
                    avg = np.float32(acc / np.float32(cnt))
                    v = np.float32(np.float32(avg / y_scale) + y_zp_f)
                    out[c, a, b, e] = min(max(np.int64(np.rint(v)), qmin), qmax)


def qlinear_avgpool(x_nchw, x_scale, x_zp, y_scale, y_zp, qmin, qmax, out_dtype,
                    kernel, strides, pads, count_include_pad, ceil_mode):
    """QLinearAveragePool; formula as golden.pool.qlinear_avgpool."""
    x = np.asarray(x_nchw)
    shape3, k, st, pb, _, out3, out_shape = _geometry(x.shape, tuple(kernel), tuple(strides), tuple(pads),
                                                      (1,) * (x.ndim - 2), bool(ceil_mode))
    xf = (F32(x_scale) * (x.astype(np.int64) - int(x_zp)).astype(F32)).astype(F32)
    out = np.empty(out3, np.int64)
    _avg_core(np.ascontiguousarray(xf).reshape(shape3), k, st, pb, bool(count_include_pad),
              F32(y_scale), F32(y_zp), int(qmin), int(qmax), out)
    return out.reshape(out_shape).astype(out_dtype)


@njit
def _max_core(x, k, st, pb, dl, out):
    nc, d0, d1, d2 = x.shape
    for c in range(nc):
        for a in range(out.shape[1]):
            for b in range(out.shape[2]):
                for e in range(out.shape[3]):
                    best = np.int64(-(2**62))
                    for i in range(k[0]):
                        h = a * st[0] - pb[0] + i * dl[0]
                        if h < 0 or h >= d0:
                            continue
                        for j in range(k[1]):
                            w = b * st[1] - pb[1] + j * dl[1]
                            if w < 0 or w >= d1:
                                continue
                            for m in range(k[2]):
                                z = e * st[2] - pb[2] + m * dl[2]
                                if 0 <= z < d2:
                                    best = max(best, np.int64(x[c, h, w, z]))
                    out[c, a, b, e] = best


@njit
def _max_planes(c0, c1, xp, h, w, kh, kw, sh, sw, ph, pw, dh, dw, lo, oh, ow, outp):
    """For the planes c0 <= c < c1 (a row core, npusim_kernels.fast.rows: xp (planes, H·W) and outp
    (planes, OH·OW), read flat): out[(c·OH + a)·OW + b] = max of x[(c·H + a·sH − pH + i·dH)·W + b·sW − pW + j·dW] over the window's
    cells inside the H × W plane c (lo, the dtype's least value, where none is): per output row, the
    elementwise max of the valid input rows (contiguous), then the horizontal window. Output columns
    whose taps all fall inside the row (the interior [b_in0, b_in1), settled per call, not per row) take
    win[p] = max_j row[p + j·dW], a contiguous sliding max, at p = b·sW − pW; the few border columns
    (pads, ceil_mode) check each tap. Row and sliding passes vectorize; only the strided pick is scalar.
    row, win (W,): this call's scratch, of x's dtype. Flat uint64 indices
    (signed ones would keep LLVM from vectorizing), no per-row array views (each would cost a
    reference count). Integer max: exact, no rounding or saturation on any instruction set."""
    x, out = xp.reshape(-1), outp.reshape(-1)
    row, win = np.empty(w, x.dtype), np.empty(w, x.dtype)
    w_u = np.uint64(w)
    span = (kw - 1) * dw
    b_in0 = min(ow, -(-pw // sw))  # ceil(pW / sW): the first b with b·sW − pW >= 0
    last = w - 1 - span + pw  # b·sW <= last: the window's last tap inside the row
    b_in1 = max(b_in0, min(ow, last // sw + 1)) if last >= 0 else b_in0
    for c in range(c0, c1):
        for a in range(oh):
            valid = 0
            for i in range(kh):
                hh = a * sh - ph + i * dh
                if 0 <= hh < h:
                    base = np.uint64((c * h + hh) * w)
                    if valid == 0:
                        for e in range(w_u):
                            row[e] = x[base + e]
                    else:
                        for e in range(w_u):
                            row[e] = max(row[e], x[base + e])
                    valid += 1
            obase = (c * oh + a) * ow
            if valid == 0:  # a row of padding only (ceil_mode or pads): no cell
                for b in range(ow):
                    out[obase + b] = lo
                continue
            for k in range(b_in0 + ow - b_in1):  # the border columns: [0, b_in0) and [b_in1, OW)
                b = k if k < b_in0 else k - b_in0 + b_in1
                v = lo
                for j in range(kw):
                    p = b * sw - pw + j * dw
                    if 0 <= p < w:
                        v = max(v, row[p])
                out[obase + b] = v
            if b_in1 > b_in0:
                n = np.uint64(w - span)
                for p in range(n):
                    win[p] = row[p]
                for j in range(1, kw):
                    d = np.uint64(j * dw)
                    for p in range(n):
                        win[p] = max(win[p], row[p + d])
                src, step, ob = np.uint64(b_in0 * sw - pw), np.uint64(sw), np.uint64(obase + b_in0)
                for t in range(np.uint64(b_in1 - b_in0)):
                    out[ob + t] = win[src + t * step]


_MAX_PLANES = rows.over_rows(_max_planes)


def maxpool(x_nchw, kernel, strides, pads, dilations, ceil_mode):
    """ONNX MaxPool on integers; padded cells never win; output dtype = input dtype. The geometry is
    settled once per input shape and window (`_geometry`)."""
    x = np.asarray(x_nchw)
    return maxpool_for(x.shape, x.dtype, kernel, strides, pads, dilations, ceil_mode)(x)


def maxpool_for(x_shape, x_dtype, kernel, strides, pads, dilations, ceil_mode):
    """-> y(x_nchw): maxpool of inputs of this shape and dtype, the geometry settled once."""
    shape3, k, st, pb, dl, out3, out_shape = _geometry(tuple(x_shape), tuple(kernel), tuple(strides), tuple(pads),
                                                       tuple(dilations), bool(ceil_mode))
    if k[0] == 1 and st[0] == 1 and pb[0] == 0 and out3[1] == shape3[1]:  # 1-D and 2-D pools: `_max_planes`
        h, w, oh, ow = shape3[2], shape3[3], out3[2], out3[3]
        geo = tuple(int(v) for v in (h, w, k[1], k[2], st[1], st[2], pb[1], pb[2], dl[1], dl[2]))
        planes = shape3[0] * shape3[1]  # N·C·D0 planes of H × W (the lifted first dim is a plane index)
        return rows.row_bound(_MAX_PLANES, geo + (int(np.iinfo(x_dtype).min), int(oh), int(ow)),
                              ((0, (planes, h * w)),), rows=planes, elements=planes * oh * ow, out=x_dtype,
                              shape=out_shape, view=(planes, oh * ow))
    return Bound(_max_core, (k, st, pb, dl), ((0, shape3),), out=x_dtype, shape=out_shape, view=out3)
