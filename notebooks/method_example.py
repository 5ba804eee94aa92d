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
# (method-example)=
# # The four transforms on a 2-D toy problem
#
# The {ref}`method` page states the transforms as equations; this page shows
# what they do where the spaces can be drawn. Two "encoders" embed the same
# items in two dimensions: the source cloud $X$, and a target cloud $Y$ made
# from $X$ by a hidden affine map — a rotation, an anisotropic stretch and a
# shift — plus noise. Each transform is fitted with
# {py:class}`semalign.method.align.Aligner` on a handful of paired anchors, exactly as
# in the experiments, and applied to every other point. A second section moves
# to synthetic spaces of many dimensions to show why the least-squares
# transforms can get *worse* as the number of anchors approaches the width of
# the embeddings.

# %% tags=["parameters"]
profile = "offline"  # set by the runner
run_name = "method_example"  # set by the runner
n_points = 300  # points in the source cloud X (three blobs)
n_anchors = 6  # paired anchors the transforms are fitted on
seed = 0  # seed of the clouds, the noise, the anchor draw and the affine fit
angle = 40.0  # rotation of the hidden map, in degrees
stretch = [2.0, 0.5]  # scale factors of the hidden map along X's two axes, applied before the rotation
shift = [3.0, 1.0]  # translation of the hidden map
noise = 0.05  # standard deviation of the Gaussian noise added to Y
scaling = "standard"  # standard, center or none (as in the experiments)
affine_steps = 300  # Adam steps of the affine fit (the study's setting)
sweep_dims = 64  # width d of both spaces in the anchor-count sweep
sweep_signal = 0.5  # share of each target dimension's variance the sweep's hidden linear map explains (R^2)
sweep_decay = 2.0  # the sweep's source covariance has eigenvalues falling as i^(-decay) (0: isotropic)
sweep_seeds = 3  # anchor draws averaged at each anchor count of the sweep

# %%
import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from myst_nb import glue

from semalign.experiments import results
from semalign.experiments import plots
from semalign.method.align import Aligner, default_ridge_alpha, scaling_stats, select_anchors
from semalign.method.similarity import anchor_residual
from semalign.experiments.parallel import sweep_map

KINDS = ["affine", "linear", "l-ortho", "ortho"]

rng = np.random.default_rng(seed)
centres = np.array([[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]])
x = centres[rng.integers(len(centres), size=n_points)] + 0.6 * rng.normal(size=(n_points, 2))
theta = np.deg2rad(angle)
rotation = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
y = x @ np.diag(stretch) @ rotation + np.asarray(shift) + noise * rng.normal(size=(n_points, 2))

anchors = select_anchors(n_anchors, seed=seed, pool_size=n_points)
glue("n_anchors", n_anchors, display=False)
held_out = np.setdiff1d(np.arange(n_points), anchors)
print(f"{n_points} points, {n_anchors} anchors, {len(held_out)} held-out points")

# %% [markdown]
# ## Fitting the transforms
#
# The residual reported for each transform is the relative one of
# {py:func}`semalign.method.similarity.anchor_residual`, computed on the held-out
# (non-anchor) points: $\lVert T(X) - Y \rVert_F / \lVert Y - \bar Y \rVert_F$,
# so 0 is a perfect map and 1 is no better than predicting the mean of $Y$.

# %%
fitted = {kind: Aligner(kind, scaling=scaling, seed=seed, steps=affine_steps).fit(x[anchors], y[anchors])
          for kind in KINDS}
residuals = pd.DataFrame({
    "held-out residual": {kind: anchor_residual(a, x[held_out], y[held_out]) for kind, a in fitted.items()},
    "anchor residual": {kind: anchor_residual(a, x[anchors], y[anchors]) for kind, a in fitted.items()},
})
residuals.index.name = "transform"
for kind, value in residuals["held-out residual"].items():
    glue(f"residual_{kind.replace('-', '_')}", f"{value:.3f}", display=False)
