"""The package has no import cycles: every import between imgopt's modules, including the
ones made inside functions, forms a graph without cycles."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "imgopt"


def _imports(path: Path) -> set[str]:
    """The imgopt modules that `path` imports, anywhere in the file."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:  # from .x import y / from . import x, y
                names = [node.module] if node.module else [a.name for a in node.names]
            elif node.level == 0 and (node.module or "").startswith("imgopt"):
                names = [node.module.removeprefix("imgopt").lstrip(".") or a.name for a in node.names]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("imgopt.") for a in node.names if a.name.startswith("imgopt.")]
        else:
            continue
        out.update(n.split(".")[0] for n in names)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in PACKAGE.glob("*.py")}
    return {name: _imports(path) & modules.keys() - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_graph_sees_lazy_and_package_imports():
    graph = import_graph()
    assert "params" in graph["fetch"]  # from .params import ...
    assert "app" in graph["cli"]  # imported inside a function
    assert "transform" in graph["service"]  # from . import ..., transform


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in imgopt: " + " -> ".join(cycle or [])


def _loaded_after(code: str) -> set[str]:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_server_process_does_not_load_libvips():
    """With worker processes (the default) the server only hands jobs out: its modules import
    neither pyvips nor the libvips steps (each would cost every server resident memory)."""
    mods = _loaded_after("import imgopt.cli, imgopt.app, imgopt.service, imgopt.metrics, imgopt.warm")
    assert not {"pyvips", "imgopt.transform", "imgopt.placeholder", "imgopt.vipslog"} & mods


def test_the_worker_process_does_not_load_the_web_stack():
    """A worker imports what a job needs and no more (asyncio alone is ~9 MB in every worker)."""
    mods = _loaded_after("import imgopt.workerproc, imgopt.transform, imgopt.placeholder, imgopt.animated, "
                         "imgopt.autoquality, imgopt.logs, imgopt.malloc")
    assert not {"asyncio", "multiprocessing", "starlette", "httpx", "imgopt.pool", "imgopt.workers"} & mods
