"""The bad-input catalogue: every way a user's input can be wrong gets one line
that names the input and the fix, and, through the command line, exit status 2
with no Python traceback.

One test here per catalogue item (each records its item with
``record_property("bad_input", ...)``, which ``benchmarks/bench_reliability.py``
counts). Narrower checks of the same errors live next to the code they test.
Item: test here (also covered by).

- missing data file: test_missing_data_file (test_data: table that does not
  exist, manifest status ``missing``)
- truncated data file: test_truncated_data_file
  (test_data::test_truncated_archive_gives_a_one_line_error)
- wrong checksum: test_wrong_checksum (test_data::test_manifest_verify_...,
  test_encoders::test_damaged_packaged_weights_are_refused)
- corrupt image: test_corrupt_image (test_images: truncated and corrupt PNG and
  JPEG, unsupported types)
- corrupt DICOM: test_corrupt_dicom (test_images: truncated DICOM, no pixel data)
- empty report text: test_empty_report_text
  (test_data::test_table_dataset_loads_and_counts_dropped_rows)
- a label column that does not exist: test_missing_label_column, and through
  ``semalign run`` and papermill: test_missing_label_column_through_a_notebook_run
  (slow) (test_data::test_table_dataset_errors_name_the_file_and_the_fix)
- unknown encoder: test_unknown_encoder (test_encoders::test_unknown_name_...,
  test_embed::test_bad_inputs)
- encoder folder without weights: test_encoder_folder_without_weights
  (test_encoders::test_folder_without_weights_is_named)
- anchor count larger than the pool: test_anchor_count_larger_than_the_pool
  (test_stitching::test_anchor_count_above_the_pool_is_refused,
  test_align::test_select_anchors_bad_input_raises)
- non-numeric parameter: test_non_numeric_parameter
  (test_runner::test_bad_parameters_are_refused_with_the_valid_choices)
- NaN embeddings from a broken model: test_nan_embeddings_from_a_broken_model
  (test_embed::test_nan_output_is_an_error)
- a notebook name that does not exist: test_unknown_notebook_name
  (test_runner::test_cli_prints_one_line_error_and_exits_2)
- rows dropped for a reason are counted and reported:
  test_dropped_rows_are_counted_and_reported
  (test_data::test_iu_reports_match_the_manifest_counts)
- beyond the issue's list: test_unreadable_results_file,
  test_bad_shard_size_setting

Damaged *cache* entries are not user errors: they are detected, reported and
recomputed (``tests/test_interrupt.py``, ``tests/test_embed.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from semalign.study import cli  # noqa: E402

from semalign.data import reports as data

from semalign.models import encoders

from semalign.data import manifest
from semalign.models.embed import embed  # noqa: E402
from semalign.models.encoders import EncoderSpec  # noqa: E402
from semalign.core.errors import SemalignError  # noqa: E402
from semalign.data.images import load_image, real_sample_images  # noqa: E402
from semalign.experiments.stitching import StitchingSetup, stitching_records  # noqa: E402


def one_line(error: BaseException | str, *needles: str) -> str:
    """The message is a single line and contains every needle (the input, the fix)."""
    message = str(error)
    assert "\n" not in message, f"more than one line: {message!r}"
    for needle in needles:
        assert needle in message, f"{needle!r} missing from: {message}"
    return message


def cli_error(capsys, *args: str) -> str:
    """Run the command line in this process; it must fail with one `error:` line and status 2."""
    status = cli.main(list(args))
    captured = capsys.readouterr()
    assert status == 2, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def cli_process_error(workdir: Path, *args: str, timeout: int = 600) -> str:
    """Run ``python -m semalign`` as a user would; it must exit 2 with one `error:` line, no traceback."""
    env = {**os.environ, "SEMALIGN_WORKDIR": str(workdir), "SEMALIGN_CACHE": str(workdir / "cache")}
    proc = subprocess.run([sys.executable, "-m", "semalign", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr[-3000:]
    return errors[0]


@pytest.fixture
def iu_entry():
    return dict(manifest.load_manifest()["sources"]["iu_xray_reports"])


@pytest.fixture
def patched_sources(monkeypatch, iu_entry):
    """Replace the IU reports' manifest entry in the offline sources; returns a setter."""
    real = manifest.load_manifest()

    def set_entry(**changes):
        entry = {**iu_entry, **changes}
        patched = {**real, "sources": {**real["sources"], "iu_xray_reports": entry}}
        monkeypatch.setattr(manifest, "load_manifest", lambda path=None: patched)
        return entry

    return set_entry


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "reports.csv"
    pd.DataFrame({"report": ["Heart is enlarged.", "Clear lungs.", "Small effusion."],
                  "cardio": [1, 0, 0]}).to_csv(path, index=False)
    return path


