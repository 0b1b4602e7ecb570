"""The import graph of `savl/` has no cycle, follows the layers of docs/architecture.md, and every module
imports on its own in a fresh interpreter.

The graph is read from the source with `ast`. An edge A -> B is an `import` in A that names B (or a name in
B); it is *module-level* when it runs while A is imported (also inside a top-level `if`/`try` or a class
body) and *function-level* when it sits in a function body (a lazy import). Cycles are forbidden in both
together: a lazy import still ties two modules to each other (both of the cycles this test was written
against had one lazy edge). Imports under `if TYPE_CHECKING:` never run and are left out. A package's
`__init__` is its own node; importing `savl.a.b` is an edge to `savl.a.b` only (not to `savl.a`).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "savl"

# docs/architecture.md, "Layers": a package or top-level module may import only from a lower layer (or itself).
LAYERS = [
    {"savl.errors", "savl.imresize"},
    {"savl", "savl.io", "savl.losses", "savl.metrics", "savl.viz", "savl.degrade", "savl.infer"},
    {"savl.provenance", "savl.data", "savl.analysis", "savl.cli_checks", "savl.baselines"},
    {"savl.models", "savl.evaluate", "savl.book", "savl.export"},
    {"savl.train", "savl.eval_command", "savl.explore", "savl.table4"},
    {"savl.zoo"},
    {"savl.zoo_schedule"},
    {"savl.zoo_command"},
    {"savl.cli"},
    {"savl.__main__"},
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, in_function: bool = False):
    """(statement, in_function) for every import under `node`, skipping `if TYPE_CHECKING:` bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.orelse:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), in_function)
        else:
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _imports(child, nested)


def _targets(stmt: ast.Import | ast.ImportFrom, me: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules of `known` that the statement imports (the longest known prefix of each dotted name)."""
    if isinstance(stmt, ast.Import):
        names = [a.name for a in stmt.names]
    else:
        base = stmt.module or ""
        if stmt.level:  # relative: from .x import y
            anchor = me.split(".") if is_package else me.split(".")[:-1]
            anchor = anchor[: len(anchor) - (stmt.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        # `from pkg import sub` imports the submodule pkg.sub when there is one, else a name of pkg
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in stmt.names]
    out = []
    for name in names:
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts:
            out.append(".".join(parts))
    return out


def import_graph(root: Path) -> dict[str, dict[str, tuple[str, int]]]:
    """{module: {imported module: (level, line)}}, level "module" or "function" (module-level wins)."""
    mods = modules_of(root)
    known = set(mods)
    graph: dict[str, dict[str, tuple[str, int]]] = {m: {} for m in mods}
    for me, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for stmt, lazy in _imports(tree):
            for target in _targets(stmt, me, path.name == "__init__.py", known):
                if target == me:
                    continue
                level = "function" if lazy else "module"
                if target not in graph[me] or graph[me][target][0] == "function":
                    graph[me][target] = (level, stmt.lineno)
    return graph


def find_cycle(graph: dict[str, dict[str, tuple[str, int]]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def describe(cycle: list[str], graph, root: Path) -> str:
    """`import cycle: a -> b (module-level import, a/x.py:3) -> a (...)`."""
    paths = modules_of(root)
    steps = [cycle[0]]
    for a, b in zip(cycle, cycle[1:]):
        level, line = graph[a][b]
        steps.append(f"-> {b} ({level}-level import, {paths[a].relative_to(root.parent).as_posix()}:{line})")
    return "import cycle: " + " ".join(steps)


# ---------------------------------------------------------------------------------------------- tests
def test_savl_import_graph_has_no_cycle():
    graph = import_graph(PACKAGE)
    cycle = find_cycle(graph)
    assert cycle is None, describe(cycle, graph, PACKAGE)


def _unit(module: str) -> str:
    """The package or top-level module a module belongs to: savl.models.io -> savl.models."""
    return ".".join(module.split(".")[:2])


def test_imports_follow_the_documented_layers():
    layer = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    graph = import_graph(PACKAGE)
    units = {_unit(m) for m in graph}
    assert units == set(layer), f"update LAYERS and docs/architecture.md together: {sorted(units ^ set(layer))}"
    wrong = [
        f"{a} (layer {layer[_unit(a)] + 1}) imports {b} (layer {layer[_unit(b)] + 1}) at line {line}"
        for a, outs in sorted(graph.items())
        for b, (_, line) in sorted(outs.items())
        if _unit(a) != _unit(b) and layer[_unit(b)] >= layer[_unit(a)]
    ]
    assert not wrong, "imports against docs/architecture.md's layers:\n" + "\n".join(wrong)


def test_graph_sees_module_and_lazy_imports():
    # The reader must see the edges it is meant to check, else "no cycle" would hold trivially.
    graph = import_graph(PACKAGE)
    assert graph["savl.train.loop"]["savl.train.run"][0] == "module"
    assert graph["savl.models.io"]["savl.models.registry"][0] == "function"  # lazy: io stays cheap
    assert graph["savl.models.registry"]["savl.models.srnet"][0] == "module"
    assert graph["savl.train.loop"]["savl.train.checkpoint"][0] == "module"  # `from savl.train import checkpoint`
    assert "savl.models.io" not in graph["savl.models.srnet"]  # models do not register themselves any more
    assert "savl.train.loop" not in graph["savl.train.run"]


def test_cycle_finder_reports_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")  # lazy and relative
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.d\nimport pkg.a\n")
    (pkg / "d.py").write_text("import pkg.c\n")  # only reachable from c under TYPE_CHECKING: no cycle there
    graph = import_graph(pkg)
    cycle = find_cycle(graph)
    assert cycle == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    assert describe(cycle, graph, pkg) == (
        "import cycle: pkg.a -> pkg.sub.b (module-level import, pkg/a.py:1) "
        "-> pkg.c (function-level import, pkg/sub/b.py:2) -> pkg.a (module-level import, pkg/c.py:4)"
    )
    assert "pkg.d" not in graph["pkg.c"]
    (pkg / "c.py").write_text("import pkg.d\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.c", "pkg.d", "pkg.c"]
    (pkg / "d.py").write_text("")
    (pkg / "a.py").write_text("")
    assert find_cycle(import_graph(pkg)) is None


_IMPORT_EACH = r"""
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for key in [k for k in sys.modules if k == "savl" or k.startswith("savl.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_module_imports_on_its_own():
    # One interpreter; before each module every savl module is dropped from sys.modules, so each import
    # starts from nothing of savl (third-party packages stay loaded, which keeps this to a few seconds).
    names = [m for m in modules_of(PACKAGE) if m != "savl.__main__"]  # importing __main__ runs the CLI
    out = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, *names],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


@pytest.mark.parametrize("name", ["savl.models.io", "savl.train.run"])
def test_former_cycle_modules_import_first_in_a_fresh_interpreter(name):
    # The two modules that were in cycles, each as the very first import of a new interpreter (the test above
    # covers every module with savl dropped from sys.modules; a new interpreter each would take minutes).
    code = f"import {name}"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent, timeout=120)
