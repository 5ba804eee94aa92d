"""Tests for semalign.method.asif against a hand-computed example and a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from semalign.method.asif import ASIF
from semalign.core.errors import SemalignError


def test_asif_matches_a_hand_computed_example():
    # Three anchor pairs in 2-D, given at non-unit length to check the normalisation.
    anchor_images = np.array([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])  # directions (1,0), (0,1), (-1,0)
    anchor_texts = np.array([[0.0, 1.0], [5.0, 0.0], [0.0, -2.0]])  # directions (0,1), (1,0), (0,-1)
    image = np.array([[3.0, 4.0]])  # direction (0.6, 0.8)
    prompts = np.array([[1.0, 1.0], [-1.0, -0.2]])
    asif = ASIF(k=2, exponent=2).fit(anchor_images, anchor_texts)

    # Image: cosines to the anchor images 0.6, 0.8, -0.6; keep the top 2 (anchors 1, 0),
    # square: (0.36, 0.64, 0); length sqrt(0.36² + 0.64²) = sqrt(0.1296 + 0.4096) = sqrt(0.5392).
    expected_image = np.array([0.36, 0.64, 0.0]) / np.sqrt(0.5392)
    np.testing.assert_allclose(asif.relative_images(image), [expected_image], atol=1e-12)

    # Prompt (1,1): cosines to the anchor texts 1/√2, 1/√2, -1/√2; keep anchors 0 and 1,
    # square: (1/2, 1/2, 0); unit length: (1/√2, 1/√2, 0).
    # Prompt (-1,-0.2): cosines -0.2/|t|, -1/|t|, 0.2/|t| with |t| = √1.04; the top 2 are
    # anchor 2 (0.196) and anchor 0 (-0.196), clipped to 0 before squaring: (0, 0, 0.0385),
    # unit length (0, 0, 1). Without the clip, anchor 0 would count as similar as anchor 2.
    expected_texts = np.array([[1 / np.sqrt(2), 1 / np.sqrt(2), 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(asif.relative_texts(prompts), expected_texts, atol=1e-12)

    # Similarity with prompt (1,1): (0.36 + 0.64) / √2 / sqrt(0.5392) = 1 / sqrt(2 × 0.5392)
    # = 1 / sqrt(1.0784) ≈ 0.96296; with prompt (-1,-0.2): no shared anchor, 0.
    np.testing.assert_allclose(asif.similarity(image, prompts), [[1 / np.sqrt(1.0784), 0.0]], atol=1e-12)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def test_all_anchors_and_exponent_one_give_the_cosine_of_similarity_vectors():
    rng = np.random.default_rng(0)
    # Non-negative embeddings have non-negative cosines, so the clip at 0 does nothing.
    anchor_images, anchor_texts = rng.random((15, 7)), rng.random((15, 4))
    images, texts = rng.random((6, 7)), rng.random((5, 4))
    asif = ASIF(k=15, exponent=1.0).fit(anchor_images, anchor_texts)
    image_similarities = cosine_rows(images, anchor_images)  # (6, 15)
    text_similarities = cosine_rows(texts, anchor_texts)  # (5, 15)
    np.testing.assert_allclose(asif.similarity(images, texts), cosine_rows(image_similarities, text_similarities),
                               atol=1e-12)


def test_relative_representations_keep_k_entries_of_unit_length():
    rng = np.random.default_rng(1)
    asif = ASIF(k=4, exponent=8.0).fit(rng.normal(size=(20, 6)), rng.normal(size=(20, 3)))
    relative = asif.relative_images(rng.normal(size=(10, 6)))
    assert relative.shape == (10, 20)
    assert ((relative > 0).sum(axis=1) <= 4).all() and (relative >= 0).all()
    norms = np.linalg.norm(relative, axis=1)
    np.testing.assert_allclose(norms[norms > 0], 1.0)


def test_kept_entries_are_the_most_similar_anchors():
    rng = np.random.default_rng(2)
    anchors = rng.normal(size=(30, 5))
    queries = rng.normal(size=(8, 5))
    asif = ASIF(k=3, exponent=2.0).fit(anchors, rng.normal(size=(30, 2)))
    relative = asif.relative_images(queries)
    similarity = cosine_rows(queries, anchors)
    for rel, sim in zip(relative, similarity):
        top = np.argsort(sim)[::-1][:3]
        positive_top = set(top[sim[top] > 0])
        assert set(np.flatnonzero(rel)) == positive_top


def test_k_is_clipped_to_the_anchor_count():
    rng = np.random.default_rng(3)
    asif = ASIF(k=100).fit(rng.normal(size=(5, 4)), rng.normal(size=(5, 3)))
    assert asif.k_ == 5
    assert asif.similarity(rng.normal(size=(2, 4)), rng.normal(size=(3, 3))).shape == (2, 3)


def test_bad_input_gives_one_line_errors():
    rng = np.random.default_rng(4)
    images, texts = rng.normal(size=(5, 4)), rng.normal(size=(6, 3))
    with pytest.raises(SemalignError, match="5 anchor images but 6 anchor texts"):
        ASIF().fit(images, texts)
    with pytest.raises(SemalignError, match="k must be a positive integer"):
        ASIF(k=0).fit(images, texts[:5])
    with pytest.raises(SemalignError, match="exponent must be a positive"):
        ASIF(exponent=0.0).fit(images, texts[:5])
    with pytest.raises(SemalignError, match="not fitted"):
        ASIF().relative_images(images)
    asif = ASIF(k=2).fit(images, texts[:5])
    with pytest.raises(SemalignError, match="3 dimensions but their anchors have 4"):
        asif.relative_images(rng.normal(size=(2, 3)))
    with pytest.raises(SemalignError, match="row 1 is all zeros"):
        asif.relative_texts(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(SemalignError, match="2-D"):
        asif.relative_texts(np.ones(3))
    for error in (SemalignError, ValueError):
        with pytest.raises(error):
            ASIF().fit(images, texts)
