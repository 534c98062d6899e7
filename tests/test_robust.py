"""Broken and hostile input gets one NpusimError naming the file, node or input, never another
exception type: damaged and edited IR files (seeded mutations, both modes, both kernel sets),
model edits that used to fail deep in a kernel with NumPy's text, a QONNX scale of the wrong
length, the CLI on corrupt files (one line, exit 2, no traceback). And int32 accumulator overflow
is reported: bounded at plan time, counted in verify, in both modes.
"""
import io
import json
import subprocess
import sys
import zipfile
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import npusim
import npusim_models
from npusim import NpusimError, ir
from npusim.cli import main
from npusim.overflow import count_wrapped
from npusim.report import verify_text
from npusim.verify import verify

DEFAULT = str(npusim_models.path(npusim_models.DEFAULT))  # input 'input': float32 (N, 1, 8, 8)
FEEDS = {"input": np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)}
COMBOS = [(m, k) for m in ("ort", "npu") for k in ("fast", "golden")]


@pytest.fixture(scope="module")
def graph():
    return npusim.InferenceSession(DEFAULT).graph


@pytest.fixture(scope="module")
def ir_bytes(graph, tmp_path_factory):
    p = tmp_path_factory.mktemp("ir") / "digits.npz"
    ir.save(graph, p)
    return p.read_bytes()


# ---------------------------------------------------------------- IR file mutations

def zip_members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def zip_pack(members):
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w") as z:
        for k, v in members.items():
            z.writestr(k, v)
    return f.getvalue()


def npy_bytes(a):
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def _edit(data, rng):
    """The IR file with one edit of its description or arrays, repacked with valid CRCs."""
    m = zip_members(data)
    d = json.loads(np.load(io.BytesIO(m["__graph__.npy"])).tobytes())
    kind = rng.integers(0, 7)
    node = d["nodes"][rng.integers(0, len(d["nodes"]))]
    if kind == 0:
        del d[str(rng.choice(sorted(d)))]
    elif kind == 1 and node[5]:
        del node[5][str(rng.choice(sorted(node[5])))]
    elif kind == 2:
        node[2][rng.integers(0, len(node[2]))] = "no_such_tensor"
    elif kind == 3 and node[5]:
        node[5][str(rng.choice(sorted(node[5])))] = [0, -5, 10 ** 6, "x", None, 1.5, [], [0, 0]][rng.integers(0, 8)]
    elif kind == 4:
        node[0] = "maxpool" if node[0] == "conv" else "conv"
    elif kind == 5:
        key = f"const/{rng.integers(0, len(d['constants']))}.npy"
        a = np.load(io.BytesIO(m[key]))
        change = rng.integers(0, 3)
        if change == 0:
            del m[key]
        else:
            m[key] = npy_bytes(a.reshape(-1)[:-1] if change == 1 else np.zeros((2,) + a.shape, a.dtype))
    else:
        t = d["tensors"][rng.integers(0, len(d["tensors"]))]
        t[rng.integers(0, 3)] = ["u99", None, "renamed"][rng.integers(0, 3)]
    m["__graph__.npy"] = npy_bytes(np.frombuffer(json.dumps(d).encode(), np.uint8))
    return zip_pack(m)


