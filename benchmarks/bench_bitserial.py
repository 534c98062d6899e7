"""Bit-serial conv / GEMM against the popcount ceiling, npusim's direct int8 kernels and onnxruntime.

Shapes: a 3x3 convolution 64→64 channels, 56x56, pad 1, batch 1; a 1x1 convolution 64→64, 56x56;
a GEMM (512×4096)·(4096×512); a GEMV (1×1024)·(1024×1024) (a fully connected layer at batch 1).
For each (W bits, A bits) pair: median wall time of
`bitserial_conv_acc` / `bitserial_matmul_acc` (weights packed once, outside the timing; activation
packing inside) and throughput in binary MACs/s (MACs·W·A). References measured in the same run,
same thread count: (a) the machine ceiling, tight AND + popcount + accumulate loops over in-cache
uint64 data (16 KiB per operand and thread), in Numba with the kernels' popcount, binary MACs =
64 per word-AND, in two forms: "stream", a[t] & b[t] (two loads per AND, as the issue words it),
and "register", each loaded word ANDed with 4 words held in registers (AND + popcount + add bound;
the kernel's blocks reuse loads the same way, so it can beat the stream form); (b) npusim's direct int8 kernels (fast conv_acc_packed / matmul_acc);
(c) onnxruntime's int8 QLinearConv (u8 x, i8 w, u8 y) and MatMulInteger (u8 a, i8 b, i32 y),
single-node models. Each pair's kernel runs interleaved with onnxruntime (its ratio is from the
same run); the direct int8 kernel once per shape, interleaved with onnxruntime. Measures; asserts nothing.

    python benchmarks/bench_bitserial.py [--threads 1] [--repeat 10] [--pairs grid|core] [--json OUT]
"""
import argparse
import json
import os
import platform

import numba
import numpy as np
import onnxruntime as ort
from llvmlite import binding as llvm
from numba import prange
from onnx import TensorProto, helper, numpy_helper
from threadpoolctl import threadpool_limits

from npusim.bench import interleaved_times
from npusim_kernels.fast import bitserial as fbs, conv as fconv, matmul as fmm
from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.bitserial import _popcount

CORE_PAIRS = sorted({(1, 1), (1, 2), (2, 1), (2, 2), (4, 4), (8, 8)} | {(b, b) for b in range(1, 9)})
CEIL_WORDS = 2048  # per thread: 16 KiB, in L1


@njit(parallel=True)
def _stream_loop(a, b, reps, out):
    """out[th, r] = Σ_t popcount(a[th, t] & b[th, t]): two loads per AND (load-bound)."""
    for th in prange(a.shape[0]):
        for r in range(reps):
            s = np.int64(0)
            for t in range(a.shape[1]):
                s += _popcount(a[th, t] & b[th, t])
            out[th, r] = s


@njit(parallel=True)
def _register_loop(a, b, reps, out):
    """out[th, r, k] = Σ_t popcount(a[th, t] & b[th, k]), k < 4: each loaded word meets 4 words held
    in registers (as in the kernel's blocks), so the loop is bound by AND + popcount + add, not by
    loads. Every repetition is stored, so none is hoisted."""
    for th in prange(a.shape[0]):
        b0, b1, b2, b3 = b[th, 0], b[th, 1], b[th, 2], b[th, 3]
        for r in range(reps):
            s0 = s1 = s2 = s3 = np.int64(0)
            for t in range(a.shape[1]):
                v = a[th, t]
                s0 += _popcount(v & b0)
                s1 += _popcount(v & b1)
                s2 += _popcount(v & b2)
                s3 += _popcount(v & b3)
            out[th, r, 0], out[th, r, 1], out[th, r, 2], out[th, r, 3] = s0, s1, s2, s3


