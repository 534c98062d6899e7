"""`npusim bench`: per-layer latency of a model on an NPU profile, and npusim's own speed.

The layer costs come from npusim.hardware (shapes of one seeded run); the wall time is the
median of a few warm runs of npusim and of onnxruntime on the same inputs. `--plot` draws a
per-layer chart (matplotlib, Agg backend), `--json` prints everything for machines. Files are
written to a temp file in the destination folder and renamed. npusim.hardware is imported by the
command, not with this module, which every CLI start-up imports for its parser (npusim.cli).
"""
from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

import numpy as np

from .errors import NpusimError
from .ir import write_atomic
from .report import round_sig

if TYPE_CHECKING:
    from .hardware import NetworkCost

_COLUMNS = ["op", "name", "in", "out", "bits", "macs", "compute", "memory", "total", "util", "bound"]
CSV_FIELDS = ["op", "name", "in_shape", "out_shape", "bits", "macs", "compute_cycles", "memory_cycles",
              "stall_cycles", "total_cycles", "utilization", "bound", "unit", "sram_bytes", "dram_bytes"]


def _fmt_shape(shape) -> str:
    return "x".join(str(d) for d in shape) or "-"


def layer_records(net: NetworkCost) -> list[dict]:
    """One record per layer that costs cycles (free ops left out), raw numbers: what the table,
    the CSV and the plot show (the JSON carries the same layers, free ones included)."""
    return [{"op": c.op, "name": c.name, "in_shape": _fmt_shape(c.in_shape), "out_shape": _fmt_shape(c.out_shape),
             "bits": c.bits, "macs": c.macs, "compute_cycles": c.compute_cycles, "memory_cycles": c.memory_cycles,
             "stall_cycles": c.stall_cycles, "total_cycles": c.total_cycles,
             "utilization": round_sig(c.utilization, 4), "bound": c.bound, "unit": c.unit, "sram_bytes": c.sram_bytes,
             "dram_bytes": c.dram_bytes}
            for c in net.layers if c.bound != "free"]


def cost_rows(net: NetworkCost) -> list[dict]:
    """The table's rows: layer_records formatted."""
    return [{"op": r["op"], "name": r["name"] if len(r["name"]) <= 40 else r["name"][:37] + "...",
             "in": r["in_shape"], "out": r["out_shape"], "bits": r["bits"], "macs": f"{r['macs']:,}",
             "compute": f"{r['compute_cycles']:,}", "memory": f"{r['memory_cycles']:,}",
             "total": f"{r['total_cycles']:,}", "util": f"{100 * r['utilization']:.1f}%" if r["macs"] else "-",
             "bound": r["bound"]} for r in layer_records(net)]


def kinds_text(net: NetworkCost) -> str:
    """The cycles_by_kind line of the text report."""
    return "cycles by kind: " + ", ".join(f"{k} {v:,} ({100 * v / max(net.total_cycles, 1):.1f}%)"
                                          for k, v in net.cycles_by_kind().items())


def bench_text(net: NetworkCost, wall: dict | None = None) -> str:
    from .report import format_table

    p = net.profile
    array_cycles = sum(c.total_cycles for c in net.layers if c.macs)
    lines = [f"profile: {p.name} ({p.source}): {p.rows}x{p.cols} {p.dataflow}, {p.clock_mhz:g} MHz, "
             f"DRAM {p.dram_bytes_per_cycle:g} B/cycle", "", format_table(cost_rows(net), _COLUMNS), "",
             f"total: {net.total_cycles:,} cycles = {net.latency_us:,.1f} us at {p.clock_mhz:g} MHz; "
             f"{net.macs:,} MACs; array utilization {100 * sum(c.utilization * c.total_cycles for c in net.layers if c.macs) / max(array_cycles, 1):.1f}% "
             f"over its layers", kinds_text(net)]
    if net.energy_pj is not None:
        lines.append(f"energy: {net.energy_pj / 1e6:,.3f} uJ")
    if wall:
        ort = f"{wall['onnxruntime_ms']:.3f} ms" if wall.get("onnxruntime_ms") is not None else "n/a (not ONNX)"
        lines.append(f"simulator wall time (median of {wall['runs']}): npusim {wall['npusim_ms']:.3f} ms, "
                     f"onnxruntime {ort}")
    return "\n".join(lines)


def write_csv(net: NetworkCost, path) -> None:
    """The per-layer records as CSV (one row per layer, Vela's per-layer report in spirit)."""
    import csv

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, CSV_FIELDS)
            w.writeheader()
            w.writerows(layer_records(net))
    write_atomic(path, write)


