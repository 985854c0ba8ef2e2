"""The package's import graph, read from the source (every import statement, those inside
functions included): no two interlock modules import each other, directly or round a circle,
and a lower layer never imports a higher one."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import interlock

PACKAGE = Path(interlock.__file__).parent
REWRITING: tuple[str, ...] = ()  # (a package being rewritten may be left out of the cycle check here)
# layer -> the layers it must never import
FORBIDDEN = {
    "core": {"training", "app"},
    "network": {"training", "app"},
    "measure": {"training", "app"},
    "timemodel": {"training", "app"},
    "runtime": {"engine", "training", "app"},
    "engine": {"training", "app"},
    "training": {"app"},
}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The interlock module that importing ``name`` runs last (``a.b.func`` -> ``a.b``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(name: str, path: Path, known: dict[str, Path]) -> dict[str, int]:
    """The interlock modules ``name`` imports, anywhere in its source, with the line of the first import of each."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import func``, mod itself.
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source for alias in node.names]
        for target in targets:
            if target == "interlock" or target.startswith("interlock."):
                module = _resolve(target, known)
                if module is not None and module != name:
                    found.setdefault(module, node.lineno)
    return found


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in edges:
                    continue
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _rewriting(module: str) -> bool:
    return any(module == r or module.startswith(r + ".") for r in REWRITING)


def test_the_reader_finds_imports_inside_functions_and_resolves_relative_ones(tmp_path):
    source = tmp_path / "interlock" / "training" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("from ..measure import timing\nfrom .config import TrainConfig\n"
                      "def f():\n    from ..app.cli import main\n    import interlock.heads\n")
    known = {name: Path() for name in ("interlock.training.x", "interlock.measure", "interlock.measure.timing",
                                       "interlock.training.config", "interlock.app.cli", "interlock.heads")}
    assert imports("interlock.training.x", source, known) == {
        "interlock.measure.timing": 1, "interlock.training.config": 2, "interlock.app.cli": 4, "interlock.heads": 5}
    edges = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert cycles(edges) == [["a", "b", "c"]]


def test_no_two_interlock_modules_import_each_other_even_lazily():
    edges = {m: {t: line for t, line in out.items() if not _rewriting(t)}
             for m, out in graph().items() if not _rewriting(m)}
    found = cycles(edges)
    said = ["; ".join(f"{a} -> {b} (line {edges[a][b]})" for a in circle for b in edges[a] if b in circle)
            for circle in found]
    assert not found, ("import cycles (move what the lower module needs into a module both import): "
                       + " | ".join(said))


def test_lower_layers_never_import_higher_ones():
    wrong = [f"{m} imports {t} (line {line})" for m, out in graph().items() for t, line in out.items()
             if _layer(t) in FORBIDDEN.get(_layer(m), ())]
    assert not wrong, "layer violations: " + "; ".join(wrong)


@pytest.mark.parametrize("name", sorted(m for m in modules() if m != "interlock.__main__"))  # (__main__ runs the CLI)
def test_every_module_imports(name):
    importlib.import_module(name)
