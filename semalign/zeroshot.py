"""Zero-shot classification by prompts: the unimodal route (a vision encoder
aligned to a text encoder's space) and a CLIP-style multimodal baseline.

Unimodal zero-shot (Di Folco et al. 2025): fit T on paired image–report anchors
so that T(V(image)) ≈ W(report); score a test image for class c by

    s_c = mean_p cos(T(V(img)), W(p)) over positive prompts p of c
        − mean_q cos(T(V(img)), W(q)) over negative prompts q of c.

The CLIP-style baseline learns two linear projections, of frozen image and
text embeddings, into a shared space with the symmetric InfoNCE loss on the
training pairs, and scores images against prompts the same way. Pretrained
multimodal models (CLIP, BiomedCLIP) score their own image embedding against
their own prompt embeddings with the same formula: zero-shot the ordinary way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from semalign.align import threads_for
from semalign.errors import SemalignError

DEFAULT_PROMPTS = {
    "effusion": {"positive": ["There is a pleural effusion.", "Pleural effusion is present."],
                 "negative": ["No pleural effusion.", "The costophrenic angles are sharp."]},
    "opacity": {"positive": ["There is airspace consolidation.", "Focal opacity in the lung."],
                "negative": ["No focal consolidation.", "The lungs are clear."]},
    "nodule": {"positive": ["There is a pulmonary nodule.", "A rounded nodular opacity is seen."],
               "negative": ["No pulmonary nodule.", "No nodules or masses."]},
    "cardiomegaly": {"positive": ["Cardiomegaly.", "The heart is enlarged."],
                     "negative": ["The heart size is normal.", "Normal cardiac silhouette."]},
    "pneumothorax": {"positive": ["There is a pneumothorax.", "Pneumothorax is present."],
                     "negative": ["No pneumothorax.", "There is no pneumothorax."]},
    "atelectasis": {"positive": ["There is atelectasis.", "Volume loss with collapse of a lobe."],
                    "negative": ["No atelectasis.", "No focal atelectasis."]},
}
# The label names of the paper's datasets (CheXpert-style, RSNA, VinDr-CXR).
PAPER_PROMPTS = {
    "Atelectasis": DEFAULT_PROMPTS["atelectasis"],
    "Cardiomegaly": DEFAULT_PROMPTS["cardiomegaly"],
    "Consolidation": {"positive": ["There is airspace consolidation.", "Focal consolidation in the lung."],
                      "negative": ["No focal consolidation.", "The lungs are clear."]},
    "Edema": {"positive": ["There is pulmonary edema.", "Interstitial edema is present."],
              "negative": ["No pulmonary edema.", "No signs of edema."]},
    "Pleural Effusion": DEFAULT_PROMPTS["effusion"],
    "Pleural effusion": DEFAULT_PROMPTS["effusion"],
    "Pneumothorax": DEFAULT_PROMPTS["pneumothorax"],
    "Pneumonia": {"positive": ["Findings consistent with pneumonia.", "There is a lung opacity suspicious for pneumonia."],
                  "negative": ["No evidence of pneumonia.", "The lungs are clear."]},
    "Lung Opacity": {"positive": ["There is a lung opacity.", "Focal opacity in the lung."],
                     "negative": ["No focal opacity.", "The lungs are clear."]},
}


# The class whose prompts score pneumonia-like opacity, first match wins.
OPACITY_CLASSES = ("opacity", "Pneumonia", "Lung Opacity", "Consolidation")


def opacity_class(classes: Sequence[str]) -> str | None:
    return next((c for c in OPACITY_CLASSES if c in classes), None)


def default_prompts(classes: Sequence[str]) -> dict:
    """The built-in prompts of ``classes`` (phantom findings or paper labels);
    classes without built-in prompts are reported by :func:`check_prompts`."""
    known = {**DEFAULT_PROMPTS, **PAPER_PROMPTS}
    return {c: known[c] for c in classes if c in known}


def check_prompts(prompts: Mapping[str, Mapping[str, Sequence[str]]], classes: Sequence[str]) -> None:
    missing = [c for c in classes if c not in prompts]
    if missing:
        raise SemalignError(f"no prompts for classes {missing}; give -p prompts={{class: {{positive: [...], negative: [...]}}}} for each of {list(classes)}")
    for c in classes:
        if not prompts[c].get("positive"):
            raise SemalignError(f"class {c!r} has no positive prompt; give at least one")


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def prompt_scores(image_in_text_space: np.ndarray, positive: np.ndarray, negative: np.ndarray | None) -> np.ndarray:
    """s = mean cosine with the positive prompts − mean cosine with the negatives."""
    z = _unit(image_in_text_space)
    score = (z @ _unit(positive).T).mean(axis=1)
    if negative is not None and len(negative):
        score = score - (z @ _unit(negative).T).mean(axis=1)
    return score


def class_aurocs(labels: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """AUROC per class with both outcomes present in ``labels``."""
    return {c: float(roc_auc_score(labels[:, j], scores[:, j]))
            for j, c in enumerate(classes) if 0 < labels[:, j].sum() < len(labels)}


@dataclasses.dataclass
class ClipStyle:
    """Two linear heads on frozen embeddings trained with symmetric InfoNCE."""

    dim: int = 256
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    temperature: float = 0.07
    seed: int = 0

    def fit(self, image: np.ndarray, text: np.ndarray) -> ClipStyle:
        if len(image) != len(text) or len(image) < 2:
            raise SemalignError(f"CLIP-style training needs ≥ 2 paired rows, got {len(image)} images and {len(text)} texts")
        generator = torch.Generator().manual_seed(self.seed)
        self.image_mean_, self.text_mean_ = image.mean(0), text.mean(0)
        x = torch.as_tensor(image - self.image_mean_, dtype=torch.float32)
        t = torch.as_tensor(text - self.text_mean_, dtype=torch.float32)
        self.image_head_ = torch.nn.Linear(x.shape[1], self.dim, bias=False)
        self.text_head_ = torch.nn.Linear(t.shape[1], self.dim, bias=False)
        for head in (self.image_head_, self.text_head_):
            torch.nn.init.normal_(head.weight, std=head.in_features ** -0.5, generator=generator)
        params = [*self.image_head_.parameters(), *self.text_head_.parameters()]
        optimiser = torch.optim.Adam(params, lr=self.lr)
        targets = torch.arange(min(self.batch_size, len(x)))
        # A step (forward and backward of both heads) is ~6·batch·(d_image + d_text)·dim
        # FLOP, a fraction of a GFLOP: on one thread, 1.3x faster and bit-identical.
        with threads_for(6.0 * self.batch_size * (x.shape[1] + t.shape[1]) * self.dim):
            self._train(x, t, optimiser, targets, generator)
        return self

    def _train(self, x: torch.Tensor, t: torch.Tensor, optimiser, targets: torch.Tensor,
               generator: torch.Generator) -> None:
        for _ in range(self.epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x) - 1, self.batch_size):
                batch = order[start:start + self.batch_size]
                if len(batch) < 2:
                    continue
                zi = torch.nn.functional.normalize(self.image_head_(x[batch]), dim=1)
                zt = torch.nn.functional.normalize(self.text_head_(t[batch]), dim=1)
                logits = zi @ zt.T / self.temperature
                target = targets[: len(batch)]
                loss = (torch.nn.functional.cross_entropy(logits, target)
                        + torch.nn.functional.cross_entropy(logits.T, target)) / 2
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()

    @torch.no_grad()
    def embed_images(self, image: np.ndarray) -> np.ndarray:
        return self.image_head_(torch.as_tensor(image - self.image_mean_, dtype=torch.float32)).numpy()

    @torch.no_grad()
    def embed_texts(self, text: np.ndarray) -> np.ndarray:
        return self.text_head_(torch.as_tensor(text - self.text_mean_, dtype=torch.float32)).numpy()


@dataclasses.dataclass
class ZeroShotSetup:
    """Paired image and report embeddings of the same items, keyed by encoder
    name; prompt embeddings per text encoder and class as (positive, negative)."""

    image_embeddings: Mapping[str, np.ndarray]
    report_embeddings: Mapping[str, np.ndarray]
    prompt_embeddings: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]
    labels: np.ndarray
    classes: Sequence[str]
    train: np.ndarray
    test: np.ndarray
    transforms: Sequence[str]
    anchor_counts: Sequence[int]
    seeds: Sequence[int]
    scaling: str = "standard"
    affine_precision: str = "fp32"  # matmuls of the affine fit's gradient: fp32, bf16 or auto (align.fit_affine_gd)
    jobs: int = 0  # fits at once, each on one thread; results do not depend on it (semalign.parallel); 0: one per core
    # Paired anchors from another dataset: image embeddings row-paired with
    # ``report_embeddings``. None: the anchors are this dataset's training rows.
    anchor_images: Mapping[str, np.ndarray] | None = None
    # Pretrained multimodal models: name -> (image embeddings of every row, prompts per class).
    multimodal: Mapping[str, tuple[np.ndarray, Mapping[str, tuple[np.ndarray, np.ndarray]]]] | None = None


def anchor_pool(setup: ZeroShotSetup) -> tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]:
    """Row-paired image and report embeddings the anchors are drawn from: the
    separate anchor dataset's, or this dataset's training rows."""
    if setup.anchor_images is not None:
        return setup.anchor_images, setup.report_embeddings
    return ({v: e[setup.train] for v, e in setup.image_embeddings.items()},
            {t: e[setup.train] for t, e in setup.report_embeddings.items()})


def _class_records(base: dict, aurocs: dict[str, float]) -> list[dict]:
    rows = [{**base, "task": c, "metric": "auroc", "value": v} for c, v in aurocs.items()]
    rows.append({**base, "task": "macro", "metric": "auroc", "value": float(np.mean(list(aurocs.values())))})
    return rows


def _scores(mapped: np.ndarray, prompts: Mapping[str, tuple[np.ndarray, np.ndarray]], classes) -> np.ndarray:
    return np.stack([prompt_scores(mapped, *prompts[c]) for c in classes], axis=1)


def zero_shot_records(setup: ZeroShotSetup, clip: ClipStyle | None = None, progress: bool = True) -> list[dict]:
    """Records of unimodal zero-shot (every vision × text pair, transform, anchor
    count, seed), of the CLIP-style baseline (every pair, seed; trained on the
    anchor pool's pairs), of each pretrained multimodal model and of a supervised
    linear probe on each vision encoder (the reference ceiling)."""
    from itertools import product

    from sklearn.linear_model import LogisticRegression

    from semalign.align import Aligner, select_anchors
    from semalign.parallel import sweep_map

    anchor_images, anchor_reports = anchor_pool(setup)
    pool = len(next(iter(anchor_reports.values())))
    if max(setup.anchor_counts) > pool:
        raise SemalignError(f"anchor counts up to {max(setup.anchor_counts)} exceed the {pool} paired training items; lower them")
    y_test = setup.labels[setup.test]

    def probe(point: tuple[str, int]) -> np.ndarray:
        vision, j = point
        image = setup.image_embeddings[vision]
        model = LogisticRegression(max_iter=2000).fit(image[setup.train], setup.labels[setup.train, j])
        return model.predict_proba(image[setup.test])[:, 1]

    columns = sweep_map(probe, product(setup.image_embeddings, range(len(setup.classes))), jobs=setup.jobs)
    records = []
    for i, vision in enumerate(setup.image_embeddings):
        proba = np.stack(columns[i * len(setup.classes):(i + 1) * len(setup.classes)], axis=1)
        records += _class_records(dict(method="linear_probe", source=vision, target=vision),
                                  class_aurocs(y_test, proba, setup.classes))
    for name, (image, prompts) in (setup.multimodal or {}).items():
        records += _class_records(dict(method="pretrained_multimodal", source=name, target=name),
                                  class_aurocs(y_test, _scores(image[setup.test], prompts, setup.classes), setup.classes))

    def pair_records(point: tuple[tuple[str, str], int]) -> list[dict]:
        (vision, text), seed = point
        image, anchor_image, anchor_report = setup.image_embeddings[vision], anchor_images[vision], anchor_reports[text]
        prompts = setup.prompt_embeddings[text]
        model = dataclasses.replace(clip or ClipStyle(), seed=seed).fit(anchor_image, anchor_report)
        projected = {c: tuple(model.embed_texts(p) for p in prompts[c]) for c in setup.classes}
        scores = _scores(model.embed_images(image[setup.test]), projected, setup.classes)
        rows = _class_records(dict(method="clip_style", source=vision, target=text, seed=seed),
                              class_aurocs(y_test, scores, setup.classes))
        for kind, n in product(setup.transforms, setup.anchor_counts):
            anchors = select_anchors(n, strategy="random", seed=seed, pool_size=pool)
            aligner = Aligner(kind=kind, scaling=setup.scaling, seed=seed, precision=setup.affine_precision)
            aligner.fit(anchor_image[anchors], anchor_report[anchors])
            scores = _scores(aligner.transform(image[setup.test]), prompts, setup.classes)
            rows += _class_records(dict(method="unimodal_zero_shot", transform=kind, source=vision, target=text,
                                        n_anchors=n, seed=seed), class_aurocs(y_test, scores, setup.classes))
        return rows

    grid = product(product(setup.image_embeddings, setup.report_embeddings), setup.seeds)
    for rows in sweep_map(pair_records, grid, jobs=setup.jobs, desc="zero-shot", progress=progress):
        records += rows
    return records
