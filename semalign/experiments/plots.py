"""Figures of the study (seaborn/matplotlib). Each returns a matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from semalign.experiments.summary import TRANSFORM_ORDER, test_rows, upper_bounds

METRIC_LABELS = {"macro_auroc": "macro-AUROC", "macro_f1": "macro-F1", "accuracy": "accuracy"}
#: One colour per transform (and per baseline drawn beside them) in every figure of the book.
TRANSFORM_COLORS = dict(zip((*TRANSFORM_ORDER, "ridge", "naive", "few-shot"), sns.color_palette("colorblind", 7)))


def anchor_curves(records: pd.DataFrame, metric: str = "macro_auroc", title: str | None = None, ax=None):
    """Figure 3 analogue: metric vs number of anchors (log axis), a line per
    transform with a band of ± one std over encoder pairs and seeds, the few-shot
    baseline dashed, naive and upper bound as horizontal references (test records)."""
    rows = test_rows(records, metric)
    curves = rows[rows["method"].isin(["aligned", "few_shot"])].copy()
    curves["line"] = curves["transform"].where(curves["method"] == "aligned", "few-shot")
    order = [t for t in (*TRANSFORM_ORDER, "few-shot") if t in set(curves["line"])]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=curves, x="n_anchors", y="value", hue="line", hue_order=order, palette=TRANSFORM_COLORS, style="line",
                 style_order=order, dashes={k: (4, 2) if k == "few-shot" else "" for k in order},
                 errorbar="sd", marker="o", ax=ax)
    _references(ax, rows, metric)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    sns.despine(ax=ax)
    return fig or ax.figure


def pair_curves(records: pd.DataFrame, transform: str, metric: str = "macro_auroc"):
    """One transform's aligned metric per encoder pair vs anchors (band: ± std
    over seeds), with mean upper bound and naive references (test records)."""
    rows = test_rows(records, metric)
    aligned = rows[rows["method"] == "aligned"].assign(pair=lambda d: d["source"] + " → " + d["target"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(data=aligned, x="n_anchors", y="value", hue="pair", errorbar="sd", marker="o", ax=ax)
    _references(ax, rows, metric)
    ax.set_title(f"{transform}: test {METRIC_LABELS.get(metric, metric)} per encoder pair")
    ax.legend(fontsize=7, loc="lower right")
    sns.despine(fig)
    fig.tight_layout()
    return fig


def _references(ax, rows: pd.DataFrame, metric: str) -> None:
    """The upper bound of each target (the target encoder with its own decoder)
    and naive stitching (mean over pairs) as horizontal lines, over a log axis of anchors."""
    for target, value in upper_bounds(rows, metric).items():
        ax.axhline(value, color="black", lw=1.2, label=f"upper bound: {target}")
    ax.axhline(rows[rows["method"] == "naive"]["value"].mean(), color="grey", lw=1.2, ls=":", label="naive (mean)")
    ax.set_xscale("log")
    ax.set(xlabel="number of anchors", ylabel=METRIC_LABELS.get(metric, metric))
