"""The op registry: one entry per IR op (the explicit list is `OPS`).

An entry's `prepare(node, const, K)` runs once, when a session plans the graph: it reads the
node's constants (weights, zero points, shapes) through `const(name)` (None when the input is
not a constant), settles every parameter, and returns `run(*inputs) -> tuple of outputs` that
calls the kernel set `K` (golden or fast; the same names and signatures in both). What depends on
the input shapes too is settled at the first run of each shape: the hot ops keep a `PerShape`
of kernels bound by `K.<kernel>_for(shape, ...)`, so that a run is a lookup and one Numba call.
`macs` gives multiply-accumulates from the concrete shapes of a run, for reports and the
hardware model.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np

from . import data_ops, upsample
from .binding import PerShape, shape_bound
from .errors import NpusimError
from .ir import storage

KERNEL_SETS = ("fast", "golden")
_KERNEL_MODULES = ("conv", "matmul", "requant", "eltwise", "pool", "lut", "quantize", "fixedpoint", "shift",
                   "bitserial", "pairsat", "acc64", "upsample")


def kernel_set(name: str) -> SimpleNamespace:
    """The golden or fast kernels, all families merged into one namespace."""
    if name not in KERNEL_SETS:
        raise NpusimError(f"unknown kernel set {name!r}; expected one of {', '.join(KERNEL_SETS)}")
    funcs = {}
    for mod in _KERNEL_MODULES:
        m = importlib.import_module(f"npusim_kernels.{name}.{mod}")
        funcs.update({k: v for k, v in vars(m).items() if callable(v) and not k.startswith("_")})
    return SimpleNamespace(**funcs)


@dataclass(frozen=True)
class OpDef:
    prepare: Callable
    macs: Callable = lambda node, in_shapes, out_shapes: 0
    pair_excess: Callable | None = None  # (node, const, K) -> fn(*inputs) -> (excess, count), see npusim.ortisa


def _zp(const, name, default=0):
    if not name:
        return default
    v = const(name)
    return None if v is None else v


def _scalar(v):
    return int(np.asarray(v).reshape(-1)[0])


def _same_pads(in_hw, k, s, d, mode):
    pads_b, pads_e = [], []
    for n, kk, ss, dd in zip(in_hw, k, s, d):
        out = -(-n // ss)
        total = max(0, (out - 1) * ss + (kk - 1) * dd + 1 - n)
        small, big = total // 2, total - total // 2
        pads_b.append(big if mode == "SAME_LOWER" else small)
        pads_e.append(small if mode == "SAME_LOWER" else big)
    return tuple(pads_b + pads_e)


def plan_window(attrs, k):
    """-> window(spatial_in) -> (strides, pads (top, left, bottom, right), dilations) of a 2-D
    window op. Settled here, once, unless auto_pad SAME_* needs the input size. Strides and
    dilations must be >= 1 and pads >= 0 (checked here); the dilated window must fit in the
    padded input (checked by window() on the first run of each input size, then remembered)."""
    s = tuple(int(v) for v in attrs["strides"])
    d = tuple(int(v) for v in attrs["dilations"])
    mode = attrs["auto_pad"]
    n = len(k)
    pads = (0,) * (2 * n) if mode in ("VALID", "SAME_UPPER", "SAME_LOWER") else tuple(int(v) for v in attrs["pads"])
    for name, v, want in (("strides", s, n), ("dilations", d, n), ("pads", pads, 2 * n)):
        if len(v) != want or min(v, default=0) < (0 if name == "pads" else 1):
            raise NpusimError(f"attribute {name}={list(v)}: expected {want} values "
                              f"{'>= 0' if name == 'pads' else '>= 1'} for a {n}-D window {list(k)}")
    span = tuple((kk - 1) * dd + 1 for kk, dd in zip(k, d))

    def fits(spatial_in, p):
        if len(spatial_in) != n:
            raise NpusimError(f"input has {len(spatial_in)} spatial dimensions {list(spatial_in)}, expected {n} "
                              f"for the window {list(k)}")
        for i, (size, w) in enumerate(zip(spatial_in, span)):
            if size + p[i] + p[i + n] < w:
                raise NpusimError(f"window {list(k)} (dilations {list(d)}) is larger than the padded input: "
                                  f"spatial dimension {i} is {size} + pads {p[i]}+{p[i + n]}, the window spans {w}")
        return s, p, d
    seen = {}  # spatial input size -> (strides, pads, dilations): settled at the first run of each size

    def window(spatial_in):
        w = seen.get(spatial_in)
        if w is None:
            same = mode in ("SAME_UPPER", "SAME_LOWER")
            w = seen[spatial_in] = fits(spatial_in, _same_pads(spatial_in, k, s, d, mode) if same else pads)
        return w
    return window


def _conv_plan(node, const):
    """(w_oihw, one_d, window, group, attrs) of a conv node: a 1-D conv runs as 2-D with H = 1."""
    w = const(node.inputs[1])
    if w is None or w.ndim not in (3, 4):
        raise NpusimError(f"weight {node.inputs[1]!r}: expected a constant of rank 3 or 4 (O, I/group, [H,] W), got "
                          + ("a tensor computed at run time" if w is None else f"shape {w.shape}"))
    one_d = w.ndim == 3
    w4 = np.ascontiguousarray(w[:, :, None, :] if one_d else w)
    a = dict(node.attrs)
    if one_d:
        a.update(strides=(1,) + tuple(a["strides"]), dilations=(1,) + tuple(a["dilations"]),
                 pads=(0, a["pads"][0], 0, a["pads"][1]) if a["pads"] else (0, 0, 0, 0))
    group = int(a["group"])
    if group < 1 or w4.shape[0] % group:
        raise NpusimError(f"attribute group={group}: expected a divisor of the {w4.shape[0]} output channels of "
                          f"weight {node.inputs[1]!r} {w.shape}")
    if len(a.get("kernel_shape", ())) and tuple(int(v) for v in a["kernel_shape"]) != w.shape[2:]:
        raise NpusimError(f"attribute kernel_shape={list(a['kernel_shape'])}: the weight {node.inputs[1]!r} has "
                          f"shape {w.shape}, kernel {list(w.shape[2:])}")
    return w4, one_d, plan_window(a, w4.shape[2:]), group, a


def _check_channels(what, size, expected, name):
    """A per-channel parameter `name` has one value or `expected` (its channels)."""
    if size not in (1, expected):
        raise NpusimError(f"{what} {name!r} has {size} values, expected "
                          + ("1 (per tensor)" if expected == 1 else f"1 or {expected} (one per channel)"))


def _conv_pair_excess(node, const, K):
    """-> excess(*inputs) = (onnxruntime's int16 pair excess in the accumulator's layout, saturated
    pair count) of a conv that onnxruntime runs through its U8S8 kernels (npusim.ortisa); the
    inputs as the node has them (x, w, bias, x_zp, w_zp)."""
    w4, one_d, window, group, _ = _conv_plan(node, const)
    pairs = K.pack_conv_pair_weights(w4)
    xz_c = _zp(const, node.inputs[3])

    def excess(x, w=None, b=None, x_zp=None, w_zp=None):
        x4 = x[:, :, None, :] if one_d else x
        e, count = K.conv_pair_excess(x4, _scalar(xz_c if xz_c is not None else x_zp), pairs, *window(x4.shape[2:]),
                                      group)
        return (e[:, :, 0, :] if one_d else e), count
    return excess


def _prep_conv(node, const, K):
    """Weights packed once (K.pack_conv_weights); the window settled once unless auto_pad needs
    the input size. With `pair_sat16`, onnxruntime's int16 pair excess is added (npusim.ortisa)."""
    x_name, w_name, b_name, xzp_name, wzp_name = node.inputs
    w4, one_d, window, group, a = _conv_plan(node, const)
    m, c_in = w4.shape[0], w4.shape[1] * group
    bias = np.ascontiguousarray(const(b_name) if b_name else np.zeros(m, np.int32), np.int32)
    if bias.shape != (m,):
        raise NpusimError(f"bias {b_name!r} has shape {bias.shape}, expected ({m},): one per output channel of "
                          f"weight {w_name!r}")
    xzp_c, wzp_c = _zp(const, xzp_name), _zp(const, wzp_name)
    _check_channels("input zero point", 1 if xzp_c is None else np.size(xzp_c), 1, xzp_name)
    _check_channels("weight zero point", m if wzp_c is None else np.size(wzp_c), m, wzp_name)

    def check_x(shape):
        if len(shape) != w4.ndim - one_d or shape[1] != c_in:
            raise NpusimError(f"input {x_name!r} has shape {shape}, expected {c_in} channels in dimension 1 "
                              f"(weight {w_name!r}: {w4.shape[1]} per group x group={group}) and rank "
                              f"{w4.ndim - one_d}")
    xz_fixed = None if xzp_c is None else _scalar(xzp_c)
    excess = _conv_pair_excess(node, const, K) if a.get("pair_sat16") else None

    def wzp_vec(v):
        return np.ascontiguousarray(np.broadcast_to(np.asarray(v, np.int32).reshape(-1), (m,)), np.int32)

    def finish_excess(acc, x, x_zp=None):
        """acc + onnxruntime's pair excess of input x, when it has a saturated pair."""
        e, saturated = excess(x, None, None, x_zp)
        if saturated:  # no saturated pair: the excess is all zeros
            acc += e
        return acc

    def finish(acc4, x, x_zp):
        acc = acc4[:, :, 0, :] if one_d else acc4
        return (finish_excess(acc, x, x_zp) if excess is not None else acc,)

    if a.get("engine") == "bitserial" and wzp_c is not None and xz_fixed is not None:
        xb, xs = a["x_bits"]
        packed = K.pack_bitserial_weights(w4, *a["w_bits"], wzp_vec(wzp_c), bias)

        def run_bitserial(x, *_):
            check_x(x.shape)
            x4 = x[:, :, None, :] if one_d else x
            s, p, d = window(x4.shape[2:])
            return finish(K.bitserial_conv_acc(x4, xz_fixed, xb, xs, packed, s, p, d, group), x, None)
        return run_bitserial
    packed = None if wzp_c is None else K.pack_conv_weights(w4, wzp_vec(wzp_c), bias)
    if packed is not None and xz_fixed is not None and (excess is None or not np.any(wzp_c)):
        def bind(shape, dtype):
            """The conv bound for this input shape. With the pair saturation: onnxruntime's saturated sums
            from the kernel where it has them for these operands (u8 x, weights' zero points 0), else
            the exact sums and the excess added."""
            check_x(shape)
            shape4 = shape[:2] + (1,) + shape[2:] if one_d else shape
            args = (shape4, dtype, xz_fixed, packed, *window(shape4[2:]), group)
            saturated = K.conv_acc_packed_for(*args, saturate=True) if excess is not None else None
            acc4 = saturated or K.conv_acc_packed_for(*args)
            acc = (lambda x: acc4(x[:, :, None, :])[:, :, 0, :]) if one_d else acc4
            return acc if excess is None or saturated else lambda x: finish_excess(acc(x), x)
        per_shape = PerShape(bind)

        def run_bound(x, w_in=None, b_in=None, x_zp=None, w_zp=None):
            return (per_shape[x.shape, x.dtype](x),)
        return shape_bound(per_shape, run_bound)

    def run(x, w_in=None, b_in=None, x_zp=None, w_zp=None):
        check_x(x.shape)
        x4 = x[:, :, None, :] if one_d else x
        s, p, d = window(x4.shape[2:])
        xz = xz_fixed if xz_fixed is not None else _scalar(x_zp)
        pk = packed if packed is not None else K.pack_conv_weights(w4, wzp_vec(w_zp), bias)
        return finish(K.conv_acc_packed(x4, xz, pk, s, p, d, group), x, x_zp)
    return run


