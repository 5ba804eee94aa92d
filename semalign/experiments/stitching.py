"""Cross-encoder stitching experiments: naive, aligned, upper bound and few-shot.

Given the embeddings of the same items by several encoders, a label matrix and
a fit/validation/test split, :func:`stitching_records` evaluates, for every
ordered encoder pair X → Y (or only those into the ``targets``), anchor count
and seed:

* ``naive``       – Y's decoder on X's raw embeddings (padded/truncated);
* ``aligned``     – Y's decoder on T(X), T fitted on unlabelled anchors;
* ``upper_bound`` – each encoder's decoder on its own embeddings;
* ``few_shot``    – a decoder trained on X's embeddings of the same anchors
  *with their labels*: the fair "just label n items" baseline.

Decoders are trained once per encoder on the fit rows, their strength chosen on
the validation rows; anchors are drawn from the fit rows only. Every setting is
scored on the validation rows (``split="validation"``, what later choices such
as the best transform read) and once on the test rows, with a 95% bootstrap
interval over test items (:mod:`semalign.experiments.stats`).

At each claim budget (``claim_anchor_counts`` and the largest anchor count)
each aligned setting also gets a ``rounding_delta`` record: how far its test macro-AUROC moves when the anchors' source embeddings
change by a relative :data:`ROUNDING`, about what separates two machines' fp32
embeddings. It is ~0 where the anchors determine the transform, and large for
``ortho`` and ``l-ortho`` with fewer anchors than dimensions, where the SVD
completes the transform outside the anchors' span arbitrarily; the claims
widen their intervals by it (:mod:`semalign.experiments.claims`).

A ``similarity`` record per ordered pair of encoders (both orders share one
value) gives the linear CKA and the mutual k-NN overlap (k = :data:`SIMILARITY_K`)
of the two spaces on the test rows: what the diagnostics page sets against the
stitching gap, read from the records rather than from the embeddings again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import threading
import warnings
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np
import sklearn
from scipy.special import expit
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.neural_network import MLPClassifier

from semalign.experiments import stats
from semalign.method.align import Aligner, select_anchors
from semalign.method.similarity import linear_cka, mutual_knn
from semalign.models.encoders import pick_device
from semalign.core.cache import atomic_path, hash_key, read_checked_json, sha256_bytes, write_checked_json
from semalign.experiments.claims import merged, record_replicate_key
from semalign.core.errors import SemalignError
from semalign.experiments.parallel import sweep_map
from semalign.core.paths import cache_dir

DECODERS = ("logreg", "mlp")
FEW_SHOT_VERSION = 4  # bump when the few-shot computation or its cache entry changes
DECODER_VERSION = 2  # bump when the decoders' training changes
#: Inverse regularisation strengths (scikit-learn's C) a logreg decoder chooses from on the validation rows.
DECODER_STRENGTHS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
#: Bootstrap resamples of the test items behind every interval.
N_BOOT = 1000
#: Relative, element-wise perturbation of the anchors behind the ``rounding_delta`` records.
ROUNDING = 1e-6
#: Neighbours of the mutual k-NN overlap in the ``similarity`` records.
SIMILARITY_K = 10


class Decoder:
    """A multi-label classifier: one binary model per label column.

    ``logreg`` is a logistic regression, ``mlp`` a one-hidden-layer MLP. A label
    with a single class among the training rows (common with few anchors) is
    predicted by its constant training frequency. A fitted ``logreg`` decoder is
    kept as plain arrays (``coef_``, ``intercept_``, ``fitted_``, ``constant_``;
    :meth:`arrays` / :meth:`from_arrays`), so it can be cached without pickle.
    """

    def __init__(self, kind: str = "logreg", seed: int = 0, strength: float = 1.0):
        if kind not in DECODERS:
            raise SemalignError(f"unknown decoder {kind!r}; valid decoders: {', '.join(DECODERS)}")
        self.kind, self.seed, self.strength = kind, seed, float(strength)

    def _model(self):
        if self.kind == "mlp":
            return MLPClassifier(hidden_layer_sizes=(256,), max_iter=300, random_state=self.seed)
        return LogisticRegression(C=self.strength, max_iter=2000, random_state=self.seed)

    def fit(self, x: np.ndarray, y: np.ndarray) -> Decoder:
        y = np.asarray(y, dtype=int)
        self.constant_ = y.mean(axis=0)
        with _quiet_convergence():
            self.models_ = [self._model().fit(x, column) if column.min() != column.max() else None for column in y.T]
        if self.kind == "logreg":
            self.fitted_ = np.array([model is not None for model in self.models_])
            self.coef_ = np.stack([model.coef_[0] if model is not None else np.zeros(x.shape[1]) for model in self.models_])
            self.intercept_ = np.array([model.intercept_[0] if model is not None else 0.0 for model in self.models_])
        return self

    def arrays(self) -> dict[str, np.ndarray]:
        """A fitted ``logreg`` decoder's state as arrays."""
        if self.kind != "logreg":
            raise SemalignError(f"only logreg decoders are kept as arrays, not {self.kind!r}")
        return {"coef": self.coef_, "intercept": self.intercept_, "fitted": self.fitted_, "constant": self.constant_}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Decoder:
        decoder = cls("logreg")
        decoder.coef_, decoder.intercept_ = np.asarray(arrays["coef"]), np.asarray(arrays["intercept"])
        decoder.fitted_, decoder.constant_ = np.asarray(arrays["fitted"], dtype=bool), np.asarray(arrays["constant"])
        return decoder

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "logreg":  # what LogisticRegression.predict_proba computes for a binary label
            return np.where(self.fitted_, expit(x @ self.coef_.T + self.intercept_), self.constant_)
        columns = [
            model.predict_proba(x)[:, 1] if model is not None else np.full(len(x), self.constant_[j])
            for j, model in enumerate(self.models_)
        ]
        return np.stack(columns, axis=1)


