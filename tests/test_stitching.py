"""The stitching sweep and its summaries, on seeded synthetic spaces with a
known relation, so the expected ordering of the methods is certain."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from semalign.experiments import summary
from semalign.core.errors import SemalignError
from semalign.experiments.stitching import Decoder, StitchingSetup, score, stitching_records


@pytest.fixture(scope="module")
def spaces():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(800, 12))
    labels = (latent[:, :2] > 0).astype(int)
    embeddings = {
        "small": latent @ rng.normal(size=(12, 24)) + 0.05 * rng.normal(size=(800, 24)),
        "large": np.tanh(latent @ rng.normal(size=(12, 40)) / 3) + 0.05 * rng.normal(size=(800, 40)),
    }
    return embeddings, labels


@pytest.fixture(scope="module")
def frame(spaces):
    embeddings, labels = spaces
    setup = StitchingSetup(embeddings, labels, np.arange(400), np.arange(500, 800), "linear",
                           anchor_counts=[4, 32, 400], seeds=[0, 1], task="multilabel", validation=np.arange(400, 500))
    return pd.DataFrame(stitching_records(setup, progress=False))


def auroc(frame, **where):
    rows = frame[(frame["metric"] == "macro_auroc") & (frame["split"] == "test")]
    for key, value in where.items():
        rows = rows[rows[key] == value]
    return rows["value"].mean()


def test_sweep_has_every_method_pair_count_and_seed(frame):
    aligned = frame[(frame["method"] == "aligned") & (frame["metric"] == "macro_auroc")]
    assert len(aligned) == 2 * 3 * 2 * 2  # ordered pairs × anchor counts × seeds × (validation, test)
    assert set(frame["method"]) == {"aligned", "naive", "upper_bound", "few_shot", "decoder", "split", "similarity"}
    assert set(frame["metric"]) == {"macro_auroc", "macro_f1", "accuracy", "strength", "rounding_delta", "fit_items",
                                    "linear_cka", "mutual_knn"}
    assert list(frame[frame["method"] == "split"]["value"]) == [400]  # the anchor pool, for shares of it


def test_each_pair_s_similarity_on_the_test_rows_is_recorded_once_for_both_orders(spaces, frame):
    from semalign.experiments.stitching import SIMILARITY_K
    from semalign.method.similarity import linear_cka, mutual_knn

    embeddings, _ = spaces
    rows = frame[frame["method"] == "similarity"].set_index(["source", "target", "metric"])["value"]
    test = slice(500, 800)
    assert len(rows) == 4 and set(frame[frame["method"] == "similarity"]["split"]) == {"test"}
    assert rows["small", "large", "linear_cka"] == rows["large", "small", "linear_cka"] == linear_cka(
        embeddings["small"][test], embeddings["large"][test])
    assert rows["large", "small", "mutual_knn"] == mutual_knn(embeddings["small"][test], embeddings["large"][test],
                                                              k=SIMILARITY_K)
    assert 0.05 < rows["small", "large", "linear_cka"] < 1  # related spaces: neither unrelated nor identical


def test_the_rounding_spread_is_measured_at_every_claim_budget(spaces):
    """The claims are judged at the budgets fixed in advance and at the largest count: the
    rounding spread is measured there (a budget the sweep does not run is not invented)."""
    embeddings, labels = spaces
    setup = StitchingSetup(embeddings, labels, np.arange(400), np.arange(500, 800), "ortho", anchor_counts=[4, 32, 400],
                           seeds=[0], task="multilabel", validation=np.arange(400, 500), claim_anchor_counts=[32, 64])
    replicates = {}
    frame = pd.DataFrame(stitching_records(setup, progress=False, replicates=replicates))
    assert sorted(frame[frame["metric"] == "rounding_delta"]["n_anchors"].unique()) == [32, 400]
    # every aligned and few-shot record keeps its replicates: the few-shot crossover needs them all
    kept = {key.split("|")[0] + "|" + key.split("|")[4] for key in replicates}
    assert {f"{m}|{n}" for m in ("aligned", "few_shot") for n in (4, 32, 400)} <= kept


def test_test_records_carry_intervals_around_their_value_and_validation_records_none(frame):
    # scores only: a rounding spread and a similarity of two spaces describe, and have no interval
    test = frame[(frame["split"] == "test") & (frame["metric"] != "rounding_delta") & (frame["method"] != "similarity")]
    assert test[["ci_low", "ci_high"]].notna().all().all()
    assert (test["ci_low"] <= test["value"] + 1e-9).all() and (test["value"] <= test["ci_high"] + 1e-9).all()
    assert (test["ci_high"] - test["ci_low"]).max() > 0
    validation = frame[frame["split"] == "validation"]
    assert len(validation) == len(test) and validation["ci_low"].isna().all()
    strengths = frame[frame["method"] == "decoder"]
    assert set(strengths["selected_on"]) == {"validation"} and set(strengths["source"]) == {"small", "large"}


@pytest.mark.parametrize("transform, determined", [("linear", True), ("affine", True), ("ortho", False),
                                                   ("l-ortho", False)])
def test_rounding_delta_shows_where_the_anchors_do_not_determine_the_transform(spaces, transform, determined):
    """At the largest anchor count every aligned setting says how far its score
    moves when the anchors change at the level of rounding: not at all for
    linear and affine (least squares, unique), by AUROC points for ortho and
    l-ortho with 8 anchors for 24 and 40 dimensions (the SVD completes them)."""
    embeddings, labels = spaces
    setup = StitchingSetup(embeddings, labels, np.arange(400), np.arange(500, 800), transform, anchor_counts=[4, 8],
                           seeds=[0, 1, 2], task="multilabel", validation=np.arange(400, 500))
    frame = pd.DataFrame(stitching_records(setup, progress=False))
    moved = frame[frame["metric"] == "rounding_delta"]
    assert len(moved) == 2 * 3 and set(moved["n_anchors"]) == {8} and set(moved["split"]) == {"test"}
    if determined:
        assert moved["value"].max() < 1e-6
    else:
        assert moved["value"].max() > 0.02


def test_alignment_recovers_most_of_the_upper_bound_and_beats_naive(frame):
    assert auroc(frame, method="naive") < 0.65
    assert auroc(frame, method="aligned", n_anchors=400) > 0.9 * auroc(frame, method="upper_bound")
    assert auroc(frame, method="aligned", n_anchors=400) > auroc(frame, method="aligned", n_anchors=4)


def test_summary_table_and_claims_read_the_records(spaces, tmp_path, monkeypatch):
    from semalign.experiments import claims
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    embeddings, labels = spaces
    frames, replicates = [], {}
    for transform in ("affine", "ortho"):
        setup = StitchingSetup(embeddings, labels, np.arange(400), np.arange(500, 800), transform, [4, 400], [0, 1],
                               task="multilabel", validation=np.arange(400, 500))
        frames.append(pd.DataFrame(stitching_records(setup, progress=False, replicates=replicates)))
    frame = pd.concat(frames).drop_duplicates(["method", "transform", "source", "target", "n_anchors", "seed",
                                               "metric", "split"])
    table = summary.anchor_table(frame, [4, 400])
    assert list(table.columns) == ["4 anchors", "400 anchors"]
    # every ordered pair: each encoder is a target, with its own upper bound (no mean over encoders)
    assert {"affine", "ortho", "naive (no alignment)", "upper bound (small with its own decoder)",
            "upper bound (large with its own decoder)"} <= set(table.index)
    judged = {r["claim"]: r for r in claims.stitching_claims(frame, replicates, "text")}
    assert set(judged) == {"aligned_vs_naive", "aligned_vs_upper_bound", "ortho_vs_affine", "improves_on_general"}
    assert judged["aligned_vs_naive"]["verdict"] == "holds"  # two related-by-construction spaces, aligned well
    for record in judged.values():
        assert record["ci_low"] <= record["estimate"] <= record["ci_high"]
        assert record.get("selected_on") == "validation" or record["claim"] == "ortho_vs_affine"
    # the transform is the one with the best validation score, not the best test score
    validation = frame[(frame["split"] == "validation") & (frame["method"] == "aligned") & (frame["n_anchors"] == 400)
                       & (frame["metric"] == "macro_auroc")]
    assert judged["aligned_vs_naive"]["transform"] == validation.groupby("transform")["value"].mean().idxmax()


def test_a_summary_before_its_runs_names_the_run_to_execute(frame):
    from semalign.experiments import results
    frame = frame.assign(experiment="vision_stitching")
    assert len(results.experiment_records(frame, "vision_stitching", "offline")) == len(frame)
    with pytest.raises(SemalignError, match=r"no records of text_stitching .*semalign run text_stitching --profile smoke"):
        results.experiment_records(frame, "text_stitching", "smoke")


def test_anchor_count_above_the_pool_is_refused(spaces):
    embeddings, labels = spaces
    setup = StitchingSetup(embeddings, labels, np.arange(50), np.arange(50, 80), "ortho", [64], [0])
    with pytest.raises(SemalignError, match=r"anchor_counts=\[64\] asks for 64 anchors, but the data and its split leave 50 fit items"):
        stitching_records(setup, progress=False)


def test_decoder_predicts_a_label_seen_with_one_class_by_its_frequency():
    x = np.random.default_rng(1).normal(size=(20, 3))
    y = np.stack([x[:, 0] > 0, np.zeros(20, bool)], axis=1).astype(int)
    proba = Decoder("logreg").fit(x, y).predict_proba(x)
    assert proba.shape == (20, 2) and np.all(proba[:, 1] == 0)
    assert score(y, proba)["macro_auroc"] > 0.9  # only the label with both classes is scored
    with pytest.raises(SemalignError, match="unknown decoder"):
        Decoder("forest")


def test_few_shot_baseline_is_shared_between_transform_runs(spaces, tmp_path, monkeypatch):
    from semalign.experiments import stitching
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    embeddings, labels = spaces
    setup = StitchingSetup(embeddings, labels, np.arange(500), np.arange(500, 800), "ortho", [8, 64], [0])
    first = stitching.few_shot_records(setup, progress=False)
    assert len(first[0]) == 2 * 2 * 3  # sources × anchor counts × metrics (no validation rows)
    assert len(first[1]) == 2 * 2  # test replicates of every anchor count, per source (the crossover needs them)
    monkeypatch.setattr(stitching.Decoder, "fit", lambda *a, **k: pytest.fail("recomputed a cached baseline"))
    other_transform = dataclasses.replace(setup, transform="affine")
    again = stitching.few_shot_records(other_transform, progress=False)
    assert again[0] == first[0] and all(np.allclose(again[1][k], first[1][k]) for k in first[1])
    changed = dataclasses.replace(setup, seeds=[1])
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        stitching.few_shot_records(changed, progress=False)


def test_a_changed_digit_in_the_few_shot_cache_is_detected_and_recomputed(spaces, tmp_path, monkeypatch):
    from semalign.experiments import stitching
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    embeddings, labels = spaces
    setup = StitchingSetup(embeddings, labels, np.arange(500), np.arange(500, 800), "ortho", [8, 64], [0])
    first = stitching.few_shot_records(setup, progress=False)
    (entry,) = (tmp_path / "records").glob("few-shot-*.json")
    text = entry.read_text()
    value = f"{first[0][0]['value']}"
    assert value in text
    entry.write_text(text.replace(value, f"{1 - first[0][0]['value']}", 1))  # still valid JSON
    with pytest.warns(UserWarning, match=r"few-shot-.*\.json is damaged .*recomputing it"):
        again = stitching.few_shot_records(setup, progress=False)
    assert again[0] == first[0]


def test_logreg_decoder_arrays_predict_what_sklearn_predicts(spaces):
    embeddings, labels = spaces
    x = embeddings["large"]
    decoder = Decoder("logreg").fit(x[:500], labels[:500])
    sklearn_proba = np.stack([model.predict_proba(x[500:])[:, 1] for model in decoder.models_], axis=1)
    np.testing.assert_allclose(decoder.predict_proba(x[500:]), sklearn_proba, rtol=0, atol=1e-12)
    copy = Decoder.from_arrays(decoder.arrays())
    np.testing.assert_array_equal(copy.predict_proba(x[500:]), decoder.predict_proba(x[500:]))


def test_decoders_are_shared_between_transform_runs_and_a_damaged_one_is_retrained(spaces, tmp_path, monkeypatch):
    from semalign.experiments import stitching
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    embeddings, labels = spaces
    setup = StitchingSetup(embeddings, labels, np.arange(500), np.arange(500, 800), "ortho", [8], [0])
    first = stitching.trained_decoder(setup, "large")
    [entry] = (tmp_path / "records").glob("decoder-*.npz")
    real_fit = stitching.Decoder.fit
    monkeypatch.setattr(stitching.Decoder, "fit", lambda *a, **k: pytest.fail("retrained a cached decoder"))
    again = stitching.trained_decoder(dataclasses.replace(setup, transform="affine"), "large")
    np.testing.assert_array_equal(again.predict_proba(embeddings["large"]), first.predict_proba(embeddings["large"]))

    entry.write_bytes(entry.read_bytes()[:100])  # torn or corrupted on disk
    monkeypatch.setattr(stitching.Decoder, "fit", real_fit)
    with pytest.warns(UserWarning, match=r"decoder-.*\.npz is damaged; retraining the decoder of large"):
        retrained = stitching.trained_decoder(setup, "large")
    np.testing.assert_array_equal(retrained.coef_, first.coef_)
    assert np.load(entry, allow_pickle=False)["coef"].shape == first.coef_.shape  # rewritten whole


def test_records_do_not_depend_on_the_number_of_jobs(spaces, tmp_path, monkeypatch):
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    embeddings, labels = spaces
    for transform in ("affine", "ortho"):
        setup = StitchingSetup(embeddings, labels, np.arange(500), np.arange(500, 800), transform, [4, 32], [0, 1],
                               task="multilabel", jobs=1)
        one = stitching_records(setup, progress=False)
        (tmp_path / "records").rename(tmp_path / f"records-{transform}")  # the few-shot baseline is recomputed too
        assert stitching_records(dataclasses.replace(setup, jobs=2), progress=False) == one


def test_targets_keep_only_the_pairs_into_them(spaces, tmp_path, monkeypatch):
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    embeddings, labels = spaces
    three = {**embeddings, "third": embeddings["small"][:, ::-1] + 0.1}
    setup = StitchingSetup(three, labels, np.arange(500), np.arange(500, 800), "ortho",
                           anchor_counts=[32], seeds=[0], task="multilabel", targets=["large"])
    assert setup.pairs() == [("small", "large"), ("third", "large")]
    every = pd.DataFrame(stitching_records(dataclasses.replace(setup, targets=[]), progress=False))
    only = pd.DataFrame(stitching_records(setup, progress=False))
    for method in ("aligned", "naive"):
        assert set(zip(only[only["method"] == method]["source"], only[only["method"] == method]["target"])) == \
            set(setup.pairs())
    assert set(only[only["method"] == "few_shot"]["source"]) == {"small", "third"}  # sources only
    assert set(only[only["method"] == "upper_bound"]["source"]) == set(three)  # every encoder's own decoder
    keys = ["method", "source", "target", "n_anchors", "seed", "metric", "split"]
    merged = only.merge(every, on=keys, suffixes=("", "_every"), validate="one_to_one")
    assert len(merged) == len(only) and (merged["value"] == merged["value_every"]).all()  # same numbers, fewer rows


def test_bad_targets_are_refused_in_one_line(spaces):
    embeddings, labels = spaces
    split = dict(labels=labels, train=np.arange(500), test=np.arange(500, 800), transform="ortho",
                 anchor_counts=[32], seeds=[0])
    with pytest.raises(SemalignError, match=r"targets \['nope'\] are not among the encoders"):
        StitchingSetup(embeddings, targets=["nope"], **split).pairs()
    with pytest.raises(SemalignError, match="no encoder pair to stitch"):
        StitchingSetup({"small": embeddings["small"]}, targets=["small"], **split).pairs()
    assert len(StitchingSetup(embeddings, targets=["small", "large"], **split).pairs()) == 2  # both orders


def test_the_sweep_fits_on_the_notebook_s_device(spaces, tmp_path, monkeypatch):
    """A notebook on a GPU fits its transforms there. The device path (torch) is run
    here on the CPU, under a device name that is not "cpu": the records agree
    with the host path's up to rounding, and every fit was asked for that device."""
    from semalign.experiments import stitching

    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    embeddings, labels = spaces
    setup = StitchingSetup(embeddings, labels, np.arange(500), np.arange(500, 800), "affine", [8, 64], [0],
                           task="multilabel", jobs=1)
    host = pd.DataFrame(stitching_records(setup, progress=False))
    asked = []

    class Recording(stitching.Aligner):
        def __init__(self, *args, device="cpu", **kwargs):
            asked.append(device)
            super().__init__(*args, device=device, **kwargs)

    monkeypatch.setattr(stitching, "Aligner", Recording)
    monkeypatch.setattr(stitching, "pick_device", lambda device: "cpu:0" if device == "auto" else device)
    on_device = pd.DataFrame(stitching_records(dataclasses.replace(setup, device="auto"), progress=False))
    assert set(asked) == {"cpu", "cpu:0"}  # naive stitching needs no fit and stays on the host
    assert asked.count("cpu:0") == 2 * 2 + 2  # counts × pairs, and the rounding check at the largest count
    keys = ["method", "source", "target", "n_anchors", "seed", "metric", "split"]
    merged = host.merge(on_device, on=keys, suffixes=("", "_device"), validate="one_to_one")
    assert len(merged) == len(host) == len(on_device)
    aligned = merged[(merged["method"] == "aligned") & (merged["metric"] == "macro_auroc")]
    np.testing.assert_allclose(aligned["value_device"], aligned["value"], atol=1e-3)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a CUDA GPU")
def test_a_sweep_asked_to_fit_on_a_missing_gpu_says_so_in_one_line(spaces):
    embeddings, labels = spaces
    setup = StitchingSetup(embeddings, labels, np.arange(500), np.arange(500, 800), "linear", [8], [0], device="cuda")
    with pytest.raises(SemalignError, match="device='cuda' was asked for but torch sees no CUDA GPU"):
        stitching_records(setup, progress=False)
