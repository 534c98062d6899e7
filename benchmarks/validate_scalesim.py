"""npusim's hardware model against SCALE-Sim (PyPI `scalesim`) on conv layers of the zoo.

    python benchmarks/validate_scalesim.py [--array 32] [--dataflows os,ws,is] [--max-layers N]

For 8-bit layers and the same array, dataflow, SRAM sizes and bandwidth, prints one row per
(layer, dataflow): npusim's compute cycles, SCALE-Sim's, and the difference. SCALE-Sim reports
the index of the last compute cycle (count - 1); the table adds the 1 back. Then a few layers
on a narrow DRAM interface, where both models stall: total cycles (compute + stall).

SCALE-Sim 3.0.0 calls int() on one-element arrays, which NumPy >= 2.4 refuses; `_numpy24_shim`
gives two of its memory modules a `max` that returns a 0-d array instead (the same number), and
changes nothing else. SCALE-Sim runs offline from its installed package; it is slow (a Python
loop per array cycle), so large layers take seconds each.
"""
from __future__ import annotations

import argparse
import builtins
import os
import sys
import tempfile
import time

import numpy as np

from npusim import hardware, ir

_CFG = """[general]
run_name = npusim
[run_presets]
InterfaceBandwidth = USER
UseRamulatorTrace = False
[architecture_presets]
ArrayHeight = {rows}
ArrayWidth = {cols}
IfmapSramSzkB = {ifmap_kib}
FilterSramSzkB = {weight_kib}
OfmapSramSzkB = {output_kib}
IfmapOffset = 0
FilterOffset = 10000000
OfmapOffset = 20000000
Dataflow = {dataflow}
Bandwidth = {bw}
ReadRequestBuffer = 32
WriteRequestBuffer = 32
[layout]
IfmapCustomLayout = False
FilterCustomLayout = False
IfmapSRAMBankBandwidth = {bw}
IfmapSRAMBankNum = 1
IfmapSRAMBankPort = 2
FilterSRAMBankBandwidth = {bw}
FilterSRAMBankNum = 1
FilterSRAMBankPort = 2
[sparsity]
SparsitySupport = false
SparseRep = ellpack_block
OptimizedMapping = false
BlockSize = 8
RandomNumberGeneratorSeed = 40
"""


def _numpy24_shim():
    from scalesim.memory import double_buffered_scratchpad_mem, read_buffer

    def one_element_max(*args, **kw):
        r = builtins.max(*args, **kw)
        return r.reshape(()) if isinstance(r, np.ndarray) and r.size == 1 else r
    read_buffer.max = double_buffered_scratchpad_mem.max = one_element_max


def run_scalesim(layer: dict, profile: hardware.Profile) -> dict:
    """SCALE-Sim on one conv layer (dict: name, h, w (padded input), kh, kw, c, m, stride) with the profile's array,
    dataflow, SRAM sizes and DRAM bandwidth (words of 1 byte per cycle, per operand stream).
    -> compute (count, not index), stall, total = compute + stall, overall (with DRAM fill/drain)."""
    from scalesim.layout_utils import layouts
    from scalesim.scale_config import scale_config
    from scalesim.single_layer_sim import single_layer_sim
    from scalesim.topology_utils import topologies

    _numpy24_shim()
    with tempfile.TemporaryDirectory() as d:
        cfg_path, topo_path = os.path.join(d, "npusim.cfg"), os.path.join(d, "layer.csv")
        with open(cfg_path, "w") as f:
            f.write(_CFG.format(rows=profile.rows, cols=profile.cols, dataflow=profile.dataflow,
                                ifmap_kib=int(profile.ifmap_kib), weight_kib=int(profile.weight_kib),
                                output_kib=int(profile.output_kib), bw=int(profile.dram_bytes_per_cycle)))
        with open(topo_path, "w") as f:
            f.write("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n")
            f.write(",".join(str(v) for v in (layer["name"], layer["h"], layer["w"], layer["kh"], layer["kw"],
                                               layer["c"], layer["m"], layer["stride"])) + ",\n")
        cfg = scale_config()
        cfg.read_conf_file(cfg_path)
        topo = topologies()
        topo.load_arrays(topofile=topo_path)
        out = {"compute": 0, "stall": 0, "overall": 0}
        for i in range(topo.get_num_layers()):
            sim = single_layer_sim()
            sim.set_params(layer_id=i, config_obj=cfg, topology_obj=topo, layout_obj=layouts(), verbose=False)
            sim.run()
            overall, compute_and_stall, stall, *_ = sim.get_compute_report_items()
            out["compute"] += compute_and_stall - stall + 1
            out["stall"] += stall
            out["overall"] += overall
    out["total"] = out["compute"] + out["stall"]
    return out


