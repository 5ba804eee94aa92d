"""The worked example of the method page on noise-free toy data, where the right
answer is known, and its sweep of anchor counts on planted noisy spaces: its
code cells run in-process (fast), and once through the runner as a user would
(slow)."""

from __future__ import annotations

import json

import matplotlib
import pytest
from conftest import semalign_cli

from semalign.study import runner
def execute_cells(workdir, monkeypatch, **parameters) -> dict:
    """The notebook's code cells run in this process, with ``parameters`` injected
    after its parameters cell as papermill would; returns the cells' namespace."""
    monkeypatch.setenv("SEMALIGN_WORKDIR", str(workdir))
    matplotlib.use("Agg")
    namespace: dict = {}
    for cell in runner.read_notebook("method_example").cells:
        if cell.cell_type == "code":
            exec(cell.source, namespace)
            if "parameters" in cell.metadata["tags"]:
                namespace.update(profile="smoke", **parameters)
    return namespace


def test_only_non_orthogonal_maps_recover_an_anisotropic_affine_map(tmp_path, monkeypatch):
    cells = execute_cells(tmp_path, monkeypatch, noise=0.0, affine_steps=1000, sweep_seeds=1)
    held_out = cells["residuals"]["held-out residual"]
    # Standard scaling plus linear in scaled space is an affine map of the raw space: exact.
    assert held_out["linear"] < 1e-8
    # Gradient descent gets there too, given enough steps (the long fit takes ten times affine_steps).
    assert cells["long_residual"] < 1e-3
    # A stretch along directions other than the axes cannot be undone by a rotation.
    assert held_out["ortho"] > 0.3 and held_out["l-ortho"] > 0.3
    # The anchors were fitted, not just the held-out points scored.
    assert cells["residuals"].loc["linear", "anchor residual"] < 1e-8


def test_orthogonal_maps_recover_a_rotation_with_a_shift(tmp_path, monkeypatch):
    cells = execute_cells(tmp_path, monkeypatch, noise=0.0, stretch=[1.0, 1.0], scaling="center", sweep_seeds=1)
    held_out = cells["residuals"]["held-out residual"]
    for kind in ("linear", "l-ortho", "ortho"):
        assert held_out[kind] < 1e-8, kind


def test_least_squares_peaks_at_the_interpolation_threshold_and_ridge_does_not(tmp_path, monkeypatch):
    """The claims of the section on n ≈ d, at the notebook's default parameters."""
    cells = execute_cells(tmp_path, monkeypatch)
    curve, d = cells["residual_curve"], cells["d"]
    linear, ridge = curve["linear"], curve["ridge"]
    # The minimum-norm map peaks where the centred anchors first reach rank d.
    assert curve["linear"].idxmax() == cells["peak"] == d + 1
    assert linear[d] > 3 * max(linear[d // 4], linear[4 * d])
    weight_norm = cells["curves"].loc["linear", "weight_norm"]
    assert weight_norm[d + 1] > 10 * max(weight_norm[d // 4], weight_norm[4 * d], cells["hidden_norm"])
    # Ridge has no peak: it improves steadily and stays below least squares at the threshold.
    assert ridge[d // 4] > ridge[d] > ridge[4 * d]
    assert ridge[d] < linear[d] / 3
    # l-ortho does not blow up but gets worse towards the threshold in these anisotropic spaces.
    assert curve["l-ortho"][d // 2] < curve["l-ortho"][d] < 2
    smallest = cells["curves"].loc["linear", "smallest_singular"]
    assert smallest.idxmin() == d + 1


def test_the_notebook_is_first_in_the_study_and_declares_its_parameters():
    assert runner.notebook_names()[0] == "method_example"
    parameters = runner.notebook_parameters("method_example")
    assert list(parameters)[:2] == ["profile", "run_name"]
    assert all(p.help for p in parameters.values()), "every parameter line needs a trailing comment"
    (run,) = runner.plan(["method_example"], "smoke")
    assert run.chapter == "Method"


@pytest.mark.slow
def test_the_runner_records_the_residuals_of_every_transform(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel inherits it: one torch thread
    semalign_cli(tmp_path, "run", "method_example", "--profile", "smoke", "--quiet", "-p", "noise=0")
    saved = json.loads((tmp_path / "results" / "smoke" / "method_example.json").read_text())
    held_out = {r["transform"]: r["value"] for r in saved["records"]
                if r["method"] == "aligned" and r["metric"] == "heldout_residual"}
    assert set(held_out) == {"affine", "linear", "l-ortho", "ortho"}
    assert held_out["linear"] < 1e-8 < 0.3 < held_out["ortho"]
    sweep = [r for r in saved["records"] if r["method"] == "anchor_sweep" and r["metric"] == "heldout_residual"]
    assert {r["transform"] for r in sweep} == {"affine", "linear", "l-ortho", "ortho", "ridge"}
    assert saved["parameters"]["sweep_dims"] == 64
    executed = json.loads((tmp_path / "executed" / "smoke" / "method_example.ipynb").read_text())
    assert executed["metadata"]["semalign"]["parameters"]["noise"] == 0
