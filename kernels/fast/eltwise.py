"""Fast QLinearAdd / QLinearMul (Numba); same names, signatures and numbers as golden.eltwise."""
import numpy as np
from llvmlite import ir as llvm_ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from npusim_kernels.fast._jit import njit

F32 = np.float32


@intrinsic
def _llvm_fma_f32(typingctx, x, y, z):
    """LLVM's llvm.fma.f32: x*y + z rounded once (IEEE fusedMultiplyAdd). It compiles to
    vfmadd on FMA3 CPUs and to a call of libm's fmaf elsewhere, exact on both (unlike
    llvm.fmuladd, which may or may not fuse)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        f32 = llvm_ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, llvm_ir.FunctionType(f32, [f32, f32, f32]),
                                            "llvm.fma.f32")
        return builder.call(fn, args)
    return sig, codegen


@njit
def fma_f32(x, y, z):
    """round_f32(x*y + z) with one rounding, float32 in and out (llvm.fma.f32). The golden
    kernel computes the same value differently (float64 TwoSum), so the tests compare two
    independent implementations."""
    return _llvm_fma_f32(np.float32(x), np.float32(y), np.float32(z))


@njit
def _cvt_sat(v, qmin, qmax):
    """cvtps2dq (half-even; out of range -> INT32_MIN), then int16 and [qmin, qmax] saturation."""
    if abs(np.float64(v)) < 2.0**31:
        q = np.int64(np.rint(v))
    else:
        q = np.int64(-(2**31))
    q = min(max(q, -32768), 32767)
    return min(max(q, qmin), qmax)


@njit
def _add_core(a, b, r_a, r_b, k, mode, qmin, qmax, out):
    for i in range(a.size):
        fa = np.float32(a[i])
        fb = np.float32(b[i])
        if mode == 1:
            v = fma_f32(fb, r_b, fma_f32(fa, r_a, k))
        else:
            v = fma_f32(fa, r_a, fma_f32(fb, r_b, k))
        out[i] = _cvt_sat(v, qmin, qmax)


@njit
def _mul_core(a, b, a_zp, b_zp, r, y_zp_f, qmin, qmax, out):
    for i in range(a.size):
        prod = (np.int32(a[i]) - a_zp) * (np.int32(b[i]) - b_zp)
        v = np.float32(np.float32(np.float32(prod) * r) + y_zp_f)
        out[i] = _cvt_sat(v, qmin, qmax)


def _mode(a_shape, b_shape):
    n = max(len(a_shape), len(b_shape))
    a = (1,) * (n - len(a_shape)) + tuple(a_shape)
    b = (1,) * (n - len(b_shape)) + tuple(b_shape)
    for da, db in zip(reversed(a), reversed(b)):
        if max(da, db) > 1:
            return 1 if da == 1 else (2 if db == 1 else 0)
    return 1


def _flat_operands(a, b):
    """(output shape, a and b broadcast to it, flat and contiguous); no broadcast copy when the shapes agree."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        a, b = np.broadcast_arrays(a, b)
    return a.shape, np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)


def qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """QLinearAdd; formula, dtypes and rounding as golden.eltwise.qlinear_add."""
    r_a = F32(F32(a_scale) / F32(y_scale))
    r_b = F32(F32(b_scale) / F32(y_scale))
    k = F32(F32(y_zp) - fma_f32(r_a, F32(a_zp), F32(r_b * F32(b_zp))))
    shape, fa, fb = _flat_operands(a, b)
    out = np.empty(shape, out_dtype)
    _add_core(fa, fb, r_a, r_b, k, _mode(np.shape(a), np.shape(b)), int(qmin), int(qmax), out.reshape(-1))
    return out


def qlinear_mul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """QLinearMul; formula, dtypes and rounding as golden.eltwise.qlinear_mul."""
    r = F32(F32(F32(a_scale) * F32(b_scale)) / F32(y_scale))
    shape, fa, fb = _flat_operands(a, b)
    out = np.empty(shape, out_dtype)
    _mul_core(fa, fb, np.int32(a_zp), np.int32(b_zp), r, F32(y_zp), int(qmin), int(qmax), out.reshape(-1))
    return out
