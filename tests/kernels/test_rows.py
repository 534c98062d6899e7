"""The row kernels split over threads (npusim_kernels.fast.rows) give golden's values.

Every tensor is made "large" (PARALLEL_MIN_ELEMS 1), so each kernel is bound in its parallel form,
and run at 1 thread (no parallel region), 2 threads and more threads than rows; shapes with a batch,
per-tensor and per-channel parameters, broadcast operands, saturating values and extreme zero points.
"""
import os
import subprocess
import sys

import numba
import numpy as np
from hypothesis import given, settings, strategies as st

import npusim_kernels.fast.eltwise as fe
import npusim_kernels.fast.pool as fp
import npusim_kernels.fast.quantize as fq
import npusim_kernels.fast.requant as fr
import npusim_kernels.fast.upsample as fu
import npusim_kernels.golden.eltwise as ge
import npusim_kernels.golden.pool as gp
import npusim_kernels.golden.quantize as gq
import npusim_kernels.golden.requant as gr
import npusim_kernels.golden.upsample as gu
from npusim_kernels.fast import rows

THREADS = sorted({1, min(2, numba.config.NUMBA_NUM_THREADS), numba.config.NUMBA_NUM_THREADS})


def _each_count(bind, *xs):
    """bind() made with every tensor large (PARALLEL_MIN_ELEMS 1), checked to be the parallel form,
    then called on xs at every thread count of THREADS; the results."""
    saved = rows.PARALLEL_MIN_ELEMS, numba.get_num_threads()
    rows.PARALLEL_MIN_ELEMS = 1
    try:
        bound = bind()
        assert bound.cap >= 2, "not bound in its parallel form"
        outs = []
        for t in THREADS:
            numba.set_num_threads(t)
            outs.append(bound(*xs))
    finally:
        rows.PARALLEL_MIN_ELEMS = saved[0]
        numba.set_num_threads(saved[1])
    return outs


shapes = st.sampled_from([(3, 5, 4, 6), (2, 7, 9), (4, 33), (2, 3, 1, 1), (5, 2, 3, 4, 2)])


@settings(max_examples=25, deadline=None)
@given(shape=shapes, per_channel=st.booleans(), zp=st.sampled_from([-128, 0, 127, 255]), seed=st.integers(0, 2**31))
def test_requantize_split_equals_golden(shape, per_channel, zp, seed):
    rng = np.random.default_rng(seed)
    acc = rng.integers(-2**31, 2**31, shape, dtype=np.int64).astype(np.int32)
    acc.flat[:4] = [2**31 - 1, -2**31, 0, 1]
    scale = (rng.random(shape[1] if per_channel else 1) * 2.0 ** rng.integers(-30, -4)).astype(np.float32)
    dt, lo, hi = (np.uint8, 0, 255) if zp >= 0 else (np.int8, -128, 127)
    zp = min(max(zp, lo), hi)
    want = gr.requantize_f32(acc, scale, 1, zp, lo, hi, dt)
    for got in _each_count(lambda: fr.requantize_f32_for(shape, scale, 1, zp, lo, hi, dt), acc):
        np.testing.assert_array_equal(got, want)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, axis=st.sampled_from([None, 0, 1, -1]), seed=st.integers(0, 2**31))
def test_quantize_dequantize_split_equal_golden(shape, axis, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 300).astype(np.float32)
    x.flat[:3] = [np.nan, np.inf, -np.inf]
    size = 1 if axis is None else shape[axis]
    scale = (rng.random(size) + 0.05).astype(np.float32)
    zp = rng.integers(-128, 128, size).astype(np.int8)
    if axis is None:
        scale, zp = scale[0], zp[0]
    want = gq.quantize_linear(x, scale, zp, axis, None, -128, 127, np.int8)
    for got in _each_count(lambda: fq.quantize_linear_for(shape, scale, zp, axis, None, -128, 127, np.int8), x):
        np.testing.assert_array_equal(got, want)
    q = want
    want = gq.dequantize_linear(q, scale, zp, axis, None)
    for got in _each_count(lambda: fq.dequantize_linear_for(shape, np.int8, scale, zp, axis, None), q):
        np.testing.assert_array_equal(got, want)


@settings(max_examples=30, deadline=None)
@given(pair=st.sampled_from([((3, 5, 4, 6), (3, 5, 4, 6)), ((3, 5, 4, 6), (1, 5, 1, 1)), ((1, 5, 1, 1), (3, 5, 4, 6)),
                             ((2, 7, 9), ()), ((), (2, 7, 9)), ((4, 33), (33,)), ((2, 3, 4), (2, 3, 1))]),
       mul=st.booleans(), seed=st.integers(0, 2**31))
