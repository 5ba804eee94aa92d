"""Tests for semalign.data.images: one loader for PNG, JPEG and DICOM radiographs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from semalign.core.errors import SemalignError
from semalign.data.images import load_image, real_sample_images

pydicom = pytest.importorskip("pydicom")


# ----------------------------------------------------------------------------- helpers
def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    return np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))


def _write_dicom(
    path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    *,
    window: tuple[float, float] | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    with_pixels: bool = True,
    file_format: bool = True,
):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16).tobytes()
    if file_format:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, implicit_vr=False, little_endian=True)
    return path


def _ramp16(h: int = 32, w: int = 48) -> np.ndarray:
    return np.tile(np.linspace(100, 4000, w), (h, 1)).astype(np.uint16)


# ----------------------------------------------------------------------------- PNG / JPEG
def test_png_8bit_gray_is_returned_unchanged(tmp_path):
    array = _gradient()
    path = tmp_path / "gray.png"
    Image.fromarray(array).save(path)
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_png_16bit_is_scaled_to_full_range(tmp_path):
    array = np.tile(np.linspace(1000, 5000, 50), (20, 1)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 50)
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0].astype(int)) >= 0)  # order preserved
    assert abs(int(out[0, 25]) - 128) <= 3  # linear


def test_jpeg_loads_close_to_source(tmp_path):
    array = _gradient(64, 64)
    path = tmp_path / "x.jpg"
    Image.fromarray(array).save(path, quality=95)
    out = load_image(path)
    assert out.shape == (64, 64) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - array.astype(int)).mean() < 3


def test_rgb_is_converted_to_luminance(tmp_path):
    rgb = np.zeros((10, 30, 3), np.uint8)
    rgb[:, :10, 0] = 255  # red
    rgb[:, 10:20, 1] = 255  # green
    rgb[:, 20:, 2] = 255  # blue
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    out = load_image(path)
    assert out.shape == (10, 30)
    assert abs(int(out[0, 0]) - 76) <= 1  # 0.299 * 255
    assert abs(int(out[0, 15]) - 150) <= 1  # 0.587 * 255
    assert abs(int(out[0, 25]) - 29) <= 1  # 0.114 * 255


def test_rgb_jpeg_with_gray_content_matches_gray(tmp_path):
    gray = _gradient(32, 32)
    path = tmp_path / "rgb.jpeg"
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(path, quality=95)
    out = load_image(path)
    assert out.ndim == 2
    assert np.abs(out.astype(int) - gray.astype(int)).mean() < 3


def test_resize_pad_keeps_aspect_and_centres(tmp_path):
    array = np.full((50, 100), 200, np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(array).save(path)
    out = load_image(path, size=64)
    assert out.shape == (64, 64)
    assert out[0].max() == 0 and out[-1].max() == 0  # black bars above and below
    assert out[32, 0] == 200 and out[32, -1] == 200  # full width used
    rows = np.flatnonzero(out[:, 32] > 0)
    assert abs((rows[0] + rows[-1]) / 2 - 31.5) <= 1  # centred
    assert 30 <= rows.size <= 34  # aspect 2:1 kept


def test_resize_crop_fills_square(tmp_path):
    array = np.full((50, 100), 200, np.uint8)
    array[:, :10] = 0  # cropped away
    path = tmp_path / "wide.png"
    Image.fromarray(array).save(path)
    out = load_image(path, size=32, fit="crop")
    assert out.shape == (32, 32)
    assert out.min() >= 190


# ----------------------------------------------------------------------------- DICOM
def test_dicom_monochrome1_is_inverted_relative_to_monochrome2(tmp_path):
    pixels = _ramp16()
    m2 = load_image(_write_dicom(tmp_path / "m2.dcm", pixels, "MONOCHROME2"))
    m1 = load_image(_write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1"))
    assert m2.shape == pixels.shape and m2.dtype == np.uint8
    assert m2[0, -1] > m2[0, 0]  # MONOCHROME2: high value = bright
    assert m1[0, -1] < m1[0, 0]  # MONOCHROME1: high value = dark, shown inverted
    np.testing.assert_array_equal(m1.astype(int), 255 - m2.astype(int))


def test_dicom_window_and_rescale_are_applied(tmp_path):
    stored = np.tile(np.arange(0, 101, dtype=np.uint16), (4, 1))  # 0..100
    # value = 10 * stored - 500 -> -500..500; window [-100, 100]
    path = _write_dicom(tmp_path / "w.dcm", stored, window=(0, 200), slope=10, intercept=-500)
    out = load_image(path)
    assert out[0, 30] == 0  # value -200: below the window
    assert out[0, 70] == 255  # value 200: above the window
    assert abs(int(out[0, 50]) - 128) <= 2  # value 0: window centre
    assert np.all(np.diff(out[0, 40:61].astype(int)) > 0)  # ramp inside the window


def test_dicom_without_window_uses_percentiles(tmp_path):
    path = _write_dicom(tmp_path / "p.dcm", _ramp16())
    out = load_image(path)
    assert out.min() <= 2 and out.max() >= 253
    forced = load_image(_write_dicom(tmp_path / "w.dcm", _ramp16(), window=(100, 10)), voi="percentile")
    np.testing.assert_array_equal(forced, out)


def test_dicom_without_preamble_is_read_by_suffix(tmp_path):
    path = _write_dicom(tmp_path / "raw.dcm", _ramp16(), file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"
    out = load_image(path)
    assert out.shape == (32, 48) and out[0, -1] > out[0, 0]


def test_dicom_resize(tmp_path):
    out = load_image(_write_dicom(tmp_path / "r.dcm", _ramp16()), size=24)
    assert out.shape == (24, 24)


# ----------------------------------------------------------------------------- errors
def _assert_error(path, *words):
    with pytest.raises(SemalignError) as info:
        load_image(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message.lower()
    return message


def test_missing_file(tmp_path):
    _assert_error(tmp_path / "nope.png", "no such")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _assert_error(path, "empty")


def test_folder_is_rejected(tmp_path):
    _assert_error(tmp_path, "folder")


def test_truncated_png(tmp_path):
    path = tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    _assert_error(path, "truncated")


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "t.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    _assert_error(path, "truncated")


def test_corrupt_png_body(tmp_path):
    path = tmp_path / "c.png"
    Image.fromarray(_gradient()).save(path)
    data = bytearray(path.read_bytes())
    data[40:80] = b"\x00" * 40  # break the IHDR/IDAT chunks
    path.write_bytes(bytes(data))
    _assert_error(path)


def test_garbage_with_jpeg_magic(tmp_path):
    path = tmp_path / "g.jpg"
    path.write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    _assert_error(path)


def test_text_file_is_unsupported(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    _assert_error(path, "unsupported")


def test_gif_is_unsupported(tmp_path):
    path = tmp_path / "a.gif"
    Image.fromarray(_gradient()).save(path)
    message = _assert_error(path, "unsupported")
    assert "gif" in message.lower()


def test_dicom_without_pixels(tmp_path):
    path = _write_dicom(tmp_path / "nopix.dcm", _ramp16(), with_pixels=False)
    _assert_error(path, "pixel")


def test_truncated_dicom(tmp_path):
    path = _write_dicom(tmp_path / "cut.dcm", _ramp16(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    _assert_error(path)


def test_bad_size_argument(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(_gradient()).save(path)
    with pytest.raises(SemalignError, match="size"):
        load_image(path, size=0)
    with pytest.raises(SemalignError, match="fit"):
        load_image(path, fit="stretch")


# ----------------------------------------------------------------------------- real data
def test_real_sample_images_are_listed_with_labels():
    samples = real_sample_images()
    pediatric = [s for s in samples if s.cohort == "pediatric"]
    adult = [s for s in samples if s.cohort == "adult"]
    assert len(pediatric) == 16 and len(adult) == 1
    assert sum(s.label == "normal" for s in pediatric) == 8
    assert sum(s.label == "pneumonia" for s in pediatric) == 8
    for s in pediatric:
        assert s.path.is_file() and s.path.suffix.lower() == ".jpeg"
        assert (s.label == "normal") == s.name.upper().startswith("NORMAL")
    assert adult[0].name == "RG1_UNCR.dcm" and adult[0].path.is_file()
    assert len(adult[0].sha256()) == 64


def test_a_missing_sample_package_names_itself_and_spares_the_other_cohort(monkeypatch):
    """The zero-shot notebook needs only the paediatric images (the paper profile
    skips even those, with a note, when their package is absent)."""
    import pydicom.data

    from semalign.data import images

    def not_installed(name, download=False):
        raise ValueError(f"no test data {name}")

    monkeypatch.setattr(pydicom.data, "get_testdata_file", not_installed)
    assert len(real_sample_images(cohorts=("pediatric",))) == 16
    missing = images.missing_sample_package("adult")
    assert "pydicom-data" in missing and "pip install pydicom-data" in missing and "\n" not in missing
    with pytest.raises(images.MissingSamplePackage, match="pip install pydicom-data"):
        real_sample_images()
    assert images.missing_sample_package("pediatric") == ""
    monkeypatch.setattr(images, "PNEUMONIA_PACKAGE", "no_such_package_here")
    assert images.missing_sample_package("pediatric").startswith("the paediatric sample radiographs come from")


def test_real_pediatric_jpegs_load():
    for sample in real_sample_images()[:-1]:
        full = load_image(sample.path)
        assert full.ndim == 2 and min(full.shape) > 200
        small = load_image(sample.path, size=128)
        assert small.shape == (128, 128) and small.std() > 20


def test_adult_dicom_loads_with_dense_bright():
    sample = real_sample_images()[-1]
    ds = pydicom.dcmread(sample.path, stop_before_pixels=True)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    image = load_image(sample.path, voi="percentile").astype(float)
    assert image.shape == (ds.Rows, ds.Columns)
    h, w = image.shape
    rows = slice(int(0.3 * h), int(0.6 * h))
    spine = image[rows, int(0.47 * w) : int(0.53 * w)].mean()
    lungs = (image[rows, int(0.2 * w) : int(0.3 * w)].mean() + image[rows, int(0.7 * w) : int(0.8 * w)].mean()) / 2
    assert spine > lungs + 20  # mediastinum / spine brighter than the lungs: inversion applied
    default = load_image(sample.path, size=256)
    assert default.shape == (256, 256) and default.std() > 10
