"""The layout's one rule: imports point down. Every import in ``solulab`` (at the top of a
module, inside a function or under ``TYPE_CHECKING``) goes to a module of the same package or of
a lower layer, and no set of modules imports itself round in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "solulab"

# Lowest first. A top-level module is a shared helper (base); every folder is one layer.
LAYERS = ["base", "kernels", "core", "runs", "data", "distributed", "training",
          "neurons", "study", "autointerp", "evals", "sweep", "web", "pipelines", "cli"]
TOP = "cli"  # the package's own ``__init__`` (the public API, imported lazily) ranks with it


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The solulab modules ``name`` imports anywhere in its code."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "solulab"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + [base] if base else anchor)
            if base.split(".")[0] == "solulab":
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                          for a in node.names}
    return found - {name}


def layer(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 1:
        return TOP
    return parts[1] if (ROOT / parts[1]).is_dir() else "base"


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_every_folder_and_helper_has_a_layer():
    assert {layer(name) for name in modules()} <= set(LAYERS)


def test_imports_point_down():
    upward = [f"{name} ({layer(name)}) imports {target} ({layer(target)})"
              for name, targets in graph().items() for target in sorted(targets)
              if LAYERS.index(layer(target)) > LAYERS.index(layer(name))]
    assert not upward, "\n".join(upward)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_round_a_cycle():
    edges = {name: {t for t in targets if not name.startswith(t + ".")}  # a package's modules
             for name, targets in graph().items()}                     # may import its __init__
    assert cycles(edges) == []


@pytest.mark.parametrize("edges, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(edges, expected):
    assert cycles(edges) == expected


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from solulab.cli import app\n")
    assert imports("solulab.core.m", source, {"solulab.cli"}) == {"solulab.cli"}
