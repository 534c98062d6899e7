"""`threads` bounds every thread an inference uses: Numba's kernels, BLAS, and the host islands'
onnxruntime; outside a run the caller's settings are back."""
import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import npusim
import npusim_models as zoo
from npusim.session import thread_limit


def blas_threads():
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_thread_limit_bounds_numba_and_blas_and_restores_them():
    np.ones((4, 4)) @ np.ones((4, 4))  # BLAS loaded
    before_numba, before_blas = numba.get_num_threads(), blas_threads()
    with thread_limit(1):
        assert numba.get_num_threads() == 1
        assert blas_threads() and set(blas_threads()) == {1}
    assert numba.get_num_threads() == before_numba and blas_threads() == before_blas
    with thread_limit(None):
        assert numba.get_num_threads() == before_numba


def test_session_threads_reach_every_part_and_do_not_change_results(monkeypatch):
    seen = []
    original = npusim.session.thread_limit

    def spy(threads):
        seen.append(threads)
        return original(threads)

    monkeypatch.setattr(npusim.session, "thread_limit", spy)
    name = "digits_qop_pc_u8"
    feeds = zoo.sample_inputs(name, 2, seed=1)[0]
    one = npusim.InferenceSession(zoo.path(name), threads=1)
    two = npusim.InferenceSession(zoo.path(name), threads=2)
    np.testing.assert_array_equal(one.run(None, feeds)[0], two.run(None, feeds)[0])
    assert seen == [1, 2]


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_thread_count_is_refused(bad):
    with pytest.raises(npusim.NpusimError, match="threads: expected a positive integer"):
        npusim.InferenceSession(zoo.path("digits_qop_pc_u8"), threads=bad)