def _matmul_pair_excess(node, const, K):
    """-> excess(*inputs) = (onnxruntime's int16 pair excess, saturated pair count) of a matmul or
    gemm onnxruntime runs through its U8S8 kernels; the inputs as the node has them (a, b, ...)."""
    b_c = const(node.inputs[1])
    if node.op == "gemm":
        b_c = np.ascontiguousarray(b_c.T if int(node.attrs["transB"]) else b_c)
        trans_a = int(node.attrs["transA"])
        return lambda a, *_: K.matmul_pair_excess(np.ascontiguousarray(a.T) if trans_a else a, b_c)
    return lambda a, b=None, *_: K.matmul_pair_excess(a, b_c if b_c is not None else b)


ENGINES = ("auto", "direct", "bitserial")


def choose_engine(engine: str, w_dtype: str, x_dtype: str, taps: int = 9, depthwise: bool = False,
                  op: str = "conv", rows: int | None = None, dpbusd: bool = False) -> str:
    """"direct" or "bitserial" for a conv (or, op "matmul" / "gemm", a product with a constant B;
    rows: A's row count when the graph fixes it) with these weight (B) and input (A) element types;
    dpbusd: the direct conv runs on vpdpbusd byte quads (fast kernels on a CPU with VNNI).

    "auto" follows the throughput measured at 1 thread (benchmarks/bench_bitserial.py, figures in
    docs/bitserial.md): the bit-serial kernel beats the direct int8 one when weight bits x
    activation bits is at most 12 for a 3x3 (or larger) window, at most 1 for a smaller one (a 1x1
    conv: only 1 bit x 1 bit beats the direct vpmaddwd kernel), at most 16 for a matmul / gemm, and
    for every width up to 8 bits when A has a single row (a GEMV); not for depthwise convolution,
    where a block of 4 output channels holds one real channel. Against the direct conv on vpdpbusd
    quads (about twice the pair kernel's speed) only at most 4 for a 3x3 window and never for a 1x1.
    The engines' sums are the same, bit for bit: the choice is speed only.
    """
    from .ir import bits, is_quantized

    if engine == "direct" or not (is_quantized(w_dtype) and is_quantized(x_dtype)) \
            or max(bits(w_dtype), bits(x_dtype)) > 8:
        return "direct"
    if engine == "bitserial":
        return "bitserial"
    limit = (64 if rows == 1 else 16) if op != "conv" else (4 if dpbusd else 12) if taps >= 9 else (0 if dpbusd else 1)
    return "bitserial" if not depthwise and bits(w_dtype) * bits(x_dtype) <= limit else "direct"


