"""Which instruction-set family of onnxruntime's integer kernels mode "ort" reproduces.

onnxruntime's MLAS picks its u8·s8 GEMM / ConvSym kernels by CPUID at start-up
(onnxruntime/core/mlas/lib/platform.cpp), and they do not all compute the same numbers:

| family       | CPU (MLAS dispatch)                         | u8 activations · s8 weights          |
|--------------|---------------------------------------------|--------------------------------------|
| `avx2`       | AVX2 + FMA, no VNNI (U8S8 Avx2)             | pairs summed in a saturating int16   |
| `avx512core` | AVX-512 F/BW/DQ/VL, no VNNI (U8S8 Avx512Core)| pairs summed in a saturating int16   |
| `avxvnni`    | AVX-VNNI (U8S8 Avx2Vnni)                    | exact int32                          |
| `avx512vnni` | AVX-512 VNNI (U8S8 Avx512Vnni)              | exact int32                          |
| `amx`        | AMX-INT8 (U8S8 Amx)                         | exact int32                          |

Without VNNI the kernels multiply with `vpmaddubsw`, which adds two adjacent u8·s8 products
into one int16 lane with signed saturation (npusim_kernels.*.pairsat states the arithmetic).
Every other integer path is exact on every family: u8·u8 (int16 `vpmaddwd` kernels), s8·s8
and s8·u8 (MLAS's scalar kernels on x86 without AVX-VNNI-INT8), depthwise QLinearConv (both
depthwise kernels widen to int16 and use `vpmaddwd`), and ConvInteger (it passes the weights
as the GEMM's A operand, so a u8 input meets s8 weights in the S8U8 kernel: scalar, exact).
The front end marks the nodes onnxruntime runs through the U8S8 kernels (attribute
`ort_u8s8`); a session emulating a saturating family makes them saturate as onnxruntime does: a
dense or grouped conv of u8 x and s8 weights with zero points 0 by the kernel itself
(npusim_kernels.fast.conv: vpmaddubsw on byte quads in onnxruntime's K order, as fast as the exact
path), every other such node by adding the pair excess to the exact sums.
"""
from __future__ import annotations

from dataclasses import replace

from . import ir
from .errors import NpusimError

SATURATING = ("avx2", "avx512core")
ORT_ISAS = SATURATING + ("avxvnni", "avx512vnni", "amx")


def host_ort_isa() -> str:
    """The family onnxruntime's MLAS dispatches to on this CPU, detected from the CPU features
    LLVM reports (the same CPUID bits MLAS tests; OS support for AVX-512 state included)."""
    from llvmlite import binding

    f = binding.get_host_cpu_features()

    def has(name):
        return bool(f.get(name, False))
    if has("amx-int8") and has("amx-tile"):
        return "amx"
    if has("avx512vnni") and has("avx512bw") and has("avx512vl") and has("avx512dq"):
        return "avx512vnni"
    if has("avxvnni"):
        return "avxvnni"
    if has("avx512bw") and has("avx512vl") and has("avx512dq") and has("avx512cd"):
        return "avx512core"
    return "avx2"


def resolve(ort_isa: str | None) -> str:
    """The family a session emulates: the host's when None, else the name given (checked)."""
    if ort_isa is None or ort_isa == "host":
        return host_ort_isa()
    if ort_isa not in ORT_ISAS:
        raise NpusimError(f"unknown ort_isa {ort_isa!r}; expected one of host, {', '.join(ORT_ISAS)}")
    return ort_isa


def describe(ort_isa: str) -> str:
    """One line for reports: the family and what it does to u8·s8 sums."""
    kind = "u8·s8 pair sums saturate to int16 (vpmaddubsw)" if ort_isa in SATURATING else "exact int32 sums"
    return f"{ort_isa}: {kind}"


def nchwc_block(ort_isa: str, optimization_level) -> int | None:
    """The channel block of onnxruntime's NCHWc layout transformer for this family
    (MlasNchwcGetBlockSize: 16 floats on AVX-512F CPUs, 8 on AVX2 ones, AVX-VNNI included), or None
    when the transformer does not run: it is a layout optimization, applied at
    graph_optimization_level ORT_ENABLE_LAYOUT (3) and above (ORT_ENABLE_ALL, 99, the default).
    Its float kernels sum some pools in another order than the plain ones (npusim.islands)."""
    if int(optimization_level) < 3:
        return None
    return 8 if ort_isa in ("avx2", "avxvnni") else 16


def with_ort_isa(g: ir.Graph, ort_isa: str) -> ir.Graph:
    """The graph with `pair_sat16` set on every node onnxruntime runs through its U8S8 kernels,
    when the family saturates their pair sums (and cleared otherwise)."""
    saturate = ort_isa in SATURATING
    nodes = []
    for n in g.nodes:
        if n.attrs.get("ort_u8s8") and bool(n.attrs.get("pair_sat16")) != saturate:
            n = replace(n, attrs={**n.attrs, "pair_sat16": int(saturate)})
        nodes.append(n)
    return replace(g, nodes=tuple(nodes))
