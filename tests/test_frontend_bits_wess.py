"""Front end: WESS weight scales are recognised (the IR keeps the 4-bit shifts, mode npu uses one
multiplier per layer), and sub-byte types declared in the model's metadata narrow the IR."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import npusim
import npusim_models as zoo
from npusim.frontend.convert import wess_shifts_of_scales as wess_shifts
from npusim.errors import NpusimError
from npusim.frontend import BITS_KEY


def _digits():
    return onnx.load(str(zoo.path("digits_qop_pc_u8")))


def _set_init(model, name, arr):
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(arr.astype(numpy_helper.to_array(t).dtype),
                                                                        name))
            return
    raise KeyError(name)


def _init(model, name):
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


def test_wess_shifts_recognised_only_for_exact_power_of_two_fractions():
    layer = np.float32(0.0123)
    s = np.array([0, 1, 3, 15, 2, 0], np.uint8)
    scales = (layer * np.exp2(-s.astype(np.float32))).astype(np.float32)
    np.testing.assert_array_equal(wess_shifts(scales), s)
    assert wess_shifts(np.full(4, layer)) is None  # all shifts 0: per-tensor in disguise
    assert wess_shifts(layer * np.exp2(-np.array([0, 16], np.float32))) is None  # beyond 4 bits
    off = scales.copy()
    off[2] = np.nextafter(off[2], np.float32(1))
    assert wess_shifts(off) is None  # one ulp off a power of two: ordinary per-channel
    assert wess_shifts(np.array([layer])) is None


def test_wess_model_keeps_shifts_and_npu_uses_one_multiplier(tmp_path):
    model = _digits()
    ws = _init(model, "w3_scale")
    shifts = np.arange(ws.size, dtype=np.uint8) % 5
    _set_init(model, "w3_scale", (ws.max() * np.exp2(-shifts.astype(np.float32))).astype(np.float32))
    path = tmp_path / "wess.onnx"
    onnx.save(model, path)
    sess = npusim.InferenceSession(path, mode="npu")
    req = next(n for n in sess.graph.nodes if n.op == "requantize" and n.source == "pwconv3_quant")
    np.testing.assert_array_equal(req.attrs["wess_shift"], shifts)
    from npusim import npu
    from npusim.registry import kernel_set
    m0, n = npu.requantize_multipliers(req.attrs, kernel_set("golden"))
    assert len(set(m0.tolist())) == 1, "WESS keeps one multiplier per layer"
    np.testing.assert_array_equal(n - n.min(), shifts.astype(np.int32) - shifts.min())


def test_declared_sub_byte_types_narrow_tensors_and_ranges(tmp_path):
    model = _digits()
    w = _init(model, "w3_quantized")
    _set_init(model, "w3_quantized", np.clip(w, -7, 7))
    onnx.helper.set_model_props(model, {BITS_KEY: json.dumps({"w3_quantized": "i4", "z3_quantized": "u3"})})
    path = tmp_path / "bits.onnx"
    onnx.save(model, path)
    sess = npusim.InferenceSession(path)
    assert sess.graph.tensors["w3_quantized"].dtype == "i4"
    assert sess.graph.tensors["z3_quantized"].dtype == "u3"
    req = next(n for n in sess.graph.nodes if n.outputs == ("z3_quantized",))
    assert req.attrs["qmax"] <= 7 and req.attrs["qmin"] >= 0
    feeds = zoo.sample_inputs("digits_qop_pc_u8", 4, seed=0)
    z3 = np.concatenate([sess.run(["z3_quantized"], f)[0].reshape(-1) for f in feeds])
    assert z3.max() <= 7 and z3.max() > 0


def test_declared_type_that_does_not_hold_the_weights_is_an_error(tmp_path):
    model = _digits()
    onnx.helper.set_model_props(model, {BITS_KEY: json.dumps({"w3_quantized": "i2"})})
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    with pytest.raises(NpusimError, match=r"w3_quantized.*declared i2.*outside \[-2, 1\]"):
        npusim.InferenceSession(path)
    onnx.helper.set_model_props(model, {BITS_KEY: "[1, 2]"})
    onnx.save(model, path)
    with pytest.raises(NpusimError, match="must be a JSON object"):
        npusim.InferenceSession(path)
