"""Mode "npu" fuses QDQ patterns itself (npusim.frontend.qdq_fusion), without onnxruntime.

1. LiteRT's int8 models as tf2onnx converts them (../shared/litert, NHWC and NCHW): no host
   island, and bit-exact with LiteRT's reference kernels (ref_*) on all 5 input sets.
2. Small QDQ models built here (u8 / s8 activations, per-channel 8-bit and 4-bit weights,
   int32 bias, Relu / Clip clamps, MaxPool, Concat, GlobalAveragePool, Gemm): mode npu equals
   the float64 fake-quantization reference (npusim.fakequant) bit for bit, and the float QDQ
   model as ONNX's reference evaluator computes it within 1 LSB.
3. Importing in mode npu never touches onnxruntime.
"""
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import npusim
from npusim import fakequant
from npusim.frontend import import_onnx
from npusim.ir import is_quantized, qrange

LITERT = Path(__file__).resolve().parents[2] / "shared" / "litert"
MODELS = sorted(p.name for p in LITERT.glob("*.onnx")) if LITERT.is_dir() else []
SINGLE_OP = {"avgpool2x2": "avgpool", "softmax": "softmax"}


def _litert_sets(name):
    """[(feeds, reference outputs)] of the 5 input sets, transposed to NCHW for a .nchw model."""
    data = np.load(LITERT / f"{name.split('.')[0]}.npz")
    nchw = name.endswith(".nchw.onnx")
    flip = (lambda a: a.transpose(0, 3, 1, 2) if nchw and a.ndim == 4 else a)
    sets = []
    for k in range(5):
        xs = [flip(data[f"in_{k}_{i}"]) for i in range(sum(key.startswith(f"in_{k}_") for key in data))]
        refs = [flip(data[f"ref_{k}_{j}"]) for j in range(sum(key.startswith(f"ref_{k}_") for key in data))]
        sets.append((xs, refs))
    return sets


@pytest.mark.skipif(not MODELS, reason="../shared/litert is not beside the clone")
@pytest.mark.parametrize("name", MODELS)
def test_litert_model_runs_on_the_npu_and_equals_litert_reference_kernels(name):
    sess = npusim.InferenceSession(str(LITERT / name), mode="npu", rounding="double")
    assert sess.host_fallback == []
    assert not [n for n in sess.graph.nodes if n.op == "host"]
    assert all(is_quantized(sess.graph.tensors[t].dtype) for n in sess.graph.nodes for t in n.outputs
               if not t.endswith("::acc"))  # integer from input to output
    single = SINGLE_OP.get(name.split(".")[0])
    if single:  # fused into one integer op of that kind
        assert [n.op for n in sess.graph.nodes if n.op != "transpose"] == [single]
    inputs = [i.name for i in sess.get_inputs()]
    for xs, refs in _litert_sets(name):
        got = sess.run(None, dict(zip(inputs, xs)))
        for g, r in zip(got, refs):
            np.testing.assert_array_equal(g, r)


@pytest.mark.skipif(not MODELS, reason="../shared/litert is not beside the clone")
def test_npu_import_needs_no_onnxruntime(monkeypatch):
    import onnxruntime

    def refuse(*args, **kwargs):
        raise AssertionError("onnxruntime was asked to load the model")
    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    graph = import_onnx(str(LITERT / "add_branches.onnx"), mode="npu")
    assert sorted({n.op for n in graph.nodes}) == ["add", "conv", "requantize", "transpose"]
    with pytest.raises(npusim.NpusimError, match="asked to load"):  # the patch does bite
        import_onnx(str(LITERT / "add_branches.onnx"), mode="ort")


# ---------------------------------------------------------------- 2. small QDQ models built here

def _codes(rng, elem, shape):
    lo, hi = {TP.INT8: (-127, 127), TP.UINT8: (0, 255), TP.INT4: (-7, 7), TP.UINT4: (0, 15)}[elem]
    return rng.integers(lo, hi + 1, shape)


