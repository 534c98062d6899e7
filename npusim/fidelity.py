"""Float fidelity: how far the quantized model's tensors are from the float model's.

For each quantized tensor of the IR that has a float counterpart, the signal-to-quantization-
noise ratio over every input set,

    SQNR = 10·log10( Σ f² / Σ (f − (q − zp)·scale)² )  dB     (inf when the two are equal),

with f the float model's tensor (onnxruntime, every matched tensor exposed as an output) and
q the integer tensor npusim computed. Graph outputs are compared value for value (SQNR), and a
2-D (N, classes) output also by top-1 agreement.

Matching follows onnxruntime's quantizer, which names a quantized tensor after the float one:
`t_quantized` (QOperator), `t_QuantizeLinear_Output` (QDQ). Where it folded a Relu/Clip into the
op producing `t` (QOperator keeps the pre-activation name), the quantized tensor stands for the
activation's output, so it is compared with that, unless the activation's output was quantized
on its own.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .ir import is_quantized

SUFFIXES = ("_QuantizeLinear_Output", "_quantized")
_FOLDED_ACTIVATIONS = ("Relu", "Clip")


@dataclass
class TensorFidelity:
    name: str          # the quantized tensor (IR name)
    float_name: str    # the float model's tensor it is compared with
    op: str            # the IR op producing it
    dtype: str
    elements: int
    sqnr_db: float


@dataclass
class OutputFidelity:
    name: str
    elements: int
    sqnr_db: float
    top1_agreement: float | None = None  # only for a 2-D (N, classes) output


@dataclass
class FidelityReport:
    float_model: str
    input_sets: int
    tensors: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _Sqnr:
    """Σ f² and Σ (f − g)² accumulated in float64 over input sets."""

    def __init__(self):
        self.signal, self.noise, self.elements = 0.0, 0.0, 0

    def add(self, f, g):
        f, g = np.asarray(f, np.float64), np.asarray(g, np.float64)
        if f.shape != g.shape:
            raise ValueError(f"float shape {f.shape} vs quantized {g.shape}")
        self.signal += float(np.sum(f * f))
        self.noise += float(np.sum((f - g) ** 2))
        self.elements += f.size

    @property
    def db(self) -> float:
        if self.noise == 0.0:
            return float("inf")
        if self.signal == 0.0:
            return float("-inf")
        return float(10.0 * np.log10(self.signal / self.noise))


def sqnr_db(f, q) -> float:
    """10·log10(Σ f² / Σ (f − q)²) in float64: inf when q equals f (the one SQNR of npusim)."""
    acc = _Sqnr()
    acc.add(f, q)
    return acc.db


def dequantize(q: np.ndarray, quant) -> np.ndarray:
    """(q − zp)·scale in float64, per tensor or along quant.axis."""
    scale = np.asarray(quant.scale, np.float64)
    zp = np.asarray(quant.zero_point, np.float64)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[quant.axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (q.astype(np.float64) - zp) * scale


def match_tensors(quant_graph, float_model) -> dict[str, str]:
    """{IR tensor name: float tensor name} for the quantized IR tensors with a float
    counterpart: by name (`t_quantized`, `t_QuantizeLinear_Output`), else by the ONNX node the
    IR node came from (`n`, `n_quant`: the float node n's output; `t_QuantizeLinear`: t), which
    finds the tensors onnxruntime renamed (its int8 -> uint8 QDQ conversion, `qdq_s8_to_u8_*`).
    Then the folded Relu/Clip rule of the module docstring."""
    float_tensors = {vi.name for vi in float_model.graph.input} | {o for n in float_model.graph.node for o in n.output}
    float_nodes = {n.name: n for n in float_model.graph.node}
    consumers = {}
    for n in float_model.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    producer = quant_graph.producer()
    bases = {}
    for name, t in quant_graph.tensors.items():
        if t.quant is None or not is_quantized(t.dtype):
            continue
        base = next((name[:-len(s)] for s in SUFFIXES if name.endswith(s)), None)
        if base not in float_tensors and name in producer:
            source = producer[name].source
            node = float_nodes.get(source) or float_nodes.get(source.removesuffix("_quant"))
            base = node.output[0] if node is not None else source.removesuffix("_QuantizeLinear")
        if base in float_tensors:
            bases[name] = base
    quantized_bases = set(bases.values())
    out = {}
    for name, base in bases.items():
        while (len(consumers.get(base, [])) == 1 and consumers[base][0].op_type in _FOLDED_ACTIVATIONS
               and consumers[base][0].output[0] not in quantized_bases):
            base = consumers[base][0].output[0]
        out[name] = base
    return out


def fidelity(quant_session_values, quant_graph, float_model_path, feeds_list) -> FidelityReport:
    """Compare a quantized model's tensors with the float model's, over `feeds_list`.

    quant_session_values: what `InferenceSession.run_all` returned for each feed of
    `feeds_list` (a list of dicts in the same order; a single dict when there is one feed).
    quant_graph: that session's IR graph. float_model_path: the float ONNX model.
    """
    import onnxruntime as ort

    from .frontend import read_model, with_extra_outputs

    if isinstance(quant_session_values, dict):
        quant_session_values = [quant_session_values]
    if len(quant_session_values) != len(feeds_list):
        raise ValueError(f"{len(quant_session_values)} sets of quantized values for {len(feeds_list)} input sets")
    model = read_model(str(float_model_path))
    matched = match_tensors(quant_graph, model)
    float_outputs = [o.name for o in model.graph.output]
    so = ort.SessionOptions()
    so.log_severity_level = 4  # fatal only: errors are raised (3 prints them too)
    sess = ort.InferenceSession(with_extra_outputs(model, sorted(set(matched.values()))), so,
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    producer = quant_graph.producer()
    tensor_acc = {q: _Sqnr() for q in matched}
    outputs = [o for o in quant_graph.outputs if o in float_outputs]
    output_acc = {o: _Sqnr() for o in outputs}
    agree = {o: [0, 0] for o in outputs}
    inputs = {i.name for i in sess.get_inputs()}
    for values, feeds in zip(quant_session_values, feeds_list):
        float_feeds = {k: v for k, v in feeds.items() if k in inputs}
        ref = {**float_feeds, **dict(zip(names, sess.run(names, float_feeds)))}
        for q, f in matched.items():
            if q in values and f in ref:
                tensor_acc[q].add(ref[f], dequantize(values[q], quant_graph.tensors[q].quant))
        for o in outputs:
            output_acc[o].add(ref[o], values[o])
            if ref[o].ndim == 2 and ref[o].shape[1] > 1:
                agree[o][0] += int(np.sum(ref[o].argmax(1) == values[o].argmax(1)))
                agree[o][1] += ref[o].shape[0]
    report = FidelityReport(str(float_model_path), len(feeds_list))
    order = {o: i for i, n in enumerate(quant_graph.nodes) for o in n.outputs}
    for q in sorted((q for q in matched if tensor_acc[q].elements), key=lambda q: order.get(q, -1)):
        node = producer.get(q)
        report.tensors.append(TensorFidelity(q, matched[q], node.op if node else "input", quant_graph.tensors[q].dtype,
                                             tensor_acc[q].elements, tensor_acc[q].db))
    for o in outputs:
        report.outputs.append(OutputFidelity(o, output_acc[o].elements, output_acc[o].db,
                                             agree[o][0] / agree[o][1] if agree[o][1] else None))
    return report


def fidelity_text(report: FidelityReport) -> str:
    """The report as the tables `npusim verify --float-model` prints."""
    rows = [("tensor", "float tensor", "op", "type", "sqnr_db")]
    rows += [(t.name, t.float_name, t.op, t.dtype, f"{t.sqnr_db:.2f}") for t in report.tensors]
    lines = [f"float model: {report.float_model}, input sets: {report.input_sets}", "", *_table(rows), ""]
    out_rows = [("output", "elements", "sqnr_db", "top1_agreement")]
    out_rows += [(o.name, str(o.elements), f"{o.sqnr_db:.2f}",
                  "-" if o.top1_agreement is None else f"{o.top1_agreement:.4f}") for o in report.outputs]
    return "\n".join(lines + _table(out_rows))


def _table(rows) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = [("  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip() for r in rows]
    return [fmt[0], "  ".join("-" * w for w in widths), *fmt[1:]]
