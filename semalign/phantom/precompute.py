"""The precomputed maps on one image size's output grid, kept in a process memo.

The anatomy (:func:`.anatomy.build_anatomy`) is built once per process; for each
image size its maps are resampled onto the output grid and given film-like
processing: an unsharp mask (sigma 15 mm, amount 1) on every map, and a window
from 0.45 x the lungs' 5th percentile to the image's 99.3th percentile of the
line integral. The field is square and centred left-right on the lungs, ends 8 %
below the lowest lung point and starts up to 12 % above the apices; the CT starts
at the shoulders, so the strip above its first slice fades to air (like a
collimated film). The maps cover a 10 % margin around the field so the pose warp
rarely runs out of data; the memo holds one set of maps per image size, so keep
``image_size`` <= 512 for modest memory.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy import sparse

from semalign.phantom.anatomy import Anatomy, build_anatomy
from semalign.phantom.findings import NORMAL_HEART_TARGETS, SIDES

_MEMO_LOCK = threading.Lock()
_ANATOMY: list[Anatomy] = []
_MODELS: dict[int, Model] = {}


@dataclass
class Model:
    """The maps of one image size on its output grid (water-cm, unsharp-masked)."""

    size: int  # output side in pixels
    margin: int  # extra pixels of the precomputed grid on every side (for the warp)
    pix_mm: float
    origin_mm: tuple[float, float]  # (z, x) of the grid's top-left corner
    base_ant: np.ndarray
    base_post: np.ndarray
    slab_shift_px: tuple[float, float]  # px per unit tan(angle) for each slab
    heart: list[dict[str, Any]]
    default_heart: int  # index in ``heart`` of the middle normal heart
    findings: dict[tuple, np.ndarray]  # keyed as Anatomy.findings
    lung: dict[str, np.ndarray]  # side -> (B, B) bool
    usm: tuple[float, float]  # (amount, sigma_px)
    window: tuple[float, float]  # (lo, hi) water-cm of the processed base
    anatomy: Anatomy


def anatomy() -> Anatomy:
    """The process's anatomy, built on first use."""
    with _MEMO_LOCK:
        if not _ANATOMY:
            _ANATOMY.append(build_anatomy())
        return _ANATOMY[0]


def model(size: int) -> Model:
    """The maps for ``size`` x ``size`` images, built on first use."""
    anat = anatomy()
    with _MEMO_LOCK:
        if size not in _MODELS:
            _MODELS[size] = _build_model(anat, size)
        return _MODELS[size]


def _tent_matrix(
    n_out: int, start_mm: float, pix_mm: float, n_in: int, step_mm: float, fade_mm: float = 15.0
) -> np.ndarray:
    """Linear resampling (anti-aliased tent filter) from ``n_in`` samples spaced
    ``step_mm`` to ``n_out`` pixels of ``pix_mm`` starting at ``start_mm``; pixels
    beyond the data take the nearest edge sample faded by ``exp(-distance / fade_mm)``
    (above the CT's first slice the film fades to air instead of repeating the shoulders)."""
    centres = start_mm + (np.arange(n_out) + 0.5) * pix_mm
    lo, hi = 0.5 * step_mm, (n_in - 0.5) * step_mm
    inset = min(5.0, 0.05 * (hi - lo))  # start fading just inside the first sample (edge artefacts)
    outside = np.maximum(lo + inset - centres, 0.0) + np.maximum(centres - hi, 0.0)
    centres_out = np.clip(centres, lo, hi)
    centres_in = (np.arange(n_in) + 0.5) * step_mm
    half = max(pix_mm, step_mm)
    w = np.maximum(0.0, 1.0 - np.abs(centres_out[:, None] - centres_in[None, :]) / half)
    w /= w.sum(axis=1, keepdims=True)
    w *= np.exp(-outside / fade_mm)[:, None]
    w[w < 1e-6] = 0.0
    return w.astype(np.float32)


def _field(anat: Anatomy, size: int) -> tuple[float, float, float, int]:
    """(top, left) mm of the grid's corner, pixel size in mm and margin in pixels."""
    lz, lx = np.nonzero(anat.lung2d["right"] | anat.lung2d["left"])
    zt, zb = float(lz.min() * anat.dz), float((lz.max() + 1) * anat.dz)
    xl, xr = float(lx.min() * anat.dxh), float((lx.max() + 1) * anat.dxh)
    side_mm = max(1.15 * (xr - xl), (zb - zt) / 0.8)
    top = max(zt - 0.12 * side_mm, -20.0)  # at most 20 mm above the CT's first slice
    side_mm = max(side_mm, (zb - top) / 0.92)
    cx = 0.5 * (xl + xr)
    left = cx - side_mm / 2
    pix = side_mm / size
    margin = int(math.ceil(0.1 * size))
    return top - margin * pix, left - margin * pix, pix, margin


def _build_model(anat: Anatomy, size: int) -> Model:
    top, left, pix, margin = _field(anat, size)
    grid = size + 2 * margin
    nz, nx = anat.base_ant.shape
    nxh = anat.heart_variants[0]["map"].shape[1]
    wz = sparse.csr_matrix(_tent_matrix(grid, top, pix, nz, anat.dz))
    wx = sparse.csr_matrix(_tent_matrix(grid, left, pix, nx, anat.dx))
    wxh = sparse.csr_matrix(_tent_matrix(grid, left, pix, nxh, anat.dxh))

    def resample(a: np.ndarray, wcols) -> np.ndarray:
        return np.ascontiguousarray((wcols @ (wz @ a).T).T, dtype=np.float32)

    sigma_px = 15.0 / pix
    amount = 1.0

    def usm(a: np.ndarray) -> np.ndarray:
        return (a + amount * (a - ndi.gaussian_filter(a, sigma_px, mode="nearest"))).astype(np.float32)

    def full(a: np.ndarray) -> np.ndarray:
        return usm(resample(a, wx))

    def half(a: np.ndarray) -> np.ndarray:
        return usm(resample(a, wxh))

    def mask(a: np.ndarray) -> np.ndarray:
        return resample(a.astype(np.float32), wxh) > 0.5

    base_ant = full(anat.base_ant)
    base_post = full(anat.base_post)
    heart = [dict(v, map=half(v["map"]), mask=mask(v["mask"])) for v in anat.heart_variants]
    default = next(
        i for i, v in enumerate(heart) if v["kind"] == "normal" and v["target"] == NORMAL_HEART_TARGETS[1]
    )
    lung = {s: mask(anat.lung2d[s]) for s in SIDES}
    inner = (slice(margin, margin + size), slice(margin, margin + size))
    processed_base = (base_ant + base_post + heart[default]["map"])[inner]
    lungs = (lung["right"] | lung["left"])[inner]
    lo = 0.45 * float(np.percentile(processed_base[lungs], 5.0))
    hi = float(np.percentile(processed_base, 99.3))
    return Model(
        size=size,
        margin=margin,
        pix_mm=pix,
        origin_mm=(top, left),
        base_ant=base_ant,
        base_post=base_post,
        slab_shift_px=(anat.slab_depth_mm[0] / pix, anat.slab_depth_mm[1] / pix),
        heart=heart,
        default_heart=default,
        findings={key: half(m) for key, m in anat.findings.items()},
        lung=lung,
        usm=(amount, sigma_px),
        window=(lo, hi),
        anatomy=anat,
    )
