"""``semalign doctor``: check the environment and print what to fix.

Each check is one line, ``[ok]`` or ``[FIX]`` with the command or step that
fixes it: the Python version; every package version pinned in
``requirements-lock.txt`` and ``requirements-assets.txt``; torchvision's
absence; every data file of the offline profile against the sha256 in
``data_manifest.yaml``; the packaged encoder weights, hash-verified; the
vendored MathJax; a writable work folder and free disk for it and the cache.
Exit status 0 when everything is in order, else 1.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
from pathlib import Path

from semalign.data.manifest import verify_sources
from semalign.core.paths import PROJECT_ROOT, cache_dir, vendor_dir, work_dir
from semalign.study.runner import installed_version

PYTHON = (3, 11)
LOCK_FILES = {
    "requirements-lock.txt": "pip install -r requirements-lock.txt",
    "requirements-assets.txt": "pip install --no-deps -r requirements-assets.txt",
}
MIN_FREE_GB = 5
MATHJAX_FILES = ("es5/tex-mml-chtml.js", "es5/output/chtml/fonts/woff-v2")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;]+)")

Check = tuple[bool, str, str]


def pinned_versions(path: Path) -> dict[str, str]:
    """``name==version`` pins of a requirements file (comments and options skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = _PIN.match(line.split("#", 1)[0].strip())
        if match:
            pins[match[1]] = match[2]
    return pins


def _same_version(have: str | None, wanted: str) -> bool:
    return have is not None and have.split("+")[0] == wanted.split("+")[0]  # 2.13.0+cpu is 2.13.0


def version_checks(root: Path = PROJECT_ROOT) -> list[Check]:
    have = sys.version_info[:2]
    wanted = ".".join(map(str, PYTHON))
    out = [(have == PYTHON, f"Python {sys.version.split()[0]} (the lock file is resolved for {wanted})",
            f"create the environment with Python {wanted}: make setup PYTHON=python{wanted}")]
    for name, fix in LOCK_FILES.items():
        path = root / name
        if not path.is_file():
            out.append((False, f"{name} not found in {root}", "run doctor from a full checkout of the project"))
            continue
        pins = pinned_versions(path)
        wrong = [f"{dist} {installed_version(dist) or 'missing'} (pinned {version})"
                 for dist, version in pins.items() if not _same_version(installed_version(dist), version)]
        what = f"{len(pins)} packages pinned in {name}: " + (
            "all installed at their pinned versions" if not wrong else f"{len(wrong)} differ: {', '.join(wrong[:8])}"
            + (f" and {len(wrong) - 8} more" if len(wrong) > 8 else ""))
        out.append((not wrong, what, fix))
    absent = importlib.util.find_spec("torchvision") is None
    out.append((absent, "torchvision absent (its CUDA build breaks transformers on CPU torch)",
                "pip uninstall torchvision"))
    return out


def data_checks() -> list[Check]:
    out = []
    for s in verify_sources("offline"):
        found, _, fix = s.detail.partition("; fix: ")
        out.append((s.ok, f"data {s.name}: {s.status} ({found}) [{s.path}]", fix or s.detail))
    return out


def mathjax_check() -> Check:
    root = vendor_dir() / "mathjax"
    missing = [f for f in MATHJAX_FILES if not (root / f).exists()]
    what = f"MathJax vendored in {root}" + (f" (missing: {', '.join(missing)})" if missing else "")
    return (not missing, what, "make setup (fetches mathjax@3 from npm into <work>/vendor/mathjax)")


def disk_checks() -> list[Check]:
    out = []
    target = work_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
        writable = os.access(target, os.W_OK)
    except OSError:
        writable = False
    out.append((writable, f"work folder {target} is writable",
                "set SEMALIGN_WORKDIR to a folder you can write, or fix its permissions"))
    seen = set()
    for folder in (target, cache_dir()):
        probe = next((p for p in [folder, *folder.parents] if p.exists()), Path("/"))
        device = probe.stat().st_dev
        if device in seen:
            continue
        seen.add(device)
        free = shutil.disk_usage(probe).free / 1e9
        out.append((free >= MIN_FREE_GB, f"{free:.0f} GB free for {folder} (needs {MIN_FREE_GB} GB)",
                    f"free at least {MIN_FREE_GB} GB, or move the work folder / cache with "
                    "SEMALIGN_WORKDIR / SEMALIGN_CACHE"))
    return out


def encoder_checks() -> list[Check]:
    """The packaged encoder weights, located and hash-verified (no model is loaded)."""
    try:
        from semalign.models.weights import doctor_checks
    except ImportError as exc:
        return [(False, f"the encoder registry cannot be imported ({exc})", "pip install -r requirements-lock.txt")]
    return doctor_checks()


def checks() -> list[Check]:
    """(ok, what, fix) for each check."""
    return [*version_checks(), *data_checks(), mathjax_check(), *disk_checks(), *encoder_checks()]


def main() -> int:
    results = checks()
    for ok, what, fix in results:
        print(f"[{'ok' if ok else 'FIX'}] {what}" + ("" if ok else f"\n       fix: {fix}"))
    failed = sum(not ok for ok, _, _ in results)
    print(f"{len(results) - failed} ok, {failed} to fix")
    return 0 if failed == 0 else 1
