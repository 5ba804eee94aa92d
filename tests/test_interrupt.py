"""Interruption and cache integrity: a study killed at any point re-runs to the
same results, and nothing torn or half-written is ever trusted.

* Atomic writes: a writer killed with SIGKILL leaves the old file (or none) and
  a temporary file that the next write removes; finished files get the umask's
  modes (a library's owner-only files in a built folder too).
* Cache integrity: a damaged embedding entry (flipped bytes, truncated or missing
  shard, non-finite values, torn manifest) is reported in one line naming the
  file and recomputed, and only the damaged shard is recomputed.
* Embedding extraction killed mid-entry resumes at the first missing shard and
  gives the uninterrupted result.
* The slow test kills ``semalign run text_stitching`` (smoke profile) with
  SIGKILL once during embedding extraction and once during notebook execution,
  re-runs it, and compares ``semalign results --json`` with an uninterrupted
  run in another work folder with its own fresh cache.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from semalign.core import cache
from semalign.models.embed import embed
from semalign.models.encoders import EncoderSpec
from semalign.core.errors import SemalignError
from semalign.core.paths import PROJECT_ROOT

TEMPORARY = re.compile(r"~tmp-|\.partial$|\.tmp$")


def leftovers(*roots: Path) -> list[Path]:
    """Temporary files or folders (of any writer) under ``roots``."""
    found = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != "vendor"]
            found += [Path(dirpath) / n for n in [*dirnames, *filenames] if TEMPORARY.search(n)]
    return found


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=PROJECT_ROOT, timeout=300)


@pytest.fixture
def restore_umask():
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)


# ----------------------------------------------------------------------------- atomic writes
def test_writer_killed_midway_leaves_the_old_file_and_a_temporary_the_next_write_removes(tmp_path, record_property):
    record_property("interruptions", 1)
    target = tmp_path / "entry.json"
    target.write_text("old and complete")
    proc = run_python(f"""
        import os, signal
        from semalign.core.cache import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half of the new")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert target.read_text() == "old and complete"
    (stale,) = leftovers(tmp_path)
    assert stale.name.startswith(".entry.json~tmp-") and stale.read_bytes() == b"half of the new"
    cache.atomic_write_json(target, {"new": True})
    assert json.loads(target.read_text()) == {"new": True}
    assert leftovers(tmp_path) == []


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    """A temporary is stale when no process holds its lock: this process's own,
    and another live process's, are never removed; the dead writer's is."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from semalign.core.cache import temporary
        with temporary({str(tmp_path / "b.bin")!r}, folder=True) as held:
            print(held, flush=True)
            sys.stdin.read()  # until the test closes our stdin
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT)
    theirs = Path(holder.stdout.readline().strip())
    try:
        with cache.atomic_path(tmp_path / "a.bin") as mine:
            mine.write_bytes(b"in progress")
            assert cache.remove_stale_temporaries(tmp_path) == []  # held here and by the other process
            assert mine.exists() and theirs.is_dir()
        assert (tmp_path / "a.bin").read_bytes() == b"in progress"
    finally:
        holder.kill()
        holder.wait()
    assert cache.remove_stale_temporaries(tmp_path) == [theirs] and not theirs.exists()  # its writer is gone


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_finished_files_get_the_umask_modes(tmp_path, monkeypatch, restore_umask, mask):
    os.umask(mask)
    cache.atomic_write_json(tmp_path / "x.json", {})
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o666 & ~mask
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path / "cache"))
    embed(FakeEncoder(), IDS, TEXTS, shard_size=4, progress=False)
    for path in (tmp_path / "cache" / "embeddings").rglob("*"):
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        assert stat.S_IMODE(path.stat().st_mode) == want, path


def test_results_are_staged_until_the_run_completes(tmp_path, monkeypatch, restore_umask, record_property):
    record_property("rerun", "a failed or killed re-run keeps the last good results")
    from semalign.experiments import results
    os.umask(0o022)
    monkeypatch.setenv("SEMALIGN_WORKDIR", str(tmp_path))
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setenv(results.STAGING_ENV, str(staging))
    record = dict(method="m", metric="accuracy", value=0.5)
    assert results.save_records([record], profile="smoke", run="r", experiment="e", parameters={}) is None
    written = staging / "r.json"
    assert written.is_file() and not results.results_file("smoke", "r").exists()
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    written.unlink()
    staging.rmdir()  # the runner is gone: a kernel it left behind must not write anywhere
    with pytest.raises(SemalignError, match="staging folder .* is gone"):
        results.save_records([record], profile="smoke", run="r", experiment="e", parameters={})
    assert not results.results_file("smoke", "r").exists()


# ----------------------------------------------------------------------------- cache integrity
TEXTS = [f"report number {i}: " + "lungs clear. " * (i % 4) for i in range(14)]
IDS = [f"r{i:02d}" for i in range(14)]


class FakeEncoder:
    """A deterministic text encoder that counts the rows it computes."""

    def __init__(self, kill_at_row: int | None = None):
        self.spec = EncoderSpec(name="fake-text", modality="text", family="hf-text", source="/nowhere")
        self.fingerprint, self.dim, self.rows, self.kill_at_row = "fake-text-v1", 6, 0, kill_at_row

    def encode(self, texts, batch_size=None, callback=None):
        if self.kill_at_row is not None and self.rows >= self.kill_at_row:
            os.kill(os.getpid(), signal.SIGKILL)
        self.rows += len(texts)
        lengths = np.array([[len(t)] for t in texts], np.float32)
        return np.hstack([np.sin(lengths * k) for k in range(1, self.dim + 1)]).astype(np.float32)


def test_study_made_artefacts_are_built_aside_checked_and_rebuilt_when_damaged(tmp_path):
    """One helper builds every study-made artefact (encoders, the phantom): an
    interrupted build leaves no entry, a damaged one is reported and built again."""
    target, builds = tmp_path / "encoders" / "thing-abc", []

    def write(folder, fail=False):
        builds.append(folder)
        (folder / "weights.bin").write_bytes(b"weights")
        (folder / "config.json").write_text("{}")
        if fail:
            raise KeyboardInterrupt
        return {"kind": "thing"}

    build = functools.partial(cache.build_folder, description="about.json", checked="weights.bin", names=("config.json",))
    with pytest.raises(KeyboardInterrupt):
        build(target, functools.partial(write, fail=True))
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing half-built left behind
    assert build(target, write) == target and len(builds) == 2
    about = json.loads((target / "about.json").read_text())
    assert about == {"kind": "thing", "sha256": {"weights.bin": cache.sha256_file(target / "weights.bin")}}
    assert build(target, write) == target and len(builds) == 2  # intact: read, not built
    (target / "weights.bin").write_bytes(b"weighs")
    with pytest.warns(UserWarning, match=r"thing-abc is damaged \(weights.bin does not match its recorded sha256\)"):
        build(target, write)
    assert len(builds) == 3 and (target / "weights.bin").read_bytes() == b"weights"
    (target / "about.json").write_text('{"kind": "thing"}')  # written before checksums were recorded
    build(target, write)
    assert len(builds) == 4 and cache.folder_is_intact(target, "about.json", "weights.bin")


def entry_folder(root: Path) -> Path:
    (folder,) = (root / "embeddings").iterdir()
    return folder


def damage(kind: str, folder: Path) -> str:
    """Damage one part of a complete entry; returns the file whose name the report must carry."""
    shard = folder / "shard-00001.safetensors"
    if kind == "flipped bytes":
        raw = bytearray(shard.read_bytes())
        raw[len(raw) // 2] ^= 0x40
        shard.write_bytes(bytes(raw))
    elif kind == "truncated":
        shard.write_bytes(shard.read_bytes()[:100])
    elif kind == "missing":
        shard.unlink()
    elif kind == "non-finite values":  # rewritten with a consistent checksum: only the values are wrong
        from safetensors.numpy import load_file, save_file

        rows = load_file(str(shard))["embeddings"]
        rows[1, 2] = np.inf
        save_file({"embeddings": rows}, str(shard))
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["shards"][1]["sha256"] = cache.sha256_file(shard)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    elif kind == "torn manifest":
        raw = (folder / "manifest.json").read_bytes()
        (folder / "manifest.json").write_bytes(raw[: len(raw) // 2])
        return "manifest.json"
    return shard.name


@pytest.mark.parametrize("kind", ["flipped bytes", "truncated", "missing", "non-finite values", "torn manifest"])
def test_damaged_entry_is_reported_in_one_line_and_recomputed(tmp_path, monkeypatch, kind, record_property):
    record_property("cache_damage", kind)
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr("semalign.models.embed.BLOCK", 4)  # a damaged shard costs its block: here, itself
    reference = embed(FakeEncoder(), IDS, TEXTS, shard_size=4, progress=False)
    folder = entry_folder(tmp_path)
    name = damage(kind, folder)
    encoder = FakeEncoder()
    with pytest.warns(UserWarning) as caught:
        again = embed(encoder, IDS, TEXTS, shard_size=4, progress=False)
    (warning,) = [w for w in caught if name in str(w.message)]
    message = str(warning.message)
    assert "\n" not in message and str(folder / name) in message and "recomput" in message
    assert np.array_equal(again, reference)
    assert encoder.rows == (len(TEXTS) if kind == "torn manifest" else 4)  # only the damaged shard
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: read back silently, nothing computed
        quiet = FakeEncoder()
        assert np.array_equal(embed(quiet, IDS, TEXTS, shard_size=4, progress=False), reference)
        assert quiet.rows == 0


def test_extraction_killed_mid_entry_resumes_at_the_first_missing_shard(tmp_path, monkeypatch, record_property):
    record_property("interruptions", 1)
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path / "killed"))
    proc = run_python(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_interrupt import FakeEncoder, IDS, TEXTS
        from semalign.models import embed as embed_mod
        embed_mod.BLOCK = 4  # computed a shard at a time, so the kill lands between shards
        embed_mod.embed(FakeEncoder(kill_at_row=8), IDS, TEXTS, shard_size=4, progress=False)
    """, env={"SEMALIGN_CACHE": str(tmp_path / "killed")})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    folder = entry_folder(tmp_path / "killed")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert not manifest["complete"] and [s is not None for s in manifest["shards"]] == [True, True, False, False]
    monkeypatch.setattr("semalign.models.embed.BLOCK", 4)
    resumed_by = FakeEncoder()
    resumed = embed(resumed_by, IDS, TEXTS, shard_size=4, progress=False)
    assert resumed_by.rows == len(TEXTS) - 8  # shards 0 and 1 were read back, not recomputed
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path / "uninterrupted"))
    assert np.array_equal(resumed, embed(FakeEncoder(), IDS, TEXTS, shard_size=4, progress=False))
    assert json.loads((folder / "manifest.json").read_text())["complete"]
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- the study, killed
SMOKE_RUN = ["run", "text_stitching", "--profile", "smoke", "--quiet", "-p", "transform=ortho",
             "-p", "max_reports=120", "-p", "anchor_counts=[8,32]", "-p", "seeds=[0]"]
