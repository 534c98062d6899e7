"""Mode "npu": the 16-bit layers onnxruntime runs in float, lowered to TFLite's 16x8 kernels.

onnxruntime's CPU provider has no integer kernel for 16-bit activations: for QDQ models with
uint16/int16 activations (its QUInt16 / QInt16, weights QInt8) its optimizer leaves
DequantizeLinear -> Conv / Gemm / MatMul / Add / Mul / pools -> QuantizeLinear in float32 (and
makes DQ(int8 W) -> MatMul an 8-bit MatMulNBits), and mode "ort" runs those as host islands
(npusim cannot reproduce MLAS's float summation order). An integer NPU runs them as TFLite's
16x8 kernels: an int64 accumulator and the int64 MultiplyByQuantizedMultiplier
(npusim_kernels.*.acc64, fixedpoint.requantize_fixed_i64), and the int16 Add (L = 15) and Mul.

`lower(graph)` finds each such DQ -> op -> Q pattern, whether its Q/DQ are integer IR nodes or
members of host islands, and replaces it by the QLinear node onnxruntime fuses for 8 bits
(QLinearConv, com.microsoft QGemm, QLinearMatMul, QLinearAdd, QLinearMul), converted by
npusim.frontend.convert as any QLinear node: conv / gemm / matmul + requantize with the accumulator
marked int64 (attrs["acc"] = "i64"), or add / mul / avgpool / global_avgpool / maxpool, and a
Relu that keeps its scale as an exact round_shift. Not lowered (they stay on the host): the
other float ops (sigmoid, ...), a Mul whose operands' zero points let products leave int32, a
MaxPool or Relu that changes scale, a pool whose window sum can leave int32.
What else an island held stays on the host, as smaller islands. Weights must be constant
integers of at most 8 bits; a bias DequantizeLinear's int32 values are rescaled offline to the
accumulator's scale x_scale·w_scale when its own scale differs (the NPU compiler's job).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import convert
from .context import ImportContext, is_elementwise_island, onnx_dtype
from ..ir import Graph, Node, bits, is_quantized, qrange, storage
from ..requant import bias_i32

_LOWERED = ("Conv", "Gemm", "MatMul", "MatMulNBits")
_BINARY = {"Add": "QLinearAdd", "Mul": "QLinearMul"}
_POOLS = {"AveragePool": "QLinearAveragePool", "GlobalAveragePool": "QLinearGlobalAveragePool", "MaxPool": "MaxPool"}


class _Flat:
    """The graph with every host island opened into its ONNX nodes, in an order that runs.

    units[i] is an IR Node or (onnx.NodeProto, island index); inits holds every island's
    initializers and the graph's constants.
    """

    def __init__(self, graph: Graph):
        self.graph = graph
        self.islands: list[tuple[Node, list]] = []
        self.units: list = []
        self.inits = dict(graph.constants)
        for n in graph.nodes:
            if n.op != "host":
                self.units.append(n)
                continue
            model = onnx.load_from_string(n.attrs["model"])
            self.inits.update({t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
            self.units += [(p, len(self.islands)) for p in model.graph.node]
            self.islands.append((n, list(model.graph.node)))
        self.producer = {o: i for i, u in enumerate(self.units) for o in _outputs(u) if o}
        self.consumers: dict[str, list[int]] = {}
        for i, u in enumerate(self.units):
            for x in _inputs(u):
                self.consumers.setdefault(x, []).append(i)

    def dequantized(self, name):
        """(q, scale, zp, axis) when float tensor `name` is a DequantizeLinear of q (zp in q's
        storage type, scale float32); None otherwise."""
        u = self.units[self.producer[name]] if name in self.producer else None
        if isinstance(u, Node):
            if u.op != "dequantize" or u.attrs["block_size"]:
                return None
            q = u.inputs[0]
            return q, u.attrs["scale"], u.attrs["zp"].astype(self._storage(q)), int(u.attrs["axis"])
        if u is None or u[0].op_type != "DequantizeLinear" or u[0].domain not in ("", "ai.onnx", "com.microsoft"):
            return None
        p = u[0]
        a = {x.name: helper.get_attribute_value(x) for x in p.attribute}
        if a.get("block_size", 0) or any(x not in self.inits for x in p.input[1:] if x):
            return None
        q = p.input[0]
        scale = np.asarray(self.inits[p.input[1]]).astype(np.float32)
        zp = self.inits[p.input[2]] if len(p.input) > 2 and p.input[2] else np.zeros(scale.shape, self._storage(q))
        return q, scale, np.asarray(zp), int(a.get("axis", 1))

    def quantized_by(self, name):
        """(unit index, y, scale, zp) when the only reader of float tensor `name` is a per-tensor
        QuantizeLinear to y; None otherwise."""
        readers = self.consumers.get(name, [])
        if len(readers) != 1 or name in self.graph.outputs:
            return None
        u = self.units[readers[0]]
        if isinstance(u, Node):
            if u.op != "quantize" or u.attrs["scale"].size != 1 or u.attrs["block_size"]:
                return None
            y = u.outputs[0]
            return readers[0], y, u.attrs["scale"], u.attrs["zp"].astype(self._storage(y))
        p = u[0]
        if p.op_type != "QuantizeLinear" or len(p.input) < 3 or any(x not in self.inits for x in p.input[1:3]):
            return None
        scale, zp = self.inits[p.input[1]], self.inits[p.input[2]]
        if scale.size != 1:
            return None
        return readers[0], p.output[0], np.asarray(scale).astype(np.float32), np.asarray(zp)

    def _storage(self, name):
        t = self.graph.tensors.get(name)
        return storage(t.dtype) if t is not None else self.inits[name].dtype


def _inputs(u):
    return u.inputs if isinstance(u, Node) else tuple(u[0].input)


def _outputs(u):
    return u.outputs if isinstance(u, Node) else tuple(u[0].output)


def _qlinear(flat: _Flat, p: onnx.NodeProto):
    """(QLinear NodeProto, its initializers {name: array}, Q unit index) for the DQ -> p -> Q
    pattern around float op `p`, or None when p does not fit TFLite's 16x8 (or 8x8) kernels."""
    if p.domain in ("", "ai.onnx") and p.op_type in _BINARY:
        return _qbinary(flat, p)
    if p.domain in ("", "ai.onnx") and p.op_type in _POOLS:
        return _qpool(flat, p)
    if p.domain in ("", "ai.onnx") and p.op_type == "Relu":
        return _qrelu(flat, p)
    if p.domain not in ("", "ai.onnx", "com.microsoft") or p.op_type not in _LOWERED or \
            (p.domain == "com.microsoft") != (p.op_type == "MatMulNBits"):
        return None
    srcs = [flat.dequantized(x) if x else None for x in p.input]
    if p.op_type == "MatMulNBits":
        srcs = [srcs[0], _nbits_weight(flat, p)]
    out = flat.quantized_by(p.output[0])
    if out is None or len(srcs) < 2 or srcs[0] is None or srcs[1] is None:
        return None
    (xq, xs, xz, _), (wq, ws, wz, w_axis) = srcs[0], srcs[1]
    x_t = flat.graph.tensors.get(xq)
    if x_t is None or not is_quantized(x_t.dtype) or bits(x_t.dtype) > 16 or xs.size != 1 or xq in flat.inits:
        return None
    w = flat.inits.get(wq)
    if w is None or w.dtype not in (np.int8, np.uint8):
        return None
    q_index, y, ys, yz = out
    a = {x.name: helper.get_attribute_value(x) for x in p.attribute}
    name = p.name
    inits = {f"{name}::x_scale": xs.reshape(()), f"{name}::x_zp": xz.reshape(()),
             f"{name}::w": w, f"{name}::w_scale": ws.reshape(-1) if ws.size > 1 else ws.reshape(()),
             f"{name}::w_zp": wz.reshape(-1) if wz.size > 1 else wz.reshape(()),
             f"{name}::y_scale": ys.reshape(()), f"{name}::y_zp": yz.reshape(())}
    out_axis = {"Conv": 0, "MatMul": 1, "MatMulNBits": 1, "Gemm": 0 if a.get("transB", 0) else 1}[p.op_type]
    if ws.size > 1 and w_axis % w.ndim != out_axis:
        return None  # per-channel along an axis that is not the output channels
    bias = None
    if p.op_type in ("Conv", "Gemm") and len(p.input) > 2 and p.input[2]:
        bias = _bias(flat, srcs[2], np.float64(xs.reshape(-1)[0]) * ws.astype(np.float64).reshape(-1))
        if bias is None:
            return None
        inits[f"{name}::bias"] = bias
    ins = [xq, f"{name}::x_scale", f"{name}::x_zp", f"{name}::w", f"{name}::w_scale", f"{name}::w_zp"]
    outs = [f"{name}::y_scale", f"{name}::y_zp"]
    if p.op_type == "Conv":
        if w.ndim != 4:
            return None
        node = helper.make_node("QLinearConv", ins + outs + ([f"{name}::bias"] if bias is not None else []), [y],
                                name=name, **a)
    elif p.op_type in ("MatMul", "MatMulNBits"):
        if w.ndim != 2:
            return None
        node = helper.make_node("QLinearMatMul", ins + outs, [y], name=name)
    else:
        if float(a.get("beta", 1.0)) != 1.0 or int(a.get("transA", 0)):
            return None
        node = helper.make_node("QGemm", ins + [f"{name}::bias" if bias is not None else ""] + outs, [y], name=name,
                                domain="com.microsoft", transA=0, transB=int(a.get("transB", 0)),
                                alpha=float(a.get("alpha", 1.0)))
    return node, inits, q_index


