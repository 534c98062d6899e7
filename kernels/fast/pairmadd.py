"""Register-blocked integer GEMM on 32-bit words of packed operands: out:i32 = bias + Σ_r op(col[r], w[r]), wrapping.

out[o, p] = bias[o] + Σ_{r < K'} op(a[r, p], w[o, r])   (int32, wraps mod 2^32)

Each operand word holds several narrow values; `op` (a literal) says which and how they multiply:
- PAIRS: two int16 (v1 << 16) | (v0 & 0xffff) (`pair_word`), op = a0·w0 + a1·w1, exact. `gemm_words`
  reads a as "col", K2 rows of P words (a pair-interleaved (K2, P, 2) int16 array), each row padded to
  whole tiles; w as K2 words per row o (`pack_pairs`, at plan time for conv weights).
- DPBUSD: four bytes (`quad_word`), a's unsigned (u8) and w's signed (s8) (`pack_quads`),
  op = Σ_{i<4} a_i·w_i, exact in int32 (|op| <= 4·255·128).
- MADDUBS: the same quads, op = sat16(a0·w0 + a1·w1) + sat16(a2·w2 + a3·w3): onnxruntime's u8·s8
  kernels without VNNI (npusim.ortisa; the same pairs golden.pairsat models).

Instruction mapping. The micro-kernel `_tile` is an LLVM-level intrinsic: for each r it loads NV
vectors of LANES words from col, broadcasts each of the MR rows' weight words and
- PAIRS: calls `llvm.x86.avx512.pmaddw.d.512` (LANES = 16, zmm) or `llvm.x86.avx2.pmadd.wd` (LANES = 8, ymm),
  i.e. vpmaddwd: lane q = a[2q]·b[2q] + a[2q + 1]·b[2q + 1] of int16 operands, products exact in
  int32 and the sum the low 32 bits of the exact sum (only (−2^15)² + (−2^15)² = 2^31 leaves int32 and
  it wraps to −2^31, the same value mod 2^32). Adding it to the int32 accumulator wraps (vpaddd);
  on AVX-512 VNNI (and AVX-VNNI) LLVM fuses the two into vpdpwssd, the wrapping (not the saturating
  vpdpwssds) form. So the result is Σ over pairs mod 2^32 for every int16 operand.
- DPBUSD: `llvm.x86.avx512.vpdpbusd.512` (zmm) or `.256` (ymm; AVX-VNNI or AVX-512 VNNI + VL):
  vpdpbusd, four u8·s8 products summed and added to the accumulator lane, wrapping (not vpdpbusds):
  twice the products of vpdpwssd per instruction.
- MADDUBS: `llvm.x86.avx512.pmaddubs.w.512` / `llvm.x86.avx2.pmadd.ub.sw` (vpmaddubsw: adjacent
  u8·s8 products summed with signed int16 saturation), then vpmaddwd by int16 ones (the two int16
  lanes of a word summed, exact, into int32), then vpaddd: MLAS's U8S8 AVX2 / AVX512Core sequence.
The MR × NV accumulator vectors are allocas promoted to registers (mem2reg); the r loop is
`cgutils.for_range`. LLVM does not form these instructions from plain Numba loops (it emits
vpmovsxwd + vpmulld), hence the intrinsic.

Variants. `LANES` (PAIRS, MADDUBS) is 16 if both the host CPU and the features Numba compiles for
(NUMBA_CPU_FEATURES, if set) have AVX-512BW, else 8 if both have AVX2, else 0 (no variant: callers
keep a plain path); `DPBUSD_LANES` is 16 with AVX-512 VNNI (+ BW), 8 with AVX-VNNI (or AVX-512 VNNI
+ VL), else 0. Each variant is a separate compiled specialisation (op and lanes are literal
arguments), so no other one is compiled; Numba's on-disk cache is keyed by CPU name and features,
and the host check here keeps a cache built elsewhere from running instructions this CPU lacks.
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


PAIRS, DPBUSD, MADDUBS = 0, 1, 2  # the word products `gemm_words` sums (module doc)
_OPS = {(PAIRS, 16): ("llvm.x86.avx512.pmaddw.d.512",), (PAIRS, 8): ("llvm.x86.avx2.pmadd.wd",),
        (DPBUSD, 16): ("llvm.x86.avx512.vpdpbusd.512",), (DPBUSD, 8): ("llvm.x86.avx512.vpdpbusd.256",),
        (MADDUBS, 16): ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512"),
        (MADDUBS, 8): ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd")}


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


def host_dpbusd_lanes(host=None, build=None):
    """16 (AVX-512 VNNI on zmm), 8 (AVX-VNNI, or AVX-512 VNNI + VL, on ymm) or 0: the widest vpdpbusd
    both the CPU and Numba's target features have."""
    both = usable_features(host, build)
    if {"avx512vnni", "avx512bw"} <= both:
        return 16
    return 8 if "avxvnni" in both or {"avx512vnni", "avx512vl"} <= both else 0


