"""Report collections: the IU chest X-ray reports (default) or any CSV/Parquet table.

Every loader returns a :class:`ReportSet`: stable item ids, report texts, a 0/1
label table and a count of the rows dropped and why, so nothing is skipped
silently. Splits are seeded and deterministic; anchors are drawn from the
training split only (see :func:`split_indices`).
"""

from __future__ import annotations

import dataclasses
import tarfile
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd

from semalign.core.errors import SemalignError
from semalign.data.manifest import load_manifest, require_source

TASKS = ("binary", "multilabel")


@dataclasses.dataclass
class ReportSet:
    """Reports with labels. ``labels`` has one 0/1 column per class."""

    name: str
    ids: list[str]
    texts: list[str]
    labels: pd.DataFrame
    dropped: dict[str, int]
    extra: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def dropped_summary(self) -> str:
        """One line: how many rows were dropped and why (``"none"`` when none were)."""
        reasons = [f"{n:,} ({why})" for why, n in self.dropped.items() if n]
        return ", ".join(reasons) if reasons else "none"

    def subset(self, index: np.ndarray) -> "ReportSet":
        index = np.asarray(index)
        extra = None if self.extra is None else self.extra.iloc[index].reset_index(drop=True)
        return ReportSet(
            self.name,
            [self.ids[i] for i in index],
            [self.texts[i] for i in index],
            self.labels.iloc[index].reset_index(drop=True),
            dict(self.dropped),
            extra,
        )

    def task_labels(self, task: str) -> pd.DataFrame:
        """Targets for a task: ``binary`` is abnormal (1) vs normal (0) when a
        ``normal`` column exists; ``multilabel`` is every other label column."""
        if task not in TASKS:
            raise SemalignError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
        if task == "binary":
            if "normal" not in self.labels:
                if self.labels.shape[1] == 1:
                    return self.labels
                raise SemalignError(
                    f"task 'binary' needs a 'normal' label column or a single label column in {self.name}; "
                    f"found {list(self.labels.columns)}: use task=multilabel or pass one label column"
                )
            return pd.DataFrame({"abnormal": 1 - self.labels["normal"].to_numpy()})
        return self.labels.drop(columns=["normal"], errors="ignore")


def parse_iu_archive(path: str | Path | None = None) -> pd.DataFrame:
    """One row per XML report: id, findings, impression, MeSH major terms."""
    path = Path(path) if path else require_source("iu_xray_reports")  # checked against the manifest's sha256
    rows = []
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                if not member.name.endswith(".xml"):
                    continue
                root = ET.parse(archive.extractfile(member)).getroot()
                sections = {a.get("Label"): " ".join((a.text or "").split()) for a in root.iter("AbstractText")}
                uid = root.find("uId")
                rows.append(
                    {
                        "id": uid.get("id") if uid is not None else Path(member.name).stem,
                        "findings": sections.get("FINDINGS", ""),
                        "impression": sections.get("IMPRESSION", ""),
                        "mesh_major": [m.text.strip() for m in root.iter("major") if m.text],
                    }
                )
    except (tarfile.TarError, EOFError, OSError, ET.ParseError) as exc:
        raise SemalignError(
            f"{path} is corrupt or truncated ({exc}); reinstall it with: pip install --force-reinstall --no-deps torchxrayvision==1.5.7"
        ) from None
    return pd.DataFrame(rows).sort_values("id", key=lambda s: s.str.extract(r"(\d+)")[0].astype(int)).reset_index(drop=True)


