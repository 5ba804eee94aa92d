"""What each notebook parameter may hold, declared once, and checked before a kernel starts.

A parameter's *type* is its default's (the notebook's ``parameters`` cell,
checked by :func:`semalign.study.runner.coerce`); its *rule* is declared here,
by name, because a name means the same in every notebook (``transform``,
``anchor_counts``, ``test_fraction``). :func:`check` applies the rules and the
relations between parameters (``targets`` among the ``encoders``, anchor counts
no larger than the fit split that ``n_images`` or ``max_reports`` and the
fractions leave). What only the data can tell (a user table's size and labels)
is checked right after loading, in the same words.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from semalign.core.errors import SemalignError


class Rule(NamedTuple):
    """``problem(value)`` says what is wrong with a value ("" when nothing is)."""

    problem: Callable[[Any], str]
    fix: Any = None  # the value the error suggests; None: a case-insensitive match, else the default
    choices: tuple = ()


def one_of(choices: Sequence[str]) -> Rule:
    return Rule(lambda v: "" if v in choices else f"is not one of {', '.join(choices)}", choices=tuple(choices))


def each_of(choices: Sequence[str]) -> Rule:
    def problem(values):
        bad = [v for v in values if v not in choices]
        if not values or bad or len(set(values)) < len(values):
            return f"is not a non-empty list of distinct values among {', '.join(choices)}"
        return ""
    return Rule(problem)


def between(low: float, high: float | None = None, *, open_low: bool = False, open_high: bool = False) -> Rule:
    left, right = "(" if open_low else "[", ")" if open_high or high is None else "]"
    where = f"{left}{low}, {'∞' if high is None else high}{right}"

    def problem(v):
        inside = (v > low if open_low else v >= low) and (high is None or (v < high if open_high else v <= high))
        return "" if inside else f"is outside {where}"
    return Rule(problem)


def counts(low: int, *, empty: bool = False) -> Rule:
    def problem(values):
        if (not values and not empty) or any(v < low for v in values) or len(set(values)) < len(values):
            return f"is not a {'' if empty else 'non-empty '}list of distinct whole numbers ≥ {low}"
        return ""
    return Rule(problem)


def names(*, empty: bool) -> Rule:
    def problem(values):
        if (not values and not empty) or not all(isinstance(v, str) and v.strip() for v in values):
            return f"is not a {'' if empty else 'non-empty '}list of names"
        return "" if len(set(values)) == len(values) else "names an item twice"
    return Rule(problem)


ANY = Rule(lambda v: "")
TEXT = Rule(lambda v: "" if v.strip() else "is empty")


def path_problem(value: str, *, folder: bool = False) -> str:
    """Why ``value`` cannot be read as a file (or folder): "" when it can."""
    path = Path(value).expanduser()
    try:
        if len(os.fsencode(value)) > 4096 or any(len(os.fsencode(part)) > 255 for part in path.parts):
            return "is too long to be a path (a name over 255 bytes or a path over 4,096)"
        if path.is_symlink() and not path.exists():
            return "is a symbolic link that leads nowhere (a loop or a missing target)"
        if not path.exists():
            return "does not exist"
        if folder and not path.is_dir():
            return "is a file; give the folder that holds the datasets"
        if not folder and path.is_dir():
            return "is a folder; give a .csv, .csv.gz or .parquet file"
        if not os.access(path, os.R_OK):
            return "cannot be read (permissions)"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return ""


def dataset(names_: Sequence[str], *, tables: bool) -> Rule:
    """A dataset name among ``names_`` or, with ``tables``, a readable report table."""
    def problem(v):
        if v in names_:
            return ""
        looks_like_path = tables and (os.sep in v or "." in v)
        if not looks_like_path:
            return f"is not one of {', '.join(names_)}{' or a .csv/.parquet file' if tables else ''}"
        return path_problem(v)
    return Rule(problem, fix=names_[0])


def _declarations() -> dict[str, Rule | dict[str, Rule]]:
    """Every parameter of every notebook, by name (a dict: by notebook, where the name's meaning differs)."""
    from semalign.data.paper import DATASETS, UNCERTAIN_POLICIES
    from semalign.data.reports import TASKS
    from semalign.experiments.inputs import PHANTOM, SPLITS
    from semalign.experiments.stitching import DECODERS
    from semalign.experiments.summary import TRANSFORM_ORDER
    from semalign.method.align import ANCHOR_STRATEGIES, SCALINGS
    from semalign.models.encoders import DEVICES, PRECISIONS

    text_data = dataset(("iu_xray", "mimic_cxr"), tables=True)
    image_data = dataset((PHANTOM, *DATASETS), tables=False)
    metrics = one_of(("macro_auroc", "macro_f1", "accuracy"))
    whole, fraction = between(0), between(0, 1, open_low=True, open_high=True)
    return {
        "transform": one_of(TRANSFORM_ORDER), "transforms": each_of(TRANSFORM_ORDER),
        "encoders": names(empty=False), "text_encoders": names(empty=False), "vision_encoders": names(empty=False),
        "targets": names(empty=True), "multimodal_encoders": names(empty=True), "allow_remote_code": names(empty=True),
        "anchor_counts": counts(1), "claim_anchor_counts": counts(1, empty=True),
        "table_anchor_counts": counts(1, empty=True), "seeds": counts(0),
        "anchor_strategy": one_of(ANCHOR_STRATEGIES), "task": one_of(TASKS), "decoder": one_of(DECODERS),
        "scaling": one_of(SCALINGS), "precision": one_of(PRECISIONS), "device": one_of(DEVICES),
        "uncertain": one_of(UNCERTAIN_POLICIES), "split": one_of(SPLITS), "metric": metrics,
        "experiment": one_of(("text_stitching", "vision_stitching")),
        "dataset": {"data_overview": text_data, "text_stitching": text_data,
                    "vision_stitching": image_data, "zero_shot": image_data},
        "text_dataset": text_data, "vision_dataset": image_data,
        "anchor_dataset": Rule(lambda v: "" if v in ("", PHANTOM, "mimic_cxr")
                               else "is not empty (the dataset's own pairs), phantom or mimic_cxr", fix=""),
        "data_root": Rule(lambda v: v and path_problem(v, folder=True), fix=""),
        "text_column": TEXT, "label_columns": names(empty=True), "text_label_columns": names(empty=True),
        "vision_label_columns": names(empty=True), "text_label": TEXT, "vision_label": TEXT,
        "prompts": Rule(_prompts_problem, fix={}),
        "test_fraction": fraction, "validation_fraction": between(0, 1, open_high=True),
        "normal_fraction": between(0, 1, open_high=True), "medical_scale": between(0, 100, open_low=True),
        "n_images": between(10), "image_size": between(32, 1024),
        "max_reports": whole, "max_images": whole, "max_anchor_pairs": whole, "batch_size": whole, "jobs": whole,
        "workers": whole, "seed": whole, "split_seed": whole, "phantom_seed": whole, "k": between(1),
        "variant": ANY,  # checked by the runner, which names runs by it
        # method_example's toy problem
        "n_points": between(10), "n_anchors": between(1), "angle": ANY, "noise": between(0),
        "stretch": Rule(lambda v: "" if len(v) == 2 and all(x > 0 for x in v) else "is not two positive numbers"),
        "shift": Rule(lambda v: "" if len(v) == 2 else "is not two numbers"),
        "affine_steps": between(1), "sweep_dims": between(2), "sweep_signal": between(0, 1, open_low=True),
        "sweep_decay": between(0), "sweep_seeds": between(1),
    }


def _prompts_problem(value: dict) -> str:
    for name, sides in value.items():
        if not (isinstance(sides, dict) and set(sides) <= {"positive", "negative"} and sides.get("positive")
                and all(isinstance(p, str) for side in sides.values() for p in side)):
            return (f"has class {name!r} without a list of positive prompts (and optionally negative ones); "
                    "give {class: {positive: [...], negative: [...]}}")
    return ""


def declared(notebook: str, name: str) -> Rule | None:
    rule = _declarations().get(name)
    return rule.get(notebook) if isinstance(rule, dict) else rule


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + "…" + text[-12:]


def _option(name: str, value: Any) -> str:
    return f"-p {name}={json.dumps(value, separators=(',', ':')) if isinstance(value, (list, dict)) else value}"


def _error(name: str, value: Any, problem: str, fix: Any) -> SemalignError:
    return SemalignError(f"{name}={_shown(value)} {problem} ({_option(name, fix)})")


def check(notebook: str, values: dict, defaults: dict) -> None:
    """Stop with one line naming the parameter, its value and a fix when a value
    breaks its rule or its relation to other parameters."""
    for name, value in values.items():
        rule = declared(notebook, name)
        if rule is None:
            continue
        problem = rule.problem(value)
        if problem:
            fix = rule.fix
            if fix is None and isinstance(value, str):
                fix = next((c for c in rule.choices if c.lower() == value.lower()), None)
            raise _error(name, value, problem, defaults.get(name) if fix is None else fix)
    _check_relations(notebook, values)


def _check_relations(notebook: str, values: dict) -> None:
    encoders = values.get("encoders")
    missing = [t for t in values.get("targets", []) if encoders is not None and t not in encoders]
    if missing:
        raise SemalignError(f"targets={values['targets']!r} names {', '.join(missing)}, not among encoders="
                            f"{encoders!r}; a target must be one of the encoders ({_option('targets', [])} "
                            f"runs every ordered pair)")
    if values.get("n_anchors", 0) > values.get("n_points", float("inf")):
        raise SemalignError(f"n_anchors={values['n_anchors']} exceeds n_points={values['n_points']}: anchors are "
                            f"drawn from the points ({_option('n_anchors', min(6, values['n_points']))})")
    pool = fit_pool(values)
    if pool is None or "anchor_counts" not in values:
        return
    size, made_by = pool
    from semalign.experiments.stitching import check_anchor_counts

    check_anchor_counts(values["anchor_counts"], size, made_by)


def fit_pool(values: dict) -> tuple[int, str] | None:
    """(items in the fit split, the parameters that make it) where the parameters
    alone decide it (the phantom, the IU X-ray reports); None where only the
    data can tell (a user table, a paper dataset)."""
    from semalign.data.manifest import load_manifest
    from semalign.data.reports import held_out

    name = values.get("dataset")
    if values.get("anchor_dataset") not in (None, "", name):
        return None  # zero-shot anchors from another dataset: its pairs decide
    if name == "phantom" and "n_images" in values:
        n, size = values["n_images"], f"n_images={values['n_images']}"
    elif name == "iu_xray":
        every = load_manifest()["sources"]["iu_xray_reports"]["counts"]["with_findings_or_impression"]
        n = min(values.get("max_reports") or every, every)
        size = f"max_reports={values['max_reports']}" if values.get("max_reports") else f"the {every:,} IU X-ray reports"
    else:
        return None
    test_fraction, validation_fraction = values.get("test_fraction", 0.3), values.get("validation_fraction", 0.0)
    n_test = held_out(n, test_fraction)
    train = n - n_test
    if n_test < 1 or train < 2:
        raise SemalignError(f"test_fraction={test_fraction} of {size} leaves {train} item(s) for training and "
                            f"{n_test} for testing ({_option('test_fraction', 0.3)}, or more items)")
    fit = train - held_out(train, validation_fraction)
    return fit, f"{size}, test_fraction={test_fraction}, validation_fraction={validation_fraction}"
