"""Float fidelity: tensor matching by onnxruntime's quantizer names, SQNR and top-1 agreement
against an independent computation, and SQNR falling with the bit width."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import npusim
import npusim_models as zoo
from npusim.fidelity import dequantize, fidelity, fidelity_text, match_tensors
from npusim.quantize import quantize

DIGITS = zoo.path("digits_float")
# quantized tensors of the digits zoo models and the float tensor each stands for
QOP_MATCH = {"input_quantized": "input", "z1_quantized": "a1", "z2_quantized": "a2", "z3_quantized": "z3",
             "r_quantized": "a3", "pooled_quantized": "pooled", "z4_quantized": "a4", "gap_quantized": "gap",
             "flat_quantized": "flat", "logits_quantized": "logits"}  # Relu folded: z1 stands for relu1's a1


def run(model, feeds_list):
    """Exact int32 sums (onnxruntime on VNNI CPUs), so the SQNR thresholds hold on every CPU."""
    sess = npusim.InferenceSession(str(model), ort_isa="avx512vnni")
    return sess, [sess.run_all(f) for f in feeds_list]


def test_match_by_quantizer_names_and_source_nodes():
    float_model = onnx.load(DIGITS)
    assert match_tensors(run(zoo.path("digits_qop_pc_u8"), [])[0].graph, float_model) == QOP_MATCH
    qdq = match_tensors(run(zoo.path("digits_qdq_pc_u8"), [])[0].graph, float_model)
    assert qdq == {f"{f}_QuantizeLinear_Output": f for f in QOP_MATCH.values()}
    s8 = match_tensors(run(zoo.path("digits_qdq_pc_s8"), [])[0].graph, float_model)  # renamed qdq_s8_to_u8_*
    assert {"input", "z3", "pooled", "a4", "logits"} <= set(s8.values())


def test_sqnr_and_top1_against_independent_computation():
    feeds = zoo.sample_inputs("digits_float", 6, seed=11)
    sess, values = run(zoo.path("digits_qop_pc_u8"), feeds)
    report = fidelity(values, sess.graph, DIGITS, feeds)
    ref = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    f = np.concatenate([ref.run(None, x)[0] for x in feeds]).astype(np.float64)
    q = np.concatenate([v["logits"] for v in values]).astype(np.float64)
    (out,) = report.outputs
    assert out.name == "logits" and out.elements == 60
    # rel 1e-4: onnxruntime fuses the float model differently when intermediates are outputs
    assert out.sqnr_db == pytest.approx(10 * np.log10(np.sum(f ** 2) / np.sum((f - q) ** 2)), rel=1e-4)
    assert out.top1_agreement == np.mean(f.argmax(1) == q.argmax(1))
    # one intermediate by hand: the first conv's output against relu1's output
    z1 = {t.name: t for t in report.tensors}["z1_quantized"]
    a1 = ort.InferenceSession(_exposed("a1"), providers=["CPUExecutionProvider"])
    fa = np.concatenate([a1.run(["a1"], x)[0] for x in feeds]).astype(np.float64)
    qa = np.concatenate([dequantize(v["z1_quantized"], sess.graph.tensors["z1_quantized"].quant) for v in values])
    want = 10 * np.log10(np.sum(fa ** 2) / np.sum((fa - qa) ** 2))
    assert z1.float_name == "a1" and z1.sqnr_db == pytest.approx(want, rel=1e-4)
    text = fidelity_text(report)
    assert "z1_quantized" in text and "top1_agreement" in text


def _exposed(name):
    from npusim.frontend import with_extra_outputs

    return with_extra_outputs(onnx.load(DIGITS), [name])


def test_sqnr_high_at_8_bits_lower_at_4(tmp_path):
    feeds = zoo.sample_inputs("digits_float", 8, seed=3)
    calib = zoo.sample_inputs("digits_float", 16, seed=1)
    reports = {}
    for bits in (8, 4):
        it = iter(calib)
        reader = type("R", (), {"get_next": lambda self: next(it, None)})()
        res = quantize(DIGITS, tmp_path / f"q{bits}.onnx", reader, wbits=bits, abits=bits, progress=False)
        sess, values = run(res.ir, feeds)
        reports[bits] = fidelity(values, sess.graph, DIGITS, feeds)
    r8, r4 = reports[8], reports[4]
    assert len(r8.tensors) == len(r4.tensors) == 10
    assert all(np.isfinite(t.sqnr_db) and t.sqnr_db > 25 for t in r8.tensors)  # measured 31..56 dB
    assert r8.outputs[0].sqnr_db > 25 and r8.outputs[0].top1_agreement == 1.0
    for t8, t4 in zip(r8.tensors, r4.tensors):
        assert t4.sqnr_db < t8.sqnr_db - 10  # about 6 dB per bit
    assert np.isfinite(r4.outputs[0].sqnr_db) and r4.outputs[0].sqnr_db < r8.outputs[0].sqnr_db - 10
