"""Summaries of stitching records: tables and ratios to the upper bound. The
paper's claims, with intervals and verdicts, are judged in :mod:`semalign.experiments.claims`."""

from __future__ import annotations

import numpy as np
import pandas as pd

TRANSFORM_ORDER = ("affine", "linear", "l-ortho", "ortho")


def with_upper_bound(records: pd.DataFrame, metric: str = "macro_auroc") -> pd.DataFrame:
    """Aligned/naive/few-shot rows of one metric, each with its target's
    decoder-side upper bound and the ratio to it."""
    rows = test_rows(records, metric)
    bound = rows[rows["method"] == "upper_bound"].set_index("target")["value"]
    own = rows[rows["method"] == "upper_bound"].set_index("source")["value"]
    out = rows[rows["method"] != "upper_bound"].copy()
    out["upper_bound"] = out["target"].map(bound)
    out["source_upper_bound"] = out["source"].map(own)
    out["ratio_to_upper_bound"] = (out["value"] - 0.5) / (out["upper_bound"] - 0.5)
    return out


def test_rows(records: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """The records scored on the test split (all of them when no record says), of ``metric`` when given."""
    if "split" in records and not records["split"].isna().all():
        records = records[records["split"] == "test"]
    return records if metric is None else records[records["metric"] == metric]


def _mean_std(mean: float, std: float) -> str:
    """"mean ± std", or the mean alone where one value leaves the spread undefined."""
    return f"{mean:.3f} ± {std:.3f}" if np.isfinite(std) else f"{mean:.3f}"


def table_anchor_counts(anchor_counts, claim_anchor_counts=(), shown=(8, 32, 128, 512)) -> list[int]:
    """The anchor counts a summary table shows: a few of ``shown``, every claim
    budget and the largest count (the claims are judged at those), of those run."""
    counts = set(anchor_counts)
    return sorted((counts & set(shown)) | (counts & set(claim_anchor_counts)) | {max(counts)})


def upper_bounds(records: pd.DataFrame, metric: str = "macro_auroc") -> pd.Series:
    """The upper bound of each target of the aligned records, by target: the
    target encoder with its own decoder (test records). The one reference every
    figure, table and sentence of the study calls "the upper bound"."""
    rows = test_rows(records, metric)
    targets = rows[rows["method"].isin(["aligned", "naive"])]["target"].dropna().unique()
    return own_decoders(records, metric).reindex(sorted(targets)).dropna()


def own_decoders(records: pd.DataFrame, metric: str = "macro_auroc") -> pd.Series:
    """Each encoder with its own decoder (test records), by encoder."""
    rows = test_rows(records, metric)
    return rows[rows["method"] == "upper_bound"].groupby("source")["value"].mean()


def anchor_table(records: pd.DataFrame, anchor_counts, metric: str = "macro_auroc") -> pd.DataFrame:
    """Mean ± std (over encoder pairs and seeds) of the aligned metric per
    transform and anchor count, with naive and few-shot rows, the upper bound of
    each target and, labelled as such, the source encoders' own decoders."""
    rows = with_upper_bound(records, metric)
    aligned = rows[(rows["method"] == "aligned") & rows["n_anchors"].isin(anchor_counts)]
    table = aligned.groupby(["transform", "n_anchors"])["value"].agg(["mean", "std"]).reset_index()
    few = rows[(rows["method"] == "few_shot") & rows["n_anchors"].isin(anchor_counts)]
    few = few.groupby("n_anchors")["value"].agg(["mean", "std"]).reset_index().assign(transform="few-shot (labelled anchors)")
    table = pd.concat([table, few])
    cell = table.assign(text=[_mean_std(m, s) for m, s in zip(table["mean"], table["std"])])
    wide = cell.pivot(index="transform", columns="n_anchors", values="text")
    order = [t for t in (*TRANSFORM_ORDER, "few-shot (labelled anchors)") if t in wide.index]
    wide = wide.loc[order]
    naive = rows[rows["method"] == "naive"]["value"]
    wide.loc["naive (no alignment)"] = _mean_std(naive.mean(), naive.std())
    bounds = upper_bounds(records, metric)
    for target, value in bounds.items():
        wide.loc[f"upper bound ({target} with its own decoder)"] = f"{value:.3f}"
    own = own_decoders(records, metric)
    for source in sorted(set(aligned["source"]) - set(bounds.index)):
        if source in own:
            wide.loc[f"{source} with its own decoder"] = f"{own[source]:.3f}"
    wide.columns = [f"{int(c)} anchors" for c in wide.columns]
    return wide


def upper_bound_evidence(records: pd.DataFrame, metric: str = "macro_auroc") -> str:
    """One sentence: the aligned metric at the largest anchor count against the
    upper bound, as a chance-corrected ratio (mean over pairs and seeds)."""
    rows = with_upper_bound(records, metric)
    aligned = rows[rows["method"] == "aligned"]
    n = aligned["n_anchors"].max()
    at_n = aligned[aligned["n_anchors"] == n]
    transform = ", ".join(sorted(at_n["transform"].dropna().unique()))
    return (f"{transform} at {int(n)} anchors reaches {at_n['value'].mean():.3f} against an upper bound of "
            f"{at_n['upper_bound'].mean():.3f}, a chance-corrected ratio of {at_n['ratio_to_upper_bound'].mean():.0%}")
