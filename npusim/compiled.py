"""A session's plan compiled: each run of consecutive kernel steps becomes one Numba function.

The straight-line Python plan (npusim.session) calls one bound kernel per step: each call pays
Numba's dispatch (typing its arguments), boxing its result into a NumPy array, and the Python
between them, about 1-3 µs a step: most of the time of a small model (the digits CNN: 11 steps,
~20 µs of arithmetic), a fifth to a third of the PP-OCR models'. Once a session has run one set
of input shapes COMPILE_AFTER times, it compiles that plan: every run of at least two consecutive
steps whose kernels are `Bound`s of the fast kernels (npusim_kernels.fast.bound), or reshapes, is
written as one Numba function that calls the same compiled kernels with the same arguments in the
same order, so the values between them stay native; the other steps (host islands on
onnxruntime, kernels without a Bound) stay Python calls between these functions. The results are
those of the Python plan, bit for bit: the same machine code on the same arrays (the session
checks the outputs of the run that compiles, tests/test_compiled.py every zoo digits model).

Kernels are called through pointers (`native_call`): the generated function holds only the calls,
and each kernel stays the one compiled (or loaded from Numba's cache) for the Python path, with
the argument types the Python side settles (`_Call.types`) and its address passed in at run time.
(A Numba function that calls another the usual way links the callee's code into its own and
generates its machine code again: 300 s for the PP-OCR classifier's 17 functions.)

What a function's source fixes: the input shapes (one plan per set of them), the bound scalars and
tuples as literals, the dtypes; the bound arrays (weights, tables, scales) and the kernels'
addresses are arguments, so the source depends on the plan's structure only. It is written to
caches.PLAN_DIR under a hash of itself (caches.plan_module) and compiled with Numba's on-disk
cache: a later session of the same model and input shapes loads it instead of compiling it.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from npusim_kernels.fast.bound import Bound

from . import caches

COMPILE_AFTER = 20  # runs of one set of input shapes before its plan is compiled (a short script never pays)
MAX_CALLS = 32  # kernel calls per compiled function at most: LLVM's time grows faster than a function's length


def _plain(t):
    """A Numba type without literal values (a literal 3 is the int64 a Python 3 is typed as)."""
    if isinstance(t, types.BaseTuple):
        return types.Tuple([_plain(x) for x in t.types])
    return types.unliteral(t)


@intrinsic
def native_call(typingctx, kernel, address, args):
    """kernel(*args) through the pointer `address` to its compiled code for exactly these argument
    types (Numba's native calling convention: status, exception and return value as Numba's own
    calls have them); `kernel` (a dispatcher, a compile-time constant) gives the signature. The
    kernel must have been compiled for these types (compile_steps does it), else a typing error."""
    arg_types = tuple(_plain(t) for t in args.types)
    cres = kernel.dispatcher.overloads.get(arg_types)
    if cres is None:
        raise numba.core.errors.TypingError(f"{kernel.dispatcher.py_func.__name__} is not compiled for {arg_types}")
    ret = cres.signature.return_type

    def codegen(context, builder, sig, llargs):
        values = [context.cast(builder, builder.extract_value(llargs[2], i), t, plain)
                  for i, (t, plain) in enumerate(zip(args.types, arg_types))]
        fnty = context.call_conv.get_function_type(ret, arg_types)
        status, result = context.call_conv.call_function(builder, builder.inttoptr(llargs[1], fnty.as_pointer()),
                                                         ret, arg_types, values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return result
    return ret(kernel, address, args), codegen


@dataclass(frozen=True)
class Call:
    """One compiled kernel call: `bound` on the slots `inputs` (the Bound's own inputs, in its order),
    writing slot `output`; bound None: `output` is inputs[0] reshaped to `shape`."""
    bound: object
    inputs: tuple
    output: int
    shape: tuple


def _calls(step, values, produced) -> list[Call] | None:
    """The compiled calls of a step, after a run that left `values`; None when it has none.
    produced: the slots some step or the feeds produce (the others are constants)."""
    run, xs = step.run, [values[i] for i in step.inputs]
    if getattr(run, "reshapes", False):
        y = values[step.outputs[0]]
        if not (xs[0].flags.c_contiguous and y.flags.c_contiguous) or any(i in produced for i in step.inputs[1:]):
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
    if not isinstance(b, Bound):  # a golden kernel, or a fast one with Python around its core
        return None
    for i, _ in b.ins:  # the Bound casts nothing in compiled code: its inputs must already be what it takes
        x = xs[i]
        if not isinstance(x, np.ndarray) or not x.flags.c_contiguous or (b.dtype is not None and x.dtype != b.dtype):
            return None
    return Call(b, tuple(slots[i] for i, _ in b.ins), output, ())


def _fold_star_args(core, xs, types_):
    """(sources, types) of a call of `core` as its compiled form takes them: a kernel with *args
    (npusim_kernels.fast.rows' forms) takes its trailing arguments as one tuple, as Numba folds them
    when Python calls it (so the call's pointer is to the kernel the Python path compiled)."""
    params = inspect.signature(core.py_func).parameters.values()
    if not any(p.kind is p.VAR_POSITIONAL for p in params):
        return xs, types_
    n = sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
    return xs[:n] + [f"({''.join(x + ', ' for x in xs[n:])})"], types_[:n] + [types.Tuple(types_[n:])]


def _literal(v) -> str | None:
    """v as Python source Numba types as it types v passed in (None: pass v as an argument)."""
    if isinstance(v, (bool, np.bool_)):
        return repr(bool(v))
    if isinstance(v, int):
        return repr(v)
    if isinstance(v, np.integer):
        return f"np.{np.dtype(type(v)).name}({int(v)})"
    if isinstance(v, float) and np.isfinite(v):  # a Python float or np.float64: float64
        return repr(float(v))
    if isinstance(v, np.floating) and np.isfinite(v):  # repr(float) of a float32 reads back to it exactly
        return f"np.{np.dtype(type(v)).name}({float(v)!r})"
    if isinstance(v, tuple):
        items = [_literal(x) for x in v]
        return None if None in items else "(" + "".join(f"{x}, " for x in items) + ")"
    return None


class _Segment:
    """The source of one compiled function: its calls, its input slots, its array arguments."""

    def __init__(self, index, calls, produced_before, read_after, values, cores):
        self.name = f"seg{index}"
        self.lines, self.inputs, self.arrays, self.cores = [], [], [], cores  # cores: {id: (name, core)}, shared
        self.kernels = []  # (kernel, argument types) of each call, in order
        self.threaded = False  # a kernel may split over threads: T is Numba's count (else 1, not read)
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
        """The source of one kernel call, and the kernel's argument types (from the run's values and
        the literals, as Numba types them: the compiled kernel the call's pointer is to)."""
        b = c.bound
        core = self.cores.setdefault(id(b.core), (f"k{len(self.cores)}", b.core))[0]
        xs, types_ = [], []
        for n, i, (_, s) in zip(names, c.inputs, b.ins):
            x = values[i] if s is None else values[i].reshape(s)
            xs.append(n if s is None else f"{n}.reshape({_literal(x.shape)})")
            types_.append(numba.typeof(x))
        for a in b.args:
            xs.append(_literal(a) or self._array(a))
            types_.append(numba.typeof(a))
        if b.cap:
            self.threaded |= b.cap > 1
            xs.insert(0, f"min(T, {b.cap})")
            types_.insert(0, numba.types.int64)
        lines = []
        if b.out is not None:
            view = np.empty(b.shape, b.out)
            view = view if b.view is None else view.reshape(b.view)
            lines.append(f"v{c.output} = np.empty({_literal(b.shape)}, np.{b.out.name})")
            xs.append(f"v{c.output}" + ("" if b.view is None else f".reshape({_literal(view.shape)})"))
            types_.append(numba.typeof(view))
        xs, types_ = _fold_star_args(b.core, xs, types_)
        self.kernels.append((b.core, tuple(types_)))
        call = f"native_call({core}, A[{len(self.kernels) - 1}], ({''.join(x + ', ' for x in xs)}))"
        if b.out is not None:
            return lines + [call]
        return [f"v{c.output} = {call}" + ("" if b.shape is None else f".reshape({_literal(b.shape)})")]

    def addresses(self):
        """The kernels' addresses, in call order: each compiled (or loaded from Numba's cache) for
        the call's argument types first."""
        out = np.empty(len(self.kernels), np.int64)
        for k, (kernel, sig) in enumerate(self.kernels):
            cres = kernel.overloads.get(sig)
            if cres is None:
                kernel.compile(sig)
                cres = kernel.overloads[sig]
            out[k] = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
        return out

    def source(self):
        params = ", ".join(["T", "A"] + [f"v{i}" for i in self.inputs] + [f"c{k}" for k in range(len(self.arrays))])
        body = "".join(f"    {line}\n" for line in self.lines)
        return f"def {self.name}({params}):\n{body}    return ({''.join(f'v{i}, ' for i in self.outputs)})\n"


def compile_steps(steps, values, input_slots, output_slots, step_type):
    """`steps` with each run of >= 2 consecutive compilable steps replaced by one `step_type` whose
    run calls their compiled function; `values`: every slot's value after a run of the input
    shapes to compile for. None when nothing is compiled (a plan with no such run)."""
    produced = {i for s in steps for i in s.outputs} | {i for _, i in input_slots}
    calls = [_calls(s, values, produced) for s in steps]
    groups, k = [], 0
    while k < len(steps):
        end, count = k, 0
        while end < len(steps) and calls[end] is not None and count + len(calls[end]) <= MAX_CALLS:
            count += len(calls[end])
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
    kept = [(g, seg) for g, seg in zip(groups, segments) if seg.outputs]  # a group nothing reads stays as it is
    if not kept:
        return None
    groups, segments = zip(*kept)
    module = caches.plan_module("import numpy as np\n\n\n" + "\n\n".join(s.source() for s in segments),
                                {**dict(cores.values()), "native_call": native_call})
    out, last = [], 0
    for (k, end), seg in zip(groups, segments):
        out.extend(steps[last:k])
        fn = numba.njit(cache=True, nogil=True)(getattr(module, seg.name))
        run = _segment_run(fn, seg.threaded, seg.addresses(), tuple(seg.arrays))
        out.append(step_type(run, tuple(seg.inputs), tuple(seg.outputs), steps[k].node))
        last = end
    out.extend(steps[last:])
    return out


def _segment_run(fn, threaded, addresses, arrays):
    """run(*inputs) of a compiled segment: its outputs; the thread count (Numba's when a kernel may
    split, as Bound reads it), the kernels' addresses and the bound arrays passed in."""
    def run(*xs):
        return fn(numba.get_num_threads() if threaded else 1, addresses, *[np.ascontiguousarray(x) for x in xs],
                  *arrays)
    run.function = fn
    return run
