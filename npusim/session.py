"""The runtime: an onnxruntime-shaped InferenceSession over the integer IR.

Planning happens once, in the constructor: every node's parameters are settled by its registry
entry (weights laid out, zero points and multipliers read, lookup tables built, host islands
turned into onnxruntime sessions), and tensors are numbered into slots. `run` then walks a flat
list of (callable, input slots, output slots): arithmetic, not dispatch.

Modes: "ort" requantizes exactly as onnxruntime's CPU kernels do (float32 multipliers, their
rounding and clamping order), so results are bit-exact with onnxruntime on x86-64 AVX2+.
"npu" computes as an integer NPU does (docs/npu_arithmetic.md): fixed-point multipliers with
gemmlowp's double rounding or TFLite's single rounding (`rounding=`), integer elementwise ops,
and every elementwise host island of one 8-bit tensor compiled into a lookup table at plan
time; what still needs the host per inference is listed in `host_fallback`.
"""
from __future__ import annotations

import contextlib
import inspect
import linecache
import logging
import math
from collections import Counter
from collections.abc import Callable
import functools
import os
import time
from dataclasses import dataclass, replace

import numpy as np

from . import caches, door, ir, ortcompat
from .binding import PerShape
from .errors import NpusimError
from .feeds import format_shape
from .overflow import may_overflow
from .registry import OPS, kernel_set

_log = logging.getLogger(__name__)

MODES = ("ort", "npu")
_ORT_TYPES = {"f32": "tensor(float)", "u8": "tensor(uint8)", "i8": "tensor(int8)", "i32": "tensor(int32)",
              "i64": "tensor(int64)", "bool": "tensor(bool)", "f16": "tensor(float16)", "f64": "tensor(double)",
              "u16": "tensor(uint16)", "i16": "tensor(int16)", "u4": "tensor(uint4)", "i4": "tensor(int4)"}

_FOUR_BIT = {"i4": "int4", "u4": "uint4"}  # IR element type -> ml_dtypes name of a 4-bit feed


@dataclass(frozen=True)
class NodeArg:
    """What get_inputs()/get_outputs() return, as onnxruntime's NodeArg: name, shape, type."""
    name: str
    shape: list
    type: str


@dataclass(frozen=True)
class Step:
    run: object
    inputs: tuple
    outputs: tuple
    node: ir.Node


def load_graph(model, where: str | None = None, mode: str = "ort") -> ir.Graph:
    """An IR graph from an ONNX path, bytes or parsed model (imported for `mode`, see
    npusim.frontend.import_onnx), an npusim IR file (.npz), or a Graph, checked at the door
    (ir.validate, door.check) before any plan or kernel sees it."""
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".npz"):
        graph = ir.load(model)  # validated there, naming the file
        where = str(model)
    else:
        if isinstance(model, ir.Graph):
            graph = model
        else:
            from .frontend import import_onnx
            graph = import_onnx(model, where, mode)
        ir.validate(graph)
    door.check(graph, where or "model")
    return graph


def _import_onnx(path_or_bytes, mode: str):
    """(graph, metadata, declared input/output shapes) of an ONNX model given as a path or
    bytes, the model parsed once for all three; a file imported before comes from
    npusim.caches (no onnx import, no parse)."""
    key, cached = caches.read_import(path_or_bytes, mode) if not isinstance(path_or_bytes, (bytes, bytearray)) \
        else (None, None)
    if cached:
        door.check(cached[0], str(path_or_bytes))  # against this machine's free memory
        return cached
    from .frontend import read_model
    where = "<bytes>" if isinstance(path_or_bytes, (bytes, bytearray)) else str(path_or_bytes)
    model = read_model(path_or_bytes)
    graph = load_graph(model, where, mode)
    meta, shapes = ortcompat.onnx_facts(model)
    caches.write_import(key, graph, meta, shapes)
    return graph, meta, shapes


