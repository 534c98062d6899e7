"""The IR saves to a file and loads back identically, and the importer's structure is as expected."""
import numpy as np

import npusim
import npusim_models as zoo
from npusim import ir


def test_save_load_roundtrip_is_identical(tmp_path):
    sess = npusim.InferenceSession(zoo.path(zoo.DEFAULT))
    p = tmp_path / "digits.npz"
    ir.save(sess.graph, p)
    back = ir.load(p)
    assert ir.graphs_equal(sess.graph, back)
    assert not ir.graphs_equal(sess.graph, back.__class__(**{**back.__dict__, "outputs": ("other",)}))
    feeds = zoo.sample_inputs(zoo.DEFAULT, 1, seed=0)[0]
    a = sess.run(None, feeds)
    b = npusim.InferenceSession(p).run(None, feeds)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_qlinearconv_becomes_conv_plus_requantize():
    g = npusim.InferenceSession(zoo.path(zoo.DEFAULT)).graph
    convs = [n for n in g.nodes if n.op == "conv"]
    assert convs
    prod = g.producer()
    for n in g.nodes:
        if n.op == "requantize":
            src = prod[n.inputs[0]]
            assert src.op in ("conv", "matmul", "gemm")
            assert g.tensors[n.inputs[0]].dtype == "i32"
            m = n.attrs["multiplier"]
            assert m.dtype == np.float32 and m.size in (1, n.attrs["w_scale"].size)


def test_qrange():
    assert ir.qrange("u4") == (0, 15)
    assert ir.qrange("i4") == (-8, 7)
    assert ir.qrange("i8") == (-128, 127)
    assert ir.qrange("u1") == (0, 1)
