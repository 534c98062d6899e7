"""Row kernels: elementwise and per-row kernels split over threads when their tensor is large.

A row core `row_core(lo, hi, *xs, *args, out)` computes the output rows lo <= r < hi of `out`
(its first dimension; rows are independent: each reads its own input rows, or rows every output
row shares, and writes only its own). `over_rows` makes its two callable forms:

    serial(*xs, *args, out)             all rows on the calling thread
    parallel(T, *xs, *args, out)        worker t < T' = min(T, rows) takes the contiguous rows
                                        [t·R/T', (t + 1)·R/T'), in one parallel region (none when T' is 1)

`row_bound` binds one or the other as a `Bound`: the parallel form only when the tensor has at least
two workers' worth of elements (one per PARALLEL_MIN_ELEMS, its thread cap), so a small tensor's
kernel is never compiled for threads and never reads the count. The split changes no value: each
output element is computed by the same code from the same inputs whatever the thread count (the
tests run both forms against the golden kernels).
"""
import math

from numba import prange

from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.bound import Bound

PARALLEL_MIN_ELEMS = 1 << 20  # output elements per worker thread (1M: ~50-100 µs of a row kernel)
# A worker costs a wake-up: ~50 µs measured on 2-core znver5 VMs with passive OpenMP waiting (_jit),
# requantizing 1.2M int32 to u8 took 95 µs on one thread and 107-119 µs on two.


@njit(inline="always")
def job_span(count, workers, t):
    """[lo, hi): worker t's contiguous share of `count` items split into `workers` runs that differ by
    at most one item."""
    return t * count // workers, (t + 1) * count // workers


_FORMS = """
def serial_{name}(*a):
    row_core(0, a[-1].shape[0], *a)


def parallel_{name}(threads, *a):
    rows = a[-1].shape[0]
    workers = min(threads, rows)
    if workers <= 1:  # no parallel region: launching one costs a few µs even on one thread
        row_core(0, rows, *a)
    else:
        for t in prange(workers):
            lo, hi = job_span(rows, workers, t)
            row_core(lo, hi, *a)
"""


def over_rows(row_core):
    """-> (serial, parallel): the two forms of `row_core` (module doc), compiled when first called.
    They are module-level functions named after the core, made from _FORMS with the core a global of
    theirs, not closures: Numba keys a cached closure by its pickled cells, and a pickled
    dispatcher differs in every process (the forms were compiled again at each start: a warm
    `npusim run` took 2-2.5 s instead of ~0.8)."""
    name = f"{row_core.py_func.__module__.rsplit('.', 1)[-1]}_{row_core.py_func.__name__.lstrip('_')}"
    env = {"__name__": __name__, "row_core": row_core, "prange": prange, "job_span": job_span}
    exec(compile(_FORMS.format(name=name), __file__, "exec"), env)  # named for Numba's cache files
    return njit(env[f"serial_{name}"]), njit(parallel=True)(env[f"parallel_{name}"])


def flat_rows(shape):
    """(rows, inner): a rows view of a tensor of `shape` whose rows all take the same parameters (a
    per-tensor kernel): one row, the longest inner loop, unless the tensor is large enough to split
    (2·PARALLEL_MIN_ELEMS elements), then rows to split with long inner runs: (N·C, rest) of 3 or
    more dimensions, (N, rest) of 2. (Short rows cost: the detector's 5x5 planes as rows made its
    adds and muls 1.6-1.8x slower.)"""
    shape = tuple(shape)
    size = math.prod(shape)
    if size < 2 * PARALLEL_MIN_ELEMS or len(shape) < 2:
        return 1, size
    lead = math.prod(shape[:2]) if len(shape) >= 3 else shape[0]
    return lead, size // lead


def row_bound(forms, args, ins, *, rows, elements, **kw):
    """-> Bound of the serial form of `forms` (over_rows), or of the parallel one with a thread cap
    of min(rows, elements // PARALLEL_MIN_ELEMS) when that is at least 2. `rows`: the output view's
    first dimension; `elements`: the output's size. Other keywords as Bound's."""
    cap = min(int(rows), int(elements) // PARALLEL_MIN_ELEMS)
    if cap >= 2:
        return Bound(forms[1], args, ins, cap=cap, **kw)
    return Bound(forms[0], args, ins, **kw)
