"""Plan and execute the study's notebooks with papermill.

``notebooks/runs.yaml`` declares the notebooks in order, the parameter grid of
each (one execution per grid point, e.g. one per transform) and each profile's
parameter overrides. A notebook's own ``parameters`` cell holds the defaults,
which run the offline profile. The runner converts the jupytext source in
memory, injects the parameters, executes it and writes the executed notebook
(and, from inside the notebook, its results file) where the book picks it up.

A run is all or nothing: the executed notebook is written atomically, and the
notebook's results file is staged in a private folder and moved into place
after it, so a run killed at any point leaves neither a torn file nor results
without their notebook; the notebook records the sha256 of its results, so a
kill between the two moves is detected. Until a run completes, the previous
executed notebook and records of that run stay in place: a failed or killed
re-run loses nothing. Temporary files of killed runs are removed by the next
run.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from semalign.core.cache import atomic_path, atomic_write_json, remove_stale_temporaries, sha256_file, temporary
from semalign.core.errors import SemalignError
from semalign.study.parameters import check as check_parameters
from semalign.core.paths import NOTEBOOKS_DIR, PACKAGE_DIR, PROJECT_ROOT, RUNS_FILE, executed_dir, results_dir, work_dir

KERNEL_NAME = "semalign"
RESERVED_PARAMETERS = ("profile", "run_name")
#: Parameters that may name a file or folder: a relative path is taken from the
#: directory `semalign run` is started in (the kernel runs in the work folder),
#: and a file's content hash is part of what makes a run current.
PATH_PARAMETERS = ("dataset", "text_dataset", "vision_dataset", "anchor_dataset", "data_root")


@dataclasses.dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    type_name: str
    help: str


@dataclasses.dataclass
class Run:
    """One execution of one notebook with one set of parameters."""

    notebook: str
    name: str
    profile: str
    parameters: dict
    chapter: str
    reads_results: bool = False
    title: str = ""  # the page title, from runs.yaml's ``title`` template filled with the grid point
    set_by: dict = dataclasses.field(default_factory=dict)  # parameter -> "profile", "grid" or "command line"
    variant: str = ""  # digest of the data parameters set away from the profile's values ("" for the profile's data)

    @property
    def source(self) -> Path:
        return NOTEBOOKS_DIR / f"{self.notebook}.py"

    @property
    def output(self) -> Path:
        return executed_dir(self.profile) / f"{self.name}.ipynb"

    @property
    def results_file(self) -> Path:
        return results_dir(self.profile) / f"{self.name}.json"

    @property
    def executed_metadata(self) -> dict:
        """What the runner wrote into the executed notebook (``{}`` when there is none)."""
        if not self.output.is_file():
            return {}
        return json.loads(self.output.read_text()).get("metadata", {}).get("semalign", {})

    @property
    def effective_parameters(self) -> dict:
        """Every parameter of the notebook as this run sees it: its defaults, then what was set."""
        return {**{key: p.default for key, p in notebook_parameters(self.notebook).items()}, **self.parameters}


def load_runs(path: Path = RUNS_FILE) -> dict:
    spec = yaml.safe_load(path.read_text())
    for entry in spec["notebooks"]:
        if not (NOTEBOOKS_DIR / f"{entry['name']}.py").is_file():
            raise SemalignError(f"{path} names notebook {entry['name']!r} but notebooks/{entry['name']}.py does not exist")
    return spec


def notebook_names() -> list[str]:
    return [entry["name"] for entry in load_runs()["notebooks"]]


def profiles() -> list[str]:
    return list(load_runs()["profiles"])


def read_notebook(name: str):
    """The jupytext source as an in-memory notebook (papermill reads no .py)."""
    import jupytext

    nb = jupytext.read(NOTEBOOKS_DIR / f"{name}.py")
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])  # papermill expects the key on every cell
    return nb


def notebook_parameters(name: str) -> dict[str, Parameter]:
    """The notebook's ``parameters`` cell, read by papermill's own inspection:
    name → default, type and help (its ``# comment``).

    Every statement of the cell must be ``name = <literal>``; anything else is
    an error, so a parameter can never be silently ignored.
    """
    from papermill.translators import PythonTranslator

    cells = [c for c in read_notebook(name).cells if "parameters" in c.metadata.get("tags", [])]
    where = f"notebooks/{name}.py"
    if len(cells) != 1:
        raise SemalignError(f"{where}: needs exactly one cell tagged 'parameters', found {len(cells)}")
    for node in ast.parse(cells[0].source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise SemalignError(f"{where}: parameters cell line {node.lineno} is not `name = literal`")
    result = {}
    for found in PythonTranslator.inspect(cells[0]):
        try:
            default = ast.literal_eval(found.default)
        except (ValueError, SyntaxError):
            raise SemalignError(f"{where}: default of parameter {found.name!r} is not a literal") from None
        result[found.name] = Parameter(found.name, default, type(default).__name__, found.help)
    missing = [r for r in RESERVED_PARAMETERS if r not in result]
    if missing:
        raise SemalignError(f"{where}: its parameters cell must declare {missing}")
    return result


def parse_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise SemalignError(f"-p {text!r}: expected KEY=VALUE, e.g. -p anchor_counts=[10,100]")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def coerce(notebook: str, parameter: Parameter, raw: Any) -> Any:
    """Convert a command-line or YAML value to the type of the parameter's default."""
    default = parameter.default
    expected = parameter.type_name
    if isinstance(raw, str) and isinstance(default, str):
        # a text parameter takes the text as given ("text: IU reports", "@body"); YAML only unquotes it
        try:
            unquoted = yaml.safe_load(raw)
        except yaml.YAMLError:
            unquoted = None
        return unquoted if isinstance(unquoted, str) else raw
    try:
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
    except yaml.YAMLError as exc:
        where = f" ({exc.problem})" if getattr(exc, "problem", None) else ""
        raise SemalignError(
            f"parameter {parameter.name!r} of {notebook}: {raw!r} is not a valid YAML value{where}; "
            f"pass e.g. -p {parameter.name}={json.dumps(default, separators=(',', ':'))}"
        ) from None

    def fail(requirement: str = "") -> SemalignError:
        example = json.dumps(default, separators=(",", ":")) if isinstance(default, (list, dict)) else default
        return SemalignError(
            f"parameter {parameter.name!r} of {notebook} expects {requirement or 'a ' + expected} like {default!r}, "
            f"got {raw!r}; pass e.g. -p {parameter.name}={example}"
        )

    if default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise fail()
        return value
    if isinstance(default, (int, float)):
        if isinstance(raw, str):
            try:
                value = float(raw) if isinstance(default, float) else int(raw)
            except ValueError:
                raise fail() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail()
        if isinstance(default, int) and not float(value).is_integer():
            raise fail()
        if isinstance(default, int) and value < 0:  # counts, sizes and seeds: none is negative
            raise fail("a whole number ≥ 0")
        return type(default)(value)
    if isinstance(default, str):  # a value from runs.yaml (text from the command line is returned above)
        if value is None or isinstance(value, (list, dict)):
            raise fail()
        return str(value)
    if isinstance(default, (list, dict)) and not isinstance(value, type(default)):
        raise fail()
    if isinstance(default, list) and default and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                      for x in default):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
            raise fail()
        if all(isinstance(x, int) and not isinstance(x, bool) for x in default):
            # anchor counts, seeds: a non-empty list of whole numbers ≥ 0
            if not value or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value):
                raise fail("a non-empty list of whole numbers ≥ 0")
    return value


