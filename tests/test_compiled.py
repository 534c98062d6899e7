"""The compiled plan (npusim.compiled): the runs of kernel steps as Numba functions compute what the
Python plan computes, bit for bit; a later session loads them from the disk cache; a plan that
cannot be compiled (or is not worth it) runs as Python, with the same results."""
import contextlib
import inspect
import io
import logging
from dataclasses import replace

import numba
import numpy as np
import pytest

import npusim
import npusim_models as zoo
from npusim import caches, compiled
from npusim.compiled import _literal
from npusim_kernels.fast import conv as fconv, rows as frows


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    """One plan folder for the module's tests (a plan compiled by one test is loaded by the next)."""
    return tmp_path_factory.mktemp("plans")


@pytest.fixture
def compile_now(monkeypatch, plan_dir):
    """Sessions compile a plan at the first run of its shapes, into plan_dir."""
    monkeypatch.setattr(compiled, "COMPILE_AFTER", 1)
    monkeypatch.setattr(caches, "PLAN_DIR", plan_dir)


def _segments(sess):
    """The compiled functions of the session's one compiled plan (after its first run)."""
    (plan,) = sess._compiled.values()
    return [v for k, v in plan.__globals__.items() if k.startswith("run") and hasattr(v, "function")]


@pytest.mark.parametrize("name", ["digits_qop_pc_u8", "digits_qop_pt_u8", "digits_qdq_pc_u8", "digits_qop_pc_s8",
                                  "digits_qdq_pc_s8"])
def test_the_compiled_plan_equals_the_python_plan_and_golden(name, compile_now):
    sess = npusim.InferenceSession(zoo.path(name), threads=1)
    golden = npusim.InferenceSession(zoo.path(name), threads=1, kernels="golden")
    assert golden._compiled is None  # golden kernels are never compiled
    for seed in range(3):
        feeds = zoo.sample_inputs(name, 1, seed=seed)[0]
        every = sess.run_all(feeds)  # the step-by-step Python run
        got = sess.run(None, feeds)
        assert _segments(sess), "nothing was compiled"
        for out, y, g in zip(sess.graph.outputs, got, golden.run(None, feeds)):
            assert y.dtype == every[out].dtype == g.dtype
            np.testing.assert_array_equal(y, every[out])
            np.testing.assert_array_equal(y, g)


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_mode_npu_compiles_whole(compile_now, rounding):
    """Mode npu: its fixed-point requantize, add, mul and global average pool are Bounds, so the
    digits CNN's plan is one compiled function. The outputs are golden's, bit for bit."""
    name = "digits_qop_pc_u8"
    sess = npusim.InferenceSession(zoo.path(name), mode="npu", rounding=rounding, threads=1)
    golden = npusim.InferenceSession(zoo.path(name), mode="npu", rounding=rounding, threads=1, kernels="golden")
    for seed in range(2):
        feeds = zoo.sample_inputs(name, 1, seed=seed)[0]
        got = [sess.run(None, feeds) for _ in range(2)][-1]
        assert len(_segments(sess)) == 1
        np.testing.assert_array_equal(got[0], golden.run(None, feeds)[0])


def test_a_plan_with_host_islands_compiles_between_them(compile_now):
    """The PP-OCR classifier: onnxruntime's host islands (the float pools, the softmax's) split its
    kernel steps (the hard-swish islands' tables among them) into several compiled functions; the
    outputs are those of the step-by-step Python run, on every run."""
    name = "ppocr_cls_qop_pc_u8"
    sess = npusim.InferenceSession(zoo.path(name), threads=1)
    feeds = zoo.sample_inputs(name, 1)[0]
    every = sess.run_all(feeds)
    got = sess.run(None, feeds)
    segments = _segments(sess)
    assert len(segments) > 5 and sum(len(s.function.signatures) for s in segments) == len(segments)
    for out, y in zip(sess.graph.outputs, got):
        np.testing.assert_array_equal(y, every[out])
    np.testing.assert_array_equal(sess.run(None, feeds)[0], got[0])


def test_a_later_session_loads_the_compiled_plan_from_the_cache(compile_now):
    name = "digits_qop_pt_u8"
    feeds = zoo.sample_inputs(name, 1)[0]
    first = npusim.InferenceSession(zoo.path(name), threads=1)
    want = [first.run(None, feeds) for _ in range(2)][-1]  # a session's first run of a shape goes step by step
    later = npusim.InferenceSession(zoo.path(name), threads=1)
    got = [later.run(None, feeds) for _ in range(2)][-1]
    (seg,) = _segments(later)
    assert seg.function.stats.cache_hits and not seg.function.stats.cache_misses
    for y, w in zip(got, want):
        np.testing.assert_array_equal(y, w)


def test_a_python_step_splits_the_compiled_functions(compile_now):
    """A step with no compiled form (here the max pool, made a plain Python call) runs between two
    compiled functions; the values crossing it are the same."""
    name = "digits_qop_pc_u8"
    sess = npusim.InferenceSession(zoo.path(name), threads=1)
    k = next(i for i, s in enumerate(sess._steps) if s.node.op == "maxpool")
    pool = sess._steps[k].run
    sess._steps[k] = replace(sess._steps[k], run=lambda x: pool(x))
    feeds = zoo.sample_inputs(name, 1)[0]
    every = sess.run_all(feeds)  # settles the thread limits of this shape: the next run is the plan's
    got = sess.run(None, feeds)
    assert len(_segments(sess)) == 2
    np.testing.assert_array_equal(got[0], every[sess.graph.outputs[0]])


