"""How similar two representation spaces are, measured on paired samples.

Every function takes rows paired across the two spaces (row i of ``x`` and row i
of ``y`` embed the same item); the spaces may have different dimensionality.
Inputs are array-likes (numpy, CPU tensors), outputs plain floats.
"""

from __future__ import annotations

import numpy as np

from semalign.method.align import AlignmentInputError, Aligner, as_matrix

# Rows of the n × n similarity matrix computed at once in mutual_knn: bounds memory
# to _KNN_BLOCK · n floats.
_KNN_BLOCK = 1024


def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_matrix(x, "x"), as_matrix(y, "y")
    if len(x) != len(y):
        raise AlignmentInputError(f"x has {len(x)} rows but y has {len(y)}; rows must be paired")
    if len(x) < 2:
        raise AlignmentInputError(f"need at least 2 paired rows; got {len(x)}")
    return x, y


def linear_cka(x, y) -> float:
    """Linear centred kernel alignment (Kornblith et al., 2019).

    With column-centred x and y,

        CKA = ‖yᵀx‖_F² / (‖xᵀx‖_F ‖yᵀy‖_F),

    i.e. HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for the linear kernels K = x xᵀ,
    L = y yᵀ. It lies in [0, 1], is invariant to orthogonal maps and isotropic
    scaling of either side, and needs no d_x = d_y.
    """
    x, y = _paired(x, y)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    self_x, self_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    if self_x == 0 or self_y == 0:
        raise AlignmentInputError("linear CKA is undefined when x or y has zero variance")
    return float(np.linalg.norm(y.T @ x) ** 2 / (self_x * self_y))


def _unit_rows(a: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms == 0).any():
        raise AlignmentInputError(f"{name} has {int((norms == 0).sum())} all-zero rows; cosine is undefined")
    return a / norms


def _cosine_knn(unit: np.ndarray, rows: slice, k: int) -> np.ndarray:
    """Indices of the k most cosine-similar rows of ``unit`` to each row in ``rows``, self excluded."""
    similarity = unit[rows] @ unit.T
    block = np.arange(rows.start, rows.stop)
    similarity[block - rows.start, block] = -np.inf
    return np.argpartition(-similarity, k - 1, axis=1)[:, :k]


def mutual_knn(x, y, k: int = 10) -> float:
    """Mean fraction of shared k nearest neighbours (cosine, self excluded) across the two spaces.

        mkNN = (1/n) Σ_i |N_k^x(i) ∩ N_k^y(i)| / k

    1 when both spaces rank every sample's neighbours alike; about k / (n − 1)
    for unrelated spaces. Ties in similarity are broken arbitrarily.
    """
    x, y = _paired(x, y)
    n = len(x)
    if not 1 <= k <= n - 1:
        raise AlignmentInputError(f"k must be between 1 and n - 1 = {n - 1}; got {k}")
    unit_x, unit_y = _unit_rows(x, "x"), _unit_rows(y, "y")
    shared = 0
    for start in range(0, n, _KNN_BLOCK):
        rows = slice(start, min(start + _KNN_BLOCK, n))
        near_x, near_y = _cosine_knn(unit_x, rows, k), _cosine_knn(unit_y, rows, k)
        shared += (near_x[:, :, None] == near_y[:, None, :]).sum()
    return float(shared / (n * k))


def anchor_residual(aligner: Aligner, x_anchor, y_anchor) -> float:
    """Relative residual of a fitted aligner on its anchors (or any paired set):

        r = ‖T(X_a) − Y_a‖_F / ‖Y_a − 1 μ_Yᵀ‖_F,   μ_Y the column mean of Y_a.

    0 is a perfect fit; 1 is no better than predicting every row as the mean of
    Y_a; above 1 is worse than that (e.g. naive stitching of unrelated spaces).
    """
    x, y = _paired(x_anchor, y_anchor)
    spread = np.linalg.norm(y - y.mean(axis=0))
    if spread == 0:
        raise AlignmentInputError("y_anchor has zero variance; the relative residual is undefined")
    return float(np.linalg.norm(aligner.transform(x) - y) / spread)
