"""Mode "ort" is bit-exact with onnxruntime on every zoo model variant, 3 input sets each.

onnxruntime runs in the test (npusim.verify): outputs against the original model, intermediate
quantized tensors against the graph onnxruntime's optimizer produced. The fast and golden
kernel sets also agree on every tensor of every model, which exercises every registry op
the zoo uses on real data.
"""
import numpy as np
import pytest

import npusim
import npusim_models as zoo
from npusim.verify import verify

QUANTIZED = [n for n in zoo.names() if not n.endswith("_float")]


@pytest.fixture(scope="module", params=QUANTIZED)
def model(request):
    return request.param, zoo.path(request.param)


def test_bit_exact_with_onnxruntime(model):
    name, path = model
    report = verify(path, zoo.sample_inputs(name, 3, seed=1))
    assert report.input_sets == 3
    for c in report.outputs:
        assert c.elements > 0
        assert c.exact == c.elements, f"{name}: output {c.name} {c.exact}/{c.elements} exact, max {c.max_lsb} LSB"
    assert report.intermediates, "no intermediate tensor was compared"
    bad = [(c.name, c.exact_fraction) for c in report.intermediates if c.exact != c.elements]
    assert not bad, f"{name}: intermediates not bit-exact: {bad[:5]}"


def test_fast_equals_golden_on_every_tensor(model):
    name, path = model
    feeds = zoo.sample_inputs(name, 1, seed=2)[0]
    fast = npusim.InferenceSession(path, kernels="fast").run_all(feeds)
    golden = npusim.InferenceSession(path, kernels="golden").run_all(feeds)
    assert fast.keys() == golden.keys()
    for k in golden:
        np.testing.assert_array_equal(fast[k], golden[k], err_msg=f"{name}: tensor {k}")