def _conv_macs(node, ins, outs):
    w = ins[1]
    return int(np.prod(outs[0])) * int(np.prod(w[1:]))


def _prep_requantize(node, const, K):
    a = node.attrs
    mult = np.ascontiguousarray(a["multiplier"], np.float32)
    axis, y_zp, qmin, qmax, dt = int(a["axis"]), int(a["y_zp"]), int(a["qmin"]), int(a["qmax"]), storage(a["dtype"])
    if a["form"] != "f32":
        raise NpusimError(f"node {node.name!r}: requantization form {a['form']!r} is not implemented")
    if not mult.size or not np.all(np.isfinite(mult) & (mult > 0)):
        raise NpusimError(f"node {node.name!r}: multiplier x_scale·w_scale/y_scale must be finite and > 0, got "
                          f"{np.array2string(mult, threshold=6)} (a zero or non-finite scale)")

    def bind(shape, dtype):
        ax = axis % max(len(shape), 1)
        if mult.size != 1 and (not shape or shape[ax] != mult.size):
            raise NpusimError(f"node {node.name!r}: {mult.size} per-channel multipliers (scales), but the "
                              f"accumulator {node.inputs[0]!r} has shape {shape} (axis {axis})")
        return K.requantize_f32_for(shape, mult, ax, y_zp, qmin, qmax, dt)
    per_shape = PerShape(bind)

    def run(acc):
        return (per_shape[acc.shape, acc.dtype](acc),)
    return shape_bound(per_shape, run)


