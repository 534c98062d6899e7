"""QONNX import (npusim.frontend.qonnx): hand-built Brevitas-style models run by qonnx's own executor
and by npusim, compared on the integer codes of every Quant/BipolarQuant/Trunc output.

qonnx is a test-only reference (pinned by the test extra; a missing qonnx fails the module). Unless a
test says otherwise the scales are powers of two and every accumulator stays far below 2^24,
so qonnx's float32 evaluation (float conv on onnxruntime, x/s + z, np.round) is exact and the
comparison must be bit for bit. One test uses non-power-of-two scales and bounds the difference.
"""
from __future__ import annotations

from fractions import Fraction
import math

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import npusim
from npusim import fakequant, ir
from npusim.errors import NpusimError
from npusim.frontend.qonnx import ROUNDINGS, import_qonnx, is_qonnx
import npusim_kernels.fast.shift as fast_shift
import npusim_kernels.golden.shift as golden_shift

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.infer_shapes import InferShapes

D = "qonnx.custom_op.general"


class Builder:
    """A QONNX graph under construction: Quant/BipolarQuant/Trunc and standard nodes, initializers."""

    def __init__(self):
        self.nodes, self.inits, self.qparams = [], [], {}

    def const(self, name, value, dtype=np.float32):
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def quant(self, x, y, scale, bits, signed=True, narrow=False, zp=0.0, rounding="ROUND"):
        s = self.const(f"{y}_s", scale)
        self.nodes.append(helper.make_node("Quant", [x, s, self.const(f"{y}_z", zp), self.const(f"{y}_b", bits)],
                                           [y], domain=D, name=f"q_{y}", signed=int(signed), narrow=int(narrow),
                                           rounding_mode=rounding))
        self.qparams[y] = (np.asarray(scale, np.float32), zp)
        return y

    def bipolar(self, x, y, scale):
        self.nodes.append(helper.make_node("BipolarQuant", [x, self.const(f"{y}_s", scale)], [y], domain=D,
                                           name=f"bq_{y}"))
        self.qparams[y] = (np.asarray(scale, np.float32), 0.0)
        return y

    def trunc(self, x, y, scale, in_bits, out_bits, rounding="FLOOR", out_scale=None):
        ins = [x, self.const(f"{y}_s", scale), self.const(f"{y}_z", 0.0), self.const(f"{y}_bi", in_bits)]
        if out_scale is not None:  # Trunc v2
            ins.append(self.const(f"{y}_so", out_scale))
        ins.append(self.const(f"{y}_bo", out_bits))
        self.nodes.append(helper.make_node("Trunc", ins, [y], domain=D, name=f"t_{y}", rounding_mode=rounding))
        self.qparams[y] = (np.asarray(scale if out_scale is None else out_scale, np.float32), 0.0)
        return y

    def node(self, op, ins, out, **attrs):
        self.nodes.append(helper.make_node(op, ins, [out], name=f"{op.lower()}_{out}", **attrs))
        return out

    def dense(self, x, out, w, scale, bits, **quant):
        """MatMul of `x` by the constant `w` quantized by a Quant (`out`_w, `out`_wq)."""
        self.const(f"{out}_w", w)
        self.quant(f"{out}_w", f"{out}_wq", scale, bits, **quant)
        return self.node("MatMul", [x, f"{out}_wq"], out)

    def batchnorm(self, x, out, rng, gamma, **attrs):
        """BatchNormalization of `x` with `gamma` and random beta, mean, var (as many channels)."""
        c = len(gamma)
        for name, v in (("g", gamma), ("beta", rng.uniform(-1, 1, c)), ("mean", rng.uniform(-1, 1, c)),
                        ("var", rng.uniform(0.5, 3, c))):
            self.const(f"{out}_{name}", v)
        return self.node("BatchNormalization", [x] + [f"{out}_{n}" for n in ("g", "beta", "mean", "var")], out,
                         **attrs)

    def model(self, in_shape, out, qonnx_opset=1):
        g = helper.make_graph(self.nodes, "qonnx_test",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(D, qonnx_opset)])
        m.ir_version = 8
        return m


def pow2_weights(rng, shape, bits, narrow=False):
    """Float weights whose per-output-channel pow2-scaled codes cover the signed `bits` range."""
    lo, hi = -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
    scale = (2.0 ** rng.integers(-6, -2, size=(shape[0],) + (1,) * (len(shape) - 1))).astype(np.float32)
    return (rng.integers(lo - 1, hi + 2, size=shape) * scale).astype(np.float32), scale


def compare(model, feeds, *, kernels="fast"):
    """Run qonnx and npusim; return {tensor: (npusim codes, qonnx codes)} for every quantized output."""
    ctx = execute_onnx(ModelWrapper(model).transform(InferShapes()), feeds, return_full_exec_context=True)
    graph = import_qonnx(model)
    got = npusim.InferenceSession(graph, kernels=kernels).run_all(feeds)
    pairs = {}
    for name, (scale, zp) in Builder_params(model).items():
        ours = got.get(f"{name}::q", got.get(name))
        if ours is not None and name not in graph.constants:  # activations (weights are constants)
            ref = np.round(ctx[name].astype(np.float64) / scale.astype(np.float64)) + zp
            pairs[name] = (np.asarray(ours).astype(np.int64), ref.astype(np.int64))
    return pairs, got, ctx


