# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# (diagnostics)=
# # Does representational similarity predict stitchability?
#
# Two encoders whose spaces are alike should be easier to stitch. This page
# tests that on the study's own encoders: for every ordered pair of text
# encoders and of vision encoders that the stitching pages ran, it takes how
# similar the two spaces are on the test split — linear CKA and the mutual $k$-NN overlap (see
# {ref}`method`) — and sets that against how much a decoder loses when fed the
# aligned embeddings of the other encoder: the *stitching gap*, the target's
# upper bound minus the aligned score, at the largest anchor count. Both come
# from the records of the stitching runs (of {doc}`text <stitching_summary__experiment-text_stitching>`
# and of {doc}`images <stitching_summary__experiment-vision_stitching>`): each
# sweep measures the similarities on the embeddings and test split it stitched,
# so this page computes nothing from the data and runs after them.

# %% tags=["parameters"]
profile = "offline"  # set by the runner
run_name = "diagnostics"  # set by the runner
metric = "macro_auroc"  # stitching metric of the gap: macro_auroc, macro_f1 or accuracy

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from myst_nb import glue
from scipy.stats import spearmanr

from semalign.core.errors import SemalignError
from semalign.experiments import results
from semalign.experiments.plots import METRIC_LABELS
from semalign.experiments.stitching import SIMILARITY_K

EXPERIMENTS = {"text_stitching": "text", "vision_stitching": "vision"}
records = results.load_records(profile)
records = records[records["experiment"].isin(EXPERIMENTS)]
missing = [experiment for experiment in EXPERIMENTS if experiment not in set(records["experiment"])]
if missing:
    raise SemalignError(f"the diagnostics read the records of the stitching runs, but profile {profile!r} has none of "
                        f"{', '.join(missing)}: run `semalign run {missing[0]} --profile {profile}` first")

# %% [markdown]
# ## Similarity on the test split
#
# Each stitching sweep records both measures for every two of its encoders, on
# its test split. Both are symmetric, so the two orders of a pair share one
# value; the four runs of a sweep (one per transform) embed the same items and
# must agree on it.

# %%
similarity = records[records["method"] == "similarity"]
unmeasured = sorted(set(records["experiment"]) - set(similarity["experiment"]))
if unmeasured:
    raise SemalignError(f"the records of {', '.join(unmeasured)} hold no similarity records (made by an older semalign): "
                        f"run `semalign run {unmeasured[0]} --profile {profile}` again")
values = similarity.groupby(["experiment", "source", "target", "metric"], sort=False)["value"]
disagree = values.nunique()[lambda n: n > 1]
if len(disagree):
    raise SemalignError(f"the stitching runs of profile {profile!r} record different similarities for "
                        f"{', '.join(f'{e}: {a} → {b}' for e, a, b, _ in disagree.index)}, so they were made on "
                        f"different embeddings: run `semalign run all --profile {profile}`")
pairs = values.first().unstack("metric").reset_index()[["experiment", "source", "target", "linear_cka", "mutual_knn"]]

# %% [markdown]
# ## The stitching gap
#
# For each ordered pair $X \to Y$: the mean over seeds and the four transforms
# of $Y$'s decoder on $T(X)$ at the largest anchor count of the stitching runs,
# subtracted from $Y$'s decoder on $Y$'s own embeddings.

# %%
records = records[(records["metric"] == metric) & (records["split"] == "test")]
largest = records[records["method"] == "aligned"].groupby("experiment")["n_anchors"].max().rename("largest")
records = records.join(largest, on="experiment")
aligned = (records[(records["method"] == "aligned") & (records["n_anchors"] == records["largest"])]
           .groupby(["experiment", "source", "target"])["value"].mean().rename("aligned"))
upper = records[records["method"] == "upper_bound"].groupby(["experiment", "target"])["value"].mean().rename("upper_bound")
naive = records[records["method"] == "naive"].groupby(["experiment", "source", "target"])["value"].mean().rename("naive")
pairs = (pairs.join(aligned, on=["experiment", "source", "target"]).join(upper, on=["experiment", "target"])
         .join(naive, on=["experiment", "source", "target"]))
pairs = pairs.join(largest, on="experiment")
# A stitching page may run only the pairs into its `targets`: the other orders are left out, and said so.
not_run = pairs[pairs["aligned"].isna() & pairs["experiment"].isin(largest.index)]
pairs = pairs.drop(not_run.index)
left_out = (f"{len(not_run)} ordered pairs were not run by the stitching pages (their targets parameter) "
            f"and are left out: {', '.join(not_run['source'] + ' → ' + not_run['target'])}." if len(not_run)
            else "The stitching pages ran every ordered pair.")