def interleaved_times(fns, repeat: int) -> list[float]:
    """Median wall time in seconds of each of `fns`, called in turn `repeat` times after one
    warm-up call each, so that a change of machine load falls on all of them alike (the one
    timing rule of `npusim bench` and the scripts in benchmarks/)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [float(np.median(ts)) for ts in times]


def wall_times(model, session, feeds, runs: int) -> dict:
    """Median wall time of `runs` warm runs of npusim and of onnxruntime (ONNX models only)."""
    fns = [lambda: session.run(None, feeds)]
    sess = None
    if not str(model).endswith(".npz"):
        import onnxruntime as ort
        try:
            sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        except Exception:  # a model onnxruntime cannot load (QONNX's custom ops): no reference time
            pass
    if sess is not None:
        names = {i.name for i in sess.get_inputs()}
        ort_feeds = {k: v for k, v in feeds.items() if k in names}
        fns.append(lambda: sess.run(None, ort_feeds))
    ms = [round_sig(1e3 * t) for t in interleaved_times(fns, runs)] + [None]
    return {"runs": runs, "npusim_ms": ms[0], "onnxruntime_ms": ms[1]}


def plot(net: NetworkCost, path, title: str = "") -> dict[str, int]:
    """Per-layer latency chart: one stacked bar per layer (its unit's busy time, then stall), in
    execution order, and the total by kind (NetworkCost.cycles_by_kind, returned); written
    atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .hardware import CYCLE_KINDS

    layers = [c for c in net.layers if c.total_cycles]
    us = 1.0 / net.profile.clock_mhz
    colors = {"array compute": "#1f77b4", "post-processing": "#2ca02c", "host": "#9467bd", "DRAM stall": "#d62728"}
    x = np.arange(len(layers))
    busy = np.array([c.compute_cycles for c in layers]) * us
    stall = np.array([c.stall_cycles for c in layers]) * us
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(13, 7.5), height_ratios=[3, 1])
    ax.bar(x, busy, width=0.85, color=[colors[c.unit] for c in layers])
    ax.bar(x, stall, width=0.85, bottom=busy, color=colors["DRAM stall"])
    top = busy + stall
    ax.set_ylim(0, 1.3 * top.max())
    for j, i in enumerate(sorted(np.argsort(-top)[:5])):  # the five slowest, labels staggered
        ax.annotate(f"{layers[i].op} {_fmt_shape(layers[i].out_shape)}", (x[i], top[i]),
                    textcoords="offset points", xytext=(0, 3 + 11 * (j % 2)), ha="center", fontsize=7)
    from matplotlib.patches import Patch
    labels = {"array compute": "array compute (conv/matmul)", "post-processing": "post-processing (requant, "
              "eltwise, pool)", "host": "host fallback", "DRAM stall": "DRAM stall"}
    ax.legend(handles=[Patch(color=colors[k], label=labels[k]) for k in CYCLE_KINDS], loc="upper center", ncol=4,
              fontsize=8)
    ax.set_xlabel("layer (execution order)")
    ax.set_ylabel("latency (us)")
    p = net.profile
    ax.set_title(title or f"{p.name}: {net.latency_us:,.0f} us total at {p.clock_mhz:g} MHz")
    kinds = net.cycles_by_kind()
    ax2.barh(list(kinds), [v * us for v in kinds.values()], color=[colors[k] for k in kinds])
    for i, v in enumerate(kinds.values()):
        ax2.text(v * us, i, f" {v * us:,.0f} us ({100 * v / max(net.total_cycles, 1):.0f}%)", va="center", fontsize=8)
    ax2.set_xlabel("total latency by kind (us)")
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return kinds


def cmd_bench(args) -> int:
    from .cliargs import default_model, parse_shapes
    from .feeds import random_feeds
    from .hardware import estimate, load_profile
    from .session import InferenceSession

    if args.runs < 0:
        raise NpusimError(f"--runs {args.runs}: expected a count >= 0")
    profile = load_profile(args.hw)
    model = args.model or default_model()
    # the graph as the NPU runs it: mode npu's lowering (pools out of host islands) and rounding
    sess = InferenceSession(model, mode="npu", rounding=profile.requant_rounding)
    feeds = random_feeds(sess.graph, args.seed, parse_shapes(args))
    values = sess.run_all(feeds)
    net = estimate(sess.graph, {k: np.shape(v) for k, v in values.items()}, profile)
    wall = wall_times(model, sess, feeds, args.runs) if args.runs else None
    if args.json:
        print(json.dumps({"model": str(model), **net.to_dict(), "wall": wall}, indent=2, default=list))
    else:
        print(bench_text(net, wall))
    if args.csv:
        write_csv(net, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        plot(net, args.plot, f"{os.path.basename(str(model))} on {profile.name}: {net.latency_us:,.0f} us")
        print(f"wrote {args.plot}")
    return 0


def register(subparsers) -> None:
    """Add the `bench` subcommand to an argparse subparsers object."""
    b = subparsers.add_parser("bench", help="per-layer cycles, latency and utilization on an NPU profile")
    b.add_argument("model", nargs="?", help="ONNX model or npusim IR (.npz); default: the shipped digits model")
    b.add_argument("--hw", metavar="PROFILE.toml", help="hardware profile (default: npusim/profiles/default.toml)")
    b.add_argument("--shape", action="append", metavar="NAME=D0,D1,..",
                   help="shape of an input with dynamic dimensions")
    b.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    b.add_argument("--runs", type=int, default=5, help="timed runs of npusim and onnxruntime (default 5; 0 skips)")
    b.add_argument("--json", action="store_true", help="print the report as JSON")
    b.add_argument("--plot", metavar="FILE.png", help="write the per-layer latency chart")
    b.add_argument("--csv", metavar="FILE.csv", help="write the per-layer table as CSV (raw numbers)")
    b.set_defaults(func=cmd_bench)

