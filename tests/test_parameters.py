"""Parameters are checked before any kernel starts, from one declaration per
parameter (``semalign.study.parameters``), and the error names the parameter,
the value and the fix. Each refused value is a catalogue item of
``benchmarks/bench_reliability.py`` (``record_property("bad_input", ...)``)."""

from __future__ import annotations

import re

import pytest

from semalign.data import reports as data
from semalign.core.errors import SemalignError
from semalign.experiments import inputs
from semalign.study import cli, parameters, runner


def test_every_parameter_of_every_notebook_is_declared():
    for notebook in runner.notebook_names():
        for name in runner.notebook_parameters(notebook):
            if name not in runner.RESERVED_PARAMETERS:
                assert parameters.declared(notebook, name) is not None, f"{notebook}: {name} has no rule"


@pytest.mark.parametrize("profile", ["offline", "smoke", "paper"])
def test_every_default_and_profile_value_passes_its_rule(profile):
    assert runner.plan(["all"], profile)  # raises on the first value its rule refuses


REFUSED = [
    ("transform given in capitals", ["text_stitching", "-p", "transform=ORTHO"],
     "transform='ORTHO' is not one of affine, linear, l-ortho, ortho (-p transform=ortho)"),
    ("transform the notebooks do not run", ["text_stitching", "-p", "transform=ridge"],
     "transform='ridge' is not one of affine, linear, l-ortho, ortho"),
    ("anchor count of zero", ["text_stitching", "-p", "anchor_counts=[0]"],
     "anchor_counts=[0] is not a non-empty list of distinct whole numbers ≥ 1 (-p anchor_counts=[8,16,"),
    ("empty encoder list", ["text_stitching", "-p", "encoders=[]"],
     "encoders=[] is not a non-empty list of names (-p encoders=[\"minilm\",\"mpnet\",\"radiology-bert\"])"),
    ("test_fraction outside (0, 1)", ["text_stitching", "-p", "test_fraction=1.5"],
     "test_fraction=1.5 is outside (0, 1) (-p test_fraction=0.3)"),
    ("too few phantom images", ["vision_stitching", "-p", "n_images=3"], "n_images=3 is outside [10, ∞)"),
    ("a target that is not among the encoders", ["text_stitching", "-p", "targets=[mpnet2]"],
     "targets=['mpnet2'] names mpnet2, not among encoders=['minilm', 'mpnet', 'radiology-bert']"),
    ("anchor counts larger than the split n_images leaves", ["vision_stitching", "--profile", "smoke", "-p", "n_images=30"],
     "anchor_counts=[16, 64, 128] asks for 64, 128 anchors, but n_images=30, test_fraction=0.3, "
     "validation_fraction=0.2 leave 17 fit items (the anchor pool): pass counts ≤ 17 (-p anchor_counts=[16])"),
    ("anchor counts larger than the split max_reports leaves", ["text_stitching", "-p", "max_reports=50"],
     "but max_reports=50, test_fraction=0.3, validation_fraction=0.2 leave 28 fit items"),
    ("a zero-shot transform list with an unknown transform", ["zero_shot", "-p", "transforms=[affine,ridge]"],
     "transforms=['affine', 'ridge'] is not a non-empty list of distinct values among affine, linear, l-ortho, ortho"),
    ("a split with no test item", ["data_overview", "-p", "max_reports=3", "-p", "test_fraction=0.1"],
     "test_fraction=0.1 of max_reports=3 leaves 3 item(s) for training and 0 for testing"),
    ("a parameter given twice", ["data_overview", "-p", "max_reports=20", "-p", "max_reports=30"],
     "parameter 'max_reports' is given more than once (-p max_reports=20, -p max_reports=30); give it once"),
    ("a folder given as dataset", ["text_stitching", "-p", "dataset=/"], "dataset='/' is a folder; give a .csv"),
    ("a dataset path too long for the file system", ["text_stitching", "-p", f"dataset={'a' * 5000}.csv"],
     "is too long to be a path"),
    ("an image dataset that does not exist", ["vision_stitching", "-p", "dataset=phantoms"],
     "dataset='phantoms' is not one of phantom, mimic_cxr, rsna_pneumonia, vindr_cxr, chexpert (-p dataset=phantom)"),
    ("more anchors than points in the method example", ["method_example", "-p", "n_anchors=400"],
     "n_anchors=400 exceeds n_points=300"),
]


@pytest.mark.parametrize("item, args, message", REFUSED, ids=[item for item, _, _ in REFUSED])
def test_a_bad_value_stops_before_a_kernel_starts_naming_the_parameter(item, args, message, isolated_work, capsys,
                                                                       record_property):
    record_property("bad_input", f"parameter value: {item}")
    assert cli.main(["run", *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not list(isolated_work.rglob("*.ipynb"))  # no executed and no failed notebook: nothing ran


def test_a_symbolic_link_loop_as_dataset_is_named(isolated_work, tmp_path, capsys, record_property):
    record_property("bad_input", "parameter value: a symbolic link loop given as dataset")
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    assert cli.main(["run", "text_stitching", "-p", f"dataset={loop}"]) == 2
    assert "is a symbolic link that leads nowhere (a loop or a missing target)" in capsys.readouterr().err


@pytest.mark.parametrize("n, test_fraction, validation_fraction", [(2000, 0.3, 0.2), (240, 0.3, 0.2), (37, 0.25, 0.1)])
def test_the_pool_checked_before_a_kernel_is_the_pool_the_notebook_splits(n, test_fraction, validation_fraction):
    train, _ = data.split_indices(n, test_fraction, seed=0)
    fit, _ = data.validation_split(train, validation_fraction, seed=0)
    values = dict(dataset="phantom", n_images=n, test_fraction=test_fraction, validation_fraction=validation_fraction)
    assert parameters.fit_pool(values)[0] == len(fit)


def test_the_iu_xray_pool_checked_before_a_kernel_is_the_one_the_notebook_splits():
    _, train, _ = inputs.report_dataset("iu_xray", max_reports=0, test_fraction=0.3, split_seed=0)
    fit, _ = data.validation_split(train, 0.2, 0)
    assert parameters.fit_pool(dict(dataset="iu_xray", max_reports=0, test_fraction=0.3,
                                    validation_fraction=0.2))[0] == len(fit)


def test_what_only_the_data_tells_is_checked_after_loading_in_the_same_words():
    from semalign.experiments.stitching import check_anchor_counts

    with pytest.raises(SemalignError, match=re.escape("anchor_counts=[8, 64] asks for 64 anchors, but the data and its "
                                                      "split leave 40 fit items (the anchor pool): pass counts ≤ 40 "
                                                      "(-p anchor_counts=[8])")):
        check_anchor_counts([8, 64], 40, "the data and its split")


def test_a_failure_quotes_the_line_that_failed_not_the_cell_s_first():
    source = "import numpy as np\nx = 1\nresult = load(x)\nprint(result)"
    traceback = ["\x1b[0;31m------------------\x1b[0m",
                 "Cell \x1b[0;32mIn[3], line 3\x1b[0m\n\x1b[1;32m      1\x1b[0m import numpy as np\n"
                 "\x1b[1;32m      2\x1b[0m x = 1\n\x1b[0;32m----> 3\x1b[0m result \x1b[38;5;241m=\x1b[39m load(x)",
                 "File semalign/data/reports.py:12, in load(x)\n---> 12 raise SemalignError('bad')"]
    assert runner.failing_line(source, traceback) == "result = load(x)"
    assert runner.failing_line(source, []) == "import numpy as np"
