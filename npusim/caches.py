"""npusim's caches on disk: the import of an ONNX file, and whether the kernels are compiled.

Imports. A later session of an ONNX file imported before reads the IR graph from the cache
instead of parsing the model again, which needs onnx (about a second of start-up to import,
most of it ml_dtypes) and, in mode "ort", onnxruntime's graph optimizer. An entry is
`<key>.npz` (the graph, npusim.ir.save) and `<key>.json` (the model's metadata and declared
input/output shapes, as onnxruntime shows them) in IMPORT_DIR. The key is a SHA-256 of the
file's bytes, its name (the graph's name), the import mode, the CPU (onnxruntime's optimizer,
which the import runs in mode "ort", chooses some rewrites by CPU features) and `source_stamp`
of npusim, npusim_kernels, onnx and onnxruntime (an edited front end or an upgrade is a new key). An
entry that cannot be read is a miss and one that cannot be written is skipped: the cache never
fails a session. The newest KEEP entries are kept.

Compiled plans (npusim.compiled). The source of a plan's compiled functions is the file
`plan_<key>.py` in PLAN_DIR, the key a SHA-256 of the source and of the compiled-kernels marker's
name (CPU, Numba version, kernel sources: the compiled plan holds the kernels' machine code, which
Numba's cache does not check against the kernels' sources); Numba keeps the machine code in
PLAN_DIR/__pycache__. A file is written once (a rewrite would change the modification time that
Numba's cache checks) and the newest KEEP are kept.

Kernels. Numba compiles each fast kernel on first use and keeps the machine code in its cache
(npusim_kernels.fast._jit): the first session on a CPU (or after an upgrade of Numba or an edit
of the kernels) compiles for 10 to 30 seconds, later ones load in well under a second. A marker
file beside Numba's cache, named by a hash of the CPU (LLVM's triple, name and features), the
Numba version and `source_stamp` of npusim_kernels, records that a session has compiled them;
without it a session first says "compiling kernels for this CPU, once" on a terminal
(`note_compiling`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import pathlib
import sys

from . import ir
from .errors import NpusimError
from .ortcompat import ModelMetadata

KEEP = 64
IMPORT_DIR = pathlib.Path.home() / ".cache" / "npusim" / "ir"
PLAN_DIR = pathlib.Path.home() / ".cache" / "npusim" / "plans"
COMPILING_NOTE = "compiling kernels for this CPU, once (later sessions load them from the cache)"
PLAN_NOTE = "compiling this model's plan for these input shapes, once (later sessions load it from the cache)"


def _package_dir(name: str) -> pathlib.Path:
    return pathlib.Path(importlib.util.find_spec(name).origin).parent


@functools.cache
def source_stamp(packages: tuple[str, ...], init_only: tuple[str, ...] = ()) -> bytes:
    """A hash of (path, size, modification time) of every source file of `packages` and of the
    __init__.py of `init_only` (found, not imported): it changes when one is edited or upgraded."""
    files = [p for name in packages for p in sorted(_package_dir(name).rglob("*.py"))]
    files += [_package_dir(name) / "__init__.py" for name in init_only]
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.digest()


@functools.cache
def _host_cpu() -> tuple[str, str, str]:
    """LLVM's target triple, CPU name and CPU features of this machine."""
    from llvmlite import binding as llvm

    return llvm.get_process_triple(), llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()


# ---------------------------------------------------------------- imports
def read_import(path, mode: str):
    """(key, (graph, metadata, declared shapes) or None) of the ONNX file `path` imported for
    `mode`; (None, None) when the file cannot be read (the import then names the error)."""
    try:
        data = pathlib.Path(path).read_bytes()
    except OSError:
        return None, None
    h = hashlib.sha256(source_stamp(("npusim", "npusim_kernels"), ("onnx", "onnxruntime")))
    h.update(f"{mode}|{os.path.basename(str(path))}|{'|'.join(_host_cpu())}|".encode())
    h.update(data)
    key = h.hexdigest()
    try:
        facts = json.loads((IMPORT_DIR / f"{key}.json").read_text())
        graph = ir.load(IMPORT_DIR / f"{key}.npz")
        return key, (graph, ModelMetadata(**facts["meta"]), facts["shapes"])
    except (OSError, ValueError, KeyError, TypeError, NpusimError):
        return key, None