def score(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Macro-AUROC over labels with both classes in ``y_true``, macro-F1 and
    mean per-label accuracy at a 0.5 threshold."""
    y_true = np.asarray(y_true, dtype=int)
    predicted = (proba >= 0.5).astype(int)
    scorable = [j for j in range(y_true.shape[1]) if 0 < y_true[:, j].sum() < len(y_true)]
    if not scorable:
        raise SemalignError(f"no label has both classes among the {len(y_true)} test items; raise test_fraction "
                            "or use more items")
    auroc = float(np.mean([roc_auc_score(y_true[:, j], proba[:, j]) for j in scorable]))
    f1 = float(f1_score(y_true, predicted, average="macro", zero_division=0))
    accuracy = float((y_true == predicted).mean())
    return {"macro_auroc": auroc, "macro_f1": f1, "accuracy": accuracy}


def score_replicates(y_true: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics of :func:`score` under each bootstrap resample (rows of ``weights``)."""
    y_true = np.asarray(y_true, dtype=int)
    predicted = (proba >= 0.5).astype(int)
    weights = np.asarray(weights, dtype=float)
    tp = weights @ (predicted & y_true)
    fp = weights @ (predicted & (1 - y_true))
    fn = weights @ ((1 - predicted) & y_true)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0).mean(axis=1)
    accuracy = weights @ (y_true == predicted).mean(axis=1) / weights.sum(axis=1)
    return {"macro_auroc": stats.macro_auroc_replicates(y_true, proba, weights), "macro_f1": f1, "accuracy": accuracy}


@dataclasses.dataclass
class StitchingSetup:
    """Everything a sweep needs; embeddings are keyed by encoder name."""

    embeddings: Mapping[str, np.ndarray]
    labels: np.ndarray
    train: np.ndarray  # the fit rows: decoders are trained and anchors drawn here
    test: np.ndarray
    transform: str
    anchor_counts: Sequence[int]
    seeds: Sequence[int]
    # Held-out training rows that choose settings (decoder strength here; transform, pair downstream).
    validation: np.ndarray = dataclasses.field(default_factory=lambda: np.arange(0))
    anchor_strategy: str = "random"
    decoder: str = "logreg"
    scaling: str = "standard"
    task: str = "binary"
    jobs: int = 0  # fits at once, each on one thread; results do not depend on it (semalign.experiments.parallel); 0: one per core
    # Encoders Y whose decoder is reused: only pairs X → Y into them are run. Empty: every ordered pair.
    targets: Sequence[str] = ()
    # Anchor counts fixed in advance at which the claims are judged (with the largest): their aligned
    # records get a rounding_delta (an extra fit each). Counts not among anchor_counts are not run.
    claim_anchor_counts: Sequence[int] = ()
    n_boot: int = N_BOOT
    # Where the transforms are fitted: cpu, cuda, or auto (cuda when torch sees one), as the notebook's device.
    device: str = "cpu"

    def pairs(self) -> list[tuple[str, str]]:
        """The ordered pairs (source, target) of the sweep."""
        names = list(self.embeddings)
        unknown = [t for t in self.targets if t not in names]
        if unknown:
            raise SemalignError(f"targets {unknown} are not among the encoders {names}; name targets among the "
                                f"encoders (e.g. -p targets=[{names[-1]}]), or -p targets=[] for every ordered pair")
        targets = [n for n in names if n in self.targets] if self.targets else names
        pairs = [(x, y) for x in names for y in targets if x != y]
        if not pairs:
            raise SemalignError(f"no encoder pair to stitch: encoders {names}, targets {list(self.targets)}; "
                                f"give at least one encoder besides the targets")
        return pairs

    def sources(self) -> list[str]:
        """The encoders X of :meth:`pairs`, in encoder order."""
        return list(dict.fromkeys(source for source, _ in self.pairs()))


