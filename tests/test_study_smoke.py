"""The whole path on real content: papermill executes the real notebooks with
the smoke profile, the recorded numbers are checked, and the book is built."""

from __future__ import annotations

import html as html_module
import json
import os
import re

import pytest
from conftest import book_pages, semalign_cli

pytestmark = pytest.mark.slow

CDN_HOSTS = re.compile(r"unpkg\.com|cdn\.jsdelivr\.net|cdnjs\.cloudflare\.com|fonts\.googleapis\.com|code\.jquery\.com")


@pytest.fixture(scope="module")
def records(smoke_study):
    out = semalign_cli(smoke_study, "results", "--profile", "smoke", "--json").stdout
    return json.loads(out)


def test_results_are_flat_records_with_the_fixed_keys(records):
    required = {"experiment", "profile", "method", "transform", "source", "target", "n_anchors", "seed", "metric", "value"}
    assert records and all(required <= set(r) for r in records)
    assert {r["profile"] for r in records} == {"smoke"}


def test_data_overview_records_the_smoke_subset(records):
    by_metric = {r["metric"]: r["value"] for r in records if r["experiment"] == "data_overview"}
    assert by_metric["n_reports"] == 300
    assert by_metric["n_train"] + by_metric["n_test"] == 300
    assert 0.2 < by_metric["prevalence:normal"] < 0.5  # 1,363 of 3,927 in the full collection


