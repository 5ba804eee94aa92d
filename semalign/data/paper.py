"""The paper profile's datasets, read from their real on-disk layouts.

The paper (Di Folco et al. 2025) uses four chest X-ray collections that need a
data use agreement, so none of them ships with the study. A user who has access
puts them under one folder, ``data_root``; the layouts, access procedures,
licences and the files to check are recorded under ``paper_sources:`` in
``data_manifest.yaml`` and read from there:

=================  =============================================================
``mimic_cxr``      MIMIC-CXR 2.0.0 reports (``mimic-cxr-reports.zip`` or the
                   extracted ``files/p10/p10000032/s50414267.txt`` tree) with
                   MIMIC-CXR-JPG 2.0.0 / 2.1.0: CheXpert labels, official split,
                   metadata and ``files/p10/p10000032/s50414267/<dicom_id>.jpg``
``rsna_pneumonia`` RSNA Pneumonia Detection Challenge, stage 2 training set:
                   ``stage_2_train_labels.csv`` (one row per box),
                   ``stage_2_detailed_class_info.csv``,
                   ``stage_2_train_images/<patientId>.dcm``
``vindr_cxr``      VinDr-CXR 1.0.0: ``annotations/image_labels_train.csv`` (three
                   readers per image), ``annotations/image_labels_test.csv``
                   (consensus), ``train/<image_id>.dicom``, ``test/<image_id>.dicom``
``chexpert``       CheXpert-v1.0-small: ``train.csv`` / ``valid.csv`` whose ``Path``
                   column is relative to data_root
=================  =============================================================

Label conventions
-----------------
* CheXpert-style labels (MIMIC-CXR, CheXpert) are ``1.0`` positive, ``0.0``
  negative, ``-1.0`` uncertain and blank = not mentioned, read as 0. The
  ``uncertain`` policy maps ``-1``: ``"zeros"`` (U-Zeros, default) to 0,
  ``"ones"`` (U-Ones) to 1, ``"ignore"`` drops every row that has ``-1`` on a
  *requested* label (and counts it). Any other value drops the row.
* RSNA: the image label ``Pneumonia`` is the maximum ``Target`` over the
  image's rows (one row per box); ``Normal`` and ``No Lung Opacity / Not
  Normal`` come from the detailed class file. An image whose class disagrees
  with its Target is dropped. ``uncertain`` has no effect (no uncertain labels).
* VinDr-CXR: three radiologists label each training image; ``reader_policy``
  combines their 0/1 votes: ``"majority"`` (default; more than half the
  image's readers), ``"any"`` (at least one), ``"all"`` (every reader). The test
  rows are already a consensus. VinDr-CXR publishes no patient identifiers, so
  each image is its own group.

Default labels (``labels=None``) are listed per dataset in the manifest
(``default_labels``): the five CheXpert competition findings for MIMIC-CXR and
CheXpert, ``Pneumonia`` for RSNA, and for VinDr-CXR the findings it shares with
the CheXpert label set plus ``Lung Opacity`` and ``No finding``.

Loaders return paths, never pixels, so large datasets can be streamed with
:func:`semalign.data.images.load_image`. A label row whose image file does not
exist is dropped and counted: one ``stat`` per file, by a few threads so that
network file systems are not much slower (MIMIC-CXR-JPG's 377k images: a few
seconds on a local disk), so a partial download loads without any option.
``frontal_only`` keeps PA/AP views (MIMIC ``ViewPosition``, CheXpert
``Frontal/Lateral``); RSNA and VinDr-CXR are frontal-only datasets already.

Privacy: report text is returned to the caller and nothing else; no function
prints or logs it, and error messages name files and ids, never report text.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import os
import re
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from semalign.data.reports import ReportSet
from semalign.errors import SemalignError
from semalign.data.manifest import SourceStatus, load_manifest

__all__ = [
    "DATASETS",
    "UNCERTAIN_POLICIES",
    "READER_POLICIES",
    "ImageTable",
    "verify",
    "require",
    "load_reports",
    "load_images",
    "patient_split",
    "parse_report_sections",
    "default_labels",
]

DATASETS = ("mimic_cxr", "rsna_pneumonia", "vindr_cxr", "chexpert")
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
READER_POLICIES = ("majority", "any", "all")
FRONTAL_VIEWS = ("PA", "AP")
RSNA_LABELS = ("Pneumonia", "Normal", "No Lung Opacity / Not Normal")

# --------------------------------------------------------------------- drop reasons
NO_REPORT = "no report file"
NO_SECTION = "no FINDINGS or IMPRESSION section"
NO_SPLIT = "not in the official split file"
NO_LABEL_ROW = "no label row for the study"
BAD_VALUE = "label value not in {1, 0, -1, blank}"
UNCERTAIN = "uncertain (-1) on a requested label (uncertain='ignore')"
NOT_FRONTAL = "not a frontal view (frontal_only=True)"
NO_IMAGE = "image file missing"
DUPLICATE = "duplicate row"
NO_CLASS = "no row in the detailed class file"
CLASS_DISAGREES = "detailed class disagrees with Target"
NO_PATIENT = "no patient id in Path"


@dataclasses.dataclass
class ImageTable:
    """Image paths with labels; nothing is read from the images themselves.

    ``groups`` are the patient (subject) ids for patient-level splits;
    ``split`` is the official split per image (``None`` when the dataset has
    none); ``dropped`` counts every label row left out, by reason (for RSNA
    and VinDr-CXR, whose tables hold several rows per image: every image);
    ``studies`` are MIMIC-CXR's study ids (an image's report), else ``None``.
    """

    ids: list[str]
    paths: list[Path]
    labels: pd.DataFrame
    groups: list[str]
    split: list[str] | None
    dropped: dict[str, int]
    name: str = ""
    studies: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index) -> "ImageTable":
        index = np.asarray(index, dtype=int)
        return ImageTable(
            [self.ids[i] for i in index],
            [self.paths[i] for i in index],
            self.labels.iloc[index].reset_index(drop=True),
            [self.groups[i] for i in index],
            None if self.split is None else [self.split[i] for i in index],
            dict(self.dropped),
            self.name,
            None if self.studies is None else [self.studies[i] for i in index],
        )


# --------------------------------------------------------------------- manifest
def _entry(name: str) -> dict:
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
    return list(_entry(name)["default_labels"])


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _find_root(data_root: Path, entry: dict) -> Path | None:
    marker = entry["files"][entry["layout"]["marker"]]
    for rel in entry["layout"]["roots"]:
        root = (data_root / rel) if rel != "." else data_root
        if (root / marker).is_file():
            return root
    return None


def _missing(name: str, entry: dict, data_root: Path, what: list[Path], root: Path | None) -> SourceStatus:
    shown = ", ".join(str(p) for p in what[:4]) + (f" and {len(what) - 4} more" if len(what) > 4 else "")
    others = [r for r in entry["layout"]["roots"] if r != "."]
    where = "" if root is not None else f" (the dataset folder may also be any of {', '.join(others)} under {data_root})"
    detail = _one_line(
        f"{entry['title']}: expected {shown}{where}; obtain it: {entry['access']} (licence: {entry['licence']})"
    )
    return SourceStatus(name, "missing", str(root or data_root / entry["layout"]["roots"][0]), detail)


def _corrupt(name: str, entry: dict, root: Path, problem: str) -> SourceStatus:
    detail = _one_line(f"{entry['title']}: {problem}; download the file again: {entry['access']}")
    return SourceStatus(name, "corrupt", str(root), detail)


class _Corrupt(Exception):
    """A file is present but unreadable; the message names it (never its content)."""


# --------------------------------------------------------------------- table reading
def _gzip_intact(path: Path) -> None:
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise _Corrupt(f"{path} is truncated or corrupt ({type(exc).__name__}: {_one_line(exc)})") from None


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
        raise _Corrupt(
            f"{path} ends in the middle of a row ({len(fields)} of {n_columns} fields): the download was cut off"
        )


def _read_table(path: Path, required: list[str]) -> pd.DataFrame:
    """A CSV (or .csv.gz) as strings, blanks as ''; raises _Corrupt naming the file."""
    if path.name.endswith(".gz"):
        _gzip_intact(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[], on_bad_lines="error")
    except Exception as exc:  # any parser error becomes one line naming the file (label tables hold no report text)
        raise _Corrupt(f"{path} cannot be parsed as CSV ({type(exc).__name__}: {_one_line(exc)[:200]})") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise _Corrupt(f"{path} lacks the column(s) {missing}")
    if not path.name.endswith(".gz"):
        _last_line_complete(path, len(table.columns))
    if table.empty:
        raise _Corrupt(f"{path} has a header but no rows")
    return table


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sums(root: Path, files: list[Path]) -> None:
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
        if rel in expected and _sha256(path) != expected[rel]:
            raise _Corrupt(f"{path}: sha256 differs from {sums_file}")


def _exists_many(paths: list) -> np.ndarray:
    """``os.path.isfile`` for many paths, by a few threads (stat releases the GIL)."""
    names = [os.fspath(p) for p in paths]
    if len(names) < 4096:
        return np.fromiter((os.path.isfile(n) for n in names), bool, len(names))
    chunks = [names[i : i + 8192] for i in range(0, len(names), 8192)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = list(pool.map(lambda chunk: [os.path.isfile(n) for n in chunk], chunks))
    return np.array([x for part in parts for x in part], dtype=bool)


def _counts_note(entry: dict, found: dict[str, int]) -> str:
    documented = entry.get("counts") or {}
    parts = []
    for key, value in found.items():
        full = documented.get(key)
        parts.append(f"{value:,} {key.replace('_', ' ')}" + (f" (full release: {full:,})" if full is not None else ""))
    return ", ".join(parts)


# --------------------------------------------------------------------- labels
def _check_policy(value: str, valid: tuple[str, ...], what: str) -> None:
    if value not in valid:
        raise SemalignError(f"{what}={value!r} is not valid; use one of {', '.join(valid)}")


def _select_labels(name: str, labels, available: list[str]) -> list[str]:
    if labels is None:
        labels = default_labels(name)
    elif isinstance(labels, str):
        labels = [labels]
    labels = list(labels)
    if not labels:
        raise SemalignError(f"labels=[] for {name}: name at least one label, or pass labels=None for the default")
    unknown = [label for label in labels if label not in available]
    if unknown:
        raise SemalignError(
            f"unknown label(s) {unknown} for {name}; available labels: {', '.join(available)}"
        )
    return labels


def _chexpert_style(table: pd.DataFrame, labels: list[str], uncertain: str) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """0/1 labels under an uncertainty policy, with masks of invalid and uncertain rows."""
    raw = table[labels].apply(lambda col: col.astype(str).str.strip())
    blank = raw == ""
    values = raw.apply(pd.to_numeric, errors="coerce")
    values = values.where(~blank, 0.0)
    invalid = (values.isna() | ~values.isin([1.0, 0.0, -1.0])).any(axis=1)
    is_uncertain = (values == -1.0).any(axis=1) & ~invalid
    if uncertain == "ones":
        values = values.replace(-1.0, 1.0)
    else:  # zeros; ignore drops the uncertain rows anyway
        values = values.replace(-1.0, 0.0)
    values = values.fillna(0).astype(int)
    return values, invalid, (is_uncertain if uncertain == "ignore" else pd.Series(False, index=table.index))


class _Drops:
    """Assigns each dropped row to its first reason, keeping every reason's count."""

    def __init__(self, n: int, reasons: list[str]):
        self.keep = np.ones(n, bool)
        self.counts = {reason: 0 for reason in reasons}

    def drop(self, reason: str, mask) -> None:
        mask = np.asarray(mask, bool) & self.keep
        self.counts[reason] = self.counts.get(reason, 0) + int(mask.sum())
        self.keep &= ~mask