def Builder_params(model):
    """(scale, zero point) of every QONNX node output, read back from the model."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.domain != D:
            continue
        if n.op_type == "Quant":
            out[n.output[0]] = (inits[n.input[1]], float(inits[n.input[2]]))
        elif n.op_type == "BipolarQuant":
            out[n.output[0]] = (inits[n.input[1]], 0.0)
        elif n.op_type == "Trunc":
            out[n.output[0]] = (inits[n.input[4] if len(n.input) == 6 else n.input[1]], 0.0)
    return out


def assert_exact(pairs):
    assert pairs
    for name, (ours, ref) in pairs.items():
        np.testing.assert_array_equal(ours, ref, err_msg=name)


def conv_net(rng, weight_scale=None, act_scale=None, bias=True):
    """8-bit input -> conv 4-bit weights (+bias) -> Relu -> 4-bit act -> conv 2-bit narrow weights
    -> Relu -> signed 4-bit act -> MaxPool -> Flatten -> Gemm 4-bit (transB) -> 8-bit signed output."""
    b = Builder()
    s_in = act_scale or 2.0 ** -5
    b.quant("x", "xq", s_in, 8, signed=True)
    w1, s1 = pow2_weights(rng, (6, 3, 3, 3), 4)
    if weight_scale is not None:
        s1 = weight_scale[0]
        w1 = (rng.integers(-9, 9, size=(6, 3, 3, 3)) * s1).astype(np.float32)
    b.const("w1", w1)
    b.quant("w1", "w1q", s1, 4, signed=True)
    conv1_in = ["xq", "w1q"]
    if bias:
        b.const("b1", (rng.integers(-50, 50, size=6) * (s_in * s1.reshape(-1))).astype(np.float32))
        b.quant("b1", "b1q", (s_in * s1.reshape(-1)).astype(np.float32), 32, signed=True)
        conv1_in.append("b1q")
    b.node("Conv", conv1_in, "c1", pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    b.node("Relu", ["c1"], "r1")
    b.quant("r1", "a1", act_scale or 2.0 ** -2, 4, signed=False)
    w2, s2 = pow2_weights(rng, (8, 6, 3, 3), 2, narrow=True)
    if weight_scale is not None:
        s2 = weight_scale[1]
        w2 = (rng.integers(-2, 3, size=(8, 6, 3, 3)) * s2).astype(np.float32)
    b.const("w2", w2)
    b.quant("w2", "w2q", s2, 2, signed=True, narrow=True)
    b.node("Conv", ["a1", "w2q"], "c2", strides=[2, 2], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    b.node("Relu", ["c2"], "r2")
    b.quant("r2", "a2", act_scale or 2.0 ** -3, 4, signed=True)  # signed after Relu: the clamp is 0..7
    b.node("MaxPool", ["a2"], "p2", kernel_shape=[2, 2], strides=[2, 2])
    b.node("Flatten", ["p2"], "f2", axis=1)
    w3 = (rng.integers(-8, 8, size=(5, 8 * 2 * 2)) * 2.0 ** -3).astype(np.float32)
    b.const("w3", w3)
    b.quant("w3", "w3q", np.float32(2.0 ** -3) if weight_scale is None else weight_scale[2], 4, signed=True)
    b.node("Gemm", ["f2", "w3q"], "g3", transB=1)
    b.quant("g3", "y", act_scale or 2.0 ** -2, 8, signed=True)
    return b.model((2, 3, 8, 8), "y")


def feeds(rng, shape=(2, 3, 8, 8), scale=4.0):
    return {"x": (rng.standard_normal(shape) * scale).astype(np.float32)}


# ---------------------------------------------------------------- bit-exact against qonnx

@pytest.mark.parametrize("kernels", ["fast", "golden"])
def test_conv_net_mixed_precision_bit_exact(kernels):
    rng = np.random.default_rng(0)
    model = conv_net(rng)
    for seed in range(3):
        pairs, got, ctx = compare(model, feeds(np.random.default_rng(seed)), kernels=kernels)
        assert set(pairs) == {"xq", "a1", "a2", "y"}
        assert_exact(pairs)
        np.testing.assert_array_equal(got["y"], ctx["y"])  # the dequantized float output too
    # the codes really use the sub-8-bit ranges (and saturate); Relu folded into a2's clamp
    assert pairs["a1"][0].min() == 0 and pairs["a1"][0].max() == 15
    assert pairs["a2"][0].min() == 0 and pairs["a2"][0].max() == 7
    assert pairs["y"][0].min() < 0 < pairs["y"][0].max()


def test_conv_net_ir_types():
    g = import_qonnx(conv_net(np.random.default_rng(0)))
    ops = [n.op for n in g.nodes]
    # power-of-two scales: every requantization is an exact shift (zero point added before rounding, as qonnx)
    assert ops == ["quantize", "conv", "round_shift", "conv", "round_shift", "maxpool", "flatten", "gemm",
                   "round_shift", "dequantize"]
    assert [g.tensors[t].dtype for t in ("w1q", "w2q", "a1", "a2", "y::q")] == ["i4", "i2", "u4", "i4", "i8"]
    assert set(np.unique(g.constants["w2q"])) <= {-1, 0, 1}
    rq = g.nodes[2].attrs
    assert (rq["qmin"], rq["qmax"], rq["dtype"]) == (0, 15, "u4")  # Relu folded into the clamp
    assert (g.nodes[4].attrs["qmin"], g.nodes[4].attrs["qmax"]) == (0, 7)
    assert g.nodes[1].inputs[2] == "b1q::i32" and g.constants["b1q::i32"].dtype == np.int32


@pytest.mark.parametrize("rounding", ["FLOOR", "CEIL", "UP", "DOWN", "HALF_UP", "HALF_DOWN", "ROUND"])
@pytest.mark.parametrize("zp", [0.0, 3.0])
def test_quant_rounding_modes_on_accumulator(rounding, zp):
    """A power-of-two multiplier with any rounding mode: round_shift, exact (zero point before rounding)."""
    rng = np.random.default_rng(1)
    b = Builder()
    b.quant("x", "xq", 2.0 ** -4, 8)
    w, s = pow2_weights(rng, (4, 3, 3, 3), 4)
    b.const("w", w)
    b.quant("w", "wq", s, 4)
    b.node("Conv", ["xq", "wq"], "c", kernel_shape=[3, 3])
    b.quant("c", "y", 2.0 ** -1, 6, signed=True, zp=zp, rounding=rounding)
    model = b.model((1, 3, 6, 6), "y")
    g = import_qonnx(model)
    assert g.nodes[2].op == "round_shift"
    pairs, _, _ = compare(model, feeds(rng, (1, 3, 6, 6), 2.0))
    assert_exact(pairs)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_conv_layers_bit_exact(data):
    """Random conv layers: input/weight/output bits 2..8, signed or not, narrow, zero points,
    per-channel weight scales, groups, strides, padding, Relu or not; power-of-two scales."""
    d = data.draw
    rng = np.random.default_rng(d(st.integers(0, 2 ** 32 - 1)))
    in_bits, w_bits, out_bits = d(st.integers(2, 8)), d(st.integers(2, 8)), d(st.integers(2, 8))
    in_signed, out_signed, narrow = d(st.booleans()), d(st.booleans()), d(st.booleans())
    group = d(st.sampled_from([1, 2]))
    cin, cout, k = 2 * d(st.integers(1, 3)), 2 * d(st.integers(1, 3)), d(st.sampled_from([1, 3]))
    lo, hi = (-(1 << (out_bits - 1)), (1 << (out_bits - 1)) - 1) if out_signed else (0, (1 << out_bits) - 1)
    y_zp = float(d(st.integers(lo, hi))) if d(st.booleans()) else 0.0
    b = Builder()
    b.quant("x", "xq", 2.0 ** d(st.integers(-6, 0)), in_bits, signed=in_signed,
            zp=0.0 if in_signed else float(d(st.integers(0, 1 << (in_bits - 1)))))
    w, s = pow2_weights(rng, (cout, cin // group, k, k), w_bits, narrow)
    b.const("w", w)
    b.quant("w", "wq", s, w_bits, signed=True, narrow=narrow)
    b.node("Conv", ["xq", "wq"], "c", kernel_shape=[k, k], group=group, strides=[d(st.integers(1, 2))] * 2,
           pads=[k // 2] * 4)
    src = b.node("Relu", ["c"], "r") if d(st.booleans()) else "c"
    b.quant(src, "y", 2.0 ** d(st.integers(-6, 2)), out_bits, signed=out_signed, zp=y_zp)
    model = b.model((1, cin, 5, 6), "y")
    pairs, _, _ = compare(model, feeds(rng, (1, cin, 5, 6), 2.0 ** d(st.integers(-2, 3))))
    assert_exact(pairs)


def test_bipolar_layers():
    """BipolarQuant input and weights, a bipolar activation after conv (sign of the accumulator),
    Quant(bits=1, signed) weights, a final 8-bit Quant."""
    rng = np.random.default_rng(2)
    b = Builder()
    b.bipolar("x", "xb", 0.5)
    b.const("w1", rng.standard_normal((8, 3, 3, 3)).astype(np.float32))
    b.bipolar("w1", "w1b", (2.0 ** rng.integers(-3, 0, size=(8, 1, 1, 1))).astype(np.float32))
    b.node("Conv", ["xb", "w1b"], "c1", pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    b.bipolar("c1", "a1", 1.0)
    b.const("w2", rng.standard_normal((4, 8, 1, 1)).astype(np.float32))
    b.quant("w2", "w2b", 0.25, 1, signed=True)
    b.node("Conv", ["a1", "w2b"], "c2", kernel_shape=[1, 1])
    b.quant("c2", "y", 0.25, 8, signed=True)
    model = b.model((2, 3, 5, 5), "y")
    g = import_qonnx(model)
    assert [g.tensors[t].dtype for t in ("xb", "w1b", "a1", "w2b")] == ["i2"] * 4
    assert set(np.unique(g.constants["w1b"])) == {-1, 1}
    f = feeds(rng, (2, 3, 5, 5), 1.0)
    f["x"][0, 0, 0, :2] = (0.0, -0.0)  # zero and negative zero are +1
    pairs, got, _ = compare(model, f)
    assert_exact(pairs)
    assert set(np.unique(got["a1"])) == {-1, 1}


@pytest.mark.parametrize("rounding", ["FLOOR", "ROUND", "CEIL"])
def test_trunc_v1_on_accumulator_and_activation(rounding):
    """Trunc v1 (opset 1, output keeps the input scale) on a conv accumulator, then on a quantized activation."""
    rng = np.random.default_rng(3)
    b = Builder()
    b.quant("x", "xq", 2.0 ** -3, 8)
    w, _ = pow2_weights(rng, (4, 3, 3, 3), 4)
    b.const("w", w)
    b.quant("w", "wq", np.float32(2.0 ** -4), 4)
    b.node("Conv", ["xq", "wq"], "c", pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    b.trunc("c", "t", 2.0 ** -7, 14, 8, rounding)
    b.trunc("t", "y", 2.0 ** -7, 8, 5, rounding)
    model = b.model((2, 3, 6, 6), "y")
    g = import_qonnx(model)
    assert [n.op for n in g.nodes][2:4] == ["round_shift", "round_shift"]
    assert g.tensors["t"].dtype == "i8" and g.tensors["y::q"].dtype == "i5"
    pairs, _, ctx = compare(model, feeds(rng, (2, 3, 6, 6), 8.0))
    assert_exact(pairs)
    assert np.abs(pairs["t"][0]).max() > 16  # the shifts are not trivially zero


def test_trunc_v2_output_scale_and_clamp():
    rng = np.random.default_rng(4)
    b = Builder()
    b.quant("x", "xq", 2.0 ** -3, 8)
    w, _ = pow2_weights(rng, (4, 3, 3, 3), 4)
    b.const("w", w)
    b.quant("w", "wq", np.float32(2.0 ** -4), 4)
    b.node("Conv", ["xq", "wq"], "c", kernel_shape=[3, 3])
    b.node("Relu", ["c"], "r")
    b.trunc("r", "y", 2.0 ** -7, 16, 4, "FLOOR", out_scale=2.0 ** -4)
    model = b.model((2, 3, 6, 6), "y", qonnx_opset=2)
    pairs, _, _ = compare(model, feeds(rng, (2, 3, 6, 6), 8.0))
    assert_exact(pairs)
    assert pairs["y"][0].min() == 0 and pairs["y"][0].max() == 7  # Relu, then the signed 4-bit clamp


def test_requantize_activation_and_relu_on_codes():
    """Quant of a quantized tensor (power-of-two ratio: round_shift; otherwise dequantize+quantize),
    Relu on signed codes, a MatMul layer, an accumulator graph output, a bias Add after Gemm."""
    rng = np.random.default_rng(5)
    b = Builder()
    b.quant("x", "xq", 2.0 ** -3, 8)
    b.node("Relu", ["xq"], "xr")
    b.quant("xr", "xs", 2.0 ** -1, 4, signed=False, rounding="FLOOR")
    b.quant("xs", "xt", 0.3, 4, signed=False)
    b.node("Flatten", ["xt"], "f")
    b.const("w", (rng.integers(-7, 8, size=(12, 3)) * 2.0 ** -3).astype(np.float32))
    b.quant("w", "wq", 2.0 ** -3, 4)
    b.node("MatMul", ["f", "wq"], "m")
    b.quant("m", "mq", 2.0 ** -2, 8)
    b.const("w2", (rng.integers(-7, 8, size=(2, 3)) * 2.0 ** -3).astype(np.float32))
    b.quant("w2", "w2q", 2.0 ** -3, 4)
    b.node("Gemm", ["mq", "w2q"], "g", transB=1)
    b.const("bias", np.array([0.25, -1.5], np.float32))
    b.node("Add", ["g", "bias"], "y")
    model = b.model((3, 3, 2, 2), "y")
    g = import_qonnx(model)
    assert [n.op for n in g.nodes] == ["quantize", "round_shift", "round_shift", "dequantize", "quantize",
                                       "flatten", "matmul", "requantize", "gemm", "dequantize"]
    f = feeds(rng, (3, 3, 2, 2), 2.0)
    pairs, got, ctx = compare(model, f)
    assert_exact(pairs)
    np.testing.assert_array_equal(got["y"], ctx["y"])  # float output of the accumulator, exact


def test_non_power_of_two_scales_within_one_lsb():
    """Arbitrary float scales: qonnx's float conv rounds differently from npusim's integer
    accumulator + float32 multiplier, so codes may differ by 1 LSB at near-ties only."""
    rng = np.random.default_rng(6)
    ws = ((rng.uniform(0.02, 0.1, (6, 1, 1, 1))).astype(np.float32), np.float32(0.137), np.float32(0.0713))
    model = conv_net(rng, weight_scale=ws, act_scale=0.0371, bias=False)
    total = differ = 0
    for seed in range(20):
        pairs, _, _ = compare(model, feeds(np.random.default_rng(100 + seed), scale=1.0))
        for ours, ref in pairs.values():
            assert np.abs(ours - ref).max() <= 1
            total += ours.size
            differ += int((ours != ref).sum())
    assert total > 10000
    assert differ / total < 1e-3, (differ, total)


# ---------------------------------------------------------------- round_shift and sign, golden and fast, against exact rationals

SHIFT_KERNELS = [pytest.param(golden_shift, id="golden"), pytest.param(fast_shift, id="fast")]


def _ref_round(fr: Fraction, mode: str) -> int:
    """The rounding modes on an exact rational, as their definitions say."""
    fl, ce = math.floor(fr), math.ceil(fr)
    if mode == "FLOOR":
        return fl
    if mode == "CEIL":
        return ce
    if mode == "DOWN":
        return fl if fr >= 0 else ce
    if mode == "UP":
        return ce if fr >= 0 else fl
    if fr - fl != Fraction(1, 2):
        return fl if fr - fl < Fraction(1, 2) else ce
    return {"HALF_EVEN": fl if fl % 2 == 0 else ce, "HALF_UP": ce if fr > 0 else fl,
            "HALF_DOWN": fl if fr > 0 else ce}[mode]


@pytest.mark.parametrize("k", SHIFT_KERNELS)
@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-2 ** 31, 2 ** 31 - 1), min_size=1, max_size=8), st.integers(-8, 40),
       st.sampled_from(sorted(set(ROUNDINGS.values()))), st.integers(-128, 127), st.integers(-20, 20))
def test_round_shift_matches_exact_rounding(k, xs, shift, mode, x_zp, y_zp):
    x = np.array(xs, np.int32)
    got = k.round_shift(x, x_zp, np.array([shift]), 0, mode, y_zp, -2 ** 40, 2 ** 40, np.int64)
    want = [_ref_round(Fraction(v - x_zp) / Fraction(2) ** shift + y_zp, mode) for v in xs]
    assert got.tolist() == want


@pytest.mark.parametrize("k", SHIFT_KERNELS)
def test_round_shift_edges_and_per_channel(k):
    x = np.array([[-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6]] * 2, np.int32)
    half_even = k.round_shift(x, 0, np.array([1, 2]), 0, "HALF_EVEN", 0, -128, 127, np.int8)
    assert half_even.tolist() == [[-3, -2, -2, -2, -1, 0, 0, 0, 1, 2, 2, 2, 3],
                                  [-2, -1, -1, -1, 0, 0, 0, 0, 0, 1, 1, 1, 2]]
    assert k.round_shift(x[0], 0, np.array([1]), 0, "FLOOR", 0, -2, 1, np.int8).tolist() == \
        [-2, -2, -2, -2, -1, -1, 0, 0, 1, 1, 1, 1, 1]  # clamped to i2
    assert k.round_shift(np.array([2 ** 31 - 1, -2 ** 31], np.int32), 0, np.array([31]), 0, "HALF_UP", 0,
                       -8, 7, np.int8).tolist() == [1, -1]
    assert k.round_shift(np.array([3], np.int32), 1, np.array([-3]), 0, "FLOOR", 0, 0, 255, np.uint8).tolist() == [16]
    per_axis1 = k.round_shift(x.T.copy(), 0, np.array([1, 2]), 1, "UP", 0, -128, 127, np.int8)
    assert per_axis1.T.tolist() == [[-3, -3, -2, -2, -1, -1, 0, 1, 1, 2, 2, 3, 3],  # away from zero
                                    [-2, -2, -1, -1, -1, -1, 0, 1, 1, 1, 1, 2, 2]]
    assert k.round_shift(np.int16(-7), 0, np.array([2]), 0, "HALF_DOWN", 3, -128, 127, np.int8).shape == ()


@pytest.mark.parametrize("k", SHIFT_KERNELS)
def test_sign_bipolar(k):
    x = np.array([np.nan, -0.0, 0.0, -1e-30, 0.25, -3.0, np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(k.sign(x, 0), np.array([-1, 1, 1, -1, 1, -1, 1, -1], np.int8))
    np.testing.assert_array_equal(k.sign(x, 0.25), np.array([-1, -1, -1, -1, 1, -1, 1, -1], np.int8))
    y = k.sign(np.arange(6, dtype=np.uint8).reshape(2, 3), 3)
    assert y.dtype == np.int8 and y.tolist() == [[-1, -1, -1], [1, 1, 1]]


# ---------------------------------------------------------------- detection, errors, save/load

def test_is_qonnx_and_old_domains():
    model = conv_net(np.random.default_rng(0))
    assert is_qonnx(model)
    for domain in ("onnx.brevitas", "finn.custom_op.general"):  # older exports: same ops, same IR
        old = onnx.ModelProto()
        old.CopyFrom(model)
        for n in old.graph.node:
            if n.domain == D:
                n.domain = domain
        assert is_qonnx(old)
        assert ir.graphs_equal(import_qonnx(old), import_qonnx(model))
    n = helper.make_node("Relu", ["x"], ["y"])
    g = helper.make_graph([n], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    assert not is_qonnx(helper.make_model(g))


@pytest.mark.parametrize("build", ["conv_net", "bn_mlp", "bipolar_mlp"])
def test_ir_saves_and_loads(tmp_path, build):
    """Also multithresholds (int and float thresholds) and single-node host islands."""
    g = import_qonnx(globals()[build](np.random.default_rng(0)))
    ir.save(g, tmp_path / "g.npz")
    assert ir.graphs_equal(g, ir.load(tmp_path / "g.npz"))


def _single_layer(quant_kwargs=None, after=None, wscale=2.0 ** -3, multithreshold=False):
    rng = np.random.default_rng(7)
    b = Builder()
    b.quant("x", "xq", 2.0 ** -3, 8)
    b.const("w", (rng.integers(-7, 8, size=(4, 3, 1, 1)) * 2.0 ** -3).astype(np.float32))
    b.quant("w", "wq", wscale, 4)
    b.node("Conv", ["xq", "wq"], "c", kernel_shape=[1, 1])
    src = "c"
    if after:
        src = b.node(after, [src], "h")
    if multithreshold:
        b.const("thr", np.zeros((4, 3), np.float32))
        b.nodes.append(helper.make_node("MultiThreshold", [src, "thr"], ["mt"], domain=D, name="mt"))
        src = "mt"
    b.quant(src, "y", **(quant_kwargs or {"scale": 2.0 ** -2, "bits": 8}))
    return b.model((1, 3, 2, 2), "y")


@pytest.mark.parametrize("model, message", [
    (lambda: _single_layer(multithreshold=True), "node 'mt' (MultiThreshold): QONNX op MultiThreshold"),
    (lambda: _single_layer({"scale": 0.25, "bits": 16}), "node 'q_y' (Quant): 16-bit activations"),
    (lambda: _single_layer({"scale": 0.25, "bits": 8, "zp": 0.5}), "node 'q_y' (Quant): zero point must be one"),
    (lambda: _single_layer({"scale": 0.25, "bits": 8, "rounding": "SIDEWAYS"}), "unknown rounding_mode 'SIDEWAYS'"),
    (lambda: _single_layer(wscale=np.full((1, 3, 1, 1), 0.125, np.float32)),
     "node 'conv_c' (Conv): weight W 'wq' is quantized along axis 1"),
])
def test_errors_name_the_node(model, message):
    with pytest.raises(NpusimError, match=message.replace("(", r"\(").replace(")", r"\)")):
        import_qonnx(model())


def test_float_layers_run_on_the_host_bit_exact():
    """A Conv on the float input (no Quant before it, as QKeras exports a first layer) and a
    Sigmoid on an accumulator have no integer form: they run in host islands on the float32
    values qonnx computes (the weights' Quant output, the dequantized accumulator), then Quant."""
    rng = np.random.default_rng(8)
    b = Builder()
    b.const("w", (rng.integers(-7, 8, size=(4, 3, 3, 3)) * 2.0 ** -3).astype(np.float32))
    b.quant("w", "wq", 2.0 ** -3, 4)
    b.node("Conv", ["x", "wq"], "c", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    b.quant("c", "cq", 2.0 ** -2, 6)
    b.const("w2", (rng.integers(-7, 8, size=(2, 4, 1, 1)) * 2.0 ** -3).astype(np.float32))
    b.quant("w2", "w2q", 2.0 ** -3, 4)
    b.node("Conv", ["cq", "w2q"], "c2", kernel_shape=[1, 1])
    b.node("Sigmoid", ["c2"], "s")
    b.quant("s", "y", 2.0 ** -7, 8, signed=False)
    model = b.model((2, 3, 5, 5), "y")
    g = import_qonnx(model)
    assert [n.op for n in g.nodes] == ["host", "quantize", "conv", "dequantize", "host", "quantize", "dequantize"]
    assert [n.attrs["ops"] for n in g.nodes if n.op == "host"] == [("Conv:conv_c",), ("Sigmoid:sigmoid_s",)]
    f = {"x": (rng.integers(-16, 16, size=(2, 3, 5, 5)) / 8).astype(np.float32)}
    pairs, got, ctx = compare(model, f)
    assert set(pairs) == {"cq", "y"}
    assert_exact(pairs)
    for name in ("c", "s", "y"):
        np.testing.assert_array_equal(got[name], ctx[name], err_msg=name)
    assert len(np.unique(pairs["y"][1])) > 20


def test_qkeras_float_first_layer_and_softmax_tail_bit_exact():
    """QKeras' export: the float input straight into a MatMul by quantized weights, a quantized
    bias Add, Relu, Quant; a last MatMul + bias + Softmax. The float layers run as qonnx runs them:
    each node alone on onnxruntime with its weights fed, not prepacked (at batch 1 a prepacked
    weight gives other float32 sums); the first layer's bias + Relu + Quant are thresholds on its
    float output. Arbitrary float weights and input: the float values must still be equal."""
    rng = np.random.default_rng(12)
    b = Builder()
    b.const("w1", rng.standard_normal((16, 64)) * 0.5)
    b.quant("w1", "w1q", 2.0 ** -5, 6)
    b.node("MatMul", ["x", "w1q"], "m1")
    b.const("b1", rng.standard_normal(64) * 0.5)
    b.quant("b1", "b1q", 2.0 ** -5, 6)
    b.node("Add", ["m1", "b1q"], "h1")
    b.node("Relu", ["h1"], "r1")
    b.quant("r1", "a1", 2.0 ** -6, 6, signed=False)
    b.dense("a1", "m2", rng.standard_normal((64, 5)) * 0.3, 2.0 ** -5, 6)
    b.const("b2", rng.standard_normal(5))
    b.node("Add", ["m2", "b2"], "h2")
    b.node("Softmax", ["h2"], "y", axis=1)
    model = b.model((1, 16), "y")
    sess = npusim.InferenceSession(import_qonnx(model))
    assert sess.host_fallback == ["matmul_m1", "add_h2", "softmax_y"]
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 16)).astype(np.float32)
        ctx = execute_onnx(ModelWrapper(model).transform(InferShapes()), {"x": x}, return_full_exec_context=True)
        got = sess.run_all({"x": x})
        np.testing.assert_array_equal(got["a1"], np.round(ctx["a1"] / 2.0 ** -6))
        for name in ("m1", "h2", "y"):
            np.testing.assert_array_equal(got[name], ctx[name], err_msg=name)


