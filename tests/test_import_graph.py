"""The layers stay visible: no import cycle among publisher modules, and each module imports on its own.

The rule: the graph of every import between publisher modules is acyclic — top-level imports, imports inside
functions (the lazy ones that keep torch out of start-up) and `if TYPE_CHECKING:` imports alike, because a
lazy import still makes two modules depend on each other. Importing `a.b.c` counts as importing the packages
`a.b` and `a` too (their `__init__` runs), except the importer's own packages. When two modules need one
piece, it moves to a module both import (as `cli_errors` holds `fail`/`redact` for `cli` and `cli_measure`);
when a lower layer only needs a type of a higher one, it states a Protocol (as `placement.Placed`).
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    """Dotted name → file, for every module and package under publisher/."""
    found = {}
    for path in sorted((ROOT / "publisher").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _packages_of(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def _imported(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The publisher modules that `node`, written in `module`, makes Python import."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            base = base[:len(base) - node.level + 1]
            prefix = ".".join([*base, *([node.module] if node.module else [])])
        else:
            prefix = node.module or ""
        names = [prefix, *(f"{prefix}.{alias.name}" for alias in node.names)]  # `from pkg import submodule`
    found = set()
    for name in names:
        while name and name not in MODULES:  # `from .x import function` → module x
            name = name.rpartition(".")[0]
        if name:
            found |= {name} | (_packages_of(name) & MODULES.keys())
    return found - {module, "publisher"} - _packages_of(module)


def import_graph() -> dict[str, set[str]]:
    """Module → the publisher modules it imports anywhere in its body."""
    graph = {}
    for module, path in MODULES.items():
        nodes = ast.walk(ast.parse(path.read_text(), str(path)))
        graph[module] = set().union(*(_imported(module, path, n) for n in nodes
                                      if isinstance(n, ast.Import | ast.ImportFrom)))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "publisher.cli_measure" in graph["publisher.cli"]  # top level, relative
    assert "publisher.runner" in graph["publisher.cli"]  # inside a command function
    assert "publisher.prune" in graph["publisher.settings"]  # `from .prune.structure import ...` runs prune/__init__
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_publisher_modules():
    assert cycles(import_graph()) == []


def test_each_module_imports_on_its_own():
    """Each module first among publisher's, in one interpreter (third-party libraries stay loaded: fast)."""
    names = [name for name in MODULES if not name.endswith("__main__")]  # __main__ would start the emulator
    code = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'publisher' or m.startswith('publisher.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc().strip().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
