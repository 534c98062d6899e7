"""Model size: the exact number of bits an NPU stores for a model's parameters.

The accounting, per IR node (the NPU's fixed-point form of docs/npu_arithmetic.md):

- conv / matmul / gemm with constant weights: every weight at its element type's width
  (a 4-bit weight costs 4 bits: weights are packed); weight zero points only when some is
  non-zero (symmetric weights store none), one per channel (or one) at the weight width;
  the int32 bias, 32 bits per output channel, when the layer has one.
- requantize: the multiplier M0 (32 bits) and right shift n (8 bits): once per layer when
  per-tensor, once per channel when per-channel; with WESS once per layer plus a 4-bit shift
  per output channel; and the output zero point at the output width.
- add / mul: their fixed-point multipliers (add: three, mul: one, 40 bits each) and the three
  zero points at their widths; global_avgpool / avgpool / rescale-like ops: one multiplier and
  two zero points; softmax: its 256-entry table of 17-bit exponentials and one multiplier.
- lookup tables (sigmoid, leaky_relu, and elementwise islands mode npu compiles): 256 entries
  at the output width.
- The input zero point of a layer is the previous layer's output zero point: it is counted
  once, where it is produced.

`layer_sizes(graph)` gives, per weight layer, the weight count and the bits that do not depend
on the weight width, so that the size of any other weight-bitwidth assignment is computed
without re-quantizing (`total_bits`), which is what a bitwidth search needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir import Graph, bits

MULT_BITS = 32 + 8  # M0 in Q0.31 plus an 8-bit right shift
WESS_SHIFT_BITS = 4
BIAS_BITS = 32
_WEIGHT_OPS = ("conv", "matmul", "gemm")


@dataclass(frozen=True)
class LayerSize:
    name: str       # the node's source name (the ONNX node it came from)
    op: str
    weight: str     # the weight tensor's name
    weights: int    # number of weights (0 when the layer has no constant weights)
    wbits: int      # their width now
    channels: int   # output channels (number of weight zero points when stored per channel)
    w_zp_count: int  # weight zero points stored (0 when all are zero)
    other_bits: int  # everything that does not scale with the weight width

    def bits_at(self, wbits: int) -> int:
        return self.weights * wbits + self.w_zp_count * wbits + self.other_bits

    @property
    def total_bits(self) -> int:
        return self.bits_at(self.wbits)


def _tbits(graph, name) -> int:
    t = graph.tensors.get(name)
    return bits(t.dtype) if t is not None and t.dtype[0] in "ui" else 0


def _weight_layer(graph: Graph, node) -> LayerSize:
    w_name = node.inputs[1]
    w = graph.constants.get(w_name)
    if w is None:
        return LayerSize(node.source or node.name, node.op, w_name, 0, 0, 0, 0, 0)
    wbits = _tbits(graph, w_name)
    channels = int(w.shape[0]) if node.op == "conv" else int(w.shape[-1] if not node.attrs.get("transB") else w.shape[0])
    zp_name = node.inputs[4] if node.op in ("conv", "gemm") else node.inputs[3]
    zp = graph.constants.get(zp_name) if zp_name else None
    w_zp = 0 if zp is None or not np.any(zp) else int(np.asarray(zp).size)
    bias_name = node.inputs[2] if node.op in ("conv", "gemm") else ""
    bias = graph.constants.get(bias_name) if bias_name else None
    other = 0 if bias is None else BIAS_BITS * int(np.asarray(bias).size)
    return LayerSize(node.source or node.name, node.op, w_name, int(w.size), wbits, channels, w_zp, other)


def _node_bits(graph: Graph, node) -> int:
    a, y = node.attrs, _tbits(graph, node.outputs[0]) if node.outputs else 0
    if node.op == "requantize":
        c = int(np.asarray(a["w_scale"]).size)
        if "wess_shift" in a:
            return MULT_BITS + WESS_SHIFT_BITS * c + y
        return MULT_BITS * c + y
    if node.op == "add":
        return 3 * MULT_BITS + _tbits(graph, node.inputs[0]) + _tbits(graph, node.inputs[1]) + y
    if node.op == "mul":
        return MULT_BITS + _tbits(graph, node.inputs[0]) + _tbits(graph, node.inputs[1]) + y
    if node.op in ("global_avgpool", "avgpool"):
        return MULT_BITS + _tbits(graph, node.inputs[0]) + y
    if node.op == "qconcat":
        return len(node.inputs) * (MULT_BITS + 8) + y
    if node.op == "softmax":
        return 256 * 17 + MULT_BITS + y
    if node.op in ("sigmoid", "leaky_relu") or (node.op == "host" and node.attrs.get("elementwise")):
        return 256 * y
    return 0


def layer_sizes(graph: Graph) -> list[LayerSize]:
    """One entry per weight layer (conv/matmul/gemm with constant weights)."""
    return [s for s in (_weight_layer(graph, n) for n in graph.nodes if n.op in _WEIGHT_OPS) if s.weights]


def node_bits(graph: Graph) -> dict[str, int]:
    """Parameter bits per IR node name (weight layers include weights, zero points and bias)."""
    out = {}
    for n in graph.nodes:
        b = _weight_layer(graph, n).total_bits if n.op in _WEIGHT_OPS else _node_bits(graph, n)
        out[n.name] = b
    return out


def model_bits(graph: Graph) -> int:
    return sum(node_bits(graph).values())


def total_bits(graph: Graph, wbits: dict[str, int]) -> int:
    """Model size if the weight layers named in `wbits` (source names) had those weight widths;
    the other layers keep theirs. Everything but the weights and weight zero points is fixed."""
    sizes = layer_sizes(graph)
    fixed = model_bits(graph) - sum(s.total_bits for s in sizes)
    return fixed + sum(s.bits_at(wbits.get(s.name, s.wbits)) for s in sizes)