@pytest.mark.parametrize("rounding", ["FLOOR", "CEIL", "HALF_UP", "DOWN"])
def test_rounding_modes_without_power_of_two_scales(rounding):
    """A rounding mode other than ROUND where no exact shift expresses the Quant (on the float
    input, on an accumulator with multiplier 2^-6/0.3, on codes with ratio 0.3/0.45): the steps
    of qonnx's own codes as thresholds (multithreshold), bit-exact."""
    rng = np.random.default_rng(11)
    b = Builder()
    b.quant("x", "xq", 2.0 ** -3, 8, rounding=rounding)
    w, _ = pow2_weights(rng, (4, 3, 3, 3), 4)
    b.const("w", w)
    b.quant("w", "wq", np.float32(2.0 ** -3), 4)
    b.node("Conv", ["xq", "wq"], "c", kernel_shape=[3, 3])
    b.quant("c", "a", 0.3, 5, rounding=rounding)
    b.quant("a", "y", 0.45, 4, signed=False, zp=3.0, rounding=rounding)
    model = b.model((2, 3, 5, 5), "y")
    g = import_qonnx(model)
    assert [n.op for n in g.nodes] == ["multithreshold", "conv", "multithreshold", "multithreshold", "dequantize"]
    pairs, _, _ = compare(model, feeds(rng, (2, 3, 5, 5), 4.0))
    assert_exact(pairs)
    assert all(len(np.unique(ours)) > 4 for ours, _ in pairs.values())


