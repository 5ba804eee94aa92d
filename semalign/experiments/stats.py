"""Bootstrap intervals and verdicts for the study's claims.

Every claim (STUDY.md §1) gets a verdict from a 95% bootstrap interval "over
test items, and over seeds and pairs where they vary". The interval comes from
a two-level bootstrap:

1. **Items.** :func:`bootstrap_weights` draws B resamples of the n test items
   as a (B, n) matrix of counts: row b says how often each item occurs in
   resample b. The counts depend only on (n, B, seed), so every method scored
   on the same test items sees the same resamples, and the replicates of two
   methods can be subtracted or divided replicate by replicate (a paired
   bootstrap: the noise shared by both methods cancels). A statistic is then
   evaluated under each row of weights, for AUROC by :func:`weighted_auroc` and
   :func:`macro_auroc_replicates`, without materialising the resampled data.
2. **Units.** A claim that averages over U units (encoder pairs × seeds) has,
   for each unit, B item-bootstrap replicates: an array (U, B).
   :func:`hierarchical_replicates` resamples the units with replacement
   independently in every replicate b and averages the drawn units' b-th
   replicates. Item noise and unit-to-unit variation then both widen the
   interval: a claim that holds for one pair or seed but not the others does
   not get a narrow interval from many test items. With a single unit this
   reduces to the item bootstrap.

Plain numpy on arrays; no files, no global random state.
"""

from __future__ import annotations

import numpy as np

from semalign.core.errors import SemalignError

HOLDS_WHEN = ("above", "below")


def bootstrap_weights(n_items: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, n_items) int32 counts: each row is one bootstrap resample of the
    items (multinomial, with replacement), so each row sums to ``n_items``;
    deterministic in (n_items, n_boot, seed) (see the module docstring)."""
    if int(n_items) < 1:
        raise SemalignError(f"bootstrap needs at least one item, got n_items={n_items}")
    if int(n_boot) < 1:
        raise SemalignError(f"bootstrap needs at least one resample, got n_boot={n_boot}")
    n_items, n_boot = int(n_items), int(n_boot)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_items, size=(n_boot, n_items))
    # One bincount over all rows at once: row b's draws land in bins b*n .. b*n+n-1.
    flat = (drawn + (np.arange(n_boot) * n_items)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_items).reshape(n_boot, n_items).astype(np.int32)


def _binary_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise SemalignError(f"labels must be one-dimensional, got shape {labels.shape}")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise SemalignError("labels must be binary (0/1 or bool); found other values")
        labels = labels == 1
    return labels


def _weight_rows(weights: np.ndarray, n_items: int) -> np.ndarray:
    weights = np.asarray(weights)
    if weights.ndim == 1:
        weights = weights[None, :]
    if weights.ndim != 2 or weights.shape[1] != n_items:
        raise SemalignError(f"weights must have shape (B, {n_items}) or ({n_items},), got {np.shape(weights)}")
    if weights.size and weights.min() < 0:
        raise SemalignError("bootstrap weights must be non-negative")
    return weights


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of one binary label under each row of weights (B, n) (or a single
    (n,) weight vector -> shape (1,)).

    Ties count 1/2. With integer weights this equals
    ``sklearn.metrics.roc_auc_score`` on the resampled items (each item repeated
    as often as its weight says); with real weights it is the sample-weighted
    AUROC. NaN for a row where the weighted positives or negatives are zero.

    One class is sorted by score once (the smaller one, as its cumulative
    weights are the costly part); each item of the other class is located among
    them with ``searchsorted`` left and right, which counts the items strictly
    below it and those tied with it. Per replicate, the cumulative weights of
    the sorted class at those two places give, for every item of the other
    class, the weight below it plus half the weight tied with it. Cost
    O(n log n + B n), with the B replicates as the contiguous inner axis.
    """
    labels = _binary_labels(labels)
    scores = np.asarray(scores, dtype=float)
    if scores.shape != labels.shape:
        raise SemalignError(f"scores have shape {scores.shape} but labels have shape {labels.shape}")
    if not np.isfinite(scores).all():
        raise SemalignError("scores contain NaN or infinite values; AUROC needs finite scores")
    weights = _weight_rows(weights, len(labels))
    auroc = np.full(len(weights), np.nan)
    if labels.all() or not labels.any():
        return auroc

    positives, negatives = np.flatnonzero(labels), np.flatnonzero(~labels)
    cumulated, located = (positives, negatives) if len(positives) < len(negatives) else (negatives, positives)
    cumulated = cumulated[np.argsort(scores[cumulated], kind="stable")]
    cumulated_scores = scores[cumulated]
    below = np.searchsorted(cumulated_scores, scores[located], side="left")
    not_above = np.searchsorted(cumulated_scores, scores[located], side="right")

    by_item = weights.T  # items × replicates: gathers and sums run along contiguous rows
    weight_before = _exclusive_cumsum(by_item[cumulated].astype(float))
    located_weight = by_item[located]
    # Weight below each located item, plus half the weight tied with it; only
    # the few items with ties need the second term.
    below_located = np.einsum("ib,ib->b", located_weight, weight_before[below])
    tied = np.flatnonzero(not_above > below)
    if tied.size:
        tied_weight = weight_before[not_above[tied]] - weight_before[below[tied]]
        below_located += 0.5 * np.einsum("ib,ib->b", located_weight[tied], tied_weight)
    pairs = located_weight.sum(axis=0, dtype=float) * weight_before[-1]
    # Pairs ranked correctly: negatives below positives, or all pairs less positives below negatives.
    correct = below_located if located is positives else pairs - below_located
    np.divide(correct, pairs, out=auroc, where=pairs > 0)
    return auroc


