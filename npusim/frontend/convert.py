"""ONNX node -> IR nodes, one converter per ONNX op (the explicit list is `CONVERTERS`).

A converter returns False when the node has no integer form here (float data, an attribute
combination the kernels do not cover); the front end then makes it a host op. Quantization
parameters of QLinear ops must be constant initializers; a clear error names the node if not.
"""
from __future__ import annotations

import numpy as np
from onnx import helper

from ..errors import NpusimError
from ..ir import Quant, Tensor, is_quantized, qrange
from .context import ONNX_DTYPES


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _in(node, i):
    return node.input[i] if i < len(node.input) else ""


def quant_of(scale, zp, axis=None):
    scale = np.asarray(scale, np.float32).reshape(-1)
    zp = np.zeros(scale.shape, np.int64) if zp is None else np.asarray(zp).reshape(-1).astype(np.int64)
    return Quant(tuple(float(s) for s in scale), tuple(int(z) for z in zp), axis if scale.size > 1 else None)


def _out_dtype(ctx, node, zp_index, default="u8"):
    name = _in(node, zp_index)
    return ctx.dtype(name) if name else default


def _scalar_f32(ctx, node, i, what):
    v = ctx.const(node, i, what)
    if v is None or v.size != 1:
        raise NpusimError(f"node {node.name!r} ({node.op_type}): input {what!r} must be a scalar, got shape "
                          f"{None if v is None else v.shape}")
    return np.float32(v.reshape(-1)[0])


def _scalar_zp(ctx, node, i, what):
    v = ctx.const(node, i, what)
    if v is not None and np.size(v) != 1:
        raise NpusimError(f"node {node.name!r} ({node.op_type}): input {what!r} must be a scalar, got shape "
                          f"{np.shape(v)}")
    return 0 if v is None else int(np.asarray(v).reshape(-1)[0])


def _quantized_input(ctx, node, i=0):
    return is_quantized(ctx.dtype(_in(node, i)))


def conv_attrs(a, spatial):
    k = tuple(a.get("kernel_shape", ()))
    return {"auto_pad": a.get("auto_pad", b"NOTSET").decode() if isinstance(a.get("auto_pad", b""), bytes)
            else a.get("auto_pad", "NOTSET"),
            "pads": tuple(a.get("pads", (0,) * (2 * spatial))), "strides": tuple(a.get("strides", (1,) * spatial)),
            "dilations": tuple(a.get("dilations", (1,) * spatial)), "kernel_shape": k}


def _requant(ctx, node, acc, y, x_scale, w_scale, y_scale, y_zp, dtype, axis, source, alpha=None):
    """A requantize node in the float32 form onnxruntime uses (see npusim.requant)."""
    from ..requant import f32_form

    qmin, qmax = qrange(dtype)
    attrs = {} if alpha is None else {"alpha": np.float32(alpha)}
    attrs |= {"x_scale": np.float32(x_scale), "w_scale": np.asarray(w_scale, np.float32).reshape(-1),
             "y_scale": np.float32(y_scale), "y_zp": int(y_zp), "qmin": qmin, "qmax": qmax, "dtype": dtype,
             "axis": axis}
    attrs.update(f32_form(attrs))
    shifts = wess_shifts_of_scales(attrs["w_scale"])
    if shifts is not None:
        attrs["wess_shift"] = shifts
    ctx.emit("requantize", f"{source}/requantize", [acc], [y], attrs, source)
    ctx.add_tensor(y, dtype, quant=quant_of(y_scale, y_zp))


def wess_shifts_of_scales(w_scale) -> np.ndarray | None:
    """The 4-bit weight-equalizing shifts of a layer whose per-channel weight scales are
    w_scale[c] = w_layer · 2^-s[c] exactly, s[c] in 0..15, w_layer = max(w_scale), not all s
    zero (seed 003, WESS); None for any other scales. A uint8 array of one shift per channel."""
    w = np.asarray(w_scale, np.float32).reshape(-1)
    if w.size < 2 or not np.all(w > 0):
        return None
    mant, exp = np.frexp(w)
    s = exp.max() - exp
    if np.any(mant != mant[0]) or s.max() > 15 or not s.any():
        return None
    return s.astype(np.uint8)


