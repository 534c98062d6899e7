"""npusim against onnxruntime on every zoo model, and the cold start of `npusim run`.

Per model: median wall time of one inference (batch 1, the same inputs, warm) for npusim
(fast kernels, mode "ort", emulating onnxruntime's integer kernels of --ort-isa, default this
CPU's family; npusim.ortisa) and for onnxruntime with the same thread count, runs alternating
between the two, and their ratio. The session's `threads` limits npusim's Numba, BLAS and
host-island threads, onnxruntime's intra-op threads are --threads. Then `npusim run` on the default model as a fresh process, with an
empty Numba cache (cold JIT) and again with that cache warm. Measures; asserts nothing.

    python benchmarks/bench_runtime.py [--threads 1] [--repeat 30] [--models NAME ...] [--ort-isa F] [--json OUT]
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

import onnxruntime as ort

import npusim
import npusim_models as zoo
from npusim.bench import interleaved_times


def bench_model(name, threads, repeat, ort_isa=None):
    path = str(zoo.path(name))
    feeds = zoo.sample_inputs(name, 1, seed=0)[0]
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    sess = npusim.InferenceSession(path, threads=threads, ort_isa=ort_isa)
    t_ort, t_sim = interleaved_times([lambda: ref.run(None, feeds), lambda: sess.run(None, feeds)], repeat)
    return {"model": name, "ort_ms": 1e3 * t_ort, "npusim_ms": 1e3 * t_sim, "ratio": t_sim / t_ort}


def cold_start(repeat=3):
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
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
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=30)
    p.add_argument("--models", nargs="*", default=[n for n in zoo.names() if not n.endswith("_float")])
    p.add_argument("--ort-isa", help="onnxruntime CPU family npusim emulates (default: this CPU's)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    from npusim.ortisa import host_ort_isa, resolve
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, onnxruntime family "
          f"{host_ort_isa()}; npusim emulating {resolve(args.ort_isa)}; threads={args.threads}; "
          f"onnxruntime {ort.__version__}; median of {args.repeat}")
    rows = []
    for name in args.models:
        r = bench_model(name, args.threads, args.repeat, args.ort_isa)
        rows.append(r)
        print(f"{name:24s} npusim {r['npusim_ms']:9.3f} ms   onnxruntime {r['ort_ms']:8.3f} ms   "
              f"ratio {r['ratio']:6.2f}x", flush=True)
    cs = cold_start()
    print(f"npusim run (default model), fresh process: empty JIT cache {cs['empty_cache_s']:.2f} s, "
          f"warm cache {cs['warm_cache_s']:.2f} s (median of 3)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "ort_isa": resolve(args.ort_isa), "models": rows, "cold_start": cs}, f,
                      indent=2)


if __name__ == "__main__":
    main()
