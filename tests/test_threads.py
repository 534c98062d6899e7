"""`threads` bounds every thread an inference uses: Numba's kernels, BLAS, and the host islands'
onnxruntime; outside a run the caller's settings are back."""
import ast
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import numba
import numpy as np
import onnxruntime
import pytest
from threadpoolctl import threadpool_info

import npusim
import npusim_kernels
import npusim_models as zoo
from npusim_kernels.fast import conv as fconv, rows as frows
from npusim.session import thread_limit


def blas_threads():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_thread_limit_bounds_numba_and_blas_and_restores_them():
    pytest.importorskip("scipy.linalg.cython_blas")  # numpy's BLAS and scipy's, which Numba loads
    before_numba, before_blas = numba.get_num_threads(), blas_threads()
    with thread_limit(1):
        assert numba.get_num_threads() == 1
        assert blas_threads() and set(blas_threads()) == {1}
    assert numba.get_num_threads() == before_numba and blas_threads() == before_blas
    with thread_limit(None):
        assert numba.get_num_threads() == before_numba


def spying_kernels(seen, real_kernels):
    """kernel_set with every kernel, and every kernel a `*_for` binder returns, recording
    (name, Numba's thread count, BLAS's counts...) at each call."""
    def spy(name, f):
        def call(*args, **kwargs):
            seen.append((name, numba.get_num_threads(), *blas_threads()))
            out = f(*args, **kwargs)
            return spy(name + "()", out) if name.endswith("_for") else out
        return call

    return lambda name: SimpleNamespace(**{k: spy(k, v) for k, v in vars(real_kernels(name)).items()})


def test_session_threads_bound_every_kernel_call_and_host_island(monkeypatch):
    """threads=1: every kernel call at plan time (weight packing) sees one Numba thread and one BLAS
    thread; every host island's onnxruntime session one intra-op thread; the caller's counts are
    back after; the results equal those of threads=2. At run time a session limits only what its
    kernels use: this model's convs run on Numba's threads (every conv may split here:
    PARALLEL_MIN_MACS 1), and it has no BLAS product, so its runs limit Numba's count and leave BLAS's
    alone. The front end's own sessions at import (load check, optimizer, type inference) take one
    thread whatever the session's count."""
    monkeypatch.setattr(fconv, "PARALLEL_MIN_MACS", 1)
    seen, islands = [], []
    real_ort = onnxruntime.InferenceSession

    def spying_ort(model, so=None, *args, **kwargs):
        islands.append((model, so.intra_op_num_threads if so else 0))
        return real_ort(model, so, *args, **kwargs)

    def island_threads(session):  # the front end's own onnxruntime sessions (import time) left out
        models = [n.attrs["model"] for n in session.graph.nodes if n.op == "host"]
        return [t for m, t in islands if any(m is h for h in models)]

    monkeypatch.setattr(npusim.session, "kernel_set", spying_kernels(seen, npusim.session.kernel_set))
    monkeypatch.setattr(onnxruntime, "InferenceSession", spying_ort)
    name = "digits_qdq_pc_s8"  # integer kernels and two host islands (float convs)
    feeds = zoo.sample_inputs(name, 1, seed=1)[0]
    before = (numba.get_num_threads(), *blas_threads())
    one = npusim.InferenceSession(zoo.path(name), threads=1)
    assert "pack_conv_weights" in {f for f, *_ in seen}
    assert {tuple(counts) for _, *counts in seen} == {(1,) * len(before)}
    del seen[:]
    y1 = one.run(None, feeds)[0]
    assert island_threads(one) == [1, 1]
    # the conv kernels ran: bound per shape, or (emulating a CPU without VNNI, pair excess added) per call
    assert {"conv_acc_packed_for()", "conv_acc_packed"} & {f for f, *_ in seen}
    assert {tuple(counts) for _, *counts in seen} == {(1, *before[1:])}
    assert (numba.get_num_threads(), *blas_threads()) == before
    islands.clear()
    two = npusim.InferenceSession(zoo.path(name).read_bytes(), threads=2)  # bytes: imported, not cached
    np.testing.assert_array_equal(y1, two.run(None, feeds)[0])
    assert island_threads(two) == [2, 2]
    front_end = [t for m, t in islands if not any(m is h for h in (n.attrs["model"] for n in two.graph.nodes
                                                                    if n.op == "host"))]
    assert len(front_end) >= 2 and set(front_end) == {1}  # its load check and optimizer: one thread each