def _mutations(data, n, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = i % 3
        if kind == 0:
            yield "truncated", data[:rng.integers(0, len(data))]
        elif kind == 1:
            b = bytearray(data)
            for _ in range(rng.integers(1, 4)):
                j = rng.integers(0, len(b))
                b[j] ^= 1 << rng.integers(0, 8)
            yield "bit-flipped", bytes(b)
        else:
            yield "edited", _edit(data, rng)


def test_damaged_and_edited_ir_files_give_npusim_errors(ir_bytes, tmp_path, graph):
    """60 seeded mutations x 2 modes x 2 kernel sets: each loads and runs, or raises NpusimError
    naming the file or a node; never another exception type."""
    names = {n.name for n in graph.nodes} | {n.source for n in graph.nodes}
    outcomes = {"ran": 0, "refused": 0}
    for i, (kind, data) in enumerate(_mutations(ir_bytes, 60)):
        path = tmp_path / f"case{i}.npz"
        path.write_bytes(data)
        for mode, kernels in COMBOS:
            try:
                npusim.InferenceSession(str(path), mode=mode, kernels=kernels).run(None, FEEDS)
                outcomes["ran"] += 1
            except NpusimError as e:
                msg = str(e)
                assert "\n" not in msg
                assert str(path) in msg or any(f"'{n}'" in msg for n in names if n), (kind, msg)
                outcomes["refused"] += 1
    assert outcomes["refused"] >= 4 * 40  # truncations and bit flips are always refused


def _onnx_mutations(n, seed=0):
    """Seeded ONNX model mutations of the default model: truncated, bit-flipped, an initializer
    deleted, renamed or reshaped, an attribute set to an absurd value."""
    base = onnx.load(DEFAULT)
    data = base.SerializeToString()
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = i % 6
        if kind == 0:
            yield data[:rng.integers(0, len(data))]
            continue
        if kind == 1:
            b = bytearray(data)
            for _ in range(rng.integers(1, 4)):
                j = rng.integers(0, len(b))
                b[j] ^= 1 << rng.integers(0, 8)
            yield bytes(b)
            continue
        m = onnx.ModelProto()
        m.CopyFrom(base)
        inits = m.graph.initializer
        init = inits[rng.integers(0, len(inits))]
        if kind == 2:
            inits.remove(init)
        elif kind == 3:
            init.name = "renamed"
        elif kind == 4:
            a = numpy_helper.to_array(init).reshape(-1)
            a = [a[:-1], np.concatenate([a, a]), np.zeros((2,) + a.shape, a.dtype)][rng.integers(0, 3)]
            init.CopyFrom(numpy_helper.from_array(a, init.name))
        else:
            node = m.graph.node[rng.integers(0, len(m.graph.node))]
            v = int([0, -1, 10 ** 6, 7][rng.integers(0, 4)])
            for at in node.attribute:
                if at.type == onnx.AttributeProto.INTS:
                    at.ints[:] = [v] * len(at.ints)
                elif at.type == onnx.AttributeProto.INT:
                    at.i = v
        yield m.SerializeToString()


WRONG_FEEDS = [
    {"input": np.zeros((1, 1, 8, 9), np.float32)}, {"input": np.zeros((8, 8), np.float32)},
    {"input": np.zeros((1, 1, 8, 8), np.float64)}, {"input": np.zeros((0, 1, 8, 8), np.float32)},
    {"input": [[0.0] * 8] * 8}, {"nope": np.zeros((1, 1, 8, 8), np.float32)}, {},
]


def test_mutated_models_and_wrong_feeds_give_npusim_errors():
    """60 seeded ONNX mutations x 2 modes x 2 kernel sets, run on a good feed, two batch sizes and
    7 wrong feeds: each succeeds or raises a one-line NpusimError naming the model (<bytes>), a
    node, a tensor or an input; never another exception type."""
    refused = 0
    for i, data in enumerate(_onnx_mutations(60)):
        for mode, kernels in COMBOS:
            try:
                sess = npusim.InferenceSession(data, mode=mode, kernels=kernels)
            except NpusimError as e:
                assert "\n" not in str(e) and any(w in str(e) for w in ("<bytes>", "node '", "tensor '")), str(e)
                refused += 1
                continue
            good = [{"input": np.random.default_rng(i).random((b, 1, 8, 8), dtype=np.float32)} for b in (1, 3)]
            for feeds in good + WRONG_FEEDS:
                try:
                    sess.run(None, feeds)
                except NpusimError as e:
                    assert "\n" not in str(e) and any(w in str(e) for w in ("node '", "input '", "feeds")), str(e)
                    refused += 1
    assert refused >= 4 * 60


@pytest.mark.parametrize("case, fragment", [
    ("truncated", "truncated or damaged (BadZipFile"),
    ("empty", "truncated or damaged"),
    ("newer", "format version 2; this npusim reads version 1"),
    ("no_nodes", "description: missing key or array 'nodes'"),
    ("no_constant", "constant #0 'z1_zero_point': missing key or array 'const/0'"),
    ("unknown_input", "node 'conv1_quant' (conv): input 0 'nope' is not a constant, a graph input or the output"),
])
def test_ir_file_errors_name_what_is_wrong(ir_bytes, tmp_path, case, fragment):
    m = zip_members(ir_bytes)
    d = json.loads(np.load(io.BytesIO(m["__graph__.npy"])).tobytes())
    if case == "newer":
        d["version"] = 2
    elif case == "no_nodes":
        del d["nodes"]
    elif case == "no_constant":
        del m["const/0.npy"]
    elif case == "unknown_input":
        next(n for n in d["nodes"] if n[1] == "conv1_quant")[2][0] = "nope"
    m["__graph__.npy"] = npy_bytes(np.frombuffer(json.dumps(d).encode(), np.uint8))
    data = {"truncated": ir_bytes[:len(ir_bytes) // 2], "empty": b""}.get(case, zip_pack(m))
    path = tmp_path / "bad.npz"
    path.write_bytes(data)
    with pytest.raises(NpusimError) as e:
        ir.load(path)
    assert str(path) in str(e.value) and fragment in str(e.value), str(e.value)


# ---------------------------------------------------------------- model edits caught where the model is wrong

def _node(g, name):
    return next(n for n in g.nodes if n.name == name)


def _with_node(g, name, **attrs):
    return replace(g, nodes=tuple(replace(n, attrs={**n.attrs, **attrs}) if n.name == name else n for n in g.nodes))


def _with_const(g, name, value):
    return replace(g, constants={**g.constants, name: value})


def _drop_attr(g, name, key):
    return replace(g, nodes=tuple(replace(n, attrs={k: v for k, v in n.attrs.items() if k != key})
                                  if n.name == name else n for n in g.nodes))


EDITS = {  # name: (graph -> edited graph, feeds, fragments of the one error line, or {mode: fragments})
    "batch_0": (lambda g: g, {"input": np.zeros((0, 1, 8, 8), np.float32)},
                ["input 'input'", "shape (0, 1, 8, 8) has no element"]),
    "group_mismatch": (lambda g: _with_node(g, "dwconv2_quant", group=8), FEEDS,
                       ["dwconv2_quant", "input 'z1_quantized' has shape (1, 16, 8, 8), expected 8 channels",
                        "group=8"]),
    "group_not_divisor": (lambda g: _with_node(g, "dwconv2_quant", group=5), FEEDS,
                          ["dwconv2_quant", "attribute group=5: expected a divisor of the 16 output channels"]),
    "huge_pads": (lambda g: _with_node(g, "conv1_quant", pads=(10 ** 6,) * 4), FEEDS,
                  ["model: the planned buffers take", "more than the", "of memory available; the largest is tensor "
                   "'z1_quantized::acc' (1, 16, 2000006, 2000006) i32, 233 TiB "
                   "(256,001,536,002,304 bytes)", "node 'conv1_quant' (conv): input "
                   "'input_quantized' (N, 1, 8, 8), kernel_shape=[3, 3], strides=[1, 1], pads=[1000000, 1000000, "
                   "1000000, 1000000]"]),
    "negative_pads": (lambda g: _with_node(g, "conv1_quant", pads=(-1, 0, 0, 0)), FEEDS,
                      ["conv1_quant", "attribute pads=[-1, 0, 0, 0]: expected 4 values >= 0"]),
    "zero_stride": (lambda g: _with_node(g, "maxpool", strides=(0, 2)), FEEDS,
                    ["'maxpool'", "attribute strides=[0, 2]: expected 2 values >= 1"]),
    "zero_scale": (lambda g: replace(g, tensors={**g.tensors, "z1_quantized": replace(
        g.tensors["z1_quantized"], quant=ir.Quant((0.0,), (0,)))}), FEEDS,
        ["tensor 'z1_quantized': quantization scale must be finite and > 0, got [0.]"]),
    "gemm_transA": (lambda g: _with_node(g, "fc_quant", transA=1), FEEDS,
                    ["fc_quant", "input A 'flat_quantized' has shape (1, 32), expected 2-D with K = 32 in "
                                 "dimension 0 (transA=1"]),
    "conv_bias_length": (lambda g: _with_const(g, "b1_quantized", g.constants["b1_quantized"][:15]), FEEDS,
                         ["conv1_quant", "bias 'b1_quantized' has shape (15,), expected (16,)"]),
    "gemm_bias_length": (lambda g: _with_const(g, "b5_quantized", g.constants["b5_quantized"][:7]), FEEDS,
                         ["fc_quant", "bias C 'b5_quantized' has shape (7,), expected (10,)"]),
    "pool_window": (lambda g: _with_node(g, "maxpool", kernel_shape=(16, 16)), FEEDS,
                    ["'maxpool'", "window [16, 16]", "larger than the padded input", "spatial dimension 0 is 8"]),
    "kernel_shape": (lambda g: _with_node(g, "conv1_quant", kernel_shape=(5, 5)), FEEDS,
                     ["conv1_quant", "attribute kernel_shape=[5, 5]", "kernel [3, 3]"]),
    "missing_attr": (lambda g: _drop_attr(g, "conv1_quant", "group"), FEEDS,
                     ["conv1_quant", "attribute 'group' is missing"]),
    "per_channel_scales": (lambda g: _with_node(g, "conv1_quant/requantize", multiplier=np.ones(3, np.float32),
                                                w_scale=np.ones(3, np.float32)), FEEDS,
                           ["conv1_quant", "attribute multiplier has 3 values, expected 1 or 16", "axis 1"]),
    "unknown_tensor": (lambda g: replace(g, nodes=tuple(replace(n, inputs=("nope",)) if n.name == "maxpool" else n
                                                        for n in g.nodes)), FEEDS,
                       ["node 'maxpool' (maxpool): input 0 'nope' is not a constant"]),
}


@pytest.mark.parametrize("mode, kernels", COMBOS)
@pytest.mark.parametrize("case", sorted(EDITS))
def test_wrong_models_are_caught_with_node_and_values(graph, case, mode, kernels):
    edit, feeds, fragments = EDITS[case]
    fragments = fragments[mode] if isinstance(fragments, dict) else fragments  # mode npu: multipliers from scales
    with pytest.raises(NpusimError) as e:
        npusim.InferenceSession(edit(graph), mode=mode, kernels=kernels).run(None, feeds)
    msg = str(e.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg


def test_qonnx_scale_length_must_match_the_weight():
    d = "qonnx.custom_op.general"
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in {
        "s": 0.5, "z": 0.0, "b": 8.0, "w": np.ones((6, 3, 3, 3)), "ws": np.full((7, 1, 1, 1), 0.25)}.items()]
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], domain=d, name="qx", signed=1, narrow=0),
             helper.make_node("Quant", ["w", "ws", "z", "b"], ["wq"], domain=d, name="qw", signed=1, narrow=1),
             helper.make_node("Conv", ["xq", "wq"], ["y"], name="conv")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(d, 1)])
    with pytest.raises(NpusimError, match=r"node 'qw' \(Quant\): scale of shape \(7, 1, 1, 1\) must be per tensor "
                                          r"or along one axis of the constant \(6, 3, 3, 3\)"):
        npusim.InferenceSession(m.SerializeToString())


