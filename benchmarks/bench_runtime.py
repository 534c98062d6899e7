"""npusim against onnxruntime on every zoo model, and the cold start of `npusim run`.

Per model and thread count: median wall time of one inference (batch 1, or --batch samples stacked
on the batch axis; the same inputs, warm)
for npusim (fast kernels, mode "ort", emulating onnxruntime's integer kernels of --ort-isa,
default this CPU's family; npusim.ortisa) and for onnxruntime with the same thread count, runs
alternating between the two (npusim.bench.interleaved_times), and their ratio; npusim is timed
after npusim.compiled.COMPILE_AFTER runs, when a plan worth compiling is compiled. The session's
`threads` bounds npusim's Numba, BLAS and host-island threads; onnxruntime's intra-op threads
are the same count. The detectors run at the zoo's 1x3x160x160 and at 1x3x640x640 (a YOLO-size
input: the zoo page upsampled 4x; their H and W are dynamic). The summary gives, per thread
count, the median and the largest ratio over the PP-OCR rows (the issue's targets: median <= 1.5,
none above 2) and the largest over digits (<= 2.5). Then `npusim run` on the default model as a
fresh process, with empty caches (Numba's and the import cache: cold JIT) and again with them
warm. Measures; asserts nothing.

    python benchmarks/bench_runtime.py [--threads 1 2] [--repeat 30] [--models NAME ...] [--batch N]
                                       [--ort-isa F] [--no-start] [--json OUT]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

import npusim
import npusim_models as zoo
from npusim import compiled
from npusim.bench import interleaved_times

BIG = 640  # the detectors' YOLO-size input side


def cpu_line() -> str:
    """The CPU's model name (/proc/cpuinfo, else the platform's), LLVM's name for it, its SIMD
    extensions that matter to int8 kernels, and onnxruntime's integer-kernel family on it."""
    from llvmlite import binding

    from npusim.ortisa import host_ort_isa

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    features = binding.get_host_cpu_features()
    isa = [k for k in ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512vnni", "avxvnni", "amx-int8")
           if features.get(k, False)]
    return (f"CPU: {name} (LLVM: {binding.get_host_cpu_name()}), {os.cpu_count()} logical cores; ISA: "
            f"{' '.join(isa)}; onnxruntime integer kernels: {host_ort_isa()}")


def cases(models, batch=1):
    """(label, model name, feeds): each model on `batch` zoo samples stacked on axis 0 (its dynamic
    batch dimension); each detector also at BIG x BIG."""
    for name in models:
        samples = zoo.sample_inputs(name, batch, seed=0)
        feeds = {k: np.ascontiguousarray(np.concatenate([f[k] for f in samples])) for k in samples[0]}
        label = name if batch == 1 else f"{name}[{batch}]"
        yield label, name, feeds
        if name.startswith("ppocr_det_"):
            x = feeds["x"]
            big = np.repeat(np.repeat(x, BIG // x.shape[2], axis=2), BIG // x.shape[3], axis=3)
            yield f"{label}@{BIG}", name, {"x": np.ascontiguousarray(big)}


def bench_model(name, feeds, threads, repeat, ort_isa=None):
    path = str(zoo.path(name))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    sess = npusim.InferenceSession(path, threads=threads, ort_isa=ort_isa)
    for _ in range(compiled.COMPILE_AFTER):  # warm as a session is after that many runs: its plan compiled
        sess.run(None, feeds)
    t_ort, t_sim = interleaved_times([lambda: ref.run(None, feeds), lambda: sess.run(None, feeds)], repeat)
    return {"ort_ms": 1e3 * t_ort, "npusim_ms": 1e3 * t_sim, "ratio": t_sim / t_ort}


def summary(rows) -> dict:
    """Median and largest ratio over the PP-OCR rows, largest over digits."""
    ocr = [r for r in rows if r["case"].startswith("ppocr_")]
    digits = [r for r in rows if r["case"].startswith("digits_")]
    out = {}
    if ocr:
        worst = max(ocr, key=lambda r: r["ratio"])
        out.update(ppocr_median=statistics.median(r["ratio"] for r in ocr), ppocr_max=worst["ratio"],
                   ppocr_max_case=worst["case"])
    if digits:
        out["digits_max"] = max(r["ratio"] for r in digits)
    return out


def cold_start(repeat=3):
    """Wall time of `npusim run` in a fresh process: with empty caches (Numba's, the import
    cache under HOME), then warm (median of `repeat`)."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, HOME=cache)
        cmd = [sys.executable, "-m", "npusim.cli", "run"]
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        out["empty_cache_s"] = time.perf_counter() - t
        warm = []
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            warm.append(time.perf_counter() - t)
        out["warm_cache_s"] = statistics.median(warm)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--models", nargs="*", default=[n for n in zoo.names() if not n.endswith("_float")])
    p.add_argument("--batch", type=int, default=1, help="inputs per run, stacked on the batch axis (default 1)")
    p.add_argument("--ort-isa", help="onnxruntime CPU family npusim emulates (default: this CPU's)")
    p.add_argument("--no-start", action="store_true", help="skip the cold and warm start of `npusim run`")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    from npusim.ortisa import resolve
    print(cpu_line())
    print(f"npusim emulating {resolve(args.ort_isa)}; onnxruntime {ort.__version__}; batch {args.batch}; median of "
          f"{args.repeat}, runs alternating", flush=True)
    rows, summaries = [], {}
    for threads in args.threads:
        print(f"\nthreads={threads}")
        these = []
        for label, name, feeds in cases(args.models, args.batch):
            r = {"case": label, "threads": threads, **bench_model(name, feeds, threads, args.repeat, args.ort_isa)}
            these.append(r)
            print(f"{label:28s} npusim {r['npusim_ms']:9.3f} ms   onnxruntime {r['ort_ms']:8.3f} ms   "
                  f"ratio {r['ratio']:6.2f}x", flush=True)
        s = summaries[threads] = summary(these)
        if "ppocr_median" in s:
            print(f"PP-OCR: median ratio {s['ppocr_median']:.2f}x, max {s['ppocr_max']:.2f}x ({s['ppocr_max_case']})")
        if "digits_max" in s:
            print(f"digits: max ratio {s['digits_max']:.2f}x")
        rows += these
    cs = None
    if not args.no_start:
        cs = cold_start()
        print(f"\nnpusim run (default model), fresh process: empty caches {cs['empty_cache_s']:.2f} s, "
              f"warm caches {cs['warm_cache_s']:.2f} s (median of 3)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_line(), "ort_isa": resolve(args.ort_isa), "batch": args.batch, "rows": rows,
                       "summary": {str(k): v for k, v in summaries.items()}, "cold_start": cs}, f, indent=2)


if __name__ == "__main__":
    main()