def _bitserial_gemm(node, b_kn, a_zp, b_zp, K):
    """-> acc(a) = K.bitserial_matmul_acc with B (K, N) packed once, for a matmul / gemm node whose
    engine is "bitserial" (npusim.session._with_engines records the bit widths); None (the direct
    kernel) otherwise or when B or a zero point is not a constant."""
    if node.attrs.get("engine") != "bitserial" or b_kn is None or b_kn.ndim != 2 or a_zp is None or b_zp is None:
        return None
    packed = K.pack_bitserial_matrix(b_kn, *node.attrs["w_bits"], b_zp)
    xb, xs = node.attrs["x_bits"]
    return lambda a: K.bitserial_matmul_acc(a, a_zp, xb, xs, packed)


def _prep_matmul(node, const, K):
    a_name, b_name, azp_name, bzp_name = node.inputs
    b_c = const(b_name)
    azp_c, bzp_c = (None if v is None else np.asarray(v, np.int32) for v in (_zp(const, azp_name), _zp(const, bzp_name)))

    excess = _matmul_pair_excess(node, const, K) if node.attrs.get("pair_sat16") else None
    bitserial = _bitserial_gemm(node, b_c, azp_c, bzp_c, K)
    packed = K.pack_matmul_b(b_c, bzp_c) if bitserial is None and b_c is not None and b_c.ndim == 2 \
        and bzp_c is not None else None

    if packed is not None and azp_c is not None and excess is None:
        def bind(shape, dtype):
            if not shape or shape[-1] != b_c.shape[0]:
                raise NpusimError(f"inputs {a_name!r} {shape} and {b_name!r} {b_c.shape}: the inner dimensions "
                                  f"differ (A is (..., M, K), B is (..., K, N))")
            return K.matmul_acc_packed_for(shape, dtype, azp_c, packed)
        per_shape = PerShape(bind)

        def run_bound(a, b=None, a_zp=None, b_zp=None):
            return (per_shape[a.shape, a.dtype](a),)
        return shape_bound(per_shape, run_bound)

    def run(a, b=None, a_zp=None, b_zp=None):
        bb = b_c if b_c is not None else b
        if a.ndim == 0 or bb.ndim == 0 or a.shape[-1] != bb.shape[-2 if bb.ndim > 1 else 0]:
            raise NpusimError(f"inputs {a_name!r} {a.shape} and {b_name!r} {bb.shape}: the inner dimensions differ "
                              f"(A is (..., M, K), B is (..., K, N))")
        if bitserial is not None:
            acc = bitserial(a)
        else:
            az = azp_c if azp_c is not None else np.asarray(a_zp, np.int32)
            acc = K.matmul_acc_packed(a, az, packed) if packed is not None else \
                K.matmul_acc(a, az, bb, bzp_c if bzp_c is not None else np.asarray(b_zp, np.int32))
        if excess is not None:  # onnxruntime's int16 pair saturation (npusim.ortisa)
            acc += excess(a, bb)[0]
        return (acc,)
    return run


