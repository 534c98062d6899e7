"""Verdicts that mean something (issue 10, items 6 and 7), through npusim.cli.main:

- a missing Python package is reported as such, naming it, not as an error of a model node;
- a check that compared nothing does not succeed (a float model, zero input sets), the
  `--input` files are one input set, `verify` refuses to compare an IR file's golden kernels with
  its golden run (themselves),
  `--shape` for an input the model does not have is an error listing its inputs;
- `quantize` folds Constant-node weights (paddle2onnx's export, as rapidocr ships it), takes a
  -1 batch as dynamic, reads a .npy for a one-input model, and refuses what it cannot quantize.

Every refusal: exit 2, one stderr line `npusim: error: ...`, no traceback, nothing written.
"""
import json
import re
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import npusim_kernels.fast.conv
import npusim_models as zoo
from npusim.cli import main

DIGITS_Q = str(zoo.path(zoo.DEFAULT))  # input 'input': float32 (N, 1, 8, 8)
DIGITS_FLOAT = str(zoo.path("digits_float"))
# s8 activations x s8 weights: onnxruntime's integer sums are exact on every x86-64 (its u8 x s8
# kernels saturate pair sums to int16 on CPUs without VNNI), so verify exits 0 everywhere
DIGITS_S8 = str(zoo.path("digits_qop_pc_s8"))


def _one_error_line(capsys, code, *fragments):
    """The CLI refused: exit 2, nothing on stdout, one stderr line with every fragment."""
    out = capsys.readouterr()
    assert code == 2, out
    assert out.out == "" and "Traceback" not in out.err
    lines = out.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("npusim: error: "), out.err
    for f in fragments:
        assert f in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- a missing dependency

def _numba_without_scipy(*args, **kwargs):
    """What Numba does when a kernel compiles np.dot and scipy is not installed
    (numba.np.linalg.ensure_blas; no npusim kernel does today, so the failure is simulated): the
    import fails, and it raises its own ImportError."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (sys.modules["scipy"] is None: not installed)
    except ImportError:
        raise ImportError("scipy 0.16+ is required for linear algebra")
    raise AssertionError("scipy was importable: the test did not simulate its absence")


@pytest.mark.parametrize("kernel", ["conv_acc_packed_for", "pack_conv_weights"])  # run time, plan time
def test_missing_dependency_is_named(monkeypatch, capsys, kernel):
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setattr(npusim_kernels.fast.conv, kernel, _numba_without_scipy)
    line = _one_error_line(capsys, main(["run", DIGITS_Q]), "missing dependency 'scipy', not a model error",
                           "scipy 0.16+ is required for linear algebra", "'conv1_quant' (conv)",
                           "pip install scipy")
    assert not line.startswith("npusim: error: node")


def test_missing_dependency_without_a_module_name(monkeypatch, capsys):
    def needs_a_library(*args, **kwargs):
        raise ImportError("libblas.so.3 is required for linear algebra")  # no module name to give

    monkeypatch.setattr(npusim_kernels.fast.conv, "conv_acc_packed_for", needs_a_library)
    _one_error_line(capsys, main(["run", DIGITS_Q]), "missing dependency, not a model error: libblas.so.3 is "
                    "required for linear algebra (node 'conv1_quant' (conv) needs it)")


def test_other_kernel_errors_are_internal_errors_of_the_node(monkeypatch, capsys):
    """A kernel failure no check at the door foresaw is a bug report naming the node, not NumPy's
    text passed off as the model's fault."""
    def broken(*args, **kwargs):
        raise ValueError("operands could not be broadcast")

    monkeypatch.setattr(npusim_kernels.fast.conv, "conv_acc_packed_for", broken)
    line = _one_error_line(capsys, main(["run", DIGITS_Q]),
                           "node 'conv1_quant' (conv): internal error, please report: failed: ValueError: operands "
                           "could not be broadcast")
    assert "dependency" not in line


def test_every_imported_package_is_declared():
    """Every third-party package the runtime (npusim, kernels) imports is a runtime dependency in
    setup.cfg, so a plain `pip install .` runs every model; exempt are imports guarded by
    `except ImportError` and qonnx (verify's optional reference, refused without by name)."""
    import ast
    import configparser
    import importlib.metadata
    import pathlib

    root = pathlib.Path(__file__).parents[1]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    declared = {re.split(r"[<>=!~ ]", r.strip())[0].lower() for r in cfg["options"]["install_requires"].splitlines()
                if r.strip()}
    dists = importlib.metadata.packages_distributions()
    missing = set()
    for folder in ("npusim", "kernels"):
        for path in (root / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in t.handlers)
                for b in t.body for n in ast.walk(b)}
            for node in ast.walk(tree):
                if id(node) in guarded:
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top.startswith("npusim") or top == "qonnx":
                        continue
                    if not {d.lower() for d in dists.get(top, [top])} & declared:
                        missing.add(f"{top} ({path.relative_to(root)})")
    assert not missing, f"imported but not in install_requires: {sorted(missing)}"


# ---------------------------------------------------------------- verify: nothing compared

