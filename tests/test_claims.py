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
    assert list(table["anchors"]) == ["256"] * 3 and "—" not in list(table["± rounding"])  # zero is 0.000


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
        base = dict(method="clip_style", source="v", target="b", seed=seed, task="macro")
        rows += [{**base, "split": "test", "value": 0.80}, {**base, "split": "validation", "value": 0.95}]
        replicates[replicate_key("clip_style", "v", "b", None, None, seed)] = 0.80 + 0.01 * rng.standard_normal(500)
    frame = pd.DataFrame(rows).assign(metric="auroc")
    record, general = claims.zero_shot_claims(frame, replicates)
    # pair "b" is chosen on validation although "a" is better on test; the CLIP-style model is taken on
    # the same pair "b" (not on "a", its own best on validation): 0.1 / 0.3 = 0.33 -> fails
    assert record["target"] == "b" and record["estimate"] == pytest.approx(0.1 / 0.3)
    assert record["verdict"] == "fails" and record["claim"] == "zero_shot_vs_multimodal"
    # no general multimodal model in the records: that claim is recorded, as not testable here, with why
    assert general["claim"] == "zero_shot_vs_general_multimodal" and general["verdict"] == claims.NOT_TESTABLE
    assert "no general multimodal" in general["reason"]


def test_every_page_takes_the_test_rows_of_the_setting_chosen_on_validation():
    rows = []
    for target, test_value, validation_value in (("a", 0.80, 0.70), ("b", 0.60, 0.90)):
        for method, n in (("unimodal_zero_shot", 64), ("asif", 64), ("clip_style", None)):
            base = dict(method=method, source="v", target=target, transform="ortho" if n else None, n_anchors=n,
                        seed=0, task="macro")
            rows += [{**base, "split": "test", "value": test_value},
                     {**base, "split": "validation", "value": validation_value}]
    rows += [dict(method="linear_probe", source=s, seed=0, task="macro", split="test", value=v) for s, v in (("v", .9), ("w", .5))]
    rows += [dict(method="pretrained_multimodal", source=m, target=m, task="macro", split="test", value=.7) for m in ("z", "clip")]
    choices, chosen = claims.zero_shot_test_rows(pd.DataFrame(rows).assign(metric="auroc"), 64)
    assert choices["unimodal_zero_shot"] == {"source": "v", "target": "b", "transform": "ortho"}  # not a, best on test
    assert list(chosen) == ["unimodal_zero_shot", "asif", "clip_style", "pretrained_multimodal:z",
                            "pretrained_multimodal:clip", "linear_probe"]  # pretrained models in the records' order
    assert all(set(rows["split"]) == {"test"} for rows in chosen.values())
    assert [set(chosen[m]["target"]) for m in ("unimodal_zero_shot", "asif", "clip_style")] == [{"b"}] * 3
    assert list(chosen["linear_probe"]["source"]) == ["v"]


def _budget_frame(gains: dict[int, float], probe: dict[int, float], own: dict[str, float], spread: float = 0.005):
    """Records and replicates of two pairs (a → m, b → m), two seeds, at the anchor counts of
    ``gains`` (aligned minus naive); few-shot probes score ``probe``; ``own`` is each encoder's
    validation score with its own decoder (the test upper bounds are 0.9 for every encoder)."""
    rng = np.random.default_rng(3)
    rows, replicates = [], {}

    def add(method, value, source, target, transform=None, n=None, seed=None, split="test", metric="macro_auroc"):
        rows.append(dict(method=method, source=source, target=target, transform=transform, n_anchors=n, seed=seed,
                         metric=metric, split=split, value=value))
        if split == "test" and metric == "macro_auroc":
            replicates[replicate_key(method, source, target, transform, n, seed)] = value + spread * rng.standard_normal(1000)

    for name, score in own.items():
        add("upper_bound", 0.9, name, name)
        add("upper_bound", score, name, name, split="validation")
    for source in ("a", "b"):
        add("naive", 0.5, source, "m")
        for n, gain in gains.items():
            for seed in (0, 1):
                add("few_shot", probe[n], source, source, n=n, seed=seed)
                for transform, value, valid in (("affine", 0.5 + gain, 0.8), ("ortho", 0.5 + gain - 0.05, 0.7)):
                    add("aligned", value, source, "m", transform, n, seed)
                    add("aligned", valid, source, "m", transform, n, seed, split="validation")
                    if n in (64, max(gains)):
                        add("aligned", 0.0, source, "m", transform, n, seed, metric="rounding_delta")
    return pd.DataFrame(rows), replicates


