"""Mode "npu": the NPU compiler's own QDQ fusion (ONNX ModelProto -> ModelProto), no onnxruntime.

Mode "ort" imports a QDQ model as onnxruntime's graph optimizer leaves it (npusim.frontend),
because that is what onnxruntime computes; on x86 it keeps most int8-activation patterns in
float (TFLite's int8 models, say). An NPU compiler fuses every DequantizeLinear -> op ->
QuantizeLinear that has an integer form. `fuse(model)` does so, as the named list `PASSES`
(after `check`, onnxruntime's refusal of a node input nothing defines):

- `fuse_qdq`: each float op whose quantized operands come from DequantizeLinear (constant,
  per-tensor scale and zero point for activations; weights per-tensor or per output channel,
  8 or 4 bits, signed or unsigned) and whose only reader is a per-tensor QuantizeLinear, through
  any chain of Relu / Clip with constant bounds, becomes the QOperator node npusim.frontend.convert
  reads: Conv -> QLinearConv, ConvTranspose -> npusim's QLinearConvTranspose, MatMul -> QLinearMatMul, Gemm -> com.microsoft QGemm (with no Q
  after it: MatMulIntegerToFloat, QGemm's float output), Add / Mul -> QLinearAdd / QLinearMul,
  AveragePool, GlobalAveragePool, Sigmoid, LeakyRelu, Softmax -> their com.microsoft QLinear
  forms, Concat -> QLinearConcat (Concat of the codes when every scale and zero point equal the
  output's). MaxPool, Reshape, Transpose, Squeeze, Unsqueeze, Flatten, Slice, Pad and a bare
  DQ -> Q with one scale and zero point on both sides run on the codes: Q(op(DQ(x))) = op(x)
  exactly (Q(DQ(x)) = x, and MaxPool commutes with the monotone Q; Pad pads with Q(value));
  such an op on a float tensor (a host op's output) before a Q runs on the codes of a new Q
  of its input, as onnxruntime's QDQ propagation moves the Q: Q(op(v)) = op(Q(v)).
  Shape(DQ(x)) is Shape(x).
  Relu / Clip between the op and the Q are clamp bounds on the output codes, exactly:
  Q(clip(v, lo, hi)) = clamp(Q(v), Q(lo), Q(hi)) as Q is monotone (Q(lo), Q(hi) round half to
  even, as QuantizeLinear). A bound that narrows the type's range becomes Clip on the codes
  (npusim.frontend.convert), folded into its producer's qmin / qmax by `fold_clamps` on the IR.
  A bias is a DequantizeLinear of int32 (zero point 0) or a float constant, in units of the
  accumulator scale x_scale·w_scale[c]: its codes as they are when its scale is that one, else
  rescaled offline and rounded half away from zero (the NPU compiler's job).
- `fuse_upsampling` (npusim.frontend.qdq_upsample): DQ -> Resize / ConvTranspose -> Q.
- `drop_dead_dequantize`: the DequantizeLinear nodes no one reads any more.

16-bit activations are left alone (npusim.frontend.sixteen lowers them in mode "npu"). What is not fused
stays a float op and becomes a host op, reported as before. `typed(model)` gives every tensor
ONNX's inferred element type and shape (contrib QLinear ops inferred through a float stand-in),
which the front end needs for host islands, in place of onnxruntime's inference.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import NpusimError
from ..ir import Graph
from ..requant import bias_i32
from .qdq_upsample import fuse_upsampling

_STD = ("", "ai.onnx")
_ACTS = (TensorProto.UINT8, TensorProto.INT8, TensorProto.UINT4, TensorProto.INT4)  # activations fused here
_RANGE = {TensorProto.UINT8: (0, 255), TensorProto.INT8: (-128, 127), TensorProto.UINT4: (0, 15),
          TensorProto.INT4: (-8, 7)}
_UNARY = {"AveragePool": "QLinearAveragePool", "GlobalAveragePool": "QLinearGlobalAveragePool",
          "Sigmoid": "QLinearSigmoid", "LeakyRelu": "QLinearLeakyRelu", "Softmax": "QLinearSoftmax"}
_BINARY = {"Add": "QLinearAdd", "Mul": "QLinearMul"}
_ON_CODES = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Pad", "Identity")


@dataclass(frozen=True)
class _QDQ:
    """A DequantizeLinear's (or QuantizeLinear's) integer tensor and constant parameters."""
    node: onnx.NodeProto
    q: str  # the integer tensor
    scale: str  # the scale initializer's name
    scale_v: np.ndarray  # float32, flat
    zp_v: np.ndarray  # int64, flat
    axis: int
    elem: int | None  # the integer element type (TensorProto code), None when unknown

    @property
    def per_tensor(self) -> bool:
        return self.scale_v.size == 1


@dataclass(frozen=True)
class _Out:
    """The QuantizeLinear that ends a pattern, the Relu / Clip nodes before it and the
    QuantizeLinear (consumed by the fusion), and the clamp bounds in codes."""
    quant: _QDQ
    nodes: tuple
    lo: int
    hi: int


class _Index:
    """Producers, readers, constants and integer types of a model being rewritten; new
    initializers are added to `inits` and listed in `new`."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.nodes = list(g.node)  # the node objects every map refers to (their ids identify them)
        self.inits = {t.name: t for t in g.initializer}
        for n in self.nodes:  # a Constant node's tensor is a constant like an initializer
            if n.op_type == "Constant" and n.domain in _STD and n.attribute and n.attribute[0].name == "value":
                self.inits[n.output[0]] = onnx.TensorProto()
                self.inits[n.output[0]].CopyFrom(n.attribute[0].t)
                self.inits[n.output[0]].name = n.output[0]
        self.new: list[str] = []
        self.producer = {o: n for n in self.nodes for o in n.output if o}
        self.readers: dict[str, list] = {}
        for n in self.nodes:
            for x in n.input:
                self.readers.setdefault(x, []).append(n)
        self.outputs = {o.name for o in g.output}
        self.types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info)}
        self.opset = next((o.version for o in model.opset_import if o.domain in _STD), 1)

    def array(self, name):
        t = self.inits.get(name)
        if t is None:
            return None
        arr = numpy_helper.to_array(t)
        return arr.astype(_storage(t.data_type)) if t.data_type in (TensorProto.INT4, TensorProto.UINT4) else arr

    def elem(self, name):
        t = self.inits.get(name)
        return t.data_type if t is not None else self.types.get(name)

    def add(self, name, elem, value) -> str:
        """A new initializer `name` of element type `elem` holding `value`; its name."""
        v = np.asarray(value)
        if name not in self.inits:
            self.inits[name] = helper.make_tensor(name, elem, v.shape, v.reshape(-1).tolist())
            self.new.append(name)
        return name

    def zero_point(self, d: _QDQ) -> str:
        """The zero-point input of d's Q/DQ node, or a new zero initializer of its type."""
        p = d.node
        if len(p.input) > 2 and p.input[2]:
            return p.input[2]
        return self.add(f"{p.name}::zero_point", d.elem, 0)

    def dequantized(self, name) -> _QDQ | None:
        """`name` as the DequantizeLinear of a tensor with constant parameters; None otherwise."""
        p = self.producer.get(name)
        if p is None or p.op_type != "DequantizeLinear" or p.domain not in (*_STD, "com.microsoft"):
            return None
        zp = p.input[2] if len(p.input) > 2 else ""
        return self._params(p, p.input[0], self.elem(zp) if zp else self.elem(p.input[0]))

    def _params(self, p, q, elem) -> _QDQ | None:
        a = _attrs(p)
        zp_name = p.input[2] if len(p.input) > 2 else ""
        scale = self.array(p.input[1])
        zp = self.array(zp_name) if zp_name else None
        if scale is None or (zp_name and zp is None) or int(a.get("block_size", 0)):
            return None
        zp = np.zeros(scale.shape, np.int64) if zp is None else zp.astype(np.int64)
        return _QDQ(p, q, p.input[1], scale.astype(np.float32).reshape(-1), zp.reshape(-1), int(a.get("axis", 1)),
                    elem)

    def quantized(self, name) -> _Out | None:
        """The per-tensor QuantizeLinear that is the only reader of float tensor `name`, through
        Relu / Clip nodes with constant bounds, with the clamp they add in codes; None otherwise."""
        lo_f, hi_f, chain = -np.inf, np.inf, []
        while True:
            readers = self.readers.get(name, [])
            if len(readers) != 1 or name in self.outputs or readers[0].domain not in _STD:
                return None
            p = readers[0]
            chain.append(p)
            if p.op_type == "Relu":
                lo_f = max(lo_f, 0.0)
            elif p.op_type == "Clip":
                bounds = self._clip_bounds(p)
                if bounds is None:
                    return None
                lo_f, hi_f = max(lo_f, bounds[0]), min(hi_f, bounds[1])
            elif p.op_type == "QuantizeLinear":
                break
            else:
                return None
            name = p.output[0]
        a = _attrs(p)
        zp = p.input[2] if len(p.input) > 2 else ""
        elem = self.elem(zp) if zp else int(a.get("output_dtype", 0)) or TensorProto.UINT8
        quant = self._params(p, p.output[0], elem)
        if quant is None or not quant.per_tensor or elem not in _ACTS or not int(a.get("saturate", 1)):
            return None
        qmin, qmax = _RANGE[elem]
        code = lambda v: int(np.clip(np.rint(np.float32(v) / quant.scale_v[0]) + quant.zp_v[0], qmin, qmax))
        lo = qmin if lo_f == -np.inf else code(lo_f)
        hi = qmax if hi_f == np.inf else code(hi_f)
        return _Out(quant, tuple(chain), lo, hi)

    def _clip_bounds(self, p):
        if self.opset < 11:
            a = _attrs(p)
            return float(a.get("min", -np.inf)), float(a.get("max", np.inf))
        bounds = []
        for i, default in ((1, -np.inf), (2, np.inf)):
            name = p.input[i] if i < len(p.input) else ""
            v = self.array(name) if name else np.float64(default)
            if v is None or np.size(v) != 1:
                return None
            bounds.append(float(np.asarray(v).reshape(-1)[0]))
        return bounds


