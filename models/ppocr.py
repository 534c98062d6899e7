"""PP-OCR models built on demand from the installed PyPI package rapidocr-onnxruntime.

Two families, each as a float model and the six variants of `_quantize.VARIANTS`:

    ppocr_cls  MobileNetV3 text-direction classifier, ch_ppocr_mobile_v2.0_cls_infer.onnx
               (opset 11), input x [N, 3, 48, 192], output [N, 2] softmax
    ppocr_det  PP-OCRv4 text detector, ch_PP-OCRv4_det_infer.onnx (opset 12),
               input x [N, 3, H, W] with H, W multiples of 32, output [N, 1, H, W] sigmoid

The float model `ppocr_<family>_float` is the source model converted to opset 13 (so QDQ can
carry per-channel axes) and run through onnxruntime's quant_pre_process (ONNX shape inference
and graph optimization: BatchNormalization folded into Conv, Constant nodes turned into
initializers; `_check_preprocessed` fails the build otherwise), plus one fold onnxruntime does
not do: ConvTranspose -> Add(bias) -> BatchNormalization in the detector head, by
`npusim.quantize.fold_batchnorm`. The quantized variants are
made from it with deterministic calibration feeds (`_synth`). The files are a few MB each and
are not committed: they go to a cache directory, default ~/.cache/npusim/zoo/<rapidocr version>/.
The cache key is the rapidocr version only: after an onnxruntime upgrade (whose quantizer may
write different files) rebuild with `python -m npusim_models.build --all --force`.
"""
import os
import pathlib
import tempfile

from npusim_models._quantize import VARIANTS, quantize, save_atomic

SOURCES = {
    "ppocr_cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "ppocr_det": "ch_PP-OCRv4_det_infer.onnx",
}
CALIB_COUNT = {"ppocr_cls": 16, "ppocr_det": 8}
CALIB_SEED = 20240601  # distinct from the seeds tests and benchmarks use for sample inputs
NAMES = [f"{fam}_{v}" for fam in SOURCES for v in ("float", *VARIANTS)]


def _package():
    """-> (rapidocr version, models directory); a clear error if the package is missing."""
    try:
        import importlib.metadata

        import rapidocr_onnxruntime
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "the PP-OCR zoo models are built from the PyPI package rapidocr-onnxruntime, which is "
            "not installed (pip install 'npusim[zoo]')") from e
    version = importlib.metadata.version("rapidocr-onnxruntime")
    return version, pathlib.Path(rapidocr_onnxruntime.__file__).parent / "models"


def split_name(name) -> tuple[str, str]:
    """"ppocr_det_qdq_pc_s8" -> ("ppocr_det", "qdq_pc_s8")."""
    family = next(f for f in SOURCES if name.startswith(f + "_"))
    return family, name[len(family) + 1:]


def default_cache_dir() -> pathlib.Path:
    return pathlib.Path.home() / ".cache" / "npusim" / "zoo" / _package()[0]


def _prune_opsets(model):
    """Drop the opset imports onnxruntime's optimizer adds for domains no node uses."""
    used = {n.domain for n in model.graph.node} | {""}
    for o in [o for o in model.opset_import if o.domain not in used]:
        model.opset_import.remove(o)


def _check_preprocessed(model, name):
    """quant_pre_process must have folded every BatchNormalization and Constant node."""
    left = sorted({n.op_type for n in model.graph.node if n.op_type in ("BatchNormalization", "Constant")})
    if left:
        raise RuntimeError(f"{name}: quant_pre_process left {left} nodes in the graph")


def _build_float(family, out_path):
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from npusim.quantize import fold_batchnorm

    _, src_dir = _package()
    model = version_converter.convert_version(onnx.load(src_dir / SOURCES[family]), 13)
    with tempfile.TemporaryDirectory() as tmp:
        op13 = os.path.join(tmp, "opset13.onnx")
        pre = os.path.join(tmp, "pre.onnx")
        onnx.save(model, op13)
        quant_pre_process(op13, pre, skip_symbolic_shape=True)
        model = onnx.load(pre)
    fold_batchnorm(model)  # the ConvTranspose -> Add -> BatchNormalization of the detector head
    _prune_opsets(model)
    onnx.checker.check_model(model)
    _check_preprocessed(model, f"{family}_float")
    save_atomic(model, out_path)


def build(name, cache_dir=None, force=False, log=None) -> pathlib.Path:
    """-> path of the built model `name` (one of NAMES), building it (and its float parent) if absent."""
    if name not in NAMES:
        raise KeyError(f"unknown PP-OCR zoo model {name!r}; known: {', '.join(NAMES)}")
    cache_dir = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = cache_dir / f"{name}.onnx"
    if out.exists() and not force:
        return out
    family, variant = split_name(name)
    float_path = cache_dir / f"{family}_float.onnx"
    if variant == "float" or not float_path.exists():
        _build_float(family, float_path)
        if log:
            log(f"built {float_path}")
    if variant != "float":
        from npusim_models import sample_inputs

        quantize(float_path, out, variant, sample_inputs(f"{family}_float", CALIB_COUNT[family], CALIB_SEED))
        if log:
            log(f"built {out}")
    return out
