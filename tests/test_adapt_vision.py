"""The study-made phantom vision encoder: trains only what it says, caches, loads in the registry."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.torch import load_file

from semalign import adapt_vision
from semalign.adapt_vision import VisionAdaptConfig, adapt_vision_encoder
from semalign.encoders import load_encoder
from semalign.errors import SemalignError

TINY = VisionAdaptConfig(steps=2, batch_size=4, image_size=64, train_blocks=2)


@pytest.fixture(scope="module")
def training_set():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 48, 48), dtype=np.uint8)
    labels = rng.integers(0, 2, (12, 6))
    return images, labels


@pytest.fixture(scope="module")
def trained(training_set, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SEMALIGN_CACHE", str(tmp_path_factory.mktemp("cache")))
    path = adapt_vision_encoder(*training_set, TINY, progress=False)
    yield path
    mp.undo()


def test_only_the_last_blocks_change(trained):
    import torch

    base = torch.load(str(adapt_vision._base_weights()), map_location="cpu", weights_only=True)
    tuned = load_file(str(trained))
    assert set(tuned) == set(base)
    changed = {k.split(".")[0] + "." + k.split(".")[1] if k.startswith("_blocks") else k.split(".")[0]
               for k in base if not torch.equal(base[k].float(), tuned[k].float())}
    assert changed, "fine-tuning changed no weight"
    assert changed <= {"_blocks.14", "_blocks.15", "_conv_head", "_bn1"}, changed
    assert torch.equal(base["_fc.weight"], tuned["_fc.weight"])  # ImageNet head kept


def test_cached_and_described(training_set, trained, monkeypatch):
    monkeypatch.setenv("SEMALIGN_CACHE", str(trained.parents[2]))
    before = trained.stat().st_mtime_ns
    monkeypatch.setattr(adapt_vision, "_train", lambda *a, **k: pytest.fail("retrained a cached encoder"))
    assert adapt_vision_encoder(*training_set, TINY, progress=False) == trained
    assert trained.stat().st_mtime_ns == before
    description = (trained.parent / adapt_vision.ENCODER_FILE).read_text()
    assert '"n_training_images": 12' in description and "loss_last_10" in description
    assert not list(trained.parents[1].glob(".*partial"))


def test_registered_encoder_embeds(trained):
    encoder = load_encoder({"name": "tuned", "modality": "vision", "family": "efficientnet-lite",
                            "source": f"efficientnet-lite0:{trained}", "pooling": "gap", "image_size": 64})
    out = encoder.encode(np.zeros((2, 40, 40), np.uint8))
    assert out.shape == (2, 1280) and np.isfinite(out).all()


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (np.zeros((12, 8, 8), np.float32), np.zeros((12, 6)), "uint8"),
        (np.zeros((12, 8, 8), np.uint8), np.full((12, 6), 2), "0/1"),
        (np.zeros((3, 8, 8), np.uint8), np.zeros((3, 6)), "fewer than"),
    ],
)
def test_bad_training_input(images, labels, message):
    with pytest.raises(SemalignError, match=message):
        adapt_vision_encoder(images, labels, TINY, progress=False)


def test_config_range_checked():
    with pytest.raises(SemalignError, match="train_blocks"):
        VisionAdaptConfig(train_blocks=40)


def test_damaged_weights_are_detected_and_rebuilt(training_set, trained, monkeypatch):
    monkeypatch.setenv("SEMALIGN_CACHE", str(trained.parents[2]))
    original = trained.read_bytes()
    data = bytearray(original)
    data[-100] ^= 0xFF  # one flipped byte in the tensor data
    trained.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="damaged"):
        rebuilt = adapt_vision_encoder(*training_set, TINY, progress=False)
    assert rebuilt == trained and trained.read_bytes() == original  # same training, same bytes


def test_damaged_phantom_cache_is_rendered_again(tmp_path, monkeypatch):
    from semalign import experiments
    from semalign.phantom import PhantomSpec

    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    spec = PhantomSpec(n_images=4, seed=0, image_size=64)
    first = experiments.phantom_dataset(spec, progress=False)
    (images,) = tmp_path.glob("phantom/*/images.safetensors")
    assert images.stat().st_mode & 0o044  # readable by others as the umask allows, not mkstemp's 0600
    data = bytearray(images.read_bytes())
    data[-10] ^= 0xFF
    images.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="damaged"):
        again = experiments.phantom_dataset(spec, progress=False)
    assert np.array_equal(first.images, again.images)
