"""The CLI's success paths (issue 14): verify's report, exit codes 0 and 1, --float-model;
inspect --save-ir round trip; search under a latency budget. Each asserts real values."""
import json

import numpy as np

import npusim
import npusim_models as zoo
from npusim import ortisa
from npusim.cli import main
from npusim.ir import load

DIGITS_Q = str(zoo.path("digits_qop_pc_u8"))
OTHER_FAMILY = "avx512vnni" if ortisa.host_ort_isa() in ortisa.SATURATING else "avx2"


def test_verify_text_exit_0_and_exit_1(capsys):
    """Exit 0 with this CPU's family (bit-exact); exit 1 when emulating the other family on the
    first conv's saturating pairs, and the report says which tensors differ."""
    assert main(["verify", DIGITS_Q]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("BIT-EXACT") and "30        100.0000%" in out
    assert main(["verify", DIGITS_Q, "--ort-isa", OTHER_FAMILY]) == 1
    out = capsys.readouterr().out
    assert out.rstrip().endswith("NOT BIT-EXACT") and "z1_quantized" in out and "note: this CPU's" in out


def test_verify_float_model_reports_sqnr_and_top1(capsys):
    assert main(["verify", DIGITS_Q, "--float-model", str(zoo.path("digits_float")), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    (out,) = d["fidelity"]["outputs"]
    # random inputs (not digits): the SQNR is low but finite; test_fidelity checks its value
    assert out["name"] == "logits" and np.isfinite(out["sqnr_db"]) and 0 <= out["top1_agreement"] <= 1
    assert out["elements"] == 30 and len(d["fidelity"]["tensors"]) == 10
    assert d["bit_exact"] is True


def test_inspect_save_ir_round_trip(tmp_path, capsys):
    ir_path = tmp_path / "digits.npz"
    assert main(["inspect", DIGITS_Q, "--save-ir", str(ir_path)]) == 0
    text = capsys.readouterr().out
    assert "conv1_quant" in text and f"wrote {ir_path}" in text
    feeds = zoo.sample_inputs("digits_qop_pc_u8", 1, seed=2)[0]
    from_onnx = npusim.InferenceSession(DIGITS_Q).run(None, feeds)[0]
    from_ir = npusim.InferenceSession(str(ir_path)).run(None, feeds)[0]
    np.testing.assert_array_equal(from_ir, from_onnx)
    assert [n.op for n in load(ir_path).nodes] == [n.op for n in npusim.InferenceSession(DIGITS_Q).graph.nodes]


def test_search_under_a_latency_budget(tmp_path, capsys):
    """`npusim search --budget-latency` on the bit-serial profile, with a budget halfway between
    the all-2-bit and the all-8-bit model's latency: the assignment it writes fits the budget
    (recomputed through the API), and the all-8-bit model does not."""
    from pathlib import Path

    from npusim.hardware import load_profile
    from npusim.search import search
    from test_search import toy_model

    feeds = toy_model(tmp_path / "toy.onnx")
    hw = Path(npusim.__file__).parent / "profiles" / "bitserial.toml"
    profile = load_profile(hw)
    wide = search(tmp_path / "toy.onnx", feeds, budget_us=1e9, profile=profile, candidates=(2, 8), progress=False)
    lat = {x["config"]: x["cost"] for x in wide.rows}
    assert lat["uniform 2"] < lat["uniform 8"]
    budget = (lat["uniform 2"] + lat["uniform 8"]) / 2
    np.savez(tmp_path / "calib.npz", x=np.concatenate([f["x"] for f in feeds]))
    out = tmp_path / "bits.json"
    assert main(["search", str(tmp_path / "toy.onnx"), "--calib", str(tmp_path / "calib.npz"), "--budget-latency",
                 str(budget), "--hw", str(hw), "--candidates", "2,8", "-o", str(out), "--no-progress"]) == 0
    assert f"latency <= {budget}" in capsys.readouterr().out
    bits = {k: v["wbits"] for k, v in json.loads(out.read_text()).items()}
    assert set(bits) == {"A", "B"} and set(bits.values()) <= {2, 8} and bits != {"A": 8, "B": 8}
    r = search(tmp_path / "toy.onnx", feeds, budget_us=budget, profile=profile, candidates=(2, 8), progress=False)
    assert r.bits == bits and r.rows[0]["cost"] <= budget
