"""Mode "npu" against LiteRT's reference kernels (BUILTIN_REF), op by op.

../shared/litert/ holds int8 .tflite models with LiteRT's reference outputs (`ref_K_J`) and the
int8 tensors that enter each op (`mid_K_I`); NAME.json gives every tensor's scale and zero point.
Each op is rebuilt here as a one-node com.microsoft QLinear model with those scales, fed LiteRT's
input tensor in npusim's NCHW layout (LiteRT is NHWC: the feeds and results are transposed), and
must equal LiteRT's output bit for bit, and the float64 reference too. With `ai-edge-litert`
installed (the `test` extra), the .tflite files also run live on edge inputs (type extremes,
rounding ties, one dominant logit), which the recorded sets do not reach.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import npusim
from npusim import fakequant

LITERT = Path(__file__).resolve().parents[2] / "shared" / "litert"
pytestmark = pytest.mark.skipif(not LITERT.is_dir(), reason="../shared/litert not present")


def _quant(name, tensor):
    t = json.loads((LITERT / f"{name}.json").read_text())["tflite_tensors"][tensor]
    return np.float32(t["scales"][0]), int(t["zero_points"][0])


def _one_node(op, shape, x_q, y_q, b_q=None, **attrs):
    """A com.microsoft QLinear op with int8 input x (shape) and output y, quantization x_q -> y_q;
    with b_q, a second input b of the same shape (QLinearAdd, QLinearMul)."""
    names = ["x", "xs", "xz"] + (["b", "bs", "bz"] if b_q else []) + ["ys", "yz"]
    node = helper.make_node(op, names, ["y"], domain="com.microsoft", **attrs)
    qs = [("x", x_q), ("y", y_q)] + ([("b", b_q)] if b_q else [])
    inits = [numpy_helper.from_array(np.array(v, dt), f"{t}{k}") for t, q in qs
             for k, v, dt in (("s", q[0], np.float32), ("z", q[1], np.int8))]
    inputs = [helper.make_tensor_value_info(t, TensorProto.INT8, shape) for t in ("x", "b")[:1 + bool(b_q)]]
    g = helper.make_graph([node], op, inputs, [helper.make_tensor_value_info("y", TensorProto.INT8, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m.SerializeToString()


def _hard_swish(x_q, y_q):
    """DequantizeLinear -> HardSwish -> QuantizeLinear of an int8 (N, 256) tensor."""
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["f"]), helper.make_node("HardSwish", ["f"], ["g"]),
             helper.make_node("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, dt), n) for n, v, dt in
             (("xs", x_q[0], np.float32), ("xz", x_q[1], np.int8), ("ys", y_q[0], np.float32), ("yz", y_q[1], np.int8))]
    g = helper.make_graph(nodes, "hard_swish", [helper.make_tensor_value_info("x", TensorProto.INT8, [None, 256])],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def _avgpool2x2(rounding):
    """x NHWC -> y NHWC through npusim's NCHW QLinearAveragePool 2x2 / 2 (LiteRT: VALID)."""
    q = _quant("avgpool2x2", "in0")
    assert _quant("avgpool2x2", "Identity") == q  # TFLite's average pool keeps the quantization
    model = _one_node("QLinearAveragePool", [None, 8, 12, 12], q, q, kernel_shape=[2, 2], strides=[2, 2])
    return _runner(model, rounding, (0, 3, 1, 2))


def _softmax(rounding):
    model = _one_node("QLinearSoftmax", [None, 10], _quant("softmax", "in0"), _quant("softmax", "Identity"),
                      axis=-1, opset=13)
    return _runner(model, rounding, None)