def _storage(elem: int):
    """The numpy type that holds codes of element type `elem` (4-bit codes in 8 bits)."""
    return {TensorProto.INT4: np.int8, TensorProto.UINT4: np.uint8}.get(elem) or helper.tensor_dtype_to_np_dtype(elem)


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _activation(ix, name) -> _QDQ | None:
    """`name` as the per-tensor DequantizeLinear of an 8- or 4-bit tensor (an activation, or a
    constant operand of Add / Mul / Concat)."""
    d = ix.dequantized(name)
    return d if d is not None and d.per_tensor and d.elem in _ACTS else None


def _codes(ix, d: _QDQ) -> list[str]:
    """[codes, scale, zero point] of a Q/DQ: the inputs of a QOperator node."""
    return [d.q, d.scale, ix.zero_point(d)]


def _weight(ix, name, out_axis) -> _QDQ | None:
    """`name` as the DequantizeLinear of a constant 8- or 4-bit weight, per tensor or per
    channel along `out_axis`."""
    d = ix.dequantized(name)
    if d is None or d.q not in ix.inits or d.elem not in _ACTS:
        return None
    ndim = len(ix.inits[d.q].dims)
    if not d.per_tensor and d.axis % ndim != out_axis % ndim:
        return None
    return d


def _bias(ix, p, name, x: _QDQ, w: _QDQ, channels: int):
    """The int32 bias initializer's name in units of x_scale·w_scale[c], or None when `name` is
    no such constant (see the module docstring)."""
    acc = np.float64(x.scale_v[0]) * w.scale_v.astype(np.float64)  # exact: a product of two float32
    d = ix.dequantized(name)
    if d is not None:
        b = ix.array(d.q)
        if b is None or ix.elem(d.q) != TensorProto.INT32 or np.any(d.zp_v != 0):
            return None
        if np.array_equal(d.scale_v.astype(np.float64), acc.astype(np.float32).astype(np.float64)):
            return d.q
        real = b.astype(np.float64) * d.scale_v.astype(np.float64)
    else:
        real = ix.array(name)
        if real is None or real.dtype.kind != "f":
            return None
    if real.reshape(-1).size != channels:
        return None
    v = bias_i32(real, acc)
    return None if v is None else ix.add(f"{p.name}::bias_i32", TensorProto.INT32, v.reshape(-1))