# --------------------------------------------------------------------- MIMIC-CXR
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 /&,()'-]*):", re.MULTILINE)
_WANTED = ("FINDINGS", "IMPRESSION")
_REPORT_MEMBER = re.compile(r"(?:^|/)p(\d{2})/p(\d+)/s(\d+)\.txt$")


def parse_report_sections(text: str) -> tuple[str, str]:
    """``(findings, impression)`` of a free-text MIMIC-CXR report.

    A section starts at an upper-case header at the start of a line followed by
    a colon (``FINDINGS:``, ``IMPRESSION:``; text may follow on the same line)
    and runs to the next such header (``RECOMMENDATION(S):``, ``NOTIFICATION:``
    ...) or the end. Whitespace is collapsed; a missing or empty section is ``""``.
    If a header repeats, the sections are joined.
    """
    heads = list(_HEADER.finditer(text))
    sections: dict[str, list[str]] = {name: [] for name in _WANTED}
    for k, head in enumerate(heads):
        name = head.group(1).rstrip()
        if name in sections:
            end = heads[k + 1].start() if k + 1 < len(heads) else len(text)
            body = " ".join(text[head.end() : end].split())
            if body:
                sections[name].append(body)
    return " ".join(sections["FINDINGS"]), " ".join(sections["IMPRESSION"])


