"""QONNX (the format Brevitas exports) -> the integer IR.

A QONNX model is a float graph in which `Quant`, `BipolarQuant` and `Trunc` nodes (domain
"qonnx.custom_op.general"; older exports "onnx.brevitas" / "finn.custom_op.general") mark
where values are integers. Their semantics are qonnx's reference implementation
(qonnx/custom_op/general/intquant.py, bipolar_quant.py, trunc.py), for a float tensor x:

    Quant(x, s, z, b):     q = R(clamp(x / s + z, qmin, qmax)),  out = (q − z)·s
                           qmin..qmax = b-bit signed/unsigned range, narrowed by 1 if `narrow`;
                           R = rounding_mode (ROUND = half to even, CEIL, FLOOR, ...).
    BipolarQuant(x, s):    q = +1 if x ≥ 0 else −1,  out = q·s
    Trunc v1(x, s, z, bi, bo):        q = R(round(x / s + z) / 2^(bi−bo)),  out = (q − z)·s
    Trunc v2(x, s, z, bi, so, bo):    q = R(clamp(round(x / s + z) / 2^k)), k = round(log2(so/s)),
                                      out = (q − z/2^k)·so

(Trunc v1, qonnx opset 1, keeps the input scale: its output is the shifted code times s.
Trunc v2, opset 2, has an explicit output scale, which Brevitas sets to s·2^k.)

The importer keeps, for every float tensor of the QONNX graph that carries integers, the IR
tensor of those integers (same name): a Quant output is its code q with Quant(s, z); a Conv,
MatMul or Gemm output is the int32 accumulator Σ(x − x_zp)(w − w_zp) + bias, whose real
scale is x_scale·w_scale[c] (kept on the side, see `_Acc`). Before that, constant subgraphs
fold as qonnx's cleanup_model folds them (npusim.frontend.qonnx_fold: Shape/Gather/Concat building a
Reshape's shape, Pow of constants, a Transpose of a quantized weight). Mapping (docs/qonnx.md):

- Quant on a constant: integer weight constant (i{b}/u{b}, int32 for a bias over 8 bits),
  codes computed offline exactly as qonnx does (float32 arithmetic, same rounding).
- Quant on a float tensor (the model input, a host island's output), ROUND: `quantize`.
- Quant on an accumulator (Relu in between folds into the clamp): `round_shift` when the
  multiplier x_scale·w_scale/y_scale is an exact power of two (integer, exact for every mode,
  zero point added before rounding as qonnx does); otherwise ROUND -> `requantize` (float32
  multiplier, round half to even, as npusim.requant).
- Quant on a quantized tensor: `round_shift` when the scale ratio is a power of two, else
  (ROUND) `dequantize` + `quantize`.
- A float chain between an accumulator, codes or a float tensor and the Quant/BipolarQuant
  after it (BatchNormalization, Add/Sub/Mul/Div by constants, Relu, Clip: monotone per
  channel), and any Quant whose rounding mode the cases above cannot express: `multithreshold`
  (FINN's MultiThreshold), code = base + step·#{thresholds ≤ x}, the thresholds found at import
  by running the chain as qonnx runs it (onnxruntime, float32) and quantizing as qonnx does
  (qonnx_fold.thresholds). Exact against qonnx when qonnx's accumulator is exact in float32.
- BipolarQuant (and Quant with bits=1, signed): i2 codes −1/+1 (zero point 0, storage int8),
  offline for weights, `sign` for activations; the integer conv then sums ±1 products.
- Trunc: `round_shift` (an exact integer shift with the node's rounding mode).
- Relu on an accumulator folds into the next clamp; on a quantized tensor it is `round_shift`
  with shift 0 and qmin = zero point. Reshape, Flatten, Transpose, Squeeze, Unsqueeze,
  Identity, Concat, MaxPool on quantized tensors convert as in npusim.frontend.convert; Reshape,
  Flatten, Transpose, Squeeze, Unsqueeze, Identity of a float tensor are the same IR data ops.
- Any other standard op, and a Conv/MatMul/Gemm without a quantized activation and quantized
  weights (QKeras' first layer reads the float input), is a float op: it runs on the host
  (onnxruntime, in host islands) on the float32 values qonnx computes for its inputs
  (dequantized codes and accumulators, the weights' Quant outputs).
- A graph output that holds integers is dequantized to float (the integer tensor is then
  named "<output>::q").
Errors (an NpusimError naming the node): QONNX ops other than Quant/BipolarQuant/Trunc
(MultiThreshold, ...), activations over 8 bits, per-channel activation scales, non-integer
zero points, a Conv/Gemm bias input that is not a multiple of the accumulator scale.

`round_shift`, `sign` and `multithreshold` are IR ops of their own (npusim.registry; kernels
in npusim_kernels.golden.shift).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import helper

from . import convert, qonnx_fold
from ..errors import NpusimError
from .context import ImportContext, onnx_dtype
from ..ir import Graph, Node, Quant, is_quantized, qrange, storage
from ..requant import f32_form
from npusim_kernels.golden.shift import sign

DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general")

# rounding_mode spellings -> one name. ROUND is half to even (numpy's round), as in qonnx;
# ROUND_TO_ZERO (Brevitas' name) is qonnx's DOWN.
ROUNDINGS = {"ROUND": "HALF_EVEN", "HALF_EVEN": "HALF_EVEN", "CEIL": "CEIL", "FLOOR": "FLOOR", "UP": "UP",
             "DOWN": "DOWN", "ROUND_TO_ZERO": "DOWN", "HALF_UP": "HALF_UP", "HALF_DOWN": "HALF_DOWN"}

# float data movement on the graph input: ONNX op -> (IR op, attributes), as npusim.frontend.convert's
_FLOAT_DATA_OPS = {"Reshape": ("reshape", ("allowzero",)), "Flatten": ("flatten", ("axis",)),
                   "Transpose": ("transpose", ("perm",)), "Squeeze": ("squeeze", ("axes",)),
                   "Unsqueeze": ("unsqueeze", ("axes",)), "Identity": ("identity", ())}
_DATA_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Concat", "MaxPool")


def is_qonnx(model: onnx.ModelProto) -> bool:
    """True when the model has a node of a QONNX domain (Quant, BipolarQuant, Trunc, ...)."""
    return any(n.domain in DOMAINS for n in model.graph.node)


def import_qonnx(model: onnx.ModelProto, name: str | None = None) -> Graph:
    """The integer IR of a QONNX model (see the module docstring for the mapping)."""
    return _Importer(model).graph(name or model.graph.name or "qonnx")


# ---------------------------------------------------------------- the importer

@dataclass(frozen=True)
class _Acc:
    """An int32 accumulator standing for a float Conv/MatMul/Gemm output: real = acc·x_scale·w_scale[c]."""
    ir: str            # IR tensor name
    x_scale: float
    w_scale: np.ndarray  # float32 (1,) or (C,)
    axis: int          # channel axis of w_scale on the accumulator
    node: int          # index of the producing IR node (for bias folding)
    relu: bool = False

    def scale(self) -> np.ndarray:
        return (np.float32(self.x_scale) * self.w_scale).astype(np.float32)


def _compact(v: np.ndarray) -> np.ndarray:
    """A per-channel vector whose values are all equal, as one value (per tensor)."""
    return v[:1] if np.all(v == v[0]) else v


def _int_range(signed: bool, narrow: bool, b: int) -> tuple[int, int]:
    """qonnx's min_int/max_int: b-bit range, narrowed by one code at the bottom (signed) or top (unsigned)."""
    if signed:
        return -(1 << (b - 1)) + int(narrow), (1 << (b - 1)) - 1
    return 0, (1 << b) - 1 - int(narrow)


