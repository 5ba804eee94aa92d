"""End-to-end wall time and peak memory of the study, from an empty cache and
from a warm one, and of the book build. Writes ``<work>/benchmarks/study.json``,
which the book's appendix page renders.

    python benchmarks/bench_study.py [--profile offline] [--skip-cold]

The cold run uses a fresh temporary cache (``SEMALIGN_CACHE``) and re-executes
every notebook (``--force``), so nothing computed before is reused; it also
records each run's own execution time (papermill's, from the executed
notebooks) and sums them per chapter. The warm run repeats the command with
that cache filled and nothing changed, so every run is found up to date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semalign.core.paths import work_dir  # noqa: E402

TARGETS = {"cold_s": 15 * 60, "warm_s": 60, "book_s": 60, "peak_rss_gb": 6.0}


# Runs a command and prints, as its last line of stderr, the peak resident memory (KB)
# of that command's process tree alone: RUSAGE_CHILDREN of this script would be the
# maximum over every stage measured so far.
_PEAK_WRAPPER = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def timed(command: list[str], env: dict) -> dict:
    """Wall time and peak resident memory of a command and its descendants."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *command], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr[-2000:]}")
    peak_kb = int(proc.stderr.strip().splitlines()[-1])
    return {"wall_s": round(wall, 1), "peak_rss_gb": round(peak_kb / 1e6, 2)}


def run_seconds(profile: str) -> tuple[dict, dict]:
    """Execution seconds of each run of ``profile`` and their sums per chapter."""
    from semalign.study import runner
    runs, chapters = {}, {}
    for run in runner.executed_runs(profile):
        if run.output.is_file():
            seconds = json.loads(run.output.read_text())["metadata"].get("papermill", {}).get("duration")
            if seconds is not None:
                runs[run.name] = round(seconds, 1)
                chapters[run.chapter] = round(chapters.get(run.chapter, 0.0) + seconds, 1)
    return runs, chapters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="offline")
    parser.add_argument("--skip-cold", action="store_true",
                        help="measure the warm run and the book only (keeps the cold figures already recorded)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "semalign"]
    env = dict(os.environ)
    report = {"profile": args.profile, "machine": f"{platform.machine()}, {os.cpu_count()} cores", "targets": TARGETS}
    out = work_dir() / "benchmarks" / "study.json"
    if args.skip_cold and out.is_file():
        earlier = json.loads(out.read_text())
        if earlier.get("profile") == args.profile:
            report.update({key: value for key, value in earlier.items() if key.startswith("cold")})
    with tempfile.TemporaryDirectory(prefix="semalign-cold-cache-") as cold_cache:
        if not args.skip_cold:
            cold_env = {**env, "SEMALIGN_CACHE": cold_cache}
            report["cold"] = timed([*cli, "run", "all", "--profile", args.profile, "--quiet", "--force"], cold_env)
            report["cold_runs_s"], report["cold_chapters_s"] = run_seconds(args.profile)
            env = cold_env
        report["warm"] = timed([*cli, "run", "all", "--profile", args.profile, "--quiet"], env)
        report["book"] = timed([*cli, "book", "--profile", args.profile], env)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    for chapter, seconds in report.get("cold_chapters_s", {}).items():
        print(f"cold, chapter {chapter}: {seconds:7.1f} s")
    for stage, key in (("cold", "cold_s"), ("warm", "warm_s"), ("book", "book_s")):
        if stage in report:
            print(f"{stage:5}: {report[stage]['wall_s']:7.1f} s  (target {TARGETS[key]} s, ratio {report[stage]['wall_s'] / TARGETS[key]:.2f})"
                  f"  peak RSS {report[stage]['peak_rss_gb']} GB (target {TARGETS['peak_rss_gb']} GB)")


if __name__ == "__main__":
    main()
