"""The paper-scale rehearsal, at its tiny scale: synthetic MIMIC-CXR and RSNA
files, random models, `semalign embed` and the stitching notebooks of the paper
profile, each stage judged against a limit measured in the same run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from semalign.study import pages
from semalign.core.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow


def test_tiny_rehearsal_runs_every_stage_and_states_its_ratios(tmp_path, monkeypatch):
    env = {**os.environ, "SEMALIGN_WORKDIR": str(tmp_path / "outer")}
    proc = subprocess.run([sys.executable, "benchmarks/bench_paper_scale.py", "--scale", "tiny",
                           "--workdir", str(tmp_path / "rehearsal")], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "outer" / "benchmarks" / "paper-scale-tiny.json").read_text())
    assert set(result["stages"]) == {"embed_text", "embed_vision", "sweep_text", "sweep_vision"}
    assert all(stage["wall_s"] > 0 and stage["peak_rss_gb"] > 0 for stage in result["stages"].values())
    assert result["data"]["reports"] == 80 and result["data"]["rsna_dicoms"] == 80
    for limit in ("decode_jpeg", "decode_dicom", "forward_bert-base", "forward_roberta-base", "forward_vit-b16",
                  "forward_dinov2-b14"):
        assert result["limits"][limit]["per_s"] > 0, limit
    assert 0 < result["ratios"]["embed_text_vs_forward"] and 0 < result["ratios"]["embed_vision_vs_limit"]
    assert [c["images"] for c in result["memory_curve"]] == [20, 40, 80]
    assert all(c["peak_rss_gb"] > 0 for c in result["memory_curve"])
    assert "ratio" in proc.stdout and "(target >= 0.5)" in proc.stdout
    # the sweeps ran on the paper profile under its own run names, reading what semalign embed cached
    results = tmp_path / "rehearsal" / "work" / "results" / "paper"
    assert sorted(p.name for p in results.glob("*.json")) == ["text_stitching__transform-ortho.json",
                                                              "vision_stitching__transform-ortho.json"]
    # and the appendix shows it
    monkeypatch.setenv("SEMALIGN_WORKDIR", str(tmp_path / "outer"))
    page = pages.benchmarks_page()
    assert "Scale `tiny`" in page and f"| {result['ratios']['embed_text_vs_forward']} |" in page
