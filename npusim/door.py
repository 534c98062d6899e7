"""Checks at the door that need more than one node's attributes: input counts, per-channel
parameter counts and zero points against the declared tensors, and a plan-time memory estimate.
They run on every graph a session loads (after ir.validate), before any kernel sees it, and
raise one NpusimError naming the node or tensor, expected against got.
"""
from __future__ import annotations

import os

import numpy as np

from . import ir
from .errors import NpusimError

_PER_CHANNEL = {"requantize": ("multiplier", "w_scale"), "quantize": ("scale", "zp"), "dequantize": ("scale", "zp")}
_WINDOW_OPS = ("conv", "maxpool", "avgpool")
_ARITY = {"conv": 5, "gemm": 5, "matmul": 4, "scale_float": 3}  # ops planned from a fixed list of inputs


def check(graph: ir.Graph, where: str = "model", available: int | None = None) -> None:
    """Input counts, per-channel counts, zero point ranges and the memory estimate of `graph`
    (see the module docstring); `available`: bytes of memory the buffers may take (default:
    what the machine has free)."""
    producer = graph.producer()
    for node in graph.nodes:
        want = _ARITY.get(node.op)
        if want is not None and len(node.inputs) != want:
            raise NpusimError(f"{where}: node {node.name!r} ({node.op}): {len(node.inputs)} inputs "
                              f"{list(node.inputs)}, expected {want} (absent optional ones as '')")
        _check_per_channel(graph, node, where, producer)
        _check_zero_points(graph, node, where)
    check_memory(graph, where, available_memory() if available is None else available)


def _rank_and_shape(graph, name, producer=None):
    """(rank, shape) of a tensor as declared, or None, None. An accumulator is not declared: a
    conv's has the rank of its input and the weight's output channels, a gemm's is (M, N)."""
    t = graph.tensors.get(name)
    if t is not None and t.shape is not None:
        return len(t.shape), t.shape
    node = (producer or {}).get(name)
    if node is not None and node.op in ("conv", "gemm") and len(node.inputs) > 1:
        x = graph.tensors.get(node.inputs[0])
        w = graph.constants.get(node.inputs[1])
        rank = None if x is None or x.shape is None else len(x.shape)
        if rank is not None and w is not None and w.ndim == (2 if node.op == "gemm" else rank):
            if node.op == "gemm":
                return 2, ("?", w.shape[0 if int(node.attrs.get("transB", 0)) else 1])
            return len(x.shape), (x.shape[0], w.shape[0]) + ("?",) * (len(x.shape) - 2)
    return None, None


def _check_per_channel(graph, node, where, producer):
    """A per-channel parameter has one value or one per channel of its axis, and the axis is
    inside the input's rank (when the input's shape is declared or an accumulator's is known)."""
    keys = _PER_CHANNEL.get(node.op)
    if not keys or not node.inputs or int(node.attrs.get("block_size", 0) or 0):
        return
    rank, shape = _rank_and_shape(graph, node.inputs[0], producer)
    sizes = {k: np.size(node.attrs[k]) for k in keys if k in node.attrs}
    if rank is None or not any(s > 1 for s in sizes.values()):
        return
    axis = int(node.attrs.get("axis", 1))
    label = f"{where}: node {node.source or node.name!r} ({node.op})"
    if not -rank <= axis < rank:
        raise NpusimError(f"{label}: attribute axis={axis}: expected a value in [{-rank}, {rank - 1}] for input "
                          f"{node.inputs[0]!r} of shape {_show(shape)}")
    channels = shape[axis]
    for k, size in sizes.items():
        if isinstance(channels, int) and channels > 0 and size not in (1, channels):
            raise NpusimError(f"{label}: attribute {k} has {size} values, expected 1 or {channels} (one per channel "
                              f"of input {node.inputs[0]!r} {_show(shape)} along axis {axis})")


_ZP_OF_INPUT = {"x_zp": 0, "a_zp": 0, "b_zp": 1}  # zero point attribute -> the input it belongs to


def _check_zero_points(graph, node, where):
    """A zero point attribute lies in its tensor's integer storage range: x_zp / a_zp / b_zp in
    the input's (when it is an integer tensor), y_zp in the output type's (attribute dtype)."""
    checks = [(k, graph.tensors.get(node.inputs[i]).dtype if i < len(node.inputs) and node.inputs[i] in graph.tensors
               else None) for k, i in _ZP_OF_INPUT.items() if k in node.attrs]
    if "y_zp" in node.attrs and isinstance(node.attrs.get("dtype"), str):
        checks.append(("y_zp", node.attrs["dtype"]))
    for key, dtype in checks:
        if dtype is None or not ir.is_quantized(dtype) or np.ndim(node.attrs[key]):
            continue
        info = np.iinfo(ir.storage(dtype))
        if not info.min <= node.attrs[key] <= info.max:
            raise NpusimError(f"{where}: node {node.source or node.name!r} ({node.op}): attribute {key}="
                              f"{node.attrs[key]}: expected a {dtype} zero point in [{info.min}, {info.max}]")


