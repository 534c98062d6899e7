"""The six static-quantization variants every zoo family is built in, and one function that makes them.

A variant name is `<format>_<granularity>_<activations>`:

    format       qop = QOperator (QLinearConv, QLinearAdd, QGemm, ... nodes)
                 qdq = QuantizeLinear/DequantizeLinear pairs around float ops
    granularity  pc  = per-channel weight scales (axis 0 of each weight)
                 pt  = one scale per weight tensor
    activations  u8  = uint8 activations (QUInt8), s8 = int8 activations (QInt8)

Weights are always QInt8. Calibration is MinMax over a fixed list of feeds, so a build is
deterministic for a given onnxruntime version; activations are asymmetric (zero point free),
weights symmetric (zero point 0), which are onnxruntime's defaults.
"""
import pathlib

import numpy as np

# name -> (onnxruntime QuantFormat, per_channel, activation QuantType), by member name: the
# quantizer (onnxruntime.quantization, onnx) is imported only to build a model, not to find one
VARIANTS = {
    "qop_pc_u8": ("QOperator", True, "QUInt8"),
    "qop_pt_u8": ("QOperator", False, "QUInt8"),
    "qdq_pc_u8": ("QDQ", True, "QUInt8"),
    "qop_pc_s8": ("QOperator", True, "QInt8"),
    "qop_pt_s8": ("QOperator", False, "QInt8"),
    "qdq_pc_s8": ("QDQ", True, "QInt8"),
}


def quantize(float_path: pathlib.Path, out_path: pathlib.Path, variant: str,
             calib_feeds: list[dict[str, np.ndarray]]) -> pathlib.Path:
    """Quantize `float_path` into `out_path` as `variant` (a key of VARIANTS), atomically."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from npusim.quantize import FeedsReader

    fmt, per_channel, act_type = VARIANTS[variant]
    return _write_atomic(out_path, lambda tmp: quantize_static(
        str(float_path), tmp, FeedsReader(calib_feeds), quant_format=QuantFormat[fmt], per_channel=per_channel,
        activation_type=QuantType[act_type], weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax))


def save_atomic(model, out_path: pathlib.Path) -> pathlib.Path:
    """onnx.save through a temporary file and a rename."""
    import onnx

    return _write_atomic(out_path, lambda tmp: onnx.save(model, tmp))


def _write_atomic(out_path, write) -> pathlib.Path:
    """`write(tmp)` atomically to `out_path` (npusim.ir.write_atomic), creating its folder."""
    from npusim.ir import write_atomic

    out_path = pathlib.Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out_path, write)
    return out_path
