"""The upsampling ops of the IR: `resize` on quantized codes and `conv_transpose` (int32 accumulator).

resize (inputs: x; attrs mode "nearest" | "linear", coord (ONNX coordinate_transformation_mode),
nearest_mode, scales (one float32 per axis) or sizes (one int per axis), x_scale, x_zp, y_scale,
y_zp, qmin, qmax, dtype): the output shape is ONNX Resize's, floor(in·scale) in float32 or the
sizes. Nearest is pure selection of codes. The source index of each output index is, in mode
"npu", ONNX's formula in float32 (x_original = f(x_out, scale) per coordinate mode, rounded by
nearest_mode, clamped into the input; `nearest_index`), in mode "ort" the one onnxruntime's
compiled float32 code picks (`onnxruntime_nearest_index`): the two differ only where the float32
coordinate lands within an ulp of a rounding boundary (e.g. 2 / f32(4/7) is 3.4999998 by the
formula; onnxruntime's build picks 4 under round_prefer_ceil). Integer scale factors, as the
PP-OCR detector's, give exact coordinates and the same indices in both. Linear (mode "npu" only) is TFLite's integer RESIZE_BILINEAR on the codes
(npusim_kernels golden.upsample), H and W only. When (y_scale, y_zp) differ from (x_scale, x_zp),
mode "npu" rescales the selected or interpolated codes: y = clamp(MBQM(v − x_zp, QM(x_scale/y_scale))
+ y_zp), the NPU's change of quantization (fixed_rescale).

conv_transpose (inputs x, w (C, M/group, kH, kW), bias, x_zp, w_zp; attrs strides, pads,
dilations, group, output_padding, kernel_shape, auto_pad, output_shape as ONNX ConvTranspose
defines them): acc:i32 = Σ (x − x_zp)(w − w_zp[m]) + bias[m] scattered, mode "npu" only,
followed by the IR's requantize (axis 1), as conv is.
"""
from __future__ import annotations

import numpy as np

from .binding import PerShape, shape_bound
from .errors import NpusimError
from .ir import storage

NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
BILINEAR_COORDS = ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners")  # TFLite's


def resize_shape(in_shape, attrs) -> tuple[tuple[int, ...], np.ndarray]:
    """(output shape, float32 scale per axis) of a resize node for an input shape: sizes as given
    (scale = f32(out)/f32(in)), or out = floor(f32(scale)·f32(in)), as onnxruntime computes them."""
    sizes, scales = attrs.get("sizes", ()), attrs.get("scales", ())
    rank = len(in_shape)
    if len(sizes or scales) != rank:
        raise NpusimError(f"input has rank {rank}, the resize has {len(sizes or scales)} "
                          f"{'sizes' if sizes else 'scales'}")
    if sizes:
        out = tuple(int(s) for s in sizes)
        scale = np.array([np.float32(o) / np.float32(i) if i else 1 for o, i in zip(out, in_shape)], np.float32)
    else:
        scale = np.asarray(scales, np.float32)
        out = tuple(int(np.float32(s) * np.float32(i)) for s, i in zip(scale, in_shape))
    if min(out, default=1) < 1:
        raise NpusimError(f"resize of {tuple(in_shape)} gives the empty shape {out}")
    return out, scale


def nearest_index(size_in: int, size_out: int, scale, coord: str, nearest_mode: str) -> np.ndarray:
    """int64 source index of each output index along one axis, in float32 as onnxruntime's Resize:
    x_original by `coord`, rounded by `nearest_mode` (round_prefer_floor: a tie goes down, else
    std::round, half away from zero; round_prefer_ceil: std::round; floor; ceil), then clamped to
    [0, size_in − 1]."""
    f = np.float32
    o = np.arange(size_out, dtype=np.float32)
    s, half = f(scale), f(0.5)
    if coord == "asymmetric":
        v = o / s
    elif coord == "half_pixel":
        v = (o + half) / s - half
    elif coord == "pytorch_half_pixel":
        v = (o + half) / s - half if size_out > 1 else np.zeros(size_out, np.float32)
    elif coord == "align_corners":
        v = o * f(size_in - 1) / f(size_out - 1) if size_out > 1 else np.zeros(size_out, np.float32)
    else:
        raise NpusimError(f"coordinate_transformation_mode {coord!r}: expected one of {', '.join(COORD_MODES)}")
    v = v.astype(np.float64)  # exact: the rounding is decided on the float32 coordinate itself
    if nearest_mode == "round_prefer_floor":
        idx = np.where(v == np.floor(v) + 0.5, np.floor(v), np.sign(v) * np.floor(np.abs(v) + 0.5))
    elif nearest_mode == "round_prefer_ceil":
        idx = np.sign(v) * np.floor(np.abs(v) + 0.5)
    elif nearest_mode == "floor":
        idx = np.floor(v)
    elif nearest_mode == "ceil":
        idx = np.ceil(v)
    else:
        raise NpusimError(f"nearest_mode {nearest_mode!r}: expected one of {', '.join(NEAREST_MODES)}")
    return np.clip(idx, 0, size_in - 1).astype(np.int64)