def _runner(model, rounding, nchw):
    """-> run(x[, b]) = mode npu's output; asserts that the golden kernels and the float64 reference
    agree. nchw: the permutation from LiteRT's layout to the model's (None: the same)."""
    fast = npusim.InferenceSession(model, mode="npu", rounding=rounding)
    golden = npusim.InferenceSession(model, mode="npu", rounding=rounding, kernels="golden")

    def run(*xs):
        feeds = {n: np.ascontiguousarray(x.transpose(nchw)) if nchw else x for n, x in zip(("x", "b"), xs)}
        (y,) = fast.run(None, feeds)
        np.testing.assert_array_equal(golden.run(None, feeds)[0], y)
        np.testing.assert_array_equal(fakequant.evaluate(fast.graph, feeds, rounding)["y"], y)
        return y.transpose(np.argsort(nchw)) if nchw else y
    return run


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_avgpool_equals_litert_reference_on_the_recorded_sets(rounding):
    """AVERAGE_POOL_2D averages the int8 codes (no zero point subtracted) and rounds half away from
    zero: 11,520 of 11,520 elements exact over the 5 sets, under either rounding (no multiplier)."""
    data = np.load(LITERT / "avgpool2x2.npz")
    run = _avgpool2x2(rounding)
    exact = 0
    for k in range(5):
        np.testing.assert_array_equal(data[f"mid_{k}_0"], data[f"in_{k}_0"])
        y = run(data[f"mid_{k}_0"])
        np.testing.assert_array_equal(y, data[f"ref_{k}_0"], err_msg=f"set {k}")
        exact += y.size
    assert exact == 11520


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_softmax_equals_litert_reference_on_the_recorded_sets(rounding):
    """TFLite's reference int8 softmax (gemmlowp exp, reciprocal, diff_min): 400 of 400 elements
    exact over the 5 sets. LiteRT's wheel is built with double rounding; single rounding changes the
    input multiplier's rounding (and cap), which these inputs do not reach."""
    data = np.load(LITERT / "softmax.npz")
    run = _softmax(rounding)
    for k in range(5):
        np.testing.assert_array_equal(run(data[f"mid_{k}_0"]), data[f"ref_{k}_0"], err_msg=f"set {k}")


