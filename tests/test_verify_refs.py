"""`npusim verify` against the references other than onnxruntime (npusim.verify_refs, issue 15
item 6): a QONNX model against qonnx's executor (execute_onnx on cleanup_model), an npusim IR
file against its own golden run. A broken kernel must fail either check (exit 1, as a model that
is not bit-exact with onnxruntime does: tests/test_verdicts.py), a missing qonnx is one error
line naming the package (exit 2), and a float output is "within float rounding" only within
its stated bound.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import npusim_kernels.fast.bitserial
import npusim_kernels.fast.conv
import npusim_kernels.fast.matmul
import npusim_models as zoo
from npusim import NpusimError
from npusim.cli import main
from npusim.verify import VerifyReport, verify
from npusim.verify_compare import Compare
from npusim.verify_refs import FloatRounding

D = "qonnx.custom_op.general"
ZOO = Path(__file__).resolve().parents[2] / "shared" / "qonnx-zoo"
DIGITS_Q = str(zoo.path(zoo.DEFAULT))


def _qonnx_mlp(path, head=True):
    """x (1, 16) -> Quant 8b s=2^-3 -> MatMul by 4b weights (s=2^-4) -> Quant 4b s=2^-2 (`h_q`)
    -> MatMul by 4b weights (s=2^-3) -> y, float (without the head, h_q is the output).
    Power-of-two scales and small accumulators: qonnx's float32 arithmetic is exact, so npusim
    must equal it bit for bit."""
    rng = np.random.default_rng(7)
    inits, nodes = [], []

    def const(name, v):
        inits.append(numpy_helper.from_array(np.asarray(v, np.float32), name))
        return name

    def quant(x, y, scale, bits):
        nodes.append(helper.make_node("Quant", [x, const(f"{y}_s", scale), const(f"{y}_z", 0.0),
                                                const(f"{y}_b", bits)], [y], domain=D, name=f"q_{y}",
                                      signed=1, narrow=0, rounding_mode="ROUND"))
        return y

    quant("x", "x_q", 2.0 ** -3, 8)
    quant(const("w1", rng.integers(-8, 8, (16, 8)) * 2.0 ** -4), "w1_q", 2.0 ** -4, 4)
    nodes.append(helper.make_node("MatMul", ["x_q", "w1_q"], ["h"], name="mm1"))
    quant("h", "h_q", 2.0 ** -2, 4)
    if head:
        quant(const("w2", rng.integers(-8, 8, (8, 4)) * 2.0 ** -3), "w2_q", 2.0 ** -3, 4)
        nodes.append(helper.make_node("MatMul", ["h_q", "w2_q"], ["y"], name="mm2"))
    out = helper.make_tensor_value_info("y" if head else "h_q", TensorProto.FLOAT, [1, 4 if head else 8])
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])], [out],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(D, 1)])
    m.ir_version = 8
    onnx.save(m, path)
    return str(path)


def _feeds(n):
    return [{"x": np.random.default_rng(s).uniform(-8, 8, (1, 16)).astype(np.float32)} for s in range(n)]


def _off_by_one(monkeypatch, module, name):
    """The fast kernel `module.name` with 1 added to its result: npusim no longer equals the reference."""
    original = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: original(*a) + 1)


def _off_by_one_bound(monkeypatch, module, name):
    """The kernels that the fast `module.name` binds (a `*_for`) with 1 added to their result."""
    original = getattr(module, name)

    def bind(*a, **kw):
        kernel = original(*a, **kw)
        return None if kernel is None else lambda *x: kernel(*x) + 1
    monkeypatch.setattr(module, name, bind)


def test_qonnx_model_bit_exact_with_qonnx_api_and_cli(tmp_path, capsys):
    path = _qonnx_mlp(tmp_path / "mlp.onnx")
    report = verify(path, _feeds(3))
    assert report.against == "qonnx" and report.verdict == "bit-exact" and report.bit_exact
    assert [(c.name, c.elements, c.exact) for c in report.outputs] == [("y", 12, 12)]
    assert [(c.name, c.elements, c.exact) for c in report.intermediates] == [("x_q", 48, 48), ("h_q", 24, 24)]
    assert report.float_outputs == []
    assert main(["verify", path, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["against"] == "qonnx" and d["verdict"] == "bit-exact" and d["bit_exact"] is True
    assert d["outputs"][0]["name"] == "y" and d["outputs"][0]["max_lsb"] == 0 and d["outputs"][0]["elements"] == 12
    assert d["intermediates"] == {"compared": 2, "exact": 2, "not_exact": []} and d["float_outputs"] == []
    assert d["not_compared"] == {}
    assert main(["verify", path, "--mode", "npu"]) == 0
    out = capsys.readouterr().out
    assert "against qonnx's executor" in out and "activation quantizer codes: 2 compared, 2 bit-exact" in out
    assert out.rstrip().endswith("BIT-EXACT")


def test_qonnx_model_with_a_broken_kernel_fails(tmp_path, capsys, monkeypatch):
    path = _qonnx_mlp(tmp_path / "mlp.onnx")
    # both GEMM kernels: engine "auto" runs these low-bit matmuls on the bit-serial one
    _off_by_one(monkeypatch, npusim_kernels.fast.matmul, "matmul_acc")
    _off_by_one(monkeypatch, npusim_kernels.fast.bitserial, "bitserial_matmul_acc")
    report = verify(path, _feeds(2))
    assert report.verdict == "not bit-exact" and not report.bit_exact
    # the accumulators are one unit off: y by one step of its scale 2^-3 * 2^-2 (all elements),
    # h_q by a code where the float sum crossed a rounding step (its scale is 2^-2 / 2^-7 units)
    assert report.outputs[0].exact == 0 and report.outputs[0].max_lsb == 1.0
    assert main(["verify", path, "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"] == "not bit-exact" and d["float_outputs"][0]["name"] == "y"
    # y dequantizes mm2's accumulator: it has a float32 rounding bound (K = 8 products), far below
    # the one step 2^-5 of y's scale the broken accumulator puts it off by
    f = d["float_outputs"][0]
    assert f["within"] is False and f["max_abs"] >= 2.0 ** -5 and 0 < f["bound"] < 1e-4


def test_quantizer_output_that_is_the_graph_output(tmp_path):
    """h_q is the graph output: npusim dequantizes its codes `h_q::q`, which are compared as codes."""
    report = verify(_qonnx_mlp(tmp_path / "mlp.onnx", head=False), _feeds(2))
    assert report.verdict == "bit-exact" and report.not_compared == {}
    assert [(c.name, c.elements, c.exact) for c in report.outputs] == [("h_q", 16, 16)]
    assert [(c.name, c.elements, c.exact) for c in report.intermediates] == [("x_q", 32, 32), ("h_q::q", 16, 16)]


def test_a_failure_of_qonnx_is_named_as_the_reference_s(tmp_path, capsys, monkeypatch):
    import qonnx.core.onnx_exec

    def fails(*args, **kwargs):
        raise ValueError("cannot execute\nsecond line")

    monkeypatch.setattr(qonnx.core.onnx_exec, "execute_onnx", fails)
    path = _qonnx_mlp(tmp_path / "mlp.onnx")
    assert main(["verify", path]) == 2
    out = capsys.readouterr()
    assert out.err == f"npusim: error: {path}: qonnx's executor failed on the model: ValueError: cannot execute\n"


def test_without_qonnx_verify_names_the_package(tmp_path, capsys, monkeypatch):
    path = _qonnx_mlp(tmp_path / "mlp.onnx")
    monkeypatch.setitem(sys.modules, "qonnx.util.cleanup", None)
    with pytest.raises(NpusimError, match=r"qonnx is not installed \(pip install qonnx\)"):
        verify(path, _feeds(1))
    assert main(["verify", path]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.splitlines()) == 1 and "pip install qonnx" in out.err


def test_float_rounding_verdict_only_within_the_bound():
    def report(f):
        return VerifyReport("m", "ort", 1, against="qonnx", outputs=[Compare("y", 4, 3, 2.0)],
                            intermediates=[Compare("h", 8, 8)], float_outputs=[f])

    a, b = np.float32([1, 2, 3, 4]), np.float32([1, 2, 3, 4 + 2 * 2.0 ** -21])  # 2 ULP of 4
    f = FloatRounding("y")
    f.add(a, b, 1e-5)
    assert f.within and f.max_ulp == 2 and f.max_abs == 2 * 2.0 ** -21
    assert report(f).verdict == "within float rounding"
    f.add(a, b, 1e-7)  # a second input set whose bound the difference exceeds
    assert not f.within and report(f).verdict == "not bit-exact"
    g = FloatRounding("y")
    g.add(a, b, None)
    assert not g.within and report(g).verdict == "not bit-exact"


def test_ir_file_verified_against_its_golden_run(tmp_path, capsys, monkeypatch):
    ir_path = str(tmp_path / "digits.npz")
    assert main(["inspect", DIGITS_Q, "--save-ir", ir_path]) == 0
    capsys.readouterr()
    assert main(["verify", ir_path, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["against"] == "golden" and d["verdict"] == "bit-exact" and d["input_sets"] == 3
    assert d["outputs"][0]["name"] == "logits" and d["outputs"][0]["elements"] == 30
    assert d["intermediates"]["compared"] == d["intermediates"]["exact"] >= 10  # every integer op's tensors
    _off_by_one_bound(monkeypatch, npusim_kernels.fast.conv, "conv_acc_packed_for")
    assert main(["verify", ir_path, "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["verdict"] == "not bit-exact" and d["intermediates"]["not_exact"]


def test_ir_file_with_no_integer_op_compares_nothing_and_is_refused(tmp_path, capsys):
    ir_path = str(tmp_path / "float.npz")
    assert main(["inspect", str(zoo.path("digits_float")), "--save-ir", ir_path]) == 0
    capsys.readouterr()
    assert main(["verify", ir_path]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "nothing to compare: the model has no integer op" in out.err
    assert len(out.err.splitlines()) == 1


def test_published_qonnx_export_verified_through_the_cli(capsys):
    path = ZOO / "TFC_2W2A.onnx"
    if not path.exists():
        pytest.skip(f"{path} is not there (test material beside the clone)")
    assert main(["verify", str(path), "--json", "--inputs", "2"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["against"] == "qonnx" and d["verdict"] == "bit-exact"
    assert [(o["elements"], o["exact"]) for o in d["outputs"]] == [(20, 20)]  # (1, 10) logits, 2 sets
    assert d["intermediates"] == {"compared": 4, "exact": 4, "not_exact": []}  # 4 activation quantizers
