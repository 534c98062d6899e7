"""Fuzzing at the door: hypothesis mutates small models, IR files and feeds, and every case must
either run or raise one NpusimError whose one line names a node, a tensor, an input or the file;
no other exception type, no "internal error", no NumPy text without a name.

Bases: the digits CNN of the zoo (QOperator and QDQ) and three tiny models built here: a QDQ
conv + pool + matmul, a QOperator model of com.microsoft ops (QLinearConv, QLinearGlobalAveragePool,
QGemm) and a QONNX (qonnx domain) Quant + Conv.
Families (COUNTS, printed with -s, holds how many cases each ran):
  onnx_truncated, onnx_bitflip        the model's bytes cut short or with 1..3 bits flipped
  init_deleted/renamed/reshaped        an initializer removed, renamed, or given another shape
  attr_absurd                          a node attribute set to an absurd value (pads, strides, group,
                                       kernel_shape, dilations, axis, trans*, huge and negative ints)
  cycle                                a node input rewired to its own or a later node's output
  dims                                 a graph input's declared dimension set to 0, huge, negative
  scales                               a scale initializer set to 0, negative, NaN or inf
  per_channel                          per-channel scales, zero points or a bias of the wrong length
  ir_graph                             the same families on the integer IR itself (attributes,
                                       constants, quantization, cycles, declared shapes)
  ir_file_truncated/bitflip/edited     a saved IR file (.npz) cut, flipped or edited and repacked
  feeds                                wrong feeds: dtype, shape, batch, missing or extra input, lists
  cli                                  `npusim run` / `npusim verify` on some of the above: exit 2,
                                       one line, no traceback
Mutations that fail at load are cheap and the most numerous; a mutated tiny model that loads runs
in both modes with both kernel sets, a mutated digits model in one drawn (mode, kernels) pair. Each
family test prints its counts (pytest -s) and the escapes it found, then fails if there was any.
Also here: the plan-time memory estimate, and a sample of the cases with the fast kernels under
NUMBA_BOUNDSCHECK=1 (an out-of-bounds read or write is an IndexError there).
"""
import io
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import replace
from functools import lru_cache

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import npusim
import npusim_models
from npusim import NpusimError, ir
from npusim.cli import main
from npusim.session import load_graph
from test_robust import npy_bytes, zip_members, zip_pack

COMBOS = [(m, k) for m in ("ort", "npu") for k in ("fast", "golden")]
COUNTS = Counter()  # family -> cases tried
REFUSED = Counter()  # family -> cases refused with a good NpusimError
ESCAPES = []  # (family, case, what escaped)
MS = "com.microsoft"
QONNX = "qonnx.custom_op.general"


# ---------------------------------------------------------------- base models

def _inits(**arrays):
    return [numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items()]


