"""What `npusim verify` counts against any reference (npusim.verify, npusim.verify_refs):
`Compare` (exact elements and the largest difference in LSBs of one tensor), `Overflow` (a layer
whose int32 accumulator can wrap, and how often it did), and the LSB of a graph output."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .overflow import count_wrapped


@dataclass
class Compare:
    name: str
    elements: int = 0
    exact: int = 0
    max_lsb: float = 0.0

    @property
    def exact_fraction(self) -> float:
        return self.exact / self.elements if self.elements else 1.0

    def add(self, a: np.ndarray, b: np.ndarray, lsb: float):
        if a.shape != b.shape:
            raise ValueError(f"tensor {self.name!r}: npusim shape {a.shape} vs the reference {b.shape}")
        d = np.abs(a.astype(np.float64) - b.astype(np.float64)) / lsb
        self.elements += a.size
        self.exact += int(np.count_nonzero(a == b))
        self.max_lsb = max(self.max_lsb, float(d.max()) if d.size else 0.0)


@dataclass
class Overflow:
    """A layer whose int32 accumulator can wrap (plan-time bound above 2^31 − 1, npusim.overflow)
    and how many accumulator elements did wrap over all input sets (both modes wrap)."""
    layer: str
    bound: int | None  # max |accumulator| over every input; None: weights not constant, no bound
    wrapped: int = 0
    elements: int = 0


def overflow_probe(session):
    """[Overflow] of the session's layers whose int32 accumulator can wrap, and count(values) that
    adds one run's wrapped accumulator elements (a run_all result) to them."""
    g = session.graph
    by_name = {n.name: n for n in g.nodes}
    wraps = {name: Overflow(by_name[name].source or name, bound) for name, bound in session.overflow_possible.items()}

    def count(values):
        for name, c in wraps.items():
            node = by_name[name]
            c.wrapped += count_wrapped(node, g, [values.get(i) for i in node.inputs])
            c.elements += values[node.outputs[0]].size

    return list(wraps.values()), count


def output_lsb(session, name):
    """Quantization step of a graph output: 1 for integers, the DequantizeLinear scale for floats."""
    for n in session.graph.nodes:
        if name in n.outputs and n.op == "dequantize" and n.attrs["scale"].size == 1:
            return float(n.attrs["scale"].reshape(-1)[0])
    return 1.0
