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
# # Vision stitching with one transform
#
# The image counterpart of the text experiment: a decoder trained on vision
# encoder $Y$'s embeddings of chest radiographs is fed $T(X(\text{img}))$, with
# $T$ fitted on unlabelled anchor images. The radiographs are the study's
# phantom, rendered from one real chest CT with inserted findings of known
# ground truth (see {doc}`phantom_gallery`); the paper used RSNA pneumonia,
# which the paper profile reads from a local copy (`dataset` parameter).
# The runner executes this page once per transform; {doc}`stitching_summary__experiment-vision_stitching` puts
# them together.
#
# By default the pairs are the paper's direction: each general encoder $X$
# into the medical one (`targets`: the study-made `phantom-ssl`), whose
# decoder is reused. `phantom-ssl` is EfficientNet-Lite1 trained by the study
# on the phantom's training images *without labels* (self-supervised, as
# RAD-DINO is), so it is derived from neither general encoder (Lite0, Lite2).
# The other four ordered pairs cost twice as much again on a laptop CPU;
# `-p targets=[]` runs every ordered pair. The task is multi-label (the six
# findings, macro-AUROC); a share of the training images
# (`validation_fraction`) chooses the decoder's strength and, downstream, the
# transform; the test images are scored once per setting.

# %% tags=["parameters"]
profile = "offline"  # set by the runner
run_name = "vision_stitching"  # set by the runner
transform = "ortho"  # affine, linear, l-ortho or ortho
encoders = ["effnet-lite0", "effnet-lite2", "phantom-ssl"]  # vision encoders compared
targets = ["phantom-ssl"]  # encoders Y whose decoder is reused: pairs X -> Y into them are run; [] means every ordered pair
anchor_counts = [8, 16, 32, 64, 128, 256, 512, 1024]  # anchors drawn from the training split
anchor_strategy = "random"  # random, stratified or diverse
seeds = [0, 1, 2]  # seeds of the anchor draw and of the affine fit
claim_anchor_counts = [64, 256]  # budgets fixed in advance at which the claims are judged, with the largest count
task = "multilabel"  # multilabel (six findings) or binary (abnormal vs normal)
validation_fraction = 0.2  # share of the training images held out to choose settings
decoder = "logreg"  # logreg or mlp
scaling = "standard"  # standard, center or none
jobs = 0  # fits run at once, each on one thread (results do not depend on it); 0 means one per CPU core, at most 8
dataset = "phantom"  # phantom, or a paper dataset under data_root: rsna_pneumonia, vindr_cxr, chexpert or mimic_cxr
data_root = ""  # folder holding the paper datasets (paper profile)
label_columns = []  # labels of a paper dataset (empty: its default labels)
uncertain = "zeros"  # CheXpert-style uncertain (-1) labels: zeros, ones or ignore (drop the image)
max_images = 0  # 0 means every image of a paper dataset, else a seeded random subset of this size
split = "seeded"  # seeded (by patient where patients are known) or official (the dataset's own split, where it has one)
workers = 0  # threads decoding a paper dataset's image files; 0 means one per CPU core, at most 8
n_images = 2000  # phantom images rendered
image_size = 256  # phantom image side in pixels (paper datasets: loaded, padded square, at this size)
phantom_seed = 0  # seed of the phantom, of the subset and of the train/test split
normal_fraction = 0.3  # share of phantom images with no finding
test_fraction = 0.3  # share of images held out for testing
precision = "fp32"  # fp32 or bf16 for embedding extraction
batch_size = 0  # embedding batch size; 0 means the encoder's own (8 images for EfficientNet-Lite on a CPU, the fastest there)
device = "auto"  # auto, cpu or cuda
medical_scale = 1.0  # share of the default training steps of the self-supervised phantom-ssl (smaller for quick runs)

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

images = experiments.image_dataset(
    dataset, data_root=data_root, label_columns=label_columns, uncertain=uncertain, max_images=max_images,
    test_fraction=test_fraction, phantom_seed=phantom_seed, split=split, n_images=n_images, image_size=image_size,
    normal_fraction=normal_fraction, workers=workers,
)
train, test = images.train, images.test
fit, validation = data.validation_split(train, validation_fraction, phantom_seed)
labels = images.items.task_labels(task)
print(f"{len(images):,} images of {images.items.name} ({len(fit):,} fit / {len(validation):,} validation / "
      f"{len(test):,} test), task {task!r}: {list(labels.columns)}")

# %%
embeddings = experiments.image_embeddings(images, encoders, medical_scale=medical_scale, precision=precision,
                                          batch_size=batch_size, device=device)
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
results.save_records(records, profile=profile, run=run_name, experiment="vision_stitching", replicates=replicates,
                     embeddings=[embeddings],
                     parameters=dict(transform=transform, encoders=encoders, targets=targets, anchor_counts=anchor_counts,
                                     claim_anchor_counts=claim_anchor_counts, seeds=seeds, task=task, decoder=decoder, dataset=dataset,
                                     validation_fraction=validation_fraction, n_images=len(images)))
test_frame = frame[frame["split"] == "test"]

# %% tags=["hide-input"]
fig = plots.pair_curves(test_frame, transform)
glue("pair_curves", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} pair_curves
#
# Test macro-AUROC of $Y$'s decoder on $T(X)$ for each pair of vision encoders
# with this page's transform (band: ± one standard deviation over seeds).
# Black: the upper bound, the target encoder with its own decoder; dotted grey:
# naive stitching (mean over pairs).
# ```

# %%
summary.anchor_table(test_frame, summary.table_anchor_counts(anchor_counts, claim_anchor_counts))

# %%
glue("ratio_evidence", summary.upper_bound_evidence(test_frame), display=False)

# %% [markdown]
# ## What the numbers say
#
# With the most anchors: {glue:text}`ratio_evidence`. The paper's claims are
# judged, with intervals, on {doc}`stitching_summary__experiment-vision_stitching`. On the phantom (the offline
# profile) all images come from one patient's anatomy, so these numbers measure
# how well the encoders' spaces can be aligned on this phantom, not how they
# would fare on a hospital's films; the paper profile runs the same page on RSNA
# pneumonia radiographs.
