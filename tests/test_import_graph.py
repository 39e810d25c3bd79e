"""The package's import graph: no cycle anywhere (imports inside functions and under TYPE_CHECKING
included), and ``import dystress`` stays light.

The graph is read statically from the source (ast), so an import hidden in a function counts as much
as one at the top of a module. An edge A -> B is an ``import B``/``from B import x`` in A, or a
``from P import B`` naming submodule B of package P; the implicit import of a module's parent packages
is not an edge (every submodule would otherwise close a cycle through ``dystress/__init__.py``).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "dystress"

#: Must not be loaded by ``import dystress`` (the book's and the study's tools, and heavy plotting).
HEAVY = ("papermill", "umap", "jupyter_book", "matplotlib", "seaborn", "sklearn")

#: An edge: (importing module, imported module) -> the line numbers of the imports that make it.
Graph = dict[str, dict[str, list[int]]]


def _module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (``pkg.sub`` for ``pkg/sub/__init__.py``)."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that the import statement ``node`` in ``module`` loads (explicitly)."""
    if isinstance(node, ast.Import):
        return {m for alias in node.names if (m := _deepest_known(alias.name, known))}
    if node.level:  # relative: from the module's package (its own name when it is a package)
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    submodules = {f"{source}.{alias.name}" for alias in node.names}
    found = submodules & known
    if submodules - known and (module_itself := _deepest_known(source, known)):
        found.add(module_itself)  # names defined in the module (or the package's __init__)
    return found


def _deepest_known(name: str, known: set[str]) -> str | None:
    """``name`` or its longest prefix that is a module of the package (None: outside it)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def import_graph(package_dir: Path, package: str) -> Graph:
    """Static import graph of the package in ``package_dir`` (every import statement in the file)."""
    files = _module_names(package_dir, package)
    known = set(files)
    graph: Graph = {name: {} for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name, path.name == "__init__.py", known):
                    if target != name:
                        graph[name].setdefault(target, []).append(node.lineno)
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None (depth-first search in name order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def find_cycles(graph: Graph) -> list[list[str]]:
    """Cycles of ``graph`` until none is left: one is found, its last edge removed, and so on (so
    every cycle is broken by some reported edge; each reported cycle is a real one of ``graph``)."""
    rest = {a: dict(targets) for a, targets in graph.items()}
    cycles = []
    while cycle := find_cycle(rest):
        cycles.append(cycle)
        del rest[cycle[-2]][cycle[-1]]
    return cycles


def describe(cycle: list[str], graph: Graph) -> str:
    """``a -> b (a line 12) -> a (b line 40)``."""
    steps = [cycle[0]]
    for a, b in zip(cycle, cycle[1:], strict=False):
        lines = ", ".join(str(n) for n in graph[a][b])
        steps.append(f"{b} ({a} line {lines})")
    return " -> ".join(steps)


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE, "dystress")
    cycles = [describe(cycle, graph) for cycle in find_cycles(graph)]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_graph_sees_imports_in_functions_and_the_engine_modules() -> None:
    graph = import_graph(PACKAGE, "dystress")
    assert {"dystress.runtime", "dystress.optim", "dystress.monitor", "dystress.process_group"} <= set(
        graph["dystress.train"]
    )
    assert "dystress.train" in graph["dystress.cli"]  # imported inside a function of cli.py
    assert "dystress.train" not in graph["dystress.evaluate"]
    assert "dystress.process_group" in graph["dystress.train"]  # ``from dystress import process_group``


def test_a_cycle_hidden_in_a_function_or_behind_a_relative_import_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import f\n")
    (pkg / "a.py").write_text("import os\n\nfrom pkg.sub import b\n\n\ndef f():\n    return b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..c import h\n    return h\n")
    (pkg / "c.py").write_text("import pkg.sub.b\n")
    graph = import_graph(pkg, "pkg")
    assert graph["pkg"] == {"pkg.a": [1]}
    assert graph["pkg.a"] == {"pkg.sub.b": [3]}  # a submodule named in ``from pkg.sub import b``
    assert graph["pkg.sub.b"] == {"pkg.c": [2]}  # relative, inside a function
    cycle = find_cycle(graph)
    assert cycle == ["pkg.sub.b", "pkg.c", "pkg.sub.b"]
    assert describe(cycle, graph) == "pkg.sub.b -> pkg.c (pkg.sub.b line 2) -> pkg.sub.b (pkg.c line 1)"
    assert find_cycles(graph) == [cycle]
    (pkg / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(pkg, "pkg")) is None


def test_import_dystress_stays_light() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = "import json, sys; import dystress; print(json.dumps([dystress.__file__, sorted(sys.modules)]))"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    origin, modules = json.loads(proc.stdout.splitlines()[-1])
    assert Path(origin).resolve() == PACKAGE / "__init__.py"  # this checkout's package was measured
    loaded = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert loaded == [], f"import dystress loads {loaded}"