print(left_out)
unrecorded = pairs[pairs["aligned"].isna() | pairs["upper_bound"].isna()]
if len(unrecorded):
    raise SemalignError(f"no aligned {metric} records for {', '.join(unrecorded['source'] + ' → ' + unrecorded['target'])}; "
                        f"re-run text_stitching and vision_stitching for profile {profile!r}")
pairs["gap"] = pairs["upper_bound"] - pairs["aligned"]
pairs["modality"] = pairs["experiment"].map(EXPERIMENTS)

# one index column for the pair and short headers: the gap, its last column, fits a laptop-width page
table = (pairs.assign(pair=pairs["source"] + " → " + pairs["target"]).set_index(["modality", "pair"])
         [["linear_cka", "mutual_knn", "naive", "upper_bound", "aligned", "gap"]]
         .rename(columns={"linear_cka": "linear CKA", "mutual_knn": "mutual k-NN", "upper_bound": "upper bound"}))
glue("pairs_table", table.style.format("{:.3f}"), display=False)
glue("metric_name", METRIC_LABELS.get(metric, metric), display=False)

# %% [markdown]
# (tbl-diagnostics)=
# ```{glue} pairs_table
# ```
#
# *Table D1.* Similarity of each ordered pair of encoders on the test split, and
# its stitching gap in test {glue:text}`metric_name`: *naive* feeds the source's
# raw embeddings to the target's decoder (near chance for encoders that share no
# coordinates, as the study's medical encoders and the general ones should),
# *aligned* is the mean over seeds and transforms at the largest anchor count,
# *upper bound* the target encoder with its own decoder.

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), sharey=True)
for ax, (column, label) in zip(axes, [("linear_cka", "linear CKA"), ("mutual_knn", f"mutual {SIMILARITY_K}-NN overlap")]):
    sns.scatterplot(data=pairs, x=column, y="gap", hue="modality", style="modality", s=60, ax=ax)
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set(xlabel=label, ylabel="stitching gap (upper bound − aligned)")
    ax.get_legend().remove()
axes[1].legend(title=None, fontsize=8, loc="best")
sns.despine(fig)
fig.tight_layout()
glue("similarity_fig", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} similarity_fig
# :name: fig-diagnostics
#
# Representational similarity against the stitching gap, one point per ordered
# encoder pair (the two orders of a pair share their similarity). If similar
# spaces stitched better, the points would fall from left to right.
# ```
#
# ## Rank correlation
#
# With a handful of pairs only the ranks are worth comparing: Spearman's $\rho$
# between each similarity and the gap, over all pairs and within each
# modality. A negative $\rho$ means that more similar pairs lose less.

# %%
def rank_correlation(frame: pd.DataFrame, column: str) -> pd.Series:
    """Spearman's rho and its p-value; undefined below three pairs or for a constant column."""
    if len(frame) < 3 or frame[column].nunique() < 2 or frame["gap"].nunique() < 2:
        return pd.Series({"rho": np.nan, "p": np.nan, "pairs": len(frame)})
    result = spearmanr(frame[column], frame["gap"])
    return pd.Series({"rho": result.statistic, "p": result.pvalue, "pairs": len(frame)})


groups = {"all pairs": pairs, **{m: g for m, g in pairs.groupby("modality")}}
correlations = pd.DataFrame({(column, group): rank_correlation(frame, column)
                             for column in ("linear_cka", "mutual_knn") for group, frame in groups.items()}).T
correlations.index.names = ["similarity", "pairs of"]
correlations.style.format({"rho": "{:.2f}", "p": "{:.3f}", "pairs": "{:.0f}"}, na_rep="—")

# %%
MEASURES = {"linear_cka": "linear CKA", "mutual_knn": "mutual k-NN overlap"}


def verdict(rho: float, p: float, name: str) -> str:
    if np.isnan(rho):
        return f"For {name} the rank correlation with the gap is undefined (too few pairs, or a constant column)."
    finding = (f"pairs with a higher {name} lose {'less' if rho < 0 else 'more'} when stitched" if p < 0.05
               else "it does not detectably predict the gap at the 5% level")
    return f"For {name}, Spearman's ρ with the gap is {rho:.2f} (p = {p:.3f}): {finding}."