def _mimic_report_source(data_root: Path, entry: dict, root: Path, studies: pd.DataFrame):
    """``("zip", path)`` or ``("dir", folder)`` for the reports, or ``None``."""
    files = entry["files"]
    roots = [data_root / r for r in entry["layout"].get("report_roots", [])] + [root]
    for candidate in roots:
        if (candidate / files["reports_zip"]).is_file():
            return "zip", candidate / files["reports_zip"]
    sample = studies.head(50)
    for candidate in roots:
        folder = candidate / files["reports_dir"]
        if folder.is_dir() and any(
            (folder / _report_rel(s, t)).is_file() for s, t in zip(sample["subject_id"], sample["study_id"])
        ):
            return "dir", folder
    return None


def _report_rel(subject: str, study: str) -> str:
    return f"p{subject[:2]}/p{subject}/s{study}.txt"


def _image_rel(subject: str, study: str, dicom: str) -> str:
    return f"p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def _read_present(name: str, entry: dict, data_root: Path, root: Path, roles, folders=(),
                  checksums: bool = True) -> tuple[SourceStatus | None, dict]:
    """The tables of ``roles`` under ``root``: (None, tables), or the missing /
    corrupt status (and no tables) when a file or folder is absent, unreadable or,
    with ``checksums``, differs from the manifest's sha256."""
    files, columns = entry["files"], entry["required_columns"]
    absent = [root / files[r] for r in roles if not (root / files[r]).is_file()]
    absent += [root / files[d] for d in folders if not (root / files[d]).is_dir()]
    if absent:
        return _missing(name, entry, data_root, absent, root), {}
    try:
        tables = {r: _read_table(root / files[r], columns[r]) for r in roles}
        if checksums:
            _check_sums(root, [root / files[r] for r in roles])
    except _Corrupt as exc:
        return _corrupt(name, entry, root, str(exc)), {}
    return None, tables