def _model(nodes, x, y, inits, opsets=(("", 13),)):
    g = helper.make_graph(nodes, "g", [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 8
    return m


def _qdq_model():
    """x f32 (1,3,6,6) -> Q/DQ -> Conv 3x3 pads 1 (per-channel int8 weight, int32 bias) -> Q/DQ ->
    MaxPool 2x2 -> Q/DQ -> Flatten -> MatMul (36 x 5) -> Q/DQ -> y (1, 5)."""
    rng = np.random.default_rng(1)
    f = np.float32
    inits = _inits(xs=f(0.02), xz=np.uint8(128), w=rng.integers(-63, 64, (4, 3, 3, 3), dtype=np.int8),
                   ws=np.array([0.01, 0.02, 0.015, 0.03], f), wz=np.zeros(4, np.int8),
                   b=rng.integers(-500, 500, 4, dtype=np.int32), bs=np.array([2e-4, 4e-4, 3e-4, 6e-4], f),
                   bz=np.zeros(4, np.int32), cs=f(0.05), cz=np.uint8(128), m=rng.integers(-63, 64, (36, 5),
                                                                                          dtype=np.int8),
                   ms=f(0.01), mz=np.int8(0), ys=f(0.1), yz=np.uint8(128))
    N = helper.make_node
    nodes = [N("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
             N("DequantizeLinear", ["xq", "xs", "xz"], ["xd"], name="dqx"),
             N("DequantizeLinear", ["w", "ws", "wz"], ["wd"], name="dqw", axis=0),
             N("DequantizeLinear", ["b", "bs", "bz"], ["bd"], name="dqb", axis=0),
             N("Conv", ["xd", "wd", "bd"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             N("QuantizeLinear", ["c", "cs", "cz"], ["cq"], name="qc"),
             N("DequantizeLinear", ["cq", "cs", "cz"], ["cd"], name="dqc"),
             N("MaxPool", ["cd"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             N("QuantizeLinear", ["p", "cs", "cz"], ["pq"], name="qp"),
             N("DequantizeLinear", ["pq", "cs", "cz"], ["pd"], name="dqp"),
             N("Flatten", ["pd"], ["fl"], name="flatten"),
             N("DequantizeLinear", ["m", "ms", "mz"], ["md"], name="dqm"),
             N("MatMul", ["fl", "md"], ["mm"], name="matmul"),
             N("QuantizeLinear", ["mm", "ys", "yz"], ["yq"], name="qy"),
             N("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dqy")]
    return _model(nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5]), inits)


def _qop_model():
    """x f32 (1,2,5,5) -> QuantizeLinear -> QLinearConv 3x3 (per-channel) -> QLinearGlobalAveragePool
    -> Flatten -> QGemm (transB, bias) -> DequantizeLinear -> y (1, 3): com.microsoft ops."""
    rng = np.random.default_rng(2)
    f = np.float32
    inits = _inits(xs=f(0.02), xz=np.uint8(100), w=rng.integers(-63, 64, (4, 2, 3, 3), dtype=np.int8),
                   ws=np.array([0.01, 0.02, 0.015, 0.03], f), wz=np.zeros(4, np.int8), cs=f(0.05),
                   cz=np.uint8(120), b=rng.integers(-300, 300, 4, dtype=np.int32), gs=f(0.04), gz=np.uint8(110),
                   g=rng.integers(-63, 64, (3, 4), dtype=np.int8), gws=f(0.02), gwz=np.int8(0),
                   gb=rng.integers(-200, 200, 3, dtype=np.int32), ys=f(0.1), yz=np.uint8(128))
    N = helper.make_node
    nodes = [N("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="qx"),
             N("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "cs", "cz", "b"], ["c"], name="qconv",
               pads=[1, 1, 1, 1], kernel_shape=[3, 3], strides=[2, 2]),
             N("QLinearGlobalAveragePool", ["c", "cs", "cz", "gs", "gz"], ["p"], name="gap", domain=MS,
               channels_last=0),
             N("Flatten", ["p"], ["fl"], name="flatten"),
             N("QGemm", ["fl", "gs", "gz", "g", "gws", "gwz", "gb", "ys", "yz"], ["yq"], name="qgemm", domain=MS,
               transB=1, alpha=1.0),
             N("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dqy")]
    return _model(nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]), inits,
                  opsets=(("", 13), (MS, 1)))


def _qonnx_model():
    """QONNX as Brevitas exports it: Quant (8-bit) on x and on the weight, then a float Conv."""
    rng = np.random.default_rng(3)
    inits = _inits(s=np.float32(0.5), z=np.float32(0.0), b=np.float32(8.0),
                   w=rng.integers(-60, 60, (4, 3, 3, 3)).astype(np.float32),
                   ws=np.full((4, 1, 1, 1), 0.25, np.float32))
    N = helper.make_node
    nodes = [N("Quant", ["x", "s", "z", "b"], ["xq"], domain=QONNX, name="qx", signed=1, narrow=0,
               rounding_mode="ROUND"),
             N("Quant", ["w", "ws", "z", "b"], ["wq"], domain=QONNX, name="qw", signed=1, narrow=1,
               rounding_mode="ROUND"),
             N("Conv", ["xq", "wq"], ["y"], name="conv", kernel_shape=[3, 3])]
    return _model(nodes, helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4]),
                  helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2]), inits,
                  opsets=(("", 13), (QONNX, 1)))


