"""RSNA Pneumonia Detection Challenge, stage 2 training set.

``stage_2_train_labels.csv`` holds one row per box (and one row for an image
without any), ``stage_2_detailed_class_info.csv`` each image's class, and
``stage_2_train_images/<patientId>.dcm`` the images. An image's ``Pneumonia``
label is the maximum ``Target`` over its rows; ``Normal`` and ``No Lung
Opacity / Not Normal`` come from the class file, and an image whose class
disagrees with its Target is dropped. The dataset has no uncertain labels and
one image per patient.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from semalign.data.manifest import SourceStatus
from semalign.data.paper.sources import checked_tables, exists_many, found_ok, manifest_entry, missing_unless_any
from semalign.data.paper.sources import open_tables
from semalign.data.paper.tables import BAD_VALUE, CLASS_DISAGREES, NO_CLASS, NO_IMAGE, Drops, ImageTable, select_labels

NAME = "rsna_pneumonia"
LABELS = ("Pneumonia", "Normal", "No Lung Opacity / Not Normal")


def open_files(data_root: Path, need: tuple[str, ...]) -> tuple[SourceStatus, dict]:
    """The dataset's status and its label and class tables (``need``: unused, every check needs both)."""
    problem, tables = open_tables(NAME, data_root, ("labels", "class_info"), ("images_dir",), checksums=False)
    if problem:
        return problem, {}
    root = tables["root"]
    images_dir = root / manifest_entry(NAME)["files"]["images_dir"]
    patients = tables["labels"]["patientId"].drop_duplicates()
    problem = missing_unless_any(NAME, data_root, root, [images_dir / f"{p}.dcm" for p in patients.head(20)])
    if problem:
        return problem, {}
    return found_ok(NAME, root, {"label_rows": len(tables["labels"]), "images": len(patients)}), tables


def load_images(data_root: Path, labels) -> ImageTable:
    """One row per image; see :func:`semalign.data.paper.load_images`."""
    tables = checked_tables(NAME, open_files, data_root, ("images",))
    chosen = select_labels(NAME, labels, list(LABELS))
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
    drops = Drops(len(grouped), [BAD_VALUE, NO_CLASS, CLASS_DISAGREES, NO_IMAGE])
    drops.drop(BAD_VALUE, grouped["bad"].to_numpy())
    drops.drop(NO_CLASS, cls.isna().to_numpy())
    pneumonia = grouped["target"].fillna(0).astype(int)
    drops.drop(CLASS_DISAGREES, ((cls == "Lung Opacity").astype(int) != pneumonia).to_numpy() & cls.notna().to_numpy())
    images_dir = tables["root"] / manifest_entry(NAME)["files"]["images_dir"]
    paths = [images_dir / f"{p}.dcm" for p in patients]
    drops.drop(NO_IMAGE, ~exists_many(paths))
    all_labels = pd.DataFrame({"Pneumonia": pneumonia.to_numpy(),
                               **{c: (cls == c).astype(int).to_numpy() for c in LABELS[1:]}})
    return drops.table("RSNA Pneumonia", patients.to_numpy(), paths, all_labels[chosen], patients.to_numpy())