def _resolved(value: str) -> str:
    """The absolute path a path parameter means; unchanged when it names no file (iu_xray)."""
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def _from_work_dir(value: str) -> str:
    """``value`` as a path relative to the work folder (where the kernel runs)
    when it names a file or folder, so that records and pages hold no absolute
    path of the machine; unchanged otherwise (a dataset name such as iu_xray)."""
    path = Path(value).expanduser()
    return os.path.relpath(path.resolve(), work_dir()) if path.exists() else value


def input_files(run: Run) -> dict[str, str]:
    """sha256 of each data file a run's parameters name (a report table passed
    as ``dataset``): an edited file makes the run stale."""
    files = {key: work_dir() / run.parameters[key] for key in PATH_PARAMETERS if isinstance(run.parameters.get(key), str)}
    return {key: sha256_file(path) for key, path in files.items() if path.is_file()}


def _title(template: str, point: dict) -> str:
    """runs.yaml's ``title`` template filled with a grid point, identifiers as words
    (``{experiment}: …`` with text_stitching gives "Text stitching: …")."""
    title = template.format(**{key: str(value).replace("_", " ") for key, value in point.items()})
    return title[:1].upper() + title[1:]


def _run_name(notebook: str, point: dict) -> str:
    return "__".join([notebook, *(f"{key}-{value}" for key, value in point.items())])


