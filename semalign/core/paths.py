"""Every path the study uses. Nothing else in the package hard-codes one.

``SEMALIGN_WORKDIR`` moves everything the study generates (executed notebooks,
results, the built book); ``SEMALIGN_CACHE`` moves the expensive caches
(unpacked model assets, embeddings, rendered images, trained encoders) on its own,
so several work folders can share one cache.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE_DIR.parent
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
BOOK_SOURCE_DIR = PROJECT_ROOT / "book"
RUNS_FILE = NOTEBOOKS_DIR / "runs.yaml"
MANIFEST_FILE = PROJECT_ROOT / "data_manifest.yaml"


def work_dir() -> Path:
    """Root of everything generated; ``$SEMALIGN_WORKDIR`` or ``<project>/_work``."""
    return Path(os.environ.get("SEMALIGN_WORKDIR", PROJECT_ROOT / "_work")).resolve()


def cache_dir() -> Path:
    """Expensive, content-keyed artefacts; ``$SEMALIGN_CACHE`` or ``<work>/cache``."""
    return Path(os.environ.get("SEMALIGN_CACHE", work_dir() / "cache")).resolve()


def assets_dir() -> Path:
    """Model files unpacked from registry packages (e.g. the split MPNet zip)."""
    return cache_dir() / "assets"


def executed_dir(profile: str) -> Path:
    """Executed notebooks of one profile, as the book reads them."""
    return work_dir() / "executed" / profile


def results_dir(profile: str) -> Path:
    """Machine-readable records written by the executed notebooks of one profile."""
    return work_dir() / "results" / profile


def book_build_dir(profile: str) -> Path:
    """Staging folder and HTML output of the book built from one profile."""
    return work_dir() / "book" / profile


def vendor_dir() -> Path:
    """Third-party front-end files fetched by the setup (MathJax 3 from npm)."""
    return work_dir() / "vendor"
