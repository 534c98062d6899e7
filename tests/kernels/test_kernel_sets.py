"""The two kernel sets are independent derivations under the same names: no fast module imports
a golden one (a shared bug would hide from the fast == golden tests), no golden module imports
Numba or the fast set, and a kernel of both sets has one signature."""
import ast
import importlib
import inspect
from pathlib import Path

import pytest

import npusim_kernels

ROOT = Path(npusim_kernels.__file__).parent
MODULES = sorted(p.stem for p in (ROOT / "golden").glob("*.py") if p.stem != "__init__")


def imported_modules(path):
    """Every module an import statement of the file names, relative ones resolved against npusim_kernels.<set>."""
    pkg = f"npusim_kernels.{path.parent.name}"
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module) if p)
            names += [mod] + [f"{mod}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "fast").glob("*.py")), ids=lambda p: p.name)
def test_fast_never_imports_golden(path):
    bad = [m for m in imported_modules(path) if m.startswith("npusim_kernels.golden")]
    assert not bad, bad


@pytest.mark.parametrize("path", sorted((ROOT / "golden").glob("*.py")), ids=lambda p: p.name)
def test_golden_never_imports_numba_or_fast(path):
    bad = [m for m in imported_modules(path) if m.split(".")[0] == "numba" or m.startswith("npusim_kernels.fast")]
    assert not bad, bad


def test_relative_import_resolution():
    """The check above would pass vacuously if relative imports were resolved wrongly."""
    assert "npusim_kernels.golden.pool" in imported_modules(ROOT / "golden" / "fixedpoint.py")


@pytest.mark.parametrize("name", MODULES)
def test_twins_have_one_signature(name):
    """A kernel defined in both sets takes the same parameters (the registry calls either)."""
    golden = importlib.import_module(f"npusim_kernels.golden.{name}")
    fast = importlib.import_module(f"npusim_kernels.fast.{name}")

    def own(mod):  # public functions defined in the module itself
        return {n for n, f in vars(mod).items()
                if inspect.isfunction(f) and not n.startswith("_") and f.__module__ == mod.__name__}
    twins = own(golden) & own(fast)
    assert twins, f"golden.{name} and fast.{name} define no kernel of the same name"
    for n in sorted(twins):
        assert inspect.signature(getattr(golden, n)) == inspect.signature(getattr(fast, n)), n