class InferenceSession:
    """npusim.InferenceSession(path_or_bytes, sess_options=None, providers=None, provider_options=None,
    *, mode="ort", ...): onnxruntime's signature and API (run(output_names, input_feed, run_options),
    get_inputs/get_outputs, get_modelmeta, profiling, OrtValues, IOBinding; see npusim.ortcompat).

    sess_options (onnxruntime.SessionOptions): intra_op_num_threads is `threads` unless that is
    given; graph_optimization_level is the host islands' (so they compute what
    onnxruntime computes with these options; below EXTENDED onnxruntime fuses no QDQ pattern, npusim's
    front end still does, as at EXTENDED); log_severity_level their logging (default: fatal
    only, errors are raised); enable_profiling / profile_file_prefix give end_profiling() a
    profile of every step of the plan; the rest is accepted and has no meaning for npusim.
    npusim's own options are keywords: mode: "ort" (onnxruntime's arithmetic) or "npu" (fixed
    point); ort_isa: in mode "ort", the instruction-set family whose onnxruntime integer kernels
    are reproduced (npusim.ortisa: "avx2", "avx512core", "avxvnni", "avx512vnni", "amx"; default
    None = this CPU's, detected as MLAS detects it); rounding: the NPU's requantization rounding,
    "double" (gemmlowp) or "single" (TFLite single rounding), used in mode "npu"; kernels: "fast"
    (Numba) or "golden" (the NumPy references); threads: every thread an inference uses, at most:
    the Numba kernels' (`prange`), BLAS's (the float32 GEMM of matmuls with operands wider than int16) and the host islands'
    onnxruntime intra-op threads (default None: onnxruntime's own default for the islands, all
    cores for Numba and BLAS); engine: the convs', matmuls' and gemms' engine ("auto", "direct", "bitserial").
    """

    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, *,
                 mode: str = "ort", kernels: str = "fast", threads: int | None = None, rounding: str = "double",
                 engine: str = "auto", ort_isa: str | None = None, **kwargs):
        from . import islands, npu, ortisa
        from .registry import ENGINES

        import onnxruntime as ort
        unknown = [k for k in kwargs if k not in ortcompat.ORT_SESSION_KWARGS]
        if unknown:
            raise NpusimError(f"InferenceSession: unknown keyword argument {unknown[0]!r}; npusim's options are "
                              f"mode, kernels, threads, rounding, engine, ort_isa")
        if sess_options is not None and not isinstance(sess_options, ort.SessionOptions):
            raise NpusimError(f"sess_options: expected an onnxruntime.SessionOptions, got "
                              f"{type(sess_options).__name__} (npusim's own options are keywords: mode=...)")
        self._sess_options = sess_options or ort.SessionOptions()
        self._provider_options = ortcompat.provider_options_of(providers, provider_options)
        if threads is None and self._sess_options.intra_op_num_threads > 0:
            threads = self._sess_options.intra_op_num_threads
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise NpusimError(f"threads: expected a positive integer or None, got {threads!r}")

        if mode not in MODES:
            raise NpusimError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        if rounding not in npu.ROUNDINGS:
            raise NpusimError(f"unknown rounding {rounding!r}; expected one of {', '.join(npu.ROUNDINGS)}")
        if engine not in ENGINES:
            raise NpusimError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
        self.mode, self.kernels, self.threads, self.rounding = mode, kernels, threads, rounding
        if mode == "npu" and ort_isa is not None:
            raise NpusimError("ort_isa selects onnxruntime's arithmetic: it applies to mode 'ort' only")
        self.ort_isa = ortisa.resolve(ort_isa) if mode == "ort" else None
        onnx_model = isinstance(path_or_bytes, (bytes, bytearray)) or (
            isinstance(path_or_bytes, (str, os.PathLike)) and not str(path_or_bytes).endswith(".npz"))
        if onnx_model:
            graph, self._meta, self._declared_shapes = _import_onnx(path_or_bytes, mode)
        else:
            graph = load_graph(path_or_bytes, None, mode)
            self._meta, self._declared_shapes = ortcompat.ModelMetadata(graph_name=graph.name), {}
        self.graph = _with_engines(ir.read_only(graph), engine, kernels)
        if mode == "npu":
            self.graph = npu.lower_islands(self.graph)
        else:
            self.graph = ortisa.with_ort_isa(self.graph, self.ort_isa)
            block = ortisa.nchwc_block(self.ort_isa, self._sess_options.graph_optimization_level)
            self.graph = islands.split_pool_islands(self.graph, block)
        self._ops = OPS if mode == "ort" else {**OPS, **npu.ops(rounding)}
        self.host_fallback: list[str] = []  # host islands that run on onnxruntime at every inference
        K = kernel_set(kernels)
        compiling = caches.note_compiling() if kernels == "fast" else None
        g = self.graph
        # slot 0 is the absent optional input (""), always None
        names = [""] + list(g.constants) + list(g.inputs) + [o for n in g.nodes for o in n.outputs]
        self._slot = {n: i for i, n in enumerate(dict.fromkeys(names))}
        self._base = [None] * len(self._slot)
        for name, arr in g.constants.items():
            self._base[self._slot[name]] = arr
        const = g.constants.get
        readers = Counter(i for n in g.nodes for i in n.inputs)
        steps = []
        with thread_limit(threads):  # planning runs kernels too (weight packing, lookup tables)
            for node in g.nodes:
                fn = self._prepare(node, const, K)
                step = Step(fn, tuple(self._slot[i] for i in node.inputs),
                            tuple(self._slot[o] for o in node.outputs), node)
                fuse = _feeds_requantize(steps, node, g, readers)
                steps.append(_fuse_requantize(steps.pop(), step) if fuse else step)
        self._steps = steps
        caches.mark_compiled(compiling)
        self._input_slots = [(name, self._slot[name]) for name in g.inputs]
        self._output_slots = [self._slot[name] for name in g.outputs]
        self._input_facts = []  # (name, dtype, declared dims (-1: free) or None, the shape when all are fixed)
        for name in g.inputs:
            shape = g.tensors[name].shape
            fixed = None if shape is None else tuple(d if isinstance(d, int) else -1 for d in shape)
            self._input_facts.append((name, ir.storage(g.tensors[name].dtype), fixed,
                                      fixed if fixed is not None and min(fixed, default=0) >= 0 else None))
        # layers whose int32 accumulator can wrap: {node name: bound}, computed once (npusim.overflow)
        self.overflow_possible = may_overflow(g)
        self._profiler = None
        if self._sess_options.enable_profiling:
            self._profiler = ortcompat.Profiler(self._sess_options.profile_file_prefix)
            self._steps = [replace(s, run=self._profiler.timed(s.run, s.node)) for s in steps]
        self._straight = _straight_line(self._steps, self._input_slots, self._output_slots, self._base)
        self._output_index = {i: k for k, i in enumerate(self._output_slots)}
        self._thread_users = _thread_users(g, kernels) if threads else None
        # fast kernels without bit-serial ones: whether a kernel may split over Numba's threads is settled at
        # the first run of each set of input shapes (_split_users), later runs of them take only the limits needed
        self._learn_users = bool(self._thread_users) and kernels == "fast" and not any(
            n.attrs.get("engine") == "bitserial" for n in g.nodes)
        self._users_by_shape = {}
        if self._learn_users:  # the fast kernels' Bound, which counts the calls that may split (imports Numba)
            from npusim_kernels.fast.bound import Bound
            self._bound = Bound
        # compiled plans per set of input shapes, made after compiled.COMPILE_AFTER runs of one (fast kernels;
        # npusim.compiled imports Numba, which the fast kernels have imported by now: not with npusim)
        self._compiled = {} if kernels == "fast" and not self._profiler else None
        if self._compiled is not None:
            from . import compiled
            self._compile_after = compiled.COMPILE_AFTER
        self._runs = {}

    def _prepare(self, node, const, K):
        try:
            if node.op == "host":
                so = self._sess_options
                run, is_table = prepare_host(node, self.threads, K, self.graph if self.mode == "npu" else None,
                                             so.graph_optimization_level,
                                             so.log_severity_level if so.log_severity_level >= 0 else 4)
                if not is_table:
                    self.host_fallback.append(node.source or node.name)
                return run
            if node.op not in self._ops:
                raise NpusimError(f"node {node.name!r}: op {node.op!r} has no registry entry")
            run = self._ops[node.op].prepare(node, const, K)
        except NpusimError as e:
            raise e if node.name in str(e) else NpusimError(f"node {node.name!r} ({node.op}): {e}") from None
        except Exception as e:  # a failure no check at the door foresaw: a bug to report, named by node
            raise _node_error(node, e, "cannot plan") from None
        _check_arity(node, run)
        return run

    # ---------------------------------------------------------------- onnxruntime-shaped API
    def get_inputs(self) -> list[NodeArg]:
        return [self._arg(n) for n in self.graph.inputs]

    def get_outputs(self) -> list[NodeArg]:
        return [self._arg(n) for n in self.graph.outputs]

    def _arg(self, name):
        t = self.graph.tensors.get(name)
        if name in self._declared_shapes:  # the ONNX model's own, as onnxruntime shows it
            shape = self._declared_shapes[name]
        else:
            shape = [] if t is None or t.shape is None else [d if isinstance(d, int) and d > 0 else
                                                             (d if isinstance(d, str) and d != "?" else None)
                                                             for d in t.shape]
        return NodeArg(name, shape, _ORT_TYPES.get(t.dtype if t else "", "tensor(unknown)"))

    def run(self, output_names, input_feed: dict, run_options=None) -> list[np.ndarray]:
        """The outputs named (all when None or empty), as onnxruntime's run. run_options (an
        onnxruntime.RunOptions) is accepted; npusim has nothing in it to honour."""
        start = time.perf_counter() if self._profiler else 0.0
        if output_names:
            slots = [self._slot.get(n) if n else None for n in output_names]
            if None in slots:
                bad = output_names[slots.index(None)]
                raise NpusimError(f"output {bad!r} is not a tensor of the model; outputs are: "
                                  f"{', '.join(self.graph.outputs)}")
        else:
            slots = self._output_slots
        if all(i in self._output_index for i in slots):
            outputs = self._run_outputs(input_feed)
            result = [outputs[self._output_index[i]] for i in slots]
        else:  # an intermediate tensor asked for by name
            values = self._execute(input_feed)
            result = [values[i] for i in slots]
        if self._profiler:
            self._profiler.event("Session", "model_run", start, {})
        return result

    def run_with_ort_values(self, output_names, input_dict_ort_values: dict, run_options=None) -> list:
        """run() on onnxruntime OrtValues (CPU), returning OrtValues."""
        feeds = {k: ortcompat.from_ort_value(k, v) for k, v in input_dict_ort_values.items()}
        return [ortcompat.to_ort_value(x) for x in self.run(output_names, feeds, run_options)]

    def io_binding(self) -> ortcompat.IOBinding:
        return ortcompat.IOBinding(self)

    def run_with_iobinding(self, iobinding: ortcompat.IOBinding, run_options=None) -> None:
        iobinding.run(run_options)

    def get_modelmeta(self) -> ortcompat.ModelMetadata:
        return self._meta

    def get_providers(self) -> list[str]:
        return [ortcompat.PROVIDER]

    def get_provider_options(self) -> dict:
        return self._provider_options

    def get_session_options(self):
        return self._sess_options

    def get_overridable_initializers(self) -> list[NodeArg]:
        """None: npusim plans every initializer (weights laid out, multipliers derived) once."""
        return []

    def end_profiling(self) -> str:
        """Writes the profile (onnxruntime's JSON trace format), stops profiling as onnxruntime
        does, and returns the file name; "" when the session options did not enable profiling or
        it has ended."""
        if not self._profiler or not self._profiler.recording:
            return ""
        return self._profiler.write()

    def run_all(self, feeds: dict, given: dict | None = None) -> dict[str, np.ndarray]:
        """Every tensor of the graph (inputs, intermediates, outputs) after one inference.

        given: tensors (by name) that replace npusim's own values wherever an op reads them,
        so that every op sees the same inputs as a reference (a layer-wise comparison).
        """
        values = self._execute(feeds, {self._slot[k]: v for k, v in (given or {}).items() if k in self._slot})
        return {name: values[i] for name, i in self._slot.items() if name and values[i] is not None}

    # ---------------------------------------------------------------- execution
    def _execute(self, feeds, given=None):
        """The value of every slot after one inference on `feeds`; `given`: {slot: value} read
        instead of npusim's own values (run_all's)."""
        if not self._feeds_ok(feeds):
            feeds = check_feeds(self.graph, feeds)
        values = self._base.copy()
        for name, i in self._input_slots:
            values[i] = feeds[name]
        step = None
        users, learn = self._thread_users, None
        if self._learn_users:
            learn = tuple(values[i].shape for _, i in self._input_slots)
            users = self._users_by_shape.get(learn, users)
            learn = None if learn in self._users_by_shape else learn
            splits = self._bound.split_calls
        given = given or {}
        try:
            with thread_limit(self.threads, *users) if users else _NO_LIMIT:
                for step in self._steps:
                    outs = step.run(*[given.get(i, values[i]) for i in step.inputs])
                    for i, v in zip(step.outputs, outs):
                        values[i] = v
        except NpusimError as e:
            if step is None:
                raise
            n = step.node
            raise e if n.name in str(e) or (n.source and n.source in str(e)) else \
                NpusimError(f"node {n.source or n.name!r} ({n.op}): {e}") from None
        except Exception as e:  # a failure no check at the door foresaw: a bug to report, named by node
            if step is None:
                raise
            raise _node_error(step.node, e, "failed", [given.get(i, values[i]) for i in step.inputs]) from None
        if learn is not None:
            self._users_by_shape[learn] = _split_users(self._bound.split_calls != splits, users)
        return values

    def _run_outputs(self, feeds) -> list:
        """The graph's outputs after one inference on `feeds`, by the plan's straight-line code
        (`_straight_line`). The first run of a set of input shapes whose thread limits depend on
        them, and a run that fails, go through `_execute` (it settles the limits, and names the
        failing node with its inputs)."""
        if not self._feeds_ok(feeds):
            feeds = check_feeds(self.graph, feeds)
        users, plan = self._thread_users, self._straight
        if self._learn_users or self._compiled is not None:
            key = tuple(feeds[name].shape for name, _ in self._input_slots)
            if self._learn_users:
                users = self._users_by_shape.get(key, False)
                if users is False:
                    values = self._execute(feeds)
                    return [values[i] for i in self._output_slots]
            if self._compiled is not None:
                plan = self._compiled.get(key)
                if plan is None:
                    runs = self._runs[key] = self._runs.get(key, 0) + 1
                    if runs >= self._compile_after:
                        return self._compile(feeds, key)
                    plan = self._straight
        try:
            with thread_limit(self.threads, *users) if users else _NO_LIMIT:
                return plan(feeds)
        except Exception:
            values = self._execute(feeds)  # raises the error named by node, as a run step by step does
            return [values[i] for i in self._output_slots]

    def _compile(self, feeds, key) -> list:
        """Compiles the plan for the input shapes `key` (npusim.compiled) and keeps it for later runs
        of them, once its outputs on `feeds` equal the Python plan's; keeps the straight-line Python
        plan when nothing in it compiles or compiling fails (a plan file that cannot be written,
        say): a session never fails for want of its compiled plan. -> this run's outputs."""
        values = self._execute(feeds)  # outside the try: a run that fails raises as any run does
        outputs = [values[i] for i in self._output_slots]
        plan = self._straight
        try:
            from . import compiled

            steps = compiled.compile_steps(self._steps, values, self._input_slots, self._output_slots, Step)
            if steps is not None:
                candidate = _straight_line(steps, self._input_slots, self._output_slots, self._base)
                with thread_limit(self.threads):
                    got = candidate(feeds)  # Numba compiles here; the outputs must be the Python plan's
                for name, y, want in zip(self.graph.outputs, got, outputs):
                    if not (y.dtype == want.dtype and np.array_equal(y, want, equal_nan=y.dtype.kind == "f")):
                        raise AssertionError(f"output {name!r} differs from the Python plan's")
                plan = candidate
        except Exception as e:  # noqa: BLE001 (the Python plan computes the same values)
            _log.warning("npusim: the plan of %s is not compiled (%s: %s); it runs as Python",
                         self.graph.name or "the model", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        self._compiled[key] = plan
        return outputs

    def _feeds_ok(self, feeds) -> bool:
        """True when `feeds` holds exactly the inputs, each an array of the input's element type
        and rank, its fixed dimensions as declared, and not empty: what check_feeds would pass
        unchanged, checked with the facts settled at plan time."""
        if type(feeds) is not dict or len(feeds) != len(self._input_facts):
            return False
        for name, dtype, fixed, shape in self._input_facts:
            x = feeds.get(name)
            if type(x) is not np.ndarray or x.dtype != dtype or not x.size:
                return False
            if shape is not None:
                if x.shape != shape:
                    return False
            elif fixed is not None and (x.ndim != len(fixed) or any(d >= 0 and d != n for d, n in zip(fixed, x.shape))):
                return False
        return True


@functools.cache
def _blas_controllers() -> tuple:
    """threadpoolctl's controllers of the BLAS libraries loaded, found once: numpy's (the float32
    chunks of the matmul of operands wider than int16, kernels/fast/matmul.py) and, when scipy is
    installed, scipy's, which Numba loads as it starts compiling (loaded here first, so that a
    limit taken before any kernel ran still reaches it; npusim does not need scipy)."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        pass
    from threadpoolctl import ThreadpoolController
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


class thread_limit:
    """At most `threads` threads in the Numba kernels (numba=True) and in BLAS (blas=True) while
    inside (None: no limit); the caller's counts are put back on exit (Numba's is per calling
    thread). A count already at the limit is left alone: a run costs a few reads when nothing
    changes (each read about 0.5-1 µs, each change 1-1.5 µs, and a change is put back on exit)."""
    __slots__ = ("threads", "numba", "blas", "saved")

    def __init__(self, threads: int | None, numba: bool = True, blas: bool = True):
        self.threads = int(threads) if threads else 0
        self.numba, self.blas = numba, blas
        self.saved = ()

    def __enter__(self):
        if not self.threads:
            return self
        saved = []
        if self.numba:
            import numba

            n = min(self.threads, numba.config.NUMBA_NUM_THREADS)
            before = numba.get_num_threads()
            if before != n:
                numba.set_num_threads(n)
                saved.append((numba.set_num_threads, before))
        for lib in _blas_controllers() if self.blas else ():
            before = lib.get_num_threads()
            if before != self.threads:
                lib.set_num_threads(self.threads)
                saved.append((lib.set_num_threads, before))
        self.saved = saved
        return self

    def __exit__(self, *exc):
        for put_back, count in self.saved:
            put_back(count)
        self.saved = ()


_NO_LIMIT = contextlib.nullcontext()  # a run of a plan that uses neither Numba's threads nor BLAS


def _split_users(split: bool, users: tuple[bool, bool]) -> tuple[bool, bool] | None:
    """`users` (numba, blas) of a plan of fast kernels (no bit-serial one) after its first run of a set
    of input shapes: Numba's count is needed only if a kernel of these shapes may split over threads
    (`split`: a Bound with a thread cap of 2 or more ran, Bound.split_calls: a conv of at least
    2·PARALLEL_MIN_MACS multiply-adds, a row kernel of at least 2·PARALLEL_MIN_ELEMS elements);
    smaller kernels run on the calling thread alone, with no parallel region, and never read it."""
    return (split, users[1]) if split or users[1] else None


def _thread_users(g: ir.Graph, kernels: str) -> tuple[bool, bool]:
    """(numba, blas): whether an inference of `g` may run code whose thread count Numba's setting or
    BLAS's sets, so that a run limits only those (a limit that changes a count costs ~3 µs with
    putting it back, a large part of a small model's run). Numba's count bounds its parallel
    (prange) kernels: the convs, the row kernels of large tensors (requantize, quantize,
    dequantize, add, mul, pools: kernels/fast/rows.py) and the bit-serial ones (tests/test_threads.py
    checks that no other fast module is parallel); which of them split is learned per set of input
    shapes (_split_users).
    BLAS runs the float32 chunks of a matmul or gemm with an operand wider than 8 bits
    (kernels/fast/matmul.py) and NumPy's matmuls in the golden kernels. Host islands have their own
    onnxruntime threads, set at plan time."""
    if kernels != "fast":
        return True, True
    products = [n for n in g.nodes if n.op in ("conv", "matmul", "gemm")]
    blas = any(n.op != "conv" and any(i not in g.tensors or ir.bits(g.tensors[i].dtype) > 8 for i in n.inputs[:2])
               for n in products)
    return True, blas


def _straight_line(steps, input_slots, output_slots, base) -> Callable:
    """-> plan(feeds) = [the graph's outputs]: the steps as one generated Python function of
    straight-line calls, each step's inputs and outputs local variables (v<slot>), constants and
    step functions its globals, and each intermediate deleted after its last reader (its memory
    free for the next allocations). Measured against the loop over slots it replaces: 7-11 % less
    time per run on the digits CNN and the PP-OCR classifier at 1 thread (Python's fastest form
    of the same calls: no list indexing, unpacking or zip per step)."""
    produced = {i for _, i in input_slots} | {i for s in steps for i in s.outputs}
    last_read = {i: k for k, s in enumerate(steps) for i in s.inputs}
    env = {}

    def var(i):
        if i in produced:
            return f"v{i}"
        env[f"c{i}"] = base[i]
        return f"c{i}"
    lines = ["def plan(feeds):"] + [f"    v{i} = feeds[{name!r}]" for name, i in input_slots]
    for k, s in enumerate(steps):
        env[f"run{k}"] = s.run
        call = f"run{k}({', '.join(var(i) for i in s.inputs)})"
        outs = ", ".join(f"v{o}" for o in s.outputs)
        lines.append(f"    {outs} = {call}[0]" if len(s.outputs) == 1 else f"    {outs} = {call}[:{len(s.outputs)}]")
        dead = [i for i in dict.fromkeys(s.inputs + s.outputs)
                if i in produced and last_read.get(i, -1) <= k and i not in output_slots]
        if dead:
            lines.append(f"    del {', '.join(f'v{i}' for i in dead)}")
    lines.append(f"    return [{', '.join(var(i) for i in output_slots)}]")
    exec(compile("\n".join(lines), "<npusim plan>", "exec"), env)
    return env["plan"]


def _check_arity(node: ir.Node, run) -> None:
    """The node has as many inputs as its planned step takes (an IR file edited into another op)."""
    try:
        sig = inspect.signature(run)
    except (TypeError, ValueError):  # a callable with no Python signature: nothing to compare
        return
    try:
        sig.bind(*node.inputs)
    except TypeError:
        raise NpusimError(f"node {node.name!r} ({node.op}): {len(node.inputs)} inputs {list(node.inputs)}, "
                          f"expected {sig}") from None


def _node_error(node: ir.Node, e: Exception, phase: str, inputs=None) -> NpusimError:
    """The one-line error of a node whose plan or kernel raised `e`, an exception that is not an
    NpusimError: the checks at the door (ir.validate, the registry's prepare, check_feeds) are meant
    to refuse every bad model and feed first, so what reaches here is named for what it is.
    - an attribute missing from the node (an IR file edited, or written by another npusim);
    - out of memory, with the input shapes and attributes that asked for it;
    - an ImportError in the chain of `e`: a Python package is missing, not the model wrong (Numba
      raises one when a kernel needs a library that is not installed), named with what needed it;
    - a kernel's own argument check (_kernel_check): its message, with the node;
    - anything else: npusim's bug, "internal error, please report", with the node and the
      exception's type and first line."""
    label = f"node {node.source or node.name!r} ({node.op})"
    imp, name, seen, cause = None, None, set(), e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ImportError):
            imp = imp or cause
            name = name or cause.name
        cause = cause.__cause__ or cause.__context__
    if imp is not None:
        msg = str(imp).splitlines()[0] if str(imp) else type(imp).__name__
        if name is None:
            return NpusimError(f"missing dependency, not a model error: {msg} ({label} needs it)")
        package = name.split(".")[0]
        return NpusimError(f"missing dependency {package!r}, not a model error: {msg} ({label} needs it; "
                           f"pip install {package})")
    if isinstance(e, KeyError) and e.args and isinstance(e.args[0], str) and e.args[0] not in node.attrs:
        return NpusimError(f"{label}: attribute {e.args[0]!r} is missing")
    if _kernel_check(e):  # a kernel's own argument check (kernels/checks.py, onnxruntime's range checks)
        return NpusimError(f"{label}: {str(e).splitlines()[0]}")
    if isinstance(e, MemoryError):
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs or () if isinstance(x, np.ndarray))
        attrs = ", ".join(f"{k}={v}" for k, v in node.attrs.items() if not isinstance(v, (np.ndarray, bytes)))
        return NpusimError(f"{label}: out of memory: its output is too large for inputs of shape {shapes} with "
                           f"{attrs}")
    msg = str(e).splitlines()[0] if str(e) else ""
    return NpusimError(f"{label}: internal error, please report: {phase}: {type(e).__name__}: {msg}")


