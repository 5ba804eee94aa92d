"""Determinism: the same inputs and seeds give the same bytes and the same numbers.

In one process, ``tests/test_phantom.py::test_same_spec_gives_identical_bytes``
and ``tests/test_data.py::test_split_is_seeded_disjoint_and_complete`` show the
phantom and the split repeat. Here:

* the phantom, the report subset and the split are byte-identical across fresh
  processes with different hash seeds (nothing depends on ``PYTHONHASHSEED``,
  global random state or the order of a set);
* embedding cache files are byte-identical across processes;
* (slow) smoke runs of ``text_stitching`` and ``vision_stitching`` executed in two
  fresh work folders, each with its own empty cache, record identical numbers,
  and write byte-identical embedding caches and phantom images.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from semalign.core.paths import PROJECT_ROOT

DIGEST = textwrap.dedent("""
    import hashlib, json
    from semalign.data import reports as data
    from semalign.phantom import PhantomSpec, render_phantom

    ph = render_phantom(PhantomSpec(n_images=6, seed=3, image_size=64))
    reports = data.subsample(data.load_iu_reports(), 200, seed=5)
    train, test = data.split_indices(len(reports), 0.3, seed=5)
    parts = {
        "phantom_images": ph.images.tobytes(),
        "phantom_reports": json.dumps(ph.reports).encode(),
        "phantom_labels": ph.labels.to_csv(index=False).encode(),
        "subset": json.dumps(reports.ids).encode() + reports.labels.to_csv(index=False).encode(),
        "split": train.tobytes() + test.tobytes(),
    }
    print(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in parts.items()}))
""")


def digests(hash_seed: str) -> dict:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    proc = subprocess.run([sys.executable, "-c", DIGEST], capture_output=True, text=True, env=env,
                          cwd=PROJECT_ROOT, timeout=300, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_phantom_subset_and_split_are_byte_identical_across_processes(record_property):
    record_property("determinism", "phantom images, reports and labels, report subset and split: "
                                   "byte-identical in two processes with different hash seeds")
    first, second = digests("1"), digests("4242")
    assert first == second
    assert len(set(first.values())) == len(first)  # five different things were hashed


EMBED = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    sys.path.insert(0, "{tests}")
    from test_interrupt import FakeEncoder, IDS, TEXTS
    from semalign.models.embed import embed
    embed(FakeEncoder(), IDS, TEXTS, shard_size=4, progress=False)
    files = sorted(Path("{cache}").glob("embeddings/*/*"))
    print(json.dumps({{p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}}))
""")


def test_embedding_cache_files_are_byte_identical_across_processes(tmp_path, record_property):
    record_property("determinism", "embedding cache files (shards and manifest): byte-identical from two processes")
    written = []
    for name in ("one", "two"):
        cache = tmp_path / name
        proc = subprocess.run([sys.executable, "-c", EMBED.format(tests=Path(__file__).parent, cache=cache)],
                              capture_output=True, text=True, env={**os.environ, "SEMALIGN_CACHE": str(cache)},
                              cwd=PROJECT_ROOT, timeout=300, check=True)
        written.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert len(written[0]) == 5 and written[0] == written[1]  # four shards and the manifest


TEXT_RUN = ["run", "text_stitching", "--profile", "smoke", "--quiet", "-p", "transform=affine",
            "-p", "max_reports=120", "-p", "anchor_counts=[8,32]", "-p", "seeds=[0]"]
VISION_RUN = ["run", "vision_stitching", "--profile", "smoke", "--quiet", "-p", "transform=affine",
              "-p", "n_images=80", "-p", "anchor_counts=[8,16]", "-p", "seeds=[0]",
              "-p", "encoders=[effnet-lite0,effnet-lite1]", "-p", "targets=[]"]


def env_for(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "SEMALIGN_WORKDIR": str(work), "SEMALIGN_CACHE": str(work / "cache"),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_both(works: list[Path], args: list[str]) -> None:
    """The same command in every work folder, at the same time."""
    procs = []
    for work in works:
        log = open(work.with_name(f"{work.name}.{args[1]}.log"), "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "semalign", *args], env=env_for(work),
                                       cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        proc.wait(timeout=900)
        log.close()
        assert proc.returncode == 0, Path(log.name).read_text()[-3000:]


def recorded(work: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "semalign", "results", "--profile", "smoke", "--json"],
                         env=env_for(work), capture_output=True, text=True, check=True).stdout
    # provenance holds each run's start and wall time: the numbers and their data identity are compared
    return [{k: v for k, v in r.items() if k != "provenance"} for r in json.loads(out)]


def cache_digests(work: Path) -> dict[str, str]:
    """sha256 of every embedding shard and phantom image file, by path inside the cache."""
    root = work / "cache"
    files = [*root.glob("embeddings/*/shard-*.safetensors"), *root.glob("phantom/*/images.safetensors")]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
def test_smoke_runs_in_two_fresh_work_folders_record_identical_numbers(tmp_path, record_property):
    record_property("determinism", "smoke text_stitching and vision_stitching (affine) in two fresh work folders "
                                   "and caches: identical recorded numbers, byte-identical embeddings and phantom")
    works = [tmp_path / "first", tmp_path / "second"]
    run_both(works, TEXT_RUN)
    run_both(works, VISION_RUN)
    first, second = (recorded(w) for w in works)
    experiments = {r["experiment"] for r in first}
    assert experiments == {"text_stitching", "vision_stitching"} and len(first) > 20
    assert first == second
    caches = [cache_digests(w) for w in works]
    assert any("phantom/" in k for k in caches[0]) and sum("embeddings/" in k for k in caches[0]) >= 4
    assert caches[0] == caches[1]
