"""Bit-serial conv / GEMM: fast == golden == the direct accumulator (conv_acc / matmul_acc), bit for bit."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from npusim_kernels.fast import bitserial as fbs, conv as fconv
from npusim_kernels.golden import bitserial as gbs, conv as gconv, matmul as gmm

PAIRS = [(wb, xb) for wb in range(1, 9) for xb in range(1, 9)]
FEW = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))


def value_range(bits, signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def codes(rng, bits, signed, bipolar, shape):
    """Random values of the encoding in its 8-bit container (bipolar: −1/+1 as int8)."""
    if bipolar:
        return (2 * rng.integers(0, 2, shape) - 1).astype(np.int8)
    lo, hi = value_range(bits, signed)
    return rng.integers(lo, hi + 1, shape).astype(np.int8 if signed else np.uint8)


def zero_points(rng, shape):
    """Zero points anywhere an 8-bit container's codes can sit (-128..255), half of them at an end
    of that span or at 0, whatever the encoding's own bit width."""
    zp = rng.integers(-128, 256, shape)
    ends = rng.choice(np.array([-128, 0, 127, 255]), shape)
    return np.where(rng.random(shape) < 0.5, ends, zp).astype(np.int32)


@st.composite
def conv_geometry(draw, depthwise=False):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(max(1, (kh - 1) * dil[0] + 1 - pads[0] - pads[2]), 9))
    w = draw(st.integers(max(1, (kw - 1) * dil[1] + 1 - pads[1] - pads[3]), 9))
    if depthwise:
        group = draw(st.integers(1, 6))
        cg, mg = 1, 1
    else:
        group = draw(st.integers(1, 3))
        cg = draw(st.sampled_from([1, 2, 3, 5, 7, 63, 64, 65]))  # 64: word-aligned taps; 63/65: spills
        mg = draw(st.integers(1, 6))
    return dict(n=draw(st.integers(1, 2)), kh=kh, kw=kw, strides=strides, dil=dil, pads=pads, h=h, w=w,
                group=group, cg=cg, mg=mg, seed=draw(st.integers(0, 2 ** 32 - 1)))


def check_conv(g, wb, xb, w_signed, x_signed, w_bip=False, x_bip=False):
    rng = np.random.default_rng(g["seed"])
    m, c = g["mg"] * g["group"], g["cg"] * g["group"]
    x = codes(rng, xb, x_signed, x_bip, (g["n"], c, g["h"], g["w"]))
    w = codes(rng, wb, w_signed, w_bip, (m, g["cg"], g["kh"], g["kw"]))
    x_zp = int(zero_points(rng, ()))
    if rng.random() < 0.5:  # a value of the encoding: the fast kernel pads with its planes
        x_zp = int(codes(rng, xb, x_signed, x_bip, ()))
    w_zp = zero_points(rng, m)
    bias = rng.integers(-1000, 1001, m).astype(np.int32)
    geo = (g["strides"], g["pads"], g["dil"], g["group"])
    want = gconv.conv_acc(x, x_zp, w, w_zp, bias, *geo)
    gold = gbs.bitserial_conv_acc(x, x_zp, xb, x_signed, gbs.pack_bitserial_weights(w, wb, w_signed, w_zp, bias, w_bip),
                                  *geo, x_bipolar=x_bip)
    fast = fbs.bitserial_conv_acc(x, x_zp, xb, x_signed, fbs.pack_bitserial_weights(w, wb, w_signed, w_zp, bias, w_bip),
                                  *geo, x_bipolar=x_bip)
    assert fast.dtype == np.int32 and fast.shape == want.shape
    np.testing.assert_array_equal(gold, want)
    np.testing.assert_array_equal(fast, want)


@pytest.mark.parametrize("wb,xb", PAIRS)
@FEW
@given(g=conv_geometry(), w_signed=st.booleans(), x_signed=st.booleans())
def test_conv_every_bit_pair(wb, xb, g, w_signed, x_signed):
    check_conv(g, wb, xb, w_signed, x_signed)


