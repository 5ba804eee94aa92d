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
# # Unimodal zero-shot classification
#
# A vision encoder that has never seen text, and a text encoder that has never
# seen images, are aligned with a transform fitted on paired image–report
# anchors. A test radiograph is mapped into the text space and compared with
# the text encoder's embeddings of a positive and a negative prompt per finding
# (see {ref}`method`). No classifier is trained on labels. This page compares
# that route with a CLIP-style multimodal model trained by the study on the
# anchor image–report pairs (the stand-in for BiomedCLIP/MedCLIP), with a
# supervised linear probe on the vision encoder (a ceiling that *uses* labels)
# and with chance. The offline profile runs it on the phantom's pairs. Pretrained
# multimodal models such as CLIP and BiomedCLIP cannot be loaded offline; the
# paper profile adds them (`multimodal_encoders`) and evaluates on RSNA
# pneumonia with anchors from MIMIC-CXR image–report pairs, as the paper does.
#
# The offline text encoders are a general one (MiniLM) and its radiology
# adaptation (radiology-minilm, see {doc}`text_stitching__transform-affine`): the
# same architecture with and without domain training, a direct comparison.
# Adding mpnet (`text_encoders`) is one parameter away; it roughly doubles
# the time of this page on a laptop CPU.

# %% tags=["parameters"]
profile = "offline"  # set by the runner
run_name = "zero_shot"  # set by the runner
vision_encoders = ["effnet-lite0", "effnet-lite2", "phantom-effnet"]  # vision-only encoders
text_encoders = ["minilm", "radiology-minilm"]  # text-only encoders; add "mpnet" for a second general one
transforms = ["affine", "linear", "l-ortho", "ortho"]  # transforms from vision to text space
affine_precision = "auto"  # matmuls of the affine fit: fp32, bf16 (exact every 10 steps; ~2x faster on CPUs with native bf16) or auto (bf16 where native)
jobs = 0  # fits run at once, each on one thread (results do not depend on it); 0 means one per CPU core, at most 8
anchor_counts = [16, 64, 256, 1024]  # paired image-report anchors from the training split
seeds = [0, 1, 2]  # seeds of the anchor draw, the affine fit and the CLIP-style model
prompts = {}  # {class: {positive: [...], negative: [...]}}; empty means the built-in prompts
multimodal_encoders = []  # pretrained CLIP-style models scored zero-shot the ordinary way, e.g. openai/clip-vit-base-patch32
dataset = "phantom"  # phantom, or a paper dataset under data_root: rsna_pneumonia, vindr_cxr, chexpert or mimic_cxr
anchor_dataset = ""  # source of the paired image-report anchors: empty means dataset itself (phantom, mimic_cxr)
data_root = ""  # folder holding the paper datasets (paper profile)
label_columns = []  # classes of a paper dataset (empty: its default labels; a No Finding column is not a class)
uncertain = "zeros"  # CheXpert-style uncertain (-1) labels: zeros, ones or ignore (drop the image)
max_images = 0  # 0 means every image of a paper dataset, else a seeded random subset of this size
max_anchor_pairs = 0  # training pairs drawn from a separate anchor_dataset; 0 means all of them
split = "seeded"  # seeded (by patient where patients are known) or official (the dataset's own split, where it has one)
workers = 0  # threads decoding a paper dataset's image files; 0 means one per CPU core, at most 8
n_images = 2000  # phantom images rendered
image_size = 256  # phantom image side in pixels (paper datasets: loaded, padded square, at this size)
phantom_seed = 0  # seed of the phantom, of the subsets and of the train/test split
test_fraction = 0.3  # share of images held out for testing
precision = "bf16"  # fp32 or bf16 for embedding extraction
batch_size = 0  # embedding batch size; 0 means the encoder's own (8 images for EfficientNet-Lite on a CPU, the fastest there)
device = "auto"  # auto, cpu or cuda
allow_remote_code = []  # encoders allowed to run code shipped with their weights (trust_remote_code), by name
adapt_steps = 50  # training steps of the study-made radiology text encoder (on IU reports)
vision_adapt_steps = 300  # training steps of the study-made phantom vision encoder (phantom-effnet)

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from myst_nb import glue

from semalign import data, experiments, results, zeroshot
from semalign.align import resolve_gd_precision
from semalign.phantom import PhantomSpec

