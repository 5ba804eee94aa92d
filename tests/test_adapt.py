"""The radiology-adapted MiniLM: training, determinism, caching and atomicity.

Tiny settings (40 synthetic reports, 3 steps of 4 pairs) keep every build to a
few seconds; each test isolates the encoder cache in its own folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from semalign.models import radiology_minilm as adapt
from semalign.models.radiology_minilm import AdaptConfig, adapt_text_encoder
from semalign.data.reports import ReportSet
from semalign.errors import SemalignError
from semalign.study.cache import folder_is_intact

TINY = AdaptConfig(steps=3, batch_size=4, seed=0)

_ORGANS = ["heart", "lungs", "mediastinum", "pleural space", "bony thorax", "diaphragm", "hilum", "trachea"]
_STATES = ["normal in size", "clear", "within normal limits", "enlarged", "opacified", "unremarkable", "shifted", "calcified"]


def make_reports(n: int = 40, with_impression: int | None = None) -> ReportSet:
    """``n`` small synthetic reports; only the first ``with_impression`` have an IMPRESSION."""
    with_impression = n if with_impression is None else with_impression
    findings = [
        f"The {_ORGANS[i % 8]} is {_STATES[(3 * i) % 8]}. "
        f"The {_ORGANS[(i + 3) % 8]} is {_STATES[(5 * i + 1) % 8]}. Case {i}."
        for i in range(n)
    ]
    impressions = [
        f"{_STATES[(3 * i) % 8].capitalize()} {_ORGANS[i % 8]}, finding {i % 7}." if i < with_impression else ""
        for i in range(n)
    ]
    ids = [f"CXR{i}" for i in range(n)]
    texts = [" ".join(p for p in pair if p) for pair in zip(findings, impressions)]
    return ReportSet(
        "synthetic reports",
        ids,
        texts,
        pd.DataFrame({"normal": [i % 2 for i in range(n)]}),
        {},
        pd.DataFrame({"findings": findings, "impression": impressions}),
    )


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def base_weights() -> dict[str, torch.Tensor]:
    return weights(adapt.base_model_path())


def encode_texts(folder: Path, texts: list[str]) -> np.ndarray:
    """Unit-norm mean-pooled embeddings (one row per text) from a model folder, on one thread."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode(), adapt._torch_threads(1):
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
        return adapt.mean_pool(model(**batch).last_hidden_state, batch["attention_mask"]).numpy()