def test_missing_data_file(record_property, capsys, tmp_path, patched_sources):
    record_property("bad_input", "missing data file")
    path = tmp_path / "gone.csv"
    with pytest.raises(SemalignError) as info:
        data.load_report_table(path, "report", ["cardio"])
    one_line(info.value, str(path), "does not exist", "-p dataset=")
    # a manifest source that is not installed: `semalign data verify` names it and the install command
    entry = patched_sources(locate={"package": "no_such_package_semalign", "inside": "x.tgz"})
    line = cli_error(capsys, "data", "verify")
    one_line(line, "iu_xray_reports is missing", entry["install"])
    with pytest.raises(SemalignError) as info:
        manifest.require_source("iu_xray_reports")
    one_line(info.value, "iu_xray_reports", "missing", entry["install"])


def test_truncated_data_file(record_property, capsys, tmp_path, monkeypatch, patched_sources, iu_entry):
    record_property("bad_input", "truncated data file")
    good = manifest.locate(iu_entry)
    cut = tmp_path / "NLMCXR_reports.tgz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(SemalignError) as info:
        data.parse_iu_archive(cut)
    one_line(info.value, str(cut), "truncated", "pip install --force-reinstall")
    # the installed file itself truncated: verify and every loader refuse it by checksum
    monkeypatch.setattr(manifest, "locate", lambda entry: cut)
    line = cli_error(capsys, "data", "verify")
    one_line(line, "iu_xray_reports is corrupt", str(cut), "--force-reinstall")
    with pytest.raises(SemalignError) as info:
        data.load_iu_reports()
    one_line(info.value, "iu_xray_reports", str(cut), "--force-reinstall")
    # a truncated Parquet table
    parquet = tmp_path / "reports.parquet"
    pd.DataFrame({"report": ["a"] * 50, "y": [1] * 50}).to_parquet(parquet)
    parquet.write_bytes(parquet.read_bytes()[:-40])
    with pytest.raises(SemalignError) as info:
        data.load_report_table(parquet, "report", ["y"])
    one_line(info.value, str(parquet), "truncated", "export or copy it again")


def test_wrong_checksum(record_property, capsys, patched_sources):
    record_property("bad_input", "wrong checksum")
    patched_sources(sha256="0" * 64)
    line = cli_error(capsys, "data", "verify")
    one_line(line, "iu_xray_reports is corrupt", "differs from the manifest", "--force-reinstall")
    with pytest.raises(SemalignError) as info:
        data.load_iu_reports()
    one_line(info.value, "iu_xray_reports", "sha256", "--force-reinstall")


def test_corrupt_image(record_property, tmp_path):
    record_property("bad_input", "corrupt image")
    source = real_sample_images()[0].path
    flipped = tmp_path / source.name
    raw = bytearray(source.read_bytes())
    raw[200:4200] = bytes(4000)  # zero the Huffman tables and the start of the scan
    flipped.write_bytes(bytes(raw))
    truncated = tmp_path / "truncated.jpeg"
    truncated.write_bytes(source.read_bytes()[:1500])
    refused_as_unreadable(flipped, truncated)