# ---------------------------------------------------------------- CLI

def _flat_weight_model() -> bytes:
    """The default model with conv4's weight flattened and one value short: it stays on the host,
    and onnxruntime fails while running it (and would log that failure in color)."""
    m = onnx.load(DEFAULT)
    init = next(i for i in m.graph.initializer if i.name == "w4_quantized")
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).reshape(-1)[:-1], init.name))
    return m.SerializeToString()


def test_cli_corrupt_files_are_one_line(ir_bytes, tmp_path):
    """No traceback and no onnxruntime log line: only npusim's error line, exit 2."""
    for name, data in [("trunc.npz", ir_bytes[:1000]), ("flip.npz", bytes([ir_bytes[0] ^ 0x10]) + ir_bytes[1:]),
                       ("noise.onnx", np.random.default_rng(1).bytes(300)), ("w4flat.onnx", _flat_weight_model())]:
        (tmp_path / name).write_bytes(data)
        r = subprocess.run([sys.executable, "-m", "npusim.cli", "run", name], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
        lines = r.stderr.splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("npusim: error: "), r.stderr
        assert (name in lines[0] or "node 'conv4_quant'" in lines[0]) and "Traceback" not in r.stdout + r.stderr


# ---------------------------------------------------------------- int32 accumulator overflow

def _matmul_model(k):
    """QLinearMatMul of an int8 (1, k) input and constant int8 (k, 2) weights, zero points 0;
    column 0 holds -128 everywhere (its accumulator reaches 128·128·k), column 1 ones."""
    w = np.stack([np.full(k, -128), np.ones(k)], axis=1).astype(np.int8)
    inits = [numpy_helper.from_array(np.asarray(v, t), n) for n, v, t in [
        ("xs", 1.0, np.float32), ("xz", 0, np.int8), ("w", w, np.int8), ("ws", 1.0, np.float32),
        ("wz", 0, np.int8), ("ys", 2.0 ** 20, np.float32), ("yz", 0, np.int8)]]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"], name="q"),
             helper.make_node("QLinearMatMul", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["yq"], name="mm"),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"], name="dq")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), w


@pytest.mark.parametrize("mode", ["ort", "npu"])
def test_overflow_is_bounded_at_plan_time_and_counted(tmp_path, mode, capsys):
    """Both modes wrap the int32 accumulator; the layer is flagged at plan time from its bound and
    the wrapped elements are counted against an int64 matmul of the same integers."""
    k = 140_000  # 128·128·k = 2.29e9 > 2^31 − 1
    model, w = _matmul_model(k)
    path = tmp_path / "mm.onnx"
    onnx.save(model, path)
    sess = npusim.InferenceSession(str(path), mode=mode)
    assert sess.overflow_possible == {"mm": 128 * 128 * k}
    x = np.full((1, k), -128.0, np.float32)
    half = x.copy()
    half[:, k // 2:] = 0  # this input set stays within int32
    exact = np.concatenate([x, half]).astype(np.int64) @ w.astype(np.int64)
    assert int(np.count_nonzero(np.abs(exact) > 2 ** 31 - 1)) == 1  # column 0 of the first set
    node = next(n for n in sess.graph.nodes if n.name == "mm")
    counts = []
    for feeds in ({"x": x}, {"x": half}):
        values = sess.run_all(feeds)
        acc = values[node.outputs[0]].astype(np.int64)
        counts.append(count_wrapped(node, sess.graph, [values.get(i) for i in node.inputs]))
        want = (feeds["x"].astype(np.int64) @ w.astype(np.int64) + 2 ** 31) % 2 ** 32 - 2 ** 31
        np.testing.assert_array_equal(acc, want)  # wrapped modulo 2^32
    assert counts == [1, 0]
    capsys.readouterr()
    assert main(["run", str(path), "--mode", mode]) == 0
    assert "note: int32 accumulators that can overflow (they wrap modulo 2^32): mm (bound 2.29e+09)" \
        in capsys.readouterr().out
    report = verify(str(path), [{"x": x}, {"x": half}], mode=mode, session=sess)
    (ov,) = report.overflow
    assert (ov.layer, ov.bound, ov.wrapped, ov.elements) == ("mm", 128 * 128 * k, 1, 4)
    assert "1 layers can overflow, 1 wrapped" in verify_text(report)
    if mode == "npu":  # the float64 reference wraps as the NPU does
        assert report.bit_exact


def test_models_that_cannot_overflow_have_no_check():
    assert npusim.InferenceSession(DEFAULT).overflow_possible == {}


@pytest.mark.parametrize("mode", ["ort", "npu"])
def test_conv_overflow_from_a_large_bias_is_counted(graph, mode):
    """conv1 (3x3, pads 1, one input channel) with every bias at 2^31 − 2000: positive sums past
    2000 wrap. The count equals a plain int64 convolution's in the test."""
    b = np.full(16, 2 ** 31 - 2000, np.int32)
    g = _with_const(graph, "b1_quantized", b)
    sess = npusim.InferenceSession(g, mode=mode)
    c = graph.constants
    w = c["w1_quantized"].astype(np.int64) - c["w1_zero_point"].astype(np.int64).reshape(-1, 1, 1, 1)
    assert sess.overflow_possible["conv1_quant"] == int((np.abs(w).sum(axis=(1, 2, 3)) * 255).max() + b.max())
    values = sess.run_all(FEEDS)
    node = _node(sess.graph, "conv1_quant")
    x = values["input_quantized"].astype(np.int64) - int(c["input_zero_point"])
    x = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    exact = b.astype(np.int64).reshape(1, -1, 1, 1) + sum(
        x[:, :, i:i + 8, j:j + 8] * w[:, 0, i, j].reshape(1, -1, 1, 1) for i in range(3) for j in range(3))
    expect = int(np.count_nonzero(exact > 2 ** 31 - 1))
    assert 0 < expect < exact.size
    assert count_wrapped(node, sess.graph, [values.get(i) for i in node.inputs]) == expect


# ---------------------------------------------------------------- wrong results on valid input (issue 15)
def _one_node(node, x_info, out_type, inits=()):
    g = helper.make_graph([node], "g", [x_info], [helper.make_tensor_value_info("y", out_type, None)], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.parametrize("mode", ["ort", "npu"])
@pytest.mark.parametrize("kernels", ["fast", "golden"])
def test_quantize_nan_and_inf_as_onnxruntime(mode, kernels):
    """NaN quantizes to qmin, ±inf to qmax / qmin, as onnxruntime (MLAS clamps with max first)."""
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 1.0, -300.0], np.float32)
    for onnx_type, zp in [(TensorProto.UINT8, np.uint8(7)), (TensorProto.INT8, np.int8(-3))]:
        model = _one_node(helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"]),
                          helper.make_tensor_value_info("x", TensorProto.FLOAT, [6]), onnx_type,
                          [numpy_helper.from_array(np.array(0.5, np.float32), "s"),
                           numpy_helper.from_array(np.array(zp), "z")])
        want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        got = npusim.InferenceSession(model, mode=mode, kernels=kernels).run(None, {"x": x})[0]
        lo, hi = (0, 255) if onnx_type == TensorProto.UINT8 else (-128, 127)
        assert want[:4].tolist() == [lo, lo, hi, lo]
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("axis", [-4, -1, 0, 1, 3, 4])
def test_flatten_axis_as_onnx(axis):
    """Flatten's axis runs over [-r, r]: axis = r gives (prod(shape), 1), axis 0 gives (1, prod)."""
    x = np.arange(24, dtype=np.uint8).reshape(1, 2, 3, 4)
    g = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["d"]),
         helper.make_node("QuantizeLinear", ["d", "s", "z"], ["q"]),
         helper.make_node("Flatten", ["q"], ["y"], axis=axis)],
        "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        [numpy_helper.from_array(np.array(0.5, np.float32), "s"), numpy_helper.from_array(np.array(3, np.uint8), "z")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for mode in ("ort", "npu"):
        sess = npusim.InferenceSession(model, mode=mode)
        assert "flatten" in [n.op for n in sess.graph.nodes]
        got = sess.run(None, {"x": x})[0]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_big_endian_feed_is_refused_by_name():
    """onnxruntime takes a big-endian array but reads its bytes as native values; npusim says so."""
    x = np.zeros((1, 1, 8, 8), ">f4")
    with pytest.raises(NpusimError, match=r"input 'input': a big-endian array; .*x\.astype\('<f4'\)"):
        npusim.InferenceSession(DEFAULT).run(None, {"input": x})
