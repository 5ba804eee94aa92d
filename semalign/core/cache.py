"""Content-addressed cache primitives: keys, checksums and atomic writes.

Every cache entry is written to a temporary file in the destination folder and
moved into place with :func:`os.replace`, so a killed process leaves either the
old entry or the new one, never a torn file. Entries are plain arrays
(safetensors / ``.npz`` without pickle) and JSON.

A temporary name carries the host and process id of its writer
(``.<name>.~<host>~<pid>~<random><suffix>``). A process killed with SIGKILL
cannot remove its temporary file; the next write of the same target (or
:func:`remove_stale_temporaries` on the folder) removes it once that process
is gone. Temporary files are created owner-only; a finished entry gets the
modes the umask allows, like any other file the user creates.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from semalign.core.errors import SemalignError
from semalign.core.paths import cache_dir

_HOST = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.~(?P<host>[A-Za-z0-9._-]+)~(?P<pid>\d+)~")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_key(*parts: Any) -> str:
    """A short stable key for JSON-serialisable parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_shareable(path: str | os.PathLike) -> None:
    """Give a finished file, or a folder and everything in it, the umask's modes.

    ``mkstemp``/``mkdtemp`` create owner-only (0600/0700) entries; a cache or
    result moved into place from one should be as readable as a file the user
    writes directly.
    """
    mask = umask()
    root = Path(path)
    for item in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)


def temporary_prefix(name: str) -> str:
    """The start of a temporary name for ``name`` written by this process."""
    return f".{name}.~{_HOST}~{os.getpid()}~"


def _writer_alive(host: str, pid: int) -> bool:
    if host != _HOST:
        return True  # another machine's process: it cannot be checked, so it is left alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove temporary files and folders left in ``folder`` by processes that are gone.

    Only names made by :func:`temporary_prefix` are considered (those of ``name``
    alone when given), and only those whose writer ran on this host and no
    longer exists, so a concurrent writer's temporary file is never touched.
    Returns what was removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or (name is not None and match["name"] != name):
            continue
        if _writer_alive(match["host"], int(match["pid"])):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place on success.

    ``suffix`` ends the temporary name, for writers that look at the extension.
    The finished file gets the umask's modes. Temporary files of ``path`` left by
    killed processes are removed first.

    On any exception (including KeyboardInterrupt) the temporary file is removed
    and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent, target.name)
    clear_wrong_kind(target, want_folder=False)
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(target.name), suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        make_shareable(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def clear_wrong_kind(path: Path, *, want_folder: bool) -> None:
    """Where the study writes a file (or a folder) and finds a folder (or a file):
    inside the cache it is damage, reported and removed so the entry is written
    again; elsewhere it is the user's, and the error says to move it."""
    if not (path.exists() or path.is_symlink()) or (path.is_dir() and not path.is_symlink()) == want_folder:
        return
    found, wanted = ("a file", "folder") if want_folder else ("a folder", "file")
    if not path.resolve().is_relative_to(cache_dir()):
        raise SemalignError(f"{path} is {found} where the study writes a {wanted}; move it away and run again")
    warnings.warn(f"cache entry {path} is damaged ({found} where a {wanted} belongs); recomputing it", stacklevel=3)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes((json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def write_checked_json(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` atomically as a JSON cache entry that carries its own sha256."""
    atomic_write_json(path, {"sha256": _json_sha256(payload), "payload": payload})


def read_checked_json(path: str | os.PathLike) -> Any | None:
    """The payload of a :func:`write_checked_json` entry; None when it is missing,
    or (with a one-line warning) when it does not parse or its content no longer
    matches its sha256 — the caller recomputes it."""
    path = Path(path)
    clear_wrong_kind(path, want_folder=False)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
        if entry["sha256"] == _json_sha256(entry["payload"]):
            return entry["payload"]
    except (ValueError, KeyError, TypeError):
        pass
    warnings.warn(f"cache entry {path} is damaged (unreadable, or its content does not match its sha256); "
                  "recomputing it", stacklevel=2)
    return None


def _json_sha256(payload: Any) -> str:
    return sha256_bytes(json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode())


def folder_is_intact(folder: Path, description: str, checked: str, names: tuple[str, ...] = ()) -> bool:
    """A finished entry of :func:`build_folder`: ``description``, ``checked`` and
    ``names`` exist and ``checked`` matches the sha256 the description records.
    A damaged entry is reported with a warning and counts as absent."""
    if not folder.is_dir():
        return False
    missing = [name for name in (description, checked, *names) if not (folder / name).is_file()]
    if missing:
        warnings.warn(f"{folder} is damaged ({', '.join(missing)} missing or not a file); building it again",
                      stacklevel=3)
        return False
    try:
        expected = json.loads((folder / description).read_text()).get("sha256", {}).get(checked)
    except (ValueError, AttributeError):
        expected = "unreadable description"
    if expected is None:
        return False  # written before checksums were recorded: built again
    if expected == sha256_file(folder / checked):
        return True
    warnings.warn(f"{folder} is damaged ({checked} does not match its recorded sha256); building it again",
                  stacklevel=3)
    return False


def build_folder(target: Path, write: Callable[[Path], dict], *, description: str, checked: str,
                 names: tuple[str, ...] = ()) -> Path:
    """The cache folder ``target`` of a study-made artefact, built on first use.

    ``write(folder)`` fills a hidden temporary folder beside ``target`` and returns
    a description, saved there as ``description`` with the sha256 of ``checked``;
    the folder is then renamed into place, so an interrupted build never looks
    like an entry. An entry that :func:`folder_is_intact` rejects is built again;
    when a concurrent build of the same key finishes first, its entry is kept.
    """
    clear_wrong_kind(target, want_folder=True)
    if folder_is_intact(target, description, checked, names):
        return target
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        info = write(tmp)
        atomic_write_json(tmp / description, {**info, "sha256": {checked: sha256_file(tmp / checked)}})
        make_shareable(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not folder_is_intact(target, description, checked, names):  # not a concurrent build of the same key
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
