"""Seeded random inputs of the right shape and element type for a session's inputs."""
from __future__ import annotations

import numpy as np

from .errors import NpusimError
from .ir import is_quantized, qrange, storage


def concrete_shape(name, shape, given=None) -> tuple[int, ...]:
    """The input's shape with a symbolic batch dimension set to 1; other unknown dims must be given."""
    if given is not None:
        given = tuple(int(d) for d in given)
        if shape is not None and (len(given) != len(shape) or any(
                isinstance(d, int) and d > 0 and d != g for d, g in zip(shape, given))):
            raise NpusimError(f"input {name!r}: shape {given} does not fit the model's {format_shape(shape)}")
        return given
    if shape is None:
        raise NpusimError(f"input {name!r} has no shape in the model; give one with --shape {name}=d0,d1,...")
    out = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            out.append(d)
        elif i == 0:
            out.append(1)
        else:
            raise NpusimError(f"input {name!r} has a dynamic dimension {i} in {format_shape(shape)}; "
                              f"give its shape with --shape {name}=d0,d1,...")
    return tuple(out)


def format_shape(shape) -> str:
    """(N, 3, ?, ?): fixed dims as numbers, symbolic ones by name, unknown ones as '?'."""
    return "(" + ", ".join(str(d) if isinstance(d, int) and d > 0 else str(d or "?") for d in shape) + ")"


def check_shape_names(graph, shapes: dict) -> None:
    """Every name given a shape (`--shape NAME=...`) must be an input of the graph."""
    for name in shapes:
        if name not in graph.inputs:
            raise NpusimError(f"--shape {name}=...: the model has no input {name!r}; its inputs are: "
                              f"{', '.join(graph.inputs)}")


def random_feeds(graph, seed: int, shapes: dict | None = None) -> dict[str, np.ndarray]:
    """One feed dict: float inputs uniform in [-1, 1), integer inputs uniform over their range."""
    check_shape_names(graph, shapes or {})
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        t = graph.tensors[name]
        shape = concrete_shape(name, t.shape, (shapes or {}).get(name))
        try:
            if t.dtype.startswith("f"):
                feeds[name] = rng.uniform(-1.0, 1.0, shape).astype(storage(t.dtype))
            elif is_quantized(t.dtype):
                lo, hi = qrange(t.dtype)
                feeds[name] = rng.integers(lo, hi + 1, shape).astype(storage(t.dtype))
            else:
                feeds[name] = rng.integers(-100, 100, shape).astype(storage(t.dtype))
        except MemoryError:
            size = float(np.prod(shape, dtype=np.float64))
            raise NpusimError(f"input {name!r}: a random input of shape {shape} ({size:.3g} elements) does not fit "
                              f"in memory") from None
    return feeds