def _qbinary(flat: _Flat, p: onnx.NodeProto):
    """DQ(a), DQ(b) -> Add / Mul -> Q as com.microsoft QLinearAdd / QLinearMul (TFLite's int16 Add
    and Mul for 16-bit operands), when the fixed-point kernel's int32 headroom holds: Add shifts
    |x − x_zp| by 15 (16-bit output) or 20 bits; Mul needs max|a − a_zp|·max|b − b_zp| < 2^31
    (true for TFLite's zero points 0, not for most uint16 zero points, which stay on the host)."""
    srcs = [flat.dequantized(x) for x in p.input]
    out = flat.quantized_by(p.output[0])
    if out is None or None in srcs or any(s[1].size != 1 for s in srcs):
        return None
    q_index, y, ys, yz = out
    name, ins, inits = p.name, [], {}
    for i, (q, scale, zp, _) in enumerate(srcs):
        if q in flat.inits:  # a constant operand
            inits[f"{name}::in{i}"] = np.asarray(flat.inits[q])
            q = f"{name}::in{i}"
        elif q not in flat.graph.tensors:
            return None
        inits[f"{name}::scale{i}"], inits[f"{name}::zp{i}"] = scale.reshape(()), zp.reshape(())
        ins += [q, f"{name}::scale{i}", f"{name}::zp{i}"]
    types = [inits[x].dtype if x in inits else storage(flat.graph.tensors[x].dtype) for x in ins[::3]]
    if not all(t.kind in "ui" and t.itemsize <= 2 for t in types):
        return None
    room = [max(int(z) - int(np.iinfo(t).min), int(np.iinfo(t).max) - int(z)) for t, (_, _, z, _) in zip(types, srcs)]
    if p.op_type == "Add" and max(room) << (15 if yz.dtype.itemsize == 2 else 20) > 2 ** 31 - 1:
        return None
    if p.op_type == "Mul" and room[0] * room[1] > 2 ** 31 - 1:
        return None
    inits[f"{name}::y_scale"], inits[f"{name}::y_zp"] = ys.reshape(()), yz.reshape(())
    node = helper.make_node(_BINARY[p.op_type], ins + [f"{name}::y_scale", f"{name}::y_zp"], [y], name=name,
                            domain="com.microsoft")
    return node, inits, q_index


