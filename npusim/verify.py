"""Bit-exactness against onnxruntime: npusim and onnxruntime on the same inputs.

Outputs are compared with onnxruntime running the original model as a user would (default
session options). Intermediate quantized tensors are compared with onnxruntime running the
model as its optimizer left it (the graph npusim imported, so tensor names match), with
those tensors exposed as extra outputs and no further optimization.
Differences are counted in LSBs: integer units for quantized tensors, and |a - b| / scale
for a float output produced by a DequantizeLinear (its quantization step).

A QONNX model, which onnxruntime cannot run, is compared with qonnx's executor, and an npusim
IR file with its own golden run (npusim.verify_refs).

Mode "npu" is not meant to equal onnxruntime (it rounds in fixed point; the comparison shows
by how much it differs). Its bit-exactness is checked against the float64 fake-quantization
reference of the same graph (npusim.fakequant): every quantized tensor must be identical. The
tensors the reference computes with the runtime's own code (host islands on onnxruntime:
fakequant.shared_tensors) are not compared there; `reference_shared` names them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from . import frontend
from .errors import NpusimError
from .ir import is_quantized
from .frontend.qonnx import is_qonnx
from .report import round_sig
from .registry import kernel_set
from .verify_compare import Compare, output_lsb, overflow_probe
from .session import InferenceSession


@dataclass
class Saturation:
    """onnxruntime's int16 pair saturation in one layer it runs through its U8S8 kernels, over all
    input sets: what its result is on CPUs without VNNI (families avx2, avx512core) against the
    exact integer result (npusim.ortisa), whichever family the session emulates."""
    layer: str
    pairs: int = 0  # pair sums a[2j]·b[2j] + a[2j+1]·b[2j+1] outside int16
    acc_changed: int = 0  # accumulator elements that differ from the exact sum
    acc_elements: int = 0
    max_acc_diff: int = 0  # max |saturated accumulator − exact accumulator|
    out_changed: int | None = 0  # output codes that differ after the layer's requantization
    max_out_diff: int | None = 0  # in output LSBs; both None for a layer with no requantization

    def add(self, excess, count, y_sat=None, y_exact=None):
        self.pairs += count
        self.acc_changed += int(np.count_nonzero(excess))
        self.acc_elements += excess.size
        self.max_acc_diff = max(self.max_acc_diff, int(np.abs(excess.astype(np.int64)).max(initial=0)))
        if y_sat is None:
            self.out_changed = self.max_out_diff = None
            return
        d = np.abs(y_sat.astype(np.int64) - y_exact.astype(np.int64))
        self.out_changed += int(np.count_nonzero(d))
        self.max_out_diff = max(self.max_out_diff, int(d.max(initial=0)))


class _SaturationProbe:
    """Measures `Saturation` of one U8S8 node from the values of a run (npusim.ortisa)."""

    def __init__(self, node, graph, K):
        from .registry import OPS

        const = graph.constants.get
        self.stats = Saturation(node.source or node.name)
        self.node, self.acc = node, node.outputs[0]
        self.excess_of = OPS[node.op].pair_excess(node, const, K)
        req = next((r for r in graph.nodes if r.op == "requantize" and r.inputs[0] == self.acc), None)
        self.requant = OPS["requantize"].prepare(req, const, K) if req is not None else None
        self.saturating = bool(node.attrs.get("pair_sat16"))

    def __call__(self, values):
        e, count = self.excess_of(*[values.get(i) for i in self.node.inputs])
        a = values[self.acc]
        a_sat, a_exact = (a, a - e) if self.saturating else (a + e, a)
        if self.requant is None:  # an int32 or float (scale_float) output: the accumulator says it all
            self.stats.add(e, count)
        else:
            self.stats.add(e, count, self.requant(a_sat)[0], self.requant(a_exact)[0])


@dataclass
class VerifyReport:
    model: str
    mode: str
    input_sets: int
    outputs: list = field(default_factory=list)
    intermediates: list = field(default_factory=list)
    host_ops: list = field(default_factory=list)
    rounding: str = ""
    reference: list = field(default_factory=list)  # mode "npu": every quantized tensor vs fakequant
    reference_shared: dict = field(default_factory=dict)  # mode "npu": {tensor: op} fakequant computes as the runtime
    layerwise: list = field(default_factory=list)  # mode "npu": each op on onnxruntime's inputs vs onnxruntime
    host_fallback: list = field(default_factory=list)  # islands onnxruntime runs at each inference
    ort_isa: str = ""  # mode "ort": the emulated family of onnxruntime's integer kernels
    saturation: list = field(default_factory=list)  # mode "ort": Saturation per U8S8 layer
    overflow: list = field(default_factory=list)  # Overflow per layer whose int32 accumulator can wrap
    # the reference: "onnxruntime", "qonnx" (its executor, a QONNX model) or "golden" (an IR file's golden
    # run); for the last two, intermediates are the tensors compared with it (npusim.verify_refs)
    against: str = "onnxruntime"
    float_outputs: list = field(default_factory=list)  # qonnx: FloatRounding of each float output not identical
    not_compared: dict = field(default_factory=dict)  # qonnx: {activation quantizer output: why its codes are not}

    @property
    def bit_exact(self) -> bool:
        """Mode "ort": every output equals onnxruntime's. Mode "npu": every quantized tensor
        equals the float64 fake-quantization reference's (those it computes independently).
        Against qonnx or the golden run: every output and every compared tensor is identical."""
        if self.against != "onnxruntime":
            checked = self.outputs + self.intermediates
        else:
            checked = self.reference if self.mode == "npu" else self.outputs
        return all(c.exact == c.elements for c in checked)

    @property
    def verdict(self) -> str:
        """"bit-exact"; against qonnx, "within float rounding" when every code is identical and
        each float output that is not lies within its stated bound; else "not bit-exact"."""
        if self.bit_exact:
            return "bit-exact"
        floats = {f.name: f for f in self.float_outputs}
        codes_exact = all(c.exact == c.elements for c in self.intermediates)
        outs_ok = all(c.exact == c.elements or (c.name in floats and floats[c.name].within) for c in self.outputs)
        return "within float rounding" if self.against == "qonnx" and codes_exact and outs_ok else "not bit-exact"

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items()
             if k not in ("outputs", "intermediates", "reference", "reference_shared", "layerwise", "saturation",
                          "overflow", "float_outputs")}
        d["overflow"] = [asdict(c) for c in self.overflow]
        if self.mode == "ort":
            d["saturation"] = [asdict(c) for c in self.saturation]
        d["bit_exact"] = self.bit_exact
        d["verdict"] = self.verdict
        d["float_outputs"] = [dict(asdict(f), max_abs=round_sig(f.max_abs), max_ulp=round_sig(f.max_ulp),
                                   bound=round_sig(f.bound)) for f in self.float_outputs]
        d["outputs"] = [_compare_dict(c) for c in self.outputs]
        if self.mode == "npu" and self.against == "onnxruntime":
            d["reference"] = {"compared": len(self.reference),
                              "exact": sum(c.exact == c.elements for c in self.reference),
                              "not_exact": [_compare_dict(c) for c in self.reference if c.exact != c.elements],
                              "shared": self.reference_shared}
            d["layerwise"] = [_compare_dict(c) for c in self.layerwise]
        d["intermediates"] = {
            "compared": len(self.intermediates),
            "exact": sum(c.exact == c.elements for c in self.intermediates),
            "not_exact": [_compare_dict(c) for c in self.intermediates if c.exact != c.elements],
        }
        return d


def _compare_dict(c: Compare) -> dict:
    """A Compare for JSON: differences in LSBs to 6 significant digits (an int when integral:
    a float output's |a - b| / scale carries float noise)."""
    return dict(asdict(c), max_lsb=round_sig(c.max_lsb), exact_fraction=c.exact_fraction)


def verify(model_path, feeds_list, mode="ort", kernels="fast", session=None, rounding="double",
           engine="auto") -> VerifyReport:
    """npusim against its reference on every input set: onnxruntime for an ONNX model, qonnx's
    executor for a QONNX model, the golden run of the same graph for an IR file (.npz; the
    session's mode and rounding; engine is the session's conv engine, npusim.verify_refs)."""
    import onnxruntime as ort

    sess = session or InferenceSession(model_path, mode=mode, kernels=kernels, rounding=rounding, engine=engine)
    g = sess.graph
    if all(n.op == "host" for n in g.nodes):
        raise NpusimError(f"{model_path}: nothing to compare: the model has no integer op (onnxruntime would run "
                          f"all of it on both sides); verify takes a quantized model")
    if not feeds_list:
        raise NpusimError("nothing to compare: no input sets")
    model = None if str(model_path).endswith(".npz") else frontend.read_model(str(model_path))  # parsed and checked once
    if model is None or is_qonnx(model):
        return _verify_other(model_path, feeds_list, sess, engine)
    quiet = ort.SessionOptions()
    quiet.log_severity_level = 4  # errors are raised, not logged (the CLI prints one line); 3 logs them
    ref = ort.InferenceSession(str(model_path), quiet, providers=["CPUExecutionProvider"])
    produced = {o for n in g.nodes for o in n.outputs}
    inner = [t for n in g.nodes for t in n.outputs if is_quantized(g.tensors[t].dtype) and t not in g.outputs]
    exposed = frontend.with_extra_outputs(frontend.optimize_like_onnxruntime(model, str(model_path)), inner)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    ref_inner = ort.InferenceSession(exposed, so, providers=["CPUExecutionProvider"])
    inner_names = [o.name for o in ref_inner.get_outputs() if o.name in set(inner)]

    report = VerifyReport(str(model_path), mode, len(feeds_list), rounding=sess.rounding if mode == "npu" else "",
                          ort_isa=sess.ort_isa or "")
    K = kernel_set(sess.kernels)
    probes = [_SaturationProbe(n, g, K) for n in g.nodes if n.attrs.get("ort_u8s8")] if mode == "ort" else []
    wraps, count_overflow = overflow_probe(sess)
    outs = {n: Compare(n) for n in g.outputs}
    shared = {}
    if mode == "npu":
        from .fakequant import shared_tensors

        shared = {t: op for t, op in shared_tensors(g).items() if is_quantized(g.tensors[t].dtype)}
    refs = {n: Compare(n) for n in g.tensors if n in produced and is_quantized(g.tensors[n].dtype) and n not in shared}
    mids = {n: Compare(n) for n in inner_names}
    layer = {n: Compare(n) for n in inner_names}
    lsbs = {n: output_lsb(sess, n) for n in g.outputs}
    for feeds in feeds_list:
        values = sess.run_all(feeds)
        for probe in probes:
            probe(values)
        count_overflow(values)
        for name, want in zip(g.outputs, ref.run(list(g.outputs), feeds)):
            outs[name].add(values[name], want, lsbs[name])
        ort_inner = dict(zip(inner_names, ref_inner.run(inner_names, feeds)))
        for name, want in ort_inner.items():
            mids[name].add(values[name], want, 1.0)
        if mode == "npu":
            own = sess.run_all(feeds, given=ort_inner)
            for name, want in ort_inner.items():
                layer[name].add(own[name], want, 1.0)
            from .fakequant import evaluate

            expect = evaluate(g, feeds, sess.rounding)
            for name, c in refs.items():
                c.add(values[name], expect[name], 1.0)
    report.outputs = list(outs.values())
    report.reference = list(refs.values()) if mode == "npu" else []
    report.reference_shared = shared
    report.layerwise = list(layer.values()) if mode == "npu" else []
    report.host_fallback = list(sess.host_fallback)
    report.intermediates = list(mids.values())
    report.saturation = [p.stats for p in probes]
    report.overflow = wraps
    report.host_ops = [op for n in g.host_nodes() for op in n.attrs["ops"]]
    return report


def _verify_other(model_path, feeds_list, sess, engine) -> VerifyReport:
    """An IR file against its golden run, a QONNX model against qonnx's executor."""
    from . import verify_refs

    ir_file = str(model_path).endswith(".npz")
    wraps, count_overflow = overflow_probe(sess)
    report = VerifyReport(str(model_path), sess.mode, len(feeds_list), against="golden" if ir_file else "qonnx",
                          rounding=sess.rounding if sess.mode == "npu" else "", ort_isa=sess.ort_isa or "")
    if ir_file:
        golden = InferenceSession(model_path, mode=sess.mode, kernels="golden", rounding=sess.rounding,
                                  engine=engine, ort_isa=sess.ort_isa)
        verify_refs.against_golden(report, sess, golden, feeds_list, count_overflow)
    else:
        verify_refs.against_qonnx(report, sess, model_path, feeds_list, count_overflow)
    report.overflow = wraps
    report.host_fallback = list(sess.host_fallback)
    report.host_ops = [op for n in sess.graph.host_nodes() for op in n.attrs["ops"]]
    return report