def _open_mimic(data_root: Path, need: tuple[str, ...]) -> tuple[SourceStatus, dict]:
    name, entry = "mimic_cxr", _entry("mimic_cxr")
    files = entry["files"]
    root = _find_root(data_root, entry)
    if root is None:
        return _missing(name, entry, data_root, [data_root / entry["layout"]["roots"][0] / files["labels"]], None), {}
    roles = ["labels", "split"] + (["metadata"] if "images" in need else [])
    problem, tables = _read_present(name, entry, data_root, root, roles, ["images_dir"] if "images" in need else [])
    if problem:
        return problem, {}
    found = {"studies": len(tables["labels"])}
    if "reports" in need:
        source = _mimic_report_source(data_root, entry, root, tables["labels"])
        if source is None:
            report_roots = entry["layout"].get("report_roots", [])
            expected = [data_root / (report_roots[0] if report_roots else ".") / files["reports_zip"]]
            expected.append(root / files["reports_dir"] / "p1X/pSUBJECT/sSTUDY.txt")
            return _missing(name, entry, data_root, expected, root), {}
        kind, where = source
        if kind == "zip":
            try:
                _check_sums(where.parent, [where])
                archive = zipfile.ZipFile(where)  # kept open for _read_reports, which closes it
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                return _corrupt(name, entry, root, f"{where} is not a readable zip archive ({type(exc).__name__})"), {}
            except _Corrupt as exc:
                return _corrupt(name, entry, root, str(exc)), {}
            members = {}
            for member in archive.namelist():
                match = _REPORT_MEMBER.search(member)
                if match:
                    members[match.group(3)] = member
            if not members:
                archive.close()
                return _corrupt(name, entry, root, f"{where} holds no files/p1X/pSUBJECT/sSTUDY.txt reports"), {}
            tables["archive"], tables["report_members"] = archive, members
            found["reports"] = len(members)
        tables["reports"] = source
    if "images" in need:
        found["images"] = len(tables["metadata"])
        meta = tables["metadata"].head(20)
        images_dir = root / files["images_dir"]
        sample = [images_dir / _image_rel(s, t, d) for s, t, d in zip(meta["subject_id"], meta["study_id"], meta["dicom_id"])]
        if not any(p.is_file() for p in sample):
            _close(tables)
            return _missing(name, entry, data_root, sample[:1] + [images_dir / "p1X/pSUBJECT/sSTUDY/DICOM_ID.jpg"], root), {}
    tables["root"] = root
    return SourceStatus(name, "ok", str(root), _counts_note(entry, found)), tables


def _close(tables: dict) -> None:
    archive = tables.pop("archive", None)
    if archive is not None:
        archive.close()


def _read_reports(tables: dict, studies: pd.DataFrame) -> list[str | None]:
    kind, where = tables["reports"]
    texts: list[str | None] = []
    if kind == "zip":
        members = tables["report_members"]
        with tables.pop("archive") as archive:
            for study in studies["study_id"]:
                member = members.get(study)
                if member is None:
                    texts.append(None)
                    continue
                try:
                    texts.append(archive.read(member).decode("utf-8", errors="replace"))
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                    raise SemalignError(
                        f"{where}: member {member} cannot be read ({type(exc).__name__}); download the archive again"
                    ) from None
        return texts
    for subject, study in zip(studies["subject_id"], studies["study_id"]):
        path = where / _report_rel(subject, study)
        try:
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
        except FileNotFoundError:
            texts.append(None)
        except OSError as exc:
            raise SemalignError(f"{path}: cannot read the report ({exc.strerror or type(exc).__name__})") from None
    return texts


def _study_split(split: pd.DataFrame) -> pd.Series:
    return split.drop_duplicates("study_id").set_index("study_id")["split"]


def _load_mimic_reports(data_root: Path, uncertain: str, labels) -> ReportSet:
    status, tables = _check("mimic_cxr", data_root, ("reports",), close=False)
    _raise_unless_ok(status)
    try:
        return _mimic_reports_from(tables, uncertain, labels)
    finally:
        _close(tables)