@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", np.random.default_rng(3).uniform(-1, 1, (1, 1, 8, 8)).astype(np.float32))
    return tmp_path


def test_verify_float_model_compares_nothing(files, capsys):
    _one_error_line(capsys, main(["verify", DIGITS_FLOAT]), "digits_float.onnx", "nothing to compare",
                    "no integer op")


def test_verify_api_without_input_sets():
    from npusim import NpusimError
    from npusim.verify import verify

    with pytest.raises(NpusimError, match="nothing to compare: no input sets"):
        verify(DIGITS_S8, [])


@pytest.mark.parametrize("n", ["0", "-2"])
def test_verify_zero_input_sets_refused(files, capsys, n):
    _one_error_line(capsys, main(["verify", DIGITS_Q, "--inputs", n]), f"--inputs {n}: expected at least 1")


def test_verify_given_inputs_are_one_set(files, capsys):
    assert main(["verify", DIGITS_S8, "--input", "input=x.npy", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_sets"] == 1 and report["outputs"][0]["elements"] == 10  # one (1, 10) output
    _one_error_line(capsys, main(["verify", DIGITS_Q, "--input", "input=x.npy", "--inputs", "3"]),
                    "--inputs 3: every input is given with --input, so there is one input set")


def test_verify_random_inputs_default_three_sets(files, capsys):
    assert main(["verify", DIGITS_S8, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input_sets"] == 3 and report["outputs"][0]["elements"] == 30


def test_verify_an_ir_golden_against_itself_is_refused(files, capsys):
    """An IR file's reference is its golden run (tests/test_verify_refs.py); with --kernels golden
    verify would compare the golden kernels with themselves: nothing checked, so refused."""
    assert main(["inspect", DIGITS_Q, "--save-ir", "ir.npz"]) == 0
    capsys.readouterr()
    _one_error_line(capsys, main(["verify", "ir.npz", "--kernels", "golden"]),
                    "ir.npz: the reference of an IR file is its golden run", "--kernels golden")
    assert main(["run", "ir.npz"]) == 0  # run takes the IR, as its help says


def test_verify_help_names_each_reference(capsys):
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "QONNX model (qonnx's executor)" in text and "npusim IR .npz (its golden run)" in text


@pytest.mark.parametrize("argv", [["run", DIGITS_Q], ["verify", DIGITS_Q, "--input", "input=x.npy"]])
def test_shape_of_unknown_input(files, capsys, argv):
    _one_error_line(capsys, main([*argv, "--shape", "y=1,2"]), "--shape y=...", "no input 'y'",
                    "its inputs are: input")
    assert sorted(p.name for p in files.iterdir()) == ["x.npy"]


# ---------------------------------------------------------------- quantize

def _float_conv_model(weights_in_constants=True, batch=-1, opset=11, seed=0):
    """x [batch, 2, 6, 6] -> Conv(4, 3x3, pad 1) -> BatchNormalization -> Relu -> y, its conv
    weight, bias and batch-norm parameters in Constant nodes (paddle2onnx's export) or initializers."""
    rng = np.random.default_rng(seed)
    params = {"w": rng.normal(0, 0.5, (4, 2, 3, 3)), "b": rng.normal(0, 0.1, 4), "gamma": rng.uniform(0.5, 2, 4),
              "beta": rng.normal(0, 0.5, 4), "mean": rng.normal(0, 0.5, 4), "var": rng.uniform(0.2, 2, 4)}
    params = {k: v.astype(np.float32) for k, v in params.items()}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], "conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"], "bn", epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["y"], "relu")]
    if weights_in_constants:
        consts = [helper.make_node("Constant", [], [k], f"const_{k}", value=numpy_helper.from_array(v, k))
                  for k, v in params.items()]
        nodes, inits = consts + nodes, []
    else:
        inits = [numpy_helper.from_array(v, k) for k, v in params.items()]
    dims = [batch, 2, 6, 6]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), params


def _calib(path, count=8):
    np.save(path, np.random.default_rng(1).uniform(-1, 1, (count, 2, 6, 6)).astype(np.float32))
    return str(path)


