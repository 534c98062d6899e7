"""Every registry entry is run by some test: the table below names, for each op of
npusim.registry.OPS and of mode "npu"'s own entries (npusim.npu.ops), a test whose sessions
execute it (measured by instrumenting the registry's prepare functions over the suite), and a
test fails when an entry has none. The ops no other test reached are tested here: the data ops
against onnxruntime (and the float64 reference's own NumPy versions of them), and mode "npu"'s
average pool and concat (fast == golden == the float64 reference, within 1 LSB of onnxruntime).
"""
import pathlib
import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import npusim
from npusim import fakequant, npu
from npusim.registry import OPS

HERE = pathlib.Path(__file__).parent
# op -> "file::test" whose sessions run the entry (mode "ort" registry; mode "npu" reuses it for
# the ops it does not override). Measured with the registry's prepare functions instrumented:
# before this file, concat, pad, slice, squeeze and unsqueeze ran in no test, transpose in one
# model of one test, and mode "npu"'s qconcat in none.
SINGLE = "test_ort_single_ops.py::test_"
COVERAGE = {
    "conv": SINGLE + "qlinearconv", "requantize": SINGLE + "qlinearconv", "matmul": SINGLE + "matmulinteger",
    "gemm": SINGLE + "qgemm", "scale_float": SINGLE + "matmul_integer_to_float", "add": SINGLE + "qlinear_add_mul",
    "mul": SINGLE + "qlinear_add_mul", "global_avgpool": SINGLE + "qlinear_unary", "sigmoid": SINGLE + "qlinear_unary",
    "leaky_relu": SINGLE + "qlinear_unary", "softmax": SINGLE + "qlinear_unary",
    "avgpool": SINGLE + "qlinear_averagepool", "maxpool": SINGLE + "maxpool_quantized",
    "qconcat": SINGLE + "qlinear_concat", "quantize": SINGLE + "quantize_dequantize",
    "dequantize": SINGLE + "quantize_dequantize", "dynamic_quantize": SINGLE + "dynamic_quantize_matmul",
    "round_shift": "test_qonnx.py::test_conv_net_mixed_precision_bit_exact",
    "sign": "test_qonnx.py::test_bipolar_layers",
    "multithreshold": "test_qonnx.py::test_bn_mlp_bit_exact_with_qonnx",
    "reshape": "test_verify_zoo.py::test_bit_exact_with_onnxruntime",
    "flatten": "test_npu_mode.py::test_quantized_digits_bit_exact_with_reference",
    "identity": "test_onnx_node_cases.py::test_node_case",
    "resize": "test_upsample.py::test_resize_nearest_equals_onnxruntime_in_both_modes",
    **{op: "test_registry_ops.py::test_data_ops_match_onnxruntime"
       for op in ("transpose", "squeeze", "unsqueeze", "slice", "pad", "concat")},
    "shape": "test_npu_qdq_fusion.py::test_shape_of_a_dequantized_tensor_is_the_shape_of_its_codes",
    "global_avgpool_f32": "test_gap_islands.py::test_ppocr_cls_pool_islands_run_natively_and_bit_exact",
}
ZOO_NPU = "test_npu_mode.py::test_zoo_model_npu_bit_exact_with_reference_and_within_one_lsb_of_onnxruntime"
NPU_COVERAGE = {
    **{op: ZOO_NPU for op in ("requantize", "conv", "gemm", "add", "mul", "global_avgpool", "softmax")},
    "matmul": "test_sixteen_bit.py::test_a16w8_matmul_npu_within_one_lsb_of_exact",
    "avgpool": "test_registry_ops.py::test_npu_avgpool_and_qconcat",
    "qconcat": "test_registry_ops.py::test_npu_avgpool_and_qconcat",
    "resize": "test_upsample.py::test_detector_like_npu_has_no_host_island_and_equals_reference",
    "conv_transpose": "test_upsample.py::test_detector_like_npu_has_no_host_island_and_equals_reference",
}


@pytest.mark.parametrize("table, ops", [(COVERAGE, sorted(OPS)), (NPU_COVERAGE, sorted(npu.ops("double")))],
                         ids=["registry", "npu"])