def test_corrupt_dicom(record_property, tmp_path):
    record_property("bad_input", "corrupt DICOM")
    source = real_sample_images()[-1].path  # a real chest radiograph, RG1_UNCR.dcm
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(source.read_bytes()[:5000])
    garbled = tmp_path / "garbled.dcm"
    raw = bytearray(source.read_bytes())
    raw[132:2132] = bytes(range(250)) * 8  # the header after the DICM magic
    garbled.write_bytes(bytes(raw))
    refused_as_unreadable(truncated, garbled)


def refused_as_unreadable(*paths) -> None:
    """Each damaged image file is refused in one line that names it and says how to fix it."""
    for path in paths:
        with pytest.raises(SemalignError) as info:
            load_image(path)
        one_line(info.value, str(path), "re-export or copy the file again")


def test_empty_report_text(record_property, tmp_path):
    record_property("bad_input", "empty report text")
    path = tmp_path / "blank.csv"
    pd.DataFrame({"report": ["", "   ", None], "cardio": [1, 0, 1]}).to_csv(path, index=False)
    with pytest.raises(SemalignError) as info:
        data.load_report_table(path, "report", ["cardio"])
    one_line(info.value, str(path), "none of its 3 rows", "3 (empty report text)", "fill column 'report'")
    # some empty rows: dropped, counted and reported in one warning naming the file
    path = tmp_path / "some_blank.csv"
    pd.DataFrame({"report": ["Heart is enlarged.", "", "Clear lungs."], "cardio": [1, 0, 0]}).to_csv(path, index=False)
    with pytest.warns(UserWarning) as caught:
        reports = data.load_report_table(path, "report", ["cardio"])
    assert len(reports) == 2 and reports.dropped["empty report text"] == 1
    (warning,) = caught
    one_line(warning.message, str(path), "dropped 1 of 3 rows", "empty report text")


def test_missing_label_column(record_property, table):
    record_property("bad_input", "label column that does not exist")
    with pytest.raises(SemalignError) as info:
        data.load_report_table(table, "report", ["finding"])
    one_line(info.value, str(table), "['finding']", "columns are ['report', 'cardio']", "-p label_columns=")
    with pytest.raises(SemalignError) as info:
        data.load_report_table(table, "text", ["cardio"])
    one_line(info.value, str(table), "['text']", "-p text_column=")
    with pytest.raises(SemalignError) as info:
        data.load_report_table(table, "report", [])
    one_line(info.value, str(table), "label_columns is empty", "-p label_columns=")


def test_table_columns_named_for_a_dataset_that_has_its_own(record_property):
    record_property("bad_input", "text_column or label_columns given for iu_xray or mimic_cxr (they would be ignored)")
    from semalign.experiments.inputs import report_dataset

    with pytest.raises(SemalignError) as info:
        report_dataset("iu_xray", label_columns=["Nodule"], max_reports=50)
    one_line(info.value, "label_columns", "dataset=iu_xray", "leave label_columns at the default")
    with pytest.raises(SemalignError) as info:
        report_dataset("mimic_cxr", data_root="/nowhere", text_column="impression")
    one_line(info.value, "text_column", "dataset=mimic_cxr", "leave text_column at the default")


@pytest.mark.slow
def test_missing_label_column_through_a_notebook_run(record_property, table, tmp_path):
    """The same mistake made on the command line reaches the user through papermill as one line."""
    record_property("bad_input", "label column that does not exist (command line, executed notebook)")
    line = cli_process_error(
        tmp_path / "work", "run", "text_stitching", "--profile", "smoke", "--quiet", "-p", "transform=ortho",
        "-p", f"dataset={table}", "-p", "text_column=report", "-p", "label_columns=[finding]",
    )
    # the kernel runs in the work folder: the file is named from there, as the records store it
    one_line(line, "notebook text_stitching", os.path.relpath(table, tmp_path / "work"), "['finding']", "-p label_columns=")
    assert not list((tmp_path / "work" / "results").rglob("*.json"))  # a failed run records nothing


