"""The import graph: no cycle inside the core or inside a plugin, no plugin imports another plugin,
and the core imports no plugin. Every import counts, also those inside functions (a lazy import is
still a dependency); only ``if TYPE_CHECKING:`` blocks are left out."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "wxbench"
PLUGIN_SOURCES = sorted(ROOT.glob("plugins/*/src/*")) + sorted(ROOT.glob("examples/*/src/*"))


def _module_name(path: Path, package_root: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module: str, is_package: bool) -> set[str]:
    """Absolute names of the modules ``path`` imports (``from x import y`` gives x.y when that is a
    module, which the caller resolves against the known modules)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for extra in child.orelse:
                    visit(extra)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def _graph(package_root: Path) -> dict[str, set[str]]:
    files = {_module_name(p, package_root): p for p in package_root.rglob("*.py")}
    graph = {}
    for module, path in files.items():
        targets = _imports(path, module, path.name == "__init__.py")
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def _all_imports(package_root: Path) -> set[str]:
    out = set()
    for path in package_root.rglob("*.py"):
        module = _module_name(path, package_root)
        out |= {t.split(".")[0] for t in _imports(path, module, path.name == "__init__.py")}
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    # an edge from a submodule to its own package's __init__ is how Python loads a package, not a cycle
    sorter = graphlib.TopologicalSorter({m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        return exc.args[1]
    return None


PLUGIN_PACKAGES = {p.name for p in PLUGIN_SOURCES}


@pytest.mark.parametrize("package_root", [CORE, *PLUGIN_SOURCES], ids=lambda p: p.name)
def test_no_import_cycle(package_root):
    cycle = _cycle(_graph(package_root))
    assert cycle is None, f"import cycle in {package_root.name}: {' -> '.join(cycle)}"


def test_the_core_imports_no_plugin():
    assert not (_all_imports(CORE) & PLUGIN_PACKAGES), sorted(_all_imports(CORE) & PLUGIN_PACKAGES)


@pytest.mark.parametrize("package_root", PLUGIN_SOURCES, ids=lambda p: p.name)
def test_no_plugin_imports_another_plugin(package_root):
    others = (_all_imports(package_root) & PLUGIN_PACKAGES) - {package_root.name}
    assert not others, f"{package_root.name} imports the plugin(s) {sorted(others)}: plugins depend on wxbench only"


def test_the_checker_finds_a_cycle(tmp_path):
    """The check can fail: a two-module cycle through a function-level import is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n")
    graph = _graph(pkg)
    assert graph["pkg.c"] == set()  # type-checking imports do not count
    assert set(_cycle(graph)) >= {"pkg.a", "pkg.b"}
