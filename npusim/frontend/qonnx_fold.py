"""Float ONNX nodes of a QONNX graph, evaluated as qonnx's executor evaluates them.

qonnx's executor (qonnx.core.onnx_exec.execute_node) runs every standard ONNX node as a model
of its own on onnxruntime, in float32, its inputs fed at run time (also the constant ones).
The QONNX importer (npusim.frontend.qonnx) uses the same evaluation at import time, so that what it
folds is what qonnx computes, bit for bit:

- `fold_constants`: a node whose inputs are all constants (Pow of two constants, the Gather /
  Unsqueeze / Concat that build a Reshape's shape), and Shape of a tensor of static shape,
  becomes a constant, as qonnx's `cleanup_model` (FoldConstants) folds it; a Transpose of a
  quantized constant moves onto the Quant's input (qonnx's FoldTransposeIntoQuantInit).
- `thresholds`: a monotone float chain between an integer source (a Conv/MatMul/Gemm
  accumulator, the codes of a quantized tensor) or a float tensor and the Quant that follows
  it (BatchNormalization, Add/Sub/Mul/Div by constants, Relu, Clip) becomes, per channel, the
  ascending list of source values at which the quantizer's code steps: FINN's MultiThreshold.
  Every op of the chain is monotone in its variable input (per channel, increasing or
  decreasing) and IEEE float32 rounding is monotone, so the code is a monotone step function
  of the source value; a binary search over the source's integer keys, each probe run
  through the chain on onnxruntime and quantized as qonnx quantizes, finds every step exactly.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .context import import_session_options
from ..errors import NpusimError

QUANT_OPS = ("Quant", "BipolarQuant")
# ops whose output is monotone in their one non-constant input, per channel (Div: x / c only)
MONOTONE = ("BatchNormalization", "Add", "Sub", "Mul", "Div", "Relu", "Clip", "Identity", "Neg")


def single_node_model(node: onnx.NodeProto, types: dict, opset: int) -> onnx.ModelProto:
    """The node alone in a model whose inputs (its distinct non-empty inputs, in order, constants
    too) are all fed at run time, as qonnx's execute_node builds it; `types`: input -> ONNX
    element type. Fed, not initializers: onnxruntime then neither prepacks a constant weight nor
    fuses, either of which changes float32 results (a batch-1 MatMul by a prepacked weight, or
    MatMul + Add fused into Gemm, differs from qonnx's by a few ULP)."""
    ins = [helper.make_tensor_value_info(x, types[x], None) for x in dict.fromkeys(node.input) if x]
    g = helper.make_graph([node], "single-node-exec", ins, [onnx.ValueInfoProto(name=o) for o in node.output])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def node_session(node: onnx.NodeProto, feeds: dict, opset: int) -> Callable[[dict], list]:
    """node -> run(feeds) on onnxruntime, in its `single_node_model` (the front end's session options)."""
    import onnxruntime as ort

    m = single_node_model(node, {x: helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype) for x, v in feeds.items()},
                          opset)
    try:
        sess = ort.InferenceSession(m.SerializeToString(), import_session_options(),
                                    providers=["CPUExecutionProvider"])
    except Exception as e:
        raise NpusimError(f"node {node.name!r} ({node.op_type}): onnxruntime cannot run it: "
                          f"{str(e).splitlines()[0]}") from None
    names = [i.name for i in sess.get_inputs()]
    return lambda f: sess.run(None, {n: np.asarray(f[n]) for n in names})


def _static_shape(shapes: dict, name: str):
    s = shapes.get(name)
    return s if s is not None and all(isinstance(d, int) and d > 0 for d in s) else None