def test_a_plan_that_cannot_be_written_runs_as_python(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(compiled, "COMPILE_AFTER", 1)
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(caches, "PLAN_DIR", tmp_path / "file" / "plans")  # under a file: cannot be created
    name = "digits_qop_pc_u8"
    sess = npusim.InferenceSession(zoo.path(name), threads=1)
    feeds = zoo.sample_inputs(name, 1)[0]
    with caplog.at_level(logging.WARNING, logger="npusim.session"):
        got = [sess.run(None, feeds) for _ in range(2)][-1]
    assert sess._compiled[next(iter(sess._compiled))] is sess._straight
    assert "is not compiled" in caplog.text
    np.testing.assert_array_equal(got[0], sess.run_all(feeds)[sess.graph.outputs[0]])


@pytest.mark.parametrize("v", [0, -7, 2**40, True, np.int32(-3), np.uint8(200), np.int64(5), 0.1, -2.5e-30,
                               np.float32(0.1), np.float32(3e38), (1, 2, 3), (np.float32(0.5), 4), ()])
def test_literals_are_the_values_numba_would_be_passed(v):
    src = _literal(v)
    back = eval(src, {"np": np})  # noqa: S307 (our own source)
    assert type(back) is type(v) and back == v and np.asarray(back).dtype == np.asarray(v).dtype


@pytest.mark.parametrize("v", [np.zeros(3), float("nan"), np.float32("inf"), "text", (1, np.zeros(1))])
def test_values_without_a_literal_are_passed_as_arguments(v):
    assert _literal(v) is None


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_new_plan_says_it_compiles_once(monkeypatch, tmp_path):
    monkeypatch.setattr(compiled, "COMPILE_AFTER", 1)
    monkeypatch.setattr(caches, "PLAN_DIR", tmp_path)
    name = "digits_qop_pc_u8"
    feeds = zoo.sample_inputs(name, 1)[0]
    notes = []
    for _ in range(2):  # the second session finds the plan
        sess = npusim.InferenceSession(zoo.path(name), threads=1)
        terminal = _Terminal()
        with contextlib.redirect_stderr(terminal):
            for _ in range(2):
                sess.run(None, feeds)
        notes.append(terminal.getvalue())
    assert notes == [f"npusim: {caches.PLAN_NOTE}\n", ""]


def test_compiled_runs_read_numbas_count_only_when_a_kernel_may_split(compile_now, monkeypatch):
    """As the Python plan (tests/test_threads.py): convs too small to split neither read nor set
    Numba's count; made splittable, the compiled function is given the session's count."""
    calls = []
    real_get = numba.get_num_threads
    monkeypatch.setattr(numba, "get_num_threads", lambda: calls.append("get") or real_get())
    name = "digits_qop_pc_u8"
    feeds = zoo.sample_inputs(name, 1)[0]
    for min_macs, read in ((fconv.PARALLEL_MIN_MACS, False), (1, True)):
        monkeypatch.setattr(fconv, "PARALLEL_MIN_MACS", min_macs)
        sess = npusim.InferenceSession(zoo.path(name), threads=1)
        want = [sess.run(None, feeds) for _ in range(2)][-1]  # the second run compiles
        assert _segments(sess)
        del calls[:]
        np.testing.assert_array_equal(sess.run(None, feeds)[0], want[0])
        assert ("get" in calls) == read


def test_row_kernels_split_over_threads_in_a_compiled_plan(compile_now, monkeypatch):
    """Every row kernel made splittable (rows.PARALLEL_MIN_ELEMS 1): the compiled plan calls their
    parallel forms (*args kernels, given their arguments as one tuple) on the session's threads, and
    its outputs are golden's, at batch 3 (rows of several images)."""
    monkeypatch.setattr(frows, "PARALLEL_MIN_ELEMS", 1)
    name = "digits_qdq_pc_u8"
    x = np.concatenate([f["input"] for f in zoo.sample_inputs(name, 3, seed=4)])
    sess = npusim.InferenceSession(zoo.path(name), threads=2)
    golden = npusim.InferenceSession(zoo.path(name), threads=1, kernels="golden")
    want = golden.run(None, {"input": x})
    for run in range(3):  # the second run compiles
        got = sess.run(None, {"input": x})
        for y, g in zip(got, want):
            np.testing.assert_array_equal(y, g)
    assert _segments(sess), "nothing was compiled"
    kernels = [k for seg in _segments(sess) for k in seg.function.py_func.__globals__.values()
               if isinstance(k, numba.core.registry.CPUDispatcher)]
    assert any(k.py_func.__name__.startswith("parallel_") for k in kernels), "no row kernel's parallel form compiled"


def test_long_runs_of_steps_compile_into_functions_of_at_most_max_calls(compile_now, monkeypatch):
    """A run of more kernel calls than MAX_CALLS becomes several functions (LLVM's time grows faster
    than a function's length: the detector's 290 steps took 111 s as one, 30 s in functions of 32);
    the outputs are the same."""
    monkeypatch.setattr(compiled, "MAX_CALLS", 4)
    name = "digits_qop_pc_s8"
    feeds = zoo.sample_inputs(name, 1, seed=2)[0]
    sess = npusim.InferenceSession(zoo.path(name), threads=1)
    want = sess.run_all(feeds)
    got = [sess.run(None, feeds) for _ in range(2)][-1]
    segments = _segments(sess)
    assert len(segments) >= 3
    calls = [inspect.getsource(seg.function.py_func).count("native_call(") for seg in segments]
    assert max(calls) <= 4 and sum(calls) >= 10, calls
    for out, y in zip(sess.graph.outputs, got):
        np.testing.assert_array_equal(y, want[out])
