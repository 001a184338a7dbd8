"""The module map stays a map: no import cycles in alignfw, no algorithm importing another, no
built-in plugin reaching into a private module or name (a third party could not do the same).

Imports are read from the sources with ``ast`` (including those inside function bodies, which is
where cycles hide); imports under ``if TYPE_CHECKING:`` are annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PKG = REPO / "python" / "alignfw"
#: the packaged trees: alignfw.<name> -> the real folder (python/alignfw/<name> is a symlink to it)
TREES = {"alignfw": PKG, "alignfw.plugins": REPO / "plugins", "alignfw.kernels": REPO / "kernels"}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for prefix, root in TREES.items():
        for f in sorted(root.rglob("*.py")):
            rel = f.relative_to(root).with_suffix("")
            if prefix == "alignfw" and rel.parts[0] in ("plugins", "kernels", "conf"):
                continue  # the symlinks: read through their real folders
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = f
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every runtime alignfw import in ``path``."""
    out: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, [], child.lineno) for a in child.names if a.name.split(".")[0] == "alignfw")
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.split(".")[0] == "alignfw":
                for a in child.names:  # `from alignfw import distributed` imports the module alignfw.distributed
                    sub = f"{child.module}.{a.name}"
                    out.append((sub, [], child.lineno) if sub in modules else (child.module, [a.name], child.lineno))
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {target for target, _, _ in _imports(f, modules) if target in modules and target != m} for m, f in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_reads_imports_inside_functions_and_skips_type_checking(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from alignfw.models import PolicyModel\n"
        "def g():\n    from alignfw import distributed\n    from alignfw.objectives import masked_mean\n"
    )
    mods = {"alignfw.distributed": f, "alignfw.objectives": f, "alignfw.models": f}
    assert [(m, n) for m, n, _ in _imports(f, mods)] == [("alignfw.distributed", []), ("alignfw.objectives", ["masked_mean"])]


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 40 and "alignfw.rollout" in graph and "alignfw.plugins.algorithms.ppo" in graph
    # a package's __init__ re-exporting its submodules is the one allowed loop (they import siblings, not it)
    cycles = [c for c in _cycles(graph) if not any(all(m == p or m.startswith(p + ".") for m in c) for p in c)]
    assert not cycles, f"import cycles (break them by moving the shared piece down a layer): {cycles}"


def test_algorithms_import_no_other_plugin():
    modules = _modules()
    bad = []
    for m, f in modules.items():
        if not m.startswith("alignfw.plugins.algorithms."):
            continue
        for target, _, line in _imports(f, modules):
            if target.startswith("alignfw.plugins.") and target != m:
                bad.append(f"{f.relative_to(REPO)}:{line} imports {target}")
    assert not bad, "an algorithm is written from alignfw's public modules only: " + "; ".join(bad)


def test_built_in_plugins_use_only_public_names():
    modules = _modules()
    bad = []
    for m, f in modules.items():
        if not m.startswith("alignfw.plugins."):
            continue
        for target, names, line in _imports(f, modules):
            private = [p for p in target.split(".") if p.startswith("_")] + [n for n in names if n.startswith("_")]
            if private:
                bad.append(f"{f.relative_to(REPO)}:{line} imports {target} {names}")
    assert not bad, "built-in plugins use the API third parties have: " + "; ".join(bad)
