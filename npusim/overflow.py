"""int32 accumulator overflow: which layers can wrap (a plan-time bound), and how many
accumulator elements did wrap on given inputs (an exact int64 recomputation, for verify).

Semantics (both modes): conv, matmul, gemm and conv_transpose (mode npu) accumulate Σ (x − x_zp)·(w − w_zp) + bias in
int32 and wrap modulo 2^32 on overflow, as onnxruntime's CPU kernels do (mode "ort": the
wrapped value is onnxruntime's). Mode "npu" keeps the same wrap-around (TFLite's reference
kernels accumulate in int32, where overflow is undefined; npusim defines it as wrapping) and
reports it: docs/npu_arithmetic.md. The golden kernels refuse an overflow instead (ValueError
with the index). Nothing is checked per inference: `may_overflow` bounds each layer once, at
plan time, and `count_wrapped` recomputes only those layers, in `npusim verify`.

Bound of output channel c: max|x − x_zp| · Σ_k |w[c, k] − w_zp[c]| + |bias[c]|, with
max|x − x_zp| from the input's element type and zero point (a transposed convolution's sum runs
over every weight of its group, an upper bound of the taps that meet one output). A layer whose bound is at most
2^31 − 1 cannot overflow on any input.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from . import ir

I32_MAX = 2 ** 31 - 1
ACC_OPS = ("conv", "matmul", "gemm", "conv_transpose")
_CONV_LIKE = ("conv", "gemm", "conv_transpose")  # inputs x, w, bias, x_zp, w_zp


def _weights(node: ir.Node, graph: ir.Graph):
    """(d, reduce_axes, bias) of an accumulating node with constant weights: d = w − w_zp in int64
    with output channels on axis 0 (conv) or on the last axis (matmul, gemm), or None."""
    w = graph.constants.get(node.inputs[1])
    if w is None:
        return None
    zp_name = node.inputs[4] if node.op in _CONV_LIKE else node.inputs[3]
    zp = np.asarray(graph.constants.get(zp_name, 0) if zp_name else 0, np.int64).reshape(-1)
    if node.op == "conv_transpose":  # w (C, M/group, k...): output channel m = g·M/group + j
        c, mg = w.shape[:2]
        group = int(node.attrs["group"])
        zp_m = np.resize(zp, group * mg)  # one value, M/group repeated per group, or M
        zp_cj = zp_m.reshape(group, mg)[np.arange(c) // (c // group)]
        d = w.astype(np.int64) - zp_cj.reshape((c, mg) + (1,) * (w.ndim - 2))
        return d, tuple(range(2, w.ndim)), graph.constants.get(node.inputs[2]) if node.inputs[2] else None
    if node.op == "conv":
        d = w.astype(np.int64) - zp.reshape((-1,) + (1,) * (w.ndim - 1))
        return d, tuple(range(1, w.ndim)), graph.constants.get(node.inputs[2]) if node.inputs[2] else None
    b = w.T if node.op == "gemm" and int(node.attrs["transB"]) else w
    d = b.astype(np.int64) - (zp if zp.size == 1 else zp.reshape(1, -1))
    bias = graph.constants.get(node.inputs[2]) if node.op == "gemm" and node.inputs[2] else None
    return d, (d.ndim - 2,) if d.ndim > 1 else (0,), bias


def accumulator_bound(node: ir.Node, graph: ir.Graph) -> int | None:
    """The largest |accumulator| of `node` over every input its element type allows; None when
    the weights are not constant (no bound: the layer may overflow)."""
    dw = _weights(node, graph)
    if dw is None:
        return None
    d, axes, bias = dw
    x = graph.tensors[node.inputs[0]]
    lo, hi = ir.qrange(x.dtype)
    xzp_name = node.inputs[3] if node.op in _CONV_LIKE else node.inputs[2]
    xzp = graph.constants.get(xzp_name) if xzp_name else np.zeros(1)
    x_max = (hi - lo) if xzp is None else max(hi - int(np.min(xzp)), int(np.max(xzp)) - lo)
    per_channel = np.abs(d).sum(axis=axes)
    if node.op == "conv_transpose":  # (C, M/group) -> summed over the C/group inputs of each group
        group = int(node.attrs["group"])
        per_channel = per_channel.reshape(group, -1, per_channel.shape[1]).sum(axis=1).reshape(-1)
    per_channel = per_channel * x_max
    if bias is not None:
        per_channel = per_channel + np.abs(np.asarray(bias, np.int64))
    return int(np.max(per_channel, initial=0))


def may_overflow(graph: ir.Graph) -> dict[str, int | None]:
    """{node name: bound} of the accumulating layers whose int32 accumulator can wrap (an int64
    accumulator, as mode npu's 16x8 layers have, is not bounded here)."""
    out = {}
    for n in graph.nodes:
        if n.op in ACC_OPS and graph.tensors[n.outputs[0]].dtype == "i32" \
                and ir.is_quantized(graph.tensors[n.inputs[0]].dtype):
            bound = accumulator_bound(n, graph)
            if bound is None or bound > I32_MAX:
                out[n.name] = bound
    return out


def count_wrapped(node: ir.Node, graph: ir.Graph, inputs: list) -> int:
    """How many accumulator elements of `node` leave int32 on these inputs (the node's own
    inputs, in order): the exact sum in int64, from the golden kernels through the registry.
    The weights d = w − w_zp are split as d = q·2^s + r so that each partial sum fits int32
    (the golden kernels refuse an overflow): acc = 2^s·Σx·q + Σx·r + bias."""
    from .npu import ops as npu_ops
    from .registry import OPS, kernel_set

    dw = _weights(node, graph)
    if dw is None:
        return 0
    d = dw[0]
    s = max(1, (int(np.abs(d).max(initial=1)).bit_length() + 1) // 2)
    q, r = d >> s, d & ((1 << s) - 1)
    K = kernel_set("golden")
    w_name, zp_i, b_i = node.inputs[1], (4 if node.op in _CONV_LIKE else 3), 2
    ops = OPS if node.op in OPS else npu_ops("double")  # conv_transpose: mode npu's entry
    attrs = {k: v for k, v in node.attrs.items() if k not in ("pair_sat16", "engine")}

    def partial(weights, keep_bias):
        w = weights.T if node.op == "gemm" and int(node.attrs["transB"]) else weights
        ins = list(node.inputs)
        ins[zp_i] = ""
        if not keep_bias and node.op in _CONV_LIKE:
            ins[b_i] = ""
        consts = {**graph.constants, w_name: np.ascontiguousarray(w)}
        run = ops[node.op].prepare(replace(node, inputs=tuple(ins), attrs=attrs), consts.get, K)
        args = list(inputs)
        args[zp_i] = None
        return run(*args)[0].astype(np.int64)

    exact = (partial(q, False) << s) + partial(r, False) + partial(np.zeros_like(d), True)
    return int(np.count_nonzero((exact > I32_MAX) | (exact < -I32_MAX - 1)))
