"""The study-made phantom vision encoder ``phantom-ssl``: trains only what it says,
without labels, caches, loads in the registry; and the rendered phantom's cache."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from semalign.models import phantom_ssl
from semalign.models.encoders import load_encoder
from semalign.models.phantom_ssl import SSLConfig, phantom_ssl_spec, ssl_vision_encoder
from semalign.models.training import ENCODER_FILE
from semalign.core.errors import SemalignError


TINY_SSL = SSLConfig(steps=2, batch_size=4, views=3, image_size=64, train_blocks=2, projection_dim=8, threads=1)


@pytest.fixture(scope="module")
def ssl_images():
    return np.random.default_rng(1).integers(0, 256, (6, 48, 48), dtype=np.uint8)


@pytest.fixture(scope="module")
def ssl_trained(ssl_images, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SEMALIGN_CACHE", str(tmp_path_factory.mktemp("ssl-cache")))
    path = ssl_vision_encoder(ssl_images, TINY_SSL, progress=False)
    yield path
    mp.undo()


def test_ssl_takes_no_labels():
    assert list(inspect.signature(ssl_vision_encoder).parameters) == ["images", "config", "progress"]
    assert list(inspect.signature(phantom_ssl_spec).parameters) == ["images", "config", "progress"]


def test_ssl_trains_only_the_last_blocks_of_lite1(ssl_trained):
    import torch

    base = torch.load(str(phantom_ssl._base_weights()), map_location="cpu", weights_only=True)
    tuned = load_file(str(ssl_trained))
    assert set(tuned) == set(base)
    changed = {".".join(k.split(".")[:2]) if k.startswith("_blocks") else k.split(".")[0]
               for k in base if not torch.equal(base[k].float(), tuned[k].float())}
    assert changed, "training changed no weight"
    assert changed <= {"_blocks.19", "_blocks.20", "_conv_head", "_bn1"}, changed
    assert all(torch.equal(base[k], tuned[k]) for k in base if k.endswith(("running_mean", "running_var")))
    assert torch.equal(base["_fc.weight"], tuned["_fc.weight"])  # ImageNet head kept


def test_ssl_spec_embeds(ssl_images, ssl_trained, monkeypatch):
    from semalign.models.embed import embed

    monkeypatch.setenv("SEMALIGN_CACHE", str(ssl_trained.parents[2]))
    monkeypatch.setattr(phantom_ssl, "_train", lambda *a, **k: pytest.fail("retrained a cached encoder"))
    spec = phantom_ssl_spec(ssl_images, TINY_SSL, progress=False)
    assert spec.name == "phantom-ssl" and spec.source == f"efficientnet-lite1:{ssl_trained}" and spec.domain == "medical"
    out = embed(spec, [f"img{i}" for i in range(len(ssl_images))], ssl_images, progress=False, cache=False)
    assert out.shape == (len(ssl_images), 1280) and np.isfinite(out).all()
    base = load_encoder({"name": "lite1-at-64", "modality": "vision", "family": "efficientnet-lite",
                         "source": "efficientnet-lite1", "pooling": "gap", "image_size": 64})
    assert not np.allclose(out, base.encode(ssl_images), atol=1e-4)  # the trained weights, not ImageNet's


def test_ssl_cached_and_described(ssl_images, ssl_trained, monkeypatch):
    monkeypatch.setenv("SEMALIGN_CACHE", str(ssl_trained.parents[2]))
    before = ssl_trained.stat().st_mtime_ns
    monkeypatch.setattr(phantom_ssl, "_train", lambda *a, **k: pytest.fail("retrained a cached encoder"))
    assert ssl_vision_encoder(ssl_images, TINY_SSL, progress=False) == ssl_trained
    assert ssl_trained.stat().st_mtime_ns == before
    assert ssl_trained.parent.name.startswith(phantom_ssl.FOLDER_PREFIX)
    description = json.loads((ssl_trained.parent / ENCODER_FILE).read_text())
    assert description["n_training_images"] == len(ssl_images) and description["base_model"] == "efficientnet-lite1"
    assert "labels_sha256" not in description and np.isfinite(description["training"]["loss_last_10"])
    assert not list(ssl_trained.parents[1].glob(".*partial"))


def test_ssl_damaged_weights_are_detected_and_rebuilt(ssl_images, ssl_trained, monkeypatch):
    monkeypatch.setenv("SEMALIGN_CACHE", str(ssl_trained.parents[2]))
    original = ssl_trained.read_bytes()
    data = bytearray(original)
    data[-100] ^= 0xFF  # one flipped byte in the tensor data
    ssl_trained.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="damaged"):
        rebuilt = ssl_vision_encoder(ssl_images, TINY_SSL, progress=False)
    assert rebuilt == ssl_trained and ssl_trained.read_bytes() == original  # same training, same bytes


def test_ssl_key_follows_images_and_config(ssl_images):
    from semalign.core.cache import hash_key

    key = hash_key(phantom_ssl.ssl_cache_inputs(ssl_images, TINY_SSL))
    other_images = ssl_images.copy()
    other_images[0, 0, 0] ^= 1
    assert hash_key(phantom_ssl.ssl_cache_inputs(other_images, TINY_SSL)) != key
    assert hash_key(phantom_ssl.ssl_cache_inputs(ssl_images[:5], TINY_SSL)) != key
    for change in ({"seed": 1}, {"views": 2}, {"noise": 0.0}, {"temperature": 0.5}):
        assert hash_key(phantom_ssl.ssl_cache_inputs(ssl_images, dataclasses.replace(TINY_SSL, **change))) != key


def test_ssl_views_without_augmentation_are_the_image():
    import torch

    image = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (1, 1, 32, 32)).astype(np.float32))
    draws = torch.zeros((2, 9), dtype=torch.float64)
    same = phantom_ssl.augment_views(image, draws, SSLConfig(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(same, image.expand(2, -1, -1, -1), atol=1e-3, rtol=0)
    draws = phantom_ssl.draw_view_parameters(1, SSLConfig(views=2), torch.Generator().manual_seed(0))[0]
    views = phantom_ssl.augment_views(image, draws, SSLConfig(), torch.Generator().manual_seed(0))
    assert views.shape == (2, 1, 32, 32) and 0 <= views.min() and views.max() <= 255
    assert not torch.allclose(views[0], views[1])


def test_ssl_config_and_input_checked():
    with pytest.raises(SemalignError, match="views"):
        SSLConfig(views=1)
    with pytest.raises(SemalignError, match="uint8"):
        ssl_vision_encoder(np.zeros((4, 8, 8), np.float32), TINY_SSL, progress=False)
    with pytest.raises(SemalignError, match="at least 2"):
        ssl_vision_encoder(np.zeros((1, 8, 8), np.uint8), TINY_SSL, progress=False)


def test_medical_scale_shortens_training_stages_and_leaves_switched_off_ones_off():
    """The smoke profile's medical_scale=0.02 shortens every ``*steps`` stage to at
    least one step; a stage set to 0 steps stays off (it used to become 1 step)."""
    import dataclasses

    from semalign.experiments.inputs import scaled_steps

    @dataclasses.dataclass(frozen=True)
    class Stages:
        steps: int = 100
        warm_steps: int = 0
        tiny_steps: int = 10

    assert scaled_steps(Stages(), 0.02) == Stages(steps=2, warm_steps=0, tiny_steps=1)
    assert scaled_steps(Stages(), 1.0) == Stages()


def test_damaged_phantom_cache_is_rendered_again(tmp_path, monkeypatch):
    from semalign.experiments import inputs as experiments
    from semalign.phantom import PhantomSpec

    monkeypatch.setenv("SEMALIGN_CACHE", str(tmp_path))
    spec = PhantomSpec(n_images=4, seed=0, image_size=64)
    first = experiments.phantom_dataset(spec, progress=False)
    (images,) = tmp_path.glob("phantom/*/images.safetensors")
    assert images.stat().st_mode & 0o044  # readable by others as the umask allows, not safetensors' owner-only 0600
    data = bytearray(images.read_bytes())
    data[-10] ^= 0xFF
    images.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="damaged"):
        again = experiments.phantom_dataset(spec, progress=False)
    assert np.array_equal(first.images, again.images)