def _ort_u8s8(ctx, a, b) -> dict:
    """{"ort_u8s8": 1} when onnxruntime multiplies operand A `a` (u8) by B `b` (s8) in its U8S8
    GEMM / ConvSym kernels, whose pair sums saturate on CPUs without VNNI (npusim.ortisa)."""
    return {"ort_u8s8": 1} if (ctx.dtype(a), ctx.dtype(b)) == ("u8", "i8") else {}


def _conv(ctx, node, linear):
    """QLinearConv -> conv (i32 accumulator) + requantize; ConvInteger -> conv."""
    x, w = _in(node, 0), _in(node, 3 if linear else 1)
    if not (is_quantized(ctx.dtype(x)) and is_quantized(ctx.dtype(w))):
        return False
    w_arr = ctx.const(node, 3 if linear else 1, "w")
    if w_arr.ndim not in (3, 4):
        return False
    a = _attrs(node)
    attrs = conv_attrs(a, w_arr.ndim - 2)
    attrs["group"] = int(a.get("group", 1))
    depthwise = w_arr.shape[1] == 1 and w_arr.shape[0] == attrs["group"]
    if linear and not depthwise:  # ConvInteger passes w as the GEMM's A operand: S8U8, exact
        attrs.update(_ort_u8s8(ctx, x, w))
    if linear:
        ins = [x, w, _in(node, 8), _in(node, 2), _in(node, 5)]
        acc = f"{node.output[0]}::acc"
    else:
        ins = [x, w, "", _in(node, 2), _in(node, 3)]
        acc = node.output[0]
    ctx.emit("conv", node.name, ins, [acc], attrs, node.name)
    ctx.add_tensor(acc, "i32")
    if linear:
        x_s = _scalar_f32(ctx, node, 1, "x_scale")
        ctx.tensors[x] = Tensor(x, ctx.dtype(x), ctx.tensors[x].shape, quant_of(x_s, ctx.const(node, 2, "x_zero_point")))
        _requant(ctx, node, acc, node.output[0], x_s, ctx.const(node, 4, "w_scale"),
                 _scalar_f32(ctx, node, 6, "y_scale"), _scalar_zp(ctx, node, 7, "y_zero_point"),
                 _out_dtype(ctx, node, 7), 1, node.name)
    return True


def _matmul(ctx, node, linear):
    """QLinearMatMul -> matmul + requantize; MatMulInteger -> matmul."""
    a, b = _in(node, 0), _in(node, 3 if linear else 1)
    if not (is_quantized(ctx.dtype(a)) and is_quantized(ctx.dtype(b))):
        return False
    if linear:
        ins, acc = [a, b, _in(node, 2), _in(node, 5)], f"{node.output[0]}::acc"
    else:
        ins, acc = [a, b, _in(node, 2), _in(node, 3)], node.output[0]
    ctx.emit("matmul", node.name, ins, [acc], _ort_u8s8(ctx, a, b), node.name)
    ctx.add_tensor(acc, "i32")
    if linear:
        _requant(ctx, node, acc, node.output[0], _scalar_f32(ctx, node, 1, "a_scale"), ctx.const(node, 4, "b_scale"),
                 _scalar_f32(ctx, node, 6, "y_scale"), _scalar_zp(ctx, node, 7, "y_zero_point"),
                 _out_dtype(ctx, node, 7), -1, node.name)
    return True


