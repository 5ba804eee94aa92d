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
LABEL_COLUMNS: tuple[str, ...] = (
    "id",
    "normal",
    *FINDINGS,
    "effusion_side",
    "effusion_size",
    "opacity_side",
    "opacity_lobe",
    "opacity_zone",
    "opacity_severity",
    "nodule_side",
    "nodule_lobe",
    "nodule_zone",
    "nodule_size_mm",
    "nodule_row",
    "nodule_col",
    "cardiomegaly_severity",
    "ctr",
    "pneumothorax_side",
    "pneumothorax_size",
    "atelectasis_side",
    "atelectasis_lobe",
    "atelectasis_zone",
    "atelectasis_severity",
    *_NUISANCE_COLUMNS,
    "photons",
)
_STR_COLUMNS = {c for c in LABEL_COLUMNS if c.endswith(("_side", "_size", "_lobe", "_zone", "_severity"))} - {
    "opacity_severity"
}


def label_row(image_id: str, case: dict[str, Any], nuis: dict[str, float], info: dict) -> dict[str, Any]:
    """The label row of one image from its drawn ``case``, nuisance and render ``info``."""
    present = set(case["present"])
    row: dict[str, Any] = {c: "" for c in _STR_COLUMNS}
    row.update({"id": image_id, "normal": not present})
    for f in FINDINGS:
        row[f] = f in present
    nan = float("nan")
    row.update(opacity_severity=nan, nodule_size_mm=nan, nodule_row=nan, nodule_col=nan)
    if "effusion" in case:
        row.update(effusion_side=case["effusion"]["side"], effusion_size=case["effusion"]["size"])
    if "opacity" in case:
        o = case["opacity"]
        row.update(
            opacity_side=o["side"],
            opacity_lobe=o["lobe"],
            opacity_zone=o["zone"],
            opacity_severity=round(o["severity"], 4),
        )
    if "nodule" in case:
        n = case["nodule"]
        r, c = info["nodule_rc"]
        row.update(
            nodule_side=n["side"],
            nodule_lobe=n["lobe"],
            nodule_zone=n["zone"],
            nodule_size_mm=float(n["size_mm"]),
            nodule_row=round(r, 2),
            nodule_col=round(c, 2),
        )
    if "cardiomegaly" in case:
        row["cardiomegaly_severity"] = case["cardiomegaly"]["severity"]
    row["ctr"] = round(case["ctr"], 4)
    if "pneumothorax" in case:
        row.update(pneumothorax_side=case["pneumothorax"]["side"], pneumothorax_size=case["pneumothorax"]["size"])
    if "atelectasis" in case:
        a = case["atelectasis"]
        row.update(
            atelectasis_side=a["side"],
            atelectasis_lobe=a["lobe"],
            atelectasis_zone=a["zone"],
            atelectasis_severity=a["severity"],
        )
    for key in _NUISANCE_COLUMNS:
        row[key] = round(float(nuis[key]), 5)
    row["photons"] = float(nuis["photons"]) if math.isfinite(nuis["photons"]) else nan
    return row