def _exclusive_cumsum(rows: np.ndarray) -> np.ndarray:
    """Cumulative sums down axis 0, starting from a row of zeros: (n + 1, B)."""
    before = np.zeros((len(rows) + 1,) + rows.shape[1:])  # float64 whatever the weights' type
    if rows.ndim == 2 and rows.shape[1] >= 64:
        # np.cumsum along an axis adds one element at a time; with many replicates,
        # adding whole rows lets numpy vectorise over the replicates instead.
        for i, row in enumerate(rows):
            np.add(before[i], row, out=before[i + 1])
    else:
        np.cumsum(rows, axis=0, out=before[1:])
    return before


def macro_auroc_replicates(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro-AUROC under each row of weights: shape (B,).

    ``labels`` and ``scores`` are (n, k). The mean over the k columns of
    :func:`weighted_auroc`, over the columns that have both classes in the full
    data (columns with one class are skipped, as an AUROC of them is undefined),
    ignoring per replicate the columns whose resample lost one class. NaN for a
    replicate where every column did.
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.ndim != 2 or scores.shape != labels.shape:
        raise SemalignError(f"labels and scores must both be (n, k); got {labels.shape} and {scores.shape}")
    columns = [j for j in range(labels.shape[1]) if 0 < _binary_labels(labels[:, j]).sum() < len(labels)]
    if not columns:
        raise SemalignError("no label has both classes in these items, so no AUROC is defined; use more items")
    return _nanmean(np.stack([weighted_auroc(labels[:, j], scores[:, j], weights) for j in columns]), axis=0)


def hierarchical_replicates(per_unit: np.ndarray, seed: int = 0) -> np.ndarray:
    """(B,) replicates of the mean over units, resampling the units too.

    ``per_unit`` is (U, B): B item-bootstrap replicates of a statistic for each
    of U units (encoder pairs × seeds), computed on shared item resamples. In
    replicate b, U units are drawn with replacement (independently for each b,
    deterministic in ``seed``) and their b-th replicates averaged, NaN-ignoring.
    With U = 1 this is ``per_unit[0]``. See the module docstring.
    """
    per_unit = np.asarray(per_unit, dtype=float)
    if per_unit.ndim != 2 or per_unit.shape[0] < 1:
        raise SemalignError(f"per_unit must be (units, replicates) with at least one unit, got {per_unit.shape}")
    units, replicates = per_unit.shape
    if units == 1:
        return per_unit[0].copy()
    drawn = np.random.default_rng(seed).integers(0, units, size=(replicates, units))
    return _nanmean(per_unit[drawn, np.arange(replicates)[:, None]], axis=1)


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean along ``axis`` of the defined values; NaN where none is (without
    ``np.nanmean``'s warning, which is not thread-safe to silence in a sweep)."""
    defined = ~np.isnan(values)
    count = defined.sum(axis=axis)
    total = np.where(defined, values, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the replicates at ``level``, NaN-ignoring;
    (NaN, NaN) when no replicate is defined."""
    if not 0 < level < 1:
        raise SemalignError(f"interval level must lie strictly between 0 and 1, got {level}")
    values = np.asarray(replicates, dtype=float).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def verdict(ci_low: float, ci_high: float, threshold: float, holds_when: str = "above") -> str:
    """``holds``, ``fails`` or ``inconclusive`` for a claim judged on an interval.

    ``holds_when="above"``: the claim is "estimate > threshold"; it holds if
    ci_low > threshold, fails if ci_high < threshold. ``holds_when="below"``: the
    claim is "estimate ≤ threshold"; it holds if ci_high ≤ threshold, fails if
    ci_low > threshold. Otherwise, including a NaN bound, inconclusive.
    """
    if holds_when not in HOLDS_WHEN:
        raise SemalignError(f"unknown holds_when {holds_when!r}; valid: {', '.join(HOLDS_WHEN)}")
    if np.isnan(ci_low) or np.isnan(ci_high):
        return "inconclusive"
    if holds_when == "above":
        holds, fails = ci_low > threshold, ci_high < threshold
    else:
        holds, fails = ci_high <= threshold, ci_low > threshold
    return "holds" if holds else "fails" if fails else "inconclusive"


def chance_corrected_ratio(value, upper_bound, chance: float = 0.5):
    """(value − chance) / (upper_bound − chance), elementwise on arrays too.

    1 means as good as the upper bound, 0 no better than chance. NaN where the
    upper bound itself is at chance, since the ratio then has no meaning.
    """
    value, upper_bound = np.asarray(value, dtype=float), np.asarray(upper_bound, dtype=float)
    headroom = upper_bound - chance
    gained = np.broadcast_to(value - chance, np.broadcast_shapes(value.shape, headroom.shape))
    ratio = np.divide(gained, headroom, out=np.full(gained.shape, np.nan), where=headroom != 0)
    return ratio[()] if ratio.ndim == 0 else ratio