def _digest(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _checked_variant(notebook: str, code: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{8}", code):
        raise SemalignError(f"parameter 'variant' of {notebook}: {code!r} is not the 8-character code after "
                            f"'__data-' in a run's name; `semalign results --json` lists the runs (e.g. -p variant=1a2b3c4d)")
    return code


def plan(names: list[str], profile: str, overrides: list[str] | None = None) -> list[Run]:
    """The runs for the named notebooks (or ``all``) under a profile plus overrides."""
    spec = load_runs()
    if profile not in spec["profiles"]:
        raise SemalignError(f"unknown profile {profile!r}; valid profiles: {', '.join(spec['profiles'])}")
    entries = {entry["name"]: entry for entry in spec["notebooks"]}
    selected = list(entries) if not names or names == ["all"] else names
    unknown = [n for n in selected if n not in entries]
    if unknown:
        raise SemalignError(f"unknown notebook {unknown[0]!r}; valid notebooks: {', '.join(entries)} (or 'all')")
    parsed = [parse_override(o) for o in overrides or []]
    given = [key for key, _ in parsed]
    twice = next((key for key in given if given.count(key) > 1), None)
    if twice:
        values = ", ".join(f"-p {key}={raw}" for key, raw in parsed if key == twice)
        raise SemalignError(f"parameter {twice!r} is given more than once ({values}); give it once")
    parameters = {name: notebook_parameters(name) for name in selected}
    for key, _ in parsed:
        if key in RESERVED_PARAMETERS:
            raise SemalignError(f"parameter {key!r} is set by the runner; use --profile instead of -p {key}=...")
        if not any(key in parameters[name] for name in selected):
            valid = sorted({p for name in selected for p in parameters[name] if p not in RESERVED_PARAMETERS})
            raise SemalignError(f"unknown parameter {key!r} for {', '.join(selected)}; valid parameters: {', '.join(valid)}")
    runs = []
    data_parameters = spec.get("data_parameters", [])
    for name in selected:
        entry, known = entries[name], parameters[name]
        values = dict(entry.get("profiles", {}).get(profile) or {})
        own = {key: coerce(name, known[key], raw) if key in known else raw for key, raw in values.items()}
        set_by = dict.fromkeys(values, "profile")
        values.update({key: raw for key, raw in parsed if key in known})
        set_by.update({key: "command line" for key, _ in parsed if key in known})
        # A grid key set on the command line collapses that axis to the given value.
        grid = {key: [values[key]] if key in dict(parsed) else axis for key, axis in (entry.get("grid") or {}).items()}
        set_by.update({key: "grid" for key in grid if key not in dict(parsed)})
        for combo in itertools.product(*grid.values()) if grid else [()]:
            merged = {**values, **dict(zip(grid, combo))}
            checked = {}
            for key, raw in merged.items():
                if key not in known:
                    raise SemalignError(f"{RUNS_FILE}: notebook {name} has no parameter {key!r}; valid: {', '.join(known)}")
                checked[key] = coerce(name, known[key], raw)
            defaults = {key: p.default for key, p in known.items()}
            check_parameters(name, {**defaults, **checked}, defaults)
            # data set away from the profile's: a run of its own, never stored over the profile's (named
            # by the file a path means, wherever the work folder is)
            changed = {key: _resolved(checked[key]) if key in PATH_PARAMETERS else checked[key]
                       for key in data_parameters if set_by.get(key) == "command line" and key in checked
                       and checked[key] != own.get(key, known[key].default)}
            variant = _digest(changed) if changed else ""
            for key in PATH_PARAMETERS:
                if isinstance(checked.get(key), str) and checked[key]:
                    checked[key] = _from_work_dir(checked[key])
            if checked.get("variant"):  # a summary of runs on other data is stored under their code
                variant = _checked_variant(name, checked["variant"])
            run_name = _run_name(name, {k: checked[k] for k in grid}) + (f"__data-{variant}" if variant else "")
            checked.update(profile=profile, run_name=run_name)
            point = {key: checked[key] for key in grid}
            title = _title(entry.get("title", ""), point)
            runs.append(Run(name, run_name, profile, checked, entry.get("chapter", "Study"),
                            bool(entry.get("reads_results", False)),
                            f"{title or name} (data {variant})" if variant else title,
                            {key: set_by[key] for key in merged}, variant))
    return runs


def notebook_modules() -> list[Path]:
    """The package code an executed notebook can depend on: every module outside
    the roof (``study/`` and ``__main__.py``), which no notebook and no module
    below it imports (tests/test_layers.py), so editing the roof re-executes nothing."""
    return sorted(path for path in PACKAGE_DIR.rglob("*.py")
                  if not ((name := path.relative_to(PACKAGE_DIR).as_posix()).startswith("study/")
                          or name == "__main__.py"))


def code_fingerprint() -> str:
    """Hash of :func:`notebook_modules`: an executed notebook made by other code is stale."""
    digest = hashlib.sha256()
    for path in notebook_modules():
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def source_fingerprint(run: Run) -> str:
    return hashlib.sha256(run.source.read_bytes()).hexdigest()[:16]


def ensure_kernel() -> str:
    """A kernelspec named ``semalign`` that runs *this* interpreter, so a user's
    own ``python3`` kernel can never execute the study with other packages."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if spec.argv and Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name="Python (semalign)", prefix=sys.prefix)
    return KERNEL_NAME


def provenance() -> dict:
    """Where and with what a run executes: processor, GPU, Python and the versions
    of the libraries behind its numbers (stored in the executed notebook and shown
    on its page)."""
    import platform

    import torch

    from semalign.models.base import available_cores

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": f"{cpu} ({available_cores()} cores)",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        **{package: installed_version(package) or "not installed"
           for package in ("semalign", "torch", "transformers", "numpy", "scikit-learn")},
    }


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution; None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _ipc_kernel(folder: Path):
    """Kernel configuration: its channels on Unix sockets in ``folder`` (private
    to this user), not on TCP ports of the machine (ipykernel warns about those
    being unencrypted; other users of the machine could connect to them)."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc", "ip": str(folder / "kernel")}})