BASES = ["digits_qop", "digits_qdq", "qdq", "qop", "qonnx"]
TINY = ["qdq", "qop", "qonnx"]  # the ones mutations run inference on


@lru_cache(maxsize=None)
def base(name) -> bytes:
    if name.startswith("digits_"):
        return npusim_models.path(f"{name}_pc_{'u8' if name.endswith('qop') else 's8'}").read_bytes()
    return {"qdq": _qdq_model, "qop": _qop_model, "qonnx": _qonnx_model}[name]().SerializeToString()


@lru_cache(maxsize=None)
def base_graph(name) -> ir.Graph:
    return load_graph(onnx.load_from_string(base(name)), name)


@lru_cache(maxsize=None)
def names_of(name) -> frozenset:
    """Every name a message may cite: ONNX nodes, tensors and initializers, IR nodes and tensors."""
    m = onnx.load_from_string(base(name))
    g = base_graph(name)
    found = {n.name for n in m.graph.node} | {t for n in m.graph.node for t in (*n.input, *n.output)}
    found |= {i.name for i in m.graph.initializer} | {n.name for n in g.nodes} | {n.source for n in g.nodes}
    found |= set(g.tensors) | {"renamed", "no_such_tensor"}
    return frozenset(f"'{n}'" for n in found if n)


def feed(name, batch=1, seed=0):
    m = onnx.load_from_string(base(name))
    x = m.graph.input[0]
    shape = [batch] + [d.dim_value or 1 for d in x.type.tensor_type.shape.dim][1:]
    return {x.name: np.random.default_rng(seed).random(shape, dtype=np.float32)}


@lru_cache(maxsize=None)
def session(name, mode, kernels):
    return npusim.InferenceSession(base_graph(name), mode=mode, kernels=kernels)


# ---------------------------------------------------------------- the verdict on one case

def attempt(family, case, fn, names, where=()):
    """Run fn(); a NpusimError is a refusal if its message is one line naming something in `names`
    (quoted) or in `where` (a file, "<bytes>", "feeds"), and not an internal error; any other
    exception, or a message that fails those, is an escape."""
    COUNTS[family] += 1
    try:
        fn()
    except NpusimError as e:
        msg = str(e)
        if "\n" in msg or "internal error" in msg or not (any(n in msg for n in names)
                                                          or any(w in msg for w in where)):
            ESCAPES.append((family, case, f"NpusimError: {msg}"))
        else:
            REFUSED[family] += 1
    except Exception as e:  # noqa: BLE001 - what the fuzzer is after
        ESCAPES.append((family, case, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))


def load_and_run(model, combos, feeds, where="<bytes>"):
    """The model loads with the first combo (from bytes, as a user passes it), then every combo runs
    the feeds from the same import."""
    def fn():
        mode, kernels = combos[0]
        npusim.InferenceSession(model, mode=mode, kernels=kernels).run(None, feeds)
        graph = load_graph(onnx.load_from_string(model) if isinstance(model, bytes) else model, where)
        for mode, kernels in combos[1:]:
            npusim.InferenceSession(graph, mode=mode, kernels=kernels).run(None, feeds)
    return fn


def damage(data: bytes, family: str, r) -> bytes:
    """`data` cut short (family ending in "truncated") or with 1..3 bits flipped ("bitflip")."""
    if family.endswith("truncated"):
        return data[:r[0] % len(data)]
    b = bytearray(data)
    for k in range(1 + r[1] % 3):
        b[(r[0] * (k + 1) + r[2] * k) % len(b)] ^= 1 << (r[3] + k) % 8
    return bytes(b)


