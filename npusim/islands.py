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
  division and rounding): the numbers onnxruntime computes, bit for bit. A MaxPool between f and
  the pool (MobileNetV3's last stage) becomes an integer maxpool of the codes and f's table.

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


def without_pools(graph: Graph, node: Node, model, pools: list[IslandPool], extra_outputs, drop=()) -> Node:
    """The host island `node` without its pools, their QuantizeLinear nodes, the nodes named in
    `drop` and what only they needed: its outputs are the island's others plus `extra_outputs`
    (none: the island has nothing left to do); marked elementwise when it maps one 8-bit input to
    its outputs value by value (standard elementwise ops, single-valued constants)."""
    import onnx

    from .frontend.context import is_elementwise_island

    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    drop = set(drop) | {p.pool.name for p in pools} | {p.quantize.name for p in pools}
    gone = {p.quantize.output[0] for p in pools}
    outputs = [o for o in node.outputs if o not in gone]
    outputs += [o for o in extra_outputs if o not in outputs]
    needed, keep = set(outputs), []
    for p in reversed([p for p in g.node if p.name not in drop]):
        if needed & set(p.output):
            keep.insert(0, p)
            needed |= set(p.input)
    del g.node[:]
    g.node.extend(keep)
    del g.output[:]
    g.output.extend(onnx.ValueInfoProto(name=o) for o in outputs)
    sizes = {t.name: math.prod(t.dims) for t in g.initializer}
    elementwise = is_elementwise_island(keep, [graph.tensors[x].dtype for x in node.inputs], sizes.get)
    return Node("host", node.name, node.inputs, tuple(outputs),
                {"model": model.SerializeToString(), "ops": tuple(f"{p.op_type}:{p.name}" for p in keep),
                 "elementwise": elementwise}, ", ".join(p.name for p in keep))


def split_pool_islands(graph: Graph, nchwc_block: int | None) -> Graph:
    """Mode "ort": every host island DequantizeLinear(x:8-bit) -> f -> {..., GlobalAveragePool
    -> QuantizeLinear -> t_b} whose remainder is elementwise becomes that elementwise island
    (outputs ..., f), a float32 global_avgpool_f32 f -> g and a quantize g -> t_b. A MaxPool
    between f and the pool (f -> MaxPool -> GlobalAveragePool) becomes an integer maxpool of x's
    codes and the table of f on the pooled codes, when f is provably nondecreasing in x (`_monotone_chain`):
    then max f(x_i) = f(max x_i) exactly.

    Split only where the result is provably onnxruntime's: one 8-bit input, the rest of the island
    elementwise (so f and the other outputs are functions of the input's codes, tabulated), f
    float32 of rank 4 with a known channel count, and the pool read by one per-tensor
    QuantizeLinear alone; any other island is left whole.

    The pool's order (npusim_kernels golden.pool.global_avgpool_f32) is onnxruntime's kernel
    choice. Its NCHWc transformer (`nchwc_block`, the channel block, not None: npusim.ortisa.nchwc_block)
    moves a GlobalAveragePool to the "sequential" NCHWc kernel only when the pool's input has no
    NCHW producer left: a graph input, or the output of a node the transformer rewrote, such as a
    float MaxPool (opset below 22) whose C is a multiple of the block. A pool of an elementwise
    chain from a DequantizeLinear, which it never rewrites, runs MLAS's NCHW kernel ("lanes4") at
    every level and on every CPU (both checked against onnxruntime 1.32 in tests/test_gap_islands.py).
    """
    nodes, tensors = [], dict(graph.tensors)
    for n in graph.nodes:
        split = _split_ort(graph, n, nchwc_block) if n.op == "host" else None
        if split is None:
            nodes.append(n)
            continue
        nodes.extend(split[0])
        for t in split[1]:
            tensors.setdefault(t.name, t)
    return replace(graph, nodes=tuple(nodes), tensors=tensors) if len(nodes) != len(graph.nodes) else graph


_CODES = {np.dtype(np.uint8): "u8", np.dtype(np.int8): "i8"}


def _split_ort(graph: Graph, node: Node, nchwc_block: int | None) -> tuple[list[Node], list[Tensor]] | None:
    """([the elementwise island if it still has outputs, then per pool: (maxpool, its table
    island,) global_avgpool_f32, quantize], the tensors they add) of a host island, or None when it
    is not of the form split_pool_islands proves."""
    import onnx
    from onnx import helper

    from .frontend.convert import conv_attrs, quantize_attrs

    if len(node.inputs) != 1 or graph.tensors[node.inputs[0]].dtype not in ("u8", "i8"):
        return None
    model = onnx.ModelProto.FromString(node.attrs["model"])
    pools = pools_of(model)
    if not pools:
        return None
    producer = {o: p for p in model.graph.node for o in p.output}
    readers = [x for p in model.graph.node for x in p.input]
    maxpools = {}  # pool name -> the MaxPool it reads, of an f nondecreasing in the island's input
    for p in pools:
        m = producer.get(p.pool.input[0])
        if m is not None and m.op_type == "MaxPool":
            a = {at.name: helper.get_attribute_value(at) for at in m.attribute}
            chain = _monotone_chain(model, node.inputs[0], m.input[0])
            if m.domain not in ("", "ai.onnx") or len([o for o in m.output if o]) != 1 \
                    or len(a.get("kernel_shape", ())) != 2 or readers.count(m.output[0]) != 1 or not chain:
                return None
            maxpools[p.pool.name] = (m, {**conv_attrs(a, 2), "ceil_mode": int(a.get("ceil_mode", 0))}, chain)
    fs = [maxpools[p.pool.name][0].input[0] if p.pool.name in maxpools else p.pool.input[0] for p in pools]
    tensors = [graph.tensors.get(t) for p in pools for t in (p.pool.input[0],)] + [graph.tensors.get(f) for f in fs]
    if any(t is None or t.dtype != "f32" or t.shape is None or len(t.shape) != 4 or not isinstance(t.shape[1], int)
           or t.shape[1] < 1 for t in tensors) \
            or any(p.scale.dtype != np.float32 or p.zp.dtype not in _CODES
                   or graph.tensors.get(p.quantize.output[0]) is None
                   or graph.tensors[p.quantize.output[0]].dtype != _CODES[p.zp.dtype] for p in pools):
        return None
    island = without_pools(graph, node, model, pools, [f for p, f in zip(pools, fs) if p.pool.name not in maxpools],
                           [m.name for m, _, _ in maxpools.values()])
    if not island.attrs["elementwise"]:
        return None
    out, added = [island] if island.outputs else [], []
    x = graph.tensors[node.inputs[0]]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    for p, f in zip(pools, fs):
        pooled, order = p.pool.input[0], "lanes4"
        if p.pool.name in maxpools:
            m, attrs, chain = maxpools[p.pool.name]
            codes = f"{pooled}/codes"  # x's codes, max-pooled: the float MaxPool's shape, x's type
            if codes in graph.tensors:
                return None
            out += [Node("maxpool", m.name, (x.name,), (codes,), attrs, m.name),
                    _table_island(model, chain, x.name, x.dtype, codes, pooled)]
            added.append(Tensor(codes, x.dtype, graph.tensors[pooled].shape, x.quant))
            channels = graph.tensors[pooled].shape[1]
            if nchwc_block and opset < 22 and channels % nchwc_block == 0:  # NCHWc MaxPool, then NCHWc pool
                order = "sequential"
        out.append(Node("global_avgpool_f32", p.pool.name, (pooled,), (p.pool.output[0],), {"order": order},
                        p.pool.name))
        added.append(Tensor(p.pool.output[0], "f32", graph.tensors[pooled].shape[:2] + (1, 1)))
        out.append(Node("quantize", p.quantize.name, (p.pool.output[0],), (p.quantize.output[0],),
                        quantize_attrs(p.scale, p.zp, _CODES[p.zp.dtype]), p.quantize.name))
    return out, added


def _monotone_chain(model, x: str, f: str) -> list | None:
    """The nodes x -> ... -> f of an island's ONNX model when f is a nondecreasing function of x:
    DequantizeLinear (scale > 0), then any of Div or Mul by a constant > 0, Add of a constant, Sub
    of a constant, Relu, Clip with constant bounds (finite single values), each of one computed
    input and correctly rounded in float32, so nondecreasing; None otherwise."""
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: p for p in model.graph.node for o in p.output}
    chain = []
    while f != x:
        p = producer.get(f)
        if p is None or p.domain not in ("", "ai.onnx"):
            return None
        computed = [i for i in p.input if i and i not in init]
        consts = [init[i] for i in p.input if i in init]
        if len(computed) != 1 or any(c.size != 1 or not np.all(np.isfinite(c)) for c in consts):
            return None
        first = p.input[0] == computed[0]
        c = float(consts[0].reshape(-1)[0]) if consts else 0.0
        ok = {"DequantizeLinear": first and c > 0, "Div": first and c > 0, "Mul": c > 0, "Add": True,
              "Sub": first, "Relu": True, "Clip": first}.get(p.op_type, False)
        if not ok or (p.op_type in ("Div", "Mul", "Add", "Sub") and len(consts) != 1):
            return None
        chain.insert(0, p)
        f = computed[0]
    return chain


