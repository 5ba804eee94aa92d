"""`semalign embed`: the embedding cache filled ahead of a run, by one process or
by two (torchrun, the launcher `accelerate launch --multi_gpu` uses; accelerate's
own launcher starts several CPU processes only through MPI)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from semalign.core.paths import PROJECT_ROOT as REPO

pytestmark = pytest.mark.slow

# Smaller blocks, so that the smoke profile's 400 reports make several and both
# processes get some (with the study's 4,096 one process would take them all).
LAUNCHER = """
import sys
import semalign.models.embed as embed
embed.BLOCK = 64
from semalign.study.cli import main
sys.exit(main())
"""


def _environment(workdir: Path) -> dict:
    return {**os.environ, "SEMALIGN_WORKDIR": str(workdir), "SEMALIGN_CACHE": str(workdir / "cache"),
            "SEMALIGN_SHARD_SIZE": "32", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _embed(workdir: Path, launcher: Path, processes: int) -> subprocess.CompletedProcess:
    start = [sys.executable, str(launcher)]
    if processes > 1:
        start = [str(Path(sys.executable).parent / "torchrun"), "--standalone", f"--nproc_per_node={processes}",
                 str(launcher)]
    return subprocess.run([*start, "embed", "text_stitching", "--profile", "smoke", "--quiet"],
                          env=_environment(workdir), cwd=REPO, capture_output=True, text=True, timeout=600)


def test_two_processes_fill_the_cache_one_process_fills_and_the_notebook_reads_it(tmp_path):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    workdir = tmp_path / "work"
    # the same cache path for both, one after the other, so manifests that name it compare equal
    alone = _embed(workdir, launcher, 1)
    assert alone.returncode == 0, alone.stderr[-2000:]
    # only the embeddings move aside: the trained radiology-bert stays, so the two processes do not train it again
    (workdir / "cache" / "embeddings").rename(tmp_path / "embeddings-one")
    shared = _embed(workdir, launcher, 2)
    assert shared.returncode == 0, shared.stderr[-2000:]
    assert "process 1 of 2" in shared.stdout and "2 of 2 entries complete" in shared.stdout, shared.stdout

    embeddings = workdir / "cache" / "embeddings"
    filled = _files(embeddings)
    assert any(name.endswith("shard-00012.safetensors") for name in filled)  # 400 reports / 32: 13 shards each
    assert not any("part-" in name for name in filled)
    assert filled == _files(tmp_path / "embeddings-one")  # item for item, byte for byte

    # the notebook finds every embedding cached: nothing is written to the embedding cache
    run = subprocess.run([sys.executable, "-m", "semalign", "run", "text_stitching", "--profile", "smoke",
                          "-p", "transform=linear", "--quiet"], env=_environment(workdir), cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _files(embeddings) == filled
    assert (workdir / "results" / "smoke" / "text_stitching__transform-linear.json").is_file()


def test_embed_names_the_notebooks_it_serves(tmp_path):
    result = subprocess.run([sys.executable, "-m", "semalign", "embed", "results_table", "--profile", "smoke"],
                            env=_environment(tmp_path), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: semalign embed extracts the embeddings of text_stitching, vision_stitching, zero_shot, not "
        "'results_table'; the other notebooks embed nothing worth sharing out"]
