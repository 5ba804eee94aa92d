"""ASIF: a training-free image–text model from paired anchors.

Norelli et al., "ASIF: Coupled Data Turns Unimodal Models to Multimodal Without
Training" (NeurIPS 2023). The study's training-free multimodal baseline, built
from the same n image–report anchor pairs the alignment uses (STUDY.md §3).

An image embedding x is represented by its cosine similarities to the n anchor
images, a report or prompt embedding t by its similarities to the n anchor
reports. Anchor i is one pair, so both *relative representations* live in the
same n-dimensional space, and an image and a text are compared by the cosine of
their relative representations. As in the paper, each relative representation
is made sparse and sharp before the comparison:

    r(x) = normalise( top_k( max(cos(x, A), 0) ) ** p )

keeping the k largest similarities (the others set to 0), raising the kept
ones to the power p, and scaling the vector to unit length.

Choices, checked against the paper and its reference code (``relreps.py`` in
github.com/noranta4/ASIF):

* **Top-k on the raw similarities, then the power.** The reference code takes
  the top k inner products and raises those to p. Because max(s, 0) ** p is
  non-decreasing in s, taking the power before or after the selection keeps
  the same entries; ties at the k-th value are broken towards the lower anchor
  index, so the result does not depend on a sort's whim.
* **Similarities clipped at 0 before the power.** The reference code does not
  clip: with its 1.6M anchors the top k similarities are positive anyway. With
  the tens to hundreds of anchors used here, and k allowed up to n, kept
  entries can be negative; an even p would then turn a strong dissimilarity
  into a strong similarity, and a fractional p would give NaN. Clipping keeps
  "larger entry = more similar anchor" true for every p > 0.
* **Embeddings and anchors are unit-normalised**, so inner products are cosines
  (the reference code normalises the embeddings it stores).
* A relative representation whose kept similarities are all ≤ 0 is the zero
  vector: it is similar to nothing, and its cosine with anything is 0 rather
  than NaN.
* k larger than the number of anchors is clipped to it (then nothing is
  sparsified, and with p = 1 the method compares the clipped similarity vectors).

Plain numpy in float64, no I/O. The fitted state is two arrays of unit rows.
"""

from __future__ import annotations

import numpy as np

from semalign.core.errors import SemalignError


class ASIFInputError(SemalignError, ValueError):
    """Bad input to ASIF: a ``ValueError`` the command line also reports cleanly."""


def _unit_rows(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim != 2:
        raise ASIFInputError(f"{what} must be a 2-D array (items × dimensions), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ASIFInputError(f"{what} is empty (shape {a.shape})")
    if not np.isfinite(a).all():
        raise ASIFInputError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ASIFInputError(f"{what} row {int(np.flatnonzero(norms == 0)[0])} is all zeros, so it has no direction")
    return a / norms


def relative_representation(queries: np.ndarray, anchors: np.ndarray, k: int, exponent: float) -> np.ndarray:
    """(m, n) relative representations of unit-row ``queries`` against unit-row
    ``anchors``: cosines clipped at 0, all but the k largest per row set to 0,
    raised to ``exponent``, rows scaled to unit length (all-zero rows stay zero)."""
    similarity = queries @ anchors.T
    k = min(k, anchors.shape[0])
    # A stable sort of the negated similarities keeps the lower anchor index among ties.
    kept = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(similarity))[:, None]
    relative = np.zeros_like(similarity)
    relative[rows, kept] = np.maximum(similarity[rows, kept], 0.0) ** exponent
    norms = np.linalg.norm(relative, axis=1, keepdims=True)
    np.divide(relative, norms, out=relative, where=norms > 0)
    return relative


class ASIF:
    """Training-free image–text similarity from paired anchors (see the module docstring).

    ``k`` is the number of anchors each relative representation keeps (clipped
    to the number of anchors at fit time); ``exponent`` is the power p applied
    to the kept similarities: a larger p lets the most similar anchors dominate.
    """

    def __init__(self, k: int = 100, exponent: float = 8.0):
        self.k = k
        self.exponent = exponent

    def fit(self, anchor_images: np.ndarray, anchor_texts: np.ndarray) -> "ASIF":
        """Store the unit-normalised anchors; row i of both is one image–text pair."""
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ASIFInputError(f"ASIF k must be a positive integer, got {self.k!r}")
        if not np.isfinite(self.exponent) or self.exponent <= 0:
            raise ASIFInputError(f"ASIF exponent must be a positive number, got {self.exponent!r}")
        images = _unit_rows(anchor_images, "anchor images")
        texts = _unit_rows(anchor_texts, "anchor texts")
        if len(images) != len(texts):
            raise ASIFInputError(f"ASIF needs paired anchors: {len(images)} anchor images but {len(texts)} anchor texts")
        self.anchor_images_ = images
        self.anchor_texts_ = texts
        self.k_ = int(min(self.k, len(images)))
        return self

    def _relative(self, queries: np.ndarray, side: str, what: str) -> np.ndarray:
        if not hasattr(self, "anchor_images_"):
            raise ASIFInputError("this ASIF is not fitted yet; call fit(anchor_images, anchor_texts) first")
        anchors = getattr(self, f"anchor_{side}_")
        queries = _unit_rows(queries, what)
        if queries.shape[1] != anchors.shape[1]:
            raise ASIFInputError(f"{what} have {queries.shape[1]} dimensions but their anchors have {anchors.shape[1]}")
        return relative_representation(queries, anchors, self.k_, self.exponent)

    def relative_images(self, x: np.ndarray) -> np.ndarray:
        """(m, n) sparse relative representations of image embeddings, unit rows."""
        return self._relative(x, "images", "image embeddings")

    def relative_texts(self, t: np.ndarray) -> np.ndarray:
        """(m, n) sparse relative representations of text embeddings, unit rows."""
        return self._relative(t, "texts", "text embeddings")

    def similarity(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(m_x, m_t) cosine between the relative representations of images and texts."""
        return self.relative_images(x) @ self.relative_texts(t).T
