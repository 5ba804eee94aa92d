"""The verdict rule on synthetic records: one claim that holds, one that fails,
one that stays inconclusive; choices read from validation records only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from semalign.experiments import claims
from semalign.experiments.claims import replicate_key


def _stitching_frame(aligned: dict[str, float], validation: dict[str, float], spread: dict[str, float],
                     bound_spread: float = 0.01):
    """Records and replicates of one pair (x → y), two seeds, at 256 anchors."""
    rng = np.random.default_rng(0)
    rows, replicates = [], {}

    def add(method, value, width, source="x", target="y", transform=None, n=None, seed=None):
        rows.append(dict(method=method, source=source, target=target, transform=transform, n_anchors=n, seed=seed,
                         metric="macro_auroc", split="test", value=value))
        replicates[replicate_key(method, source, target, transform, n, seed)] = value + width * rng.standard_normal(1000)

    add("upper_bound", 0.90, bound_spread, source="y", target="y")
    add("naive", 0.50, 0.01)
    for transform, value in aligned.items():
        for seed in (0, 1):
            add("aligned", value, spread[transform], transform=transform, n=256, seed=seed)
            rows.append(dict(method="aligned", source="x", target="y", transform=transform, n_anchors=256, seed=seed,
                             metric="macro_auroc", split="validation", value=validation[transform]))
    return pd.DataFrame(rows), replicates


def test_one_claim_holds_one_fails_one_is_inconclusive():
    # affine 0.86 on test, ortho 0.76: ortho loses 0.10 > 0.02 -> fails; the
    # validation scores pick affine, whose gain over naive (0.36) is far above
    # 0.1 -> holds; its chance-corrected ratio (0.36 / 0.40 = 0.9) sits on the
    # 0.9 threshold and the upper bound is uncertain -> inconclusive.
    frame, replicates = _stitching_frame(aligned={"affine": 0.86, "ortho": 0.76},
                                         validation={"affine": 0.85, "ortho": 0.80},
                                         spread={"affine": 0.01, "ortho": 0.01}, bound_spread=0.05)
    judged = {r["claim"]: r for r in claims.stitching_claims(frame, replicates, "text")}
    assert judged["aligned_vs_naive"]["verdict"] == "holds"
    assert judged["ortho_vs_affine"]["verdict"] == "fails"
    assert judged["aligned_vs_upper_bound"]["verdict"] == "inconclusive"
    assert judged["aligned_vs_naive"]["transform"] == "affine"
    assert judged["aligned_vs_naive"]["estimate"] == pytest.approx(0.36)
    assert judged["aligned_vs_upper_bound"]["estimate"] == pytest.approx(0.9)
    assert judged["ortho_vs_affine"]["estimate"] == pytest.approx(0.10)
    for record in judged.values():
        assert record["experiment"] == "claims" and record["modality"] == "text"
        assert record["ci_low"] < record["estimate"] < record["ci_high"]


def test_a_verdict_that_rests_on_rounding_is_inconclusive():
    """ortho 0.85 against affine 0.86 holds "loses little" (gap 0.01 ≤ 0.02) on
    the bootstrap interval; when ortho's score moves by 0.03 with rounding-level
    changes of its anchors, the widened interval crosses 0.02: inconclusive."""
    frame, replicates = _stitching_frame(aligned={"affine": 0.86, "ortho": 0.85},
                                         validation={"affine": 0.85, "ortho": 0.80},
                                         spread={"affine": 0.001, "ortho": 0.001})
    steady = {r["claim"]: r for r in claims.stitching_claims(frame, replicates, "vision")}
    assert steady["ortho_vs_affine"]["verdict"] == "holds" and steady["ortho_vs_affine"]["rounding_delta"] == 0.0
    moved = pd.DataFrame([dict(method="aligned", source="x", target="y", transform=transform, n_anchors=256, seed=seed,
                               metric="rounding_delta", split="test", value=value)
                          for transform, value in (("affine", 0.0), ("ortho", 0.03)) for seed in (0, 1)])
    judged = {r["claim"]: r for r in claims.stitching_claims(pd.concat([frame, moved]), replicates, "vision")}
    assert judged["ortho_vs_affine"]["rounding_delta"] == pytest.approx(0.03)
    assert judged["ortho_vs_affine"]["verdict"] == "inconclusive"
    assert judged["ortho_vs_affine"]["ci_low"] == steady["ortho_vs_affine"]["ci_low"]  # the bootstrap interval itself
    assert judged["aligned_vs_naive"]["rounding_delta"] == 0.0  # affine, chosen on validation, does not move
    assert "0.030" in list(claims.verdict_table(pd.DataFrame(list(judged.values())))["± rounding"])


def test_the_transform_is_chosen_on_validation_not_on_test():
    # ortho is better on test, affine on validation: the claim uses affine
    frame, replicates = _stitching_frame(aligned={"affine": 0.70, "ortho": 0.85},
                                         validation={"affine": 0.86, "ortho": 0.80},
                                         spread={"affine": 0.01, "ortho": 0.01})
    judged = {r["claim"]: r for r in claims.stitching_claims(frame, replicates, "vision")}
    assert judged["aligned_vs_naive"]["transform"] == "affine"
    assert judged["aligned_vs_naive"]["estimate"] == pytest.approx(0.20)
    assert judged["aligned_vs_naive"]["selected_on"] == "validation"


def test_verdict_table_states_every_claim_with_its_interval():
    frame, replicates = _stitching_frame(aligned={"affine": 0.86, "ortho": 0.76},
                                         validation={"affine": 0.85, "ortho": 0.80},
                                         spread={"affine": 0.01, "ortho": 0.01}, bound_spread=0.05)
    table = claims.verdict_table(pd.DataFrame(claims.stitching_claims(frame, replicates, "text")))
    assert list(table["verdict"]) == ["holds", "inconclusive", "fails"]  # in the order of claims.CLAIMS
    assert all("to" in cell for cell in table["estimate (95% interval)"])


def test_zero_shot_claim_compares_the_validation_choices():
    rng = np.random.default_rng(1)
    rows, replicates = [], {}
    for seed in (0, 1):
        for target, test_value, validation_value in (("a", 0.80, 0.70), ("b", 0.60, 0.90)):
            base = dict(method="unimodal_zero_shot", source="v", target=target, transform="ortho", n_anchors=64,
                        seed=seed, task="macro")
            rows += [{**base, "split": "test", "value": test_value}, {**base, "split": "validation", "value": validation_value}]
            replicates[replicate_key("unimodal_zero_shot", "v", target, "ortho", 64, seed)] = \
                test_value + 0.01 * rng.standard_normal(500)
        base = dict(method="clip_style", source="v", target="a", seed=seed, task="macro")
        rows += [{**base, "split": "test", "value": 0.70}, {**base, "split": "validation", "value": 0.7}]
        replicates[replicate_key("clip_style", "v", "a", None, None, seed)] = 0.70 + 0.01 * rng.standard_normal(500)
    frame = pd.DataFrame(rows).assign(metric="auroc")
    [record] = claims.zero_shot_claims(frame, replicates)
    # pair "b" is chosen on validation although "a" is better on test: 0.1 / 0.2 = 0.5 -> fails
    assert record["target"] == "b" and record["estimate"] == pytest.approx(0.5)
    assert record["verdict"] == "fails" and record["claim"] == "zero_shot_vs_multimodal"