#: Warning filters the kernel's interpreter starts with. tqdm.auto, imported by
#: huggingface_hub and transformers, sees a Jupyter kernel and, without
#: ipywidgets, warns that it cannot draw widget bars, naming the file of the
#: environment's site-packages it warns from. The runner's kernels draw no
#: widgets (bars go to the runner's terminal), so the advice does not apply.
KERNEL_WARNING_FILTERS = ("ignore:IProgress not found",)


def _kernel_manager(log: Path):
    """A kernel manager whose kernel writes its own stderr (its log, not a cell's
    output: e.g. the shutdown noise of a kernel stopped by Ctrl-C) to ``log``
    rather than to the user's terminal, and starts with
    :data:`KERNEL_WARNING_FILTERS`."""
    from jupyter_client import AsyncKernelManager

    class KernelWithLog(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            log.parent.mkdir(parents=True, exist_ok=True)
            # kernel_cmd[0] is the interpreter (the semalign kernelspec's, see ensure_kernel)
            command = [kernel_cmd[0], *(f"-W{spec}" for spec in KERNEL_WARNING_FILTERS), *kernel_cmd[1:]]
            with open(log, "wb") as stream:  # the kernel keeps its own copy of the descriptor
                return await super()._async_launch_kernel(command, **{**kw, "stderr": stream})

    return KernelWithLog


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """Silence the execution libraries' own log lines (e.g. "Kernel died" while
    Ctrl-C stops a run): every failure reaches the user as one error line."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _environment(**values: str):
    """``os.environ`` with ``values`` set inside (the kernel inherits them); restored after."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _terminal(progress: bool) -> str:
    """The runner's terminal for the kernel's progress bars ("" when none or not wanted)."""
    if not progress or not sys.stderr.isatty():
        return ""
    try:
        return os.ttyname(sys.stderr.fileno())
    except OSError:
        return ""


def execute(run: Run, progress: bool = True) -> Path:
    """Execute one run; on failure remove its stale outputs and raise a one-line error."""
    import nbformat
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from semalign.core.progress import PROGRESS_TTY_ENV
    from semalign.experiments.results import STAGING_ENV

    result_file = run.results_file
    # the previous notebook and records stay in place until the new ones are complete
    run.output.parent.mkdir(parents=True, exist_ok=True)
    result_file.parent.mkdir(parents=True, exist_ok=True)
    for folder in (run.output.parent, result_file.parent):
        remove_stale_temporaries(folder)
    nb = read_notebook(run.notebook)
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python (semalign)", "language": "python"}
    failed = run.output.with_name(f"{run.name}.failed.ipynb")
    failed.unlink(missing_ok=True)
    # short and private: a Unix socket path must stay under ~100 characters
    sockets = Path(tempfile.mkdtemp(prefix="semalign-kernel-"))
    started = time.time()
    inputs = input_files(run)  # hashed before executing: an edit during the run makes it stale
    read = records_read(run) if run.reads_results else None
    kept = "; its previous results are kept" if run.output.is_file() else ""  # replaced only by a complete run
    try:
        with temporary(result_file.parent / f"{run.name}.results", "", folder=True) as staging:
            with _environment(**{STAGING_ENV: str(staging), PROGRESS_TTY_ENV: _terminal(progress)}), \
                    _quiet_loggers("papermill", "nbclient", "traitlets", "asyncio"), \
                    atomic_path(run.output, suffix=".ipynb") as tmp:
                try:
                    papermill.execute_notebook(
                        nb, str(tmp), parameters=run.parameters, kernel_name=ensure_kernel(),
                        progress_bar=progress, cwd=str(work_dir()), log_output=False, config=_ipc_kernel(sockets),
                        kernel_manager_class=_kernel_manager(run.output.with_name(f"{run.name}.kernel.log")),
                    )
                except DeadKernelError:
                    raise SemalignError(
                        f"the kernel running {run.name} died (out of memory? see {run.output.with_name(run.name + '.kernel.log')}); "
                        f"lower max_reports, n_images or batch_size, or free memory{kept}"
                    ) from None
                except PapermillExecutionError as exc:
                    if tmp.exists():
                        shutil.copyfile(tmp, failed)
                    raise SemalignError(
                        f"notebook {run.notebook} (run {run.name}) failed in cell {exc.cell_index} at "
                        f"[{failing_line(exc.source, exc.traceback)[:80]}]: {exc.ename}: {exc.evalue} "
                        f"(executed copy: {failed}){kept}"
                    ) from None
                executed = nbformat.read(tmp, as_version=4)
                facts = {**provenance(), "started": time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(started)),
                         "wall_s": round(time.time() - started, 1)}
                code_sha256 = code_fingerprint()
                for staged in sorted(staging.glob("*.json")):  # every record says what made it
                    _add_provenance(staged, run, inputs, code_sha256, facts)
                for message in study_warnings(executed):  # shown where the user is, not only inside the notebook
                    print(f"warning: {run.name}: {message}", file=sys.stderr, flush=True)
                strip_machine_paths(executed)
                executed.metadata["semalign"] = {
                    "notebook": run.notebook, "run": run.name, "profile": run.profile, "title": run.title,
                    "parameters": run.parameters, "set_by": run.set_by, "source_sha256": source_fingerprint(run),
                    "code_sha256": code_sha256, "inputs_sha256": inputs, "variant": run.variant, "provenance": facts,
                    # which records belong to this notebook: a kill between publishing the two is detected
                    "results_sha256": {path.name: sha256_file(path) for path in sorted(staging.glob("*.json"))},
                    **({"records_read": read} if read is not None else {}),
                }
                nbformat.write(executed, tmp)
            # the notebook is in place; now its records (a kill in between leaves a run
            # that executed_status calls incomplete, never records without a notebook)
            for staged in sorted(staging.glob("*.json")):
                os.replace(staged, result_file.parent / staged.name)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    return run.output


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CELL_LINE = re.compile(r"^-+> ?(\d+)", re.M)