# ---------------------------------------------------------------- exported-MLP patterns (Brevitas, FINN, QKeras)

def bn_mlp(rng):
    """The patterns of Brevitas/FINN MLP exports: Shape/Gather/Unsqueeze/Concat building a
    Reshape's shape, float pre-processing (Mul, Sub) before the first Quant (2-bit narrow),
    weights as Quant -> Transpose -> MatMul, BatchNormalization between a MatMul and its Quant
    (one channel with a negative gamma: a decreasing step), a float bias Add (not a multiple of
    the accumulator scale) + Relu before a Quant, and a float Mul/Add tail after the last MatMul
    (the graph output). Scales of weights and activations are powers of two, so qonnx's float
    MatMul is exact and every code must be equal; BN and the bias are arbitrary floats."""
    b = Builder()
    b.node("Shape", ["x"], "shp")
    b.const("i0", np.array(0), np.int64)
    b.node("Gather", ["shp", "i0"], "n", axis=0)
    b.const("ax0", [0], np.int64)
    b.node("Unsqueeze", ["n", "ax0"], "n1")
    b.const("minus1", [-1], np.int64)
    b.node("Concat", ["n1", "minus1"], "shape", axis=0)
    b.node("Reshape", ["x", "shape"], "xf")
    b.const("two", np.array(2.0))
    b.node("Mul", ["xf", "two"], "x2")
    b.const("one", [1.0])
    b.node("Sub", ["x2", "one"], "x3")
    b.quant("x3", "xq", 1.0, 2, narrow=True)
    w1_scale = (2.0 ** rng.integers(-3, 0, size=(8, 1))).astype(np.float32)
    b.const("w1", (rng.integers(-4, 5, size=(8, 16)) * w1_scale).astype(np.float32))
    b.quant("w1", "w1q", w1_scale, 3, narrow=True)
    b.node("Transpose", ["w1q"], "w1t", perm=[1, 0])
    b.node("MatMul", ["xq", "w1t"], "m1")
    gamma = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    gamma[3] = -1.3
    b.batchnorm("m1", "bn", rng, gamma, epsilon=1e-3)
    b.quant("bn", "a1", 0.25, 3, signed=False)
    b.dense("a1", "m2", rng.integers(-7, 8, size=(8, 6)) * 2.0 ** -3, 2.0 ** -3, 4)
    b.const("bias2", rng.uniform(-1, 1, 6))
    b.node("Add", ["m2", "bias2"], "h2")
    b.node("Relu", ["h2"], "r2")
    b.quant("r2", "a2", 0.125, 4, signed=False)
    b.dense("a2", "m3", rng.integers(-7, 8, size=(6, 5)) * 2.0 ** -2, 2.0 ** -2, 4)
    b.const("k3", rng.uniform(-2, 2, 5))
    b.node("Mul", ["m3", "k3"], "t3")
    b.const("c3", rng.uniform(-1, 1, 5))
    b.node("Add", ["t3", "c3"], "y")
    return b.model((3, 1, 4, 4), "y")