def _run_hypothesis(strategy, check, examples):
    @settings(max_examples=examples, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def inner(case):
        check(case)
    inner()


# ---------------------------------------------------------------- ONNX model mutations

ABSURD_INTS = [0, -1, -7, 1, 2, 3, 5, 7, 10 ** 6, 2 ** 31, -(2 ** 40)]


def mutate_onnx(m: onnx.ModelProto, family, r) -> None:
    """Apply one mutation of `family` to `m` in place; `r` is a list of drawn integers."""
    g = m.graph
    inits = list(g.initializer)
    pick = lambda seq, k: seq[r[k] % len(seq)]  # noqa: E731
    if family == "init_deleted":
        g.initializer.remove(pick(inits, 0))
    elif family == "init_renamed":
        pick(inits, 0).name = "renamed"
    elif family == "init_reshaped":
        init = pick(inits, 0)
        a = numpy_helper.to_array(init)
        flat = a.reshape(-1)
        a = [flat[:-1], np.concatenate([flat, flat]), a.reshape((1,) + a.shape), flat[:0], flat[:1].reshape(()),
             np.zeros((2,) + a.shape, a.dtype), a.astype(np.float64 if a.dtype != np.float64 else np.float32)][r[1] % 7]
        init.CopyFrom(numpy_helper.from_array(a, init.name))
    elif family == "attr_absurd":
        nodes = [n for n in g.node if n.attribute] or list(g.node)
        node = pick(nodes, 0)
        v = ABSURD_INTS[r[1] % len(ABSURD_INTS)]
        known = ["pads", "strides", "group", "kernel_shape", "dilations", "axis", "transA", "transB",
                 "channels_last", "auto_pad"]
        name = pick(known, 2)
        del_existing = [a for a in node.attribute if a.name == name]
        for a in del_existing:
            node.attribute.remove(a)
        if name == "auto_pad":
            node.attribute.append(helper.make_attribute(name, ["SAME_UPPER", "VALID", "BOGUS"][r[1] % 3]))
        elif name in ("pads", "strides", "kernel_shape", "dilations"):
            count = {"pads": 4}.get(name, 2) + (r[3] % 3 == 2)
            node.attribute.append(helper.make_attribute(name, [v] * count if r[3] % 2 else [v] + [1] * (count - 1)))
        else:
            node.attribute.append(helper.make_attribute(name, v))
    elif family == "cycle":
        i = r[0] % len(g.node)
        node = g.node[i]
        later = [o for n in list(g.node)[i:] for o in n.output]
        if node.input:
            node.input[r[1] % len(node.input)] = pick(later, 2)
    elif family == "dims":
        dim = g.input[0].type.tensor_type.shape.dim
        d = dim[r[0] % len(dim)]
        value = [0, 10 ** 9, -3, 2 ** 40, 7][r[1] % 5]
        d.Clear()
        d.dim_value = value
    elif family == "scales":
        scales = [i for i in inits if i.data_type == TensorProto.FLOAT and ("s" in i.name.lower()
                                                                            or "scale" in i.name.lower())]
        init = pick(scales or inits, 0)
        a = numpy_helper.to_array(init).copy()
        a.reshape(-1)[r[1] % max(a.size, 1)] = [0.0, -0.5, np.nan, np.inf, 1e-45, 1e38][r[2] % 6] if a.size else 0
        init.CopyFrom(numpy_helper.from_array(a, init.name))
    elif family == "per_channel":
        vectors = [i for i in inits if len(i.dims) == 1 and i.dims[0] > 1] or inits
        init = pick(vectors, 0)
        a = numpy_helper.to_array(init).reshape(-1)
        a = [a[:-1], np.concatenate([a, a[:1]]), a[:1].repeat(7)][r[1] % 3]
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(a), init.name))


ONNX_FAMILIES = ["init_deleted", "init_renamed", "init_reshaped", "attr_absurd", "cycle", "dims", "scales",
                 "per_channel"]
INTS = st.lists(st.integers(0, 2 ** 16), min_size=4, max_size=4)


