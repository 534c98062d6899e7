"""The hardware model: profiles, SCALE-Sim's compute model, memory traffic at bit widths, bench.

SCALE-Sim (PyPI `scalesim`, pinned by the test extra) is the oracle for compute cycles; a missing
or broken scalesim fails the module. Expected numbers in the other tests are worked out by hand in the comments.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import pathlib
import re

import numpy as np
import pytest
import scalesim  # noqa: F401  (the cycle oracle: benchmarks/validate_scalesim.py runs it)
from hypothesis import given, settings, strategies as st

import npusim_models
from npusim import bench, hardware
from npusim.errors import NpusimError
from npusim.feeds import random_feeds
from npusim.session import InferenceSession

_spec = importlib.util.spec_from_file_location(
    "validate_scalesim", pathlib.Path(__file__).parents[1] / "benchmarks" / "validate_scalesim.py")
V = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(V)


DEFAULT = hardware.load_profile()


def profile(**kw) -> hardware.Profile:
    return dataclasses.replace(DEFAULT, **kw)


def layer(h, w, kh, kw, c, m, stride=1, name="L"):
    return {"name": name, "h": h, "w": w, "kh": kh, "kw": kw, "c": c, "m": m, "stride": stride}


def conv_cost(L, p, **dtypes) -> hardware.LayerCost:
    g, shapes = V.conv_graph(L, **dtypes)
    return hardware.estimate(g, shapes, p).layers[0]


# ---------------------------------------------------------------- profiles

def test_default_profile():
    p = DEFAULT
    assert (p.rows, p.cols, p.dataflow, p.clock_mhz) == (32, 32, "ws", 800.0)
    assert (p.weight_bits_per_cycle, p.act_bits_per_cycle, p.requant_rounding) == (8, 8, "double")
    assert p.host_cycles == 16000  # 20 us at 800 MHz
    assert p.energy == hardware.Energy(0.25, 1.0, 100.0)
    assert p.passes(8, 8) == 1 and p.passes(4, 8) == 1


def test_bitserial_profile_ships():
    p = hardware.load_profile(pathlib.Path(hardware.__file__).parent / "profiles" / "bitserial.toml")
    assert (p.rows, p.dataflow, p.host_cycles, p.energy) == (64, "os", 20000, None)
    assert p.passes(8, 8) == 8 and p.passes(4, 8) == 4 and p.passes(3, 2) == 3


_GOOD = (pathlib.Path(hardware.__file__).parent / "profiles" / "default.toml").read_text()


@pytest.mark.parametrize("edit, words", [
    (("rows = 32", "rows = 32\nbanks = 4"), ["unknown key 'banks'", "[array]"]),
    (("rows = 32", ""), ["missing key 'rows'", "[array]"]),
    (("cols = 32", "cols = 32.5"), ["[array] cols", "positive integer", "float"]),
    (("cols = 32", "cols = true"), ["[array] cols", "positive integer", "bool"]),
    (("ifmap_kib = 256", "ifmap_kib = 0"), ["[sram] ifmap_kib", "> 0"]),
    (("bytes_per_cycle = 16", "bytes_per_cycle = -1.5"), ["[dram] bytes_per_cycle", "> 0"]),
    (('dataflow = "ws"', 'dataflow = "rs"'), ["[array] dataflow", "'os', 'ws', 'is'"]),
    (('requant_rounding = "double"', 'requant_rounding = "up"'), ["requant_rounding"]),
    (("fallback_us = 20.0", "fallback_us = 20.0\nfallback_cycles = 5"), ["exactly one", "fallback_us, fallback_cycles"]),
    (("fallback_us = 20.0", ""), ["exactly one", "neither"]),
    (("[dram]", "[dma]\nx = 1\n[dram]"), ["unknown section or key 'dma'"]),
    (('name = "default 32x32 ws int8"', ""), ["missing key 'name'"]),
    (("rows = 32", "rows = = 32"), ["not a valid TOML file"]),
])
def test_bad_profiles_name_the_key_and_file(tmp_path, edit, words):
    bad = tmp_path / "bad.toml"
    assert edit[0] in _GOOD
    bad.write_text(_GOOD.replace(edit[0], edit[1], 1))
    with pytest.raises(NpusimError) as e:
        hardware.load_profile(bad)
    for w in [str(bad)] + words:
        assert w in str(e.value)


def test_missing_profile_file(tmp_path):
    with pytest.raises(NpusimError, match="cannot read hardware profile"):
        hardware.load_profile(tmp_path / "nope.toml")


def test_energy_section_is_optional(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text(_GOOD.split("\n[energy]")[0])
    p = hardware.load_profile(f)
    assert p.energy is None
    g, shapes = V.conv_graph(layer(6, 6, 3, 3, 4, 8))
    assert hardware.estimate(g, shapes, p).energy_pj is None


# ---------------------------------------------------------------- compute cycles

def test_compute_cycles_by_hand():
    # 10x10 input, 3x3, 8 -> 20 channels: M = 64 pixels, K = 72, N = 20; 8x8 array.
    # os: Sr=64, Sc=20, T=72: 8*3 folds of 8+8-2+72 = 86 -> 2064
    # ws: Sr=72, Sc=20, T=64: 9*3 folds of 16+8-2+64 = 86 -> 2322
    # is: Sr=72, Sc=64, T=20: 9*8 folds of 16+8-2+20 = 42 -> 3024
    for df, want in (("os", 2064), ("ws", 2322), ("is", 3024)):
        assert hardware.gemm_compute_cycles(*hardware.gemm_view(64, 72, 20, df), 8, 8, df) == want
        assert conv_cost(layer(10, 10, 3, 3, 8, 20), profile(rows=8, cols=8, dataflow=df)).compute_cycles == want


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("L", [layer(10, 10, 3, 3, 8, 20), layer(12, 12, 1, 1, 16, 24), layer(9, 9, 3, 3, 3, 8, 2)])
def test_compute_cycles_equal_scalesim(L, dataflow):
    p = profile(rows=8, cols=8, dataflow=dataflow)
    assert conv_cost(L, p).compute_cycles == V.run_scalesim(L, p)["compute"]


@settings(max_examples=12, deadline=None)
@given(h=st.integers(3, 11), w=st.integers(3, 11), k=st.sampled_from([1, 2, 3]), c=st.integers(1, 9),
       m=st.integers(1, 20), stride=st.integers(1, 2), rows=st.sampled_from([4, 5, 8]),
       cols=st.sampled_from([4, 7, 8]), dataflow=st.sampled_from(["os", "ws", "is"]))
def test_compute_cycles_equal_scalesim_random(h, w, k, c, m, stride, rows, cols, dataflow):
    L = layer(h, w, k, k, c, m, stride)
    L["h"], L["w"] = (h - k) // stride * stride + k, (w - k) // stride * stride + k  # no unused rows
    p = profile(rows=rows, cols=cols, dataflow=dataflow)
    assert conv_cost(L, p).compute_cycles == V.run_scalesim(L, p)["compute"]


@pytest.mark.parametrize("dataflow, bw", [("os", 1), ("os", 2), ("is", 1), ("is", 2)])
def test_total_cycles_near_scalesim_when_memory_stalls(dataflow, bw):
    # 2 KiB SRAMs, 1-2 B/cycle: every operand streams from DRAM once in both models
    p = V.stall_profile(dataflow, 2, bw)
    ours, ss = conv_cost(V.FC, p), V.run_scalesim(V.FC, p)
    assert ss["stall"] > 10 * ss["compute"]  # memory-bound in SCALE-Sim too
    assert ours.total_cycles > 4 * ours.compute_cycles and ours.bound == "memory"
    # measured (scalesim 3.0.0): ours − SCALE-Sim = +3.08% (os, 1 B/cycle), +3.42% (os, 2), +1.08% (is, 1),
    # +0.63% (is, 2); both models are deterministic, so the bound sits just above the worst
    assert abs(ours.total_cycles - ss["total"]) <= 0.035 * ss["total"]


def test_output_sram_limit_chunks_the_stream():
    # ws, 8x8 array, M = 64 pixels, 72 x 20 GEMM as above; with a 1 KiB output SRAM, half holds
    # 512 B = 16 of 8 cols x 4 B partial sums: T = 64 runs as 4 chunks of 16 -> 4 * 27 folds of 38
    p = profile(rows=8, cols=8, dataflow="ws", output_kib=1)
    assert conv_cost(layer(10, 10, 3, 3, 8, 20), p).compute_cycles == 4 * 27 * (16 + 8 - 2 + 16)


def test_depthwise_packing_by_hand():
    # 10x10 input, 3x3 depthwise, 16 channels: 64 output pixels per channel, 9 taps; 32x32 array.
    L = layer(10, 10, 3, 3, 16, 16)
    g, shapes = V.conv_graph(L, group=16)
    cycles = {df: hardware.estimate(g, shapes, profile(dataflow=df)).layers[0].compute_cycles
              for df in ("os", "ws", "is")}
    # os: 2 pixel folds x 1 channel fold (16 channels in 16 columns), T = 16*9: 2 * (62 + 144)
    # ws: 32 // 9 = 3 channels per fold -> 6 folds streaming 64 pixels: 6 * (94 + 64)
    # is: 6 channel groups x 2 pixel folds, streaming g filters: 10 * (94 + 3) + 2 * (94 + 1)
    assert cycles == {"os": 412, "ws": 948, "is": 1160}
    per_channel = 16 * hardware.gemm_compute_cycles(*hardware.gemm_view(64, 9, 1, "ws"), 32, 32, "ws")
    assert cycles["ws"] < per_channel == 16 * (94 + 64)


# ---------------------------------------------------------------- bit widths

@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_bitserial_cycles_scale_with_weight_bits(dataflow):
    # 1 weight bit per PE per cycle: the streamed part of every fold takes w_bits cycles per step
    p = profile(dataflow=dataflow, weight_bits_per_cycle=1, act_bits_per_cycle=8)
    L = layer(18, 18, 3, 3, 16, 40)
    c8, c4, c2 = (conv_cost(L, p, w_dtype=d).compute_cycles for d in ("i8", "i4", "i2"))
    sr, sc, t = hardware.gemm_view(16 * 16, 16 * 9, 40, dataflow)
    folds = -(-sr // 32) * -(-sc // 32)
    skew = folds * hardware.fold_skew(32, 32, dataflow)
    assert (c8, c4, c2) == (skew + 8 * folds * t, skew + 4 * folds * t, skew + 2 * folds * t)
    assert c8 - skew == 2 * (c4 - skew) == 4 * (c2 - skew)
    bit_parallel = conv_cost(L, profile(dataflow=dataflow), w_dtype="i4").compute_cycles
    assert bit_parallel == skew + folds * t


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_weight_traffic_shrinks_with_weight_bits(dataflow):
    # large SRAMs: weights cross DRAM once, packed at their width; 16*8*3*3 = 1152 weights
    p = profile(dataflow=dataflow, weight_kib=4096, ifmap_kib=4096, output_kib=4096)
    L = layer(14, 14, 3, 3, 8, 16)
    dram = {d: conv_cost(L, p, w_dtype=d).dram_bytes for d in ("i8", "i4", "u2")}
    assert dram["i8"] - dram["i4"] == 1152 * 4 // 8
    assert dram["i8"] - dram["u2"] == 1152 * 6 // 8
    x_bytes, y_bytes = 8 * 14 * 14, 16 * 12 * 12
    assert dram["i8"] == x_bytes + 1152 + y_bytes


def test_activation_bits_pack_too():
    p = profile(dataflow="os", weight_kib=4096, ifmap_kib=4096, output_kib=4096)
    L = layer(14, 14, 3, 3, 8, 16)
    full = conv_cost(L, p).dram_bytes
    assert full - conv_cost(L, p, x_dtype="u4").dram_bytes == 8 * 14 * 14 // 2
    assert full - conv_cost(L, p, y_dtype="u4").dram_bytes == 16 * 12 * 12 // 2


# ---------------------------------------------------------------- memory and totals

def test_single_fold_double_buffering_by_hand():
    # 4x4 input, 1x1, 8 -> 8, os on 32x32: one fold of 32+32-2+8 = 70 cycles. DRAM at 16 B/cycle:
    # load x 128 B + w 64 B = 12 cycles before it, store 128 B = 8 cycles after it.
    c = conv_cost(layer(4, 4, 1, 1, 8, 8), profile(dataflow="os"))
    assert (c.compute_cycles, c.total_cycles, c.stall_cycles, c.dram_bytes) == (70, 90, 20, 320)
    assert c.utilization == pytest.approx(16 * 8 * 8 / (1024 * 90))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(3, 30), c=st.integers(1, 64), m=st.integers(1, 96), k=st.sampled_from([1, 3]),
       df=st.sampled_from(["os", "ws", "is"]), bw=st.sampled_from([0.5, 2, 16, 256]),
       kib=st.sampled_from([1, 8, 256]), depthwise=st.booleans(), wbits=st.sampled_from([1, 8]))
def test_total_bounds(h, c, m, k, df, bw, kib, depthwise, wbits):
    p = profile(dataflow=df, dram_bytes_per_cycle=bw, ifmap_kib=kib, weight_kib=kib, output_kib=kib,
                rows=8 if k == 3 and depthwise else 32, weight_bits_per_cycle=wbits)
    L = layer(h, h, k, k, c, c if depthwise else m)
    g, shapes = V.conv_graph(L, group=c if depthwise else 1)
    cost = hardware.estimate(g, shapes, p).layers[0]
    assert cost.macs == (h - k + 1) ** 2 * k * k * c * (1 if depthwise else m)
    assert cost.total_cycles >= max(cost.compute_cycles, cost.memory_cycles)
    assert cost.total_cycles <= cost.compute_cycles + cost.memory_cycles + 2
    assert 0 < cost.utilization <= 1
    assert cost.bound == ("memory" if cost.dram_bytes / bw > cost.compute_cycles else "compute")


@pytest.fixture(scope="module")
def digits():
    sess = InferenceSession(str(npusim_models.path("digits_qop_pc_u8")))
    vals = sess.run_all(random_feeds(sess.graph, 0))
    return sess, {k: v.shape for k, v in vals.items()}


def test_network_of_digits(digits):
    sess, shapes = digits
    net = hardware.estimate(sess.graph, shapes)
    ops = [c.op for c in net.layers]
    assert len(net.layers) == len(sess.graph.nodes) and ops.count("conv") == 4
    assert net.macs == 108864  # as `npusim inspect` counts them
    assert net.total_cycles == sum(c.total_cycles for c in net.layers)
    assert net.latency_us == pytest.approx(net.total_cycles / 800.0)
    for c in net.layers:
        if c.op == "requantize":  # fused into its conv: post-processing only, no DRAM
            assert c.dram_bytes == 0 and c.bound == "post"
        if c.op == "conv":
            assert c.bits.endswith("/u8")  # the conv writes the requantized type
    flatten = net.layers[ops.index("flatten")]
    assert (flatten.total_cycles, flatten.bound) == (0, "free")
    add = net.layers[ops.index("add")]  # 1x16x8x8 u8 + same -> same: 3072 B at 16 B/cycle
    assert (add.compute_cycles, add.memory_cycles, add.total_cycles, add.bound) == (32, 192, 192, "memory")
    mac_pj = sum(c.macs for c in net.layers) * 0.25
    assert net.energy_pj > mac_pj


def test_host_ops_cost_the_fallback():
    sess = InferenceSession(str(npusim_models.path("ppocr_cls_qop_pc_u8")))
    vals = sess.run_all(random_feeds(sess.graph, 0, {"x": (1, 3, 48, 192)}))
    net = hardware.estimate(sess.graph, {k: v.shape for k, v in vals.items()})
    host = [(c, n) for c, n in zip(net.layers, sess.graph.nodes) if n.op == "host"]
    fallback = [(c, n) for c, n in host if not n.attrs["elementwise"]]
    assert fallback and len(fallback) < len(host)
    for c, n in fallback:
        assert c.total_cycles == 16000 * len(n.attrs["ops"]) and c.bound == "host"
    for c, n in host:  # an elementwise island is a lookup table on the post-processor
        if n.attrs["elementwise"]:
            assert c.bound in ("post", "memory") and c.total_cycles < 16000


def test_missing_shape_is_an_error(digits):
    sess, shapes = digits
    some = dict(shapes)
    del some[sess.graph.nodes[3].outputs[0]]
    with pytest.raises(NpusimError, match="no concrete shape for tensor"):
        hardware.estimate(sess.graph, some)


# ---------------------------------------------------------------- npusim bench

def _bench_args(argv):
    p = argparse.ArgumentParser(prog="npusim")
    bench.register(p.add_subparsers(dest="command", required=True))
    return p.parse_args(["bench"] + argv)


def test_bench_text(capsys):
    args = _bench_args(["--runs", "1"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "dwconv2_quant" in out and "total: " in out and "simulator wall time (median of 1)" in out
    assert "onnxruntime" in out and "energy:" in out


def test_bench_json_and_plot(tmp_path, capsys):
    png = tmp_path / "chart.png"
    args = _bench_args(["--runs", "0", "--json", "--plot", str(png)])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out.split("\nwrote ")[0])
    assert report["wall"] is None and report["macs"] == 108864
    assert report["total_cycles"] == sum(r["total_cycles"] for r in report["layers"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]  # no temp file left behind


def test_bench_reports_agree(tmp_path, capsys):
    """Text, JSON, CSV and plot are rendered from the same records: every total agrees."""
    png, table = tmp_path / "chart.png", tmp_path / "layers.csv"
    args = _bench_args(["--runs", "0", "--csv", str(table)])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    args = _bench_args(["--runs", "0", "--json"])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out)
    kinds = report["cycles_by_kind"]
    assert list(kinds) == ["array compute", "post-processing", "host", "DRAM stall"]
    assert sum(kinds.values()) == report["total_cycles"] > 0
    line = next(ln for ln in text.splitlines() if ln.startswith("cycles by kind: "))
    shown = {k.strip(): int(v.replace(",", "")) for k, v in re.findall(r"([a-zA-Z -]+?) ([\d,]+) \(", line[16:])}
    assert shown == kinds
    assert f"total: {report['total_cycles']:,} cycles" in text
    rows = list(csv.DictReader(table.open()))
    layers = [r for r in report["layers"] if r["bound"] != "free"]
    assert [r["name"] for r in rows] == [r["name"] for r in layers]
    for field in ("macs", "compute_cycles", "memory_cycles", "stall_cycles", "total_cycles", "sram_bytes",
                  "dram_bytes"):
        assert [int(r[field]) for r in rows] == [r[field] for r in layers], field
    assert all(int(r["sram_bytes"]) > 0 for r in rows if r["op"] == "conv")
    for kind in kinds:
        assert sum(int(r["compute_cycles"]) for r in rows if r["unit"] == kind) + \
            (sum(int(r["stall_cycles"]) for r in rows) if kind == "DRAM stall" else 0) == kinds[kind]
    sess = InferenceSession(str(npusim_models.path("digits_qop_pc_u8")), mode="npu")  # as bench plans it
    net = hardware.estimate(sess.graph, {k: v.shape for k, v in sess.run_all(random_feeds(sess.graph, 0)).items()})
    assert bench.plot(net, png) == kinds
    assert isinstance(report["latency_us"], (int, float)) and len(repr(report["latency_us"])) <= 12


def test_bench_bad_profile_and_runs(tmp_path):
    bad = tmp_path / "hw.toml"
    bad.write_text(_GOOD.replace("rows = 32", "rows = 0"))
    args = _bench_args(["--hw", str(bad), "--runs", "0"])
    with pytest.raises(NpusimError, match=r"hw.toml: \[array\] rows = 0: must be > 0"):
        args.func(args)
    with pytest.raises(NpusimError, match="--runs -1"):
        args = _bench_args(["--runs", "-1"])
        args.func(args)


def test_bench_other_profile_changes_latency(digits):
    sess, shapes = digits
    slow = hardware.estimate(sess.graph, shapes, profile(dram_bytes_per_cycle=1))
    fast = hardware.estimate(sess.graph, shapes)
    assert slow.total_cycles > fast.total_cycles
    assert np.all([s.compute_cycles == f.compute_cycles for s, f in zip(slow.layers, fast.layers)])


@pytest.mark.parametrize("name,shape", [("ppocr_cls_qop_pc_u8", "x=1,3,48,192"), ("ppocr_det_qop_pc_u8", "x=1,3,160,160")])
def test_bench_reports_agree_on_the_ppocr_models(tmp_path, capsys, name, shape):
    """The text's kinds line, the JSON, the CSV and the plot give the same totals per kind."""
    path = str(npusim_models.path(name))
    table, png = tmp_path / "t.csv", tmp_path / "p.png"
    args = _bench_args([path, "--shape", shape, "--runs", "0", "--json", "--csv", str(table), "--plot", str(png)])
    assert args.func(args) == 0
    report = json.loads(capsys.readouterr().out.split("\nwrote ")[0])
    kinds = report["cycles_by_kind"]
    assert sum(kinds.values()) == report["total_cycles"] == sum(r["total_cycles"] for r in report["layers"]) > 0
    rows = list(csv.DictReader(table.open()))
    assert sum(int(r["total_cycles"]) for r in rows) == report["total_cycles"]
    assert sum(int(r["stall_cycles"]) for r in rows) == kinds["DRAM stall"]
    assert sum(int(r["sram_bytes"]) for r in rows) == sum(r["sram_bytes"] for r in report["layers"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    args = _bench_args([path, "--shape", shape, "--runs", "0"])
    assert args.func(args) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("cycles by kind: "))
    shown = {k.strip(): int(v.replace(",", "")) for k, v in re.findall(r"([a-zA-Z -]+?) ([\d,]+) \(", line[16:])}
    assert shown == kinds