def test_every_registry_entry_has_a_test(table, ops):
    assert sorted(table) == ops, f"no test listed for {sorted(set(ops) - set(table))}"
    for op, where in table.items():
        path, name = where.split("::")
        assert re.search(rf"^def {name}\(", (HERE / path).read_text(), re.M), f"{op}: {where} does not exist"


# ---------------------------------------------------------------- models

U8 = TensorProto.UINT8


def _model(nodes, inputs, outputs, inits, opset=17):
    g = helper.make_graph(nodes, "t", inputs, [helper.make_tensor_value_info(o, U8, None) for o in outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m.SerializeToString()


def _i64(name, v):
    return numpy_helper.from_array(np.array(v, np.int64), name)


def _scalar(name, v, dtype):
    return numpy_helper.from_array(np.array(v, dtype), name)


def test_data_ops_match_onnxruntime():
    """Transpose, Slice (negative starts / ends / steps, out-of-range ends), Pad (negative pads
    crop, a fill value, an axes input), Squeeze, Unsqueeze (negative axes), Concat on uint8
    tensors: npusim modes ort and npu and the float64 reference all equal onnxruntime."""
    x = helper.make_tensor_value_info("x", U8, [2, 3, 4, 5])
    x2 = helper.make_tensor_value_info("x2", U8, [2, 1, 4, 5])
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["s"]),
             helper.make_node("Slice", ["x", "st2", "en2"], ["s2"]),
             helper.make_node("Pad", ["x", "pads", "pv"], ["p"]),
             helper.make_node("Pad", ["x", "pads2", "", "pax"], ["p2"]),
             helper.make_node("Squeeze", ["x2", "sqa"], ["q"]),
             helper.make_node("Unsqueeze", ["x", "usa"], ["u"]),
             helper.make_node("Concat", ["x", "x2"], ["c"], axis=1)]
    inits = [_i64("st", [3, -1]), _i64("en", [-9, 0]), _i64("ax", [3, 1]), _i64("sp", [-2, -1]),
             _i64("st2", [1, 0, -3]), _i64("en2", [100, 2, -1]),
             _i64("pads", [0, 1, -1, 2, 0, 0, 2, -1]), _scalar("pv", 7, np.uint8),
             _i64("pads2", [1, -2, 0, 3]), _i64("pax", [1, -1]), _i64("sqa", [1]), _i64("usa", [0, -1])]
    outs = ["t", "s", "s2", "p", "p2", "q", "u", "c"]
    m = _model(nodes, [x, x2], outs, inits, opset=18)
    rng = np.random.default_rng(2)
    feeds = {"x": rng.integers(0, 256, (2, 3, 4, 5)).astype(np.uint8),
             "x2": rng.integers(0, 256, (2, 1, 4, 5)).astype(np.uint8)}
    want = dict(zip(outs, ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(outs, feeds)))
    sess = npusim.InferenceSession(m)
    assert sorted({n.op for n in sess.graph.nodes}) == ["concat", "pad", "slice", "squeeze", "transpose", "unsqueeze"]
    runs = {"ort": sess.run_all(feeds), "npu": npusim.InferenceSession(m, mode="npu").run_all(feeds),
            "reference": fakequant.evaluate(sess.graph, feeds)}
    for run, got in runs.items():
        for o in outs:
            assert got[o].dtype == want[o].dtype, (run, o)
            np.testing.assert_array_equal(got[o], want[o], err_msg=f"{run}: {o}")


