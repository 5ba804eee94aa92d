"""The study's numbers as flat records, one JSON file per executed run.

A record is one metric of one method in one setting. The keys are fixed
(:data:`RECORD_KEYS`) so ``semalign results --json`` is readable by any tool;
keys that do not apply to a record are ``None``.

When the runner executes a notebook it sets ``SEMALIGN_RESULTS_STAGING`` to a
private folder; the notebook's records go there and the runner moves them into
place only after the executed notebook is saved, so a run killed half-way
leaves no results that ``semalign results`` or the book would read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd

from semalign.core.cache import atomic_write_json
from semalign.core.errors import SemalignError
from semalign.core.paths import cache_dir, results_dir

RECORD_KEYS = (
    "experiment", "profile", "run", "method", "transform", "source", "target",
    "n_anchors", "seed", "task", "metric", "value",
    # which items scored the record (test or validation) and the 95% bootstrap interval over them
    "split", "ci_low", "ci_high",
    # a setting chosen on held-out data says so (e.g. "validation")
    "selected_on",
    # claim records (experiment "claims"): the claim's id, the modality it is judged on,
    # its verdict, the estimate the verdict is read from, the rounding spread its interval is widened by,
    # and why the records cannot test it (verdict "not testable here")
    "claim", "modality", "verdict", "estimate", "rounding_delta", "reason",
)
# The keys whose values are numbers (a missing one is None).
_NUMERIC_KEYS = ("value", "ci_low", "ci_high", "estimate", "rounding_delta")


def make_record(**fields) -> dict:
    """A record with every key of :data:`RECORD_KEYS`; unknown keys are an error.
    Only a record that gives the ``reason`` it has no number may have no ``value``."""
    unknown = set(fields) - set(RECORD_KEYS)
    if unknown:
        raise ValueError(f"unknown record keys {sorted(unknown)}; valid keys: {', '.join(RECORD_KEYS)}")
    if "value" not in fields or "metric" not in fields:
        raise ValueError("a record needs at least 'metric' and 'value'")
    record = {key: fields.get(key) for key in RECORD_KEYS}
    for key in _NUMERIC_KEYS:
        if record[key] is None and (key != "value" or record["reason"]):
            continue
        number = float(record[key])
        if not math.isfinite(number):
            raise ValueError(f"record {record['metric']} of {record['method']} has a non-finite {key} {number}")
        record[key] = number
    return record


STAGING_ENV = "SEMALIGN_RESULTS_STAGING"


def results_file(profile: str, run: str) -> Path:
    """Where a run's records are read from."""
    return results_dir(profile) / f"{run}.json"


def _destination(profile: str, run: str) -> Path:
    staging = os.environ.get(STAGING_ENV)
    if not staging:
        return results_file(profile, run)
    if not Path(staging).is_dir():
        raise SemalignError(
            f"the runner's staging folder {staging} is gone (the `semalign run` that started this notebook was "
            f"stopped); run it again, or unset {STAGING_ENV} to write {results_file(profile, run)} directly"
        )
    return Path(staging) / f"{run}.json"


class Embeddings(dict):
    """Embeddings by encoder name, with what made them: each encoder's spec
    (``specs``) and identity (``identities``: its source, the fingerprint of its
    weights — the study-made encoders' cache keys included —, precision and
    device), which :func:`save_records` stores with the records they produce."""

    def __init__(self):
        super().__init__()
        self.specs: dict[str, Any] = {}
        self.identities: dict[str, dict] = {}

    def note(self, spec: Any, precision: str, device: str) -> None:
        from semalign.models.encoders import encoder_fingerprint, pick_device

        spec, fingerprint = encoder_fingerprint(spec, precision, device)
        self.specs[spec.name] = spec
        self.identities[spec.name] = {"source": shareable_source(spec.source), "fingerprint": fingerprint,
                                      "precision": precision, "device": pick_device(device)}


def shareable_source(source: str) -> str:
    """An encoder's source as records may show it: a study-made encoder's cache
    folder relative to the cache root (``efficientnet-lite1:<cache>/encoders/...``),
    not a path of this machine; ids and packaged names as they are."""
    return source.replace(str(cache_dir()), "<cache>")