residuals.style.format("{:.3f}")

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 2, figsize=(8, 7.5), sharex=True, sharey=True)
for ax, kind in zip(axes.flat, KINDS):
    mapped = fitted[kind].transform(x)
    ax.scatter(*x.T, s=6, color="0.7", label="source $X$")
    ax.scatter(*y.T, s=6, color="tab:blue", alpha=0.6, label="target $Y$")
    ax.scatter(*mapped[held_out].T, s=6, color="tab:orange", alpha=0.7, label="$T(X)$, held out")
    # Thin lines pair each anchor's source point with its target point.
    for i in anchors:
        ax.plot(*np.stack([x[i], y[i]]).T, color="black", lw=0.5, alpha=0.4)
    ax.scatter(*x[anchors].T, s=40, marker="s", facecolor="none", edgecolor="black", label="anchors in $X$")
    ax.scatter(*y[anchors].T, s=60, marker="*", color="black", label="anchors in $Y$")
    ax.set_title(f"{kind}: held-out residual {residuals.loc[kind, 'held-out residual']:.2f}", fontsize=10)
    ax.set_aspect("equal")
axes[0, 0].legend(fontsize=7, loc="lower left", markerscale=1.2)
sns.despine(fig)
fig.tight_layout()
glue("transforms_fig", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} transforms_fig
# :name: fig-method-example
#
# The four transforms fitted on the same anchors (squares in $X$, stars in $Y$,
# joined by thin lines). Grey: the source cloud $X$; blue: the target cloud $Y$;
# orange: the held-out points of $X$ mapped by $T$, which should land on the blue
# cloud. Each panel's title gives the relative residual on the held-out points.
# ```
#
# Held-out residuals: `affine` {glue:text}`residual_affine`, `linear`
# {glue:text}`residual_linear`, `l-ortho` {glue:text}`residual_l_ortho`,
# `ortho` {glue:text}`residual_ortho`.
#
# ## What the panels show
#
# - `linear` is fitted in closed form in standard-scaled space; with the
#   de-standardisation by $Y$'s anchor statistics it is an affine map of the
#   raw space, so it recovers the hidden affine map up to the noise.
# - `l-ortho` and `ortho` can only rotate and reflect the scaled space. The
#   per-dimension scaling absorbs a stretch along the coordinate axes, but not
#   one along other directions, so an anisotropic stretch followed by a
#   rotation leaves them a residual that more anchors cannot remove.
# - `affine` is the paper's fit: a fixed budget of small Adam steps from
#   `nn.Linear`'s random start, not a least-squares solution. In two
#   dimensions the initial weights are large compared with the steps, and the
#   budget below shows how far from converged it is.

# %%
longer = 10 * affine_steps
long_fit = Aligner("affine", scaling=scaling, seed=seed, steps=longer).fit(x[anchors], y[anchors])
long_residual = anchor_residual(long_fit, x[held_out], y[held_out])
metric_names = {"held-out residual": "heldout_residual", "anchor residual": "anchor_residual"}
records = [dict(method="aligned", transform=kind, n_anchors=n_anchors, seed=seed, metric=metric_names[column],
                value=value) for column in residuals for kind, value in residuals[column].items()]
records.append(dict(method="aligned_long_fit", transform="affine", n_anchors=n_anchors, seed=seed,
                    metric="heldout_residual", value=long_residual))
glue("affine_long_steps", f"{longer:,}", display=False)
glue("affine_long_residual", f"{long_residual:.3f}", display=False)

