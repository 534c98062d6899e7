"""npusim quantize: BatchNormalization folding, WESS shifts, the re-quantized weights and biases
of every scheme and bit width, sub-8-bit activations in the metadata, accuracy, and CLI errors."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import npusim
import npusim_models as zoo
from npusim.errors import NpusimError
from npusim.cli import build_parser
from npusim.quantize import NpzReader, fold_batchnorm, quantize, quantize_weights, weight_scales, wess_shifts

DIGITS = zoo.path("digits_float")
LAYERS = {"conv1": ("w1", "b1", 0), "dwconv2": ("w2", "b2", 0), "pwconv3": ("w3", "b3", 0),
          "conv4": ("w4", "b4", 0), "fc": ("w5", "b5", 0)}  # layer -> weight, bias, channel axis


class Reader:
    def __init__(self, feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


def calib(count=16):
    return Reader(zoo.sample_inputs("digits_float", count, seed=1))


def inits(path):
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}


def run_ort(model, feeds):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no folding of its own
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, feeds)


# ---------------------------------------------------------------- BatchNormalization folding

def _bn(rng, name, c, x):
    arrays = [rng.uniform(0.5, 2, c), rng.normal(0, 1, c), rng.normal(0, 1, c), rng.uniform(0.1, 3, c)]
    names = [f"{name}_{k}" for k in ("gamma", "beta", "mean", "var")]
    inits_ = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in zip(arrays, names)]
    return helper.make_node("BatchNormalization", [x, *names], [f"{name}_out"], name, epsilon=1e-3), inits_


def test_fold_batchnorm_matches_onnxruntime():
    """Conv(+bias)->BN, grouped Conv(no bias)->BN, ConvTranspose->Add->BN, ConvTranspose(+bias)->BN
    all fold; a Conv whose output has a second user keeps its BN. Outputs agree with the
    unfolded model run by onnxruntime (no optimization) to float tolerance."""
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.normal(0, 0.5, s).astype(np.float32)  # noqa: E731
    nodes, init = [], [numpy_helper.from_array(a, n) for a, n in [
        (f32(8, 4, 3, 3), "w_a"), (f32(8), "b_a"), (f32(8, 4, 3, 3), "w_b"), (f32(8, 6, 2, 2), "w_c"),
        (f32(1, 6, 1, 1), "add_c"), (f32(8, 5, 3, 3), "w_d"), (f32(5), "b_d"), (f32(6, 8, 1, 1), "w_e")]]
    nodes.append(helper.make_node("Conv", ["x", "w_a", "b_a"], ["ya"], "conv_a", pads=[1, 1, 1, 1]))
    nodes.append(helper.make_node("Conv", ["ya", "w_b"], ["yb"], "conv_b", pads=[1, 1, 1, 1], group=2))
    nodes.append(helper.make_node("ConvTranspose", ["yb", "w_c"], ["yc"], "ct_c", strides=[2, 2]))
    nodes.append(helper.make_node("Add", ["yc", "add_c"], ["yc2"], "add_c"))
    nodes.append(helper.make_node("ConvTranspose", ["yb", "w_d", "b_d"], ["yd"], "ct_d"))
    nodes.append(helper.make_node("Conv", ["bn_a_out", "w_e"], ["ye"], "conv_e"))  # ye is an output: no fold
    for name, c, x in [("bn_a", 8, "ya"), ("bn_b", 8, "yb"), ("bn_c", 6, "yc2"), ("bn_d", 5, "yd"),
                       ("bn_e", 6, "ye")]:
        node, extra = _bn(rng, name, c, x)
        nodes.append(node)
        init += extra
    nodes[1].input[0] = "bn_a_out"
    nodes[2].input[0] = nodes[4].input[0] = "bn_b_out"
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
            for n in ("bn_c_out", "bn_d_out", "bn_e_out", "ye")]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              outs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = rng.normal(0, 1, (1, 4, 6, 6)).astype(np.float32)
    want = run_ort(model, {"x": x})
    folded = fold_batchnorm(onnx.ModelProto.FromString(model.SerializeToString()))
    assert [n.name for n in folded.graph.node if n.op_type == "BatchNormalization"] == ["bn_e"]
    assert not any(n.op_type == "Add" for n in folded.graph.node)
    for got, ref in zip(run_ort(folded, {"x": x}), want):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
        assert np.abs(ref).max() > 1  # real values, not all zero


# ---------------------------------------------------------------- WESS and weight quantization

def test_wess_shifts_hand_made():
    ranges = [1.0, 0.5, 0.3, 0.25, 2.0 ** -20, 0.0]
    w = np.zeros((6, 2, 1, 1), np.float32)
    w[:, 0, 0, 0] = ranges
    w[:, 1, 0, 0] = -np.array(ranges, np.float32) / 4  # the range is the max |w| of the channel
    assert wess_shifts(w).tolist() == [0, 1, 1, 2, 15, 15]
    scales, shifts = weight_scales(w, "wess", 8)
    assert shifts.tolist() == [0, 1, 1, 2, 15, 15]
    assert scales.dtype == np.float32 and scales[0] == np.float32(1.0 / 127)
    np.testing.assert_array_equal(scales, np.ldexp(scales[0], -shifts.astype(int)))  # exact powers of two apart
    mant, exp = np.frexp(scales)
    assert np.all(mant == mant[0]) and (exp.max() - exp).tolist() == shifts.tolist()
    q = quantize_weights(w, scales, 8)
    assert q[:, 0, 0, 0].tolist() == [127, 127, 76, 127, 4, 0]  # 0.3·2·127 = 76.2, 2^-20·2^15·127 = 3.97
    # Gemm weight [K, N] (transB = 0): channels along axis 1
    assert wess_shifts(w[:, :, 0, 0].T.copy(), axis=1).tolist() == [0, 1, 1, 2, 15, 15]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 20), st.integers(2, 8), st.integers(0, 2**31 - 1),
       st.sampled_from(["per-tensor", "per-channel", "wess"]))
def test_weight_quantization_properties(channels, fan_in, wbits, seed, scheme):
    rng = np.random.default_rng(seed)
    w = (rng.normal(0, 1, (channels, fan_in)) * 2.0 ** rng.integers(-18, 3, (channels, 1))).astype(np.float32)
    w[rng.random(channels) < 0.15] = 0  # some all-zero channels
    r = np.abs(w.astype(np.float64)).max(axis=1)
    s = wess_shifts(w).astype(int)
    assert np.all(np.ldexp(r, s) <= r.max())
    assert np.all((s == 15) | (np.ldexp(r, s + 1) > r.max()))
    scales, _ = weight_scales(w, scheme, wbits)
    q = quantize_weights(w, scales, wbits)
    qmax = 2 ** (wbits - 1) - 1
    assert q.dtype == np.int8 and np.abs(q).max() <= qmax
    step = np.broadcast_to(scales.astype(np.float64).reshape(-1, 1), w.shape)
    err = np.abs(q * step - w)
    clipped = np.abs(q) == qmax
    assert np.all(err[~clipped] <= step[~clipped] * (0.5 + 1e-6))  # round to nearest inside the range
    assert np.all(np.abs(w[clipped]) >= (qmax - 0.5) * step[clipped] * (1 - 1e-6))


# ---------------------------------------------------------------- the written model

@pytest.mark.parametrize("scheme", ["per-tensor", "per-channel", "wess"])
@pytest.mark.parametrize("wbits", range(2, 9))
def test_quantized_model_weights_and_biases(tmp_path, scheme, wbits):
    fmt = "qdq" if wbits % 2 else "qoperator"
    res = quantize(DIGITS, tmp_path / "q.onnx", calib(8), scheme=scheme, wbits=wbits, quant_format=fmt, progress=False)
    q, f = inits(res.onnx), inits(DIGITS)
    qmax = 2 ** (wbits - 1) - 1
    x = zoo.sample_inputs("digits_float", 1, seed=5)[0]
    (logits,) = ort.InferenceSession(str(res.onnx), providers=["CPUExecutionProvider"]).run(None, x)
    assert logits.shape == (1, 10) and np.isfinite(logits).all()
    for layer, (wn, bn, axis) in LAYERS.items():
        wq, ws, w = q[f"{wn}_quantized"], q[f"{wn}_scale"], f[wn]
        assert wq.dtype == np.int8 and np.abs(wq).max() <= qmax and np.abs(wq).max() == qmax
        assert not q[f"{wn}_zero_point"].any()
        assert ws.size == (1 if scheme == "per-tensor" else w.shape[axis])
        step = ws.astype(np.float64).reshape((-1,) + (1,) * (w.ndim - 1))
        assert np.all(np.abs(wq * step - w) <= step * (0.5 + 1e-6) + (np.abs(wq) == qmax) * np.abs(w))
        if scheme == "wess":
            mant, exp = np.frexp(ws)
            assert np.all(mant == mant[0])
            assert [s.shifts for s in res.layers if s.name == layer][0] == tuple((exp.max() - exp).tolist())
        bq = q[f"{bn}_quantized"]
        assert bq.dtype == np.int32
        x_scale = _input_scale(res.onnx, wn)
        bias_step = np.float32(x_scale) * ws.astype(np.float32)
        np.testing.assert_array_less(np.abs(bq * bias_step.astype(np.float64) - f[bn]), bias_step * 0.5 + 1e-12)
    declared = json.loads({p.key: p.value for p in onnx.load(res.onnx).metadata_props}["npusim.bits"])
    assert declared == ({} if wbits == 8 else {f"{wn}_quantized": f"i{wbits}" for wn, _, _ in LAYERS.values()})


def _input_scale(path, w_name):
    """The input scale of the layer with weight `w_name`, found by structure (QOperator input 1;
    QDQ: the DequantizeLinear feeding the layer's input 0)."""
    g = onnx.load(path).graph
    values = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type in ("QLinearConv", "QGemm") and n.input[3] == f"{w_name}_quantized":
            return values[n.input[1]]
        if n.op_type in ("Conv", "Gemm") and producer[n.input[1]].input[0] == f"{w_name}_quantized":
            return values[producer[n.input[0]].input[1]]
    raise AssertionError(w_name)


@pytest.mark.parametrize("fmt,act", [("qdq", "u8"), ("qoperator", "s8")])
def test_sub8_activations_recorded(tmp_path, fmt, act):
    ref = quantize(DIGITS, tmp_path / "a8.onnx", calib(), quant_format=fmt, activation_type=act, progress=False)
    res = quantize(DIGITS, tmp_path / "a4.onnx", calib(), abits=4, quant_format=fmt, activation_type=act,
                   progress=False)
    declared = json.loads({p.key: p.value for p in onnx.load(res.onnx).metadata_props}["npusim.bits"])
    acts = {k: v for k, v in declared.items() if not k.startswith("w")}
    assert len(acts) >= 9 and set(acts.values()) == {("u4" if act == "u8" else "i4")}
    a8, a4 = inits(ref.onnx), inits(res.onnx)
    for name in ("a4" if fmt == "qdq" else "z4", "logits"):
        lo, hi = (0, 15) if act == "u8" else (-8, 7)
        assert lo <= int(a4[f"{name}_zero_point"]) <= hi
        # the same calibrated range over 15 steps instead of 255 (the 8-bit zero point was rounded)
        np.testing.assert_allclose(a4[f"{name}_scale"], a8[f"{name}_scale"] * 255 / 15, rtol=0.02)
    graph = npusim.InferenceSession(res.ir).graph  # the IR written beside the model
    typed = {n for n, t in graph.tensors.items() if t.dtype in ("u4", "i4") and t.quant is not None}
    assert typed and typed <= set(acts)


def test_digits_accuracy_per_channel_8bit(tmp_path):
    x, y = zoo.load_digits_samples()
    res = quantize(DIGITS, tmp_path / "q.onnx", calib(32), progress=False)
    float_acc = np.mean(ort.InferenceSession(str(DIGITS)).run(None, {"input": x})[0].argmax(1) == y)
    # exact int32 sums (onnxruntime on VNNI CPUs): the model's accuracy, not this CPU's (npusim.ortisa)
    q_acc = np.mean(npusim.InferenceSession(str(res.onnx), ort_isa="avx512vnni").run(None, {"input": x})[0].argmax(1)
                    == y)
    sess = npusim.InferenceSession(res.ir, ort_isa="avx512vnni")
    npu_acc = np.mean([sess.run(None, {"input": x[i:i + 1]})[0].argmax() == y[i] for i in range(len(y))])
    assert float_acc > 0.97  # measured 0.9833 on the 359 hold-out digits
    assert q_acc >= float_acc - 0.01 and npu_acc >= float_acc - 0.01  # measured 0.9833 and 0.9833


@pytest.mark.parametrize("calibration", ["percentile", "entropy"])
def test_other_calibrations_run(tmp_path, calibration):
    res = quantize(DIGITS, tmp_path / "q.onnx", calib(8), calibration=calibration, progress=False)
    x = zoo.sample_inputs("digits_float", 1, seed=2)[0]
    assert np.isfinite(ort.InferenceSession(str(res.onnx)).run(None, x)[0]).all()


def test_layer_bits_mixed_precision(tmp_path):
    spec = tmp_path / "bits.json"
    spec.write_text(json.dumps({"conv4": {"wbits": 3}, "fc": {"abits": 5}}))
    res = quantize(DIGITS, tmp_path / "q.onnx", calib(8), layer_bits=str(spec), progress=False)
    q = inits(res.onnx)
    assert np.abs(q["w4_quantized"]).max() == 3 and np.abs(q["w1_quantized"]).max() == 127
    declared = res.bits
    assert declared == {"w4_quantized": "i3", "logits_QuantizeLinear_Output": "u5"}
    assert {s.name: (s.wbits, s.abits) for s in res.layers}["conv4"] == (3, 8)
    with pytest.raises(NpusimError, match="'conv9' is not a Conv"):
        quantize(DIGITS, tmp_path / "q.onnx", calib(8), layer_bits={"conv9": {"wbits": 4}}, progress=False)
    with pytest.raises(NpusimError, match="layer 'fc': wbits 1"):
        quantize(DIGITS, tmp_path / "q.onnx", calib(8), layer_bits={"fc": {"wbits": 1}}, progress=False)


# ---------------------------------------------------------------- CLI

def cli(argv):
    args = build_parser().parse_args(argv)
    return args.func(args)


def test_cli_quantizes_with_summary(tmp_path, capsys):
    x = np.concatenate([f["input"] for f in zoo.sample_inputs("digits_float", 8, seed=1)])
    np.savez(tmp_path / "calib.npz", images=x)  # one input: any key
    out = tmp_path / "q.onnx"
    assert cli(["quantize", str(DIGITS), "-o", str(out), "--calib", str(tmp_path / "calib.npz"), "--scheme", "wess",
                "--wbits", "6", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "conv4" in text and "wess" in text and out.exists() and out.with_suffix(".npz").exists()


@pytest.mark.parametrize("make,argv_extra,message", [
    (lambda d: np.savez(d / "c.npz", a=np.zeros((4, 1, 8, 8), np.float32), b=np.zeros((4, 1, 8, 8), np.float32)),
     [], "no array for input 'input'"),
    (lambda d: np.savez(d / "c.npz", input=np.zeros((4, 1, 7, 7), np.float32)), [],
     "calibration sample 0: input 'input' has shape (1, 1, 7, 7), the model expects (N, 1, 8, 8)"),
    (lambda d: np.savez(d / "c.npz", input=np.zeros((4, 1, 8, 8), np.float32)), ["--layer-bits", "missing.json"],
     "layer bits missing.json: cannot read"),
])
def test_cli_bad_input_one_line_error(tmp_path, make, argv_extra, message):
    make(tmp_path)
    with pytest.raises(NpusimError) as e:
        cli(["quantize", str(DIGITS), "-o", str(tmp_path / "q.onnx"), "--calib", str(tmp_path / "c.npz"),
             "--no-progress", *argv_extra])
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "q.onnx").exists()


def test_cli_rejects_bits_and_quantized_models(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["quantize", str(DIGITS), "-o", "q.onnx", "--calib", "c.npz", "--wbits", "9"])
    assert e.value.code == 2 and "--wbits" in capsys.readouterr().err
    with pytest.raises(NpusimError, match="already quantized"):
        cli(["quantize", str(zoo.path("digits_qop_pc_u8")), "-o", str(tmp_path / "q.onnx"), "--calib", "c.npz"])
    with pytest.raises(NpusimError, match="wbits 9: expected an integer in 2..8"):
        quantize(DIGITS, tmp_path / "q.onnx", calib(), wbits=9)


def test_cli_main_exit_code(tmp_path, capsys):
    from npusim import cli as npusim_cli

    code = npusim_cli.main(["quantize", str(DIGITS), "-o", str(tmp_path / "q.onnx"), "--calib",
                            str(tmp_path / "none.npz")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("npusim: error: --calib")


def test_npz_reader_feeds_batch_one(tmp_path):
    np.savez(tmp_path / "c.npz", input=np.arange(3 * 64, dtype=np.float64).reshape(3, 1, 8, 8))
    r = NpzReader(tmp_path / "c.npz", ["input"])
    feeds = [r.get_next() for _ in range(4)]
    assert feeds[3] is None and all(f["input"].shape == (1, 1, 8, 8) for f in feeds[:3])
    assert feeds[2]["input"].dtype == np.float32 and feeds[2]["input"][0, 0, 0, 0] == 128
