"""Upsampling kernels: fast == golden exactly (transposed conv accumulator, nearest, bilinear) over
random shapes and parameters with edge values, golden's transposed conv against onnxruntime's
float ConvTranspose, and TFLite's bilinear arithmetic on hand-computed values."""
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper

from npusim_kernels.fast import upsample as fast
from npusim_kernels.golden import upsample as golden

I32 = np.iinfo(np.int32)


@st.composite
def transposed_convs(draw):
    """A transposed conv: groups, strides above / below the kernel span (gaps / overlapping taps),
    dilations, output_padding, pads cutting the output, zero points at the type's ends."""
    group = draw(st.integers(1, 3))
    cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw, sh, sw, dh, dw = (draw(st.integers(1, 4)) for _ in range(6))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    xt = draw(st.sampled_from([np.uint8, np.int8]))
    info = np.iinfo(xt)
    x_zp = draw(st.sampled_from([int(info.min), int(info.max), 0, 1]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.integers(info.min, int(info.max) + 1, (draw(st.integers(1, 2)), cg * group, h, w)).astype(xt)
    wq = rng.integers(-128, 128, (cg * group, mg, kh, kw)).astype(np.int8)
    w_zp = rng.choice(np.array([-128, 127, 0, 3], np.int32), mg * group)
    full_h, full_w = (h - 1) * sh + (kh - 1) * dh + 1, (w - 1) * sw + (kw - 1) * dw + 1
    oph, opw = draw(st.integers(0, sh - 1)), draw(st.integers(0, sw - 1))
    top, left = draw(st.integers(0, full_h - 1)), draw(st.integers(0, full_w - 1))
    out_hw = (draw(st.integers(1, full_h + oph - top)), draw(st.integers(1, full_w + opw - left)))
    bias_kind = draw(st.sampled_from(["random", "max", "min"]))
    bias = {"random": rng.integers(-2 ** 20, 2 ** 20, mg * group),
            "max": np.full(mg * group, I32.max - 2 ** 25), "min": np.full(mg * group, I32.min + 2 ** 25)}[bias_kind]
    return (x, x_zp, wq, w_zp, bias.astype(np.int32), (sh, sw), (top, left), (dh, dw), out_hw, group)


@settings(max_examples=60)
@given(transposed_convs())
def test_conv_transpose_fast_equals_golden(case):
    np.testing.assert_array_equal(fast.conv_transpose_acc(*case), golden.conv_transpose_acc(*case))


def test_conv_transpose_int32_overflow_golden_raises_fast_wraps():
    """Golden checks its headroom; fast wraps modulo 2^32 (the NPU's int32 accumulator)."""
    x = np.full((1, 1, 2, 2), 255, np.uint8)
    w = np.full((1, 1, 2, 2), -128, np.int8)
    case = (x, 0, w, np.zeros(1, np.int32), np.array([I32.min + 1000], np.int32), (1, 1), (0, 0), (1, 1), (3, 3), 1)
    with pytest.raises(ValueError, match="int32 accumulator overflow"):
        golden.conv_transpose_acc(*case)
    got = fast.conv_transpose_acc(*case)
    exact = I32.min + 1000 - 255 * 128 * 4  # the centre cell gets all 4 taps
    assert int(got[0, 0, 1, 1]) == (exact + 2 ** 31) % 2 ** 32 - 2 ** 31


def _ort_conv_transpose(xf, wf, bf, strides, pads, dilations, output_padding, group):
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=list(strides), pads=list(pads),
                            dilations=list(dilations), output_padding=list(output_padding), group=group)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "xwb"],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": xf, "w": wf, "b": bf})[0]