def _qgemm(ctx, node):
    """com.microsoft QGemm -> gemm (i32 accumulator, C added) + requantize with y_scale, or
    + scale_float without (float output, f32(acc)·((alpha·a_scale)·b_scale[n]))."""
    a_name, b_name = _in(node, 0), _in(node, 3)
    if not (is_quantized(ctx.dtype(a_name)) and is_quantized(ctx.dtype(b_name))):
        return False
    if bool(_in(node, 7)) != bool(_in(node, 8)):
        return False  # onnxruntime picks its output form by y_zero_point alone; no such form here
    a = _attrs(node)
    acc = f"{node.output[0]}::acc"
    ctx.emit("gemm", node.name, [a_name, b_name, _in(node, 6), _in(node, 2), _in(node, 5)], [acc],
             {"transA": int(a.get("transA", 0)), "transB": int(a.get("transB", 0)), **_ort_u8s8(ctx, a_name, b_name)},
             node.name)
    ctx.add_tensor(acc, "i32")
    alpha = float(a.get("alpha", 1.0))
    if not _in(node, 7):
        _scale_float(ctx, node, acc, _in(node, 1), ctx.const(node, 4, "b_scale"), "", alpha)
        return True
    _requant(ctx, node, acc, node.output[0], _scalar_f32(ctx, node, 1, "a_scale"), ctx.const(node, 4, "b_scale"),
             _scalar_f32(ctx, node, 7, "y_scale"), _scalar_zp(ctx, node, 8, "y_zero_point"),
             _out_dtype(ctx, node, 8), -1, node.name, alpha=alpha)
    return True


def _scale_float(ctx, node, acc, a_scale, b_scale, bias, alpha=1.0):
    """A scale_float node: node.output[0]:f32 = f32(acc)·((alpha·a_scale)·b_scale[n]) (+ bias[n]),
    onnxruntime's float output of an integer GEMM (npusim_kernels scale_float)."""
    attrs = {"b_scale": np.asarray(b_scale, np.float32).reshape(-1), "alpha": float(np.float32(alpha))}
    ctx.emit("scale_float", f"{node.name}/scale_float", [acc, a_scale, bias], [node.output[0]], attrs, node.name)
    ctx.add_tensor(node.output[0], "f32")


def _to_float_parameters(ctx, b, b_scale, b_zp, bias):
    """The constants of a MatMulIntegerToFloat / DynamicQuantizeMatMul whose output processor
    MLAS applies alone: B a constant matrix, b_scale and b_zero_point scalar or one per column,
    bias absent or one per column. None otherwise (onnxruntime then rescales the output in a
    second pass, or B is computed at run time): the node stays on the host."""
    w = ctx.constants.get(b)
    if w is None or w.ndim != 2:
        return None
    n = w.shape[1]
    scale, zp, vb = (ctx.constants.get(x) if x else np.zeros(0) for x in (b_scale, b_zp, bias))
    if scale is None or zp is None or vb is None:
        return None
    per_column = lambda v: v.size == 1 and v.ndim <= 1 or v.shape == (n,)
    if not (per_column(scale) and (zp.size == 0 or per_column(zp)) and (vb.size == 0 or vb.shape == (n,))):
        return None
    return scale


def _matmul_integer_to_float(ctx, node):
    """com.microsoft MatMulIntegerToFloat -> matmul (i32 accumulator) + scale_float (a_scale·b_scale[n], bias)."""
    a, b = _in(node, 0), _in(node, 1)
    if not (_quantized_input(ctx, node, 0) and _quantized_input(ctx, node, 1)):
        return False
    a_scale = ctx.constants.get(_in(node, 2))
    b_scale = _to_float_parameters(ctx, b, _in(node, 3), _in(node, 5), _in(node, 6))
    if b_scale is None or a_scale is None or a_scale.size != 1:
        return False  # a per-row a_scale (or scales onnxruntime swaps at run time): host
    acc = f"{node.output[0]}::acc"
    ctx.emit("matmul", node.name, [a, b, _in(node, 4), _in(node, 5)], [acc], _ort_u8s8(ctx, a, b), node.name)
    ctx.add_tensor(acc, "i32")
    _scale_float(ctx, node, acc, _in(node, 2), b_scale, _in(node, 6))
    return True


