"""QDQ fusion of the upsampling ops for mode "npu": a pure onnx.ModelProto -> ModelProto rewrite.

    DequantizeLinear -> Resize -> QuantizeLinear
        nearest, equal (scale, zero point, type) in and out:  Resize on the codes
        otherwise (another quantization, or linear):          com.microsoft QLinearResize
    DequantizeLinear -> ConvTranspose -> QuantizeLinear,      com.microsoft QLinearConvTranspose
        its weight the DequantizeLinear of a constant (per tensor, or per channel on axis 1),
        its bias absent, the DequantizeLinear of an int32 constant, or a float constant

QLinearResize (X, X_scale, X_zero_point, roi, scales, sizes, Y_scale, Y_zero_point; Resize's
attributes) and QLinearConvTranspose (QLinearConv's inputs: x, x_scale, x_zp, w, w_scale, w_zp,
y_scale, y_zp, optional int32 B; ConvTranspose's attributes) are npusim's forms, lowered by
npusim.frontend.convert; onnxruntime's CPU provider has no kernel for either, so no onnxruntime session
ever sees them (the pass is one of npusim.frontend.qdq_fusion's, mode "npu" only). The bias enters the int32 accumulator of scale
x_scale·w_scale[m]: an int32 bias dequantized with exactly that scale (onnxruntime's quantizer
writes it so) and zero point 0 is taken as it is; any other bias (float, or int32 at another
scale) is converted to round_half_away(bias_real / (x_scale·w_scale[m])), as an NPU compiler
quantizes a float bias (npusim.requant.bias_i32). Only per-tensor activations (scalar scale and zero point constants) fuse;
an intermediate that is a graph output or read by another node stays as it is.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..requant import bias_i32

_DQ, _Q = "DequantizeLinear", "QuantizeLinear"


def _standard(node) -> bool:
    return node.domain in ("", "ai.onnx")


class _Graph:
    """Producers, readers and constants of a GraphProto, for pattern matching."""

    def __init__(self, g: onnx.GraphProto):
        self.init = {t.name: t for t in g.initializer}
        self.producer = {o: n for n in g.node for o in n.output}
        self.readers: dict[str, list] = {}
        for n in g.node:
            for x in n.input:
                self.readers.setdefault(x, []).append(n)
        self.outputs = {o.name for o in g.output}

    def const(self, name):
        return numpy_helper.to_array(self.init[name]) if name in self.init else None

    def only_reader(self, name, op_type):
        """The one node reading `name` if it is an `op_type` and `name` is no graph output."""
        r = self.readers.get(name, [])
        if len(r) == 1 and r[0].op_type == op_type and _standard(r[0]) and name not in self.outputs:
            return r[0]
        return None

    def dq_of(self, name, per_tensor=True):
        """The DequantizeLinear producing `name` with constant parameters (scalar if per_tensor)."""
        n = self.producer.get(name)
        if n is None or n.op_type != _DQ or not _standard(n):
            return None
        params = [self.const(x) for x in n.input[1:3] if x]
        if len(params) < 1 or any(p is None for p in params) or (per_tensor and any(p.size != 1 for p in params)):
            return None
        return n

    def qparams(self, node):
        """(scale:f32, zero point:int, zero point's onnx type) of a per-tensor Q/DQ node."""
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        z = self.const(zp) if zp else None
        ztype = self.init[zp].data_type if zp else onnx.TensorProto.UINT8
        return float(self.const(node.input[1]).reshape(-1)[0]), 0 if z is None else int(z.reshape(-1)[0]), ztype


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _resize(g: _Graph, node, new_inits):
    """The fused node replacing DQ -> Resize -> Q, with the first outputs of the nodes it replaces, or None."""
    dq = g.dq_of(node.input[0])
    q = g.only_reader(node.output[0], _Q)
    if dq is None or q is None or not _q_ok(g, q):
        return None
    (xs, xz, xt), (ys, yz, yt) = g.qparams(dq), g.qparams(q)
    rest = list(node.input[1:]) + [""] * (3 - len(node.input[1:]))
    name = node.name or node.output[0]
    if _attr(node, "mode", "nearest") == "nearest" and (xs, xz, xt) == (ys, yz, yt):
        fused = helper.make_node("Resize", [dq.input[0]] + rest, [q.output[0]], name=name)
    else:
        fused = helper.make_node("QLinearResize", [dq.input[0], dq.input[1], _in(dq, 2)] + rest
                                 + [q.input[1], _in(q, 2)], [q.output[0]], name=name, domain="com.microsoft")
    fused.attribute.extend(node.attribute)
    return fused, {node.output[0], q.output[0]}


def _in(node, i):
    return node.input[i] if i < len(node.input) else ""


def _q_ok(g: _Graph, q) -> bool:
    """A per-tensor QuantizeLinear with constant parameters."""
    params = [g.const(x) for x in q.input[1:3] if x]
    return bool(params) and all(p is not None and p.size == 1 for p in params)


def _conv_transpose(g: _Graph, node, new_inits):
    dq_x = g.dq_of(node.input[0])
    dq_w = g.dq_of(node.input[1], per_tensor=False)
    q = g.only_reader(node.output[0], _Q)
    if dq_x is None or dq_w is None or q is None or not _q_ok(g, q) or g.const(dq_w.input[0]) is None:
        return None
    if g.const(dq_w.input[1]).size > 1 and int(_attr(dq_w, "axis", 1)) != 1:
        return None
    xs = np.float32(g.qparams(dq_x)[0])
    ws = g.const(dq_w.input[1]).astype(np.float32).reshape(-1)
    group = int(_attr(node, "group", 1))
    m = g.const(dq_w.input[0]).shape[1] * group
    acc_scale = xs * np.broadcast_to(np.tile(ws, group) if ws.size > 1 else ws, (m,))  # float32, per channel
    bias = _bias(g, node.input[2] if len(node.input) > 2 else "", acc_scale)
    if bias is False:
        return None
    b_name = ""
    if bias is not None:
        b_name = f"{node.name or node.output[0]}/bias_i32"
        new_inits.append(numpy_helper.from_array(bias, b_name))
    ins = [dq_x.input[0], dq_x.input[1], _in(dq_x, 2), dq_w.input[0], dq_w.input[1], _in(dq_w, 2),
           q.input[1], _in(q, 2), b_name]
    fused = helper.make_node("QLinearConvTranspose", ins, [q.output[0]], name=node.name or node.output[0],
                             domain="com.microsoft")
    fused.attribute.extend(node.attribute)
    return fused, {node.output[0], q.output[0]}


def _bias(g: _Graph, name, acc_scale):
    """int32 bias at the accumulator scale (module docstring); None if absent, False if not constant."""
    if not name:
        return None
    dq = g.producer.get(name)
    if dq is not None and dq.op_type == _DQ and _standard(dq):
        codes, scale = g.const(dq.input[0]), g.const(dq.input[1])
        zp = g.const(dq.input[2]) if _in(dq, 2) else np.zeros(1, np.int32)
        if codes is None or scale is None or zp is None:
            return False
        codes = codes.reshape(-1)
        scale = np.broadcast_to(scale.astype(np.float32).reshape(-1), codes.shape)
        if codes.dtype == np.int32 and not np.any(zp) and np.array_equal(scale, acc_scale):
            return codes
        real = (codes.astype(np.float64) - zp.astype(np.float64).reshape(-1)) * scale.astype(np.float64)
    else:
        real = g.const(name)
        if real is None:
            return False
        real = real.astype(np.float64).reshape(-1)
    b = bias_i32(real, acc_scale) if real.shape == acc_scale.shape else None
    return False if b is None else b


_FUSERS = {"Resize": _resize, "ConvTranspose": _conv_transpose}


def fuse_upsampling(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with its DQ -> Resize -> Q and DQ -> ConvTranspose -> Q patterns in the fused forms
    of the module docstring (a new ModelProto; `model` is not changed). DequantizeLinear nodes left
    without a reader are dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = _Graph(out.graph)
    new_inits, replaced, fused_at = [], set(), {}
    for i, node in enumerate(out.graph.node):
        fuser = _FUSERS.get(node.op_type) if _standard(node) else None
        hit = fuser(g, node, new_inits) if fuser else None
        if hit:
            fused_at[i], gone = hit
            replaced |= gone
    if not fused_at:
        return out
    nodes = []
    for i, node in enumerate(out.graph.node):
        if i in fused_at:
            nodes.append(fused_at[i])
        elif node.output[0] not in replaced:
            kept = onnx.NodeProto()
            kept.CopyFrom(node)
            nodes.append(kept)
    nodes = _drop_unread_dq(nodes, {o.name for o in out.graph.output})
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(new_inits)
    if not any(o.domain == "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


def _drop_unread_dq(nodes, graph_outputs):
    read = {x for n in nodes for x in n.input}
    return [n for n in nodes if not (n.op_type == _DQ and _standard(n) and n.output[0] not in read
                                     and n.output[0] not in graph_outputs)]
