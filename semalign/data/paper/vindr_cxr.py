"""VinDr-CXR 1.0.0: image-level labels of three readers per training image.

``annotations/image_labels_train.csv`` holds one row per reader and image,
``annotations/image_labels_test.csv`` one consensus row per image, and the
images are ``train/<image_id>.dicom`` and ``test/<image_id>.dicom``. The
``reader_policy`` combines a training image's 0/1 votes: ``"majority"`` (more
than half its readers), ``"any"`` (at least one) or ``"all"`` (every reader).
VinDr-CXR publishes no patient identifiers, so each image is its own group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from semalign.data.manifest import SourceStatus
from semalign.data.paper.sources import checked_tables, exists_many, found_ok, manifest_entry, missing_unless_any
from semalign.data.paper.sources import open_tables
from semalign.data.paper.tables import BAD_VALUE, DUPLICATE, NO_IMAGE, Drops, ImageTable, select_labels
from semalign.core.errors import SemalignError

NAME = "vindr_cxr"


def open_files(data_root: Path, need: tuple[str, ...]) -> tuple[SourceStatus, dict]:
    """The dataset's status and its train and test label tables (``need``: unused, every check needs both)."""
    problem, tables = open_tables(NAME, data_root, ("train_labels", "test_labels"), ("train_dir", "test_dir"))
    if problem:
        return problem, {}
    root, files = tables["root"], manifest_entry(NAME)["files"]
    for role, folder in (("train_labels", "train_dir"), ("test_labels", "test_dir")):
        sample = [root / files[folder] / f"{i}.dicom" for i in tables[role]["image_id"].head(20)]
        problem = missing_unless_any(NAME, data_root, root, sample)
        if problem:
            return problem, {}
    found = {
        "train_images": tables["train_labels"]["image_id"].nunique(),
        "train_label_rows": len(tables["train_labels"]),
        "test_images": tables["test_labels"]["image_id"].nunique(),
    }
    return found_ok(NAME, root, found), tables


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


def load_images(data_root: Path, reader_policy: str, labels) -> ImageTable:
    """Training images (readers combined) then test images; see :func:`semalign.data.paper.load_images`."""
    tables = checked_tables(NAME, open_files, data_root, ("images",))
    entry = manifest_entry(NAME)
    train, test = tables["train_labels"], tables["test_labels"]
    available = [c for c in train.columns if c not in ("image_id", "rad_id")]
    chosen = select_labels(NAME, labels, available)
    missing_in_test = [c for c in chosen if c not in test.columns]
    if missing_in_test:
        raise SemalignError(
            f"{tables['root'] / entry['files']['test_labels']} lacks the label column(s) {missing_in_test}; "
            "download annotations/image_labels_test.csv again"
        )
    ids, split, paths, values, bad = [], [], [], [], []
    for split_name, table, folder in (("train", train, "train_dir"), ("test", test, "test_dir")):
        combined, bad_image = _combine_readers(table, chosen, reader_policy)
        ids += combined.index.tolist()
        split += [split_name] * len(combined)
        paths += [tables["root"] / entry["files"][folder] / f"{i}.dicom" for i in combined.index]
        values.append(combined)
        bad.append(bad_image.to_numpy(bool))
    drops = Drops(len(ids), [DUPLICATE, BAD_VALUE, NO_IMAGE])
    drops.drop(DUPLICATE, pd.Series(ids).duplicated().to_numpy())  # an image in both files
    drops.drop(BAD_VALUE, np.concatenate(bad))
    drops.drop(NO_IMAGE, ~exists_many(paths))
    values = pd.concat(values).reset_index(drop=True)
    return drops.table("VinDr-CXR", ids, paths, values, ids, split)  # no patient ids: each image is its own group