spec = PhantomSpec(n_images=n_images, seed=phantom_seed, image_size=image_size)
evaluation, anchor_pairs = experiments.zero_shot_datasets(
    dataset, anchor_dataset, max_anchor_pairs=max_anchor_pairs, spec=spec, data_root=data_root,
    label_columns=label_columns, uncertain=uncertain, max_images=max_images, test_fraction=test_fraction,
    seed=phantom_seed, split=split, image_size=image_size, workers=workers,
)
train, test = evaluation.train, evaluation.test
classes = [c for c in evaluation.items.labels.columns if c != "normal"]
prompt_set = prompts or zeroshot.default_prompts(classes)
zeroshot.check_prompts(prompt_set, classes)
pairs = evaluation if anchor_pairs is None else anchor_pairs
print(f"{len(evaluation):,} images of {evaluation.items.name} ({len(train):,} train / {len(test):,} test); "
      f"anchors from {len(pairs.train):,} image-report pairs of {pairs.items.name}; classes {classes}")

# %% [markdown]
# ## Embeddings
#
# The vision encoders embed the images (and, when the anchors come from
# another dataset, its images); the text encoders embed the anchors' reports
# and the prompts. The radiology text encoder is the one adapted on the IU
# training reports, as in the text chapter. Pretrained multimodal models embed
# the images and the prompts with their own two towers.

# %%
options = dict(precision=precision, batch_size=batch_size, device=device)
image_embeddings = experiments.image_embeddings(evaluation, vision_encoders, adapt_steps=vision_adapt_steps, **options)
anchor_images = None if anchor_pairs is None else experiments.image_embeddings(anchor_pairs, vision_encoders, **options)
if experiments.RADIOLOGY_TEXT_ENCODER in text_encoders:
    iu = data.load_reports()
    iu_train, _ = data.split_indices(len(iu), 0.3, 0)
    experiments.register_radiology_text_encoder(iu.subset(iu_train), adapt_steps)
report_embeddings = experiments.encode_all(pairs.items.ids, pairs.items.texts, text_encoders, precision=precision,
                                           device=device, allow_remote_code=allow_remote_code)
prompt_embeddings = experiments.prompt_embeddings(prompt_set, classes, text_encoders, precision="fp32", device=device,
                                                  allow_remote_code=allow_remote_code)
multimodal = experiments.multimodal_embeddings(evaluation, multimodal_encoders, prompt_set, classes, **options)

# %% [markdown]
# ## The sweep

# %%
setup = zeroshot.ZeroShotSetup(
    image_embeddings=image_embeddings, report_embeddings=report_embeddings, prompt_embeddings=prompt_embeddings,
    labels=evaluation.items.labels[classes].to_numpy(), classes=classes, train=train, test=test,
    transforms=transforms, anchor_counts=anchor_counts, seeds=seeds, anchor_images=anchor_images, multimodal=multimodal,
    affine_precision=affine_precision, jobs=jobs,
)
records = zeroshot.zero_shot_records(setup)
frame = pd.DataFrame(records)

# %% [markdown]
# ## Figure 4 analogue

# %% tags=["hide-input"]
largest = max(anchor_counts)
unimodal = frame[(frame["method"] == "unimodal_zero_shot") & (frame["n_anchors"] == largest)]
best_transform = unimodal[unimodal["task"] == "macro"].groupby("transform")["value"].mean().idxmax()
chosen = unimodal[unimodal["transform"] == best_transform]
pair_means = chosen.groupby(["source", "target", "task"])["value"].mean().reset_index()
best_pair = pair_means[pair_means["task"] == "macro"].sort_values("value").iloc[-1][["source", "target"]]
rows = [
    chosen.assign(series=f"unimodal zero-shot, mean over pairs ({best_transform})"),
    chosen[(chosen["source"] == best_pair["source"]) & (chosen["target"] == best_pair["target"])]
    .assign(series=f"unimodal zero-shot, best pair ({best_pair['source']} → {best_pair['target']})"),
    frame[frame["method"] == "clip_style"].assign(series="CLIP-style, trained on the anchor pairs (mean over pairs)"),
    *[frame[(frame["method"] == "pretrained_multimodal") & (frame["source"] == m)].assign(series=f"{m}, pretrained")
      for m in multimodal],
    frame[frame["method"] == "linear_probe"].assign(series="supervised linear probe (uses labels)"),
]
plot_rows = pd.concat(rows)
fig, ax = plt.subplots(figsize=(8, 4.2))
sns.barplot(data=plot_rows, x="task", y="value", hue="series", order=[*classes, "macro"], errorbar="sd", ax=ax)
ax.axhline(0.5, color="grey", ls=":", lw=1.2, label="chance")
ax.set(xlabel="", ylabel="test AUROC", ylim=(0.3, 1.0), title=f"Zero-shot, {evaluation.items.name} ({largest} paired anchors)")
ax.legend(fontsize=7, loc="lower left")
sns.despine(fig)
fig.tight_layout()
glue("figure4", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} figure4
#
# Analogue of the paper's Figure 4. Test AUROC per finding of unimodal
# zero-shot classification (vision encoder mapped into a text encoder's space
# with the best transform at the largest anchor count: the mean over encoder
# pairs, and the best pair), of the CLIP-style model trained by the study on
# the anchor pairs, of pretrained multimodal models where the profile has them
# (paper), and of a supervised linear probe; error bars are ± one
# standard deviation over encoder pairs and seeds. Dotted: chance.
# ```

