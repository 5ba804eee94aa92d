"""The anatomy: everything the phantom derives from the CT, once per process.

Attenuation is ``mu = (HU + 1000) / 1000`` relative to water (HU clipped at -1000),
plus a bone boost ``0.9 * max(HU - 150, 0) / 1000`` inside the labelled bones.
Air outside the body (table, blanket) is removed and iodinated contrast in the
soft tissues (HU > 60 outside bone) is capped at 60 HU, as blood looks on a film.
The film shows the line integral ``L = sum(mu * dy)`` (water-equivalent cm).

Because the projection is linear in ``mu``, the 3-D work is done here once: the
projection of the base volume (in an anterior and a posterior slab, so that yaw
and pitch can shift them apart) and the projection of the 3-D *change* that each
finding variant makes to the volume (:mod:`.heart`, :mod:`.lesions`). An image is
then a sum of a few of these 2-D maps.

Findings may co-occur; their changes are added, so overlapping changes (say
fluid and consolidation in the same voxels) are counted twice - an approximation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from semalign.phantom import heart, lesions
from semalign.phantom.findings import SIDES
from semalign.phantom.lungs import lung_crop
from semalign.phantom.volume import load_ct

_BONE_BOOST = 0.9
_HU_SOFT_CAP = 60.0
_INTERNAL_SEED = 20240611  # fixed: the precomputed finding shapes never change


@dataclass
class Anatomy:
    """Everything derived from the CT once per process (2-D maps in water-cm)."""

    dz: float
    dx: float  # full-resolution x spacing (mm)
    dxh: float  # half-resolution x spacing (mm)
    base_ant: np.ndarray  # (Z, X) projection of the anterior half of the body
    base_post: np.ndarray  # (Z, X) posterior half
    slab_depth_mm: tuple[float, float]  # mean depth of each slab relative to the body's mid-plane
    lung2d: dict[str, np.ndarray]  # side -> (Z, Xh) bool, projected lung
    heart_variants: list[dict[str, Any]]  # each: kind, target, ctr, map (Z, Xh), mask (Z, Xh)
    findings: dict[tuple, np.ndarray]  # (finding, its variant's attributes...) -> map, see lesions
    nodule_candidates: dict[str, dict[str, np.ndarray]]  # side -> z_mm, x_mm, edt_mm, lobe (index)
    lung_z_extent_mm: dict[str, tuple[float, float]]  # side -> (top, bottom)


def build_anatomy() -> Anatomy:
    """Read the CT and precompute the base projections and every finding map."""
    ct = load_ct()
    dz, dx, _dy = ct.spacing
    body = _body_mask(ct.hu)
    bones = _bone_mask(ct.labels, ct.structures, ct.groups)
    base_ant, base_post, slab_depth, mu_half = _attenuation(ct.hu, body, bones, ct.spacing)
    del body, bones
    crop = lung_crop(mu_half, ct.labels, ct.structures, ct.spacing)
    del ct
    lung2d = {s: crop.embed(crop.lung_side[s].any(axis=2)) for s in SIDES}
    lung_union2d = lung2d["right"] | lung2d["left"]
    # the thorax width of the cardiothoracic ratio: the widest row of the projected lungs
    thorax_width_px = max(int(c[-1] - c[0] + 1) for c in (np.flatnonzero(r) for r in lung_union2d) if c.size)
    heart_variants = heart.heart_variants(crop, thorax_width_px)
    findings = {
        **lesions.effusion_maps(crop),
        **lesions.opacity_maps(crop, np.random.default_rng(_INTERNAL_SEED)),
        **lesions.pneumothorax_maps(crop),
        **lesions.atelectasis_maps(crop, _half_x(base_ant + base_post)),
    }
    return Anatomy(
        dz=dz,
        dx=dx,
        dxh=crop.spacing[1],
        base_ant=base_ant,
        base_post=base_post,
        slab_depth_mm=slab_depth,
        lung2d=lung2d,
        heart_variants=heart_variants,
        findings=findings,
        nodule_candidates=lesions.nodule_candidates(crop),
        lung_z_extent_mm=crop.z_extent_mm,
    )


def _largest_component_filled(mask2d: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask2d)
    if n == 0:
        return mask2d
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return ndi.binary_fill_holes(lab == sizes.argmax())


def _body_mask(hu: np.ndarray) -> np.ndarray:
    """The body on a 2x coarser in-plane grid, without table, blanket or outside-FOV padding."""
    coarse = hu[:, ::2, ::2] > -500
    coarse = ndi.binary_opening(coarse, structure=np.ones((1, 3, 3), bool))
    body = np.zeros_like(coarse)
    for k in range(coarse.shape[0]):
        body[k] = _largest_component_filled(coarse[k])
    return body


def _bone_mask(labels: np.ndarray, structures: dict[str, int], groups: dict[str, str]) -> np.ndarray:
    """The labelled bones (costal cartilage excluded) on the 2x coarser grid, grown by one voxel."""
    bone_ids = [i for name, i in structures.items() if groups.get(name) in ("vertebrae", "ribs", "skeleton")]
    bone_ids = [i for i in bone_ids if i != structures.get("costal_cartilages")]
    return ndi.binary_dilation(np.isin(labels[:, ::2, ::2], bone_ids), iterations=1)


def _attenuation(
    hu: np.ndarray, body: np.ndarray, bones: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float], np.ndarray]:
    """(anterior slab projection, posterior slab projection, mean depth of each slab
    from the body's mid-plane in mm, mu at half resolution), a few slices at a time.

    ``hu`` is overwritten (clipped, cleared outside the body, contrast capped)."""
    _dz, _dx, dy = spacing
    nz, nx, ny = hu.shape
    # slab split at the body's mid-plane (from the coarse body mask)
    yprof = body.sum(axis=(0, 1)).astype(float)
    y_mid = int(round(2 * float((yprof * np.arange(yprof.size)).sum() / max(yprof.sum(), 1.0)) + 0.5))

    def up(mask: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(mask, 2, axis=1), 2, axis=2)[:, :nx, :ny]

    ycm = dy / 10.0
    base_ant = np.zeros((nz, nx), np.float32)
    base_post = np.zeros((nz, nx), np.float32)
    weight_y = np.zeros(ny, np.float64)
    mu_half = np.zeros((nz, nx // 2, ny // 2), np.float32)
    step = 8
    for k0 in range(0, nz, step):
        k1 = min(k0 + step, nz)
        h = hu[k0:k1]  # a view, modified in place
        np.maximum(h, -1000, out=h)
        h[~up(body[k0:k1])] = -1000
        bone = up(bones[k0:k1])
        np.minimum(h, int(_HU_SOFT_CAP), out=h, where=~bone)
        mu = h.astype(np.float32)
        mu += 1000.0
        dense = bone & (h > 150)
        mu[dense] += (mu[dense] - 1150.0) * _BONE_BOOST
        mu *= 1.0 / 1000.0
        base_ant[k0:k1] = mu[:, :, :y_mid].sum(axis=2) * ycm
        base_post[k0:k1] = mu[:, :, y_mid:].sum(axis=2) * ycm
        weight_y += mu.sum(axis=(0, 1))
        mu_half[k0:k1] = _half(mu)
    y_idx = np.arange(ny)
    depth_ant = float(((weight_y[:y_mid] * (y_idx[:y_mid] - y_mid)).sum() / weight_y[:y_mid].sum()) * dy)
    depth_post = float(((weight_y[y_mid:] * (y_idx[y_mid:] - y_mid)).sum() / weight_y[y_mid:].sum()) * dy)
    return base_ant, base_post, (depth_ant, depth_post), mu_half


def _half(volume: np.ndarray) -> np.ndarray:
    """2 x 2 mean in the x-y plane (float32)."""
    z, x, y = volume.shape
    x2, y2 = x // 2 * 2, y // 2 * 2
    v = volume[:, :x2, :y2].reshape(z, x2 // 2, 2, y2 // 2, 2)
    return v.mean(axis=(2, 4), dtype=np.float32)


def _half_x(image: np.ndarray) -> np.ndarray:
    """2 x 1 mean along x of a 2-D map (float32)."""
    x2 = image.shape[1] // 2 * 2
    return image[:, :x2].reshape(image.shape[0], x2 // 2, 2).mean(axis=2, dtype=np.float32)