def save_records(records: Iterable[Mapping], *, profile: str, run: str, experiment: str, parameters: Mapping,
                 replicates: Mapping[str, Iterable[float]] | None = None,
                 embeddings: Iterable[Embeddings | None] = ()) -> None:
    """Write a run's records atomically (into the runner's staging folder when a
    run is executing, else to :func:`results_file`).

    Returns nothing, so that a notebook's last line calling it shows no path of
    the machine it ran on.

    ``replicates`` maps a key (see :func:`semalign.experiments.claims.replicate_key`) to the
    bootstrap replicates of a test metric, so a summary can compute paired
    intervals across runs scored on the same test items (:func:`load_replicates`).

    ``embeddings`` are the :class:`Embeddings` the records were computed from
    (``None`` entries are skipped); their encoders' identities are saved as provenance.
    """
    # a record may name its own experiment (claim records say "claims")
    rows = [make_record(**{"experiment": experiment, **dict(r), "profile": profile, "run": run}) for r in records]
    path = _destination(profile, run)
    stored = {key: [round(float(v), 6) for v in values] for key, values in (replicates or {}).items()}
    used = {name: identity for e in embeddings if e is not None for name, identity in e.identities.items()}
    atomic_write_json(path, {"run": run, "experiment": experiment, "profile": profile, "parameters": dict(parameters),
                             "records": rows, "replicates": stored,
                             "provenance": {"encoders_used": dict(sorted(used.items()))}})


def experiment_records(records: pd.DataFrame, experiment: str, profile: str) -> pd.DataFrame:
    """The records of one experiment; a clear error when its runs have not been executed."""
    rows = records[records["experiment"] == experiment]
    if rows.empty:
        raise SemalignError(f"no records of {experiment} for profile {profile!r} in {results_dir(profile)}; "
                            f"run `semalign run {experiment} --profile {profile}` first")
    return rows


def _read(file: Path) -> dict:
    try:
        content = json.loads(file.read_text())
        content["records"]  # a file without records is unreadable
        return content
    except (json.JSONDecodeError, KeyError) as exc:
        raise SemalignError(f"results file {file} is unreadable ({exc}); re-run its notebook") from None


def _run_files(profile: str, variant: str | None) -> list[tuple[Path, dict]]:
    """The results files of a profile with their content: every one (``variant``
    None), or those of one variant ("" is the profile's own data)."""
    folder = results_dir(profile)
    files = [(file, _read(file)) for file in (sorted(folder.glob("*.json")) if folder.is_dir() else [])]
    return [(f, c) for f, c in files if variant is None or c.get("provenance", {}).get("variant", "") == variant]


def check_same_data(files: list[tuple[Path, dict]]) -> None:
    """Stop when runs of one experiment that a summary would pool were made on
    different data (data parameters or data file contents)."""
    by_experiment: dict[str, dict[str, list[str]]] = {}
    for _, content in files:
        data_id = content.get("provenance", {}).get("data_id", "unrecorded (made by an older semalign)")
        by_experiment.setdefault(content.get("experiment", "?"), {}).setdefault(data_id, []).append(content["run"])
    for experiment, groups in by_experiment.items():
        if len(groups) > 1:
            listing = "; ".join(f"{', '.join(runs)} on data {data_id}" for data_id, runs in groups.items())
            raise SemalignError(f"runs of {experiment} were made on different data and cannot be pooled ({listing}); "
                                f"re-run them with the same data parameters, e.g. `semalign run {experiment}`")


def load_records(profile: str, variant: str | None = "", provenance: bool = False) -> pd.DataFrame:
    """Every record of one profile's executed runs, as a DataFrame, with each
    run's ``variant`` and ``data_id`` (and, with ``provenance``, everything the
    runner recorded about the run).

    By default only the runs made on the profile's own data (``variant`` "")
    are read, and runs of one experiment must agree on their data; ``variant``
    None reads every run as it is, for listing.
    """
    files = _run_files(profile, variant)
    if not files and variant:
        raise SemalignError(f"no results of the runs on data {variant} for profile {profile!r} in "
                            f"{results_dir(profile)}; `semalign results --profile {profile} --json` lists each run's variant")
    if not files:
        raise SemalignError(f"no results for profile {profile!r} in {results_dir(profile)}; "
                            f"run `semalign run all --profile {profile}` first")
    if variant is not None:
        check_same_data(files)
    rows = []
    for _, content in files:
        facts = content.get("provenance", {})
        extra = {"variant": facts.get("variant", ""), "data_id": facts.get("data_id")}
        if provenance:
            extra["provenance"] = facts
        rows.extend({**record, **extra} for record in content["records"])
    return pd.DataFrame(rows, columns=[*RECORD_KEYS, *extra])


def load_replicates(profile: str, experiment: str, variant: str = "") -> dict[str, np.ndarray]:
    """The bootstrap replicates every run of ``experiment`` stored, by key (runs
    of one experiment store the same key only for the same records)."""
    out = {}
    for _, content in _run_files(profile, variant):
        if content.get("experiment") == experiment:
            out.update({key: np.asarray(values, dtype=float) for key, values in content.get("replicates", {}).items()})
    return out