def _dynamic_quantize_matmul(ctx, node):
    """com.microsoft DynamicQuantizeMatMul -> dynamic_quantize (A to u8, run-time scale and zero
    point) + matmul (i32 accumulator) + scale_float (a_scale·b_scale[n], bias)."""
    x, b = _in(node, 0), _in(node, 1)
    if ctx.dtype(x) != "f32" or not _quantized_input(ctx, node, 1):
        return False
    b_scale = _to_float_parameters(ctx, b, _in(node, 2), _in(node, 3), _in(node, 4))
    if b_scale is None:
        return False
    q, q_scale, q_zp = (f"{node.output[0]}::{s}" for s in ("a_quantized", "a_scale", "a_zero_point"))
    ctx.emit("dynamic_quantize", f"{node.name}/dynamic_quantize", [x], [q, q_scale, q_zp], {}, node.name)
    for t, dt in zip((q, q_scale, q_zp), ("u8", "f32", "u8")):
        ctx.add_tensor(t, dt)
    acc = f"{node.output[0]}::acc"
    ctx.emit("matmul", node.name, [q, b, q_zp, _in(node, 3)], [acc], _ort_u8s8(ctx, q, b), node.name)
    ctx.add_tensor(acc, "i32")
    _scale_float(ctx, node, acc, q_scale, b_scale, _in(node, 4))
    return True


def _binary(op):
    def convert(ctx, node):
        if not (_quantized_input(ctx, node, 0) and _quantized_input(ctx, node, 3)):
            return False
        dtype = _out_dtype(ctx, node, 7)
        qmin, qmax = qrange(dtype)
        attrs = {"a_scale": _scalar_f32(ctx, node, 1, "A_scale"), "a_zp": _scalar_zp(ctx, node, 2, "A_zero_point"),
                 "b_scale": _scalar_f32(ctx, node, 4, "B_scale"), "b_zp": _scalar_zp(ctx, node, 5, "B_zero_point"),
                 "y_scale": _scalar_f32(ctx, node, 6, "C_scale"), "y_zp": _scalar_zp(ctx, node, 7, "C_zero_point"),
                 "qmin": qmin, "qmax": qmax, "dtype": dtype}
        ctx.emit(op, node.name, [_in(node, 0), _in(node, 3)], [node.output[0]], attrs, node.name)
        ctx.add_tensor(node.output[0], dtype, quant=quant_of(attrs["y_scale"], attrs["y_zp"]))
        return True
    return convert


def _unary_q(op, extra=lambda a: {}):
    """Ops with inputs (X, X_scale, X_zero_point, Y_scale, Y_zero_point)."""
    def convert(ctx, node):
        if not _quantized_input(ctx, node):
            return False
        a = _attrs(node)
        dtype = _out_dtype(ctx, node, 4, ctx.dtype(node.input[0]))
        qmin, qmax = qrange(dtype)
        attrs = {"x_scale": _scalar_f32(ctx, node, 1, "X_scale"), "x_zp": _scalar_zp(ctx, node, 2, "X_zero_point"),
                 "y_scale": _scalar_f32(ctx, node, 3, "Y_scale"), "y_zp": _scalar_zp(ctx, node, 4, "Y_zero_point"),
                 "qmin": qmin, "qmax": qmax, "dtype": dtype}
        attrs.update(extra(a))
        if attrs.get("channels_last", 0) and op != "global_avgpool":
            return False
        ctx.emit(op, node.name, [node.input[0]], [node.output[0]], attrs, node.name)
        ctx.add_tensor(node.output[0], dtype, quant=quant_of(attrs["y_scale"], attrs["y_zp"]))
        return True
    return convert


def _avgpool_attrs(a):
    d = conv_attrs(a, len(a.get("kernel_shape", (1, 1))))
    d.update(ceil_mode=int(a.get("ceil_mode", 0)), count_include_pad=int(a.get("count_include_pad", 0)),
             channels_last=int(a.get("channels_last", 0)))
    return d


