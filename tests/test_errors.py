"""Bad input gets one clear error: through the CLI (exit 2, one stderr line `npusim: error: ...`
naming the node or input and expected vs got, no traceback, no output file) and through the API
(npusim.NpusimError with the same message). An op onnxruntime runs but npusim has no integer
form for is not an error: it runs as a host op.
"""
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import npusim
import npusim_models
from npusim import NpusimError

DEFAULT = npusim_models.path(npusim_models.DEFAULT)  # input 'input': float32 (N, 1, 8, 8)


def _single_op_model(op, domain=""):
    node = helper.make_node(op, ["x"], ["y"], name="the_node", domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("errors")
    data = DEFAULT.read_bytes()
    (d / "truncated.onnx").write_bytes(data[:len(data) // 2])
    (d / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    onnx.save(_single_op_model("Frobnicate", "com.example"), d / "custom.onnx")
    onnx.save(_single_op_model("HardSigmoid"), d / "host.onnx")
    np.save(d / "good.npy", np.zeros((1, 1, 8, 8), np.float32))
    np.save(d / "shape.npy", np.zeros((1, 1, 8, 9), np.float32))
    np.save(d / "rank.npy", np.zeros((8, 8), np.float32))
    np.save(d / "dtype.npy", np.zeros((1, 1, 8, 8), np.float64))
    (d / "garbage.npy").write_bytes(b"not an array")
    return d


def _cli(cwd, *args):
    return subprocess.run([sys.executable, "-m", "npusim.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


# (CLI arguments after `run`, fragments the one error line must contain)
CASES = {
    "unsupported_op": (["custom.onnx"], ["custom.onnx", "onnxruntime cannot load", "com.example:Frobnicate"]),
    "malformed_file": (["random.onnx"], ["random.onnx", "not a valid ONNX model"]),
    "truncated_file": (["truncated.onnx"], ["truncated.onnx", "not a valid ONNX model", "truncated"]),
    "missing_file": (["missing.onnx"], ["missing.onnx", "cannot read model file", "No such file"]),
    "wrong_input_name": ([str(DEFAULT), "--input", "nope=good.npy"],
                         ["input 'nope' is not an input of the model", "inputs are: input"]),
    "wrong_shape": ([str(DEFAULT), "--input", "input=shape.npy"],
                    ["input 'input'", "dimension 3 must be 8", "(N, 1, 8, 8)", "got shape (1, 1, 8, 9)"]),
    "wrong_rank": ([str(DEFAULT), "--input", "input=rank.npy"],
                   ["input 'input'", "expected rank 4", "got shape (8, 8)"]),
    "wrong_dtype": ([str(DEFAULT), "--input", "input=dtype.npy"],
                    ["input 'input'", "expected element type tensor(float)", "got float64"]),
    "missing_npy": ([str(DEFAULT), "--input", "input=missing.npy"],
                    ["--input input=missing.npy", "cannot read .npy file (No such file or directory)"]),
    "garbage_npy": ([str(DEFAULT), "--input", "input=garbage.npy"],
                    ["--input input=garbage.npy: not a .npy array file"]),
    "shape_without_equals": ([str(DEFAULT), "--shape", "input"], ["--shape 'input'", "expected NAME=VALUE"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_run_gives_one_error_line(files, case):
    args, fragments = CASES[case]
    r = _cli(files, "run", *args, "-o", f"{case}.npz")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("npusim: error: "), r.stderr
    for f in fragments:
        assert f in lines[0]
    assert not (files / f"{case}.npz").exists()
    assert not list(files.glob("*.npz.tmp")) and not list(files.glob("tmp*.npz"))


@pytest.mark.parametrize("command", ["verify", "inspect"])
def test_other_commands_give_the_same_error(files, command):
    r = _cli(files, command, str(DEFAULT), "--input", "input=shape.npy")
    assert r.returncode == 2 and "Traceback" not in r.stdout + r.stderr
    assert r.stderr.splitlines() == ["npusim: error: input 'input': dimension 3 must be 8 (shape (N, 1, 8, 8)), "
                                     "got shape (1, 1, 8, 9)"]


def test_cli_run_writes_output_when_inputs_are_good(files):
    r = _cli(files, "run", str(DEFAULT), "--input", "input=good.npy", "-o", "good.npz")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert set(np.load(files / "good.npz")) == {"logits"}


def test_host_only_op_is_not_an_error(files):
    """HardSigmoid has no integer form in npusim but onnxruntime runs it: a host op."""
    r = _cli(files, "inspect", "host.onnx")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "host: HardSigmoid" in r.stdout and "1 host ops in 1 islands" in r.stdout

    sess = npusim.InferenceSession(str(files / "host.onnx"))
    assert [(n.op, n.attrs["ops"]) for n in sess.graph.nodes] == [("host", ("HardSigmoid:the_node",))]
    x = np.linspace(-4, 4, 4, dtype=np.float32).reshape(1, 4)
    want = ort.InferenceSession(str(files / "host.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], want[0])


# ---- API -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, match", [
    ("custom.onnx", r"custom\.onnx: onnxruntime cannot load the model: .*com\.example:Frobnicate"),
    ("random.onnx", r"random\.onnx: not a valid ONNX model"),
    ("truncated.onnx", r"truncated\.onnx: not a valid ONNX model \(truncated or corrupt file"),
    ("missing.onnx", r"missing\.onnx: cannot read model file"),
])
def test_api_bad_model(files, model, match):
    with pytest.raises(NpusimError, match=match):
        npusim.InferenceSession(str(files / model))


def test_api_bad_model_bytes(files):
    with pytest.raises(NpusimError, match=r"<bytes>: not a valid ONNX model"):
        npusim.InferenceSession((files / "truncated.onnx").read_bytes())


@pytest.mark.parametrize("feeds, match", [
    ({"nope": np.zeros((1, 1, 8, 8), np.float32)}, r"input 'nope' is not an input of the model; inputs are: input"),
    ({}, r"input 'input' is missing from the feeds"),
    ({"input": np.zeros((1, 1, 8, 9), np.float32)},
     r"input 'input': dimension 3 must be 8 .* got shape \(1, 1, 8, 9\)"),
    ({"input": np.zeros((8, 8), np.float32)}, r"input 'input': expected rank 4 .* got shape \(8, 8\)"),
    ({"input": np.zeros((1, 1, 8, 8), np.float64)},
     r"input 'input': expected element type tensor\(float\), got float64"),
    ({"input": "zeros"}, r"input 'input': expected a numpy array, got str"),
    ({"input": [[0.0]]}, r"input 'input': expected rank 4 .* got shape \(1, 1\)"),  # a list, as onnxruntime takes
    ({"input": [[0.0], [0.0, 1.0]]}, r"input 'input': cannot convert the list to tensor\(float\): .*inhomogeneous"),
])
def test_api_bad_feeds(feeds, match):
    sess = npusim.InferenceSession(str(DEFAULT), kernels="golden")
    with pytest.raises(NpusimError, match=match):
        sess.run(None, feeds)


def test_api_feeds_are_not_modified():
    sess = npusim.InferenceSession(str(DEFAULT), kernels="golden")
    feeds = {"input": np.zeros((1, 1, 8, 8), np.float32)}
    before = dict(feeds)
    sess.run(None, feeds)
    assert feeds.keys() == before.keys() and feeds["input"] is before["input"]