def test_unknown_encoder(record_property):
    record_property("bad_input", "unknown encoder")
    with pytest.raises(SemalignError) as info:
        encoders.resolve_encoder("minlm")
    one_line(info.value, "'minlm'", "built-in encoders: minilm", "hf-text:<folder")
    with pytest.raises(SemalignError) as info:
        embed("minlm", ["a"], ["text"], progress=False)
    one_line(info.value, "'minlm'", "built-in encoders")


def test_encoder_folder_without_weights(record_property, tmp_path):
    record_property("bad_input", "encoder folder without weights")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(SemalignError) as info:
        encoders.load_encoder(f"hf-text:{tmp_path}", device="cpu")
    one_line(info.value, str(tmp_path), "no model weights", "model.safetensors", "save_pretrained()")


def test_anchor_count_larger_than_the_pool(record_property):
    record_property("bad_input", "anchor count larger than the anchor pool")
    rng = np.random.default_rng(0)
    embeddings = {"x": rng.normal(size=(80, 6)), "y": rng.normal(size=(80, 5))}
    labels = (rng.random((80, 1)) > 0.5).astype(int)
    setup = StitchingSetup(embeddings, labels, np.arange(50), np.arange(50, 80), "ortho", [16, 64, 100], [0])
    with pytest.raises(SemalignError) as info:
        stitching_records(setup, progress=False)
    one_line(info.value, "anchor_counts=[16, 64, 100]", "asks for 64, 100 anchors", "leave 50 fit items (the anchor pool)",
             "pass counts ≤ 50 (-p anchor_counts=[16])")


def test_non_numeric_parameter(record_property, capsys, tmp_path):
    record_property("bad_input", "non-numeric parameter")
    line = cli_process_error(tmp_path, "run", "text_stitching", "--profile", "smoke", "-p", "seeds=abc")
    one_line(line, "'seeds'", "text_stitching", "'abc'", "-p seeds=[0,1,2]")
    for override, needles in (("max_reports=abc", ("'max_reports'", "'abc'", "-p max_reports=0")),
                              ("anchor_counts=[8,x]", ("'anchor_counts'", "[8,x]", "-p anchor_counts=[")),
                              ("test_fraction=lots", ("'test_fraction'", "'lots'", "-p test_fraction=0.3"))):
        one_line(cli_error(capsys, "run", "text_stitching", "-p", override), *needles)


class BrokenModel:
    """A loaded encoder whose model returns NaN rows for some inputs."""

    def __init__(self, bad_texts):
        self.spec = EncoderSpec(name="broken-model", modality="text", family="hf-text", source="/nowhere")
        self.fingerprint, self.dim, self.bad_texts = "broken-model-v1", 4, set(bad_texts)

    def encode(self, texts, batch_size=None, callback=None):
        out = np.ones((len(texts), self.dim), np.float32)
        out[[i for i, t in enumerate(texts) if t in self.bad_texts], 2] = np.nan
        return out


def test_nan_embeddings_from_a_broken_model(record_property, tmp_path, monkeypatch):
    record_property("bad_input", "NaN embeddings from a broken model")
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr("semalign.models.embed.BLOCK", 5)  # a block a shard, so the first one completes
    texts = [f"report {i}" for i in range(10)]
    ids = [f"r{i}" for i in range(10)]
    with pytest.raises(SemalignError) as info:
        embed(BrokenModel({"report 6", "report 8"}), ids, texts, shard_size=5, progress=False)
    one_line(info.value, "encoder 'broken-model'", "NaN/inf embeddings for 2 of 5 items", "r6", "precision='fp32'")
    # the good first shard is kept; nothing of the broken one is cached
    (folder,) = (tmp_path / "embeddings").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "shard-00000.safetensors"]
    assert not json.loads((folder / "manifest.json").read_text())["complete"]


