"""The integer IR: typed tensors, nodes and a graph, as plain frozen dataclasses.

Element types are short codes: ``u1``..``u8`` (unsigned, 1-8 bits), ``i1``..``i8``
(signed two's complement, 1-8 bits), ``u16`` and ``i16`` (16-bit activations, stored in
``uint16``/``int16``), ``i32``, ``i64``, ``f16``, ``f32``, ``f64`` and ``bool``. Sub-byte
values are stored one per byte (``uint8``/``int8``); their range is what the code says.

A graph saves to one ``.npz`` file (a JSON description plus the arrays) and loads back
identically (`save`, `load`); `table` prints it for people.
"""
from __future__ import annotations

import json
import os
import tempfile
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from .errors import NpusimError

_STORAGE = {"i32": np.int32, "i64": np.int64, "f32": np.float32, "f16": np.float16,
            "f64": np.float64, "bool": np.bool_}
for _b in range(1, 9):
    _STORAGE[f"u{_b}"] = np.uint8
    _STORAGE[f"i{_b}"] = np.int8
_STORAGE["u16"], _STORAGE["i16"] = np.uint16, np.int16


def storage(dtype: str) -> np.dtype:
    """NumPy dtype that stores values of IR element type `dtype`."""
    try:
        return np.dtype(_STORAGE[dtype])
    except KeyError:
        raise NpusimError(f"unknown element type {dtype!r}") from None


def is_quantized(dtype: str) -> bool:
    """True for the integer types activations and weights are quantized to (1-16 bits)."""
    return dtype[0] in "ui" and dtype not in ("i32", "i64")


def bits(dtype: str) -> int:
    return 1 if dtype == "bool" else int(dtype[1:])


def qrange(dtype: str) -> tuple[int, int]:
    """(qmin, qmax) of an integer element type: u4 -> (0, 15), i4 -> (-8, 7)."""
    b = bits(dtype)
    if dtype[0] == "u":
        return 0, (1 << b) - 1
    return -(1 << (b - 1)), (1 << (b - 1)) - 1


@dataclass(frozen=True)
class Quant:
    """Affine quantization: real = (q - zero_point) * scale, per tensor or along `axis`."""
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int | None = None

    def describe(self) -> str:
        if len(self.scale) == 1:
            return f"s={self.scale[0]:.4g} zp={self.zero_point[0]}"
        return f"s[{len(self.scale)}]@{self.axis} {min(self.scale):.3g}..{max(self.scale):.3g}"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple  # ints; str for a symbolic dimension; None when the rank is unknown
    quant: Quant | None = None


@dataclass(frozen=True)
class Node:
    """One IR operation. `attrs` values are int, float, str, bool, tuples of those, or ndarrays.

    An absent optional input is the empty string, as in ONNX. `source` names the ONNX node
    the op came from (several IR nodes may share one, e.g. conv + requantize).
    """
    op: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict = field(default_factory=dict)
    source: str = ""

    def attr(self, key):
        return self.attrs[key]


@dataclass(frozen=True)
class Graph:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    tensors: dict  # name -> Tensor
    nodes: tuple[Node, ...]
    constants: dict  # name -> np.ndarray
    opsets: dict = field(default_factory=dict)  # ONNX domain -> version, for host islands

    def producer(self) -> dict:
        return {o: n for n in self.nodes for o in n.outputs}

    def host_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "host"]


# ---------------------------------------------------------------- save / load

FORMAT, VERSION = "npusim-ir", 1

def _encode_attr(key_prefix, value, arrays):
    if isinstance(value, np.ndarray):
        arrays[key_prefix] = value
        return {"$array": key_prefix}
    if isinstance(value, bytes):
        arrays[key_prefix] = np.frombuffer(value, dtype=np.uint8)
        return {"$bytes": key_prefix}
    if isinstance(value, tuple):
        return {"$tuple": [_encode_attr(f"{key_prefix}/{i}", v, arrays) for i, v in enumerate(value)]}
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def _decode_attr(value, arrays):
    if isinstance(value, dict):
        if "$array" in value:
            return arrays[value["$array"]]
        if "$bytes" in value:
            return arrays[value["$bytes"]].tobytes()
        if "$tuple" in value:
            return tuple(_decode_attr(v, arrays) for v in value["$tuple"])
    return value