def _same_quant(a) -> bool:
    return float(a["x_scale"]) == float(a["y_scale"]) and int(a["x_zp"]) == int(a["y_zp"])


def _resize_runner(node, K, rescale, rounding="double", index=None):
    """-> run(x) of a resize node; `rescale(v) -> y` changes the codes' quantization (None: equal);
    `rounding` is the bilinear interpolation's (TFLite: half away from zero, or single rounding);
    `index(shape, attrs)` the nearest source indices per axis (default: `nearest_index`'s)."""
    a = node.attrs
    if a["mode"] == "linear" and a["coord"] not in BILINEAR_COORDS:
        raise NpusimError(f"linear resize: coordinate_transformation_mode {a['coord']!r} has no integer form "
                          f"(expected one of {', '.join(BILINEAR_COORDS)})")

    def plan(shape):  # index arrays (nearest) or output size (linear) of an input shape
        out, scale = resize_shape(shape, a)
        if a["mode"] == "linear":
            if len(shape) != 4 or out[:2] != tuple(shape[:2]):
                raise NpusimError(f"linear resize of {tuple(shape)} to {out}: only H and W of a 4-D NCHW "
                                  f"tensor are interpolated")
            return out[2:]
        if len(shape) != 4:
            raise NpusimError(f"nearest resize: input of rank {len(shape)}, expected 4")
        if index is not None:
            return index(shape, a)
        return tuple(nearest_index(i, o, s, a["coord"], a["nearest_mode"]) for i, o, s in zip(shape, out, scale))

    def bind(shape, dtype):
        p = plan(shape)
        if a["mode"] == "linear":
            return lambda x: K.resize_bilinear(x, p, a["coord"], rounding)
        return K.resize_nearest_for(shape, dtype, *p)
    per_shape = PerShape(bind)

    if rescale is not None:
        def run_rescaled(x):
            return (rescale(per_shape[x.shape, x.dtype](x)),)
        return run_rescaled

    def run(x):
        return (per_shape[x.shape, x.dtype](x),)
    return shape_bound(per_shape, run)