def test_unknown_notebook_name(record_property, tmp_path):
    record_property("bad_input", "notebook name that does not exist")
    line = cli_process_error(tmp_path, "run", "text_stiching", "--profile", "smoke")
    one_line(line, "'text_stiching'", "valid notebooks:", "text_stitching")


def test_dropped_rows_are_counted_and_reported(record_property, tmp_path):
    record_property("bad_input", "rows dropped for a reason are counted and reported")
    path = tmp_path / "mixed.csv"
    pd.DataFrame({"report": ["Enlarged heart.", "", "Clear.", "Effusion.", "Nodule."],
                  "cardio": [1, 0, 0, None, None]}).to_csv(path, index=False)
    with pytest.warns(UserWarning) as caught:
        reports = data.load_report_table(path, "report", ["cardio"])
    assert reports.dropped == {"empty report text": 1, "label missing": 2}
    assert len(reports) + sum(reports.dropped.values()) == 5
    one_line(caught[0].message, str(path), "dropped 3 of 5 rows", "1 (empty report text)", "2 (label missing)")
    # labels coded otherwise than 0/1 are not a few bad rows: the table stops, naming the column and values
    pd.DataFrame({"report": ["a.", "b.", "c.", "d."], "cardio": [1, 2, 2, "yes"]}).to_csv(path, index=False)
    with pytest.raises(SemalignError) as info:
        data.load_report_table(path, "report", ["cardio"])
    one_line(info.value, str(path), "label column 'cardio'", "'2', 'yes'", "in 3 rows", "recode it")
    # the IU archive's reports without text: counted, and the total adds up to the archive
    iu = data.load_iu_reports()
    counts = manifest.load_manifest()["sources"]["iu_xray_reports"]["counts"]
    assert len(iu) + iu.dropped["no FINDINGS or IMPRESSION section"] == counts["xml_reports"]
    assert iu.dropped_summary() == f"{counts['xml_reports'] - len(iu)} (no FINDINGS or IMPRESSION section)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean table loads silently
        clean = tmp_path / "clean.csv"
        pd.DataFrame({"report": ["a", "b"], "cardio": [0, 1]}).to_csv(clean, index=False)
        assert data.load_report_table(clean, "report", ["cardio"]).dropped_summary() == "none"


def test_unreadable_results_file(record_property, capsys, tmp_path, monkeypatch):
    record_property("bad_input", "unreadable results file")
    monkeypatch.setenv("SEMALIGN_WORKDIR", str(tmp_path))
    folder = tmp_path / "results" / "smoke"
    folder.mkdir(parents=True)
    (folder / "text_stitching__transform-ortho.json").write_text('{"run": "text_stit')
    line = cli_error(capsys, "results", "--profile", "smoke", "--json")
    one_line(line, "text_stitching__transform-ortho.json", "unreadable", "re-run its notebook")


def test_bad_shard_size_setting(record_property, tmp_path, monkeypatch):
    record_property("bad_input", "bad SEMALIGN_SHARD_SIZE setting")
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    monkeypatch.setenv("SEMALIGN_SHARD_SIZE", "lots")
    with pytest.raises(SemalignError) as info:
        embed(BrokenModel(()), ["a"], ["text"], progress=False)
    one_line(info.value, "SEMALIGN_SHARD_SIZE='lots'", "positive integer", "unset it")