def conv_graph(layer: dict, x_dtype="u8", w_dtype="i8", y_dtype="u8", group=1):
    """(graph, shapes) of one conv + requantize with the layer's (already padded) input."""
    c, m, kh, kw, s = layer["c"], layer["m"], layer["kh"], layer["kw"], layer["stride"]
    x_shape = (1, c, layer["h"], layer["w"])
    y_shape = (1, m, (layer["h"] - kh) // s + 1, (layer["w"] - kw) // s + 1)
    w_shape = (m, c // group, kh, kw)
    t = {"x": ir.Tensor("x", x_dtype, x_shape), "w": ir.Tensor("w", w_dtype, w_shape),
         "acc": ir.Tensor("acc", "i32", y_shape), "y": ir.Tensor("y", y_dtype, y_shape)}
    nodes = (ir.Node("conv", "conv", ("x", "w", "", "", ""), ("acc",),
                     {"group": group, "strides": (s, s), "pads": (0, 0, 0, 0), "dilations": (1, 1),
                      "auto_pad": "NOTSET"}, layer["name"]),
             ir.Node("requantize", "rq", ("acc",), ("y",), {}, layer["name"]))
    g = ir.Graph(layer["name"], ("x",), ("y",), t, nodes, {"w": np.zeros(w_shape, ir.storage(w_dtype))})
    return g, {"x": x_shape, "w": w_shape, "acc": y_shape, "y": y_shape}


def npusim_layer(layer: dict, profile: hardware.Profile, group=1) -> dict:
    """npusim's compute and total cycles of the layer's conv (its requantize left out)."""
    g, shapes = conv_graph(layer, group=group)
    conv = hardware.estimate(g, shapes, profile).layers[0]
    return {"compute": conv.compute_cycles, "total": conv.total_cycles}


def zoo_layers(name: str, shape=None) -> list[dict]:
    """The 2-D convs of a zoo model as SCALE-Sim layers (padded input, square stride, dilation 1);
    depthwise convs are named 'DP...' (SCALE-Sim's per-channel treatment)."""
    import npusim_models
    from npusim.feeds import random_feeds
    from npusim.session import InferenceSession

    sess = InferenceSession(str(npusim_models.path(name)))
    vals = sess.run_all(random_feeds(sess.graph, 0, shape))
    layers = []
    for n in sess.graph.nodes:
        if n.op != "conv" or len(vals[n.inputs[1]].shape) != 4:
            continue
        x, w = vals[n.inputs[0]].shape, vals[n.inputs[1]].shape
        s, d = tuple(n.attrs["strides"]), tuple(n.attrs["dilations"])
        if s[0] != s[1] or d != (1, 1) or n.attrs["auto_pad"] not in ("NOTSET", "VALID"):
            continue
        group = int(n.attrs["group"])
        dw = group > 1 and group == x[1] == w[0]
        if group > 1 and not dw:
            continue
        y = vals[n.outputs[0]].shape
        # the padded input rows/cols the windows use: SCALE-Sim rounds the output size up
        # (ceil((H - kh + s) / s)), ONNX down, so unused trailing rows would add an output row
        layers.append({"name": ("DP_" if dw else "") + (n.source or n.name), "h": (y[2] - 1) * s[0] + w[2],
                       "w": (y[3] - 1) * s[1] + w[3], "kh": w[2], "kw": w[3], "c": x[1], "m": w[0],
                       "stride": s[0], "group": group})
    return layers


def profile_for(base: hardware.Profile, dataflow: str, **kw) -> hardware.Profile:
    from dataclasses import replace
    return replace(base, dataflow=dataflow, **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--array", type=int, default=32, help="rows = cols of the array (default 32)")
    ap.add_argument("--dataflows", default="os,ws,is")
    ap.add_argument("--max-layers", type=int, default=0, help="first N distinct layers only (0: all)")
    args = ap.parse_args(argv)
    base = profile_for(hardware.load_profile(), "ws", rows=args.array, cols=args.array, ifmap_kib=1024,
                       weight_kib=1024, output_kib=1024, dram_bytes_per_cycle=64)
    seen, layers = set(), []
    for model, shape in (("digits_qop_pc_u8", None), ("ppocr_cls_qop_pc_u8", {"x": (1, 3, 48, 192)})):
        for L in zoo_layers(model, shape):
            key = tuple(L[k] for k in ("h", "w", "kh", "kw", "c", "m", "stride", "group"))
            if key not in seen:
                seen.add(key)
                layers.append({**L, "model": model})
    if args.max_layers:
        layers = layers[:args.max_layers]
    print(f"array {args.array}x{args.array}, SRAM 1024/1024/1024 KiB, DRAM 64 B/cycle per stream, 8-bit; "
          f"{len(layers)} distinct conv layers")
    print("| layer | shape (HxW kh x kw, C -> M, /s) | dataflow | npusim cycles | SCALE-Sim cycles | difference |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    t0 = time.time()
    for L in layers:
        for df in args.dataflows.split(","):
            p = profile_for(base, df)
            dw = L["name"].startswith("DP_")
            if dw:  # SCALE-Sim's depthwise: C identical 1-channel convs (run once, times C)
                one = {**L, "name": "channel", "c": 1, "m": 1, "group": 1}
                ss = {"compute": L["c"] * run_scalesim(one, p)["compute"]}
                ours = L["c"] * npusim_layer(one, p)["compute"]
            else:
                ss, ours = run_scalesim(L, p), npusim_layer(L, p)["compute"]
            diff = 100.0 * (ours - ss["compute"]) / ss["compute"]
            worst = max(worst, abs(diff))
            packed = f" (packed: {npusim_layer(L, p, group=L['group'])['compute']:,})" if dw else ""
            print(f"| {L['name'][:28]} | {L['h']}x{L['w']} {L['kh']}x{L['kw']}, {L['c']}->{L['m']}, /{L['stride']} "
                  f"| {df} | {ours:,}{packed} | {ss['compute']:,} | {diff:+.2f}% |")
            sys.stdout.flush()
    print(f"\nlargest |difference|: {worst:.2f}%  ({time.time() - t0:.0f} s)")
    print("\nnarrow DRAM, 16x16 array: total cycles (compute + stall) and SCALE-Sim's overall cycles")
    print("| layer | dataflow | SRAM KiB each | DRAM B/cycle | npusim total | SCALE-Sim total | SCALE-Sim overall "
          "| difference (total) |")
    print("|---|---|---|---|---|---|---|---|")
    for L, df, kib, bw in STALL_CASES:
        p = stall_profile(df, kib, bw)
        ss, ours = run_scalesim(L, p), npusim_layer(L, p)
        print(f"| {L['name']} {L['h']}x{L['w']} {L['c']}->{L['m']} | {df} | {kib} | {bw} | {ours['total']:,} "
              f"| {ss['total']:,} | {ss['overall']:,} | {100.0 * (ours['total'] - ss['total']) / ss['total']:+.1f}% |")
    return 0


def stall_profile(dataflow, sram_kib, bw):
    return profile_for(hardware.load_profile(), dataflow, rows=16, cols=16, ifmap_kib=sram_kib, weight_kib=sram_kib,
                       output_kib=sram_kib, dram_bytes_per_cycle=bw)


FC = {"name": "fc-like 1x1", "h": 4, "w": 4, "kh": 1, "kw": 1, "c": 256, "m": 128, "stride": 1}
PW = {"name": "pointwise", "h": 12, "w": 12, "kh": 1, "kw": 1, "c": 64, "m": 64, "stride": 1}
# (layer, dataflow, SRAM KiB, DRAM bytes/cycle). The first four stream every operand from DRAM
# once in both models, so they agree; in the last three SCALE-Sim's read buffers, which evict in
# fetch order, re-read operands that npusim keeps across the inner fold loop.
STALL_CASES = [(FC, "os", 2, 1), (FC, "os", 2, 2), (FC, "is", 2, 1), (FC, "is", 2, 2),
               (PW, "os", 2, 1), (FC, "ws", 4, 4), (PW, "ws", 4, 4)]

if __name__ == "__main__":
    sys.exit(main())
