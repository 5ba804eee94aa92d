"""The findings inside the lungs, made in 3-D with the masks and projected.

Their heights, fractions and scales are in :mod:`.findings`.

``effusion``
    fluid (10 HU) replaces the lung below a level that rises towards the lateral
    chest wall and posteriorly (meniscus) and fades out over a few mm upwards;
    ``bilateral`` adds both sides.
``opacity`` (consolidation)
    a soft-edged, noise-shaped patch covering part of one lobe raised to soft
    tissue density with texture; bronchi (< -950 HU) are spared (air bronchograms).
    The severity (the fraction of the full density change) scales the map
    exactly, since the change is linear.
``nodule``
    an analytic soft-tissue sphere (drawn when rendering) whose centre is a lung
    voxel at least its radius (+2 mm) from the lung surface; here only the
    candidate centres are listed.
``pneumothorax``
    the lung of one side is shrunk towards a medial anchor 85 % of the way down
    the lung, denser in proportion; the space between it and the chest wall (apex
    and lateral) becomes air without vessel markings; a thin visceral pleural
    line marks the lung edge.
``atelectasis``
    one lobe is shrunk towards its hilar anchor and made denser; the space it
    leaves is filled by hyper-expanded lung; the mediastinum (and for lower lobes
    the hemidiaphragm) is displaced a few mm towards the lobe by a 2-D warp of
    the base projection.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from semalign.phantom.findings import (
    ATELECTASIS_SCALE,
    ATELECTASIS_SEVERITIES,
    ATELECTASIS_SHIFT_MM,
    EFFUSION_HEIGHTS_MM,
    EFFUSION_SIZES,
    LOBE_NAMES,
    LOBES,
    OPACITY_FRACTIONS,
    PNEUMOTHORAX_SCALE,
    PNEUMOTHORAX_SIZES,
    SIDES,
)
from semalign.phantom.lungs import LungCrop, bbox, centroid, profile

_MU_FLUID = 1.01  # 10 HU


def effusion_maps(crop: LungCrop) -> dict[tuple, np.ndarray]:
    """``("effusion", side, size, variant)`` -> map, one variant per fluid height."""
    effusion: dict[tuple, np.ndarray] = {}
    zmm, xmm, ymm = crop.zmm, crop.xmm, crop.ymm
    for side in SIDES:
        ls = crop.lung_side[side]
        (lz0, lx0, ly0), (lz1, lx1, ly1) = bbox(ls)
        base_mm = crop.z_extent_mm[side][1]
        absx = np.abs(xmm - crop.x_mid_mm)
        cols = np.flatnonzero(profile(ls, 1))
        xmed, xlat = float(absx[cols].min()), float(absx[cols].max())
        lat = np.clip((absx - xmed) / max(xlat - xmed, 1.0), 0.0, 1.0)
        ylo, yhi = float(ymm[ly0]), float(ymm[ly1 - 1])
        post = np.clip((ymm - ylo) / max(yhi - ylo, 1.0), 0.0, 1.0)
        height = base_mm - zmm
        box = (slice(lz0, lz1), slice(lx0, lx1), slice(ly0, ly1))
        for size in EFFUSION_SIZES:
            for variant, h in enumerate(EFFUSION_HEIGHTS_MM[size]):
                # fluid fraction: 1 below the level, fading over a few mm (meniscus rising laterally
                # and posteriorly, thinning upwards)
                level = h * (0.5 + 0.8 * lat[:, None] ** 2 + 0.5 * post[None, :] ** 2)
                ramp = 0.25 * h + 4.0
                frac = np.clip((level[None, lx0:lx1, ly0:ly1] - height[lz0:lz1, None, None]) / ramp + 0.5, 0.0, 1.0)
                frac[~ls[box]] = 0.0
                delta = (frac * (_MU_FLUID - crop.mu[box])).astype(np.float32)
                effusion[("effusion", side, size, variant)] = crop.project(delta, box)
    return effusion


def _smooth_noise(crop: LungCrop, rng: np.random.Generator, sigma_mm: float) -> np.ndarray:
    dz, dxh, dyh = crop.spacing
    n = rng.standard_normal(crop.mu.shape, dtype=np.float32)
    n = ndi.gaussian_filter(n, sigma=(sigma_mm / dz, sigma_mm / dxh, sigma_mm / dyh), truncate=2.5)
    return n / max(float(n.std()), 1e-6)


def opacity_maps(crop: LungCrop, rng: np.random.Generator) -> dict[tuple, np.ndarray]:
    """``("opacity", lobe, variant)`` -> consolidation map at unit severity, one variant per patch fraction."""
    dz, dxh, dyh = crop.spacing
    zmm, xmm, ymm, mu = crop.zmm, crop.xmm, crop.ymm, crop.mu
    coarse_noise = _smooth_noise(crop, rng, 9.0)
    fine_noise = _smooth_noise(crop, rng, 1.6)
    opacity: dict[tuple, np.ndarray] = {}
    for lobe in LOBE_NAMES:
        lm = crop.labels == crop.lobe_ids[lobe]
        (bz0, bx0, by0), (bz1, bx1, by1) = bbox(lm)
        sub = (slice(bz0, bz1), slice(bx0, bx1), slice(by0, by1))
        lms = lm[sub]
        idx = np.argwhere(lms) + np.array([bz0, bx0, by0])
        radius = (lms.sum() * dz * dxh * dyh) ** (1.0 / 3.0)
        for variant, frac in enumerate(OPACITY_FRACTIONS):
            c = idx[rng.integers(len(idx))]
            dist = np.sqrt(
                ((zmm[bz0:bz1] - zmm[c[0]]) ** 2)[:, None, None]
                + ((xmm[bx0:bx1] - xmm[c[1]]) ** 2)[None, :, None]
                + ((ymm[by0:by1] - ymm[c[2]]) ** 2)[None, None, :]
            )
            score = -dist / radius + 0.45 * coarse_noise[sub]
            thr = np.quantile(score[lms], 1.0 - frac)
            w = np.clip((score - thr) / 0.3 + 0.5, 0.0, 1.0)
            w[~lms] = 0.0
            w[mu[sub] < 0.05] = 0.0  # air bronchograms
            target = 0.95 + 0.06 * fine_noise[sub]
            opacity[("opacity", lobe, variant)] = crop.project(w * (target - mu[sub]), sub)
    return opacity


def _shrink(crop: LungCrop, mask: np.ndarray, anchor: np.ndarray, s: float):
    """(box, mask in it, shrunk mask, shrunk mu) of ``mask`` scaled by ``s`` towards
    ``anchor`` (voxel coordinates); the shrunk mask stays inside the mask."""
    lo, hi = bbox(mask)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local = anchor - lo
    matrix = np.full(3, 1.0 / s)
    offset = local - local / s
    m2 = ndi.affine_transform(mask[box].view(np.uint8), matrix, offset=offset, order=0, mode="constant") > 0
    v2 = ndi.affine_transform(crop.mu[box], matrix, offset=offset, order=1, mode="nearest")
    return box, mask[box], m2 & mask[box], v2


def pneumothorax_maps(crop: LungCrop) -> dict[tuple, np.ndarray]:
    """``("pneumothorax", side, size)`` -> map."""
    pneumothorax: dict[tuple, np.ndarray] = {}
    for side in SIDES:
        ls = crop.lung_side[side]
        (lz0, _, _), (lz1, _, _) = bbox(ls)
        za = lz0 + 0.85 * (lz1 - 1 - lz0)
        row = ls[int(round(za))]
        rx = np.nonzero(row.any(axis=1))[0]
        xa = float(rx[np.argmin(np.abs(crop.xmm[rx] - crop.x_mid_mm))])
        anchor = np.array([za, xa, centroid(profile(ls, 2))])
        for size in PNEUMOTHORAX_SIZES:
            s = PNEUMOTHORAX_SCALE[size]
            box, lsb, collapsed, values = _shrink(crop, ls, anchor, s)
            air = lsb & ~collapsed
            new = np.where(collapsed, np.minimum(values / s**2, 1.0), 0.0).astype(np.float32)
            edge = collapsed & ndi.binary_dilation(air, iterations=1)
            new[edge] = 0.75  # visceral pleural line
            pneumothorax[("pneumothorax", side, size)] = crop.project(np.where(lsb, new - crop.mu[box], 0.0), box)
    return pneumothorax


def _hilar_anchor(crop: LungCrop, lm: np.ndarray, zone: str) -> np.ndarray:
    """The point (voxel coordinates) a lobe collapses towards: near the hilum, at
    the top of an upper lobe, the bottom of a lower lobe, the centre of the middle lobe."""
    (lz0, lx0, ly0), (lz1, lx1, ly1) = bbox(lm)
    xcols = np.arange(lx0, lx1)
    xmedial = float(xcols[np.argmin(np.abs(crop.xmm[lx0:lx1] - crop.x_mid_mm))])
    xa = xmedial + 0.15 * (centroid(profile(lm, 1)) - xmedial)
    zmin, zmax, ymin, ymax = lz0, lz1 - 1, ly0, ly1 - 1
    if zone == "upper":
        za = zmin + 0.2 * (zmax - zmin)
        ya = ymin + 0.35 * (ymax - ymin)
    elif zone == "mid":
        za = centroid(profile(lm, 0))
        ya = centroid(profile(lm, 2))
        xa = xmedial
    else:
        za = zmin + 0.8 * (zmax - zmin)
        ya = ymin + 0.7 * (ymax - ymin)
    return np.array([za, xa, ya])


def atelectasis_maps(crop: LungCrop, base_half: np.ndarray) -> dict[tuple, np.ndarray]:
    """``("atelectasis", lobe, severity)`` -> map: the collapsed lobe plus the displaced
    neighbours (a warp of ``base_half``, the base projection at half resolution)."""
    atelectasis: dict[tuple, np.ndarray] = {}
    for lobe in LOBE_NAMES:
        side, zone = LOBES[lobe][1], LOBES[lobe][2]
        lm = crop.labels == crop.lobe_ids[lobe]
        anchor = _hilar_anchor(crop, lm, zone)
        for sev in ATELECTASIS_SEVERITIES:
            s = ATELECTASIS_SCALE[sev]
            box, lmb, kept, values = _shrink(crop, lm, anchor, s)
            old = crop.mu[box]
            new = np.where(kept, np.minimum(values / s**3 * 0.8, 1.0), np.minimum(old, 0.25) * 0.85)
            dmap = crop.project(np.where(lmb, new - old, 0.0), box)
            dmap += _displacement_delta(base_half, crop, side=side, zone=zone, shift_mm=ATELECTASIS_SHIFT_MM[sev])
            atelectasis[("atelectasis", lobe, sev)] = dmap
    return atelectasis


def _displacement_delta(base: np.ndarray, crop: LungCrop, *, side: str, zone: str, shift_mm: float) -> np.ndarray:
    """Change of the (half-resolution) base projection when the mediastinum moves
    ``shift_mm`` towards ``side`` (and, for lower lobes, the hemidiaphragm rises)."""
    dz, dxh = crop.spacing[0], crop.spacing[1]
    nz, nx = base.shape
    z = (np.arange(nz) + 0.5) * dz
    x = (np.arange(nx) + 0.5) * dxh
    toward = 1.0 if side == "left" else -1.0  # +x is the patient's left
    if zone == "upper":
        zc, zs = crop.carina_z - 20.0, 45.0
    else:
        zc, zs = crop.heart_mid_z, 55.0
    wz = np.exp(-0.5 * ((z - zc) / zs) ** 2)
    wx = np.exp(-0.5 * ((x - crop.x_mid_mm) / 45.0) ** 2)
    shift_x = toward * shift_mm * wz[:, None] * wx[None, :]  # content moves by +shift_x (mm)
    shift_z = np.zeros_like(shift_x)
    if zone == "lower":
        on_side = (x - crop.x_mid_mm) * toward > 0
        wd = np.exp(-0.5 * ((z - crop.z_extent_mm[side][1] + 25.0) / 30.0) ** 2)
        shift_z = -1.6 * shift_mm * wd[:, None] * (on_side[None, :] * 1.0)  # content moves up
    rr, cc = np.meshgrid(np.arange(nz, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij")
    moved = ndi.map_coordinates(base, [rr - shift_z / dz, cc - shift_x / dxh], order=1, mode="nearest")
    return (moved - base).astype(np.float32)


def nodule_candidates(crop: LungCrop) -> dict[str, dict[str, np.ndarray]]:
    """side -> candidate nodule centres: ``z_mm``, ``x_mm``, ``edt_mm`` (distance to
    the lung surface, decreasing) and ``lobe`` (index into the lobe names)."""
    dz, dxh, dyh = crop.spacing
    lung = crop.lung
    coarse_edt = ndi.distance_transform_edt(lung[:, ::2, ::2], sampling=(dz, 2 * dxh, 2 * dyh)).astype(np.float32)
    edt = np.repeat(np.repeat(coarse_edt, 2, axis=1), 2, axis=2)[:, : lung.shape[1], : lung.shape[2]]
    edt[~lung] = 0.0
    lobe_index = np.zeros(256, np.int16) - 1
    for i, lobe in enumerate(LOBE_NAMES):
        lobe_index[crop.lobe_ids[lobe]] = i
    candidates: dict[str, dict[str, np.ndarray]] = {}
    for side in SIDES:
        sel = crop.lung_side[side] & (edt >= 4.5)
        zs, xs, ys = np.nonzero(sel)
        d = edt[zs, xs, ys]
        order = np.argsort(-d, kind="stable")
        keep = order[:: max(1, len(order) // 60000)]  # still sorted by decreasing distance
        candidates[side] = {
            "z_mm": crop.zmm[zs[keep]].astype(np.float32),
            "x_mm": crop.xmm[xs[keep]].astype(np.float32),
            "edt_mm": d[keep],
            "lobe": lobe_index[crop.labels[zs[keep], xs[keep], ys[keep]]],
        }
    return candidates
