"""Assemble and build the Jupyter Book from executed notebooks (execution off).

The book's own pages live in ``book/``; the build copies them into a staging
folder next to the executed notebooks of one profile (under ``experiments/``),
generated pages and the vendored MathJax, then runs Jupyter Book 1 with
warnings as errors and nitpicky references. A missing or stale executed
notebook stops the build before anything is published.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from semalign.study import pages

from semalign.study import runner
from semalign.core.errors import SemalignError
from semalign.core.paths import BOOK_SOURCE_DIR, book_build_dir, vendor_dir

# Any attribute that makes a browser fetch from another host when a page opens.
REMOTE_LOAD = re.compile(r"""<(?:script|link|img|iframe|source)\b[^>]*?\b(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)


def check_executed(profile: str, progress: bool = False) -> list[runner.Run]:
    """The runs the book shows, every one current. A summary page
    (``reads_results``) whose records changed since it ran — say, one
    transform re-run with other anchor counts — is re-executed here, from the
    records as they are now, so the book never shows verdicts of older runs;
    any other missing or stale run stops the build with one line naming the
    command that brings it up to date."""
    runs = runner.executed_runs(profile)
    problems = [(run, why) for run in runs if (why := runner.executed_status(run))]
    if any(not run.reads_results for run, _ in problems):
        by_reason: dict[str, list[str]] = {}
        for run, why in problems:
            by_reason.setdefault(why, []).append(run.name)
        listing = "; ".join(f"{', '.join(names[:3])}{f' and {len(names) - 3} more' if len(names) > 3 else ''}: {why}"
                            for why, names in by_reason.items())
        raise SemalignError(f"cannot publish the {profile} book: {listing}. Fix: semalign run all --profile {profile} "
                            "(it re-executes only what is not current)")
    for run in runs:  # in runs.yaml's order: a summary may read the one before it
        if run.reads_results and (why := runner.executed_status(run)):
            print(f"{run.name} ({profile}): {why}; re-executing it", file=sys.stderr, flush=True)
            runner.execute(run, progress=progress)
    return runs


def stage(profile: str) -> Path:
    """Copy book sources, executed notebooks, generated pages and MathJax into one folder."""
    runs = check_executed(profile)
    mathjax = vendor_dir() / "mathjax" / "es5" / "tex-mml-chtml.js"
    if not mathjax.is_file():
        raise SemalignError(f"MathJax is not vendored ({mathjax} missing); run `make setup` (it fetches mathjax@3 from npm)")
    src = book_build_dir(profile) / "src"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(BOOK_SOURCE_DIR, src)
    (src / "experiments").mkdir(exist_ok=True)
    for run in runs:
        present(run.output, src / "experiments" / run.output.name)
    shutil.copytree(vendor_dir() / "mathjax" / "es5", src / "_static" / "mathjax")
    pages.write_generated_pages(src, profile, runs)
    expand_run_globs(src / "_toc.yml", runs)
    return src


#: Notebooks whose code is the lesson: their figure code stays in view.
TEACHING_NOTEBOOKS = ("method_example",)


