"""``data_manifest.yaml``: what the study reads, and a check of what is present."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from pathlib import Path

import yaml

from semalign.core.cache import sha256_file
from semalign.core.errors import SemalignError
from semalign.core.paths import MANIFEST_FILE


@functools.lru_cache(maxsize=1)
def load_manifest(path: Path = MANIFEST_FILE) -> dict:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SemalignError(f"cannot read the data manifest {path}: {exc}") from None


@dataclasses.dataclass
class SourceStatus:
    name: str
    status: str  # "ok", "missing" or "corrupt"
    path: str
    detail: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def locate(entry: dict) -> Path | None:
    """Where a manifest entry's file or folder is installed, or None."""
    spec = importlib.util.find_spec(entry["locate"]["package"])
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / entry["locate"]["inside"]


def verify_source(name: str, entry: dict) -> SourceStatus:
    path = locate(entry)
    fix = f"fix: {entry['install']}"
    if path is None or not path.exists():
        return SourceStatus(name, "missing", str(path or entry["locate"]["package"]), f"not installed; {fix}")
    expected = entry.get("sha256")
    if path.is_dir():
        count = entry.get("counts", {}).get("images")
        found = sum(1 for p in path.iterdir() if p.is_file())
        if count is not None and found != count:
            return SourceStatus(name, "corrupt", str(path), f"{found} files, expected {count}; {fix} --force-reinstall")
        return SourceStatus(name, "ok", str(path), f"{found} files")
    actual = sha256_file(path)
    if expected and actual != expected:
        return SourceStatus(
            name, "corrupt", str(path), f"sha256 {actual[:12]}… differs from the manifest's {expected[:12]}…; {fix} --force-reinstall"
        )
    return SourceStatus(name, "ok", str(path), f"sha256 {actual[:12]}… verified")


def verify_sources(profile: str = "offline") -> list[SourceStatus]:
    sources = load_manifest()["sources"]
    return [verify_source(name, entry) for name, entry in sources.items() if entry.get("profile", "offline") == profile]


def require_source(name: str) -> Path:
    """The verified path of a manifest source, or a one-line error with the fix."""
    entry = load_manifest()["sources"][name]
    status = verify_source(name, entry)
    if not status.ok:
        raise SemalignError(f"data source {name!r} ({status.path}) is {status.status}: {status.detail}")
    return Path(status.path)