def _qconcat(ctx, node):
    n_in = (len(node.input) - 2) // 3
    xs = [node.input[2 + 3 * i] for i in range(n_in)]
    if not all(is_quantized(ctx.dtype(x)) for x in xs):
        return False
    dtype = _out_dtype(ctx, node, 1)
    attrs = {"y_scale": _scalar_f32(ctx, node, 0, "Y_scale"), "y_zp": _scalar_zp(ctx, node, 1, "Y_zero_point"),
             "x_scales": np.array([_scalar_f32(ctx, node, 3 + 3 * i, "X_scale") for i in range(n_in)], np.float32),
             "x_zps": np.array([_scalar_zp(ctx, node, 4 + 3 * i, "X_zero_point") for i in range(n_in)], np.int64),
             "axis": int(_attrs(node)["axis"]), "dtype": dtype}
    ctx.emit("qconcat", node.name, xs, [node.output[0]], attrs, node.name)
    ctx.add_tensor(node.output[0], dtype, quant=quant_of(attrs["y_scale"], attrs["y_zp"]))
    return True


def _runtime_parameters(ctx, node):
    """True when a Q/DQ node's scale or zero point is computed at run time (e.g. an expanded
    DynamicQuantizeLinear): no integer form here, the node runs on the host."""
    return any(x and x not in ctx.constants for x in node.input[1:3])


def _quantize(ctx, node):
    """QuantizeLinear of float32 or float16 x (onnxruntime quantizes float16 in float32)."""
    if ctx.dtype(node.input[0]) not in ("f32", "f16") or _runtime_parameters(ctx, node):
        return False
    a = _attrs(node)
    scale = ctx.const(node, 1, "y_scale")
    zp = ctx.const(node, 2, "y_zero_point")
    if zp is not None:
        dtype = ctx.dtype(node.input[2])
    else:
        dtype = ONNX_DTYPES.get(int(a.get("output_dtype", 0)) or 2, "?")
    if not is_quantized(dtype) or not int(a.get("saturate", 1)):
        return False
    attrs = quantize_attrs(scale, zp, dtype, int(a.get("axis", 1)), int(a.get("block_size", 0)))
    ctx.emit("quantize", node.name, [node.input[0]], [node.output[0]], attrs, node.name)
    ctx.add_tensor(node.output[0], dtype,
                   quant=quant_of(scale, attrs["zp"], attrs["axis"]) if not attrs["block_size"] else None)
    return True


def quantize_attrs(scale, zp, dtype: str, axis: int = 1, block_size: int = 0) -> dict:
    """The attributes of a "quantize" node (registry: QuantizeLinear of float32 x to `dtype`):
    scale float32, zp int64 (zeros when None), axis, block_size, the type's qmin..qmax."""
    qmin, qmax = qrange(dtype)
    zp = np.zeros(np.shape(scale), np.int64) if zp is None else np.asarray(zp).astype(np.int64)
    return {"scale": np.asarray(scale).astype(np.float32), "zp": zp, "axis": axis, "block_size": block_size,
            "qmin": qmin, "qmax": qmax, "dtype": dtype}


def _dequantize(ctx, node):
    """DequantizeLinear; its output has the scale's float type (float32, or float16 from opset 19)."""
    dtype = ctx.dtype(node.input[0])
    if not (is_quantized(dtype) or dtype == "i32") or _runtime_parameters(ctx, node):
        return False
    a = _attrs(node)
    scale = ctx.const(node, 1, "x_scale")
    zp = ctx.const(node, 2, "x_zero_point")
    zp = np.zeros(scale.shape, np.int64) if zp is None else zp.astype(np.int64)
    out_dtype = "f16" if scale.dtype == np.float16 else "f32"
    attrs = {"scale": scale.astype(np.float32), "zp": zp, "axis": int(a.get("axis", 1)),
             "block_size": int(a.get("block_size", 0)), "dtype": out_dtype}
    if not attrs["block_size"]:
        t = ctx.tensors[node.input[0]]
        if t.quant is None:
            ctx.tensors[t.name] = Tensor(t.name, t.dtype, t.shape, quant_of(scale, zp, attrs["axis"]))
    ctx.emit("dequantize", node.name, [node.input[0]], [node.output[0]], attrs, node.name)
    ctx.add_tensor(node.output[0], out_dtype)
    return True


