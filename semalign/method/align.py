"""Latent space translation between two encoders by semantic alignment.

The method of Maiorca et al., "Latent Space Translation via Semantic Alignment"
(NeurIPS 2023), as used by Di Folco et al. (2025) for unimodal medical text and
vision encoders. Two encoders X and Y embed the same n *anchor* items, giving
paired rows ``x_anchor`` (n × d_x) and ``y_anchor`` (n × d_y). An at most affine
map is estimated in scaled space and applied to new points of X:

    T(x) = (((x − μ_x) / σ_x) W + b) ⊙ σ_y + μ_y

where μ, σ are the anchors' own per-dimension statistics (``scaling``) and
(W, b) comes from one of ``KINDS``:

* ``affine``  – x W + b by full-batch Adam on the MSE, as Maiorca et al.
  (:func:`fit_affine_gd`), or in closed form with ``affine_fit="lstsq"``
  (:func:`fit_affine_lstsq`). Under standard scaling both anchor sets have zero
  mean, so the closed form has b = 0 and equals ``linear`` (minimum-norm when
  n < d); the gradient-descent fit differs mainly by the implicit
  regularisation of 300 small steps from a random start when anchors are few.
* ``linear``  – x W with W = lstsq(X_a, Y_a), minimum-norm when n < d_x.
* ``l-ortho`` – the linear W replaced by its nearest (semi-)orthogonal matrix.
* ``ortho``   – orthogonal Procrustes on both sides zero-padded to max(d_x, d_y).
* ``ridge``   – x W with W = argmin ‖X_a W − Y_a‖² + α‖W‖² (:func:`fit_ridge`). Not
  one of the paper's four and not run by the study: an option for readers. The
  minimum-norm least-squares W of ``linear`` and ``l-ortho`` has a norm that
  blows up as n approaches d_x (the interpolation threshold), where the anchor
  matrix's smallest singular values approach 0; the penalty caps that.
* ``naive``   – no transform at all: X's raw embeddings are fed to Y's side
  unchanged, zero-padded or truncated to d_y. ``scaling`` is ignored, because
  naive stitching means using X's embeddings where Y's are expected.

For ``ortho`` and ``l-ortho`` with n < max(d_x, d_y) the orthogonal solution is
not unique in general; the one returned is whichever LAPACK's SVD picks.
Precisely: ``l-ortho`` starts from the minimum-norm W, one of many least-squares
solutions once n ≤ d_x, and W's polar factor is itself not unique when W has
rank below min(d_x, d_y). For ``ortho`` the padded d × d rotation is never
unique when d_x ≠ d_y, and the block of it that is applied is unique only if
X_aᵀY_a has rank min(d_x, d_y), which needs n > min(d_x, d_y) after centring.

Fitting runs on the CPU in float64 (the gradient-descent fit in float32 by
default, like ``nn.Linear``) with numpy, SciPy and torch; ``Aligner(device="cuda")``
runs the same arithmetic with torch on that device instead (a sweep whose
notebook runs on a GPU: the affine fit's Adam steps and the SVDs at thousands of
anchors are its costly part). The two agree up to float rounding, and to where
the best map is not unique (see above). :meth:`Aligner.transform` runs on the
input's device and returns the input's array type and floating dtype.
"""

from __future__ import annotations

import contextlib
import json
import math
import os

import numpy as np
import scipy.linalg
import torch
from torch import nn

from semalign.core.cache import atomic_path
from semalign.core.errors import SemalignError

KINDS = ("affine", "linear", "l-ortho", "ortho", "ridge", "naive")
SCALINGS = ("standard", "center", "none")
AFFINE_FITS = ("gd", "lstsq")
ANCHOR_STRATEGIES = ("random", "stratified", "diverse")

# Below this a dimension's anchor std counts as zero; it is then left unscaled
# rather than blown up by division.
MIN_STD = 1e-8
_STATE_KEYS = ("x_mean", "x_scale", "weight", "bias", "y_mean", "y_scale")
_FILE_FORMAT = 1


class AlignmentInputError(SemalignError, ValueError):
    """Bad input to the aligner: a ``ValueError`` the command line also reports cleanly."""


# --------------------------------------------------------------------------- checks