def bipolar_mlp(rng):
    """A binarized MLP: BipolarQuant on the input and the first weights, BatchNormalization
    between MatMul and a BipolarQuant activation, 1-bit signed Quant weights and a 1-bit Quant
    activation after a per-channel Mul/Add chain (negative factors: decreasing), an 8-bit head."""
    b = Builder()
    b.bipolar("x", "xb", 1.0)
    b.const("w1", rng.standard_normal((12, 10)))
    b.bipolar("w1", "w1b", 0.5)
    b.node("MatMul", ["xb", "w1b"], "m1")
    b.batchnorm("m1", "bn", rng, rng.uniform(-2, 2, 10))
    b.bipolar("bn", "a1", 1.0)
    b.dense("a1", "m2", rng.standard_normal((10, 7)), 0.25, 1, signed=True)
    b.const("k2", rng.uniform(-2, 2, 7))
    b.node("Mul", ["m2", "k2"], "t2")
    b.const("c2", rng.uniform(-0.5, 0.5, 7))
    b.node("Add", ["t2", "c2"], "h2")
    b.quant("h2", "a2", 0.5, 1, signed=True)
    b.dense("a2", "m3", rng.integers(-1, 2, size=(7, 4)) * 0.5, 0.5, 2)
    b.quant("m3", "y", 2.0 ** -3, 8)
    return b.model((5, 12), "y")


