"""Tables for people: the IR with concrete shapes, MACs and weight bytes; verify results."""
from __future__ import annotations

from collections import Counter

import numpy as np

from .registry import OPS
from .size import node_bits


def round_sig(x: float | None, digits: int = 6):
    """`x` to `digits` significant digits for a report (an int when it is integral); None stays."""
    if x is None:
        return None
    r = float(f"{x:.{digits}g}")
    return int(r) if r.is_integer() else r


def _shape(a):
    return "x".join(str(d) for d in a.shape) if a is not None and np.ndim(a) else "-"


def _bits(graph, name):
    t = graph.tensors.get(name)
    return "-" if t is None or not name else t.dtype


def layer_rows(session, values) -> list[dict]:
    """One row per IR node, with the shapes seen in `values` (a run_all result)."""
    g = session.graph
    sizes = node_bits(g)
    rows = []
    for n in g.nodes:
        ins = [values.get(i) if i else None for i in n.inputs]
        outs = [values.get(o) for o in n.outputs]
        macs = 0
        if n.op in OPS and all(x is not None for x in ins[:2]):
            macs = OPS[n.op].macs(n, [None if x is None else x.shape for x in ins], [o.shape for o in outs])
        q = g.tensors[n.outputs[0]].quant
        rows.append({"op": n.op, "name": n.source or n.name, "in": _shape(ins[0]) if ins else "-",
                     "out": _shape(outs[0]), "x": _bits(g, n.inputs[0] if n.inputs else ""),
                     "w": _bits(g, n.inputs[1]) if n.op in ("conv", "matmul", "gemm") else "-",
                     "y": _bits(g, n.outputs[0]), "quant": q.describe() if q else "-",
                     "macs": int(macs), "param_bits": sizes[n.name],
                     "host_ops": list(n.attrs["ops"]) if n.op == "host" else [],
                     "wess_shift": [int(v) for v in n.attrs["wess_shift"]] if "wess_shift" in n.attrs else []})
    return rows


def _shifts(values, limit=16) -> str:
    """WESS shifts as hex digits, one per channel: 0..15 fit one digit each."""
    text = "".join(f"{v:x}" for v in values[:limit])
    return text + ("..." if len(values) > limit else "") if values else "-"


