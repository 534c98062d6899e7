"""Fast lookup-table ops (Numba); same names, signatures and numbers as golden.lut.
Table building is offline (scalar loops over 256 codes); applying the table is the kernel.

Applying a table of bytes (u8/i8/bool entries) is a register shuffle, `_lut_blocks`, an LLVM-level
intrinsic over blocks of WIDTH input bytes (the table lives in registers, no memory gather):
- WIDTH 64, AVX-512 VBMI: the 256 table bytes are 4 zmm t0..t3; vpermi2b
  (`llvm.x86.avx512.vpermi2var.qi.512`) picks byte x & 127 of t0‖t1 and of t2‖t3, and the top bit of
  x selects between the two (vpmovb2m + masked blend).
- WIDTH 32, AVX2: vpshufb (`llvm.x86.avx2.pshuf.b`) looks up 16 bytes per 128-bit lane and gives 0
  where its index has bit 7 set. For each high nibble h, idx = (x ^ 16h) +sat 0x70 (unsigned
  saturating add, vpaddusb) is 0x70 + (x & 15) when x >> 4 == h and >= 0x80 otherwise, so
  vpshufb(table[16h : 16h + 16] in both lanes, idx) is table[x] or 0, and the OR over h is table[x].
- WIDTH 0 (neither): the plain loop `_apply`, as for wider tables (one load per element).
WIDTH is 64 if both the host CPU and Numba's target features (pairmadd.usable_features) have
AVX-512 VBMI, else 32 if they have AVX2, else 0. Each width is a separate compiled function
(SHUFFLE[WIDTH]), so the other one is never compiled for a CPU that lacks it (LLVM cannot lower
vpermi2b without VBMI). Tables must have 256 entries (the shuffles do not check).
"""
import functools
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from npusim_kernels.fast._jit import njit
from npusim_kernels.fast.bound import Bound
from npusim_kernels.fast.eltwise import fma_f32
from npusim_kernels.fast.pairmadd import usable_features
from npusim_kernels.fast.quantize import dequantize_linear, quantize_linear

F32 = np.float32
_ALPHA = np.array([4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05,
                   8.51377133304701e-03, 2.48287947061529e-01], F32)
_BETA = np.array([6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06,
                  1.70198817374094e-03, 1.16817656904453e-01, 9.93151921023180e-01], F32)


@njit
def _logistic(x, alpha, beta, out):
    """MLAS logistic (FMA3 kernel): clamp to [-18, 18], p = x·P(x²), q = Q(x²), clamp(p/q + 0.5, 0, 1)."""
    for i in range(x.size):
        v = min(max(x[i], np.float32(-18.0)), np.float32(18.0))
        v2 = np.float32(v * v)
        p = fma_f32(v2, alpha[0], alpha[1])
        for j in range(2, alpha.size):
            p = fma_f32(p, v2, alpha[j])
        p = np.float32(p * v)
        q = fma_f32(v2, beta[0], beta[1])
        for j in range(2, beta.size):
            q = fma_f32(q, v2, beta[j])
        y = np.float32(np.float32(p / q) + np.float32(0.5))
        out[i] = min(max(y, np.float32(0.0)), np.float32(1.0))


def _codes(x_scale, x_zp, dtype):
    codes = np.arange(256, dtype=np.uint8).view(dtype).astype(np.int64)
    return (F32(x_scale) * (codes - int(x_zp)).astype(F32)).astype(F32)


def _table(f, y_scale, y_zp, dtype):
    info = np.iinfo(dtype)
    return quantize_linear(f, y_scale, y_zp, None, None, info.min, info.max, dtype)


def sigmoid_lut(x_scale, x_zp, y_scale, y_zp, dtype):
    """QLinearSigmoid table (256 x dtype)."""
    f = np.empty(256, F32)
    _logistic(_codes(x_scale, x_zp, dtype), _ALPHA, _BETA, f)
    return _table(f, y_scale, y_zp, dtype)


def leaky_relu_lut(alpha, x_scale, x_zp, y_scale, y_zp, dtype):
    """QLinearLeakyRelu table: v if v >= 0 else f32(alpha·v)."""
    v = _codes(x_scale, x_zp, dtype)
    return _table(np.where(v >= 0, v, (F32(alpha) * v).astype(F32)).astype(F32), y_scale, y_zp, dtype)


def host_width(host=None, build=None):
    """64 (AVX-512 VBMI), 32 (AVX2) or 0: bytes per block of the byte-table shuffle (module doc)."""
    both = usable_features(host, build)
    return 64 if {"avx512vbmi", "avx512bw"} <= both else 32 if "avx2" in both else 0


WIDTH = host_width()
_BYTES = (types.uint8, types.int8, types.boolean)


