"""Mode "ort" per instruction-set family of onnxruntime's integer kernels (npusim.ortisa).

* Every case onnxruntime 1.32.0 recorded on an AVX2-only CPU (../shared/ort-fixtures/avx2) is
  reproduced bit for bit by `ort_isa="avx2"`, on any machine, with both kernel sets; the
  saturation-prone cases recorded on an AVX-512 VNNI CPU (tests/fixtures/ort_vnni, record.py
  there) by `ort_isa="avx512vnni"`.
* The fast pair-excess kernels equal the golden ones on saturating data (hypothesis).
* The live comparison with this CPU's onnxruntime is in test_ort_single_ops.py and the zoo tests
  (the session's default family is the host's).
"""
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

import npusim
from npusim import ortisa
from npusim.errors import NpusimError
from npusim_kernels.fast import pairsat as fast
from npusim_kernels.golden import pairsat as golden

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "ort-fixtures" / "avx2"
_MANIFEST = FIXTURES / "manifest.json"
CASES = json.loads(_MANIFEST.read_text())["cases"] if _MANIFEST.exists() else []
VNNI = Path(__file__).resolve().parent / "fixtures" / "ort_vnni"
VNNI_CASES = json.loads((VNNI / "manifest.json").read_text())["cases"]


def _run_fixture(case, kernels, folder=FIXTURES, isa="avx2"):
    z = np.load(folder / case["data"])
    feeds = {k[len("in__"):]: z[k] for k in z.files if k.startswith("in__")}
    sess = npusim.InferenceSession(str(folder / case["model"]), ort_isa=isa, kernels=kernels)
    outs = sess.run(list(case["outputs"]), feeds)
    return sess, [(o, z[f"out__default__{name}"]) for o, name in zip(outs, case["outputs"])]


@pytest.mark.parametrize("case", VNNI_CASES, ids=[c["name"] for c in VNNI_CASES])
def test_vnni_fixture_reproduced(case):
    sess, pairs = _run_fixture(case, "fast", VNNI, "avx512vnni")
    assert pairs and all(want.size for _, want in pairs)
    for got, want in pairs:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not CASES, reason=f"onnxruntime AVX2 fixtures not found at {FIXTURES}")
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_avx2_fixture_reproduced(case):
    sess, pairs = _run_fixture(case, "fast")
    assert sess.ort_isa == "avx2"
    assert pairs and all(want.size for _, want in pairs)
    for got, want in pairs:
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_fixtures_present_and_saturating():
    """The fixture set is there and most of it differs from exact arithmetic: a reproduction that
    ignored saturation would fail (this guards against comparing nothing)."""
    assert len(CASES) >= 100, f"expected the 120 onnxruntime AVX2 cases in {FIXTURES}"
    differ = [c for c in CASES if c["variants"]["default"].get("differs_from_exact")]
    assert len(differ) >= 60


@pytest.mark.skipif(not CASES, reason=f"onnxruntime AVX2 fixtures not found at {FIXTURES}")
@pytest.mark.parametrize("case", [c for c in CASES if c["name"].endswith("_stress") and "qlinearconv" in c["name"]
                                  or c["name"].startswith("matmulinteger_u8s8_K129_M7_N64")],
                         ids=lambda c: c["name"])
def test_avx2_fixture_golden_kernels(case):
    _, pairs = _run_fixture(case, "golden")
    for got, want in pairs:
        np.testing.assert_array_equal(got, want)


def test_exact_families_differ_from_avx2_on_saturating_case():
    """The same stress model under an exact family gives the exact-arithmetic reference, not the
    AVX2 output: the family choice reaches the kernels."""
    case = next(c for c in CASES if c["name"] == "qlinearconv_u8s8_3x3_s1_p1_c16_m32_stress")
    z = np.load(FIXTURES / case["data"])
    feeds = {k[len("in__"):]: z[k] for k in z.files if k.startswith("in__")}
    for isa in ("avxvnni", "avx512vnni", "amx"):
        (y,) = npusim.InferenceSession(str(FIXTURES / case["model"]), ort_isa=isa).run(None, feeds)
        np.testing.assert_array_equal(y, z["exact__y"])
        assert not np.array_equal(y, z["out__default__y"])


def test_host_family_and_choice():
    host = ortisa.host_ort_isa()
    assert host in ortisa.ORT_ISAS
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
        vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
        assert (host not in ortisa.SATURATING) == vnni
    sess = npusim.InferenceSession(npusim_models_default())
    assert sess.ort_isa == host
    with pytest.raises(NpusimError, match="unknown ort_isa 'sse2'"):
        npusim.InferenceSession(npusim_models_default(), ort_isa="sse2")
    with pytest.raises(NpusimError, match="mode 'ort' only"):
        npusim.InferenceSession(npusim_models_default(), mode="npu", ort_isa="avx2")


def npusim_models_default():
    import npusim_models
    return str(npusim_models.path(npusim_models.DEFAULT))


# ------------------------------------------------------------------ kernels: fast == golden
def _stress(rng, shape, kind):
    """u8 activations near 255, or s8 weights near ±127 whose sign flips in blocks of two along
    the last axis, with some uniform values mixed in."""
    if kind == "a":
        v = rng.integers(200, 256, shape)
    else:
        v = rng.integers(90, 128, shape) * np.where(rng.integers(0, 2, shape), 1, -1)
    mix = rng.random(shape) < 0.2
    uni = rng.integers(0, 256, shape) if kind == "a" else rng.integers(-128, 128, shape)
    return np.where(mix, uni, v).astype(np.uint8 if kind == "a" else np.int8)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 9), st.integers(1, 70), st.integers(1, 12),
       st.booleans(), st.booleans())