def _qpool(flat: _Flat, p: onnx.NodeProto):
    """DQ -> AveragePool / GlobalAveragePool -> Q as com.microsoft QLinearAveragePool /
    QLinearGlobalAveragePool (the NPU's integer window sum and per-count multiplier, 8 or 16 bits,
    when a window's sum stays in int32); DQ -> MaxPool -> Q with the same scale and zero point on
    both sides as an integer MaxPool of the quantized tensor."""
    src = flat.dequantized(p.input[0])
    out = flat.quantized_by(p.output[0])
    if src is None or out is None or len([o for o in p.output if o]) != 1:
        return None
    (xq, xs, xz, _), (q_index, y, ys, yz) = src, out
    t = flat.graph.tensors.get(xq)
    if t is None or xq in flat.inits or not is_quantized(t.dtype) or bits(t.dtype) > 16 or xs.size != 1:
        return None
    a = {x.name: helper.get_attribute_value(x) for x in p.attribute}
    if p.op_type == "MaxPool":
        same = xs.reshape(-1)[0] == ys.reshape(-1)[0] and int(xz.reshape(-1)[0]) == int(yz.reshape(-1)[0])
        return (helper.make_node("MaxPool", [xq], [y], name=p.name, **a), {}, q_index) if same else None
    known = t.shape is not None and all(isinstance(d, int) and d > 0 for d in t.shape[2:])
    taps = int(np.prod(a["kernel_shape"])) if p.op_type == "AveragePool" else \
        int(np.prod(t.shape[2:])) if known else 1  # unknown size: the kernel checks it at run time
    info = np.iinfo(storage(t.dtype))
    if taps * max(int(xz.reshape(-1)[0]) - int(info.min), int(info.max) - int(xz.reshape(-1)[0])) > 2 ** 31 - 1:
        return None
    name = p.name
    inits = {f"{name}::x_scale": xs.reshape(()), f"{name}::x_zp": xz.reshape(()),
             f"{name}::y_scale": ys.reshape(()), f"{name}::y_zp": yz.reshape(())}
    node = helper.make_node(_POOLS[p.op_type], [xq] + list(inits), [y], name=name, domain="com.microsoft", **a)
    return node, inits, q_index


