"""Finding, reading and verifying a paper dataset's files under ``data_root``.

Each dataset module opens its files with these helpers and reports one
:class:`~semalign.data.manifest.SourceStatus`: ``ok`` with what was found,
``missing`` with the expected path and how to obtain the dataset, or
``corrupt`` naming the unreadable file (never its content). The layouts,
access procedures and required columns come from ``paper_sources:`` in
``data_manifest.yaml``.
"""

from __future__ import annotations

import csv
import gzip
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from semalign.data.manifest import SourceStatus, load_manifest
from semalign.core.errors import SemalignError
from semalign.core.cache import sha256_file

DATASETS = ("mimic_cxr", "rsna_pneumonia", "vindr_cxr", "chexpert")


# --------------------------------------------------------------------- manifest
def manifest_entry(name: str) -> dict:
    """The dataset's ``paper_sources`` entry of the manifest."""
    if name not in DATASETS:
        raise SemalignError(f"unknown paper dataset {name!r}; valid names: {', '.join(DATASETS)}")
    try:
        return load_manifest()["paper_sources"][name]
    except (KeyError, TypeError):
        raise SemalignError(
            f"data_manifest.yaml has no paper_sources entry {name!r}; restore the file from the repository"
        ) from None


def default_labels(name: str) -> list[str]:
    """The labels a loader returns when ``labels=None`` (from the manifest)."""
    return list(manifest_entry(name)["default_labels"])


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def find_root(data_root: Path, entry: dict) -> Path | None:
    """The first of the layout's candidate folders that holds the marker file."""
    marker = entry["files"][entry["layout"]["marker"]]
    for rel in entry["layout"]["roots"]:
        root = (data_root / rel) if rel != "." else data_root
        if (root / marker).is_file():
            return root
    return None


# --------------------------------------------------------------------- statuses
def missing(name: str, entry: dict, data_root: Path, what: list[Path], root: Path | None) -> SourceStatus:
    shown = ", ".join(str(p) for p in what[:4]) + (f" and {len(what) - 4} more" if len(what) > 4 else "")
    others = [r for r in entry["layout"]["roots"] if r != "."]
    where = "" if root is not None else f" (the dataset folder may also be any of {', '.join(others)} under {data_root})"
    detail = one_line(
        f"{entry['title']}: expected {shown}{where}; obtain it: {entry['access']} (licence: {entry['licence']})"
    )
    return SourceStatus(name, "missing", str(root or data_root / entry["layout"]["roots"][0]), detail)


def corrupt(name: str, entry: dict, root: Path, problem: str) -> SourceStatus:
    detail = one_line(f"{entry['title']}: {problem}; download the file again: {entry['access']}")
    return SourceStatus(name, "corrupt", str(root), detail)


class Corrupt(Exception):
    """A file is present but unreadable; the message names it (never its content)."""


def found_ok(name: str, root: Path, found: dict[str, int]) -> SourceStatus:
    """``ok``, saying what was found beside the full release's counts where the manifest has them."""
    documented = manifest_entry(name).get("counts") or {}
    parts = []
    for key, value in found.items():
        full = documented.get(key)
        parts.append(f"{value:,} {key.replace('_', ' ')}" + (f" (full release: {full:,})" if full is not None else ""))
    return SourceStatus(name, "ok", str(root), ", ".join(parts))


def missing_unless_any(name: str, data_root: Path, root: Path, sample: list[Path], also=()) -> SourceStatus | None:
    """``missing``, naming the first file of ``sample`` (and ``also``), when none
    of the ``sample`` files exists; None when one does."""
    if any(p.is_file() for p in sample):
        return None
    return missing(name, manifest_entry(name), data_root, sample[:1] + list(also), root)


# --------------------------------------------------------------------- table reading
def _gzip_intact(path: Path) -> None:
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise Corrupt(f"{path} is truncated or corrupt ({type(exc).__name__}: {one_line(exc)})") from None


