"""The study-made radiology BERT: tokenizer, masking, training, caching, its spec.

A tiny configuration (2 layers, 32-d, a few steps) on 40 synthetic reports keeps
every build to a second or two; each test isolates the encoder cache in its own
folder.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file


from semalign.models import radiology_bert
from semalign.models.training import ENCODER_FILE, encoder_folder, length_grouped_batches
from semalign.core.cache import folder_is_intact
from semalign.data.reports import ReportSet
from semalign.models.embed import embed
from semalign.core.errors import SemalignError
from semalign.models.radiology_bert import RadiologyBertConfig, build_radiology_bert, radiology_bert_spec

TINY = RadiologyBertConfig(
    vocab_size=300,
    min_frequency=1,
    hidden_size=32,
    layers=2,
    heads=2,
    intermediate_size=64,
    max_length=32,
    mlm_steps=3,
    mlm_batch_size=8,
    contrastive_steps=2,
    contrastive_batch_size=4,
)


def cache_dir(reports: ReportSet, config: RadiologyBertConfig):
    """Where build_radiology_bert keeps the encoder of these reports and config."""
    return encoder_folder(radiology_bert.FOLDER_PREFIX, radiology_bert.cache_inputs(reports, config))


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


def weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One tiny encoder (seed 0): (folder, cache dir)."""
    cache = tmp_path_factory.mktemp("encoder-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEMALIGN_CACHE", str(cache))
        state, threads = torch.random.get_rng_state(), torch.get_num_threads()
        folder = build_radiology_bert(make_reports(), TINY, progress=False)
        assert torch.equal(torch.random.get_rng_state(), state), "training changed the global torch RNG state"
        assert torch.get_num_threads() == threads, "training changed torch's thread count"
    return folder, cache


def test_folder_loads_with_auto_classes_and_describes_itself(built):
    from transformers import AutoModel, AutoTokenizer

    folder, cache = built
    assert folder.parent == cache.resolve() / "encoders" and folder.name.startswith("radiology-bert-")
    model = AutoModel.from_pretrained(folder)
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 32
    assert model.config.num_hidden_layers == 2 and model.config.max_position_embeddings == 32
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("The HEART is enlarged.")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id == 2 and ids[-1] == tokenizer.sep_token_id == 3
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ["the", "heart", "is", "enlarged", "."]  # lower-cased words
    assert tokenizer.model_max_length == 32 and len(tokenizer) == model.config.vocab_size < 300
    desc = json.loads((folder / "semalign_encoder.json").read_text())
    assert desc["kind"] == "radiology-bert" and desc["pooling"] == "mean" and desc["embedding_dim"] == 32
    assert desc["n_training_texts"] == 40 and desc["n_training_pairs"] == 40 and desc["config"]["mlm_steps"] == 3
    assert desc["training"]["mlm"]["steps"] == 3 and desc["training"]["contrastive"]["steps"] == 2
    losses = [desc["training"][stage]["loss"]["first"] for stage in ("mlm", "contrastive")]
    assert all(np.isfinite(losses)) and losses[0] > np.log(len(tokenizer)) / 2  # MLM starts near uniform guessing


def test_only_safetensors_and_no_partial_folders(built):
    folder, cache = built
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {"model.safetensors", "config.json", "tokenizer.json", "semalign_encoder.json"} <= {p.name for p in files}
    assert not [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}]
    # a pickle stream starts with the PROTO opcode 0x80; torch.save zips start with PK
    assert not [p for p in files if p.read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK")]
    assert [p.name for p in (cache / "encoders").iterdir()] == [folder.name]
    assert "pooler.dense.weight" in weights(folder)  # a complete BertModel: AutoModel initialises nothing


def test_its_spec_embeds_through_the_hf_text_family(built, monkeypatch):
    folder, cache = built
    monkeypatch.setenv("SEMALIGN_CACHE", str(cache))
    monkeypatch.setattr(radiology_bert, "_train", lambda *a, **k: pytest.fail("trained again"))
    spec = radiology_bert_spec(make_reports(), TINY, progress=False)
    assert (spec.name, spec.family, spec.domain, spec.pooling, spec.source) == (
        "radiology-bert", "hf-text", "medical", "mean", str(folder))
    reports = make_reports(6)
    vectors = embed(spec, reports.ids, reports.texts, precision="fp32", progress=False)
    assert vectors.shape == (6, 32) and np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)


def test_build_is_deterministic_across_cache_folders(built, tmp_path, monkeypatch, capsys):
    folder, _ = built
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(12345)  # the caller's global RNG state must not matter
        again = build_radiology_bert(make_reports(), TINY, progress=True)
    assert "training radiology-bert" in capsys.readouterr().err  # the progress bar
    assert again != folder and again.name == folder.name
    assert (again / "tokenizer.json").read_bytes() == (folder / "tokenizer.json").read_bytes()
    first, second = weights(folder), weights(again)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_second_call_is_a_cache_hit_and_inputs_change_the_key(built, monkeypatch):
    folder, cache = built
    monkeypatch.setenv("SEMALIGN_CACHE", str(cache))
    monkeypatch.setattr(radiology_bert, "_train", lambda *a, **k: pytest.fail("trained again"))
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    reports = make_reports()
    shuffled = reports.subset(np.random.default_rng(1).permutation(len(reports)))
    assert build_radiology_bert(reports, TINY) == folder
    assert build_radiology_bert(shuffled, TINY) == folder  # the key does not depend on report order
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    edited = make_reports()
    edited.extra.loc[0, "findings"] = "Large right pleural effusion."
    assert cache_dir(edited, TINY) != folder
    assert cache_dir(make_reports(39), TINY) != folder
    assert cache_dir(reports, RadiologyBertConfig(**{**vars(TINY), "seed": 1})) != folder


