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
# # Stitching: the four transforms compared
#
# This page gathers the records of the four stitching runs of one modality (one
# run per transform) and draws the analogue of the paper's Figure 3 for it: the
# test metric of $Y$'s decoder on $T(X(x))$ against the number of anchors. It
# then checks the paper's claims against these numbers. The runner executes it
# once for text and once for images.

# %% tags=["parameters"]
profile = "offline"  # set by the runner
run_name = "stitching_summary"  # set by the runner
experiment = "text_stitching"  # text_stitching or vision_stitching
metric = "macro_auroc"  # macro_auroc, macro_f1 or accuracy
table_anchor_counts = [8, 32, 128, 512, 2048]  # columns of the summary table
derived_from = {"radiology-minilm": "minilm", "phantom-effnet": "effnet-lite0"}  # fine-tuned encoder -> its parent

# %%
import matplotlib.pyplot as plt
from myst_nb import glue

from semalign import plots, results, summary

modality = {"text_stitching": "Text: general and medical report encoders",
            "vision_stitching": "Vision: encoders on phantom radiographs"}[experiment]
records = results.load_records(profile)
# naive and upper-bound records repeat in every run: keep one copy of each
keys = ["method", "transform", "source", "target", "n_anchors", "seed", "metric"]
rows = results.experiment_records(records, experiment, profile).drop_duplicates(keys)
print(f"{modality}: {len(rows):,} records from runs {', '.join(sorted(rows['run'].unique()))}")

# %% tags=["hide-input"]
fig = plots.anchor_curves(rows, metric, title=modality)
fig.tight_layout()
glue("figure3", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} figure3
#
# Analogue of the paper's Figure 3. Test metric of $Y$'s decoder on $T(X)$
# against the number of anchors, one line per transform; the band is ± one
# standard deviation over encoder pairs and seeds. Dashed: a decoder trained on
# $X$ with the same anchors *and their labels*. Black: the mean upper bound
# (each encoder with its own decoder); dotted grey: naive stitching.
# ```

# %%
counts = sorted(rows["n_anchors"].dropna().unique())
table = summary.anchor_table(rows, [n for n in table_anchor_counts if n in counts] or counts[-3:], metric)
glue("table", table, display=False)
table

# %% [markdown]
# Mean ± standard deviation over encoder pairs and seeds of the test metric.
# Naive and upper-bound rows do not depend on the number of anchors.
#
# ## The paper's claims, on these data

# %%
claims = summary.claims(rows, metric, derived_from=derived_from)
for key in ["vs_naive", "vs_upper_bound", "ortho_vs_affine", "naive_unrelated", "vs_few_shot"]:
    if key in claims.index:
        row = claims.loc[key]
        verdict = f"{'holds' if row['holds'] else 'does not hold'} ({row['evidence']})"
    else:
        verdict = "not evaluated: the runs it needs are not in this profile's results"
    glue(f"claim_{key}", verdict, display=False)
results.save_records(
    [dict(method="claim", metric=row["claim"], value=float(row["holds"])) for _, row in claims.iterrows()],
    profile=profile, run=run_name, experiment="stitching_summary", parameters=dict(experiment=experiment, metric=metric),
)
claims

# %% [markdown]
# - Aligned vs naive: {glue:text}`claim_vs_naive`.
# - Aligned vs upper bound: {glue:text}`claim_vs_upper_bound`.
# - Orthogonal vs affine: {glue:text}`claim_ortho_vs_affine`.
# - Naive stitching between unrelated encoders (not a fine-tuned copy of one
#   another): {glue:text}`claim_naive_unrelated`.
# - Aligned vs labelling the anchors: {glue:text}`claim_vs_few_shot`.
