"""Argument and headroom checks that the golden and the fast kernels both run before computing.

They decide which inputs a kernel accepts, not what it computes, so one copy serves both sets
(the arithmetic stays written twice). Every failure is a ValueError naming the argument, the
expected range or types, and what was given.
"""
import numpy as np

from npusim_kernels.params import ROUNDINGS, add_left_shift

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
ACC_LIMIT = 2 ** 47  # |acc| < 2^47: TFLite's precondition of MultiplyByQuantizedMultiplier(int64)
ACT_DTYPES = (np.uint8, np.int8, np.uint16, np.int16)  # activations of fixed_add, fixed_mul and the pools


def check_rounding(rounding):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be 'double' or 'single', got {rounding!r}")


def check_range(v, lo, hi, what):
    """Raise ValueError naming the first index where v leaves [lo, hi]."""
    v = np.asarray(v)
    bad = (v < lo) | (v > hi)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what} out of [{lo}, {hi}] at index {idx}: {int(v[idx])}")


def check_acc_i64(acc, what):
    """Raise ValueError naming the first index where `acc` leaves (−2^47, 2^47)."""
    bad = (acc <= -ACC_LIMIT) | (acc >= ACC_LIMIT)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what}: accumulator outside ±2^47 at index {idx}: {int(acc[idx])}")


def check_int(x, zp, what, dtypes=(np.uint8, np.int8)):
    """x as an array, after checking that its dtype is one of `dtypes` (u8/i8 by default) and its
    zero point inside the type's range."""
    x = np.asarray(x)
    if x.dtype not in dtypes:
        raise ValueError(f"{what} must be {' or '.join(np.dtype(d).name for d in dtypes)}, got {x.dtype}")
    info = np.iinfo(x.dtype)
    if not info.min <= int(zp) <= info.max:
        raise ValueError(f"{what} zero point {int(zp)} outside {x.dtype} range")
    return x


def headroom(zp, dtype):
    """max |x − zp| over x's whole type."""
    info = np.iinfo(dtype)
    return max(int(zp) - int(info.min), int(info.max) - int(zp))


def add_operands(a, a_zp, b, b_zp, out_dtype):
    """(a, b, L) for fixed_add after its checks: 8/16-bit operands, zero points in range, and
    |x − x_zp|·2^L inside int32 for every value of either type (L = add_left_shift(out_dtype))."""
    a = check_int(a, a_zp, "fixed_add a", ACT_DTYPES)
    b = check_int(b, b_zp, "fixed_add b", ACT_DTYPES)
    shift = add_left_shift(out_dtype)
    if max(headroom(a_zp, a.dtype), headroom(b_zp, b.dtype)) << shift > I32_MAX:
        raise ValueError(f"fixed_add: {a.dtype} + {b.dtype} inputs shifted by {shift} overflow int32 "
                         f"(output {np.dtype(out_dtype).name})")
    return a, b, shift


def mul_operands(a, a_zp, b, b_zp):
    """(a, b) for fixed_mul after its checks: 8/16-bit operands, zero points in range, and
    max|a − a_zp|·max|b − b_zp| over the types inside int32."""
    a = check_int(a, a_zp, "fixed_mul a", ACT_DTYPES)
    b = check_int(b, b_zp, "fixed_mul b", ACT_DTYPES)
    if headroom(a_zp, a.dtype) * headroom(b_zp, b.dtype) > I32_MAX:
        raise ValueError(f"fixed_mul: products of {a.dtype} (zp {int(a_zp)}) and {b.dtype} (zp {int(b_zp)}) "
                         f"can leave int32")
    return a, b


def pool_operand(x, x_zp, taps, what):
    """x after the pools' checks: 8- or 16-bit, zero point in range, and a sum of `taps` values
    x − x_zp inside int32 for any values of x's type (taps·max|x − x_zp| < 2^31)."""
    x = check_int(x, x_zp, f"{what} x", ACT_DTYPES)
    if int(taps) * headroom(x_zp, x.dtype) > I32_MAX:
        raise ValueError(f"{what}: a sum of {int(taps)} {x.dtype} values (zp {int(x_zp)}) can leave int32")
    return x


def pool_codes_operand(x, x_zp, taps, what):
    """x after the checks of a pool that sums stored codes (fixed_avgpool_codes): 8- or 16-bit, zero
    point in range, and a sum of `taps` codes (or zero points) inside int32 (taps·max|code| < 2^31)."""
    x = check_int(x, x_zp, f"{what} x", ACT_DTYPES)
    if int(taps) * headroom(0, x.dtype) > I32_MAX:
        raise ValueError(f"{what}: a sum of {int(taps)} {x.dtype} codes can leave int32")
    return x
