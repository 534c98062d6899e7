"""Post-training quantization of a float ONNX model (`npusim quantize`), with the WESS scheme.

The pipeline, in order (`quantize`):

0. A model below opset 13 is converted to opset 13 (onnx's version converter; QDQ carries
   per-channel axes from 13), and every Constant node becomes an initializer
   (`fold_constant_nodes`: paddle2onnx, which exported rapidocr's models, puts every weight
   there). A layer weight still computed by other nodes from constants is refused, and so is a
   model without a Conv/ConvTranspose/Gemm/MatMul of constant weight (nothing to quantize).
   A batch dimension of -1 (as paddle2onnx writes it) is dynamic, as onnxruntime takes it.
1. `fold_batchnorm`: every BatchNormalization that follows a Conv, or a ConvTranspose
   (optionally through a per-channel bias Add), is folded into that op's weights and bias.
2. onnxruntime's `quantize_static` calibrates (MinMax, Percentile or Entropy) and writes the
   QDQ or QOperator model with 8-bit activations and int8 weights.
3. Activations with `abits < 8`: scale and zero point are recomputed for 2^abits levels from
   the calibrated range, which is read back from the 8-bit pair as
   [(qmin8 - zp)·s, (qmax8 - zp)·s] (within s/2 of the calibrated range: the 8-bit zero point
   was rounded), with onnxruntime's own `compute_scale_zp`.
4. Every weight onnxruntime quantized for a Conv, ConvTranspose, Gemm or MatMul is quantized
   again from the FLOAT weight of the folded model, for the layer's scheme and `wbits`
   (`weight_scales`, `quantize_weights`), and its bias again to int32 with scale
   x_scale·w_scale[c]·beta (onnxruntime's rule, round half to even, saturated to int32).
5. Sub-8-bit tensors are declared in `metadata_props["npusim.bits"]` (JSON {tensor: "i4", ...});
   the npusim front end gives those tensors that type and clamps every requantize to its range.
   onnxruntime ignores the key: it still clamps activations to their 8-bit storage range, so
   with abits < 8 onnxruntime and npusim differ wherever a value leaves the narrow range.
6. The ONNX file is written atomically (temporary file + rename), then the npusim IR beside it.

Weights (every scheme): symmetric, zero point 0, int8 storage, values in
[-(2^(b-1) - 1), 2^(b-1) - 1]; q = clamp(rne(w / scale[c])) with w and the float32 scale
divided in float64.
- per-tensor:  scale = max|w| / (2^(b-1) - 1)
- per-channel: scale[c] = max|w_c| / (2^(b-1) - 1)   (1.0 for an all-zero channel)
- wess (seed 003, arXiv 2008.05767): a 4-bit shift s[c] per output channel (`wess_shifts`),
  one layer scale S = max_c(max|w_c|·2^s[c]) / (2^(b-1) - 1) = max|w| / (2^(b-1) - 1), and
  effective per-channel scale S·2^-s[c] (exact in float32), which the front end recognises.

Tensor names follow onnxruntime's quantizer: the quantized weight of initializer `w` is
`w_quantized`; the scale and zero point of activation tensor `t` are `t_scale`, `t_zero_point`.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import NpusimError
from .feeds import format_shape
from .quantize_args import ACTIVATION_TYPES, BITS, CALIBRATIONS, FORMATS, SCHEMES

WESS_MAX_SHIFT = 15  # 4-bit shifts
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_FUSED_ACTIVATIONS = ("Relu", "Clip")  # onnxruntime folds these into the producing quantized op


# ---------------------------------------------------------------- Constant nodes and BatchNormalization folding

def fold_constant_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Turn every Constant node of the main graph into an initializer of the same name, in
    place; returns `model`. Exporters such as paddle2onnx (rapidocr's models) put every weight
    and batch-norm parameter in a Constant node: as initializers, fold_batchnorm and the weight
    quantization see them. Values are unchanged (a Constant is its value)."""
    g = model.graph
    for node in [n for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")]:
        at = node.attribute[0]
        if at.type == onnx.AttributeProto.TENSOR:
            arr = numpy_helper.to_array(at.t)
        elif at.name in _CONSTANT_LISTS:
            arr = np.array(helper.get_attribute_value(at), _CONSTANT_LISTS[at.name])
        else:
            continue  # sparse or string constants carry no weight
        g.initializer.append(numpy_helper.from_array(arr, node.output[0]))
        g.node.remove(node)
    return model


_CONSTANT_LISTS = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
                   "value_ints": np.int64}


