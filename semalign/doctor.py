"""``semalign doctor``: check the environment and print what to fix."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import shutil

from semalign.manifest import verify_sources
from semalign.paths import vendor_dir, work_dir

REQUIRED = {"torch": "2.13.0", "jupyter-book": "1.0.4.post1"}
MIN_FREE_GB = 5


def checks() -> list[tuple[bool, str, str]]:
    """(ok, what, fix) for each check."""
    out = []
    for dist, wanted in REQUIRED.items():
        try:
            have = md.version(dist)
        except md.PackageNotFoundError:
            have = None
        ok = have is not None and have.split("+")[0] == wanted
        out.append((ok, f"{dist} {have or 'not installed'} (needs {wanted})", f"pip install {dist}=={wanted}"))
    tv = importlib.util.find_spec("torchvision") is None
    out.append((tv, "torchvision absent (its CUDA build breaks transformers on CPU torch)", "pip uninstall torchvision"))
    for s in verify_sources("offline"):
        out.append((s.ok, f"data {s.name}: {s.status} ({s.detail})", s.detail))
    mathjax = vendor_dir() / "mathjax" / "es5" / "tex-mml-chtml.js"
    out.append((mathjax.is_file(), f"MathJax vendored at {mathjax}", "make setup (fetches mathjax@3 from npm)"))
    target = work_dir()
    target.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target).free / 1e9
    out.append((free >= MIN_FREE_GB, f"{free:.0f} GB free in {target}", f"free at least {MIN_FREE_GB} GB or set SEMALIGN_WORKDIR"))
    try:
        from semalign.encoders import doctor_checks
    except ImportError:
        return out
    return out + doctor_checks()


def main() -> int:
    results = checks()
    for ok, what, fix in results:
        print(f"[{'ok' if ok else 'FIX'}] {what}" + ("" if ok else f"\n       fix: {fix}"))
    failed = sum(not ok for ok, _, _ in results)
    print(f"{len(results) - failed} ok, {failed} to fix")
    return 0 if failed == 0 else 1