def _mimic_reports_from(tables: dict, uncertain: str, labels) -> ReportSet:
    table = tables["labels"]
    available = [c for c in table.columns if c not in ("subject_id", "study_id")]
    chosen = _select_labels("mimic_cxr", labels, available)
    drops = _Drops(len(table), [DUPLICATE, NO_REPORT, NO_SECTION, NO_SPLIT, BAD_VALUE, UNCERTAIN])
    drops.drop(DUPLICATE, table.duplicated("study_id").to_numpy())
    texts = _read_reports(tables, table)
    drops.drop(NO_REPORT, [t is None for t in texts])
    sections = [parse_report_sections(t) if t is not None else ("", "") for t in texts]
    drops.drop(NO_SECTION, [not (f or i) for f, i in sections])
    split = table["study_id"].map(_study_split(tables["split"]))
    drops.drop(NO_SPLIT, split.isna().to_numpy())
    values, invalid, uncertain_rows = _chexpert_style(table, chosen, uncertain)
    drops.drop(BAD_VALUE, invalid.to_numpy())
    drops.drop(UNCERTAIN, uncertain_rows.to_numpy())
    keep = np.flatnonzero(drops.keep)
    kept_sections = [sections[i] for i in keep]
    extra = pd.DataFrame(
        {
            "subject_id": table["subject_id"].to_numpy()[keep],
            "split": split.to_numpy()[keep],
            "findings": [f for f, _ in kept_sections],
            "impression": [i for _, i in kept_sections],
        }
    )
    return ReportSet(
        "MIMIC-CXR reports",
        table["study_id"].to_numpy()[keep].tolist(),
        [" ".join(part for part in pair if part) for pair in kept_sections],
        values.iloc[keep].reset_index(drop=True),
        drops.counts,
        extra,
    )


def _load_mimic_images(data_root: Path, uncertain: str, labels, frontal_only: bool) -> ImageTable:
    status, tables = _check("mimic_cxr", data_root, ("images",))
    _raise_unless_ok(status)
    root = tables["root"]
    label_table = tables["labels"]
    available = [c for c in label_table.columns if c not in ("subject_id", "study_id")]
    chosen = _select_labels("mimic_cxr", labels, available)
    meta = tables["metadata"]
    drops = _Drops(len(meta), [DUPLICATE, NOT_FRONTAL, NO_LABEL_ROW, NO_SPLIT, BAD_VALUE, UNCERTAIN, NO_IMAGE])
    drops.drop(DUPLICATE, meta.duplicated("dicom_id").to_numpy())
    if frontal_only:
        drops.drop(NOT_FRONTAL, ~meta["ViewPosition"].str.strip().isin(FRONTAL_VIEWS).to_numpy())
    by_study = label_table.drop_duplicates("study_id").set_index("study_id")
    row = meta["study_id"].map(pd.Series(np.arange(len(by_study)), index=by_study.index))
    drops.drop(NO_LABEL_ROW, row.isna().to_numpy())
    split = meta["dicom_id"].map(tables["split"].drop_duplicates("dicom_id").set_index("dicom_id")["split"])
    drops.drop(NO_SPLIT, split.isna().to_numpy())
    # labels of each image's study (rows without one get a blank row, already dropped)
    studies = by_study.reset_index()
    blank = pd.DataFrame({c: [""] * len(meta) for c in chosen})
    has = row.notna().to_numpy()
    blank.loc[has, chosen] = studies.loc[row[has].astype(int).to_numpy(), chosen].to_numpy()
    values, invalid, uncertain_rows = _chexpert_style(blank, chosen, uncertain)
    drops.drop(BAD_VALUE, invalid.to_numpy())
    drops.drop(UNCERTAIN, uncertain_rows.to_numpy())
    images_dir = root / _entry("mimic_cxr")["files"]["images_dir"]
    subject, study, dicom = (meta[c].astype(str) for c in ("subject_id", "study_id", "dicom_id"))
    names = (  # files/p10/p10000032/s50414267/<dicom_id>.jpg, built column-wise (377k rows)
        os.fspath(images_dir) + os.sep + "p" + subject.str[:2] + os.sep + "p" + subject
        + os.sep + "s" + study + os.sep + dicom + ".jpg"
    ).to_numpy()
    candidates = np.flatnonzero(drops.keep)
    exists = _exists_many(names[candidates].tolist())
    missing = np.zeros(len(meta), bool)
    missing[candidates[~exists]] = True
    drops.drop(NO_IMAGE, missing)
    keep = np.flatnonzero(drops.keep)
    kept_paths = [Path(n) for n in names[keep]]
    return ImageTable(
        meta["dicom_id"].to_numpy()[keep].tolist(),
        kept_paths,
        values.iloc[keep].reset_index(drop=True),
        meta["subject_id"].to_numpy()[keep].tolist(),
        split.to_numpy()[keep].tolist(),
        drops.counts,
        "MIMIC-CXR-JPG",
        meta["study_id"].to_numpy()[keep].tolist(),
    )


# --------------------------------------------------------------------- RSNA
def _open_rsna(data_root: Path, need: tuple[str, ...]) -> tuple[SourceStatus, dict]:
    name, entry = "rsna_pneumonia", _entry("rsna_pneumonia")
    files = entry["files"]
    root = _find_root(data_root, entry)
    if root is None:
        return _missing(name, entry, data_root, [data_root / entry["layout"]["roots"][0] / files["labels"]], None), {}
    problem, tables = _read_present(name, entry, data_root, root, ("labels", "class_info"), ("images_dir",),
                                    checksums=False)
    if problem:
        return problem, {}
    images_dir = root / files["images_dir"]
    patients = tables["labels"]["patientId"].drop_duplicates()
    sample = [images_dir / f"{p}.dcm" for p in patients.head(20)]
    if not any(p.is_file() for p in sample):
        return _missing(name, entry, data_root, sample[:1], root), {}
    tables["root"] = root
    note = _counts_note(entry, {"label_rows": len(tables["labels"]), "images": len(patients)})
    return SourceStatus(name, "ok", str(root), note), tables