def _kernel_check(e: Exception) -> bool:
    """True when `e` is a ValueError a kernel raised itself: a `raise` statement in npusim_kernels
    (their argument checks, whose messages name the argument, the range and the value), not an
    error NumPy raised inside a kernel."""
    if not isinstance(e, ValueError) or e.__traceback__ is None:
        return False
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).lstrip()
    return module.startswith("npusim_kernels.") and line.startswith("raise ")


def check_feeds(graph: ir.Graph, feeds) -> dict:
    """The feeds, checked against the inputs; 4-bit arrays (ml_dtypes int4/uint4, as
    onnx.numpy_helper gives them) are converted to the 8-bit storage of the IR."""
    if not isinstance(feeds, dict):
        raise NpusimError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
    feeds = dict(feeds)
    expected = list(graph.inputs)
    for name in feeds:
        if name not in expected:
            raise NpusimError(f"input {name!r} is not an input of the model; inputs are: {', '.join(expected)}")
    for name in expected:
        if name not in feeds:
            raise NpusimError(f"input {name!r} is missing from the feeds")
        x, t = feeds[name], graph.tensors[name]
        want = ir.storage(t.dtype)
        if isinstance(x, (list, tuple, int, float, bool, np.generic)):  # as onnxruntime converts them
            try:
                x = feeds[name] = np.asarray(x, dtype=want)
            except (ValueError, OverflowError, TypeError) as e:
                raise NpusimError(f"input {name!r}: cannot convert the {type(x).__name__} to "
                                  f"{_ORT_TYPES.get(t.dtype, t.dtype)}: {str(e).splitlines()[0]}") from None
        if not isinstance(x, np.ndarray):
            raise NpusimError(f"input {name!r}: expected a numpy array, got {type(x).__name__}")
        if x.dtype.name == _FOUR_BIT.get(t.dtype):
            x = feeds[name] = x.astype(want)
        if x.dtype != want and x.dtype.newbyteorder("=") == want:
            raise NpusimError(f"input {name!r}: a {'big' if x.dtype.byteorder == '>' else 'little'}-endian array; "
                              f"onnxruntime would read its bytes as native values (garbage): pass "
                              f"x.astype({want.str!r})")
        if x.dtype != want:
            raise NpusimError(f"input {name!r}: expected element type {_ORT_TYPES.get(t.dtype, t.dtype)}, "
                              f"got {x.dtype}")
        if x.size == 0:
            raise NpusimError(f"input {name!r}: shape {tuple(x.shape)} has no element (a dimension is 0); npusim "
                              f"runs non-empty tensors only")
        if t.shape is not None:
            if x.ndim != len(t.shape):
                raise NpusimError(f"input {name!r}: expected rank {len(t.shape)} {format_shape(t.shape)}, "
                                  f"got shape {tuple(x.shape)}")
            for i, (d, n) in enumerate(zip(t.shape, x.shape)):
                if isinstance(d, int) and d >= 0 and d != n:
                    raise NpusimError(f"input {name!r}: dimension {i} must be {d} (shape {format_shape(t.shape)}), "
                                      f"got shape {tuple(x.shape)}")
    return feeds


