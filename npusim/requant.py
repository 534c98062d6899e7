"""Offline requantization forms: from the real scales of a layer to what the runtime applies.

Kept apart from the integer runtime. Today one form, "f32": onnxruntime's float32 output
multiplier, `multiplier[c] = (x_scale * w_scale[c]) / y_scale` rounded to float32 at each step,
applied as y = clamp(rne(f32(acc) * multiplier) + y_zp) (npusim_kernels requantize_f32).
QGemm's multiplier is ((alpha * a_scale) * b_scale[c]) / y_scale, in that order.
"""
from npusim_kernels.golden.requant import ort_output_scale, qgemm_scale


def f32_form(attrs: dict) -> dict:
    """The "f32" form of a requantize node whose attrs hold x_scale, w_scale, y_scale (and alpha for QGemm)."""
    if "alpha" in attrs:
        m = qgemm_scale(attrs["alpha"], attrs["x_scale"], attrs["w_scale"], attrs["y_scale"])
    else:
        m = ort_output_scale(attrs["x_scale"], attrs["w_scale"], attrs["y_scale"])
    return {"form": "f32", "multiplier": m}
