"""Kernels bound per input shape: what a registry entry's run keeps (npusim.registry).

A hot op's run looks its kernel up in a `PerShape` (bound at the first run of each input shape
and dtype) and makes one call; `shape_bound` marks the run with the PerShape and the kernel a
run on given inputs calls, for the session (fused steps, compiled plans).
"""
from __future__ import annotations

from typing import Callable


class PerShape(dict):
    """Kernels settled for one input shape and dtype each: per_shape[shape, dtype] is
    bind(shape, dtype), called at the first run of that shape (a model's shapes follow from its
    input shapes, so a session binds each node once per input shape) and kept; a bind that raises
    (a shape the node refuses) keeps nothing."""
    __slots__ = ("bind",)

    def __init__(self, bind):
        super().__init__()
        self.bind = bind

    def __missing__(self, key):
        f = self[key] = self.bind(*key)
        return f


def _first_input(x, *_):
    return x.shape, x.dtype


def shape_bound(per_shape: PerShape, run: Callable, key: Callable = _first_input) -> Callable:
    """`run`, whose result is (per_shape[key(*inputs)](...),), by default the kernel bound to the
    shape and dtype of its first input x (its other inputs are constants), marked with its PerShape
    (`run.per_shape`) and `run.bound(*inputs)`, the kernel a run on these inputs calls: a session
    may call the bound kernel itself (npusim.session fuses a conv with its requantize into one call
    per shape), or, when it is a `Bound` of the fast kernels, write its call into a compiled plan."""
    run.per_shape = per_shape
    run.bound = lambda *xs: per_shape[key(*xs)]
    return run