def _with_engines(g: ir.Graph, engine: str, kernels: str) -> ir.Graph:
    """The graph with each conv's, matmul's and gemm's engine chosen ("direct" int8 or "bitserial"
    popcount) and the bit widths the bit-serial kernel needs recorded on the node (attrs engine,
    w_bits, x_bits; w is the constant operand: a conv's weight, B of a matmul or gemm). "auto" weighs
    the direct conv this CPU runs (byte quads on vpdpbusd with the fast kernels and VNNI)."""
    from npusim_kernels.fast.pairmadd import DPBUSD_LANES

    from .registry import choose_engine

    dpbusd = kernels == "fast" and DPBUSD_LANES > 0

    nodes = []
    for n in g.nodes:
        choice = None
        # a conv the registry would refuse (no weight, no group) is left to its plan to name
        if n.op == "conv" and len(n.inputs) > 1 and np.ndim(g.constants.get(n.inputs[1])) in (3, 4) \
                and "group" in n.attrs:
            wt, xt = g.tensors[n.inputs[1]].dtype, g.tensors[n.inputs[0]].dtype
            w = g.constants[n.inputs[1]]
            if not isinstance(n.attrs["group"], (int, np.integer)):
                raise NpusimError(f"node {n.name!r} (conv): attribute group={n.attrs['group']!r}: expected an integer")
            group = int(n.attrs["group"])
            choice = choose_engine(engine, wt, xt, int(np.prod(w.shape[2:])), group > 1 and w.shape[1] == 1,
                                   dpbusd=dpbusd)
        elif n.op in ("matmul", "gemm") and len(n.inputs) > 1 and np.ndim(g.constants.get(n.inputs[1])) == 2:
            wt, xt = g.tensors[n.inputs[1]].dtype, g.tensors[n.inputs[0]].dtype
            a_shape = g.tensors[n.inputs[0]].shape  # None: rank unknown
            lead = None if a_shape is None else a_shape[1:] if n.op == "gemm" and int(n.attrs.get("transA", 0)) \
                else a_shape[:-1]
            rows = int(np.prod(lead)) if lead is not None and all(isinstance(d, int) and d >= 0 for d in lead) else None
            choice = choose_engine(engine, wt, xt, op=n.op, rows=rows)
        if choice is not None and choice != n.attrs.get("engine", "direct"):
            n = replace(n, attrs={**n.attrs, "engine": choice, "w_bits": (ir.bits(wt), wt[0] == "i"),
                                  "x_bits": (ir.bits(xt), xt[0] == "i")})
        nodes.append(n)
    return replace(g, nodes=tuple(nodes))