def test_npu_avgpool_and_qconcat():
    """Mode "npu"'s fixed-point QLinearAveragePool (2-D with count_include_pad and ceil_mode, 1-D
    with auto_pad SAME_UPPER) and QLinearConcat (one input rescaled, one copied), and convolutions
    with auto_pad SAME_LOWER (1-D) and VALID: fast == golden == the float64 reference with both
    roundings, and within 1 LSB of onnxruntime."""
    ms = "com.microsoft"
    x = helper.make_tensor_value_info("x", U8, [1, 4, 9, 7])
    x1 = helper.make_tensor_value_info("x1", U8, [1, 4, 10])
    q = ("xs", "xz", "ys", "yz")
    window = dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1], ceil_mode=1)
    nodes = [helper.make_node("QLinearAveragePool", ["x", *q], ["a"], domain=ms, count_include_pad=1, **window),
             helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "es", "yz"], ["e"], domain=ms,
                              count_include_pad=0, **window),
             helper.make_node("QLinearAveragePool", ["x", *q], ["b"], domain=ms, kernel_shape=[3, 3],
                              strides=[2, 1], pads=[1, 1, 1, 1], count_include_pad=0),
             helper.make_node("QLinearAveragePool", ["x1", *q], ["d"], domain=ms, kernel_shape=[4], strides=[3],
                              auto_pad="SAME_UPPER"),
             # a has the output's (scale, zp): copied; e has its own scale: rescaled
             helper.make_node("QLinearConcat", ["ys", "yz", "a", "ys", "yz", "e", "es", "yz"], ["c"], domain=ms,
                              axis=1),
             # 1-D conv with auto_pad SAME_LOWER, 2-D conv with VALID (|w| <= 63: no int16 pair saturation)
             helper.make_node("QLinearConv", ["x1", "xs", "xz", "w1", "ws", "wz1", "ys", "yz"], ["f"],
                              kernel_shape=[4], strides=[3], auto_pad="SAME_LOWER"),
             helper.make_node("QLinearConv", ["x", "xs", "xz", "w2", "ws", "wz2", "ys", "yz"], ["g"],
                              kernel_shape=[3, 2], strides=[2, 1], auto_pad="VALID")]
    inits = [_scalar("xs", 0.043, np.float32), _scalar("xz", 131, np.uint8), _scalar("ys", 0.031, np.float32),
             _scalar("yz", 120, np.uint8), _scalar("es", 0.029, np.float32), _scalar("ws", 0.004, np.float32),
             numpy_helper.from_array(np.random.default_rng(1).integers(-63, 64, (5, 4, 4)).astype(np.int8), "w1"),
             numpy_helper.from_array(np.random.default_rng(2).integers(-63, 64, (3, 4, 3, 2)).astype(np.int8), "w2"),
             _scalar("wz1", 0, np.int8), _scalar("wz2", 0, np.int8)]
    outs = ["a", "b", "d", "c", "f", "g"]
    m = _model(nodes, [x, x1], outs, inits)
    rng = np.random.default_rng(4)
    feeds_list = [{"x": rng.integers(0, 256, (1, 4, 9, 7)).astype(np.uint8),
                   "x1": rng.integers(0, 256, (1, 4, 10)).astype(np.uint8)} for _ in range(3)]
    ref = ort.InferenceSession(m, providers=["CPUExecutionProvider"])
    for rounding in ("double", "single"):
        fast = npusim.InferenceSession(m, mode="npu", rounding=rounding)
        golden = npusim.InferenceSession(m, mode="npu", rounding=rounding, kernels="golden")
        assert sorted(n.op for n in fast.graph.nodes) == ["avgpool"] * 4 + ["conv"] * 2 + ["qconcat"] + ["requantize"] * 2
        for feeds in feeds_list:
            got, gold = fast.run_all(feeds), golden.run_all(feeds)
            expect = fakequant.evaluate(fast.graph, feeds, rounding)
            for o, want in zip(outs, ref.run(outs, feeds)):
                np.testing.assert_array_equal(got[o], gold[o], err_msg=f"{rounding} fast vs golden: {o}")
                np.testing.assert_array_equal(got[o], expect[o], err_msg=f"{rounding} vs reference: {o}")
                assert np.abs(got[o].astype(int) - want.astype(int)).max() <= 1, (rounding, o)


def test_reference_places_every_op():
    """The float64 reference computes each registry op itself or names it as shared with the runtime."""
    own, shared = set(fakequant.ARITHMETIC), set(fakequant.SHARED)
    assert not own & shared
    assert set(OPS) <= own | shared, sorted(set(OPS) - own - shared)