@pytest.mark.parametrize("mode", ["ort", "npu"])
@pytest.mark.parametrize("kernels", ["fast", "golden"])
def test_bn_mlp_bit_exact_with_qonnx(kernels, mode):
    model = bn_mlp(np.random.default_rng(9))
    g = import_qonnx(model)
    assert [n.op for n in g.nodes] == ["reshape", "multithreshold", "matmul", "multithreshold", "matmul",
                                       "multithreshold", "matmul", "dequantize", "host", "host"]
    assert [n.source for n in g.nodes if n.op == "host"] == ["mul_t3", "add_y"]  # the float tail; the rest integer
    thr = g.nodes[3].attrs
    assert thr["chain"] == ("BatchNormalization:batchnormalization_bn",) and thr["thresholds"].shape == (8, 7)
    assert thr["step"].tolist() == [1, 1, 1, -1, 1, 1, 1, 1]  # gamma[3] < 0
    assert g.nodes[1].attrs["thresholds"].dtype == np.float32  # the pre-processing folded into the first Quant
    sess = npusim.InferenceSession(g, mode=mode, kernels=kernels)
    for seed in range(3):
        x = np.random.default_rng(seed).uniform(0, 1, (3, 1, 4, 4)).astype(np.float32)
        x[0, 0, 0, :3] = (0.25, 0.75, 0.5)  # 2x − 1 = −0.5, 0.5, 0: ties, rounded half to even
        ctx = execute_onnx(ModelWrapper(model).transform(InferShapes()), {"x": x}, return_full_exec_context=True)
        got = sess.run_all({"x": x})
        for name in ("xq", "a1", "a2"):
            scale, zp = Builder_params(model)[name]
            np.testing.assert_array_equal(got[name], np.round(ctx[name] / scale) + zp, err_msg=name)
            assert len(np.unique(got[name])) > 1
        np.testing.assert_array_equal(got["y"], ctx["y"])


