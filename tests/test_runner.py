"""The runner and the command line: planning, parameter checks, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from semalign.study import cli

from semalign.core import paths
from semalign.study import runner
from semalign.core.errors import SemalignError
from semalign.experiments import results
from semalign.core.cache import sha256_file


def test_every_notebook_declares_reserved_parameters_and_literal_defaults():
    for name in runner.notebook_names():
        params = runner.notebook_parameters(name)
        assert {"profile", "run_name"} <= set(params)


def test_papermill_reads_every_parameter_the_runner_reads():
    """papermill injects only the parameters it can parse from the parameters cell (a
    comment holding '=' hides the line from it, and the value is silently not passed)."""
    from papermill.inspection import _infer_parameters

    for name in runner.notebook_names():
        seen = {p.name for p in _infer_parameters(runner.read_notebook(name))}
        assert seen == set(runner.notebook_parameters(name)), name


def test_plan_applies_profile_overrides_and_command_line_values():
    (run,) = runner.plan(["data_overview"], "smoke")
    assert run.parameters["max_reports"] == 300
    assert run.parameters["profile"] == "smoke" and run.parameters["run_name"] == "data_overview"
    (run,) = runner.plan(["data_overview"], "smoke", ["max_reports=50", "test_fraction=0.5"])
    assert run.parameters["max_reports"] == 50 and run.parameters["test_fraction"] == 0.5


def test_grid_makes_one_run_per_point_named_by_its_values(monkeypatch, tmp_path):
    runs_file = tmp_path / "runs.yaml"
    runs_file.write_text(
        "profiles: {offline: x}\nnotebooks:\n  - name: data_overview\n    grid: {seed: [1, 2]}\n"
    )
    monkeypatch.setattr(runner, "RUNS_FILE", runs_file)
    monkeypatch.setattr(runner, "load_runs", lambda path=runs_file: runner.yaml.safe_load(runs_file.read_text()))
    runs = runner.plan(["all"], "offline")
    assert [r.name for r in runs] == ["data_overview__seed-1", "data_overview__seed-2"]
    assert [r.parameters["seed"] for r in runs] == [1, 2]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("max_reports=abc", r"max_reports.*expects a int.*'abc'"),
        ("max_reports=1.5", r"max_reports.*expects a int"),
        ("test_fraction=[1]", r"test_fraction.*expects a float"),
        ("label_columns=7", r"label_columns.*expects a list"),
        ("nonsense=1", r"unknown parameter 'nonsense'.*valid parameters: .*max_reports"),
        ("profile=paper", r"set by the runner"),
        ("no_equals_sign", r"expected KEY=VALUE"),
        ("max_reports=-5", r"max_reports.*expects a whole number ≥ 0.*got '-5'"),
        ("label_columns=[unclosed", r"label_columns.*'\[unclosed' is not a valid YAML value.*-p label_columns=\["),
    ],
)
def test_bad_parameters_are_refused_with_the_valid_choices(override, message):
    with pytest.raises(SemalignError, match=message):
        runner.plan(["data_overview"], "offline", [override])


def test_unknown_notebook_and_profile_list_valid_choices():
    with pytest.raises(SemalignError, match=r"unknown notebook 'nope'; valid notebooks: method_example, data_overview"):
        runner.plan(["nope"], "offline")
    with pytest.raises(SemalignError, match=r"valid profiles: offline, smoke, paper"):
        runner.plan(["data_overview"], "laptop")


def test_cli_prints_one_line_error_and_exits_2(capsys):
    assert cli.main(["run", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown notebook 'nope'")


@pytest.mark.parametrize("command", [["data", "verify"], ["results"], ["book"], ["run", "data_overview"]])
def test_an_unknown_profile_is_refused_by_every_command(command, capsys):
    assert cli.main([*command, "--profile", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown profile 'bogus'; valid profiles: offline, smoke, paper (e.g. --profile offline)"]


def test_cli_module_entry_point_lists_parameters():
    out = subprocess.run([sys.executable, "-m", "semalign", "run", "--list"], capture_output=True, text=True, check=True)
    assert "data_overview" in out.stdout and "max_reports (int) = 0" in out.stdout


def test_book_refuses_missing_executed_notebooks(isolated_work):
    from semalign.study import book
    with pytest.raises(SemalignError, match=r"cannot publish the smoke book: method_example, data_overview, "
                                            r"text_stitching__transform-affine and 13 more: missing\. "
                                            r"Fix: semalign run all --profile smoke"):
        book.build("smoke")


def test_executed_notebooks_keep_warnings_without_the_machine_s_folders():
    import nbformat

    from semalign.core.paths import PACKAGE_DIR

    printed = (f"{PACKAGE_DIR}/data/reports.py:180: UserWarning: dataset file mine.csv: dropped 3 of 80 rows\n"
               "  warnings.warn(\n"
               "/opt/env/lib/python3.11/site-packages/sklearn/base.py:12: FutureWarning: renamed\n")
    cell = nbformat.v4.new_code_cell("reports = load()", outputs=[nbformat.v4.new_output("stream", name="stderr", text=printed)])
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# A page"), cell])
    assert runner.study_warnings(nb) == ["dataset file mine.csv: dropped 3 of 80 rows"]
    runner.strip_machine_paths(nb)
    assert nb.cells[1].outputs[0].text == ("semalign/data/reports.py:180: UserWarning: dataset file mine.csv: dropped 3 "
                                           "of 80 rows\n  warnings.warn(\nsklearn/base.py:12: FutureWarning: renamed\n")


def test_code_change_makes_executed_notebook_stale(isolated_work, monkeypatch):
    (run,) = runner.plan(["data_overview"], "smoke")
    run.output.parent.mkdir(parents=True)
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"semalign": {
        "source_sha256": runner.source_fingerprint(run), "code_sha256": "0" * 16}})
    nbformat.write(nb, run.output)
    assert runner.executed_status(run) == "stale (semalign package changed)"
    nb.metadata["semalign"]["code_sha256"] = runner.code_fingerprint()
    nbformat.write(nb, run.output)
    assert runner.executed_status(run) == "missing its results file"
    results = runner.results_dir("smoke") / "data_overview.json"
    results.parent.mkdir(parents=True)
    results.write_text("{}")
    nb.metadata["semalign"]["results_sha256"] = {"data_overview.json": "0" * 64}  # written by another execution
    nbformat.write(nb, run.output)
    assert runner.executed_status(run).startswith("incomplete")
    nb.metadata["semalign"]["results_sha256"] = {"data_overview.json": runner.sha256_file(results)}
    nbformat.write(nb, run.output)
    assert runner.executed_status(run) is None


def test_paper_profile_stops_before_running_when_data_is_missing(isolated_work, tmp_path, capsys):
    assert cli.main(["run", "all", "--profile", "paper"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "-p data_root=" in err[0] and "mimic_cxr" in err[0]
    assert cli.main(["run", "text_stitching", "--profile", "paper", "-p", f"data_root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mimic_cxr" in err[0] and str(tmp_path) in err[0]
    assert not (isolated_work / "executed").exists() or not any((isolated_work / "executed").rglob("*.ipynb"))


def test_up_to_date_runs_are_not_executed_again(isolated_work):
    from conftest import semalign_cli

    args = ["run", "data_overview", "--profile", "smoke", "--quiet", "-p", "max_reports=60"]
    assert "executed 1 of 1" in semalign_cli(isolated_work, *args).stdout
    (run,) = runner.plan(["data_overview"], "smoke", ["max_reports=60"])
    before = run.output.stat().st_mtime_ns
    again = semalign_cli(isolated_work, *args).stdout
    assert "up to date, not re-executed" in again and run.output.stat().st_mtime_ns == before
    assert not runner.up_to_date(runner.plan(["data_overview"], "smoke", ["max_reports=61"])[0])
    forced = semalign_cli(isolated_work, *args, "--force").stdout
    assert "executed 1 of 1" in forced and run.output.stat().st_mtime_ns > before


def test_a_summary_is_stale_when_the_records_it_reads_change_and_only_then(isolated_work, record_property):
    record_property("rerun", "a summary whose records changed is stale; a later notebook's records do not make it so")
    import json

    import nbformat

    (run,) = runner.plan(["stitching_summary"], "smoke", ["experiment=text_stitching"])
    assert run.reads_results
    records = runner.results_dir("smoke")
    records.mkdir(parents=True)
    earlier = records / "text_stitching__transform-ortho.json"
    earlier.write_text(json.dumps({"records": [1]}))
    later = records / "zero_shot.json"  # listed after the summary in runs.yaml: never read by it
    later.write_text(json.dumps({"records": [1]}))
    (records / "text_stitching__transform-ortho__data-1a2b3c4d.json").write_text("{}")  # other data: not read
    assert set(runner.records_read(run)) == {earlier.name}
    run.output.parent.mkdir(parents=True)
    (records / f"{run.name}.json").write_text("{}")
    nb = nbformat.v4.new_notebook(metadata={"semalign": {
        "source_sha256": runner.source_fingerprint(run), "code_sha256": runner.code_fingerprint(),
        "parameters": run.parameters, "records_read": runner.records_read(run)}})
    nbformat.write(nb, run.output)
    assert runner.up_to_date(run)
    later.write_text(json.dumps({"records": [2]}))
    assert runner.up_to_date(run)
    earlier.write_text(json.dumps({"records": [2]}))
    assert runner.executed_status(run) == ("stale (the records it summarises changed since: "
                                           "text_stitching__transform-ortho.json)")
    assert not runner.up_to_date(run)


def test_code_fingerprint_covers_every_module_a_notebook_can_run(tmp_path, monkeypatch):
    names = {path.relative_to(paths.PACKAGE_DIR).as_posix() for path in runner.notebook_modules()}
    assert {"__init__.py", "core/paths.py", "core/cache.py", "experiments/inputs.py", "experiments/results.py",
            "method/align.py", "models/encoders.py", "models/embed.py"} <= names
    assert not names & {"__main__.py", "study/cli.py", "study/book.py", "study/pages.py", "study/sphinx_offline.py",
                        "study/doctor.py", "study/runner.py", "study/parameters.py"}
    package = tmp_path / "semalign"
    for name in ("__init__", "x/a", "study/runner", "study/book"):
        (package / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (package / f"{name}.py").write_text("")
    monkeypatch.setattr(runner, "PACKAGE_DIR", package)
    before = runner.code_fingerprint()
    (package / "study" / "book.py").write_text("# an appendix edit\n")
    (package / "study" / "runner.py").write_text("# a runner edit\n")
    assert runner.code_fingerprint() == before  # executed notebooks stay current
    (package / "x" / "a.py").write_text("z = 1\n")
    assert runner.code_fingerprint() != before


def test_kernels_talk_over_private_unix_sockets_and_runs_record_their_provenance(isolated_work, record_property):
    record_property("rerun", "every record carries its data, encoders, device and code")
    import json

    from conftest import semalign_cli

    proc = semalign_cli(isolated_work, "run", "data_overview", "--profile", "smoke", "--quiet", "-p", "max_reports=60")
    assert "over TCP" not in proc.stderr and "Traceback" not in proc.stderr
    (run,) = runner.plan(["data_overview"], "smoke", ["max_reports=60"])
    meta = json.loads(run.output.read_text())["metadata"]["semalign"]
    assert meta["set_by"] == {"max_reports": "command line"}
    facts = meta["provenance"]
    assert {"cpu", "gpu", "python", "semalign", "torch", "transformers", "numpy", "scikit-learn", "started"} <= set(facts)
    assert facts["torch"].split("+")[0] == runner.provenance()["torch"].split("+")[0] and facts["wall_s"] > 0
    # papermill's own record stays, less its copy of the source and its temporary output path
    kept = json.loads(run.output.read_text())["metadata"]["papermill"]
    assert kept["duration"] > 0 and not {"input_path", "output_path"} & set(kept)


def test_kernels_start_without_tqdm_s_widget_warning_and_keep_other_warnings():
    """huggingface_hub imports tqdm.auto, which in a kernel without ipywidgets
    warns from (and names) a file in site-packages; the study's warnings stay."""
    import shutil
    import tempfile

    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import warnings\nimport tqdm.auto\nwarnings.warn('a warning of the study')")])
    nb.cells[0].metadata["tags"] = []
    folder = Path(tempfile.mkdtemp(prefix="semalign-test-"))  # short: the kernel's sockets live here
    try:
        papermill.execute_notebook(nb, str(folder / "out.ipynb"), kernel_name=runner.ensure_kernel(), progress_bar=False,
                                   config=runner._ipc_kernel(folder),
                                   kernel_manager_class=runner._kernel_manager(folder / "kernel.log"))
        outputs = nbformat.read(folder / "out.ipynb", as_version=4).cells[0].outputs
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    stderr = "".join(out.get("text", "") for out in outputs if out.get("name") == "stderr")
    assert "a warning of the study" in stderr and "IProgress" not in stderr and "site-packages" not in stderr


