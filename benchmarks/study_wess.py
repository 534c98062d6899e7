"""WESS study: weight bits x weight-scale scheme on the PP-OCR text-direction classifier.

For every weight bitwidth (default 8, 6, 4) and scheme (per-tensor, WESS, per-channel), the
float classifier (zoo "ppocr_cls_float") is quantized with 8-bit activations by
`npusim.quantize.quantize` (MinMax calibration on `textlines.calib_set`), run by npusim in mode
"npu" on the rendered evaluation set `textlines.eval_set` (400 lines, balanced upright / 180°),
and compared with the float model run by onnxruntime on the same inputs:

    accuracy   top-1 against the labels (the float model's own accuracy is the first row)
    agreement  fraction of lines where the quantized and float models pick the same label
    onnxruntime  accuracy of onnxruntime on the same quantized ONNX (its float requantization,
               8-bit storage), which separates the weight scheme's error from the NPU arithmetic
    weight SQNR  10·log10(Σ w² / Σ (w − ŵ)²) over the weights of every Conv/Gemm/MatMul, w the
               (BatchNormalization-folded) float weight, ŵ the quantized model's dequantized one
    SQNR       10·log10(Σ f² / Σ (f − q)²) in dB over all output probabilities, f the float
               model's softmax, q the quantized model's dequantized output

Prints a markdown table; `--out FILE` also writes it (atomically) with the set-up. Measures;
asserts nothing.

    python benchmarks/study_wess.py [--wbits 8 6 4] [--schemes per-tensor wess per-channel]
        [--count 400] [--calib 64] [--batch 50] [--mode npu] [--workdir DIR] [--out docs/wess_study.md]
"""
import argparse
import importlib.metadata
import math
import pathlib
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

import npusim
import npusim_models as zoo
from npusim_models import textlines
from npusim.fidelity import sqnr_db
from npusim.ir import write_atomic

FLOAT_MODEL = "ppocr_cls_float"
SCHEMES = {"per-tensor": "per-tensor", "wess": "WESS", "per-channel": "per-channel"}  # name -> table label
ABITS = 8