class _Scorer:
    """Scores predictions on the validation rows and, with a bootstrap interval,
    on the test rows. Every record shares one set of resamples of the test
    items, so replicates of two records give paired intervals."""

    def __init__(self, setup: StitchingSetup):
        self.setup = setup
        self.y_validation, self.y_test = setup.labels[setup.validation], setup.labels[setup.test]
        self.weights = stats.bootstrap_weights(len(setup.test), setup.n_boot, seed=0)

    def records(self, base: dict, embeddings: np.ndarray, predict, keep: bool = False) -> tuple[list[dict], dict]:
        """Records of ``predict`` (rows of embeddings → probabilities) for the setting
        ``base``, and (when ``keep``) its test macro-AUROC replicates by key."""
        rows = []
        if len(self.setup.validation):
            scores = score(self.y_validation, predict(embeddings[self.setup.validation]))
            rows += [{**base, "split": "validation", "metric": m, "value": v} for m, v in scores.items()]
        proba = predict(embeddings[self.setup.test])
        replicates = score_replicates(self.y_test, proba, self.weights)
        for metric, value in score(self.y_test, proba).items():
            low, high = stats.interval(replicates[metric])
            rows.append({**base, "split": "test", "metric": metric, "value": value, "ci_low": low, "ci_high": high})
        return rows, {record_replicate_key(base): replicates["macro_auroc"]} if keep else {}


def check_anchor_counts(anchor_counts: Sequence[int], fit_items: int, made_by: str) -> None:
    """Anchors are drawn from the fit split: none may ask for more items than it holds."""
    too_many = [n for n in anchor_counts if n > fit_items]
    if too_many:
        kept = [n for n in anchor_counts if n <= fit_items] or [fit_items]
        raise SemalignError(
            f"anchor_counts={list(anchor_counts)} asks for {', '.join(map(str, too_many))} anchors, but {made_by} "
            f"leave {fit_items} fit items (the anchor pool): pass counts ≤ {fit_items} "
            f"(-p anchor_counts={json.dumps(kept, separators=(',', ':'))}) or use more items"
        )