def test_damaged_entry_is_rebuilt(built, tmp_path, monkeypatch):
    folder, _ = built
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    first = build_radiology_bert(make_reports(), TINY, progress=False)
    damaged = bytearray((first / "model.safetensors").read_bytes())
    damaged[-1] ^= 0xFF
    (first / "model.safetensors").write_bytes(bytes(damaged))
    calls = []
    real_train = radiology_bert._train
    monkeypatch.setattr(radiology_bert, "_train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    with pytest.warns(UserWarning, match="damaged"):
        again = build_radiology_bert(make_reports(), TINY, progress=False)
    assert calls == [1] and again == first and folder_is_intact(again, ENCODER_FILE, "model.safetensors", ("config.json",))
    assert (again / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


def test_interrupted_build_leaves_nothing_that_looks_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))

    def interrupted(folder, *args, **kwargs):
        (folder / "model.safetensors").write_bytes(b"half a file")
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(radiology_bert, "_train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_radiology_bert(make_reports(), TINY, progress=False)
    assert not list((tmp_path / "encoders").iterdir())


def test_vocabulary_is_the_same_on_every_training():
    # without the fixed ##-piece ids the tokenizers trainer breaks count ties differently run to run
    texts = radiology_bert.training_texts(make_reports())
    vocabularies = [radiology_bert.train_tokenizer(texts, 120, 1, 32).get_vocab() for _ in range(5)]
    assert all(v == vocabularies[0] for v in vocabularies)
    assert 60 < len(vocabularies[0]) <= 120  # the limit reached: merges were chosen among ties


def test_masking_follows_bert_proportions_and_spares_special_tokens():
    ids = torch.randint(5, 1000, (200, 100), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, :2] = False
    draw = lambda seed: radiology_bert.mask_tokens(ids, maskable, 4, 1000, 0.15, torch.Generator().manual_seed(seed))  # noqa: E731
    corrupted, chosen = draw(0)
    assert not chosen[:, :2].any() and torch.equal(corrupted[~chosen], ids[~chosen])
    assert abs(chosen.float().mean().item() / 0.98 - 0.15) < 0.01
    masked = (corrupted[chosen] == 4).float().mean().item()
    kept = (corrupted[chosen] == ids[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.02  # (random ids that hit the original count as kept)
    assert corrupted.min() >= 4  # random replacements are never special tokens
    assert torch.equal(draw(0)[0], corrupted) and not torch.equal(draw(1)[0], corrupted)
    one = torch.zeros_like(maskable)
    one[3, 7] = True
    assert radiology_bert.mask_tokens(ids, one, 4, 1000, 1e-9, torch.Generator().manual_seed(0))[1].sum() == 1


def test_inputs_it_cannot_train_on_are_errors_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(radiology_bert, "_train", lambda *a, **k: pytest.fail("should not train"))
    with pytest.raises(SemalignError, match=r"only 3 of the 40 .*contrastive_batch_size=4.*at most 3"):
        build_radiology_bert(make_reports(40, with_impression=3), TINY)
    with pytest.raises(SemalignError, match="findings"):
        build_radiology_bert(ReportSet("table", ["a"], ["text"], pd.DataFrame({"x": [0]}), {}), TINY)
    with pytest.raises(SemalignError, match="heads"):
        RadiologyBertConfig(hidden_size=30, heads=4)
    with pytest.raises(SemalignError, match="mask_probability"):
        RadiologyBertConfig(mask_probability=0)


def test_training_pairs_need_both_sections_and_are_sorted():
    reports = make_reports(10, with_impression=6)
    shuffled = reports.subset(np.arange(10)[::-1])
    ids, findings, impressions = radiology_bert.training_pairs(shuffled)
    assert ids == sorted(f"CXR{i}" for i in range(6))
    assert all(f and i for f, i in zip(findings, impressions))


def test_batches_are_full_seeded_and_without_repeats_within_an_epoch():
    lengths = list(np.random.default_rng(0).integers(5, 100, size=50))
    draw = lambda seed, group: list(length_grouped_batches(lengths, 8, 6, torch.Generator().manual_seed(seed), group))  # noqa: E731
    batches = draw(0, 4)
    assert len(batches) == 6 and all(len(b) == 8 for b in batches)
    assert len({i for b in batches for i in b}) == 48  # one epoch of 6 full batches, no index twice
    assert batches == draw(0, 4) and batches != draw(1, 4)
    spread = lambda bs: np.mean([np.ptp([lengths[i] for i in b]) for b in bs])  # noqa: E731
    assert spread(batches) < spread(draw(0, 0))  # grouping by length narrows each batch


def test_contrastive_loss_and_duplicate_mask():
    a = torch.eye(3)[[0, 1, 2, 2]]  # pairs 2 and 3 share one findings text
    loss = radiology_bert.contrastive_loss(a, a, scale=20.0)
    assert loss > 0.3  # unmasked, each of the duplicate pair is the other's hardest negative
    mask = radiology_bert._duplicate_mask(["f0", "f1", "f2", "f2"], ["i0", "i1", "i2", "i3"])
    assert mask.tolist()[2] == [False, False, False, True] and not mask.diagonal().any()
    assert radiology_bert.contrastive_loss(a, a, 20.0, mask) < 0.01