@pytest.mark.parametrize("w_bip,x_bip", [(True, True), (True, False), (False, True)])
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(g=conv_geometry(), signed=st.booleans(), other_bits=st.integers(1, 8))
def test_conv_bipolar(w_bip, x_bip, g, signed, other_bits):
    wb = 1 if w_bip else other_bits
    xb = 1 if x_bip else other_bits
    check_conv(g, wb, xb, signed, signed, w_bip, x_bip)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(g=conv_geometry(depthwise=True), wb=st.integers(1, 8), xb=st.integers(1, 8),
       w_signed=st.booleans(), x_signed=st.booleans())
def test_conv_depthwise(g, wb, xb, w_signed, x_signed):
    check_conv(g, wb, xb, w_signed, x_signed)


@pytest.mark.parametrize("wb,xb,signed", [(1, 1, False), (8, 8, True), (8, 8, False), (3, 5, True)])
def test_conv_extreme_values(wb, xb, signed):
    """Every value at its encoding's minimum, then maximum; zero points outside the value range."""
    g = dict(n=1, kh=3, kw=3, strides=(1, 1), dil=(1, 1), pads=(1, 1, 1, 1), h=5, w=6, group=1, cg=65, mg=5)
    for pick in (0, 1):
        lo_x, hi_x = value_range(xb, signed)
        lo_w, hi_w = value_range(wb, signed)
        dt = np.int8 if signed else np.uint8
        x = np.full((1, 65, 5, 6), (lo_x, hi_x)[pick], dt)
        w = np.full((5, 65, 3, 3), (lo_w, hi_w)[pick], dt)
        w_zp = np.array([-300, -1, 0, 1, 300], np.int32)
        bias = np.array([0, 1, -1, 2 ** 20, -(2 ** 20)], np.int32)
        for x_zp in (-200, 0, 200):
            want = gconv.conv_acc(x, x_zp, w, w_zp, bias, g["strides"], g["pads"], g["dil"], 1)
            for K in (gbs, fbs):
                got = K.bitserial_conv_acc(x, x_zp, xb, signed, K.pack_bitserial_weights(w, wb, signed, w_zp, bias),
                                           g["strides"], g["pads"], g["dil"], 1)
                np.testing.assert_array_equal(got, want)


def test_conv_int32_wraps_like_direct_fast_kernel():
    """Far-out zero points overflow int32: fast bit-serial wraps modulo 2^32 like fast conv_acc;
    the golden one raises, naming the index."""
    rng = np.random.default_rng(7)
    x = codes(rng, 8, False, False, (1, 16, 4, 4))
    w = codes(rng, 8, True, False, (3, 16, 3, 3))
    w_zp = np.full(3, 100000, np.int32)
    bias = np.zeros(3, np.int32)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    got = fbs.bitserial_conv_acc(x, -100000, 8, False, fbs.pack_bitserial_weights(w, 8, True, w_zp, bias), *geo)
    np.testing.assert_array_equal(got, fconv.conv_acc(x, -100000, w, w_zp, bias, *geo))
    with pytest.raises(ValueError, match="int32 accumulator overflow at index"):
        gbs.bitserial_conv_acc(x, -100000, 8, False, gbs.pack_bitserial_weights(w, 8, True, w_zp, bias), *geo)


@st.composite
def gemm_case(draw):
    batch = draw(st.sampled_from([(), (2,), (2, 1)]))
    return dict(batch=batch, m=draw(st.integers(1, 9)), k=draw(st.sampled_from([1, 7, 63, 64, 65, 130, 300])),
                n=draw(st.integers(1, 9)), per_row=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 32 - 1)))


