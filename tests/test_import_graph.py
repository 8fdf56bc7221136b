"""The import arrows of the house run one way, and no module imports itself in a circle.

Read from the source with :mod:`ast` (every ``import`` and ``from … import``, at module level
or inside functions; ``if TYPE_CHECKING:`` blocks excluded), so a lazy import that runs the
wrong way is caught too. Also runnable by hand: ``python tests/test_import_graph.py``.

- ``runtime`` is the bottom: it imports nothing from ``train``, ``export``, ``calibration`` or
  ``benchmarks``, and never its own test doubles (``runtime.testing``);
- ``train``, ``export`` and ``calibration`` never import ``benchmarks``;
- nothing imports a private ``benchmarks._*`` module;
- the module graph has no cycle.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "train", "export", "calibration", "benchmarks")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skip.update(id(n) for n in ast.walk(child))
    return skip


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """``(imported project module, line)`` for every import statement in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_blocks(tree)
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    yield sub, node.lineno
                    continue
                target = _known(source, modules)
                if target:
                    yield target, node.lineno


def _known(dotted: str, modules: dict[str, Path]) -> str | None:
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, dict[str, int]]:
    modules = project_modules()
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for name, path in modules.items():
        for target, line in imports_of(name, path, modules):
            if target != name:
                graph[name].setdefault(target, line)
    return graph


def wrong_way(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import that breaks the direction rules, as ``module:line -> target``."""
    bad = []
    for source, targets in graph.items():
        top = source.split(".")[0]
        for target, line in targets.items():
            target_top = target.split(".")[0]
            why = None
            if top == "runtime" and target_top in ("train", "export", "calibration", "benchmarks"):
                why = "runtime imports nothing above it"
            elif top == "runtime" and target.startswith("runtime.testing") and not source.startswith("runtime.testing"):
                why = "the runtime never imports its test doubles"
            elif top in ("train", "export", "calibration") and target_top == "benchmarks":
                why = "only benchmarks may import benchmarks"
            elif (
                any(part.startswith("_") and not part.startswith("__") for part in target.split(".")[1:])
                and target_top == "benchmarks"
            ):
                why = "private benchmarks module"
            if why:
                bad.append(f"{source}:{line} -> {target} ({why})")
    return sorted(bad)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read() -> None:
    graph = import_graph()
    # a few arrows that must be seen, or the reader is broken and every check below is empty
    assert "runtime.errors" in graph["runtime.utils"]
    assert "runtime.backends.contract" in graph["runtime.pipeline"]
    assert any(t.startswith("runtime") for t in graph["train.checkpoint"])
    assert len(graph) > 80


def test_imports_run_one_way() -> None:
    bad = wrong_way(import_graph())
    assert not bad, "imports that run the wrong way:\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_have_teeth() -> None:
    graph = {
        "runtime.a": {"train.b": 3},
        "train.b": {"runtime.a": 1},
        "export.c": {"benchmarks._common": 2},
        "benchmarks._common": {},
        "runtime.x": {"runtime.testing.emulated": 5},
        "runtime.testing.emulated": {},
    }
    assert wrong_way(graph) == [
        "export.c:2 -> benchmarks._common (only benchmarks may import benchmarks)",
        "runtime.a:3 -> train.b (runtime imports nothing above it)",
        "runtime.x:5 -> runtime.testing.emulated (the runtime never imports its test doubles)",
    ]
    assert cycles(graph) == [["runtime.a", "train.b"]]


if __name__ == "__main__":
    g = import_graph()
    problems = wrong_way(g) + [" <-> ".join(c) for c in cycles(g)]
    print("\n".join(problems) or f"{len(g)} modules: imports run one way, no cycles")
    sys.exit(1 if problems else 0)
