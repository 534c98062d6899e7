"""Per-layer bitwidth search under a size or latency budget (seed 001's search; seed 000's
comparison against uniform bitwidths at the same budget).

The solver is exact: choosing one bitwidth per layer to minimise the summed distortion
Σ d[l][b_l] subject to Σ cost[l][b_l] ≤ budget is a multiple-choice knapsack, solved by dynamic
programming over Pareto fronts — after each layer only the (cost, distortion) states that no
other state beats on both are kept, so the optimum is never pruned and integer costs (bits,
cycles) need no discretisation. For ≤ 100 layers and ≤ 8 choices per layer the fronts stay small.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import NpusimError


@dataclass(frozen=True)
class Choice:
    bits: int
    cost: int          # bits of the layer's parameters, or cycles: an integer
    distortion: float  # what the layer at this width adds to the output error (lower is better)


def solve(layers: list[list[Choice]], budget: int) -> tuple[list[int], int, float] | None:
    """-> (index of the chosen Choice per layer, total cost, total distortion), or None when even
    the cheapest assignment exceeds `budget`. Ties in distortion go to the lower cost."""
    front = [(0, 0.0, ())]  # (cost, distortion, choices so far), sorted by cost
    for li, choices in enumerate(layers):
        if not choices:
            raise NpusimError(f"layer {li} has no candidate bitwidth")
        states = [(c + ch.cost, d + ch.distortion, picks + (k,))
                  for c, d, picks in front for k, ch in enumerate(choices) if c + ch.cost <= budget]
        if not states:
            return None
        states.sort(key=lambda s: (s[0], s[1]))
        front = []
        for s in states:  # keep a state only if it has lower distortion than every cheaper one
            if not front or s[1] < front[-1][1]:
                front.append(s)
    cost, dist, picks = min(front, key=lambda s: (s[1], s[0]))
    return list(picks), cost, dist


# ---------------------------------------------------------------- measuring and searching

@dataclass
class SearchResult:
    budget: str                 # "size <= N bits" or "latency <= N us"
    layers: list[str]           # float weight-layer names, in model order
    candidates: tuple
    bits: dict                  # the chosen {layer: wbits}
    sensitivity: dict           # {layer: {bits: relative output noise that layer adds at bits}}
    rows: list = field(default_factory=list)  # searched and uniform configurations, measured

    def layer_bits(self) -> dict:
        """The per-layer bitwidth file `npusim quantize --layer-bits` accepts."""
        return {name: {"wbits": b} for name, b in self.bits.items()}

    def to_dict(self) -> dict:
        return {"budget": self.budget, "bits": self.bits, "rows": self.rows,
                "sensitivity": {k: {str(b): v for b, v in d.items()} for k, d in self.sensitivity.items()}}


def _outputs(sess, feeds_list) -> np.ndarray:
    return np.concatenate([np.concatenate([np.asarray(o, np.float64).reshape(-1) for o in sess.run(None, f)])
                           for f in feeds_list])


class _Simulator:
    """Quantize-once, simulate-many: a calibrated model, its float outputs on the calibration
    feeds, and the npu-mode output SQNR of any weight-bitwidth assignment."""

    def __init__(self, float_model, feeds_list, scheme, abits, calibration, progress):
        import onnxruntime as ort

        from .quantize import FeedsReader, calibrate

        self.feeds = feeds_list
        self.abits = abits
        self.cal = calibrate(float_model, FeedsReader(feeds_list), scheme=scheme, calibration=calibration,
                             progress=progress)
        self.names = [n.name for n in self.cal.layers]
        ref = ort.InferenceSession(self.cal.model.SerializeToString(), providers=["CPUExecutionProvider"])
        self.ref = np.concatenate([np.concatenate([np.asarray(o, np.float64).reshape(-1) for o in ref.run(None, f)])
                                   for f in feeds_list])

    def graph(self, bits: dict):
        from .session import load_graph

        qmodel, _, _ = self.cal.apply_bits(8, self.abits, {n: {"wbits": b, "abits": self.abits}
                                                          for n, b in bits.items()})
        return load_graph(qmodel.SerializeToString())

    def outputs(self, bits: dict) -> np.ndarray:
        from .session import InferenceSession

        return _outputs(InferenceSession(self.graph(bits), mode="npu"), self.feeds)

    def sqnr(self, bits: dict) -> float:
        from .fidelity import sqnr_db

        return sqnr_db(self.ref, self.outputs(bits))


def _layer_costs(sim: _Simulator, candidates, latency_profile):
    """-> (cost[layer][bits], fixed): each weight layer's parameter bits (or cycles on the
    profile) at each candidate width, and what the rest of the model costs regardless."""
    from .size import layer_sizes, model_bits

    base = sim.graph({})
    by_weight = {f"{n.input[1]}_quantized": n.name for n in sim.cal.layers}
    if latency_profile is None:
        sizes = {by_weight[s.weight]: s for s in layer_sizes(base) if s.weight in by_weight}
        cost = {name: {b: s.bits_at(b) for b in candidates} for name, s in sizes.items()}
        return cost, model_bits(base) - sum(s.total_bits for s in sizes.values())
    from .hardware import estimate
    from .session import InferenceSession

    shapes = {k: v.shape for k, v in InferenceSession(base, mode="npu").run_all(sim.feeds[0]).items()}
    cost, fixed = {}, 0
    for i, b in enumerate(candidates):
        g = sim.graph({n: b for n in sim.names})
        for node, lc in zip(g.nodes, estimate(g, shapes, latency_profile).layers):
            name = by_weight.get(node.inputs[1]) if node.op in ("conv", "matmul", "gemm") else None
            if name:
                cost.setdefault(name, {})[b] = lc.total_cycles
            elif i == 0:
                fixed += lc.total_cycles
    return cost, fixed


class BitwidthSearch:
    """A calibrated model and its per-layer sensitivity (measured once), searched under any
    number of budgets (`solve`). `search()` is the one-budget shorthand.

    1. Sensitivity, measured on the simulator (mode "npu"): with one layer at each candidate
       width and every other layer at 8 bits, the output noise that layer adds, measured
       against the all-8-bit model's outputs on the calibration feeds and relative to their
       power: d[l][b] = Σ (y8 − y_{l@b})² / Σ y8². (Measured against the float outputs
       instead, one layer's small contribution drowns in the 8-bit model's own noise.)
    2. The distortions are assumed additive across layers.
    3. `solve` picks the assignment of least summed distortion within the budget (exact).
    4. The chosen assignment and every uniform width that fits the same budget are quantized and
       measured (output SQNR against the float model), so the search is judged on what the
       simulator computes.
    """

    def __init__(self, float_model, feeds_list, *, candidates=(2, 3, 4, 5, 6, 8), scheme="per-channel", abits=8,
                 calibration="minmax", progress=True):
        from tqdm import tqdm

        candidates = tuple(sorted(set(int(b) for b in candidates)))
        if not candidates or candidates[0] < 2 or candidates[-1] > 8:
            raise NpusimError(f"candidate bitwidths must lie in 2..8, got {candidates}")
        self.candidates = candidates
        self.sim = sim = _Simulator(float_model, feeds_list, scheme, abits, calibration, progress)
        y8 = sim.outputs({})
        power = float(np.sum(y8 ** 2)) or 1.0
        self.distortion = {n: {8: 0.0} for n in sim.names}  # relative added noise power
        jobs = [(n, b) for n in sim.names for b in candidates if b != 8]
        for n, b in tqdm(jobs, desc="sensitivity", unit="run", disable=not progress):
            self.distortion[n][b] = float(np.sum((y8 - sim.outputs({n: b})) ** 2)) / power

    def solve(self, budget_bits=None, budget_us=None, profile=None) -> SearchResult:
        """budget_bits: model size in bits (npusim.size); budget_us: latency on `profile`
        (npusim.hardware; default the shipped profile). Exactly one of them."""
        from .hardware import load_profile

        if (budget_bits is None) == (budget_us is None):
            raise NpusimError("give exactly one budget: size or latency")
        sim, candidates = self.sim, self.candidates
        latency = None if budget_us is None else (profile if profile is not None else load_profile())
        cost, fixed = _layer_costs(sim, candidates, latency)
        budget = budget_bits if latency is None else int(budget_us * latency.clock_mhz)
        what = f"size <= {budget_bits} bits" if latency is None else f"latency <= {budget_us} us"
        names = [n for n in sim.names if n in cost]
        layers = [[Choice(b, cost[n][b], self.distortion[n][b]) for b in candidates] for n in names]
        picked = solve(layers, budget - fixed)
        if picked is None:
            raise NpusimError(f"no assignment of {candidates} bits fits {what}: the smallest needs "
                              f"{fixed + sum(min(c.cost for c in ls) for ls in layers)}")
        chosen = {n: layers[i][k].bits for i, (n, k) in enumerate(zip(names, picked[0]))}
        result = SearchResult(what, names, candidates, chosen, {n: self.distortion[n] for n in names})
        unit = (lambda c: c) if latency is None else (lambda c: c / latency.clock_mhz)
        configs = [("searched", chosen)] + [(f"uniform {b}", {n: b for n in names}) for b in candidates]
        for label, bits in configs:
            total = fixed + sum(cost[n][bits[n]] for n in names)
            if label != "searched" and total > budget:
                continue
            result.rows.append({"config": label, "cost": unit(total), "sqnr_db": sim.sqnr(bits), "layer_bits": bits,
                                "bits": "".join(str(bits[n]) for n in names)})
        return result


def search(float_model, feeds_list, *, budget_bits=None, budget_us=None, profile=None,
           candidates=(2, 3, 4, 5, 6, 8), scheme="per-channel", abits=8, calibration="minmax",
           progress=True) -> SearchResult:
    """Per-layer weight bitwidths with the best output SQNR under a size or latency budget
    (see BitwidthSearch)."""
    if (budget_bits is None) == (budget_us is None):
        raise NpusimError("give exactly one budget: size or latency")
    return BitwidthSearch(float_model, feeds_list, candidates=candidates, scheme=scheme, abits=abits,
                          calibration=calibration, progress=progress).solve(budget_bits, budget_us, profile)


def search_text(r: SearchResult) -> str:
    from .report import format_table

    rows = [{"config": x["config"], "cost": f"{x['cost']:,.6g}", "output SQNR dB": f"{x['sqnr_db']:.2f}",
             "bits per layer": x["bits"]} for x in r.rows]
    return (f"budget: {r.budget}; layers (in order): {', '.join(r.layers)}\n\n"
            + format_table(rows, ["config", "cost", "output SQNR dB", "bits per layer"]))


def register(subparsers):
    p = subparsers.add_parser("search", help="per-layer weight bitwidths with the best fidelity under a budget")
    p.add_argument("model", help="float ONNX model")
    p.add_argument("--calib", required=True, metavar="DATA.npz",
                   help="calibration inputs: arrays keyed by input name, first axis = samples")
    b = p.add_mutually_exclusive_group(required=True)
    b.add_argument("--budget-size", type=float, metavar="KB", help="model size budget in KiB (npusim.size)")
    b.add_argument("--budget-latency", type=float, metavar="US", help="latency budget in microseconds")
    p.add_argument("--hw", metavar="PROFILE.toml", help="hardware profile for the latency budget (default: shipped)")
    p.add_argument("--candidates", default="2,3,4,5,6,8", help="candidate weight bitwidths (default 2,3,4,5,6,8)")
    p.add_argument("--scheme", default="per-channel", choices=["per-tensor", "per-channel", "wess"],
                   help="weight scales of every candidate (default per-channel)")
    p.add_argument("--abits", type=int, default=8, help="activation bits of every candidate (default 8)")
    p.add_argument("-o", "--output", required=True, metavar="BITS.json",
                   help="write the per-layer bitwidths here (npusim quantize --layer-bits reads it)")
    p.add_argument("--no-progress", action="store_true", help="no calibration progress bar")
    p.set_defaults(func=cmd_search)


def cmd_search(args) -> int:
    import json

    from .hardware import load_profile
    from .ir import write_atomic
    from .quantize import NpzReader, load_float

    model = load_float(args.model)
    reader = NpzReader(args.calib, [i.name for i in model.graph.input
                                    if i.name not in {t.name for t in model.graph.initializer}])
    feeds = list(iter(reader.get_next, None))
    try:
        cands = [int(c) for c in args.candidates.split(",")]
    except ValueError:
        raise NpusimError(f"--candidates {args.candidates!r}: expected comma-separated integers") from None
    r = search(args.model, feeds, budget_bits=None if args.budget_size is None else int(args.budget_size * 8192),
               budget_us=args.budget_latency, profile=load_profile(args.hw) if args.hw else None,
               candidates=cands, scheme=args.scheme, abits=args.abits, progress=not args.no_progress)
    print(search_text(r))
    text = json.dumps(r.layer_bits(), indent=2) + "\n"
    write_atomic(args.output, lambda tmp: open(tmp, "w").write(text))
    print(f"wrote {args.output}")
    return 0
