"""The package's layering, read from the source: npusim's modules import one another without a
circle (counting imports inside functions, which only hide one), the front end is a package
that does not import the runtime, and no module imports another module's private (_) name."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"npusim": ROOT / "npusim", "npusim_kernels": ROOT / "kernels", "npusim_models": ROOT / "models"}


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            out[".".join([pkg] + parts)] = path
    return out


MODULES = modules()


def imports(name: str):
    """(imported module, imported names) of every import statement in module `name`."""
    path = MODULES[name]
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            yield target, tuple(a.name for a in node.names)


def edges(name: str) -> set[str]:
    """The project modules `name` imports: `from pkg import mod` counts as importing pkg.mod."""
    out = set()
    for target, names in imports(name):
        subs = {f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES}
        out |= subs if subs and len(subs) == len(names) else ({target} | subs) & set(MODULES)
    return out - {name}


def test_no_import_circle_in_npusim_or_its_kernels():
    graph = {m: edges(m) for m in MODULES if not m.startswith("npusim_models")}
    state, circles = {}, []

    def visit(m, path):
        state[m] = "open"
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                circles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, " ; ".join(" -> ".join(c) for c in circles)
    assert graph["npusim.frontend.reader"] and graph["npusim.session"]  # the walk saw real imports


def test_front_end_is_a_package_that_does_not_import_the_runtime():
    front = [m for m in MODULES if m.startswith("npusim.frontend.")]
    assert {"npusim.frontend.reader", "npusim.frontend.convert", "npusim.frontend.qonnx",
            "npusim.frontend.qdq_fusion"} <= set(front)
    runtime = {"npusim.session", "npusim.registry", "npusim.npu", "npusim.fakequant", "npusim.verify", "npusim.cli"}
    bad = [(m, sorted(edges(m) & runtime)) for m in front if edges(m) & runtime]
    assert not bad, bad


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_private_name_of_another_module(name):
    bad = [(target, n) for target, names in imports(name) for n in names
           if n.startswith("_") and not n.startswith("__") and target in MODULES and target != name
           and not target.startswith(name.rsplit(".", 1)[0] + "._")]
    assert not bad, f"{name} imports private names {bad}"


def test_every_package_is_installed_by_setup_cfg():
    """A plain `pip install .` ships every package folder (setup.cfg lists them one by one)."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {".".join([pkg] + list(init.parent.relative_to(folder).parts))
             for pkg, folder in PACKAGES.items() for init in folder.rglob("__init__.py")}
    assert "npusim.frontend" in found and found <= listed, sorted(found - listed)
