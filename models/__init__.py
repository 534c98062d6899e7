"""npusim's model zoo: small committed models and on-demand builds of bigger public ones.

    names()                        every model name
    path(name, cache_dir=None)     the .onnx file (committed, or built into the cache on demand)
    sample_inputs(name, count, seed)  deterministic realistic feeds [{input name: array}]
    DEFAULT                        the model the CLI uses when none is given

Families (each as `<family>_float` plus the six quantized variants `<family>_<fmt>_<gran>_<act>`
of `_quantize.VARIANTS`, e.g. `digits_qop_pc_u8`, `ppocr_det_qdq_pc_s8`):

    digits     small CNN on scikit-learn's 8x8 digits, committed in digits/ (build_digits.py)
    ppocr_cls  PP-OCR text-direction classifier, built from rapidocr-onnxruntime (ppocr.py)
    ppocr_det  PP-OCRv4 text detector, built from rapidocr-onnxruntime (ppocr.py)

Rebuild with `python -m npusim_models.build --help`.
"""
import pathlib

import numpy as np

from npusim_models._quantize import VARIANTS

DEFAULT = "digits_qop_pc_u8"
DIGITS_DIR = pathlib.Path(__file__).resolve().parent / "digits"
DIGITS_NAMES = [f"digits_{v}" for v in ("float", *VARIANTS)]


def names() -> list[str]:
    from npusim_models.ppocr import NAMES

    return DIGITS_NAMES + NAMES


def path(name: str, cache_dir=None) -> pathlib.Path:
    """The model file for `name`; PP-OCR models are built into cache_dir (default
    ~/.cache/npusim/zoo/<rapidocr version>/) on first use and reused afterwards."""
    if name in DIGITS_NAMES:
        p = DIGITS_DIR / f"{name}.onnx"
        if not p.exists():
            raise FileNotFoundError(f"{p} is missing; rebuild with python -m npusim_models.build --digits")
        return p
    if name.startswith("ppocr_"):
        from npusim_models import ppocr

        try:
            return ppocr.build(name, cache_dir)
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(f"zoo model {name!r}: {e}") from e
    raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(names())}")


def sample_inputs(name: str, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` feeds of batch 1 for model `name`, the same for the same (count, seed).

    digits: hold-out images from digits/samples.npz (pixels/16), x "input" [1, 1, 8, 8];
    ppocr_cls: synthetic text-line crops, x "x" [1, 3, 48, 192];
    ppocr_det: synthetic text pages, x "x" [1, 3, 160, 160]. All float32.
    """
    rng = np.random.default_rng(seed)
    if name.startswith("digits_"):
        x = load_digits_samples()[0]
        idx = rng.choice(len(x), size=count, replace=count > len(x))
        return [{"input": x[i:i + 1]} for i in idx]
    from npusim_models import _synth

    if name.startswith("ppocr_cls_"):
        return [{"x": _synth.cls_image(rng)} for _ in range(count)]
    if name.startswith("ppocr_det_"):
        return [{"x": _synth.det_image(rng)} for _ in range(count)]
    raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(names())}")


def load_digits_samples() -> tuple[np.ndarray, np.ndarray]:
    """-> (x float32 [N, 1, 8, 8] = pixels/16, y int64 [N]): the digits hold-out split."""
    with np.load(DIGITS_DIR / "samples.npz") as d:
        return d["x"], d["y"]