def _feeds_requantize(steps, node, g, readers) -> bool:
    """True when `node` requantizes the accumulator the previous step produced and nothing else reads."""
    if node.op != "requantize" or not steps:
        return False
    prev = steps[-1].node
    acc = node.inputs[0]
    return prev.outputs == (acc,) and acc not in g.outputs and readers[acc] == 1


def _fuse_requantize(acc_step: Step, req_step: Step) -> Step:
    """One step for accumulate + requantize (one dispatch); it still yields the accumulator. When
    both runs are kernels bound per input shape (registry.shape_bound), the step calls the two
    bound kernels directly, found by one lookup per run: the accumulator's shape and dtype follow
    from the input's through the bound accumulate kernel, so its requantize kernel is found once."""
    produce, requantize = acc_step.run, req_step.run
    outputs = acc_step.outputs + req_step.outputs
    if not (hasattr(produce, "per_shape") and hasattr(requantize, "per_shape")):
        def run(*xs):
            acc = produce(*xs)[0]
            return acc, requantize(acc)[0]
        return Step(run, acc_step.inputs, outputs, acc_step.node)
    accumulators, requantizers, pairs = produce.per_shape, requantize.per_shape, {}

    def run_pair(x, *_):
        pair = pairs.get((x.shape, x.dtype))
        if pair is None:
            accumulate = accumulators[x.shape, x.dtype]
            acc = accumulate(x)
            pair = pairs[x.shape, x.dtype] = accumulate, requantizers[acc.shape, acc.dtype]
            return acc, pair[1](acc)
        acc = pair[0](x)
        return acc, pair[1](acc)
    run_pair.parts = produce, requantize  # a compiled plan calls the two kernels (npusim.compiled)
    return Step(run_pair, acc_step.inputs, outputs, acc_step.node)


