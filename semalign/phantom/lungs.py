"""The lungs' working copy: the volume at half resolution, cropped to the lungs.

Every finding is made in this crop (in 3-D, with the label masks) and projected
back onto the full half-resolution 2-D grid, so a finding map is a change of the
line integral that adds to the base projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from semalign.phantom.findings import LOBE_NAMES, LOBES, SIDES


@dataclass
class LungCrop:
    """Half-resolution attenuation and labels around the lungs, with their coordinates.

    ``mu``: attenuation relative to water, ``labels``: TotalSegmentator ids,
    ``lung`` / ``lung_side``: lung masks (all lobes / per side), all of shape
    ``(z, x, y)``; ``zmm``, ``xmm``, ``ymm``: voxel centres in mm along each axis;
    ``spacing``: mm per voxel; ``origin``: the crop's (z, x) corner in the
    half-resolution 2-D grid of shape ``shape2d``; ``x_mid_mm``: the body's
    midline (the trachea); ``carina_z``: the lowest trachea slice; ``heart_mid_z``:
    midway between the heart's first and last slice; ``z_extent_mm``: side -> the
    lung's (top, bottom) slice.
    """

    mu: np.ndarray
    labels: np.ndarray
    lung: np.ndarray
    lung_side: dict[str, np.ndarray]
    lobe_ids: dict[str, int]
    heart_id: int
    zmm: np.ndarray
    xmm: np.ndarray
    ymm: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[int, int]
    shape2d: tuple[int, int]
    x_mid_mm: float
    carina_z: float
    heart_mid_z: float
    z_extent_mm: dict[str, tuple[float, float]]

    def project(self, delta_box: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
        """The line integral (water-cm) of a change of ``mu`` in ``box`` of the crop, on the 2-D grid."""
        z0, x0 = self.origin
        out = np.zeros(self.shape2d, np.float32)
        out[z0 + box[0].start : z0 + box[0].stop, x0 + box[1].start : x0 + box[1].stop] = (
            delta_box.sum(axis=2, dtype=np.float32) * (self.spacing[2] / 10.0)
        )
        return out

    def embed(self, mask2d: np.ndarray) -> np.ndarray:
        """A 2-D mask of the crop's (z, x) plane placed on the 2-D grid."""
        z0, x0 = self.origin
        out = np.zeros(self.shape2d, bool)
        out[z0 : z0 + mask2d.shape[0], x0 : x0 + mask2d.shape[1]] = mask2d
        return out


def lung_crop(
    mu_half: np.ndarray, labels: np.ndarray, structures: dict[str, int], spacing: tuple[float, float, float]
) -> LungCrop:
    """Crop the half-resolution attenuation ``mu_half`` (and the full-resolution
    ``labels``, subsampled) to the lungs with a margin of 8 voxels in-plane."""
    dz, dx, dy = spacing
    lab_h = labels[:, ::2, ::2]
    dxh = dx * 2.0
    dyh = dy * 2.0
    lobe_ids = {lobe: structures[spec[0]] for lobe, spec in LOBES.items()}
    lung_all = np.isin(lab_h, list(lobe_ids.values()))
    zz, xx, yy = np.nonzero(lung_all)
    margin = 8
    z0, z1 = max(zz.min() - 2, 0), min(zz.max() + 3, lab_h.shape[0])
    x0, x1 = max(xx.min() - margin, 0), min(xx.max() + margin + 1, lab_h.shape[1])
    y0, y1 = max(yy.min() - margin, 0), min(yy.max() + margin + 1, lab_h.shape[2])
    crop = (slice(z0, z1), slice(x0, x1), slice(y0, y1))
    lab_c = np.ascontiguousarray(lab_h[crop])
    zmm = (np.arange(z0, z1) + 0.5) * dz
    xmm = (np.arange(x0, x1) + 0.5) * dxh
    side_ids = {s: [lobe_ids[lb] for lb in LOBE_NAMES if LOBES[lb][1] == s] for s in SIDES}
    lung_side = {s: np.isin(lab_c, side_ids[s]) for s in SIDES}
    trachea = np.argwhere(lab_c == structures["trachea"])

    def first_last_mm(mask: np.ndarray) -> tuple[float, float]:
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        return float(zmm[slices[0]]), float(zmm[slices[-1]])

    return LungCrop(
        mu=np.ascontiguousarray(mu_half[crop]),
        labels=lab_c,
        lung=lung_all[crop],
        lung_side=lung_side,
        lobe_ids=lobe_ids,
        heart_id=structures["heart"],
        zmm=zmm,
        xmm=xmm,
        ymm=(np.arange(y0, y1) + 0.5) * dyh,
        spacing=(dz, dxh, dyh),
        origin=(int(z0), int(x0)),
        shape2d=(mu_half.shape[0], mu_half.shape[1]),
        x_mid_mm=float(xmm[int(np.median(trachea[:, 1]))]) if trachea.size else float(xmm.mean()),
        carina_z=float(zmm[trachea[:, 0].max()]) if trachea.size else float(zmm.mean()),
        heart_mid_z=0.5 * sum(first_last_mm(lab_c == structures["heart"])),
        z_extent_mm={s: first_last_mm(lung_side[s]) for s in SIDES},
    )


def bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) index bounds (hi exclusive) of a non-empty boolean mask."""
    box = ndi.find_objects(mask.view(np.uint8))[0]
    return np.array([s.start for s in box]), np.array([s.stop for s in box])


def profile(mask: np.ndarray, axis: int) -> np.ndarray:
    """Voxel count of ``mask`` in each slice across ``axis``."""
    other = tuple(a for a in range(mask.ndim) if a != axis)
    return mask.sum(axis=other, dtype=np.int64)


def centroid(weights: np.ndarray) -> float:
    """Index centroid of a 1-D profile."""
    return float((weights * np.arange(weights.size)).sum() / weights.sum())
