"""ONNX front end: a quantized ONNX model -> the integer IR. The only module that imports onnx.

QDQ fusion (mode "ort"; mode "npu" fuses as an NPU compiler does, see npusim.frontend.qdq_fusion) is
onnxruntime's own: the model is first optimized by onnxruntime's CPU graph
optimizer at level EXTENDED (the level at which its QDQ selector/action transformers fold
DequantizeLinear -> op -> QuantizeLinear into QLinearConv, QLinearMatMul, QGemm, QLinearAdd,
... and drop Q/DQ around MaxPool, Reshape, Transpose, ...). The integer kernels therefore see
exactly the patterns onnxruntime fuses, and whatever it leaves in float (a 4-bit-weight conv,
HardSigmoid, ConvTranspose, ...) becomes a host op. Host nodes merge into islands that
run on onnxruntime, as a deployment runs them on the host CPU. An island must compute what
onnxruntime computes for its nodes inside the whole model, where its optimizer (at the default
level, ALL) fuses float ops and picks NCHWc kernels from the graph and its inferred shapes: so
islands are as large as the graph allows, and their inputs carry the types and shapes
onnxruntime infers in the whole model; each island then runs at that same default level.
"""
from __future__ import annotations

import heapq
import json
import os
import tempfile
from dataclasses import replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import convert, onnx_door
from .context import (ONNX_DTYPES, ImportContext, NotConstant, import_session_options, is_elementwise_island,
                      onnx_dtype)
from ..errors import NpusimError
from ..ir import Graph, Node, qrange, storage

def read_model(path_or_bytes) -> onnx.ModelProto:
    """Parse an ONNX file or bytes (a ModelProto passes through) and check it (npusim.frontend.onnx_door);
    one clear error for a missing, truncated, corrupt or invalid file."""
    if isinstance(path_or_bytes, onnx.ModelProto):
        return path_or_bytes
    where = "<bytes>" if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data = bytes(path_or_bytes)
    else:
        try:
            with open(path_or_bytes, "rb") as f:
                data = f.read()
        except OSError as e:
            raise NpusimError(f"{where}: cannot read model file ({e.strerror})") from None
    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise NpusimError(f"{where}: not a valid ONNX model (truncated or corrupt file: {e})") from None
    if not model.graph.node and not model.graph.output:
        raise NpusimError(f"{where}: not a valid ONNX model (empty graph)")
    from .qonnx import is_qonnx
    onnx_door.check(model, where, is_qonnx(model))  # onnx.checker, strict shape inference, Q/DQ constants
    return model