def prepare_host(node: ir.Node, threads, K, compile_tables_of: ir.Graph | None = None, optimization=None,
                 log_level: int = 4):
    """A host island: an onnxruntime session over the island's own ONNX model -> (run, is_table).

    The session has the user's optimization level (default ALL, as the whole-model reference,
    verify or a user, has): the island's float fusions and NCHWc kernels are then the ones
    onnxruntime picks for those nodes inside the whole model (see frontend).
    An elementwise island of one 8-bit input (DequantizeLinear -> HardSigmoid -> QuantizeLinear,
    say) is a function of the input's 256 codes: onnxruntime computes it on all 256 codes and
    each inference looks the values up (is_table). In mode "ort" this happens lazily, once per
    input rank, on tensors of the first input's shape (an island may fix it); the values are
    onnxruntime's own, and the zoo's verify tests check the tables
    bit-exact against onnxruntime running the model. In mode "npu" (`compile_tables_of` is
    the graph) the table is built here, at plan time, as an NPU compiler builds a lookup table
    from a float function: the island then costs no host work at inference; a hard-swish island
    gets TFLite's integer HARD_SWISH table (npusim.npu.island_table).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = log_level  # default 4, fatal only: errors are raised (3 prints them too)
    if optimization is not None:  # the user's SessionOptions: islands optimized as their whole model would be
        so.graph_optimization_level = optimization
    if threads:
        so.intra_op_num_threads = threads
    # an island's idle pool threads sleep instead of spinning: they would take the cores from the
    # Numba kernels that run next, and each spinning pool makes tearing the session down slow
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(node.attrs["model"], so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise NpusimError(f"host op {node.source!r}: onnxruntime cannot run it: {str(e).splitlines()[0]}") from None
    in_names = [i.name for i in sess.get_inputs()]
    out_names = list(node.outputs)
    have = [o.name for o in sess.get_outputs()]
    if len(node.inputs) != len(in_names) or not set(out_names) <= set(have) or (
            node.attrs.get("elementwise") and len(in_names) != 1):
        raise NpusimError(f"host op {node.source!r}: inputs {list(node.inputs)} and outputs {out_names}, but its "
                          f"onnxruntime model takes {len(in_names)} inputs and gives {have}")

    def run(*xs):
        try:
            return sess.run(out_names, {n: np.asarray(x) for n, x in zip(in_names, xs)})
        except Exception as e:  # onnxruntime refuses the island's inputs (its exception types are its own)
            raise NpusimError(f"node {node.source!r} (host): onnxruntime fails on it: {str(e).splitlines()[0]}") \
                from None

    if not node.attrs.get("elementwise"):
        return run, False

    def tabulate(shape, dtype):
        """The outputs for the 256 codes, fed as tensors of `shape`, the codes repeated to fill
        it, in as many runs as needed."""
        size = int(np.prod(shape, dtype=np.int64))
        codes = np.arange(256, dtype=np.uint8)
        tables = None
        for start in range(0, 256, size):
            probe = np.resize(np.roll(codes, -start), shape)
            outs = run(probe.view(dtype))
            if any(o.size != size for o in outs):
                return None
            tables = tables or [np.empty(256, o.dtype) for o in outs]
            for table, o in zip(tables, outs):
                table[probe.reshape(-1)] = o.reshape(-1)
        return tables

    if compile_tables_of is not None:
        from .npu import island_table

        t = compile_tables_of.tensors[node.inputs[0]]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in t.shape] if t.shape else [256]
        tables = island_table(node, t.dtype, K) or tabulate(shape, ir.storage(t.dtype))
        if tables is None:
            return run, False
        return _table_run(lambda shape, dtype: tables, run, K, len(out_names) == 1), True

    by_rank = {}

    def tables_of(shape, dtype):  # built once per input rank, on an input of the first shape of that rank
        key = (len(shape), dtype)
        if key not in by_rank and math.prod(shape):
            by_rank[key] = tabulate(shape, dtype)
        return by_rank.get(key)
    return _table_run(tables_of, run, K, len(out_names) == 1), True


def _table_run(tables_of, run, K, single: bool) -> Callable:
    """-> run_table(x): a tabulated host island, each output its table looked up (K.apply_lut_for,
    bound per input shape), or `run(x)` (onnxruntime) where tables_of(shape, dtype) is None. The
    lookup of a `single`-output island is `run_table.bound(x)` (as registry.shape_bound marks a
    kernel): a compiled plan calls it as any other kernel."""
    per_shape = PerShape(lambda shape, dtype: None if (t := tables_of(shape, dtype)) is None else
                         [K.apply_lut_for(shape, dtype, table) for table in t])

    def run_table(x):
        lookups = per_shape[x.shape, x.dtype]
        return run(x) if lookups is None else [f(x) for f in lookups]
    if single:
        run_table.bound = lambda x: (per_shape[x.shape, x.dtype] or [run])[0]
    return run_table
