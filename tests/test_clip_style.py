"""The CLIP-style baseline: early stopping on validation keeps the best epoch's
weights and stops once `patience` epochs have passed without a better score."""

from __future__ import annotations

import numpy as np
import pytest

from semalign.core.errors import SemalignError
from semalign.experiments.zeroshot import CLIP_GRID, ClipStyle


def paired(n: int = 96, seed: int = 0):
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n, 6))
    image = shared @ rng.normal(size=(6, 20)) + 0.1 * rng.normal(size=(n, 20))
    text = shared @ rng.normal(size=(6, 12)) + 0.1 * rng.normal(size=(n, 12))
    return image.astype(np.float32), text.astype(np.float32)


def test_the_best_epochs_weights_are_kept_and_training_stops_after_patience():
    image, text = paired()
    # A validation score that peaks at epoch 4 and falls after: the scripted epochs are counted by calls.
    script = [0.1, 0.2, 0.3, 0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1, -0.2]
    seen = []

    def validate(model):
        seen.append(model.embed_images(image[:4]).copy())
        return script[len(seen) - 1]

    model = ClipStyle(dim=8, epochs=50, batch_size=32, lr=1e-2, patience=5).fit(image, text, validate=validate)
    assert model.best_epoch_ == 4
    assert [epoch for epoch, _ in model.curve_] == list(range(1, 10))  # stopped 5 epochs after the best
    np.testing.assert_array_equal(model.embed_images(image[:4]), seen[3])  # the weights of epoch 4


def test_without_validation_it_trains_every_epoch():
    image, text = paired()
    model = ClipStyle(dim=8, epochs=3, batch_size=32).fit(image, text)
    assert model.curve_ == [] and model.best_epoch_ == 3


def test_training_aligns_paired_rows():
    image, text = paired()
    model = ClipStyle(dim=8, epochs=40, batch_size=32, lr=1e-2, temperature=0.1).fit(image, text)
    zi, zt = model.embed_images(image), model.embed_texts(text)
    zi /= np.linalg.norm(zi, axis=1, keepdims=True)
    zt /= np.linalg.norm(zt, axis=1, keepdims=True)
    top1 = float(np.mean((zi @ zt.T).argmax(1) == np.arange(len(image))))
    assert top1 > 0.5  # chance is 1/96


def test_the_settings_grid_brackets_the_offline_choice():
    rates, temperatures = sorted({lr for lr, _ in CLIP_GRID}), sorted({t for _, t in CLIP_GRID})
    # the offline build of 5 December 2026 chose lr 1e-3 to 3e-2 (3e-2 for every seed of two pairs) and
    # temperature 0.3 (the largest then tried) for every pair
    assert rates[0] <= 1e-3 and rates[-1] > 3e-2 and temperatures[0] < 0.3 < temperatures[-1]


def test_too_few_pairs_is_a_one_line_error():
    with pytest.raises(SemalignError, match="needs ≥ 2 paired rows"):
        ClipStyle().fit(np.zeros((1, 4), np.float32), np.zeros((1, 3), np.float32))