def fold_batchnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold BatchNormalization into the op before it, in place; returns `model`.

    Patterns (the producer's output must feed only the next node; BN parameters initializers):
      Conv -> BN                               (w [M, C/g, k...], channel axis 0)
      ConvTranspose(group 1) [-> Add(bias)] -> BN  (w [C, M, k...], channel axis 1; the Add's
                                               constant holds one value per channel, [1, M, 1, 1])
    With s = gamma / sqrt(var + eps): w'[c] = w[c]·s[c], b'[c] = (b[c] - mean[c])·s[c] + beta[c]
    (b = 0 without a bias), computed in float64 and stored as float32. The folded op takes the
    BN's output name, so the tensors downstream keep their names.
    """
    g = model.graph
    init = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    uses = {o.name: 1 for o in g.output}  # a graph output is a use: its name must stay
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for bn in [n for n in g.node if n.op_type == "BatchNormalization"]:
        if len(bn.output) != 1 or not all(i in init for i in bn.input[1:5]):
            continue
        op, bias_add = producer.get(bn.input[0]), None
        if op is not None and op.op_type == "Add" and uses[op.output[0]] == 1:
            bias_add, op = op, producer.get(op.input[0])
        if op is None or op.op_type not in ("Conv", "ConvTranspose") or uses[op.output[0]] != 1:
            continue
        if op.input[1] not in init or (len(op.input) > 2 and op.input[2] and op.input[2] not in init):
            continue
        axis = 0 if op.op_type == "Conv" else 1
        group = next((a.i for a in op.attribute if a.name == "group"), 1)
        if (op.op_type == "ConvTranspose" and group != 1) or (op.op_type == "Conv" and bias_add is not None):
            continue
        w = numpy_helper.to_array(init[op.input[1]]).astype(np.float64)
        channels = w.shape[axis] * (group if axis == 1 else 1)
        b = (numpy_helper.to_array(init[op.input[2]]).astype(np.float64).reshape(-1)
             if len(op.input) > 2 and op.input[2] else np.zeros(channels))
        if bias_add is not None:
            extra = init.get(bias_add.input[1])
            if extra is None or extra.dims[1:2] != [channels] or int(np.prod(extra.dims)) != channels:
                continue
            b = b + numpy_helper.to_array(extra).astype(np.float64).reshape(-1)
        gamma, beta, mean, var = (numpy_helper.to_array(init[i]).astype(np.float64) for i in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        s = gamma / np.sqrt(var + eps)
        shape = [1] * w.ndim
        shape[axis] = -1
        w_name, b_name = op.input[1] + "_bnfolded", op.input[1] + "_bnfolded_bias"
        g.initializer.extend([numpy_helper.from_array((w * s.reshape(shape)).astype(np.float32), w_name),
                              numpy_helper.from_array(((b - mean) * s + beta).astype(np.float32), b_name)])
        folded = helper.make_node(op.op_type, [op.input[0], w_name, b_name], [bn.output[0]], op.name)
        folded.attribute.extend(op.attribute)
        idx = list(g.node).index(op)
        for n in [op, bias_add, bn]:
            if n is not None:
                g.node.remove(n)
        g.node.insert(idx, folded)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    return model


# ---------------------------------------------------------------- weight quantization

def wess_shifts(w: np.ndarray, axis: int = 0) -> np.ndarray:
    """The WESS shift of each output channel (along `axis`) of float weight `w`: the largest
    s in 0..15 with r_c·2^s <= max_c r_c, r_c = max|w_c| (compared exactly); an all-zero
    channel gets 15. -> uint8 [C]."""
    r = _channel_absmax(w, axis)
    shifts = np.zeros(r.shape, np.uint8)
    for s in range(1, WESS_MAX_SHIFT + 1):  # r·2^s grows with s: the last s that fits wins
        shifts[np.ldexp(r, s) <= r.max()] = s
    return shifts


def weight_scales(w: np.ndarray, scheme: str, wbits: int, axis: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """-> (float32 scales, WESS shifts or None): one scale (shape [1]) for per-tensor, one per
    channel along `axis` for per-channel and wess (see the module docstring)."""
    qmax = (1 << (wbits - 1)) - 1
    r = _channel_absmax(w, axis)
    if scheme == "per-tensor":
        return np.array([r.max() / qmax if r.max() > 0 else 1.0], np.float32), None
    if scheme == "per-channel":
        return np.where(r > 0, r / qmax, 1.0).astype(np.float32), None
    shifts = wess_shifts(w, axis)
    layer = np.float32(r.max() / qmax if r.max() > 0 else 1.0)
    return np.ldexp(layer, -shifts.astype(np.int32)).astype(np.float32), shifts


def quantize_weights(w: np.ndarray, scales: np.ndarray, wbits: int, axis: int = 0) -> np.ndarray:
    """int8 weights q = clamp(rne(w / scale[c]), -(2^(b-1) - 1), 2^(b-1) - 1), float64 division;
    `scales` has one value (per tensor) or one per channel along `axis`."""
    qmax = (1 << (wbits - 1)) - 1
    shape = [1] * w.ndim
    if scales.size > 1:
        shape[axis] = -1
    q = np.rint(w.astype(np.float64) / scales.astype(np.float64).reshape(shape))
    return np.clip(q, -qmax, qmax).astype(np.int8)


def quantize_bias(b: np.ndarray, bias_scale: np.ndarray) -> tuple[np.ndarray, int]:
    """-> (int32 bias rne(b / bias_scale) saturated to int32, number of saturated values)."""
    q = np.rint(b.astype(np.float64).reshape(-1) / bias_scale.astype(np.float64).reshape(-1))
    lo, hi = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    return np.clip(q, lo, hi).astype(np.int32), int(np.count_nonzero((q < lo) | (q > hi)))


def _channel_absmax(w, axis) -> np.ndarray:
    w = np.abs(np.moveaxis(np.asarray(w, np.float64), axis, 0))
    return w.reshape(w.shape[0], -1).max(axis=1)


def _channel_axis(node: onnx.NodeProto, w: np.ndarray) -> int:
    """Output-channel axis of a layer's weight (onnxruntime's per-channel axis)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if _attr(node, "transB", 0) else 1
    return w.ndim - 1  # MatMul [.., K, N]


