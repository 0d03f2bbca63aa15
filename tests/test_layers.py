"""The package's shape: layers import only downwards, and no module imports
itself back through others (no import cycles).

Imports made only for the type checker (under ``if TYPE_CHECKING:``) are not
counted: they never run.  Imports inside functions are counted: they run when
the function does.  A package's ``__init__`` being imported before its
submodules is Python's doing, not an edge of ours.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "taskrunner"

#: Each layer and the layers it may import (besides itself).
LAYERS: dict[str, set[str]] = {
    "errors": set(),
    # every layer may read the version and raise the shared errors
    "native": {"errors"},
    "runtime": {"errors", "native"},
    "jobs": {"errors", "native", "runtime", "integrations"},
    "integrations": {"errors", "runtime", "jobs"},
    "testing": {"errors", "native", "runtime", "jobs"},
    "dashboard": {"errors", "runtime", "jobs", "cli", "integrations"},
    "cli": {"errors", "native", "runtime", "jobs", "integrations", "dashboard"},
    "examples": {"errors", "runtime", "jobs", "package"},
    "package": {"errors", "native", "runtime", "jobs"},  # taskrunner/__init__
    "__main__": {"package", "cli"},
    "version": set(),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return parts[1]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(module: str) -> set[str]:
    """The taskrunner modules ``module`` imports when it runs."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from package import submodule`` imports the submodule (the
            # package's __init__ runs first as its parent, as for any import).
            names = [f"{base}.{alias.name}" for alias in node.names]
            found.update(n for n in names if n in MODULES)
            if any(n not in MODULES for n in names):
                found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in MODULES and m != module}


GRAPH = {m: _runtime_imports(m) for m in MODULES}


def test_modules_were_found() -> None:
    assert "taskrunner.runtime.pool.threadpool" in GRAPH
    assert "taskrunner.native.binding" in GRAPH["taskrunner.runtime.pool.workers"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_import_only_downwards(module: str) -> None:
    layer = _layer(module)
    allowed = LAYERS[layer] | {layer, "errors", "version"}
    wrong = sorted(m for m in GRAPH[module] if _layer(m) not in allowed)
    assert not wrong, f"{module} ({layer}) imports {wrong}"


def test_no_import_cycles() -> None:
    # Tarjan's strongly connected components: any component of more than one
    # module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_modules_stay_small() -> None:
    """Modules of one job stay under about 600 lines, unless they say why at the top."""
    big = []
    for module, path in MODULES.items():
        text = path.read_text()
        if text.count("\n") > 620 and "Longer than 600 lines because" not in text[:3000]:
            big.append(f"{module}: {text.count(chr(10))} lines")
    assert not big, big