def popcount_ceilings(threads, repeat):
    """Binary MACs/s (64 per word-AND) of the two tight loops, `threads` streams: (stream, register)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2 ** 63, (threads, CEIL_WORDS), dtype=np.int64).astype(np.uint64)
    b = rng.integers(0, 2 ** 63, (threads, CEIL_WORDS), dtype=np.int64).astype(np.uint64)
    reps = 1000
    out1, out4 = np.zeros((threads, reps), np.int64), np.zeros((threads, reps, 4), np.int64)
    t1 = interleaved_times([lambda: _stream_loop(a, b, reps, out1)], repeat)[0]
    t4 = interleaved_times([lambda: _register_loop(a, b, reps, out4)], repeat)[0]
    words = threads * CEIL_WORDS * reps
    return 64 * words / t1, 64 * 4 * words / t4


def ort_session(node, inputs, inits, out_type, threads):
    g = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", out_type, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_qlinearconv(x, w, pads, threads):
    inits = [numpy_helper.from_array(np.asarray(v, dt), name) for v, dt, name in [
        (0.02, np.float32, "xs"), (0, np.uint8, "xz"), (w, np.int8, "w"), (0.01, np.float32, "ws"),
        (0, np.int8, "wz"), (0.5, np.float32, "ys"), (128, np.uint8, "yz")]]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                            pads=list(pads), kernel_shape=list(w.shape[2:]))
    sess = ort_session(node, [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)], inits,
                       TensorProto.UINT8, threads)
    return lambda: sess.run(None, {"x": x})


def ort_matmulinteger(a, b, threads):
    inits = [numpy_helper.from_array(b, "b"), numpy_helper.from_array(np.uint8(3), "az"),
             numpy_helper.from_array(np.int8(0), "bz")]
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    sess = ort_session(node, [helper.make_tensor_value_info("a", TensorProto.UINT8, a.shape)], inits,
                       TensorProto.INT32, threads)
    return lambda: sess.run(None, {"a": a})


def operand(rng, bits, signed, shape):
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return rng.integers(lo, hi + 1, shape).astype(np.int8 if signed else np.uint8)


def bench_conv(name, k, pairs, threads, repeat, ceilings):
    """Activations unsigned (x_zp = 1, so the border correction runs), weights signed (unsigned for 1 bit)."""
    rng = np.random.default_rng(1)
    c, m, hw, pad = 64, 64, 56, (k - 1) // 2
    pads, geo = (pad,) * 4, ((1, 1), (pad,) * 4, (1, 1), 1)
    macs = m * c * k * k * hw * hw
    x8 = rng.integers(0, 256, (1, c, hw, hw)).astype(np.uint8)
    w8 = rng.integers(-128, 128, (m, c, k, k)).astype(np.int8)
    zeros = np.zeros(m, np.int32)
    packed = fconv.pack_conv_weights(w8, zeros, zeros)
    ort_run = ort_qlinearconv(x8, w8, pads, threads)
    t_direct, t_ort = interleaved_times([lambda: fconv.conv_acc_packed(x8, 3, packed, *geo), ort_run], repeat)
    rows = []
    for wb, xb in pairs:
        x = operand(rng, xb, False, (1, c, hw, hw))
        w = operand(rng, wb, wb > 1, (m, c, k, k))
        pw = fbs.pack_bitserial_weights(w, wb, wb > 1, 0, zeros)
        t, t_ort_pair = interleaved_times([lambda: fbs.bitserial_conv_acc(x, 1, xb, False, pw, *geo), ort_run], repeat)
        rows.append(row(name, wb, xb, t, macs, ceilings, t_direct, t_ort_pair))
    return rows, {"direct_int8_ms": 1e3 * t_direct, "ort_qlinearconv_ms": 1e3 * t_ort, "macs": macs}


def bench_gemm(mm, kk, nn, pairs, threads, repeat, ceilings):
    rng = np.random.default_rng(2)
    macs = mm * kk * nn
    a8 = rng.integers(0, 256, (mm, kk)).astype(np.uint8)
    b8 = rng.integers(-128, 128, (kk, nn)).astype(np.int8)
    ort_run = ort_matmulinteger(a8, b8, threads)
    t_direct, t_ort = interleaved_times([lambda: fmm.matmul_acc(a8, 3, b8, np.int32(0)), ort_run], repeat)
    rows = []
    for wb, xb in pairs:
        a = operand(rng, xb, False, (mm, kk))
        pb = fbs.pack_bitserial_matrix(operand(rng, wb, wb > 1, (kk, nn)), wb, wb > 1, 0)
        t, t_ort_pair = interleaved_times([lambda: fbs.bitserial_matmul_acc(a, 1, xb, False, pb), ort_run], repeat)
        rows.append(row(f"{'gemv' if mm == 1 else 'gemm'} {mm}x{kk}x{nn}", wb, xb, t, macs, ceilings, t_direct,
                        t_ort_pair))
    return rows, {"direct_int8_ms": 1e3 * t_direct, "ort_matmulinteger_ms": 1e3 * t_ort, "macs": macs}


def row(shape, wb, xb, t, macs, ceilings, t_direct, t_ort):
    bmacs = macs * wb * xb / t
    return {"shape": shape, "w_bits": wb, "a_bits": xb, "ms": 1e3 * t, "binary_gmacs": bmacs / 1e9,
            "pct_stream_ceiling": 100 * bmacs / ceilings[0], "pct_register_ceiling": 100 * bmacs / ceilings[1],
            "x_vs_direct": t_direct / t, "x_vs_ort": t_ort / t}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--pairs", choices=["grid", "core"], default="grid",
                   help="grid: all 64 (W, A) in 1..8 × 1..8; core: 1x1 1x2 2x1 and the diagonal")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    pairs = [(w, a) for w in range(1, 9) for a in range(1, 9)] if args.pairs == "grid" else CORE_PAIRS
    numba.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        ceilings = popcount_ceilings(args.threads, args.repeat)
        conv3, ref3 = bench_conv("conv3x3 64x56x56", 3, pairs, args.threads, args.repeat, ceilings)
        conv1, ref1 = bench_conv("conv1x1 64x56x56", 1, pairs, args.threads, args.repeat, ceilings)
        gemm, refg = bench_gemm(512, 4096, 512, pairs, args.threads, args.repeat, ceilings)
        gemv, refv = bench_gemm(1, 1024, 1024, pairs, args.threads, args.repeat, ceilings)
    load = os.getloadavg()[0]
    feats = llvm.get_host_cpu_features()
    isa = "avx512vpopcntdq" if feats.get("avx512vpopcntdq") else "avx512f" if feats.get("avx512f") else \
        "avx2" if feats.get("avx2") else "other"
    print(f"machine: {platform.processor() or platform.machine()} ({llvm.get_host_cpu_name()}, popcount ISA {isa}), "
          f"{os.cpu_count()} cores, load {load:.1f}; "
          f"threads={args.threads}; onnxruntime {ort.__version__}; median of {args.repeat}")
    print(f"popcount ceilings: stream {ceilings[0] / 1e9:.0f}, register {ceilings[1] / 1e9:.0f} binary GMAC/s")
    for name, ref in (("conv3x3", ref3), ("conv1x1", ref1), ("gemm", refg), ("gemv", refv)):
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" if k != "macs" else f"{k} {v}" for k, v in ref.items()))
    print()
    print("| shape | W | A | ms | binary GMAC/s | % stream ceiling | % register ceiling | × direct int8 | × onnxruntime |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in conv3 + conv1 + gemm + gemv:
        print(f"| {r['shape']} | {r['w_bits']} | {r['a_bits']} | {r['ms']:.3f} | {r['binary_gmacs']:.0f} | "
              f"{r['pct_stream_ceiling']:.1f} | {r['pct_register_ceiling']:.1f} | {r['x_vs_direct']:.2f} | "
              f"{r['x_vs_ort']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "repeat": args.repeat, "load": load,
                       "ceiling_binary_macs": {"stream": ceilings[0], "register": ceilings[1]},
                       "conv3x3": ref3, "conv1x1": ref1, "gemm": refg, "gemv": refv,
                       "rows": conv3 + conv1 + gemm + gemv}, f, indent=1)


if __name__ == "__main__":
    main()