def _check_choice(value: str, valid: tuple[str, ...], what: str) -> None:
    if value not in valid:
        raise AlignmentInputError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def _check_matrix(a: np.ndarray | torch.Tensor, name: str) -> None:
    """Raise unless ``a`` is a 2-D array of finite numbers (numpy or torch)."""
    if a.ndim != 2:
        raise AlignmentInputError(f"{name} must be a 2-D array (rows × dims); got shape {tuple(a.shape)}")
    finite = torch.isfinite(a).all() if isinstance(a, torch.Tensor) else np.isfinite(a).all()
    if not finite:
        raise AlignmentInputError(f"{name} contains NaN or inf")


def as_matrix(a, name: str) -> np.ndarray:
    """``a`` (numpy, torch or nested lists) as a checked float64 numpy matrix."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    matrix = np.asarray(a, dtype=np.float64)
    _check_matrix(matrix, name)
    return matrix


def _anchor_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 anchors: 2-D, finite, paired rows, at least two of them."""
    x, y = as_matrix(x, "x_anchor"), as_matrix(y, "y_anchor")
    if len(x) != len(y):
        raise AlignmentInputError(
            f"x_anchor has {len(x)} rows but y_anchor has {len(y)}; anchor rows must be paired"
        )
    if len(x) < 2:
        raise AlignmentInputError(f"need at least 2 anchors to fit an alignment; got {len(x)}")
    return x, y


# --------------------------------------------------------------------------- scaling


def standard_stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean μ and population std σ (ddof=0) of the rows of ``a``.

    A dimension with σ < ``MIN_STD`` (constant over the anchors) gets σ = 1, so
    standardising, (a − μ) / σ, maps it to zero instead of dividing by zero.
    """
    a = as_matrix(a, "a")
    std = a.std(axis=0)
    return a.mean(axis=0), np.where(std < MIN_STD, 1.0, std)


def scaling_stats(a: np.ndarray, scaling: str) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) for ``scaling``: standard (μ, σ), center (μ, 1) or none (0, 1)."""
    _check_choice(scaling, SCALINGS, "scaling")
    a = as_matrix(a, "a")
    if scaling == "standard":
        return standard_stats(a)
    ones = np.ones(a.shape[1])
    return (a.mean(axis=0) if scaling == "center" else np.zeros(a.shape[1])), ones


# --------------------------------------------------------------------------- estimators