def _load_rsna_images(data_root: Path, labels) -> ImageTable:
    status, tables = _check("rsna_pneumonia", data_root, ("images",))
    _raise_unless_ok(status)
    chosen = _select_labels("rsna_pneumonia", labels, list(RSNA_LABELS))
    rows = tables["labels"]
    target = pd.to_numeric(rows["Target"].str.strip(), errors="coerce")
    bad_row = target.isna() | ~target.isin([0, 1])
    per_patient = pd.DataFrame({"patientId": rows["patientId"], "target": target, "bad": bad_row})
    grouped = per_patient.groupby("patientId", sort=False).agg(target=("target", "max"), bad=("bad", "any"))
    classes = tables["class_info"].drop_duplicates()
    conflicting = classes["patientId"].duplicated(keep=False)
    class_of = classes[~conflicting].set_index("patientId")["class"].str.strip()
    patients = grouped.index.to_series()
    cls = patients.map(class_of)
    drops = _Drops(len(grouped), [BAD_VALUE, NO_CLASS, CLASS_DISAGREES, NO_IMAGE])
    drops.drop(BAD_VALUE, grouped["bad"].to_numpy())
    drops.drop(NO_CLASS, cls.isna().to_numpy())
    pneumonia = grouped["target"].fillna(0).astype(int)
    drops.drop(CLASS_DISAGREES, ((cls == "Lung Opacity").astype(int) != pneumonia).to_numpy() & cls.notna().to_numpy())
    images_dir = tables["root"] / _entry("rsna_pneumonia")["files"]["images_dir"]
    paths = [images_dir / f"{p}.dcm" for p in patients]
    drops.drop(NO_IMAGE, ~_exists_many(paths))
    keep = np.flatnonzero(drops.keep)
    all_labels = pd.DataFrame(
        {
            "Pneumonia": pneumonia.to_numpy(),
            "Normal": (cls == "Normal").astype(int).to_numpy(),
            "No Lung Opacity / Not Normal": (cls == "No Lung Opacity / Not Normal").astype(int).to_numpy(),
        }
    )
    ids = patients.to_numpy()[keep].tolist()
    return ImageTable(
        ids,
        [paths[i] for i in keep],
        all_labels[chosen].iloc[keep].reset_index(drop=True),
        list(ids),
        None,
        drops.counts,
        "RSNA Pneumonia",
    )


# --------------------------------------------------------------------- VinDr-CXR
def _open_vindr(data_root: Path, need: tuple[str, ...]) -> tuple[SourceStatus, dict]:
    name, entry = "vindr_cxr", _entry("vindr_cxr")
    files = entry["files"]
    root = _find_root(data_root, entry)
    if root is None:
        return _missing(name, entry, data_root, [data_root / entry["layout"]["roots"][0] / files["train_labels"]], None), {}
    problem, tables = _read_present(name, entry, data_root, root, ("train_labels", "test_labels"),
                                    ("train_dir", "test_dir"))
    if problem:
        return problem, {}
    for role, folder in (("train_labels", "train_dir"), ("test_labels", "test_dir")):
        sample = [root / files[folder] / f"{i}.dicom" for i in tables[role]["image_id"].head(20)]
        if not any(p.is_file() for p in sample):
            return _missing(name, entry, data_root, sample[:1], root), {}
    tables["root"] = root
    found = {
        "train_images": tables["train_labels"]["image_id"].nunique(),
        "train_label_rows": len(tables["train_labels"]),
        "test_images": tables["test_labels"]["image_id"].nunique(),
    }
    return SourceStatus(name, "ok", str(root), _counts_note(entry, found)), tables


def _combine_readers(table: pd.DataFrame, labels: list[str], policy: str) -> tuple[pd.DataFrame, pd.Series]:
    """One 0/1 row per image from its readers' rows, and the images with a bad value."""
    values = table[labels].apply(lambda col: pd.to_numeric(col.astype(str).str.strip(), errors="coerce"))
    bad = (values.isna() | ~values.isin([0, 1])).any(axis=1)
    values = values.fillna(0)
    values.insert(0, "image_id", table["image_id"].to_numpy())
    grouped = values.groupby("image_id", sort=False)
    votes, readers = grouped[labels].sum(), grouped.size()
    if policy == "majority":
        combined = votes.mul(2).gt(readers, axis=0)
    elif policy == "any":
        combined = votes.gt(0)
    else:
        combined = votes.eq(readers, axis=0)
    bad_image = pd.Series(bad.to_numpy(), index=table["image_id"].to_numpy()).groupby(level=0, sort=False).any()
    return combined.astype(int), bad_image.reindex(combined.index)