def _dynamic_quantize(ctx, node):
    if ctx.dtype(node.input[0]) != "f32":
        return False
    ctx.emit("dynamic_quantize", node.name, [node.input[0]], list(node.output), {}, node.name)
    for out, dt in zip(node.output, ("u8", "f32", "u8")):
        ctx.add_tensor(out, dt)
    return True


def _maxpool(ctx, node):
    if not _quantized_input(ctx, node) or len([o for o in node.output if o]) != 1:
        return False
    a = _attrs(node)
    if len(a.get("kernel_shape", ())) != 2:
        return False
    attrs = conv_attrs(a, 2)
    attrs["ceil_mode"] = int(a.get("ceil_mode", 0))
    ctx.emit("maxpool", node.name, [node.input[0]], [node.output[0]], attrs, node.name)
    t = ctx.tensors[node.input[0]]
    ctx.add_tensor(node.output[0], t.dtype, quant=t.quant)
    return True


def _data_movement(op, keys=()):
    """Shape ops on quantized tensors: the data passes through unchanged in value."""
    def convert(ctx, node):
        if not _quantized_input(ctx, node):
            return False
        a = _attrs(node)
        if op == "pad" and (a.get("mode", b"constant") not in (b"constant", "constant")):
            return False
        attrs = {k: (tuple(a[k]) if isinstance(a[k], list) else a[k]) for k in keys if k in a}
        data = [x for x in node.input]
        if op == "concat":
            if not all(_quantized_input(ctx, node, i) for i in range(len(node.input))):
                return False
            quants = {ctx.tensors[x].quant for x in node.input}
            if len(quants) != 1:
                return False
        ctx.emit(op, node.name, data, [node.output[0]], attrs, node.name)
        t = ctx.tensors[node.input[0]]
        ctx.add_tensor(node.output[0], t.dtype, quant=t.quant)
        return True
    return convert


def _clip(ctx, node):
    """Clip of quantized codes by constant bounds (npusim.frontend.qdq_fusion's clamp of a fused op's
    output): y = clamp(x, max(min, qmin), min(max, qmax)), as a round_shift by 0."""
    x = node.input[0]
    if not _quantized_input(ctx, node):
        return False
    t = ctx.tensors[x]
    lo, hi = qrange(t.dtype)
    bounds = [ctx.const(node, i, what) for i, what in ((1, "min"), (2, "max"))]
    if any(b is not None and b.size != 1 for b in bounds):
        return False
    lo = lo if bounds[0] is None else max(lo, int(bounds[0].reshape(-1)[0]))
    hi = hi if bounds[1] is None else min(hi, int(bounds[1].reshape(-1)[0]))
    ctx.emit("round_shift", node.name, [x], [node.output[0]],
             {"x_zp": 0, "shift": np.zeros(1, np.int64), "axis": 0, "rounding": "FLOOR", "y_zp": 0,
              "qmin": lo, "qmax": hi, "dtype": t.dtype}, node.name)
    ctx.add_tensor(node.output[0], t.dtype, quant=t.quant)
    return True


def _conv_transpose(ctx, node):
    """QLinearConvTranspose (npusim's fused form of DequantizeLinear -> ConvTranspose -> QuantizeLinear,
    npusim.frontend.qdq_upsample; inputs as QLinearConv's) -> conv_transpose (i32 accumulator) + requantize.
    Per-channel weight scales follow ONNX's axis 1 (M/group values), repeated for each group."""
    x, w = _in(node, 0), _in(node, 3)
    if not (is_quantized(ctx.dtype(x)) and is_quantized(ctx.dtype(w))):
        return False
    w_arr = ctx.const(node, 3, "w")
    if w_arr.ndim not in (3, 4):
        return False
    a = _attrs(node)
    group = int(a.get("group", 1))
    attrs = conv_attrs(a, w_arr.ndim - 2)
    attrs.update(group=group, output_padding=tuple(a.get("output_padding", ())),
                 output_shape=tuple(a.get("output_shape", ())))
    acc = f"{node.output[0]}::acc"
    ctx.emit("conv_transpose", node.name, [x, w, _in(node, 8), _in(node, 2), _in(node, 5)], [acc], attrs, node.name)
    ctx.add_tensor(acc, "i32")
    x_s = _scalar_f32(ctx, node, 1, "x_scale")
    ctx.tensors[x] = Tensor(x, ctx.dtype(x), ctx.tensors[x].shape, quant_of(x_s, ctx.const(node, 2, "x_zero_point")))
    w_scale = np.asarray(ctx.const(node, 4, "w_scale"), np.float32).reshape(-1)
    if w_scale.size == w_arr.shape[1] and group > 1:
        w_scale = np.tile(w_scale, group)
    _requant(ctx, node, acc, node.output[0], x_s, w_scale, _scalar_f32(ctx, node, 6, "y_scale"),
             _scalar_zp(ctx, node, 7, "y_zero_point"), _out_dtype(ctx, node, 7), 1, node.name)
    return True


