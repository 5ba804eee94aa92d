"""The label table: its columns, and the row that records one drawn case.

The finding columns and ``normal`` are bool; attribute columns are ``""`` (text)
or NaN (numbers) when the finding is absent; ``ctr`` is always set;
``nodule_row`` / ``nodule_col`` are the nodule centre in output pixels; lobes are
spelled ``"right upper lobe"`` etc., zones ``upper/mid/lower``.
"""

from __future__ import annotations

import math
from typing import Any

from semalign.phantom.findings import FINDINGS

#: finding -> its attribute columns ``<finding>_<attribute>``, in table order.
_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "effusion": ("side", "size"),
    "opacity": ("side", "lobe", "zone", "severity"),
    "nodule": ("side", "lobe", "zone", "size_mm", "row", "col"),
    "cardiomegaly": ("severity",),
    "pneumothorax": ("side", "size"),
    "atelectasis": ("side", "lobe", "zone", "severity"),
}
_NUMBER_COLUMNS = ("opacity_severity", "nodule_size_mm", "nodule_row", "nodule_col")
_NUISANCE_COLUMNS = (
    "rotation_deg",
    "yaw_deg",
    "pitch_deg",
    "scale_x",
    "scale_y",
    "magnification",
    "shift_row",
    "shift_col",
    "exposure",
    "gamma",
)
_ATTRIBUTE_COLUMNS = tuple(f"{f}_{a}" for f in FINDINGS for a in _ATTRIBUTES[f])
_CTR_AT = _ATTRIBUTE_COLUMNS.index("cardiomegaly_severity") + 1  # ctr follows the cardiomegaly columns
LABEL_COLUMNS: tuple[str, ...] = (
    "id",
    "normal",
    *FINDINGS,
    *_ATTRIBUTE_COLUMNS[:_CTR_AT],
    "ctr",
    *_ATTRIBUTE_COLUMNS[_CTR_AT:],
    *_NUISANCE_COLUMNS,
    "photons",
)


def label_row(image_id: str, case: dict[str, Any], nuis: dict[str, float], info: dict) -> dict[str, Any]:
    """The label row of one image from its drawn ``case``, nuisance and render ``info``."""
    present = case["present"]
    values = {f"{f}_{a}": v for f in present for a, v in case[f].items()}
    if "opacity" in present:
        values["opacity_severity"] = round(values["opacity_severity"], 4)
    if "nodule" in present:
        values["nodule_row"], values["nodule_col"] = (round(x, 2) for x in info["nodule_rc"])
    row: dict[str, Any] = {"id": image_id, "normal": not present, **{f: f in present for f in FINDINGS}}
    for column in _ATTRIBUTE_COLUMNS:
        row[column] = values.get(column, math.nan if column in _NUMBER_COLUMNS else "")
    row["ctr"] = round(case["ctr"], 4)
    for key in _NUISANCE_COLUMNS:
        row[key] = round(float(nuis[key]), 5)
    row["photons"] = float(nuis["photons"]) if math.isfinite(nuis["photons"]) else math.nan
    return row
