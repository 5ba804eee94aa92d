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


def claims(records: pd.DataFrame, metric: str = "macro_auroc", large_n: int = 1000,
           derived_from: dict[str, str] | None = None) -> pd.DataFrame:
    """The paper's claims (STUDY.md §1) as testable statements, with evidence,
    indexed by a short key (``vs_naive``, ``vs_upper_bound``, ``ortho_vs_affine``,
    ``naive_unrelated``, ``vs_few_shot``; a claim whose records are absent is left out).

    Evaluated at the largest anchor count ≥ ``large_n`` present (else the
    largest count), averaging over encoder pairs and seeds. ``derived_from`` maps
    a fine-tuned encoder to the encoder it was made from (e.g. ``radiology-minilm``
    → ``minilm``): naive stitching is judged on the pairs of unrelated encoders
    only, as a fine-tuned copy shares its parent's coordinates.
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
        ("vs_naive", "aligned stitching is far better than naive stitching",
         by_transform[best] - naive > 0.1,
         f"best aligned ({best}) {by_transform[best]:.3f} vs naive {naive:.3f} at {int(n)} anchors"),
        ("vs_upper_bound", "aligned stitching approaches the decoder-side upper bound (≥ 90%)",
         ratio[best] >= 0.9,
         f"{best}: {ratio[best]:.1%} of the upper bound at {int(n)} anchors"),
    ]
    if {"ortho", "affine"} <= set(by_transform.index):
        gap = by_transform["affine"] - by_transform["ortho"]
        out.append(("ortho_vs_affine", "an orthogonal transform loses little against affine (≤ 0.02)", gap <= 0.02,
                    f"affine {by_transform['affine']:.3f} − ortho {by_transform['ortho']:.3f} = {gap:+.3f}"))
    base = derived_from or {}
    naive_rows = rows[rows["method"] == "naive"]
    unrelated = naive_rows[naive_rows["source"].map(lambda e: base.get(e, e))
                           != naive_rows["target"].map(lambda e: base.get(e, e))]
    if len(unrelated):
        chance = 0.5 if metric.endswith("auroc") else None
        value = unrelated["value"].mean()
        if chance is not None:
            out.append(("naive_unrelated", "naive stitching between unrelated encoders stays near chance (within 0.1)",
                        abs(value - chance) <= 0.1,
                        f"naive {value:.3f} over {unrelated.groupby(['source', 'target']).ngroups} "
                        f"unrelated pairs (chance {chance})"))
    out.append(("vs_few_shot", "aligned stitching beats a decoder trained on the labelled anchors",
                by_transform[best] > few,
                f"best aligned {by_transform[best]:.3f} vs few-shot {few:.3f} at {int(n)} anchors"))
    return pd.DataFrame(out, columns=["key", "claim", "holds", "evidence"]).set_index("key")