def _qdq_model(act, w_elem, clamp, concat_same, seed=0):
    """x:f32 (2,4,6,6) -> Q -> DQ -> Conv 3x3 (per-channel w_elem weights, int32 bias) -> clamp -> Q
    -> DQ -> {MaxPool 2x2 -> Q (same scale), Conv 1x1 (per-tensor) -> Relu -> Q} -> DQ -> Concat -> Q
    -> DQ -> GlobalAveragePool -> Q -> DQ -> Flatten -> Gemm (per-column weights) -> Q: the output codes.
    act: TP.UINT8 or TP.INT8 activations; clamp: "relu", "relu6" (Clip 0..6) or "clip" (Clip -1..1.5)."""
    rng = np.random.default_rng(seed)
    zp = {TP.UINT8: 128, TP.INT8: 0}[act]
    nodes, inits = [], []

    def init(name, arr, elem=None):
        arr = np.asarray(arr)
        inits.append(helper.make_tensor(name, elem, arr.shape, arr.reshape(-1).tolist()) if elem is not None
                     else numpy_helper.from_array(arr, name))
        return name

    def q(x, y, scale, z=zp):
        nodes.append(helper.make_node("QuantizeLinear", [x, init(f"{y}_s", np.float32(scale)),
                                                         init(f"{y}_z", z, act)], [y]))
        return y

    def dq(x, scale, z=zp, elem=act, axis=None):
        y = f"{x}_dq"
        s = init(f"{y}_s", np.asarray(scale, np.float32))
        nodes.append(helper.make_node("DequantizeLinear", [x, s, init(f"{y}_z", z, elem)], [y],
                                      **({} if axis is None else {"axis": axis})))
        return y

    def op(kind, ins, out, **attrs):
        nodes.append(helper.make_node(kind, ins, [out], **attrs))
        return out

    xs, s1, s2, s3, s4 = 0.03, 0.02, 0.025, 0.03, 0.05
    x = dq(q("x", "xq", xs), xs)
    w1_scale = rng.uniform(0.01, 0.03, 8).astype(np.float32)
    w1 = init("w1", _codes(rng, w_elem, (8, 4, 3, 3)), w_elem)
    wz = np.zeros(8, np.int64) if w_elem in (TP.INT8, TP.INT4) else np.full(8, 8 if w_elem == TP.UINT4 else 128)
    w1d = dq(w1, w1_scale, wz, w_elem, axis=0)
    b1 = dq(init("b1", rng.integers(-200, 200, 8), TP.INT32), np.float32(xs) * w1_scale, np.zeros(8, np.int64),
            TP.INT32, axis=0)
    h = op("Conv", [x, w1d, b1], "conv1", pads=[1, 1, 1, 1])
    if clamp == "relu":
        h = op("Relu", [h], "act1")
    else:
        lo, hi = (0.0, 6.0) if clamp == "relu6" else (-1.0, 1.5)
        h = op("Clip", [h, init("clip_lo", np.float32(lo)), init("clip_hi", np.float32(hi))], "act1")
    h = dq(q(h, "h1", s1), s1)
    pooled = dq(q(op("MaxPool", [h], "pool", kernel_shape=[2, 2], strides=[2, 2]), "pooled", s1), s1)
    w2 = init("w2", _codes(rng, TP.INT8, (8, 8, 1, 1)), TP.INT8)
    small = op("Conv", [h, dq(w2, 0.02, 0, TP.INT8)], "conv2", strides=[2, 2])
    s_b = s1 if concat_same else s2
    branch = dq(q(op("Relu", [small], "act2"), "h2", s_b), s_b)
    cat = dq(q(op("Concat", [pooled, branch], "cat", axis=1), "catq", s1), s1)
    gap = dq(q(op("GlobalAveragePool", [cat], "gap"), "gapq", s3), s3)
    flat = op("Flatten", [gap], "flat")
    w3_scale = rng.uniform(0.01, 0.03, 5).astype(np.float32)
    w3 = dq(init("w3", _codes(rng, TP.INT8, (16, 5)), TP.INT8), w3_scale, np.zeros(5, np.int64), TP.INT8, axis=1)
    q(op("Gemm", [flat, w3], "fc"), "y", s4)
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TP.FLOAT, [2, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", act, [2, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


CASES = [(TP.UINT8, TP.INT8, "relu", True), (TP.INT8, TP.INT8, "relu6", False), (TP.INT8, TP.INT4, "clip", True),
         (TP.UINT8, TP.UINT4, "relu6", False), (TP.INT8, TP.UINT8, "relu", False)]


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("act, w_elem, clamp, concat_same", CASES)
def test_small_qdq_model_fused_and_exact_with_fake_quant_reference(act, w_elem, clamp, concat_same, rounding):
    model = _qdq_model(act, w_elem, clamp, concat_same)
    sess = npusim.InferenceSession(model.SerializeToString(), mode="npu", rounding=rounding)
    g = sess.graph
    ops = [n.op for n in g.nodes]
    assert "host" not in ops and sess.host_fallback == []
    assert ops.count("conv") == 2 and "maxpool" in ops and "global_avgpool" in ops and "gemm" in ops
    assert ("concat" if concat_same else "qconcat") in ops
    assert "round_shift" not in ops  # every clamp folded into its requantize
    requant = next(n for n in g.nodes if n.op == "requantize" and n.inputs[0] == "h1::unclamped::acc")
    lo, hi = qrange(g.tensors["h1"].dtype)
    want_lo = (-1.0 if clamp == "clip" else 0.0) / 0.02 + (128 if act == TP.UINT8 else 0)
    assert requant.attrs["qmin"] == max(lo, round(want_lo))
    if clamp != "relu":
        top = (1.5 if clamp == "clip" else 6.0) / 0.02 + (128 if act == TP.UINT8 else 0)
        assert requant.attrs["qmax"] == min(hi, round(top))
    assert g.tensors["w1"].dtype == {TP.INT8: "i8", TP.INT4: "i4", TP.UINT8: "u8", TP.UINT4: "u4"}[w_elem]
    rng = np.random.default_rng(1)
    feeds = {"x": rng.uniform(-3, 3, (2, 4, 6, 6)).astype(np.float32)}
    got = sess.run_all(feeds)
    want = fakequant.evaluate(g, feeds, rounding)
    checked = [t for t in got if is_quantized(g.tensors[t].dtype) and t not in g.constants]
    assert len(checked) >= 8
    for t in checked:
        np.testing.assert_array_equal(got[t], want[t], err_msg=t)
    # the fused graph computes the QDQ model: ONNX's float reference, within one LSB at the first
    # layers (the NPU's fixed-point rounding), the differences growing by at most one LSB a layer after
    names = ["h1", "pooled", "h2", "catq", "gapq", "y"]
    ref_model = onnx.ModelProto()
    ref_model.CopyFrom(model)
    ref_model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names[:-1])
    ref = dict(zip(names, ReferenceEvaluator(ref_model).run(names, feeds)))
    for name, bound in zip(names, (1, 1, 2, 3, 3, 3)):
        diff = np.abs(got[name].astype(np.int64) - ref[name].astype(np.int64))
        assert diff.max() <= bound, name
    assert (got["h1"] == ref["h1"]).mean() > 0.95