def _qoperator(name, op):
    """The .onnx's one Conv or Gemm (with its Q/DQ parameters and int8 weights, int32 bias) as a
    QLinearConv or com.microsoft QGemm on an int8 input x."""
    import onnx

    m = onnx.load(LITERT / f"{name}{'.onnx' if op == 'Gemm' else '.nchw.onnx'}")
    init = {i.name: i for i in m.graph.initializer}
    dq = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
    (layer,) = [n for n in m.graph.node if n.op_type == op]
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"][-1]
    x, w, b = (dq[i].input for i in layer.input)
    renamed = dict(zip([x[1], x[2], w[0], w[1], w[2], q.input[1], q.input[2], b[0]],
                       ["xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]))
    inits = []
    for old, new in renamed.items():
        t = onnx.TensorProto()
        t.CopyFrom(init[old])
        t.name = new
        inits.append(t)
    order = ["x", "xs", "xz", "w", "ws", "wz"] + (["ys", "yz", "b"] if op == "Conv" else ["b", "ys", "yz"])
    node = helper.make_node("QLinearConv" if op == "Conv" else "QGemm", order, ["y"],
                            domain="" if op == "Conv" else "com.microsoft", **{a.name: helper.get_attribute_value(a)
                                                                              for a in layer.attribute})
    g = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.INT8, None)],
                          [helper.make_tensor_value_info("y", TensorProto.INT8, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model.SerializeToString()


@pytest.mark.parametrize("name, op", [("conv_relu", "Conv"), ("dwconv_relu6", "Conv"), ("fully_connected", "Gemm")])
def test_conv_and_fully_connected_equal_litert_reference_on_the_recorded_sets(name, op):
    """CONV_2D (per-channel), DEPTHWISE_CONV_2D and FULLY_CONNECTED: mode npu with double rounding
    (TFLite's MultiplyByQuantizedMultiplier as LiteRT's wheel builds it) equals LiteRT on every
    element of the 5 sets (the fused ReLU / ReLU6 bounds lie outside the int8 range here)."""
    data = np.load(LITERT / f"{name}.npz")
    run = _runner(_qoperator(name, op), "double", (0, 3, 1, 2) if op == "Conv" else None)
    for k in range(5):
        np.testing.assert_array_equal(run(data[f"mid_{k}_0"]), data[f"ref_{k}_0"], err_msg=f"set {k}")


def _edge_codes(rng, shape):
    """int8 tensors (batch of 8 along axis 0) at the edges: the type's extremes, both alternating,
    values around the zero point −1 (ties of a 2x2 mean: sums ≡ 2 mod 4 of both signs), small
    values, one code dominating each row, and uniform random codes."""
    x = np.empty(shape, np.int8)
    x[0], x[1] = -128, 127
    x[2] = rng.choice(np.array([-128, 127], np.int8), shape[1:])
    x[3] = rng.integers(-3, 2, shape[1:])
    x[4] = rng.choice(np.array([-2, -1, 0, 1], np.int8), shape[1:])
    x[5] = -128
    x[5].reshape(-1, shape[-1])[:, 0] = 127  # one dominant code per row (the softmax's last axis)
    x[6] = rng.integers(120, 128, shape[1:])
    x[7] = rng.integers(-128, 128, shape[1:])
    return x


@pytest.fixture(scope="module")
def litert():
    """-> run(name, x): LiteRT's reference kernels on the shared .tflite model, input resized to x."""
    interpreter = pytest.importorskip("ai_edge_litert.interpreter")

    def run(name, x):
        it = interpreter.Interpreter(model_path=str(LITERT / f"{name}.tflite"),
                                     experimental_op_resolver_type=interpreter.OpResolverType.BUILTIN_REF)
        it.resize_tensor_input(it.get_input_details()[0]["index"], list(x.shape))
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])
    return run


def test_avgpool_equals_live_litert_on_edge_inputs(litert):
    rng = np.random.default_rng(11)
    x = _edge_codes(rng, (8, 12, 12, 8))
    want = litert("avgpool2x2", x)
    got = _avgpool2x2("double")(x)
    np.testing.assert_array_equal(got, want)
    s = x.reshape(8, 6, 2, 6, 2, 8).astype(np.int64).sum(axis=(2, 4))
    ties = s % 4 == 2  # where rounding half away from zero decides, with both signs
    assert np.count_nonzero(ties & (s < 0)) > 100 and np.count_nonzero(ties & (s > 0)) > 100
    assert {-128, 127} <= set(np.unique(want).tolist())


def test_softmax_equals_live_litert_on_edge_inputs(litert):
    rng = np.random.default_rng(12)
    x = np.concatenate([_edge_codes(rng, (8, 24, 10)).reshape(-1, 10),
                        rng.integers(-128, 128, (64, 10)).astype(np.int8)])
    want = litert("softmax", x)
    for rounding in ("double", "single"):
        np.testing.assert_array_equal(_softmax(rounding)(x), want, err_msg=rounding)
    assert want.min() == -128 and want.max() == 127  # probability 0 and a saturated 1 are both reached


# ---------------------------------------------------------------- one-op models of our own, live

def _scale(rng, lo=0.005, hi=0.2):
    return float(np.float32(rng.uniform(lo, hi)))


def _zp(rng):
    return int(rng.integers(-128, 128))


def _case(op, rng, fb, one_op):
    """(tflite bytes, run(*int8 NHWC inputs) of npusim, input shapes) for one random quantization;
    fb, one_op: the flatbuffer schema and model writer of tests/tflite_ops.py."""
    q, y = (_scale(rng), _zp(rng)), (_scale(rng), _zp(rng))
    if op.startswith("AVERAGE_POOL_2D"):  # TFLite: one quantization on both sides
        k, s, pad = {"AVERAGE_POOL_2D 2x2": (2, 2, "VALID"), "AVERAGE_POOL_2D 3x3 SAME": (3, 2, "SAME")}[op]
        o = fb.Pool2DOptionsT()
        o.padding, o.strideW, o.strideH, o.filterWidth, o.filterHeight = getattr(fb.Padding, pad), s, s, k, k
        out = -(-9 // s) if pad == "SAME" else (9 - k) // s + 1
        lite = one_op("AVERAGE_POOL_2D", [((8, 9, 9, 8), q)], ((8, out, out, 8), q), o, fb.BuiltinOptions.Pool2DOptions)
        window = dict(kernel_shape=[k, k], strides=[s, s], **({"auto_pad": "SAME_UPPER"} if pad == "SAME" else {}))
        return lite, _runner(_one_node("QLinearAveragePool", [None, 8, 9, 9], q, q, **window), "double",
                             (0, 3, 1, 2)), [(8, 9, 9, 8)]
    if op == "SOFTMAX":  # input scales up to 4: differences below diff_min (−7 .. −31) are cut off
        q, y = (_scale(rng, 0.005, 4.0), _zp(rng)), (1 / 256, -128)
        o = fb.SoftmaxOptionsT()
        o.beta = 1.0
        lite = one_op("SOFTMAX", [((8, 16, 10), q)], ((8, 16, 10), y), o, fb.BuiltinOptions.SoftmaxOptions)
        return lite, _runner(_one_node("QLinearSoftmax", [None, 16, 10], q, y, axis=-1, opset=13), "double", None), \
            [(8, 16, 10)]
    if op == "LOGISTIC":  # TFLite: output (1/256, −128)
        y = (1 / 256, -128)
        lite = one_op("LOGISTIC", [((8, 256), q)], ((8, 256), y))
        return lite, _runner(_one_node("QLinearSigmoid", [None, 256], q, y), "double", None), [(8, 256)]
    if op == "HARD_SWISH":  # an elementwise host island, compiled into TFLite's integer table
        lite = one_op("HARD_SWISH", [((8, 256), q)], ((8, 256), y))
        return lite, _runner(_hard_swish(q, y), "double", None), [(8, 256)]
    if op == "MEAN":  # over H and W, keep dims: a global average pool
        o = fb.ReducerOptionsT()
        o.keepDims = True
        y = q if rng.integers(2) else y
        lite = one_op("MEAN", [((8, 7, 7, 16), q), np.array([1, 2], np.int32)], ((8, 1, 1, 16), y), o,
                      fb.BuiltinOptions.ReducerOptions)
        return lite, _runner(_one_node("QLinearGlobalAveragePool", [None, 16, 7, 7], q, y), "double",
                             (0, 3, 1, 2)), [(8, 7, 7, 16)]
    b = (_scale(rng), _zp(rng))
    if op == "MUL":
        y = (q[0] * b[0] * float(rng.uniform(20, 80)), _zp(rng))
    options = {"ADD": (fb.AddOptionsT(), fb.BuiltinOptions.AddOptions), "MUL": (fb.MulOptionsT(), fb.BuiltinOptions.MulOptions)}
    lite = one_op(op, [((8, 8, 8, 8), q), ((8, 8, 8, 8), b)], ((8, 8, 8, 8), y), *options[op])
    return lite, _runner(_one_node(f"QLinear{op.title()}", [None, 8, 8, 8], q, y, b_q=b), "double", (0, 3, 1, 2)), \
        [(8, 8, 8, 8)] * 2


LIVE_OPS = ["AVERAGE_POOL_2D 2x2", "AVERAGE_POOL_2D 3x3 SAME", "SOFTMAX", "LOGISTIC", "HARD_SWISH", "MEAN", "ADD",
            "MUL"]


@pytest.mark.parametrize("op", LIVE_OPS)
def test_op_equals_live_litert_reference(op):
    """One-op int8 .tflite models built here (tests/tflite_ops.py, no TensorFlow), 4 random
    quantizations each, on edge and random codes: mode npu (double rounding) equals LiteRT's
    reference kernels on every element."""
    pytest.importorskip("ai_edge_litert")
    import tflite_ops

    rng = np.random.default_rng(sum(map(ord, op)))
    for _ in range(4):
        lite, run, shapes = _case(op, rng, tflite_ops.fb, tflite_ops.one_op)
        xs = [_edge_codes(rng, s) for s in shapes]
        np.testing.assert_array_equal(run(*xs), tflite_ops.run_reference(lite, xs), err_msg=op)