def test_quantize_folds_constant_weights_and_takes_a_minus_one_batch(tmp_path, capsys):
    model, p = _float_conv_model()
    onnx.save(model, tmp_path / "f.onnx")
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(tmp_path / "f.onnx"), "-o", str(out), "--calib", _calib(tmp_path / "c.npy"),
                 "--activation-type", "s8", "--no-progress"]) == 0
    assert re.search(r"^conv +Conv +8 +8 +per-channel", capsys.readouterr().out, re.M)  # the layer table
    q = onnx.load(out)
    ops = {n.op_type for n in q.graph.node}
    assert "BatchNormalization" not in ops and "Constant" not in ops
    # the folded weight, quantized per channel, computed here independently of npusim
    s = p["gamma"].astype(np.float64) / np.sqrt(p["var"].astype(np.float64) + 1e-3)
    w = (p["w"] * s.reshape(-1, 1, 1, 1)).astype(np.float32).astype(np.float64)
    scale = np.abs(w).reshape(4, -1).max(axis=1) / 127
    want = np.clip(np.rint(w / scale.astype(np.float32).reshape(-1, 1, 1, 1)), -127, 127).astype(np.int8)
    got = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    np.testing.assert_array_equal(got["w_bnfolded_quantized"], want)
    # s8 x s8 products: onnxruntime's sums are exact on every x86-64 (no u8 x s8 pair saturation);
    # the -1 batch runs as dynamic (the 8 calibration samples at once, inside the calibrated
    # ranges) and the quantized model follows the float one
    x = np.load(tmp_path / "c.npy")
    (yf,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    (yq,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert yq.shape == (8, 4, 6, 6) and np.abs(yq - yf).max() < 0.02 * np.abs(yf).max()  # measured 0.0104
    capsys.readouterr()
    assert main(["verify", str(out), "--inputs", "1"]) == 0  # npusim takes the -1 batch too (as 1)


def test_quantize_minus_one_batch_with_initializers(tmp_path, capsys):
    model, _ = _float_conv_model(weights_in_constants=False, opset=13)
    onnx.save(model, tmp_path / "f.onnx")
    np.savez(tmp_path / "c.npz", x=np.load(_calib(tmp_path / "c.npy")))
    assert main(["quantize", str(tmp_path / "f.onnx"), "-o", str(tmp_path / "q.onnx"), "--calib",
                 str(tmp_path / "c.npz"), "--no-progress"]) == 0
    assert "w_bnfolded_quantized" in {t.name for t in onnx.load(tmp_path / "q.onnx").graph.initializer}


def _weight_through_transpose():
    """x [1, 4] -> MatMul(W) with W = Transpose(Constant): a weight computed from constants."""
    wt = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "wt")
    nodes = [helper.make_node("Constant", [], ["wt"], "const", value=wt),
             helper.make_node("Transpose", ["wt"], ["w"], "transpose"),
             helper.make_node("MatMul", ["x", "w"], ["y"], "fc")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _no_weight_layer():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], "relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _two_inputs():
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"], "add")], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in "ab"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _unknown_op_opset_11():
    graph = helper.make_graph([helper.make_node("Frobnicate", ["x"], ["y"], "frob")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


@pytest.mark.parametrize("make,calib,fragments", [
    (_weight_through_transpose, np.zeros((2, 1, 4), np.float32),
     ["layer 'fc' (MatMul): its weight 'w' is computed from constants", "quant_pre_process"]),
    (_no_weight_layer, np.zeros((2, 1, 4), np.float32), ["nothing to quantize"]),
    (_two_inputs, np.zeros((2, 1, 4), np.float32), ["c.npy: one .npy array, but the model has 2 inputs (a, b)"]),
    (_no_weight_layer, None, ["c.npy: cannot read .npz or .npy arrays"]),
    (_unknown_op_opset_11, np.zeros((2, 1, 4), np.float32),
     ["f.onnx: onnx.checker and onnxruntime reject the model", "No Op registered for Frobnicate"]),
], ids=["weight_from_constants", "no_weight_layer", "npy_for_two_inputs", "garbage_npy", "opset_not_convertible"])
def test_quantize_refusals(tmp_path, capsys, make, calib, fragments):
    onnx.save(make(), tmp_path / "f.onnx")
    if calib is None:
        (tmp_path / "c.npy").write_bytes(b"not an array")
    else:
        np.save(tmp_path / "c.npy", calib)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["quantize", str(tmp_path / "f.onnx"), "-o", str(tmp_path / "q.onnx"), "--calib",
                 str(tmp_path / "c.npy"), "--no-progress"])
    _one_error_line(capsys, code, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_fold_constant_nodes_keeps_values_and_types():
    """Every Constant form becomes an initializer of the same value and type; onnxruntime computes
    the same outputs before and after. A string constant (no weight) stays a node."""
    from npusim.quantize import fold_constant_nodes

    w = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
    nodes = [helper.make_node("Constant", [], ["w"], "c_w", value=numpy_helper.from_array(w, "w")),
             helper.make_node("Constant", [], ["shape"], "c_shape", value_ints=[1, 9]),
             helper.make_node("Constant", [], ["k"], "c_k", value_float=0.5),
             helper.make_node("Constant", [], ["label"], "c_label", value_string="text"),
             helper.make_node("MatMul", ["x", "w"], ["m"], "fc"),
             helper.make_node("Reshape", ["m", "shape"], ["r"], "reshape"),
             helper.make_node("Mul", ["r", "k"], ["y"], "scale")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 9]),
                               helper.make_tensor_value_info("label", TensorProto.STRING, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    x = np.random.default_rng(4).normal(size=(3, 2)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    fold_constant_nodes(model)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert [n.op_type for n in model.graph.node] == ["Constant", "MatMul", "Reshape", "Mul"]
    np.testing.assert_array_equal(inits["w"], w)
    assert inits["shape"].dtype == np.int64 and inits["shape"].tolist() == [1, 9]
    assert inits["k"].dtype == np.float32 and inits["k"].shape == () and inits["k"] == 0.5
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(after[0], before[0])
    assert after[1] == before[1]