EXPECTED_ENTRIES = 2  # the smoke profile's text encoders: minilm, radiology-bert
DEADLINE_S = 400


def study_env(work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "SEMALIGN_WORKDIR": str(work), "SEMALIGN_CACHE": str(work / "cache"),
            "SEMALIGN_SHARD_SIZE": "16", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def start(work: Path, *args: str) -> subprocess.Popen:
    """``python -m semalign ARGS`` in its own work folder; its output goes to a log beside it."""
    log = work.with_name(f"{work.name}-{time.monotonic_ns()}.log")
    with open(log, "w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "semalign", *args], env=study_env(work), cwd=PROJECT_ROOT,
                                stdout=handle, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def tail(proc: subprocess.Popen) -> str:
    return proc.log.read_text()[-3000:]


def finish(proc: subprocess.Popen) -> None:
    proc.wait(timeout=DEADLINE_S)
    assert proc.returncode == 0, tail(proc)


def manifests(work: Path) -> list[dict]:
    found = []
    for path in (work / "cache" / "embeddings").glob("*/manifest.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass  # written atomically, so this is a race with a replacement: poll again
    return found


def descendants(pid: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def kill_when(proc: subprocess.Popen, work: Path, condition, what: str) -> None:
    """SIGKILL ``proc`` as soon as ``condition(manifests)`` holds; its kernel must die with it."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition(manifests(work)):
        if proc.poll() is not None:
            pytest.fail(f"the run ended (status {proc.returncode}) before {what}:\n{tail(proc)}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {DEADLINE_S} s")
        time.sleep(0.02)
    family = descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, tail(proc)
    deadline = time.monotonic() + 30
    while any(alive(p) for p in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [p for p in family if alive(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"processes {survivors} outlived the killed run"


def recorded(work: Path) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "semalign", "results", "--profile", "smoke", "--json"],
                         env=study_env(work), capture_output=True, text=True, check=True).stdout
    # provenance holds each run's start and wall time: the numbers and their data identity are compared
    rows = [{k: v for k, v in r.items() if k != "provenance"} for r in json.loads(out)]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def assert_nothing_torn(work: Path) -> None:
    from safetensors.numpy import load_file

    assert leftovers(work) == []
    entries = list((work / "cache" / "embeddings").iterdir())
    assert len(entries) == EXPECTED_ENTRIES
    for folder in entries:
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["complete"]
        for shard in manifest["shards"]:
            assert cache.sha256_file(folder / shard["file"]) == shard["sha256"]
            assert np.isfinite(load_file(str(folder / shard["file"]))["embeddings"]).all()


@pytest.mark.slow
def test_study_killed_during_embedding_and_notebook_execution_gives_the_uninterrupted_results(
        tmp_path, record_property):
    record_property("interruptions", 2)
    reference = start(tmp_path / "uninterrupted", *SMOKE_RUN)  # in parallel: its own work folder and cache
    killed = tmp_path / "killed"
    from semalign.study import runner

    overrides = [value for flag, value in zip(SMOKE_RUN, SMOKE_RUN[1:]) if flag == "-p"]
    (run,) = runner.plan(["text_stitching"], "smoke", overrides)  # a subset of the data: a run of its own name
    results_json = killed / "results" / "smoke" / f"{run.name}.json"
    executed = killed / "executed" / "smoke" / f"{run.name}.ipynb"

    # Items are encoded a block of 4,096 at a time, so the smoke run's 120 reports
    # are one block an encoder: the kill lands after some entries are done and
    # before the last (a kill between the shards of one entry is tested above).
    def mid_extraction(found):
        return any(m["complete"] for m in found) and not (len(found) == EXPECTED_ENTRIES
                                                         and all(m["complete"] for m in found))

    kill_when(start(killed, *SMOKE_RUN), killed, mid_extraction, "embedding extraction under way")
    assert not results_json.exists() and not executed.exists()
    def shard_times(folders):
        return {p: p.stat().st_mtime_ns for folder in folders for p in folder.glob("shard-*")}

    done = [path.parent for path in (killed / "cache" / "embeddings").glob("*/manifest.json")
            if json.loads(path.read_text())["complete"]]
    written = shard_times(done)
    assert done and written

    def all_embedded(found):
        return len(found) == EXPECTED_ENTRIES and all(m["complete"] for m in found)

    kill_when(start(killed, *SMOKE_RUN), killed, all_embedded, "the end of embedding extraction")
    assert not results_json.exists() and not executed.exists()  # killed inside the notebook: nothing recorded

    finish(start(killed, *SMOKE_RUN))
    assert shard_times(done) == written  # the entries finished before the kill are read back, not recomputed
    finish(reference)
    assert results_json.exists() and executed.exists()
    mask = os.umask(0o022)
    os.umask(mask)
    for path in (results_json, executed):  # the umask's modes, not owner-only
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    assert_nothing_torn(killed)
    survived = recorded(killed)
    assert len(survived) > 10 and survived == recorded(tmp_path / "uninterrupted")


@pytest.mark.slow
def test_ctrl_c_during_a_run_prints_one_line_and_exits_130(tmp_path, record_property):
    """Ctrl-C reaches the terminal's whole process group; the kernel runs in its
    own session and the runner stops it: its shutdown noise goes to a log file."""
    record_property("rerun", "Ctrl-C during a run exits 130 with one line and leaves nothing half-written")
    # A cache of its own: with the session's warm cache the run can end within
    # seconds, and a Ctrl-C that lands while Python exits ends it by SIGINT (-2).
    cache = tmp_path / "cache"
    env = {**os.environ, "SEMALIGN_WORKDIR": str(tmp_path), "SEMALIGN_CACHE": str(cache)}
    proc = subprocess.Popen([sys.executable, "-m", "semalign", "run", "text_stitching", "--profile", "smoke", "--quiet",
                             "-p", "transform=ortho"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    assert proc.stdout.readline().startswith("[1/1] text_stitching__transform-ortho")
    deadline = time.monotonic() + DEADLINE_S
    while not (cache.is_dir() and any(cache.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the kernel writes to the cache: it is executing the notebook's cells
    time.sleep(2)
    assert proc.poll() is None, "the run ended before Ctrl-C could interrupt it"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ["interrupted: runs that had finished are kept; the unfinished one left "
                                        "nothing behind"]
    # Stopped mid-run, nothing of it is published. Rarely the execution libraries
    # swallow the KeyboardInterrupt and the run finishes first: then it is whole.
    if (tmp_path / "results" / "smoke" / "text_stitching__transform-ortho.json").exists():
        assert (tmp_path / "executed" / "smoke" / "text_stitching__transform-ortho.ipynb").exists()
    assert leftovers(tmp_path / "results", tmp_path / "executed") == []


def test_ctrl_c_that_a_library_swallows_still_ends_the_command_with_130(tmp_path):
    """Ctrl-C during an execution whose libraries catch the KeyboardInterrupt:
    the run that finished is kept, the next is not started, the exit is 130."""
    script = textwrap.dedent("""
        import os, signal, sys
        from semalign.study import cli, runner

        def execute(run, progress=True):
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                pass  # as a library might
            print("finished", run.name, flush=True)

        runner.up_to_date = lambda run: False
        runner.execute = execute
        sys.exit(cli.main(["run", "data_overview", "method_example", "--profile", "smoke", "--quiet"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SEMALIGN_WORKDIR": str(tmp_path)})
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stdout.count("finished") == 1  # the second run was never started
    assert proc.stderr.strip().splitlines() == ["interrupted: runs that had finished are kept; the unfinished one "
                                                "left nothing behind"]