def test_matmul_pair_excess_fast_eq_golden(seed, m, k, n, vec_a, batched):
    rng = np.random.default_rng(seed)
    a = _stress(rng, (k,) if vec_a else ((2, m, k) if batched else (m, k)), "a")
    b = _stress(rng, (2, k, n) if batched and not vec_a else (k, n), "w")
    got, got_n = fast.matmul_pair_excess(a, b)
    want, want_n = golden.matmul_pair_excess(a, b)
    np.testing.assert_array_equal(got, want)
    assert got_n == want_n


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 3), st.sampled_from([1, 2, 3]), st.integers(1, 3),
       st.sampled_from([(1, 1), (3, 3), (2, 3), (5, 1)]), st.integers(1, 3), st.integers(0, 2), st.integers(1, 2),
       st.integers(0, 255))
def test_conv_pair_excess_fast_eq_golden(seed, cg, group, mg, kernel, stride, pad, dil, x_zp):
    assume(7 + 2 * pad - dil * (kernel[0] - 1) > 0 and 8 + 2 * pad + 1 - dil * (kernel[1] - 1) > 0)
    rng = np.random.default_rng(seed)
    x = _stress(rng, (2, cg * group, 7, 8), "a")
    w = _stress(rng, (mg * group, cg, *kernel), "w")
    geo = ((stride, stride), (pad, pad + 1, pad, 0), (dil, dil), group)
    got, got_n = fast.conv_pair_excess(x, x_zp, fast.pack_conv_pair_weights(w), *geo)
    want, want_n = golden.conv_pair_excess(x, x_zp, golden.pack_conv_pair_weights(w), *geo)
    np.testing.assert_array_equal(got, want)
    assert got_n == want_n


def test_pair_excess_hand_computed():
    """Pairs (k, k+1) for even k; an odd K leaves the last product alone; each pair saturates to
    int16: 255·127 + 255·127 = 64770 -> 32767 (excess −32003); 255·(−128)·2 = −65280 -> −32768."""
    a = np.array([[255, 255, 255, 255, 255]], np.uint8)
    b = np.array([[127], [127], [-128], [-128], [127]], np.int8)
    for k in (fast, golden):
        e, n = k.matmul_pair_excess(a, b)
        assert e.tolist() == [[(32767 - 64770) + (-32768 + 65280)]] and n == 2
        e, n = k.matmul_pair_excess(a[:, 1:], b[1:])  # pairs shift: (127, -128), (-128, 127): no saturation
        assert e.tolist() == [[0]] and n == 0


# ------------------------------------------------------------------ verify's saturation report
@pytest.mark.skipif(not CASES, reason=f"onnxruntime AVX2 fixtures not found at {FIXTURES}")
@pytest.mark.parametrize("name,acc_only", [("qlinearconv_u8s8_3x3_s1_p1_c16_m32_stress", False),
                                           ("qlinearmatmul_u8s8_K129_M7_N64_stress", False),
                                           ("matmulinteger_u8s8_K129_M7_N64", True)])
def test_verify_reports_saturation_as_recorded(name, acc_only):
    """verify's per-layer statistics equal what the fixture generator counted independently:
    saturating pairs, and how many outputs onnxruntime on the AVX2 CPU got wrong, by how much."""
    from npusim.report import verify_text
    from npusim.verify import verify

    case = next(c for c in CASES if c["name"] == name)
    z = np.load(FIXTURES / case["data"])
    feeds = {k[len("in__"):]: z[k] for k in z.files if k.startswith("in__")}
    model = str(FIXTURES / case["model"])
    for isa in ("avx2", "avx512vnni"):  # the statistics describe non-VNNI CPUs whichever family is emulated
        report = verify(model, [feeds], session=npusim.InferenceSession(model, ort_isa=isa))
        assert report.ort_isa == isa
        (sat,) = report.saturation
        pairs = case.get("saturating_pairs_hwc_even", case.get("saturating_pairs_k_even"))
        vs_exact = next(iter(case["variants"]["default"]["vs_exact"].values()))
        assert sat.pairs == pairs > 0
        if acc_only:  # an int32 output: the accumulator is the output
            assert (sat.out_changed, sat.max_out_diff) == (None, None)
            assert (sat.acc_changed, sat.max_acc_diff) == (vs_exact["n_diff"], vs_exact["max_abs_diff"])
        else:
            assert (sat.out_changed, sat.max_out_diff) == (vs_exact["n_diff"], vs_exact["max_abs_diff"])
        text = verify_text(report)
        assert f"emulated: {isa}" in text and str(pairs) in text


def test_cli_verify_ort_isa_json(capsys):
    """`npusim verify --ort-isa F --json` on the default model: the family is recorded, the four
    u8·s8 layers are listed, the first conv saturates (83 pairs for these inputs: see README);
    with this CPU's own family it is bit-exact (exit 0)."""
    import json as _json

    from npusim.cli import main

    host = ortisa.host_ort_isa()
    assert main(["verify", "--ort-isa", host, "--json"]) == 0
    d = _json.loads(capsys.readouterr().out)
    assert d["ort_isa"] == host and d["bit_exact"]
    sat = {s["layer"]: s for s in d["saturation"]}
    assert len(sat) == 4 and sat["conv1_quant"]["pairs"] > 0
    assert sum(s["pairs"] > 0 for s in sat.values()) == 1
    with pytest.raises(SystemExit):
        main(["verify", "--ort-isa", "sse2"])
