"""The embedding cache: warm reads without a model, invalidation, damage, resumption."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from semalign.models import embed as embed_mod  # noqa: E402
from semalign.models import encoders  # noqa: E402
from semalign.models.embed import embed  # noqa: E402
from semalign.models.encoders import EncoderSpec  # noqa: E402
from semalign.core.errors import SemalignError  # noqa: E402

TEXTS = [
    "No acute cardiopulmonary abnormality.",
    "Heart size is normal and the lungs are clear.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Stable cardiomegaly.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "Degenerative changes of the thoracic spine.",
    "No pneumothorax.",
    "Calcified granuloma in the right upper lobe, unchanged from the prior examination.",
    "Interval removal of the left chest tube without residual pneumothorax.",
    "Low lung volumes.",
    "Mild pulmonary edema.",
    "Normal chest x-XXXX.",
    "Emphysematous changes.",
]
IDS = [f"report-{i:03d}" for i in range(len(TEXTS))]


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def minilm():
    return encoders.load_encoder("minilm", device="cpu")


def count_loads(monkeypatch, loaded=None):
    """Patch the loader to count model loads (handing out ``loaded`` if given)."""
    calls = []
    real = encoders.load_encoder

    def loader(*args, **kwargs):
        calls.append(args[0])
        return loaded if loaded is not None else real(*args, **kwargs)

    monkeypatch.setattr(encoders, "load_encoder", loader)
    return calls


def forbid_loads(monkeypatch):
    def loader(*args, **kwargs):
        raise AssertionError("the model was loaded although the cache is warm")

    monkeypatch.setattr(encoders, "load_encoder", loader)


def entry(cache_root):
    (folder,) = (cache_root / "embeddings").iterdir()
    return folder


def test_warm_cache_does_not_load_the_model(isolated_cache, monkeypatch, minilm):
    calls = count_loads(monkeypatch)
    first = embed("minilm", IDS, TEXTS, shard_size=5, progress=False)
    assert calls == ["minilm"]
    assert first.shape == (len(TEXTS), 384) and first.dtype == np.float32
    assert np.abs(first - minilm.encode(TEXTS)).max() <= 1e-5
    folder = entry(isolated_cache)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] and manifest["dim"] == 384 and manifest["n"] == len(TEXTS)
    assert [s["file"] for s in manifest["shards"]] == [f"shard-0000{k}.safetensors" for k in range(3)]
    assert manifest["fingerprint"] == minilm.fingerprint and manifest["spec"]["name"] == "minilm"

    forbid_loads(monkeypatch)
    second = embed("minilm", IDS, TEXTS, shard_size=5, progress=False)
    assert np.array_equal(first, second)
    # a loaded encoder with the same fingerprint reads the same entry
    assert np.array_equal(embed(minilm, IDS, TEXTS, progress=False), first)
    # another precision is another entry: it must compute
    with pytest.raises(AssertionError, match="cache is warm"):
        embed("minilm", IDS, TEXTS, precision="bf16", progress=False)


def test_changed_text_invalidates(isolated_cache, monkeypatch, minilm):
    before = embed(minilm, IDS, TEXTS, shard_size=5, progress=False)
    changed = list(TEXTS)
    changed[6] = "Large right pneumothorax."
    calls = count_loads(monkeypatch, minilm)
    after = embed("minilm", IDS, changed, shard_size=5, progress=False)
    assert calls == ["minilm"]
    assert np.abs(after[6] - minilm.encode([changed[6]])[0]).max() <= 1e-5
    assert np.abs(after[6] - before[6]).max() > 1e-2
    unchanged = [i for i in range(len(TEXTS)) if i != 6]
    assert np.abs(after[unchanged] - before[unchanged]).max() <= 1e-5
    assert len(list((isolated_cache / "embeddings").iterdir())) == 2  # both inputs stay cached
    # other ids, same texts: another entry as well
    embed(minilm, [f"x{i}" for i in range(len(TEXTS))], TEXTS, progress=False)
    assert len(list((isolated_cache / "embeddings").iterdir())) == 3


def test_corrupted_shard_is_reported_and_recomputed(isolated_cache, monkeypatch, minilm):
    first = embed(minilm, IDS, TEXTS, shard_size=5, progress=False)
    shard = entry(isolated_cache) / "shard-00001.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(UserWarning, match="shard-00001.safetensors"):
        again = embed("minilm", IDS, TEXTS, shard_size=5, progress=False)
    assert np.abs(again - first).max() <= 1e-6
    # repaired: read back silently, without the model
    forbid_loads(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = embed("minilm", IDS, TEXTS, shard_size=5, progress=False)
    assert np.array_equal(third, again)
    # flipped bytes (same size) are caught by the checksum too
    data = bytearray(shard.read_bytes())
    data[-8:] = b"\x00\x00\xc0\x7f" * 2  # NaNs in the last row
    shard.write_bytes(bytes(data))
    monkeypatch.undo()
    monkeypatch.setenv("SEMALIGN_CACHE", str(isolated_cache))
    with pytest.warns(UserWarning, match="corrupted"):
        fourth = embed("minilm", IDS, TEXTS, shard_size=5, progress=False)
    assert np.isfinite(fourth).all() and np.abs(fourth - first).max() <= 1e-6


class FlakyTexts:
    """A lazy sequence of texts that fails once, mid-extraction, at item ``fail_at``."""

    def __init__(self, texts, fail_at):
        self.texts, self.fail_at, self.reads, self.failed = texts, fail_at, {}, False

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        self.reads[i] = self.reads.get(i, 0) + 1
        # the first read of every item is the content hash; the second is the extraction
        if i == self.fail_at and self.reads[i] == 2 and not self.failed:
            self.failed = True
            raise RuntimeError("disk went away")
        return self.texts[i]


def test_interrupted_extraction_resumes(isolated_cache, monkeypatch, minilm):
    reference = embed(minilm, IDS, TEXTS, cache=False, progress=False)
    assert not (isolated_cache / "embeddings").exists()  # cache=False writes nothing

    monkeypatch.setattr(embed_mod, "BLOCK", 5)  # one block a shard: the first shard is done when item 7 fails
    flaky = FlakyTexts(TEXTS, fail_at=7)  # in the second shard of 5
    with pytest.raises(RuntimeError, match="disk went away"):
        embed("minilm", IDS, flaky, shard_size=5, progress=False)
    folder = entry(isolated_cache)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["shards"][0] is not None
    assert sorted(p.name for p in folder.glob("shard-*")) == ["shard-00000.safetensors"]
    first_shard_mtime = (folder / "shard-00000.safetensors").stat().st_mtime_ns

    calls = count_loads(monkeypatch, minilm)
    resumed = embed("minilm", IDS, flaky, shard_size=100, progress=False)  # keeps the entry's shard size
    assert calls == ["minilm"]
    assert (folder / "shard-00000.safetensors").stat().st_mtime_ns == first_shard_mtime  # not recomputed
    assert flaky.reads[0] == 3  # hashed in both calls, extracted only in the first
    assert np.abs(resumed - reference).max() <= 1e-6
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] and manifest["shard_size"] == 5 and len(manifest["shards"]) == 3


def test_shard_size_changes_storage_not_numbers(isolated_cache, monkeypatch, minilm, record_property):
    """Texts are length-sorted (and batched) within a block, never within a shard:
    the shard size a user picks moves no bit of any embedding, text or image."""
    record_property("rerun", "the shard size moves no bit of any embedding")
    monkeypatch.setattr(embed_mod, "BLOCK", 6)  # three blocks of the 13 texts
    texts = TEXTS[:7] + [TEXTS[2]] + TEXTS[8:]  # a repeat across shards of 3, within one block
    per_size = {size: embed(minilm, IDS, texts, shard_size=size, cache=False, progress=False) for size in (1, 3, 4, 13)}
    for size, rows in per_size.items():
        assert np.array_equal(rows, per_size[13]), size
    assert np.array_equal(per_size[3][7], per_size[3][2])  # the repeat is encoded once
    # what a cold run writes with one shard size, a warm run reads back bit for bit
    written = embed(minilm, IDS, texts, shard_size=4, progress=False)
    forbid_loads(monkeypatch)
    assert np.array_equal(embed("minilm", IDS, texts, shard_size=13, progress=False), written)
    assert np.array_equal(written, per_size[13])

    monkeypatch.undo()  # loads allowed again; the block of 6 goes with it
    monkeypatch.setattr(embed_mod, "BLOCK", 4)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(7, 64, 64), dtype=np.uint8)
    lite0 = encoders.load_encoder("effnet-lite0", device="cpu")
    by_size = [embed(lite0, [f"i{i}" for i in range(7)], images, shard_size=size, batch_size=3, cache=False,
                     progress=False) for size in (1, 3, 7)]
    assert all(np.array_equal(rows, by_size[-1]) for rows in by_size)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_processes_that_share_an_entry_fill_it_as_one_process_does(tmp_path, monkeypatch, minilm):
    """``share=(rank, world)`` (semalign embed under accelerate): each process
    computes whole blocks of its own and lists its shards in a part file; the
    merge writes the manifest one process would have written, byte for byte."""
    monkeypatch.setattr(embed_mod, "BLOCK", 4)  # blocks 0..3 of the 13 texts, dealt 0, 1, 0, 1
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path / "one"))
    alone = embed(minilm, IDS, TEXTS, shard_size=2, progress=False)
    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path / "two"))
    assert embed(minilm, IDS, TEXTS, shard_size=2, progress=False, share=(1, 2)) is None  # any order
    folder = entry(tmp_path / "two")
    assert not (folder / "manifest.json").exists()
    part = json.loads((folder / "part-00001.json").read_text())
    assert [bool(r) for r in part["shards"]] == [False, False, True, True, False, False, True]  # blocks 1 and 3
    assert embed(minilm, IDS, TEXTS, shard_size=2, progress=False, share=(0, 2)) is None
    assert embed_mod.merge_parts(folder.name) is True
    assert not list(folder.glob("part-*"))
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
    forbid_loads(monkeypatch)
    assert np.array_equal(embed("minilm", IDS, TEXTS, shard_size=2, progress=False), alone)


def test_a_single_process_call_completes_a_shared_entry(isolated_cache, monkeypatch, minilm):
    """A notebook that runs after only some processes finished reads their
    shards, computes the rest and writes the manifest; a part of another entry's
    identity is ignored with a warning."""
    monkeypatch.setattr(embed_mod, "BLOCK", 4)
    alone = embed(minilm, IDS, TEXTS, shard_size=2, cache=False, progress=False)
    embed(minilm, IDS, TEXTS, shard_size=2, progress=False, share=(0, 2))
    folder = entry(isolated_cache)
    stray = json.loads((folder / "part-00000.json").read_text())
    (folder / "part-00003.json").write_text(json.dumps({**stray, "fingerprint": "another-model"}))
    written = {p.name: p.stat().st_mtime_ns for p in folder.glob("shard-*")}
    with pytest.warns(UserWarning, match="belongs to another run"):
        rows = embed(minilm, IDS, TEXTS, shard_size=2, progress=False)
    assert np.array_equal(rows, alone)
    assert all((folder / name).stat().st_mtime_ns == t for name, t in written.items())  # read, not recomputed
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] and not list(folder.glob("part-*"))
    with pytest.raises(SemalignError, match="0 <= rank < world"):
        embed(minilm, IDS, TEXTS, share=(2, 2), progress=False)


def test_batch_size_moves_only_rounding(isolated_cache, minilm):
    """Batch size decides which texts share a batch, so fp32 rounding differs in
    the last bits (BLAS blocks the products by shape); never more than that."""
    one = embed(minilm, IDS, TEXTS, batch_size=1, cache=False, progress=False)
    many = embed(minilm, IDS, TEXTS, batch_size=13, cache=False, progress=False)
    assert np.abs(one - many).max() < 1e-5


class FakeEncoder:
    """An encoder whose model returns NaN for some rows."""

    def __init__(self, bad_rows):
        self.spec = EncoderSpec(name="broken-model", modality="text", family="hf-text", source="/nowhere")
        self.fingerprint, self.dim, self.bad_rows = "fake-fingerprint", 4, bad_rows

    def encode(self, texts, batch_size=None, callback=None):
        out = np.ones((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            if t in self.bad_rows:
                out[i, 1] = np.nan
        return out


def test_nan_output_is_an_error(isolated_cache):
    fake = FakeEncoder(bad_rows={TEXTS[1], TEXTS[3]})
    with pytest.raises(SemalignError, match=r"broken-model.*2 of"):
        embed(fake, IDS, TEXTS, progress=False)
    assert not list(isolated_cache.glob("embeddings/*/*"))  # nothing cached from a failed shard
    ok = embed(FakeEncoder(bad_rows=set()), IDS, TEXTS, progress=False)
    assert ok.shape == (len(TEXTS), 4) and np.isfinite(ok).all()


def test_images_stream_from_a_callable(isolated_cache, monkeypatch):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size=(64 + 8 * i, 72), dtype=np.uint8) for i in range(5)]
    images[2] = np.repeat(images[2][..., None], 3, axis=-1)  # one RGB among gray images
    ids = [f"img{i}" for i in range(5)]
    reads = []

    def load(i):
        reads.append(i)
        return images[i]

    lite0 = encoders.load_encoder("effnet-lite0", device="cpu")
    out = embed(lite0, ids, load, shard_size=2, batch_size=2, progress=False)
    assert out.shape == (5, 1280)
    direct = np.concatenate([lite0.encode([im]) for im in images])
    assert np.abs(out - direct).max() < 1e-4
    assert sorted(set(reads)) == list(range(5))
    forbid_loads(monkeypatch)
    assert np.array_equal(embed("effnet-lite0", ids, load, progress=False), out)
    # a changed pixel is a changed image
    images[4] = images[4].copy()
    images[4][0, 0] ^= 1
    with pytest.raises(AssertionError, match="cache is warm"):
        embed("effnet-lite0", ids, load, progress=False)


def test_bad_inputs(isolated_cache, minilm):
    with pytest.raises(SemalignError, match="unique"):
        embed(minilm, ["a", "a"], ["x", "y"], progress=False)
    with pytest.raises(SemalignError, match="2 ids but 3 items"):
        embed(minilm, ["a", "b"], ["x", "y", "z"], progress=False)
    with pytest.raises(SemalignError, match="strings"):
        embed(minilm, [1, 2], ["x", "y"], progress=False)
    with pytest.raises(SemalignError, match="text encoder needs strings"):
        embed(minilm, ["a"], [b"bytes"], progress=False)
    with pytest.raises(SemalignError, match="unknown encoder"):
        embed("no-such-encoder", ["a"], ["x"], progress=False)
    assert embed(minilm, [], [], progress=False).shape == (0, 384)


def test_manifest_holds_no_pickle(isolated_cache, minilm):
    embed(minilm, IDS, TEXTS, shard_size=5, progress=False)
    folder = entry(isolated_cache)
    assert sorted(p.suffix for p in folder.iterdir()) == [".json"] + [".safetensors"] * 3
    from safetensors.numpy import load_file

    rows = load_file(str(folder / "shard-00002.safetensors"))[embed_mod._TENSOR]
    assert rows.shape == (3, 384)


class CountingEncoder(FakeEncoder):
    """A fake encoder that records what it was asked to encode; row i of a call is i + its text's length."""

    def __init__(self):
        super().__init__(bad_rows=set())
        self.calls = []

    def encode(self, texts, batch_size=None, callback=None):
        self.calls.append(list(texts))
        return np.array([[len(t), i, 0, 0] for i, t in enumerate(texts)], np.float32)


def test_repeated_texts_are_encoded_once(isolated_cache):
    texts = [TEXTS[0], TEXTS[1], TEXTS[0], TEXTS[2], TEXTS[1], TEXTS[0]]
    fake = CountingEncoder()
    out = embed(fake, [f"r{i}" for i in range(len(texts))], texts, progress=False, cache=False)
    assert fake.calls == [[TEXTS[0], TEXTS[1], TEXTS[2]]]  # first appearance order, each once
    assert out[:, 1].tolist() == [0, 1, 0, 2, 1, 0]  # every row gets its own text's embedding
    assert out[:, 0].tolist() == [len(t) for t in texts]