def _clamped(ix, p, out: _Out, x: str) -> onnx.NodeProto:
    """The Q's output: Clip of the codes x to the clamp bounds, or x itself when they are the type's range."""
    q = out.quant
    if (out.lo, out.hi) == _RANGE[q.elem]:
        return helper.make_node("Identity", [x], [q.q], name=f"{p.name}/codes")
    lo, hi = ix.add(f"{p.name}::clamp_min", q.elem, out.lo), ix.add(f"{p.name}::clamp_max", q.elem, out.hi)
    return helper.make_node("Clip", [x, lo, hi], [q.q], name=f"{p.name}/clamp")


def _finish(ix, p, out: _Out | None, make):
    """(new nodes, consumed nodes): `make(y)` writes the fused node's output y (the Q's output,
    or an inner tensor that a Clip of the codes clamps into it)."""
    if out is None:
        return [make(p.output[0])], [p]
    if (out.lo, out.hi) == _RANGE[out.quant.elem]:
        return [make(out.quant.q)], [p, *out.nodes]
    inner = f"{out.quant.q}::unclamped"
    return [make(inner), _clamped(ix, p, out, inner)], [p, *out.nodes]


def _out_params(ix, out: _Out) -> list[str]:
    return [out.quant.scale, ix.zero_point(out.quant)]