def _table_island(model, chain: list, x: str, x_dtype: str, codes: str, pooled: str) -> Node:
    """The host island that computes the chain x -> ... -> f of `model` (_monotone_chain) on the
    tensor `codes` (of x's type) and names the result `pooled`: an elementwise island of one
    8-bit input, a table."""
    import onnx
    from onnx import helper

    from .frontend.context import onnx_dtype

    rename = {x: codes, chain[-1].output[0]: pooled}
    nodes = []
    for p in chain:
        q = onnx.NodeProto()
        q.CopyFrom(p)
        q.input[:] = [rename.get(i, i) for i in p.input]
        q.output[:] = [rename.get(o, o) for o in p.output]
        nodes.append(q)
    used = {i for p in chain for i in p.input}
    g = helper.make_graph(nodes, "island", [helper.make_tensor_value_info(codes, onnx_dtype(x_dtype), None)],
                          [onnx.ValueInfoProto(name=pooled)], [t for t in model.graph.initializer if t.name in used])
    sub = helper.make_model(g, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    return Node("host", f"{pooled}/table", (codes,), (pooled,),
                {"model": sub.SerializeToString(), "ops": tuple(f"{p.op_type}:{p.name}" for p in chain),
                 "elementwise": True}, ", ".join(p.name for p in chain))