def test_the_medical_text_encoder_is_a_fixed_model_that_never_sees_a_test_report(tmp_path, monkeypatch):
    from semalign.experiments import inputs

    iu = data.load_reports()
    default_train, _ = data.split_indices(len(iu), 0.3, 0)
    fixed = inputs.medical_training_reports()
    assert fixed.ids == [iu.ids[i] for i in default_train]
    # evaluated on IU with another split: that split's test reports are left out, nothing else
    train, test = data.split_indices(len(iu), 0.3, 1)
    other = inputs.medical_training_reports(iu, test)
    assert not set(other.ids) & {iu.ids[i] for i in test}
    assert set(other.ids) == set(fixed.ids) - {iu.ids[i] for i in test}
    # a user's own table with the default encoders: trained on the IU reports, not on the table
    table = tmp_path / "mine.csv"
    table.write_text("text,finding\n" + "".join(f"report {i},{i % 2}\n" for i in range(20)))
    mine = data.load_reports(str(table), "text", ["finding"])
    seen = {}
    monkeypatch.setattr("semalign.models.radiology_bert.radiology_bert_spec",
                        lambda reports, config, progress: seen.setdefault("reports", reports))
    inputs.text_encoders(["minilm", "radiology-bert"], mine, np.arange(10, 20), progress=False)
    assert seen["reports"].ids == fixed.ids