def _conv(ix, p):
    """Conv -> QLinearConv; ConvTranspose -> npusim's com.microsoft QLinearConvTranspose (the same
    inputs, weights (C, M/group, k...) per channel on axis 1; npusim.frontend.qdq_upsample), here with the
    clamps of a Relu / Clip before the Q (per-channel grouped ones are left to qdq_upsample)."""
    a = _attrs(p)
    transposed = p.op_type == "ConvTranspose"
    x, out = _activation(ix, p.input[0]), ix.quantized(p.output[0])
    w = _weight(ix, p.input[1], 1 if transposed else 0)
    if x is None or out is None or w is None or len(ix.inits[w.q].dims) not in (3, 4) or \
            (transposed and int(a.get("group", 1)) != 1 and not w.per_tensor):
        return None
    dims = ix.inits[w.q].dims
    channels = dims[1] * int(a.get("group", 1)) if transposed else dims[0]
    bias = []
    if len(p.input) > 2 and p.input[2]:
        b = _bias(ix, p, p.input[2], x, w, channels)
        if b is None:
            return None
        bias = [b]
    ins = _codes(ix, x) + _codes(ix, w) + _out_params(ix, out) + bias
    op, domain = ("QLinearConvTranspose", "com.microsoft") if transposed else ("QLinearConv", "")
    return _finish(ix, p, out, lambda y: helper.make_node(op, ins, [y], name=p.name, domain=domain, **a))


