"""Shared fixtures: an isolated work folder per test session, so tests never
touch the user's executed notebooks, results or book."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from semalign.core import paths
@pytest.fixture(scope="session")
def study_workdir(tmp_path_factory) -> Path:
    """A work folder shared by the slow tests: executed notebooks, results, book.

    It reuses the project's vendored MathJax and model cache (both keyed by
    content), so a warm developer machine does not recompute embeddings.
    """
    work = tmp_path_factory.mktemp("work")
    real = Path(os.environ.get("SEMALIGN_WORKDIR", paths.PROJECT_ROOT / "_work"))
    (work / "vendor").symlink_to(real / "vendor", target_is_directory=True)
    os.environ.setdefault("SEMALIGN_CACHE", str(real / "cache"))
    return work


@pytest.fixture
def isolated_work(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SEMALIGN_WORKDIR", str(tmp_path))
    return tmp_path


def semalign_cli(workdir, *args, check=True):
    """Run the command line in a work folder, as a user would."""
    env = {**os.environ, "SEMALIGN_WORKDIR": str(workdir)}
    proc = subprocess.run([sys.executable, "-m", "semalign", *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        pytest.fail(f"semalign {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def smoke_study(study_workdir):
    """Every notebook executed once with the smoke profile."""
    semalign_cli(study_workdir, "run", "all", "--profile", "smoke", "--quiet")
    return study_workdir


@pytest.fixture(scope="session")
def smoke_book(smoke_study) -> Path:
    """The book built from the smoke profile; returns the HTML folder."""
    index = semalign_cli(smoke_study, "book", "--profile", "smoke").stdout.strip().splitlines()[-1]
    return Path(index).parent


def book_pages(html) -> list:
    """The book's own pages (not Sphinx's index, search and source listings)."""
    skipped = ("genindex.html", "search.html", "py-modindex.html")
    return sorted(p for p in html.rglob("*.html")
                  if p.name not in skipped and not {"_modules", "_static", "_sources"} & set(p.relative_to(html).parts))
