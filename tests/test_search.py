"""The bitwidth solver is exact (brute force agrees on random instances) and never exceeds its budget."""
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from npusim.search import Choice, solve


def _brute(layers, budget):
    best = None
    for picks in itertools.product(*[range(len(c)) for c in layers]):
        cost = sum(layers[i][k].cost for i, k in enumerate(picks))
        dist = sum(layers[i][k].distortion for i, k in enumerate(picks))
        if cost <= budget and (best is None or (dist, cost) < (best[2], best[1])):
            best = (list(picks), cost, dist)
    return best


@st.composite
def instances(draw):
    n = draw(st.integers(1, 5))
    layers = []
    for _ in range(n):
        k = draw(st.integers(1, 4))
        layers.append([Choice(b, draw(st.integers(0, 50)), draw(st.floats(0, 10, allow_nan=False)))
                       for b in range(k)])
    budget = draw(st.integers(0, 200))
    return layers, budget


@settings(max_examples=300, deadline=None)
@given(instances())
def test_solver_matches_brute_force_and_respects_budget(inst):
    layers, budget = inst
    got, want = solve(layers, budget), _brute(layers, budget)
    if want is None:
        assert got is None
        return
    picks, cost, dist = got
    assert cost <= budget
    assert cost == sum(layers[i][k].cost for i, k in enumerate(picks))
    assert abs(dist - want[2]) <= 1e-9 * max(1.0, abs(want[2]))


def test_known_optimum():
    # three layers; the big layer loses nothing at 2 bits, the small ones are sensitive:
    # under a budget between "big at 2 bits" and "all at 8 bits" the optimum is (2, 8, 8)
    big = [Choice(2, 2000, 0.0), Choice(4, 4000, 0.0), Choice(8, 8000, 0.0)]
    small = [Choice(2, 20, 5.0), Choice(4, 40, 1.0), Choice(8, 80, 0.01)]
    picks, cost, dist = solve([big, small, small], budget=2200)
    assert [big[picks[0]].bits, small[picks[1]].bits, small[picks[2]].bits] == [2, 8, 8]
    assert cost == 2160 and abs(dist - 0.02) < 1e-12
    assert solve([big, small], budget=2019) is None