def test_failing_notebook_names_notebook_and_cell_and_keeps_the_previous_results(smoke_study, tmp_path):
    from semalign.study import runner

    table = tmp_path / "mine.csv"
    table.write_text("text,finding\n" + "".join(f"report {i}: {'effusion' if i % 2 else 'clear'},{i % 2}\n"
                                                 for i in range(80)))
    overrides = [f"dataset={table}", "label_columns=[finding]"]
    args = ["run", "data_overview", "--profile", "smoke", "--quiet", *(x for o in overrides for x in ("-p", o))]
    semalign_cli(smoke_study, *args)
    (run,) = runner.plan(["data_overview"], "smoke", overrides)  # its own name: other data than the profile's
    executed, saved = (smoke_study / folder / "smoke" / f"{run.name}{suffix}"
                       for folder, suffix in (("executed", ".ipynb"), ("results", ".json")))
    before = (executed.read_bytes(), saved.read_bytes())
    table.write_text("text,finding\nfirst,2\nsecond,3\n")  # the same file, now unusable: the run is stale and fails
    proc = semalign_cli(smoke_study, *args, check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert re.match(rf"error: notebook data_overview \(run {run.name}\) failed in cell \d+ .*recode it as 1", line)
    assert line.endswith("its previous results are kept")
    assert (executed.read_bytes(), saved.read_bytes()) == before  # the last good run is still what the book shows
    assert (executed.parent / f"{run.name}.failed.ipynb").is_file()
    assert (smoke_study / "results" / "smoke" / "data_overview.json").is_file()  # the profile's own run untouched


def test_book_builds_offline_with_pages_and_no_cdn(smoke_book, records):
    html = str(smoke_book)
    index = os.path.join(html, "index.html")
    assert os.path.isfile(index)
    for page in ["method.html", "data_models.html", "experiments/data_overview.html", "runs.html", "search.html"]:
        assert os.path.isfile(os.path.join(html, page)), page
    n_reports = next(r["value"] for r in records if r["metric"] == "n_reports")
    text = " ".join(re.sub(r"<[^>]+>", " ", open(index).read()).split())
    assert f"use {int(n_reports):,} reports" in text  # glued from the executed notebook
    for root, _, files in os.walk(html):
        for name in files:
            if name.endswith(".html"):
                text = open(os.path.join(root, name), encoding="utf-8").read()
                assert not CDN_HOSTS.search(text), f"{name} references a CDN"
    assert os.path.isfile(os.path.join(html, "_static", "mathjax", "tex-mml-chtml.js"))


def test_claims_have_verdicts_intervals_and_validation_choices(smoke_study, records):
    """Every claim of the paper is recorded per modality at every anchor budget, with a verdict from
    its interval or, where the records show its premise false, "not testable here" and the reason."""
    from semalign.experiments.claims import CLAIMS, NOT_TESTABLE, VERDICTS, ZERO_SHOT
    claims = [r for r in records if r["experiment"] == "claims" and r["method"] == "claim"]
    judged = {(r["metric"], r["modality"]) for r in claims}
    stitching = {c for c in CLAIMS if not c.startswith("zero_shot")}
    assert {(c, m) for c in stitching for m in ("text", "vision")} <= judged
    assert {("zero_shot_vs_multimodal", ZERO_SHOT), ("zero_shot_vs_general_multimodal", ZERO_SHOT)} <= judged
    # the smoke profile's budgets: 64 and the largest count of each sweep (text 200, vision 128)
    budgets = {m: sorted({r["n_anchors"] for r in claims if r["modality"] == m and r["metric"] == "aligned_vs_naive"})
               for m in ("text", "vision")}
    assert budgets == {"text": [64, 200], "vision": [64, 128]}
    for r in claims:
        assert r["verdict"] in VERDICTS
        assert (r["verdict"] == NOT_TESTABLE) == bool(r["reason"])
        if r["estimate"] is not None:
            assert r["ci_low"] <= r["estimate"] <= r["ci_high"] and r["value"] == r["estimate"]
    # no general CLIP offline: named as the reason, not silently dropped
    general = [r for r in claims if r["metric"] == "zero_shot_vs_general_multimodal"]
    assert general and all(r["verdict"] == NOT_TESTABLE and "general multimodal" in r["reason"] for r in general)
    assert {r["selected_on"] for r in claims if r["claim"] != "ortho_vs_affine"} == {"validation"}
    crossover = {r["modality"] for r in records if r["method"] == "few_shot_crossover"}
    assert crossover == {"text", "vision"}
    nb = json.loads((smoke_study / "executed" / "smoke" / "results_table.ipynb").read_text())
    printed = json.dumps(nb["cells"], ensure_ascii=False)
    assert all(r["verdict"] in printed for r in claims)  # the table states every verdict


def test_one_upper_bound_per_target_in_figures_and_tables(smoke_book, records):
    """The upper bound is the target encoder with its own decoder, everywhere: the reference lines of
    the anchor-curve figures and the upper-bound rows of the summary and results tables."""
    import pandas as pd

    from semalign.experiments import plots
    frame = pd.DataFrame(records)
    for experiment, page in (("text_stitching", "stitching_summary__experiment-text_stitching"),
                             ("vision_stitching", "stitching_summary__experiment-vision_stitching")):
        rows = frame[(frame["experiment"] == experiment) & (frame["metric"] == "macro_auroc")]
        targets = sorted(set(rows[rows["method"] == "aligned"]["target"]))
        test = rows[(rows["method"] == "upper_bound") & (rows["split"] == "test")].groupby("source")["value"].mean()
        fig = plots.anchor_curves(rows)
        lines = [(line.get_label(), line.get_ydata()[0]) for line in fig.axes[0].lines
                 if line.get_label().startswith("upper bound")]
        assert [label for label, _ in lines] == [f"upper bound: {t}" for t in targets]
        assert [y for _, y in lines] == pytest.approx([test[t] for t in targets])
        for html in (smoke_book / "experiments" / f"{page}.html", smoke_book / "experiments" / "results_table.html"):
            # what the page shows, not the (folded) source code that builds it
            text = page_text(html, without_code=True)
            named = re.findall(r"upper bound \(([^)]*?) with its own decoder\)", text)
            assert named and set(named) <= set(frame[frame["method"] == "upper_bound"]["source"]), (html.name, named)
            for target in set(named) & set(targets):
                after = text.split(f"upper bound ({target} with its own decoder)")[1]
                assert after.lstrip().startswith(f"{test[target]:.3f}"), (html.name, target, after[:40])
        assert "upper bound (mean)" not in page_text(smoke_book / "experiments" / f"{page}.html")


def test_stitching_and_zero_shot_test_records_carry_intervals(records):
    scored = [r for r in records if r["experiment"] in ("text_stitching", "vision_stitching", "zero_shot")
              and r["split"] == "test" and r["metric"] in ("macro_auroc", "auroc") and r["method"] != "clip_style_curve"]
    assert scored and all(r["ci_low"] is not None and r["ci_low"] <= r["value"] + 1e-9 <= r["ci_high"] + 2e-9
                          for r in scored)
    methods = {r["method"] for r in records if r["experiment"] == "zero_shot"}
    assert {"unimodal_zero_shot", "asif", "clip_style", "linear_probe"} <= methods
    asif = [r for r in records if r["method"] == "asif" and r["split"] == "test"]
    assert asif and {r["selected_on"] for r in asif} == {"validation"}
    validation = [r for r in records if r["split"] == "validation" and r["experiment"] == "text_stitching"]
    assert validation and all(r["ci_low"] is None for r in validation)


def page_text(path, without_code: bool = False) -> str:
    text = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", path.read_text(encoding="utf-8"), flags=re.S)
    if without_code:
        text = re.sub(r"<pre>.*?</pre>", " ", text, flags=re.S)
    return " ".join(html_module.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def test_every_page_has_its_own_title_and_no_machine_paths(smoke_book, smoke_study):
    pages = book_pages(smoke_book)
    titles = {p.relative_to(smoke_book).as_posix(): re.search(r"<title>(.*?)</title>", p.read_text(), re.S).group(1)
              for p in pages}
    assert len(pages) >= 25 and len(set(titles.values())) == len(titles), titles
    assert titles["experiments/text_stitching__transform-l-ortho.html"].startswith("Text stitching — l-ortho")
    for page in pages:
        text = page_text(page)
        assert "PosixPath(" not in text and str(smoke_study) not in text, f"{page.name} shows a path of the build machine"


def machine_paths(work) -> re.Pattern:
    """An absolute path of the machine that builds the book: in the work tree,
    the temporary folder, the work folder ``work`` or the home folder, or in any
    environment's site-packages (a warning's file name, say)."""
    import site
    import sys
    import sysconfig
    import tempfile
    from pathlib import Path

    from semalign.core.paths import PROJECT_ROOT

    roots = {PROJECT_ROOT, Path(tempfile.gettempdir()), Path(work), Path.home(), Path(sys.prefix),
             *map(Path, site.getsitepackages()), Path(sysconfig.get_paths()["purelib"])}
    spelled = {str(root) for root in roots} | {str(root.resolve()) for root in roots}
    folders = "|".join(re.escape(root) for root in sorted(spelled, key=len, reverse=True))
    return re.compile(rf"(?<![\w.-])(?:{folders})(?![\w.-])|/[\w.+-]+(?:/[\w.+-]+)*/site-packages\b")


def machine_paths_in_book(html, work) -> list[str]:
    """Every built HTML page and downloadable notebook of the book at ``html``
    that holds a machine path (:func:`machine_paths`), with the first one found."""
    found = machine_paths(work)
    hits = []
    for path in sorted([*html.rglob("*.html"), *html.rglob("*.ipynb")]):
        text = path.read_text(encoding="utf-8", errors="replace")
        match = found.search(html_module.unescape(text) if path.suffix == ".html" else text)
        if match:
            hits.append(f"{path.relative_to(html)}: {match.group(0)}")
    return hits


def test_no_page_or_downloadable_notebook_holds_a_path_of_the_building_machine(smoke_book, smoke_study, record_property):
    record_property("shareable", "the built book's pages and downloadable notebooks")
    notebooks = list(smoke_book.rglob("*.ipynb"))
    assert len(notebooks) >= 10  # the reader's copies of the executed notebooks are in the book
    assert machine_paths(smoke_study).search(f"warning at {smoke_study / 'x.py'}:3")  # the check sees a path
    assert machine_paths_in_book(smoke_book, smoke_study) == []


def test_pages_say_what_they_were_executed_with_and_hide_the_parameter_cells(smoke_book):
    page = (smoke_book / "experiments" / "text_stitching__transform-ortho.html").read_text(encoding="utf-8")
    text = page_text(smoke_book / "experiments" / "text_stitching__transform-ortho.html")
    assert "Executed with profile smoke" in text and "dropdown" in page
    assert re.search(r"anchor_counts \[16, ?64, ?200\] profile", text)  # value and who set it
    assert re.search(r"transform \"ortho\" grid", text)
    assert re.search(r"Executed on \d{4}-\d\d-\d\d .*\s(?:min|s) on .*torch \d", text)
    assert "# Parameters" not in text and "set by the runner" not in text  # no parameter cells in the page


def test_executed_notebooks_carry_no_progress_bars(smoke_study):
    for path in (smoke_study / "executed" / "smoke").glob("*.ipynb"):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            for out in cell.get("outputs", []):
                shown = "".join(out.get("text", "")) + json.dumps(out.get("data", {}))
                assert "it/s]" not in shown and "widget-view" not in shown, f"{path.name} carries a progress bar"


def test_records_and_executed_notebooks_hold_no_path_of_the_machine(smoke_study, record_property):
    record_property("shareable", "every run's records and executed notebook")
    found = machine_paths(smoke_study)
    shared = [*(smoke_study / "results" / "smoke").glob("[!.]*.json"),
              *(p for p in (smoke_study / "executed" / "smoke").glob("[!.]*.ipynb") if not p.name.endswith(".failed.ipynb"))]
    assert len(shared) >= 30  # every run's records and executed notebook
    hits = [f"{path.name}: {match.group(0)}" for path in shared if (match := found.search(path.read_text()))]
    assert hits == []


def test_a_book_after_one_more_run_shows_summaries_of_the_records_as_they_are(smoke_study, tmp_path, monkeypatch,
                                                                            record_property):
    """The whole smoke study, one text run with another setting, then `semalign book`: the summary pages are
    re-executed from the records as they are now, and afterwards no run is stale (so a second build
    re-executes nothing: `semalign book` re-executes what `runner.executed_status` calls stale)."""
    record_property("rerun", "a book built after one more run re-executes the summaries it would show stale")
    import shutil

    from semalign.study import runner

    work = tmp_path / "work"
    shutil.copytree(smoke_study, work, symlinks=True, ignore=shutil.ignore_patterns("book"))
    semalign_cli(work, "run", "text_stitching", "--profile", "smoke", "--quiet", "-p", "transform=ortho",
                 "-p", "anchor_counts=[16,64]")
    built = semalign_cli(work, "book", "--profile", "smoke")
    refreshed = re.findall(r"^(\S+) \(smoke\): stale \(the records it summarises changed since: [^)]*"
                           r"text_stitching__transform-ortho\.json[^)]*\); re-executing it$", built.stderr, re.M)
    assert sorted(refreshed) == ["diagnostics", "results_table", "stitching_summary__experiment-text_stitching",
                                 "stitching_summary__experiment-vision_stitching"], built.stderr
    monkeypatch.setenv("SEMALIGN_WORKDIR", str(work))
    assert [run.name for run in runner.executed_runs("smoke") if runner.executed_status(run)] == []


def test_make_publish_pushes_the_book_to_a_gh_pages_branch(smoke_book, smoke_study, tmp_path, record_property):
    """`make publish` (ghp-import, as the workflow in .github/workflows runs it) into a local bare repository."""
    record_property("shareable", "the smoke book published with make publish into a local bare repository")
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from semalign.core.paths import PROJECT_ROOT

    remote, scratch = tmp_path / "site.git", tmp_path / "clone"
    for args in (["init", "--bare", "-q", str(remote)], ["init", "-q", str(scratch)]):
        subprocess.run(["git", *args], check=True)
    env = {**os.environ, "SEMALIGN_WORKDIR": str(smoke_study), "GIT_DIR": str(scratch / ".git"),
           "GIT_COMMITTER_NAME": "semalign tests", "GIT_COMMITTER_EMAIL": "tests@example.org"}
    proc = subprocess.run(["make", "publish", "PROFILE=smoke", f"REMOTE={remote}", f"VENV={Path(sys.prefix)}"],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    listed = subprocess.run(["git", f"--git-dir={remote}", "ls-tree", "-r", "--name-only", "gh-pages"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert {"index.html", ".nojekyll", "experiments/text_stitching__transform-ortho.html"} <= set(listed)
    workflow = yaml.safe_load((PROJECT_ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any("make book" in step for step in steps) and any("make publish" in step for step in steps)
