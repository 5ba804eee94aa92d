"""CheXpert-v1.0-small: ``train.csv`` and ``valid.csv``, whose ``Path`` column
(``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``) is
relative to ``data_root``; the patient id is read from that path."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from semalign.data.manifest import SourceStatus
from semalign.data.paper.sources import checked_tables, found_ok, missing_unless_any, open_tables
from semalign.data.paper.tables import BAD_VALUE, DUPLICATE, NO_IMAGE, NO_PATIENT, NOT_FRONTAL, UNCERTAIN, Drops
from semalign.data.paper.tables import ImageTable, chexpert_style, select_labels

NAME = "chexpert"
_PATIENT = re.compile(r"(patient\d+)")
_META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")


def open_files(data_root: Path, need: tuple[str, ...]) -> tuple[SourceStatus, dict]:
    """The dataset's status and its train and valid tables (``need``: unused, every check needs both)."""
    problem, tables = open_tables(NAME, data_root, ("train", "valid"), checksums=False)
    if problem:
        return problem, {}
    root = tables["root"]
    problem = missing_unless_any(NAME, data_root, root, [root / p for p in tables["train"]["Path"].head(20)])
    if problem:
        return problem, {}
    return found_ok(NAME, root, {"train_images": len(tables["train"]), "valid_images": len(tables["valid"])}), tables


def load_images(data_root: Path, uncertain: str, labels, frontal_only: bool) -> ImageTable:
    """Training then validation images; see :func:`semalign.data.paper.load_images`."""
    tables = checked_tables(NAME, open_files, data_root, ("images",))
    root = tables["root"]
    available = [c for c in tables["train"].columns if c not in _META_COLUMNS]
    chosen = select_labels(NAME, labels, available)
    table = pd.concat(
        [tables["train"].assign(_split="train"), tables["valid"].assign(_split="valid")], ignore_index=True
    )
    table[chosen] = table[chosen].fillna("")  # a label column absent from valid.csv reads as blank
    drops = Drops(len(table), [DUPLICATE, NOT_FRONTAL, NO_PATIENT, BAD_VALUE, UNCERTAIN, NO_IMAGE])
    drops.drop(DUPLICATE, table.duplicated("Path").to_numpy())
    if frontal_only:
        drops.drop(NOT_FRONTAL, (table["Frontal/Lateral"].str.strip() != "Frontal").to_numpy())
    patient = table["Path"].str.extract(_PATIENT, expand=False)
    drops.drop(NO_PATIENT, patient.isna().to_numpy())
    values = chexpert_style(table, chosen, uncertain, drops)
    names = (os.fspath(root) + os.sep + table["Path"].str.replace("/", os.sep, regex=False)).to_numpy()
    drops.drop_missing_files(names)
    return drops.table("CheXpert-v1.0-small", table["Path"].to_numpy(), names, values, patient.to_numpy(),
                       table["_split"].to_numpy())
