"""The paper profile's datasets, read from their real on-disk layouts.

The paper (Di Folco et al. 2025) uses four chest X-ray collections that need a
data use agreement, so none of them ships with the study. A user who has access
puts them under one folder, ``data_root``; the layouts, access procedures,
licences, default labels (``labels=None``) and the files to check are recorded
under ``paper_sources:`` in ``data_manifest.yaml`` and read from there.

One module per dataset reads its layout and states its label rules
(:mod:`~semalign.data.paper.mimic_cxr`, :mod:`~semalign.data.paper.rsna_pneumonia`,
:mod:`~semalign.data.paper.vindr_cxr`, :mod:`~semalign.data.paper.chexpert`);
:mod:`~semalign.data.paper.sources` finds, reads and verifies files,
:mod:`~semalign.data.paper.tables` holds what the loaders share (drop reasons,
label policies, the patient split).

CheXpert-style labels (MIMIC-CXR, CheXpert) are ``1.0`` positive, ``0.0``
negative, ``-1.0`` uncertain and blank = not mentioned, read as 0. The
``uncertain`` policy maps ``-1``: ``"zeros"`` (U-Zeros, default) to 0,
``"ones"`` (U-Ones) to 1, ``"ignore"`` drops every row that has ``-1`` on a
*requested* label (and counts it). Any other value drops the row.

Loaders return paths, never pixels, so large datasets can be streamed with
:func:`semalign.data.images.load_image`. A label row whose image file does not
exist is dropped and counted (one ``stat`` per file, by a few threads), so a
partial download loads without any option.

Privacy: report text is returned to the caller and nothing else; no function
prints or logs it, and error messages name files and ids, never report text.
"""

from __future__ import annotations

from pathlib import Path

from semalign.data.manifest import SourceStatus
from semalign.data.paper import chexpert, mimic_cxr, rsna_pneumonia, vindr_cxr
from semalign.data.paper.mimic_cxr import parse_report_sections
from semalign.data.paper.sources import (
    DATASETS,
    check,
    data_root_path,
    default_labels,
    manifest_entry,
    raise_unless_ok,
)
from semalign.data.paper.tables import (  # the drop reasons: the keys of a loader's ``dropped``
    BAD_VALUE,
    CLASS_DISAGREES,
    DUPLICATE,
    NO_CLASS,
    NO_IMAGE,
    NO_LABEL_ROW,
    NO_PATIENT,
    NO_REPORT,
    NO_SECTION,
    NO_SPLIT,
    NOT_FRONTAL,
    UNCERTAIN,
)
from semalign.data.paper.tables import READER_POLICIES, UNCERTAIN_POLICIES, ImageTable, check_policy, patient_split
from semalign.data.reports import ReportSet
from semalign.core.errors import SemalignError

_MODULES = {"mimic_cxr": mimic_cxr, "rsna_pneumonia": rsna_pneumonia, "vindr_cxr": vindr_cxr, "chexpert": chexpert}


def _status(name: str, data_root) -> SourceStatus:
    manifest_entry(name)  # an unknown name is an error listing the valid ones
    return check(name, _MODULES[name].open_files, data_root)[0]


def verify(data_root) -> list[SourceStatus]:
    """One status per dataset (``ok`` / ``missing`` / ``corrupt``), never raising
    for a missing dataset. ``detail`` is one line: what was found, or what is
    missing (the expected path) and how to obtain it, or which file is corrupt."""
    return [_status(name, data_root) for name in DATASETS]


def require(name: str, data_root) -> Path:
    """The dataset's root folder, or :class:`SemalignError` with the one-line
    ``paper dataset NAME (PATH) is STATUS: DETAIL`` message."""
    status = _status(name, data_root)
    raise_unless_ok(status)
    return Path(status.path)


def load_reports(name: str, data_root, *, uncertain: str = "zeros", labels=None) -> ReportSet:
    """MIMIC-CXR reports (FINDINGS + IMPRESSION) with CheXpert labels.

    ids are study ids; ``labels`` are 0/1 under the ``uncertain`` policy;
    ``extra`` has ``subject_id``, the official ``split`` of the study
    (train / validate / test), ``findings`` and ``impression``. ``dropped``
    counts every label-table row left out, by reason.
    """
    manifest_entry(name)
    check_policy(uncertain, UNCERTAIN_POLICIES, "uncertain")
    if name != "mimic_cxr":
        raise SemalignError(
            f"paper dataset {name!r} has no reports: only mimic_cxr ships report text; use load_images({name!r}, ...)"
        )
    return mimic_cxr.load_reports(data_root_path(data_root), uncertain, labels)


def load_images(
    name: str, data_root, *, uncertain: str = "zeros", reader_policy: str = "majority", labels=None, frontal_only: bool = True
) -> ImageTable:
    """Image paths (not pixels), 0/1 labels, patient groups and the official split.

    ``uncertain`` applies to MIMIC-CXR and CheXpert; ``reader_policy`` to
    VinDr-CXR's training readers; ``frontal_only`` keeps PA/AP images (MIMIC,
    CheXpert; RSNA and VinDr-CXR hold only frontal ones). Label rows whose image
    file is missing are dropped and counted.
    """
    manifest_entry(name)
    check_policy(uncertain, UNCERTAIN_POLICIES, "uncertain")
    check_policy(reader_policy, READER_POLICIES, "reader_policy")
    root = data_root_path(data_root)
    if name == "mimic_cxr":
        return mimic_cxr.load_images(root, uncertain, labels, frontal_only)
    if name == "rsna_pneumonia":
        return rsna_pneumonia.load_images(root, labels)
    if name == "vindr_cxr":
        return vindr_cxr.load_images(root, reader_policy, labels)
    return chexpert.load_images(root, uncertain, labels, frontal_only)
