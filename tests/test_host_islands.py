"""Host islands compute exactly what onnxruntime computes for their nodes inside the whole model.

npusim runs the integer ops itself and the float ones (host islands) on onnxruntime. The model
onnxruntime runs whole is optimized as one graph (float fusions: Conv+Add+Relu, Gemm+activation,
MatMul+Add, LayerNorm; NCHWc layouts), so an island must be optimized as onnxruntime optimizes
those nodes inside the whole model: whole (not cut between two islands), knowing the shapes the
whole model knows, at the same level. Property: on random small graphs that mix integer ops (QDQ
and QOperator convs, QLinearAdd, MaxPool on uint8) with float ops, npusim (mode "ort") and
onnxruntime (default session options) give identical outputs, dtype included. Directed cases:
a residual block after an integer conv, a dynamically quantized attention block, a lookup-table
island of a fixed batch, 4-bit tensors at an island's edge.

Weights satisfy |w| <= 63 and activations are uint8: no pair a0*w0 + a1*w1 exceeds int16, so
onnxruntime's u8 x s8 kernels compute exact sums on every x86-64 (AVX2 saturates pair sums).
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import npusim

F, U8, I8 = TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT8
BLOCKS = ("qdq_conv", "qop_conv", "qlinear_add", "qmaxpool", "float_conv", "unary", "div", "resize", "softmax",
          "layernorm", "matmul_add", "residual", "branch_add")
UNARY = ("Relu", "HardSigmoid", "Sigmoid", "HardSwish", "Tanh")


class _Graph:
    """A float chain t -> block -> block ... built node by node; every name unique."""

    def __init__(self, seed, shape):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.outputs, self.n = [], [], [], 0
        self.t, self.shape = "x", list(shape)
        self.saved = []  # (tensor, shape) of earlier float tensors, for residual adds

    def name(self, what):
        self.n += 1
        return f"{what}{self.n}"

    def const(self, arr, what="c"):
        name = self.name(what)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op, inputs, domain="", **attrs):
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", domain=domain, **attrs))
        return out

    def scale(self):
        return float(self.rng.choice([0.02, 0.03125, 0.05, 0.1]))

    def quantize(self, t, s=None, zp=None):
        if s is None:
            s, zp = self.scale(), int(self.rng.integers(100, 156))
        q = self.node("QuantizeLinear", [t, self.const(np.float32(s)), self.const(np.uint8(zp))])
        return q, s, zp

    def dequantize(self, q, s, zp):
        return self.node("DequantizeLinear", [q, self.const(np.float32(s)), self.const(np.uint8(zp))])

    def weights(self, cout, cin, k):
        w = self.rng.integers(-63, 64, (cout, cin, k, k)).astype(np.int8)
        per_channel = bool(self.rng.integers(2))
        ws = (self.rng.uniform(0.002, 0.01, cout) if per_channel else np.full(1, 0.005)).astype(np.float32)
        return w, ws if per_channel else ws.reshape(()), per_channel

    def conv_attrs(self, k):
        return {"kernel_shape": [k, k], "pads": [k // 2] * 4}

    # ---------------------------------------------------------------- integer blocks
    def qdq_conv(self, cout=None):
        cin, k = self.shape[1], int(self.rng.choice([1, 3]))
        cout = cout or int(self.rng.choice([4, 8, 16]))
        q, s, zp = self.quantize(self.t)
        x = self.dequantize(q, s, zp)
        w, ws, pc = self.weights(cout, cin, k)
        wdq = self.node("DequantizeLinear", [self.const(w), self.const(ws), self.const(np.zeros(ws.shape, np.int8))],
                        **({"axis": 0} if pc else {}))
        bias = self.const((self.rng.integers(-500, 500, cout) * (s * ws)).astype(np.float32))
        y = self.node("Conv", [x, wdq, bias], **self.conv_attrs(k))
        if self.rng.integers(2):
            y = self.node("Relu", [y])
        self.shape[1] = cout
        self.t = self.dequantize(*self.quantize(y))

    def qop_conv(self):
        cin, cout, k = self.shape[1], int(self.rng.choice([4, 8, 16])), int(self.rng.choice([1, 3]))
        q, s, zp = self.quantize(self.t)
        w, ws, _ = self.weights(cout, cin, k)
        ys, yzp = self.scale(), int(self.rng.integers(100, 156))
        bias = self.rng.integers(-500, 500, cout).astype(np.int32)
        y = self.node("QLinearConv", [q, self.const(np.float32(s)), self.const(np.uint8(zp)), self.const(w),
                                      self.const(ws), self.const(np.zeros(ws.shape, np.int8)),
                                      self.const(np.float32(ys)), self.const(np.uint8(yzp)), self.const(bias)],
                      **self.conv_attrs(k))
        self.shape[1] = cout
        self.t = self.dequantize(y, ys, yzp)

    def qlinear_add(self):
        other = [t for t, shape in self.saved if shape == self.shape]
        if not other:
            return self.qdq_conv()
        a = self.dequantize(*self.quantize(self.t))
        b = self.dequantize(*self.quantize(other[int(self.rng.integers(len(other)))]))
        self.t = self.dequantize(*self.quantize(self.node("Add", [a, b])))

    def qmaxpool(self):
        if self.shape[2] < 2:
            return self.unary()
        q, s, zp = self.quantize(self.t)
        y = self.node("MaxPool", [self.dequantize(q, s, zp)], kernel_shape=[2, 2], strides=[2, 2])
        self.shape[2:] = [self.shape[2] // 2, self.shape[3] // 2]
        self.t = self.dequantize(*self.quantize(y, s, zp))

    # ---------------------------------------------------------------- float blocks
    def float_conv(self, add=True, cout=None):
        cin, k = self.shape[1], int(self.rng.choice([1, 3]))
        cout = cout or (cin if add and self.rng.integers(2) else int(self.rng.choice([4, 8, 16, 32])))
        w = (self.rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
        y = self.node("Conv", [self.t, self.const(w), self.const(self.rng.standard_normal(cout).astype(np.float32))],
                      **self.conv_attrs(k))
        self.shape[1] = cout
        before = self.saved + [(self.t, [self.shape[0], cin] + self.shape[2:])]
        other = [t for t, shape in before if shape == self.shape]
        if add and other and self.rng.integers(4):  # Conv + Add (+ Relu): an NCHWc conv with a sum input
            y = self.node("Add", [y, other[-1]])
        if add and self.rng.integers(2):
            y = self.node(str(self.rng.choice(["Relu", "Sigmoid", "HardSigmoid"])), [y])
        self.t = y

    def residual(self):
        """Conv -> Conv, the two added (+ activation): a ResNet block, whose Add onnxruntime fuses
        into the second conv when both operands provably have the same shape."""
        self.float_conv(add=False, cout=16)
        first = self.t
        self.float_conv(add=False, cout=16)
        self.t = self.node("Add", [self.t, first])
        if self.rng.integers(2):
            self.t = self.node("Relu", [self.t])

    def branch_add(self):
        """A float conv and an integer conv of the same tensor, added (+ activation): the float
        conv's Conv + Add (+ Relu) fusion spans a host node fed by the integer branch."""
        t, shape = self.t, list(self.shape)
        self.float_conv(add=False)
        f, fshape = self.t, list(self.shape)
        self.t, self.shape = t, shape
        self.qdq_conv(cout=fshape[1])
        pair = [f, self.t] if self.rng.integers(2) else [self.t, f]
        self.t = self.node("Add", pair)
        if self.rng.integers(2):
            self.t = self.node("Relu", [self.t])

    def unary(self):
        self.t = self.node(str(self.rng.choice(UNARY)), [self.t])

    def div(self):
        self.t = self.node("Div", [self.t, self.const(np.float32(self.rng.choice([3.0, 6.0, 0.7])))])

    def resize(self):
        if self.shape[2] > 8:
            return self.unary()
        mode = str(self.rng.choice(["nearest", "linear"]))
        self.t = self.node("Resize", [self.t, "", self.const(np.array([1, 1, 2, 2], np.float32))], mode=mode)
        self.shape[2:] = [self.shape[2] * 2, self.shape[3] * 2]

    def softmax(self):
        """Softmax of a scaled tensor (DequantizeLinear -> Softmax -> QuantizeLinear would be an
        integer QLinearSoftmax, not a host op)."""
        t = self.node("Mul", [self.t, self.const(np.float32(self.rng.choice([0.5, 2.0])))])
        self.t = self.node("Softmax", [t], axis=int(self.rng.choice([1, -1])))

    def layernorm(self):
        """The decomposed pattern onnxruntime fuses into LayerNormalization."""
        mean = self.node("ReduceMean", [self.t], axes=[-1])
        d = self.node("Sub", [self.t, mean])
        var = self.node("ReduceMean", [self.node("Pow", [d, self.const(np.float32(2))])], axes=[-1])
        std = self.node("Sqrt", [self.node("Add", [var, self.const(np.float32(1e-5))])])
        w = self.shape[-1]
        y = self.node("Mul", [self.node("Div", [d, std]), self.const(self.rng.uniform(0.5, 1.5, w).astype(np.float32))])
        self.t = self.node("Add", [y, self.const(self.rng.standard_normal(w).astype(np.float32))])

    def matmul_add(self):
        w = self.shape[-1]
        weight = (self.rng.standard_normal((w, w)) / np.sqrt(w)).astype(np.float32)
        y = self.node("MatMul", [self.t, self.const(weight)])
        self.t = self.node("Add", [y, self.const(self.rng.standard_normal(w).astype(np.float32))])

    def head(self, kind):
        """Flatten -> Gemm (+ activation): onnxruntime's Gemm + activation fusion."""
        n = int(np.prod(self.shape[1:]))
        f = self.node("Flatten", [self.t], axis=1)
        g = self.node("Gemm", [f, self.const((self.rng.standard_normal((10, n)) / np.sqrt(n)).astype(np.float32)),
                               self.const(self.rng.standard_normal(10).astype(np.float32))], transB=1)
        self.t = self.node(kind, [g]) if kind != "none" else g
        self.shape = [self.shape[0], 10]

    def model(self, batch_fixed, channels):
        n = self.shape[0] if batch_fixed else "N"
        graph = helper.make_graph(self.nodes, "islands", [helper.make_tensor_value_info("x", F, [n, channels, 8, 8])],
                                  [helper.make_tensor_value_info(t, dt, [n] + shape[1:])
                                   for t, dt, shape in self.outputs], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def build(seed, blocks, batch, batch_fixed, channels, head, quantized_output):
    g = _Graph(seed, [batch, channels, 8, 8])
    for b in blocks:
        getattr(g, b)()
        g.saved.append((g.t, list(g.shape)))
    if quantized_output:
        q, _, _ = g.quantize(g.t)
        g.outputs.append((q, U8, list(g.shape)))
    g.head(head)
    g.outputs.append((g.t, F, list(g.shape)))
    return g.model(batch_fixed, channels)


models = st.builds(build, st.integers(0, 2**31 - 1), st.lists(st.sampled_from(BLOCKS), min_size=2, max_size=7),
                   st.sampled_from([1, 2, 8]), st.booleans(), st.sampled_from([4, 16]),
                   st.sampled_from(["none", "Relu", "Sigmoid", "Softmax"]),
                   st.booleans())


def _compare(model, seed=0):
    data = model.SerializeToString()
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    channels = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    x = np.random.default_rng(seed).uniform(-3, 3, (batch.dim_value or 3, channels, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = npusim.InferenceSession(data, mode="ort").run(None, {"x": x})
    for o, w, g in zip(model.graph.output, want, got):
        assert g.dtype == w.dtype, o.name
        np.testing.assert_array_equal(g, w, err_msg=o.name)


@settings(max_examples=150, deadline=None)
@given(models)
def test_random_mixed_graphs_equal_onnxruntime(model):
    _compare(model)


@pytest.mark.parametrize("batch_fixed", [True, False])
def test_residual_block_after_an_integer_conv(batch_fixed):
    """QDQ conv -> Conv -> Conv -> Add: one island whose input shape (a symbolic batch
    included) is the whole model's, so onnxruntime fuses the Add into the NCHWc conv there too."""
    g = _Graph(0, [2, 16, 8, 8])
    g.qdq_conv(cout=16)
    g.residual()
    g.outputs.append((g.t, F, g.shape))
    model = g.model(batch_fixed, 16)
    sess = npusim.InferenceSession(model.SerializeToString(), mode="ort")
    assert [n.op for n in sess.graph.nodes].count("host") == 1
    _compare(model)


def _attention(d=16, tokens=8):
    """A float attention block: MatMul q·kᵀ then Mul by a scalar (onnxruntime's MatMulScaleFusion
    makes them one FusedMatMul), Softmax, projection, LayerNormalization."""
    rng = np.random.default_rng(0)

    def w(name, shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Mul", ["s", "scale"], ["s2"]), helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "x"], ["o"]), helper.make_node("MatMul", ["o", "wo"], ["o2"]),
             helper.make_node("Add", ["o2", "bo"], ["o3"]),
             helper.make_node("LayerNormalization", ["o3", "g", "b"], ["y"], axis=-1, epsilon=1e-5)]
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info("x", F, [1, tokens, d])],
                              [helper.make_tensor_value_info("y", F, [1, tokens, d])],
                              [w("wq", (d, d)), w("wk", (d, d)), w("wo", (d, d)), w("bo", (d,)), w("g", (d,)),
                               w("b", (d,)), numpy_helper.from_array(np.float32(0.25), "scale")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_dynamically_quantized_attention_runs_as_onnxruntime_runs_it(tmp_path):
    """quantize_dynamic's MatMulIntegerToFloat feeds a FusedMatMul: the island holding both is
    a valid model only with the contrib op's float output typed as onnxruntime infers it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save(_attention(), tmp_path / "f.onnx")
    quantize_dynamic(tmp_path / "f.onnx", tmp_path / "dq.onnx", weight_type=QuantType.QInt8)
    x = np.random.default_rng(1).standard_normal((1, 8, 16)).astype(np.float32)
    sess = npusim.InferenceSession(str(tmp_path / "dq.onnx"), mode="ort")
    host_ops = {op.split(":")[0] for n in sess.graph.nodes if n.op == "host" for op in n.attrs["ops"]}
    assert {"MatMulIntegerToFloat", "FusedMatMul", "LayerNormalization"} <= host_ops
    want = ort.InferenceSession(str(tmp_path / "dq.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], want[0])


@pytest.mark.parametrize("shape", [(8, 3, 4, 4), (8, 2, 2, 2)])  # 384 and 64 elements: 256 codes in 1 or 4 runs
@pytest.mark.parametrize("mode", ["ort", "npu"])
def test_lookup_table_island_of_a_fixed_batch(shape, mode):
    """DequantizeLinear -> HardSigmoid -> QuantizeLinear on a uint8 input of fixed shape (batch 8)
    is tabulated over its 256 codes with tensors of that shape; the table is onnxruntime's."""
    c = [numpy_helper.from_array(v, n) for v, n in ((np.float32(0.05), "s"), (np.uint8(120), "z"),
                                                   (np.float32(1 / 255), "ys"), (np.uint8(0), "yz"))]
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["d"]),
             helper.make_node("HardSigmoid", ["d"], ["h"]),
             helper.make_node("QuantizeLinear", ["h", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "lut", [helper.make_tensor_value_info("x", U8, shape)],
                              [helper.make_tensor_value_info("y", U8, shape)], c)
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    sess = npusim.InferenceSession(data, mode=mode)
    x = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    got = sess.run(None, {"x": x})[0]
    assert [n.op for n in sess.graph.nodes] == ["host"] and sess.host_fallback == []  # a lookup table
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)


def _int4_model(nodes, inputs, outputs, inits):
    m = helper.make_model(helper.make_graph(nodes, "int4", inputs, outputs, inits),
                          opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    return m.SerializeToString()


INT4_ZP = helper.make_tensor("z4", TensorProto.INT4, [], [1])
S4 = numpy_helper.from_array(np.float32(0.4), "s4")


@pytest.mark.parametrize("case", ["int4_input_and_zero_point", "int4_output"])
def test_island_with_4bit_edges(case):
    """A 4-bit tensor crossing an island's edge, or a 4-bit zero point inside it: onnxruntime's
    Python API takes and gives no 4-bit arrays and the IR stores them in 8 bits."""
    x_vi = helper.make_tensor_value_info("x", F, [1, 8, 4, 4])
    if case == "int4_input_and_zero_point":  # integer Q -> int4 -> island: DQ(int4), DQ(uint8), Mul, HardSigmoid, Q
        c = [INT4_ZP, S4, numpy_helper.from_array(np.float32(0.01), "s8"), numpy_helper.from_array(np.int8(3), "z8"),
             numpy_helper.from_array(np.float32(0.05), "xs"), numpy_helper.from_array(np.uint8(128), "xz")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s4", "z4"], ["q4"]),
                 helper.make_node("DequantizeLinear", ["q4", "s4", "z4"], ["d4"]),
                 helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q8"]),
                 helper.make_node("DequantizeLinear", ["q8", "xs", "xz"], ["d8"]),
                 helper.make_node("Mul", ["d4", "d8"], ["m"]), helper.make_node("HardSigmoid", ["m"], ["h"]),
                 helper.make_node("QuantizeLinear", ["h", "s8", "z8"], ["y"])]
        data = _int4_model(nodes, [x_vi], [helper.make_tensor_value_info("y", I8, [1, 8, 4, 4])], c)
    else:  # island: HardSigmoid, Q -> int4 -> integer Transpose -> DequantizeLinear
        s = numpy_helper.from_array(np.float32(0.05), "s")  # codes 1..21: the int4 range [-8, 7] clamps
        nodes = [helper.make_node("HardSigmoid", ["x"], ["h"]),
                 helper.make_node("QuantizeLinear", ["h", "s", "z4"], ["q4"]),
                 helper.make_node("Transpose", ["q4"], ["t"], perm=[0, 1, 3, 2]),
                 helper.make_node("DequantizeLinear", ["t", "s", "z4"], ["y"])]
        data = _int4_model(nodes, [x_vi], [helper.make_tensor_value_info("y", F, [1, 8, 4, 4])], [INT4_ZP, s])
    sess = npusim.InferenceSession(data, mode="ort")
    island = [n for n in sess.graph.nodes if n.op == "host"]
    assert len(island) == 1 and any(sess.graph.tensors[t].dtype == "i4" for t in island[0].inputs + island[0].outputs)
    x = np.random.default_rng(3).uniform(-3, 3, (1, 8, 4, 4)).astype(np.float32)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = sess.run(None, {"x": x})[0]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_quantized_ops_with_run_time_parameters_run_on_the_host():
    """A QLinearConv whose weights and a QLinearMatMul whose scale are computed at run time have no
    plan-time integer form: they run on onnxruntime (host ops), and the model still runs whole."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (1, 4, 6, 6)).astype(np.uint8)
    w = rng.integers(-60, 60, (3, 4, 3, 3)).astype(np.int8)
    a = rng.integers(0, 256, (2, 5)).astype(np.uint8)
    b = rng.integers(-60, 60, (5, 3)).astype(np.int8)
    f32 = lambda v: np.array(v, np.float32)  # noqa: E731
    inits = [numpy_helper.from_array(v, n) for n, v in [
        ("xs", f32(0.02)), ("xz", np.array(3, np.uint8)), ("ws", f32(0.01)), ("wz", np.array(0, np.int8)),
        ("ys", f32(0.5)), ("yz", np.array(128, np.uint8)), ("b", b), ("bz", np.array(0, np.int8)),
        ("az", np.array(0, np.uint8)), ("bs", f32(0.03))]]
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("QLinearMatMul", ["a", "a_scale", "az", "b", "bs", "bz", "ys", "yz"], ["z"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape),
           helper.make_tensor_value_info("w", TensorProto.INT8, w.shape),
           helper.make_tensor_value_info("a", TensorProto.UINT8, a.shape),
           helper.make_tensor_value_info("a_scale", TensorProto.FLOAT, [])]
    outs = [helper.make_tensor_value_info(n, TensorProto.UINT8, None) for n in ("y", "z")]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    data = model.SerializeToString()
    feeds = {"x": x, "w": w, "a": a, "a_scale": f32(0.02)}
    sess = npusim.InferenceSession(data)
    assert sorted(op.split(":")[0] for n in sess.graph.host_nodes() for op in n.attrs["ops"]) \
        == ["QLinearConv", "QLinearMatMul"]
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)
    for got, ref in zip(sess.run(None, feeds), want):
        assert got.dtype == ref.dtype
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("level", ["ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"])
def test_session_options_optimization_level_reaches_the_islands(level):
    """With onnxruntime's SessionOptions, the host islands are optimized at the user's level, so npusim
    equals onnxruntime run with the same options: the residual block's float results differ between
    these two levels (measured: up to 5.7e-6 over 6 seeds; NCHWc fusions at ALL only). Below
    EXTENDED onnxruntime does not fuse QDQ at all, while npusim's front end always does."""
    g = _Graph(0, [2, 16, 8, 8])
    g.qdq_conv(cout=16)
    g.residual()
    g.outputs.append((g.t, F, g.shape))
    data = g.model(True, 16).SerializeToString()
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    x = np.random.default_rng(1).uniform(-3, 3, (2, 16, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = npusim.InferenceSession(data, so).run(None, {"x": x})
    np.testing.assert_array_equal(got[0], want[0])