def check_onnx(case):
    family, name, r, combo = case
    data = base(name)
    if family in ("onnx_truncated", "onnx_bitflip"):
        model = damage(data, family, r)
    else:
        m = onnx.load_from_string(data)
        mutate_onnx(m, family, r)
        model = m.SerializeToString()
    combos = COMBOS[combo:] + COMBOS[:combo] if name in TINY else [COMBOS[combo]]
    # a host island is named by its nodes ('dqm, conv'): any node named counts
    attempt(family, (name, r), load_and_run(model, combos, feed(name)), names_of(name), ("<bytes>", "node '"))


def test_fuzz_onnx_models():
    families = ["onnx_truncated", "onnx_bitflip"] + ONNX_FAMILIES
    _run_hypothesis(st.tuples(st.sampled_from(families), st.sampled_from(BASES), INTS, st.integers(0, 3)),
                    check_onnx, 1000)
    _report_and_assert(families)


# ---------------------------------------------------------------- IR graph mutations (in memory)

ABSURD_VALUES = [0, -1, 10 ** 6, -(10 ** 6), 2 ** 40, 3, (0, 0), (-1, 0, 0, 0), (10 ** 6,) * 4, (1,), (0, 2), (),
                 1.5, "x", True, np.float32(np.nan)]


def mutate_graph(g: ir.Graph, r) -> ir.Graph:
    kind = r[0] % 7
    nodes = list(g.nodes)
    i = r[1] % len(nodes)
    n = nodes[i]
    if kind == 0 and n.attrs:  # an attribute set to an absurd value
        key = sorted(n.attrs)[r[2] % len(n.attrs)]
        nodes[i] = replace(n, attrs={**n.attrs, key: ABSURD_VALUES[r[3] % len(ABSURD_VALUES)]})
    elif kind == 1 and n.attrs:  # an attribute removed
        key = sorted(n.attrs)[r[2] % len(n.attrs)]
        nodes[i] = replace(n, attrs={k: v for k, v in n.attrs.items() if k != key})
    elif kind == 2 and g.constants:  # a constant reshaped, cut, emptied or of another dtype
        key = sorted(g.constants)[r[2] % len(g.constants)]
        a = g.constants[key]
        flat = a.reshape(-1)
        a = [flat[:-1], np.concatenate([flat, flat]), a.reshape((1,) + a.shape), flat[:0], a.astype(np.float32),
             a.astype(np.int64), flat[:1].reshape(())][r[3] % 7]
        return replace(g, constants={**g.constants, key: a}, nodes=tuple(nodes))
    elif kind == 3:  # a quantized tensor's scale or zero point made absurd, or per-channel of the wrong length
        quantized = [t for t in g.tensors.values() if t.quant is not None]
        if quantized:
            t = quantized[r[2] % len(quantized)]
            q = [ir.Quant((0.0,), (0,)), ir.Quant((float("nan"),), (0,)), ir.Quant((-1.0,), (0,)),
                 ir.Quant((0.1, 0.2, 0.3), (0, 0, 0), 1), ir.Quant((0.1,), (300,)), ir.Quant((), ())][r[3] % 6]
            return replace(g, tensors={**g.tensors, t.name: replace(t, quant=q)})
    elif kind == 4 and i + 1 < len(nodes):  # a cycle or a use before definition: two nodes swapped
        nodes[i], nodes[i + 1] = nodes[i + 1], nodes[i]
    elif kind == 5 and n.inputs:  # an input renamed to a later output or an unknown tensor
        later = [o for m in nodes[i:] for o in m.outputs] + ["no_such_tensor"]
        ins = list(n.inputs)
        ins[r[2] % len(ins)] = later[r[3] % len(later)]
        nodes[i] = replace(n, inputs=tuple(ins))
    elif kind == 6:  # a declared shape changed (graph input or intermediate)
        t = list(g.tensors.values())[r[2] % len(g.tensors)]
        shape = [None, (0, 1, 8, 8), (10 ** 9,), (1, 1, 0, 8), ("N", 2), ()][r[3] % 6]
        return replace(g, tensors={**g.tensors, t.name: replace(t, shape=shape)})
    return replace(g, nodes=tuple(nodes))


