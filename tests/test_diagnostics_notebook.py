"""The diagnostics chapter reads the stitching runs' records only: it refuses to
run without them, without their similarity records, or when runs disagree on
a pair's similarity; on the smoke study it records similarities, gaps and rank
correlations."""

from __future__ import annotations

import json

import pytest
from conftest import semalign_cli

from semalign.core.errors import SemalignError
from semalign.experiments import results
from semalign.study import runner


def run_cells(workdir, monkeypatch, until: str) -> dict:
    """Execute the notebook's cells in-process, as the runner would with the smoke
    profile, up to and including the first cell containing ``until``."""
    monkeypatch.setenv("SEMALIGN_WORKDIR", str(workdir))
    namespace: dict = {}
    for cell in runner.read_notebook("diagnostics").cells:
        if cell.cell_type != "code":
            continue
        exec(cell.source, namespace)
        if "parameters" in cell.metadata["tags"]:
            namespace.update(profile="smoke")
        if until in cell.source:
            return namespace
    raise AssertionError(f"no cell contains {until!r}")


def save_stitching(run: str, experiment: str, cka: float = 0.5, similarity: bool = True) -> None:
    rows = [dict(method="upper_bound", source="a", target="a", split="test", metric="macro_auroc", value=0.9)]
    if similarity:
        rows += [dict(method="similarity", source=x, target=y, split="test", metric=m, value=cka)
                 for x, y in (("a", "b"), ("b", "a")) for m in ("linear_cka", "mutual_knn")]
    results.save_records(rows, profile="smoke", run=run, experiment=experiment, parameters={})


def test_missing_stitching_records_stop_it_with_the_command_to_run(isolated_work, monkeypatch):
    save_stitching("text_stitching__transform-ortho", "text_stitching")
    with pytest.raises(SemalignError, match=r"none of vision_stitching: run `semalign run vision_stitching --profile smoke`"):
        run_cells(isolated_work, monkeypatch, "missing = ")


def test_records_without_similarities_ask_for_a_rerun(isolated_work, monkeypatch):
    save_stitching("text_stitching__transform-ortho", "text_stitching")
    save_stitching("vision_stitching__transform-ortho", "vision_stitching", similarity=False)
    with pytest.raises(SemalignError, match=r"vision_stitching hold no similarity records.*"
                                            r"`semalign run vision_stitching --profile smoke` again"):
        run_cells(isolated_work, monkeypatch, "pairs = values.first()")


def test_runs_that_disagree_on_a_similarity_are_refused(isolated_work, monkeypatch):
    save_stitching("text_stitching__transform-ortho", "text_stitching")
    save_stitching("text_stitching__transform-affine", "text_stitching", cka=0.6)
    save_stitching("vision_stitching__transform-ortho", "vision_stitching")
    with pytest.raises(SemalignError, match=r"record different similarities for text_stitching: a → b.*"
                                            r"`semalign run all --profile smoke`"):
        run_cells(isolated_work, monkeypatch, "pairs = values.first()")


def test_it_has_no_data_parameters():
    assert set(runner.notebook_parameters("diagnostics")) == {"profile", "run_name", "metric"}


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
        (planned, *_) = runner.plan([run], "smoke")
        parameters = {**{k: p.default for k, p in runner.notebook_parameters(run).items()}, **planned.parameters}
        names, targets = parameters["encoders"], parameters["targets"]
        expected |= {(a, b) for a in names for b in (targets or names) if a != b}
    assert set(by_pair) == expected and len(expected) == 2  # into each modality's medical encoder only
    swept = json.loads((smoke_study / "results" / "smoke" / "text_stitching__transform-ortho.json").read_text())
    measured = {(r["source"], r["target"]): r["value"] for r in swept["records"]
                if r["method"] == "similarity" and r["metric"] == "linear_cka"}
    for (source, target), values in by_pair.items():
        assert 0 <= values["linear_cka"] <= 1 and 0 <= values["mutual_knn"] <= 1
        if (source, target) in measured:
            assert values["linear_cka"] == measured[source, target]  # read from the sweep's records, not recomputed
        assert -1 < values["gap"] < 1
    # Spearman's rho needs three pairs: with two it is undefined, and no record pretends otherwise.
    correlations = {r["metric"]: r["value"] for r in saved["records"] if r["method"] == "rank_correlation"}
    assert correlations == {}
    executed = (smoke_study / "executed" / "smoke" / "diagnostics.ipynb").read_text()
    assert "Too few pairs to conclude: 2 ordered pairs" in executed  # no rank correlation is read from 2 points
    printed = json.loads(semalign_cli(smoke_study, "results", "--profile", "smoke", "--json").stdout)
    assert any(r["experiment"] == "diagnostics" for r in printed)