def save(graph: Graph, path) -> None:
    """Write `graph` to `path` (.npz) atomically (see savez_atomic)."""
    arrays = {}
    desc = {
        "format": FORMAT, "version": VERSION, "name": graph.name,
        "inputs": list(graph.inputs), "outputs": list(graph.outputs), "opsets": graph.opsets,
        "tensors": [[t.name, t.dtype, None if t.shape is None else list(t.shape),
                     None if t.quant is None else [list(t.quant.scale), list(t.quant.zero_point), t.quant.axis]]
                    for t in graph.tensors.values()],
        "nodes": [[n.op, n.name, list(n.inputs), list(n.outputs), n.source,
                   {k: _encode_attr(f"attr/{i}/{k}", v, arrays) for k, v in n.attrs.items()}]
                  for i, n in enumerate(graph.nodes)],
        "constants": list(graph.constants),
    }
    for i, (name, arr) in enumerate(graph.constants.items()):
        arrays[f"const/{i}"] = arr
    arrays["__graph__"] = np.frombuffer(json.dumps(desc).encode(), dtype=np.uint8)
    savez_atomic(path, arrays)


def write_atomic(path, write) -> None:
    """`write(tmp_path)` into a temp file in the destination folder, then rename it to `path`:
    an interrupted or failed write never leaves a half-written file under `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise NpusimError(f"cannot write {path}: folder {folder} does not exist")
    stem, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=ext, dir=folder)  # same extension: writers that
    os.close(fd)                                                            # infer the format still can
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def savez_atomic(path, arrays: dict) -> None:
    """np.savez, atomically (write_atomic)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    write_atomic(path, write)


# what reading a damaged .npz raises: zip structure (BadZipFile, a bad CRC-32 included), a
# member cut short (EOFError), a flipped compression method or zip version (NotImplementedError,
# zlib.error), a damaged .npy header or JSON (ValueError; SyntaxError, tokenize.TokenError from
# the header NumPy parses as a Python literal), a missing member (KeyError), a member flagged as
# encrypted (RuntimeError from zipfile)
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, NotImplementedError, zipfile.BadZipFile, zlib.error,
                MemoryError, OverflowError, SyntaxError, tokenize.TokenError, RuntimeError)


def read_only(graph: Graph) -> Graph:
    """`graph`, its constants and array attributes made read-only in place. A session's kernels then
    see one array type for them whether the graph was imported (onnx's arrays are read-only views of
    the model's bytes) or loaded from a file (np.load's are writable): Numba compiles a kernel once
    per argument type, so both kinds would compile every kernel twice (once per machine, seconds
    each), the second time at a model's second session, when the import cache answers."""
    for a in list(graph.constants.values()) + [v for n in graph.nodes for v in n.attrs.values()]:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    return graph


