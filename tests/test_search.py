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


def toy_model(path):
    """conv A (16x4x3x3, weights in {-1, 0, 1}: exact at every width) -> Relu -> conv B (2x16x1x1, sensitive)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    wa = rng.integers(-1, 2, size=(64, 4, 3, 3)).astype(np.float32) * 0.25
    wa[:, 0, 0, 0] = 0.25  # every channel reaches the max: per-channel scales all equal
    wb = rng.standard_normal((2, 64, 1, 1)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "wa"], ["a"], name="A", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["r"], name="relu"),
         helper.make_node("Conv", ["r", "wb"], ["y"], name="B")],
        "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])],
        [numpy_helper.from_array(wa, "wa"), numpy_helper.from_array(wb, "wb")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return [{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(8)]


def test_search_finds_the_known_optimum_and_the_quantized_model_fits(tmp_path):
    import json

    import npusim
    from npusim.cli import main
    from npusim.search import search
    from npusim.size import model_bits

    feeds = toy_model(tmp_path / "toy.onnx")
    big = 64 * 4 * 9  # weights of A
    # size at A = 2 bits and B = 8 bits, plus a margin smaller than one more bit on A
    r8 = search(tmp_path / "toy.onnx", feeds, budget_bits=10 ** 9, candidates=(2, 8), progress=False)
    full = next(x["cost"] for x in r8.rows if x["config"] == "uniform 8")
    budget = full - 6 * big + big // 2
    r = search(tmp_path / "toy.onnx", feeds, budget_bits=budget, candidates=(2, 3, 4, 6, 8), progress=False)
    assert r.bits == {"A": 2, "B": 8}
    searched = r.rows[0]
    assert searched["config"] == "searched" and searched["cost"] <= budget
    assert all(x["cost"] <= budget for x in r.rows)
    assert {x["config"] for x in r.rows} == {"searched", "uniform 2"}  # only uniform 2 fits as well
    assert searched["sqnr_db"] > next(x["sqnr_db"] for x in r.rows if x["config"] == "uniform 2") + 10
    assert r.sensitivity["B"][2] > r.sensitivity["A"][2]  # relative added noise: B is the sensitive one
    # the CLI writes the bits file; npusim quantize builds a model of exactly the predicted size
    import numpy as np
    np.savez(tmp_path / "calib.npz", x=np.concatenate([f["x"] for f in feeds]))
    out = tmp_path / "bits.json"
    assert main(["search", str(tmp_path / "toy.onnx"), "--calib", str(tmp_path / "calib.npz"),
                 "--budget-size", str(budget / 8192), "--candidates", "2,3,4,6,8", "-o", str(out),
                 "--no-progress"]) == 0
    assert json.loads(out.read_text()) == {"A": {"wbits": 2}, "B": {"wbits": 8}}
    assert main(["quantize", str(tmp_path / "toy.onnx"), "-o", str(tmp_path / "q.onnx"), "--calib",
                 str(tmp_path / "calib.npz"), "--layer-bits", str(out), "--no-progress"]) == 0
    assert model_bits(npusim.InferenceSession(tmp_path / "q.npz").graph) == searched["cost"]


def test_search_rejects_an_impossible_budget(tmp_path):
    import pytest

    from npusim.errors import NpusimError
    from npusim.search import search

    feeds = toy_model(tmp_path / "toy.onnx")
    with pytest.raises(NpusimError, match="no assignment"):
        search(tmp_path / "toy.onnx", feeds, budget_bits=1000, candidates=(2, 8), progress=False)