@pytest.mark.parametrize("seed", range(8))
def test_conv_transpose_golden_equals_onnxruntime_float(seed):
    """Small integers are exact in float32 (every partial sum below 2^24): onnxruntime's float
    ConvTranspose of x − x_zp and w − w_zp gives the golden accumulator exactly."""
    rng = np.random.default_rng(seed)
    group, cg, mg = 1 + seed % 2, 1 + seed % 3, 2
    k, s, d = (1 + seed % 3, 2), (1 + seed % 3, 2 + seed % 2), (1 + seed % 2, 1)
    x = rng.integers(0, 256, (1, cg * group, 3, 4)).astype(np.uint8)
    w = rng.integers(-128, 128, (cg * group, mg) + k).astype(np.int8)
    w_zp, b = rng.integers(-3, 4, mg * group).astype(np.int32), rng.integers(-999, 999, mg * group).astype(np.int32)
    op, pads = (s[0] - 1, 0), (seed % 2, 0, 0, 1)
    out_hw = tuple((x.shape[2 + i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 + op[i] - pads[i] - pads[i + 2]
                   for i in range(2))
    acc = golden.conv_transpose_acc(x, 77, w, w_zp, b, s, pads[:2], d, out_hw, group)
    wf = (w.astype(np.float32) - np.repeat(w_zp.reshape(group, 1, mg), cg, 1).reshape(-1, mg)[:, :, None, None])
    ref = _ort_conv_transpose(x.astype(np.float32) - 77, wf.astype(np.float32), b.astype(np.float32), s, pads, d, op,
                              group)
    np.testing.assert_array_equal(acc, ref.astype(np.int64))


@settings(max_examples=40)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 13), st.integers(1, 13),
       st.sampled_from(golden.COORDS), st.sampled_from(["double", "single"]),
       st.sampled_from([np.uint8, np.int8]), st.integers(0, 2 ** 32 - 1))
def test_resize_bilinear_fast_equals_golden(h, w, oh, ow, coord, rounding, dtype, seed):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    x = rng.choice(np.array([info.min, info.max, 0, -1 if info.min else 1], np.int64), (2, 2, h, w)) \
        if seed % 3 == 0 else rng.integers(info.min, int(info.max) + 1, (2, 2, h, w))
    x = x.astype(dtype)
    np.testing.assert_array_equal(fast.resize_bilinear(x, (oh, ow), coord, rounding),
                                  golden.resize_bilinear(x, (oh, ow), coord, rounding))


@pytest.mark.parametrize("kernels", [golden, fast], ids=["golden", "fast"])
def test_resize_bilinear_tflite_values(kernels):
    """Hand-computed with TFLite's Q10 coordinates. 2 -> 4, asymmetric: s10 = 512, v = 0, 512,
    1024, 1536 -> [a, (a + b)/2, b, b]. half_pixel: v = −256, 256, 768, 1280: the first cell
    clamps to a, then a + (b − a)/4 = −2.5 for (0, −10): −3 half away from zero (double), −2
    half up (single). align_corners 2 -> 3: s10 = 512: [a, (a + b)/2, b]."""
    x = np.array([[[[0, -10]]]], np.int8)
    np.testing.assert_array_equal(kernels.resize_bilinear(x, (1, 4), "asymmetric", "double")[0, 0, 0], [0, -5, -10, -10])
    np.testing.assert_array_equal(kernels.resize_bilinear(x, (1, 4), "half_pixel", "double")[0, 0, 0], [0, -3, -8, -10])
    np.testing.assert_array_equal(kernels.resize_bilinear(x, (1, 4), "half_pixel", "single")[0, 0, 0], [0, -2, -7, -10])
    np.testing.assert_array_equal(kernels.resize_bilinear(x, (1, 3), "align_corners", "double")[0, 0, 0], [0, -5, -10])
    # pytorch_half_pixel differs from half_pixel only for an output axis of length 1: coordinate 0
    y = np.array([[[[10, 20, 30, 40]]]], np.uint8)
    assert kernels.resize_bilinear(y, (1, 1), "pytorch_half_pixel", "double")[0, 0, 0, 0] == 10
    assert kernels.resize_bilinear(y, (1, 1), "half_pixel", "double")[0, 0, 0, 0] == 25  # v = 1536: 20 + 30 halves


@settings(max_examples=20)
@given(st.integers(1, 5), st.integers(1, 9), st.integers(0, 2 ** 32 - 1))
def test_resize_nearest_fast_equals_golden(h, oh, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (2, 3, h, h + 1)).astype(np.int8)
    idx = [rng.integers(0, n, m) for n, m in zip(x.shape, (2, 3, oh, oh + 2))]
    np.testing.assert_array_equal(fast.resize_nearest(x, *idx), golden.resize_nearest(x, *idx))
    np.testing.assert_array_equal(golden.resize_nearest(x, *idx), x[np.ix_(*idx)])
