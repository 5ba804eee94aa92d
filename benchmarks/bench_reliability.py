"""The reliability figures of the study: bad inputs refused with one clear line,
interruptions survived, damaged cache entries repaired, determinism checks.

    python benchmarks/bench_reliability.py [--fast]

Runs ``tests/test_bad_inputs.py``, ``tests/test_interrupt.py``,
``tests/test_determinism.py``, ``tests/test_runner.py``, ``tests/test_embed.py``, ``tests/test_parameters.py`` and four
tests of ``tests/test_study_smoke.py`` with pytest (slow tests included unless
``--fast``), reads the JUnit XML it writes, and writes
``<work>/benchmarks/reliability.json``, which the book's appendix renders. Each
test says what it counts with pytest's ``record_property``: ``bad_input`` (the
catalogue item), ``interruptions`` (processes killed with SIGKILL),
``cache_damage`` (the kind of damage), ``determinism`` (what is compared) and
``rerun`` (what a re-run with other data or settings must not do silently) and ``shareable`` (an output
searched for paths of the machine, or published).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semalign.core.cache import atomic_write_json  # noqa: E402
from semalign.core.paths import work_dir  # noqa: E402

SMOKE = "tests/test_study_smoke.py::"
TEST_FILES = ("tests/test_bad_inputs.py", "tests/test_interrupt.py", "tests/test_determinism.py", "tests/test_runner.py",
              "tests/test_embed.py", "tests/test_parameters.py",
              # on one smoke study (slow): the stale-book check, the machine-path searches, the publish rehearsal
              f"{SMOKE}test_a_book_after_one_more_run_shows_summaries_of_the_records_as_they_are",
              f"{SMOKE}test_records_and_executed_notebooks_hold_no_path_of_the_machine",
              f"{SMOKE}test_no_page_or_downloadable_notebook_holds_a_path_of_the_building_machine",
              f"{SMOKE}test_make_publish_pushes_the_book_to_a_gh_pages_branch")


def read_junit(path: Path) -> list[dict]:
    """One dict per test case: file, name, outcome, seconds and its recorded properties."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child, name in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            if case.find(child) is not None:
                outcome = name
        properties: dict[str, list[str]] = {}
        for prop in case.iter("property"):
            properties.setdefault(prop.get("name"), []).append(prop.get("value"))
        cases.append({
            "file": case.get("file") or case.get("classname", "").replace(".", "/") + ".py",
            "name": case.get("name"), "outcome": outcome,
            "seconds": round(float(case.get("time") or 0), 2), "properties": properties,
        })
    return cases


def tally(cases: list[dict], key: str, count=lambda values: len(values)) -> dict:
    """Cases that record ``key``: how many things were tried and how many passed."""
    rows = []
    for case in cases:
        values = case["properties"].get(key)
        if values:
            rows.append({"what": "; ".join(values), "test": case["name"], "outcome": case["outcome"],
                         "count": count(values)})
    ran = [r for r in rows if r["outcome"] != "skipped"]
    return {
        "tried": sum(r["count"] for r in ran),
        "passed": sum(r["count"] for r in ran if r["outcome"] == "passed"),
        "not_run": sum(r["count"] for r in rows if r["outcome"] == "skipped"),
        "cases": rows,
    }


def summarise(cases: list[dict], *, command: str, wall_s: float, exit_status: int) -> dict:
    """The report ``reliability.json`` holds, from the test cases of one pytest run."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "pytest_exit_status": exit_status,
        "wall_s": round(wall_s, 1),
        "tests": {
            "passed": sum(c["outcome"] == "passed" for c in cases),
            "failed": sum(c["outcome"] == "failed" for c in cases),
            "skipped": sum(c["outcome"] == "skipped" for c in cases),
        },
        "bad_inputs": tally(cases, "bad_input"),
        "interruptions": tally(cases, "interruptions", count=lambda values: sum(int(v) for v in values)),
        "cache_damage": tally(cases, "cache_damage"),
        "determinism": tally(cases, "determinism"),
        "reruns": tally(cases, "rerun"),
        "shareable": tally(cases, "shareable"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="leave out the slow tests (interrupted and repeated study runs)")
    args = parser.parse_args()
    marker = "not slow" if args.fast else "slow or not slow"
    with tempfile.TemporaryDirectory(prefix="semalign-reliability-") as tmp:
        junit = Path(tmp) / "reliability.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", marker,
                   "-o", "junit_family=xunit1", f"--junitxml={junit}", *TEST_FILES]
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        seconds = time.perf_counter() - start
        if not junit.is_file():
            sys.exit(f"pytest wrote no report (exit status {proc.returncode})")
        cases = read_junit(junit)
    shown = shlex.join(["python", "-m", "pytest", "-m", marker, *TEST_FILES])
    report = summarise(cases, command=f"python benchmarks/bench_reliability.py{' --fast' if args.fast else ''} "
                                      f"(runs {shown})", wall_s=seconds, exit_status=proc.returncode)
    out = work_dir() / "benchmarks" / "reliability.json"
    atomic_write_json(out, report)
    print(f"\nwrote {out}")
    for key, label in (("bad_inputs", "bad inputs refused with a one-line error"),
                       ("interruptions", "interruptions (SIGKILL) survived"),
                       ("cache_damage", "damaged cache entries detected and recomputed"),
                       ("determinism", "determinism checks passed"),
                       ("reruns", "re-run safeguards held"),
                       ("shareable", "shared outputs free of machine paths")):
        part = report[key]
        extra = f" ({part['not_run']} not run)" if part["not_run"] else ""
        print(f"{label:48} {part['passed']:3d} of {part['tried']:3d}{extra}")
    sys.exit(0 if proc.returncode == 0 else 1)


if __name__ == "__main__":
    main()
