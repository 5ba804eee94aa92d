"""What the paper loaders return and the rules they share: the image table,
the reasons a row is dropped, label selection and policies, and the
patient-level split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from semalign.data.paper.sources import default_labels, exists_many
from semalign.core.errors import SemalignError

UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
READER_POLICIES = ("majority", "any", "all")

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
            [Path(self.paths[i]) for i in index],
            self.labels.iloc[index].reset_index(drop=True),
            [self.groups[i] for i in index],
            None if self.split is None else [self.split[i] for i in index],
            dict(self.dropped),
            self.name,
            None if self.studies is None else [self.studies[i] for i in index],
        )


class Drops:
    """Assigns each dropped row to its first reason, keeping every reason's count."""

    def __init__(self, n: int, reasons: list[str]):
        self.keep = np.ones(n, bool)
        self.counts = {reason: 0 for reason in reasons}

    def drop(self, reason: str, mask) -> None:
        mask = np.asarray(mask, bool) & self.keep
        self.counts[reason] = self.counts.get(reason, 0) + int(mask.sum())
        self.keep &= ~mask

    def table(self, name: str, ids, paths, labels: pd.DataFrame, groups, split=None, studies=None) -> ImageTable:
        """The :class:`ImageTable` of the kept rows; each argument has one entry per row."""
        table = ImageTable(ids, paths, labels, groups, split, self.counts, name, studies)
        return table.subset(np.flatnonzero(self.keep))

    def drop_missing_files(self, names: np.ndarray) -> None:
        """Drop the kept rows whose image file (``names``, one per row) does not
        exist; only those rows' files are looked up."""
        candidates = np.flatnonzero(self.keep)
        exists = exists_many(names[candidates].tolist())
        absent = np.zeros(len(self.keep), bool)
        absent[candidates[~exists]] = True
        self.drop(NO_IMAGE, absent)


# --------------------------------------------------------------------- labels
def check_policy(value: str, valid: tuple[str, ...], what: str) -> None:
    if value not in valid:
        raise SemalignError(f"{what}={value!r} is not valid; use one of {', '.join(valid)}")


def select_labels(name: str, labels, available: list[str]) -> list[str]:
    """The requested labels (``None``: the dataset's defaults), each one of ``available``."""
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


def chexpert_style(table: pd.DataFrame, labels: list[str], uncertain: str, drops: Drops) -> pd.DataFrame:
    """0/1 labels under an uncertainty policy; drops the rows with an invalid value
    and, with ``uncertain="ignore"``, those uncertain (-1) on one of ``labels``."""
    raw = table[labels].apply(lambda col: col.astype(str).str.strip())
    blank = raw == ""
    values = raw.apply(pd.to_numeric, errors="coerce")
    values = values.where(~blank, 0.0)
    invalid = (values.isna() | ~values.isin([1.0, 0.0, -1.0])).any(axis=1)
    drops.drop(BAD_VALUE, invalid.to_numpy())
    drops.drop(UNCERTAIN, ((values == -1.0).any(axis=1) & ~invalid).to_numpy() & (uncertain == "ignore"))
    return values.replace(-1.0, 1.0 if uncertain == "ones" else 0.0).fillna(0).astype(int)

# --------------------------------------------------------------------- splitting
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