def _attr(node, name, default):
    a = next((a for a in node.attribute if a.name == name), None)
    return default if a is None else helper.get_attribute_value(a)


# ---------------------------------------------------------------- the API

@dataclass
class LayerSummary:
    name: str               # the float model's node name
    op: str
    wbits: int
    abits: int              # bits of the layer's output activation
    scheme: str
    shifts: tuple = ()      # WESS shifts per output channel
    bias_saturated: int = 0  # bias values clamped to int32 (a tiny w_scale, e.g. a zero WESS channel)


@dataclass
class QuantizeResult:
    onnx: pathlib.Path
    ir: pathlib.Path
    layers: list = field(default_factory=list)
    bits: dict = field(default_factory=dict)  # metadata npusim.bits: {tensor: IR type}

    def summary_text(self) -> str:
        rows = [("layer", "op", "wbits", "abits", "scheme", "wess shifts")]
        for s in self.layers:
            note = f"  ({s.bias_saturated} bias values saturated to int32)" if s.bias_saturated else ""
            rows.append((s.name, s.op, str(s.wbits), str(s.abits), s.scheme,
                         (" ".join(map(str, s.shifts)) if s.shifts else "-") + note))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(wd) for c, wd in zip(r[:5], widths)) + "  " + r[5] for r in rows]
        lines.insert(1, "  ".join("-" * wd for wd in widths) + "  " + "-" * 11)
        return "\n".join(line.rstrip() for line in lines) + f"\n\nwrote {self.onnx}\nwrote {self.ir}"


