"""The layering of wanctl.core, read from the source with ``ast``.

Every import in wanctl/core counts, at module level or inside a function (a lazy import is
still a dependency); only ``if TYPE_CHECKING:`` blocks are left out (annotations, never run).

* no import cycle among wanctl.core modules;
* imports go down or sideways only: leaves (wanctl.core.errors, env, trace, families, files and
  any other top-level module) = 0, io = 1, models = 2, sampling = 3, workflows = 4;
* wanctl.core never imports typer, rich, wanctl.cli or wanctl.commands;
* ``wanctl --help`` imports no torch, diffusers or transformers.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "wanctl" / "core"
RANKS = {"io": 1, "models": 2, "sampling": 3, "workflows": 4}  # anything else in wanctl.core: 0
FORBIDDEN = ("typer", "rich", "click", "wanctl.cli", "wanctl.commands")
HEAVY = ("torch", "diffusers", "transformers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool):
    """(imported name, line) for every import outside ``if TYPE_CHECKING:`` blocks. ``from a import b``
    gives ``a.b`` when that is a module, else ``a``."""
    out: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.extend((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full if full in MODULES else base, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph() -> dict[str, list[tuple[str, int]]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = _imports(tree, name, path.name == "__init__.py")
    return graph


GRAPH = _graph()


def _rank(module: str) -> int:
    parts = module.split(".")  # wanctl.core.<subpackage or leaf>[...]
    return RANKS.get(parts[2], 0) if len(parts) > 2 else 0


def _where(module: str, line: int) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{line}"


def _core_edges():
    for src, imports in GRAPH.items():
        for dst, line in imports:
            if dst in MODULES and dst != src:
                yield src, dst, line


def test_the_walker_sees_lazy_imports_and_skips_type_checking():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from wanctl.core import trace\n"
        "if TYPE_CHECKING:\n    from wanctl.core.models.bundle import ModelBundle\n"
        "def f():\n    from wanctl.core.io import cache\n    import torch\n"
        "from . import artifact\n"
    )
    got = {n for n, _ in _imports(tree, "wanctl.core.io.comfy", False)}
    assert {"wanctl.core.trace", "wanctl.core.io.cache", "torch", "wanctl.core.io.artifact"} <= got
    assert "wanctl.core.models.bundle" not in got
    assert _rank("wanctl.core.errors") == 0 and _rank("wanctl.core.io.cache") == 1
    assert _rank("wanctl.core.workflows.t2v") == 4 and _rank("wanctl.core") == 0


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    lines: dict[tuple[str, str], int] = {}
    for src, dst, line in _core_edges():
        graph[src].add(dst)
        lines.setdefault((src, dst), line)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    report = []
    for comp in sccs:
        members = set(comp)
        report.append("cycle among " + ", ".join(comp) + ":")
        report += [f"    {s} -> {d}  ({_where(s, lines[(s, d)])})" for s in comp for d in sorted(graph[s] & members)]
    assert not sccs, "\n".join(report)


def test_imports_go_down_the_layers():
    bad = [
        f"{_where(src, line)}: {src} (rank {_rank(src)}) imports {dst} (rank {_rank(dst)})"
        for src, dst, line in _core_edges()
        if _rank(dst) > _rank(src)
    ]
    assert not bad, "imports against the layering (leaves 0, io 1, models 2, sampling 3, workflows 4):\n" + "\n".join(sorted(bad))


def test_core_knows_nothing_of_the_cli():
    bad = [
        f"{_where(src, line)}: {src} imports {name}"
        for src, imports in GRAPH.items()
        for name, line in imports
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert not bad, "\n".join(bad)


def test_heavy_libraries_are_imported_lazily():
    """torch, diffusers and transformers only inside functions: importing any core module is cheap."""
    bad = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            bad += [f"{_where(name, node.lineno)}: {n}" for n in names if n.split(".")[0] in HEAVY]
    assert not bad, "module-level heavy imports:\n" + "\n".join(bad)


def test_help_imports_no_heavy_library():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "wanctl", "--help"], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    imported = [line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") >= 2]
    assert "wanctl.cli" in imported  # the measurement saw wanctl itself
    heavy = sorted({m for m in imported if m.split(".")[0] in HEAVY})
    assert not heavy, f"`wanctl --help` imports {', '.join(heavy[:10])}"