def _prep_gemm(node, const, K):
    a_name, b_name, c_name, azp_name, bzp_name = node.inputs
    trans_a = int(node.attrs["transA"])
    b = const(b_name)
    if b is None or b.ndim != 2:
        raise NpusimError(f"input B {b_name!r}: expected a constant 2-D matrix, got "
                          + ("a tensor computed at run time" if b is None else f"shape {b.shape}"))
    trans_b = int(node.attrs["transB"])
    b = np.ascontiguousarray(b.T if trans_b else b)
    k, n = b.shape
    c = const(c_name) if c_name else None
    if c is not None and (c.ndim > 2 or (c.ndim and c.shape[-1] not in (1, n))):
        raise NpusimError(f"bias C {c_name!r} has shape {c.shape}, expected ({n},) or 1: one per output column of "
                          f"B {b_name!r} (transB={trans_b}: N = {n})")
    az = np.asarray(_zp(const, azp_name), np.int32)
    bz = np.asarray(_zp(const, bzp_name), np.int32).reshape(-1)
    _check_channels("input zero point", az.size, 1, azp_name)
    _check_channels("weight zero point", bz.size, n, bzp_name)

    saturate = bool(node.attrs.get("pair_sat16"))
    bitserial = _bitserial_gemm(node, b, az, bz, K)
    packed = None if bitserial else K.pack_matmul_b(b, bz)  # the direct product's B, packed once
    az_rows = az.reshape(-1)
    # C as one row of N (a C with one row or one value), else None (C of M rows: added apart)
    row = None if c is None or (c.ndim == 2 and c.shape[0] != 1) else \
        np.ascontiguousarray(np.broadcast_to(np.asarray(c, np.int32).reshape(-1), (n,)))

    def bind(shape, dtype):
        if len(shape) != 2 or shape[0 if trans_a else 1] != k:
            raise NpusimError(f"input A {a_name!r} has shape {shape}, expected 2-D with K = {k} in dimension "
                              f"{0 if trans_a else 1} (transA={trans_a}; B {b_name!r} is K x N = {k} x {n} after "
                              f"transB={trans_b})")
        if bitserial is None and not (trans_a or saturate) and row is not None:  # C added by the product's kernel
            return K.matmul_acc_packed_for(shape, dtype, az_rows, packed, row)
        product = bitserial or K.matmul_acc_packed_for(shape[::-1] if trans_a else shape, dtype, az_rows, packed)
        if not (trans_a or saturate or c is not None):
            return product

        def gemm(a):
            a = np.ascontiguousarray(a.T) if trans_a else a
            acc = product(a)
            if saturate:  # onnxruntime's int16 pair saturation (npusim.ortisa), on the operands as multiplied
                e, saturated = K.matmul_pair_excess(a, b)
                if saturated:
                    acc += e
            return acc if c is None else K.add_bias_i32(acc, c)
        return gemm
    per_shape = PerShape(bind)

    def run(a, *_):
        return (per_shape[a.shape, a.dtype](a),)
    return shape_bound(per_shape, run)


