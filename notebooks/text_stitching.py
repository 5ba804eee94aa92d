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
# # Text stitching with one transform
#
# A decoder trained on encoder $Y$'s embeddings of radiology reports is fed
# encoder $X$'s embeddings of *test* reports, mapped into $Y$'s space by a
# transform fitted on a few unlabelled anchor reports (see {ref}`method`). This
# page runs one transform for every ordered pair of encoders (or only the pairs
# into the `targets`), every anchor count
# and every seed, next to the references: *naive* (no transform), the *upper
# bound* (each encoder with its own decoder) and *few-shot* (a decoder trained
# on $X$ with the same anchors and their labels). The runner executes it once
# per transform; {doc}`stitching_summary__experiment-text_stitching` puts the four together.

# %% tags=["parameters"]
profile = "offline"  # set by the runner
run_name = "text_stitching"  # set by the runner
transform = "ortho"  # affine, linear, l-ortho or ortho
encoders = ["minilm", "mpnet", "radiology-bert"]  # text encoders compared
targets = ["radiology-bert"]  # encoders Y whose decoder is reused: pairs X -> Y into them are run; [] means every ordered pair
anchor_counts = [8, 16, 32, 64, 128, 256, 512, 1024, 2048]  # anchors drawn from the training split
anchor_strategy = "random"  # random, stratified or diverse
seeds = [0, 1, 2]  # seeds of the anchor draw and of the affine fit
claim_anchor_counts = [64, 256]  # budgets fixed in advance at which the claims are judged, with the largest count
task = "multilabel"  # multilabel (every finding) or binary (abnormal vs normal)
validation_fraction = 0.2  # share of the training reports held out to choose settings
decoder = "logreg"  # logreg or mlp
scaling = "standard"  # standard, center or none
jobs = 0  # fits run at once, each on one thread (results do not depend on it); 0 means one per CPU core, at most 8
dataset = "iu_xray"  # "iu_xray", "mimic_cxr" (reports under data_root) or a path to a .csv/.parquet file
data_root = ""  # folder holding the paper datasets (paper profile)
uncertain = "zeros"  # MIMIC-CXR's uncertain (-1) labels: zeros, ones or ignore (drop the report)
text_column = "text"  # text column of a table dataset
label_columns = []  # 0/1 label columns of a table dataset; MIMIC-CXR labels (empty: its default five)
max_reports = 0  # 0 means all reports, else a seeded random subset of this size
test_fraction = 0.3  # share of reports held out for testing
split_seed = 0  # seed of the subset and the train/test split
split = "seeded"  # seeded (by patient where patients are known) or official (the dataset's own split, where it has one)
precision = "fp32"  # fp32 or bf16 for embedding extraction
batch_size = 0  # embedding batch size; 0 means the encoder's own (32 texts, 128 on a GPU)
device = "auto"  # auto, cpu or cuda
allow_remote_code = []  # encoders allowed to run code shipped with their weights (trust_remote_code), by name
medical_scale = 1.0  # share of the default training steps of the study-made radiology-bert (smaller for quick runs)

# %%
import matplotlib.pyplot as plt
import pandas as pd
from myst_nb import glue

from semalign.data import reports as data

from semalign.experiments import inputs as experiments

from semalign.experiments import plots

from semalign.experiments import results

from semalign.experiments import summary
from semalign.experiments.stitching import StitchingSetup, stitching_records

reports, train, test = experiments.report_dataset(
    dataset, data_root=data_root, uncertain=uncertain, text_column=text_column, label_columns=label_columns,
    max_reports=max_reports, test_fraction=test_fraction, split_seed=split_seed, split=split,
)
fit, validation = data.validation_split(train, validation_fraction, split_seed)
labels = reports.task_labels(task)
print(f"{len(reports):,} reports ({len(fit):,} fit / {len(validation):,} validation / {len(test):,} test), "
      f"task {task!r}: {list(labels.columns)}")

# %% [markdown]
# ## Embeddings
#
# Each encoder embeds every report once; embeddings are cached on disk, keyed
# by the encoder's weights, pooling, precision and the report texts, so the
# other transforms' pages reuse them. The study-made medical encoder is a
# fixed model, as CXR-BERT is: trained on IU X-ray training reports whatever
# the data evaluated here, and never on one of this page's test reports.

# %%
embeddings = experiments.text_embeddings(
    reports, encoders, test_index=test, precision=precision, batch_size=batch_size,
    device=device, medical_scale=medical_scale, allow_remote_code=allow_remote_code,
)
pd.DataFrame({name: {"dimension": e.shape[1]} for name, e in embeddings.items()}).T

# %% [markdown]
# ## The sweep

# %%
setup = StitchingSetup(
    embeddings=embeddings, labels=labels.to_numpy(), train=fit, validation=validation, test=test, transform=transform,
    anchor_counts=anchor_counts, seeds=seeds, anchor_strategy=anchor_strategy, decoder=decoder,
    scaling=scaling, task=task, jobs=jobs, targets=targets, device=device, claim_anchor_counts=claim_anchor_counts,
)
replicates = {}
records = stitching_records(setup, replicates=replicates)
frame = pd.DataFrame(records)
results.save_records(records, profile=profile, run=run_name, experiment="text_stitching", replicates=replicates,
                     embeddings=[embeddings],
                     parameters=dict(transform=transform, encoders=encoders, targets=targets, anchor_counts=anchor_counts,
                                     claim_anchor_counts=claim_anchor_counts, seeds=seeds, task=task, decoder=decoder, dataset=dataset,
                                     validation_fraction=validation_fraction))
test_frame = frame[frame["split"] == "test"]

# %% tags=["hide-input"]
fig = plots.pair_curves(test_frame, transform)
glue("pair_curves", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} pair_curves
#
# Test macro-AUROC of $Y$'s decoder on $T(X)$ for each encoder pair with this
# page's transform, as the number of anchors grows (band: ± one standard
# deviation over seeds). Black: the upper bound, the target encoder with its own
# decoder; dotted grey: naive stitching (mean over pairs).
# ```

# %%
summary.anchor_table(test_frame, summary.table_anchor_counts(anchor_counts, claim_anchor_counts))

# %%
glue("ratio_evidence", summary.upper_bound_evidence(test_frame), display=False)

# %% [markdown]
# ## What the numbers say
#
# The table gives the test macro-AUROC, mean ± standard deviation over encoder
# pairs and seeds. With the most anchors: {glue:text}`ratio_evidence`. The
# paper's claims are judged on
# {doc}`stitching_summary__experiment-text_stitching`, where the transform is
# chosen on validation data and every verdict has a bootstrap interval.
