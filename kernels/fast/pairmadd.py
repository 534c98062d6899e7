"""Register-blocked int16 pair multiply-add GEMM: out:i32 = bias + Σ_r pair products, wrapping.

out[o, p] = bias[o] + Σ_{r < K2} (a[r, p, 0]·w[o, 2r] + a[r, p, 1]·w[o, 2r + 1])   (int32, wraps mod 2^32)

Both operands are int16 pairs stored as one int32 word (v1 << 16) | (v0 & 0xffff) (`pair_word`):
a as "col", K2 rows of P words (a pair-interleaved (K2, P, 2) int16 array), each row padded to
whole tiles; w as K2 words per row o (`pack_pairs`, at plan time for conv weights).

Instruction mapping. The micro-kernel `_tile` is an LLVM-level intrinsic: for each r it loads NV
vectors of LANES words (2·LANES int16) from col, broadcasts each of the MR rows' pair words and calls
`llvm.x86.avx512.pmaddw.d.512` (LANES = 16, zmm) or `llvm.x86.avx2.pmadd.wd` (LANES = 8, ymm),
i.e. vpmaddwd: lane q = a[2q]·b[2q] + a[2q + 1]·b[2q + 1] of int16 operands, products exact in
int32 and the sum the low 32 bits of the exact sum (only (−2^15)² + (−2^15)² = 2^31 leaves int32 and
it wraps to −2^31, the same value mod 2^32). Adding it to the int32 accumulator wraps (vpaddd);
on AVX-512 VNNI (and AVX-VNNI) LLVM fuses the two into vpdpwssd, the wrapping (not the saturating
vpdpwssds) form. So the result is Σ over pairs mod 2^32 for every int16 operand: exact as long as
the operands fit int16, whatever their size. The MR × NV accumulator vectors are allocas promoted
to registers (mem2reg); the r loop is `cgutils.for_range`. LLVM does not form vpmaddwd from
plain Numba loops (it emits vpmovsxwd + vpmulld), hence the intrinsic.

Variant. `LANES` is 16 if both the host CPU and the features Numba compiles for (NUMBA_CPU_FEATURES,
if set) have AVX-512BW, else 8 if both have AVX2, else 0 (no variant: callers keep a plain path).
Each variant is a separate compiled specialisation (the lane count is a literal argument), so the
other one is never compiled; Numba's on-disk cache is keyed by CPU name and features, and the
host check here keeps a cache built elsewhere from running instructions this CPU lacks.
"""
import numpy as np
from llvmlite import binding, ir
from numba import config, types
from numba.core import cgutils
from numba.extending import intrinsic

from npusim_kernels.fast._jit import njit

MR = 4  # output rows of a register tile (both variants)
I16_ABS = 32767  # operands with |value| <= this fit int16


@njit
def tile_columns(lanes):
    """NR, the output columns of a full register tile: 4 zmm of 16 (16 of the 32 vector registers
    hold accumulators) or 2 ymm of 8 (8 of 16)."""
    return 64 if lanes == 16 else 16


_MADD = {16: "llvm.x86.avx512.pmaddw.d.512", 8: "llvm.x86.avx2.pmadd.wd"}


def _features(spec):
    """Set of enabled feature names of an LLVM feature string '+avx2,-avx512bw,...'."""
    return {f[1:] for f in spec.split(",") if f.startswith("+")}


def usable_features(host=None, build=None):
    """The CPU features (LLVM names) both the host CPU and the features Numba compiles for
    (NUMBA_CPU_FEATURES, if set) have; host/build given as sets override the detected ones."""
    host = _features(binding.get_host_cpu_features().flatten()) if host is None else host
    build = (host if config.CPU_FEATURES is None else _features(config.CPU_FEATURES)) if build is None else build
    return host & build


def host_lanes(host=None, build=None):
    """16 (AVX-512BW), 8 (AVX2) or 0: the widest variant both the CPU and Numba's target features have."""
    both = usable_features(host, build)
    return 16 if "avx512bw" in both else 8 if "avx2" in both else 0


LANES = host_lanes()


def pack_pairs(wd, bias):
    """Plan time: wd:i32 (M, K) with |wd| <= I16_ABS, bias:i32 (M,) -> (wp:i32 ((M + MR − 1)·K2,), bias:i32
    (M + MR − 1,)): row o, word r = (wd[o, 2r + 1] << 16) | (wd[o, 2r] & 0xffff), K2 = ceil(K / 2), a
    missing odd term 0; MR − 1 zero rows after the last so a register tile may run past it."""
    m, k = wd.shape
    w16 = np.zeros((m + MR - 1, k + k % 2), np.int16)
    w16[:m, :k] = wd
    w32 = w16.view("<i4")  # little-endian: the even term is the low half of the word
    return np.ascontiguousarray(w32, np.int32).reshape(-1), np.concatenate([bias, np.zeros(MR - 1, np.int32)])


@njit(inline="always")
def pair_word(d0, d1):
    """(d1 << 16) | (d0 & 0xffff) of int32 values within int16: the pair (d0, d1) as one int32 word."""
    return (np.int32(d0) & np.int32(0xFFFF)) | (np.int32(d1) << np.int32(16))


