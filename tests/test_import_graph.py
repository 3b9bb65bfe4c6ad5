"""The packages and modules of grit_pipeline/ import each other in one direction only (no cycle); in kosmos/,
evaluation (evaluate/, tasks/) never imports training (train/), directly or through another module; the
product (grit_pipeline/, kosmos/, stages/) never imports the benches (bench/) or the tests (tests/).

Every import counts, also those inside functions (heavy imports are deferred there, but a deferred import
still ties two packages together).
"""
from __future__ import annotations

import ast
from pathlib import Path

import grit_pipeline
import kosmos

ROOT = Path(grit_pipeline.__file__).parent
KOSMOS = Path(kosmos.__file__).parent
REPO = ROOT.parent
PRODUCT = ("grit_pipeline", "kosmos", "stages")
NOT_PRODUCT = ("bench", "tests")


def _unit(module: str, root: Path = ROOT) -> str | None:
    """``grit_pipeline.detectors.demo`` -> ``detectors``: the top-level package or module it belongs to."""
    parts = module.split(".")
    if parts[0] != root.name or len(parts) < 2:
        return None
    name = parts[1]
    return name if (root / name / "__init__.py").exists() or (root / f"{name}.py").exists() else None


def _imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    relative = path.relative_to(root.parent).with_suffix("").parts
    package = relative[:-1]  # the package a relative import in this file starts from
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from . import x`
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Edges between the top-level units of a package (its subpackages and modules)."""
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        source = _unit(".".join(path.relative_to(root.parent).with_suffix("").parts), root)
        if source is None:
            continue
        for module in _imported_modules(path, root):
            target = _unit(module, root)
            if target is not None and target != source:
                graph.setdefault(source, set()).add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_between_grit_pipeline_packages():
    graph = import_graph()
    assert "detectors" in graph and "pipeline" in graph  # the walk sees the real packages
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every unit ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_kosmos_evaluation_never_imports_training():
    graph = import_graph(KOSMOS)
    assert "train" in graph and "tasks" in graph and "evaluate" in graph  # the walk sees the real packages
    for unit in ("evaluate", "tasks", "predict", "score", "metrics", "evalfiles"):
        assert "train" not in reachable(graph, unit), f"kosmos/{unit} reaches kosmos/train"
    assert "tasks" not in reachable(graph, "evaluate") and "predict" not in reachable(graph, "evaluate")


def test_no_import_cycle_between_kosmos_units():
    graph = import_graph(KOSMOS)
    assert "sources" in graph and "stream" in graph  # the walk sees the real packages
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# --- module by module ----------------------------------------------------------------------------------------

def module_files(root: Path = REPO, packages=PRODUCT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``packages`` (a package is its ``__init__``)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def module_graph(modules: dict[str, Path], root: Path = REPO) -> dict[str, set[str]]:
    """Module -> the modules of ``modules`` it imports; importing ``a.b.c`` also runs ``a`` and ``a.b``."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imported_modules(path, root / name.split(".")[0]):
            parts = imported.split(".")
            targets.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules)
        graph[name] = targets - {name}
    return graph


def test_kosmos_evaluate_and_tasks_never_reach_train_module_by_module():
    """Every module under kosmos/evaluate/ and kosmos/tasks/, whatever they hold: none imports a module of
    kosmos/train/, directly or through other modules (imports inside functions count)."""
    modules = module_files(packages=("kosmos",))
    graph = module_graph(modules)
    evaluation = [m for m in modules if m.startswith(("kosmos.evaluate", "kosmos.tasks"))]
    assert "kosmos.evaluate" in evaluation and "kosmos.tasks" in evaluation  # the walk sees the real packages
    for module in evaluation:
        reached = sorted(m for m in reachable(graph, module) if m == "kosmos.train" or m.startswith("kosmos.train."))
        assert not reached, f"{module} reaches {reached} ({' -> '.join(path_to(graph, module, reached[0]))})"


def path_to(graph: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """One import path from ``start`` to ``goal`` (for the failure message)."""
    previous, todo = {start: None}, [start]
    while todo:
        node = todo.pop(0)
        if node == goal:
            path = [node]
            while previous[path[-1]] is not None:
                path.append(previous[path[-1]])
            return path[::-1]
        for nxt in sorted(graph.get(node, ())):
            if nxt not in previous:
                previous[nxt] = node
                todo.append(nxt)
    return []


def test_the_rule_finds_a_forbidden_import_through_another_module(tmp_path):
    """The module walk above can fail: evaluate -> helper -> train is found, with its path."""
    for name, text in (("kosmos/__init__.py", ""), ("kosmos/helper.py", "def f():\n    import kosmos.train.loop\n"),
                       ("kosmos/evaluate/__init__.py", "from kosmos import helper\n"),
                       ("kosmos/train/__init__.py", ""), ("kosmos/train/loop.py", "")):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = module_graph(module_files(tmp_path, ("kosmos",)), tmp_path)
    assert path_to(graph, "kosmos.evaluate", "kosmos.train.loop") == ["kosmos.evaluate", "kosmos.helper",
                                                                      "kosmos.train.loop"]


def test_the_product_never_imports_bench_or_tests():
    """grit_pipeline/, kosmos/ and stages/ work without bench/ and tests/ (neither ships in the wheel)."""
    modules = module_files()
    assert any(m.startswith("stages") for m in modules) and any(m.startswith("kosmos") for m in modules)
    found = []
    for name, path in modules.items():
        for imported in _imported_modules(path, REPO / name.split(".")[0]):
            if imported.split(".")[0] in NOT_PRODUCT:
                found.append(f"{path.relative_to(REPO)} imports {imported}")
    assert found == []