def stitching_records(setup: StitchingSetup, progress: bool = True,
                      replicates: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Every record of the sweep (see the module docstring).

    When ``replicates`` is given, it receives the test macro-AUROC bootstrap
    replicates of the naive, upper-bound, aligned and few-shot records, from
    which the claims and the few-shot crossover are judged. A ``split`` record
    says how many items the fit split holds (the anchor pool).
    """
    names = list(setup.embeddings)
    check_anchor_counts(setup.anchor_counts, len(setup.train), "the data and its split")
    scorer = _Scorer(setup)
    setup = dataclasses.replace(setup, device=pick_device(setup.device))
    budgets = {n for n in setup.claim_anchor_counts if n in setup.anchor_counts} | {max(setup.anchor_counts)}
    decoders = {name: trained_decoder(setup, name) for name in names}
    parts = [([dict(method="split", metric="fit_items", value=len(setup.train), task=setup.task)], {})]
    for name in names:
        base = dict(method="upper_bound", source=name, target=name, task=setup.task)
        parts.append(scorer.records(base, setup.embeddings[name], decoders[name].predict_proba, keep=True))
        if len(setup.validation):
            parts.append(([dict(method="decoder", source=name, target=name, task=setup.task, metric="strength",
                                value=decoders[name].strength, selected_on="validation")], {}))
    parts.append((similarity_records(setup), {}))
    pairs = setup.pairs()
    for source, target in pairs:
        naive = Aligner(kind="naive").fit(setup.embeddings[source][setup.train[:2]], setup.embeddings[target][setup.train[:2]])
        parts.append(scorer.records(dict(method="naive", source=source, target=target, task=setup.task),
                                    setup.embeddings[source],
                                    lambda x, t=target, a=naive: decoders[t].predict_proba(a.transform(x)), keep=True))
    parts.append(few_shot_records(setup, {name: decoders[name].strength for name in names}, progress=progress))

    def aligned(point: tuple[int, int, str]) -> tuple[list[dict], dict]:
        seed, n, source = point
        chosen = _anchors(setup, source, seed, n)
        per_target = []
        for target in (y for x, y in pairs if x == source):
            aligner = Aligner(kind=setup.transform, scaling=setup.scaling, seed=seed, device=setup.device)
            aligner.fit(setup.embeddings[source][chosen], setup.embeddings[target][chosen])
            base = dict(n_anchors=n, seed=seed, task=setup.task, method="aligned", transform=setup.transform,
                        source=source, target=target)
            rows, kept = scorer.records(base, setup.embeddings[source],
                                        lambda x, t=target, a=aligner: decoders[t].predict_proba(a.transform(x)),
                                        keep=True)
            if n in budgets:
                reference = next(r["value"] for r in rows if r["split"] == "test" and r["metric"] == "macro_auroc")
                delta = rounding_delta(setup, source, target, chosen, seed, decoders[target], reference)
                rows.append({**base, "split": "test", "metric": "rounding_delta", "value": delta})
            per_target.append((rows, kept))
        return merged(per_target)

    with _quiet_convergence():
        parts += sweep_map(aligned, itertools.product(setup.seeds, setup.anchor_counts, setup.sources()),
                           jobs=setup.jobs, desc=f"{setup.transform} sweep", progress=progress)
    records, kept = merged(parts)
    if replicates is not None:
        replicates.update(kept)
    return records


def similarity_records(setup: StitchingSetup) -> list[dict]:
    """Linear CKA and mutual k-NN overlap of every two encoders on the test rows,
    one record per ordered pair (computed once per pair, so both orders share their value)."""
    rows = []
    for first, second in itertools.combinations(setup.embeddings, 2):
        x, y = setup.embeddings[first][setup.test], setup.embeddings[second][setup.test]
        values = dict(linear_cka=linear_cka(x, y), mutual_knn=mutual_knn(x, y, k=SIMILARITY_K))
        rows += [dict(method="similarity", source=a, target=b, task=setup.task, split="test", metric=metric, value=value)
                 for a, b in ((first, second), (second, first)) for metric, value in values.items()]
    return rows


def rounding_delta(setup: StitchingSetup, source: str, target: str, anchors: np.ndarray, seed: int,
                   decoder: Decoder, reference: float) -> float:
    """The absolute change in test macro-AUROC when ``setup.transform`` is fitted
    on ``anchors`` whose source embeddings are first scaled element-wise by
    (1 + ROUNDING z), z standard normal drawn from ``seed``; ``reference`` is the
    score of the fit on the anchors as they are. See :data:`ROUNDING`."""
    x = setup.embeddings[source][anchors].astype(np.float64)
    z = np.random.default_rng(seed).standard_normal(x.shape)
    aligner = Aligner(kind=setup.transform, scaling=setup.scaling, seed=seed, device=pick_device(setup.device))
    aligner.fit(x * (1 + ROUNDING * z), setup.embeddings[target][anchors])
    proba = decoder.predict_proba(aligner.transform(setup.embeddings[source][setup.test]))
    return abs(score(setup.labels[setup.test], proba)["macro_auroc"] - reference)


@contextlib.contextmanager
def _quiet_convergence():
    """Silence scikit-learn's ConvergenceWarning (a decoder stopping at ``max_iter``).

    ``warnings.catch_warnings`` swaps process-wide state, so it is not safe in
    the threads of a sweep: only the main thread sets the filter (around the
    whole sweep), and decoders fitted in worker threads run under it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _digest(a: np.ndarray) -> str:
    """An array's content, dtype and shape, for a cache key."""
    return sha256_bytes(np.ascontiguousarray(a).tobytes()) + str(a.dtype) + str(a.shape)


def trained_decoder(setup: StitchingSetup, name: str) -> Decoder:
    """Encoder ``name``'s decoder trained on the fit rows, its strength (C) the
    one of :data:`DECODER_STRENGTHS` with the best validation macro-AUROC (1.0
    without validation rows; an ``mlp`` decoder is not tuned).

    The four transform runs of a sweep train the same decoders, so a ``logreg``
    decoder is cached (``.npz`` without pickle under ``<cache>/records/``), keyed
    by the fit and validation rows' embeddings and labels, the strengths and
    scikit-learn's version. A damaged entry is reported and retrained.
    """
    x, y = setup.embeddings[name][setup.train], setup.labels[setup.train]
    if setup.decoder != "logreg":
        return Decoder(setup.decoder).fit(x, y)
    x_val, y_val = setup.embeddings[name][setup.validation], setup.labels[setup.validation]
    key = hash_key("decoder", DECODER_VERSION, sklearn.__version__, setup.decoder, _digest(x), _digest(y),
                   _digest(x_val), _digest(y_val), DECODER_STRENGTHS)
    path = cache_dir() / "records" / f"decoder-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                decoder = Decoder.from_arrays({k: data[k] for k in ("coef", "intercept", "fitted", "constant")})
                decoder.strength = float(data["strength"])
                return decoder
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            warnings.warn(f"{path} is damaged; retraining the decoder of {name}", stacklevel=2)
    if len(setup.validation):
        candidates = [Decoder(setup.decoder, strength=c).fit(x, y) for c in DECODER_STRENGTHS]
        decoder = max(candidates, key=lambda d: score(y_val, d.predict_proba(x_val))["macro_auroc"])
    else:
        decoder = Decoder(setup.decoder).fit(x, y)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, strength=np.array(decoder.strength), **decoder.arrays())
    return decoder