def test_runs_of_convs_too_small_to_split_leave_numbas_count_alone(monkeypatch):
    """A plan whose convs are all below 2·PARALLEL_MIN_MACS multiply-adds at the shapes it runs
    never opens a parallel region, so its runs neither read nor set Numba's count (a small model's
    run would pay ~5 µs for it); the first run of those shapes, which settles this, takes the
    limit. Lowering the convs' constant, or the row kernels' (rows.PARALLEL_MIN_ELEMS), makes the
    same model's runs take it again."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread: a limit of 1 changes nothing to observe")
    calls = []
    real_get, real_set = numba.get_num_threads, numba.set_num_threads
    monkeypatch.setattr(numba, "get_num_threads", lambda: calls.append("get") or real_get())
    monkeypatch.setattr(numba, "set_num_threads", lambda n: calls.append(n) or real_set(n))
    name = "digits_qop_pc_u8"
    feeds = zoo.sample_inputs(name, 1, seed=1)[0]
    before = real_get()
    real_set(2)  # the caller's count here; the session's is 1
    try:
        sess = npusim.InferenceSession(zoo.path(name), threads=1)
        first = sess.run(None, feeds)[0]
        assert "get" in calls  # the first run of these shapes limits Numba's count
        del calls[:]
        np.testing.assert_array_equal(sess.run(None, feeds)[0], first)
        assert calls == []
        for module, constant in ((fconv, "PARALLEL_MIN_MACS"), (frows, "PARALLEL_MIN_ELEMS")):
            with monkeypatch.context() as m:  # every conv may split; then every row kernel (requantize, ...)
                m.setattr(module, constant, 1)
                split = npusim.InferenceSession(zoo.path(name), threads=1)
                for _ in range(2):
                    del calls[:]
                    np.testing.assert_array_equal(split.run(None, feeds)[0], first)
                    assert 1 in calls  # set to the session's count (and put back)
    finally:
        real_set(before)


def test_bitserial_runs_see_the_thread_limit(monkeypatch):
    """A plan with parallel (bit-serial) kernels limits Numba's threads in every run, and puts the
    caller's count back after."""
    seen = []
    monkeypatch.setattr(npusim.session, "kernel_set", spying_kernels(seen, npusim.session.kernel_set))
    name = "digits_qop_pc_u8"
    sess = npusim.InferenceSession(zoo.path(name), threads=1, engine="bitserial")
    before = numba.get_num_threads()
    del seen[:]
    sess.run(None, zoo.sample_inputs(name, 1, seed=1)[0])
    assert "bitserial_conv_acc" in {f for f, *_ in seen}
    assert {n for _, n, *_ in seen} == {1}
    assert numba.get_num_threads() == before


def test_parallel_kernels_are_conv_rows_and_bitserial_only():
    """npusim.session bounds Numba's threads for the runs in which a Bound that may split ran (convs
    and row kernels) and for every run of a plan with a bit-serial kernel (_thread_users): a
    parallel kernel in another module would run unbounded."""
    root = pathlib.Path(npusim_kernels.__file__).parent / "fast"
    parallel = {p.name for p in root.glob("*.py") if "parallel=True" in p.read_text()}
    assert parallel == {"bitserial.py", "conv.py", "rows.py"}, parallel


# NumPy calls that Numba's parallel=True turns into parallel loops (parfors) of their own
_PARFOR_CALLS = {"np.zeros", "np.ones", "np.full", "np.zeros_like", "np.ones_like", "np.full_like", "np.arange",
                 "np.sum", "np.dot", "np.where", "np.minimum", "np.maximum", "np.abs"}


def test_parallel_kernels_open_regions_only_at_their_prange():
    """In a parallel=True kernel an array expression, a slice assignment or np.zeros (...) is a
    parallel loop too, opened on every call whatever the worker count: a depthwise conv's np.zeros
    made each call wake every Numba thread, 3x slower at 2 threads than at 1 (55 vs 150 us on a
    200-channel 2x96 5x5 layer). So those kernels fill and copy with plain loops."""
    found = []
    for path in (pathlib.Path(npusim_kernels.__file__).parent / "fast").glob("*.py"):
        for fn in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(fn, ast.FunctionDef) and any("parallel=True" in ast.unparse(d)
                                                            for d in fn.decorator_list)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and ast.unparse(node.func) in _PARFOR_CALLS:
                    found.append((path.name, fn.name, node.lineno, ast.unparse(node)))
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, ast.AugAssign) else []
                if any(isinstance(t, ast.Subscript) and isinstance(t.slice, ast.Slice) for t in targets):
                    found.append((path.name, fn.name, node.lineno, ast.unparse(node)))
    assert not found, found


def test_blas_of_the_kernels_bounded_when_the_first_limit_precedes_it():
    """The first limit taken in a process before any kernel ran (Numba then loads scipy's BLAS
    when scipy is installed) still reaches that BLAS later."""
    pytest.importorskip("scipy.linalg.cython_blas")
    code = ("from npusim.session import thread_limit\n"
            "with thread_limit(1): pass\n"
            "import scipy.linalg.cython_blas\n"
            "from threadpoolctl import threadpool_info\n"
            "with thread_limit(1):\n"
            "    print(sorted((p['filepath'].split('/')[-1], p['num_threads']) for p in threadpool_info() "
            "if p['user_api'] == 'blas'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    libs = ast.literal_eval(r.stdout)  # [(library file, threads)]: numpy's BLAS and scipy's
    assert libs and {n for _, n in libs} == {1}, (libs, r.stderr)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_thread_count_is_refused(bad):
    with pytest.raises(npusim.NpusimError, match="threads: expected a positive integer"):
        npusim.InferenceSession(zoo.path("digits_qop_pc_u8"), threads=bad)