def _qrelu(flat: _Flat, p: onnx.NodeProto):
    """DQ -> Relu -> Q with one scale on both sides (zero points may differ) as Relu of the
    quantized tensor: y = clamp(x − x_zp + y_zp, max(qmin, y_zp), qmax), onnxruntime's own value
    (round(f32(f32((x − x_zp)·s) / s)) is x − x_zp exactly for |x − x_zp| < 2^16)."""
    src, out = flat.dequantized(p.input[0]), flat.quantized_by(p.output[0])
    if src is None or out is None:
        return None
    (xq, xs, xz, _), (q_index, y, ys, yz) = src, out
    if xq in flat.inits or xq not in flat.graph.tensors or xs.size != 1 or xs.reshape(-1)[0] != ys.reshape(-1)[0]:
        return None
    inits = {f"{p.name}::x_zp": xz.reshape(()), f"{p.name}::y_zp": yz.reshape(())}
    return helper.make_node("Relu", [xq], [y], name=p.name), inits, q_index


def _relu_node(flat: _Flat, node: onnx.NodeProto, inits: dict) -> Node:
    """The IR form of `_qrelu`'s Relu: an exact round_shift by 0 whose lower bound is y_zp (as
    npusim.frontend.qonnx lowers a Relu on a quantized tensor)."""
    y = node.output[0]
    x_zp, y_zp = (int(inits[f"{node.name}::{k}"]) for k in ("x_zp", "y_zp"))
    dtype = flat.graph.tensors[y].dtype
    lo, hi = qrange(dtype)
    return Node("round_shift", node.name, (node.input[0],), (y,),
                {"x_zp": x_zp, "shift": np.zeros(1, np.int64), "axis": 0, "rounding": "FLOOR", "y_zp": y_zp,
                 "qmin": max(lo, y_zp), "qmax": hi, "dtype": dtype}, node.name)