def onnxruntime_nearest_index(shape, attrs) -> tuple[np.ndarray, ...]:
    """The source index per output index of each axis as this onnxruntime computes them: its own
    Resize run once on the element numbers of an int32 tensor of `shape`. Its float32 coordinate
    arithmetic (as compiled) is the reference of mode "ort"; `nearest_index` writes the formula."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    key, values = ("sizes", np.asarray(attrs["sizes"], np.int64)) if attrs.get("sizes") else \
        ("scales", np.asarray(attrs["scales"], np.float32))
    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi"), numpy_helper.from_array(values, key)]
    node = helper.make_node("Resize", ["x", "roi", "" if key == "sizes" else "scales"] + (["sizes"] if key == "sizes"
                            else []), ["y"], mode="nearest", coordinate_transformation_mode=attrs["coord"],
                            nearest_mode=attrs["nearest_mode"])
    g = helper.make_graph([node], "index", [helper.make_tensor_value_info("x", TensorProto.INT32, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)})[0]
    where = np.unravel_index(y, shape)
    return tuple(np.ascontiguousarray(where[i][(0,) * i + (slice(None),) + (0,) * (len(shape) - i - 1)], np.int64)
                 for i in range(len(shape)))


def prep_resize(node, const, K):
    """Mode "ort": nearest resize with equal input and output quantization, the selection
    onnxruntime makes (`onnxruntime_nearest_index`, once per input shape)."""
    a = node.attrs
    if a["mode"] != "nearest" or not _same_quant(a):
        raise NpusimError(f"resize mode {a['mode']!r} with x (scale {a['x_scale']}, zp {a['x_zp']}) -> y "
                          f"(scale {a['y_scale']}, zp {a['y_zp']}) has an integer form in mode 'npu' only")
    return _resize_runner(node, K, None, index=onnxruntime_nearest_index)


def prep_resize_npu(rounding):
    def prepare(node, const, K):
        a = node.attrs
        if _same_quant(a):
            return _resize_runner(node, K, None, rounding)
        m0, n = K.quantize_multiplier(np.array([float(a["x_scale"]) / float(a["y_scale"])]))
        xz, yz, dt = int(a["x_zp"]), int(a["y_zp"]), storage(a["dtype"])
        lo, hi = int(a["qmin"]), int(a["qmax"])
        return _resize_runner(node, K, lambda v: K.fixed_rescale(v, xz, int(m0[0]), int(n[0]), yz, lo, hi, dt,
                                                                 rounding), rounding)
    return prepare


def conv_transpose_geometry(in_hw, k, attrs) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, left), (OH, OW)) of a 2-D ConvTranspose as ONNX defines it: with output_shape, or
    auto_pad SAME_* (output in·stride), total = s·(in − 1) + output_padding + (k − 1)·d + 1 − out,
    split total//2 at the beginning for SAME_UPPER, total − total//2 otherwise; else explicit pads
    (VALID: none) and out = s·(in − 1) + output_padding + (k − 1)·d + 1 − begin − end."""
    s = [int(v) for v in attrs["strides"]]
    d = [int(v) for v in attrs["dilations"]]
    op = [int(v) for v in attrs["output_padding"]] or [0, 0]
    mode, want = attrs["auto_pad"], [int(v) for v in attrs.get("output_shape", ())]
    if len(want) > 2:
        want = want[-2:]
    full = [s[i] * (in_hw[i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 for i in range(2)]
    if want or mode in ("SAME_UPPER", "SAME_LOWER"):
        out = want or [in_hw[i] * s[i] for i in range(2)]
        total = [full[i] - out[i] for i in range(2)]
        begin = [t // 2 if mode == "SAME_UPPER" else t - t // 2 for t in total]
    else:
        pads = [0, 0, 0, 0] if mode == "VALID" else [int(v) for v in attrs["pads"]] or [0, 0, 0, 0]
        begin, out = pads[:2], [full[i] - pads[i] - pads[i + 2] for i in range(2)]
    if min(out) < 1 or min(begin) < 0:
        raise NpusimError(f"conv_transpose of spatial {tuple(in_hw)}: output {tuple(out)} with pads at the "
                          f"beginning {tuple(begin)} (strides {s}, kernel {list(k)}, output_padding {op})")
    return (begin[0], begin[1]), (out[0], out[1])


def prep_conv_transpose(node, const, K):
    """conv_transpose (2-D; a 1-D one runs with H = 1): weights, zero points and bias constant."""
    x_name, w_name, b_name, xzp_name, wzp_name = node.inputs
    w = const(w_name)
    if w is None or w.ndim not in (3, 4):
        raise NpusimError(f"weight {w_name!r}: expected a constant of rank 3 or 4 (C, M/group, [kH,] kW), got "
                          + ("a tensor computed at run time" if w is None else f"shape {w.shape}"))
    a = dict(node.attrs)
    one_d = w.ndim == 3
    if one_d:
        w = w[:, :, None, :]
        a.update({key: (1,) + tuple(a[key]) for key in ("strides", "dilations")},
                 output_padding=(0,) + tuple(a["output_padding"] or (0,)),
                 pads=(0, a["pads"][0], 0, a["pads"][1]) if a["pads"] else (0, 0, 0, 0),
                 output_shape=(1,) + tuple(a["output_shape"][-1:]) if a.get("output_shape") else ())
    group = int(a["group"])
    m = w.shape[1] * group
    if group < 1 or w.shape[0] % group:
        raise NpusimError(f"attribute group={group}: expected a divisor of the {w.shape[0]} input channels of "
                          f"weight {w_name!r}")
    if len(a.get("kernel_shape", ())) and tuple(int(v) for v in a["kernel_shape"]) != w.shape[2 + one_d:]:
        raise NpusimError(f"attribute kernel_shape={list(a['kernel_shape'])}: the weight {w_name!r} has kernel "
                          f"{list(w.shape[2 + one_d:])}")
    bias = np.ascontiguousarray(const(b_name) if b_name else np.zeros(m, np.int32), np.int32).reshape(-1)
    if bias.shape != (m,):
        raise NpusimError(f"bias {b_name!r} has {bias.size} values, expected {m}: one per output channel")
    xz = const(xzp_name) if xzp_name else 0
    wz = const(wzp_name) if wzp_name else 0
    if xz is None or wz is None:
        raise NpusimError(f"zero points {xzp_name!r}, {wzp_name!r} must be constants")
    if np.size(xz) != 1 or np.size(wz) not in (1, w.shape[1], m):
        raise NpusimError(f"zero points: x_zp has {np.size(xz)} values (expected 1), w_zp {np.size(wz)} "
                          f"(expected 1, {w.shape[1]} (ONNX axis 1, repeated per group) or {m})")
    xz = int(np.asarray(xz).reshape(-1)[0])
    wz = np.asarray(wz, np.int32).reshape(-1)
    wz = np.ascontiguousarray(np.tile(wz, m // wz.size) if wz.size > 1 else np.full(m, wz[0]), np.int32)
    w = np.ascontiguousarray(w)
    k = w.shape[2:]
    geometry = {}

    def run(x, *_):
        x4 = x[:, :, None, :] if one_d else x
        if x4.ndim != 4 or x4.shape[1] != w.shape[0]:
            raise NpusimError(f"input {x_name!r} has shape {x.shape}, expected {w.shape[0]} channels in dimension 1 "
                              f"(weight {w_name!r} {w.shape})")
        hw = x4.shape[2:]
        if hw not in geometry:
            geometry[hw] = conv_transpose_geometry(hw, k, a)
        top_left, out_hw = geometry[hw]
        acc = K.conv_transpose_acc(x4, xz, w, wz, bias, a["strides"], top_left, a["dilations"], out_hw, group)
        return (acc[:, :, 0, :] if one_d else acc,)
    return run


def conv_transpose_macs(node, ins, outs):
    """Every input pixel meets every weight once: N·H·W · C·(M/group)·kH·kW."""
    x, w = ins[0], ins[1]
    return int(np.prod(x)) // int(x[1]) * int(np.prod(w))