def _prep_scale_float(node, const, K):
    """acc:i32 (..., N) -> f32: K.scale_float with a_scale (an input: constant, or the run-time
    scale of a dynamic_quantize), b_scale and alpha from the attrs, an optional float bias input."""
    acc_name, a_scale_name, bias_name = node.inputs
    a = node.attrs
    b_scale, alpha = np.asarray(a["b_scale"], np.float32), float(a["alpha"])
    a_scale_c, bias_c = const(a_scale_name), (const(bias_name) if bias_name else None)

    def run(acc, a_scale=None, bias=None):
        return (K.scale_float(acc, a_scale_c if a_scale_c is not None else a_scale, b_scale, alpha,
                              bias_c if bias_c is not None else bias),)
    return run


def _matmul_macs(node, ins, outs):
    return int(np.prod(outs[0])) * int(ins[0][-1])


def _prep_binary(name):
    def prepare(node, const, K):
        a = node.attrs
        bind = getattr(K, name + "_for")
        args = (np.float32(a["a_scale"]), int(a["a_zp"]), np.float32(a["b_scale"]), int(a["b_zp"]),
                np.float32(a["y_scale"]), int(a["y_zp"]), int(a["qmin"]), int(a["qmax"]), storage(a["dtype"]))
        per_shape = PerShape(lambda x_shape, y_shape: bind(x_shape, args[0], args[1], y_shape, *args[2:]))

        def run(x, y):
            return (per_shape[x.shape, y.shape](x, y),)
        return shape_bound(per_shape, run, lambda x, y: (x.shape, y.shape))
    return prepare