def failing_line(source: str, traceback: list[str]) -> str:
    """The line of a cell that raised: the first frame of the cell in IPython's
    traceback (``---> 12 call()``), which may be deep in the cell; the cell's
    first line when the traceback names none."""
    lines = source.splitlines()
    for frame in traceback:
        text = _ANSI.sub("", frame)
        if not text.lstrip().startswith(("Cell In[", "Input In [")):
            continue
        found = _CELL_LINE.search(text)
        if found and 0 < int(found.group(1)) <= len(lines):
            return lines[int(found.group(1)) - 1].strip()
    return next((line.strip() for line in lines if line.strip()), "")


def _add_provenance(staged: Path, run: Run, inputs: dict[str, str], code_sha256: str, facts: dict) -> None:
    """Write into a run's staged results file what its records were made with."""
    # the values the notebook ran with: its own defaults where neither profile nor command line set one
    values = run.effective_parameters
    data = {key: values[key] for key in load_runs().get("data_parameters", []) if key in values}
    content = json.loads(staged.read_text())
    content["provenance"] = {
        "variant": run.variant,
        "data_id": _digest({"parameters": data, "files": inputs}),  # what summaries compare before pooling
        "data": data,
        "inputs_sha256": inputs,
        "encoders": {key: value for key, value in values.items() if key == "encoders" or key.endswith("_encoders")},
        **{key: values[key] for key in ("device", "precision", "batch_size") if key in values},
        "code_sha256": code_sha256, **content.get("provenance", {}), "machine": facts,
    }
    atomic_write_json(staged, content)


