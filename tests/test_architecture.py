"""The package's shape, held: one-way layers, no import cycle, a small top level, short functions.

The layer contract itself lives in pyproject.toml (``[tool.importlinter]``) and runs in
`make lint`; these tests hold the rest of what the architecture promises, counting
imports under ``TYPE_CHECKING`` and inside functions as imports (grimp reads them all).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "lkswarm"
MAX_TOP_LEVEL_MODULES = 12
MAX_FUNCTION_LINES = 150


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    modules = sorted(graph.modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_counting_type_checking_and_function_level_imports() -> None:
    graph = grimp.build_graph("lkswarm", exclude_type_checking_imports=False)
    # A package's __init__ re-exporting its own modules is not a cycle between layers; leave those edges out.
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported.startswith(module + ".") or module.startswith(imported + "."):
                graph.remove_import(importer=module, imported=imported)
    assert _cycles(graph) == []


def test_the_layer_contract_holds() -> None:
    out = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parents[1],
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:]


def test_the_top_level_is_small() -> None:
    modules = [p.stem for p in PACKAGE.glob("*.py")] + [p.stem for p in PACKAGE.glob("*.pyi")]
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, sorted(modules)


def test_no_function_is_longer_than_150_lines() -> None:
    long: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_every_subpackage_says_what_lives_there() -> None:
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and len(docstring) > 40, (
            f"{init.relative_to(PACKAGE)} has no docstring saying what lives there"
        )


def test_the_readme_layout_names_every_module() -> None:
    """A newcomer finds every module in the README's Layout section, under its layer."""
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("## Using it")]
    missing = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name not in {"__init__.py", "__main__.py"} and f"`{path.name}`" not in layout
    ]
    assert missing == []