@intrinsic
def _lut_blocks(typingctx, width, xb, table, out, n):
    """out[i] = table[byte(xb[i])] for i < n, n a multiple of width (literal, 64 or 32); xb, table (256)
    and out contiguous arrays of bytes (u8, i8 or bool); bounds are the caller's duty."""
    if not isinstance(width, types.IntegerLiteral) or width.literal_value not in (64, 32) or not all(
            isinstance(a, types.Array) and a.layout == "C" and a.dtype in _BYTES for a in (xb, table, out)):
        return None
    w = width.literal_value

    def codegen(context, builder, signature, args):
        n = args[4]
        i8, i32, intp = ir.IntType(8), ir.IntType(32), context.get_value_type(types.intp)
        vb, v16 = ir.VectorType(i8, w), ir.VectorType(i8, 16)
        xp, tp, op = (context.make_array(signature.args[k])(context, builder, args[k]).data for k in (1, 2, 3))

        def at(ptr, off, vty):
            return builder.bitcast(builder.gep(ptr, [off]), vty.as_pointer())

        def fn(name, nargs):
            return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vb, [vb] * nargs), name)

        def splat(byte):
            return ir.Constant(vb, [byte] * w)

        if w == 64:
            t = [builder.load(at(tp, ir.Constant(intp, 64 * k), vb), align=1) for k in range(4)]
            perm = fn("llvm.x86.avx512.vpermi2var.qi.512", 3)
        else:
            both_lanes = ir.Constant(ir.VectorType(i32, 32), list(range(16)) * 2)
            t = [builder.load(at(tp, ir.Constant(intp, 16 * h), v16), align=1) for h in range(16)]
            t = [builder.shuffle_vector(v, v, both_lanes) for v in t]
            shuf, addus = fn("llvm.x86.avx2.pshuf.b", 2), fn("llvm.uadd.sat.v32i8", 2)
        with cgutils.for_range(builder, builder.udiv(n, ir.Constant(intp, w))) as loop:
            off = builder.mul(loop.index, ir.Constant(intp, w))
            x = builder.load(at(xp, off, vb), align=1)
            if w == 64:
                top = builder.icmp_signed("<", x, splat(0))
                y = builder.select(top, builder.call(perm, [t[2], x, t[3]]), builder.call(perm, [t[0], x, t[1]]))
            else:
                y = splat(0)
                for h in range(16):
                    idx = builder.call(addus, [builder.xor(x, splat(16 * h)), splat(0x70)])
                    y = builder.or_(y, builder.call(shuf, [t[h], idx]))
            builder.store(y, at(op, off, vb), align=1)
        return context.get_dummy_value()
    return types.void(width, xb, table, out, types.intp), codegen


@njit
def _apply(xb, table, out):
    """out[i] = table[byte(xb[i])], xb u8 or i8."""
    for i in range(xb.size):
        out[i] = table[np.uint8(xb[i])]


@njit
def _apply_bytes(width, xb, table, out):
    """_apply of a table of bytes: whole blocks of width (literal) by the shuffle, the rest one by one."""
    done = xb.size - xb.size % width
    _lut_blocks(width, xb, table, out, done)
    _apply(xb[done:], table, out[done:])


@njit
def _shuffle_zmm(xb, table, out):
    _apply_bytes(64, xb, table, out)


@njit
def _shuffle_ymm(xb, table, out):
    _apply_bytes(32, xb, table, out)


SHUFFLE = {64: _shuffle_zmm, 32: _shuffle_ymm, 0: _apply}  # WIDTH -> _apply of a table of bytes


def apply_lut(x, table):
    """y[i] = table[byte(x[i])]; a table of bytes by register shuffles (module doc), others by a load each."""
    x = np.asarray(x)
    return apply_lut_for(x.shape, x.dtype, table)(x)


def apply_lut_for(x_shape, x_dtype, table):
    """-> Bound y(x): apply_lut of inputs of this shape and dtype with this table (its kernel, by
    the table's item size and WIDTH now, settled once)."""
    table = np.ascontiguousarray(table)
    core = SHUFFLE[WIDTH] if table.itemsize == 1 else _apply
    return Bound(core, (table,), ((0, (-1,)),), out=table.dtype, shape=tuple(x_shape), view=(-1,))


def softmax_exp_table(x_scale, reduce_len, is_signed):
    """QLinearSoftmax float32 table, built in float64 (see golden.lut.softmax_exp_table)."""
    x_scale = F32(x_scale)
    shift = max(0.0, np.log(np.float64(np.finfo(F32).max) / np.float64(reduce_len)) - 5.0) / np.float64(x_scale)
    i = np.arange(256, dtype=np.float64)
    vals = np.exp((i - 255 + shift) * np.float64(x_scale)).astype(F32)
    table = np.zeros(256, F32)
    idx = ((np.arange(256) - 128) & 0xFF) if is_signed else np.arange(256)
    table[idx] = vals
    return table