_STUDY_WARNING = re.compile(r"/semalign/(?:\w+/)*\w+\.py:\d+: \w*Warning: (.+)")
# The folder of the file a warning names, as Python prints it ("/…/semalign/x.py:12: UserWarning: …"):
# the project's or an environment's site-packages, a path of the machine that ran the notebook.
WARNING_FOLDER = re.compile(rf"^(?:{re.escape(str(PROJECT_ROOT))}/|/\S*?/site-packages/)(?=\S+\.py:\d+: \w*Warning: )", re.M)


def strip_machine_paths(nb) -> None:
    """Take the machine's paths out of an executed notebook: papermill's
    ``input_path`` and ``output_path`` (the in-memory source, a temporary file),
    and the folders of the files that warnings name. A warning a cell printed
    keeps its text and names its file from the package's or site-packages'
    folder (``semalign/data/reports.py:180: UserWarning: …``)."""
    for where in ("input_path", "output_path"):
        nb.metadata.get("papermill", {}).pop(where, None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                out.text = WARNING_FOLDER.sub("", "".join(out.text))


def study_warnings(nb) -> list[str]:
    """The warnings the study's own code raised while a notebook executed (rows
    dropped from a table, a damaged cache entry recomputed), each once."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                found += _STUDY_WARNING.findall("".join(output.get("text", "")))
    return list(dict.fromkeys(found))


_VARIANT = re.compile(r"__data-([0-9a-f]{8})$")


def records_read(run: Run) -> dict[str, str]:
    """sha256 of the results files a summary (``reads_results``) summarises:
    those of the runs of notebooks listed before it in runs.yaml, on the same
    data (its variant). A summary never reads a later notebook's records, so
    `semalign run all` brings every summary up to date in one pass."""
    order = notebook_names()
    earlier = set(order[:order.index(run.notebook)])
    folder = results_dir(run.profile)
    files = sorted(folder.glob("[!.]*.json")) if folder.is_dir() else []
    return {file.name: sha256_file(file) for file in files if file.stem.partition("__")[0] in earlier
            and (m.group(1) if (m := _VARIANT.search(file.stem)) else "") == run.variant}


def executed_status(run: Run) -> str | None:
    """None when the executed notebook is present and current, else why not."""
    if not run.output.is_file():
        return "missing"
    meta = run.executed_metadata
    if meta.get("source_sha256") != source_fingerprint(run):
        return "stale (notebook source changed)"
    if meta.get("code_sha256") != code_fingerprint():
        return "stale (semalign package changed)"
    result_file = run.results_file
    if not result_file.is_file():
        return "missing its results file"
    expected = meta.get("results_sha256", {}).get(result_file.name)
    if expected is not None and sha256_file(result_file) != expected:
        return "incomplete (its results file is not the one it wrote: the run was interrupted)"
    if run.reads_results:
        read, now = meta.get("records_read"), records_read(run)
        if read != now:
            changed = sorted(set(read or {}) ^ set(now) | {k for k in now if (read or {}).get(k, now[k]) != now[k]})
            return f"stale (the records it summarises changed since: {', '.join(changed) or 'not recorded'})"
    return None


def up_to_date(run: Run) -> bool:
    """True when re-executing ``run`` could not change anything: its executed
    notebook and results exist, come from the current source and package code,
    the same parameters and the same content of the data files they name, and — for a notebook that reads other runs' records
    (``reads_results: true`` in runs.yaml) — from the records those runs hold now
    (:func:`records_read`)."""
    if executed_status(run) is not None:
        return False
    meta = run.executed_metadata
    if json.dumps(meta.get("parameters"), sort_keys=True, default=str) != json.dumps(run.parameters, sort_keys=True, default=str):
        return False
    return meta.get("inputs_sha256", {}) == input_files(run)  # a data file named by a parameter changed


def executed_runs(profile: str) -> list[Run]:
    """The runs of a profile as they were last executed (their recorded parameters)."""
    runs = []
    for planned in plan(["all"], profile):
        planned.parameters = planned.executed_metadata.get("parameters", planned.parameters)
        runs.append(planned)
    return runs
