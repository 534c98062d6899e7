"""Mode "npu": the integer pipeline is bit-exact with the float64 fake-quantization reference
(npusim.fakequant) on the zoo models and on models npusim quantizes itself in every scheme and
weight width 2..8, with both rounding rules; layer by layer it is within 1 LSB of onnxruntime's
arithmetic with exact int32 sums (as on VNNI CPUs: npusim mode "ort" with ort_isa="avx512vnni",
itself bit-exact with onnxruntime there, test_verify_zoo / test_ort_isa; on CPUs without VNNI
onnxruntime's u8·s8 kernels saturate int16 pair sums, which an NPU does not); fast and golden
kernels agree; MobileNetV3 runs on the NPU except for the islands reported."""
import numpy as np
import pytest

import npusim
import npusim_models as zoo
from npusim.quantize import FeedsReader, quantize
from npusim.verify import verify

ZOO = ["digits_qop_pc_u8", "digits_qop_pt_s8", "digits_qdq_pc_u8", "ppocr_cls_qop_pc_u8", "ppocr_cls_qop_pt_u8",
       "ppocr_cls_qdq_pc_u8"]


@pytest.mark.parametrize("rounding", ["double", "single"])
@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_npu_bit_exact_with_reference_and_within_one_lsb_of_onnxruntime(name, rounding):
    r = verify(zoo.path(name), zoo.sample_inputs(name, 2, seed=3), mode="npu", rounding=rounding)
    assert r.reference and all(c.elements for c in r.reference)
    # tensors the reference computes with the runtime's own code are not counted as checked
    assert not {c.name for c in r.reference} & set(r.reference_shared)
    assert set(r.reference_shared.values()) <= {"host"}
    if name.startswith("ppocr_cls"):
        assert r.reference_shared  # its hard-sigmoid / division islands run on onnxruntime
    bad = [(c.name, c.exact_fraction) for c in r.reference if c.exact != c.elements]
    assert not bad, f"not bit-exact with the fake-quant reference: {bad[:5]}"
    assert r.bit_exact
    exact, n, worst = _layerwise_vs_exact_ort(zoo.path(name), zoo.sample_inputs(name, 2, seed=3), rounding)
    assert n > 0
    assert worst <= 1
    assert exact / n >= 0.99


def _layerwise_vs_exact_ort(path, feeds, rounding):
    """(exact elements, elements, max |diff|) of every quantized tensor of mode npu, each op fed the
    inputs onnxruntime's exact-sum arithmetic produced (differences do not propagate)."""
    from npusim.ir import is_quantized

    ref = npusim.InferenceSession(path, ort_isa="avx512vnni")
    npu = npusim.InferenceSession(path, mode="npu", rounding=rounding)
    names = [t for n in ref.graph.nodes for t in n.outputs if is_quantized(ref.graph.tensors[t].dtype)]
    exact = total = worst = 0
    for f in feeds:
        want = ref.run_all(f)
        given = {t: want[t] for t in names}
        got = npu.run_all(f, given=given)
        for t in names:
            if t in got:
                d = np.abs(got[t].astype(np.int64) - want[t].astype(np.int64))
                exact += int(np.count_nonzero(d == 0))
                total += d.size
                worst = max(worst, int(d.max(initial=0)))
    return exact, total, worst


@pytest.fixture(scope="module")
def calib():
    return zoo.sample_inputs("digits_float", 16, seed=0)


@pytest.mark.parametrize("wbits", range(2, 9))
@pytest.mark.parametrize("scheme", ["per-tensor", "per-channel", "wess"])
def test_quantized_digits_bit_exact_with_reference(tmp_path, calib, scheme, wbits):
    res = quantize(zoo.path("digits_float"), tmp_path / "q.onnx", FeedsReader(calib), scheme=scheme, wbits=wbits,
                   progress=False)
    feeds = zoo.sample_inputs("digits_float", 2, seed=5)
    for rounding in ("double", "single"):
        sess = npusim.InferenceSession(res.ir, mode="npu", rounding=rounding)
        if scheme == "wess":
            reqs = [n for n in sess.graph.nodes if n.op == "requantize" and "wess_shift" in n.attrs]
            assert reqs, "no layer carries WESS shifts"
        from npusim.fakequant import evaluate
        for f in feeds:
            got, want = sess.run_all(f), evaluate(sess.graph, f, rounding)
            for name, t in sess.graph.tensors.items():
                if name in want and t.dtype[0] in "ui" and t.dtype not in ("i32", "i64"):
                    np.testing.assert_array_equal(got[name], want[name], err_msg=f"{scheme} w{wbits} {rounding} {name}")


def test_wess_model_runs_bit_exact_fast_vs_golden_and_onnx_export_within_one_lsb(tmp_path, calib):
    res = quantize(zoo.path("digits_float"), tmp_path / "w.onnx", FeedsReader(calib), scheme="wess", wbits=6,
                   progress=False)
    feeds = zoo.sample_inputs("digits_float", 3, seed=6)
    fast = npusim.InferenceSession(res.onnx, mode="npu", kernels="fast")
    golden = npusim.InferenceSession(res.onnx, mode="npu", kernels="golden")
    for f in feeds:
        a, b = fast.run_all(f), golden.run_all(f)
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    r = verify(res.onnx, feeds, mode="npu", session=fast)
    assert r.bit_exact
    assert _layerwise_vs_exact_ort(res.onnx, feeds, "double")[2] <= 1


def test_mobilenetv3_runs_on_the_npu_except_reported_islands():
    path = zoo.path("ppocr_cls_qop_pc_u8")
    ort_mode = npusim.InferenceSession(path)
    npu = npusim.InferenceSession(path, mode="npu")
    islands = [n for n in ort_mode.graph.nodes if n.op == "host"]
    assert len(islands) >= 20
    # every elementwise island (hard-sigmoid, hard-swish's division) became a lookup table, and the
    # squeeze-excite pools moved to the NPU; what is left is reported, not hidden
    assert len(npu.host_fallback) <= 2
    assert sum(n.op == "global_avgpool" for n in npu.graph.nodes) > sum(n.op == "global_avgpool"
                                                                         for n in ort_mode.graph.nodes)
