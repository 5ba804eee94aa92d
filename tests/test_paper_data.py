"""The paper profile's dataset loaders, proven on small fixtures in the real layouts.

The fixtures (a few fake patients per dataset, in the real layouts) are built by
``tests/paper_fixtures.py``, which the paper-profile notebook tests share.
"""

from __future__ import annotations

import gzip
import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from semalign.data import paper as paper_data
from semalign.data.paper.sources import exists_many
from semalign.core.errors import SemalignError
from semalign.data.manifest import load_manifest

from paper_fixtures import (  # tests/ is on sys.path
    CHEXPERT_14, CHEXPERT_TRAIN, CHEXPERT_VALID, CX, FINDINGS, IMPRESSION, MIMIC_STUDIES, RSNA_P, VINDR_A, VINDR_B,
    VINDR_C, _report, _to_csv_gz, make_all_fixtures, make_mimic_fixture,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_all_fixtures(tmp_path_factory.mktemp("paper_data"))


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ============================================================================ manifest
def test_manifest_records_access_licence_layout_and_no_invented_checksums():
    sources = load_manifest()["paper_sources"]
    assert tuple(sources) == paper_data.DATASETS
    for name, entry in sources.items():
        for key in ("title", "versions", "access", "licence", "terms", "homepage", "layout", "files", "check", "default_labels"):
            assert entry.get(key), f"{name} lacks {key}"
        assert set(entry["check"]) <= set(entry["files"])
        assert entry["layout"]["marker"] in entry["files"]
        assert "sha256" not in entry  # none are known for these files: verify uses PhysioNet's SHA256SUMS.txt
    assert "Credentialed Health Data License 1.5.0" in sources["mimic_cxr"]["licence"]
    assert "Credentialed Health Data License 1.5.0" in sources["vindr_cxr"]["licence"]
    assert sources["mimic_cxr"]["required_columns"]["labels"] == ["subject_id", "study_id", *CHEXPERT_14]
    assert paper_data.default_labels("rsna_pneumonia") == ["Pneumonia"]
    # the existing offline sources are untouched by the new section
    assert "iu_xray_reports" in load_manifest()["sources"]


# ============================================================================ MIMIC reports
def test_report_parser_finds_findings_and_impression_sections():
    findings, impression = paper_data.parse_report_sections(_report("both"))
    assert findings == FINDINGS and impression == IMPRESSION
    assert paper_data.parse_report_sections(_report("findings")) == (FINDINGS, "")
    assert paper_data.parse_report_sections(_report("impression")) == ("", IMPRESSION)
    assert paper_data.parse_report_sections(_report("neither")) == ("", "")
    # text on the header line; the next upper-case header ends the section; lower-case is not a header
    text = "IMPRESSION:  No acute process.\nRECOMMENDATION(S):  Follow-up in 3 months.\n"
    assert paper_data.parse_report_sections(text) == ("", "No acute process.")
    assert paper_data.parse_report_sections("Findings: lungs clear.\nImpression: normal.") == ("", "")
    assert paper_data.parse_report_sections(" FINDINGS:\n \n IMPRESSION: Normal.") == ("", "Normal.")


def test_mimic_reports_ids_labels_split_and_dropped(data_root):
    reports = paper_data.load_reports("mimic_cxr", data_root)
    assert reports.ids == ["50414267", "53189527", "51000001", "53000003"]
    assert list(reports.labels.columns) == ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    assert reports.labels.to_dict("list") == {
        "Atelectasis": [0, 0, 0, 1], "Cardiomegaly": [1, 0, 0, 0], "Consolidation": [0, 0, 0, 0],
        "Edema": [0, 0, 0, 0], "Pleural Effusion": [0, 0, 1, 0],
    }
    assert reports.dropped[paper_data.NO_REPORT] == 1 and reports.dropped[paper_data.NO_SECTION] == 1
    assert sum(reports.dropped.values()) + len(reports) == len(MIMIC_STUDIES)
    assert reports.extra["subject_id"].tolist() == ["10000032", "10000032", "11000011", "19999987"]
    assert reports.extra["split"].tolist() == ["train", "train", "validate", "test"]
    assert reports.texts[0] == f"{FINDINGS} {IMPRESSION}"
    assert reports.texts[1] == IMPRESSION and reports.texts[2] == FINDINGS
    assert "INDICATION" not in " ".join(reports.texts) and "FINAL REPORT" not in " ".join(reports.texts)


@pytest.mark.parametrize("policy, edema, consolidation, kept", [
    ("zeros", [0, 0, 0, 0], [0, 0, 0, 0], ["50414267", "53189527", "51000001", "53000003"]),
    ("ones", [1, 0, 0, 0], [0, 0, 0, 1], ["50414267", "53189527", "51000001", "53000003"]),
    ("ignore", [0, 0], [0, 0], ["53189527", "51000001"]),
])
def test_mimic_uncertainty_policies(data_root, policy, edema, consolidation, kept):
    reports = paper_data.load_reports("mimic_cxr", data_root, uncertain=policy)
    assert reports.ids == kept
    assert reports.labels["Edema"].tolist() == edema and reports.labels["Consolidation"].tolist() == consolidation
    assert reports.dropped[paper_data.UNCERTAIN] == (2 if policy == "ignore" else 0)


def test_ignore_drops_only_rows_uncertain_on_a_requested_label(data_root):
    reports = paper_data.load_reports("mimic_cxr", data_root, uncertain="ignore", labels=["Cardiomegaly", "No Finding"])
    assert len(reports) == 4 and reports.dropped[paper_data.UNCERTAIN] == 0
    assert reports.labels["No Finding"].tolist() == [0, 1, 0, 0]


def test_mimic_extracted_reports_in_the_physionet_wget_layout(tmp_path):
    make_mimic_fixture(tmp_path, reports="dir", jpg_root="physionet.org/files/mimic-cxr-jpg/2.1.0",
                       reports_root="physionet.org/files/mimic-cxr/2.0.0")
    reports = paper_data.load_reports("mimic_cxr", tmp_path, uncertain="ones")
    assert reports.ids == ["50414267", "53189527", "51000001", "53000003"]
    assert reports.labels["Edema"].tolist() == [1, 0, 0, 0]
    status = {s.name: s for s in paper_data.verify(tmp_path)}["mimic_cxr"]
    assert status.ok and status.path.endswith("mimic-cxr-jpg/2.1.0")


def test_load_reports_is_mimic_only_and_checks_its_arguments(data_root):
    with pytest.raises(SemalignError, match=r"'chexpert' has no reports.*load_images"):
        paper_data.load_reports("chexpert", data_root)
    with pytest.raises(SemalignError, match=r"unknown label\(s\) \['Effusion'\].*available labels: Atelectasis, Cardiomegaly"):
        paper_data.load_reports("mimic_cxr", data_root, labels=["Effusion"])
    with pytest.raises(SemalignError, match=r"uncertain='maybe' is not valid; use one of zeros, ones, ignore"):
        paper_data.load_reports("mimic_cxr", data_root, uncertain="maybe")
    with pytest.raises(SemalignError, match=r"unknown paper dataset 'mimic'; valid names: mimic_cxr"):
        paper_data.load_images("mimic", data_root)


# ============================================================================ images
def test_mimic_images_frontal_labels_groups_split(data_root):
    table = paper_data.load_images("mimic_cxr", data_root)
    expected = [MIMIC_STUDIES[0][5][0][0], MIMIC_STUDIES[1][5][0][0], MIMIC_STUDIES[2][5][0][0],
                MIMIC_STUDIES[3][5][0][0], MIMIC_STUDIES[5][5][0][0]]
    assert table.ids == expected
    assert table.groups == ["10000032", "10000032", "11000011", "12000022", "19999987"]
    assert table.split == ["train", "train", "validate", "test", "test"]
    assert table.labels["Cardiomegaly"].tolist() == [1, 0, 0, 1, 0] and table.labels["Edema"].tolist() == [0, 0, 0, 0, 1]
    assert table.paths[0] == data_root / "mimic-cxr-jpg/files/p10/p10000032/s50414267" / f"{expected[0]}.jpg"
    assert all(p.is_file() for p in table.paths)
    assert table.dropped[paper_data.NOT_FRONTAL] == 1 and table.dropped[paper_data.NO_IMAGE] == 1
    assert table.dropped[paper_data.NO_LABEL_ROW] == 1
    assert len(table) + sum(table.dropped.values()) == 8  # every metadata row is accounted for
    both_views = paper_data.load_images("mimic_cxr", data_root, frontal_only=False, uncertain="ignore")
    # both images of 50414267 (uncertain Edema) and the one of 53000003 (uncertain Consolidation)
    assert MIMIC_STUDIES[0][5][1][0] not in both_views.ids
    assert both_views.dropped[paper_data.UNCERTAIN] == 3 and both_views.dropped[paper_data.NOT_FRONTAL] == 0


def test_rsna_image_label_is_the_max_target_and_dicoms_load(data_root):
    from semalign.data.images import load_image

    table = paper_data.load_images("rsna_pneumonia", data_root)
    assert table.ids == RSNA_P[:3] and table.groups == RSNA_P[:3] and table.split is None
    assert table.labels.to_dict("list") == {"Pneumonia": [1, 0, 0]}
    assert table.dropped[paper_data.NO_IMAGE] == 1
    image = load_image(table.paths[0])
    assert image.shape == (16, 16) and image.dtype == np.uint8 and image.max() > image.min()
    classes = paper_data.load_images("rsna_pneumonia", data_root, labels=["Normal", "No Lung Opacity / Not Normal"])
    assert classes.labels.to_numpy().tolist() == [[0, 0], [1, 0], [0, 1]]
    with pytest.raises(SemalignError, match=r"available labels: Pneumonia, Normal, No Lung Opacity / Not Normal"):
        paper_data.load_images("rsna_pneumonia", data_root, labels="Opacity")


@pytest.mark.parametrize("policy, cardiomegaly, effusion, no_finding", [
    ("majority", 1, 0, 0),
    ("any", 1, 1, 1),
    ("all", 0, 0, 0),
])
def test_vindr_reader_policies_on_a_three_reader_disagreement(data_root, policy, cardiomegaly, effusion, no_finding):
    table = paper_data.load_images("vindr_cxr", data_root, reader_policy=policy)
    assert table.ids == [VINDR_A, VINDR_B, VINDR_C] and table.split == ["train", "train", "test"]
    assert table.groups == table.ids  # no patient ids in VinDr-CXR
    a = table.labels.iloc[0]
    assert (a["Cardiomegaly"], a["Pleural effusion"], a["No finding"]) == (cardiomegaly, effusion, no_finding)
    assert table.labels.iloc[1]["No finding"] == 1 and table.labels.iloc[2]["Pneumothorax"] == 1
    assert table.dropped[paper_data.NO_IMAGE] == 1
    assert table.paths[2] == data_root / "vindr-cxr" / "test" / f"{VINDR_C}.dicom"


def test_vindr_rejects_an_unknown_reader_policy(data_root):
    with pytest.raises(SemalignError, match=r"reader_policy='vote'.*majority, any, all"):
        paper_data.load_images("vindr_cxr", data_root, reader_policy="vote")


def test_chexpert_paths_policies_frontal_and_split(data_root):
    table = paper_data.load_images("chexpert", data_root)
    assert table.ids == [CHEXPERT_TRAIN[0][0], CHEXPERT_TRAIN[2][0], CHEXPERT_TRAIN[4][0], CHEXPERT_VALID[0][0]]
    assert table.groups == ["patient00001", "patient00002", "patient00004", "patient64541"]
    assert table.split == ["train", "train", "train", "valid"]
    assert table.paths[0] == data_root / CHEXPERT_TRAIN[0][0] and all(p.is_file() for p in table.paths)
    assert table.labels["Cardiomegaly"].tolist() == [1, 0, 0, 1]
    assert table.labels["Edema"].tolist() == [0, 0, 0, 0]
    assert table.dropped[paper_data.NOT_FRONTAL] == 1 and table.dropped[paper_data.NO_IMAGE] == 1
    ones = paper_data.load_images("chexpert", data_root, uncertain="ones")
    assert ones.labels["Edema"].tolist() == [0, 1, 0, 0] and ones.labels["Consolidation"].tolist() == [0, 0, 1, 0]
    ignore = paper_data.load_images("chexpert", data_root, uncertain="ignore", frontal_only=False)
    assert ignore.ids == [CHEXPERT_TRAIN[0][0], CHEXPERT_TRAIN[1][0], CHEXPERT_VALID[0][0]]
    assert ignore.dropped[paper_data.UNCERTAIN] == 2


def test_patient_split_is_seeded_and_never_splits_a_patient(data_root):
    groups = [f"p{k // 3}" for k in range(60)] + [f"q{k}" for k in range(15)]
    train, test = paper_data.patient_split(groups, 0.25, seed=3)
    again = paper_data.patient_split(groups, 0.25, seed=3)
    other = paper_data.patient_split(groups, 0.25, seed=4)
    assert not {groups[i] for i in train} & {groups[i] for i in test}
    assert sorted([*train, *test]) == list(range(len(groups)))
    assert abs(len(test) - 0.25 * len(groups)) <= 3
    assert np.array_equal(train, again[0]) and not np.array_equal(test, other[1])
    table = paper_data.load_images("mimic_cxr", data_root)
    tr, te = paper_data.patient_split(table.groups, 0.4, seed=0)
    assert len(tr) and len(te) and not {table.groups[i] for i in tr} & {table.groups[i] for i in te}
    sub = table.subset(te)
    assert sub.ids == [table.ids[i] for i in te] and len(sub.labels) == len(te)
    with pytest.raises(SemalignError, match="at least 2 distinct patients"):
        paper_data.patient_split(["a", "a"], 0.5, seed=0)
    with pytest.raises(SemalignError, match="between 0 and 1"):
        paper_data.patient_split(groups, 1.0, seed=0)


# ============================================================================ verify / require
def test_verify_ok_for_complete_fixtures(data_root):
    statuses = paper_data.verify(data_root)
    assert [s.name for s in statuses] == list(paper_data.DATASETS)
    assert all(s.ok for s in statuses), [s.detail for s in statuses]
    by_name = {s.name: s for s in statuses}
    assert "6 studies (full release: 227,827)" in by_name["mimic_cxr"].detail
    assert "3 train images (full release: 15,000)" in by_name["vindr_cxr"].detail
    assert Path(by_name["chexpert"].path) == data_root
    assert paper_data.require("vindr_cxr", data_root) == data_root / "vindr-cxr"


def test_verify_missing_names_dataset_expected_path_and_access(tmp_path):
    statuses = {s.name: s for s in paper_data.verify(tmp_path / "nothing-here")}
    assert all(s.status == "missing" for s in statuses.values())
    mimic = statuses["mimic_cxr"].detail
    assert "MIMIC-CXR" in mimic and str(tmp_path / "nothing-here" / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-chexpert.csv.gz") in mimic
    assert "PhysioNet credentialed access" in mimic and "https://physionet.org/content/mimic-cxr-jpg/2.1.0/" in mimic
    assert "Credentialed Health Data License 1.5.0" in mimic
    assert "kaggle competitions download -c rsna-pneumonia-detection-challenge" in statuses["rsna_pneumonia"].detail
    assert "stage_2_train_labels.csv" in statuses["rsna_pneumonia"].detail
    assert "annotations/image_labels_train.csv" in statuses["vindr_cxr"].detail
    assert "CheXpert-v1.0-small/train.csv" in statuses["chexpert"].detail and "research use" in statuses["chexpert"].detail
    assert all("\n" not in s.detail for s in statuses.values())


def test_verify_missing_reports_or_images_of_a_partial_download(tmp_path):
    jpg = make_mimic_fixture(tmp_path)
    (tmp_path / "mimic-cxr" / "mimic-cxr-reports.zip").unlink()
    status = paper_data.verify(tmp_path)[0]
    assert status.status == "missing" and "mimic-cxr-reports.zip" in status.detail
    (jpg / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    with pytest.raises(SemalignError, match=r"mimic-cxr-2.0.0-metadata.csv.gz"):
        paper_data.load_images("mimic_cxr", tmp_path)


def test_verify_corrupt_for_truncated_csv_gz_plain_csv_zip_and_checksum(tmp_path):
    make_all_fixtures(tmp_path)
    big = pd.DataFrame({"subject_id": ["10000032"] * 3000, "study_id": [str(50000000 + k) for k in range(3000)],
                        **{c: ["1.0"] * 3000 for c in CHEXPERT_14}})
    labels = tmp_path / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-chexpert.csv.gz"
    _to_csv_gz(big, labels)
    _truncate(labels)
    rsna = tmp_path / "rsna-pneumonia-detection-challenge" / "stage_2_train_labels.csv"
    rsna.write_text(rsna.read_text().rstrip("\n")[:-12])  # cut inside the last row
    _truncate(tmp_path / "vindr-cxr" / "annotations" / "image_labels_test.csv", keep=0.3)
    statuses = {s.name: s for s in paper_data.verify(tmp_path)}
    assert statuses["mimic_cxr"].status == "corrupt" and "mimic-cxr-2.0.0-chexpert.csv.gz is truncated" in statuses["mimic_cxr"].detail
    assert "physionet.org" in statuses["mimic_cxr"].detail
    assert statuses["rsna_pneumonia"].status == "corrupt" and "middle of a row" in statuses["rsna_pneumonia"].detail
    assert statuses["vindr_cxr"].status == "corrupt"
    assert statuses["chexpert"].ok
    with pytest.raises(SemalignError) as err:
        paper_data.require("mimic_cxr", tmp_path)
    assert "\n" not in str(err.value) and "is corrupt" in str(err.value)
    with pytest.raises(SemalignError, match="is corrupt"):
        paper_data.load_reports("mimic_cxr", tmp_path)


def test_verify_checks_physionet_sha256sums_and_zip(tmp_path):
    import hashlib

    jpg = make_mimic_fixture(tmp_path)
    names = ["mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-metadata.csv.gz"]
    sums = {n: hashlib.sha256((jpg / n).read_bytes()).hexdigest() for n in names}
    (jpg / "SHA256SUMS.txt").write_text("".join(f"{h} {n}\n" for n, h in sums.items()))
    assert paper_data.verify(tmp_path)[0].ok
    (jpg / "SHA256SUMS.txt").write_text("".join(f"{'0' * 64 if n.endswith('split.csv.gz') else h} {n}\n" for n, h in sums.items()))
    status = paper_data.verify(tmp_path)[0]
    assert status.status == "corrupt" and "split.csv.gz: sha256 differs" in status.detail
    (jpg / "SHA256SUMS.txt").unlink()
    _truncate(tmp_path / "mimic-cxr" / "mimic-cxr-reports.zip", keep=0.5)
    status = paper_data.verify(tmp_path)[0]
    assert status.status == "corrupt" and "mimic-cxr-reports.zip is not a readable zip" in status.detail


def test_require_raises_the_one_line_verify_message(tmp_path):
    status = {s.name: s for s in paper_data.verify(tmp_path)}["vindr_cxr"]
    with pytest.raises(SemalignError) as err:
        paper_data.require("vindr_cxr", tmp_path)
    message = str(err.value)
    assert "\n" not in message and status.detail in message and message.startswith("paper dataset 'vindr_cxr'")
    assert "is missing" in message and "https://physionet.org/content/vindr-cxr/1.0.0/" in message
    with pytest.raises(SemalignError, match=r"paper dataset 'rsna_pneumonia' .* is missing"):
        paper_data.load_images("rsna_pneumonia", tmp_path)
    with pytest.raises(SemalignError, match="data_root is not set"):
        paper_data.verify("")


def test_nothing_prints_or_logs_report_text(data_root, capsys, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    reports = paper_data.load_reports("mimic_cxr", data_root)
    paper_data.verify(data_root)
    paper_data.load_images("mimic_cxr", data_root)
    out = capsys.readouterr()
    assert IMPRESSION in reports.texts[0]
    assert out.out == "" and out.err == "" and IMPRESSION not in caplog.text and FINDINGS[:30] not in caplog.text
    # a corrupt report archive member: the error names the member, not its text
    make_mimic_fixture(tmp_path)
    archive = tmp_path / "mimic-cxr" / "mimic-cxr-reports.zip"
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as z:
        info = z.getinfo("files/p10/p10000032/s50414267.txt")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start : start + 8] = b"\xff" * 8  # damage the deflated data of one member
    archive.write_bytes(bytes(raw))
    with pytest.raises(SemalignError) as err:
        paper_data.load_reports("mimic_cxr", tmp_path)
    assert "s50414267.txt" in str(err.value) and "FINDINGS" not in str(err.value) and "\n" not in str(err.value)


def test_gzip_fixture_is_really_gzip(data_root):
    with gzip.open(data_root / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-chexpert.csv.gz", "rt") as handle:
        assert handle.readline().strip().split(",") == ["subject_id", "study_id", *CHEXPERT_14]


def test_file_existence_check_is_exact_on_the_threaded_path(tmp_path):
    paths = [tmp_path / f"{k:05d}.jpg" for k in range(5000)]  # above the threading threshold
    for path in paths[::2]:
        path.touch()
    exists = exists_many(paths)
    assert exists.tolist() == [k % 2 == 0 for k in range(5000)]