def load_iu_reports(path: str | Path | None = None) -> ReportSet:
    """IU X-ray reports with FINDINGS or IMPRESSION; labels from MeSH major terms.

    The term → label mapping lives in ``data_manifest.yaml``: a report has label
    L when the first component of one of its major terms (``Opacity/lung/base``
    → ``Opacity``) is listed under L.
    """
    table = parse_iu_archive(path)
    has_text = (table["findings"] != "") | (table["impression"] != "")
    dropped = {"no FINDINGS or IMPRESSION section": int((~has_text).sum())}
    table = table[has_text].reset_index(drop=True)
    heads = table["mesh_major"].map(lambda terms: {t.split("/")[0].strip() for t in terms})
    label_terms = load_manifest()["sources"]["iu_xray_reports"]["labels"]
    labels = pd.DataFrame(
        {label: heads.map(lambda h, terms=terms: int(bool(h & set(terms)))) for label, terms in label_terms.items()}
    )
    texts = [" ".join(part for part in (f, i) if part) for f, i in zip(table["findings"], table["impression"])]
    extra = table[["findings", "impression"]].assign(mesh_major=table["mesh_major"].map("; ".join))
    return ReportSet("IU X-ray reports", table["id"].tolist(), texts, labels, dropped, extra)


def load_report_table(path: str | Path, text_column: str, label_columns: list[str]) -> ReportSet:
    """Any report collection as CSV or Parquet: one text column, 0/1 label columns.

    Rows with an empty text or an empty label are dropped, counted in
    ``dropped`` and reported with one warning naming the file; a label column
    holding anything but 0/1 (a 1/2 or yes/no coding) and a table with no
    usable row are errors.
    """
    path = Path(path)
    if not path.is_file():
        raise SemalignError(f"dataset file {path} does not exist; pass -p dataset=<path to a .csv or .parquet file>")
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".gz": pd.read_csv}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise SemalignError(f"dataset file {path}: unsupported suffix {path.suffix!r}; use .csv, .csv.gz or .parquet")
    try:
        table = reader(path)
    except UnicodeDecodeError as exc:
        raise SemalignError(
            f"dataset file {path} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
            f"{exc.start:,}); convert it, e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}-utf8{path.suffix}"
        ) from None
    except Exception as exc:  # any parser error becomes one line naming the file
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise SemalignError(
            f"dataset file {path} could not be read ({detail}); it is truncated or not a valid "
            f"{path.suffix.lstrip('.')} table: export or copy it again"
        ) from None
    if not label_columns:
        raise SemalignError(f"dataset file {path}: label_columns is empty; name one or more 0/1 label columns with -p label_columns=[...]")
    missing = [c for c in [text_column, *label_columns] if c not in table.columns]
    if missing:
        raise SemalignError(
            f"dataset file {path} has no column(s) {missing}; its columns are {list(table.columns)}: "
            "set -p text_column=... -p label_columns=[...]"
        )
    total = len(table)
    text = table[text_column].astype("string").str.strip()
    empty = text.isna() | (text == "")
    dropped = {"empty report text": int(empty.sum())}
    table = table[~empty].reset_index(drop=True)
    labels = table[label_columns].apply(pd.to_numeric, errors="coerce")
    for column in label_columns:
        odd_rows = table[column].notna() & ~labels[column].isin([0, 1])
        odd = sorted(set(table[column][odd_rows].astype(str)))
        if odd:  # 1/2, yes/no, -1: a coding, not a few bad rows; dropping them would leave a different task
            raise SemalignError(
                f"dataset file {path}: label column {column!r} holds values other than 0/1 "
                f"({', '.join(repr(v) for v in odd[:5])}{', ...' if len(odd) > 5 else ''} in "
                f"{int(odd_rows.sum()):,} rows); recode it as 1 = finding present, "
                "0 = absent (empty cells are dropped)"
            )
    bad = labels.isna().any(axis=1)
    dropped["label missing"] = int(bad.sum())
    table, labels = table[~bad].reset_index(drop=True), labels[~bad].astype(int).reset_index(drop=True)
    ids = table["id"].astype(str).tolist() if "id" in table else [f"{path.stem}-{i}" for i in range(len(table))]
    reports = ReportSet(path.name, ids, table[text_column].astype(str).tolist(), labels, dropped)
    if not len(reports):
        raise SemalignError(
            f"dataset file {path}: none of its {total} rows is usable (dropped: {reports.dropped_summary()}); "
            f"fill column {text_column!r} with report text and {label_columns} with 0/1"
        )
    if sum(dropped.values()):
        warnings.warn(f"dataset file {path}: dropped {sum(dropped.values()):,} of {total:,} rows: "
                      f"{reports.dropped_summary()}", stacklevel=2)
    constant = {c: int(labels[c].iloc[0]) for c in label_columns if labels[c].nunique() == 1}
    if constant:
        listing = ", ".join(f"{c!r} is {v} in every row" for c, v in constant.items())
        advice = (f"no score needs both classes of a label that has one: more rows of the same data cannot help; "
                  f"drop {'it' if len(constant) == 1 else 'them'} from label_columns or use data where "
                  f"{'it varies' if len(constant) == 1 else 'they vary'}")
        if len(constant) == len(label_columns):
            raise SemalignError(f"dataset file {path}: {listing} of {len(reports):,} usable rows; {advice}")
        warnings.warn(f"dataset file {path}: {listing}, so {'it is' if len(constant) == 1 else 'they are'} not "
                      f"scored; {advice}", stacklevel=2)
    return reports


