"""Mode "ort"'s float GlobalAveragePool (npusim.islands, registry op global_avgpool_f32) against
live onnxruntime: its 4-lane order where onnxruntime uses it (and the NCHWc kernel's sequential
order where that one runs, which npusim.islands never splits out), and the
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
from npusim.frontend import with_extra_outputs
from npusim.ortisa import host_ort_isa

LEVELS = [ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL]


@pytest.mark.parametrize("level", LEVELS, ids=["ALL", "DISABLE_ALL"])
def test_float_global_avgpool_orders_are_onnxruntime_s(level):
    """GlobalAveragePool of graph inputs with 16, 24 and 20 channels and of Div(x16, 6): at level
    ALL onnxruntime's NCHWc transformer sends a graph input whose C is a multiple of MLAS's NCHWc
    block (16 on AVX-512F, 8 on AVX2: this CPU's family) to its sequential kernel; everything else,
    the pool of the Div's output included (its producer stays NCHW), and every pool below
    ORT_ENABLE_LAYOUT, runs MLAS's 4-lane kernel. Batch 2, spatial 1x1 .. 24x96, sizes on and off
    multiples of 4; fast == golden == onnxruntime (or the sequential reference == onnxruntime), bit
    for bit, and the other order differs."""
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
    nchwc_kernel = {x: nchwc and c % block == 0 for x, c in inputs.items()}
    rng = np.random.default_rng(7)
    for n, h, w in [(2, 5, 7), (1, 1, 1), (1, 24, 96), (2, 3, 4), (1, 1, 6)]:
        feeds = {x: (rng.standard_normal((n, c, h, w)) * 10.0 ** rng.integers(-3, 4, (n, c, 1, 1))).astype(np.float32)
                 for x, c in inputs.items()}
        y16, y24, y20, d, yd = sess.run(None, feeds)
        for x, y, pool_in, seq in [("x16", y16, feeds["x16"], nchwc_kernel["x16"]),
                                   ("x24", y24, feeds["x24"], nchwc_kernel["x24"]),
                                   ("x20", y20, feeds["x20"], nchwc_kernel["x20"]), ("d", yd, d, False)]:
            ours = [k.global_avgpool_f32(pool_in) for k in (gp, fp)]
            want, other = (sequential_mean(pool_in), ours[0]) if seq else (ours[0], sequential_mean(pool_in))
            np.testing.assert_array_equal(ours[1].view(np.int32), ours[0].view(np.int32))
            np.testing.assert_array_equal(want.view(np.int32), y.view(np.int32), err_msg=f"{x} {(n, h, w)} {seq}")
            if h * w > 4:  # the test tells the orders apart: the other one differs somewhere
                assert not np.array_equal(other, y), (x, (n, h, w))


def sequential_mean(x):
    """onnxruntime's NCHWc GlobalAveragePool: a sequential float32 sum per channel, then / S."""
    rows = x.reshape(*x.shape[:2], -1)
    s = np.add.accumulate(rows, axis=2, dtype=np.float32)[:, :, -1]
    return (s / np.float32(rows.shape[2])).astype(np.float32).reshape(*x.shape[:2], 1, 1)


def test_ppocr_cls_pool_islands_run_natively_and_bit_exact():
    """ppocr_cls_qop_pc_u8: the 8 islands DequantizeLinear -> Div(6) -> {QuantizeLinear,
    GlobalAveragePool -> QuantizeLinear} become tables, float pools and quantize nodes (the
    island that also holds a MaxPool stays on onnxruntime, as does the Shape island); at levels ALL
    and DISABLE_ALL the hard-swish f, the float pools, their quantized codes and the outputs equal
    onnxruntime's running the whole model, bit for bit."""
    path = str(zoo.path("ppocr_cls_qop_pc_u8"))
    feeds_list = zoo.sample_inputs("ppocr_cls_qop_pc_u8", 2, seed=1)
    for level in LEVELS:
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        sess = npusim.InferenceSession(path, so)
        pools = [n for n in sess.graph.nodes if n.op == "global_avgpool_f32"]
        assert len(pools) == 8 and len(sess.host_fallback) == 2, sess.host_fallback
        assert all("MaxPool" in h for h in sess.host_fallback if "GlobalAveragePool" in h), sess.host_fallback
        producer = sess.graph.producer()
        codes = [n.outputs[0] for n in sess.graph.nodes if n.op == "quantize" and n.inputs[0] in producer
                 and producer[n.inputs[0]].op == "global_avgpool_f32"]
        assert len(codes) == 8
        floats = [t for n in pools for t in (n.inputs[0], n.outputs[0])]
        names = floats + codes + list(sess.graph.outputs)
        ref = ort.InferenceSession(with_extra_outputs(onnx.load(path), names), so, providers=["CPUExecutionProvider"])
        for feeds in feeds_list:
            got = sess.run_all(feeds)
            for name, want in zip(names, ref.run(names, feeds)):
                assert got[name].dtype == want.dtype, name
                np.testing.assert_array_equal(got[name].view(np.uint8), want.view(np.uint8), err_msg=name)