# %% [markdown]
# With {glue:text}`affine_long_steps` steps instead, the affine fit reaches a
# held-out residual of {glue:text}`affine_long_residual`. In the experiments the
# embeddings have hundreds of dimensions and the initial weights are small, so
# the same budget goes further; {ref}`results` compares the transforms there.
#
# ## Why least squares dips near n ≈ d
#
# In the experiments the least-squares transforms, `linear` and `l-ortho`, can
# score *lower* with more anchors as the number of anchors $n$ approaches the
# width $d_x$ of the source embeddings, and recover beyond it. That is the
# interpolation threshold of least squares, the "double descent" of its
# minimum-norm solution. To see it where the answer is known, take a source of
# width $d =$ {glue:text}`sweep_dims` whose covariance is anisotropic, as real
# embeddings are (its eigenvalues fall as $i^{-a}$ with $a =$
# {glue:text}`sweep_decay`, in random directions), and a target of the same
# width made from it by a hidden rotation and stretch plus noise, the map
# explaining a share $R^2 =$ {glue:text}`sweep_signal` of each target
# dimension's variance. Each transform is fitted on $n$ anchors, from $d/8$ to
# $8d$, and scored by the relative residual on held-out points, averaged over
# {glue:text}`sweep_seeds` anchor draws. The fifth transform, `ridge`, is not
# one of the paper's: it is least squares with a penalty on the size of $W$
# ({py:func}`~semalign.method.align.fit_ridge`).

# %%
d = sweep_dims
SWEEP_KINDS = ["affine", "linear", "l-ortho", "ortho", "ridge"]
hidden_rng = np.random.default_rng([seed, 1])
# x = z @ source_mix with z standard normal: covariance R diag(i^-decay) R^T for a random rotation R.
source_mix = np.linalg.qr(hidden_rng.normal(size=(d, d)))[0].T * (np.arange(1, d + 1) ** (-sweep_decay / 2))[:, None]
hidden_map = np.linalg.qr(hidden_rng.normal(size=(d, d)))[0] * np.exp(hidden_rng.uniform(np.log(0.5), np.log(2.0), d))
hidden_map *= np.sqrt(sweep_signal) / np.linalg.norm(source_mix @ hidden_map, axis=0)  # signal variance R^2
# The hidden map in standard-scaled units: source dimensions divided by their std; targets have unit variance.
hidden_norm = np.linalg.norm(np.sqrt((source_mix ** 2).sum(axis=0))[:, None] * hidden_map)