def _qparams(a):
    return (np.float32(a["x_scale"]), int(a["x_zp"]), np.float32(a["y_scale"]), int(a["y_zp"]),
            int(a["qmin"]), int(a["qmax"]), storage(a["dtype"]))


def _prep_gap(node, const, K):
    q = _qparams(node.attrs)
    last = int(node.attrs.get("channels_last", 0))

    if last:
        def run_last(x):
            xt = np.moveaxis(x, -1, 1)
            return (np.moveaxis(K.qlinear_global_avgpool(np.ascontiguousarray(xt), *q), 1, -1),)
        return run_last
    per_shape = PerShape(lambda shape, dtype: K.qlinear_global_avgpool_for(shape, *q))

    def run(x):
        return (per_shape[x.shape, x.dtype](x),)
    return shape_bound(per_shape, run)


def _prep_gap_f32(node, const, K):
    """Float32 GlobalAveragePool in onnxruntime's summation order (attrs order, settled by
    npusim.islands.split_pool_islands: K.global_avgpool_f32)."""
    order = node.attrs["order"]
    per_shape = PerShape(lambda shape, dtype: K.global_avgpool_f32_for(shape, order))

    def run(x):
        return (per_shape[x.shape, x.dtype](x),)
    return shape_bound(per_shape, run)


def _prep_avgpool(node, const, K):
    q = _qparams(node.attrs)
    a = node.attrs
    k = tuple(int(v) for v in a["kernel_shape"])
    window = plan_window(a, k)

    def run(x):
        s, p, _ = window(x.shape[2:])
        return (K.qlinear_avgpool(x, *q, k, s, p, int(a["count_include_pad"]), int(a["ceil_mode"])),)
    return run


def _prep_maxpool(node, const, K):
    a = node.attrs
    k = tuple(int(v) for v in a["kernel_shape"])
    window = plan_window(a, k)
    ceil_mode = int(a["ceil_mode"])

    per_shape = PerShape(lambda shape, dtype: K.maxpool_for(shape, dtype, k, *window(shape[2:]), ceil_mode))

    def run(x):
        return (per_shape[x.shape, x.dtype](x),)
    return shape_bound(per_shape, run)


def _prep_lut(builder):
    def prepare(node, const, K):
        a = node.attrs
        dt = storage(a["dtype"])
        args = (np.float32(a["x_scale"]), int(a["x_zp"]), np.float32(a["y_scale"]), int(a["y_zp"]), dt)
        table = getattr(K, builder)(a["alpha"], *args) if builder == "leaky_relu_lut" else getattr(K, builder)(*args)
        per_shape = PerShape(lambda shape, dtype: K.apply_lut_for(shape, dtype, table))

        def run(x):
            return (per_shape[x.shape, x.dtype](x),)
        return shape_bound(per_shape, run)
    return prepare


def _prep_softmax(node, const, K):
    a = node.attrs
    args = (np.float32(a["x_scale"]), int(a["x_zp"]), np.float32(a["y_scale"]), int(a["y_zp"]), int(a["axis"]),
            int(a["opset"]), storage(a["dtype"]))

    def run(x):
        return (K.qlinear_softmax(x, *args),)
    return run


def _prep_qconcat(node, const, K):
    a = node.attrs
    concat = K.qlinear_concat_for(a["x_scales"], a["x_zps"], np.float32(a["y_scale"]), int(a["y_zp"]), int(a["axis"]),
                                  storage(a["dtype"]))

    def run(*xs):
        return (concat(*xs),)
    return run


