"""The ``semalign`` command: run notebooks, build the book, read results, check data.

Every user-facing problem is a :class:`SemalignError`, printed as one line
(``error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys

from semalign.core.errors import SemalignError
from semalign.core.paths import work_dir


def _cmd_run(args) -> int:
    from semalign.study import runner
    if args.list:
        for name in runner.notebook_names():
            print(name)
            for p in runner.notebook_parameters(name).values():
                if p.name in runner.RESERVED_PARAMETERS:
                    continue
                helptext = f"  # {p.help}" if p.help else ""
                print(f"    {p.name} ({p.type_name}) = {p.default!r}{helptext}")
        return 0
    runs = runner.plan(args.names or ["all"], args.profile, args.param)
    _require_paper_data(runs)
    executed = 0
    with _ctrl_c_noted() as pressed:
        for i, run in enumerate(runs, 1):
            if not args.force and runner.up_to_date(run):
                print(f"[{i}/{len(runs)}] {run.name} ({args.profile}): up to date, not re-executed", flush=True)
                continue
            print(f"[{i}/{len(runs)}] {run.name} ({args.profile})", flush=True)
            runner.execute(run, progress=not args.quiet)
            executed += 1
            if pressed:  # the execution libraries caught the KeyboardInterrupt: stop after the finished run
                raise KeyboardInterrupt
    print(f"executed {executed} of {len(runs)} run(s) ({len(runs) - executed} up to date; --force re-executes them); "
          f"notebooks in {runs[0].output.parent}")
    return 0


@contextlib.contextmanager
def _ctrl_c_noted():
    """Ctrl-C raises KeyboardInterrupt as usual and is also noted, so that a run
    whose libraries swallowed the exception still ends the command with 130."""
    pressed: list[int] = []

    def on_ctrl_c(signum, frame):
        pressed.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _require_paper_data(runs) -> None:
    """Stop before executing anything when a run needs a credentialed dataset
    that is missing or incomplete under its ``data_root`` (one-line error that
    says how to obtain it), instead of failing halfway through ``run all``."""
    from semalign.data import paper as paper_data
    needed = {}
    for run in runs:
        for key in ("dataset", "anchor_dataset", "text_dataset", "vision_dataset"):
            name = run.parameters.get(key)
            if isinstance(name, str) and name in paper_data.DATASETS:
                needed.setdefault((name, run.parameters.get("data_root", "")), run.name)
    for (name, root), first_run in needed.items():
        if not root:
            raise SemalignError(f"run {first_run} uses the credentialed dataset {name!r}: pass its folder with "
                                "-p data_root=/path/to/data (see `semalign data verify --profile paper`)")
        paper_data.require(name, str(work_dir() / root))  # the runner stores paths relative to the work folder


def _cmd_embed(args) -> int:
    """Fill the embedding cache for runs ahead of ``semalign run``, in one
    process or in several under ``accelerate launch`` (each process takes its
    share of every entry; the first then writes the manifests)."""
    from semalign.experiments.extract import EXTRACTED, embed_run
    from semalign.study import runner
    from semalign.models import embed

    runs = runner.plan(args.names or list(EXTRACTED), args.profile, args.param)
    _require_paper_data(runs)
    state, share = _process_group()
    main_process = share[0] == 0
    seen = set()
    work_dir().mkdir(parents=True, exist_ok=True)
    for run in runs:  # the runs of one notebook's grid embed the same data: once
        if (run.notebook, run.variant) in seen:
            continue
        seen.add((run.notebook, run.variant))
        if main_process:
            print(f"embedding for {run.name} ({args.profile}), process {share[0] + 1} of {share[1]}", flush=True)
        with contextlib.chdir(work_dir()):  # where the kernels run: the runs' paths start there
            embed_run(run.notebook, run.effective_parameters, share=share, progress=main_process and not args.quiet,
                      first=state.main_process_first if state else contextlib.nullcontext)
    if state is not None:
        state.wait_for_everyone()
    if main_process:
        folder = embed.entry_dir("-").parent
        keys = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
        complete = sum(embed.merge_parts(k) for k in keys)
        print(f"{folder}: {complete} of {len(keys)} entries complete; "
              f"`semalign run {' '.join(args.names or EXTRACTED)} --profile {args.profile}` reads them")
    return 0


def _process_group():
    """accelerate's view of the launch: (state, (rank, world)); (None, (0, 1))
    without accelerate or when launched as one process."""
    if not any(os.environ.get(v) for v in ("WORLD_SIZE", "LOCAL_RANK", "ACCELERATE_MIXED_PRECISION")):
        return None, (0, 1)
    try:
        import torch
        from accelerate import PartialState
    except ImportError:
        raise SemalignError("semalign embed was launched as several processes but accelerate is not installed; "
                            "pip install accelerate (it is in requirements-lock.txt)") from None
    state = PartialState(cpu=not torch.cuda.is_available())
    return state, (state.process_index, state.num_processes)


def _cmd_book(args) -> int:
    from semalign.study import book
    index = book.build(args.profile, quiet=not args.verbose)
    print(index)
    return 0


def _cmd_results(args) -> int:
    from semalign.experiments.results import load_records

    table = load_records(args.profile, variant=None, provenance=args.json)
    if args.json:
        json.dump(json.loads(table.to_json(orient="records")), sys.stdout, indent=1)
        print()
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(table.to_string(index=False))
    return 0


def _cmd_data(args) -> int:
    from semalign.data.manifest import verify_sources

    if args.profile == "paper":
        from semalign.data import paper as paper_data
        from semalign.study import runner
        options = dict(runner.parse_override(p) for p in args.param)
        if "data_root" not in options:
            raise SemalignError("the paper profile needs -p data_root=/path/to/datasets (see data_manifest.yaml, paper_sources)")
        statuses = paper_data.verify(options["data_root"])
    else:
        statuses = verify_sources(args.profile)
    for s in statuses:
        print(f"{s.status:8} {s.name:22} {s.detail}  [{s.path}]")
    bad = [s for s in statuses if not s.ok]
    if bad:
        listing = "; ".join(f"{s.name} is {s.status} ({s.path}): {s.detail}" for s in bad)
        raise SemalignError(f"{len(bad)} of {len(statuses)} data sources are missing or corrupt: {listing}")
    print(f"all {len(statuses)} data sources of profile {args.profile!r} verified")
    return 0


def _cmd_doctor(args) -> int:
    from semalign.study import doctor
    return doctor.main()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semalign", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute notebooks with papermill")
    run.add_argument("names", nargs="*", help="notebook names, or 'all' (default)")
    run.add_argument("--profile", default="offline", help="offline (default), smoke or paper")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="override a parameter (YAML value)")
    run.add_argument("--list", action="store_true", help="list notebooks, their parameters and defaults")
    run.add_argument("--quiet", action="store_true", help="no per-cell progress bar")
    run.add_argument("--force", action="store_true",
                     help="re-execute runs that are up to date (same source, code, parameters and inputs)")
    run.set_defaults(func=_cmd_run)

    emb = sub.add_parser("embed", help="fill the embedding cache ahead of runs (several processes: accelerate launch)")
    emb.add_argument("names", nargs="*", help="text_stitching, vision_stitching, zero_shot (default: all three)")
    emb.add_argument("--profile", default="offline", help="offline (default), smoke or paper")
    emb.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter, as for semalign run")
    emb.add_argument("--quiet", action="store_true", help="no progress bars")
    emb.set_defaults(func=_cmd_embed)

    bk = sub.add_parser("book", help="build the HTML book from executed notebooks")
    bk.add_argument("--profile", default="offline")
    bk.add_argument("--verbose", action="store_true", help="show Jupyter Book's output")
    bk.set_defaults(func=_cmd_book)

    res = sub.add_parser("results", help="print every recorded metric")
    res.add_argument("--profile", default="offline")
    res.add_argument("--json", action="store_true", help="a JSON list of flat records")
    res.set_defaults(func=_cmd_results)

    data = sub.add_parser("data", help="data sources")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    verify = data_sub.add_parser("verify", help="check every data source against data_manifest.yaml")
    verify.add_argument("--profile", default="offline")
    verify.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="data_root=... for the paper profile")
    verify.set_defaults(func=_cmd_data)

    doc = sub.add_parser("doctor", help="check the environment and say what to fix")
    doc.set_defaults(func=_cmd_doctor)
    return parser


def _check_profile(args) -> None:
    """An unknown ``--profile`` stops every command with the valid ones (not "all 0 verified")."""
    from semalign.study import runner
    profile = getattr(args, "profile", None)
    if profile is not None and profile not in runner.profiles():
        raise SemalignError(f"unknown profile {profile!r}; valid profiles: {', '.join(runner.profiles())} "
                            "(e.g. --profile offline)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_profile(args)
        return args.func(args)
    except SemalignError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # always one line
        return 2
    except PermissionError as exc:  # a read-only or foreign work folder
        print(f"error: cannot write {exc.filename or 'a file'} ({exc.strerror}); make it writable, or point "
              f"SEMALIGN_WORKDIR at a folder you can write (see README, Re-running)", file=sys.stderr)
        return 2
    except (FileExistsError, NotADirectoryError) as exc:  # a file where the study needs a folder
        print(f"error: {exc.filename} is in the way ({exc.strerror}); move it, or point SEMALIGN_WORKDIR at "
              f"another folder", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: runs that had finished are kept; the unfinished one left nothing behind", file=sys.stderr)
        # The runner's own clean-up has run by now. Leave without the interpreter's
        # finalisation: after a caught Ctrl-C it can still end the process by SIGINT
        # (status -2 instead of 130).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


if __name__ == "__main__":
    sys.exit(main())