@njit
def _softmax_rows(rows, table, is_signed, ys, y_zp, qmax, out):
    for r in range(rows.shape[0]):
        xmax = np.int64(rows[r, 0])
        for j in range(rows.shape[1]):
            xmax = max(xmax, np.int64(rows[r, j]))
        base = 127 - xmax if is_signed else 255 - xmax
        vsum = np.float32(0.0)
        for j in range(rows.shape[1]):
            vsum = np.float32(vsum + table[(base + np.int64(rows[r, j])) & 0xFF])
        for j in range(rows.shape[1]):
            e = table[(base + np.int64(rows[r, j])) & 0xFF]
            q = np.int64(np.rint(np.float64(e) * np.float64(ys) / np.float64(vsum))) + y_zp
            out[r, j] = min(q, qmax)


_exp_tables = functools.lru_cache(maxsize=256)(softmax_exp_table)  # per (x_scale, reduce length, signedness)
_QMAX = {np.dtype(np.uint8): 255, np.dtype(np.int8): 127}


def qlinear_softmax(x, x_scale, x_zp, y_scale, y_zp, axis, opset, dtype):
    """QLinearSoftmax; formula as golden.lut.qlinear_softmax. The exp table is built once per
    (x_scale, reduce length, signedness) and reused."""
    x = np.asarray(x)
    axis = axis % x.ndim
    last = opset < 13 or axis == x.ndim - 1
    if opset < 13:
        rows = x.reshape(math.prod(x.shape[:axis]), -1)
    else:
        xt = x if last else np.moveaxis(x, axis, -1)
        rows = np.ascontiguousarray(xt).reshape(-1, x.shape[axis])
    is_signed = x.dtype == np.int8
    table = _exp_tables(F32(x_scale), rows.shape[1], is_signed)
    out = np.empty(rows.shape, np.int64)
    qmax = _QMAX.get(np.dtype(dtype)) or int(np.iinfo(dtype).max)
    _softmax_rows(rows, table, is_signed, F32(math.floor(F32(1.0) / F32(y_scale))), int(y_zp), qmax, out)
    y = out.astype(dtype)
    return y.reshape(x.shape) if last else np.moveaxis(y.reshape(xt.shape), -1, axis)


def qlinear_concat(inputs, input_scales, input_zps, y_scale, y_zp, axis, dtype):
    """QLinearConcat; formula as golden.lut.qlinear_concat (`qlinear_concat_for`)."""
    return qlinear_concat_for(input_scales, input_zps, y_scale, y_zp, axis, dtype)(*inputs)


def qlinear_concat_for(input_scales, input_zps, y_scale, y_zp, axis, dtype):
    """-> y(*inputs): QLinearConcat with each input's requantization settled here, once: an input
    whose (scale, zp) equal (y_scale, y_zp) is copied, any other goes through the table of its 256
    codes, quantize(f32(x_scale·f32(code − x_zp)), y_scale, y_zp) (golden.lut.requant_lut's entries,
    computed by this module's dequantize and quantize), applied by register shuffles (`SHUFFLE`)
    straight into the output: per run one allocation, and per input and row of the dimensions
    before `axis` one copy or one shuffle call."""
    info = np.iinfo(dtype)
    tables = []
    for s, z in zip(input_scales, input_zps):
        if F32(s) == F32(y_scale) and int(z) == int(y_zp):
            tables.append(None)
        else:
            codes = np.arange(256, dtype=np.uint8).view(dtype)
            tables.append(quantize_linear(dequantize_linear(codes, s, z, None, None), y_scale, y_zp, None, None,
                                          info.min, info.max, dtype))
    shuffle = SHUFFLE[WIDTH]

    def run(*inputs):
        xs = [np.ascontiguousarray(x, dtype) for x in inputs]
        if len(xs) != len(tables):
            raise ValueError(f"qlinear_concat: {len(xs)} inputs for {len(tables)} scales")
        first = xs[0].shape
        ax = axis % max(len(first), 1)
        for x in xs:
            if x.ndim != len(first) or x.shape[:ax] != first[:ax] or x.shape[ax + 1:] != first[ax + 1:]:
                raise ValueError(f"qlinear_concat: input shapes {[v.shape for v in xs]} differ outside axis {axis}")
        out = np.empty(first[:ax] + (sum(x.shape[ax] for x in xs),) + first[ax + 1:], dtype)
        outer = math.prod(first[:ax])
        rows = out.reshape(outer, -1)
        off = 0
        for x, table in zip(xs, tables):
            src = x.reshape(outer, -1)
            n = src.shape[1]
            if table is None:
                rows[:, off:off + n] = src
            else:
                for a in range(outer):
                    shuffle(src[a], table, rows[a, off:off + n])
            off += n
        return out
    return run