def test_parameters_from_constant_nodes_fuse_as_initializers():
    """Scales and zero points given by Constant nodes (as many exporters write them) fuse the same."""
    model = _qdq_model(TP.INT8, TP.INT8, "relu6", False)
    params = [t for t in model.graph.initializer if t.name.endswith(("_s", "_z"))]
    moved = onnx.ModelProto()
    moved.CopyFrom(model)
    del moved.graph.initializer[:]
    moved.graph.initializer.extend(t for t in model.graph.initializer if t not in params)
    del moved.graph.node[:]
    moved.graph.node.extend([helper.make_node("Constant", [], [t.name], value=t) for t in params] + list(model.graph.node))
    a = npusim.InferenceSession(model.SerializeToString(), mode="npu")
    b = npusim.InferenceSession(moved.SerializeToString(), mode="npu")
    assert [n.op for n in b.graph.nodes] == [n.op for n in a.graph.nodes] and "host" not in [n.op for n in b.graph.nodes]
    feeds = {"x": np.random.default_rng(3).uniform(-3, 3, (2, 4, 6, 6)).astype(np.float32)}
    np.testing.assert_array_equal(b.run(None, feeds)[0], a.run(None, feeds)[0])


def test_clip_of_codes_stays_a_clamp_when_nothing_to_fold_into():
    """DQ -> Clip -> Q with one scale: Clip of the codes (a round_shift by 0), bit-exact with ONNX."""
    s, z = np.float32(0.1), np.int8(-10)
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]),
             helper.make_node("Clip", ["xf", "lo", "hi"], ["c"]),
             helper.make_node("QuantizeLinear", ["c", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(s, "s"), numpy_helper.from_array(z, "z"),
             numpy_helper.from_array(np.float32(-2.0), "lo"), numpy_helper.from_array(np.float32(3.0), "hi")]
    model = helper.make_model(helper.make_graph(nodes, "clip", [helper.make_tensor_value_info("x", TP.INT8, [256])],
                                                [helper.make_tensor_value_info("y", TP.INT8, [256])], inits),
                              opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    sess = npusim.InferenceSession(model.SerializeToString(), mode="npu")
    assert [n.op for n in sess.graph.nodes] == ["round_shift"]
    x = np.arange(-128, 128).astype(np.int8)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], ReferenceEvaluator(model).run(None, {"x": x})[0])
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], np.clip(x, -30, 20))


