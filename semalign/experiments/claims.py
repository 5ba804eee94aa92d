"""The paper's claims (:data:`CLAIMS`), judged on the study's records.

Each claim gets an estimate, a 95% bootstrap interval and a verdict (STUDY.md
§1; :func:`semalign.experiments.stats.verdict`). The interval resamples the
test items (the same resamples for every method, so differences are paired)
and, in each resample, the units the claim averages over, encoder pairs and
seeds (:func:`semalign.experiments.stats.hierarchical_replicates`).

For the stitching claims the interval is also widened, on both sides, by the
mean ``rounding_delta`` of the transforms it rests on
(:mod:`semalign.experiments.stitching`): how far the scores move when the
anchors change at the level of rounding. Where the anchors do not determine
the transform (``ortho`` with fewer anchors than dimensions) that spread is
part of the uncertainty, and a verdict that depends on it is inconclusive.

Every choice a claim depends on (which transform, which pair) is read from the
validation records; the test records only supply the estimate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from semalign.experiments import stats
#: AUROC gain over naive stitching that counts as "far better".
FAR_BETTER = 0.1
#: Chance-corrected ratio that counts as "approaches".
APPROACHES = 0.9
#: AUROC that affine may lead ortho by for "loses little".
LOSES_LITTLE = 0.02

#: Each claim's statement, threshold and the side of it on which the claim holds.
CLAIMS = {
    "aligned_vs_naive": (f"aligned stitching is far better than naive stitching (AUROC gain > {FAR_BETTER})",
                         FAR_BETTER, "above"),
    "aligned_vs_upper_bound": (f"aligned stitching approaches the upper bound (chance-corrected ratio > {APPROACHES})",
                               APPROACHES, "above"),
    "ortho_vs_affine": (f"an orthogonal transform loses little against affine (AUROC gap ≤ {LOSES_LITTLE})",
                        LOSES_LITTLE, "below"),
    "zero_shot_vs_multimodal": ("unimodal zero-shot approaches the trained medical multimodal model "
                                f"(chance-corrected ratio > {APPROACHES})", APPROACHES, "above"),
    "zero_shot_vs_general_multimodal": ("unimodal zero-shot beats the general multimodal model (AUROC gain > 0)",
                                        0.0, "above"),
}


def replicate_key(method: str, source: str, target: str, transform: str | None = None,
                  n_anchors: int | None = None, seed: int | None = None) -> str:
    """The key under which a record's test replicates are stored."""
    parts = [method, source, target, transform or "-", "-" if n_anchors is None else str(int(n_anchors)),
             "-" if seed is None else str(int(seed))]
    return "|".join(parts)


def record_replicate_key(record: Mapping) -> str:
    """:func:`replicate_key` of a record's method, encoders, transform, anchor count and seed."""
    return replicate_key(record["method"], record["source"], record["target"], record.get("transform"),
                         record.get("n_anchors"), record.get("seed"))


