"""npusim command line: run, verify, inspect.

Every user error (bad model, bad input, unsupported op) prints one line `npusim: error: ...`
and exits 2, with no traceback; output files are written to a temp file and renamed.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import traceback

import numpy as np

from . import ir
from .errors import NpusimError
from .cliargs import default_model, parse_kv, parse_shapes
from .ortisa import ORT_ISAS


def _load_inputs(args, session, seed):
    from .feeds import check_shape_names, random_feeds

    shapes = parse_shapes(args)
    check_shape_names(session.graph, shapes)
    given = _given_inputs(args)
    feeds = random_feeds(session.graph, seed, shapes) if not set(session.graph.inputs) <= set(given) else {}
    feeds.update(given)
    return feeds


def _given_inputs(args) -> dict[str, np.ndarray]:
    """The arrays of `--input`: NAME=FILE.npy gives one input, FILE.npz (arrays keyed by input
    name, the format of --calib) several; the arrays are fed as they are."""
    out = {}
    for item in args.input or []:
        if "=" not in item and item.endswith(".npz"):
            try:
                with np.load(item, allow_pickle=False) as z:
                    out.update({k: z[k] for k in z.files})
            except (OSError, ValueError) as e:
                raise NpusimError(f"--input {item}: cannot read the .npz file ({getattr(e, 'strerror', None) or e})"
                                  ) from None
            continue
        for name, path in parse_kv([item], "--input (NAME=FILE.npy or FILE.npz)").items():
            try:
                out[name] = np.load(path, allow_pickle=False)
            except OSError as e:
                raise NpusimError(f"--input {name}={path}: cannot read .npy file ({e.strerror or e})") from None
            except ValueError as e:  # numpy tries unknown formats as pickles: its message would mislead
                raise NpusimError(f"--input {name}={path}: not a .npy array file"
                                  + ("" if "pickle" in str(e) else f" ({e})")) from None
            if not isinstance(out[name], np.ndarray):
                raise NpusimError(f"--input {name}={path}: an .npz holds several arrays; give it as --input {path}")
    return out


def _every_input_given(args, session) -> bool:
    return set(session.graph.inputs) <= set(_given_inputs(args))


def _input_sets(args, session) -> list[dict]:
    """verify's input sets: `--inputs` seeded random sets (default 3), or the one set of
    `--input` files when they give every input (more sets would repeat it: refused)."""
    if _every_input_given(args, session):
        if args.inputs not in (None, 1):
            raise NpusimError(f"--inputs {args.inputs}: every input is given with --input, so there is one input "
                              f"set; --inputs counts random sets")
        return [_load_inputs(args, session, args.seed)]
    return [_load_inputs(args, session, args.seed + i) for i in range(3 if args.inputs is None else args.inputs)]


def _numba_without_scipy():
    """Imports numba.np.arraymath (and Numba) with scipy hidden, when neither is loaded yet.

    Numba's first compile or cache load of a process imports that module, which imports
    scipy.linalg (when scipy is installed: scikit-learn of the zoo extra brings it) only to learn
    whether np.convolve and np.correlate may use BLAS's dot (`_HAVE_BLAS`, its only use); Numba's
    own import checks scipy's version. No npusim kernel calls them, so the machine code of every
    kernel is the same either way; with scipy 1.17 those imports took 0.2-0.3 s of a 1.2-1.4 s
    warm `npusim run` on 2 cores. The CLI owns its
    process, so it skips that import; scipy stays importable afterwards (np.dot in a Numba kernel
    imports it when typed). A library session leaves Numba alone: its caller's kernels may want
    the BLAS."""
    if "scipy" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    sys.modules["scipy"] = None  # `import scipy...` raises ImportError, which Numba expects without scipy
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules["scipy"]


def _session(args):
    """The session of `args`, built with the cyclic garbage collector paused, then frozen.

    Building the first session imports Numba and loads its typing and lowering registries: some
    120000 objects that live as long as the process, which the collector scanned in about 240
    collections (0.06-0.09 s of a warm `npusim run` on 2 cores), and again in one full collection
    after planning or at exit (70 ms). gc.freeze() moves what is alive once the session is built
    out of the collector's sight: it collects only what the command allocates later. The price:
    the few cycles that became garbage while planning (1665 objects for the digits model) are
    never freed, in a process that ends with the command. npusim.session imports Numba (its
    compiled plans), so it is imported after `_numba_without_scipy`."""
    paused = gc.isenabled()
    gc.disable()
    try:
        if args.kernels == "fast":
            _numba_without_scipy()
        from .session import InferenceSession

        return InferenceSession(args.model or default_model(), mode=args.mode, kernels=args.kernels,
                                rounding=args.rounding, engine=args.engine, ort_isa=args.ort_isa,
                                threads=args.threads)
    finally:
        if paused:
            gc.freeze()
            gc.enable()


def cmd_run(args):
    sess = _session(args)
    feeds = _load_inputs(args, sess, args.seed)
    outs = sess.run(None, feeds)
    for name, y in zip(sess.graph.outputs, outs):
        flat = y.reshape(-1)
        line = f"{name}: {y.dtype} {tuple(y.shape)}  first values {np.array2string(flat[:6], precision=5)}"
        if y.ndim == 2 and y.shape[1] > 1:
            line += f"  argmax {y.argmax(axis=1).tolist()}"
        print(line)
    if sess.overflow_possible:
        by_name = {n.name: n for n in sess.graph.nodes}
        layers = ", ".join(f"{by_name[k].source or k} (bound {'unknown' if b is None else f'{b:.3g}'})"
                           for k, b in sess.overflow_possible.items())
        print(f"note: int32 accumulators that can overflow (they wrap modulo 2^32): {layers}; npusim verify counts "
              f"the wrapped elements")
    if args.output:
        ir.savez_atomic(args.output, dict(zip(sess.graph.outputs, outs)))
        print(f"wrote {args.output}")
    return 0


def cmd_verify(args):
    from .report import verify_text
    from .verify import verify

    model = args.model or default_model()
    if args.inputs is not None and args.inputs < 1:
        raise NpusimError(f"--inputs {args.inputs}: expected at least 1 input set (0 would compare nothing)")
    sess = _session(args)
    feeds = _input_sets(args, sess)
    report = verify(model, feeds, args.mode, args.kernels, session=sess, engine=args.engine)
    fid = None
    if args.float_model:
        from .fidelity import fidelity, fidelity_text
        fid = fidelity([sess.run_all(f) for f in feeds], sess.graph, args.float_model, feeds)
    if args.json:
        print(json.dumps(dict(report.to_dict(), **({"fidelity": fid.to_dict()} if fid else {})), indent=2))
    else:
        print(verify_text(report) + ("\n\n" + fidelity_text(fid) if fid else ""))
    return 1 if report.verdict == "not bit-exact" else 0


def cmd_inspect(args):
    from .report import inspect_text

    sess = _session(args)
    values = sess.run_all(_load_inputs(args, sess, args.seed))
    print(inspect_text(sess, values))
    if args.save_ir:
        ir.save(sess.graph, args.save_ir)
        print(f"wrote {args.save_ir}")
    return 0


def cmd_quantize(args) -> int:
    from .quantize import NpzReader, load_float, quantize

    model = load_float(args.model)
    inits = {t.name for t in model.graph.initializer}
    reader = NpzReader(args.calib, [vi.name for vi in model.graph.input if vi.name not in inits])
    result = quantize(args.model, args.output, reader, scheme=args.scheme, wbits=args.wbits, abits=args.abits,
                      calibration=args.calibration, quant_format=args.format, activation_type=args.activation_type,
                      layer_bits=args.layer_bits, progress=not args.no_progress)
    print(result.summary_text())
    return 0


def build_parser():
    from . import __version__

    p = argparse.ArgumentParser(prog="npusim", description="Simulate a quantized ONNX model on an integer NPU.")
    p.add_argument("--version", action="version", version=f"npusim {__version__}")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="the lowest level of Python library log lines shown (onnxruntime's quantizer logs at "
                        "WARNING; they print above the progress bar; default WARNING)")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, model_help="ONNX model or npusim IR (.npz)"):
        sp.add_argument("model", nargs="?", help=f"{model_help}; default: the shipped digits model")
        sp.add_argument("--mode", default="ort", choices=["ort", "npu"],
                        help="arithmetic: ort = onnxruntime's (bit-exact with it), npu = integer fixed point "
                             "(default ort)")
        sp.add_argument("--rounding", default="double", choices=["double", "single"],
                        help="mode npu: requantization rounding, gemmlowp double or TFLite single (default double)")
        sp.add_argument("--kernels", default="fast", choices=["fast", "golden"],
                        help="fast = the Numba kernels, golden = the plain NumPy reference kernels (same results, "
                             "slower; default fast)")
        sp.add_argument("--ort-isa", choices=list(ORT_ISAS),
                        help="mode ort: reproduce onnxruntime's integer kernels as on this CPU family: avx2 and "
                             "avx512core (no VNNI) sum u8*s8 pairs in a saturating int16, the VNNI/AMX families "
                             "exactly (default: this CPU's family)")
        sp.add_argument("--engine", default="auto", choices=["auto", "direct", "bitserial"],
                        help="conv, matmul and gemm engine: direct int8, bit-serial popcount, or auto per layer "
                             "from its weight and activation bits (default auto)")
        sp.add_argument("--threads", type=int, metavar="N",
                        help="at most N threads per inference: Numba kernels, BLAS and onnxruntime's host "
                             "islands (default: all cores; onnxruntime's default for the islands)")
        sp.add_argument("--input", action="append", metavar="NAME=FILE.npy|FILE.npz",
                        help="input arrays: NAME=FILE.npy for one input, FILE.npz for arrays keyed by input name "
                             "(the format of --calib); repeatable; inputs not given are seeded random")
        sp.add_argument("--shape", action="append", metavar="NAME=D0,D1,..",
                        help="shape of a random input with dynamic dimensions")
        sp.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")

    r = sub.add_parser("run", help="run the model on given or seeded random inputs")
    common(r)
    r.add_argument("-o", "--output", metavar="OUT.npz", help="write the outputs here")
    r.set_defaults(func=cmd_run)
    v = sub.add_parser("verify", help="compare with onnxruntime (qonnx's executor for a QONNX model, the golden "
                                      "kernels for an IR file); exit 0 only when bit-exact (or, against qonnx, "
                                      "codes exact and float outputs within the stated float32 rounding bound)")
    common(v, "quantized ONNX model (reference: onnxruntime), QONNX model (qonnx's executor) or npusim IR .npz "
              "(its golden run)")
    v.add_argument("--inputs", type=int, metavar="N",
                   help="number of random input sets (default 3); when --input gives every input, the one set "
                        "of those files")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--float-model", metavar="F.onnx",
                   help="also report SQNR per layer and at the outputs, and top-1 agreement, against this float model")
    v.set_defaults(func=cmd_verify)
    i = sub.add_parser("inspect", help="print the integer IR: ops, shapes, bits, scales, MACs, weight bytes")
    common(i)
    i.add_argument("--save-ir", metavar="OUT.npz", help="also save the IR")
    i.set_defaults(func=cmd_inspect)
    from .bench import register as register_bench
    from .quantize_args import register as register_quantize
    from .search import register as register_search
    register_quantize(sub).set_defaults(func=cmd_quantize)
    register_search(sub)
    register_bench(sub)
    return p


def _quiet_onnxruntime():
    """onnxruntime logs its own errors (colored `[E:onnxruntime:...]` lines) before raising; the
    exception becomes npusim's one error line, so only its fatal messages are let through (severity 4:
    3 still prints errors)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return
    ort.set_default_logger_severity(4)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger().setLevel(args.log_level)
    _quiet_onnxruntime()
    try:
        return args.func(args)
    except NpusimError as e:
        print(f"npusim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug in npusim, or a failure no check foresaw: one line, not a traceback
        where = traceback.extract_tb(e.__traceback__)[-1]
        msg = str(e).splitlines()[0] if str(e) else ""
        print(f"npusim: error: internal error, please report: {type(e).__name__}: {msg} "
              f"(at {os.path.basename(where.filename)}:{where.lineno})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