# ---------------------------------------------------------------- 3. ConvTranspose and Resize among the passes

def _conv_transpose_model(act, k, strides, pads, output_padding, seed=0):
    """x:f32 (2,3,5,4) -> Q -> DQ -> ConvTranspose (per-channel int8 weights along axis 1, int32 bias)
    -> Relu -> Q -> DQ -> Resize nearest x2 -> Q (same scale): the output codes."""
    rng = np.random.default_rng(seed)
    zp = np.array(128 if act == TP.UINT8 else -5, helper.tensor_dtype_to_np_dtype(act))
    xs, ws, ys = np.float32(0.04), rng.uniform(0.01, 0.03, 4).astype(np.float32), np.float32(0.05)
    inits = [numpy_helper.from_array(v, n) for n, v in [
        ("xs", xs), ("zp", zp), ("ys", ys), ("ws", ws), ("wz", np.zeros(4, np.int8)),
        ("w", rng.integers(-100, 101, (3, 4, *k)).astype(np.int8)), ("b", rng.integers(-300, 300, 4).astype(np.int32)),
        ("bs", (xs * ws).astype(np.float32)), ("bz", np.zeros(4, np.int32)), ("scales", np.array([1, 1, 2, 2], np.float32))]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "zp"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "zp"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=1),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bd"], axis=0),
             helper.make_node("ConvTranspose", ["xd", "wd", "bd"], ["ct"], strides=strides, pads=pads,
                              output_padding=output_padding),
             helper.make_node("Relu", ["ct"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "ys", "zp"], ["h"]),
             helper.make_node("DequantizeLinear", ["h", "ys", "zp"], ["hd"]),
             helper.make_node("Resize", ["hd", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("QuantizeLinear", ["up", "ys", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "convt", [helper.make_tensor_value_info("x", TP.FLOAT, [2, 3, 5, 4])],
                              [helper.make_tensor_value_info("y", act, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


@pytest.mark.parametrize("act", [TP.UINT8, TP.INT8])
@pytest.mark.parametrize("k, strides, pads, output_padding", [
    ((2, 2), (2, 2), (0, 0, 0, 0), (0, 0)), ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1)), ((3, 3), (1, 1), (1, 1, 1, 1), (0, 0)),
    ((4, 3), (2, 3), (1, 0, 2, 1), (0, 2)), ((2, 2), (3, 3), (2, 2, 2, 2), (0, 0))])
def test_conv_transpose_and_resize_fuse_without_onnxruntime(act, k, strides, pads, output_padding):
    """npusim.frontend.qdq_upsample among the passes: DQ -> ConvTranspose -> Relu -> Q (the Relu a clamp),
    DQ -> Resize -> Q; the fake-quant reference exactly, ONNX's float reference within 1 LSB."""
    model = _conv_transpose_model(act, k, strides, pads, output_padding)
    sess = npusim.InferenceSession(model.SerializeToString(), mode="npu")
    ops = [n.op for n in sess.graph.nodes]
    assert "host" not in ops and ops.count("conv_transpose") == 1 and "resize" in ops
    feeds = {"x": np.random.default_rng(2).uniform(-4, 4, (2, 3, 5, 4)).astype(np.float32)}
    got = sess.run_all(feeds)
    want = fakequant.evaluate(sess.graph, feeds)
    for t in ("h", "y"):
        np.testing.assert_array_equal(got[t], want[t], err_msg=t)
    ref = ReferenceEvaluator(model).run(None, feeds)[0]
    assert got["y"].shape == ref.shape
    diff = np.abs(got["y"].astype(np.int64) - ref.astype(np.int64))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.95


def test_shape_of_a_dequantized_tensor_is_the_shape_of_its_codes():
    """DQ -> Shape feeding a Reshape (as PP-OCR's classifier ends): no host island in mode npu."""
    s, z = np.float32(0.1), np.uint8(7)
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]),
             helper.make_node("Shape", ["xf"], ["dims"]),
             helper.make_node("Shape", ["xf"], ["tail"], start=1),
             helper.make_node("Flatten", ["xf"], ["flat"]),
             helper.make_node("Reshape", ["flat", "dims"], ["back"]),
             helper.make_node("QuantizeLinear", ["back", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(s, "s"), numpy_helper.from_array(z, "z")]
    model = helper.make_model(helper.make_graph(nodes, "shape", [helper.make_tensor_value_info("x", TP.UINT8, [2, 3, 4])],
                                                [helper.make_tensor_value_info("y", TP.UINT8, None),
                                                 helper.make_tensor_value_info("tail", TP.INT64, None)], inits),
                              opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    sess = npusim.InferenceSession(model.SerializeToString(), mode="npu")
    assert [n.op for n in sess.graph.nodes].count("shape") == 2 and sess.host_fallback == []
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 4)).astype(np.uint8)
    y, tail = sess.run(None, {"x": x})
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(tail, [3, 4])
    np.testing.assert_array_equal(fakequant.evaluate(sess.graph, {"x": x})["tail"], [3, 4])


# ---------------------------------------------------------------- 4. PP-OCR in mode npu

@pytest.mark.parametrize("name", ["ppocr_cls_qdq_pc_s8", "ppocr_det_qdq_pc_s8"])
def test_ppocr_qdq_models_run_on_the_npu_bit_exact_with_fake_quant_reference(name):
    """No host op left but lookup tables (hard-swish, ...): resizes, transposed convs and the
    classifier's Shape are integer; every quantized tensor equals the float64 reference."""
    import npusim_models as zoo

    sess = npusim.InferenceSession(str(zoo.path(name)), mode="npu")
    assert sess.host_fallback == []
    ops = {n.op for n in sess.graph.nodes}
    assert {"resize", "conv_transpose"} <= ops if "det" in name else "shape" in ops
    feeds = zoo.sample_inputs(name, 1, seed=4)[0]
    got, want = sess.run_all(feeds), fakequant.evaluate(sess.graph, feeds)
    shared = fakequant.shared_tensors(sess.graph)
    checked = [t for t in got if t in want and t not in shared and is_quantized(sess.graph.tensors[t].dtype)]
    assert len(checked) > 100
    for t in checked:
        np.testing.assert_array_equal(got[t], want[t], err_msg=t)


def test_offline_bias_rounds_half_away_from_zero_and_refuses_int32_overflow():
    """The one offline bias rescale of the fusion passes (qdq_fusion, qdq_upsample, sixteen)."""
    from npusim.requant import bias_i32

    got = bias_i32(np.array([2.5, -2.5, 1.5, -0.5, 0.49999999, 7.0]), np.array([1.0, 1.0, 1.0, 1.0, 1.0, 2.0]))
    np.testing.assert_array_equal(got, [3, -3, 2, -1, 0, 4])
    assert got.dtype == np.int32
    assert bias_i32(np.array([2.0 ** 31]), 1.0) is None
    assert bias_i32(np.array([-(2.0 ** 31) + 1]), 1.0) == -(2 ** 31) + 1
