"""Per-layer bitwidth search under a size or latency budget (seed 001's search; seed 000's
comparison against uniform bitwidths at the same budget).

The solver is exact: choosing one bitwidth per layer to minimise the summed distortion
Σ d[l][b_l] subject to Σ cost[l][b_l] ≤ budget is a multiple-choice knapsack, solved by dynamic
programming over Pareto fronts — after each layer only the (cost, distortion) states that no
other state beats on both are kept, so the optimum is never pruned and integer costs (bits,
cycles) need no discretisation. For ≤ 100 layers and ≤ 8 choices per layer the fronts stay small.
"""
from __future__ import annotations

from dataclasses import dataclass

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