def check_gemm(cs, ab, bb, a_signed, b_signed, a_bip=False, b_bip=False):
    rng = np.random.default_rng(cs["seed"])
    a = codes(rng, ab, a_signed, a_bip, cs["batch"] + (cs["m"], cs["k"]))
    b = codes(rng, bb, b_signed, b_bip, (cs["k"], cs["n"]))
    a_zp = zero_points(rng, cs["m"]) if cs["per_row"] else int(zero_points(rng, ()))
    b_zp = zero_points(rng, cs["n"])
    want = gmm.matmul_acc(a, a_zp, b, b_zp)
    for K in (gbs, fbs):
        got = K.bitserial_matmul_acc(a, a_zp, ab, a_signed, K.pack_bitserial_matrix(b, bb, b_signed, b_zp, b_bip), a_bip)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bb,ab", PAIRS)
@FEW
@given(cs=gemm_case(), a_signed=st.booleans(), b_signed=st.booleans())
def test_gemm_every_bit_pair(bb, ab, cs, a_signed, b_signed):
    check_gemm(cs, ab, bb, a_signed, b_signed)


@pytest.mark.parametrize("b_bip,a_bip", [(True, True), (True, False), (False, True)])
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(cs=gemm_case(), signed=st.booleans(), other_bits=st.integers(1, 8))
def test_gemm_bipolar(b_bip, a_bip, cs, signed, other_bits):
    check_gemm(cs, 1 if a_bip else other_bits, 1 if b_bip else other_bits, signed, signed, a_bip, b_bip)


def test_gemm_vector_a():
    rng = np.random.default_rng(3)
    a = codes(rng, 4, True, False, (70,))
    b = codes(rng, 3, False, False, (70, 5))
    want = gmm.matmul_acc(a, 2, b, np.int32(1))
    for K in (gbs, fbs):
        np.testing.assert_array_equal(K.bitserial_matmul_acc(a, 2, 4, True, K.pack_bitserial_matrix(b, 3, False, 1)), want)


@pytest.mark.parametrize("K", [gbs, fbs], ids=["golden", "fast"])
def test_bad_input_is_named(K):
    w = np.array([[[[0, 7]]]], np.uint8)                      # (1, 1, 1, 2), 3-bit unsigned
    with pytest.raises(ValueError, match=r"bitserial weights: value 7 at index \(0, 0, 0, 1\) outside the 2-bit"):
        K.pack_bitserial_weights(w, 2, False, 0, 0)
    with pytest.raises(ValueError, match="bipolar encoding needs 1 bit"):
        K.pack_bitserial_weights(w, 3, False, 0, 0, bipolar=True)
    with pytest.raises(ValueError, match="bit width 9 outside 1..8"):
        K.pack_bitserial_weights(w, 9, False, 0, 0)
    packed = K.pack_bitserial_weights(w, 3, False, 0, 0)
    x = np.array([[[[1, -1, 0]]]], np.int8)
    with pytest.raises(ValueError, match=r"bitserial activations: value 0 at index \(0, 0, 0, 2\) outside the 1-bit bipolar"):
        K.bitserial_conv_acc(x, 0, 1, True, packed, (1, 1), (0, 0, 0, 0), (1, 1), 1, x_bipolar=True)
    with pytest.raises(ValueError, match=r"bitserial activations: value 1 at index \(0, 0, 0, 0\) outside the 1-bit signed"):
        K.bitserial_conv_acc(x, 0, 1, True, packed, (1, 1), (0, 0, 0, 0), (1, 1), 1)
    with pytest.raises(ValueError, match="bitserial conv: 2 input channels"):
        K.bitserial_conv_acc(np.zeros((1, 2, 1, 3), np.uint8), 0, 1, False, packed, (1, 1), (0, 0, 0, 0), (1, 1), 1)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_range_check_at_the_edges(dtype):
    """Values at and next to each end of every encoding's range and of the container, at a pixel
    packed 8 at a time (H·W a multiple of 8) and at one of the last H·W mod 8 pixels, among random
    valid neighbours: rejected exactly when outside the declared encoding."""
    rng = np.random.default_rng(5)
    packed = fbs.pack_bitserial_weights(np.ones((1, 3, 1, 1), np.uint8), 1, False, 0, 0)
    info = np.iinfo(dtype)
    for bits, signed, bipolar in [(b, s, False) for b in range(1, 9) for s in (False, True)] + [(1, True, True)]:
        lo, hi = (-1, 1) if bipolar else value_range(bits, signed)
        for h, w, where in ((4, 4, (0, 2, 1, 3)), (3, 3, (0, 1, 2, 2))):
            for v in {lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, -1, 0, 1, 127, 128, info.min, info.max}:
                if not info.min <= v <= info.max:
                    continue
                x = codes(rng, bits, signed, bipolar, (1, 3, h, w))
                x = np.clip(x, max(lo, info.min), min(hi, info.max)).astype(dtype)  # valid in this container
                x[x == 0] = 1 if bipolar else 0
                x[where] = v
                geo = ((1, 1), (0, 0, 0, 0), (1, 1), 1)
                if lo <= v <= hi and not (bipolar and v == 0):
                    fbs.bitserial_conv_acc(x, 0, bits, signed, packed, *geo, x_bipolar=bipolar)
                else:
                    with pytest.raises(ValueError, match=rf"value {v} at index \(0, {where[1]}, {where[2]}, {where[3]}\)"):
                        fbs.bitserial_conv_acc(x, 0, bits, signed, packed, *geo, x_bipolar=bipolar)