def _show(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


# ---------------------------------------------------------------- memory

def available_memory() -> int:
    """Bytes of memory this process may still take: MemAvailable of /proc/meminfo (Linux), else
    the free physical pages; no limit when neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2 ** 62


def _window_output(graph, node):
    """The output shape a conv or pool computes from its declared input shape and attributes,
    or None when a spatial dimension is not known: N (1 when symbolic), C, then (in + pads − span) // stride + 1 per
    spatial dimension (floor, as ceil_mode=0). The declared output shape may be stale (an edited
    IR file); this one is what the kernel will allocate."""
    _, shape = _rank_and_shape(graph, node.inputs[0])
    a = node.attrs
    if node.op == "conv":
        w = graph.constants.get(node.inputs[1]) if len(node.inputs) > 1 else None
        if w is None or w.ndim < 3:
            return None
        kernel, channels = w.shape[2:], w.shape[0]
    else:
        kernel, channels = tuple(a.get("kernel_shape", ())), None
    if shape is None or len(shape) != 2 + len(kernel) or not all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return None
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in shape[:2]) + tuple(shape[2:])  # N symbolic: 1
    n = len(kernel)
    if not n or a.get("auto_pad", "NOTSET") != "NOTSET" or len(a.get("pads", ())) != 2 * n:
        return None
    strides, dilations = tuple(a.get("strides", (1,) * n)), tuple(a.get("dilations", (1,) * n))
    if len(strides) != n or len(dilations) != n or min(strides + dilations, default=1) < 1:
        return None  # the registry names these
    pads = a["pads"]
    spatial = tuple(max(0, (size + pads[i] + pads[i + n] - ((k - 1) * d + 1)) // s + 1)
                    for i, (size, k, s, d) in enumerate(zip(shape[2:], kernel, strides, dilations)))
    return (shape[0], shape[1] if channels is None else channels) + spatial


def check_memory(graph: ir.Graph, where: str, available: int) -> None:
    """Refuse a graph whose buffers cannot fit: every tensor of known shape (a symbolic
    dimension counted as 1; a conv's or pool's output computed from its input and attributes,
    with an int32 accumulator for a conv) is held for the whole inference, as the session holds
    them, and their sum must not exceed `available` bytes. The error names the largest tensor."""
    sizes = {}
    for name, t in graph.tensors.items():
        if t.shape is not None and all(isinstance(d, (int, str)) for d in t.shape):
            dims = [d if isinstance(d, int) and d >= 0 else 1 for d in t.shape]
            sizes[name] = (int(np.prod(dims, dtype=object)) * ir.storage(t.dtype).itemsize, tuple(t.shape), t.dtype,
                           None)
    for node in graph.nodes:
        if node.op in _WINDOW_OPS and node.inputs and node.outputs:
            out = _window_output(graph, node)
            if out is not None:
                dtype = "i32" if node.op == "conv" else graph.tensors[node.outputs[0]].dtype
                sizes[node.outputs[0]] = (int(np.prod(out, dtype=object)) * ir.storage(dtype).itemsize, out, dtype,
                                          node)
    total = sum(s[0] for s in sizes.values())
    if total <= available:
        return
    name, (size, shape, dtype, node) = max(sizes.items(), key=lambda kv: kv[1][0])
    by = "" if node is None else (f" (node {node.source or node.name!r} ({node.op}): input {node.inputs[0]!r} "
                                  f"{_show(graph.tensors[node.inputs[0]].shape)}, "
                                  + ", ".join(f"{k}={list(node.attrs[k])}" for k in ("kernel_shape", "strides", "pads")
                                              if k in node.attrs) + ")")
    raise NpusimError(f"{where}: the planned buffers take {_bytes(total)}, more than the {_bytes(available)} of "
                      f"memory available; the largest is tensor {name!r} {_show(shape)} {dtype}, {_bytes(size)}{by}")


def _bytes(n: int) -> str:
    for unit, scale in (("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit} ({n:,} bytes)"
    return f"{n} bytes"