@pytest.mark.parametrize("mode", ["ort", "npu"])
def test_bipolar_mlp_bit_exact_with_qonnx(mode):
    model = bipolar_mlp(np.random.default_rng(10))
    g = import_qonnx(model)
    assert [n.op for n in g.nodes] == ["sign", "matmul", "multithreshold", "matmul", "multithreshold", "matmul",
                                       "round_shift", "dequantize"]
    assert [g.tensors[t].dtype for t in ("xb", "w1b", "a1", "m2_wq", "a2")] == ["i2"] * 5
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((5, 12)).astype(np.float32)
        x[0, :2] = (0.0, -0.0)
        pairs, got, ctx = compare(model, {"x": x})
        assert set(pairs) == {"xb", "a1", "a2", "y"}
        assert_exact(pairs)
        assert set(np.unique(got["a1"])) == set(np.unique(got["a2"])) == {-1, 1}
        np.testing.assert_array_equal(got["y"], ctx["y"])


def test_conv_bn_relu_and_scaled_codes_bit_exact():
    """The conv-net forms of the same patterns: Conv (per-channel weights) -> BatchNormalization
    -> Relu -> Quant with a zero point (thresholds per channel on axis 1 of NCHW), then a
    per-channel Mul of the codes (1, C, 1, 1) -> Quant (thresholds on the codes)."""
    rng = np.random.default_rng(13)
    b = Builder()
    b.quant("x", "xq", 2.0 ** -4, 8)
    w, s = pow2_weights(rng, (6, 3, 3, 3), 4)
    b.const("w", w)
    b.quant("w", "wq", s, 4)
    b.node("Conv", ["xq", "wq"], "c", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    b.batchnorm("c", "bn", rng, rng.uniform(-2, 2, 6))
    b.node("Relu", ["bn"], "r")
    b.quant("r", "a", 0.1, 4, signed=False, zp=2.0)
    b.const("k", rng.uniform(0.5, 2, (1, 6, 1, 1)))
    b.node("Mul", ["a", "k"], "am")
    b.quant("am", "y", 0.3, 5)
    model = b.model((2, 3, 6, 6), "y")
    g = import_qonnx(model)
    assert [n.op for n in g.nodes] == ["quantize", "conv", "multithreshold", "multithreshold", "dequantize"]
    assert g.nodes[2].attrs["thresholds"].shape == (6, 13) and g.nodes[2].attrs["axis"] == 1  # codes 2..15
    for seed in range(3):
        pairs, _, _ = compare(model, feeds(np.random.default_rng(seed), (2, 3, 6, 6), 3.0))
        assert set(pairs) == {"xq", "a", "y"}
        assert_exact(pairs)
        assert pairs["a"][0].min() == 2 and len(np.unique(pairs["y"][0])) > 6


def test_host_op_with_an_integer_output():
    """A float tail ending in ArgMax: the host island's int64 output is the graph output, as in qonnx."""
    rng = np.random.default_rng(14)
    b = Builder()
    b.quant("x", "xq", 2.0 ** -4, 8)
    b.dense("xq", "m", rng.integers(-7, 8, (16, 5)) * 2.0 ** -3, 2.0 ** -3, 4)
    b.node("Softmax", ["m"], "s", axis=1)
    b.node("ArgMax", ["s"], "y", axis=1)
    model = b.model((6, 16), "y")
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.INT64
    g = import_qonnx(model)
    assert [n.op for n in g.nodes] == ["quantize", "matmul", "dequantize", "host", "host"]
    assert g.tensors["y"].dtype == "i64"
    x = rng.standard_normal((6, 16)).astype(np.float32)
    want = execute_onnx(ModelWrapper(model).transform(InferShapes()), {"x": x})["y"]
    got = npusim.InferenceSession(g).run(None, {"x": x})[0]
    assert got.dtype == np.int64 and len(np.unique(want)) > 1
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- multithreshold, golden and fast

@pytest.mark.parametrize("k", SHIFT_KERNELS)
def test_multithreshold_edges(k):
    x = np.array([[-2 ** 31, -5, -4, 0, 3, 2 ** 31 - 1]] * 2, np.int32).T  # channels on axis 1
    thr = np.array([[-4, 0, 0, 2 ** 31], [-5, 3, 2 ** 31, 2 ** 31]], np.int64)  # a double step; padding
    y = k.multithreshold(x, thr, np.array([0, 7]), np.array([1, -1]), 1)
    assert y.T.tolist() == [[0, 0, 1, 3, 3, 3], [7, 6, 6, 6, 5, 5]]
    xf = np.array([np.nan, -np.inf, -0.0, 0.0, 0.25, 0.5, np.inf], np.float32)
    yf = k.multithreshold(xf, np.array([[-0.0, 0.5, np.nan]], np.float32), np.array([-1]), np.array([2]), 0)
    assert yf.tolist() == [-1, -1, 1, 1, 1, 3, 3]
    node = ir.Node("multithreshold", "t", ("x",), ("y",), {"thresholds": thr, "base": np.array([0, 7]),
                                                          "step": np.array([1, -1]), "axis": 1, "dtype": "i8"})
    np.testing.assert_array_equal(fakequant.ARITHMETIC["multithreshold"](node, "double", x)[0], y)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.booleans(), st.integers(1, 4), st.integers(0, 9))
def test_multithreshold_fast_equals_golden(seed, flt, channels, levels):
    rng = np.random.default_rng(seed)
    x = rng.integers(-40, 40, size=(3, channels, 5))
    thr = np.sort(rng.integers(-50, 50, size=(channels, levels)), axis=1)
    if flt:
        x, thr = (x / 4).astype(np.float32), (thr / 4).astype(np.float32)
        x.reshape(-1)[:2] = (np.nan, -0.0)
        thr[:, levels - levels // 3:] = np.nan  # padding
    else:
        x = x.astype(np.int32)
    base, step = rng.integers(-8, 8, channels), rng.choice([-1, 1], channels)
    want = golden_shift.multithreshold(x, thr, base, step, 1)
    np.testing.assert_array_equal(fast_shift.multithreshold(x, thr, base, step, 1), want)
    count = (x[..., None] >= thr[None, :, None, :]).sum(-1)  # the definition, by broadcasting
    np.testing.assert_array_equal(want, base[None, :, None] + step[None, :, None] * count)
