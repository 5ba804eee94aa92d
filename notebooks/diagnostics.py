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
# encoders and of vision encoders that the stitching pages ran, it measures,
# on the test split, how similar the two spaces are — linear CKA and the mutual $k$-NN overlap (see
# {ref}`method`) — and sets that against how much a decoder loses when fed the
# aligned embeddings of the other encoder: the *stitching gap*, the target's
# upper bound minus the aligned score, read from the stitching runs' records at
# their largest anchor count. It reads the embedding caches and the records of
# the stitching runs (of {doc}`text <stitching_summary__experiment-text_stitching>`
# and of {doc}`images <stitching_summary__experiment-vision_stitching>`), so it
# runs after them, on the same data.

# %% tags=["parameters"]
profile = "offline"  # set by the runner
run_name = "diagnostics"  # set by the runner
text_encoders = ["minilm", "mpnet", "radiology-bert"]  # text encoders compared (those of text_stitching)
vision_encoders = ["effnet-lite0", "effnet-lite2", "phantom-ssl"]  # vision encoders compared (those of vision_stitching)
metric = "macro_auroc"  # stitching metric of the gap: macro_auroc, macro_f1 or accuracy
k = 10  # neighbours of the mutual k-NN overlap
text_dataset = "iu_xray"  # text_stitching's dataset: "iu_xray", "mimic_cxr" or a .csv/.parquet path
text_column = "text"  # text column of a table dataset
text_label_columns = []  # text_stitching's label_columns
max_reports = 0  # 0 means all reports, else a seeded random subset of this size
split_seed = 0  # seed of the report subset and split
medical_scale = 1.0  # share of the default training steps of the study-made radiology-bert and phantom-ssl
allow_remote_code = []  # text encoders allowed to run code shipped with their weights, by name
vision_dataset = "phantom"  # vision_stitching's dataset: phantom or a paper dataset under data_root
vision_label_columns = []  # vision_stitching's label_columns
max_images = 0  # 0 means every image of a paper dataset, else a seeded random subset of this size
n_images = 2000  # phantom images rendered
image_size = 256  # phantom image side in pixels (paper datasets: loaded at this size)
phantom_seed = 0  # seed of the phantom, of the image subset and of the image split
normal_fraction = 0.3  # share of phantom images with no finding
data_root = ""  # folder holding the paper datasets (paper profile)
uncertain = "zeros"  # uncertain (-1) labels of the paper datasets: zeros, ones or ignore
split = "seeded"  # seeded or official (the dataset's own split, where it has one)
test_fraction = 0.3  # share of reports and of images held out for testing
precision = "fp32"  # fp32 or bf16 for embedding extraction (part of the cache key)
workers = 0  # threads decoding a paper dataset's image files; 0 means one per CPU core, at most 8
device = "auto"  # auto, cpu or cuda

# %% tags=["hide-input"]
import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from myst_nb import glue
from scipy.stats import spearmanr

from semalign.experiments import inputs as experiments

from semalign.experiments import results

from semalign.study import runner
from semalign.method.similarity import linear_cka, mutual_knn
from semalign.core.errors import SemalignError
from semalign.phantom import PhantomSpec
from semalign.experiments.plots import METRIC_LABELS

# The same data as the stitching notebooks, under their parameter names.
text_data = dict(dataset=text_dataset, data_root=data_root, uncertain=uncertain, text_column=text_column,
                 label_columns=text_label_columns, max_reports=max_reports, test_fraction=test_fraction,
                 split_seed=split_seed, split=split, precision=precision, allow_remote_code=allow_remote_code,
                 medical_scale=medical_scale)
vision_data = dict(dataset=vision_dataset, data_root=data_root, label_columns=vision_label_columns, uncertain=uncertain,
                   max_images=max_images, split=split, n_images=n_images, image_size=image_size,
                   phantom_seed=phantom_seed, normal_fraction=normal_fraction, test_fraction=test_fraction,
                   precision=precision, medical_scale=medical_scale)

# Parameters of the stitching notebooks that do not change which items are embedded, or how.
SWEEP_PARAMETERS = {"profile", "run_name", "transform", "encoders", "anchor_counts", "anchor_strategy", "seeds",
                    "task", "decoder", "scaling", "jobs", "batch_size", "device", "workers",
                    "targets", "validation_fraction", "claim_anchor_counts"}