def test_grid_runs_have_their_own_titles_and_know_who_set_each_parameter():
    runs = runner.plan(["text_stitching", "stitching_summary"], "smoke", ["seeds=[0]"])
    titles = [run.title for run in runs]
    assert titles[:4] == ["Text stitching — affine", "Text stitching — linear", "Text stitching — l-ortho",
                          "Text stitching — ortho"]
    assert titles[4:] == ["Text stitching: the four transforms compared", "Vision stitching: the four transforms compared"]
    assert runs[0].set_by["transform"] == "grid" and runs[0].set_by["seeds"] == "command line"
    assert runs[0].set_by["max_reports"] == "profile" and "decoder" not in runs[0].set_by


def test_text_parameters_take_the_text_as_given():
    (run,) = runner.plan(["results_table"], "smoke", ["text_label=text: IU reports"])
    assert run.parameters["text_label"] == "text: IU reports"
    (run,) = runner.plan(["text_stitching"], "smoke", ["text_column=@body", "transform=ortho"])
    assert run.parameters["text_column"] == "@body"
    (run,) = runner.plan(["text_stitching"], "smoke", ["text_column='quoted'", "transform=ortho"])
    assert run.parameters["text_column"] == "quoted"


def test_an_edited_data_file_makes_its_run_stale_and_relative_paths_start_from_the_shell(isolated_work, tmp_path,
                                                                                        monkeypatch, record_property):
    record_property("rerun", "an edited data file (content hash) makes its run stale")
    from conftest import semalign_cli

    folder = tmp_path / "mine"
    folder.mkdir()
    table = folder / "my.csv"

    def write(rows: int) -> None:
        lines = ["text,finding"] + [f"report {i}: {'effusion seen' if i % 3 else 'lungs clear'},{int(i % 3 > 0)}"
                                    for i in range(rows)]
        table.write_text("\n".join(lines) + "\n")

    write(30)
    table.write_text(table.read_text() + ",1\n")  # a row without text: dropped, and the command line says so
    monkeypatch.chdir(folder)
    args = ["run", "data_overview", "--profile", "smoke", "--quiet", "-p", "dataset=my.csv", "-p", "label_columns=[finding]"]
    first = semalign_cli(isolated_work, *args)
    assert "executed 1 of 1" in first.stdout
    (run,) = runner.plan(["data_overview"], "smoke", ["dataset=my.csv", "label_columns=[finding]"])
    assert run.name.startswith("data_overview__data-") and run.variant  # never stored over the profile's own run
    assert (f"warning: {run.name}: dataset file {run.parameters['dataset']}: dropped 1 of 31 rows: 1 (empty report "
            "text)") in first.stderr
    # the kernel runs in the work folder: the path is stored from there, and no absolute path of the machine is
    assert run.parameters["dataset"] == os.path.relpath(table, isolated_work) and not run.parameters["dataset"].startswith("/")
    assert "up to date" in semalign_cli(isolated_work, *args).stdout
    listed = json.loads(semalign_cli(isolated_work, "results", "--json", "--profile", "smoke").stdout)
    facts = {record["run"]: record["provenance"] for record in listed}[run.name]
    assert facts["variant"] == run.variant and facts["inputs_sha256"] == {"dataset": sha256_file(table)}
    assert facts["data"]["dataset"] == run.parameters["dataset"] and facts["machine"]["semalign"] and facts["code_sha256"]
    write(40)
    assert "executed 1 of 1" in semalign_cli(isolated_work, *args).stdout  # same name and size class, new content


