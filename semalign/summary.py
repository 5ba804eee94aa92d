"""Summaries of stitching records: tables, ratios to the upper bound, and the
paper's claims checked against the numbers (with the evidence)."""

from __future__ import annotations

import numpy as np
import pandas as pd

TRANSFORM_ORDER = ("affine", "linear", "l-ortho", "ortho")


def with_upper_bound(records: pd.DataFrame, metric: str = "macro_auroc") -> pd.DataFrame:
    """Aligned/naive/few-shot rows of one metric, each with its target's
    decoder-side upper bound and the ratio to it."""
    rows = records[records["metric"] == metric]
    bound = rows[rows["method"] == "upper_bound"].set_index("target")["value"]
    own = rows[rows["method"] == "upper_bound"].set_index("source")["value"]
    out = rows[rows["method"] != "upper_bound"].copy()
    out["upper_bound"] = out["target"].map(bound)
    out["source_upper_bound"] = out["source"].map(own)
    out["ratio_to_upper_bound"] = out["value"] / out["upper_bound"]
    return out


def anchor_table(records: pd.DataFrame, anchor_counts, metric: str = "macro_auroc") -> pd.DataFrame:
    """Mean ± std (over encoder pairs and seeds) of the aligned metric per
    transform and anchor count, with naive, few-shot and upper-bound rows."""
    rows = with_upper_bound(records, metric)
    aligned = rows[(rows["method"] == "aligned") & rows["n_anchors"].isin(anchor_counts)]
    table = aligned.groupby(["transform", "n_anchors"])["value"].agg(["mean", "std"]).reset_index()
    few = rows[(rows["method"] == "few_shot") & rows["n_anchors"].isin(anchor_counts)]
    few = few.groupby("n_anchors")["value"].agg(["mean", "std"]).reset_index().assign(transform="few-shot (labelled anchors)")
    table = pd.concat([table, few])
    cell = table.assign(text=[f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}" for m, s in zip(table["mean"], table["std"])])
    wide = cell.pivot(index="transform", columns="n_anchors", values="text")
    order = [t for t in (*TRANSFORM_ORDER, "few-shot (labelled anchors)") if t in wide.index]
    wide = wide.loc[order]
    naive = rows[rows["method"] == "naive"]["value"]
    bound = records[(records["metric"] == metric) & (records["method"] == "upper_bound")]["value"]
    wide.loc["naive (no alignment)"] = f"{naive.mean():.3f} ± {naive.std():.3f}"
    wide.loc["upper bound (own encoder)"] = f"{bound.mean():.3f} ± {bound.std():.3f}"
    wide.columns = [f"{int(c)} anchors" for c in wide.columns]
    return wide


def claims(records: pd.DataFrame, metric: str = "macro_auroc", large_n: int = 1000) -> pd.DataFrame:
    """The paper's claims (STUDY.md §1) as testable statements, with evidence.

    Evaluated at the largest anchor count ≥ ``large_n`` present (else the
    largest count), averaging over encoder pairs and seeds.
    """
    rows = with_upper_bound(records, metric)
    aligned = rows[rows["method"] == "aligned"]
    counts = sorted(aligned["n_anchors"].dropna().unique())
    n = next((c for c in reversed(counts) if c >= large_n), counts[-1])
    at_n = aligned[aligned["n_anchors"] == n]
    by_transform = at_n.groupby("transform")["value"].mean()
    ratio = at_n.groupby("transform")["ratio_to_upper_bound"].mean()
    best = by_transform.idxmax()
    naive = rows[rows["method"] == "naive"]["value"].mean()
    few = rows[(rows["method"] == "few_shot") & (rows["n_anchors"] == n)]["value"].mean()
    out = [
        ("aligned stitching is far better than naive stitching",
         by_transform[best] - naive > 0.1,
         f"best aligned ({best}) {by_transform[best]:.3f} vs naive {naive:.3f} at {int(n)} anchors"),
        ("aligned stitching approaches the decoder-side upper bound (≥ 90%)",
         ratio[best] >= 0.9,
         f"{best}: {ratio[best]:.1%} of the upper bound at {int(n)} anchors"),
    ]
    if {"ortho", "affine"} <= set(by_transform.index):
        gap = by_transform["affine"] - by_transform["ortho"]
        out.append(("an orthogonal transform loses little against affine (≤ 0.02)", gap <= 0.02,
                    f"affine {by_transform['affine']:.3f} − ortho {by_transform['ortho']:.3f} = {gap:+.3f}"))
    out.append(("aligned stitching beats a decoder trained on the labelled anchors",
                by_transform[best] > few,
                f"best aligned {by_transform[best]:.3f} vs few-shot {few:.3f} at {int(n)} anchors"))
    return pd.DataFrame(out, columns=["claim", "holds", "evidence"])
