"""Host islands taken apart: the global average pools of MobileNetV3's squeeze-and-excite input.

onnxruntime's quantizer leaves DequantizeLinear -> f -> {QuantizeLinear -> t_a,
GlobalAveragePool -> QuantizeLinear -> t_b} in float (hard-swish's division by 6, then the
pool), and the front end makes it one host island that onnxruntime runs at every inference.
Without the pool the island is elementwise (a function of its input's 256 codes: a lookup
table, see npusim.session.prepare_host). Each mode moves the pool out with its own arithmetic:

- mode "npu" (npusim.npu.lower_islands): a fixed-point pool of the quantized t_a, as an NPU
  computes it (not onnxruntime's numbers);
- mode "ort" (`split_pool_islands`): the island also gives f (float32, tabulated as t_a is), a
  float32 pool of f in the order onnxruntime's own kernel sums (registry op
  "global_avgpool_f32"), and the QuantizeLinear after it (registry op "quantize", onnxruntime's
  division and rounding): the numbers onnxruntime computes, bit for bit.

`pools_of` and `without_pools` are the surgery both share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .ir import Graph, Node, Tensor


@dataclass(frozen=True)
class IslandPool:
    """A GlobalAveragePool of an island's ONNX model and the QuantizeLinear that alone reads it."""
    pool: object  # onnx.NodeProto
    quantize: object  # onnx.NodeProto, per-tensor constant y_scale and y_zero_point
    scale: np.ndarray  # y_scale, shape (1,)
    zp: np.ndarray  # y_zero_point, shape (1,), its 8-bit type


def pools_of(model) -> list[IslandPool] | None:
    """The GlobalAveragePool nodes of an island's ONNX model, each read by exactly one
    QuantizeLinear with constant per-tensor y_scale and y_zero_point (no block_size) and by
    nothing else; None when there is none or one is not of that form."""
    from onnx import helper, numpy_helper

    g = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    readers = {}
    for p in g.node:
        for x in p.input:
            readers.setdefault(x, []).append(p)
    outputs = {o.name for o in g.output}
    pools = []
    for p in g.node:
        if p.op_type != "GlobalAveragePool":
            continue
        after = readers.get(p.output[0], [])
        q = after[0] if len(after) == 1 else None
        if q is None or q.op_type != "QuantizeLinear" or q.domain not in ("", "ai.onnx") or len(q.input) != 3 \
                or p.output[0] in outputs or p.domain not in ("", "ai.onnx"):
            return None
        scale, zp = init.get(q.input[1]), init.get(q.input[2])
        attrs = {a.name: helper.get_attribute_value(a) for a in q.attribute}
        if scale is None or zp is None or scale.size != 1 or zp.size != 1 or int(attrs.get("block_size", 0)):
            return None
        pools.append(IslandPool(p, q, scale.reshape(1), zp.reshape(1)))
    return pools or None


def without_pools(graph: Graph, node: Node, model, pools: list[IslandPool], extra_outputs) -> Node:
    """The host island `node` without its pools and their QuantizeLinear nodes: its outputs are
    the island's others plus `extra_outputs`; marked elementwise when it maps one 8-bit input to
    its outputs value by value (standard elementwise ops, single-valued constants)."""
    import onnx

    from .frontend.context import is_elementwise_island

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    drop = {p.pool.name for p in pools} | {p.quantize.name for p in pools}
    gone = {p.quantize.output[0] for p in pools}
    keep = [p for p in g.node if p.name not in drop]
    outputs = [o for o in node.outputs if o not in gone]
    outputs += [o for o in extra_outputs if o not in outputs]
    del g.node[:]
    g.node.extend(keep)
    del g.output[:]
    g.output.extend(onnx.ValueInfoProto(name=o) for o in outputs)
    sizes = {t.name: math.prod(t.dims) for t in g.initializer}
    elementwise = is_elementwise_island(keep, [graph.tensors[x].dtype for x in node.inputs], sizes.get)
    return Node("host", node.name, node.inputs, tuple(outputs),
                {"model": model.SerializeToString(), "ops": tuple(f"{p.op_type}:{p.name}" for p in keep),
                 "elementwise": elementwise}, ", ".join(p.name for p in keep))