def test_add_mul_split_equal_golden(pair, mul, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, pair[0]).astype(np.uint8)
    b = rng.integers(0, 256, pair[1]).astype(np.uint8)
    args = (np.float32(rng.random() + 0.01), int(rng.integers(0, 256)), np.float32(rng.random() + 0.01),
            int(rng.integers(0, 256)), np.float32(rng.random() * 0.1 + 0.001), int(rng.integers(0, 256)), 0, 255,
            np.uint8)
    fast_for, golden = (fe.qlinear_mul_for, ge.qlinear_mul) if mul else (fe.qlinear_add_for, ge.qlinear_add)
    want = golden(a, *args[:2], b, *args[2:])
    for got in _each_count(lambda: fast_for(a.shape, *args[:2], b.shape, *args[2:]), a, b):
        np.testing.assert_array_equal(got, want)


@settings(max_examples=20, deadline=None)
@given(shape=st.sampled_from([(3, 4, 5, 6), (2, 9, 7, 3), (5, 1, 8, 8)]), x_zp=st.sampled_from([0, 128, 255]),
       seed=st.integers(0, 2**31))
def test_pools_split_equal_golden(shape, x_zp, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    args = (np.float32(0.05), x_zp, np.float32(0.04), 7, 0, 255, np.uint8)
    want = gp.qlinear_global_avgpool(x, *args)
    for got in _each_count(lambda: fp.qlinear_global_avgpool_for(x.shape, *args), x):
        np.testing.assert_array_equal(got, want)
    xf = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
    for order in gp.GAP_ORDERS:
        want = gp.global_avgpool_f32(xf, order)
        for got in _each_count(lambda: fp.global_avgpool_f32_for(xf.shape, order), xf):
            np.testing.assert_array_equal(got, want)
    window = ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True)
    want = gp.maxpool(x, *window)
    for got in _each_count(lambda: fp.maxpool_for(x.shape, x.dtype, *window), x):
        np.testing.assert_array_equal(got, want)


def test_small_tensors_stay_serial():
    """Below two workers' worth of elements a row kernel is bound in its serial form: it takes no
    thread count (cap 0) and is never compiled for threads."""
    b = fr.requantize_f32_for((1, 8, 4, 4), np.ones(1, np.float32), 1, 0, 0, 255, np.uint8)
    assert b.cap == 0 and b.core is fr._REQUANT[0]
    big = (2, 8, rows.PARALLEL_MIN_ELEMS // 8, 1)
    b = fr.requantize_f32_for(big, np.ones(1, np.float32), 1, 0, 0, 255, np.uint8)
    assert b.cap == 2 and b.core is fr._REQUANT[1]


@settings(max_examples=15, deadline=None)
@given(shape=st.sampled_from([(3, 4, 5, 6), (2, 9, 1, 3)]), out_hw=st.sampled_from([(10, 12), (5, 2), (1, 7)]),
       seed=st.integers(0, 2**31))
def test_resize_nearest_split_equals_golden(shape, out_hw, seed):
    """Output planes split over threads; source indices as a nearest resize makes them (repeated
    rows, any order) and a batch / channel gather."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, shape).astype(np.int8)
    idx = (rng.integers(0, shape[0], shape[0] + 1), np.arange(shape[1])[::-1],
           np.sort(rng.integers(0, shape[2], out_hw[0])), rng.integers(0, shape[3], out_hw[1]))
    want = gu.resize_nearest(x, *idx)
    for got in _each_count(lambda: fu.resize_nearest_for(x.shape, x.dtype, *idx), x):
        np.testing.assert_array_equal(got, want)


def test_a_second_process_loads_both_forms_from_numbas_cache(tmp_path):
    """Each form is compiled once per machine, not once per process: a second process with the same
    cache folder loads the serial and the parallel form (Numba's cache hits, no miss). (Closures
    over the core missed every time: their key holds the pickled core, which differs per process.)"""
    code = ("import numpy as np, numba\n"
            "from npusim_kernels.fast import requant as fr, rows\n"
            "rows.PARALLEL_MIN_ELEMS = 4\n"
            "acc = np.arange(64, dtype=np.int32).reshape(2, 4, 8)\n"
            "for shape in ((1, 2, 2), acc.shape):\n"
            "    fr.requantize_f32_for(shape, np.ones(1, np.float32), 1, 0, 0, 255, np.uint8)(acc.reshape(shape)"
            " if shape == acc.shape else acc.reshape(-1)[:4].reshape(shape))\n"
            "print(*(sum(f.stats.cache_hits.values()) for f in fr._REQUANT),"
            " *(sum(f.stats.cache_misses.values()) for f in fr._REQUANT))\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    assert runs[0].stdout.split() == ["0", "0", "1", "1"]  # the first process compiles each form once
    assert runs[1].stdout.split() == ["1", "1", "0", "0"]  # the second loads them