def test_claims_are_judged_at_each_budget_that_recorded_a_rounding_spread():
    frame, replicates = _budget_frame({16: 0.1, 64: 0.2, 256: 0.3, 1024: 0.35}, {16: 0.5, 64: 0.6, 256: 0.85, 1024: 0.9},
                                      own={"a": 0.95, "b": 0.95, "m": 0.9})
    assert claims.claim_budgets(frame) == [64, 1024]
    judged = claims.stitching_claims(frame, replicates, "text")
    naive = {r["n_anchors"]: r for r in judged if r["metric"] == "aligned_vs_naive"}
    assert set(naive) == {64, 1024}
    assert naive[64]["estimate"] == pytest.approx(0.2) and naive[1024]["estimate"] == pytest.approx(0.35)
    assert naive[64]["verdict"] == "holds" and naive[64]["transform"] == "affine"
    table = claims.budget_table(pd.DataFrame(judged), fit_items={"text": 2048})
    assert list(table.columns) == ["small: 64 anchors", "largest: 1024 anchors"]
    assert table.loc[("aligned ≫ naive", "text"), "small: 64 anchors"].startswith("holds · 0.200 [")
    # budgets that differ between modalities are named in their cells, with their share of the split
    other = pd.DataFrame(claims.stitching_claims(frame, replicates, "vision", budgets=[64, 256]))
    table = claims.budget_table(pd.concat([pd.DataFrame(judged), other]), fit_items={"text": 2048, "vision": 1024})
    assert list(table.columns) == ["small: 64 anchors", "largest"]
    assert table.loc[("aligned ≫ naive", "vision"), "largest"].endswith("(256, 25%)")


def test_improving_on_the_general_encoder_is_not_testable_when_the_medical_encoder_is_weaker():
    gains, probe = {64: 0.3, 1024: 0.35}, {64: 0.6, 1024: 0.9}
    frame, replicates = _budget_frame(gains, probe, own={"a": 0.95, "b": 0.93, "m": 0.9})
    judged = [r for r in claims.stitching_claims(frame, replicates, "text") if r["claim"] == "improves_on_general"]
    assert {r["metric"] for r in judged} == {"improves_on_general", "improves_on_general_vs_naive"}
    assert all(r["verdict"] == claims.NOT_TESTABLE for r in judged)
    assert "m 0.900" in judged[0]["reason"] and "a 0.950" in judged[0]["reason"]
    assert claims.untestable_reasons(pd.DataFrame(judged)).startswith("“stitched > general alone” (text) is not testable")
    # aligned 0.8 at 64 anchors against the general encoders' own 0.9: the estimate is kept beside the verdict
    assert judged[0]["n_anchors"] == 64 and judged[0]["estimate"] == pytest.approx(-0.1)
    # a medical encoder better on validation makes it testable: 0.85 - 0.9 < 0 -> fails
    frame, replicates = _budget_frame(gains, probe, own={"a": 0.85, "b": 0.86, "m": 0.9})
    judged = [r for r in claims.stitching_claims(frame, replicates, "text") if r["metric"] == "improves_on_general"]
    assert [r["verdict"] for r in judged] == ["fails", "fails"] and judged[0]["reason"] is None