def fold_constants(model: onnx.ModelProto, shapes: dict) -> onnx.ModelProto:
    """A copy of `model` with constant subgraphs folded (see the module docstring); `shapes`
    maps tensor names to their inferred shapes (tuples, ints where static)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    added, kept, producer = {}, [], {}
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for x in n.input:
            readers[x] = readers.get(x, 0) + 1
    for o in model.graph.output:
        readers[o.name] = readers.get(o.name, 0) + 2
    for n in model.graph.node:
        standard = n.domain in ("", "ai.onnx")
        if standard and n.op_type == "Constant":
            at = n.attribute[0]
            added[n.output[0]] = numpy_helper.to_array(at.t) if at.type == onnx.AttributeProto.TENSOR \
                else np.array(helper.get_attribute_value(at))
        elif standard and n.op_type == "Shape" and _static_shape(shapes, n.input[0]):
            a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
            dims = np.array(_static_shape(shapes, n.input[0]), np.int64)
            added[n.output[0]] = dims[a.get("start", 0):a.get("end", len(dims))]
        elif standard and n.input and all(not x or x in consts or x in added for x in n.input):
            feeds = {x: added.get(x, consts.get(x)) for x in n.input if x}
            for o, v in zip(n.output, node_session(n, feeds, opset)(feeds)):
                added[o] = v
        elif standard and n.op_type == "Transpose" and _quant_on_constant(producer.get(n.input[0]), consts) \
                and readers.get(n.input[0]) == 1:
            _transpose_into_quant(producer[n.input[0]], n, consts, added)
            producer[n.output[0]] = producer.pop(n.input[0])
        else:
            kept.append(onnx.NodeProto())
            kept[-1].CopyFrom(n)  # the caller's model stays as it is (a Transpose may rewrite this Quant)
            for o in n.output:
                producer[o] = kept[-1]
        consts.update({k: v for k, v in added.items() if k not in consts})
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.node[:]
    m.graph.node.extend(kept)
    used = {x for n in kept for x in n.input} | {o.name for o in m.graph.output}
    m.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k) for k, v in added.items() if k in used)
    return m


def _quant_on_constant(node, consts) -> bool:
    return node is not None and node.op_type in QUANT_OPS and node.input[0] in consts \
        and all(x in consts for x in node.input[1:])


def _transpose_into_quant(quant: onnx.NodeProto, transpose: onnx.NodeProto, consts: dict, added: dict):
    """Quant(w, s, ...) -> Transpose  =>  Quant(w^T, s^T, ...): the codes transpose with their scale."""
    perm = [int(p) for p in next((helper.get_attribute_value(a) for a in transpose.attribute if a.name == "perm"),
                                  [])] or None
    rank = np.ndim(consts[quant.input[0]])
    for i, x in enumerate(quant.input[:3]):
        v = np.asarray(consts[x])
        if i == 0 or v.ndim == rank:
            name = f"{x}::{transpose.name}"
            added[name] = np.transpose(v, perm)
            quant.input[i] = name
    quant.output[0] = transpose.output[0]


# ---------------------------------------------------------------- qonnx's quantizer

def round_like_qonnx(y, mode):
    """qonnx's rounding functions on floats (offline weight quantization), same dtype and ops."""
    return {"HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor, "DOWN": np.fix,
            "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)),
            "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
            "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5)}[mode](y)


def quant_codes(x, scale, zp, qmin, qmax, mode, bipolar=False) -> np.ndarray:
    """qonnx's integer codes of a float32 tensor, in its float32 order: y = x / s + z (a 1-bit
    signed Quant: ±1 by the sign of y), clamp, round (intquant.int_quant)."""
    y = (np.asarray(x, np.float32) / scale).astype(np.float32) + np.float32(zp)
    if bipolar:
        return np.where(y >= 0, 1, -1).astype(np.int64)
    return round_like_qonnx(np.clip(y, np.float32(qmin), np.float32(qmax)), mode).astype(np.int64)



# ---------------------------------------------------------------- thresholds of a monotone chain

def _ordered_float(keys: np.ndarray) -> np.ndarray:
    """float32 values of integer keys that order float32 as numbers: key k >= 0 is the float of bit
    pattern k, k < 0 the negative float of magnitude bits −k − 1 (−0.0 is −1, +0.0 is 0)."""
    k = np.asarray(keys, np.int64)
    bits = np.where(k >= 0, k, (-k - 1) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)


FLOAT_KEYS = (-0x7F800001, 0x7F800000)  # −inf .. +inf


def float_source(probe_shape):
    """The source of a chain on a float tensor: (lo, hi, value(keys), threshold(keys)), probes of
    shape (T, *probe_shape[1:])."""
    return FLOAT_KEYS[0], FLOAT_KEYS[1], lambda k: _ordered_float(k).reshape((k.shape[0],) + tuple(probe_shape[1:])), \
        _ordered_float


def acc_source(scale: np.ndarray, relu: bool, probe_shape):
    """The source of a chain on an int32 accumulator whose real value is acc·scale[c] (float64):
    the chain's input is that value rounded to float32 (qonnx's float Conv/MatMul output, exact
    when the scales are powers of two and |acc| < 2^24), after Relu when one folded into it."""
    def value(keys):
        v = (keys * scale[None, :]).astype(np.float32)
        return (np.maximum(v, np.float32(0)) if relu else v).reshape((keys.shape[0],) + tuple(probe_shape[1:]))
    return -2 ** 31, 2 ** 31 - 1, value, lambda k: k


def codes_source(qmin: int, qmax: int, scale: float, zp: int, probe_shape):
    """The source of a chain on quantized codes: the chain's input is qonnx's Quant output
    (code − z)·s in float32."""
    s, z = np.float32(scale), np.float32(zp)

    def value(keys):
        return ((keys.astype(np.float32) - z) * s).astype(np.float32).reshape((keys.shape[0],) + tuple(probe_shape[1:]))
    return qmin, qmax, value, lambda k: k


def probe_shape(rank: int, axis: int, channels: int) -> tuple:
    """(1, ..., C at `axis`, ..., 1): the shape of one probe of every channel."""
    shape = [1] * rank
    shape[axis] = channels
    return tuple(shape)


def chain_axis(nodes, consts: dict, rank: int, axis: int | None, channels: int):
    """(axis, C): the one axis along which the chain's constants (and the source, `axis` with
    `channels` values, or None) vary; an error naming the node when they vary along two axes or
    along the batch."""
    found = {} if axis is None or channels == 1 else {axis % rank: channels}
    for n in nodes:
        for i, x in enumerate(n.input):
            if x not in consts:
                continue
            v = np.asarray(consts[x])
            if n.op_type == "BatchNormalization":
                shape = {1: v.size}
            elif v.ndim > rank:
                raise NpusimError(f"node {n.name!r} ({n.op_type}): constant {x!r} of shape {v.shape} has more "
                                  f"dimensions than its input ({rank})")
            else:
                shape = {rank - v.ndim + j: d for j, d in enumerate(v.shape) if d > 1}
            for ax, d in shape.items():
                if found.get(ax, d) != d or (found and ax not in found) or (ax == 0 and rank > 1):
                    raise NpusimError(f"node {n.name!r} ({n.op_type}): constant {x!r} of shape {v.shape} must be "
                                      f"one value or one per channel along one axis other than the batch")
                found[ax] = d
    if not found:
        return (axis if axis is not None else rank - 1) % rank, 1
    (ax, c), = found.items()
    return ax, c


def thresholds(source, nodes, consts: dict, codes, opset: int, channels: int):
    """The multithreshold form of `codes(chain(source value))` per channel.

    source: (lo, hi, value, threshold): the integer keys lo..hi of the source's values, value(keys
    (T, C)) -> the float32 input of the chain (T, ...) (see `probe_shape`), and threshold(keys) -> the threshold values
    compared with the source tensor (the keys themselves for an integer source). nodes: the
    chain (each reads the previous output and constants). codes(v) -> int64 codes, the quantizer
    as qonnx computes it. Returns (thresholds (C, K) ascending, padded with a value the source
    never reaches, base (C,), step (C,) ±1): code = base + step·#{k : x ≥ thresholds[k]}.
    """
    lo, hi, value, threshold = source
    sessions = {}

    def run(keys):
        v = value(keys)
        for i, n in enumerate(nodes):
            feeds = {x: (consts[x] if x in consts else v) for x in n.input if x}
            if i not in sessions:
                sessions[i] = node_session(n, feeds, opset)
            v = sessions[i](feeds)[0]
        return codes(v).reshape(keys.shape[0], -1)

    ends = run(np.repeat(np.array([[lo], [hi]], np.int64), channels, axis=1))
    c_lo, c_hi = ends[0], ends[1]
    step = np.where(c_hi >= c_lo, 1, -1).astype(np.int64)
    k = max(int(np.abs(c_hi - c_lo).max()), 1)
    target = (step * c_lo)[None, :] + np.arange(1, k + 1, dtype=np.int64)[:, None]
    valid = target <= (step * c_hi)[None, :]
    left, right = np.full(target.shape, lo - 1, np.int64), np.full(target.shape, hi, np.int64)
    while True:
        open_ = valid & (right - left > 1)
        if not open_.any():
            break
        mid = (left + right) // 2
        ge = step[None, :] * run(mid) >= target
        right = np.where(open_ & ge, mid, right)
        left = np.where(open_ & ~ge, mid, left)
    thr = threshold(right)
    never = np.float32(np.nan) if thr.dtype.kind == "f" else hi + 1
    thr = np.where(valid, thr, never).T
    return np.ascontiguousarray(thr), c_lo.astype(np.int64), step
