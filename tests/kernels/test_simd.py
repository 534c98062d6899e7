"""The elementwise and data-movement cores compile to packed SIMD code (AVX2 ymm or AVX-512 zmm).

Each core is compiled afresh (a cached build cannot be inspected) on small arrays of the types
the runtime passes, and its assembly must hold the packed instructions of its arithmetic. The
results themselves are checked against the golden kernels elsewhere.
"""
import re

import numba
import numpy as np
import pytest

import npusim_kernels.fast.eltwise as fe
import npusim_kernels.fast.fixedpoint as ff
import npusim_kernels.fast.pool as fp
import npusim_kernels.fast.quantize as fq
import npusim_kernels.fast.requant as fr
import npusim_kernels.fast.upsample as fu

U8 = np.zeros(64, np.uint8)
P6 = np.ones(6, np.float32)
F2 = np.zeros((1, 64), np.float32)
ONE = np.ones(1, np.float32)
I64 = np.int64
MUL = (I64(1 << 30), I64(3))  # one multiplier (m0, n)

CASES = {  # name: (core, args, packed instructions that must appear on ymm/zmm registers)
    "add_vv": (fe._span, (fe._ADD, U8, U8, P6, U8.copy()), ("vfmadd", "vround|vrndscale")),
    "add_scalar": (fe._span, (fe._ADD, U8[0], U8, P6, U8.copy()), ("vfmadd", "vround|vrndscale")),
    "mul_vv": (fe._span, (fe._MUL, U8, U8, P6, U8.copy()), ("vmulps", "vround|vrndscale")),
    "mul_scalar": (fe._span, (fe._MUL, U8, U8[0], P6, U8.copy()), ("vmulps", "vround|vrndscale")),
    "quantize": (fq._quantize_rows, (0, 1, F2, ONE, np.zeros(1, np.int32), 0, 255, U8.reshape(F2.shape)),
                 ("vdivps", "vround|vrndscale")),
    "resize_nearest_row_copy": (fu._gather_planes, (0, 1, U8.reshape(1, 1, 1, 64),
                                                    *(np.zeros(n, np.int64) for n in (1, 1, 2, 64)),
                                                    np.zeros((1, 2, 64), np.uint8)), ("vmovdqu|vmovups",)),
    "global_avgpool_sum": (fp._gap_rows, (0, 1, U8.reshape(1, 64), 0, P6, 0, np.zeros(1, np.int64)), ("vpadd",)),
    "npu_requantize": (ff._requant_core, (np.zeros((1, 1, 64), np.int32), np.ones(1, I64), np.ones(1, I64), False,
                                          I64(3), 0, 255, U8.reshape(1, 1, 64)), ("vpmuldq", "vpadd")),
    "npu_add": (ff._ADD_CORES[1], (U8.reshape(1, 64), U8.reshape(1, 64), I64(1), I64(2), I64(20), *MUL, *MUL, *MUL, False,
                               I64(3), 0, 255, U8.reshape(1, 64).copy()), ("vpmuldq", "vpadd")),
    "npu_mul_single": (ff._mul_core, (U8.reshape(1, 64), U8[:1].reshape(1, 1), I64(1), I64(2), *MUL, True, I64(3), 0, 255,
                                      U8.reshape(1, 64).copy()), ("vpmuldq", "vpadd")),
    "conv_transpose_plane": (fu._conv_transpose_core, (U8.reshape(1, 1, 8, 8), 0, np.ones((1, 1, 2, 2), np.int8),
                                                       np.zeros(1, np.int32), np.zeros(1, np.int32), 2, 2, 0, 0, 1, 1,
                                                       1, np.zeros((1, 1, 16, 16), np.int32)), ("vpmulld",)),
    "maxpool_rows": (fp._max_planes, (0, 1, U8.reshape(1, 64), 1, 64, 1, 2, 1, 2, 0, 0, 1, 1, 0, 1, 32,
                                      U8[:32].reshape(1, 32).copy()),
                     ("vpmaxub",)),
    "dequantize": (fq._dequantize_rows, (0, 1, U8.reshape(F2.shape), ONE, U8[:1], F2.copy()), ("vsubps", "vmulps")),
    "requantize": (fr._requant_rows, (0, 1, np.zeros((1, 64), np.int32), ONE, 1, 3, 0, 255, U8.reshape(1, 64).copy()),
                   ("vcvtdq2ps", "vmulps")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_core_is_vectorized(case):
    core, args, ops = CASES[case]
    fresh = numba.njit(core.py_func)
    fresh(*args)
    asm = fresh.inspect_asm(fresh.signatures[0])
    for op in ops:
        assert re.search(rf"\b(?:{op})\w*\s[^\n]*%[yz]mm", asm), f"{case}: no packed {op} on ymm/zmm"
