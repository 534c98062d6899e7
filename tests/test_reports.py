"""Reports are stable: verify lists tensors in graph order, JSON numbers are rounded for people."""
import json
import os
import subprocess
import sys

import npusim_models as zoo
from npusim.report import round_sig


def test_round_sig():
    assert round_sig(5.999998929287467) == 6 and isinstance(round_sig(5.999998929287467), int)
    assert round_sig(0.123456789) == 0.123457
    assert round_sig(1234567.0) == 1234570 and round_sig(2.5) == 2.5 and round_sig(None) is None


def _verify_json(hashseed: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "npusim.cli", "verify", str(zoo.path(zoo.DEFAULT)), "--inputs", "1",
                          "--json", "--mode", "npu"],
                         env={**os.environ, "PYTHONHASHSEED": hashseed}, capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def test_verify_lists_tensors_in_graph_order_whatever_the_hash_seed():
    import npusim
    graph = npusim.InferenceSession(zoo.path(zoo.DEFAULT), mode="npu").graph
    order = [t for n in graph.nodes for t in n.outputs]
    a, b = _verify_json("1"), _verify_json("2")
    names = [c["name"] for c in a["layerwise"]]
    assert names == [c["name"] for c in b["layerwise"]] and len(names) > 3
    assert names == sorted(names, key=order.index)
