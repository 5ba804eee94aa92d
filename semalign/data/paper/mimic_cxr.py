"""MIMIC-CXR: free-text reports with CheXpert labels, and MIMIC-CXR-JPG images.

The reports come from MIMIC-CXR 2.0.0, either the ``mimic-cxr-reports.zip``
archive or its extracted ``files/p10/p10000032/s50414267.txt`` tree; labels,
the official split, view metadata and the images
(``files/p10/p10000032/s50414267/<dicom_id>.jpg``) from MIMIC-CXR-JPG 2.0.0 /
2.1.0. The archive is opened once, while the dataset is checked, and read and
closed by :func:`load_reports`.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from semalign.data.manifest import SourceStatus
from semalign.data.paper.sources import Corrupt, check_sums, checked_tables, close, corrupt, found_ok, manifest_entry
from semalign.data.paper.sources import missing, missing_unless_any, open_tables
from semalign.data.paper.tables import BAD_VALUE, DUPLICATE, NO_IMAGE, NO_LABEL_ROW, NO_REPORT, NO_SECTION, NO_SPLIT
from semalign.data.paper.tables import NOT_FRONTAL, UNCERTAIN, Drops, ImageTable, chexpert_style, select_labels
from semalign.data.reports import ReportSet
from semalign.core.errors import SemalignError

NAME = "mimic_cxr"
FRONTAL_VIEWS = ("PA", "AP")

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


def _report_rel(subject: str, study: str) -> str:
    return f"p{subject[:2]}/p{subject}/s{study}.txt"


# --------------------------------------------------------------------- opening
def _open_archive(where: Path) -> tuple[zipfile.ZipFile, dict[str, str]]:
    """The reports archive, left open, and its report members by study id; raises Corrupt."""
    try:
        check_sums(where.parent, [where])
        archive = zipfile.ZipFile(where)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise Corrupt(f"{where} is not a readable zip archive ({type(exc).__name__})") from None
    members = {}
    for member in archive.namelist():
        match = _REPORT_MEMBER.search(member)
        if match:
            members[match.group(3)] = member
    if not members:
        archive.close()
        raise Corrupt(f"{where} holds no files/p1X/pSUBJECT/sSTUDY.txt reports")
    return archive, members


def _attach_reports(data_root: Path, entry: dict, root: Path, tables: dict, found: dict) -> SourceStatus | None:
    """Find the reports (an archive in any report root, else an extracted tree) and
    put their source, ``("zip", path)`` or ``("dir", folder)``, into ``tables`` (an
    archive: open, with its members); the missing or corrupt status when that fails."""
    files, report_roots = entry["files"], entry["layout"].get("report_roots", [])
    roots = [data_root / r for r in report_roots] + [root]
    archive = next((r / files["reports_zip"] for r in roots if (r / files["reports_zip"]).is_file()), None)
    if archive is not None:
        try:
            tables["archive"], tables["report_members"] = _open_archive(archive)
        except Corrupt as exc:
            return corrupt(NAME, entry, root, str(exc))
        found["reports"] = len(tables["report_members"])
        tables["reports"] = ("zip", archive)
        return None
    sample = tables["labels"].head(50)
    for folder in (r / files["reports_dir"] for r in roots):
        if folder.is_dir() and any(
            (folder / _report_rel(s, t)).is_file() for s, t in zip(sample["subject_id"], sample["study_id"])
        ):
            tables["reports"] = ("dir", folder)
            return None
    expected = [data_root / (report_roots[0] if report_roots else ".") / files["reports_zip"]]
    expected.append(root / files["reports_dir"] / "p1X/pSUBJECT/sSTUDY.txt")
    return missing(NAME, entry, data_root, expected, root)


def open_files(data_root: Path, need: tuple[str, ...]) -> tuple[SourceStatus, dict]:
    """The dataset's status and tables: labels and split, plus what ``need``
    names (``reports``: their source; ``images``: the metadata)."""
    roles = ["labels", "split"] + (["metadata"] if "images" in need else [])
    problem, tables = open_tables(NAME, data_root, roles, ["images_dir"] if "images" in need else [])
    if problem:
        return problem, {}
    entry, root = manifest_entry(NAME), tables["root"]
    found = {"studies": len(tables["labels"])}
    if "reports" in need:
        problem = _attach_reports(data_root, entry, root, tables, found)
        if problem:
            return problem, {}
    if "images" in need:
        found["images"] = len(tables["metadata"])
        images_dir = root / entry["files"]["images_dir"]
        sample = [Path(n) for n in _image_names(images_dir, tables["metadata"].head(20))]
        problem = missing_unless_any(NAME, data_root, root, sample, [images_dir / "p1X/pSUBJECT/sSTUDY/DICOM_ID.jpg"])
        if problem:
            close(tables)
            return problem, {}
    return found_ok(NAME, root, found), tables


# --------------------------------------------------------------------- reports
def _read_reports(tables: dict, studies: pd.DataFrame) -> list[str | None]:
    """Each study's report text (``None`` where it has none), closing the archive."""
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


