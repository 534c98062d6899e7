"""The plan's straight-line code (npusim.session._straight_line) computes what the step-by-step
run computes, frees what no later step reads, and leaves failures to the step-by-step run, which
names the node."""
import gc
import weakref

import numpy as np
import pytest

import npusim
import npusim_models as zoo


@pytest.mark.parametrize("name", ["digits_qop_pc_u8", "digits_qdq_pc_s8"])
def test_straight_line_equals_the_step_by_step_run(name):
    sess = npusim.InferenceSession(zoo.path(name), threads=1)
    for seed in range(2):  # the first run of a shape may go step by step, the second is straight-line
        feeds = zoo.sample_inputs(name, 1, seed=seed)[0]
        every = sess.run_all(feeds)
        for out, y in zip(sess.graph.outputs, sess.run(None, feeds)):
            np.testing.assert_array_equal(y, every[out])
            assert y.dtype == every[out].dtype
        inner = next(n.outputs[0] for n in sess.graph.nodes if n.op == "conv")  # an intermediate, asked by name
        np.testing.assert_array_equal(sess.run([inner], feeds)[0], every[inner])


def test_straight_line_frees_intermediates_after_their_last_reader():
    """The first step's output (read by the second step only) is gone when the last step runs."""
    name = "digits_qop_pc_u8"
    sess = npusim.InferenceSession(zoo.path(name), threads=1)
    feeds = zoo.sample_inputs(name, 1)[0]
    sess.run(None, feeds)
    g = sess._straight.__globals__
    last = f"run{len(sess._steps) - 1}"
    first_run, last_run, seen = g["run0"], g[last], []
    assert {i for s in sess._steps[2:] for i in s.inputs}.isdisjoint(sess._steps[0].outputs)

    def first(*xs):
        outs = first_run(*xs)
        seen.append(weakref.ref(outs[0]))
        return outs

    def final(*xs):
        gc.collect()
        seen.append(seen[0]() is None)
        return last_run(*xs)
    g["run0"], g[last] = first, final
    try:
        out = sess.run(None, feeds)
    finally:
        g["run0"], g[last] = first_run, last_run
    assert seen[1:] == [True]
    np.testing.assert_array_equal(out[0], sess.run_all(feeds)[sess.graph.outputs[0]])


def test_a_failing_straight_line_run_is_rerun_step_by_step_and_named():
    name = "digits_qop_pc_u8"
    sess = npusim.InferenceSession(zoo.path(name), threads=1)
    feeds = zoo.sample_inputs(name, 1)[0]
    want = sess.run(None, feeds)[0]
    sess.run(None, feeds)
    node = sess._steps[2].node

    def broken(*xs):
        raise ZeroDivisionError("boom")
    real = sess._straight.__globals__["run2"]
    sess._straight.__globals__["run2"] = broken
    try:  # the generated code fails; the step-by-step run computes the outputs
        np.testing.assert_array_equal(sess.run(None, feeds)[0], want)
        sess._steps[2] = sess._steps[2].__class__(broken, sess._steps[2].inputs, sess._steps[2].outputs, node)
        with pytest.raises(npusim.NpusimError, match=f"{node.source or node.name}.*boom"):
            sess.run(None, feeds)
    finally:
        sess._straight.__globals__["run2"] = real