def _prep_quantize(node, const, K):
    a = node.attrs
    dt = storage(a["dtype"])
    scale, zp = a["scale"], a["zp"].astype(dt)
    axis, block, qmin, qmax = int(a["axis"]), int(a["block_size"]) or None, int(a["qmin"]), int(a["qmax"])

    per_shape = PerShape(lambda shape, dtype: K.quantize_linear_for(
        shape, scale, zp, axis % max(len(shape), 1) if scale.size > 1 else None, block, qmin, qmax, dt))

    def run(x):
        return (per_shape[x.shape, x.dtype](x),)
    return shape_bound(per_shape, run)


def _prep_dequantize(node, const, K):
    a = node.attrs
    scale, zp = a["scale"], a["zp"]
    out_dtype = storage(a.get("dtype", "f32"))  # no "dtype" (QONNX imports, older IR files): float32
    axis, block = int(a["axis"]), int(a["block_size"]) or None
    per_shape = PerShape(lambda shape, dtype: K.dequantize_linear_for(
        shape, dtype, scale, zp.astype(dtype), axis % max(len(shape), 1) if scale.size > 1 else None, block,
        out_dtype))

    def run(x):
        return (per_shape[x.shape, x.dtype](x),)
    return shape_bound(per_shape, run)


def _prep_dynamic_quantize(node, const, K):
    def run(x):
        y, s, z = K.dynamic_quantize_linear(x)
        return y, np.asarray(s, np.float32).reshape(()), np.asarray(z, np.uint8).reshape(())
    return run


def _prep_round_shift(node, const, K):
    a = node.attrs
    args = (int(a["x_zp"]), np.asarray(a["shift"], np.int64), int(a["axis"]), a["rounding"], int(a["y_zp"]),
            int(a["qmin"]), int(a["qmax"]), storage(a["dtype"]))

    def run(x):
        return (K.round_shift(x, args[0], args[1], args[2] % max(x.ndim, 1), *args[3:]),)
    return run


def _prep_sign(node, const, K):
    x_zp = node.attrs["x_zp"]

    def run(x):
        return (K.sign(x, x_zp),)
    return run


def _prep_multithreshold(node, const, K):
    a = node.attrs
    args = (np.asarray(a["thresholds"]), np.asarray(a["base"], np.int64), np.asarray(a["step"], np.int64))
    dt = storage(a["dtype"])

    def run(x):
        return (K.multithreshold(x, *args, int(a["axis"]) % max(x.ndim, 1)).astype(dt),)
    return run


OPS: dict[str, OpDef] = {
    "conv": OpDef(_prep_conv, _conv_macs, _conv_pair_excess),
    "matmul": OpDef(_prep_matmul, _matmul_macs, _matmul_pair_excess),
    "gemm": OpDef(_prep_gemm, _matmul_macs, _matmul_pair_excess),
    "requantize": OpDef(_prep_requantize),
    "scale_float": OpDef(_prep_scale_float),
    "add": OpDef(_prep_binary("qlinear_add")),
    "mul": OpDef(_prep_binary("qlinear_mul")),
    "global_avgpool": OpDef(_prep_gap),
    "global_avgpool_f32": OpDef(_prep_gap_f32),
    "avgpool": OpDef(_prep_avgpool),
    "maxpool": OpDef(_prep_maxpool),
    "sigmoid": OpDef(_prep_lut("sigmoid_lut")),
    "leaky_relu": OpDef(_prep_lut("leaky_relu_lut")),
    "softmax": OpDef(_prep_softmax),
    "qconcat": OpDef(_prep_qconcat),
    "quantize": OpDef(_prep_quantize),
    "dequantize": OpDef(_prep_dequantize),
    "dynamic_quantize": OpDef(_prep_dynamic_quantize),
    "round_shift": OpDef(_prep_round_shift),
    "sign": OpDef(_prep_sign),
    "multithreshold": OpDef(_prep_multithreshold),
    "resize": OpDef(upsample.prep_resize),
    **{op: OpDef(prep) for op, prep in data_ops.PREPARE.items()},
}