def present(executed: Path, destination: Path) -> None:
    """Write the reader's copy of an executed notebook.

    The page opens with its own title (runs.yaml's, for a run of a grid), the
    parameters cell and papermill's injected one are removed, and what the run
    was executed with — parameters, who set each, and the provenance the runner
    recorded — sits in one collapsed box under the introduction. Figure code is
    folded behind a toggle, except in the teaching notebooks. (The runner has
    already taken the machine's paths out of the warnings a cell printed.)
    """
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.get("semalign", {})
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            tags.append("remove-cell")
        elif (cell.cell_type == "code" and meta.get("notebook") not in TEACHING_NOTEBOOKS
              and any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))):
            tags.append("hide-input")
    first = next((i for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"), None)
    if first is None or not meta:
        nbformat.write(nb, destination)
        return
    if meta.get("title"):
        nb.cells[first].source = re.sub(r"^# .*$", f"# {meta['title']}", nb.cells[first].source, count=1, flags=re.M)
    nb.cells.insert(first + 1, nbformat.v4.new_markdown_cell(executed_with(meta)))
    nbformat.write(nb, destination)


def executed_with(meta: dict) -> str:
    """The collapsed "executed with" box of a page: its parameters and provenance."""
    known = runner.notebook_parameters(meta["notebook"])
    values, set_by = meta.get("parameters", {}), meta.get("set_by", {})
    rows = [[f"`{key}`", f"`{json.dumps(values.get(key, parameter.default), ensure_ascii=False)}`",
             set_by.get(key, "default" if key not in values else "not recorded"), parameter.help]
            for key, parameter in known.items() if key not in runner.RESERVED_PARAMETERS]
    facts = meta.get("provenance")
    if facts:
        libraries = ", ".join(f"{name} {facts[name]}" for name in ("semalign", "torch", "transformers", "numpy", "scikit-learn"))
        ran = (f"Executed on {facts['started']} in {pages.duration(facts['wall_s'])} on {facts['cpu']}, GPU: "
               f"{facts['gpu']}; Python {facts['python']}, {libraries}.")
    else:
        ran = "Where and with which library versions it ran was not recorded (executed before the runner recorded it)."
    return "\n".join([
        # no backticks in the title: a backtick fence's info string may not hold any
        f"```{{admonition}} Executed with profile {meta['profile']}: parameters and provenance",
        ":class: dropdown",
        "",
        f"Run `{meta['run']}`. {ran} Re-run it with other values: `semalign run {meta['notebook']} "
        f"--profile {meta['profile']} -p KEY=VALUE` (see {{ref}}`reproduce`).",
        "",
        pages.table(["parameter", "value", "set by", "meaning"], rows),
        "```",
    ])


def expand_run_globs(toc_file: Path, runs: list[runner.Run]) -> None:
    """Replace ``glob: experiments/NOTEBOOK__*`` entries of the table of contents
    by one titled entry per run of that notebook's grid (e.g. "transform: affine"),
    so the grid is declared once, in ``notebooks/runs.yaml``."""
    toc = yaml.safe_load(toc_file.read_text())

    def expand(entries: list) -> list:
        out = []
        for entry in entries:
            pattern = entry.get("glob", "") if isinstance(entry, dict) else ""
            match = re.fullmatch(r"experiments/(\w+)__\*", pattern)
            if not match:
                if isinstance(entry, dict):
                    for key in ("sections", "chapters"):
                        if key in entry:
                            entry[key] = expand(entry[key])
                out.append(entry)
                continue
            for run in (r for r in runs if r.notebook == match.group(1)):
                point = ", ".join(p.replace("-", ": ", 1) for p in run.name.split("__")[1:])
                out.append({"file": f"experiments/{run.name}", "title": run.title or point})
        return out

    for part in toc.get("parts", []):
        part["chapters"] = expand(part["chapters"])
    toc_file.write_text(yaml.safe_dump(toc, sort_keys=False))


def remote_loads(html_dir: Path) -> list[str]:
    """Every place a built page would load something from another host."""
    found = []
    for page in sorted(html_dir.rglob("*.html")):
        for match in REMOTE_LOAD.finditer(page.read_text(errors="replace")):
            found.append(f"{page.relative_to(html_dir)}: {match.group(0)[:120]}")
    return found


def build(profile: str = "offline", quiet: bool = True) -> Path:
    """Build the HTML book; returns the path of ``index.html``."""
    src = stage(profile)
    out = book_build_dir(profile)
    html = out / "_build" / "html"
    if html.exists():
        shutil.rmtree(html)
    command = [
        str(Path(sys.executable).with_name("jupyter-book")), "build", str(src),
        "--path-output", str(out), "--warningiserror", "--nitpick", "--keep-going",
    ]
    proc = subprocess.run(command, capture_output=quiet, text=True)
    if proc.returncode != 0:
        log = (proc.stdout or "") + (proc.stderr or "")
        warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
        detail = "\n".join(warnings[-20:]) or log[-3000:]
        raise SemalignError(f"the book build failed (sources in {src}):\n{detail}")
    remote = remote_loads(html)
    if remote:
        raise SemalignError("built pages load from remote hosts:\n" + "\n".join(remote[:20]))
    return html / "index.html"