def write_import(key: str | None, graph: ir.Graph, meta: ModelMetadata, shapes: dict) -> None:
    """Store an import under `key` (from `read_import`), then drop all but the newest KEEP entries."""
    if key is None:
        return
    try:
        IMPORT_DIR.mkdir(parents=True, exist_ok=True)
        facts = json.dumps({"meta": dataclasses.asdict(meta), "shapes": shapes})
        ir.write_atomic(IMPORT_DIR / f"{key}.json", lambda tmp: pathlib.Path(tmp).write_text(facts))
        ir.save(graph, IMPORT_DIR / f"{key}.npz")
        entries = sorted(IMPORT_DIR.glob("*.npz"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
    except (OSError, NpusimError, TypeError, ValueError):
        pass


# ---------------------------------------------------------------- compiled kernels
def compiled_marker() -> pathlib.Path:
    """The marker file of this CPU, Numba version and kernel sources, in Numba's cache folder
    (NUMBA_CACHE_DIR, or as npusim_kernels.fast._jit sets it, or the kernels' __pycache__)."""
    import numba

    triple, name, features = _host_cpu()
    cpu = (triple, numba.config.CPU_NAME or name, numba.config.CPU_FEATURES or features, numba.__version__)
    h = hashlib.sha256(source_stamp(("npusim_kernels",)))
    h.update("|".join(cpu).encode())
    folder = numba.config.CACHE_DIR or _package_dir("npusim_kernels") / "fast" / "__pycache__"
    return pathlib.Path(folder) / f"npusim-compiled-{h.hexdigest()[:24]}"


def note_compiling() -> pathlib.Path | None:
    """Prints COMPILING_NOTE to stderr when it is a terminal (a note for the person waiting;
    logs, pipes and captured output stay as they were) and returns the marker to create once
    compiled (`mark_compiled`), when this CPU has no compiled kernels; None when it has."""
    marker = compiled_marker()
    if marker.exists():
        return None
    _note(COMPILING_NOTE)
    return marker


def _note(text: str) -> None:
    """`text` on stderr when it is a terminal (a note for the person waiting; logs, pipes and
    captured output stay as they were)."""
    if sys.stderr is not None and sys.stderr.isatty():
        print(f"npusim: {text}", file=sys.stderr, flush=True)


def mark_compiled(marker: pathlib.Path | None) -> None:
    """Creates the marker of `note_compiling` (nothing when None or not writable)."""
    if marker is None:
        return
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass


# ---------------------------------------------------------------- compiled plans
def plan_module(source: str, names: dict):
    """The module of a compiled plan's `source` (npusim.compiled), with `names` (the kernels it calls)
    in its globals before it runs: loaded from its file in PLAN_DIR, written there first if new
    (then PLAN_NOTE is printed on a terminal: Numba compiles it, for a few seconds).
    Raises OSError when PLAN_DIR cannot be written (the session then keeps the Python plan)."""
    h = hashlib.sha256(compiled_marker().name.encode())
    h.update(source.encode())
    stem = f"plan_{h.hexdigest()[:32]}"
    path = PLAN_DIR / f"{stem}.py"
    if not path.exists():
        _note(PLAN_NOTE)
        PLAN_DIR.mkdir(parents=True, exist_ok=True)
        ir.write_atomic(path, lambda tmp: pathlib.Path(tmp).write_text(source))
        entries = sorted(PLAN_DIR.glob("plan_*.py"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in entries[KEEP:]:
            for f in [old, *(PLAN_DIR / "__pycache__").glob(f"{old.stem}.*")]:
                f.unlink(missing_ok=True)
    name = f"npusim_{stem}"
    module = sys.modules.get(name)
    if module is None:  # imported once per process; Numba's cache finds the module by name
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        vars(module).update(names)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return module