def split_pool_islands(graph: Graph) -> Graph:
    """Mode "ort": every host island DequantizeLinear(x:8-bit) -> f -> {..., GlobalAveragePool
    -> QuantizeLinear -> t_b} whose remainder is elementwise becomes that elementwise island
    (outputs ..., f), a float32 global_avgpool_f32 f -> g and a quantize g -> t_b.

    Split only where the result is provably onnxruntime's: one 8-bit input, the rest of the island
    elementwise (so f and the other outputs are functions of the input's codes, tabulated), f
    float32 of rank 4 with a known channel count, and the pool read by one per-tensor
    QuantizeLinear alone; any other island is left whole.

    The pool's order is MLAS's 4-lane NCHW kernel's (npusim_kernels golden.pool.global_avgpool_f32)
    at every optimization level and on every CPU: onnxruntime's NCHWc transformer (level >=
    ORT_ENABLE_LAYOUT) moves a GlobalAveragePool to its NCHWc kernel (a sequential sum) only when the
    pool's input has no producer left in NCHW, i.e. it is a graph input or the output of a node the
    transformer itself rewrote (a float Conv, MaxPool, AveragePool, or an Add, Mul, Relu, ... of
    such outputs), and then only when C is a multiple of MLAS's NCHWc block (8 floats on AVX2, 16
    on AVX-512F). Here f comes from an elementwise chain that starts at a DequantizeLinear, which
    the transformer never rewrites (checked against onnxruntime 1.32 in tests/test_gap_islands.py).
    """
    nodes, tensors = [], dict(graph.tensors)
    for n in graph.nodes:
        split = _split_ort(graph, n) if n.op == "host" else None
        if split is None:
            nodes.append(n)
            continue
        nodes.extend(split)
        for m in split:
            if m.op == "global_avgpool_f32":  # the pool's output: a tensor of the whole model, kept when known
                shape = graph.tensors[m.inputs[0]].shape[:2] + (1, 1)
                tensors.setdefault(m.outputs[0], Tensor(m.outputs[0], "f32", shape))
    return replace(graph, nodes=tuple(nodes), tensors=tensors) if len(nodes) != len(graph.nodes) else graph


_CODES = {np.dtype(np.uint8): "u8", np.dtype(np.int8): "i8"}


def _split_ort(graph: Graph, node: Node) -> list[Node] | None:
    """[elementwise island, (global_avgpool_f32, quantize) per pool] of a host island, or None
    when it is not of the form split_pool_islands proves."""
    import onnx

    from .frontend.convert import quantize_attrs

    if len(node.inputs) != 1 or graph.tensors[node.inputs[0]].dtype not in ("u8", "i8"):
        return None
    model = onnx.ModelProto.FromString(node.attrs["model"])
    pools = pools_of(model)
    if not pools:
        return None
    fs = [p.pool.input[0] for p in pools]
    shapes = [graph.tensors[f].shape if f in graph.tensors and graph.tensors[f].dtype == "f32" else None for f in fs]
    if any(s is None or len(s) != 4 or not isinstance(s[1], int) or s[1] < 1 for s in shapes) \
            or any(p.scale.dtype != np.float32 or p.zp.dtype not in _CODES
                   or graph.tensors.get(p.quantize.output[0]) is None
                   or graph.tensors[p.quantize.output[0]].dtype != _CODES[p.zp.dtype] for p in pools):
        return None
    island = without_pools(graph, node, model, pools, fs)
    if not island.attrs["elementwise"]:
        return None
    out = [island]
    for p, f in zip(pools, fs):
        g_name = p.pool.output[0]
        out.append(Node("global_avgpool_f32", p.pool.name, (f,), (g_name,), {}, p.pool.name))
        out.append(Node("quantize", p.quantize.name, (g_name,), (p.quantize.output[0],),
                        quantize_attrs(p.scale, p.zp, _CODES[p.zp.dtype]), p.quantize.name))
    return out
