"""Fast QLinearAdd / QLinearMul (Numba); same names, signatures and numbers as golden.eltwise."""
import functools

import numpy as np
from llvmlite import ir as llvm_ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from npusim_kernels.fast import rows
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


@njit(inline="always")
def fma_f32(x, y, z):
    """round_f32(x*y + z) with one rounding, float32 in and out (llvm.fma.f32). The golden
    kernel computes the same value differently (float64 TwoSum), so the tests compare two
    independent implementations."""
    return _llvm_fma_f32(np.float32(x), np.float32(y), np.float32(z))


@intrinsic
def _llvm_roundeven_f32(typingctx, x):
    """LLVM's llvm.roundeven.f32: round half to even, whatever the FP rounding mode. It compiles
    to vroundps/vrndscaleps (imm 8) with SSE4.1 and later, vectorized, and to libm's roundevenf
    elsewhere."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        f32 = llvm_ir.FloatType()
        fn = cgutils.get_or_insert_function(builder.module, llvm_ir.FunctionType(f32, [f32]), "llvm.roundeven.f32")
        return builder.call(fn, args)
    return sig, codegen


@njit(inline="always")
def rne_f32(x):
    """round_half_even(x) as a float32 (exact: every float32 of magnitude >= 2^23 is an integer)."""
    return _llvm_roundeven_f32(np.float32(x))


@njit(inline="always")
def _cvt_sat(v, lo, hi):
    """cvtps2dq of float32 v (half to even; NaN or |v| >= 2^31 -> INT32_MIN), then saturation to
    int16 and to [qmin, qmax], branch-free: lo = max(qmin, -32768), hi = min(qmax, 32767) as
    float32. Clamping before rounding is the same as after (the bounds are integers and
    rounding is monotone); v <= -2^31 clamps to lo, and NaN or v >= 2^31 (INT32_MIN) is
    selected to lo. Returns int32 in [lo, hi]."""
    q = rne_f32(min(max(v, lo), hi))
    return np.int32(q if v < np.float32(2.0**31) else lo)


def _lane(x, i):
    """x[i] of a 1-D array; x itself of a scalar (a broadcast operand hoisted out of the loop)."""


@overload(_lane, inline="always")
def _lane_impl(x, i):
    if isinstance(x, types.Array):
        return lambda x, i: x[i]
    return lambda x, i: x


_ADD, _MUL = 0, 1


@njit
def _span(op, x, y, p, out):
    """One contiguous run of outputs; x, y each an array of out's length or one hoisted scalar;
    p float32 (6,) = (p0, p1, p2, p3, lo, hi).
    _ADD, p0..3 = (r_x, r_y, k, -):       v = fma(x, r_x, fma(y, r_y, k))
    _MUL, p0..3 = (x_zp, y_zp, r, out_zp):  v = f32(f32((x - x_zp)·(y - y_zp))·r) + out_zp; both
        differences are exact in float32 (8/16-bit codes), so their float32 product is the integer
        product rounded once to nearest even, MLAS's f32(int32 product)
    Both in float32 lanes; out[i] = _cvt_sat(v, lo, hi)."""
    p0, p1, p2, p3, lo, hi = p[0], p[1], p[2], p[3], p[4], p[5]
    if op == _ADD:
        for i in range(out.size):
            v = fma_f32(np.float32(_lane(x, i)), p0, fma_f32(np.float32(_lane(y, i)), p1, p2))
            out[i] = _cvt_sat(v, lo, hi)
    else:
        for i in range(out.size):
            d = np.float32(np.float32(_lane(x, i)) - p0) * np.float32(np.float32(_lane(y, i)) - p1)
            out[i] = _cvt_sat(np.float32(np.float32(d * p2) + p3), lo, hi)


@njit
def _binary_rows(lo, hi, x, y, op, p, out):
    """The rows lo <= r < hi of out (R, n) (a row core, npusim_kernels.fast.rows); operand x is
    (R_x, n) or (R_x, 1) with R_x dividing R: output row r reads row r % R_x, a whole row or one
    value held for the row (the same for y). No broadcast copy."""
    n = out.shape[1]
    for r in range(lo, hi):
        xr, yr = x[r % x.shape[0]], y[r % y.shape[0]]
        if x.shape[1] == n and y.shape[1] == n:
            _span(op, xr, yr, p, out[r])
        elif x.shape[1] == n:
            _span(op, xr, yr[0], p, out[r])
        else:
            _span(op, xr[0], yr, p, out[r])


_BINARY = rows.over_rows(_binary_rows)


@functools.lru_cache(maxsize=1024)
def _layout(a_shape, b_shape):
    """(output shape, R, n, a's 2-D shape, b's 2-D shape, a_scalar) of _binary_rows, or None when
    an operand is not of the form [1 ... 1, full ... full | broadcast rows] (then both are copied).

    The output is seen as (R, n), n the product of the innermost dims over which each operand
    is either full or broadcast (the same state throughout); a_scalar: MLAS's broadcast mode
    (golden.eltwise.broadcast_mode) is 'a_scalar'."""
    nd = max(len(a_shape), len(b_shape))
    a = (1,) * (nd - len(a_shape)) + tuple(a_shape)
    b = (1,) * (nd - len(b_shape)) + tuple(b_shape)
    out = tuple(np.broadcast_shapes(a, b))
    dims = [(d, da == d, db == d) for d, da, db in zip(out, a, b) if d > 1]  # (size, a full, b full)
    a_scalar = not dims or not dims[-1][1]
    cut = len(dims)
    while cut and dims[cut - 1][1:] == dims[-1][1:]:
        cut -= 1
    n = int(np.prod([d for d, _, _ in dims[cut:]], dtype=np.int64))
    shapes = []
    for k in (1, 2):
        full = [f[k] for f in dims[:cut]]
        if full != sorted(full):  # a full row dim before a broadcast one: row r % R_x does not index it
            return None
        rows = int(np.prod([f[0] for f in dims[:cut] if f[k]], dtype=np.int64))
        shapes.append((rows, n if not dims[cut:] or dims[-1][k] else 1))
    return out, int(np.prod(out, dtype=np.int64)) // max(n, 1), n, shapes[0], shapes[1], a_scalar


def _binary_for(op, a_shape, b_shape, p, out_dtype):
    """-> y(a, b) of operands of these shapes: the output shape, the rows view and MLAS's operand
    order settled once; each call allocates y and makes one Numba call (operands of a layout
    _binary_rows cannot index are broadcast and copied first)."""
    lay = _layout(tuple(a_shape), tuple(b_shape))
    copy = lay is None
    if copy:
        lay = _layout(*(tuple(np.broadcast_shapes(tuple(a_shape), tuple(b_shape))),) * 2)
    shape, r, n, a2, b2, a_scalar = lay
    if r == 1 and {a2, b2} <= {(1, n), (1, 1)}:  # each operand full or one value: rows to split
        full = (1, n)
        r, n = rows.flat_rows(shape)
        a2, b2 = ((r, n) if v == full else v for v in (a2, b2))
    swap = a_scalar and op == _ADD  # v = fma(b, r_b, fma(a, r_a, k))
    if swap:
        p = p[[1, 0, 2, 3, 4, 5]]
    core = rows.row_bound(_BINARY, (op, p), ((1, b2), (0, a2)) if swap else ((0, a2), (1, b2)), rows=r,
                          elements=r * n, out=out_dtype, shape=shape, view=(r, n))
    if not copy and r * n:
        return core

    def run(a, b):
        if not r * n:
            return np.empty(shape, out_dtype)
        return core(*(np.ascontiguousarray(v) for v in np.broadcast_arrays(a, b)))
    return run


def _binary(op, a, b, p, out_dtype):
    a, b = np.asarray(a), np.asarray(b)
    return _binary_for(op, a.shape, b.shape, p, out_dtype)(a, b)


def _params(p0, p1, p2, p3, qmin, qmax):
    """_span's parameter vector (cached per node, never written); int16 saturation folded into
    [qmin, qmax]."""
    return np.array([p0, p1, p2, p3, max(qmin, -32768), min(qmax, 32767)], F32)


@functools.lru_cache(maxsize=4096)
def _add_params(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, qmin, qmax):
    r_a = F32(F32(a_scale) / F32(y_scale))
    r_b = F32(F32(b_scale) / F32(y_scale))
    k = F32(F32(y_zp) - fma_f32(r_a, F32(a_zp), F32(r_b * F32(b_zp))))
    return _params(r_a, r_b, k, 0, qmin, qmax)


@functools.lru_cache(maxsize=4096)
def _mul_params(a_scale, a_zp, b_scale, b_zp, y_scale, y_zp, qmin, qmax):
    r = F32(F32(F32(a_scale) * F32(b_scale)) / F32(y_scale))
    return _params(a_zp, b_zp, r, y_zp, qmin, qmax)


def qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """QLinearAdd; formula, dtypes and rounding as golden.eltwise.qlinear_add: r_a, r_b, k there;
    v = fma(a, r_a, fma(b, r_b, k)), or fma(b, r_b, fma(a, r_a, k)) in MLAS's 'a_scalar' mode."""
    a, b = np.asarray(a), np.asarray(b)
    return qlinear_add_for(a.shape, a_scale, a_zp, b.shape, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype)(a, b)


def qlinear_add_for(a_shape, a_scale, a_zp, b_shape, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """-> y(a, b): qlinear_add of operands of these shapes, parameters and layout settled once."""
    p = _add_params(F32(a_scale), int(a_zp), F32(b_scale), int(b_zp), F32(y_scale), int(y_zp), int(qmin), int(qmax))
    return _binary_for(_ADD, a_shape, b_shape, p, out_dtype)


def qlinear_mul(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """QLinearMul; formula, dtypes and rounding as golden.eltwise.qlinear_mul."""
    a, b = np.asarray(a), np.asarray(b)
    return qlinear_mul_for(a.shape, a_scale, a_zp, b.shape, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype)(a, b)


def qlinear_mul_for(a_shape, a_scale, a_zp, b_shape, b_scale, b_zp, y_scale, y_zp, qmin, qmax, out_dtype):
    """-> y(a, b): qlinear_mul of operands of these shapes, parameters and layout settled once."""
    p = _mul_params(F32(a_scale), int(a_zp), F32(b_scale), int(b_zp), F32(y_scale), int(y_zp), int(qmin), int(qmax))
    return _binary_for(_MUL, a_shape, b_shape, p, out_dtype)
