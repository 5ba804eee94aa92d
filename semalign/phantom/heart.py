"""The hearts: reduced hearts for normal studies and enlarged ones for cardiomegaly.

The heart mask is grown into lung and fat (signed distance to the heart, less
growth in z) until the cardiothoracic ratio, measured on the projected masks
(widest horizontal extent of the projected heart over the widest row of the
projected lungs), reaches 0.53-0.70. Normal studies get one of three *reduced*
hearts (CTR 0.42-0.48; the CT's own heart measures about 0.53, supine and
enlarged), whose rim facing the lung is replaced by lung tissue copied from
further out. Every image records its ``ctr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from semalign.core.errors import SemalignError
from semalign.phantom.findings import CARDIOMEGALY_SEVERITIES, CARDIOMEGALY_TARGETS, NORMAL_HEART_TARGETS
from semalign.phantom.lungs import LungCrop, bbox

MU_SOFT = 1.04  # 40 HU
#: Signed growth of the heart tried (mm; negative shrinks it).
_GROWTH_GRID_MM = np.arange(-20.0, 40.01, 1.0)


@dataclass
class _HeartBox:
    """The heart and its neighbourhood in a box of the lung crop, with the distances
    that decide which voxels a grown or shrunk heart takes or gives up."""

    box: tuple[slice, ...]
    heart: np.ndarray  # bool mask
    mu: np.ndarray
    lung: np.ndarray
    out_dist: np.ndarray  # distance outside the heart (z counts double, y 1.5 times)
    in_dist: np.ndarray  # distance inside the heart, same metric
    lung_dist: np.ndarray  # distance to the lung
    grow_gain: np.ndarray  # per slice: 0 at the great vessels, 1 from 45 % down the heart
    soft_or_lung: np.ndarray  # voxels the heart may grow into
    x_centre: float
    dxh: float


def _heart_box(crop: LungCrop) -> _HeartBox:
    dz, dxh, dyh = crop.spacing
    heart_full = crop.labels == crop.heart_id
    lo, hi = bbox(heart_full)
    pad = np.array([6, int(50 / dxh), int(50 / dyh)])
    lo, hi = np.maximum(lo - pad, 0), np.minimum(hi + pad, heart_full.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    heart = heart_full[box]
    mu = crop.mu[box]
    lung = crop.lung[box]
    sampling = (dz * 2.0, dxh, dyh * 1.5)  # the heart grows / shrinks mostly sideways
    hz = np.flatnonzero(heart.any(axis=(1, 2)))
    h_top, h_bot = hz[0], hz[-1]
    t = np.clip((np.arange(heart.shape[0]) - h_top) / max(0.45 * (h_bot - h_top), 1.0), 0.0, 1.0)
    return _HeartBox(
        box=box,
        heart=heart,
        mu=mu,
        lung=lung,
        out_dist=ndi.distance_transform_edt(~heart, sampling=sampling).astype(np.float32),
        in_dist=ndi.distance_transform_edt(heart, sampling=sampling).astype(np.float32),
        lung_dist=ndi.distance_transform_edt(~lung, sampling=(dz, dxh, dyh)).astype(np.float32),
        grow_gain=(t * t * (3.0 - 2.0 * t)).astype(np.float32),
        soft_or_lung=mu < 1.02,
        x_centre=float(np.nonzero(heart)[1].mean()),
        dxh=dxh,
    )


def _variant(hb: _HeartBox, r_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(delta mu, new heart mask) in the heart box for signed growth ``r_mm``."""
    if r_mm >= 0:
        grown = (hb.out_dist <= r_mm * hb.grow_gain[:, None, None]) & ~hb.heart & hb.soft_or_lung
        delta = np.where(grown, MU_SOFT - hb.mu, 0.0).astype(np.float32)
        return delta, hb.heart | grown
    depth = -r_mm
    removed = hb.heart & (hb.in_dist <= depth) & (hb.lung_dist <= depth + 3.0)
    # the removed rim is refilled with lung copied from further out (keeps vessel markings)
    shift = int(round((depth + 6.0) / hb.dxh))
    x_index = np.arange(hb.heart.shape[1])
    src_x = np.clip(np.where(x_index < hb.x_centre, x_index - shift, x_index + shift), 0, hb.heart.shape[1] - 1)
    fill = np.where(hb.lung[:, src_x, :], np.minimum(hb.mu[:, src_x, :], 0.6), 0.14)
    delta = np.where(removed, fill - hb.mu, 0.0).astype(np.float32)
    return delta, hb.heart & ~removed


def ctr(heart2d: np.ndarray, thorax_width_px: int) -> float:
    """Cardiothoracic ratio: widest extent of the projected heart over the thorax width."""
    cols = np.flatnonzero(heart2d.any(axis=0))
    if cols.size == 0:
        return 0.0
    return float(cols[-1] - cols[0] + 1) / float(thorax_width_px)


def _ctr_curve(hb: _HeartBox, thorax_width_px: int) -> np.ndarray:
    """The CTR of every growth in the grid, from the projected masks alone: a grown
    voxel joins at r >= out_dist, a rim voxel leaves at depth >= max(in_dist, lung_dist - 3)."""
    heart2d = hb.heart.any(axis=2)
    gain = hb.grow_gain[:, None, None]
    eligible = ~hb.heart & hb.soft_or_lung & (gain > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        join2d = np.where(eligible, hb.out_dist / gain, np.inf).min(axis=2)
    keep2d = np.where(hb.heart, np.maximum(hb.in_dist, hb.lung_dist - 3.0), -np.inf).max(axis=2)

    def variant_ctr(r_mm: float) -> float:
        mask2d = (heart2d | (join2d <= r_mm)) if r_mm >= 0 else (keep2d > -r_mm)
        return ctr(mask2d, thorax_width_px)

    return np.array([variant_ctr(r) for r in _GROWTH_GRID_MM])


def heart_variants(crop: LungCrop, thorax_width_px: int) -> list[dict[str, Any]]:
    """The three normal hearts and two hearts per cardiomegaly severity.

    Each: ``kind`` (``"normal"`` or a severity), ``target`` CTR, measured ``ctr``,
    ``map`` (change of the line integral) and ``mask`` (projected heart), both on
    the half-resolution 2-D grid.
    """
    hb = _heart_box(crop)
    ctrs = _ctr_curve(hb, thorax_width_px)
    targets = [("normal", t) for t in NORMAL_HEART_TARGETS] + [
        (sev, t) for sev in CARDIOMEGALY_SEVERITIES for t in CARDIOMEGALY_TARGETS[sev]
    ]
    variants: list[dict[str, Any]] = []
    for kind, target in targets:
        ok = ctrs < 0.495 if kind == "normal" else (ctrs > 0.505) & (_GROWTH_GRID_MM >= 0)
        cand = np.flatnonzero(ok)
        if cand.size == 0:  # pragma: no cover - depends only on the shipped CT
            raise SemalignError("the phantom cannot reach the cardiothoracic ratios it needs from this CT")
        best = cand[np.argmin(np.abs(ctrs[cand] - target))]
        delta, mask = _variant(hb, float(_GROWTH_GRID_MM[best]))
        mask2d = np.zeros(crop.lung.shape[:2], bool)
        mask2d[hb.box[0], hb.box[1]] = mask.any(axis=2)
        variants.append(
            {
                "kind": kind,
                "target": target,
                "ctr": float(ctrs[best]),
                "map": crop.project(delta, hb.box),
                "mask": crop.embed(mask2d),
            }
        )
    return variants

