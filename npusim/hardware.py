"""The NPU hardware model: cycles, DRAM traffic, utilization and energy of every layer.

A profile (TOML, `load_profile`) describes a systolic array of rows x cols PEs with an output-,
weight- or input-stationary dataflow, three double-buffered SRAMs, one DRAM interface, a
post-processing unit and the cost of an op that falls back to the host. `estimate(graph,
shapes, profile)` maps every conv/matmul/gemm onto the array the way SCALE-Sim does (its im2col
GEMM view: M output pixels, K = C/g*kh*kw, N output channels) and prices every other op.
Timing depends on shapes and bit widths only, never on values. Formulas and the comparison
with SCALE-Sim: docs/hardware_model.md.

Compute (SCALE-Sim v3's compute model, exact): the GEMM becomes Sr x Sc x T

    os: Sr = M, Sc = N, T = K      fold = rows + cols - 2 + T*passes
    ws: Sr = K, Sc = N, T = M      fold = 2*rows + cols - 2 + T*passes
    is: Sr = K, Sc = M, T = N      fold = 2*rows + cols - 2 + T*passes

    compute = ceil(Sr / rows) * ceil(Sc / cols) * fold

where passes = ceil(w_bits / weight_bits_per_cycle) * ceil(a_bits / act_bits_per_cycle) is 1
on a bit-parallel PE. Folds run column fold outer, row fold inner (SCALE-Sim's order). This is
SCALE-Sim's count whenever ws/is partial sums (cols x T int32) fit in half the output SRAM;
otherwise npusim cuts T into chunks that fit (SCALE-Sim does not model that limit), and every
chunk pays the fill/drain skew again.

Memory: each fold loads the operand tiles it does not already hold (a tile is kept across the
inner loop, a whole operand that fits in half its SRAM is loaded once) and stores its outputs;
weights and activations are packed at their bit widths. Double buffering overlaps the loads
of fold i+1 and the stores of fold i-1 with the compute of fold i; what does not fit is stall.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from .errors import NpusimError
from .ir import bits
from .report import round_sig

DATAFLOWS = ("os", "ws", "is")
ROUNDINGS = ("double", "single")
ACC_BITS = 32  # partial sums in the output SRAM are int32

_POS_INT, _POS_NUM = "positive integer", "positive number"
# section -> key -> kind; kind is _POS_INT, _POS_NUM, or a tuple of allowed strings
_SCHEMA = {
    "array": {"rows": _POS_INT, "cols": _POS_INT, "dataflow": DATAFLOWS, "clock_mhz": _POS_NUM,
              "weight_bits_per_cycle": _POS_INT, "act_bits_per_cycle": _POS_INT},
    "sram": {"ifmap_kib": _POS_NUM, "weight_kib": _POS_NUM, "output_kib": _POS_NUM},
    "dram": {"bytes_per_cycle": _POS_NUM},
    "postproc": {"elems_per_cycle": _POS_NUM, "requant_rounding": ROUNDINGS},
    "host": {"fallback_us": _POS_NUM, "fallback_cycles": _POS_INT},
    "energy": {"mac_pj": _POS_NUM, "sram_pj_per_byte": _POS_NUM, "dram_pj_per_byte": _POS_NUM},
}
_OPTIONAL_SECTIONS = ("energy",)
_FREE_OPS = ("reshape", "flatten", "squeeze", "unsqueeze", "identity")


@dataclass(frozen=True)
class Energy:
    mac_pj: float  # one 8x8-bit MAC; a w x a-bit MAC costs mac_pj * w * a / 64
    sram_pj_per_byte: float
    dram_pj_per_byte: float


@dataclass(frozen=True)
class Profile:
    name: str
    rows: int
    cols: int
    dataflow: str
    clock_mhz: float
    weight_bits_per_cycle: int
    act_bits_per_cycle: int
    ifmap_kib: float
    weight_kib: float
    output_kib: float
    dram_bytes_per_cycle: float
    postproc_elems_per_cycle: float
    requant_rounding: str
    host_cycles: int  # one host-fallback op, in array cycles
    energy: Energy | None = None
    source: str = "<built in>"

    def passes(self, w_bits: int, a_bits: int) -> int:
        """Cycles one PE spends on one w_bits x a_bits MAC."""
        return -(-w_bits // self.weight_bits_per_cycle) * -(-a_bits // self.act_bits_per_cycle)


def _check(source, section, key, value, kind):
    where = f"{source}: [{section}] {key}"
    if isinstance(kind, tuple):
        if value not in kind:
            raise NpusimError(f"{where} = {value!r}: expected one of {', '.join(map(repr, kind))}")
        return value
    ok_type = int if kind == _POS_INT else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type):
        raise NpusimError(f"{where} = {value!r}: expected a {kind}, got {type(value).__name__}")
    if not value > 0:
        raise NpusimError(f"{where} = {value!r}: must be > 0")
    return value


def load_profile(path=None) -> Profile:
    """A Profile from a TOML file; None reads the shipped npusim/profiles/default.toml.

    Every key of `_SCHEMA` is required (the [energy] table is optional, [host] takes exactly one
    of fallback_us and fallback_cycles); an unknown key or section, a wrong type or a
    non-positive size is an NpusimError naming the key and the file.
    """
    if path is None:
        source, text = "npusim/profiles/default.toml", (resources.files("npusim") / "profiles" /
                                                         "default.toml").read_text()
    else:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise NpusimError(f"{source}: cannot read hardware profile ({e.strerror or e})") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise NpusimError(f"{source}: not a valid TOML file ({e})") from None
    name = doc.pop("name", None)
    if not isinstance(name, str):
        raise NpusimError(f"{source}: missing key 'name' (a string)")
    for sec in doc:
        if sec not in _SCHEMA:
            raise NpusimError(f"{source}: unknown section or key {sec!r}; expected name, "
                              + ", ".join(f"[{s}]" for s in _SCHEMA))
    v = {}
    for sec, keys in _SCHEMA.items():
        table = doc.get(sec)
        if table is None and sec in _OPTIONAL_SECTIONS:
            continue
        if not isinstance(table, dict):
            raise NpusimError(f"{source}: missing section [{sec}]")
        for key in table:
            if key not in keys:
                raise NpusimError(f"{source}: unknown key {key!r} in [{sec}]; expected {', '.join(keys)}")
        for key, kind in keys.items():
            if key in table:
                v[sec, key] = _check(source, sec, key, table[key], kind)
            elif sec != "host":
                raise NpusimError(f"{source}: missing key {key!r} in [{sec}]")
    host = [k for k in ("fallback_us", "fallback_cycles") if ("host", k) in v]
    if len(host) != 1:
        raise NpusimError(f"{source}: [host] needs exactly one of fallback_us and fallback_cycles, got "
                          + (", ".join(host) or "neither"))
    a = lambda k: v["array", k]  # noqa: E731
    host_cycles = (v["host", "fallback_cycles"] if host[0] == "fallback_cycles"
                   else math.ceil(v["host", "fallback_us"] * a("clock_mhz")))
    energy = Energy(*(v["energy", k] for k in _SCHEMA["energy"])) if ("energy", "mac_pj") in v else None
    return Profile(name, a("rows"), a("cols"), a("dataflow"), float(a("clock_mhz")), a("weight_bits_per_cycle"),
                   a("act_bits_per_cycle"), v["sram", "ifmap_kib"], v["sram", "weight_kib"], v["sram", "output_kib"],
                   v["dram", "bytes_per_cycle"], v["postproc", "elems_per_cycle"], v["postproc", "requant_rounding"],
                   host_cycles, energy, source)


# ---------------------------------------------------------------- compute (SCALE-Sim's model)

def gemm_view(m: int, k: int, n: int, dataflow: str) -> tuple[int, int, int]:
    """(Sr, Sc, T) of an M x K by K x N GEMM on the array, as SCALE-Sim maps it."""
    return {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[dataflow]


def fold_skew(rows: int, cols: int, dataflow: str) -> int:
    """Fill and drain cycles of one fold: SCALE-Sim's os folds stream T + rows + cols - 2 cycles;
    ws and is first load the stationary operand (rows more cycles)."""
    return rows + cols - 2 if dataflow == "os" else 2 * rows + cols - 2


def gemm_compute_cycles(sr: int, sc: int, t: int, rows: int, cols: int, dataflow: str, passes: int = 1) -> int:
    """ceil(Sr/rows) * ceil(Sc/cols) * (skew + T * passes): SCALE-Sim's compute cycles of a layer
    (its report prints this minus one: the index of the last cycle) when passes = 1."""
    return -(-sr // rows) * -(-sc // cols) * (fold_skew(rows, cols, dataflow) + t * passes)


def _sizes(total, tile):
    """Fold sizes covering `total` in tiles of `tile`: [tile, ..., tile, rest]."""
    full, rest = divmod(total, tile)
    return np.array([tile] * full + ([rest] if rest else []), dtype=np.int64)


@dataclass
class _Folds:
    """Per-fold arrays, in execution order: compute cycles, DRAM bytes loaded and stored,
    SRAM bytes the array reads/writes."""
    compute: np.ndarray
    load: np.ndarray
    store: np.ndarray
    sram: np.ndarray


def _grid(sr, sc, rows, cols):
    """r, c (rows/cols used), first/last row fold and first column fold of every fold."""
    fr, fc = _sizes(sr, rows), _sizes(sc, cols)
    nr, nc = len(fr), len(fc)
    idx = np.tile(np.arange(nr), nc)
    return np.tile(fr, nc), np.repeat(fc, nr), idx == 0, idx == nr - 1, np.repeat(np.arange(nc) == 0, nr)


def _cat(folds: list) -> _Folds:
    return _Folds(*(np.concatenate([getattr(f, k) for f in folds]).astype(np.float64)
                    for k in ("compute", "load", "store", "sram")))


def _dense_folds(m, k, n, xb, wb, yb, in_ratio, p: Profile) -> _Folds:
    """Folds of a dense M x K x N GEMM. in_ratio: unique input bytes / im2col bytes (<= 1), the
    share of an im2col tile that really comes from DRAM (overlapping windows are fetched once).

    os keeps each r x c output tile in the array. ws and is accumulate r-row partial sums of a
    cols x T output block over the row folds in the output SRAM; when cols * T int32 partial
    sums do not fit in half of it, T is cut into chunks that do (each chunk runs all its folds,
    and reloads the operand tiles it needs), so partial sums never travel to DRAM.
    """
    df = p.dataflow
    sr, sc, t = gemm_view(m, k, n, df)
    half_x, half_w, half_o = (getattr(p, f"{s}_kib") * 512 for s in ("ifmap", "weight", "output"))
    skew, passes = fold_skew(p.rows, p.cols, df), p.passes(wb, xb)
    if df == "os":  # r pixels x c channels; tiles: x r x K, w K x c; out r x c
        r, c, first_r, _, first_c = _grid(sr, sc, p.rows, p.cols)
        w_tile = k * c * wb / 8
        x_load = np.where(first_c | (m * k * xb / 8 * in_ratio > half_x), r * k * xb / 8 * in_ratio, 0)
        w_load = np.where(first_r | (w_tile > half_w), w_tile, 0)
        out = r * c * yb / 8
        return _cat([_Folds(np.full(r.shape, skew + t * passes), x_load + w_load, out,
                            r * k * xb / 8 + w_tile + out)])
    chunk = max(1, int(half_o // (p.cols * ACC_BITS / 8)))
    parts = []
    for tj in _sizes(t, chunk):
        r, c, _, last_r, first_c = _grid(sr, sc, p.rows, p.cols)
        out = np.where(last_r, c * tj * yb / 8, 0)
        if df == "ws":  # weights r (K) x c (N) stationary; x streams tj pixels x r
            x_tile, w_load = tj * r * xb / 8, r * c * wb / 8
            x_load = np.where(first_c | (tj * k * xb / 8 * in_ratio > half_x), x_tile * in_ratio, 0)
            sram = x_tile + w_load + out
        else:  # is: inputs r (K) x c (M) stationary; weights r x tj stream
            w_tile = r * tj * wb / 8
            x_load = r * c * xb / 8 * in_ratio
            w_load = np.where(first_c | (k * tj * wb / 8 > half_w), w_tile, 0)
            sram = r * c * xb / 8 + w_tile + out
        parts.append(_Folds(np.full(r.shape, skew + tj * passes), x_load + w_load, out, sram))
    return _cat(parts)


def _depthwise_folds(ch, m, taps, xb, wb, yb, in_ratio, p: Profile) -> _Folds:
    """Folds of a depthwise conv: `ch` independent GEMMs M x taps x 1, packed block-diagonally.

    os: a fold holds r pixels x g channels (g <= cols, one channel per column) and streams the
        g*taps products of its channels (T = g*taps; a column's weights are zero outside its own
        channel's taps).
    ws, is: g = rows // taps channels share a fold (each in taps rows; ws puts channel j in
        column j and streams the M pixels, is keeps g*taps x c pixel inputs and streams the g
        per-channel filters). A channel with more taps than rows folds over rows, g = 1.
    """
    df = p.dataflow
    passes, skew = p.passes(wb, xb), fold_skew(p.rows, p.cols, df)
    if df == "os":
        r, g, *_ = _grid(m, ch, p.rows, p.cols)
        t = g * taps
        x_tile = r * t * xb / 8
        return _Folds((skew + t * passes).astype(np.float64), x_tile * in_ratio + t * wb / 8, r * g * yb / 8.0,
                      x_tile + t * wb / 8 + r * g * yb / 8)
    if taps > p.rows:  # one channel per fold, its taps folded over the rows
        groups, k_rows = _sizes(ch, 1), _sizes(taps, p.rows)
    else:
        groups = _sizes(ch, max(1, min(ch, p.rows // taps, p.cols if df == "ws" else ch)))
        k_rows = None
    comp, load, store, sram = [], [], [], []
    for g in groups:
        kr = k_rows if k_rows is not None else [g * taps]
        for c in (_sizes(m, p.cols) if df == "is" else [m]):
            for j, rr in enumerate(kr):
                last = j == len(kr) - 1
                if df == "ws":  # rr x g weights, M pixels streamed, out M x g
                    t, x_t, o = m, m * rr * xb / 8, m * g
                else:  # rr x c inputs, g filters streamed, out c x g
                    t, x_t, o = g, rr * c * xb / 8, c * g
                w_t = rr * g * wb / 8 if k_rows is None else rr * wb / 8
                o_b = o * yb / 8 if last else 0.0
                comp.append(skew + t * passes)
                load.append(x_t * in_ratio + w_t)
                store.append(o_b)
                sram.append(x_t + w_t + o_b)
    a = lambda v: np.asarray(v, np.float64)  # noqa: E731
    return _Folds(a(comp), a(load), a(store), a(sram))


def _overlap(f: _Folds, bw: float) -> float:
    """Cycles of the folds with double buffering: load(0), then for each fold i the longer of its
    compute and the DRAM transfer of load(i+1) + store(i-1), then store(last)."""
    nxt = np.append(f.load[1:], 0.0)
    prev = np.insert(f.store[:-1], 0, 0.0)
    return f.load[0] / bw + float(np.maximum(f.compute, (nxt + prev) / bw).sum()) + f.store[-1] / bw


# ---------------------------------------------------------------- layers and the network

@dataclass(frozen=True)
class LayerCost:
    name: str
    op: str
    in_shape: tuple
    out_shape: tuple
    bits: str  # "x/w/y" element types, "-" where there is none
    macs: int
    compute_cycles: int
    memory_cycles: int  # DRAM bytes / bytes_per_cycle, overlapped or not
    total_cycles: int
    utilization: float  # MAC-cycles done / (PEs x total cycles)
    bound: str  # "compute", "memory", "post", "host" or "free"
    dram_bytes: int
    sram_bytes: int  # bytes the array or the post-processor reads and writes in the SRAMs
    energy_pj: float | None = None

    @property
    def stall_cycles(self) -> int:
        return self.total_cycles - self.compute_cycles

    @property
    def unit(self) -> str:
        """The unit that is busy for compute_cycles: "array compute" (a layer with MACs), "host"
        (a fallback op) or "post-processing" (requantize, elementwise, pools, tables, data moves)."""
        return "array compute" if self.macs else "host" if self.bound == "host" else "post-processing"


@dataclass(frozen=True)
class NetworkCost:
    profile: Profile
    layers: list = field(default_factory=list)

    @property
    def total_cycles(self) -> int:
        return sum(c.total_cycles for c in self.layers)

    @property
    def latency_us(self) -> float:
        return self.total_cycles / self.profile.clock_mhz

    @property
    def macs(self) -> int:
        return sum(c.macs for c in self.layers)

    @property
    def energy_pj(self) -> float | None:
        return None if self.profile.energy is None else sum(c.energy_pj for c in self.layers)

    def cycles_by_kind(self) -> dict[str, int]:
        """The network's cycles split by what they are spent on, the one split every report shows:
        each layer's compute_cycles go to its unit (LayerCost.unit), the rest of its total
        (stall_cycles, DRAM traffic the overlap did not hide) to "DRAM stall". The values add up
        to total_cycles exactly."""
        kinds = dict.fromkeys(CYCLE_KINDS, 0)
        for c in self.layers:
            kinds[c.unit] += c.compute_cycles
            kinds["DRAM stall"] += c.stall_cycles
        return kinds

    def to_dict(self) -> dict:
        rows = [{**c.__dict__, "utilization": round_sig(c.utilization), "stall_cycles": c.stall_cycles,
                 "latency_us": round_sig(c.total_cycles / self.profile.clock_mhz),
                 "energy_pj": round_sig(c.energy_pj)}
                for c in self.layers]
        return {"profile": self.profile.name, "profile_file": self.profile.source, "layers": rows,
                "total_cycles": self.total_cycles, "latency_us": round_sig(self.latency_us), "macs": self.macs,
                "cycles_by_kind": self.cycles_by_kind(), "energy_pj": round_sig(self.energy_pj)}


CYCLE_KINDS = ("array compute", "post-processing", "host", "DRAM stall")


def _ceil(x: float) -> int:
    """Round up, ignoring float noise below 1e-6 (tile byte counts carry fractional ratios)."""
    return math.ceil(round(x, 6))


def _nbytes(shape, dtype) -> float:
    return int(np.prod(shape)) * bits(dtype) / 8


def _conv_layer(node, shape, dt, requant_dt, p: Profile):
    """(macs, folds) of a conv: dense, grouped (g sequential GEMMs) or depthwise."""
    x, w, y = shape[node.inputs[0]], shape[node.inputs[1]], shape[node.outputs[0]]
    xb, wb, yb = bits(dt(node.inputs[0])), bits(dt(node.inputs[1])), bits(requant_dt)
    group = int(node.attrs.get("group", 1))
    m = int(y[0] * np.prod(y[2:]))
    taps = int(np.prod(w[2:]))
    k = int(w[1]) * taps
    in_ratio = min(1.0, int(np.prod(x)) / (m * k * group))
    macs = m * k * int(w[0])
    if group > 1 and group == x[1] == w[0]:
        return macs, _depthwise_folds(group, m, taps, xb, wb, yb, in_ratio, p)
    f = _dense_folds(m, k, int(w[0]) // group, xb, wb, yb, in_ratio, p)
    return macs, _Folds(*(np.tile(a, group) for a in (f.compute, f.load, f.store, f.sram)))


def _conv_transpose_layer(node, shape, dt, requant_dt, p: Profile):
    """(macs, folds) of a transposed conv as the array runs it: per group one GEMM of the N·H·W
    input pixels by C/group inputs by (M/group)·kH·kW kernel taps (every input pixel meets every
    tap once). The overlap-add of the taps into the output (stride < kernel) is not costed."""
    x, w = shape[node.inputs[0]], shape[node.inputs[1]]
    group = int(node.attrs.get("group", 1))
    m, k, n = int(x[0] * np.prod(x[2:])), int(x[1]) // group, int(np.prod(w[1:]))
    xb, wb = bits(dt(node.inputs[0])), bits(dt(node.inputs[1]))
    f = _dense_folds(m, k, n, xb, wb, bits(requant_dt), 1.0, p)
    return m * k * n * group, _Folds(*(np.tile(a, group) for a in (f.compute, f.load, f.store, f.sram)))


def _matmul_layer(node, shape, dt, requant_dt, p: Profile):
    a, y = shape[node.inputs[0]], shape[node.outputs[0]]
    k = int(a[-2] if node.op == "gemm" and int(node.attrs.get("transA", 0)) else a[-1])
    m, n = int(np.prod(y[:-1])), int(y[-1])
    xb, wb = bits(dt(node.inputs[0])), bits(dt(node.inputs[1]))
    return m * k * n, _dense_folds(m, k, n, xb, wb, bits(requant_dt), 1.0, p)


def estimate(graph, shapes: dict, profile: Profile | None = None) -> NetworkCost:
    """The cost of every node of `graph` on `profile` (default: the shipped profile).

    shapes: tensor name -> concrete shape (e.g. {k: v.shape for k, v in session.run_all(feeds)}).
    A conv/matmul/gemm whose only reader is a requantize writes the requantized type (the NPU
    fuses them); that requantize then costs post-processing cycles and no DRAM traffic.
    """
    p = profile or load_profile()
    dt = lambda name: graph.tensors[name].dtype  # noqa: E731
    readers = {}
    for n in graph.nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    fused = set()
    layers = []
    for node in graph.nodes:
        try:
            ins = [tuple(int(d) for d in shapes[i]) for i in node.inputs if i]
            outs = [tuple(int(d) for d in shapes[o]) for o in node.outputs]
        except KeyError as e:
            raise NpusimError(f"node {node.name!r} ({node.op}): no concrete shape for tensor {e.args[0]!r}") from None
        x_dt = dt(node.inputs[0]) if node.inputs and node.inputs[0] else "-"
        y_dt = dt(node.outputs[0])
        array_op = node.op in ("conv", "conv_transpose", "matmul", "gemm")
        bits_s = f"{x_dt}/{dt(node.inputs[1]) if array_op else '-'}/{y_dt}"
        macs, folds, energy = 0, None, None
        if array_op:
            rd = readers.get(node.outputs[0], [])
            out_dt = y_dt
            if len(rd) == 1 and rd[0].op == "requantize":
                fused.add(rd[0].name)
                out_dt = dt(rd[0].outputs[0])
                bits_s = bits_s.rsplit("/", 1)[0] + "/" + out_dt
            layer = {"conv": _conv_layer, "conv_transpose": _conv_transpose_layer}.get(node.op, _matmul_layer)
            macs, folds = layer(node, shapes, dt, out_dt, p)
            compute = float(folds.compute.sum())
            dram = float(folds.load.sum() + folds.store.sum())
            total = _overlap(folds, p.dram_bytes_per_cycle)
            wb, xb = bits(dt(node.inputs[1])), bits(x_dt)
            used = macs * p.passes(wb, xb)
            bound = "memory" if dram / p.dram_bytes_per_cycle > compute else "compute"
            sram = float(folds.sram.sum())
            if p.energy:
                energy = (macs * p.energy.mac_pj * wb * xb / 64 + sram * p.energy.sram_pj_per_byte
                          + dram * p.energy.dram_pj_per_byte)
        elif node.op == "host" and not node.attrs.get("elementwise"):
            # an elementwise island of one 8-bit tensor is a lookup table on the NPU (mode npu
            # compiles it at plan time): it falls through to the post-processor below
            compute = total = float(p.host_cycles * len(node.attrs["ops"]))
            dram, sram, used, bound = 0.0, 0.0, 0, "host"
            energy = 0.0 if p.energy else None
        elif node.op in _FREE_OPS:
            compute = total = dram = sram = 0.0
            used, bound = 0, "free"
            energy = 0.0 if p.energy else None
        else:  # requantize, elementwise, pooling, lookup tables, data movement: the post-processor
            elems = max(int(np.prod(s)) for s in ins + outs) if ins or outs else 0
            compute = math.ceil(elems / p.postproc_elems_per_cycle)
            dram = 0.0 if node.name in fused else (
                sum(_nbytes(s, dt(i)) for s, i in zip(ins, [i for i in node.inputs if i]) if i not in graph.constants)
                + sum(_nbytes(s, dt(o)) for s, o in zip(outs, node.outputs)))
            total = max(compute, dram / p.dram_bytes_per_cycle)
            used, bound = 0, "post" if total == compute else "memory"
            sram = dram  # what crosses DRAM is staged through the SRAMs once
            if p.energy:
                energy = dram * (p.energy.dram_pj_per_byte + p.energy.sram_pj_per_byte)
        total_c = _ceil(total)
        data_in = [s for s, i in zip(ins, [i for i in node.inputs if i]) if i not in graph.constants] or ins
        layers.append(LayerCost(node.source or node.name, node.op, data_in[0] if data_in else (), outs[0] if outs else (),
                                bits_s, int(macs), _ceil(compute), _ceil(dram / p.dram_bytes_per_cycle),
                                total_c, used / (p.rows * p.cols * total_c) if total_c else 0.0, bound,
                                _ceil(dram), _ceil(sram), energy))
    return NetworkCost(p, layers)

