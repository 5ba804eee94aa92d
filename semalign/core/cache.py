"""Content-addressed cache primitives: keys, checksums and atomic writes.

Every cache entry is written to a temporary file in the destination folder and
moved into place with :func:`os.replace`, so a killed process leaves either the
old entry or the new one, never a torn file. Entries are plain arrays
(safetensors / ``.npz`` without pickle) and JSON.

A writer holds an exclusive ``flock`` on its temporary file or folder. A
process killed with SIGKILL cannot remove its temporary, but the kernel drops
its lock; the next write of the same target (or :func:`remove_stale_temporaries`
on the folder) removes every temporary whose lock it can take, so a live
writer's is never touched and nothing is read out of the names. Temporaries are
created with the umask's modes, and a built folder's files are given the same,
so a finished entry is as readable as any other file the user creates.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import stat
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from semalign.core.errors import SemalignError
from semalign.core.paths import cache_dir

#: Marks a temporary's name: ``.<target name>~tmp-<random><suffix>``.
_MARK = "~tmp-"


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


@contextlib.contextmanager
def temporary(target: str | os.PathLike, suffix: str = ".tmp", *, folder: bool = False) -> Iterator[Path]:
    """A new, empty temporary file (or folder) beside ``target``, locked while it is held.

    The name is ``.<target name>~tmp-<random><suffix>``. It is created with
    ``O_EXCL`` (files) or ``mkdir`` and modes 0o666/0o777, so it gets the umask's
    modes like any file the user creates, and held under an exclusive ``flock``
    that the kernel releases when this process ends, SIGKILL included: a
    temporary whose lock can be taken belongs to no live writer
    (:func:`remove_stale_temporaries`); the lock is on the file first created, so
    write into it rather than replace it. Whatever is left at ``tmp`` on exit is
    removed; move it into place inside the block to keep it. Temporaries of
    ``target`` that killed writers left are removed first.
    """
    target = Path(target)
    remove_stale_temporaries(target.parent, target.name)
    while True:
        tmp = target.with_name(f".{target.name}{_MARK}{secrets.token_hex(4)}{suffix}")
        if folder:
            os.mkdir(tmp, 0o777)
            fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        else:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # a cleaner that took the lock before this process did has removed it: start again
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield tmp
    finally:
        try:
            _remove(tmp)
        finally:
            os.close(fd)


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    return True


def _share_like(folder: Path) -> None:
    """Give everything in ``folder`` the modes the folder was created with (the
    umask's): libraries such as safetensors write their files owner-only."""
    mode = stat.S_IMODE(folder.stat().st_mode)
    for item in folder.rglob("*"):
        if not item.is_symlink():
            os.chmod(item, mode if item.is_dir() else mode & 0o666)


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporaries (:func:`temporary`) in ``folder`` that no live
    process holds — those of ``name`` alone when given — and return them. A
    temporary held by a writer, in this process or another, is left alone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    start = "." if name is None else f".{name}{_MARK}"
    for entry in entries:
        if not (entry.name.startswith(start) and _MARK in entry.name):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | (os.O_DIRECTORY if entry.is_dir(follow_symlinks=False) else 0))
        except OSError:
            continue  # gone meanwhile, or another user's
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # its writer is alive
        try:
            if _remove(Path(entry.path)):
                removed.append(Path(entry.path))
        finally:
            os.close(fd)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place on success.

    ``suffix`` ends the temporary name, for writers that look at the extension.
    Temporary files of ``path`` left by killed processes are removed first.

    On any exception (including KeyboardInterrupt) the temporary file is removed
    and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clear_wrong_kind(target, want_folder=False)
    with temporary(target, suffix) as tmp:
        yield tmp
        os.replace(tmp, target)


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
    with temporary(target, ".partial", folder=True) as tmp:
        info = write(tmp)
        atomic_write_json(tmp / description, {**info, "sha256": {checked: sha256_file(tmp / checked)}})
        _share_like(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not folder_is_intact(target, description, checked, names):  # not a concurrent build of the same key
                raise
    return target