def _anchors(setup: StitchingSetup, source: str, seed: int, n: int) -> np.ndarray:
    """Row indices of the anchors: they depend on seed and count (and, for
    'diverse', on the source side), never on the transform."""
    pool = setup.train
    stratify = setup.labels[pool][:, 0] if setup.anchor_strategy == "stratified" else None
    return pool[select_anchors(n, strategy=setup.anchor_strategy, seed=seed,
                               features=setup.embeddings[source][pool], labels=stratify, pool_size=len(pool))]


def few_shot_records(setup: StitchingSetup, strengths: Mapping[str, float] | None = None,
                     progress: bool = True) -> tuple[list[dict], dict[str, np.ndarray]]:
    """The few-shot baseline: per source encoder (:meth:`StitchingSetup.sources`),
    seed and anchor count, a decoder trained on the anchors *with their labels*
    (at the strength chosen on validation for that encoder's own decoder,
    ``strengths``), scored as every record is; and the test replicates of its records.

    It does not depend on the transform, so the four transform runs of a sweep
    share it through a content-keyed cache entry (JSON under ``<cache>/records/``):
    the key hashes the embeddings, labels, split, anchor counts, seeds, anchor
    strategy, decoder, strengths and task.
    """
    sources = setup.sources()
    strengths = {name: float((strengths or {}).get(name, 1.0)) for name in sources}
    digest = {name: _digest(np.asarray(setup.embeddings[name], dtype=np.float32)) for name in sources}
    key = hash_key("few-shot", FEW_SHOT_VERSION, digest,
                   [_digest(a) for a in (setup.labels, setup.train, setup.validation, setup.test)],
                   list(setup.anchor_counts), list(setup.seeds), setup.anchor_strategy, setup.decoder, setup.task,
                   strengths, setup.n_boot)
    path = cache_dir() / "records" / f"few-shot-{key}.json"
    cached = read_checked_json(path)  # sha256-checked: a changed digit is recomputed, not reported
    if cached is not None:
        return cached["records"], {k: np.asarray(v) for k, v in cached["replicates"].items()}
    scorer = _Scorer(setup)

    def few_shot(point: tuple[int, int, str]) -> tuple[list[dict], dict]:
        seed, n, source = point
        chosen = _anchors(setup, source, seed, n)
        few = Decoder(setup.decoder, seed=seed, strength=strengths[source]).fit(
            setup.embeddings[source][chosen], setup.labels[chosen])
        return scorer.records(dict(n_anchors=n, seed=seed, task=setup.task, method="few_shot", source=source,
                                   target=source), setup.embeddings[source], few.predict_proba, keep=True)

    with _quiet_convergence():
        records, replicates = merged(sweep_map(few_shot, itertools.product(setup.seeds, setup.anchor_counts, sources),
                                               jobs=setup.jobs, desc="few-shot baseline", progress=progress))
    write_checked_json(path, {"records": records, "replicates": {k: v.tolist() for k, v in replicates.items()}})
    return records, replicates
