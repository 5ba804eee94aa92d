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
from functools import partial
from itertools import product

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from semalign.experiments import stats
from semalign.experiments.claims import merged, record_replicate_key
from semalign.experiments.parallel import sweep_map
from semalign.experiments.stitching import check_anchor_counts
from semalign.method.align import Aligner, select_anchors, threads_for
from semalign.method.asif import ASIF
from semalign.models.encoders import pick_device
from semalign.core.errors import SemalignError

# Several templates per class, averaged: one template's wording should not decide a result
# (the zero-shot page shows the spread over templates once).
DEFAULT_PROMPTS = {
    "effusion": {"positive": ["There is a pleural effusion.", "Pleural effusion is present.",
                              "Blunting of the costophrenic angle due to effusion.", "Fluid in the pleural space."],
                 "negative": ["No pleural effusion.", "The costophrenic angles are sharp."]},
    "opacity": {"positive": ["There is airspace consolidation.", "Focal opacity in the lung.",
                             "An area of increased opacity in the lung.", "Patchy airspace disease."],
                "negative": ["No focal consolidation.", "The lungs are clear."]},
    "nodule": {"positive": ["There is a pulmonary nodule.", "A rounded nodular opacity is seen.",
                            "A small nodule in the lung.", "Solitary pulmonary nodule."],
               "negative": ["No pulmonary nodule.", "No nodules or masses."]},
    "cardiomegaly": {"positive": ["Cardiomegaly.", "The heart is enlarged.", "Enlarged cardiac silhouette.",
                                  "The cardiothoracic ratio is increased."],
                     "negative": ["The heart size is normal.", "Normal cardiac silhouette."]},
    "pneumothorax": {"positive": ["There is a pneumothorax.", "Pneumothorax is present.",
                                  "A visible pleural line with absent lung markings.", "Collapsed lung with air in the pleural space."],
                     "negative": ["No pneumothorax.", "There is no pneumothorax."]},
    "atelectasis": {"positive": ["There is atelectasis.", "Volume loss with collapse of a lobe.",
                                 "Subsegmental atelectasis.", "Lobar collapse."],
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
    return _contrast(lambda prompts: z @ _unit(prompts).T, positive, negative)


def _contrast(similarity, positive: np.ndarray, negative: np.ndarray | None) -> np.ndarray:
    """Mean ``similarity`` to the positive prompts minus mean ``similarity`` to the negative ones."""
    score = similarity(positive).mean(axis=1)
    if negative is not None and len(negative):
        score = score - similarity(negative).mean(axis=1)
    return score


def class_aurocs(labels: np.ndarray, scores: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """AUROC per class with both outcomes present in ``labels``."""
    return {c: float(roc_auc_score(labels[:, j], scores[:, j]))
            for j, c in enumerate(classes) if 0 < labels[:, j].sum() < len(labels)}


@dataclasses.dataclass
class ClipStyle:
    """Two linear heads on frozen embeddings trained with symmetric InfoNCE.

    ``fit`` trains for at most ``epochs`` and, when given ``validate`` (a
    function of the model returning a validation score), scores the model
    after every epoch, keeps the weights of the best-scoring epoch and stops
    once ``patience`` epochs have passed without a better score (early stopping
    on validation); ``curve_`` holds (epoch, score) pairs.
    """

    dim: int = 256
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    temperature: float = 0.07
    seed: int = 0
    patience: int = 15

    def fit(self, image: np.ndarray, text: np.ndarray, validate=None) -> ClipStyle:
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
        self.curve_, best, self.best_epoch_ = [], -np.inf, 0 if validate is not None else self.epochs
        kept = [p.detach().clone() for p in params]
        # A step is a fraction of a GFLOP: one thread is faster and bit-identical.
        with threads_for(6.0 * self.batch_size * (x.shape[1] + t.shape[1]) * self.dim):
            for epoch in range(1, self.epochs + 1):
                self._epoch(x, t, optimiser, targets, generator)
                if validate is None:
                    continue
                self.curve_.append((epoch, float(validate(self))))
                if self.curve_[-1][1] > best:
                    best, self.best_epoch_ = self.curve_[-1][1], epoch
                    kept = [p.detach().clone() for p in params]
                elif epoch - self.best_epoch_ >= self.patience:
                    break
        if validate is not None:
            with torch.no_grad():
                for p, value in zip(params, kept):
                    p.copy_(value)
        return self

    def _epoch(self, x: torch.Tensor, t: torch.Tensor, optimiser, targets: torch.Tensor,
               generator: torch.Generator) -> None:
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


# Settings of the CLIP-style model chosen on validation (epochs by early stopping
# within each): learning rate and temperature. The grid reaches past the values
# the offline data choose on both sides, so that a choice is not pinned to an
# edge of what was tried (a baseline tuned only up to an edge is not a fair one).
CLIP_GRID = tuple((lr, temperature) for lr in (1e-3, 3e-3, 1e-2, 3e-2, 1e-1) for temperature in (0.1, 0.3, 1.0))
CLIP_EPOCHS = 100
# ASIF's neighbourhood size and exponent, chosen on validation (k is clipped to the anchor count).
ASIF_GRID = tuple((k, p) for k in (8, 32, 128, 512) for p in (1.0, 4.0, 8.0))


@dataclasses.dataclass
class ZeroShotSetup:
    """Paired image and report embeddings of the same items, keyed by encoder
    name; prompt embeddings per text encoder and class as (positive, negative).
    ``train`` are the fit rows (anchors and CLIP-style training pairs come from
    them), ``validation`` the rows that choose settings, ``test`` the rows
    scored once per setting."""

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
    validation: np.ndarray = dataclasses.field(default_factory=lambda: np.arange(0))
    scaling: str = "standard"
    jobs: int = 0  # fits at once, each on one thread; results do not depend on it (semalign.experiments.parallel); 0: one per core
    # Paired anchors from another dataset: image embeddings row-paired with
    # ``report_embeddings``. None: the anchors are this dataset's training rows.
    anchor_images: Mapping[str, np.ndarray] | None = None
    # Pretrained multimodal models: name -> (image embeddings of every row, prompts per class).
    multimodal: Mapping[str, tuple[np.ndarray, Mapping[str, tuple[np.ndarray, np.ndarray]]]] | None = None
    n_boot: int = 1000
    device: str = "cpu"  # where the transforms are fitted: cpu, cuda or auto, as the notebook's device


def anchor_pool(setup: ZeroShotSetup) -> tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]:
    """Row-paired image and report embeddings the anchors are drawn from: the
    separate anchor dataset's, or this dataset's fit rows."""
    if setup.anchor_images is not None:
        return setup.anchor_images, setup.report_embeddings
    return ({v: e[setup.train] for v, e in setup.image_embeddings.items()},
            {t: e[setup.train] for t, e in setup.report_embeddings.items()})


def _scores(mapped: np.ndarray, prompts: Mapping[str, tuple[np.ndarray, np.ndarray]], classes) -> np.ndarray:
    return np.stack([prompt_scores(mapped, *prompts[c]) for c in classes], axis=1)


def macro_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean AUROC over the classes with both outcomes in ``labels``."""
    return float(np.mean(list(class_aurocs(labels, scores, range(labels.shape[1])).values())))


class _Scorer:
    """Validation macro-AUROC, and per-class and macro test AUROC with 95%
    bootstrap intervals over test items (one set of resamples for every method,
    so replicates of two methods are paired)."""

    def __init__(self, setup: ZeroShotSetup):
        self.setup = setup
        self.y_validation, self.y_test = setup.labels[setup.validation], setup.labels[setup.test]
        self.weights = stats.bootstrap_weights(len(setup.test), setup.n_boot, seed=0)

    def validation(self, scores_of) -> float:
        """Validation macro-AUROC of ``scores_of`` (rows of the image table → class scores)."""
        return macro_auroc(self.y_validation, scores_of(self.setup.validation))

    def records(self, base: dict, scores_of, validate: bool = True, keep: bool = True) -> tuple[list[dict], dict]:
        """Records of the setting ``base`` and (when ``keep``) its test macro-AUROC replicates by key."""
        rows = []
        if validate and len(self.setup.validation):
            rows.append({**base, "task": "macro", "split": "validation", "metric": "auroc",
                         "value": self.validation(scores_of)})
        scores = scores_of(self.setup.test)
        for j, c in enumerate(self.setup.classes):
            if 0 < self.y_test[:, j].sum() < len(self.y_test):
                value = float(roc_auc_score(self.y_test[:, j], scores[:, j]))
                low, high = stats.interval(stats.weighted_auroc(self.y_test[:, j], scores[:, j], self.weights))
                rows.append({**base, "task": c, "split": "test", "metric": "auroc", "value": value,
                             "ci_low": low, "ci_high": high})
        replicates = stats.macro_auroc_replicates(self.y_test, scores, self.weights)
        low, high = stats.interval(replicates)
        rows.append({**base, "task": "macro", "split": "test", "metric": "auroc",
                     "value": macro_auroc(self.y_test, scores), "ci_low": low, "ci_high": high})
        return rows, {record_replicate_key(base): replicates} if keep else {}


def zero_shot_records(setup: ZeroShotSetup, progress: bool = True,
                      replicates: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Records of unimodal zero-shot (every vision × text pair, transform, anchor
    count, seed), of ASIF from the same anchors (k and exponent chosen on
    validation), of the CLIP-style baseline (every pair and seed; trained on the
    whole fit pool, its learning rate, temperature and epochs chosen on
    validation), of each pretrained multimodal model and of a supervised linear
    probe on each vision encoder (the reference that uses labels), and a ``split``
    record of the anchor pool's size. ``replicates``
    receives the test macro-AUROC replicates by :func:`semalign.experiments.claims.replicate_key`."""
    anchor_images, anchor_reports = anchor_pool(setup)
    pool = len(next(iter(anchor_reports.values())))
    check_anchor_counts(setup.anchor_counts, pool, "the paired training items")
    scorer = _Scorer(setup)
    pair_records = partial(_pair_records, scorer, anchor_images, anchor_reports, pool)
    grid = product(product(setup.image_embeddings, setup.report_embeddings), setup.seeds)
    pool_size = ([dict(method="split", metric="fit_items", value=pool, task="pool")], {})  # the anchor pool
    records, kept = merged([pool_size, _reference_records(scorer),
                            *sweep_map(pair_records, grid, jobs=setup.jobs, desc="zero-shot", progress=progress)])
    if replicates is not None:
        replicates.update(kept)
    return records


def _reference_records(scorer: _Scorer) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Records and replicates of the references that need no alignment: a
    supervised linear probe per vision encoder and class, and each pretrained
    multimodal model."""
    setup = scorer.setup
    classes = range(len(setup.classes))

    def probe(point: tuple[str, int]) -> LogisticRegression:
        vision, j = point
        image = setup.image_embeddings[vision]
        return LogisticRegression(max_iter=2000).fit(image[setup.train], setup.labels[setup.train, j])

    models = sweep_map(probe, product(setup.image_embeddings, classes), jobs=setup.jobs)
    heads = {vision: models[i * len(classes):(i + 1) * len(classes)] for i, vision in enumerate(setup.image_embeddings)}
    scored = [(dict(method="linear_probe", source=vision, target=vision),
               lambda rows, h=heads[vision], e=image: np.stack([m.predict_proba(e[rows])[:, 1] for m in h], 1))
              for vision, image in setup.image_embeddings.items()]
    scored += [(dict(method="pretrained_multimodal", source=name, target=name),
                lambda rows, e=image, p=prompts: _scores(e[rows], p, setup.classes))
               for name, (image, prompts) in (setup.multimodal or {}).items()]
    return merged(scorer.records(base, scores_of) for base, scores_of in scored)


@dataclasses.dataclass(frozen=True)
class _Pair:
    """One vision × text encoder pair and seed of the sweep, with its anchor pool."""

    scorer: _Scorer
    vision: str
    text: str
    seed: int
    anchor_image: np.ndarray
    anchor_report: np.ndarray

    @property
    def setup(self) -> ZeroShotSetup:
        return self.scorer.setup

    @property
    def image(self) -> np.ndarray:
        return self.setup.image_embeddings[self.vision]

    @property
    def prompts(self) -> Mapping[str, tuple[np.ndarray, np.ndarray]]:
        return self.setup.prompt_embeddings[self.text]


def _pair_records(scorer: _Scorer, anchor_images: Mapping[str, np.ndarray], anchor_reports: Mapping[str, np.ndarray],
                  pool: int, point: tuple[tuple[str, str], int]) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Records and replicates of one pair and seed: the CLIP-style baseline, then
    per anchor count the aligned transforms and ASIF on the same anchors."""

    (vision, text), seed = point
    pair = _Pair(scorer, vision, text, seed, anchor_images[vision], anchor_reports[text])
    parts = [_clip_style_records(pair)]
    for n in scorer.setup.anchor_counts:
        anchors = select_anchors(n, strategy="random", seed=seed, pool_size=pool)
        parts += [_unimodal_records(pair, n, anchors), _asif_records(pair, n, anchors)]
    return merged(parts)


def _clip_style_records(pair: _Pair) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The CLIP-style baseline trained on the whole anchor pool, its settings
    chosen on validation: test records, the chosen settings and the validation
    curve of the chosen model."""

    setup, scorer, prompts = pair.setup, pair.scorer, pair.prompts

    def clip_scores(model, rows_):
        projected = {c: tuple(model.embed_texts(p) for p in prompts[c]) for c in setup.classes}
        return _scores(model.embed_images(pair.image[rows_]), projected, setup.classes)

    best = None
    for lr, temperature in CLIP_GRID:
        model = ClipStyle(epochs=CLIP_EPOCHS, lr=lr, temperature=temperature, seed=pair.seed)
        model.fit(pair.anchor_image, pair.anchor_report, validate=lambda m: scorer.validation(lambda r: clip_scores(m, r)))
        if best is None or max(v for _, v in model.curve_) > max(v for _, v in best.curve_):
            best = model
    base = dict(method="clip_style", source=pair.vision, target=pair.text, seed=pair.seed, selected_on="validation")
    rows, kept = scorer.records(base, lambda r: clip_scores(best, r), validate=False)
    rows.append({**base, "task": "macro", "split": "validation", "metric": "auroc",
                 "value": max(v for _, v in best.curve_)})
    rows += [{**base, "task": "setting", "metric": m, "value": v, "split": "validation"}
             for m, v in (("lr", best.lr), ("temperature", best.temperature), ("epochs", best.best_epoch_),
                          ("training_pairs", len(pair.anchor_image)))]
    # the validation curve of the chosen settings, for the page's figure (the epoch is in n_anchors)
    rows += [{**base, "method": "clip_style_curve", "n_anchors": epoch, "task": "macro", "split": "validation",
              "metric": "auroc", "value": v, "selected_on": None} for epoch, v in best.curve_]
    return rows, kept


def _unimodal_records(pair: _Pair, n: int, anchors: np.ndarray) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Unimodal zero-shot with each transform fitted on ``anchors`` (``n`` of them), and its replicates."""

    setup = pair.setup
    parts = []
    for kind in setup.transforms:
        aligner = Aligner(kind=kind, scaling=setup.scaling, seed=pair.seed, device=pick_device(setup.device))
        aligner.fit(pair.anchor_image[anchors], pair.anchor_report[anchors])
        base = dict(method="unimodal_zero_shot", transform=kind, source=pair.vision, target=pair.text, n_anchors=n,
                    seed=pair.seed)
        parts.append(pair.scorer.records(base, lambda r, a=aligner: _scores(a.transform(pair.image[r]), pair.prompts,
                                                                             setup.classes),
                                         keep=True))
    return merged(parts)


def _asif_records(pair: _Pair, n: int, anchors: np.ndarray) -> tuple[list[dict], dict[str, np.ndarray]]:
    """ASIF on ``anchors`` (``n`` of them), its k and exponent chosen on validation, and its replicates."""

    setup, scorer, image, prompts = pair.setup, pair.scorer, pair.image, pair.prompts
    fitted = {}
    for k, p in ASIF_GRID:
        if min(k, n) in {min(kk, n) for kk, pp in fitted if pp == p}:
            continue  # k clipped to n gives a setting already tried
        asif = ASIF(k=k, exponent=p).fit(pair.anchor_image[anchors], pair.anchor_report[anchors])
        fitted[(k, p)] = (asif, scorer.validation(lambda r, a=asif: _asif_scores(a, image[r], prompts, setup.classes)))
    (k, p), (asif, _) = max(fitted.items(), key=lambda item: item[1][1])
    base = dict(method="asif", source=pair.vision, target=pair.text, n_anchors=n, seed=pair.seed, selected_on="validation")
    rows, kept = scorer.records(base, lambda r, a=asif: _asif_scores(a, image[r], prompts, setup.classes),
                                keep=True)
    rows += [{**base, "task": "setting", "metric": m, "value": v, "split": "validation"}
             for m, v in (("k", min(k, n)), ("exponent", p))]
    return rows, kept


def _asif_scores(asif, images: np.ndarray, prompts: Mapping[str, tuple[np.ndarray, np.ndarray]], classes) -> np.ndarray:
    """Prompt scores of ASIF: the same positive-minus-negative rule on relative representations."""
    relative = asif.relative_images(images)
    return np.stack([_contrast(lambda texts: relative @ asif.relative_texts(texts).T, *prompts[c]) for c in classes],
                    axis=1)


def anecdote_reading(ci_low: float, ci_high: float) -> str:
    """What an AUROC interval on a handful of images says: inverted scores when
    it lies wholly below chance, some transfer when wholly above, nothing otherwise."""
    if ci_high < 0.5:
        return ("The whole interval lies below chance: on these films the scores are inverted — pneumonia scores "
                "lower on the opacity prompts than normal — so what the route learned on the phantom points the wrong "
                "way on real children's radiographs.")
    if ci_low > 0.5:
        return ("The whole interval lies above chance, a sign that something transfers; on so few images from "
                "another population it says nothing about how well.")
    return "The interval includes chance: these few images cannot tell whether anything transfers to real films."


def template_spread(setup: ZeroShotSetup, vision: str, text: str, kind: str, n_anchors: int, seed: int = 0) -> pd.DataFrame:
    """Test AUROC per class of unimodal zero-shot with each positive template
    alone (all negatives kept), beside the average of the templates: how much
    one prompt's wording moves a result."""

    anchor_images, anchor_reports = anchor_pool(setup)
    anchors = select_anchors(n_anchors, strategy="random", seed=seed, pool_size=len(anchor_reports[text]))
    aligner = Aligner(kind=kind, scaling=setup.scaling, seed=seed, device=pick_device(setup.device))
    mapped = aligner.fit(anchor_images[vision][anchors], anchor_reports[text][anchors]).transform(
        setup.image_embeddings[vision][setup.test])
    y_test = setup.labels[setup.test]
    rows = []
    for j, c in enumerate(setup.classes):
        positive, negative = setup.prompt_embeddings[text][c]
        if not 0 < y_test[:, j].sum() < len(y_test):
            continue
        single = [roc_auc_score(y_test[:, j], prompt_scores(mapped, positive[i:i + 1], negative))
                  for i in range(len(positive))]
        rows.append({"class": c, "templates": len(positive), "lowest single template": min(single),
                     "highest single template": max(single),
                     "average of templates": roc_auc_score(y_test[:, j], prompt_scores(mapped, positive, negative))})
    return pd.DataFrame(rows).set_index("class").round(3)
