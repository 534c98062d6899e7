"""A session's plan compiled: each run of consecutive kernel steps becomes one Numba function.

The straight-line Python plan (npusim.session) calls one bound kernel per step: each call pays
Numba's dispatch (typing its arguments), boxing its result into a NumPy array, and the Python
between them, about 1-3 µs a step, which is most of the time of a small model (the digits CNN:
11 steps, ~20 µs of arithmetic). Once a session has run one set of input shapes COMPILE_AFTER
times, it compiles that plan if it is such a plan (MAX_MACS_PER_STEP): every run of at least two consecutive steps whose kernels are
`Bound`s of the fast kernels (npusim_kernels.fast.bound), or reshapes, is written as one Numba
function that calls the same cores with the same arguments in the same order, so the values
between them stay native; the other steps (host islands on onnxruntime, kernels without a
Bound) stay Python calls between these functions. The results are those of the Python plan, bit
for bit: the same compiled cores on the same arrays (tests/test_compiled.py checks it).

What a segment's source fixes: the input shapes (one plan per set of them), the bound scalars
and tuples as literals, the dtypes; the bound arrays (weights, tables, scales) are arguments, so
the source depends on the plan's structure only. It is written to caches.PLAN_DIR under a hash
of itself and of the kernels' version (caches.plan_module) and compiled with Numba's on-disk
cache: a later session of the same model and input shapes loads it instead of compiling it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from . import caches

COMPILE_AFTER = 20  # runs of one set of input shapes before its plan is compiled (a short script never pays)
# Only a plan of at most this many multiply-adds per step on average is compiled: ~1-3 µs of Python
# per step is then at least as much as the arithmetic (at 10-30 int8 GMAC/s on one core), and such a
# plan is small. Compiling costs seconds per distinct kernel in each compiled function (Numba links
# and generates the kernels' machine code again into each one): the digits CNN (11 steps, 1 function)
# 5 s once, then loaded from the cache in 0.1 s; the PP-OCR classifier (~150 steps, split by 17
# onnxruntime host islands into 17 functions) 300 s, for 1.4x less time per run.
MAX_MACS_PER_STEP = 1 << 15


@dataclass(frozen=True)
class Call:
    """One compiled kernel call: `bound` on the slots `inputs` (the Bound's own inputs, in its order),
    writing slot `output`; bound None: `output` is inputs[0] reshaped to `shape`."""
    bound: object
    inputs: tuple
    output: int
    shape: tuple


def _calls(step, values) -> list[Call] | None:
    """The compiled calls of a step, after a run that left `values`; None when it has none."""
    run, xs = step.run, [values[i] for i in step.inputs]
    if getattr(run, "reshapes", False):
        y = values[step.outputs[0]]
        if not (xs[0].flags.c_contiguous and y.flags.c_contiguous) or any(i in values.produced for i in step.inputs[1:]):
            return None
        return [Call(None, step.inputs[:1], step.outputs[0], y.shape)]
    parts = getattr(run, "parts", None)
    if parts is not None:  # accumulate + requantize fused into one step: its two kernels
        first = _call(parts[0], step.inputs, xs, step.outputs[0])
        second = _call(parts[1], step.outputs[:1], [values[step.outputs[0]]], step.outputs[1])
        return None if first is None or second is None else [first, second]
    if len(step.outputs) != 1:
        return None
    call = _call(run, step.inputs, xs, step.outputs[0])
    return None if call is None else [call]


def _call(run, slots, xs, output) -> Call | None:
    bound_of = getattr(run, "bound", None)
    if bound_of is None:
        return None
    b = bound_of(*xs)
    if not hasattr(b, "core") or not hasattr(b, "ins"):
        return None
    for i, _ in b.ins:  # the Bound casts nothing in compiled code: its inputs must already be what it takes
        x = xs[i]
        if not isinstance(x, np.ndarray) or not x.flags.c_contiguous or (b.dtype is not None and x.dtype != b.dtype):
            return None
    return Call(b, tuple(slots[i] for i, _ in b.ins), output, ())


class _Values(list):
    """A run's slot values, with the slots some step produces (the others are constants)."""
    produced: frozenset = frozenset()


def _literal(v) -> str | None:
    """v as Python source Numba types as it types v passed in (None: pass v as an argument)."""
    if isinstance(v, (bool, np.bool_)):
        return repr(bool(v))
    if isinstance(v, int):
        return repr(v)
    if isinstance(v, np.integer):
        return f"np.{np.dtype(type(v)).name}({int(v)})"
    if isinstance(v, (float, np.floating)) and np.isfinite(v):
        kind = "float" if isinstance(v, float) else f"np.{np.dtype(type(v)).name}"
        return repr(float(v)) if kind == "float" else f"{kind}({float(v)!r})"
    if isinstance(v, tuple):
        items = [_literal(x) for x in v]
        return None if None in items else "(" + "".join(f"{x}, " for x in items) + ")"
    return None


class _Segment:
    """The source of one compiled function: its calls, its input slots, its array arguments."""

    def __init__(self, index, calls, produced_before, read_after, values, cores):
        self.name = f"seg{index}"
        self.lines, self.inputs, self.arrays, self.cores = [], [], [], cores  # cores: {id: (name, core)}, shared
        made = set()
        for c in calls:
            names = [self._var(i, made, produced_before, values) for i in c.inputs]
            if c.bound is None:
                self.lines.append(f"v{c.output} = {names[0]}.reshape({_literal(c.shape)})")
            else:
                self.lines.extend(self._bound_call(c, names, values))
            made.add(c.output)
        self.outputs = [i for i in dict.fromkeys(c.output for c in calls) if i in read_after]

    def _var(self, slot, made, produced_before, values):
        if slot in made:
            return f"v{slot}"
        if slot in produced_before:  # a value from before the segment: an input of the function
            if slot not in self.inputs:
                self.inputs.append(slot)
            return f"v{slot}"
        return self._array(values[slot])  # a constant the kernel reads as an input

    def _array(self, a):
        for k, b in enumerate(self.arrays):
            if b is a:
                return f"c{k}"
        self.arrays.append(a)
        return f"c{len(self.arrays) - 1}"

    def _bound_call(self, c, names, values):
        b = c.bound
        core = self.cores.setdefault(id(b.core), (f"k{len(self.cores)}", b.core))[0]
        xs = [n if s is None else f"{n}.reshape({_literal(values[i].reshape(s).shape)})"
              for n, i, (_, s) in zip(names, c.inputs, b.ins)]
        args = [_literal(a) or self._array(a) for a in b.args]
        lead = [f"min(T, {b.cap})"] if b.cap else []
        if b.out is None:
            shape = "" if b.shape is None else f".reshape({_literal(b.shape)})"
            return [f"v{c.output} = {core}({', '.join(lead + xs + args)}){shape}"]
        view = "" if b.view is None else f".reshape({_literal(np.empty(b.shape, np.bool_).reshape(b.view).shape)})"
        return [f"v{c.output} = np.empty({_literal(b.shape)}, np.{b.out.name})",
                f"{core}({', '.join(lead + xs + args + [f'v{c.output}{view}'])})"]

    def source(self):
        params = ", ".join(["T"] + [f"v{i}" for i in self.inputs] + [f"c{k}" for k in range(len(self.arrays))])
        body = "".join(f"    {line}\n" for line in self.lines)
        return f"def {self.name}({params}):\n{body}    return ({''.join(f'v{i}, ' for i in self.outputs)})\n"


def compile_steps(steps, values, input_slots, output_slots, step_type):
    """`steps` with each run of >= 2 consecutive compilable steps replaced by one `step_type` whose
    run calls their compiled function; `values`: every slot's value after a run of the input
    shapes to compile for. None when nothing is compiled (a plan with no such run)."""
    values = _Values(values)
    values.produced = frozenset(i for s in steps for i in s.outputs) | {i for _, i in input_slots}
    calls = [_calls(s, values) for s in steps]
    groups, k = [], 0
    while k < len(steps):
        end = k
        while end < len(steps) and calls[end] is not None:
            end += 1
        if end - k >= 2:
            groups.append((k, end))
        k = max(end, k + 1)
    if not groups:
        return None
    segments, cores = [], {}
    for index, (k, end) in enumerate(groups):
        before = {i for _, i in input_slots} | {i for s in steps[:k] for i in s.outputs}
        after = set(output_slots) | {i for s in steps[end:] for i in s.inputs}
        segments.append(_Segment(index, [c for cs in calls[k:end] for c in cs], before, after, values, cores))
    module = caches.plan_module("import numpy as np\n\n\n" + "\n\n".join(s.source() for s in segments),
                                dict(cores.values()))
    out, last = [], 0
    for (k, end), seg in zip(groups, segments):
        out.extend(steps[last:k])
        fn = numba.njit(cache=True, nogil=True)(getattr(module, seg.name))
        out.append(step_type(_segment_run(fn, tuple(seg.arrays)), tuple(seg.inputs), tuple(seg.outputs),
                             steps[k].node))
        last = end
    out.extend(steps[last:])
    return out


def _segment_run(fn, arrays):
    """run(*inputs) of a compiled segment: its outputs, the thread count and bound arrays passed in."""
    def run(*xs):
        return fn(numba.get_num_threads(), *[np.ascontiguousarray(x) for x in xs], *arrays)
    run.function = fn
    return run