def check_graph(case):
    name, r, combo = case
    g = mutate_graph(base_graph(name), r)
    mode, kernels = COMBOS[combo]

    def fn():
        npusim.InferenceSession(g, mode=mode, kernels=kernels).run(None, feed(name))
    attempt("ir_graph", (name, r, combo), fn, names_of(name))


def test_fuzz_ir_graphs():
    _run_hypothesis(st.tuples(st.sampled_from(BASES), INTS, st.integers(0, 3)), check_graph, 2000)
    _report_and_assert(["ir_graph"])


# ---------------------------------------------------------------- IR file mutations

@lru_cache(maxsize=None)
def ir_file(name) -> bytes:
    """The base's IR as `npusim inspect --save-ir` writes it (ir.save)."""
    with tempfile.TemporaryDirectory() as tmp:
        p = f"{tmp}/{name}.npz"
        ir.save(base_graph(name), p)
        with open(p, "rb") as f:
            return f.read()


JSON_VALUES = [0, -5, 10 ** 6, "x", None, 1.5, [], [0, 0], {"$array": "nope"}, {"$tuple": [1, "x"]}, True]


def edit_ir(data, r) -> bytes:
    """The IR file with one edit of its JSON description or of an array, repacked with valid CRCs."""
    m = zip_members(data)
    d = json.loads(np.load(io.BytesIO(m["__graph__.npy"])).tobytes())
    kind = r[0] % 8
    node = d["nodes"][r[1] % len(d["nodes"])]
    v = JSON_VALUES[r[3] % len(JSON_VALUES)]
    if kind == 0:
        del d[sorted(d)[r[2] % len(d)]]
    elif kind == 1 and node[5]:
        node[5][sorted(node[5])[r[2] % len(node[5])]] = v
    elif kind == 2:
        node[r[2] % 6] = v
    elif kind == 3:
        node[0] = ["maxpool", "conv", "gemm", "requantize", "flatten", "no_such_op"][r[2] % 6]
    elif kind == 4:
        key = f"const/{r[2] % max(len(d['constants']), 1)}.npy"
        if key in m:
            a = np.load(io.BytesIO(m[key]))
            m[key] = npy_bytes([a.reshape(-1)[:-1], np.zeros((2,) + a.shape, a.dtype), a.astype(np.float64),
                           np.array(["s"])][r[3] % 4])
    elif kind == 5:
        t = d["tensors"][r[2] % len(d["tensors"])]
        t[r[3] % 4] = v
    elif kind == 6:
        d[sorted(d)[r[2] % len(d)]] = v
    else:
        key = sorted(m)[r[2] % len(m)]
        del m[key]
    m["__graph__.npy"] = npy_bytes(np.frombuffer(json.dumps(d).encode(), np.uint8))
    return zip_pack(m)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_fuzz_ir_files(workdir):
    path = workdir / "case.npz"

    def check(case):
        family, name, r, combo = case
        data = ir_file(name)
        data = edit_ir(data, r) if family == "ir_file_edited" else damage(data, family, r)
        path.write_bytes(data)
        mode, kernels = COMBOS[combo]

        def fn():
            npusim.InferenceSession(str(path), mode=mode, kernels=kernels).run(None, feed(name))
        attempt(family, (name, r, combo), fn, names_of(name), (str(path),))

    families = ["ir_file_truncated", "ir_file_bitflip", "ir_file_edited"]
    _run_hypothesis(st.tuples(st.sampled_from(families), st.sampled_from(BASES), INTS, st.integers(0, 3)),
                    check, 1000)
    _report_and_assert(families)


# ---------------------------------------------------------------- wrong feeds