@pytest.mark.parametrize("override", ["anchor_counts=[]", "anchor_counts=[1.5]", "seeds=[-1]"])
def test_count_lists_must_hold_whole_numbers(override):
    key = override.split("=")[0]
    with pytest.raises(SemalignError, match=rf"parameter '{key}' of text_stitching expects a non-empty list of whole "
                                            rf"numbers ≥ 0 like \[.*pass e.g. -p {key}=\["):
        runner.plan(["text_stitching"], "offline", [override, "transform=ortho"])


def test_runs_on_other_data_get_their_own_names_and_other_settings_do_not(tmp_path, record_property):
    record_property("rerun", "a run on other data is stored under its own name, never over the default one")
    def name(*overrides):
        (run,) = runner.plan(["text_stitching"], "smoke", ["transform=ortho", *overrides])
        return run

    default = name()
    assert default.name == "text_stitching__transform-ortho" and default.variant == ""
    assert name("split_seed=0").name == default.name  # the profile's own value: the same run
    assert name("anchor_counts=[8,16]").name == default.name  # another setting, same data: the same run, re-executed
    other = name("split_seed=1")
    assert other.name == f"text_stitching__transform-ortho__data-{other.variant}" and len(other.variant) == 8
    assert other.variant != name("split_seed=2").variant and other.variant == name("split_seed=1").variant
    assert other.title.endswith(f"(data {other.variant})")
    table = tmp_path / "mine.csv"
    table.write_text("text,finding\na,1\n")
    assert name(f"dataset={table}").variant not in ("", other.variant)