def _matmul(ix, p):
    x = _activation(ix, p.input[0])
    w = _weight(ix, p.input[1], 1) or _activation(ix, p.input[1])
    if x is None or w is None or (w.q in ix.inits and len(ix.inits[w.q].dims) != 2):
        return None
    out = ix.quantized(p.output[0])
    if out is None:  # float output: onnxruntime's MatMulIntegerToFloat
        if w.q not in ix.inits:
            return None
        ins = [x.q, w.q, x.scale, w.scale, ix.zero_point(x), ix.zero_point(w)]
        return _finish(ix, p, None, lambda y: helper.make_node("MatMulIntegerToFloat", ins, [y], name=p.name,
                                                               domain="com.microsoft"))
    ins = _codes(ix, x) + _codes(ix, w) + _out_params(ix, out)
    return _finish(ix, p, out, lambda y: helper.make_node("QLinearMatMul", ins, [y], name=p.name))


def _gemm(ix, p):
    a = _attrs(p)
    trans_b = int(a.get("transB", 0))
    x, w = _activation(ix, p.input[0]), _weight(ix, p.input[1], 0 if trans_b else 1)
    if x is None or w is None or int(a.get("transA", 0)) or len(ix.inits[w.q].dims) != 2:
        return None
    c = ""
    if len(p.input) > 2 and p.input[2]:
        c = _bias(ix, p, p.input[2], x, w, ix.inits[w.q].dims[0 if trans_b else 1]) \
            if float(a.get("beta", 1.0)) == 1.0 else None
        if c is None:
            return None
    out = ix.quantized(p.output[0])
    ins = _codes(ix, x) + _codes(ix, w) + [c] + (_out_params(ix, out) if out else [])
    return _finish(ix, p, out, lambda y: helper.make_node("QGemm", ins, [y], name=p.name, domain="com.microsoft",
                                                          transA=0, transB=trans_b, alpha=float(a.get("alpha", 1.0))))


def _binary(ix, p):
    srcs = [_activation(ix, x) for x in p.input]
    out = ix.quantized(p.output[0])
    if None in srcs or out is None or len(srcs) != 2:
        return None
    ins = [x for d in srcs for x in _codes(ix, d)] + _out_params(ix, out)
    return _finish(ix, p, out, lambda y: helper.make_node(_BINARY[p.op_type], ins, [y], name=p.name,
                                                          domain="com.microsoft"))


def _unary(ix, p):
    x, out = _activation(ix, p.input[0]), ix.quantized(p.output[0])
    if x is None or out is None or len([o for o in p.output if o]) != 1:
        return None
    a = _attrs(p)
    if p.op_type == "AveragePool" and any(d != 1 for d in a.pop("dilations", [])):
        return None
    if p.op_type == "Softmax":
        a = {"axis": int(a.get("axis", -1 if ix.opset >= 13 else 1)), "opset": ix.opset}
    ins = _codes(ix, x) + _out_params(ix, out)
    return _finish(ix, p, out, lambda y: helper.make_node(_UNARY[p.op_type], ins, [y], name=p.name,
                                                          domain="com.microsoft", **a))


def _concat(ix, p):
    srcs = [_activation(ix, x) for x in p.input]
    out = ix.quantized(p.output[0])
    if None in srcs or out is None:
        return None
    if all(_same(d, out) for d in srcs):
        return _finish(ix, p, out, lambda y: helper.make_node("Concat", [d.q for d in srcs], [y], name=p.name,
                                                              **_attrs(p)))
    ins = _out_params(ix, out) + [x for d in srcs for x in _codes(ix, d)]
    return _finish(ix, p, out, lambda y: helper.make_node("QLinearConcat", ins, [y], name=p.name,
                                                          domain="com.microsoft", **_attrs(p)))


def _same(d: _QDQ, out: _Out) -> bool:
    q = out.quant
    return d.elem == q.elem and d.scale_v[0] == q.scale_v[0] and d.zp_v[0] == q.zp_v[0]