def _nbits_weight(flat, p):
    """(w, scale, zp, axis) of an 8-bit com.microsoft MatMulNBits, the form onnxruntime's optimizer
    gives DequantizeLinear(int8 W) -> MatMul: B (N, blocks, block_size) uint8 holds w[k, n] + 128
    at [n, k // block_size, k % block_size], zero points 128; registered as a (K, N) int8 constant
    with zero point 0. None for other widths, extra inputs, or scales that vary along K."""
    a = {x.name: helper.get_attribute_value(x) for x in p.attribute}
    names = list(p.input[1:4]) + [""] * (4 - len(p.input))
    if int(a.get("bits", 4)) != 8 or any(x for x in p.input[4:]) or not all(x in flat.inits for x in names[:2]):
        return None
    k, n = int(a["K"]), int(a["N"])
    b = np.asarray(flat.inits[names[0]])
    scale = np.asarray(flat.inits[names[1]], np.float32).reshape(n, -1)
    zp = np.asarray(flat.inits[names[2]]).reshape(n, -1) if names[2] in flat.inits else np.full(scale.shape, 128)
    if b.dtype != np.uint8 or np.any(zp != 128) or np.any(scale != scale[:, :1]):
        return None
    w = (b.reshape(n, -1)[:, :k].astype(np.int16) - 128).astype(np.int8).T
    name = f"{p.name}::w_int8"
    flat.inits[name] = np.ascontiguousarray(w)
    per_n = scale[:, 0] if np.any(scale[:, 0] != scale[0, 0]) else scale[:1, 0]
    return name, per_n, np.zeros(per_n.shape, np.int8), 1


def _bias(flat, src, acc_scale):
    """The int32 bias in units of the accumulator's scale, from a DequantizeLinear of a constant
    int32 (its values as they are when its scale is the accumulator's, else rounded half away
    from zero from b·b_scale/acc_scale in float64); None when it is not such a constant."""
    if src is None:
        return None
    bq, bs, bz, _ = src
    b = flat.inits.get(bq)
    if b is None or b.dtype != np.int32 or np.any(bz != 0):
        return None
    bs64 = bs.astype(np.float64).reshape(-1)
    if np.array_equal(bs64 * np.ones_like(acc_scale), acc_scale.astype(np.float32).astype(np.float64)):
        return b
    return bias_i32(b.astype(np.float64) * bs64, acc_scale)


def _convert(flat: _Flat, node: onnx.NodeProto, inits: dict):
    """npusim.frontend.convert's IR nodes and tensors for QLinear `node` (accumulator marked int64)."""
    acts = [x for x in node.input if x and x not in inits]  # the operands that are graph tensors
    g = flat.graph
    if node.op_type == "Relu":
        return [_relu_node(flat, node, inits)], {x: g.tensors[x] for x in list(node.input) + list(node.output)}
    model = helper.make_model(helper.make_graph(
        [node], "lowered", [helper.make_tensor_value_info(x, onnx_dtype(g.tensors[x].dtype), None) for x in acts], [],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()]))
    ctx = ImportContext(model)
    ctx.tensors.update({x: g.tensors[x] for x in acts})
    if not convert.convert(ctx, node):
        return None
    nodes = []
    for n in ctx.nodes:
        if n.op in ("conv", "gemm", "matmul"):
            n = replace(n, attrs={**n.attrs, "acc": "i64"})
            ctx.tensors[n.outputs[0]] = replace(ctx.tensors[n.outputs[0]], dtype="i64")
        nodes.append(n)
    return nodes, ctx.tensors


def _sixteen_bit(flat: _Flat, node: onnx.NodeProto, inits: dict) -> bool:
    """True when an activation of QLinear `node` (an operand or the output) is 16-bit: the layers
    of 8-bit models that onnxruntime keeps in float (4-bit weights, say) are left as they are."""
    acts = [x for x in list(node.input) + [node.output[0]] if x in flat.graph.tensors and x not in inits]
    return any(is_quantized(d) and bits(d) == 16 for d in (flat.graph.tensors[x].dtype for x in acts))