def _pow2_exponent(v) -> np.ndarray | None:
    """e with v == 2^e exactly (elementwise), or None when some value is not a power of two."""
    m, e = np.frexp(np.asarray(v, np.float64).reshape(-1))
    return (e - 1).astype(np.int64) if np.all(m == 0.5) else None


def _shape_inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with value_info from ONNX shape inference, the QONNX nodes read as Identity."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in m.graph.node:
        if n.domain in DOMAINS and n.op_type in ("Quant", "BipolarQuant", "Trunc"):
            n.op_type, n.domain = "Identity", ""
            del n.input[1:]
            del n.attribute[:]
    try:
        return onnx.shape_inference.infer_shapes(m)
    except Exception:  # shapes are informative only
        return m


class _Importer:
    def __init__(self, model: onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        for i, n in enumerate(m.graph.node):
            if not n.name:
                n.name = f"{n.op_type}_{i}"
        self.opset = {o.domain: o.version for o in m.opset_import}
        self.std_opset = next((v for d, v in self.opset.items() if d in ("", "ai.onnx")), 13)
        m = qonnx_fold.fold_constants(m, ImportContext(_shape_inferred(m)).value_shapes)
        self.model = m
        self.ctx = ImportContext(_shape_inferred(m))
        self.acc: dict[str, _Acc] = {}
        self.chain: dict[str, tuple[str, onnx.NodeProto]] = {}  # float tensor -> (its variable input, node)
        self.floats: dict[str, str] = {}  # QONNX float tensor -> the IR float tensor holding its value
        self.readers: dict[str, int] = {}
        for n in m.graph.node:
            for x in n.input:
                self.readers[x] = self.readers.get(x, 0) + 1
        for o in m.graph.output:
            self.readers[o.name] = self.readers.get(o.name, 0) + 1
        for node in m.graph.node:
            self._convert(node)

    # ------------------------------------------------------------ helpers
    def _err(self, node, msg):
        return NpusimError(f"node {node.name!r} ({node.op_type}): {msg}")

    def _const(self, node, i, what):
        v = self.ctx.const(node, i, what)
        if v is None:
            raise self._err(node, f"input {i} {what!r} is missing")
        return np.asarray(v)

    def _scalar(self, node, i, what) -> float:
        v = self._const(node, i, what)
        if v.size != 1:
            raise self._err(node, f"input {what!r} must be a scalar, got shape {v.shape}")
        return float(v.reshape(-1)[0])

    def _qparams(self, node):
        """(scale f32 array, integer zero point, bits, signed, narrow, rounding) of a Quant node."""
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        scale = self._const(node, 1, "scale").astype(np.float32)
        zp = self._const(node, 2, "zeropt")
        bits = self._scalar(node, 3, "bitwidth")
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise self._err(node, f"scales must be finite and positive, got {scale.reshape(-1)[:4]}")
        if not np.all(zp == np.round(zp)) or np.unique(zp).size != 1:
            raise self._err(node, f"zero point must be one integer, got {zp.reshape(-1)[:4]}")
        if bits != int(bits) or not 1 <= bits <= 32:
            raise self._err(node, f"bit width must be an integer 1..32, got {bits}")
        mode = a.get("rounding_mode", b"ROUND")
        mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
        if mode not in ROUNDINGS:
            raise self._err(node, f"unknown rounding_mode {mode!r}; expected one of {', '.join(ROUNDINGS)}")
        return scale, int(zp.reshape(-1)[0]), int(bits), bool(a.get("signed", 1)), bool(a.get("narrow", 1)), \
            ROUNDINGS[mode]

    def _act_scale(self, node, scale) -> float:
        if scale.size != 1:
            raise self._err(node, f"activation scale must be per tensor, got shape {scale.shape}")
        return float(scale.reshape(-1)[0])

    def _quantized(self, node, name, what):
        """The IR tensor of a quantized activation; an error naming the node if it is not one."""
        t = self.ctx.tensors.get(name)
        if name in self.acc:
            raise self._err(node, f"{what} {name!r} is an unquantized Conv/MatMul/Gemm output; put a Quant "
                                  f"between them")
        if t is None or not is_quantized(t.dtype) or t.quant is None or name in self.ctx.constants:
            raise self._err(node, f"{what} {name!r} must be a quantized activation (the output of a Quant, "
                                  f"BipolarQuant or Trunc node)")
        if len(t.quant.scale) != 1:
            raise self._err(node, f"{what} {name!r} must be quantized per tensor")
        return t

    def _add_const(self, name, arr, dtype, quant=None):
        self.ctx.constants[name] = arr
        self.ctx.add_tensor(name, dtype, tuple(arr.shape), quant)
        return name

    def _zp_input(self, name, zp, dtype):
        """The zero-point input of conv/gemm/matmul: "" when all zero (the kernels' default), else a constant."""
        zp = np.asarray(zp).reshape(-1)
        if not zp.any():
            return ""
        return self._add_const(name, (zp if zp.size > 1 else zp[:1]).astype(storage(dtype)), dtype)

    # ------------------------------------------------------------ dispatch
    def _convert(self, node):
        ctx = self.ctx
        if node.domain in DOMAINS:
            fn = {"Quant": self._quant, "BipolarQuant": self._bipolar, "Trunc": self._trunc}.get(node.op_type)
            if fn is None:
                raise self._err(node, f"QONNX op {node.op_type} is not supported (supported: Quant, BipolarQuant, "
                                      f"Trunc)")
            return fn(node)
        if node.domain not in ("", "ai.onnx"):
            raise self._err(node, f"domain {node.domain!r} is not supported in a QONNX graph")
        fn = {"Conv": self._conv, "MatMul": self._matmul, "Gemm": self._gemm, "Relu": self._relu,
              "Add": self._add}.get(node.op_type)
        if fn is not None and fn(node) is not False:
            return
        if node.op_type in _DATA_OPS and not any(x in self.acc or x in self.chain for x in node.input) \
                and convert.convert(ctx, node):
            return
        if self._float_data_op(node) or self._extend_chain(node):
            return
        self._host(node)

    # ------------------------------------------------------------ float: chains and host ops
    def _variable_inputs(self, node):
        return [x for x in node.input if x and x not in self.ctx.constants]

    def _float_data_op(self, node) -> bool:
        """Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity of a float tensor (the graph
        input before its first Quant): the IR data op, on float values (it moves, never computes)."""
        op = _FLOAT_DATA_OPS.get(node.op_type)
        x = node.input[0] if node.input else ""
        if op is None or x in self.chain or x in self.acc or x in self.ctx.constants or self.ctx.dtype(x) != "f32" \
                or any(i and i not in self.ctx.constants for i in node.input[1:]):
            return False
        a = {v.name: helper.get_attribute_value(v) for v in node.attribute}
        attrs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in a.items() if k in op[1]}
        self.ctx.emit(op[0], node.name, list(node.input), [node.output[0]], attrs, node.name)
        self.ctx.add_tensor(node.output[0], "f32")
        return True

    def _extend_chain(self, node) -> bool:
        """A monotone op on one variable input (an accumulator, codes, a float tensor or a chain)
        joins that input's chain: it runs folded into the thresholds of the Quant that ends the
        chain (qonnx_fold.thresholds), or on the host if no Quant does."""
        var = self._variable_inputs(node)
        if node.op_type not in qonnx_fold.MONOTONE or len(var) != 1 or (node.op_type == "Div" and
                                                                         node.input[0] != var[0]):
            return False
        if node.op_type == "BatchNormalization" and (node.input[0] != var[0] or len(node.output) != 1):
            return False
        self.chain[node.output[0]] = (var[0], node)
        return True

    def _host(self, node):
        """A float op: the host runs it on onnxruntime, on the float values qonnx computes for its
        inputs (dequantized codes, accumulators and chains), each node a host island of its own
        with every input fed, constants too, as qonnx's executor runs it (qonnx_fold.single_node_model)."""
        p = onnx.NodeProto()
        p.CopyFrom(node)
        p.input[:] = [self._float_of(x, node) if x else x for x in node.input]
        ins = list(dict.fromkeys(x for x in p.input if x))
        model = qonnx_fold.single_node_model(p, {x: onnx_dtype(self.ctx.dtype(x)) for x in ins}, self.std_opset)
        self.ctx.nodes.append(Node("host", node.name, tuple(ins), tuple(p.output),
                                   {"model": model.SerializeToString(), "ops": (f"{node.op_type}:{node.name}",),
                                    "elementwise": False}, source=node.name))
        for o in p.output:  # float32 unless shape inference says otherwise (Shape, ArgMax: int64)
            self.ctx.add_tensor(o, self.ctx.value_types.get(o, "?").replace("?", "f32"))
            self.floats[o] = o

    def _float_of(self, name, node) -> str:
        """The IR tensor holding the float32 value qonnx computes for `name`, read by `node`
        (emitted on first use)."""
        ctx = self.ctx
        if name in self.floats:
            return self.floats[name]
        if name in self.chain:
            src, producer = self.chain[name]
            self._float_of(src, producer)
            self._host(producer)
            return name
        if name in self.acc:
            out = name
            self._dequantize_acc(name)
        elif name in ctx.constants:
            t = ctx.tensors.get(name)
            if t is None or t.quant is None or not is_quantized(t.dtype):
                return name
            out = self._add_const(f"{name}::float", self._const_float(name), "f32")
        elif ctx.dtype(name) == "f32":
            out = name
        else:
            t = self._quantized(node, name, "input")
            out = f"{name}::float"
            ctx.emit("dequantize", f"{name}/dequantize", [name], [out],
                     {"scale": np.array(t.quant.scale, np.float32), "zp": np.array(t.quant.zero_point, np.int64),
                      "axis": 1, "block_size": 0}, name)
            ctx.add_tensor(out, "f32", ctx.tensors[name].shape)
        self.floats[name] = out
        return out

    def _const_float(self, name) -> np.ndarray:
        """A quantized constant's float32 value as qonnx's Quant outputs it: (code − z)·s."""
        codes, q = self.ctx.constants[name], self.ctx.tensors[name].quant
        shape = [1] * codes.ndim
        if q.axis is not None:
            shape[q.axis] = len(q.scale)
        s = np.array(q.scale, np.float32).reshape(shape)
        return ((codes.astype(np.float32) - np.float32(q.zero_point[0])) * s).astype(np.float32)

    def _chain_of(self, name):
        """(root, nodes): the chain ending at `name`, from its root (not itself a chain tensor)."""
        nodes = []
        while name in self.chain:
            name, node = self.chain[name]
            nodes.append(node)
        return name, tuple(reversed(nodes))

    def _thresholds(self, node, x, y, codes, dtype):
        """Quant/BipolarQuant of a chain -> multithreshold on the chain's root (see qonnx_fold)."""
        ctx = self.ctx
        root, nodes = self._chain_of(x)
        shape = ctx.value_shapes.get(x) or ctx.value_shapes.get(root)
        if not shape:
            raise self._err(node, f"input {x!r} has no known rank (ONNX shape inference found none)")
        rank = len(shape)
        if root in self.acc:
            acc = self.acc[root]
            axis, c = qonnx_fold.chain_axis(nodes, ctx.constants, rank, acc.axis, acc.w_scale.size)
            scale = np.float64(np.float32(acc.x_scale)) * np.broadcast_to(acc.w_scale, (c,)).astype(np.float64)
            source = qonnx_fold.acc_source(scale, acc.relu, qonnx_fold.probe_shape(rank, axis, c))
            src = acc.ir
        elif ctx.dtype(root) == "f32" and root not in ctx.constants:
            axis, c = qonnx_fold.chain_axis(nodes, ctx.constants, rank, None, 1)
            source, src = qonnx_fold.float_source(qonnx_fold.probe_shape(rank, axis, c)), self._float_of(root, node)
        else:
            t = self._quantized(node, root, "input")
            axis, c = qonnx_fold.chain_axis(nodes, ctx.constants, rank, None, 1)
            source = qonnx_fold.codes_source(*qrange(t.dtype), t.quant.scale[0], t.quant.zero_point[0],
                                             qonnx_fold.probe_shape(rank, axis, c))
            src = t.name
        consts = {x: self._const_float(x) if x in ctx.constants and is_quantized(ctx.dtype(x)) else ctx.constants[x]
                  for n in nodes for x in n.input if x in ctx.constants}
        thr, base, step = qonnx_fold.thresholds(source, nodes, consts, codes, self.std_opset, c)
        ctx.emit("multithreshold", node.name, [src], [y],
                 {"thresholds": thr, "base": base, "step": step, "axis": axis, "dtype": dtype,
                  "chain": tuple(f"{n.op_type}:{n.name}" for n in nodes)}, node.name)

    # ------------------------------------------------------------ Quant
    def _quant(self, node):
        scale, zp, bits, signed, narrow, mode = self._qparams(node)
        x, y = node.input[0], node.output[0]
        if bits == 1 and signed:
            if zp != 0:
                raise self._err(node, "a 1-bit signed (bipolar) Quant needs zero point 0")
            if x in self.chain:  # qonnx: +1 where x / s + 0 >= 0
                y_scale = self._act_scale(node, scale)
                self._thresholds(node, x, y,
                                 lambda v: qonnx_fold.quant_codes(v, np.float32(y_scale), 0, -1, 1, mode, True), "i2")
                self.ctx.add_tensor(y, "i2", quant=convert.quant_of(y_scale, 0))
                return
            return self._to_bipolar(node, x, y, scale)
        qmin, qmax = _int_range(signed, narrow, bits)
        if x in self.ctx.constants:
            return self._quant_const(node, x, y, scale, zp, bits, signed, qmin, qmax, mode)
        if bits > 8:
            raise self._err(node, f"{bits}-bit activations are not supported (1..8 bits)")
        dtype = f"{'i' if signed else 'u'}{bits}"
        y_scale = self._act_scale(node, scale)
        if not qmin <= zp <= qmax:
            raise self._err(node, f"zero point {zp} is outside the {bits}-bit range {qmin}..{qmax}")
        if x in self.chain or (mode != "HALF_EVEN" and self._pow2_ratio(node, x, y_scale) is None):
            # a float chain, or a rounding mode no shift or requantize expresses: the steps of qonnx's codes
            self._thresholds(node, x, y,
                             lambda v: qonnx_fold.quant_codes(v, np.float32(y_scale), zp, qmin, qmax, mode), dtype)
        elif x in self.acc:
            self._requant_acc(node, self.acc[x], y, y_scale, zp, dtype, qmin, qmax, mode)
        elif self.ctx.dtype(x) == "f32":
            self._quantize(node, x, y, y_scale, zp, dtype, qmin, qmax, mode)
        else:
            self._requant_codes(node, self._quantized(node, x, "input"), y, y_scale, zp, dtype, qmin, qmax, mode)
        self.ctx.add_tensor(y, dtype, quant=convert.quant_of(y_scale, zp))

    def _pow2_ratio(self, node, x, y_scale):
        """e with input scale / y_scale == 2^e (per channel) for an accumulator or codes; None otherwise."""
        if x in self.acc:
            return _pow2_exponent(self.acc[x].x_scale * np.asarray(self.acc[x].w_scale, np.float64) / y_scale)
        if self.ctx.dtype(x) == "f32":
            return None
        return _pow2_exponent(self._quantized(node, x, "input").quant.scale[0] / y_scale)

    def _quant_const(self, node, x, y, scale, zp, bits, signed, qmin, qmax, mode):
        """Weights or bias: the codes qonnx computes, in its float32 order (x/s + z, clamp, round)."""
        w = np.asarray(self.ctx.constants[x])
        if w.dtype != np.float32:
            raise self._err(node, f"input 'x' must be float32, got {w.dtype}")
        quant = self._const_quant(node, scale, zp, w)  # checks the scale's shape against the constant's
        codes = qonnx_fold.quant_codes(w, scale, zp, qmin, qmax, mode)
        dtype = f"{'i' if signed else 'u'}{bits}" if bits <= 8 else "i32"
        self._add_const(y, codes.astype(storage(dtype)), dtype, quant)

    def _const_quant(self, node, scale, zp, w) -> Quant:
        """Quant of a constant: per tensor, or along the one axis where the scale is not 1."""
        axis = None
        if scale.size > 1:
            big = [i for i, d in enumerate(scale.shape) if d > 1]
            if scale.ndim != w.ndim or any(s not in (1, d) for s, d in zip(scale.shape, w.shape)) or len(big) != 1:
                raise self._err(node, f"scale of shape {scale.shape} must be per tensor or along one axis of the "
                                      f"constant {w.shape}")
            axis = big[0]
        return Quant(tuple(float(s) for s in scale.reshape(-1)), (zp,) * scale.size, axis)

    def _quantize(self, node, x, y, y_scale, zp, dtype, qmin, qmax, mode):
        """A float tensor, ROUND: `quantize` (x / s, round half to even, clamp)."""
        attrs = {"scale": np.array([y_scale], np.float32), "zp": np.array([zp], np.int64), "axis": 1,
                 "block_size": 0, "qmin": qmin, "qmax": qmax, "dtype": dtype}
        self.ctx.emit("quantize", node.name, [x], [y], attrs, node.name)

    def _requant_acc(self, node, acc, y, y_scale, zp, dtype, qmin, qmax, mode):
        """Quant of a Conv/MatMul/Gemm output: an exact shift (power-of-two multiplier, any mode) or
        requantize (ROUND)."""
        if acc.relu:
            qmin = max(qmin, zp)
        e = _pow2_exponent(acc.x_scale * np.asarray(acc.w_scale, np.float64) / y_scale)
        if e is not None:  # exact in every mode; qonnx rounds acc·m + zp, zero point before rounding
            return self._emit_shift(node, acc.ir, 0, _compact(-e), acc.axis, mode, y, zp, qmin, qmax, dtype)
        attrs = {"x_scale": np.float32(acc.x_scale), "w_scale": _compact(acc.w_scale), "y_scale": np.float32(y_scale),
                 "y_zp": zp, "qmin": qmin, "qmax": qmax, "dtype": dtype, "axis": acc.axis}
        attrs.update(f32_form(attrs))
        self.ctx.emit("requantize", f"{node.name}/requantize", [acc.ir], [y], attrs, node.name)

    def _requant_codes(self, node, t, y, y_scale, zp, dtype, qmin, qmax, mode):
        """Quant of a quantized tensor: an exact shift when the scale ratio is a power of two, else
        (ROUND) dequantize + quantize, the float values qonnx computes."""
        e = _pow2_exponent(t.quant.scale[0] / y_scale)
        if e is not None:
            return self._emit_shift(node, t.name, t.quant.zero_point[0], -e, -1, mode, y, zp, qmin, qmax, dtype)
        f = f"{y}::float"
        self.ctx.emit("dequantize", f"{node.name}/dequantize", [t.name], [f],
                      {"scale": np.array(t.quant.scale, np.float32), "zp": np.array(t.quant.zero_point, np.int64),
                       "axis": 1, "block_size": 0}, node.name)
        self.ctx.add_tensor(f, "f32")
        self._quantize(node, f, y, y_scale, zp, dtype, qmin, qmax, mode)

    def _emit_shift(self, node, x, x_zp, shift, axis, mode, y, y_zp, qmin, qmax, dtype):
        shift = np.asarray(shift, np.int32).reshape(-1)
        if shift.min() < -31 or shift.max() > 62:
            raise self._err(node, f"shift {shift.min()}..{shift.max()} is outside -31..62")
        attrs = {"x_zp": int(x_zp), "shift": shift, "axis": int(axis), "rounding": mode, "y_zp": int(y_zp),
                 "qmin": int(qmin), "qmax": int(qmax), "dtype": dtype}
        self.ctx.emit("round_shift", node.name, [x], [y], attrs, node.name)

    # ------------------------------------------------------------ BipolarQuant
    def _bipolar(self, node):
        self._to_bipolar(node, node.input[0], node.output[0], self._const(node, 1, "scale").astype(np.float32))

    def _to_bipolar(self, node, x, y, scale):
        """Codes −1/+1 as element type i2 (zero point 0): real = code·scale."""
        if np.any(scale <= 0):
            raise self._err(node, "scales must be positive")
        if x in self.ctx.constants:
            w = np.asarray(self.ctx.constants[x])
            self._add_const(y, sign(w, 0), "i2", self._const_quant(node, scale, 0, w))
            return
        s = self._act_scale(node, scale)
        if x in self.chain:  # qonnx's BipolarQuant: +1 where x >= 0
            self._thresholds(node, x, y, lambda v: np.where(np.asarray(v) >= 0, 1, -1), "i2")
            self.ctx.add_tensor(y, "i2", quant=convert.quant_of(s, 0))
            return
        if x in self.acc:
            if self.acc[x].relu:
                raise self._err(node, "Relu before a bipolar quantizer makes every value +1; not supported")
            src, x_zp = self.acc[x].ir, 0
        elif self.ctx.dtype(x) == "f32":
            src, x_zp = x, 0.0
        else:
            t = self._quantized(node, x, "input")
            src, x_zp = t.name, t.quant.zero_point[0]
        self.ctx.emit("sign", node.name, [src], [y], {"x_zp": x_zp}, node.name)
        self.ctx.add_tensor(y, "i2", quant=convert.quant_of(s, 0))

    # ------------------------------------------------------------ Trunc
    def _trunc(self, node):
        """Trunc -> round_shift: the code q of the input, shifted right by k with the node's rounding."""
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        mode = a.get("rounding_mode", b"FLOOR")
        mode = ROUNDINGS.get((mode.decode() if isinstance(mode, bytes) else mode).upper())
        if mode is None:
            raise self._err(node, f"unknown rounding_mode; expected one of {', '.join(ROUNDINGS)}")
        x, y = node.input[0], node.output[0]
        s = self._scalar(node, 1, "scale")
        if self._scalar(node, 2, "zeropt") != 0:
            raise self._err(node, "only zero point 0 is supported")
        in_bits = self._scalar(node, 3, "input_bit_width")
        v2 = len(node.input) == 6
        if x in self.acc:
            acc = self.acc[x]
            src, x_zp, src_scale, signed, lo = acc.ir, 0, acc.scale(), True, 0 if acc.relu else None
        else:
            t = self._quantized(node, x, "input")
            src, x_zp, src_scale, lo = t.name, t.quant.zero_point[0], np.array(t.quant.scale, np.float32), None
            signed = t.dtype[0] == "i"
            if x_zp != 0:
                raise self._err(node, f"input {x!r} must have zero point 0, got {x_zp}")
        if v2:  # explicit output scale; k = round(log2(output_scale / scale)), as qonnx
            y_scale, out_bits = self._scalar(node, 4, "output_scale"), int(self._scalar(node, 5, "output_bit_width"))
            k = int(np.round(np.log2(y_scale / s)))
            signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        else:  # v1 keeps the input scale; signedness is the input's
            out_bits = int(self._scalar(node, 4, "output_bit_width"))
            y_scale, k, narrow = s, int(in_bits) - out_bits, False
        if not np.all(src_scale == src_scale[0]) or not np.isclose(src_scale[0], s, rtol=1e-6, atol=0):
            raise self._err(node, f"scale {s} differs from the scale of its input ({src_scale[:4]})")
        if k < 0:
            raise self._err(node, f"output scale below the input scale (shift {k}) is not supported")
        qmin, qmax = _int_range(signed, narrow, out_bits)
        if lo is not None:
            qmin = max(qmin, lo)
        dtype = f"{'i' if signed else 'u'}{out_bits}" if out_bits <= 8 else "i32"
        self._emit_shift(node, src, x_zp, k, -1, mode, y, 0, qmin, qmax, dtype)
        self.ctx.add_tensor(y, dtype, quant=convert.quant_of(y_scale, 0))

    # ------------------------------------------------------------ Conv / MatMul / Gemm
    def _weights(self, node, i, what, axis):
        """A quantized weight constant: (name, Quant, w_scale f32 (1,) or (C,)); per-channel along `axis` only."""
        name = node.input[i]
        t = self.ctx.tensors.get(name)
        if name not in self.ctx.constants or t is None or not is_quantized(t.dtype) or t.quant is None:
            raise self._err(node, f"{what} {name!r} must be a constant quantized to 1..8 bits by a Quant or "
                                  f"BipolarQuant node")
        if t.quant.axis is not None and t.quant.axis != axis:
            raise self._err(node, f"{what} {name!r} is quantized along axis {t.quant.axis}; only per-tensor or "
                                  f"per-output-channel (axis {axis}) is supported")
        return name, t, np.array(t.quant.scale, np.float32)

    def _bias(self, node, name, acc_scale: np.ndarray, channels: int, strict=True) -> str | None:
        """A bias as int32 in units of the accumulator scale; it must be (within 1e-4) an integer
        multiple (else an error, or None when not `strict`)."""
        b = np.asarray(self.ctx.constants.get(name, np.array([]))).astype(np.float64).reshape(-1)
        t = self.ctx.tensors.get(name)
        if name not in self.ctx.constants or b.size not in (1, channels):
            raise self._err(node, f"bias {name!r} must be a constant of {channels} values")
        if t is not None and t.quant is not None:  # Quant'd bias: its real value
            b = (b - np.asarray(t.quant.zero_point, np.float64)) * np.asarray(t.quant.scale, np.float64)
        units = np.broadcast_to(b, (channels,)) / acc_scale.astype(np.float64)
        q = np.round(units)
        if np.any(np.abs(units - q) > 1e-4 * np.maximum(1, np.abs(q))) or np.any(np.abs(q) >= 2 ** 31):
            if not strict:
                return None
            raise self._err(node, f"bias {name!r} is not an integer multiple of the accumulator scale "
                                  f"x_scale·w_scale (first values {units[:4]})")
        return self._add_const(f"{name}::i32", q.astype(np.int32), "i32")

    def _record_acc(self, node, acc_name, x_scale, w_scale, axis, channels):
        w_scale = np.broadcast_to(w_scale, (channels,)).astype(np.float32)
        self.ctx.add_tensor(acc_name, "i32")
        self.acc[node.output[0]] = _Acc(acc_name, x_scale, w_scale, axis, len(self.ctx.nodes) - 1)

    def _integer_layer(self, node, a, b) -> bool:
        """True when a Conv/MatMul/Gemm has an integer form: a quantized activation times quantized
        constant weights. Otherwise (a float input, as QKeras exports its first layer, or float
        weights) it is a float layer for the host."""
        ta, tb = self.ctx.tensors.get(a), self.ctx.tensors.get(b)
        return ta is not None and is_quantized(ta.dtype) and ta.quant is not None and a not in self.ctx.constants \
            and a not in self.acc and a not in self.chain and b in self.ctx.constants and tb is not None \
            and is_quantized(tb.dtype) and tb.quant is not None

    def _conv(self, node):
        if not self._integer_layer(node, node.input[0], node.input[1]):
            return False
        x = self._quantized(node, node.input[0], "input X")
        w, wt, w_scale = self._weights(node, 1, "weight W", 0)
        w_scale = np.broadcast_to(w_scale, (self.ctx.constants[w].shape[0],))
        a = {v.name: helper.get_attribute_value(v) for v in node.attribute}
        attrs = convert.conv_attrs(a, self.ctx.constants[w].ndim - 2)
        attrs["group"] = int(a.get("group", 1))
        acc_scale = (np.float32(x.quant.scale[0]) * w_scale).astype(np.float32)
        b = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        bias = self._bias(node, b, acc_scale, w_scale.size) if b else ""
        acc = f"{node.output[0]}::acc"
        self.ctx.emit("conv", node.name, [x.name, w, bias, self._zp_input(f"{node.name}::x_zp", x.quant.zero_point,
                                                                          x.dtype),
                                          self._zp_input(f"{node.name}::w_zp", wt.quant.zero_point, wt.dtype)],
                      [acc], attrs, node.name)
        self._record_acc(node, acc, x.quant.scale[0], w_scale, 1, w_scale.size)

    def _matmul(self, node):
        if not self._integer_layer(node, node.input[0], node.input[1]):
            return False
        a = self._quantized(node, node.input[0], "input A")
        b, bt, b_scale = self._weights(node, 1, "input B", 1)
        acc = f"{node.output[0]}::acc"
        self.ctx.emit("matmul", node.name, [a.name, b, self._zp_input(f"{node.name}::a_zp", a.quant.zero_point,
                                                                      a.dtype),
                                            self._zp_input(f"{node.name}::b_zp", bt.quant.zero_point, bt.dtype)],
                      [acc], {}, node.name)
        self._record_acc(node, acc, a.quant.scale[0], b_scale, -1, self.ctx.constants[b].shape[-1])

    def _gemm(self, node):
        at = {v.name: helper.get_attribute_value(v) for v in node.attribute}
        if float(at.get("alpha", 1.0)) != 1.0 or float(at.get("beta", 1.0)) != 1.0:
            raise self._err(node, "alpha and beta must be 1")
        trans_b = int(at.get("transB", 0))
        if not self._integer_layer(node, node.input[0], node.input[1]):
            return False
        a = self._quantized(node, node.input[0], "input A")
        b, bt, b_scale = self._weights(node, 1, "input B", 0 if trans_b else 1)
        n = self.ctx.constants[b].shape[0 if trans_b else 1]
        scale = (np.float32(a.quant.scale[0]) * b_scale).astype(np.float32)
        c = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        bias = self._bias(node, c, np.broadcast_to(scale, (n,)), n) if c else ""
        acc = f"{node.output[0]}::acc"
        self.ctx.emit("gemm", node.name, [a.name, b, bias,
                                          self._zp_input(f"{node.name}::a_zp", a.quant.zero_point, a.dtype),
                                          self._zp_input(f"{node.name}::b_zp", bt.quant.zero_point, bt.dtype)],
                      [acc], {"transA": int(at.get("transA", 0)), "transB": trans_b}, node.name)
        self._record_acc(node, acc, a.quant.scale[0], b_scale, -1, n)

    # ------------------------------------------------------------ Relu, bias Add
    def _relu(self, node):
        x, y = node.input[0], node.output[0]
        if x in self.acc:
            self.acc[y] = replace(self.acc[x], relu=True)
            return
        if x in self.chain or self.ctx.dtype(x) == "f32":
            return False
        t = self._quantized(node, x, "input")
        zp = t.quant.zero_point[0]
        qmin, qmax = qrange(t.dtype)
        self._emit_shift(node, t.name, 0, 0, -1, "FLOOR", y, 0, max(qmin, zp), qmax, t.dtype)
        self.ctx.add_tensor(y, t.dtype, quant=t.quant)

    def _add(self, node):
        """Conv/Gemm output + constant bias, an integer multiple of the accumulator scale -> the bias
        input of that conv/gemm (int32, accumulator units). Any other Add is a float op (False)."""
        x, c = node.input[0], node.input[1]
        if c in self.acc:
            x, c = c, x
        if x not in self.acc or c not in self.ctx.constants:
            return False
        acc = self.acc[x]
        ir_node = self.ctx.nodes[acc.node]
        if acc.relu or ir_node.op not in ("conv", "gemm") or ir_node.inputs[2] or self.readers.get(x, 0) != 1:
            return False
        channels = acc.w_scale.size
        arr = np.asarray(self.ctx.constants[c])
        if arr.size not in (1, channels) or (arr.size > 1 and arr.shape[-3 if ir_node.op == "conv" and arr.ndim >= 3
                                                                 else -1] != channels):
            return False
        bias = self._bias(node, c, acc.scale(), channels, strict=False)
        if bias is None:
            return False
        ins = list(ir_node.inputs)
        ins[2] = bias
        self.ctx.nodes[acc.node] = replace(ir_node, inputs=tuple(ins))
        self.acc[node.output[0]] = acc

    # ------------------------------------------------------------ the graph
    def graph(self, name: str) -> Graph:
        ctx, g = self.ctx, self.model.graph
        outputs = [o.name for o in g.output]
        for o in outputs:
            if o in self.acc or o in self.chain:
                self._float_of(o, None)
            elif o in ctx.tensors and is_quantized(ctx.dtype(o)) and ctx.tensors[o].quant is not None \
                    and o not in ctx.constants:
                self._dequantize_output(o)
            elif o not in self.floats and ctx.dtype(o) != "f32":
                raise NpusimError(f"graph output {o!r} carries no quantized value npusim can produce")
        inputs = tuple(vi.name for vi in g.input if vi.name not in ctx.constants)
        used = {i for n in ctx.nodes for i in n.inputs}
        constants = {k: v for k, v in ctx.constants.items() if k in used}
        return Graph(name, inputs, tuple(outputs), dict(ctx.tensors), tuple(ctx.nodes), constants, {})

    def _rename(self, old, new):
        ctx = self.ctx
        ctx.nodes = [replace(n, inputs=tuple(new if i == old else i for i in n.inputs),
                             outputs=tuple(new if o == old else o for o in n.outputs)) for n in ctx.nodes]
        t = ctx.tensors.pop(old)
        ctx.tensors[new] = replace(t, name=new)

    def _dequantize_output(self, o):
        q = f"{o}::q"
        self._rename(o, q)
        t = self.ctx.tensors[q]
        self.ctx.emit("dequantize", f"{o}/dequantize", [q], [o],
                      {"scale": np.array(t.quant.scale, np.float32), "zp": np.array(t.quant.zero_point, np.int64),
                       "axis": 1, "block_size": 0}, o)
        self.ctx.add_tensor(o, "f32")

    def _dequantize_acc(self, o):
        """A Conv/MatMul/Gemm output that is a graph output: f32(acc)·(x_scale·w_scale[c])."""
        acc = self.acc[o]
        src = acc.ir
        if acc.relu:
            src = f"{o}::relu"
            self.ctx.emit("round_shift", f"{o}/relu", [acc.ir], [src],
                          {"x_zp": 0, "shift": np.zeros(1, np.int32), "axis": -1, "rounding": "FLOOR", "y_zp": 0,
                           "qmin": 0, "qmax": 2 ** 31 - 1, "dtype": "i32"}, o)
            self.ctx.add_tensor(src, "i32")
        scale = _compact(acc.scale())
        self.ctx.emit("dequantize", f"{o}/dequantize", [src], [o],
                      {"scale": scale, "zp": np.zeros(scale.shape, np.int64), "axis": acc.axis, "block_size": 0}, o)
        self.ctx.add_tensor(o, "f32")
