"""Resize and ConvTranspose on the NPU: nearest resize equals onnxruntime's Resize of codes (both
modes), a detector-like QDQ model (conv -> ConvTranspose -> Resize) runs in mode "npu" with no
host island and equals the float64 reference, and the transposed conv's int32 accumulator is
onnxruntime's float ConvTranspose of the dequantized values."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import npusim
from npusim import fakequant
from npusim.frontend.qdq_upsample import fuse_upsampling
from npusim_kernels.golden.upsample import conv_transpose_acc

U8, I8, F = TensorProto.UINT8, TensorProto.INT8, TensorProto.FLOAT
COORDS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _init(name, v, dtype):
    return numpy_helper.from_array(np.asarray(v, dtype), name)


def _resize_model(coord, nearest, scales=None, sizes=None, elem=U8):
    """u8 / i8 codes -> Resize -> codes (onnxruntime's form of a QDQ Resize with equal parameters)."""
    inits = [_init("roi", [], np.float32), _init("scales", scales if scales is not None else [], np.float32)]
    ins = ["x", "roi", "scales"]
    if sizes is not None:
        inits.append(_init("sizes", sizes, np.int64))
        ins.append("sizes")
    node = helper.make_node("Resize", ins, ["y"], mode="nearest", coordinate_transformation_mode=coord,
                            nearest_mode=nearest, name="resize")
    g = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", elem, [1, 2, 5, 7])],
                          [helper.make_tensor_value_info("y", elem, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 9
    return m.SerializeToString()


def test_resize_nearest_equals_onnxruntime_in_both_modes():
    """Every coordinate_transformation_mode x nearest_mode, scales that up- and downsample by
    fractions (1.7, 0.6) or integers, and sizes: selection. Mode "ort" equals onnxruntime bit for
    bit everywhere (its index table is onnxruntime's own); mode "npu" (ONNX's float32 formula)
    equals the float64 reference everywhere and onnxruntime wherever the float32 coordinate is
    not within an ulp of a rounding boundary: here all but sizes 7 -> 4 under asymmetric
    round_prefer_ceil (2 / f32(4/7) = 3.4999998, onnxruntime's build rounds as if 3.5)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, 2, 5, 7)).astype(np.uint8)
    differ = []
    for coord in COORDS:
        for nearest in NEAREST:
            for scales, sizes in (([1, 1, 1.7, 0.6], None), ([1, 1, 2, 3], None), (None, [1, 3, 12, 4])):
                model = _resize_model(coord, nearest, scales, sizes)
                want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                for mode in ("ort", "npu"):
                    sess = npusim.InferenceSession(model, mode=mode)
                    assert [n.op for n in sess.graph.nodes] == ["resize"], (coord, nearest, mode)
                    got = sess.run(None, {"x": x})[0]
                    if mode == "npu":
                        np.testing.assert_array_equal(got, fakequant.evaluate(sess.graph, {"x": x})["y"])
                    if not np.array_equal(got, want):
                        differ.append((coord, nearest, sizes is not None, mode))
    assert differ == [("asymmetric", "round_prefer_ceil", True, "npu")]


# ---------------------------------------------------------------- a detector-like QDQ model

XS, XZ = 0.02, 128       # input
S1, Z1 = 0.05, 3         # conv output (u8)
S2, Z2 = 0.11, 140       # ConvTranspose output, nearest Resize output (same)
S3, Z3 = 0.09, 120       # linear Resize output: another quantization


def _qdq(x, s, z, out, nodes, inits, dtype=np.uint8):
    inits += [_init(f"{out}_s", s, np.float32), _init(f"{out}_z", z, dtype)]
    nodes += [helper.make_node("QuantizeLinear", [x, f"{out}_s", f"{out}_z"], [f"{out}_q"], name=f"{out}_Q"),
              helper.make_node("DequantizeLinear", [f"{out}_q", f"{out}_s", f"{out}_z"], [out], name=f"{out}_DQ")]


def _weight(name, w_q, scale, axis, nodes, inits):
    inits += [_init(f"{name}_q", w_q, np.int8), _init(f"{name}_s", scale, np.float32),
              _init(f"{name}_z", np.zeros(np.size(scale), np.int8), np.int8)]
    nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name], axis=axis,
                                  name=f"{name}_DQ"))


def _bias(name, b_i32, scale, nodes, inits):
    inits += [_init(f"{name}_q", b_i32, np.int32), _init(f"{name}_s", scale, np.float32),
              _init(f"{name}_z", np.zeros(len(b_i32), np.int32), np.int32)]
    nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [name], axis=0,
                                  name=f"{name}_DQ"))


def detector_like(float_ct_bias=False):
    """x -> Q/DQ -> Conv 3x3 -> Q/DQ -> ConvTranspose 2x2 stride 2 (per-channel weights, int32 or
    float bias) -> Q/DQ -> Resize nearest x2 (asymmetric, floor) -> Q/DQ -> out_nearest, and the
    ConvTranspose output -> Resize linear x2 (half_pixel) -> Q with other parameters -> out_linear.
    Weights |w| <= 63: no u8·s8 pair can saturate int16 on any onnxruntime."""
    rng = np.random.default_rng(7)
    nodes, inits = [], []
    _qdq("x", XS, XZ, "xd", nodes, inits)
    cw_s = np.array([0.004, 0.006, 0.005, 0.003], np.float32)
    _weight("cw", rng.integers(-63, 64, (4, 3, 3, 3)), cw_s, 0, nodes, inits)
    _bias("cb", rng.integers(-500, 500, 4), np.float32(XS) * cw_s, nodes, inits)
    nodes.append(helper.make_node("Conv", ["xd", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], name="conv"))
    _qdq("c", S1, Z1, "cd", nodes, inits)
    tw_s = np.array([0.007, 0.004, 0.006], np.float32)  # ConvTranspose weights (C=4, M=3, 2, 2): axis 1
    _weight("tw", rng.integers(-63, 64, (4, 3, 2, 2)), tw_s, 1, nodes, inits)
    if float_ct_bias:
        inits.append(_init("tb", [0.1, -0.2, 0.05], np.float32))
    else:
        _bias("tb", rng.integers(-2000, 2000, 3), np.float32(S1) * tw_s, nodes, inits)
    nodes.append(helper.make_node("ConvTranspose", ["cd", "tw", "tb"], ["t"], strides=[2, 2], kernel_shape=[2, 2],
                                  name="convtranspose"))
    _qdq("t", S2, Z2, "td", nodes, inits)
    inits += [_init("roi", [], np.float32), _init("x2", [1, 1, 2, 2], np.float32)]
    nodes.append(helper.make_node("Resize", ["td", "roi", "x2"], ["r"], mode="nearest", nearest_mode="floor",
                                  coordinate_transformation_mode="asymmetric", name="resize_nearest"))
    _qdq("r", S2, Z2, "out_nearest", nodes, inits)
    nodes.append(helper.make_node("Resize", ["td", "roi", "x2"], ["l"], mode="linear",
                                  coordinate_transformation_mode="half_pixel", name="resize_linear"))
    _qdq("l", S3, Z3, "out_linear", nodes, inits)
    g = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", F, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info(o, F, None) for o in ("out_nearest", "out_linear")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _feeds(seed):
    return {"x": np.random.default_rng(seed).uniform(-2.5, 2.5, (1, 3, 6, 6)).astype(np.float32)}


@pytest.fixture(scope="module")
def det_session():
    return npusim.InferenceSession(detector_like().SerializeToString(), mode="npu")


def test_fusion_forms():
    """fuse_upsampling is pure and rewrites each pattern into its fused form."""
    model = detector_like()
    before = model.SerializeToString()
    fused = fuse_upsampling(model)
    assert model.SerializeToString() == before
    ops = [(n.domain, n.op_type) for n in fused.graph.node]
    assert ("com.microsoft", "QLinearConvTranspose") in ops and ("com.microsoft", "QLinearResize") in ops
    assert ("", "Resize") in ops and ("", "ConvTranspose") not in ops
    resize = next(n for n in fused.graph.node if n.op_type == "Resize")
    assert resize.input[0] == "td_q" and resize.output[0] == "out_nearest_q"  # on the codes
    assert not [n for n in fused.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in ("tw", "tb")]


def test_detector_like_npu_has_no_host_island_and_equals_reference(det_session):
    sess = det_session
    assert sess.host_fallback == [] and not sess.graph.host_nodes()
    assert sorted(n.attrs["mode"] for n in sess.graph.nodes if n.op == "resize") == ["linear", "nearest"]
    assert [n.op for n in sess.graph.nodes].count("conv_transpose") == 1
    for seed in range(3):
        got = sess.run_all(_feeds(seed))
        ref = fakequant.evaluate(sess.graph, _feeds(seed))
        quantized = [t for t, v in got.items() if v.dtype != np.float32]
        assert len(quantized) >= 8
        for t in quantized:
            np.testing.assert_array_equal(got[t], ref[t], err_msg=t)
        # nearest x2 on equal parameters is a copy of each code into a 2x2 block
        np.testing.assert_array_equal(got["out_nearest_q"], got["td_q"].repeat(2, 2).repeat(2, 3))


def test_detector_like_float_bias_fuses_and_equals_reference():
    sess = npusim.InferenceSession(detector_like(float_ct_bias=True).SerializeToString(), mode="npu")
    assert sess.host_fallback == []
    ref = fakequant.evaluate(sess.graph, _feeds(0))
    got = sess.run_all(_feeds(0))
    np.testing.assert_array_equal(got["td_q"], ref["td_q"])


def test_conv_transpose_accumulator_is_onnxruntimes_float_result(det_session):
    """acc·x_scale·w_scale[m] against onnxruntime's float32 ConvTranspose of the dequantized input,
    weights and bias. The integer accumulator is exact, so the difference is float32 rounding only:
    the dequantized operands (1 rounding each), each product and each of the K additions (K = C·kH·kW
    taps + the bias), so |acc·s − y| <= (K + 2)·2^−23·S with S = s·(Σ|x − x_zp||w − w_zp| + |bias|),
    twice the classical (K + 2)·u bound of recursive float summation (u = 2^−24), per element."""
    sess = det_session
    acc_name = next(n.outputs[0] for n in sess.graph.nodes if n.op == "conv_transpose")
    node = next(n for n in sess.graph.nodes if n.op == "conv_transpose")
    x_name, w_name, b_name = node.inputs[:3]
    w_q, b_q = sess.graph.constants[w_name], sess.graph.constants[b_name]
    tw_s = np.array([0.007, 0.004, 0.006], np.float32)
    worst = 0.0
    for seed in range(3):
        vals = sess.run_all(_feeds(seed))
        codes, acc = vals[x_name], vals[acc_name].astype(np.float64)
        xf = ((codes.astype(np.float32) - np.float32(Z1)) * np.float32(S1)).astype(np.float32)
        wf = (w_q.astype(np.float32) * tw_s[None, :, None, None]).astype(np.float32)
        bf = (b_q.astype(np.float32) * (np.float32(S1) * tw_s)).astype(np.float32)
        node_ct = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2])
        g = helper.make_graph([node_ct], "ct", [helper.make_tensor_value_info(n, F, None) for n in "xwb"],
                              [helper.make_tensor_value_info("y", F, None)])
        y = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(),
                                 providers=["CPUExecutionProvider"]).run(None, {"x": xf, "w": wf, "b": bf})[0]
        s = np.float64(S1) * tw_s.astype(np.float64)[None, :, None, None]
        mag = conv_transpose_acc(np.abs(codes.astype(np.int64) - Z1), 0, np.abs(w_q.astype(np.int64)),
                                 np.zeros(3, np.int32), np.abs(b_q).astype(np.int32), (2, 2), (0, 0), (1, 1),
                                 acc.shape[2:], 1).astype(np.float64)
        k = w_q.shape[0] * 2 * 2 + 1
        bound = (k + 2) * 2.0 ** -23 * s * mag
        err = np.abs(acc * s - y.astype(np.float64))
        assert np.all(err <= bound), float((err - bound).max())
        assert np.any(acc != 0)
        worst = max(worst, float((err / np.maximum(bound, 1e-300)).max()))
    assert worst < 1.0


def test_detector_like_within_lsb_of_onnxruntime(det_session):
    """Mode npu against onnxruntime (float ConvTranspose and Resize on its host): the fixed-point
    requantization and TFLite's bilinear rounding stay within 1 LSB of onnxruntime's float path on
    the same model (measured: max 1 LSB)."""
    model = detector_like()
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = ["out_nearest", "out_linear"]
    for seed in range(3):
        got = det_session.run(names, _feeds(seed))
        exp = want.run(names, _feeds(seed))
        for g, e, s in zip(got, exp, (S2, S3)):
            assert np.abs(g - e).max() <= s * 1.0001


def test_bench_costs_conv_transpose_on_the_array_and_resize_on_the_post_processor(det_session):
    from npusim.hardware import estimate

    shapes = {k: v.shape for k, v in det_session.run_all(_feeds(0)).items()}
    layers = {(c.name, c.op): c for c in estimate(det_session.graph, shapes).layers}
    ct = layers["convtranspose", "conv_transpose"]
    assert ct.macs == 1 * 6 * 6 * 4 * 3 * 2 * 2 and ct.bound in ("compute", "memory")  # N·H·W·C·M·kH·kW
    for name in ("resize_nearest", "resize_linear"):
        assert layers[name, "resize"].bound in ("post", "memory") and layers[name, "resize"].macs == 0
    assert not [c for c in layers.values() if c.bound == "host"]


# ---------------------------------------------------------------- conv_transpose geometry (IR level)

CT_CASES = [  # ONNX ConvTranspose attributes; weight (C, M/group, *k); x spatial
    dict(strides=[2, 3], pads=[1, 0, 0, 2], output_padding=[1, 2], dilations=[2, 1], group=2, k=(3, 2), hw=(3, 4)),
    dict(strides=[2, 2], auto_pad="SAME_UPPER", k=(3, 3), hw=(3, 3)),
    dict(strides=[2, 2], auto_pad="SAME_LOWER", k=(3, 2), hw=(3, 4)),
    dict(strides=[1, 2], auto_pad="VALID", k=(2, 3), hw=(2, 3)),
    dict(strides=[3, 2], output_shape=[8, 7], k=(3, 3), hw=(3, 3)),
    dict(strides=[1, 1], pads=[1, 1, 1, 1], k=(3, 3), hw=(4, 4), group=3),
    dict(strides=[3], pads=[1, 0], output_padding=[2], k=(2,), hw=(5,)),  # 1-D, stride > kernel
]


def _spec_conv_transpose(x, w, bias, attrs, k):
    """ONNX ConvTranspose by its definition: onnxruntime's float ConvTranspose without padding
    (the full scatter, (in − 1)·s + (k − 1)·d + 1 per axis, bias added), output_padding cells
    holding the bias alone appended at the end, then the window the ONNX spec gives: explicit
    pads, or from output_shape / auto_pad SAME_* the total padding split total//2 at the beginning
    for SAME_UPPER, total − total//2 otherwise (onnx's reference evaluator fails on groups and on
    output_shape; onnxruntime splits output_shape's padding the other way round)."""
    nd = len(k)
    s, d = attrs["strides"], attrs.get("dilations", [1] * nd)
    op = attrs.get("output_padding", [0] * nd)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=s, dilations=d, group=attrs.get("group", 1))
    g = helper.make_graph([node], "ct", [helper.make_tensor_value_info(n, F, None) for n in "xwb"],
                          [helper.make_tensor_value_info("y", F, None)])
    full = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x, "w": w, "b": bias})[0]
    full = full.astype(np.float64)
    for i in range(nd):
        tail = np.broadcast_to(bias.reshape((-1,) + (1,) * nd), full.shape[:2 + i] + (op[i],) + full.shape[3 + i:])
        full = np.concatenate([full, tail], axis=2 + i)
    size = full.shape[2:]
    if "output_shape" in attrs or attrs.get("auto_pad") in ("SAME_UPPER", "SAME_LOWER"):
        out = attrs.get("output_shape") or [x.shape[2 + i] * s[i] for i in range(nd)]
        total = [size[i] - out[i] for i in range(nd)]
        begin = [t // 2 if attrs.get("auto_pad") == "SAME_UPPER" else t - t // 2 for t in total]
    else:
        pads = attrs.get("pads", [0] * 2 * nd) if attrs.get("auto_pad") != "VALID" else [0] * 2 * nd
        begin, out = pads[:nd], [size[i] - pads[i] - pads[i + nd] for i in range(nd)]
    return full[(slice(None),) * 2 + tuple(slice(begin[i], begin[i] + out[i]) for i in range(nd))]


@pytest.mark.parametrize("case", range(len(CT_CASES)))
def test_conv_transpose_geometry_follows_onnx(case):
    """An IR conv_transpose in mode "npu" (fast and golden kernels) and the float64 reference
    both equal ONNX's ConvTranspose (`_spec_conv_transpose`) of x − x_zp and w − w_zp[m] plus the
    bias, exactly (integers below 2^24: exact in onnxruntime's float32)."""
    from npusim import ir

    attrs = dict(CT_CASES[case])
    k, hw, group = attrs.pop("k"), attrs.pop("hw"), attrs.get("group", 1)
    rng = np.random.default_rng(case)
    c, mg = 2 * group, 2
    x = rng.integers(0, 256, (1, c) + hw).astype(np.uint8)
    w = rng.integers(-128, 128, (c, mg) + k).astype(np.int8)
    w_zp, bias = rng.integers(-4, 5, mg * group).astype(np.int8), rng.integers(-999, 999, mg * group).astype(np.int32)
    wc = w.astype(np.float32) - w_zp.reshape(group, 1, mg).repeat(c // group, 1).reshape((c, mg) + (1,) * len(k))
    want = _spec_conv_transpose(x.astype(np.float32) - 9, wc.astype(np.float32), bias.astype(np.float32), attrs, k)
    nd = len(k)
    ir_attrs = {"strides": tuple(attrs["strides"]), "pads": tuple(attrs.get("pads", ())),
                "dilations": tuple(attrs.get("dilations", (1,) * nd)), "group": group,
                "output_padding": tuple(attrs.get("output_padding", ())), "kernel_shape": k,
                "auto_pad": attrs.get("auto_pad", "NOTSET"), "output_shape": tuple(attrs.get("output_shape", ()))}
    tensors = {"x": ir.Tensor("x", "u8", x.shape), "w": ir.Tensor("w", "i8", w.shape),
               "b": ir.Tensor("b", "i32", bias.shape), "xz": ir.Tensor("xz", "u8", ()),
               "wz": ir.Tensor("wz", "i8", w_zp.shape), "acc": ir.Tensor("acc", "i32", None)}
    graph = ir.Graph("ct", ("x",), ("acc",), tensors,
                     (ir.Node("conv_transpose", "ct", ("x", "w", "b", "xz", "wz"), ("acc",), ir_attrs, "ct"),),
                     {"w": w, "b": bias, "xz": np.array(9, np.uint8), "wz": w_zp})
    np.testing.assert_array_equal(fakequant.evaluate(graph, {"x": x})["acc"], want.astype(np.int64))
    for kernels in ("fast", "golden"):
        got = npusim.InferenceSession(graph, mode="npu", kernels=kernels).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, want.astype(np.int64))


def test_conv_transpose_overflow_is_bounded_at_plan_time_and_counted():
    """A transposed conv whose int32 accumulator wraps (4200 input channels of 255 · −128 over a
    4x4 kernel: the output pixel every tap meets sums to −2.19e9) is flagged at plan time with its
    bound and the wrapped elements are counted against an int64 sum written out here."""
    from npusim.overflow import count_wrapped

    c = 4200
    inits = [numpy_helper.from_array(np.asarray(v, t), n) for n, v, t in [
        ("s1", 1.0, np.float32), ("z8", 0, np.uint8), ("w", np.full((c, 1, 4, 4), -128), np.int8),
        ("wz", 0, np.int8), ("ys", 2.0 ** 24, np.float32)]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s1", "z8"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s1", "z8"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "s1", "wz"], ["wd"]),
             helper.make_node("ConvTranspose", ["xd", "wd"], ["t"], kernel_shape=[4, 4], name="ct"),
             helper.make_node("QuantizeLinear", ["t", "ys", "z8"], ["y"])]
    g = helper.make_graph(nodes, "ct", [helper.make_tensor_value_info("x", F, [1, c, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    sess = npusim.InferenceSession(m.SerializeToString(), mode="npu")
    node = next(n for n in sess.graph.nodes if n.op == "conv_transpose")
    assert sess.overflow_possible == {node.name: c * 16 * 255 * 128}
    x = np.full((1, c, 4, 4), 255.0, np.float32)
    values = sess.run_all({"x": x})
    taps = np.array([min(r, 3) - max(r - 3, 0) + 1 for r in range(7)])  # kernel rows meeting output row r
    exact = -128 * 255 * c * taps[:, None] * taps[None, :]
    want = int(np.count_nonzero(exact < -2 ** 31))
    assert want == 1  # the centre pixel, which all 16 taps meet
    assert count_wrapped(node, sess.graph, [values.get(i) for i in node.inputs]) == want
