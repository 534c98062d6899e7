"""Checks of a parsed ONNX model at the door, before the front end converts it: onnx's own checker
and strict shape inference, names that are text, then the quantization constants onnxruntime would
only reject while running (an empty scale, a per-axis scale or zero point whose length is not the
axis' size). Each failure is one
NpusimError naming the file or bytes, the node and the input, expected against got.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import onnx

from .context import import_session_options
from ..errors import NpusimError

_QDQ = ("QuantizeLinear", "DequantizeLinear")


def check(model: onnx.ModelProto, where: str, qonnx: bool = False) -> None:
    """Refuse a model that onnx's checker (or strict shape inference) rejects and that onnxruntime
    also cannot load, with both reasons; a model onnxruntime loads passes (it is the reference
    npusim follows: an output declared without a shape, say, which the checker wants). A QONNX
    model (`qonnx`) has no onnxruntime to ask: the checker's verdict stands, except for a missing
    shape field, and its custom domains are given the opset import published exports leave out.
    Names are checked first (_check_names), quantization constants last (_check_qdq_constants)."""
    _check_names(model, where)
    checked = _with_custom_opsets(model) if qonnx else model
    try:
        onnx.checker.check_model(checked)
        onnx.shape_inference.infer_shapes(checked, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, ValueError) as e:
        # ValueError: UnicodeDecodeError (a string field not UTF-8), a type proto of no known case
        msg = " ".join(str(e).split())[:300]
        if "2GB" in msg or "2 GB" in msg:  # a model over 2 GB: onnx checks it from a path only; onnxruntime judges
            return _check_constants(model, where)
        if isinstance(e, UnicodeDecodeError):  # onnxruntime's parser fails on it too (and prints "EP Error")
            raise NpusimError(f"{where}: not a valid ONNX model: a name or other text field is not UTF-8 (a damaged "
                              f"file: {msg})") from None
        if qonnx:
            if "'shape' of 'type' is required" not in msg:
                raise NpusimError(f"{where}: onnx.checker rejects the model: {msg}") from None
        else:
            ort_msg = _onnxruntime_refusal(model)
            if ort_msg is not None:
                raise NpusimError(f"{where}: onnx.checker and onnxruntime reject the model: onnx.checker: {msg}; "
                                  f"onnxruntime: {ort_msg}") from None
    _check_constants(model, where)


def _with_custom_opsets(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of a QONNX model with an opset import (version 1) for every node domain it lacks:
    the exports as published (Brevitas' onnx.brevitas, FINN's and QKeras' finn.custom_op.general)
    declare none for their custom domain, and qonnx's executor runs them."""
    declared = {o.domain for o in model.opset_import}
    missing = sorted({n.domain for n in model.graph.node} - declared - {"", "ai.onnx"})
    if not missing:
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.opset_import.extend(onnx.helper.make_opsetid(d, 1) for d in missing)
    return copy


def _check_constants(model: onnx.ModelProto, where: str) -> None:
    """Initializers of known element types, quantization constants consistent."""
    for t in model.graph.initializer:
        try:
            onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        except KeyError:
            raise NpusimError(f"{where}: initializer {t.name!r}: data type {t.data_type} is not an ONNX tensor type "
                              f"(a damaged file)") from None
    _check_qdq_constants(model, where)


def _onnxruntime_refusal(model: onnx.ModelProto) -> str | None:
    """onnxruntime's reason for not loading `model` (no graph optimization), or None if it loads."""
    import onnxruntime as ort

    so = import_session_options(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    try:  # its Python wrapper prints "EP Error" banners to stdout before it retries: kept off the output
        with contextlib.redirect_stdout(io.StringIO()):
            ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        return " ".join(str(e).split())[:300] or type(e).__name__
    return None


def _is_quant_op(node) -> bool:
    """Ops whose scale and zero point inputs npusim reads at import: Q/DQ, QLinear*, QGemm, QONNX Quant."""
    return node.op_type in _QDQ or node.op_type.startswith("QLinear") or node.op_type in ("QGemm", "Quant")


def _check_names(model: onnx.ModelProto, where: str) -> None:
    """Every node, op, domain, input and output name is text: protobuf hands a name whose bytes are not UTF-8
    over as bytes (a damaged file), which onnx's checker and onnxruntime both let through."""
    g = model.graph
    for node in g.node:
        for name in (node.name, node.op_type, node.domain, *node.input, *node.output):
            if not isinstance(name, str):
                raise NpusimError(f"{where}: not a valid ONNX model: a name of node {node.name!r} is not UTF-8 text "
                                  f"({name!r}; a damaged file)")


def _check_qdq_constants(model: onnx.ModelProto, where: str) -> None:
    """The constant scales and zero points of quantization ops: none is empty; a Q/DQ's zero point
    has as many values as its scale (ONNX: the same shape); and a Q/DQ of a constant input, per
    axis (no block_size), has one value or x.shape[axis] values."""
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if not _is_quant_op(node):
            continue
        label = f"{where}: node {node.name!r} ({node.op_type})"
        sizes = {}
        for i, name in enumerate(node.input):
            p = inits.get(name)
            if i and p is not None:
                sizes[i] = int(np.prod(p.dims, dtype=np.int64))
                if not sizes[i]:
                    raise NpusimError(f"{label}: input {i} {name!r} is empty (shape {tuple(p.dims)}): a scale, zero "
                                      f"point or bit width needs a value")
        if node.op_type not in _QDQ or node.domain not in ("", "ai.onnx"):
            continue
        if 1 in sizes and 2 in sizes and sizes[1] != sizes[2]:
            raise NpusimError(f"{label}: zero point {node.input[2]!r} has {sizes[2]} values, scale {node.input[1]!r} "
                              f"{sizes[1]}: expected the same shape")
        x = inits.get(node.input[0])
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if x is None or attrs.get("block_size", 0):
            continue
        rank, axis = len(x.dims), int(attrs.get("axis", 1))
        for i, what in ((1, "scale"), (2, "zero point")):
            size = sizes.get(i)
            if size is None or size == 1:
                continue
            if not -rank <= axis < rank:
                raise NpusimError(f"{label}: attribute axis={axis} is outside the rank {rank} of input {x.name!r} "
                                  f"{tuple(x.dims)}")
            if size != x.dims[axis]:
                raise NpusimError(f"{label}: {what} {node.input[i]!r} has {size} values, expected 1 or "
                                  f"{x.dims[axis]} (input {x.name!r} {tuple(x.dims)}, axis {axis})")