def test_summaries_read_the_profile_s_own_runs_and_refuse_to_pool_different_data(isolated_work, record_property):
    record_property("rerun", "a summary refuses, in one line, to pool runs made on different data")
    folder = isolated_work / "results" / "smoke"
    folder.mkdir(parents=True)

    def write(run: str, experiment: str, data_id: str, variant: str = "") -> None:
        record = results.make_record(experiment=experiment, run=run, profile="smoke", metric="auroc", value=0.5)
        (folder / f"{run}.json").write_text(json.dumps({
            "run": run, "experiment": experiment, "profile": "smoke", "records": [record],
            "replicates": {"k": [0.5]}, "provenance": {"variant": variant, "data_id": data_id}}))

    write("text__affine", "text_stitching", "aaaa")
    write("text__ortho", "text_stitching", "aaaa")
    write("vision__ortho", "vision_stitching", "bbbb")  # other experiments are on other data, as they should be
    write("text__ortho__data-cccc", "text_stitching", "cccc", variant="cccc")
    pooled = results.load_records("smoke")
    assert sorted(pooled["run"]) == ["text__affine", "text__ortho", "vision__ortho"]
    assert set(results.load_records("smoke", variant=None)["run"]) == {*pooled["run"], "text__ortho__data-cccc"}
    assert set(results.load_records("smoke", variant="cccc")["run"]) == {"text__ortho__data-cccc"}
    with pytest.raises(SemalignError, match=r"no results of the runs on data 0000ffff .* lists each run's variant"):
        results.load_records("smoke", variant="0000ffff")
    # the summary of runs on other data reads them alone and is stored under their code
    (summary,) = runner.plan(["stitching_summary"], "smoke", ["experiment=text_stitching", "variant=cccc1234"])
    assert summary.name == "stitching_summary__experiment-text_stitching__data-cccc1234"
    assert summary.variant == "cccc1234" and summary.parameters["variant"] == "cccc1234"
    with pytest.raises(SemalignError, match=r"parameter 'variant' of stitching_summary: 'data-cccc1234' is not the "
                                            r"8-character code"):
        runner.plan(["stitching_summary"], "smoke", ["experiment=text_stitching", "variant=data-cccc1234"])
    write("text__ortho", "text_stitching", "dddd")  # e.g. its data file was edited before this run
    with pytest.raises(SemalignError, match=r"runs of text_stitching were made on different data and cannot be "
                                            r"pooled \(text__affine on data aaaa; text__ortho on data dddd\)"):
        results.load_records("smoke")