def load_reports(dataset: str = "iu_xray", text_column: str = "text", label_columns: list[str] | None = None) -> ReportSet:
    """The dataset named by a notebook parameter: ``iu_xray`` or a file path."""
    if dataset == "iu_xray":
        return load_iu_reports()
    return load_report_table(dataset, text_column, list(label_columns or []))


def subsample_index(n_items: int, max_items: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of at most ``max_items`` of
    ``range(n_items)``; all of them when ``max_items`` is 0, None or not smaller."""
    if not max_items or max_items >= n_items:
        return np.arange(n_items)
    return np.sort(np.random.default_rng(seed).choice(n_items, size=max_items, replace=False))


def subsample(reports: ReportSet, max_items: int | None, seed: int) -> ReportSet:
    """A seeded random subset of at most ``max_items`` reports (order kept)."""
    if not max_items or max_items >= len(reports):
        return reports
    return reports.subset(subsample_index(len(reports), max_items, seed))


SMALL_TEST_SET = 30  # fewer test items than this gets a warning


def held_out(n_items: int, fraction: float) -> int:
    """How many of ``n_items`` a split holding out ``fraction`` of them puts aside
    (the test split of :func:`split_indices`, the validation rows of
    :func:`validation_split`); the runner checks anchor counts with it before a
    kernel starts."""
    return int(round(n_items * fraction))


def split_indices(n_items: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/test split of ``range(n_items)`` (sorted index arrays).

    The anchor pool is the training split: anchors never come from test items,
    and the alignment never sees a label.
    """
    if not 0 < test_fraction < 1:
        raise SemalignError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n_items)
    n_test = held_out(n_items, test_fraction)
    if n_test < 1 or n_items - n_test < 2:
        raise SemalignError(f"test_fraction={test_fraction} of {n_items} items leaves {n_items - n_test} for training "
                            f"and {n_test} for testing; pass e.g. -p test_fraction=0.3 (or more items)")
    if n_test < SMALL_TEST_SET:
        warnings.warn(f"only {n_test} test items (test_fraction={test_fraction} of {n_items}): every score rests on "
                      f"them and its interval will be wide", stacklevel=1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def validation_split(train: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation): a seeded share ``fraction`` of the training rows held
    out to choose settings (decoder strength, transform, pair, ...), so the test
    split is scored once and chooses nothing. ``fraction`` 0 gives no validation rows."""
    train = np.asarray(train)
    if not 0 <= fraction < 1:
        raise SemalignError(f"validation_fraction must be in [0, 1), got {fraction}; e.g. -p validation_fraction=0.2")
    n_validation = held_out(len(train), fraction)
    order = np.random.default_rng([seed, 1]).permutation(len(train))
    return np.sort(train[order[n_validation:]]), np.sort(train[order[:n_validation]])