def test_a_split_that_leaves_nothing_to_train_or_test_on_is_refused_and_a_tiny_one_is_flagged():
    with pytest.raises(SemalignError, match=r"test_fraction=0.999 of 100 items leaves 0 for training and 100 for "
                                            r"testing; pass e.g. -p test_fraction=0.3"):
        data.split_indices(100, 0.999, 0)
    with pytest.warns(UserWarning, match=r"only 15 test items \(test_fraction=0.3 of 50\)"):
        data.split_indices(50, 0.3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data.split_indices(200, 0.3, 0)  # 60 test items: no warning


def test_duplicate_and_overlong_reports_of_a_user_table_are_flagged(tmp_path):
    from semalign.experiments import inputs

    rows = [f"report number {i} {'effusion' if i % 2 else 'clear'}" for i in range(100)]
    rows[:30] = ["no acute disease"] * 30  # repeated rows: some land in the test split, some in training
    rows[9] = "x" * (inputs.LONG_REPORT + 1)
    table = tmp_path / "mine.csv"
    pd.DataFrame({"text": rows, "finding": [i % 2 for i in range(100)]}).to_csv(table, index=False)
    with pytest.warns(UserWarning) as caught:
        reports, train, test = inputs.report_dataset(str(table), label_columns=["finding"], split_seed=3)
    messages = [str(w.message) for w in caught]
    repeated = sum(reports.texts[i] == "no acute disease" for i in test)
    assert 0 < repeated < 30
    assert any(f"{repeated} of 30 test reports repeat a training report's text" in m for m in messages)
    assert any(f"1 of 100 reports are longer than {inputs.LONG_REPORT} characters" in m for m in messages)


@pytest.mark.parametrize("blocked", ["file", "under_a_file"])
def test_a_work_folder_that_cannot_be_written_is_one_line(tmp_path, blocked):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    workdir = blocker if blocked == "file" else blocker / "work"
    proc = subprocess.run([sys.executable, "-m", "semalign", "run", "data_overview", "--profile", "smoke"],
                          capture_output=True, text=True, env={**os.environ, "SEMALIGN_WORKDIR": str(workdir)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "SEMALIGN_WORKDIR" in line and str(blocker) in line


def test_a_table_that_is_not_utf8_says_so_and_how_to_convert(record_property, tmp_path):
    record_property("bad_input", "a report table that is not UTF-8")
    path = tmp_path / "latin.csv"
    path.write_bytes("text,finding\nÉpanchement pleural,1\nnormal,0\n".encode("latin-1"))
    with pytest.raises(SemalignError) as info:
        data.load_report_table(path, "text", ["finding"])
    one_line(info.value, str(path), "is not UTF-8 text", "iconv -f latin1 -t utf-8 latin.csv > latin-utf8.csv")


def test_a_label_of_one_class_is_named_and_more_of_the_same_data_is_not_the_advice(record_property, tmp_path):
    record_property("bad_input", "a label column that is one class in every row")
    path = tmp_path / "reports.csv"
    pd.DataFrame({"text": [f"report {i}" for i in range(20)], "a": [0] * 20, "b": [i % 2 for i in range(20)]}
                 ).to_csv(path, index=False)
    with pytest.warns(UserWarning, match="'a' is 0 in every row, so it is not scored"):
        data.load_report_table(path, "text", ["a", "b"])
    with pytest.raises(SemalignError) as info:
        data.load_report_table(path, "text", ["a"])
    one_line(info.value, "'a' is 0 in every row of 20 usable rows", "more rows of the same data cannot help",
             "drop it from label_columns")


class ConstantModel:
    """A loaded text encoder with a fixed output: enough to fill an embedding cache entry."""

    def __init__(self):
        self.spec = EncoderSpec(name="constant-model", modality="text", family="hf-text", source="/nowhere")
        self.fingerprint, self.dim = "constant-model-v1", 3

    def encode(self, texts, batch_size=None, callback=None):
        return np.tile(np.arange(self.dim, dtype=np.float32), (len(texts), 1)) + np.array(
            [[len(t)] for t in texts], np.float32)


def test_damaged_embedding_entries_of_the_wrong_kind_or_without_manifest_are_reported_and_recomputed(
        record_property, tmp_path, monkeypatch):
    record_property("cache_damage", "embedding manifest deleted, or replaced by a folder; a shard replaced by a folder")
    import shutil

    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    texts, ids = [f"report {i}" for i in range(12)], [f"r{i}" for i in range(12)]
    first = embed(ConstantModel(), ids, texts, shard_size=5, progress=False)
    (folder,) = (tmp_path / "embeddings").iterdir()
    damage = [("manifest.json", "unlink", r"manifest .* is missing beside its shards"),
              ("manifest.json", "folder", r"is damaged \(a folder where a file belongs\); recomputing it"),
              ("shard-00001.safetensors", "folder", r"is damaged \(a folder where a file belongs\); recomputing it")]
    for name, how, warning in damage:
        (folder / name).unlink()
        if how == "folder":
            (folder / name).mkdir()
        with pytest.warns(UserWarning, match=warning):
            again = embed(ConstantModel(), ids, texts, shard_size=5, progress=False)
        np.testing.assert_array_equal(again, first)
        assert (folder / name).is_file()
    shutil.rmtree(folder)


def test_cache_files_and_folders_of_the_wrong_kind_are_damage_inside_the_cache_and_the_user_s_outside(
        record_property, tmp_path, monkeypatch):
    record_property("cache_damage", "a cache file replaced by a folder; a cache folder replaced by a file")
    from semalign.core import cache

    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path / "cache"))
    entry = tmp_path / "cache" / "few-shot" / "entry.json"
    entry.mkdir(parents=True)
    with pytest.warns(UserWarning, match=r"is damaged \(a folder where a file belongs\); recomputing it"):
        assert cache.read_checked_json(entry) is None
    cache.write_checked_json(entry, {"a": 1})
    assert cache.read_checked_json(entry) == {"a": 1}
    built = tmp_path / "cache" / "encoders" / "thing"
    built.parent.mkdir(parents=True)
    built.write_text("not a folder")
    with pytest.warns(UserWarning, match=r"is damaged \(a file where a folder belongs\)"):
        cache.build_folder(built, lambda tmp: (tmp / "w.bin").write_bytes(b"1") and {}, description="d.json",
                           checked="w.bin")
    assert (built / "w.bin").read_bytes() == b"1"
    (built / "d.json").unlink()  # a description deleted: said, and built again
    with pytest.warns(UserWarning, match=r"is damaged \(d.json missing or not a file\); building it again"):
        cache.build_folder(built, lambda tmp: (tmp / "w.bin").write_bytes(b"1") and {}, description="d.json",
                           checked="w.bin")
    mine = tmp_path / "work" / "notebook.ipynb"  # outside the cache a folder in the way is the user's
    mine.mkdir(parents=True)
    with pytest.raises(SemalignError) as info:
        with cache.atomic_path(mine):
            pass
    one_line(info.value, str(mine), "is a folder where the study writes a file; move it away")
    assert mine.is_dir()
