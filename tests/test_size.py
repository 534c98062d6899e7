"""Model size: bits counted from the ONNX initializers by hand, and at other weight widths."""
import numpy as np
import onnx
from onnx import numpy_helper

import npusim
import npusim_models as zoo
from npusim.size import layer_sizes, model_bits, node_bits, total_bits


def _graph():
    return npusim.InferenceSession(zoo.path("digits_qop_pc_u8")).graph


def test_weight_layers_counted_from_the_initializers():
    model = onnx.load(str(zoo.path("digits_qop_pc_u8")))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    g = _graph()
    bits = node_bits(g)
    # conv1: 8-bit weights, symmetric (no zero points stored), int32 bias per channel
    w, b = init["w1_quantized"], init["b1_quantized"]
    assert not init["w1_zero_point"].any()
    assert bits["conv1_quant"] == w.size * 8 + b.size * 32
    # its requantize: per-channel multiplier (32-bit M0 + 8-bit shift) per channel, u8 output zero point
    assert bits["conv1_quant/requantize"] == init["w1_scale"].size * 40 + 8
    # QLinearAdd: three multipliers and three 8-bit zero points
    assert bits["residual_add_quant"] == 3 * 40 + 3 * 8
    # the gemm
    assert bits["fc_quant"] == init["w5_quantized"].size * 8 + init["b5_quantized"].size * 32
    # data movement costs nothing
    assert bits["flatten"] == 0 and bits["maxpool"] == 0


def test_size_at_other_weight_widths():
    g = _graph()
    sizes = layer_sizes(g)
    assert [s.name for s in sizes] == ["conv1_quant", "dwconv2_quant", "pwconv3_quant", "conv4_quant", "fc_quant"]
    n_weights = sum(s.weights for s in sizes)
    base = model_bits(g)
    assert total_bits(g, {}) == base
    assert total_bits(g, {s.name: 4 for s in sizes}) == base - 4 * n_weights
    one = sizes[2]
    assert total_bits(g, {one.name: 2}) == base - 6 * one.weights
    assert all(s.wbits == 8 for s in sizes)


def test_wess_layer_stores_one_multiplier_and_4_bit_shifts(tmp_path):
    model = onnx.load(str(zoo.path("digits_qop_pc_u8")))
    for i, t in enumerate(model.graph.initializer):
        if t.name == "w3_scale":
            ws = numpy_helper.to_array(t)
            shifts = (np.arange(ws.size) % 3).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array((ws.max() * np.exp2(-shifts))
                                                                        .astype(np.float32), t.name))
    path = tmp_path / "wess.onnx"
    onnx.save(model, path)
    bits = node_bits(npusim.InferenceSession(path).graph)
    assert bits["pwconv3_quant/requantize"] == 40 + 4 * ws.size + 8
