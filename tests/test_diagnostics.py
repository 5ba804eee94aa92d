"""Tests for semalign.method.similarity against naive reference formulas."""

from __future__ import annotations

import numpy as np
import pytest

from semalign.method.align import Aligner
from semalign.method.similarity import anchor_residual, linear_cka, mutual_knn


def random_orthogonal(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def naive_hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """CKA written as in Kornblith et al. (2019): HSIC with centring matrix H on n × n kernels."""
    n = len(x)
    centring = np.eye(n) - np.ones((n, n)) / n

    def hsic(k, l):
        return np.trace(k @ centring @ l @ centring) / (n - 1) ** 2

    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def naive_mutual_knn(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Per-sample loops over fully sorted cosine similarities."""
    def neighbours(a, i):
        unit = a / np.linalg.norm(a, axis=1, keepdims=True)
        similarity = unit @ unit[i]
        order = [j for j in np.argsort(-similarity, kind="stable") if j != i]
        return set(order[:k])

    return float(np.mean([len(neighbours(x, i) & neighbours(y, i)) / k for i in range(len(x))]))


# --------------------------------------------------------------------------- linear CKA


@pytest.mark.parametrize("d_x, d_y", [(6, 9), (9, 6), (5, 5)])
def test_linear_cka_matches_the_hsic_formula(d_x, d_y):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((25, d_x)) + 3
    y = x @ rng.standard_normal((d_x, d_y)) + rng.standard_normal((25, d_y))
    assert linear_cka(x, y) == pytest.approx(naive_hsic_cka(x, y), rel=1e-10)
    assert 0.2 < linear_cka(x, y) < 1


def test_linear_cka_is_one_under_orthogonal_maps_scaling_and_shifts():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 8)) * rng.uniform(0.5, 3, 8)
    widened = x @ random_orthogonal(12, rng)[:8]  # isometric embedding into 12 dims
    assert linear_cka(x, 3.0 * x @ random_orthogonal(8, rng) + 7.0) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, widened) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_is_not_invariant_to_anisotropic_scaling():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 8))
    assert linear_cka(x, x * np.array([10.0, 1, 1, 1, 1, 1, 1, 0.1])) < 0.9


def test_linear_cka_of_independent_spaces_is_small():
    rng = np.random.default_rng(3)
    assert linear_cka(rng.standard_normal((2000, 10)), rng.standard_normal((2000, 10))) < 0.02


def test_linear_cka_is_symmetric():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 7))
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), rel=1e-12)


# --------------------------------------------------------------------------- mutual kNN


def test_mutual_knn_of_identical_spaces_is_one():
    x = np.random.default_rng(5).standard_normal((200, 16))
    assert mutual_knn(x, x, k=10) == 1.0


def test_mutual_knn_ignores_row_norms_and_rotations():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((100, 8))
    y = (x @ random_orthogonal(8, rng)) * rng.uniform(0.1, 10, (100, 1))
    assert mutual_knn(x, y, k=5) == pytest.approx(1.0, abs=0.01)


def test_mutual_knn_of_independent_spaces_is_near_chance():
    rng = np.random.default_rng(7)
    n, k = 400, 10
    score = mutual_knn(rng.standard_normal((n, 32)), rng.standard_normal((n, 32)), k=k)
    assert score == pytest.approx(k / (n - 1), abs=0.01)


@pytest.mark.parametrize("k", [1, 4, 29])
def test_mutual_knn_matches_a_naive_loop(k):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((30, 6))
    y = x[:, :4] + 0.5 * rng.standard_normal((30, 4))  # related but not identical neighbourhoods
    assert mutual_knn(x, y, k=k) == pytest.approx(naive_mutual_knn(x, y, k))


def test_mutual_knn_blocks_agree_with_one_block(monkeypatch):
    import semalign.method.similarity as diagnostics

    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((50, 5)), rng.standard_normal((50, 5))
    whole = mutual_knn(x, x + 0.3 * y, k=5)
    monkeypatch.setattr(diagnostics, "_KNN_BLOCK", 7)
    assert mutual_knn(x, x + 0.3 * y, k=5) == whole
    assert 0.1 < whole < 1


# --------------------------------------------------------------------------- anchor residual


def test_anchor_residual_is_zero_for_an_exact_affine_map():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((60, 6))
    y = x @ rng.standard_normal((6, 4)) + 5
    assert anchor_residual(Aligner("linear").fit(x, y), x, y) == pytest.approx(0, abs=1e-10)


def test_anchor_residual_matches_its_definition():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((40, 6))
    y = x @ rng.standard_normal((6, 4)) + rng.standard_normal((40, 4))
    aligner = Aligner("ortho").fit(x, y)
    expected = np.linalg.norm(aligner.transform(x) - y) / np.linalg.norm(y - y.mean(axis=0))
    assert anchor_residual(aligner, x, y) == pytest.approx(expected, rel=1e-12)
    assert 0 < expected < 1


def test_anchor_residual_of_naive_stitching_unrelated_spaces_exceeds_one():
    rng = np.random.default_rng(12)
    x, y = rng.standard_normal((100, 5)), rng.standard_normal((100, 5))
    assert anchor_residual(Aligner("naive").fit(x, y), x, y) > 1


# --------------------------------------------------------------------------- bad input


X, Y = np.random.default_rng(13).standard_normal((2, 10, 3))


@pytest.mark.parametrize("call, match", [
    (lambda: linear_cka(X, Y[:9]), r"x has 10 rows but y has 9"),
    (lambda: linear_cka(X[0], Y), r"x must be a 2-D array"),
    (lambda: linear_cka(X, np.where(Y > 1, np.nan, Y)), r"y contains NaN or inf"),
    (lambda: linear_cka(np.ones((10, 3)), Y), r"zero variance"),
    (lambda: mutual_knn(X, Y, k=10), r"k must be between 1 and n - 1 = 9; got 10"),
    (lambda: mutual_knn(X, Y, k=0), r"k must be between 1"),
    (lambda: mutual_knn(np.vstack([X[:9], np.zeros((1, 3))]), Y, k=3), r"x has 1 all-zero rows"),
    (lambda: anchor_residual(Aligner("linear").fit(X, Y), X, np.ones((10, 3))), r"zero variance"),
    (lambda: anchor_residual(Aligner("linear").fit(X, Y), X[:, :2], Y), r"expected 3 columns.*got 2"),
])
def test_bad_input_raises_value_error_naming_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()