@intrinsic
def _tile(typingctx, lanes, nv, col, c_off, ldc, wp, w_off, ldw, bias, b_off, out, o_off, ldo, k2):
    """out[o_off + i·ldo + c] = bias[b_off + i] + Σ_{r < k2} pairs of col[c_off + r·ldc + c] · wp[w_off + i·ldw + r]
    for i < MR, c < nv·lanes (module doc); lanes and nv literal; every index in bounds is the caller's duty."""
    lit = (lanes, nv)
    if not all(isinstance(v, types.IntegerLiteral) for v in lit) or lanes.literal_value not in _MADD:
        return None
    nl, nv = lanes.literal_value, nv.literal_value
    sig = types.void(*lit, col, types.intp, types.intp, wp, types.intp, types.intp, bias, types.intp,
                     out, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        col_a, c_off, ldc, wp_a, w_off, ldw, bias_a, b_off, out_a, o_off, ldo, k2 = args[2:]
        i32, intp = ir.IntType(32), context.get_value_type(types.intp)
        vw, vh = ir.VectorType(i32, nl), ir.VectorType(ir.IntType(16), 2 * nl)

        def base(k, arr, off):
            return builder.gep(context.make_array(signature.args[k])(context, builder, arr).data, [off])

        def splat(word):
            v = builder.insert_element(ir.Constant(vw, None), word, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, v, ir.Constant(vw, [0] * nl))

        def vec(ptr, j):  # the j-th vector of lanes words at ptr
            return builder.bitcast(builder.gep(ptr, [ir.Constant(intp, nl * j)]), vw.as_pointer())

        def row(ptr, i, ld):
            return builder.gep(ptr, [builder.mul(ir.Constant(intp, i), ld)])

        cbase, obase = base(2, col_a, c_off), base(10, out_a, o_off)
        wrows = [row(base(5, wp_a, w_off), i, ldw) for i in range(MR)]
        bbase = base(8, bias_a, b_off)
        acc = [[cgutils.alloca_once(builder, vw) for _ in range(nv)] for _ in range(MR)]
        for i in range(MR):
            b = splat(builder.load(builder.gep(bbase, [ir.Constant(intp, i)])))
            for j in range(nv):
                builder.store(b, acc[i][j])
        madd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vw, [vh, vh]), _MADD[nl])
        with cgutils.for_range(builder, k2) as loop:
            crow = builder.gep(cbase, [builder.mul(loop.index, ldc)])
            cv = [builder.bitcast(builder.load(vec(crow, j), align=4), vh) for j in range(nv)]
            for i in range(MR):
                wv = builder.bitcast(splat(builder.load(builder.gep(wrows[i], [loop.index]))), vh)
                for j in range(nv):
                    builder.store(builder.add(builder.load(acc[i][j]), builder.call(madd, [cv[j], wv])), acc[i][j])
        for i in range(MR):
            orow = row(obase, i, ldo)
            for j in range(nv):
                builder.store(builder.load(acc[i][j]), vec(orow, j), align=4)
        return context.get_dummy_value()
    return sig, codegen


@njit
def _gemm(lanes, nv, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2):
    """gemm_pairs with register tiles of MR rows × nv vectors (lanes, nv literal)."""
    nr = nv * lanes
    tile = np.empty(MR * nr, np.int32)
    for c0 in range(0, p, nr):
        cw = min(nr, p - c0)
        for o0 in range(0, m, MR):
            rows = min(MR, m - o0)
            if rows == MR and cw == nr:
                _tile(lanes, nv, col, c0, ldc, wp, o0 * ldw, ldw, bias, o0, out, o_off + o0 * ldo + c0, ldo, k2)
            else:
                _tile(lanes, nv, col, c0, ldc, wp, o0 * ldw, ldw, bias, o0, tile, 0, nr, k2)
                for i in range(rows):
                    for c in range(cw):
                        out[o_off + (o0 + i) * ldo + c0 + c] = tile[i * nr + c]


@njit
def gemm_pairs(lanes, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2):
    """out[o_off + o·ldo + c] = bias[o] + Σ_r pairs (module doc) for o < m, c < p; int32, wraps.

    col: flat int32 pair words (`pair_word`), k2 rows of ldc >= ceil(p / NR)·NR words (NR =
    tile_columns(lanes); pad columns are read, never stored); wp: flat int32 pair words, rows of
    ldw >= k2, at least ceil(m / MR)·MR rows; bias: as many rows. Tiles: NR columns outer (a column
    panel stays in cache), MR rows inner; an edge tile goes through a scratch tile and only its valid
    part is copied out. Fewer than NR columns in all take a tile of as few vectors as hold them.
    """
    nv = -(-p // lanes)
    if nv == 1:
        _gemm(lanes, 1, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2)
    elif nv == 2 or lanes == 8:
        _gemm(lanes, 2, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2)
    elif nv == 3:
        _gemm(lanes, 3, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2)
    else:
        _gemm(lanes, 4, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2)