def _on_codes(ix, p):
    """A data-movement op (or MaxPool) before a Q, on the codes: of its DQ'd input when that DQ has
    the Q's scale and zero point, else of its float input quantized by a new Q with them
    (onnxruntime's QDQ propagation: Q commutes with the op, exactly)."""
    x, out = _activation(ix, p.input[0]), ix.quantized(p.output[0])
    if out is None or len([o for o in p.output if o]) != 1:
        return None
    q, pre = out.quant, []
    if x is not None and _same(x, out):
        codes = x.q
    else:
        codes = f"{p.name}::input_codes"
        pre = [helper.make_node("QuantizeLinear", [p.input[0], q.scale, ix.zero_point(q)], [codes],
                                name=f"{p.name}/quantize_input")]
    rest = list(p.input[1:])
    if p.op_type == "Pad":
        if _attrs(p).get("mode", b"constant") not in (b"constant", "constant"):
            return None
        value = 0.0
        if len(rest) > 1 and rest[1]:
            v = ix.array(rest[1])
            if v is None:
                return None
            value = float(np.asarray(v).reshape(-1)[0])
        code = np.clip(np.rint(np.float32(value) / q.scale_v[0]) + q.zp_v[0], *_RANGE[q.elem])
        rest = [rest[0], ix.add(f"{p.name}::constant_value", q.elem, int(code))] + rest[2:]
    new, consumed = _finish(ix, p, out, lambda y: helper.make_node(p.op_type, [codes, *rest], [y], name=p.name,
                                                                   **_attrs(p)))
    return pre + new, consumed


def _shape_of_codes(ix, p):
    """Shape(DQ(x)) = Shape(x): the dimensions do not depend on the values."""
    x = ix.dequantized(p.input[0])
    if x is None:
        return None
    return [helper.make_node("Shape", [x.q], list(p.output), name=p.name, **_attrs(p))], [p]


def _codes_only(ix, p):
    """DQ -> [Relu / Clip ->] Q with one scale and zero point on both sides: the codes, clamped."""
    x = _activation(ix, p.input[0])
    out = ix.quantized(p.input[0]) if x is not None else None
    if out is None or out.nodes[0] is not p or not _same(x, out):
        return None
    return [_clamped(ix, p, out, x.q)], list(out.nodes)


_RULES = {"Conv": _conv, "ConvTranspose": _conv, "MatMul": _matmul, "Gemm": _gemm, **{op: _binary for op in _BINARY},
          **{op: _unary for op in _UNARY}, "Concat": _concat, **{op: _on_codes for op in _ON_CODES},
          **{op: _codes_only for op in ("QuantizeLinear", "Relu", "Clip")}, "Shape": _shape_of_codes}


def fuse_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every DQ -> op -> [Relu / Clip] -> Q with an integer form as its QOperator node (module docstring)."""
    ix = _Index(model)
    placed, consumed = {}, set()
    for p in ix.nodes:
        rule = _RULES.get(p.op_type) if p.domain in _STD else None
        if rule is None or id(p) in consumed:
            continue
        found = rule(ix, p)
        if found is None or any(id(n) in consumed for n in found[1]):
            continue
        placed[id(p)] = found[0]
        consumed |= {id(n) for n in found[1]}
    nodes = []
    for p in ix.nodes:
        if id(p) in placed:
            nodes.extend(placed[id(p)])
        elif id(p) not in consumed:
            nodes.append(p)
    return _rebuilt(model, nodes, [ix.inits[k] for k in ix.new])


def propagate_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each data-movement op (or MaxPool) that reads a per-tensor DQ and is not followed by a Q
    alone, on the codes before the DQ (onnxruntime's QDQ propagation): op(DQ(x)) = DQ(op(x))
    exactly, DQ being increasing and elementwise. Repeated down chains of such ops, so that the
    op after them (a Gemm after a Flatten, say) sees its DQ."""
    while True:
        ix = _Index(model)
        moved = {}
        for p in ix.nodes:
            if p.domain not in _STD or p.op_type not in _ON_CODES or p.op_type == "Pad" or \
                    len([o for o in p.output if o]) != 1:
                continue
            x = _activation(ix, p.input[0])
            if x is None or ix.quantized(p.output[0]) is not None:
                continue
            codes = f"{p.output[0]}::codes"
            moved[id(p)] = [helper.make_node(p.op_type, [x.q, *p.input[1:]], [codes], name=p.name, **_attrs(p)),
                            helper.make_node("DequantizeLinear", [codes, x.scale, ix.zero_point(x)], [p.output[0]],
                                             name=f"{p.name}/dequantize")]
        if not moved:
            return model
        model = _rebuilt(model, [n for p in ix.nodes for n in moved.get(id(p), [p])], [ix.inits[k] for k in ix.new])