def test_blocks_tails_and_chunks():
    """Shapes past one register block and one parallel chunk (fast.bitserial.LANES, CHUNK), with
    partial blocks of channels (M mod TILE) and positions: a 3x3 conv over 13x17 (221 positions,
    border classes in both chunks) and a GEMM of 6 rows x 70 columns."""
    assert fbs.CHUNK < 13 * 17 and 13 * 17 % fbs.LANES and 6 % fbs.TILE and 70 % fbs.LANES
    rng = np.random.default_rng(11)
    x = codes(rng, 2, False, False, (1, 64, 13, 17))
    w = codes(rng, 3, True, False, (6, 64, 3, 3))
    w_zp, bias = zero_points(rng, 6), rng.integers(-1000, 1001, 6).astype(np.int32)
    geo = ((1, 1), (1, 1, 1, 1), (1, 1), 1)
    got = fbs.bitserial_conv_acc(x, 3, 2, False, fbs.pack_bitserial_weights(w, 3, True, w_zp, bias), *geo)
    np.testing.assert_array_equal(got, gconv.conv_acc(x, 3, w, w_zp, bias, *geo))
    a, b = codes(rng, 1, False, False, (6, 200)), codes(rng, 2, True, False, (200, 70))
    b_zp = zero_points(rng, 70)
    got = fbs.bitserial_matmul_acc(a, 1, 1, False, fbs.pack_bitserial_matrix(b, 2, True, b_zp))
    np.testing.assert_array_equal(got, gmm.matmul_acc(a, 1, b, b_zp))


