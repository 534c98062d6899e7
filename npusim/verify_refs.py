"""The references of `npusim verify` other than onnxruntime, which cannot run them:

- a QONNX model against qonnx's own executor, as qonnx users run it: `execute_onnx` on
  `ModelWrapper(cleanup_model(...))` (qonnx is a test dependency; without it verify refuses,
  naming it). Every graph output is compared, and the codes of every activation quantizer
  (`Quant` / `BipolarQuant` on a non-constant input) that is an IR tensor: qonnx's float
  output v gives the codes round(v / scale + zero_point), which must equal npusim's exactly.
  cleanup_model renames tensors, so the quantizers are paired in graph order (the k-th of the
  model with the k-th of the cleaned one; none compared when the counts or shapes differ).
  A float output is exact or, when it is an accumulator's dequantization
  (docs/qonnx.md: qonnx sums float32 products, npusim scales the exact integer sum), "within
  float rounding" if every element lies within the stated bound `float_bound`.
- an npusim IR file against its own golden run: the same graph, mode and rounding with the plain
  NumPy kernels (kernels="golden"); every tensor an integer op produces must be identical.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import frontend
from .errors import NpusimError
from .ir import is_quantized
from .overflow import ACC_OPS, accumulator_bound
from .verify_compare import Compare, output_lsb

U32 = 2.0 ** -24  # float32 unit roundoff


@dataclass
class FloatRounding:
    """A float output that is not identical to qonnx's: the largest difference (absolute, and in
    units in the last place of the largest |reference| value) against `bound`, the float32
    rounding error bound of the two computations (None: no bound known, the output fails)."""
    name: str
    max_abs: float = 0.0
    max_ulp: float = 0.0
    bound: float | None = None
    within: bool = True

    def add(self, a: np.ndarray, b: np.ndarray, bound: float | None):
        d = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0))
        self.max_abs = max(self.max_abs, d)
        self.max_ulp = max(self.max_ulp, d / float(np.spacing(np.float32(np.abs(b).max(initial=0)))))
        self.within = self.within and bound is not None and d <= bound
        self.bound = None if bound is None else max(bound, self.bound or 0.0)


def float_bound(graph, name: str, ref: np.ndarray) -> float | None:
    """Bound on |npusim − qonnx| of float output `name` when it is `dequantize` of a conv / matmul
    / gemm accumulator with K products, scale s, |accumulator terms| summing to at most B
    (npusim.overflow.accumulator_bound, bias included): qonnx rounds each dequantized factor and
    product and sums in float32, within γ(K+2)·B·s, γ(n) = n·u / (1 − n·u), u = 2^−24; npusim
    rounds the scale product and the scaled exact sum, within 2u·|y|; bound = γ(K+2)·B·s +
    3u·max|reference|. None for any other float output (no bound: it must be identical)."""
    producer = graph.producer()
    deq = producer.get(name)
    acc = producer.get(deq.inputs[0]) if deq is not None and deq.op == "dequantize" else None
    if acc is None or acc.op not in ACC_OPS or acc.inputs[1] not in graph.constants:
        return None
    B = accumulator_bound(acc, graph)
    w = graph.constants[acc.inputs[1]]
    if acc.op == "conv":
        K = int(np.prod(w.shape[1:]))
    elif acc.op == "gemm":
        K = w.shape[1] if int(acc.attrs["transB"]) else w.shape[0]
    else:
        K = w.shape[-2] if w.ndim > 1 else w.shape[0]
    n = (K + 2) * U32
    s = float(np.abs(np.asarray(deq.attrs["scale"], np.float64)).max())
    return n / (1 - n) * B * s + 3 * U32 * float(np.abs(ref).max(initial=0))


def _constant_tensors(model) -> set:
    """Initializers and what nodes with only constant inputs compute from them (Constant nodes too)."""
    const = {t.name for t in model.graph.initializer}
    for n in model.graph.node:
        if all(i in const or not i for i in n.input):
            const.update(n.output)
    return const


def _activation_quants(model) -> list:
    """(output, scale, zero point) of each Quant / BipolarQuant on a non-constant input, in graph
    order; scale or zero point None when not an initializer."""
    inits = {t.name: t for t in model.graph.initializer}
    const = _constant_tensors(model)

    def value(name):
        from onnx import numpy_helper
        return numpy_helper.to_array(inits[name]).astype(np.float64) if name in inits else None

    return [(n.output[0], value(n.input[1]), value(n.input[2]) if n.op_type == "Quant" else np.zeros(1))
            for n in model.graph.node if n.op_type in ("Quant", "BipolarQuant") and n.input[0] not in const]


def qonnx_reference(model_path):
    """qonnx's executor on the cleaned model: run(feeds) -> {tensor: value}, the cleaned model."""
    try:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.util.cleanup import cleanup_model
    except ImportError:
        raise NpusimError(f"{model_path}: a QONNX model: its reference is qonnx's executor, and qonnx is not "
                          f"installed (pip install qonnx)") from None
    raw = frontend.read_model(str(model_path))
    with warnings.catch_warnings():  # qonnx warns that it renamed old-style domains: its business, not the user's
        warnings.simplefilter("ignore", UserWarning)
        clean = _as_reference_failure(model_path, "cleanup_model", cleanup_model, ModelWrapper(raw.SerializeToString()))
    return raw, clean, lambda feeds: _as_reference_failure(model_path, "executor", execute_onnx, clean, feeds,
                                                           return_full_exec_context=True)