def _on(device: str, a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


def _lstsq(a: np.ndarray, b: np.ndarray, device: str | None = None) -> np.ndarray:
    """Minimum-norm argmin ‖a w − b‖_F, as ``np.linalg.lstsq(a, b, rcond=None)``.

    LAPACK's gelsy (complete orthogonal factorisation) gives the same solution
    more cheaply than numpy's SVD-based gelsd; numpy's rank cutoff is kept so
    that directions lost to centring count as rank-deficient. On a ``device``:
    the pseudo-inverse from torch's SVD with the same cutoff (torch's own lstsq
    has no minimum-norm driver on CUDA).
    """
    cutoff = np.finfo(np.float64).eps * max(a.shape)
    if device is None:
        return scipy.linalg.lstsq(a, b, cond=cutoff, lapack_driver="gelsy", check_finite=False)[0]
    u, s, vt = _thin_svd(a, device)
    keep = s > cutoff * s[0]
    return (vt[keep].T / s[keep]) @ (u[:, keep].T @ b)


def fit_linear(x, y, device: str | None = None) -> np.ndarray:
    """W = argmin ‖x W − y‖_F, the minimum-norm solution when x is rank-deficient (n < d_x)."""
    x, y = _anchor_pair(x, y)
    return _lstsq(x, y, device)


def fit_affine_lstsq(x, y, device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form affine map: [W; bᵀ] = argmin ‖[x 1] [W; bᵀ] − y‖_F (minimum-norm).

    When x and y have zero column means (standard or center scaling) the ones
    column is orthogonal to x, so b = mean(y) = 0 and W equals :func:`fit_linear`.
    """
    x, y = _anchor_pair(x, y)
    with_ones = np.hstack([x, np.ones((len(x), 1))])
    solution = _lstsq(with_ones, y, device)
    return solution[:-1], solution[-1]


def _thin_svd(a: np.ndarray, device: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thin SVD U, S, Vᵀ of ``a`` (with torch on ``device`` when one is given).

    LAPACK's fast divide-and-conquer driver, falling back to the slower but more
    robust QR-iteration driver when it does not converge (ill-conditioned
    cross-covariances of real embeddings can make it fail).
    """
    if device is not None:
        try:
            return tuple(m.cpu().numpy() for m in torch.linalg.svd(_on(device, a), full_matrices=False))
        except torch.linalg.LinAlgError:  # the device's solver did not converge: the host's, with its fallback
            pass
    try:
        return np.linalg.svd(a, full_matrices=False)
    except np.linalg.LinAlgError:
        return scipy.linalg.svd(a, full_matrices=False, lapack_driver="gesvd")


def _polar(a: np.ndarray, device: str | None = None) -> np.ndarray:
    """U Vᵀ from the thin SVD U S Vᵀ of ``a``: its (semi-)orthogonal polar factor."""
    u, _, vt = _thin_svd(a, device)
    return u @ vt


def fit_l_ortho(x, y, device: str | None = None) -> np.ndarray:
    """Nearest (semi-)orthogonal matrix to the least-squares map: W = U Vᵀ where U S Vᵀ = fit_linear(x, y).

    U Vᵀ is the orthogonal polar factor, argmin over Q with orthonormal rows or
    columns of ‖Q − W‖_F. Not unique when W has rank below min(d_x, d_y).
    """
    return _polar(fit_linear(x, y, device), device)


def fit_procrustes(x, y, device: str | None = None) -> np.ndarray:
    """Orthogonal Procrustes on zero-padded anchors, returned as the block that acts on x.

    With both sides zero-padded to d = max(d_x, d_y) columns,
    R = argmin over orthogonal d × d R of ‖x_pad R − y_pad‖_F = U Vᵀ, where
    U S Vᵀ = x_padᵀ y_pad. Since x_pad R keeps its first d_y columns, the map is
    x ↦ x R[:d_x, :d_y]. Not unique when x_padᵀ y_pad has rank below min(d_x, d_y).

    That block is computed as the polar factor of the d_x × d_y block xᵀy alone:
    when the answer is unique the two are equal (x_padᵀ y_pad's singular vectors
    of non-zero singular values are those of xᵀy, padded with zeros), and the
    SVD is of a d_x × d_y matrix instead of a max(d_x, d_y)² one.
    """
    x, y = _anchor_pair(x, y)
    return _polar(x.T @ y, device)


def default_ridge_alpha(d_x: int) -> float:
    """The ridge penalty ``Aligner(kind="ridge")`` uses unless given one: α = d_x.

    Ridge's W is the posterior mean of W under independent Gaussian priors
    N(0, τ²) on its entries and Gaussian noise of variance σ² on each target
    column, with α = σ² / τ², whatever n is (so a penalty growing with n, such
    as α ∝ n, would keep a bias that more anchors never remove). In standard-
    scaled space each target column has unit variance; with roughly isotropic
    scaled inputs, a column whose variance is half explained linearly has
    σ² = 1/2 and d_x τ² = 1/2, hence α = d_x. (Dobriban & Wager, Ann. Statist.
    2018, find the same optimum of the asymptotic prediction risk,
    d_x σ² / ‖w‖², for isotropic inputs.) A target that the source explains
    better wants less: α = d_x (1 − R²) / R².
    """
    return float(d_x)


def fit_ridge(x, y, alpha: float, device: str | None = None) -> np.ndarray:
    """W = argmin ‖x W − y‖_F² + α ‖W‖_F² = (xᵀx + α I)⁻¹ xᵀy, for α > 0.

    Computed from the thin SVD x = U S Vᵀ as W = V diag(s / (s² + α)) Uᵀ y,
    which is equally sound for n < d_x and n > d_x and does not square x's
    condition number as solving with xᵀx + α I (or the dual x xᵀ + α I) would
    when α is small. As α → 0 it tends to the minimum-norm :func:`fit_linear`;
    each direction of x is amplified by at most s / (s² + α) ≤ 1 / (2√α), where
    least squares amplifies it by 1 / s.
    """
    x, y = _anchor_pair(x, y)
    alpha = _check_alpha(alpha)
    u, s, vt = _thin_svd(x, device)
    return vt.T @ ((s / (s * s + alpha))[:, None] * (u.T @ y))


def _check_alpha(alpha) -> float:
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise AlignmentInputError(f"the ridge penalty alpha must be a finite number > 0; got {alpha}")
    return alpha


def _linear_layer_init(d_in: int, d_out: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """``nn.Linear.reset_parameters`` drawn from ``generator``, as one (d_in + 1) × d_out
    tensor: weightᵀ stacked on the bias row."""
    weight = torch.empty(d_out, d_in, dtype=dtype)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
    bound = 1 / math.sqrt(d_in)
    bias = torch.empty(1, d_out, dtype=dtype)
    nn.init.uniform_(bias, -bound, bound, generator=generator)
    return torch.cat([weight.T, bias])


def _mse_gradient(x: np.ndarray, y: np.ndarray, dtype: torch.dtype, device: str | None = None):
    """∇L(θ) for L(θ) = mean((x₁ θ − y)²), x₁ = [x 1], θ = [W; bᵀ]: one matrix product per call.

    ∇L = c x₁ᵀ(x₁ θ − y) = c x₁ᵀx₁ θ − c x₁ᵀy with c = 2 / (n d_y). The right-hand
    form costs (d_x+1)² d_y per call and the left-hand one 2 n (d_x+1) d_y, so
    the statistics are precomputed (once, in float64) when 2n > d_x + 1.
    """
    n, d_y = y.shape
    scale = 2.0 / (n * d_y)
    with_ones = np.hstack([x, np.ones((n, 1))])
    statistics = 2 * n > with_ones.shape[1]
    if statistics:
        if device is None:
            products = (with_ones.T @ with_ones, with_ones.T @ y)
        else:
            inputs = _on(device, with_ones)
            products = (inputs.T @ inputs, inputs.T @ _on(device, y))
        gram, cross = ((scale * torch.as_tensor(m)).to(dtype) for m in products)
        return lambda theta: torch.addmm(cross, gram, theta, beta=-1)
    inputs, targets = (_on(device or "cpu", m).to(dtype) for m in (with_ones, y))
    return lambda theta: (inputs.T @ (inputs @ theta - targets)).mul_(scale)


def _step_flops(n: int, d_x: int, d_y: int) -> float:
    """Floating-point operations of one gradient step (see :func:`_mse_gradient`)."""
    d = d_x + 1
    return 2.0 * d * d * d_y if 2 * n > d else 4.0 * n * d * d_y


@contextlib.contextmanager
def threads_for(flops: float):
    """One torch thread for steps under a GFLOP, restored after.

    Each step is a short burst of small kernels: a second thread buys nothing
    for them and, on a machine shared with other processes, makes them much
    slower while each kernel waits for the descheduled thread. Large steps keep
    the caller's threads.
    """
    before = torch.get_num_threads()
    if flops < 1e9 and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_affine_gd(x, y, steps: int = 300, lr: float = 1e-3, seed: int = 0,
                  dtype: torch.dtype = torch.float32, device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Affine map x W + b fitted by full-batch Adam on the MSE, as Maiorca et al. (2023).

    Minimises L(W, b) = mean((x W + 1 bᵀ − y)²) over all n·d_y entries (like
    ``nn.MSELoss``) with Adam (lr, betas (0.9, 0.999), eps 1e-8) for ``steps``
    full-batch steps, from ``nn.Linear``'s default initialisation drawn from
    ``torch.Generator().manual_seed(seed)`` (the global RNG is not touched), in
    ``dtype``. The trajectory equals the autograd loop nn.Linear + nn.MSELoss +
    torch.optim.Adam up to float rounding; only the gradient is computed
    differently: with θ = [W; bᵀ] and x₁ = [x 1],

        ∂L/∂θ = c (x₁ᵀx₁ θ − x₁ᵀy),   c = 2 / (n d_y),

    from statistics precomputed once when n is large, so that a step costs
    d_x² d_y instead of n d_x d_y. Returns W (d_x × d_y) and b (d_y,) as float64.
    """
    x, y = _anchor_pair(x, y)
    if steps < 0 or lr <= 0:
        raise AlignmentInputError(f"need steps >= 0 and lr > 0; got steps={steps}, lr={lr}")
    theta = _linear_layer_init(x.shape[1], y.shape[1], torch.Generator().manual_seed(seed), dtype).to(device or "cpu")
    gradient = _mse_gradient(x, y, dtype, device)
    # Adam acts elementwise, so one tensor for W and b is the same as two. The fused
    # kernel makes one pass over the parameters per step instead of about ten.
    optimizer = torch.optim.Adam([theta], lr=lr, fused=True)
    with threads_for(_step_flops(*x.shape, y.shape[1])):
        for _ in range(steps):
            theta.grad = gradient(theta)
            optimizer.step()
    theta = theta.double().cpu().numpy()
    return theta[:-1], theta[-1]


# --------------------------------------------------------------------------- aligner


class Aligner:
    """Estimate T with T(x_anchor) ≈ y_anchor, then translate new points of X into Y's space.

    ``Aligner(kind, scaling, seed).fit(x_anchor, y_anchor).transform(x)``; see the
    module docstring for the kinds. ``seed``, ``affine_fit``, ``steps`` and ``lr``
    (see :func:`fit_affine_gd`) only matter for ``kind="affine"``; ``alpha``, the penalty in scaled space, only for
    ``kind="ridge"`` (None: :func:`default_ridge_alpha`, α = d_x). The fitted
    state is six float64 arrays (``x_mean``, ``x_scale``, ``weight``, ``bias``,
    ``y_mean``, ``y_scale``). ``device`` (``"cpu"`` or a torch device such as
    ``"cuda"``) is where the fit computes; it is not part of the saved config.
    """

    def __init__(self, kind: str = "ortho", scaling: str = "standard", seed: int = 0,
                 affine_fit: str = "gd", steps: int = 300, lr: float = 1e-3, alpha: float | None = None,
                 device: str = "cpu"):
        _check_choice(kind, KINDS, "kind")
        _check_choice(scaling, SCALINGS, "scaling")
        _check_choice(affine_fit, AFFINE_FITS, "affine_fit")
        self.device = None if str(device) == "cpu" else str(device)
        self.kind, self.scaling, self.seed = kind, scaling, int(seed)
        self.affine_fit, self.steps, self.lr = affine_fit, int(steps), float(lr)
        self.alpha = None if alpha is None else _check_alpha(alpha)
        self.state: dict[str, np.ndarray] | None = None

    def config(self) -> dict:
        return {"kind": self.kind, "scaling": self.scaling, "seed": self.seed,
                "affine_fit": self.affine_fit, "steps": self.steps, "lr": self.lr, "alpha": self.alpha}

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.config().items())
        return f"Aligner({arguments})"

    @property
    def dims(self) -> tuple[int, int]:
        """(d_x, d_y) of the fitted map."""
        self._require_fitted()
        return self.state["weight"].shape

    def fit(self, x_anchor, y_anchor) -> Aligner:
        """Estimate the map from paired anchor rows; returns ``self``."""
        x, y = _anchor_pair(x_anchor, y_anchor)
        d_x, d_y = x.shape[1], y.shape[1]
        if self.kind == "naive":
            self.state = {"x_mean": np.zeros(d_x), "x_scale": np.ones(d_x), "weight": np.eye(d_x, d_y),
                          "bias": np.zeros(d_y), "y_mean": np.zeros(d_y), "y_scale": np.ones(d_y)}
            return self
        x_mean, x_scale = scaling_stats(x, self.scaling)
        y_mean, y_scale = scaling_stats(y, self.scaling)
        weight, bias = self._fit_scaled((x - x_mean) / x_scale, (y - y_mean) / y_scale)
        self.state = {"x_mean": x_mean, "x_scale": x_scale, "weight": weight,
                      "bias": bias, "y_mean": y_mean, "y_scale": y_scale}
        return self

    def _fit_scaled(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        device = self.device
        if self.kind == "affine" and self.affine_fit == "gd":
            return fit_affine_gd(x, y, steps=self.steps, lr=self.lr, seed=self.seed, device=device)
        if self.kind == "affine":
            return fit_affine_lstsq(x, y, device)
        if self.kind == "ridge":
            alpha = default_ridge_alpha(x.shape[1]) if self.alpha is None else self.alpha
            return fit_ridge(x, y, alpha, device), np.zeros(y.shape[1])
        fit = {"linear": fit_linear, "l-ortho": fit_l_ortho, "ortho": fit_procrustes}[self.kind]
        return fit(x, y, device), np.zeros(y.shape[1])

    def transform(self, x):
        """T(x) for the rows of ``x``: numpy in, numpy out; torch in, torch out on the same device.

        Computed in float64; the result has the input's floating dtype (float64
        for integer input).
        """
        self._require_fitted()
        if isinstance(x, torch.Tensor):
            self._check_input(x)
            params = {key: torch.from_numpy(value).to(x.device) for key, value in self.state.items()}
            out_dtype = x.dtype if x.is_floating_point() else torch.float64
            return self._apply(x.to(torch.float64), params).to(out_dtype)
        x = np.asarray(x)
        out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        x = x.astype(np.float64, copy=False)
        self._check_input(x)
        return self._apply(x, self.state).astype(out_dtype, copy=False)

    @staticmethod
    def _apply(x, p):
        # Operators only, so the same line serves numpy arrays and torch tensors.
        return (((x - p["x_mean"]) / p["x_scale"]) @ p["weight"] + p["bias"]) * p["y_scale"] + p["y_mean"]

    def _check_input(self, x) -> None:
        _check_matrix(x, "x")
        expected = self.dims[0]
        if x.shape[1] != expected:
            raise AlignmentInputError(
                f"x has the wrong dimensionality: expected {expected} columns (as x_anchor at fit), "
                f"got {x.shape[1]}"
            )

    def _require_fitted(self) -> None:
        if self.state is None:
            raise AlignmentInputError("Aligner is not fitted; call fit(x_anchor, y_anchor) first")

    def save(self, path: str | os.PathLike) -> None:
        """Write the config and fitted arrays to an ``.npz`` readable with ``allow_pickle=False``."""
        self._require_fitted()
        config = json.dumps({"format": _FILE_FORMAT, **self.config()})
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, config=np.array(config), **self.state)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Aligner:
        """An Aligner as written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("config", *_STATE_KEYS) if key not in data.files]
            if missing:
                raise AlignmentInputError(f"{path} is not a saved Aligner: missing {', '.join(missing)}")
            config = json.loads(str(data["config"]))
            state = {key: data[key].astype(np.float64) for key in _STATE_KEYS}
        if config.pop("format", None) != _FILE_FORMAT:
            raise AlignmentInputError(f"{path}: unsupported Aligner file format (expected {_FILE_FORMAT})")
        config.pop("precision", None)  # older files: the affine fit's former precision option
        aligner = cls(**config)
        aligner.state = state
        return aligner


# --------------------------------------------------------------------------- anchor choice


def _pool_size(labels, features, pool_size) -> int:
    sizes = {"pool_size": pool_size, "labels": None if labels is None else len(labels),
             "features": None if features is None else len(features)}
    sizes = {name: size for name, size in sizes.items() if size is not None}
    if not sizes:
        raise AlignmentInputError("give pool_size, labels or features to define the pool of candidates")
    if len(set(sizes.values())) > 1:
        raise AlignmentInputError(f"inconsistent pool sizes: {sizes}")
    return int(next(iter(sizes.values())))


def _stratified(n: int, labels, rng: np.random.Generator) -> np.ndarray:
    """Proportional allocation by class (largest remainder), random within each class."""
    _, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    quota, remainder = np.divmod(n * counts, counts.sum())  # integers: no rounding surprises
    # The anchors floor() left over go to the largest remainders; ties to the earlier class.
    quota[np.argsort(-remainder, kind="stable")[: n - quota.sum()]] += 1
    return np.concatenate([rng.choice(np.flatnonzero(inverse == label), size=take, replace=False)
                           for label, take in enumerate(quota)])


def _farthest_points(n: int, features, rng: np.random.Generator) -> np.ndarray:
    """Farthest-point sampling (Euclidean) from a seeded random start: n · pool · d work."""
    points = as_matrix(features, "features")
    chosen = [int(rng.integers(len(points)))]
    nearest = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    for _ in range(n - 1):
        nearest[chosen[-1]] = -np.inf  # never pick a point twice, even among duplicates
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, ((points - points[chosen[-1]]) ** 2).sum(axis=1))
    return np.array(chosen)


def select_anchors(n: int, strategy: str = "random", seed: int = 0, labels=None, features=None,
                   pool_size: int | None = None) -> np.ndarray:
    """Sorted indices of ``n`` anchors drawn from a pool; deterministic for a given seed.

    The pool is ``range(pool_size)``, or the rows of ``labels`` / ``features``.

    * ``random``: uniform without replacement — the method's setting, in which
      anchors are unlabelled.
    * ``stratified``: class proportions of ``labels`` kept (largest remainder),
      random within a class. Uses labels, so it is an option for analysis only.
    * ``diverse``: farthest-point sampling on ``features`` (Euclidean; normalise
      rows first for cosine geometry) from a seeded random first point. It
      spreads anchors over all clusters but favours outliers.
    """
    _check_choice(strategy, ANCHOR_STRATEGIES, "strategy")
    pool = _pool_size(labels, features, pool_size)
    if not 1 <= n <= pool:
        raise AlignmentInputError(f"cannot select n={n} anchors from a pool of {pool}")
    rng = np.random.default_rng(seed)
    if strategy == "random":
        chosen = rng.choice(pool, size=n, replace=False)
    elif strategy == "stratified":
        if labels is None:
            raise AlignmentInputError("strategy 'stratified' needs labels")
        chosen = _stratified(n, labels, rng)
    else:
        if features is None:
            raise AlignmentInputError("strategy 'diverse' needs features")
        chosen = _farthest_points(n, features, rng)
    return np.sort(chosen)