# The register block of the fast kernels (`_tiles`) and, for AVX2, the activation packing (`_pixel_words`),
# compiled serially (same vector code, seconds to compile) for the CPU named by NUMBA_CPU_NAME, against the
# formula in NumPy; prints the result and which popcount instructions the block compiled to.
_TILES_CHECK = """
import json, os, re
import numba, numpy as np
from npusim_kernels.fast import bitserial as fbs
tiles = numba.njit(fbs._tiles.py_func)
rng = np.random.default_rng(0)
kw_n, n_pos, m, nb_x, nb_w = 3, 150, 6, 2, 2
ps = -(-n_pos // fbs.LANES) * fbs.LANES
xt = rng.integers(0, 2 ** 63, nb_x * kw_n * ps, dtype=np.uint64)
ww = np.zeros((m + 3) * nb_w * kw_n, np.uint64)
ww[:m * nb_w * kw_n] = rng.integers(0, 2 ** 63, m * nb_w * kw_n, dtype=np.uint64)
log_alpha = 1
sx, rx = rng.integers(-9, 9, ps).astype(np.int32), rng.integers(-9, 9, ps).astype(np.int32)
bw, bias, tab = rng.integers(-9, 9, m), rng.integers(-9, 9, m), rng.integers(-99, 99, (m, 1))
none = np.zeros(0, np.int64)
out = np.empty(m * n_pos, np.int32)
tiles(xt, nb_x, ps, ww, 0, nb_w, kw_n, log_alpha, sx, bw, rx, tab, none, none, bias, out, 0, n_pos, m)
x, w = xt.reshape(nb_x, kw_n, ps)[:, :, :n_pos], ww.reshape(m + 3, nb_w, kw_n)[:m]
pop = np.bitwise_count(x[None, None] & w[:, :, None, :, None]).sum(axis=3, dtype=np.int64)  # (m, j, i, p)
coef = 1 << (np.add.outer(np.arange(nb_w), np.arange(nb_x)) + log_alpha)  # 2^(j+i+log_alpha)
want = np.einsum("ji,mjip->mp", coef, pop) + sx[:n_pos] * bw[:, None] + rx[:n_pos] * tab + bias[:, None]
exact = bool(np.array_equal(out.reshape(m, n_pos), want.astype(np.int32)))
if os.environ["NUMBA_CPU_NAME"] == "haswell":  # the SWAR packing, 8 pixels per word, and its tail (the host
    pixel_words = numba.njit(fbs._pixel_words.py_func)  # compilation runs in every conv test)
    xs = rng.integers(0, 8, (70, 9, 9)).astype(np.uint8)  # 81 pixels: 8 blocks of 8 at once, 2 one by one, 1 tail
    pw = np.empty(3 * 2 * 81, np.uint64)
    bits = (xs.reshape(70, 81)[None] >> np.arange(3, dtype=np.uint8)[:, None, None]) & 1  # (k, c, pix)
    bits = np.concatenate([bits, np.zeros((3, 58, 81), np.uint8)], axis=1).reshape(3, 2, 64, 81)
    want_pw = (bits.astype(np.uint64) << np.arange(64, dtype=np.uint64)[:, None]).sum(axis=2, dtype=np.uint64)
    code_args = fbs._encoding(3, False, False, "x")[3] + (np.int32(0),)
    exact &= pixel_words(xs.reshape(-1), 0, 70, 81, 3, code_args, pw) == 0 and np.array_equal(pw, want_pw.reshape(-1))
    xs[3, 1, 2] = 8  # out of range, in a packed block
    exact &= pixel_words(xs.reshape(-1), 0, 70, 81, 3, code_args, pw) != 0
asm = tiles.inspect_asm(tiles.signatures[0])
print(json.dumps({"exact": bool(exact), "ops": sorted(set(re.findall(r"\\b(vpopcntq|vpshufb|zmm)", asm)))}))
"""


@pytest.mark.parametrize("cpu,features,ops", [
    ("haswell", "+avx2,+popcnt,+bmi2,+fma,+sse4.2,+avx", ["vpshufb"]),   # AVX2: nibble-table popcount
    ("znver4", "", ["vpopcntq", "zmm"]),                                  # AVX-512 VPOPCNTDQ
])
def test_register_block_on_avx2_and_avx512(cpu, features, ops, tmp_path):
    """The popcount of the register block is LLVM's vector ctpop, lowered per CPU: both lowerings run
    here (the VM has AVX-512 VPOPCNTDQ) and give the exact sums."""
    import os
    import subprocess
    import sys

    from llvmlite import binding as llvm
    if cpu == "znver4" and not llvm.get_host_cpu_features().get("avx512vpopcntdq"):
        pytest.skip("this CPU has no AVX-512 VPOPCNTDQ")
    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features, NUMBA_CACHE_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", _TILES_CHECK], env=env, capture_output=True, text=True, check=True)
    got = __import__("json").loads(res.stdout.splitlines()[-1])
    assert got == {"exact": True, "ops": ops}