def quantize(float_model, output, calibration_data_reader, *, scheme="per-channel", wbits=8, abits=8,
             calibration="minmax", quant_format="qdq", activation_type="u8", layer_bits=None,
             progress=True) -> QuantizeResult:
    """Quantize the float ONNX model `float_model` into `output` (and the IR beside it, .npz).

    calibration_data_reader: an onnxruntime CalibrationDataReader (get_next() -> feeds or None).
    layer_bits: {float node name: {"wbits": b, "abits": b}} (or a JSON file of it) overriding
    wbits/abits per layer. See the module docstring for what is computed.
    """
    from . import ir
    from .session import load_graph

    cal = calibrate(float_model, calibration_data_reader, scheme=scheme, calibration=calibration,
                    quant_format=quant_format, activation_type=activation_type, progress=progress)
    qmodel, summaries, bits = cal.apply_bits(wbits, abits, layer_bits)
    output = pathlib.Path(output)
    save_model_atomic(qmodel, output)
    ir_path = output.with_suffix(".npz")
    ir.save(load_graph(str(output)), ir_path)
    return QuantizeResult(output, ir_path, summaries, bits)


@dataclass
class Calibrated:
    """A float model folded and calibrated once (onnxruntime's quantize_static, 8-bit), from which
    any weight/activation bitwidth assignment is made without calibrating again (`apply_bits`)."""
    model: onnx.ModelProto     # the float model, batch norms folded
    qmodel: onnx.ModelProto    # onnxruntime's 8-bit quantization of it
    scheme: str
    activation_type: str
    layers: list               # the weight layers (float NodeProtos)

    def apply_bits(self, wbits=8, abits=8, layer_bits=None):
        """-> (quantized ONNX model, per-layer summaries, declared sub-byte types)."""
        _check_bits("wbits", wbits)
        _check_bits("abits", abits)
        per_layer = _layer_bits(layer_bits, {n.name for n in self.layers}, wbits, abits)
        qmodel = onnx.ModelProto()
        qmodel.CopyFrom(self.qmodel)
        bits = _set_activation_bits(qmodel, self.model, per_layer, abits, self.activation_type)
        summaries = []
        for node in self.layers:
            s = _requantize_layer(qmodel, self.model, node, self.scheme, per_layer[node.name], bits)
            if s is not None:
                summaries.append(s)
        del qmodel.metadata_props[:]  # npusim owns the metadata it writes
        qmodel.metadata_props.add(key="npusim.bits", value=json.dumps(bits, sort_keys=True))
        return qmodel, summaries, bits


