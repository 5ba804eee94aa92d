"""The package's layers run one way, read from its import graph (no import is
executed): the ground floor (``core/``) imports nothing else of the package,
``method/`` only the ground floor, and nothing below the roof (``study/``:
runner, command line, book) imports it, nor does any notebook."""

from __future__ import annotations

import ast
from pathlib import Path

from semalign.core.paths import NOTEBOOKS_DIR, PACKAGE_DIR


def package_imports(path: Path) -> set[str]:
    """The package's modules and packages ``path`` imports, anywhere in its code, as dotted names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "semalign"}
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: relative import"  # absolute imports only: the graph is read by name
            if (node.module or "").split(".")[0] == "semalign":
                found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def layer(name: str) -> str:
    """``semalign.core.cache`` → ``core``; the package itself → ``""``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def graph() -> dict[str, set[str]]:
    """Each module of the package (a path below semalign/) → the layers it imports."""
    return {path.relative_to(PACKAGE_DIR).as_posix(): {layer(name) for name in package_imports(path)}
            for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def test_the_ground_floor_imports_nothing_else_of_the_package():
    upward = {module: imported - {"core"} for module, imported in graph().items() if module.startswith("core/")}
    assert {module: layers for module, layers in upward.items() if layers} == {}


def test_the_method_imports_only_the_ground_floor():
    upward = {module: imported - {"core", "method"} for module, imported in graph().items()
              if module.startswith("method/")}
    assert {module: layers for module, layers in upward.items() if layers} == {}


def test_nothing_below_the_roof_imports_it():
    below = {module: imported for module, imported in graph().items()
             if not module.startswith("study/") and module != "__main__.py"}  # the entry point runs the command line
    assert {module for module, imported in below.items() if "study" in imported} == set()


def test_notebooks_import_nothing_of_the_roof():
    imports = {notebook.name: package_imports(notebook) for notebook in sorted(NOTEBOOKS_DIR.glob("*.py"))}
    assert len(imports) >= 9 and all(imports.values())  # every notebook is read, and each imports the package
    assert {name: sorted(n for n in found if layer(n) == "study") for name, found in imports.items()
            if any(layer(n) == "study" for n in found)} == {}


def test_the_reader_sees_a_real_graph():
    edges = graph()
    assert len(edges) > 50 and "core" in edges["models/embed.py"] and "method" in edges["experiments/stitching.py"]
