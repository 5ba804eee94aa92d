"""The diagnostics chapter: it refuses to run without the stitching runs it
reads, or against runs made from other data, and on the smoke study it records
similarities, gaps and rank correlations."""

from __future__ import annotations

import json

import pytest
from conftest import semalign_cli

from semalign.study import runner
from semalign.core.errors import SemalignError


def run_until_checked(workdir, monkeypatch, parameters: dict) -> dict:
    """Execute the notebook's cells in-process, with ``parameters`` injected as
    papermill would, up to and including the cell that checks the stitching runs."""
    monkeypatch.setenv("SEMALIGN_WORKDIR", str(workdir))
    namespace: dict = {}
    for cell in runner.read_notebook("diagnostics").cells:
        if cell.cell_type != "code":
            continue
        exec(cell.source, namespace)
        if "parameters" in cell.metadata["tags"]:
            namespace.update(parameters)
        if "check_stitching_runs(" in cell.source:
            return namespace
    raise AssertionError("no cell checks the stitching runs")


def planned_parameters(notebook: str, profile: str = "smoke") -> dict:
    (run, *_) = runner.plan([notebook], profile)
    return run.parameters


def test_missing_stitching_runs_stop_it_with_the_command_to_run(tmp_path, monkeypatch):
    with pytest.raises(SemalignError, match=r"have not been executed: run `semalign run text_stitching --profile smoke`"):
        run_until_checked(tmp_path, monkeypatch, planned_parameters("diagnostics"))


def pretend_executed(monkeypatch, profile: str) -> None:
    """The profile's stitching runs, as if executed with their planned parameters."""
    runs = runner.plan(["text_stitching", "vision_stitching"], profile)
    monkeypatch.setattr(runner, "executed_runs", lambda _: runs)
    monkeypatch.setattr(runner, "executed_status", lambda run: None)


@pytest.fixture
def executed_smoke_stitching(monkeypatch):
    pretend_executed(monkeypatch, "smoke")


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_its_profile_parameters_match_the_stitching_runs(tmp_path, monkeypatch, profile):
    # Same data and encoders, so the embedding caches of the stitching runs are reused.
    pretend_executed(monkeypatch, profile)
    cells = run_until_checked(tmp_path, monkeypatch, planned_parameters("diagnostics", profile))
    assert cells["text_encoders"] == planned_parameters("text_stitching", profile)["encoders"]
    assert cells["vision_encoders"] == planned_parameters("vision_stitching", profile)["encoders"]


def test_other_data_than_the_stitching_runs_is_refused(tmp_path, monkeypatch, executed_smoke_stitching):
    parameters = {**planned_parameters("diagnostics"), "max_reports": 123}
    with pytest.raises(SemalignError, match=r"not comparable.*'max_reports': \(123, 400\)"):
        run_until_checked(tmp_path, monkeypatch, parameters)


def test_encoders_the_stitching_runs_lack_are_refused(tmp_path, monkeypatch, executed_smoke_stitching):
    parameters = {**planned_parameters("diagnostics"), "text_encoders": ["minilm", "mpnet"]}
    with pytest.raises(SemalignError, match=r"encoders it did not run: \['mpnet'\]"):
        run_until_checked(tmp_path, monkeypatch, parameters)


def test_it_runs_after_the_stitching_summaries_and_before_zero_shot():
    names = runner.notebook_names()
    assert names.index("stitching_summary") < names.index("diagnostics") < names.index("zero_shot")


@pytest.mark.slow
def test_smoke_study_records_similarities_gaps_and_rank_correlations(smoke_study):
    saved = json.loads((smoke_study / "results" / "smoke" / "diagnostics.json").read_text())
    by_pair: dict = {}
    for r in saved["records"]:
        if r["method"] == "diagnostic":
            by_pair.setdefault((r["source"], r["target"]), {})[r["metric"]] = r["value"]
    expected = set()
    for run in ("text_stitching", "vision_stitching"):  # the ordered pairs each run ran: those into its targets
        planned = {**{k: p.default for k, p in runner.notebook_parameters(run).items()}, **planned_parameters(run)}
        names, targets = planned["encoders"], planned["targets"]
        expected |= {(a, b) for a in names for b in (targets or names) if a != b}
    assert set(by_pair) == expected and len(expected) == 2  # into each modality's medical encoder only
    for (source, target), values in by_pair.items():
        assert 0 <= values["linear_cka"] <= 1 and 0 <= values["mutual_knn"] <= 1
        if (target, source) in by_pair:
            assert values["linear_cka"] == by_pair[target, source]["linear_cka"]  # one value for both orders
        assert -1 < values["gap"] < 1
    # Spearman's rho needs three pairs: with two it is undefined, and no record pretends otherwise.
    correlations = {r["metric"]: r["value"] for r in saved["records"] if r["method"] == "rank_correlation"}
    assert correlations == {}
    executed = (smoke_study / "executed" / "smoke" / "diagnostics.ipynb").read_text()
    assert "Too few pairs to conclude: 2 ordered pairs" in executed  # no rank correlation is read from 2 points
    printed = json.loads(semalign_cli(smoke_study, "results", "--profile", "smoke", "--json").stdout)
    assert any(r["experiment"] == "diagnostics" for r in printed)