def _resize_attrs(ctx, node, scales_at):
    """The resize node's attributes from an ONNX Resize's (opset 11+; its scales or sizes constant
    inputs at `scales_at`, `scales_at` + 1), or None for a form with no integer plan here
    (tf_crop_and_resize, half_pixel_symmetric, cubic, antialias, axes, a keep_aspect_ratio_policy,
    Resize-10)."""
    a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in _attrs(node).items()}
    mode, coord = a.get("mode", "nearest"), a.get("coordinate_transformation_mode", "half_pixel")
    if (mode not in ("nearest", "linear") or coord in ("tf_crop_and_resize", "half_pixel_symmetric")
            or int(a.get("antialias", 0))
            or a.get("axes") or a.get("keep_aspect_ratio_policy", "stretch") != "stretch" or len(node.input) < 3):
        return None
    scales = ctx.const(node, scales_at, "scales")
    sizes = ctx.const(node, scales_at + 1, "sizes")
    return {"mode": mode, "coord": coord, "nearest_mode": a.get("nearest_mode", "round_prefer_floor"),
            "scales": tuple(float(v) for v in np.asarray(scales, np.float32).reshape(-1)) if scales is not None
            and scales.size else (),
            "sizes": tuple(int(v) for v in np.asarray(sizes).reshape(-1)) if sizes is not None and sizes.size else ()}


def _emit_resize(ctx, node, attrs, x_quant, y_quant, dtype):
    qmin, qmax = qrange(dtype)
    attrs.update(x_scale=np.float32(x_quant[0]), x_zp=int(x_quant[1]), y_scale=np.float32(y_quant[0]),
                 y_zp=int(y_quant[1]), qmin=qmin, qmax=qmax, dtype=dtype)
    ctx.emit("resize", node.name, [node.input[0]], [node.output[0]], attrs, node.name)
    ctx.add_tensor(node.output[0], dtype, quant=quant_of(y_quant[0], y_quant[1]))
    return True


def _resize(ctx, node):
    """Resize on quantized codes, nearest: selection, the same quantization in and out (onnxruntime's
    own form of DequantizeLinear -> Resize -> QuantizeLinear with equal parameters)."""
    if not _quantized_input(ctx, node):
        return False
    attrs = _resize_attrs(ctx, node, 2)
    if attrs is None or attrs["mode"] != "nearest":
        return False
    q = ctx.tensors[node.input[0]].quant
    xq = (1.0, 0) if q is None or len(q.scale) != 1 else (q.scale[0], q.zero_point[0])
    return _emit_resize(ctx, node, attrs, xq, xq, ctx.dtype(node.input[0]))


def _qlinear_resize(ctx, node):
    """QLinearResize (npusim's fused form of DequantizeLinear -> Resize -> QuantizeLinear where the
    parameters differ or the mode is linear, npusim.frontend.qdq_upsample): inputs X, X_scale, X_zero_point,
    roi, scales, sizes, Y_scale, Y_zero_point; Resize's attributes. Mode "npu" only."""
    if not _quantized_input(ctx, node):
        return False
    attrs = _resize_attrs(ctx, node, 4)
    if attrs is None:
        return False
    xq = (_scalar_f32(ctx, node, 1, "X_scale"), _scalar_zp(ctx, node, 2, "X_zero_point"))
    yq = (_scalar_f32(ctx, node, 6, "Y_scale"), _scalar_zp(ctx, node, 7, "Y_zero_point"))
    return _emit_resize(ctx, node, attrs, xq, yq, _out_dtype(ctx, node, 7, ctx.dtype(node.input[0])))


