"""otel_kit's modules import one another without a circle, counting the imports made inside functions too (an import
deferred into a function hides a circle from Python, not from a reader): the lifecycle builds on the rest, the
integrations read the running handle from ``running``, never from the lifecycle."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "otel_kit"


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def graph() -> dict[str, set[str]]:
    paths = {_module(p): p for p in PACKAGE.rglob("*.py") if "assets" not in p.parts}
    modules = set(paths)
    # a package's __init__ is imported with any of its modules: that edge is Python's, not a choice of ours
    return {name: _imports(path, modules) - {name} for name, path in paths.items()}


def test_no_module_imports_itself_back_through_others() -> None:
    edges = graph()
    packages = {name for name in edges if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()}
    for name in edges:
        edges[name] -= {p for p in packages if name.startswith(p + ".") and p != "otel_kit"}
    try:
        list(TopologicalSorter(edges).static_order())
    except CycleError as err:
        raise AssertionError(f"an import circle: {' -> '.join(err.args[1])}") from None


def test_the_integrations_read_the_running_handle_not_the_lifecycle() -> None:
    edges = graph()
    for name, imported in edges.items():
        if name.startswith("otel_kit.integrations"):
            assert "otel_kit._internal.lifecycle" not in imported, name
