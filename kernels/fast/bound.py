"""A fast kernel bound to one input shape, callable from Python and from compiled code alike.

A `*_for` binder settles everything that depends on the input shape once and returns a Bound:
a description of one call of a Numba core, not a Python closure, so that a session can both call
it (`bound(*xs)`, one Numba call) and write the same call into a plan it compiles into one Numba
function (npusim.session: there the inputs are the previous kernels' outputs and nothing is
boxed between two kernels). The call, in both places:

    xs' = [xs[i].reshape(view_i) for i, view_i in ins]          (cast to `dtype` first, if set)
    returns:  y = core([T,] *xs', *args).reshape(shape)         (out is None)
    writes:   y = empty(shape, out); core([T,] *xs', *args, y.reshape(view))

T = min(Numba's thread count, cap) when cap > 0 (a kernel that may split over threads takes the
count as an argument: one that read it itself could not be cached). `args` are the bound
constants: arrays, and scalars or tuples of them.
"""
import math

import numba
import numpy as np


def channel_rows(shape, axis):
    """The (outer, C, inner) view of a tensor of `shape` with channels on `axis` (a per-channel
    kernel's rows, each with one channel's parameters); (1, 1, size) when axis is None."""
    shape = tuple(shape)
    if axis is None:
        return 1, 1, math.prod(shape)
    ax = axis % len(shape)
    return math.prod(shape[:ax]), shape[ax], math.prod(shape[ax + 1:])


class Bound:
    __slots__ = ("core", "args", "ins", "dtype", "cap", "out", "shape", "view")
    split_calls = 0  # calls so far of Bounds that may split over threads (cap > 1): a session learns from
    # it whether a run of some input shapes needs Numba's thread count bounded (npusim.session)

    def __init__(self, core, args, ins=((0, None),), *, dtype=None, cap=0, out=None, shape=None, view=None):
        self.core, self.args, self.ins, self.dtype, self.cap = core, tuple(args), tuple(ins), dtype, int(cap)
        self.out = None if out is None else np.dtype(out)
        self.shape, self.view = (None if shape is None else tuple(shape)), (None if view is None else tuple(view))

    def __call__(self, *xs):
        vs = [np.ascontiguousarray(xs[i], self.dtype) for i, _ in self.ins]
        vs = [v if s is None else v.reshape(s) for v, (_, s) in zip(vs, self.ins)]
        if self.cap == 1:  # a cap of 1 reads no count (the first read launches Numba's thread pool)
            vs.insert(0, 1)
        elif self.cap:
            Bound.split_calls += 1
            vs.insert(0, min(numba.get_num_threads(), self.cap))
        if self.out is None:
            y = self.core(*vs, *self.args)
            return y if self.shape is None else y.reshape(self.shape)
        y = np.empty(self.shape, self.out)
        self.core(*vs, *self.args, y if self.view is None else y.reshape(self.view))
        return y
