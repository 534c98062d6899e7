"""Mode "npu" against onnxruntime and against the float64 fake-quantization reference, per zoo model.

For each quantized zoo model and rounding rule: the fraction of output elements equal to
onnxruntime's and the largest difference in LSBs (end to end: differences of earlier layers
propagate), the same layer-wise (every op fed onnxruntime's own inputs: the arithmetic
difference of the op alone), whether every quantized tensor equals the fake-quantization
reference, and the host islands left at inference. Measures; asserts nothing.

    python benchmarks/npu_vs_ort.py [--inputs 2] [--rounding double single] [--models NAME ...] [--out FILE.md]
"""
import argparse
import os
import tempfile

import npusim_models as zoo
from npusim.verify import verify


def row(name, rounding, inputs):
    r = verify(zoo.path(name), zoo.sample_inputs(name, inputs, seed=11), mode="npu", rounding=rounding)
    out_n = sum(c.elements for c in r.outputs)
    lw_n = sum(c.elements for c in r.layerwise)
    return (f"| {name} | {rounding} | {100 * sum(c.exact for c in r.outputs) / out_n:.2f}% | "
            f"{max(c.max_lsb for c in r.outputs):g} | "
            f"{100 * sum(c.exact for c in r.layerwise) / max(lw_n, 1):.3f}% of {lw_n:,} | "
            f"{max((c.max_lsb for c in r.layerwise), default=0):g} | "
            f"{sum(c.exact == c.elements for c in r.reference)}/{len(r.reference)} | {len(r.host_fallback)} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", type=int, default=2)
    p.add_argument("--rounding", nargs="+", default=["double", "single"])
    p.add_argument("--models", nargs="+", default=[n for n in zoo.names() if not n.endswith("_float")])
    p.add_argument("--out", help="also write the table here (markdown)")
    a = p.parse_args()
    lines = [f"{a.inputs} input sets per model (npusim_models.sample_inputs, seed 11)", "",
             "| model | rounding | outputs exact | max LSB | layer-wise exact | max LSB | = fake-quant | host islands |",
             "|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in a.models:
        for rounding in a.rounding:
            lines.append(row(name, rounding, a.inputs))
            print(lines[-1], flush=True)
    if a.out:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(a.out)) or ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
