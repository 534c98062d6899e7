"""Offline requantization forms: from the real scales of a layer to what the runtime applies,
and the bias in accumulator units (`bias_i32`).

Kept apart from the integer runtime. Today one form, "f32": onnxruntime's float32 output
multiplier, `multiplier[c] = (x_scale * w_scale[c]) / y_scale` rounded to float32 at each step,
applied as y = clamp(rne(f32(acc) * multiplier) + y_zp) (npusim_kernels requantize_f32).
QGemm's multiplier is ((alpha * a_scale) * b_scale[c]) / y_scale, in that order.
"""
import numpy as np

from npusim_kernels.golden.requant import ort_output_scale, qgemm_scale


def bias_i32(real, acc_scale) -> np.ndarray | None:
    """A bias of real values in units of the accumulator's scale, as an NPU compiler rescales it
    offline: round_half_away_from_zero(real / acc_scale) in float64, int32; None when a value
    leaves int32. real and acc_scale: float arrays broadcastable to the channels."""
    v = np.asarray(real, np.float64) / np.asarray(acc_scale, np.float64)
    v = np.sign(v) * np.floor(np.abs(v) + 0.5)
    return None if np.any(np.abs(v) > 2 ** 31 - 1) else v.astype(np.int32)


def f32_form(attrs: dict) -> dict:
    """The "f32" form of a requantize node whose attrs hold x_scale, w_scale, y_scale (and alpha for QGemm)."""
    if "alpha" in attrs:
        m = qgemm_scale(attrs["alpha"], attrs["x_scale"], attrs["w_scale"], attrs["y_scale"])
    else:
        m = ort_output_scale(attrs["x_scale"], attrs["w_scale"], attrs["y_scale"])
    return {"form": "f32", "multiplier": m}