def calibrate(float_model, calibration_data_reader, *, scheme="per-channel", calibration="minmax",
              quant_format="qdq", activation_type="u8", progress=True) -> Calibrated:
    """Fold batch norms and calibrate the activations (onnxruntime's quantize_static)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from tqdm.contrib.logging import logging_redirect_tqdm

    _check_choice("scheme", scheme, SCHEMES)
    _check_choice("calibration", calibration, CALIBRATIONS)
    _check_choice("quant_format", quant_format, FORMATS)
    _check_choice("activation_type", activation_type, ACTIVATION_TYPES)
    model = fold_constant_nodes(_opset_at_least_13(load_float(float_model), float_model))
    fold_batchnorm(model)
    layers = [n for n in model.graph.node if _is_weight_layer(model, n)]
    _check_weights_constant(model, float_model, layers)
    with tempfile.TemporaryDirectory(prefix="npusim-quantize-") as tmp:
        folded, quantized = os.path.join(tmp, "folded.onnx"), os.path.join(tmp, "quantized.onnx")
        onnx.save(model, folded)
        reader = _CheckedReader(calibration_data_reader, model, progress)
        quiet = _DropPreprocessAdvice()
        logging.getLogger().addFilter(quiet)
        try:
            with logging_redirect_tqdm():  # library warnings above the bar, not through it
                quantize_static(
                    folded, quantized, reader,
                    quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                    per_channel=scheme != "per-tensor",
                    activation_type=QuantType.QUInt8 if activation_type == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                      "entropy": CalibrationMethod.Entropy}[calibration])
        finally:
            reader.close()
            logging.getLogger().removeFilter(quiet)
        if reader.count == 0:
            raise NpusimError("calibration data: the reader gave no samples")
        qmodel = onnx.load(quantized)
    return Calibrated(model, qmodel, scheme, activation_type, layers)


def save_model_atomic(model: onnx.ModelProto, path) -> pathlib.Path:
    """onnx.save, atomically (npusim.ir.write_atomic)."""
    from .ir import write_atomic

    write_atomic(path, lambda tmp: onnx.save(model, tmp))
    return pathlib.Path(path)


def _check_choice(what, value, choices):
    if value not in choices:
        raise NpusimError(f"{what} {value!r}: expected one of {', '.join(choices)}")


def _check_bits(what, value, where=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value not in BITS:
        raise NpusimError(f"{where}{what} {value!r}: expected an integer in 2..8")


def load_float(float_model) -> onnx.ModelProto:
    from .frontend import read_model

    model = read_model(float_model if isinstance(float_model, (bytes, bytearray)) else str(float_model))
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in (
        "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger")})
    if quantized:
        raise NpusimError(f"{float_model}: already quantized (has {', '.join(quantized)} nodes); "
                          f"quantize takes a float model")
    return model


def _opset_at_least_13(model, where) -> onnx.ModelProto:
    """The model converted to opset 13 (onnx's version converter) when its default opset is older:
    QDQ carries per-channel axes from opset 13 (onnxruntime's quantizer writes them regardless)."""
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        return model
    try:
        return version_converter.convert_version(model, 13)
    except Exception as e:
        raise NpusimError(f"{where}: opset {opset}: onnx cannot convert it to opset 13, which quantization "
                          f"needs: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _check_weights_constant(model, where, layers):
    """Refuse a model that leaves nothing to quantize, or whose layer weights are computed from
    constants by other nodes (a Constant -> Transpose, say: npusim quantizes initializer weights)."""
    inits = {t.name for t in model.graph.initializer}
    varying = {vi.name for vi in model.graph.input if vi.name not in inits}
    for n in model.graph.node:  # topological order: a node's output varies if one of its inputs does
        if any(i in varying for i in n.input):
            varying.update(n.output)
    for n in model.graph.node:
        if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] not in inits and n.input[1] not in varying:
            raise NpusimError(f"{where}: layer {n.name!r} ({n.op_type}): its weight {n.input[1]!r} is computed from "
                              f"constants by other nodes; fold them first (onnxruntime.quantization.quant_pre_process)")
    if not layers:
        raise NpusimError(f"{where}: nothing to quantize: no {'/'.join(WEIGHT_OPS)} layer with a constant weight")


def _is_weight_layer(model, node) -> bool:
    inits = {t.name for t in model.graph.initializer}
    return node.op_type in WEIGHT_OPS and len(node.input) > 1 and node.input[1] in inits


def _layer_bits(layer_bits, names, wbits, abits) -> dict[str, dict[str, int]]:
    """{layer name: {"wbits", "abits"}} for every weight layer, with the overrides applied."""
    if isinstance(layer_bits, (str, os.PathLike)):
        try:
            with open(layer_bits) as f:
                layer_bits = json.load(f)
        except OSError as e:
            raise NpusimError(f"layer bits {layer_bits}: cannot read ({e.strerror})") from None
        except ValueError as e:
            raise NpusimError(f"layer bits {layer_bits}: not valid JSON ({e})") from None
    out = {n: {"wbits": wbits, "abits": abits} for n in names}
    if layer_bits is None:
        return out
    if not isinstance(layer_bits, dict):
        raise NpusimError("layer bits: expected an object {layer name: {\"wbits\": b, \"abits\": b}}")
    for name, bits in layer_bits.items():
        if name not in names:
            raise NpusimError(f"layer bits: {name!r} is not a Conv/ConvTranspose/Gemm/MatMul layer with a constant "
                              f"weight of the model (known: {', '.join(sorted(names)) or 'none'})")
        if not isinstance(bits, dict) or not set(bits) <= {"wbits", "abits"}:
            raise NpusimError(f"layer bits: layer {name!r}: expected {{\"wbits\": b, \"abits\": b}}, got {bits!r}")
        for k, v in bits.items():
            _check_bits(k, v, where=f"layer bits: layer {name!r}: ")
        out[name] = {**out[name], **bits}
    return out


class _DropPreprocessAdvice(logging.Filter):
    """onnxruntime advises quant_pre_process on every call; fold_batchnorm did what npusim needs."""

    def filter(self, record):
        return "pre-processing before quantization" not in record.getMessage()


class _CheckedReader:
    """Wraps a CalibrationDataReader: checks every feed against the model's inputs (names,
    element type float, rank and fixed dimensions) and shows a tqdm progress bar."""

    def __init__(self, reader, model, progress):
        from tqdm import tqdm

        self._reader = reader
        inits = {t.name for t in model.graph.initializer}
        self._inputs = {vi.name: [d.dim_value if d.HasField("dim_value") else d.dim_param
                                  for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input
                        if vi.name not in inits}
        self.count = 0
        self._bar = tqdm(desc="calibrating", unit="sample", total=len(reader) if hasattr(reader, "__len__") else None,
                         disable=not progress, leave=False)

    def get_next(self):
        feeds = self._reader.get_next()
        if feeds is None:
            return None
        where = f"calibration sample {self.count}"
        missing = [n for n in self._inputs if n not in feeds]
        if missing:
            raise NpusimError(f"{where}: missing input {missing[0]!r} (the model's inputs: {', '.join(self._inputs)})")
        for name, dims in self._inputs.items():
            x = np.asarray(feeds[name])
            if x.dtype != np.float32:
                raise NpusimError(f"{where}: input {name!r} is {x.dtype}, expected float32")
            if x.ndim != len(dims) or any(isinstance(d, int) and d > 0 and d != s for d, s in zip(dims, x.shape)):
                raise NpusimError(f"{where}: input {name!r} has shape {x.shape}, the model expects "
                                  f"{format_shape(dims)}")
        self.count += 1
        self._bar.update(1)
        return feeds

    def close(self):
        self._bar.close()


# ---------------------------------------------------------------- post-processing the quantized model

class _Inits:
    """The quantized model's initializers, read as arrays and replaced in place."""

    def __init__(self, model):
        self.protos = {t.name: t for t in model.graph.initializer}

    def __contains__(self, name):
        return name in self.protos

    def get(self, name) -> np.ndarray:
        return numpy_helper.to_array(self.protos[name])

    def set(self, name, arr):
        """Replace initializer `name` by `arr`, keeping its shape (sizes must agree)."""
        old = self.protos[name]
        self.protos[name].CopyFrom(numpy_helper.from_array(np.asarray(arr).reshape(tuple(old.dims)), name))


def _activation_tensors(float_model, node) -> list[str]:
    """The float tensors that carry a layer's output quantization: its output and the outputs
    of the Relu/Clip chain onnxruntime folds into it."""
    consumers = {}
    for n in float_model.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    out = [node.output[0]]
    while len(consumers.get(out[-1], [])) == 1 and consumers[out[-1]][0].op_type in _FUSED_ACTIVATIONS:
        out.append(consumers[out[-1]][0].output[0])
    return out


def _set_activation_bits(qmodel, float_model, per_layer, abits, activation_type) -> dict[str, str]:
    """Recompute every sub-8-bit activation's scale and zero point in place (module docstring,
    step 3) -> {quantized tensor name: IR type} of the sub-8-bit activations."""
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    inits = _Inits(qmodel)
    tensor_bits = {}
    for node in float_model.graph.node:
        if node.name in per_layer:
            for t in _activation_tensors(float_model, node):
                tensor_bits[t] = per_layer[node.name]["abits"]
    float_tensors = [vi.name for vi in float_model.graph.input] + [o for n in float_model.graph.node for o in n.output]
    signed = activation_type == "s8"
    declared = {}
    for t in float_tensors:
        scale, zp = f"{t}_scale", f"{t}_zero_point"
        b = tensor_bits.get(t, abits)
        if b == 8 or scale not in inits or zp not in inits:
            continue
        s8, z8 = float(inits.get(scale)), int(inits.get(zp))
        lo8, hi8 = (-128, 127) if signed else (0, 255)
        lo, hi = (-(1 << (b - 1)), (1 << (b - 1)) - 1) if signed else (0, (1 << b) - 1)
        zdt = np.int8 if signed else np.uint8
        z, s = compute_scale_zp(np.float32((lo8 - z8) * s8), np.float32((hi8 - z8) * s8), zdt(lo), zdt(hi))
        inits.set(scale, np.float32(s))
        inits.set(zp, zdt(z))
        for name in _tensors_quantized_with(qmodel, scale, zp) | ({f"{t}_quantized"} & _tensor_names(qmodel)):
            declared[name] = f"{'i' if signed else 'u'}{b}"
    return declared


def _tensor_names(model) -> set[str]:
    return {x for n in model.graph.node for x in (*n.input, *n.output)}


def _tensors_quantized_with(model, scale, zp) -> set[str]:
    """Integer tensors quantized with the pair (scale, zp): QuantizeLinear outputs, and every
    non-constant tensor followed by the pair in a node's inputs (DequantizeLinear, QLinear* triples)."""
    consts = {t.name for t in model.graph.initializer} | {""}
    out = set()
    for n in model.graph.node:
        ins = list(n.input)
        if n.op_type == "QuantizeLinear" and ins[1:3] == [scale, zp]:
            out.add(n.output[0])
            continue  # its input is the float tensor
        for i in range(len(ins) - 2):
            if ins[i + 1:i + 3] == [scale, zp] and ins[i] not in consts:
                out.add(ins[i])
    return out


def _requantize_layer(qmodel, float_model, node, scheme, bits, declared) -> LayerSummary | None:
    """Re-quantize one layer's weight (and bias) from its float weight; None if onnxruntime
    left the layer in float."""
    inits = _Inits(qmodel)
    w_name = node.input[1]
    w_q = f"{w_name}_quantized"
    if w_q not in inits:
        return None
    refs = _layer_refs(qmodel, w_q, node)
    w = numpy_helper.to_array(next(t for t in float_model.graph.initializer if t.name == w_name))
    axis = _channel_axis(node, w)
    old_scale = inits.get(refs["w_scale"])
    if scheme != "per-tensor" and old_scale.size != w.shape[axis]:
        raise NpusimError(f"layer {node.name!r} ({node.op_type}): onnxruntime quantized its weight with "
                          f"{old_scale.size} scales, expected one per channel of axis {axis} ({w.shape[axis]})")
    scales, shifts = weight_scales(w, scheme, bits["wbits"], axis)
    inits.set(w_q, quantize_weights(w, scales, bits["wbits"], axis))
    inits.set(refs["w_scale"], scales)
    inits.set(refs["w_zp"], np.zeros(inits.get(refs["w_zp"]).shape, np.int8))
    if bits["wbits"] < 8:
        declared[w_q] = f"i{bits['wbits']}"
    saturated = 0
    if refs.get("b_q"):
        b_float = next(t for t in float_model.graph.initializer if t.name == node.input[2])
        beta = _attr(node, "beta", 1.0) if node.op_type == "Gemm" else 1.0
        bias_scale = (np.float32(inits.get(refs["x_scale"])) * scales * np.float32(beta)).astype(np.float32)
        b_q, saturated = quantize_bias(numpy_helper.to_array(b_float), np.broadcast_to(bias_scale, (
            int(np.prod(b_float.dims)),)))
        inits.set(refs["b_q"], b_q)
        if refs.get("b_scale"):
            inits.set(refs["b_scale"], bias_scale)
            inits.set(refs["b_zp"], np.zeros(bias_scale.shape, np.int32))
    return LayerSummary(node.name, node.op_type, bits["wbits"], bits["abits"], scheme,
                        tuple(int(s) for s in shifts) if shifts is not None else (), saturated)


def _layer_refs(qmodel, w_q, node) -> dict[str, str]:
    """Initializer names around quantized weight `w_q`: w_scale, w_zp, x_scale, and b_q
    (+ b_scale, b_zp in QDQ) when the layer has a bias."""
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    for n in qmodel.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] == w_q:  # QDQ
            layer = next((c for c in qmodel.graph.node if n.output[0] in c.input and c.op_type == node.op_type), None)
            x_dq = producer.get(layer.input[0]) if layer is not None else None
            if x_dq is None or x_dq.op_type != "DequantizeLinear":
                break
            refs = {"w_scale": n.input[1], "w_zp": n.input[2], "x_scale": x_dq.input[1]}
            b_dq = producer.get(layer.input[2]) if len(layer.input) > 2 and layer.input[2] else None
            if b_dq is not None and b_dq.op_type == "DequantizeLinear":
                refs.update(b_q=b_dq.input[0], b_scale=b_dq.input[1], b_zp=b_dq.input[2])
            return refs
        if n.op_type in ("QLinearConv", "QGemm", "QLinearMatMul") and len(n.input) > 5 and n.input[3] == w_q:
            refs = {"w_scale": n.input[4], "w_zp": n.input[5], "x_scale": n.input[1]}
            b_index = {"QLinearConv": 8, "QGemm": 6}.get(n.op_type)
            if b_index is not None and len(n.input) > b_index and n.input[b_index]:
                refs["b_q"] = n.input[b_index]
            return refs
    raise NpusimError(f"layer {node.name!r} ({node.op_type}): its quantized weight {w_q!r} is not used in a "
                      f"pattern npusim quantize knows (DequantizeLinear -> {node.op_type}, QLinearConv, QGemm, "
                      f"QLinearMatMul)")


# ---------------------------------------------------------------- calibration data and CLI

class FeedsReader:
    """An onnxruntime-style CalibrationDataReader over a list of feeds dicts, read once."""

    def __init__(self, feeds):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)


class NpzReader:
    """A CalibrationDataReader over arrays keyed by input name, first axis = samples; sample i
    is fed as arr[i:i+1]. A single-array file may use any key when the model has one input,
    and a model of one input may also take a .npy file (its one array)."""

    def __init__(self, path, input_names: list[str]):
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.ndarray):
                with loaded as z:
                    arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise NpusimError(f"--calib {path}: cannot read .npz or .npy arrays ({e})") from None
        if isinstance(loaded, np.ndarray):
            if len(input_names) != 1:
                raise NpusimError(f"--calib {path}: one .npy array, but the model has {len(input_names)} inputs "
                                  f"({', '.join(input_names)}): give an .npz with an array per input name")
            arrays = {input_names[0]: loaded}
        if len(input_names) == 1 and len(arrays) == 1:
            arrays = {input_names[0]: next(iter(arrays.values()))}
        missing = [n for n in input_names if n not in arrays]
        if missing:
            raise NpusimError(f"--calib {path}: no array for input {missing[0]!r} (arrays: {', '.join(arrays)})")
        counts = {n: arrays[n].shape[0] if arrays[n].ndim else 0 for n in input_names}
        if len(set(counts.values())) != 1 or not next(iter(counts.values())):
            raise NpusimError(f"--calib {path}: every input needs the same number (>0) of samples on axis 0, got "
                              + ", ".join(f"{n}: {c}" for n, c in counts.items()))
        self._arrays = {n: arrays[n].astype(np.float32) if arrays[n].dtype == np.float64 else arrays[n]
                        for n in input_names}
        self._count, self._i = next(iter(counts.values())), 0

    def __len__(self) -> int:
        return self._count

    def get_next(self):
        if self._i >= self._count:
            return None
        self._i += 1
        return {n: a[self._i - 1:self._i] for n, a in self._arrays.items()}
