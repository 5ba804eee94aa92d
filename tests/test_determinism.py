"""Determinism: the same inputs and seeds give the same bytes and the same numbers.

In one process, ``tests/test_phantom.py::test_same_spec_gives_identical_bytes``
and ``tests/test_data.py::test_split_is_seeded_disjoint_and_complete`` show the
phantom and the split repeat. Here:

* the phantom, the report subset and the split are byte-identical across fresh
  processes with different hash seeds (nothing depends on ``PYTHONHASHSEED``,
  global random state or the order of a set);
* embedding cache files are byte-identical across processes;
* (slow) the smoke study's affine ``text_stitching`` and ``vision_stitching`` runs,
  executed again in fresh work folders with empty caches, record identical
  numbers and write byte-identical embedding shards and phantom images.
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


# The smoke profile's own affine runs, as the smoke study executed them.
FRESH_RUNS = {"text": ["run", "text_stitching", "--profile", "smoke", "--quiet", "-p", "transform=affine"],
              "vision": ["run", "vision_stitching", "--profile", "smoke", "--quiet", "-p", "transform=affine"]}


def env_for(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "SEMALIGN_WORKDIR": str(work), "SEMALIGN_CACHE": str(work / "cache"),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def recorded(work: Path, env: dict) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "semalign", "results", "--profile", "smoke", "--json"],
                         env=env, capture_output=True, text=True, check=True).stdout
    # provenance holds each run's start and wall time: the numbers and their data identity are compared
    return [{k: v for k, v in r.items() if k != "provenance"} for r in json.loads(out)]


def cache_digests(root: Path) -> dict[str, str]:
    """sha256 of every embedding shard and phantom image file, by path inside the cache ``root``."""
    files = [*root.glob("embeddings/*/shard-*.safetensors"), *root.glob("phantom/*/images.safetensors")]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
def test_fresh_work_folders_repeat_the_smoke_study_s_numbers_and_cache_bytes(smoke_study, tmp_path, record_property):
    """The smoke study's affine text and vision runs, again, each in a fresh work
    folder with its own empty cache (both at once): the same records, and the
    embedding shards and phantom images they write are byte-identical to the
    smoke study's cache files of the same keys."""
    record_property("determinism", "smoke text_stitching and vision_stitching (affine) in fresh work folders "
                                   "and caches: the smoke study's recorded numbers, byte-identical embeddings "
                                   "and phantom")
    procs = []
    for name, args in FRESH_RUNS.items():
        work = tmp_path / name
        log = open(tmp_path / f"{name}.log", "w")
        procs.append((subprocess.Popen([sys.executable, "-m", "semalign", *args], env=env_for(work),
                                       cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT), log))
    for proc, log in procs:
        proc.wait(timeout=900)
        log.close()
        assert proc.returncode == 0, Path(log.name).read_text()[-3000:]

    fresh = [r for name in FRESH_RUNS for r in recorded(tmp_path / name, env_for(tmp_path / name))]
    runs = {r["run"] for r in fresh}
    assert runs == {"text_stitching__transform-affine", "vision_stitching__transform-affine"} and len(fresh) > 20
    study = recorded(smoke_study, {**os.environ, "SEMALIGN_WORKDIR": str(smoke_study)})
    assert fresh == [r for r in study if r["run"] in runs]

    written = {k: v for name in FRESH_RUNS for k, v in cache_digests(tmp_path / name / "cache").items()}
    assert any("phantom/" in k for k in written) and sum("embeddings/" in k for k in written) >= 4
    study_cache = cache_digests(Path(os.environ["SEMALIGN_CACHE"]))  # the smoke study's (conftest.study_workdir)
    assert {k: study_cache.get(k) for k in written} == written
