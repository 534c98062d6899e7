"""Data-movement ops on quantized tensors (ONNX semantics): values pass through unchanged.

They need no golden/fast pair: each is a NumPy view or copy. Shape-like inputs (shape,
axes, starts, ...) are int64 tensors, constant or computed by a host op at run time.
"""
from __future__ import annotations

import math

import numpy as np


def _reshaping(run):
    """`run`, marked as returning its first input reshaped (a view), the same reshape for every
    input of one shape when its other inputs are constants: a compiled plan writes it as one
    (npusim.session)."""
    run.reshapes = True
    return run


def _reshape(node, const, K):
    allowzero = int(node.attrs.get("allowzero", 0))

    def run(x, shape):
        shape = [int(v) for v in shape]
        if not allowzero:
            shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
        return (x.reshape(shape),)
    return _reshaping(run)


def _flatten(node, const, K):
    axis = int(node.attrs.get("axis", 1))

    def run(x):  # ONNX: axis in [-r, r]; the output is (prod(shape[:axis]), prod(shape[axis:]))
        ax = axis + x.ndim if axis < 0 else axis
        return (x.reshape(math.prod(x.shape[:ax]), math.prod(x.shape[ax:])),)
    return _reshaping(run)


def _transpose(node, const, K):
    perm = node.attrs.get("perm")

    def run(x):
        return (np.ascontiguousarray(np.transpose(x, perm)),)
    return run


def _axes(node, axes_in):
    a = node.attrs.get("axes")
    if axes_in is not None:
        return tuple(int(v) for v in axes_in)
    return None if a is None else tuple(int(v) for v in a)


def _squeeze(node, const, K):
    def run(x, axes=None):
        ax = _axes(node, axes)
        return (np.squeeze(x, axis=None if ax is None else tuple(v % x.ndim for v in ax)),)
    return _reshaping(run)


def _unsqueeze(node, const, K):
    def run(x, axes=None):
        ax = sorted(v % (x.ndim + len(_axes(node, axes))) for v in _axes(node, axes))
        y = x
        for v in ax:
            y = np.expand_dims(y, v)
        return (y,)
    return _reshaping(run)


def _slice(node, const, K):
    def run(x, starts, ends, axes=None, steps=None):
        axes = range(len(starts)) if axes is None else [int(a) % x.ndim for a in axes]
        steps = [1] * len(starts) if steps is None else steps
        index = [slice(None)] * x.ndim
        for st, en, ax, sp in zip(starts, ends, axes, steps):
            n = x.shape[ax]
            st, en, sp = int(st), int(en), int(sp)
            st, en = (st + n if st < 0 else st), (en + n if en < 0 else en)
            st = min(max(st, 0), n if sp > 0 else n - 1)
            en = min(max(en, 0 if sp > 0 else -1), n if sp > 0 else n - 1)
            index[ax] = slice(st, None if en == -1 and sp < 0 else en, sp)
        return (np.ascontiguousarray(x[tuple(index)]),)
    return run


def _pad(node, const, K):
    def run(x, pads, value=None, axes=None):
        pads = [int(p) for p in pads]
        axes = list(range(x.ndim)) if axes is None else [int(a) % x.ndim for a in axes]
        n = len(axes)
        width = [(0, 0)] * x.ndim
        for i, ax in enumerate(axes):
            width[ax] = (pads[i], pads[i + n])
        v = 0 if value is None or np.size(value) == 0 else np.asarray(value).reshape(-1)[0]
        crop = tuple(slice(-b if b < 0 else 0, x.shape[i] + e if e < 0 else None)
                     for i, (b, e) in enumerate(width))
        x = x[crop]
        return (np.pad(x, [(max(b, 0), max(e, 0)) for b, e in width], constant_values=v),)
    return run


def _concat(node, const, K):
    axis = int(node.attrs["axis"])

    def run(*xs):
        return (np.concatenate(xs, axis=axis),)
    return run


def _identity(node, const, K):
    def run(x):
        return (x,)
    return _reshaping(run)


def _shape(node, const, K):
    """ONNX Shape: the dimensions start..end of x, int64 (what an NPU compiler knows statically)."""
    start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")

    def run(x):
        return (np.array(x.shape[start:end], np.int64),)
    return run


PREPARE = {"reshape": _reshape, "flatten": _flatten, "transpose": _transpose, "squeeze": _squeeze,
           "unsqueeze": _unsqueeze, "slice": _slice, "pad": _pad, "concat": _concat, "identity": _identity,
           "shape": _shape}