def check_stitching_runs(notebook: str, ours: dict, encoders: list[str]) -> None:
    """Stop unless this profile's runs of ``notebook`` were executed, with our data and encoders."""
    runs = [run for run in runner.executed_runs(profile) if run.notebook == notebook]
    missing = [run.name for run in runs if (runner.executed_status(run) or "").startswith("missing")]
    if missing:
        raise SemalignError(f"the diagnostics need the {notebook} runs of profile {profile!r}, but {', '.join(missing)} "
                            f"have not been executed: run `semalign run {notebook} --profile {profile}` first")
    defaults = {name: parameter.default for name, parameter in runner.notebook_parameters(notebook).items()}
    for run in runs:
        theirs = {key: value for key, value in {**defaults, **run.parameters}.items() if key not in SWEEP_PARAMETERS}
        unknown = sorted(set(theirs) - set(ours))
        differ = {key: (value, theirs[key]) for key, value in ours.items() if key in theirs and theirs[key] != value}
        absent = sorted(set(encoders) - set({**defaults, **run.parameters}["encoders"]))
        if unknown or differ or absent:
            raise SemalignError(f"{run.name} is not comparable: parameters the diagnostics lack: {unknown}; "
                                f"(ours, its) where they differ: {differ}; encoders it did not run: {absent}. "
                                f"Give both notebooks the same data parameters in notebooks/runs.yaml for profile {profile!r}")


check_stitching_runs("text_stitching", text_data, text_encoders)
check_stitching_runs("vision_stitching", vision_data, vision_encoders)

# %% [markdown]
# ## Similarity on the test split
#
# The embeddings come from the same caches as the stitching pages (same
# encoders, data and split), so nothing is re-encoded. Both measures are
# symmetric, so the two orders of a pair share one value.

# %%
reports, text_train, text_test = experiments.report_dataset(
    text_dataset, data_root=data_root, uncertain=uncertain, text_column=text_column, label_columns=text_label_columns,
    max_reports=max_reports, test_fraction=test_fraction, seed=split_seed, split=split)
text = experiments.text_embeddings(reports, text_encoders, test_index=text_test, precision=precision, device=device,
                                   medical_scale=medical_scale, allow_remote_code=allow_remote_code, progress=False)
spec = PhantomSpec(n_images=n_images, seed=phantom_seed, image_size=image_size, normal_fraction=normal_fraction)
images = experiments.image_dataset(
    vision_dataset, spec=spec, data_root=data_root, label_columns=vision_label_columns, uncertain=uncertain,
    max_images=max_images, test_fraction=test_fraction, seed=phantom_seed, split=split, image_size=image_size,
    workers=workers, progress=False)
vision = experiments.image_embeddings(images, vision_encoders, medical_scale=medical_scale, precision=precision,
                                      device=device, progress=False)

rows = []
for experiment, embeddings, test in (("text_stitching", text, text_test), ("vision_stitching", vision, images.test)):
    for first, second in itertools.combinations(embeddings, 2):
        x, y = embeddings[first][test], embeddings[second][test]
        # One value for both orders: computed twice, rounding would break the tie in the ranks.
        similarity = dict(linear_cka=linear_cka(x, y), mutual_knn=mutual_knn(x, y, k=k))
        rows += [dict(experiment=experiment, source=a, target=b, **similarity) for a, b in ((first, second), (second, first))]
pairs = pd.DataFrame(rows)

# %% [markdown]
# ## The stitching gap
#
# For each ordered pair $X \to Y$: the mean over seeds and the four transforms
# of $Y$'s decoder on $T(X)$ at the largest anchor count of the stitching runs,
# subtracted from $Y$'s decoder on $Y$'s own embeddings.

# %%
records = results.load_records(profile)
records = records[records["experiment"].isin(["text_stitching", "vision_stitching"]) & (records["metric"] == metric)
                  & (records["split"] == "test")]
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
pairs["modality"] = pairs["experiment"].map({"text_stitching": "text", "vision_stitching": "vision"})

table = pairs.set_index(["modality", "source", "target"])[["linear_cka", "mutual_knn", "naive", "upper_bound", "aligned",
                                                           "gap"]]
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
for ax, (column, label) in zip(axes, [("linear_cka", "linear CKA"), ("mutual_knn", f"mutual {k}-NN overlap")]):
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
                     parameters=dict(text_encoders=text_encoders, vision_encoders=vision_encoders, metric=metric, k=k,
                                     text_data=text_data, vision_data=vision_data))
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