def _load_vindr_images(data_root: Path, reader_policy: str, labels) -> ImageTable:
    status, tables = _check("vindr_cxr", data_root, ("images",))
    _raise_unless_ok(status)
    entry = _entry("vindr_cxr")
    train, test = tables["train_labels"], tables["test_labels"]
    available = [c for c in train.columns if c not in ("image_id", "rad_id")]
    chosen = _select_labels("vindr_cxr", labels, available)
    missing_in_test = [c for c in chosen if c not in test.columns]
    if missing_in_test:
        raise SemalignError(
            f"{tables['root'] / entry['files']['test_labels']} lacks the label column(s) {missing_in_test}; "
            "download annotations/image_labels_test.csv again"
        )
    parts = []
    for split_name, table, folder in (("train", train, "train_dir"), ("test", test, "test_dir")):
        combined, bad = _combine_readers(table, chosen, reader_policy)
        parts.append((split_name, combined, bad, tables["root"] / entry["files"][folder]))
    ids = [i for _, combined, _, _ in parts for i in combined.index]
    split = [s for s, combined, _, _ in parts for _ in combined.index]
    paths = [folder / f"{i}.dicom" for _, combined, _, folder in parts for i in combined.index]
    values = pd.concat([combined for _, combined, _, _ in parts]).reset_index(drop=True)
    bad = np.concatenate([b.to_numpy(bool) for _, _, b, _ in parts])
    drops = _Drops(len(ids), [DUPLICATE, BAD_VALUE, NO_IMAGE])
    drops.drop(DUPLICATE, pd.Series(ids).duplicated().to_numpy())  # an image in both files
    drops.drop(BAD_VALUE, bad)
    drops.drop(NO_IMAGE, ~_exists_many(paths))
    keep = np.flatnonzero(drops.keep)
    kept_ids = [ids[i] for i in keep]
    return ImageTable(
        kept_ids,
        [paths[i] for i in keep],
        values.iloc[keep].reset_index(drop=True),
        list(kept_ids),  # VinDr-CXR publishes no patient ids: each image is its own group
        [split[i] for i in keep],
        drops.counts,
        "VinDr-CXR",
    )


# --------------------------------------------------------------------- CheXpert
_PATIENT = re.compile(r"(patient\d+)")


def _open_chexpert(data_root: Path, need: tuple[str, ...]) -> tuple[SourceStatus, dict]:
    name, entry = "chexpert", _entry("chexpert")
    files = entry["files"]
    root = _find_root(data_root, entry)
    if root is None:
        return _missing(name, entry, data_root, [data_root / files["train"]], None), {}
    problem, tables = _read_present(name, entry, data_root, root, ("train", "valid"), checksums=False)
    if problem:
        return problem, {}
    sample = [root / p for p in tables["train"]["Path"].head(20)]
    if not any(p.is_file() for p in sample):
        return _missing(name, entry, data_root, sample[:1], root), {}
    tables["root"] = root
    note = _counts_note(entry, {"train_images": len(tables["train"]), "valid_images": len(tables["valid"])})
    return SourceStatus(name, "ok", str(root), note), tables


def _load_chexpert_images(data_root: Path, uncertain: str, labels, frontal_only: bool) -> ImageTable:
    status, tables = _check("chexpert", data_root, ("images",))
    _raise_unless_ok(status)
    root = tables["root"]
    meta_columns = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
    available = [c for c in tables["train"].columns if c not in meta_columns]
    chosen = _select_labels("chexpert", labels, available)
    table = pd.concat(
        [tables["train"].assign(_split="train"), tables["valid"].assign(_split="valid")], ignore_index=True
    )
    table[chosen] = table[chosen].fillna("")  # a label column absent from valid.csv reads as blank
    drops = _Drops(len(table), [DUPLICATE, NOT_FRONTAL, NO_PATIENT, BAD_VALUE, UNCERTAIN, NO_IMAGE])
    drops.drop(DUPLICATE, table.duplicated("Path").to_numpy())
    if frontal_only:
        drops.drop(NOT_FRONTAL, (table["Frontal/Lateral"].str.strip() != "Frontal").to_numpy())
    patient = table["Path"].str.extract(_PATIENT, expand=False)
    drops.drop(NO_PATIENT, patient.isna().to_numpy())
    values, invalid, uncertain_rows = _chexpert_style(table, chosen, uncertain)
    drops.drop(BAD_VALUE, invalid.to_numpy())
    drops.drop(UNCERTAIN, uncertain_rows.to_numpy())
    names = (os.fspath(root) + os.sep + table["Path"].str.replace("/", os.sep, regex=False)).to_numpy()
    candidates = np.flatnonzero(drops.keep)
    exists = _exists_many(names[candidates].tolist())
    missing = np.zeros(len(table), bool)
    missing[candidates[~exists]] = True
    drops.drop(NO_IMAGE, missing)
    keep = np.flatnonzero(drops.keep)
    return ImageTable(
        table["Path"].to_numpy()[keep].tolist(),
        [Path(n) for n in names[keep]],
        values.iloc[keep].reset_index(drop=True),
        patient.to_numpy()[keep].tolist(),
        table["_split"].to_numpy()[keep].tolist(),
        drops.counts,
        "CheXpert-v1.0-small",
    )