def load_reports(data_root: Path, uncertain: str, labels) -> ReportSet:
    """The reports (FINDINGS + IMPRESSION) with CheXpert labels; see
    :func:`semalign.data.paper.load_reports`."""
    tables = checked_tables(NAME, open_files, data_root, ("reports",), close_archive=False)
    try:
        return _reports_from(tables, uncertain, labels)
    finally:
        close(tables)


def _reports_from(tables: dict, uncertain: str, labels) -> ReportSet:
    table = tables["labels"]
    available = [c for c in table.columns if c not in ("subject_id", "study_id")]
    chosen = select_labels(NAME, labels, available)
    drops = Drops(len(table), [DUPLICATE, NO_REPORT, NO_SECTION, NO_SPLIT, BAD_VALUE, UNCERTAIN])
    drops.drop(DUPLICATE, table.duplicated("study_id").to_numpy())
    texts = _read_reports(tables, table)
    drops.drop(NO_REPORT, [t is None for t in texts])
    sections = [parse_report_sections(t) if t is not None else ("", "") for t in texts]
    drops.drop(NO_SECTION, [not (f or i) for f, i in sections])
    split = table["study_id"].map(tables["split"].drop_duplicates("study_id").set_index("study_id")["split"])
    drops.drop(NO_SPLIT, split.isna().to_numpy())
    values = chexpert_style(table, chosen, uncertain, drops)
    texts = [" ".join(part for part in pair if part) for pair in sections]
    extra = pd.DataFrame({"subject_id": table["subject_id"].to_numpy(), "split": split.to_numpy(),
                          "findings": [f for f, _ in sections], "impression": [i for _, i in sections]})
    reports = ReportSet("MIMIC-CXR reports", table["study_id"].to_numpy(), texts, values, drops.counts, extra)
    return reports.subset(np.flatnonzero(drops.keep))  # the kept rows


# --------------------------------------------------------------------- images
def load_images(data_root: Path, uncertain: str, labels, frontal_only: bool) -> ImageTable:
    """MIMIC-CXR-JPG images with their study's labels; see :func:`semalign.data.paper.load_images`."""
    tables = checked_tables(NAME, open_files, data_root, ("images",))
    label_table = tables["labels"]
    available = [c for c in label_table.columns if c not in ("subject_id", "study_id")]
    chosen = select_labels(NAME, labels, available)
    meta = tables["metadata"]
    drops = Drops(len(meta), [DUPLICATE, NOT_FRONTAL, NO_LABEL_ROW, NO_SPLIT, BAD_VALUE, UNCERTAIN, NO_IMAGE])
    drops.drop(DUPLICATE, meta.duplicated("dicom_id").to_numpy())
    if frontal_only:
        drops.drop(NOT_FRONTAL, ~meta["ViewPosition"].str.strip().isin(FRONTAL_VIEWS).to_numpy())
    by_study = label_table.drop_duplicates("study_id").set_index("study_id")
    study_row = by_study.index.get_indexer(meta["study_id"])  # -1: the study has no label row
    drops.drop(NO_LABEL_ROW, study_row < 0)
    split = meta["dicom_id"].map(tables["split"].drop_duplicates("dicom_id").set_index("dicom_id")["split"])
    drops.drop(NO_SPLIT, split.isna().to_numpy())
    # each image's study labels; an image without a label row (-1) reads the last row, but it is dropped already
    values = chexpert_style(by_study.iloc[study_row], chosen, uncertain, drops)
    names = _image_names(tables["root"] / manifest_entry(NAME)["files"]["images_dir"], meta)
    drops.drop_missing_files(names)
    return drops.table("MIMIC-CXR-JPG", meta["dicom_id"].to_numpy(), names, values, meta["subject_id"].to_numpy(),
                       split.to_numpy(), meta["study_id"].to_numpy())


def _image_names(images_dir: Path, meta: pd.DataFrame) -> np.ndarray:
    """``files/p10/p10000032/s50414267/<dicom_id>.jpg`` of every metadata row,
    built column-wise: the full metadata has hundreds of thousands of rows."""
    subject, study, dicom = (meta[c].astype(str) for c in ("subject_id", "study_id", "dicom_id"))
    return (
        os.fspath(images_dir) + os.sep + "p" + subject.str[:2] + os.sep + "p" + subject
        + os.sep + "s" + study + os.sep + dicom + ".jpg"
    ).to_numpy()
