"""Uniform against searched mixed-precision weights at equal model size (seeds 000 and 001).

On the PP-OCR MobileNetV3 text-direction classifier with 8-bit activations and per-channel
weights: the per-layer sensitivity is measured once (npusim.search.BitwidthSearch, mode "npu",
on the rendered calibration lines); for three size budgets — the exact sizes of the uniform
4-, 5- and 6-bit models — the searched assignment is compared with the uniform one of the same
budget: model size (npusim.size), simulated latency on the default hardware profile
(npusim.hardware), accuracy on the rendered evaluation set and output SQNR against the float
model, all in mode "npu". Writes a markdown table and a size-vs-accuracy plot.

    python benchmarks/study_bitwidth.py [--calib 32] [--eval 400] [--out docs/bitwidth_study.md]
                                         [--plot docs/bitwidth_study.png]
"""
import argparse
import time

import numpy as np
import onnxruntime as ort

import npusim
import npusim_models as zoo
from npusim.fidelity import sqnr_db
from npusim.hardware import estimate, load_profile
from npusim.ir import write_atomic
from npusim.search import BitwidthSearch
from npusim.size import model_bits
from npusim_models import textlines


def evaluate(graph, x, labels, ref, profile):
    sess = npusim.InferenceSession(graph, mode="npu")
    name = sess.get_inputs()[0].name
    probs = np.concatenate([sess.run(None, {name: x[i:i + 50]})[0] for i in range(0, len(x), 50)])
    shapes = {k: v.shape for k, v in sess.run_all({name: x[:1]}).items()}
    return {"size_kib": model_bits(sess.graph) / 8192, "latency_us": estimate(sess.graph, shapes, profile).latency_us,
            "accuracy": textlines.accuracy(probs, labels),
            "sqnr_db": sqnr_db(ref, probs)}


def plot(rows, float_acc, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, marker, color in (("uniform", "o", "tab:blue"), ("searched", "s", "tab:red")):
        pts = [r for r in rows if r["config"].startswith(kind)]
        ax.scatter([r["size_kib"] for r in pts], [r["accuracy"] for r in pts], marker=marker, color=color,
                   s=60, label=kind + (" mixed precision" if kind == "searched" else " weight bits"), zorder=3)
        for r in pts:
            ax.annotate(r["label"], (r["size_kib"], r["accuracy"]), textcoords="offset points", xytext=(6, -12),
                        fontsize=8)
    ax.axhline(float_acc, color="grey", ls="--", lw=1, label=f"float ({float_acc:.3f})")
    ax.set_xlabel("model size (KiB: weights at their widths + biases, multipliers, zero points)")
    ax.set_ylabel("accuracy on the rendered evaluation lines")
    ax.set_title("PP-OCR text-direction classifier, mode npu, 8-bit activations")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calib", type=int, default=32, help="calibration lines (also the sensitivity data)")
    p.add_argument("--eval", type=int, default=400, help="evaluation lines")
    p.add_argument("--out", help="markdown table")
    p.add_argument("--plot", help="PNG: size against accuracy")
    a = p.parse_args()
    t0 = time.perf_counter()
    float_path = zoo.path("ppocr_cls_float")
    calib = [{"x": x[None]} for x in textlines.calib_set(a.calib)]
    x, labels = textlines.eval_set(a.eval)
    ref = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    float_acc = textlines.accuracy(ref, labels)
    bs = BitwidthSearch(float_path, calib, candidates=(2, 3, 4, 5, 6, 8))
    profile = load_profile()
    sizes = {r["config"]: r["cost"] for r in bs.solve(budget_bits=10 ** 12).rows}
    rows = []
    for b in (4, 5, 6):
        budget = int(sizes[f"uniform {b}"])
        r = bs.solve(budget_bits=budget)
        for row in r.rows:
            if row["config"] in ("searched", f"uniform {b}"):
                m = evaluate(bs.sim.graph(row["layer_bits"]), x, labels, ref, profile)
                label = f"w{b}" if row["config"] != "searched" else f"mixed ≤ w{b}"
                rows.append(dict(m, config=row["config"], label=label, budget_kib=budget / 8192,
                                 widths=" ".join(f"{w}:{row['bits'].count(str(w))}" for w in r.candidates
                                                 if str(w) in row["bits"])))
                print(rows[-1], flush=True)
    m8 = evaluate(bs.sim.graph({}), x, labels, ref, profile)
    rows.append(dict(m8, config="uniform 8", label="w8", budget_kib=m8["size_kib"], widths="8:all"))
    lines = [f"PP-OCR text-direction classifier (rapidocr-onnxruntime 1.4.4), per-channel weights, 8-bit "
             f"activations, mode npu; sensitivity on {a.calib} rendered calibration lines, accuracy and SQNR on "
             f"{a.eval} rendered evaluation lines (npusim_models.textlines); float accuracy {float_acc:.4f}; "
             f"latency on the default profile ({profile.name}); {len(bs.sim.names)} weight layers; "
             f"run time {time.perf_counter() - t0:.0f} s.", "",
             "| budget (KiB) | configuration | size (KiB) | latency (us) | accuracy | output SQNR (dB) | layers per width |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['budget_kib']:.2f} | {r['label']} | {r['size_kib']:.2f} | {r['latency_us']:.1f} | "
                     f"{r['accuracy']:.4f} | {r['sqnr_db']:.2f} | {r['widths']} |")
    print("\n".join(lines))
    if a.out:
        write_atomic(a.out, lambda tmp: open(tmp, "w").write("\n".join(lines) + "\n"))
    if a.plot:
        plot(rows, float_acc, a.plot)


if __name__ == "__main__":
    main()