def merged(parts: Iterable[tuple[list[dict], dict[str, np.ndarray]]]) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The records of several parts of a sweep in order, and their replicates by key."""
    records, replicates = [], {}
    for rows, kept in parts:
        records += rows
        replicates.update(kept)
    return records, replicates


def claim_record(claim: str, modality: str, points: Sequence[float], per_unit: Sequence[np.ndarray], seed: int,
                 form: str | None = None, rounding: float = 0.0, **fields) -> dict:
    """A claim record: the estimate (the mean of the units' ``points``), its 95%
    interval (:func:`~semalign.experiments.stats.hierarchical_replicates` of the
    units' replicates ``per_unit``) and the verdict, judged on the interval
    widened by ``rounding`` on each side (``rounding_delta``). ``form`` names the
    entry of :data:`CLAIMS` that states it (default: ``claim``): the zero-shot
    claim has one form against the trained medical model and one against a
    general one, under one claim id."""
    statement, threshold, holds_when = CLAIMS[form or claim]
    point = float(np.mean(points))
    low, high = stats.interval(stats.hierarchical_replicates(np.stack(per_unit), seed=seed))
    verdict = stats.verdict(low - rounding, high + rounding, threshold, holds_when)
    return dict(experiment="claims", method="claim", claim=claim, modality=modality, metric=form or claim, value=point,
                estimate=point, ci_low=low, ci_high=high, rounding_delta=rounding, verdict=verdict, split="test",
                **fields)


def best_on_validation(records: pd.DataFrame, by: str | list[str], metric: str = "macro_auroc"):
    """The value of ``by`` whose validation records have the highest mean ``metric``."""
    rows = records[(records["split"] == "validation") & (records["metric"] == metric)]
    if rows.empty:
        raise ValueError("no validation records to choose from; run with validation_fraction > 0")
    return rows.groupby(by)["value"].mean().idxmax()


def stitching_claims(records: pd.DataFrame, replicates: Mapping[str, np.ndarray], modality: str,
                     seed: int = 0) -> list[dict]:
    """The three stitching claims at the largest anchor count, over the encoder
    pairs and the seeds, with the transform chosen on validation for the
    upper-bound and naive claims. Claims whose records are missing are left out."""
    auroc = records[records["metric"] == "macro_auroc"]
    aligned = auroc[auroc["method"] == "aligned"]
    n = int(aligned["n_anchors"].max())
    at_n = aligned[aligned["n_anchors"] == n]
    best = best_on_validation(at_n, "transform")
    test = at_n[(at_n["split"] == "test")]
    units = [(s, t, int(seed)) for s, t, seed in test[["source", "target", "seed"]].drop_duplicates().itertuples(index=False)]
    if not units:
        return []
    point = test.set_index(["transform", "source", "target", "seed"])["value"]
    moved = records[(records["metric"] == "rounding_delta") & (records["n_anchors"] == n)]
    moved = moved.set_index(["transform", "source", "target", "seed"])["value"]

    def rounding(*transforms: str) -> float:  # records made before rounding_delta existed: 0
        return float(sum(np.mean([moved.get((tr, s, t, k), 0.0) for s, t, k in units]) for tr in transforms))

    bounds = auroc[(auroc["method"] == "upper_bound") & (auroc["split"] == "test")].set_index("target")["value"]
    naive = auroc[(auroc["method"] == "naive") & (auroc["split"] == "test")].set_index(["source", "target"])["value"]

    def rep(method, s, t, transform=None, n_anchors=None, unit_seed=None):
        return replicates[replicate_key(method, s, t, transform, n_anchors, unit_seed)]

    common = dict(transform=best, n_anchors=n, selected_on="validation")
    out = []
    points = [point[(best, s, t, k)] - naive[(s, t)] for s, t, k in units]
    per_unit = [rep("aligned", s, t, best, n, k) - rep("naive", s, t) for s, t, k in units]
    out.append(claim_record("aligned_vs_naive", modality, points, per_unit, seed, rounding=rounding(best), **common))
    points = [stats.chance_corrected_ratio(point[(best, s, t, k)], bounds[t]) for s, t, k in units]
    per_unit = [stats.chance_corrected_ratio(rep("aligned", s, t, best, n, k), rep("upper_bound", t, t))
                for s, t, k in units]
    above_chance = np.mean([bounds[t] - 0.5 for s, t, k in units])
    out.append(claim_record("aligned_vs_upper_bound", modality, points, per_unit, seed,
                            rounding=rounding(best) / above_chance, **common))
    if {"affine", "ortho"} <= set(test["transform"]):
        points = [point[("affine", s, t, k)] - point[("ortho", s, t, k)] for s, t, k in units]
        per_unit = [rep("aligned", s, t, "affine", n, k) - rep("aligned", s, t, "ortho", n, k) for s, t, k in units]
        out.append(claim_record("ortho_vs_affine", modality, points, per_unit, seed,
                                rounding=rounding("affine", "ortho"), n_anchors=n))
    return out


def verdict_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per claim record: the claim's statement, modality, estimate with
    its interval, and the verdict — the table the front page and Table 1 show."""
    rows = records[records["method"] == "claim"]
    table = pd.DataFrame({
        "claim": rows["metric"].map(lambda c: CLAIMS[c][0]),
        "modality": rows["modality"],
        "estimate (95% interval)": [f"{e:.3f} ({lo:.3f} to {hi:.3f})"
                                    for e, lo, hi in zip(rows["estimate"], rows["ci_low"], rows["ci_high"])],
        "± rounding": [f"{r:.3f}" if r == r and r else "—"
                       for r in rows.get("rounding_delta", pd.Series(0.0, index=rows.index)).fillna(0.0)],
        "verdict": rows["verdict"],
        "chosen on validation": [f"{t}" if isinstance(t, str) else "—" for t in rows["transform"]],
    })
    order = {c: i for i, c in enumerate(CLAIMS)}
    return table.assign(_o=rows["metric"].map(order)).sort_values(["_o", "modality"]).drop(columns="_o").reset_index(drop=True)


def selected_setting(records: pd.DataFrame, method: str, by: Sequence[str], n_anchors: int | None = None) -> dict:
    """The setting (values of ``by``) of ``method`` with the best mean validation
    macro-AUROC over seeds, at ``n_anchors`` when given."""
    rows = records[(records["method"] == method) & (records["task"] == "macro")]
    if n_anchors is not None:
        rows = rows[rows["n_anchors"] == n_anchors]
    best = best_on_validation(rows, list(by), metric="auroc")
    return dict(zip(by, best if isinstance(best, tuple) else (best,)))


def zero_shot_claims(records: pd.DataFrame, replicates: Mapping[str, np.ndarray], seed: int = 0) -> list[dict]:
    """Unimodal zero-shot (its pair and transform chosen on validation, at the
    largest anchor count) against the CLIP-style model (its pair chosen on
    validation) and, where present, each pretrained multimodal model; units are seeds."""
    unimodal = records[records["method"] == "unimodal_zero_shot"]
    n = int(unimodal["n_anchors"].max())
    chosen = selected_setting(records, "unimodal_zero_shot", ["source", "target", "transform"], n)
    clip = selected_setting(records, "clip_style", ["source", "target"])
    test = records[(records["split"] == "test") & (records["task"] == "macro")]

    def point(method: str, setting: dict, n_anchors=None) -> pd.Series:
        rows = test[test["method"] == method]
        for key, value in setting.items():
            rows = rows[rows[key] == value]
        if n_anchors is not None:
            rows = rows[rows["n_anchors"] == n_anchors]
        return rows.set_index("seed")["value"]

    ours, theirs = point("unimodal_zero_shot", chosen, n), point("clip_style", clip)
    seeds = [int(k) for k in ours.index if k in theirs.index]
    ours_rep = {k: replicates[replicate_key("unimodal_zero_shot", chosen["source"], chosen["target"],
                                            chosen["transform"], n, k)] for k in seeds}
    out = []
    if seeds:
        points = [stats.chance_corrected_ratio(ours[k], theirs[k]) for k in seeds]
        per_unit = [stats.chance_corrected_ratio(ours_rep[k], replicates[replicate_key(
            "clip_style", clip["source"], clip["target"], None, None, k)]) for k in seeds]
        out.append(claim_record("zero_shot_vs_multimodal", "vision", points, per_unit, seed,
                                transform=chosen["transform"], n_anchors=n, selected_on="validation",
                                source=chosen["source"], target=chosen["target"]))
    pretrained = test[test["method"] == "pretrained_multimodal"]
    for name, rows in pretrained.groupby("source"):
        value = float(rows["value"].iloc[0])
        general = replicates[replicate_key("pretrained_multimodal", name, name)]
        points = [ours[k] - value for k in seeds]
        per_unit = [ours_rep[k] - general for k in seeds]
        if seeds:
            out.append(claim_record("zero_shot_vs_multimodal", "vision", points, per_unit, seed,
                                    form="zero_shot_vs_general_multimodal", transform=chosen["transform"],
                                    n_anchors=n, selected_on="validation", source=chosen["source"], target=name))
    return out
