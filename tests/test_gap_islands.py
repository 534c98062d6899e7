"""Mode "ort"'s float GlobalAveragePool (npusim.islands, registry op global_avgpool_f32) against
live onnxruntime: the kernels' two summation orders where onnxruntime uses each, and the
MobileNetV3 islands of the PP-OCR classifier split out of onnxruntime and still bit-exact."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import npusim
import npusim_models as zoo
import npusim_kernels.fast.pool as fp
import npusim_kernels.golden.pool as gp
from npusim.frontend import optimize_like_onnxruntime, with_extra_outputs
from npusim.ortisa import host_ort_isa

LEVELS = [ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL]


@pytest.mark.parametrize("level", LEVELS, ids=["ALL", "DISABLE_ALL"])
def test_float_global_avgpool_orders_are_onnxruntime_s(level):
    """GlobalAveragePool of graph inputs with 16, 24 and 20 channels and of Div(x16, 6): at level
    ALL onnxruntime's NCHWc transformer sends a graph input whose C is a multiple of MLAS's NCHWc
    block (16 on AVX-512F, 8 on AVX2: this CPU's family) to its sequential kernel; everything else,
    the pool of the Div's output included (its producer stays NCHW), and every pool below
    ORT_ENABLE_LAYOUT, runs MLAS's 4-lane kernel. Batch 2, spatial 1x1 .. 24x96, sizes on and off
    multiples of 4; fast == golden == onnxruntime, bit for bit."""
    block = 8 if host_ort_isa() in ("avx2", "avxvnni") else 16
    nchwc = level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    inputs = {"x16": 16, "x24": 24, "x20": 20}
    nodes = [helper.make_node("GlobalAveragePool", [x], [f"y_{x}"]) for x in inputs]
    nodes += [helper.make_node("Div", ["x16", "six"], ["d"]), helper.make_node("GlobalAveragePool", ["d"], ["y_d"])]
    g = helper.make_graph(nodes, "gap", [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", c, "h", "w"])
                                         for x, c in inputs.items()],
                          [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)
                           for y in ("y_x16", "y_x24", "y_x20", "d", "y_d")],
                          [numpy_helper.from_array(np.array(6, np.float32), "six")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    order = {x: "sequential" if nchwc and c % block == 0 else "lanes4" for x, c in inputs.items()}
    rng = np.random.default_rng(7)
    for n, h, w in [(2, 5, 7), (1, 1, 1), (1, 24, 96), (2, 3, 4), (1, 1, 6)]:
        feeds = {x: (rng.standard_normal((n, c, h, w)) * 10.0 ** rng.integers(-3, 4, (n, c, 1, 1))).astype(np.float32)
                 for x, c in inputs.items()}
        y16, y24, y20, d, yd = sess.run(None, feeds)
        for x, y, pool_in, o in [("x16", y16, feeds["x16"], order["x16"]), ("x24", y24, feeds["x24"], order["x24"]),
                                 ("x20", y20, feeds["x20"], order["x20"]), ("d", yd, d, "lanes4")]:
            other = "lanes4" if o == "sequential" else "sequential"
            for k in (gp, fp):
                got = k.global_avgpool_f32(pool_in, o)
                np.testing.assert_array_equal(got.view(np.int32), y.view(np.int32),
                                              err_msg=f"{k.__name__} {o} {x} {(n, h, w)}")
            if h * w > 4:  # the test tells the orders apart: the other one differs somewhere
                assert not np.array_equal(gp.global_avgpool_f32(pool_in, other), y), (x, (n, h, w))


def _float_tensors_equal_onnxruntime(model: onnx.ModelProto, feeds_list, level, expect_orders, **options):
    """npusim's session (mode "ort") at `level`: its global_avgpool_f32 nodes have `expect_orders`
    (by node name); their inputs and outputs (float32) and the quantize nodes' codes equal
    onnxruntime's, which runs the model as npusim's front end saw it (onnxruntime's EXTENDED
    optimization: the tensor names of npusim's graph), at the same level. -> the session."""
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    sess = npusim.InferenceSession(model.SerializeToString(), so, **options)
    pools = [n for n in sess.graph.nodes if n.op == "global_avgpool_f32"]
    assert {n.name: n.attrs["order"] for n in pools} == expect_orders
    names = [t for n in pools for t in (n.inputs[0], n.outputs[0])]
    names += [n.outputs[0] for n in sess.graph.nodes if n.op == "quantize" and n.inputs[0] in names]
    optimized = optimize_like_onnxruntime(model, "test")
    ref = ort.InferenceSession(with_extra_outputs(optimized, names), so, providers=["CPUExecutionProvider"])
    for feeds in feeds_list:
        got = sess.run_all(feeds)
        for name, want in zip(names, ref.run(names, feeds)):
            assert got[name].dtype == want.dtype, name
            np.testing.assert_array_equal(got[name].view(np.uint8), want.view(np.uint8), err_msg=name)
    return sess


@pytest.mark.parametrize("level", LEVELS, ids=["ALL", "DISABLE_ALL"])
def test_maxpool_island_pools_the_codes_and_follows_the_nchwc_kernel(level):
    """DequantizeLinear(x:u8, 32 channels) -> Div(6) -> MaxPool 3x3 -> GlobalAveragePool ->
    QuantizeLinear: an integer maxpool of x's codes, the table of Div on the pooled codes, the
    float pool and a quantize. At level ALL onnxruntime's NCHWc transformer rewrites the MaxPool
    (32 channels: a multiple of the block on every family) and then the pool, whose sequential
    kernel npusim follows; at DISABLE_ALL both stay NCHW (4 lanes)."""
    u8 = TensorProto.UINT8
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["v"]),
             helper.make_node("Div", ["v", "six"], ["f"]),
             helper.make_node("MaxPool", ["f"], ["m"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["m"], ["g"], name="gap"),
             helper.make_node("QuantizeLinear", ["g", "ys", "yz"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, t), n) for n, v, t in
             [("xs", 0.05, np.float32), ("xz", 20, np.uint8), ("six", 6, np.float32), ("ys", 0.01, np.float32),
              ("yz", 3, np.uint8)]]
    g = helper.make_graph(nodes, "mp", [helper.make_tensor_value_info("x", u8, [1, 32, 9, 14])],
                          [helper.make_tensor_value_info("y", u8, [1, 32, 1, 1])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    rng = np.random.default_rng(5)
    feeds = [{"x": rng.integers(0, 256, (1, 32, 9, 14)).astype(np.uint8)} for _ in range(2)]
    nchwc = level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = _float_tensors_equal_onnxruntime(model, feeds, level, {"gap": "sequential" if nchwc else "lanes4"})
    assert sess.host_fallback == [] and [n.op for n in sess.graph.nodes] == \
        ["maxpool", "host", "global_avgpool_f32", "quantize"]


def test_ppocr_cls_pool_islands_run_natively_and_bit_exact():
    """ppocr_cls_qop_pc_u8: the 8 islands DequantizeLinear -> Div(6) -> {QuantizeLinear,
    GlobalAveragePool -> QuantizeLinear} become tables, float pools and quantize nodes, and the
    one DequantizeLinear -> Div(6) -> MaxPool -> GlobalAveragePool -> QuantizeLinear an integer
    maxpool, a table, a pool and a quantize (200 channels: 4 lanes on AVX-512, the NCHWc kernel on
    AVX2 at level ALL); only the Shape island stays on onnxruntime. At levels ALL and DISABLE_ALL the
    hard-swish f, the float pools, their codes and the outputs equal onnxruntime's, bit for bit."""
    path = zoo.path("ppocr_cls_qop_pc_u8")
    model = onnx.load(path)
    feeds_list = zoo.sample_inputs("ppocr_cls_qop_pc_u8", 2, seed=1)
    block = 8 if host_ort_isa() in ("avx2", "avxvnni") else 16
    for level in LEVELS:
        nchwc = level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL and 200 % block == 0
        orders = {f"GlobalAveragePool@{i}": "lanes4" for i in range(1, 9)}
        orders["GlobalAveragePool@9"] = "sequential" if nchwc else "lanes4"
        sess = _float_tensors_equal_onnxruntime(model, feeds_list, level, orders)
        assert len(sess.host_fallback) == 1 and "Shape" in sess.host_fallback[0], sess.host_fallback
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        ref = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for feeds in feeds_list:
            for got, want in zip(sess.run(None, feeds), ref.run(None, feeds)):
                np.testing.assert_array_equal(got, want)