# Fewer pairs than this make any rank correlation an anecdote: no conclusion is drawn from them.
MIN_PAIRS = 10
overall = correlations.xs("all pairs", level="pairs of")
sentences = {column: verdict(overall.loc[column, "rho"], overall.loc[column, "p"], name) for column, name in MEASURES.items()}
means = pairs.groupby("modality")[["linear_cka", "gap"]].mean()
modality_means = "; ".join(f"the {m} pairs have a mean linear CKA of {row['linear_cka']:.2f} and a mean gap of {row['gap']:.3f}"
                           for m, row in means.iterrows())
# A pooled correlation can come from the difference between the modalities alone: ask the same sign within each.
within = {column: correlations.loc[column].drop("all pairs")["rho"] for column in MEASURES}
significant = overall[overall["p"] < 0.05]
predictive = list(significant.index[significant["rho"] < 0])
if len(pairs) < MIN_PAIRS:
    answer = (f"Too few pairs to conclude: {len(pairs)} ordered pairs, and at least {MIN_PAIRS} are needed before a rank "
              "correlation says anything; run every ordered pair (-p targets=[] on both stitching notebooks, then "
              "semalign run all) to ask the question properly.")
    sentences = {column: f"The table's ρ for {name} is shown, not read." for column, name in MEASURES.items()}
elif predictive and all((within[c] < 0).all() for c in predictive):
    answer = ("On these encoders representational similarity does predict stitchability: more similar pairs lose less, "
              "over all pairs and within each modality.")
elif predictive:
    signs = "; ".join(f"{MEASURES[c]}: " + ", ".join(f"{m} ρ = {r:.2f}" for m, r in within[c].items()) for c in predictive)
    answer = (f"Within a modality, though, the rank correlation is not negative throughout ({signs}), so the pooled "
              "correlation mostly tells the modalities apart: weak evidence that similarity predicts stitchability.")
elif len(significant):
    answer = "On these encoders more similar pairs lose more, the opposite of what similarity is expected to predict."
else:
    answer = "On these encoders representational similarity does not detectably predict stitchability."

records_out = [dict(method="diagnostic", source=r["source"], target=r["target"], n_anchors=int(r["largest"]),
                    metric=column, value=r[column])
               for _, r in pairs.iterrows() for column in ("linear_cka", "mutual_knn", "gap")]
records_out += [dict(method="rank_correlation", metric=f"spearman:{column}:{group}", value=row["rho"])
                for (column, group), row in correlations.iterrows() if not np.isnan(row["rho"])]
results.save_records(records_out, profile=profile, run=run_name, experiment="diagnostics",
                     parameters=dict(metric=metric, k=SIMILARITY_K))
glue("n_pairs", f"{len(pairs)}", display=False)
glue("cka_verdict", sentences["linear_cka"], display=False)
glue("mknn_verdict", sentences["mutual_knn"], display=False)
glue("answer", answer, display=False)
glue("modality_means", modality_means[0].upper() + modality_means[1:] + ".", display=False)
glue("left_out", left_out, display=False)
gaps = pairs.set_index(["source", "target"])["gap"]
both_orders = [pair for pair in gaps.index if pair[::-1] in gaps.index]
if both_orders:
    widest = max(both_orders, key=lambda pair: abs(gaps[pair] - gaps[pair[::-1]]))
    asymmetry = (f"The two orders of a pair differ most here: {widest[0]} → {widest[1]} loses {gaps[widest]:.3f}, "
                 f"{widest[1]} → {widest[0]} loses {gaps[widest[::-1]]:.3f}.")
else:
    asymmetry = "No pair was run in both orders, so this cannot be seen here."
glue("asymmetry", asymmetry, display=False)

# %% [markdown]
# ## What the numbers say
#
# Over the {glue:text}`n_pairs` ordered pairs of both modalities:
# {glue:text}`cka_verdict` {glue:text}`mknn_verdict`
# {glue:text}`modality_means` {glue:text}`answer` {glue:text}`left_out`
#
# Both measures are symmetric, but the gap is not. {glue:text}`asymmetry` No
# similarity of the two spaces can tell such directions apart.
#
# Read this with care. The two orders of a pair share one similarity, so the
# pairs are not independent and the p-values are optimistic, and the
# per-modality correlations rest on a few pairs each: they are at best
# suggestive.