def test_the_few_shot_crossover_is_the_last_count_up_to_which_stitching_wins():
    # stitching 0.6/0.7/0.8/0.85 against probes 0.5/0.6/0.85/0.9: wins at 16 and 64, loses from 256 on
    frame, replicates = _budget_frame({16: 0.1, 64: 0.2, 256: 0.3, 1024: 0.35}, {16: 0.5, 64: 0.6, 256: 0.85, 1024: 0.9},
                                      own={"a": 0.95, "b": 0.95, "m": 0.9})
    gaps = claims.few_shot_gaps(frame, replicates, "text")
    by_count = {r["n_anchors"]: r for r in gaps if r["method"] == "few_shot_gap"}
    assert [by_count[n]["verdict"] for n in (16, 64, 256, 1024)] == ["holds", "holds", "fails", "fails"]
    assert by_count[256]["estimate"] == pytest.approx(-0.05)
    [crossover] = [r for r in gaps if r["method"] == "few_shot_crossover"]
    assert crossover["estimate"] == 64 and crossover["ci_low"] == 64 and crossover["ci_high"] == 64
    sentence = claims.crossover_sentence(pd.DataFrame(gaps), "text", fit_items=2000)
    assert "at every anchor count up to 64 (3% of the fit split)" in sentence
    assert "above zero at 16, 64 anchors and wholly below zero at 256, 1024 anchors" in sentence
    # never a win: crossover 0
    frame, replicates = _budget_frame({16: 0.1, 64: 0.2}, {16: 0.7, 64: 0.8}, own={"a": 0.95, "b": 0.95, "m": 0.9})
    [crossover] = [r for r in claims.few_shot_gaps(frame, replicates, "text") if r["method"] == "few_shot_crossover"]
    assert crossover["estimate"] == 0


def test_zero_shot_is_judged_against_a_general_pretrained_model_by_beats_and_a_medical_one_by_approaches():
    rng = np.random.default_rng(2)
    rows, replicates = [], {}
    for seed in (0, 1):
        base = dict(method="unimodal_zero_shot", source="v", target="t", transform="ortho", n_anchors=64, seed=seed,
                    task="macro")
        rows += [{**base, "split": "test", "value": 0.75}, {**base, "split": "validation", "value": 0.7}]
        replicates[replicate_key("unimodal_zero_shot", "v", "t", "ortho", 64, seed)] = 0.75 + 0.005 * rng.standard_normal(500)
        base = dict(method="clip_style", source="v", target="t", seed=seed, task="macro")
        rows += [{**base, "split": "test", "value": 0.8}, {**base, "split": "validation", "value": 0.8}]
        replicates[replicate_key("clip_style", "v", "t", None, None, seed)] = 0.8 + 0.005 * rng.standard_normal(500)
    for name, value in (("clip", 0.6), ("biomedclip", 0.9)):
        rows.append(dict(method="pretrained_multimodal", source=name, target=name, task="macro", split="test", value=value))
        replicates[replicate_key("pretrained_multimodal", name, name)] = value + 0.005 * rng.standard_normal(500)
    frame = pd.DataFrame(rows).assign(metric="auroc")
    judged = claims.zero_shot_claims(frame, replicates, domains={"clip": "general", "biomedclip": "medical"})
    by = {(r["metric"], r["target"]): r for r in judged}
    assert by[("zero_shot_vs_general_multimodal", "clip")]["verdict"] == "holds"  # 0.75 - 0.6 > 0
    assert by[("zero_shot_vs_general_multimodal", "clip")]["estimate"] == pytest.approx(0.15)
    assert by[("zero_shot_vs_multimodal", "biomedclip")]["estimate"] == pytest.approx(0.25 / 0.4)
    assert by[("zero_shot_vs_multimodal", "biomedclip")]["verdict"] == "fails"
    assert not any(r["verdict"] == claims.NOT_TESTABLE for r in judged)