def run_batched(sess, x, batch) -> np.ndarray:
    """The first output of sess on x [N, 3, 48, 192], in batches of `batch` lines."""
    return np.concatenate([sess.run(None, {"x": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def weight_sqnr_db(float_path, quantized_onnx) -> float:
    """Weight-domain SQNR of a QDQ model: every DequantizeLinear of an initializer `<w>_quantized`
    that feeds a Conv/Gemm/MatMul weight input, against the float initializer `<w>` of the
    BatchNormalization-folded float model."""
    import onnx
    from onnx import numpy_helper

    from npusim.quantize import fold_batchnorm

    float_w = {t.name: numpy_helper.to_array(t) for t in fold_batchnorm(onnx.load(str(float_path))).graph.initializer}
    qmodel = onnx.load(str(quantized_onnx))
    init = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    weight_inputs = {n.input[1] for n in qmodel.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    signal = noise = 0.0
    for n in qmodel.graph.node:
        if n.op_type != "DequantizeLinear" or n.output[0] not in weight_inputs or n.input[0] not in init:
            continue
        w = float_w[n.input[0].removesuffix("_quantized")].astype(np.float64)
        scale, zp = init[n.input[1]].astype(np.float64), init[n.input[2]].astype(np.float64)
        if scale.size > 1:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * w.ndim
            shape[axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        signal += np.sum(w ** 2)
        noise += np.sum((w - (init[n.input[0]] - zp) * scale) ** 2)
    return 10 * math.log10(signal / noise)


def quantize_config(float_path, out_path, calib, scheme, wbits):
    from npusim.quantize import FeedsReader, quantize

    feeds = [{"x": calib[i:i + 1]} for i in range(len(calib))]
    return quantize(str(float_path), str(out_path), FeedsReader(feeds), scheme=scheme, wbits=wbits,
                    abits=ABITS, calibration="minmax", progress=False)


def study(args) -> list[dict]:
    float_path = zoo.path(FLOAT_MODEL)
    x, labels = textlines.eval_set(args.count, args.seed)
    calib = textlines.calib_set(args.calib, args.calib_seed)
    ref = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    f = run_batched(ref, x, args.batch)
    rows = [{"wbits": "float", "accuracy": textlines.accuracy(f, labels)}]
    print(f"float: accuracy {rows[0]['accuracy']:.4f}", file=sys.stderr)
    workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="wess_study_"))
    workdir.mkdir(parents=True, exist_ok=True)
    for wbits in args.wbits:
        for scheme in args.schemes:
            t = time.perf_counter()
            result = quantize_config(float_path, workdir / f"ppocr_cls_{scheme}_w{wbits}a{ABITS}.onnx",
                                     calib, scheme, wbits)
            sess = npusim.InferenceSession(str(result.ir), mode=args.mode)
            q = run_batched(sess, x, args.batch)
            q_ort = run_batched(ort.InferenceSession(str(result.onnx), providers=["CPUExecutionProvider"]),
                                x, args.batch)
            row = {"wbits": wbits, "scheme": scheme, "accuracy": textlines.accuracy(q, labels),
                   "agreement": float(np.mean(q.argmax(1) == f.argmax(1))), "sqnr_db": sqnr_db(f, q),
                   "accuracy_ort": textlines.accuracy(q_ort, labels),
                   "weight_sqnr_db": weight_sqnr_db(float_path, result.onnx),
                   "seconds": time.perf_counter() - t}
            rows.append(row)
            print(f"w{wbits} {scheme}: accuracy {row['accuracy']:.4f} agreement {row['agreement']:.4f} "
                  f"SQNR {row['sqnr_db']:.2f} dB, onnxruntime accuracy {row['accuracy_ort']:.4f}, "
                  f"weight SQNR {row['weight_sqnr_db']:.2f} dB ({row['seconds']:.1f} s)", file=sys.stderr)
    return rows


def table(rows) -> str:
    lines = ["| weights | scheme | accuracy | agreement with float | output SQNR (dB) "
             "| accuracy (onnxruntime) | weight SQNR (dB) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["wbits"] == "float":
            lines.append(f"| float | - | {r['accuracy']:.4f} | 1.0000 | - | {r['accuracy']:.4f} | - |")
            continue
        lines.append(f"| {r['wbits']}-bit | {SCHEMES[r['scheme']]} | {r['accuracy']:.4f} | {r['agreement']:.4f} "
                     f"| {r['sqnr_db']:.2f} | {r['accuracy_ort']:.4f} | {r['weight_sqnr_db']:.2f} |")
    return "\n".join(lines) + "\n"


def document(rows, args) -> str:
    versions = ", ".join(f"{p} {importlib.metadata.version(p)}"
                         for p in ("npusim", "onnxruntime", "rapidocr-onnxruntime", "pillow", "matplotlib",
                                   "opencv-python"))
    return f"""# WESS study: weight bits and weight-scale schemes on the PP-OCR direction classifier

Written by `python benchmarks/study_wess.py {' '.join(_argv_for_doc(args))}`.

Model: the PP-OCR MobileNetV3 text-direction classifier (zoo `{FLOAT_MODEL}`, from rapidocr-onnxruntime),
quantized by `npusim.quantize.quantize` (its defaults: QDQ format, uint8 activations, symmetric weights;
{ABITS}-bit activations), MinMax calibration on
`textlines.calib_set({args.calib}, seed={args.calib_seed})`, and run by npusim in mode `"{args.mode}"`.
Evaluation: `textlines.eval_set({args.count}, seed={args.seed})`, rendered text lines, half of them
rotated by 180° (labels "0" / "180"). The float row is onnxruntime on the float model.
Agreement: the fraction of lines where the quantized model picks the float model's label.
Output SQNR: 10·log10(Σ f² / Σ (f − q)²) over all output probabilities (f float softmax, q the
quantized model's dequantized output). Accuracy (onnxruntime): onnxruntime on the same quantized
ONNX file (its own float requantization; it ignores the sub-8-bit declarations, which only narrow
weights here, already stored in their narrow range), so a gap to the npusim accuracy is the NPU
arithmetic, not the weight scheme. Weight SQNR: 10·log10(Σ w² / Σ (w − ŵ)²) over the weights of
every Conv/Gemm/MatMul (w float after BatchNormalization folding, ŵ dequantized).

{table(rows)}
Versions: {versions}.
"""


def _argv_for_doc(args):
    out = ["--wbits", *map(str, args.wbits), "--schemes", *args.schemes, "--count", str(args.count),
           "--calib", str(args.calib), "--mode", args.mode]
    return out + (["--out", str(args.out)] if args.out else [])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--wbits", type=int, nargs="+", default=[8, 6, 4])
    p.add_argument("--schemes", nargs="+", choices=list(SCHEMES), default=list(SCHEMES))
    p.add_argument("--count", type=int, default=400, help="evaluation lines")
    p.add_argument("--seed", type=int, default=0, help="evaluation set seed")
    p.add_argument("--calib", type=int, default=64, help="calibration lines")
    p.add_argument("--calib-seed", type=int, default=1000)
    p.add_argument("--batch", type=int, default=50, help="lines per inference call")
    p.add_argument("--mode", default="npu", help='npusim mode ("npu"; "ort" for comparison)')
    p.add_argument("--workdir", help="keep the quantized models here (default: a temporary directory)")
    p.add_argument("--out", type=pathlib.Path, help="also write the table here, e.g. docs/wess_study.md")
    args = p.parse_args(argv)
    rows = study(args)
    print(table(rows), end="")
    if args.out:
        write_atomic(args.out, lambda tmp: pathlib.Path(tmp).write_text(document(rows, args)))
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