def _shape(ctx, node):
    """Shape of a quantized tensor: its dimensions (start..end), int64."""
    if not _quantized_input(ctx, node):
        return False
    a = _attrs(node)
    attrs = {"start": int(a.get("start", 0))} | ({"end": int(a["end"])} if "end" in a else {})
    ctx.emit("shape", node.name, [node.input[0]], [node.output[0]], attrs, node.name)
    ctx.add_tensor(node.output[0], "i64")
    return True


CONVERTERS = {
    ("", "QLinearConv"): lambda c, n: _conv(c, n, True),
    ("", "ConvInteger"): lambda c, n: _conv(c, n, False),
    ("", "QLinearMatMul"): lambda c, n: _matmul(c, n, True),
    ("", "MatMulInteger"): lambda c, n: _matmul(c, n, False),
    ("com.microsoft", "QGemm"): _qgemm,
    ("com.microsoft", "MatMulIntegerToFloat"): _matmul_integer_to_float,
    ("com.microsoft", "DynamicQuantizeMatMul"): _dynamic_quantize_matmul,
    ("com.microsoft", "QLinearAdd"): _binary("add"),
    ("com.microsoft", "QLinearMul"): _binary("mul"),
    ("com.microsoft", "QLinearGlobalAveragePool"): _unary_q("global_avgpool",
                                                           lambda a: {"channels_last": int(a.get("channels_last", 0))}),
    ("com.microsoft", "QLinearAveragePool"): _unary_q("avgpool", _avgpool_attrs),
    ("com.microsoft", "QLinearSigmoid"): _unary_q("sigmoid"),
    ("com.microsoft", "QLinearLeakyRelu"): _unary_q("leaky_relu", lambda a: {"alpha": float(a.get("alpha", 0.01))}),
    ("com.microsoft", "QLinearSoftmax"): _unary_q("softmax", lambda a: {"axis": int(a.get("axis", -1)),
                                                                         "opset": int(a.get("opset", 13))}),
    ("com.microsoft", "QLinearConcat"): _qconcat,
    ("", "QuantizeLinear"): _quantize,
    ("", "DequantizeLinear"): _dequantize,
    # onnxruntime's quantizer writes 4- and 16-bit Q/DQ in its own domain before opset 21
    ("com.microsoft", "QuantizeLinear"): _quantize,
    ("com.microsoft", "DequantizeLinear"): _dequantize,
    ("", "DynamicQuantizeLinear"): _dynamic_quantize,
    ("", "MaxPool"): _maxpool,
    ("", "Reshape"): _data_movement("reshape", ("allowzero",)),
    ("", "Flatten"): _data_movement("flatten", ("axis",)),
    ("", "Transpose"): _data_movement("transpose", ("perm",)),
    ("", "Squeeze"): _data_movement("squeeze", ("axes",)),
    ("", "Unsqueeze"): _data_movement("unsqueeze", ("axes",)),
    ("", "Slice"): _data_movement("slice"),
    ("", "Pad"): _data_movement("pad"),
    ("", "Concat"): _data_movement("concat", ("axis",)),
    ("", "Identity"): _data_movement("identity"),
    ("", "Resize"): _resize,
    ("com.microsoft", "QLinearResize"): _qlinear_resize,
    ("com.microsoft", "QLinearConvTranspose"): _conv_transpose,
    ("", "Clip"): _clip,
    ("", "Shape"): _shape,
}


def convert(ctx, node) -> bool:
    fn = CONVERTERS.get((node.domain if node.domain != "ai.onnx" else "", node.op_type))
    return bool(fn and fn(ctx, node))