# %%
macro = frame[frame["task"] == "macro"]
headline = {
    "unimodal (best transform, mean over pairs)": chosen[chosen["task"] == "macro"]["value"].mean(),
    "unimodal (best pair)": pair_means[pair_means["task"] == "macro"]["value"].max(),
    "CLIP-style (mean over pairs)": macro[macro["method"] == "clip_style"]["value"].mean(),
    "linear probe (mean over encoders)": macro[macro["method"] == "linear_probe"]["value"].mean(),
    "chance": 0.5,
    **{f"{m} (pretrained)": macro[macro["source"] == m]["value"].mean() for m in multimodal},
}
headline = pd.Series(headline, name="macro AUROC").round(3)
for key, value in zip(["unimodal_mean", "unimodal_best", "clip_style", "probe"], headline.values):
    glue(f"zs_{key}", f"{value:.3f}", display=False)
pretrained = "; ".join(f"{m} {headline[f'{m} (pretrained)']:.3f}" for m in multimodal)
glue("zs_multimodal", pretrained or "none in this profile", display=False)
headline.to_frame()

# %%
curve = frame[(frame["method"] == "unimodal_zero_shot") & (frame["task"] == "macro")]
fig, ax = plt.subplots(figsize=(6.5, 4))
sns.lineplot(data=curve, x="n_anchors", y="value", hue="transform", errorbar="sd", marker="o", ax=ax)
ax.axhline(macro[macro["method"] == "clip_style"]["value"].mean(), color="black", lw=1.2, label="CLIP-style (mean)")
ax.set_xscale("log")
ax.set(xlabel="number of paired anchors", ylabel="macro AUROC")
ax.legend(fontsize=8)
sns.despine(fig)
fig.tight_layout()
glue("zs_anchor_curve", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} zs_anchor_curve
#
# Macro AUROC of unimodal zero-shot classification against the number of
# paired anchors, per transform (band: ± one standard deviation over encoder
# pairs and seeds). Black: the CLIP-style baseline.
# ```
#
# ## A real-image anecdote
#
# The fitted route (best pair, best transform, the largest anchor count, seed
# 0) applied to the 16 real pediatric radiographs, scoring the prompts of the
# opacity-like class (*opacity* on the phantom, *Pneumonia* on RSNA) against
# their NORMAL / PNEUMONIA file labels. Sixteen images, from another population
# (children) and another machine than the anchors: this says whether anything
# transfers at all, not how well.

# %%
vision, text = best_pair["source"], best_pair["target"]
opacity = zeroshot.opacity_class(classes)
extra_records = []
if opacity is None:
    glue("real_auroc", f"not computed (no opacity-like class among {classes})", display=False)
    real_table = None
else:
    pool_images, pool_reports = zeroshot.anchor_pool(setup)
    real_table, real_auroc, low, high = experiments.pediatric_check(
        vision, text, best_transform, largest, pool_images[vision], pool_reports[text], prompt_embeddings[text][opacity],
        image_size=image_size, precision=precision, device=device,
    )
    glue("real_auroc", f"{real_auroc:.2f} (95% bootstrap interval {low:.2f}–{high:.2f}, n = {len(real_table)})",
         display=False)
    extra_records.append(dict(method="real_pediatric_anecdote", transform=best_transform, source=vision, target=text,
                              n_anchors=largest, seed=0, task=opacity, metric="auroc", value=real_auroc))
results.save_records(
    records + extra_records, profile=profile, run=run_name, experiment="zero_shot",
    parameters=dict(vision_encoders=vision_encoders, text_encoders=text_encoders, transforms=transforms,
                    anchor_counts=anchor_counts, seeds=seeds, dataset=dataset, anchor_dataset=anchor_dataset,
                    multimodal_encoders=multimodal_encoders, affine_precision=resolve_gd_precision(affine_precision)),
)
real_table

# %% [markdown]
# On the real images the opacity score separates pneumonia from normal with an
# AUROC of {glue:text}`real_auroc`. An interval this wide is the honest
# summary: sixteen images cannot establish transfer to real films.
#
# ## What the numbers say
#
# Macro AUROC: unimodal zero-shot {glue:text}`zs_unimodal_mean` on average over
# encoder pairs and {glue:text}`zs_unimodal_best` for the best pair; the
# CLIP-style model trained on the anchor pairs {glue:text}`zs_clip_style`;
# the supervised probe {glue:text}`zs_probe`. Pretrained multimodal models:
# {glue:text}`zs_multimodal`.