def cache_dir(reports: ReportSet, config: AdaptConfig) -> Path:
    """Where adapt_text_encoder keeps the encoder of these reports and config."""
    return adapt.encoder_folder(adapt.FOLDER_PREFIX, adapt.cache_inputs(reports, config))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One tiny encoder (seed 0): (folder, cache dir)."""
    cache = tmp_path_factory.mktemp("encoder-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEMALIGN_CACHE", str(cache))
        state, threads = torch.random.get_rng_state(), torch.get_num_threads()
        folder = adapt_text_encoder(make_reports(), TINY, progress=False)
        assert torch.equal(torch.random.get_rng_state(), state), "training changed the global torch RNG state"
        assert torch.get_num_threads() == threads, "training changed torch's thread count"
    return folder, cache


def test_folder_is_a_hugging_face_model_with_a_description(built):
    from transformers import AutoModel, AutoTokenizer

    folder, cache = built
    assert folder.parent == cache.resolve() / "encoders" and folder.name.startswith("radiology-minilm-")
    model = AutoModel.from_pretrained(folder)
    assert model.config.hidden_size == 384
    assert AutoTokenizer.from_pretrained(folder)("pleural effusion")["input_ids"][0] == 101  # [CLS]
    desc = json.loads((folder / "semalign_encoder.json").read_text())
    assert desc["pooling"] == "mean" and desc["normalize"] is True and desc["max_length"] == 128
    assert desc["base_model_sha256"] == adapt.file_sha256(adapt.base_model_path() / "model.safetensors")
    assert desc["n_training_pairs"] == 40 and len(desc["training_ids_sha256"]) == 64
    assert desc["config"]["steps"] == 3 and desc["config"]["batch_size"] == 4
    assert desc["training"]["steps"] == 3 and len(desc["training"]["loss"]["curve"]) == 3
    assert all(np.isfinite(point["mean"]) for point in desc["training"]["loss"]["curve"])


def test_only_safetensors_and_no_partial_folders(built):
    folder, cache = built
    files = [p for p in folder.rglob("*") if p.is_file()]
    expected = {"model.safetensors", "config.json", "tokenizer.json", "semalign_encoder.json", "modules.json"}
    assert expected <= {p.name for p in files}
    assert not [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}]
    # a pickle stream starts with the PROTO opcode 0x80; torch.save zips start with PK
    assert not [p for p in files if p.read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK")]
    assert [p.name for p in (cache / "encoders").iterdir()] == [folder.name]


def test_trained_layers_move_and_frozen_ones_do_not(built):
    folder, _ = built
    base, new = base_weights(), weights(folder)
    assert new.keys() <= base.keys() and len(new) >= 100  # the base also stores a position_ids buffer
    moved = {name for name in new if not torch.equal(base[name], new[name])}
    assert any(name.startswith("encoder.layer.5.") for name in moved)
    assert not [name for name in moved if name.startswith(("embeddings.", "encoder.layer.0.", "encoder.layer.2."))]


def test_embeddings_differ_from_the_base_and_are_unit_norm(built):
    folder, _ = built
    texts = make_reports(6).texts
    before = encode_texts(adapt.base_model_path(), texts)
    after = encode_texts(folder, texts)
    assert after.shape == (6, 384) and np.allclose(np.linalg.norm(after, axis=1), 1, atol=1e-5)
    assert not np.allclose(before, after, atol=1e-4)


def test_build_is_deterministic_across_cache_folders(built, tmp_path, monkeypatch, capsys):
    folder, _ = built
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(12345)  # the caller's global RNG state must not matter
        again = adapt_text_encoder(make_reports(), TINY, progress=True)
    assert "adapting MiniLM on radiology reports" in capsys.readouterr().err  # the progress bar
    assert again != folder and again.name == folder.name
    first, second = weights(folder), weights(again)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_second_call_returns_the_cache_without_training(built, monkeypatch):
    folder, cache = built
    monkeypatch.setenv("SEMALIGN_CACHE", str(cache))
    calls = []
    monkeypatch.setattr(adapt, "_train", lambda *args, **kwargs: calls.append(args) or pytest.fail("trained again"))
    reports = make_reports()
    shuffled = reports.subset(np.random.default_rng(1).permutation(len(reports)))
    assert adapt_text_encoder(reports, TINY) == folder
    assert adapt_text_encoder(shuffled, TINY) == folder  # the key does not depend on report order
    assert calls == []
    assert cache_dir(reports, AdaptConfig(steps=4, batch_size=4)) != folder
    edited = make_reports()
    edited.extra.loc[0, "impression"] = "Large right pleural effusion."
    assert cache_dir(edited, TINY) != folder


def test_interrupted_build_leaves_nothing_that_looks_valid(built, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    real_train = adapt._train

    def interrupted(folder, *args, **kwargs):
        (folder / "model.safetensors").write_bytes(b"half a file")
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(adapt, "_train", interrupted)
    config = AdaptConfig(steps=3, batch_size=4, seed=1)
    with pytest.raises(KeyboardInterrupt):
        adapt_text_encoder(make_reports(), config, progress=False)
    assert not (tmp_path / "encoders").exists() or not list((tmp_path / "encoders").iterdir())

    calls = []
    monkeypatch.setattr(adapt, "_train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    folder = adapt_text_encoder(make_reports(), config, progress=False)
    assert calls == [1] and folder_is_intact(folder, adapt.ENCODER_FILE, "model.safetensors", ("config.json",))
    assert "adapting MiniLM" not in capsys.readouterr().err  # progress=False: no bar
    assert [p.name for p in (tmp_path / "encoders").iterdir()] == [folder.name]
    # the seed reaches the weights: seed 1 differs from the seed-0 build
    name = "encoder.layer.5.output.dense.weight"
    assert not torch.equal(weights(folder)[name], weights(built[0])[name])


def test_too_few_pairs_is_an_error_naming_the_count_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(adapt, "_train", lambda *a, **k: pytest.fail("should not train"))
    with pytest.raises(SemalignError, match=r"only 3 of the 40 .*batch_size=4.*at most 3"):
        adapt_text_encoder(make_reports(40, with_impression=3), TINY)
    no_sections = ReportSet("table", ["a"], ["text"], pd.DataFrame({"x": [0]}), {})
    with pytest.raises(SemalignError, match="findings"):
        adapt_text_encoder(no_sections, TINY)


def test_bad_config_is_an_error():
    with pytest.raises(SemalignError, match="batch_size"):
        AdaptConfig(batch_size=1)
    with pytest.raises(SemalignError, match="lr"):
        AdaptConfig(lr=0)


def test_training_pairs_need_both_sections_and_are_sorted():
    reports = make_reports(10, with_impression=6)
    shuffled = reports.subset(np.arange(10)[::-1])
    ids, findings, impressions = adapt.training_pairs(shuffled)
    assert ids == sorted(f"CXR{i}" for i in range(6))
    assert all(f and i for f, i in zip(findings, impressions))


def test_batches_are_full_seeded_and_without_repeats_within_an_epoch():
    lengths = list(np.random.default_rng(0).integers(5, 100, size=50))
    draw = lambda seed, group: list(adapt._batches(lengths, 8, 6, torch.Generator().manual_seed(seed), group))  # noqa: E731
    batches = draw(0, 4)
    assert len(batches) == 6 and all(len(b) == 8 for b in batches)
    assert len({i for b in batches for i in b}) == 48  # one epoch of 6 full batches, no index twice
    assert batches == draw(0, 4) and batches != draw(1, 4)
    spread = lambda bs: np.mean([np.ptp([lengths[i] for i in b]) for b in bs])  # noqa: E731
    assert spread(batches) < spread(draw(0, 0))  # grouping by length narrows each batch


def test_contrastive_loss_and_duplicate_mask():
    a = torch.eye(3)[[0, 1, 2, 2]]  # pairs 2 and 3 share one findings text
    loss = adapt.contrastive_loss(a, a, scale=20.0)
    assert loss > 0.3  # unmasked, each of the duplicate pair is the other's hardest negative
    mask = adapt._duplicate_mask(["f0", "f1", "f2", "f2"], ["i0", "i1", "i2", "i3"])
    assert mask.tolist()[2] == [False, False, False, True] and not mask.diagonal().any()
    assert adapt.contrastive_loss(a, a, 20.0, mask) < 0.01