def wrong_feed(name, kind, r):
    good = feed(name, seed=r)
    (key, x), = good.items()
    return [
        {key: x.astype(np.float64)}, {key: x.astype(np.float16)}, {key: (x * 100).astype(np.int8)},
        {key: x.astype(bool)}, {key: x.astype(object)}, {key: x[..., :-1]}, {key: x[0]}, {key: x[None]},
        {key: np.repeat(x, 2 + r % 6, axis=0)}, {key: x[:0]}, {}, {key: x, "extra": x}, {"wrong": x},
        {key: x.tolist()}, {key: x.reshape(-1).tolist()}, {key: [[1.0, 2.0], [3.0]]}, {key: None},
        {key: x.astype(">f4")}, {key: np.asfortranarray(x)}, {key: np.full_like(x, np.nan)},
        {key: np.full_like(x, np.inf)}, {key: x.transpose()}, [x], x, {key: "x"}, {key: float(x.flat[0])},
    ][kind]


def test_fuzz_feeds():
    def check(case):
        name, kind, r, combo = case
        feeds = wrong_feed(name, kind, r)
        sess = session(name, *COMBOS[combo])
        attempt("feeds", (name, kind, combo), lambda: sess.run(None, feeds), names_of(name), ("feeds", "input '"))

    _run_hypothesis(st.tuples(st.sampled_from(BASES), st.integers(0, 25), st.integers(0, 1000), st.integers(0, 3)),
                    check, 1500)
    _report_and_assert(["feeds"])


# ---------------------------------------------------------------- memory safety of the fast kernels

BOUNDSCHECK_SAMPLE = """
import numpy as np
import test_fuzz as T
from npusim.registry import kernel_set

K = kernel_set("fast")
try:  # bounds checks are live: the fast requantize kernel, called directly with 3 multipliers for 16 channels
    K.requantize_f32(np.ones((1, 16, 2, 2), np.int32), np.ones(3, np.float32), 1, 0, 0, 255, np.dtype(np.uint8))
    print("no IndexError")
except IndexError:
    print("IndexError")
rng = np.random.default_rng(0)
for i in range(240):
    T.check_graph((T.TINY[i % 3], [int(v) for v in rng.integers(0, 2 ** 16, 4)], 2 * (i % 2)))
for i in range(60):
    name = T.TINY[i % 3]
    T.attempt("feeds", i, lambda: T.session(name, *T.COMBOS[2 * (i % 2)]).run(None, T.wrong_feed(name, i % 26, i)),
              T.names_of(name), ("feeds", "input '"))
print(sum(T.COUNTS.values()), len(T.ESCAPES), T.ESCAPES[:5])
"""


def test_fast_kernels_stay_in_bounds_on_fuzz_cases(tmp_path):
    """300 seeded cases (IR mutations and wrong feeds of the tiny models, fast kernels, both modes)
    in a subprocess with NUMBA_BOUNDSCHECK=1 and its own Numba cache (nothing compiled with bounds
    checks reaches the normal cache): a read or write out of bounds raises IndexError there, which the
    verdict counts as an escape. The same run shows the checks are live: the fast requantize kernel
    called directly with too few multipliers raises IndexError (the door refuses such a model first).
    The whole fuzz suite under bounds checks: NUMBA_BOUNDSCHECK=1 NUMBA_CACHE_DIR=/tmp/nb-bc
    python -m pytest -q tests/test_fuzz.py
    The subprocess compiles with NUMBA_OPT=0: Numba inserts the bounds checks when it lowers the
    code, before LLVM optimizes, so they are the same at any level, and the compile (most of this
    test's time) is a third shorter."""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_OPT": "0", "NUMBA_CACHE_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", BOUNDSCHECK_SAMPLE], cwd=os.path.dirname(__file__), env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    live, counts = r.stdout.splitlines()[-2:]
    assert live == "IndexError"
    assert counts.startswith("300 0 []"), counts


# ---------------------------------------------------------------- plan-time memory estimate