def drop_dead_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the DequantizeLinear nodes whose output no one reads."""
    read = {x for n in model.graph.node for x in n.input} | {o.name for o in model.graph.output}
    nodes = [n for n in model.graph.node if n.op_type != "DequantizeLinear" or n.output[0] in read]
    return _rebuilt(model, nodes)


def _rebuilt(model, nodes, new_inits=()) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(new_inits)
    if any(n.domain == "com.microsoft" for n in nodes) and all(o.domain != "com.microsoft" for o in out.opset_import):
        out.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return out


def named_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model whose unnamed nodes are named `{op_type}_{index}` (as npusim.frontend names them)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for i, n in enumerate(out.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    return out


PASSES = (("name_nodes", named_nodes), ("propagate_dequantize", propagate_dequantize),
          ("fuse_upsampling", fuse_upsampling), ("fuse_qdq", fuse_qdq), ("drop_dead_dequantize", drop_dead_dequantize))


def check(model: onnx.ModelProto, where: str) -> None:
    """One NpusimError naming the model and the node for a node input that nothing defines (or
    defines later: the nodes must be in execution order), which onnxruntime refuses in mode "ort"."""
    g = model.graph
    defined = {vi.name for vi in g.input} | {t.name for t in g.initializer} | {""}
    for n in g.node:
        for i, x in enumerate(n.input):
            if x not in defined:
                raise NpusimError(f"{where}: node {n.name!r} ({n.op_type}): input {i} {x!r} is not a graph input, "
                                  f"an initializer or an earlier node's output")
        defined |= set(n.output)


def fuse(model: onnx.ModelProto, where: str = "model") -> onnx.ModelProto:
    """The model, checked (`check`), after every pass of `PASSES`, in order, with ONNX's inferred
    types (`typed`)."""
    check(model, where)
    for _, run in PASSES:
        model = run(model)
    return typed(model)


# ------------------------------------------------------------------------------------------ types
# contrib op -> (float op, operands cast to float, inputs passed as they are, y_zero_point input)
_STAND_IN = {"QLinearAdd": ("Add", (0, 3), (), 7), "QLinearMul": ("Mul", (0, 3), (), 7),
             "QLinearSigmoid": ("Sigmoid", (0,), (), 4), "QLinearLeakyRelu": ("LeakyRelu", (0,), (), 4),
             "QLinearSoftmax": ("Softmax", (0,), (), 4), "QLinearAveragePool": ("AveragePool", (0,), (), 4),
             "QLinearGlobalAveragePool": ("GlobalAveragePool", (0,), (), 4), "QGemm": ("Gemm", (0, 3), (), 8),
             "MatMulIntegerToFloat": ("MatMul", (0, 1), (), None), "QLinearConcat": ("Concat", None, (), 1),
             "QLinearResize": ("Resize", (0,), (3, 4, 5), 7), "QLinearConvTranspose": ("ConvTranspose", (0, 3), (), 7),
             "QuantizeLinear": (None, (0,), (), 2), "DequantizeLinear": (None, (0,), (), None)}  # None: a Cast
_CONTRIB_ATTRS = ("opset", "channels_last")  # attributes of the contrib forms that the float op has not


def typed(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with ONNX's inferred element type and shape of every tensor as graph.value_info.

    ONNX's inference does not know onnxruntime's contrib ops: each com.microsoft QLinear node is
    inferred through a float stand-in (Cast of its operands to float, the float op, Cast to the
    output's type), whose tensors are named apart and dropped afterwards.
    """
    stand_in = onnx.ModelProto()
    stand_in.CopyFrom(model)
    elems = {t.name: t.data_type for t in model.graph.initializer}
    nodes = []
    for p in model.graph.node:
        spec = _STAND_IN.get(p.op_type) if p.domain == "com.microsoft" else None
        if spec is None:
            nodes.append(p)
            continue
        op, data, passed, y_zp = spec
        y_elem = elems.get(p.input[y_zp]) if y_zp is not None and y_zp < len(p.input) and p.input[y_zp] else None
        if op is None:  # onnxruntime's own Q / DQ (16 or 4 bits before opset 21): the same shape
            nodes.append(helper.make_node("Cast", [p.input[0]], [p.output[0]], to=y_elem or TensorProto.FLOAT))
            continue
        data = data if data is not None else range(2, len(p.input), 3)
        ins = []
        for i in data:
            if i < len(p.input) and p.input[i]:
                nodes.append(helper.make_node("Cast", [p.input[i]], [f"{p.name}::stand_in{i}"], to=TensorProto.FLOAT))
                ins.append(f"{p.name}::stand_in{i}")
        ins += [p.input[i] if i < len(p.input) else "" for i in passed]
        a = {k: v for k, v in _attrs(p).items() if k not in _CONTRIB_ATTRS}
        if y_elem is None:
            nodes.append(helper.make_node(op, ins, [p.output[0]], **a))
        else:
            nodes.append(helper.make_node(op, ins, [f"{p.name}::stand_in_out"], **a))
            nodes.append(helper.make_node("Cast", [f"{p.name}::stand_in_out"], [p.output[0]], to=y_elem))
    del stand_in.graph.node[:]
    stand_in.graph.node.extend(nodes)
    del stand_in.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(stand_in)
    except Exception:  # an op ONNX cannot infer: the tensors it would have typed stay untyped
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    mine = {o for n in model.graph.node for o in n.output} - {o.name for o in model.graph.output}
    out.graph.value_info.extend(vi for vi in inferred.graph.value_info if vi.name in mine)
    return out