def format_table(rows, columns) -> str:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    for r in rows:
        lines.append("  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


def inspect_text(session, values) -> str:
    rows = layer_rows(session, values)
    for r in rows:
        if r["host_ops"]:
            r["name"] = "host: " + ", ".join(o.split(":")[0] for o in r["host_ops"])
        r["wess"] = _shifts(r["wess_shift"])
    cols = ["op", "name", "in", "out", "x", "w", "y", "quant", "wess", "macs", "param_bits"]
    total_macs = sum(r["macs"] for r in rows)
    total_bits = sum(r["param_bits"] for r in rows)
    host = sum(len(r["host_ops"]) for r in rows)
    npu = sum(1 for r in rows if r["op"] != "host")
    wess = sum(1 for r in rows if r["wess_shift"])
    return (format_table(rows, cols) + f"\n\n{npu} integer ops, {host} host ops in "
            f"{sum(1 for r in rows if r['host_ops'])} islands; {total_macs:,} MACs; "
            f"model size {total_bits:,} bits = {total_bits / 8192:.2f} KiB (weights at their widths, biases, "
            f"multipliers, shifts, zero points, tables; see npusim.size)"
            + (f"\nwess: per-channel 4-bit weight-equalizing shifts (hex digit per output channel) on {wess} "
               f"layers; mode npu fuses them into the layer's right shift" if wess else ""))


def _saturation_lines(report) -> list[str]:
    """The emulated onnxruntime family, and per U8S8 layer what the int16 pair saturation of
    onnxruntime's non-VNNI kernels does there (npusim.ortisa)."""
    from .ortisa import SATURATING, describe, host_ort_isa

    lines = [f"onnxruntime integer kernels emulated: {describe(report.ort_isa)}"]
    sat = report.saturation
    hit = [c for c in sat if c.pairs]
    if not sat:
        return lines + ["u8·s8 layers (int16 pair saturation without VNNI): none in this model"]
    if report.ort_isa in SATURATING:
        lines.append(f"u8·s8 layers: {len(sat)}, with int16 pair saturation in {len(hit)}"
                     + (" (onnxruntime's result against the exact integer result):" if hit else ""))
    else:
        lines.append(f"u8·s8 layers: {len(sat)}; on CPUs without VNNI ({', '.join(SATURATING)}) onnxruntime "
                     f"would saturate int16 pair sums in {len(hit)}" + (" (not on this family):" if hit else ""))
    rows = [{"layer": c.layer, "saturated_pairs": c.pairs,
             "acc_changed": f"{c.acc_changed}/{c.acc_elements}", "max_acc_diff": c.max_acc_diff,
             "out_changed": "-" if c.out_changed is None else c.out_changed,
             "max_out_lsb": "-" if c.max_out_diff is None else c.max_out_diff}
            for c in sorted(hit, key=lambda c: -c.pairs)[:20]]
    if rows:
        lines.append(format_table(rows, ["layer", "saturated_pairs", "acc_changed", "max_acc_diff", "out_changed",
                                         "max_out_lsb"]))
    host = host_ort_isa()
    if (host in SATURATING) != (report.ort_isa in SATURATING):
        lines.append(f"note: this CPU's onnxruntime computes as family {host}, and the comparison above is with it")
    return lines


def _overflow_lines(report) -> list[str]:
    """Layers whose int32 accumulator can wrap (npusim.overflow) and how often it did."""
    if not report.overflow:
        return ["int32 accumulators: no layer can overflow (plan-time bound)"]
    wrapped = [c for c in report.overflow if c.wrapped]
    rows = [{"layer": c.layer, "bound": "unknown" if c.bound is None else c.bound,
             "wrapped": f"{c.wrapped}/{c.elements}"} for c in report.overflow]
    return [f"int32 accumulators: {len(report.overflow)} layers can overflow, {len(wrapped)} wrapped on these "
            f"inputs (wrapped modulo 2^32, as onnxruntime does):", format_table(rows, ["layer", "bound", "wrapped"])]


def _reference_lines(report) -> list[str]:
    """Against qonnx's executor or an IR's golden run (npusim.verify_refs): outputs, the compared
    tensors, the float outputs that are not identical with their bound, the verdict."""
    what = {"qonnx": ("qonnx's executor (execute_onnx on cleanup_model)", "activation quantizer codes"),
            "golden": ("the IR's golden run (kernels=golden)", "tensors produced by integer ops")}[report.against]
    rows = [{"output": c.name, "elements": c.elements, "exact": f"{100 * c.exact_fraction:.4f}%",
             "max_diff_lsb": f"{c.max_lsb:g}"} for c in report.outputs]
    inter = report.intermediates
    bad = [c for c in inter if c.exact != c.elements]
    lines = [f"against {what[0]}:", format_table(rows, ["output", "elements", "exact", "max_diff_lsb"]), "",
             f"{what[1]}: {len(inter)} compared, {len(inter) - len(bad)} bit-exact"]
    lines += [f"  {c.name}: {100 * c.exact_fraction:.4f}% exact, max {c.max_lsb:g} LSB" for c in bad[:20]]
    lines += [f"  not compared: {name}: {why}" for name, why in list(report.not_compared.items())[:20]]
    for f in report.float_outputs:
        bound = "no bound known (it must be identical)" if f.bound is None else f"bound {f.bound:.3g}"
        lines.append(f"float output {f.name}: max |diff| {f.max_abs:.3g} = {f.max_ulp:g} ULP of its largest value; "
                     f"{bound} (float32 rounding of the two sums): {'within' if f.within else 'NOT within'}")
    kinds = Counter(op.split(":")[0] for op in report.host_ops)
    lines.append(f"host ops ({len(report.host_ops)}, run by onnxruntime): "
                 + (", ".join(f"{k} x{v}" for k, v in kinds.most_common()) if kinds else "none"))
    return lines + _overflow_lines(report) + ["", report.verdict.upper()]


def verify_text(report) -> str:
    mode = report.mode + (f" ({report.rounding} rounding)" if report.rounding else "")
    lines = [f"model: {report.model}", f"mode: {mode}, input sets: {report.input_sets}", ""]
    if report.against != "onnxruntime":
        return "\n".join(lines + _reference_lines(report))
    if report.mode == "npu":
        lines.append("against onnxruntime (mode npu rounds in fixed point; differences are expected):")
    rows = [{"output": c.name, "elements": c.elements, "exact": f"{100 * c.exact_fraction:.4f}%",
             "max_diff_lsb": f"{c.max_lsb:g}"} for c in report.outputs]
    lines.append(format_table(rows, ["output", "elements", "exact", "max_diff_lsb"]))
    inter = report.intermediates
    bad = [c for c in inter if c.exact != c.elements]
    lines.append("")
    lines.append(f"intermediate quantized tensors: {len(inter)} compared, {len(inter) - len(bad)} bit-exact")
    for c in bad[:20]:
        lines.append(f"  {c.name}: {100 * c.exact_fraction:.4f}% exact, max {c.max_lsb:g} LSB")
    kinds = Counter(op.split(":")[0] for op in report.host_ops)
    lines.append(f"host ops ({len(report.host_ops)}, run by onnxruntime; names in --json): "
                 + (", ".join(f"{k} x{v}" for k, v in kinds.most_common()) if kinds else "none"))
    if report.mode == "ort":
        lines.extend(_saturation_lines(report))
    lines.extend(_overflow_lines(report))
    if report.mode == "npu":
        lines.append(f"host fallback at inference: {len(report.host_fallback)} islands"
                     + (" (" + "; ".join(report.host_fallback[:5]) + (", ..." if len(report.host_fallback) > 5 else "")
                        + ")" if report.host_fallback else "; the other islands are lookup tables on the NPU"))
        lw = report.layerwise
        if lw:
            n = sum(c.elements for c in lw)
            lines.append(f"layer-wise (each op on onnxruntime's inputs): {len(lw)} tensors, "
                         f"{100 * sum(c.exact for c in lw) / max(n, 1):.3f}% of {n} elements exact, "
                         f"max {max(c.max_lsb for c in lw):g} LSB")
        ref = report.reference
        bad_ref = [c for c in ref if c.exact != c.elements]
        lines.append("")
        lines.append(f"against the float64 fake-quantization reference: {len(ref)} quantized tensors, "
                     f"{len(ref) - len(bad_ref)} bit-exact")
        if report.reference_shared:
            kinds = Counter(report.reference_shared.values())
            lines.append(f"  not compared: {len(report.reference_shared)} computed by code the reference shares with "
                         f"the runtime (" + ", ".join(f"{k} x{v}" for k, v in kinds.most_common()) + ")")
        for c in bad_ref[:20]:
            lines.append(f"  {c.name}: {100 * c.exact_fraction:.4f}% exact, max {c.max_lsb:g} LSB")
    lines.append("")
    lines.append("BIT-EXACT" if report.bit_exact else "NOT BIT-EXACT")
    return "\n".join(lines)