def load(path) -> Graph:
    """The graph saved by `save`; a file that is not one, is truncated, damaged (the zip CRC-32 of
    every member is checked), edited into an inconsistent graph (`validate`) or written by a
    newer format version raises one NpusimError naming the file and what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single .npy array, not an .npz archive")
            arrays = {k: z[k] for k in z.files}
        desc = json.loads(arrays.pop("__graph__").tobytes())
    except _READ_ERRORS as e:
        what = f"missing member {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        raise NpusimError(f"{path}: not an npusim IR file, or truncated or damaged ({what})") from None
    if not isinstance(desc, dict) or desc.get("format") != FORMAT:
        raise NpusimError(f"{path}: not an npusim IR file (no format {FORMAT!r} in its description)")
    if not isinstance(desc.get("version"), int) or desc["version"] > VERSION:
        raise NpusimError(f"{path}: npusim IR format version {desc.get('version')!r}; this npusim reads version "
                          f"{VERSION} and older (the file was written by a newer npusim)")
    graph = _decode(desc, arrays, path)
    validate(graph, str(path))
    return graph


def _decode(desc, arrays, path) -> Graph:
    """The Graph of a format description; a missing key, array or malformed entry is one
    NpusimError naming it."""
    where = "description"
    try:
        tensors, tensor_list = {}, desc["tensors"]
        for i, (name, dtype, shape, q) in enumerate(tensor_list):
            where = f"tensor #{i} {name!r}"
            storage(dtype)
            quant = None if q is None else Quant(tuple(float(v) for v in q[0]), tuple(int(v) for v in q[1]),
                                                 None if q[2] is None else int(q[2]))
            tensors[name] = Tensor(name, dtype, None if shape is None else tuple(shape), quant)
        where = "description"
        nodes, node_list = [], desc["nodes"]
        for i, (op, name, ins, outs, src, attrs) in enumerate(node_list):
            where = f"node #{i} {name!r}"
            nodes.append(Node(str(op), str(name), tuple(str(v) for v in ins), tuple(str(v) for v in outs),
                              {str(k): _decode_attr(v, arrays) for k, v in attrs.items()}, str(src)))
        where = "constants"
        constants = {}
        for i, name in enumerate(desc["constants"]):
            where = f"constant #{i} {name!r}"
            constants[name] = arrays[f"const/{i}"]
        where = "description"
        return Graph(str(desc["name"]), tuple(desc["inputs"]), tuple(desc["outputs"]), tensors, tuple(nodes),
                     constants, dict(desc["opsets"]))
    except NpusimError as e:
        raise NpusimError(f"{path}: {where}: {e}") from None
    except KeyError as e:
        raise NpusimError(f"{path}: {where}: missing key or array {e}") from None
    except (TypeError, ValueError, AttributeError, IndexError) as e:
        raise NpusimError(f"{path}: {where}: malformed entry ({type(e).__name__}: {e})") from None


# attributes the registry reads, by name: what each holds (attrs not listed are not checked here)
_ATTR_KINDS = {
    **dict.fromkeys(("group", "axis", "block_size", "ceil_mode", "channels_last", "count_include_pad", "qmin",
                     "qmax", "a_zp", "b_zp", "y_zp", "opset", "transA", "transB", "saturate", "output_dtype",
                     "signed", "narrow", "ort_u8s8", "pair_sat16", "allowzero", "K", "N", "bits", "elementwise"),
                    "an integer"),
    **dict.fromkeys(("strides", "pads", "dilations", "kernel_shape", "perm"), "a tuple of integers"),
    **dict.fromkeys(("a_scale", "x_scale", "y_scale"), "a finite number > 0"),
    **dict.fromkeys(("b_scale", "w_scale", "multiplier", "x_scales"), "finite numbers > 0"),
    "scale": "an array of finite numbers > 0", "zp": "an array of integers",
    **dict.fromkeys(("alpha", "beta", "x_zp"), "a finite number"),  # x_zp: sign's threshold may be 0.0
    **dict.fromkeys(("shift", "wess_shift", "x_zps"), "integers"),
    **dict.fromkeys(("auto_pad", "dtype", "form", "rounding", "rounding_mode", "engine", "order"), "a string"),
    "model": "bytes",
}
_REQUIRED = {"host": ("model",)}  # attributes read before any plan (the island's onnxruntime model)
_FLAGS = ("ceil_mode", "channels_last", "count_include_pad", "transA", "transB", "signed", "narrow", "elementwise")
AUTO_PADS = ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER")


def _attr_fits(key, v, kind) -> bool:
    """True when attribute `key`'s value `v` is of `kind` (_ATTR_KINDS) and in its range."""
    integer = (int, np.integer)
    if kind == "an integer":
        return isinstance(v, integer) and (key not in _FLAGS or int(v) in (0, 1)) and (key != "block_size" or v >= 0)
    if kind == "a tuple of integers":
        return isinstance(v, tuple) and all(isinstance(x, integer) for x in v)
    if kind == "a string":
        return isinstance(v, str) and (key != "auto_pad" or v in AUTO_PADS) and (key != "dtype" or v in _STORAGE)
    if kind == "bytes":
        return isinstance(v, bytes)
    if kind.startswith("an array") and not isinstance(v, np.ndarray):
        return False
    if isinstance(v, (str, bytes)) or not isinstance(v, (int, float, np.number, np.ndarray, tuple)):
        return False
    a = np.asarray(v)
    if a.dtype.kind not in "biuf" or not a.size or (kind.startswith("a finite number") and a.ndim):
        return False
    if kind.endswith("integers"):
        return a.dtype.kind in "biu"
    return bool(np.all(np.isfinite(a)) and (kind == "a finite number" or np.all(a > 0)))