def test_memory_estimate_names_the_largest_buffer():
    """A declared batch of 10^9 asks for 10^9·2·5·5 float32 = 2·10^11 bytes for the input alone:
    refused at load, naming it; a conv with pads of 10^6 (stride 2) has an int32 accumulator of
    4 x 1000002 x 1000002 (= (5 + 2·10^6 − 3) // 2 + 1): refused naming the node and its attributes."""
    m = onnx.load_from_string(base("qop"))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 10 ** 9
    with pytest.raises(NpusimError, match=r"^<bytes>: the planned buffers take .* of memory available; the largest "
                                          r"is tensor 'x' \(1000000000, 2, 5, 5\) f32, 186 GiB "
                                          r"\(200,000,000,000 bytes\)$"):
        npusim.InferenceSession(m.SerializeToString())
    m = onnx.load_from_string(base("qop"))
    next(a for a in m.graph.node[1].attribute if a.name == "pads").ints[:] = [10 ** 6] * 4
    with pytest.raises(NpusimError, match=r"the largest is tensor 'c::acc' \(1, 4, 1000002, 1000002\) i32, 14.6 TiB "
                                          r"\(16,000,064,000,064 bytes\) \(node 'qconv' \(conv\): input 'xq' "
                                          r"\(1, 2, 5, 5\), kernel_shape=\[3, 3\], strides=\[2, 2\], pads="):
        npusim.InferenceSession(m.SerializeToString())


# ---------------------------------------------------------------- the CLI

def test_fuzz_cli(workdir, capsys):
    """Some of the cases above through `npusim run` and `npusim verify` in process (exit 2, one
    line), and three in a subprocess: no traceback on stderr."""
    cases = []
    for name in TINY:
        data = base(name)
        m = onnx.load_from_string(data)
        mutate_onnx(m, "per_channel", [0, 0, 0, 0])
        cases += [(f"{name}_cut.onnx", data[:len(data) // 2]), (f"{name}_pc.onnx", m.SerializeToString()),
                  (f"{name}_ir_cut.npz", ir_file(name)[:len(ir_file(name)) // 3])]
    m = onnx.load_from_string(base("qop"))
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 10 ** 9
    cases.append(("qop_huge.onnx", m.SerializeToString()))
    for file, data in cases:
        (workdir / file).write_bytes(data)
        for cmd in ("run", "verify"):
            def fn():
                capsys.readouterr()
                code = main([cmd, str(workdir / file)])
                err = capsys.readouterr().err
                lines = err.splitlines()
                if code != 2 or len(lines) != 1 or "internal error" in err or "Traceback" in err:
                    raise AssertionError(f"exit {code}: {err!r}")
                raise NpusimError(lines[0])
            attempt("cli", (cmd, file), fn, names_of(file.split("_")[0]), (file,))
    for file, _ in cases[:3]:
        r = subprocess.run([sys.executable, "-m", "npusim.cli", "run", file], cwd=workdir, capture_output=True,
                           text=True, timeout=120)
        COUNTS["cli"] += 1
        if r.returncode != 2 or "Traceback" in r.stderr or len(r.stderr.splitlines()) != 1:
            ESCAPES.append(("cli", file, r.stderr))
        else:
            REFUSED["cli"] += 1
    _report_and_assert(["cli"])


# ---------------------------------------------------------------- report

def _report_and_assert(families):
    print()
    for f in families:
        print(f"fuzz {f}: {COUNTS[f]} cases, {REFUSED[f]} refused, {COUNTS[f] - REFUSED[f]} ran or escaped")
    print(f"fuzz total so far: {sum(COUNTS.values())} cases, {len(ESCAPES)} escapes")
    escapes = [e for e in ESCAPES if e[0] in families]
    for e in escapes[:30]:
        print("ESCAPE", *e)
    kinds = Counter((e[0], e[2][:90]) for e in escapes)
    for k, c in kinds.most_common(60):
        print(f"{c:5d}", *k)
    assert not escapes, f"{len(escapes)} escapes"