def planted_pairs(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paired source and target points; every target dimension has variance 1, a share R^2 of it signal."""
    source = rng.normal(size=(count, d)) @ source_mix
    return source, source @ hidden_map + np.sqrt(1 - sweep_signal) * rng.normal(size=(count, d))


def sweep_point(point: tuple[int, int]) -> list[dict]:
    """Every transform fitted on one draw of ``count`` anchors, scored on the held-out points."""
    count, draw = point
    x_anchor, y_anchor = planted_pairs(count, np.random.default_rng([seed, 3, draw, count]))
    shift_x, scale_x = scaling_stats(x_anchor, scaling)
    singular = np.linalg.svd((x_anchor - shift_x) / scale_x, compute_uv=False)
    rows = []
    for kind in SWEEP_KINDS:
        aligner = Aligner(kind, scaling=scaling, seed=seed, steps=affine_steps).fit(x_anchor, y_anchor)
        rows.append(dict(transform=kind, n_anchors=count, seed=draw,
                         residual=anchor_residual(aligner, sweep_test_x, sweep_test_y),
                         weight_norm=np.linalg.norm(aligner.state["weight"]),
                         # the smallest non-zero one: centring leaves the anchors rank min(n - 1, d)
                         smallest_singular=singular[min(count - 1, d) - 1]))
    return rows


sweep_test_x, sweep_test_y = planted_pairs(2000, np.random.default_rng([seed, 2]))
counts = sorted({round(d * 2 ** (k / 2)) for k in range(-6, 7)} | {d - 8, d - 4, d + 1, d + 4, d + 8})
sweep = pd.DataFrame([row for rows in sweep_map(sweep_point, itertools.product(counts, range(sweep_seeds)))
                      for row in rows])
curves = sweep.groupby(["transform", "n_anchors"])[["residual", "weight_norm", "smallest_singular"]].mean()
residual_curve = curves["residual"].unstack("transform")[SWEEP_KINDS]

half, quarter, four = d // 2, d // 4, 4 * d
peak = int(residual_curve["linear"].idxmax())
for name, value in dict(sweep_dims=d, sweep_decay=f"{sweep_decay:g}", sweep_signal=f"{sweep_signal:g}",
                        sweep_seeds=sweep_seeds, sweep_peak=peak, sweep_alpha=f"{default_ridge_alpha(d):g}",
                        sweep_linear_quarter=f"{residual_curve.loc[quarter, 'linear']:.2f}",
                        sweep_linear_d=f"{residual_curve.loc[d, 'linear']:.2f}",
                        sweep_linear_four=f"{residual_curve.loc[four, 'linear']:.2f}",
                        sweep_ridge_d=f"{residual_curve.loc[d, 'ridge']:.2f}",
                        sweep_l_ortho_half=f"{residual_curve.loc[half, 'l-ortho']:.2f}",
                        sweep_l_ortho_d=f"{residual_curve.loc[d, 'l-ortho']:.2f}",
                        sweep_norm_peak=f"{curves.loc[('linear', peak), 'weight_norm']:,.0f}",
                        sweep_norm_hidden=f"{hidden_norm:.1f}").items():
    glue(name, value, display=False)

records += [dict(method="anchor_sweep", transform=row.transform, n_anchors=row.n_anchors, seed=row.seed,
                 metric=metric, value=getattr(row, column))
            for row in sweep.itertuples() for metric, column in (("heldout_residual", "residual"),
                                                                 ("weight_norm", "weight_norm"))]
results.save_records(records, profile=profile, run=run_name, experiment="method_example",
                     parameters=dict(n_points=n_points, n_anchors=n_anchors, seed=seed, angle=angle, stretch=stretch,
                                     shift=shift, noise=noise, scaling=scaling, affine_steps=affine_steps,
                                     sweep_dims=sweep_dims, sweep_signal=sweep_signal, sweep_decay=sweep_decay,
                                     sweep_seeds=sweep_seeds))
residual_curve.loc[[quarter, half, d, peak, 2 * d, four]].style.format("{:.2f}")

# %% tags=["hide-input"]
ticks = [d * 2 ** k for k in range(-3, 4)]
top = 2.0  # the linear peak runs off the left panel; its height is annotated
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
colors = plots.TRANSFORM_COLORS  # the transforms' colours of every figure in the book
for kind in SWEEP_KINDS:
    left.plot(residual_curve.index, residual_curve[kind].clip(upper=top), marker=".", color=colors[kind], label=kind)
left.annotate(f"linear: {residual_curve.loc[peak, 'linear']:.1f} at $n$ = {peak}", xy=(peak, top),
              xytext=(1.3 * peak, 0.93 * top), fontsize=8, arrowprops=dict(arrowstyle="->", lw=0.6))
left.axhline(1, color="0.6", lw=0.8, ls=":")
left.set(xscale="log", ylim=(None, top), xlabel="anchors $n$", ylabel="held-out relative residual")
for kind in ("linear", "ridge"):
    right.plot(counts, curves.loc[kind, "weight_norm"], marker=".", color=colors[kind], label=rf"$\|W\|_F$, {kind}")
right.axhline(hidden_norm, color="0.5", lw=1, ls=":", label=r"$\|W\|_F$, hidden map")
right.plot(counts, curves.loc["linear", "smallest_singular"], color="black", ls="--",
           label="smallest singular value\nof the scaled anchors")
right.set(xscale="log", yscale="log", xlabel="anchors $n$")
for ax in (left, right):
    ax.axvline(d, color="0.3", lw=0.8)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.text(d, ax.get_ylim()[0], " $n = d$", va="bottom", fontsize=8)
left.legend(fontsize=8, loc="lower left")
right.legend(fontsize=8, loc="upper left")
sns.despine(fig)
fig.tight_layout()
glue("threshold_fig", fig, display=False)
plt.close(fig)

# %% [markdown]
# ```{glue:figure} threshold_fig
# :name: fig-interpolation-threshold
#
# Synthetic spaces of width $d$ (vertical line) related by a hidden linear map
# plus noise. Left: relative residual of each transform on held-out points
# against the number of anchors $n$ (1, dotted, is no better than predicting the
# mean; the `linear` curve is cut at the top of the panel and its peak
# annotated). Right, on a log scale: the Frobenius norm of the fitted $W$ in
# scaled space for `linear` and `ridge`, that of the hidden map, and the
# smallest non-zero singular value of the scaled anchor matrix. Means over
# anchor draws.
# ```
#
# Write the scaled anchors as $\tilde X_a = U S V^\top$ (singular values
# $s_i$, directions $v_i$). The minimum-norm least-squares map of `linear` is
# $W = V S^{-1} U^\top \tilde Y_a$: along the anchors' direction $v_i$ it
# multiplies what the anchors' targets say there, noise included, by $1/s_i$.
#
# - Well below $d$ the anchors span only $n - 1$ directions (centring costs
#   one), none of them weakly, and $W$ is zero on the others: the map says
#   nothing there, but it amplifies little.
# - Above $d$ every direction is over-determined and the noise averages out;
#   $s_i$ grows with $n$.
# - In between, at $n - 1 = d$, $W$ must fit $d$ noisy equations in $d$
#   unknowns exactly. The smallest singular value of the anchors approaches 0
#   (right panel; for isotropic Gaussian anchors it is near
#   $|\sqrt{n} - \sqrt{d}|$), the noise along its direction is multiplied by its inverse,
#   and $\lVert W \rVert_F$ reaches {glue:text}`sweep_norm_peak`, against
#   {glue:text}`sweep_norm_hidden` for the hidden map. Test points have a
#   component along that direction, so the held-out residual of `linear` peaks
#   at $n =$ {glue:text}`sweep_peak`, where the centred anchors first reach
#   rank $d$: it is {glue:text}`sweep_linear_d` at
#   $n = d$, against {glue:text}`sweep_linear_quarter` at $d/4$ and
#   {glue:text}`sweep_linear_four` at $4d$.
#
# `l-ortho` keeps the singular vectors of that $W$ and drops its singular
# values, so it does not blow up; but when many directions of the anchors are
# weak, as in these anisotropic spaces, the amplified noise also turns those
# vectors, and it too gets worse towards the threshold: from
# {glue:text}`sweep_l_ortho_half` at $n = d/2$ to {glue:text}`sweep_l_ortho_d`
# at $n = d$. `ortho` needs only $\tilde X_a^\top \tilde Y_a$ and inverts
# nothing. The paper's `affine` takes a fixed budget of small Adam steps from a
# small random start and stops before it reaches the least-squares solution, an
# implicit regularisation much like a penalty on $W$.
#
# `ridge` minimises $\lVert \tilde X_a W - \tilde Y_a \rVert_F^2 + \alpha
# \lVert W \rVert_F^2$, which gives $W = V \operatorname{diag}(s_i / (s_i^2 +
# \alpha)) U^\top \tilde Y_a$. Each direction is multiplied by $s_i / (s_i^2 +
# \alpha) \le 1 / (2\sqrt{\alpha})$ instead of $1/s_i$: weakly spanned
# directions are shrunk instead of amplified, and as $n$ grows $s_i^2$ outgrows
# $\alpha$ and ridge approaches least squares. With its default $\alpha = d_x$
# ({py:func}`~semalign.method.align.default_ridge_alpha` explains the choice), here
# {glue:text}`sweep_alpha`, its held-out residual at $n = d$ is
# {glue:text}`sweep_ridge_d`.
#
# The study keeps the paper's minimum-norm least squares and runs only the four
# paper transforms; `ridge` is not in its grid. To try it on a stitching page,
# give a run that transform, e.g. `semalign run text_stitching -p transform=ridge`
# (or `vision_stitching`).
#
# ## Summary
#
# A transform can only be as good as the family it is drawn from: when the
# hidden relation between two spaces stretches some directions more than
# others, the orthogonal transforms cannot follow it however many anchors they
# get, while the (closed-form) linear map in scaled space can. Real encoders are
# not related by an exact affine map, which is why the experiments measure the
# effect on a downstream classifier instead of a residual. And more anchors are
# not always better for the least-squares transforms: near as many anchors as
# dimensions, the minimum-norm solution amplifies the anchors' noise, which a
# penalty on $W$ (`ridge`) or the paper's early-stopped gradient descent
# (`affine`) avoids.