def check_attrs(node: Node, where: str = "model") -> None:
    """The attributes of `node` that the registry reads hold what it expects (_ATTR_KINDS): an
    IR file edited by hand, or graph surgery in Python, is refused here, naming the node, the
    attribute, what it must hold and what it holds, instead of failing inside a kernel."""
    for key in _REQUIRED.get(node.op, ()):
        if key not in node.attrs:
            raise NpusimError(f"{where}: node {node.name!r} ({node.op}): attribute {key!r} is missing")
    for key, v in node.attrs.items():
        kind = _ATTR_KINDS.get(key)
        if kind is not None and not _attr_fits(key, v, kind):
            shown = " ".join((np.array2string(v, threshold=6) if isinstance(v, np.ndarray) else repr(v)).split())
            extra = {"auto_pad": f" ({', '.join(AUTO_PADS)})", "dtype": " (an IR element type)"}.get(key, "")
            if key in _FLAGS or key == "block_size":
                extra = " (0 or 1)" if key in _FLAGS else " >= 0"
            raise NpusimError(f"{where}: node {node.name!r} ({node.op}): attribute {key}={shown[:80]}: expected "
                              f"{kind}{extra}")


def validate(graph: Graph, where: str = "model") -> None:
    """Check that `graph` is consistent, as the session relies on it: every name is a string,
    every graph input and every node input and output has a tensor entry, every node input is
    a constant, a graph input or an output of an earlier node (nodes are in execution order),
    no tensor is produced twice, every graph output is produced, every quantization scale is
    finite and > 0, every constant is stored as its tensor entry's type says, and the attributes
    the registry reads hold what it expects (check_attrs).
    Raises one NpusimError naming the node or the tensor."""
    defined = set(graph.constants) | set(graph.inputs)
    for name in (*graph.inputs, *graph.constants):
        if not isinstance(name, str) or name not in graph.tensors:
            raise NpusimError(f"{where}: input or constant {name!r} has no tensor entry")
    for name, arr in graph.constants.items():
        want = storage(graph.tensors[name].dtype)
        if not isinstance(arr, np.ndarray) or arr.dtype != want:
            raise NpusimError(f"{where}: constant {name!r}: expected a {want} array (its tensor entry says "
                              f"{graph.tensors[name].dtype}), got {getattr(arr, 'dtype', type(arr).__name__)}")
    for n in graph.nodes:
        check_attrs(n, where)
        for i, name in enumerate(n.inputs):
            if name and name not in defined:
                raise NpusimError(f"{where}: node {n.name!r} ({n.op}): input {i} {name!r} is not a constant, a graph "
                                  f"input or the output of an earlier node")
            if name and name not in graph.tensors:
                raise NpusimError(f"{where}: node {n.name!r} ({n.op}): input {i} {name!r} has no tensor entry")
        for name in n.outputs:
            if not name or name in defined:
                raise NpusimError(f"{where}: node {n.name!r} ({n.op}): output {name!r} is "
                                  + ("empty" if not name else "produced twice"))
            if name not in graph.tensors:
                raise NpusimError(f"{where}: node {n.name!r} ({n.op}): output {name!r} has no tensor entry")
            defined.add(name)
    for t in graph.tensors.values():
        if t.quant is None:
            continue
        scale = np.asarray(t.quant.scale, np.float64)
        if not scale.size or not np.all(np.isfinite(scale) & (scale > 0)):
            raise NpusimError(f"{where}: tensor {t.name!r}: quantization scale must be finite and > 0, got "
                              f"{np.array2string(scale, threshold=6)}")
    for name in graph.outputs:
        if name not in defined:
            raise NpusimError(f"{where}: graph output {name!r} is not produced by any node")


def graphs_equal(a: Graph, b: Graph) -> bool:
    """Structural equality, arrays compared exactly (dtype and values)."""
    def same(x, y):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            return (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == y.dtype
                    and x.shape == y.shape and np.array_equal(x, y))
        if isinstance(x, tuple) and isinstance(y, tuple):
            return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
        return x == y
    if (a.name, a.inputs, a.outputs, a.tensors, a.opsets) != (b.name, b.inputs, b.outputs, b.tensors, b.opsets):
        return False
    if a.constants.keys() != b.constants.keys() or not all(same(a.constants[k], b.constants[k]) for k in a.constants):
        return False
    if len(a.nodes) != len(b.nodes):
        return False
    for m, n in zip(a.nodes, b.nodes):
        if (m.op, m.name, m.inputs, m.outputs, m.source) != (n.op, n.name, n.inputs, n.outputs, n.source):
            return False
        if m.attrs.keys() != n.attrs.keys() or not all(same(m.attrs[k], n.attrs[k]) for k in m.attrs):
            return False
    return True