# --------------------------------------------------------------------- public
_OPENERS = {"mimic_cxr": _open_mimic, "rsna_pneumonia": _open_rsna, "vindr_cxr": _open_vindr, "chexpert": _open_chexpert}
_EVERYTHING = ("reports", "images")


def _data_root(data_root) -> Path:
    if data_root is None or str(data_root).strip() == "":
        raise SemalignError("data_root is not set; pass the folder that holds the paper datasets (-p data_root=/path)")
    return Path(os.path.expanduser(os.fspath(data_root)))


def _check(name: str, data_root, need: tuple[str, ...] = _EVERYTHING, close: bool = True) -> tuple[SourceStatus, dict]:
    _entry(name)
    root = _data_root(data_root)
    try:
        status, tables = _OPENERS[name](root, need)
        if close:
            _close(tables)
        return status, tables
    except PermissionError as exc:
        entry = _entry(name)
        return _corrupt(name, entry, root, f"{exc.filename or root} cannot be read (permission denied)"), {}


def _message(status: SourceStatus) -> str:
    return _one_line(f"paper dataset {status.name!r} ({status.path}) is {status.status}: {status.detail}")


def _raise_unless_ok(status: SourceStatus) -> None:
    if not status.ok:
        raise SemalignError(_message(status))


def verify(data_root) -> list[SourceStatus]:
    """One status per dataset (``ok`` / ``missing`` / ``corrupt``), never raising
    for a missing dataset. ``detail`` is one line: what was found, or what is
    missing (the expected path) and how to obtain it, or which file is corrupt."""
    return [_check(name, data_root)[0] for name in DATASETS]


def require(name: str, data_root) -> Path:
    """The dataset's root folder, or :class:`SemalignError` with the one-line
    ``paper dataset NAME (PATH) is STATUS: DETAIL`` message."""
    status, _ = _check(name, data_root)
    _raise_unless_ok(status)
    return Path(status.path)


def load_reports(name: str, data_root, *, uncertain: str = "zeros", labels=None) -> ReportSet:
    """MIMIC-CXR reports (FINDINGS + IMPRESSION) with CheXpert labels.

    ids are study ids; ``labels`` are 0/1 under the ``uncertain`` policy;
    ``extra`` has ``subject_id``, the official ``split`` of the study
    (train / validate / test), ``findings`` and ``impression``. ``dropped``
    counts every label-table row left out, by reason.
    """
    _entry(name)
    _check_policy(uncertain, UNCERTAIN_POLICIES, "uncertain")
    if name != "mimic_cxr":
        raise SemalignError(
            f"paper dataset {name!r} has no reports: only mimic_cxr ships report text; use load_images({name!r}, ...)"
        )
    return _load_mimic_reports(_data_root(data_root), uncertain, labels)


def load_images(
    name: str, data_root, *, uncertain: str = "zeros", reader_policy: str = "majority", labels=None, frontal_only: bool = True
) -> ImageTable:
    """Image paths (not pixels), 0/1 labels, patient groups and the official split.

    ``uncertain`` applies to MIMIC-CXR and CheXpert; ``reader_policy`` to
    VinDr-CXR's training readers; ``frontal_only`` keeps PA/AP images (MIMIC,
    CheXpert). Label rows whose image file is missing are dropped and counted.
    """
    _entry(name)
    _check_policy(uncertain, UNCERTAIN_POLICIES, "uncertain")
    _check_policy(reader_policy, READER_POLICIES, "reader_policy")
    root = _data_root(data_root)
    if name == "mimic_cxr":
        return _load_mimic_images(root, uncertain, labels, frontal_only)
    if name == "rsna_pneumonia":
        return _load_rsna_images(root, labels)
    if name == "vindr_cxr":
        return _load_vindr_images(root, reader_policy, labels)
    return _load_chexpert_images(root, uncertain, labels, frontal_only)


def patient_split(groups, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split with no group (patient) on both sides.

    Groups are shuffled with ``seed`` and moved to the test side until it holds
    ``round(n * test_fraction)`` items (the closest a whole-group split can get);
    returns sorted index arrays into ``groups``.
    """
    if not 0 < test_fraction < 1:
        raise SemalignError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    groups = pd.Series([str(g) for g in groups])
    codes, uniques = pd.factorize(groups, sort=True)
    if len(uniques) < 2:
        raise SemalignError(
            f"patient_split needs at least 2 distinct patients, got {len(uniques)}; load more data or use a random split"
        )
    sizes = np.bincount(codes, minlength=len(uniques))
    order = np.random.default_rng(seed).permutation(len(uniques))
    target = round(len(groups) * test_fraction)
    cumulative = np.cumsum(sizes[order])
    k = int(np.argmin(np.abs(cumulative - target))) + 1  # closest cut point
    k = min(max(k, 1), len(uniques) - 1)  # both sides non-empty
    test_groups = np.zeros(len(uniques), bool)
    test_groups[order[:k]] = True
    is_test = test_groups[codes]
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)