def lower(graph: Graph) -> Graph:
    """`graph` with every DQ -> op -> Q with 16-bit activations that onnxruntime leaves in float
    replaced by integer nodes (see the module docstring)."""
    flat = _Flat(graph)
    lowered: dict[int, list[Node]] = {}
    tensors, constants = dict(graph.tensors), dict(graph.constants)
    drop = set()
    for i, u in enumerate(flat.units):
        if isinstance(u, Node):
            continue
        found = _qlinear(flat, u[0])
        if found is None or not _sixteen_bit(flat, found[0], found[1]):
            continue
        node, inits, q_index = found
        done = _convert(flat, node, inits)
        if done is None:
            continue
        nodes, new_tensors = done
        lowered[i] = nodes
        drop |= {i, q_index}
        for n in nodes:
            for x in n.inputs:
                if x in inits:
                    constants[x] = np.asarray(inits[x])
                    tensors[x] = new_tensors[x]
            for o in n.outputs:
                tensors[o] = new_tensors[o]
        tensors.update({x: new_tensors[x] for x in node.input if x in graph.tensors})
    if not lowered:
        return graph
    drop |= _dead_dequantize(flat, drop)
    nodes = _regroup(flat, lowered, drop)
    used = {x for n in nodes for x in n.inputs} | set(graph.outputs)
    constants = {k: v for k, v in constants.items() if k in used}
    return replace(graph, nodes=tuple(nodes), tensors=tensors, constants=constants)


def _dead_dequantize(flat: _Flat, drop: set) -> set:
    """The DequantizeLinear units (IR or island) whose every reader was dropped."""
    dead = set()
    for i, u in enumerate(flat.units):
        is_dq = (u.op == "dequantize") if isinstance(u, Node) else u[0].op_type == "DequantizeLinear"
        out = _outputs(u)[0]
        if is_dq and out not in flat.graph.outputs and all(r in drop for r in flat.consumers.get(out, [])):
            dead.add(i)
    return dead


def _regroup(flat: _Flat, lowered: dict, drop: set) -> list[Node]:
    """The node list: IR units, lowered nodes at their op's place, and each run of consecutive
    remaining members of one island as a host node (the original one when the island is whole)."""
    out: list[Node] = []
    run: list = []

    def flush():
        if run:
            out.append(_island(flat, run, lowered, drop))
            run.clear()
    for i, u in enumerate(flat.units):
        if i in lowered:
            flush()
            out.extend(lowered[i])
        elif i in drop:
            continue
        elif isinstance(u, Node):
            flush()
            out.append(u)
        else:
            if run and flat.units[run[-1]][1] != u[1]:
                flush()
            run.append(i)
    flush()
    return out


def _island(flat: _Flat, members: list[int], lowered: dict, drop: set) -> Node:
    """A host node running the island units `members` (the original node when they are all of it)."""
    node, protos = flat.islands[flat.units[members[0]][1]]
    mine = [flat.units[i][0] for i in members]
    if len(mine) == len(protos):
        return node
    produced = {o for p in mine for o in p.output}
    inputs = list(dict.fromkeys(x for p in mine for x in p.input if x and x not in produced and x not in flat.inits))
    consts = list(dict.fromkeys(x for p in mine for x in p.input if x in flat.inits and x not in produced))
    member_set = set(members)
    read_elsewhere = {x for i, u in enumerate(flat.units) if i not in member_set and i not in drop
                      for x in _inputs(u)} | {x for ns in lowered.values() for n in ns for x in n.inputs}
    outputs = [o for o in produced if o in read_elsewhere or o in flat.graph.outputs]
    outputs = [o for p in mine for o in p.output if o in outputs]
    g = flat.graph

    def value_info(x):
        t = g.tensors[x]
        shape = None if t.shape is None else [d if isinstance(d, int) else None for d in t.shape]
        return helper.make_tensor_value_info(x, onnx_dtype(t.dtype), shape)
    sub = helper.make_graph(mine, "island", [value_info(x) for x in inputs],
                            [onnx.ValueInfoProto(name=o) for o in outputs],
                            [numpy_helper.from_array(np.asarray(flat.inits[c]), c) for c in consts])
    model = helper.make_model(sub, opset_imports=[helper.make_opsetid(d, v) for d, v in g.opsets.items()])
    model.ir_version = 10
    elementwise = is_elementwise_island(mine, [g.tensors[x].dtype for x in inputs],
                                        lambda x: np.asarray(flat.inits[x]).size if x in consts else None)
    return Node("host", mine[0].name, tuple(inputs), tuple(outputs),
                {"model": model.SerializeToString(), "ops": tuple(f"{p.op_type}:{p.name}" for p in mine),
                 "elementwise": elementwise}, ", ".join(p.name for p in mine))

