"""Which package code an executed notebook depends on, and its fingerprint.

An executed notebook made by other code is stale. "Other code" means the
modules a notebook can run: the runner, the modules the notebooks import and
what those import in turn, at any depth of the package, found by reading the
imports (no import is executed). The book-building and command-line modules are
not among them, so editing an appendix text does not make every executed
notebook stale.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from semalign.study.paths import NOTEBOOKS_DIR, PACKAGE_DIR


def _module_name(path: Path, package_dir: Path) -> str:
    """Dotted name of a module file of the package (``semalign.method.align``)."""
    parts = path.relative_to(package_dir.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_imports(path: Path, name: str) -> set[str] | None:
    """Dotted names of the package's modules that ``path`` (module ``name``; a
    notebook: ``""``) may import, at any depth of its code; None when that cannot
    be narrowed down: it imports the bare package, or it does not parse. A name
    may not be a module (``from semalign.x import function``); the caller keeps
    the ones that are."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError:
        return None
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "semalign":
                    return None
                if alias.name.startswith("semalign."):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module == "semalign" and any(alias.name == "*" for alias in node.names):
                return None
            if module == "semalign" or module.startswith("semalign."):
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
    return _with_parents(found)


def _with_parents(names: set[str]) -> set[str]:
    """``names`` and every package above them: importing a module runs their ``__init__``."""
    return names | {name.rsplit(".", depth)[0] for name in names for depth in range(1, name.count(".") + 1)}


@functools.lru_cache(maxsize=8)
def _reached_modules(package_dir: Path, notebooks_dir: Path, files: tuple) -> tuple[Path, ...]:
    """:func:`notebook_modules` for one state of the files (``files``: paths,
    modification times and sizes, so an edit computes it anew)."""
    modules = {_module_name(path, package_dir): path for path in package_dir.rglob("*.py")}
    reached: set[str] = set()
    todo: list[set[str] | None] = [_with_parents({"semalign.study.runner"})]  # the runner executes every notebook
    todo += [_package_imports(nb, "") for nb in sorted(notebooks_dir.glob("*.py"))]
    while todo:
        names = todo.pop()
        if names is None:
            return tuple(sorted(modules.values()))
        for name in sorted(names - reached):
            if name in modules:
                reached.add(name)
                todo.append(_package_imports(modules[name], name))
    return tuple(sorted(modules[name] for name in reached))


def notebook_modules() -> list[Path]:
    """The package's modules that an executed notebook can depend on (see the
    module docstring): the runner, the package's ``__init__``, the modules the
    notebooks import, and what those import in turn."""
    files = sorted([*PACKAGE_DIR.rglob("*.py"), *NOTEBOOKS_DIR.glob("*.py")])
    state = tuple((str(path), path.stat().st_mtime_ns, path.stat().st_size) for path in files)
    return list(_reached_modules(PACKAGE_DIR, NOTEBOOKS_DIR, state))


def code_fingerprint() -> str:
    """Hash of the package sources a notebook can run (:func:`notebook_modules`):
    an executed notebook made by other code is stale."""
    digest = hashlib.sha256()
    for path in notebook_modules():
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