LANES = host_lanes()  # PAIRS and MADDUBS
DPBUSD_LANES = host_dpbusd_lanes()


def pack_pairs(wd, bias):
    """Plan time: wd:i32 (M, K) with |wd| <= I16_ABS, bias:i32 (M,) -> (wp:i32 ((M + MR − 1)·K2,), bias:i32
    (M + MR − 1,)): row o, word r = (wd[o, 2r + 1] << 16) | (wd[o, 2r] & 0xffff), K2 = ceil(K / 2), a
    missing odd term 0; MR − 1 zero rows after the last so a register tile may run past it."""
    m, k = wd.shape
    w16 = np.zeros((m + MR - 1, k + k % 2), np.int16)
    w16[:m, :k] = wd
    w32 = w16.view("<i4")  # little-endian: the even term is the low half of the word
    return np.ascontiguousarray(w32, np.int32).reshape(-1), np.concatenate([bias, np.zeros(MR - 1, np.int32)])


def pack_quads(wq):
    """Plan time: wq (M, K) of int8 values -> wp:i32 ((M + MR − 1)·K4,): row o, word r = the bytes
    wq[o, 4r .. 4r + 3] (little-endian, as `quad_word`), K4 = ceil(K / 4), missing terms 0; MR − 1
    zero rows after the last, as pack_pairs (the caller's bias needs MR − 1 more rows too)."""
    m, k = wq.shape
    w8 = np.zeros((m + MR - 1, -(-k // 4) * 4), np.int8)
    w8[:m, :k] = wq
    return np.ascontiguousarray(w8.view("<i4"), np.int32).reshape(-1)


@njit(inline="always")
def quad_word(b0, b1, b2, b3):
    """The bytes b0 (lowest) .. b3 (values 0..255) as one int32 word."""
    return np.int32(np.uint32(b0) | (np.uint32(b1) << np.uint32(8)) | (np.uint32(b2) << np.uint32(16))
                    | (np.uint32(b3) << np.uint32(24)))


@njit(inline="always")
def pair_word(d0, d1):
    """(d1 << 16) | (d0 & 0xffff) of int32 values within int16: the pair (d0, d1) as one int32 word."""
    return (np.int32(d0) & np.int32(0xFFFF)) | (np.int32(d1) << np.int32(16))


@intrinsic
def _tile(typingctx, op, lanes, nv, col, c_off, ldc, wp, w_off, ldw, bias, b_off, out, o_off, ldo, k2):
    """out[o_off + i·ldo + c] = bias[b_off + i] + Σ_{r < k2} op(col[c_off + r·ldc + c], wp[w_off + i·ldw + r])
    for i < MR, c < nv·lanes (module doc; op PAIRS, DPBUSD or MADDUBS); op, lanes and nv literal;
    every index in bounds is the caller's duty."""
    lit = (op, lanes, nv)
    if not all(isinstance(v, types.IntegerLiteral) for v in lit) or (op.literal_value, lanes.literal_value) not in _OPS:
        return None
    kind, nl, nv = op.literal_value, lanes.literal_value, nv.literal_value
    sig = types.void(*lit, col, types.intp, types.intp, wp, types.intp, types.intp, bias, types.intp,
                     out, types.intp, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        col_a, c_off, ldc, wp_a, w_off, ldw, bias_a, b_off, out_a, o_off, ldo, k2 = args[3:]
        i32, intp = ir.IntType(32), context.get_value_type(types.intp)
        vw, vh, vb = ir.VectorType(i32, nl), ir.VectorType(ir.IntType(16), 2 * nl), ir.VectorType(ir.IntType(8), 4 * nl)

        def base(k, arr, off):
            return builder.gep(context.make_array(signature.args[k])(context, builder, arr).data, [off])

        def declare(name, ret, *params):
            return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, list(params)), name)
        names = _OPS[kind, nl]
        if kind == PAIRS:
            madd = declare(names[0], vw, vh, vh)

            def step(acc, a, w):  # vpmaddwd, vpaddd (LLVM fuses them into vpdpwssd on VNNI)
                return builder.add(acc, builder.call(madd, [builder.bitcast(a, vh), builder.bitcast(w, vh)]))
        elif kind == DPBUSD:
            dot = declare(names[0], vw, vw, vw, vw)

            def step(acc, a, w):  # vpdpbusd: 4 u8·s8 products of a lane and the lane, int32, wrapping
                return builder.call(dot, [acc, a, w])
        else:
            pairs, widen = declare(names[0], vh, vb, vb), declare(names[1], vw, vh, vh)
            ones = ir.Constant(vh, [1] * (2 * nl))

            def step(acc, a, w):  # vpmaddubsw (pairs of u8·s8, saturated to int16), vpmaddwd by 1, vpaddd
                sat = builder.call(pairs, [builder.bitcast(a, vb), builder.bitcast(w, vb)])
                return builder.add(acc, builder.call(widen, [sat, ones]))

        def splat(word):
            v = builder.insert_element(ir.Constant(vw, None), word, ir.Constant(i32, 0))
            return builder.shuffle_vector(v, v, ir.Constant(vw, [0] * nl))

        def vec(ptr, j):  # the j-th vector of lanes words at ptr
            return builder.bitcast(builder.gep(ptr, [ir.Constant(intp, nl * j)]), vw.as_pointer())

        def row(ptr, i, ld):
            return builder.gep(ptr, [builder.mul(ir.Constant(intp, i), ld)])

        cbase, obase = base(3, col_a, c_off), base(11, out_a, o_off)
        wrows = [row(base(6, wp_a, w_off), i, ldw) for i in range(MR)]
        bbase = base(9, bias_a, b_off)
        acc = [[cgutils.alloca_once(builder, vw) for _ in range(nv)] for _ in range(MR)]
        for i in range(MR):
            b = splat(builder.load(builder.gep(bbase, [ir.Constant(intp, i)])))
            for j in range(nv):
                builder.store(b, acc[i][j])
        with cgutils.for_range(builder, k2) as loop:
            crow = builder.gep(cbase, [builder.mul(loop.index, ldc)])
            cv = [builder.load(vec(crow, j), align=4) for j in range(nv)]
            for i in range(MR):
                wv = splat(builder.load(builder.gep(wrows[i], [loop.index])))
                for j in range(nv):
                    builder.store(step(builder.load(acc[i][j]), cv[j], wv), acc[i][j])
        for i in range(MR):
            orow = row(obase, i, ldo)
            for j in range(nv):
                builder.store(builder.load(acc[i][j]), vec(orow, j), align=4)
        return context.get_dummy_value()
    return sig, codegen


@njit
def _gemm(op, lanes, nv, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2):
    """gemm_words with register tiles of MR rows × nv vectors (op, lanes, nv literal)."""
    nr = nv * lanes
    tile = np.empty(MR * nr, np.int32)
    for c0 in range(0, p, nr):
        cw = min(nr, p - c0)
        for o0 in range(0, m, MR):
            rows = min(MR, m - o0)
            if rows == MR and cw == nr:
                _tile(op, lanes, nv, col, c0, ldc, wp, o0 * ldw, ldw, bias, o0, out, o_off + o0 * ldo + c0, ldo, k2)
            else:
                _tile(op, lanes, nv, col, c0, ldc, wp, o0 * ldw, ldw, bias, o0, tile, 0, nr, k2)
                for i in range(rows):
                    for c in range(cw):
                        out[o_off + (o0 + i) * ldo + c0 + c] = tile[i * nr + c]


@njit
def gemm_words(op, lanes, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2):
    """out[o_off + o·ldo + c] = bias[o] + Σ_r op(col[r, c], wp[o, r]) (module doc) for o < m, c < p; int32, wraps.

    op (literal): PAIRS (pair words, `pair_word`), DPBUSD or MADDUBS (quad words, `quad_word`).
    col: flat int32 words, k2 rows of ldc >= ceil(p / NR)·NR words (NR = tile_columns(lanes); pad
    columns are read, never stored); wp: flat int32 words, rows of ldw >= k2, at least
    ceil(m / MR)·MR rows; bias: as many rows. Tiles: NR columns outer (a column panel stays in
    cache), MR rows inner; an edge tile goes through a scratch tile and only its valid part is
    copied out. Fewer than NR columns in all take a tile of as few vectors as hold them.
    """
    nv = -(-p // lanes)
    if nv == 1:
        _gemm(op, lanes, 1, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2)
    elif nv == 2 or lanes == 8:
        _gemm(op, lanes, 2, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2)
    elif nv == 3:
        _gemm(op, lanes, 3, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2)
    else:
        _gemm(op, lanes, 4, col, ldc, wp, ldw, bias, out, o_off, ldo, m, p, k2)