# ------------------------------------------------------------------------------------------ IR
_CLAMPED = ("requantize", "add", "mul", "avgpool", "global_avgpool", "round_shift")  # kernels that clamp to qmin..qmax


def fold_clamps(graph: Graph) -> Graph:
    """The IR with each clamp of codes (a round_shift by 0 with x_zp = y_zp, npusim.frontend.convert's Clip)
    folded into its producer's qmin / qmax, when that producer clamps (`_CLAMPED`) and the clamp
    is its only reader: y = clamp(clamp(v, qmin, qmax), lo, hi) = clamp(v, max(qmin, lo), min(qmax, hi))."""
    readers: dict[str, int] = {}
    for n in graph.nodes:
        for x in n.inputs:
            readers[x] = readers.get(x, 0) + 1
    producer = {o: i for i, n in enumerate(graph.nodes) for o in n.outputs}
    nodes = list(graph.nodes)
    tensors = dict(graph.tensors)
    for i, n in enumerate(graph.nodes):
        if n.op != "round_shift" or np.any(np.asarray(n.attrs["shift"]) != 0) or n.attrs["x_zp"] != n.attrs["y_zp"]:
            continue
        x = n.inputs[0]
        j = producer.get(x)
        if j is None or readers.get(x) != 1 or x in graph.outputs or nodes[j].op not in _CLAMPED:
            continue
        p = nodes[j]
        if p.attrs.get("dtype") != n.attrs["dtype"]:
            continue
        nodes[j] = replace(p, outputs=(n.outputs[0],) + p.outputs[1:],
                           attrs={**p.attrs, "qmin": max(int(p.attrs["qmin"]), int(n.attrs["qmin"])),
                                  "qmax": min(int(p.attrs["qmax"]), int(n.attrs["qmax"]))})
        nodes[i] = None
        tensors.pop(x, None)
    if all(n is not None for n in nodes):
        return graph
    return replace(graph, nodes=tuple(n for n in nodes if n is not None), tensors=tensors)
