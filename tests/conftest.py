"""Shared fixtures: an isolated work folder per test session, so tests never
touch the user's executed notebooks, results or book."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from semalign import paths


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