def optimize_like_onnxruntime(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """The model as onnxruntime's CPU graph optimizer leaves it at level EXTENDED."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="npusim-") as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        so = import_session_options(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
        so.optimized_model_filepath = out
        try:
            ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise NpusimError(f"{where}: onnxruntime cannot load the model: {msg}") from None
        return onnx.load(out)


def with_onnxruntime_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with the element type and shape onnxruntime infers for every tensor its nodes
    produce as graph.value_info (contrib ops included, symbolic dimensions by name).

    onnxruntime does not write what it infers into the model it saves, and ONNX's own inference
    does not know its contrib ops (a MatMulIntegerToFloat's float output, say). A host island
    needs both: typed inputs to be a valid model, and the shapes the whole-model run knows,
    since onnxruntime's optimizer decides fusions from them (an NCHWc conv absorbs a following
    Add only when both operands provably have the same shape).
    """
    import onnxruntime as ort

    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    so = import_session_options(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    names = [o for n in model.graph.node for o in n.output if o]
    sess = ort.InferenceSession(with_extra_outputs(exposed, names), so, providers=["CPUExecutionProvider"])
    typed = onnx.ModelProto()
    typed.CopyFrom(model)
    del typed.graph.value_info[:]
    outputs = {o.name for o in model.graph.output}
    for arg in sess.get_outputs():
        code = _ORT_TYPE_CODES.get(arg.type)
        if code is not None and arg.name not in outputs:
            shape = None if arg.shape is None else [d if isinstance(d, (int, str)) else None for d in arg.shape]
            typed.graph.value_info.append(helper.make_tensor_value_info(arg.name, code, shape))
    return typed


_ORT_TYPE_CODES = {f"tensor({onnx.TensorProto.DataType.Name(code).lower()})": code for code in ONNX_DTYPES}


def import_onnx(path_or_bytes, where: str | None = None, mode: str = "ort") -> Graph:
    """The IR of an ONNX path, bytes or parsed model; `where` names it in errors (default: the path).
    mode "ort": QDQ fused as onnxruntime's optimizer fuses it; "npu": by npusim.frontend.qdq_fusion, an NPU
    compiler's fusion (npusim.frontend.qdq_upsample's Resize and ConvTranspose among its passes), without
    onnxruntime."""
    where = where or ("<bytes>" if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes))
    model = read_model(path_or_bytes)
    from . import qonnx
    if qonnx.is_qonnx(model):
        return qonnx.import_qonnx(model, os.path.basename(where))
    declared = declared_bits(model, where)
    if mode == "npu":
        from . import qdq_fusion
        graph = qdq_fusion.fold_clamps(_to_ir(qdq_fusion.fuse(model, where), os.path.basename(where)))
    else:
        graph = _to_ir(with_onnxruntime_types(optimize_like_onnxruntime(model, where)), os.path.basename(where))
    return apply_declared_bits(graph, declared, where) if declared else graph


BITS_KEY = "npusim.bits"


def declared_bits(model: onnx.ModelProto, where: str) -> dict[str, str]:
    """Sub-byte element types the model declares in its metadata, {tensor name: IR type}.

    ONNX has no 2..7-bit types: `npusim quantize` stores such tensors in 8 bits and records
    their real width in `metadata_props["npusim.bits"]` (JSON, e.g. {"conv1.weight_quantized":
    "i4", "relu1_out": "u6"}). onnxruntime ignores it (it clamps to the 8-bit storage range);
    npusim gives each tensor that type, and every node producing one clamps to its range.
    """
    props = {p.key: p.value for p in model.metadata_props}
    if BITS_KEY not in props:
        return {}
    try:
        declared = json.loads(props[BITS_KEY])
        ok = isinstance(declared, dict) and all(isinstance(v, str) for v in declared.values())
    except ValueError:
        ok = False
    if not ok:
        raise NpusimError(f"{where}: metadata {BITS_KEY!r} must be a JSON object of tensor name -> element type")
    for name, dt in declared.items():
        if dt[:1] not in ("u", "i") or not dt[1:].isdigit() or not 1 <= int(dt[1:]) <= 8:
            raise NpusimError(f"{where}: metadata {BITS_KEY!r}: tensor {name!r} has element type {dt!r}; "
                              f"expected u1..u8 or i1..i8")
    return declared


def apply_declared_bits(graph: Graph, declared: dict[str, str], where: str) -> Graph:
    """The graph with the declared sub-byte types on its tensors and the output ranges of the
    nodes producing them narrowed to those types (a constant outside its range is an error)."""
    tensors = dict(graph.tensors)
    for name, dt in declared.items():
        t = tensors.get(name)
        if t is None:
            continue  # a tensor onnxruntime's optimizer removed (a fused QuantizeLinear, say)
        if storage(t.dtype) != storage(dt):
            raise NpusimError(f"{where}: metadata {BITS_KEY!r}: tensor {name!r} is {t.dtype}, cannot hold {dt} "
                              f"(the storage must be the same signedness and 8 bits)")
        lo, hi = qrange(dt)
        c = graph.constants.get(name)
        if c is not None and c.size and (c.min() < lo or c.max() > hi):
            raise NpusimError(f"{where}: tensor {name!r} is declared {dt} but holds values in "
                              f"[{int(c.min())}, {int(c.max())}], outside [{lo}, {hi}]")
        tensors[name] = replace(t, dtype=dt)
    nodes = []
    for n in graph.nodes:
        dt = declared.get(n.outputs[0]) if n.outputs else None
        if dt and "qmin" in n.attrs:
            lo, hi = qrange(dt)
            n = replace(n, attrs={**n.attrs, "dtype": dt, "qmin": max(int(n.attrs["qmin"]), lo),
                                  "qmax": min(int(n.attrs["qmax"]), hi)})
        nodes.append(n)
    return replace(graph, tensors=tensors, nodes=tuple(nodes))


def _to_ir(model: onnx.ModelProto, name: str) -> Graph:
    g = model.graph
    for i, node in enumerate(g.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    opsets = {o.domain or "": o.version for o in model.opset_import}
    ctx = _convert_nodes(model, frozenset())
    boundary = _host_boundary(g, {n.name for n in ctx.nodes if n.op == "host"})
    if boundary:
        ctx = _convert_nodes(model, boundary)
    ctx.graph_outputs = {o.name for o in g.output}
    graph_inputs = tuple(vi.name for vi in g.input if vi.name not in ctx.constants)
    nodes = merge_host_islands(ctx, opsets)
    used = {i for n in nodes for i in n.inputs} | set(g.output[i].name for i in range(len(g.output)))
    constants = {k: v for k, v in ctx.constants.items() if k in used}
    return Graph(name, graph_inputs, tuple(o.name for o in g.output), ctx.tensors, tuple(nodes), constants, opsets)


def _try_convert(ctx: ImportContext, node) -> bool:
    """convert.convert, or False (a host op: onnxruntime runs it) when a weight or quantization
    parameter the integer form plans with is computed at run time; nothing is half-emitted."""
    n_nodes, tensors = len(ctx.nodes), dict(ctx.tensors)
    try:
        return convert.convert(ctx, node)
    except NotConstant:
        del ctx.nodes[n_nodes:]
        ctx.tensors = tensors
        return False


def _convert_nodes(model, force_host) -> ImportContext:
    """Convert every node; those in `force_host`, or with no integer form, become host nodes."""
    ctx = ImportContext(model)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            arr = numpy_helper.to_array(node.attribute[0].t) if node.attribute[0].type == onnx.AttributeProto.TENSOR \
                else np.array(helper.get_attribute_value(node.attribute[0]))
            ctx.constants[node.output[0]] = arr
            ctx.add_tensor(node.output[0], ONNX_DTYPES.get(node.attribute[0].t.data_type, "?"), tuple(arr.shape))
            continue
        if _fold_exact_cast(ctx, node):
            continue
        if node.name in force_host or not _try_convert(ctx, node):
            ctx.emit("host", node.name, node.input, node.output, {"node": node.SerializeToString()}, node.name)
            for o in node.output:
                ctx.add_tensor(o, ctx.value_types.get(o, "?"))
    return ctx


def _host_boundary(g, host: set) -> frozenset:
    """The DequantizeLinear nodes that feed only host ops, and the QuantizeLinear nodes fed by one.

    They convert between the NPU's integers and the host's floats, so they belong to the host
    island they border: the island then takes and returns integer tensors, as a host fallback
    does in deployment, and runs in one onnxruntime call instead of three steps.
    """
    consumers, producer = {}, {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
        for o in n.output:
            producer[o] = n
    outputs = {o.name for o in g.output}
    extra = set()
    for n in g.node:
        if n.name in host or n.domain not in ("", "ai.onnx"):
            continue
        if n.op_type == "DequantizeLinear" and n.output[0] not in outputs:
            cons = consumers.get(n.output[0], [])
            if cons and all(c.name in host for c in cons):
                extra.add(n.name)
        elif n.op_type == "QuantizeLinear" and n.input[0] in producer and producer[n.input[0]].name in host:
            extra.add(n.name)
    return frozenset(extra)


def _fold_exact_cast(ctx, node) -> bool:
    """Fold a Cast of a constant that keeps every value (e.g. the float16 -> float32 Cast
    onnxruntime inserts before the scales of a QLinearMatMul it runs in float32)."""
    if node.op_type != "Cast" or node.domain not in ("", "ai.onnx") or node.input[0] not in ctx.constants:
        return False
    to = helper.get_attribute_value(next(a for a in node.attribute if a.name == "to"))
    src = ctx.constants[node.input[0]]
    if not ONNX_DTYPES.get(to, "").startswith("f"):
        return False
    dst = helper.tensor_dtype_to_np_dtype(to)
    if not np.can_cast(src.dtype, dst, "safe"):
        return False
    ctx.constants[node.output[0]] = src.astype(dst)
    ctx.add_tensor(node.output[0], ONNX_DTYPES[to], tuple(src.shape))
    return True


def merge_host_islands(ctx: ImportContext, opsets: dict) -> list[Node]:
    """Group host nodes into islands, build each island's ONNX model, and order the graph.

    Islands are as large as the graph allows, so that onnxruntime optimizes each float region
    as one graph, as it does inside the whole model: a fusion (Conv + Add + Relu, MatMul + Add,
    a LayerNorm pattern) is a chain of nodes each read by the next only, and it must not be cut.
    Walking the graph from its end, a host node joins the islands of all host nodes that read
    it, merging them, except an island that also reaches it through a node outside the island
    (joining would make a cycle: island -> integer node -> island), so a node read by one
    island only joins it (barring a cycle that the bookkeeping, conservative once islands
    merge, cannot rule out). The nodes, each island as one, are then ordered
    topologically, every node as early as its inputs allow, ties in the original order.
    """
    nodes = ctx.nodes
    produced_at = {o: i for i, n in enumerate(nodes) for o in n.outputs}
    readers = {i: set() for i in range(len(nodes))}
    for j, n in enumerate(nodes):
        for x in n.inputs:
            if x in produced_at:
                readers[produced_at[x]].add(j)
    parent: list[int] = []  # union-find over island ids

    def find(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    island_of = {}  # host node index -> island id (find() gives the merged island)
    reach, around = {}, {}  # per node: islands that depend on it; those that do through an outside node
    for i in reversed(range(len(nodes))):
        deps, outside = set(), set()
        for r in readers[i]:
            own = {find(island_of[r])} if r in island_of else set()
            beyond = {find(k) for k in reach[r]}
            deps |= beyond | own
            outside |= {find(k) for k in around[r]} | (beyond - own)
        if nodes[i].op == "host":
            joinable = {find(island_of[r]) for r in readers[i] if r in island_of} - outside
            if joinable:
                root = min(joinable)
                for k in joinable:
                    parent[k] = root
            else:
                root = len(parent)
                parent.append(root)
            island_of[i] = root
        reach[i], around[i] = deps, outside
    unit = [("island", find(island_of[i])) if i in island_of else ("node", i) for i in range(len(nodes))]
    members: dict = {}
    for i, u in enumerate(unit):
        members.setdefault(u, []).append(i)
    after = {u: set() for u in members}
    waiting = {u: 0 for u in members}
    for i, n in enumerate(nodes):
        for x in n.inputs:
            if x in produced_at and unit[produced_at[x]] != unit[i] and unit[i] not in after[unit[produced_at[x]]]:
                after[unit[produced_at[x]]].add(unit[i])
                waiting[unit[i]] += 1
    ready = [(m[0], u) for u, m in members.items() if not waiting[u]]
    heapq.heapify(ready)
    out = []
    while ready:
        _, u = heapq.heappop(ready)
        m = members[u]
        out.append(nodes[m[0]] if u[0] == "node" else _island_node(ctx, [nodes[j] for j in m], nodes, opsets))
        for v in after[u]:
            waiting[v] -= 1
            if not waiting[v]:
                heapq.heappush(ready, (members[v][0], v))
    assert len(out) == len(members), "host islands must not form a cycle"
    return out


def _island_node(ctx, members, all_nodes, opsets) -> Node:
    protos = [onnx.NodeProto.FromString(n.attrs["node"]) for n in members]
    produced = {o for p in protos for o in p.output}
    inputs, consts = [], []
    for p in protos:
        for x in p.input:
            if x and x not in produced and x not in inputs and x not in consts:
                (consts if x in ctx.constants else inputs).append(x)
    member_names = {n.name for n in members}
    consumed_outside = {x for n in all_nodes if n.name not in member_names for x in n.inputs}
    outputs = [o for p in protos for o in p.output if o and (o in consumed_outside or o in ctx.graph_outputs)]
    in_vi = [helper.make_tensor_value_info(x, onnx_dtype(_STORED.get(ctx.dtype(x), ctx.dtype(x))),
                                           _onnx_shape(ctx.tensors[x].shape))
             if ctx.dtype(x) in ONNX_DTYPES.values() else onnx.ValueInfoProto(name=x) for x in inputs]
    inits = [helper.make_tensor(c, onnx_dtype(ctx.dtype(c)), ctx.constants[c].shape, ctx.constants[c].reshape(-1))
             if ctx.dtype(c) in _STORED else numpy_helper.from_array(ctx.constants[c], c) for c in consts]
    sub = helper.make_graph(_four_bit_edges(ctx, protos, inputs, outputs), "island", in_vi,
                            [onnx.ValueInfoProto(name=o) for o in outputs], inits)
    model = helper.make_model(sub, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = 10
    return Node("host", members[0].name, tuple(inputs), tuple(outputs),
                {"model": model.SerializeToString(), "ops": tuple(f"{p.op_type}:{p.name}" for p in protos),
                 "elementwise": is_elementwise_island(protos, [ctx.dtype(x) for x in inputs],
                                                      lambda x: ctx.constants[x].size if x in ctx.constants else None)},
                source=", ".join(p.name for p in protos))


_STORED = {"i4": "i8", "u4": "u8"}  # 4-bit IR types -> their 8-bit storage


def _four_bit_edges(ctx, protos, inputs, outputs) -> list:
    """The island's nodes, its 4-bit inputs and outputs exchanged in their 8-bit storage (the
    IR's, and onnxruntime's Python API takes and gives no 4-bit arrays): a Cast, exact for
    values in range, converts each at the island's edge; 4-bit constants stay 4-bit."""
    inner = {x: f"{x}/4bit" for x in list(inputs) + list(outputs) if ctx.dtype(x) in _STORED}
    if not inner:
        return protos
    nodes = [helper.make_node("Cast", [x], [inner[x]], name=f"{x}/to_4bit", to=onnx_dtype(ctx.dtype(x)))
             for x in inputs if x in inner]
    for p in protos:
        q = onnx.NodeProto()
        q.CopyFrom(p)
        q.input[:] = [inner.get(x, x) for x in p.input]
        q.output[:] = [inner.get(o, o) for o in p.output]
        nodes.append(q)
    return nodes + [helper.make_node("Cast", [inner[o]], [o], name=f"{o}/to_8bit",
                                     to=onnx_dtype(_STORED[ctx.dtype(o)])) for o in outputs if o in inner]


def _onnx_shape(shape):
    """An IR shape for onnx.helper: symbolic dimensions keep their names, unknown ones ("?") none."""
    if shape is None:
        return None
    return [None if d == "?" else d for d in shape]


def with_extra_outputs(model: onnx.ModelProto, names) -> bytes:
    """`model` serialized with the tensors `names` (those it has) added as graph outputs."""
    have = {o for n in model.graph.node for o in n.output}
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name in have and name not in existing:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    return model.SerializeToString()