def _as_reference_failure(model_path, what, fn, *args, **kwargs):
    """fn(*args, **kwargs); an exception of qonnx's is the reference's failure, not npusim's: one
    NpusimError naming it (not the CLI's 'internal error, please report')."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        raise NpusimError(f"{model_path}: qonnx's {what} failed on the model: {type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}") from None


def against_qonnx(report, sess, model_path, feeds_list, count):
    """Fill `report` (outputs, intermediates = quantizer codes, float_outputs) against qonnx;
    count(values) is called with each run's values (npusim.verify.overflow_probe)."""
    raw, clean, run_ref = qonnx_reference(model_path)
    g = sess.graph
    ins = dict(zip([i.name for i in raw.graph.input if i.name in g.inputs], [i.name for i in clean.graph.input]))
    outs = list(zip([o.name for o in raw.graph.output], [o.name for o in clean.graph.output]))
    pairs, report.not_compared = _quantizer_pairs(g, _activation_quants(raw), _activation_quants(clean.model))
    cmp_out = {name: Compare(name) for name, _ in outs}
    floats = {}
    codes = {a: Compare(a) for a, _, _, _ in pairs}
    for feeds in feeds_list:
        values = sess.run_all(feeds)
        count(values)
        ref = run_ref({ins[k]: v for k, v in feeds.items() if k in ins})
        for ours_name, theirs_name in outs:
            got, want = np.asarray(values[ours_name]), np.asarray(ref[theirs_name])
            cmp_out[ours_name].add(got, want, output_lsb(sess, ours_name))
            if got.dtype.kind == "f" and not np.array_equal(got, want):
                floats.setdefault(ours_name, FloatRounding(ours_name)).add(got, want, float_bound(g, ours_name, want))
        for a, b, s, z in pairs:
            want = np.round(np.asarray(ref[b], np.float64) / s + z).astype(np.int64)
            got = np.asarray(values[a]).astype(np.int64)
            if got.shape != want.shape:
                raise NpusimError(f"quantizer output {a!r}: npusim shape {got.shape} vs qonnx {want.shape}")
            codes[a].add(got, want, 1.0)
    report.outputs = list(cmp_out.values())
    report.intermediates = list(codes.values())
    report.float_outputs = list(floats.values())


def _quantizer_pairs(g, ours, theirs):
    """([(IR tensor, cleaned model's tensor, scale, zero point)], {quantizer output: why not
    compared}): the model's activation quantizers paired in graph order with the cleaned model's;
    a quantizer output that is an integer graph output is the IR's `<output>::q`."""
    if len(ours) != len(theirs):
        why = f"cleanup_model left {len(theirs)} activation quantizers of {len(ours)}: no pairing by graph order"
        return [], {a: why for a, _, _ in ours}
    pairs, skipped = [], {}
    for (a, _, _), (b, s, z) in zip(ours, theirs):
        name = next((t for t in (a, f"{a}::q") if t in g.tensors and is_quantized(g.tensors[t].dtype)), None)
        if name is None:
            skipped[a] = "not an integer tensor of the IR (folded into a later op)"
        elif s is None or z is None:
            skipped[a] = "scale or zero point computed in the graph (not an initializer)"
        else:
            pairs.append((name, b, s, z))
    return pairs, skipped


def against_golden(report, sess, golden, feeds_list, count):
    """Fill `report` (outputs, intermediates = every tensor an integer op produces) against the
    IR's golden run `golden` (an InferenceSession of the same graph with kernels="golden");
    count(values) as for against_qonnx."""
    g = sess.graph
    if sess.kernels == "golden":
        raise NpusimError(f"{report.model}: the reference of an IR file is its golden run; --kernels golden would "
                          f"compare the golden kernels with themselves (verify the fast kernels)")
    produced = [t for n in g.nodes if n.op != "host" for t in n.outputs if t and t not in g.outputs]
    cmp_out = {name: Compare(name) for name in g.outputs}
    mids = {name: Compare(name) for name in produced}
    for feeds in feeds_list:
        values, want = sess.run_all(feeds), golden.run_all(feeds)
        count(values)
        for name, c in cmp_out.items():
            c.add(np.asarray(values[name]), np.asarray(want[name]), output_lsb(sess, name))
        for name, c in mids.items():
            c.add(np.asarray(values[name]), np.asarray(want[name]), 1.0)
    report.outputs = list(cmp_out.values())
    report.intermediates = list(mids.values())
