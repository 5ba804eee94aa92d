"""Tests for semalign.experiments.stats against scikit-learn and numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from semalign.experiments import stats
from semalign.core.errors import SemalignError


def tied_problem(n: int, prevalence: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Binary labels with both classes and scores on a coarse grid, so many scores tie."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < prevalence
    labels[:2] = [True, False]
    scores = rng.integers(0, 6, n) + 0.5 * labels
    return labels, np.round(scores / 2)


# Prevalence below and above 1/2 exercise both classes as the one cumulated; 70
# replicates take the row-wise cumulative sum, 5 the plain np.cumsum.
@pytest.mark.parametrize("prevalence", [0.2, 0.8])
@pytest.mark.parametrize("n_boot", [5, 70])
def test_weighted_auroc_equals_sklearn_on_repeated_items(prevalence, n_boot):
    labels, scores = tied_problem(60, prevalence, seed=1)
    assert len(np.unique(scores)) < 10
    weights = np.random.default_rng(2).integers(0, 4, size=(n_boot, 60))
    got = stats.weighted_auroc(labels, scores, weights)
    assert got.shape == (n_boot,)
    for row, value in zip(weights, got):
        repeated_labels, repeated_scores = np.repeat(labels, row), np.repeat(scores, row)
        assert value == pytest.approx(roc_auc_score(repeated_labels, repeated_scores), abs=1e-12)


def test_weighted_auroc_real_weights_equal_sklearn_sample_weight():
    labels, scores = tied_problem(40, 0.4, seed=3)
    weights = np.random.default_rng(4).random((3, 40))
    got = stats.weighted_auroc(labels.astype(int), scores, weights)
    expected = [roc_auc_score(labels, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_unit_weights_give_the_plain_auroc():
    rng = np.random.default_rng(5)
    labels = rng.random(200) < 0.3
    scores = rng.normal(size=200) + labels
    got = stats.weighted_auroc(labels, scores, np.ones(200, dtype=np.int32))
    assert got.shape == (1,)
    assert got[0] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_weighted_auroc_is_nan_where_a_replicate_has_no_positive():
    labels = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.2, 0.5, 0.1, 0.3])
    weights = np.array([[1, 1, 1, 1, 1], [0, 0, 2, 2, 1], [1, 0, 0, 0, 0]])
    got = stats.weighted_auroc(labels, scores, weights)
    assert got[0] == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(got[1]) and np.isnan(got[2])


def test_weighted_auroc_of_a_single_class_is_nan_and_bad_input_is_refused():
    assert np.isnan(stats.weighted_auroc(np.ones(4), np.arange(4.0), np.ones((2, 4)))).all()
    with pytest.raises(SemalignError, match="binary"):
        stats.weighted_auroc(np.array([0, 2, 1]), np.arange(3.0), np.ones(3))
    with pytest.raises(SemalignError, match="finite"):
        stats.weighted_auroc(np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3]), np.ones(3))
    with pytest.raises(SemalignError, match="shape"):
        stats.weighted_auroc(np.array([0, 1, 1]), np.arange(3.0), np.ones((2, 4)))
    with pytest.raises(SemalignError, match="non-negative"):
        stats.weighted_auroc(np.array([0, 1, 1]), np.arange(3.0), np.array([1, -1, 1]))


def test_bootstrap_weights_are_deterministic_resamples():
    weights = stats.bootstrap_weights(50, 200, seed=7)
    assert weights.shape == (200, 50) and weights.dtype == np.int32
    assert (weights.sum(axis=1) == 50).all() and (weights >= 0).all()
    np.testing.assert_array_equal(weights, stats.bootstrap_weights(50, 200, seed=7))
    assert not np.array_equal(weights, stats.bootstrap_weights(50, 200, seed=8))
    # Each item is drawn with probability 1/n per draw: mean count 1.
    assert weights.mean(axis=0) == pytest.approx(np.ones(50), abs=0.3)
    with pytest.raises(SemalignError, match="item"):
        stats.bootstrap_weights(0)


def test_macro_auroc_replicates_skip_single_class_columns():
    rng = np.random.default_rng(9)
    labels = np.stack([rng.random(80) < 0.3, rng.random(80) < 0.6, np.zeros(80, bool)], axis=1).astype(int)
    scores = rng.normal(size=(80, 3)) + labels
    plain = stats.macro_auroc_replicates(labels, scores, np.ones(80))
    expected = np.mean([roc_auc_score(labels[:, j], scores[:, j]) for j in (0, 1)])
    assert plain.shape == (1,) and plain[0] == pytest.approx(expected, abs=1e-12)

    weights = stats.bootstrap_weights(80, 30, seed=1)
    per_column = np.stack([stats.weighted_auroc(labels[:, j], scores[:, j], weights) for j in (0, 1)])
    np.testing.assert_allclose(stats.macro_auroc_replicates(labels, scores, weights), per_column.mean(axis=0))


def test_macro_auroc_replicates_ignore_nan_per_replicate():
    labels = np.array([[1, 1], [0, 1], [1, 0], [0, 0]])
    scores = np.array([[0.9, 0.8], [0.1, 0.3], [0.8, 0.2], [0.3, 0.4]])
    # all items: column 0 ranks perfectly (1.0), column 1 gets 3 of 4 pairs right (0.75);
    # items 0 and 1 only: column 1 has no negative, so column 0 alone counts;
    # item 3 only: neither column has a positive.
    weights = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 1]])
    got = stats.macro_auroc_replicates(labels, scores, weights)
    assert got[0] == pytest.approx(0.875)
    assert got[1] == pytest.approx(1.0)
    assert np.isnan(got[2])
    with pytest.raises(SemalignError, match="both classes"):
        stats.macro_auroc_replicates(np.ones((4, 2)), scores, weights)


def test_interval_is_nan_ignoring_percentile():
    replicates = np.concatenate([np.arange(1001.0), [np.nan] * 50])
    assert stats.interval(replicates) == pytest.approx((25.0, 975.0))
    assert stats.interval(replicates, level=0.5) == pytest.approx((250.0, 750.0))
    low, high = stats.interval(np.full(10, np.nan))
    assert np.isnan(low) and np.isnan(high)


@pytest.mark.parametrize(("low", "high", "holds_when", "expected"), [
    (0.12, 0.30, "above", "holds"),
    (0.01, 0.08, "above", "fails"),
    (0.05, 0.15, "above", "inconclusive"),
    (-0.01, 0.02, "below", "holds"),  # ci_high equal to the threshold still holds
    (0.03, 0.06, "below", "fails"),
    (0.00, 0.04, "below", "inconclusive"),
    (np.nan, np.nan, "above", "inconclusive"),
])
def test_verdict(low, high, holds_when, expected):
    threshold = 0.1 if holds_when == "above" else 0.02
    assert stats.verdict(low, high, threshold, holds_when) == expected


def test_verdict_refuses_an_unknown_direction():
    with pytest.raises(SemalignError, match="holds_when"):
        stats.verdict(0.0, 1.0, 0.5, "over")


def test_hierarchical_replicates_with_one_unit_are_the_item_replicates():
    per_unit = np.random.default_rng(0).normal(size=(1, 500))
    np.testing.assert_array_equal(stats.hierarchical_replicates(per_unit), per_unit[0])


def test_hierarchical_replicates_of_identical_units_keep_the_item_spread():
    item = np.random.default_rng(1).normal(0.8, 0.02, size=1000)
    got = stats.hierarchical_replicates(np.tile(item, (4, 1)), seed=3)
    np.testing.assert_allclose(got, item)
    assert stats.interval(got) == pytest.approx(stats.interval(item))


def interval_width(replicates: np.ndarray) -> float:
    low, high = stats.interval(replicates)
    return high - low


def test_hierarchical_replicates_widen_when_units_differ():
    rng = np.random.default_rng(2)
    item_noise = rng.normal(0, 0.01, size=(5, 1000))
    same = 0.8 + item_noise
    differing = np.array([0.70, 0.75, 0.80, 0.85, 0.90])[:, None] + item_noise
    pooled_same = stats.hierarchical_replicates(same, seed=4)
    pooled_differing = stats.hierarchical_replicates(differing, seed=4)
    assert interval_width(pooled_differing) > 5 * interval_width(pooled_same)
    assert np.mean(pooled_differing) == pytest.approx(0.8, abs=0.01)
    np.testing.assert_array_equal(pooled_differing, stats.hierarchical_replicates(differing, seed=4))


def test_hierarchical_replicates_ignore_nan_units():
    per_unit = np.array([[0.6, np.nan, np.nan], [0.8, 0.7, np.nan]])
    got = stats.hierarchical_replicates(per_unit, seed=0)
    assert min(abs(got[0] - v) for v in (0.6, 0.7, 0.8)) < 1e-12  # mean of two draws of 0.6 / 0.8
    assert np.isnan(got[1]) or got[1] == pytest.approx(0.7)  # NaN only if unit 1 was never drawn
    assert np.isnan(got[2])


def test_chance_corrected_ratio():
    assert stats.chance_corrected_ratio(0.8, 0.9) == pytest.approx(0.75)
    np.testing.assert_allclose(stats.chance_corrected_ratio(np.array([0.5, 0.7]), np.array([0.9, 0.9])), [0.0, 0.5])
    assert np.isnan(stats.chance_corrected_ratio(0.7, 0.5))
    assert stats.chance_corrected_ratio(0.2, 0.4, chance=0.0) == pytest.approx(0.5)