def _last_line_complete(path: Path, n_columns: int) -> None:
    """A plain CSV cut off by an interrupted download ends mid-row: the last
    line then has fewer fields than the header (pandas would pad it silently)."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(0, size - 65536))
        tail = handle.read().decode("utf-8", errors="replace")
    lines = [line for line in tail.splitlines() if line.strip()]
    if not lines:
        return
    fields = next(csv.reader([lines[-1]]))
    if len(fields) < n_columns:
        raise Corrupt(
            f"{path} ends in the middle of a row ({len(fields)} of {n_columns} fields): the download was cut off"
        )


def read_table(path: Path, required: list[str]) -> pd.DataFrame:
    """A CSV (or .csv.gz) as strings, blanks as ''; raises Corrupt naming the file."""
    if path.name.endswith(".gz"):
        _gzip_intact(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], on_bad_lines="error")
    except Exception as exc:  # any parser error becomes one line naming the file (label tables hold no report text)
        raise Corrupt(f"{path} cannot be parsed as CSV ({type(exc).__name__}: {one_line(exc)[:200]})") from None
    absent = [c for c in required if c not in table.columns]
    if absent:
        raise Corrupt(f"{path} lacks the column(s) {absent}")
    if not path.name.endswith(".gz"):
        _last_line_complete(path, len(table.columns))
    if table.empty:
        raise Corrupt(f"{path} has a header but no rows")
    return table


def check_sums(root: Path, files: list[Path]) -> None:
    """Compare ``files`` with PhysioNet's SHA256SUMS.txt when it is in ``root``."""
    sums_file = root / "SHA256SUMS.txt"
    if not sums_file.is_file():
        return
    wanted = {p.relative_to(root).as_posix() for p in files}
    expected: dict[str, str] = {}
    with open(sums_file, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2:
                name = parts[1].lstrip("*").removeprefix("./")
                if name in wanted:
                    expected[name] = parts[0].lower()
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel in expected and sha256_file(path) != expected[rel]:
            raise Corrupt(f"{path}: sha256 differs from {sums_file}")


def open_tables(name: str, data_root: Path, roles, folders=(), checksums: bool = True) -> tuple[SourceStatus | None, dict]:
    """The tables of ``roles`` in the dataset's folder, with the folder as
    ``tables["root"]``: (None, tables), or the missing / corrupt status (and no
    tables) when no candidate folder holds the marker file (the status then names
    the file of ``roles[0]``), a file or one of ``folders`` is absent, a table is
    unreadable or, with ``checksums``, differs from PhysioNet's SHA256SUMS.txt."""
    entry = manifest_entry(name)
    root = find_root(data_root, entry)
    if root is None:
        expected = data_root / entry["layout"]["roots"][0] / entry["files"][roles[0]]
        return missing(name, entry, data_root, [expected], None), {}
    files, columns = entry["files"], entry["required_columns"]
    absent = [root / files[r] for r in roles if not (root / files[r]).is_file()]
    absent += [root / files[d] for d in folders if not (root / files[d]).is_dir()]
    if absent:
        return missing(name, entry, data_root, absent, root), {}
    try:
        tables = {r: read_table(root / files[r], columns[r]) for r in roles}
        if checksums:
            check_sums(root, [root / files[r] for r in roles])
    except Corrupt as exc:
        return corrupt(name, entry, root, str(exc)), {}
    tables["root"] = root
    return None, tables


def exists_many(paths: list) -> np.ndarray:
    """``os.path.isfile`` for many paths, by a few threads (stat releases the GIL),
    so that a network file system is not much slower than a local disk."""
    names = [os.fspath(p) for p in paths]
    if len(names) < 4096:
        return np.fromiter((os.path.isfile(n) for n in names), bool, len(names))
    chunks = [names[i : i + 8192] for i in range(0, len(names), 8192)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = list(pool.map(lambda chunk: [os.path.isfile(n) for n in chunk], chunks))
    return np.array([x for part in parts for x in part], dtype=bool)


# --------------------------------------------------------------------- opening a dataset
def close(tables: dict) -> None:
    """Close the report archive an opener left open in ``tables``, if any."""
    archive = tables.pop("archive", None)
    if archive is not None:
        archive.close()


def data_root_path(data_root) -> Path:
    if data_root is None or str(data_root).strip() == "":
        raise SemalignError("data_root is not set; pass the folder that holds the paper datasets (-p data_root=/path)")
    return Path(os.path.expanduser(os.fspath(data_root)))


def check(name: str, opener, data_root, need: tuple[str, ...] = ("reports", "images"),
          close_archive: bool = True) -> tuple[SourceStatus, dict]:
    """The dataset's status and, when ``ok``, its tables, from ``opener(root, need)``
    (the dataset module's ``open_files``; ``need`` is what to check beside the label
    tables, by default the report text and the images); an unreadable file is ``corrupt``."""
    manifest_entry(name)
    root = data_root_path(data_root)
    try:
        status, tables = opener(root, need)
        if close_archive:
            close(tables)
        return status, tables
    except PermissionError as exc:
        return corrupt(name, manifest_entry(name), root, f"{exc.filename or root} cannot be read (permission denied)"), {}


def raise_unless_ok(status: SourceStatus) -> None:
    """:class:`SemalignError` with the one-line ``paper dataset NAME (PATH) is STATUS: DETAIL``."""
    if not status.ok:
        raise SemalignError(one_line(f"paper dataset {status.name!r} ({status.path}) is {status.status}: {status.detail}"))


def checked_tables(name: str, opener, data_root, need: tuple[str, ...], close_archive: bool = True) -> dict:
    """The dataset's tables from :func:`check`, or :class:`SemalignError` (see
    :func:`raise_unless_ok`) when the dataset is not ``ok``."""
    status, tables = check(name, opener, data_root, need, close_archive)
    raise_unless_ok(status)
    return tables
