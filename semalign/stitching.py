"""Cross-encoder stitching experiments: naive, aligned, upper bound and few-shot.

Given the embeddings of the same items by several encoders, a label matrix and
a train/test split, :func:`stitching_records` evaluates, for every ordered
encoder pair X → Y (or only those into the ``targets``), anchor count and seed:

* ``naive``       – Y's decoder on X's raw test embeddings (padded/truncated);
* ``aligned``     – Y's decoder on T(X), T fitted on unlabelled anchors;
* ``upper_bound`` – each encoder's decoder on its own test embeddings;
* ``few_shot``    – a decoder trained on X's embeddings of the same anchors
  *with their labels*: the fair "just label n items" baseline.

Decoders are trained once per encoder on the whole training split; anchors are
drawn from the training split only.
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

from semalign.align import Aligner, select_anchors
from semalign.cache import atomic_path, atomic_write_json, hash_key, sha256_bytes
from semalign.errors import SemalignError
from semalign.parallel import sweep_map
from semalign.paths import cache_dir

DECODERS = ("logreg", "mlp")
METRICS = ("macro_auroc", "macro_f1", "accuracy")
FEW_SHOT_VERSION = 1  # bump when the few-shot computation changes
DECODER_VERSION = 1  # bump when the decoders' training changes


class Decoder:
    """A multi-label classifier: one binary model per label column.

    ``logreg`` is a logistic regression, ``mlp`` a one-hidden-layer MLP. A label
    with a single class among the training rows (common with few anchors) is
    predicted by its constant training frequency. A fitted ``logreg`` decoder is
    kept as plain arrays (``coef_``, ``intercept_``, ``fitted_``, ``constant_``;
    :meth:`arrays` / :meth:`from_arrays`), so it can be cached without pickle.
    """

    def __init__(self, kind: str = "logreg", seed: int = 0):
        if kind not in DECODERS:
            raise SemalignError(f"unknown decoder {kind!r}; valid decoders: {', '.join(DECODERS)}")
        self.kind, self.seed = kind, seed

    def _model(self):
        if self.kind == "mlp":
            return MLPClassifier(hidden_layer_sizes=(256,), max_iter=300, random_state=self.seed)
        return LogisticRegression(max_iter=2000, random_state=self.seed)

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
        raise SemalignError("no label has both classes in the test split; use more reports or another task")
    auroc = float(np.mean([roc_auc_score(y_true[:, j], proba[:, j]) for j in scorable]))
    f1 = float(f1_score(y_true, predicted, average="macro", zero_division=0))
    accuracy = float((y_true == predicted).mean())
    return {"macro_auroc": auroc, "macro_f1": f1, "accuracy": accuracy}


@dataclasses.dataclass
class StitchingSetup:
    """Everything a sweep needs; embeddings are keyed by encoder name."""

    embeddings: Mapping[str, np.ndarray]
    labels: np.ndarray
    train: np.ndarray
    test: np.ndarray
    transform: str
    anchor_counts: Sequence[int]
    seeds: Sequence[int]
    anchor_strategy: str = "random"
    decoder: str = "logreg"
    scaling: str = "standard"
    task: str = "binary"
    affine_precision: str = "fp32"  # matmuls of the affine fit's gradient: fp32, bf16 or auto (align.fit_affine_gd)
    jobs: int = 0  # fits at once, each on one thread; results do not depend on it (semalign.parallel); 0: one per core
    # Encoders Y whose decoder is reused: only pairs X → Y into them are run. Empty: every ordered pair.
    targets: Sequence[str] = ()

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


def _records(base: dict, scores: dict[str, float]) -> list[dict]:
    return [{**base, "metric": m, "value": v} for m, v in scores.items()]


def stitching_records(setup: StitchingSetup, progress: bool = True) -> list[dict]:
    """Every record of the sweep (see the module docstring)."""
    names = list(setup.embeddings)
    pool = len(setup.train)
    too_many = [n for n in setup.anchor_counts if n > pool]
    if too_many:
        raise SemalignError(f"anchor counts {too_many} exceed the anchor pool (the training split) of {pool} items; "
                            f"use anchor counts ≤ {pool} or more reports")
    y_train, y_test = setup.labels[setup.train], setup.labels[setup.test]
    decoders = {name: trained_decoder(setup, name) for name in names}
    records = []
    for name in names:
        proba = decoders[name].predict_proba(setup.embeddings[name][setup.test])
        records += _records(dict(method="upper_bound", source=name, target=name, task=setup.task), score(y_test, proba))
    pairs = setup.pairs()
    for source, target in pairs:
        naive = Aligner(kind="naive").fit(setup.embeddings[source][setup.train[:2]], setup.embeddings[target][setup.train[:2]])
        proba = decoders[target].predict_proba(naive.transform(setup.embeddings[source][setup.test]))
        records += _records(dict(method="naive", source=source, target=target, task=setup.task), score(y_test, proba))
    records += few_shot_records(setup, progress=progress)

    def aligned(point: tuple[int, int, str]) -> list[dict]:
        seed, n, source = point
        chosen = _anchors(setup, source, seed, n)
        rows = []
        for target in (y for x, y in pairs if x == source):
            aligner = Aligner(kind=setup.transform, scaling=setup.scaling, seed=seed, precision=setup.affine_precision)
            aligner.fit(setup.embeddings[source][chosen], setup.embeddings[target][chosen])
            proba = decoders[target].predict_proba(aligner.transform(setup.embeddings[source][setup.test]))
            rows += _records(dict(n_anchors=n, seed=seed, task=setup.task, method="aligned", transform=setup.transform,
                                  source=source, target=target), score(y_test, proba))
        return rows

    return records + _swept(aligned, itertools.product(setup.seeds, setup.anchor_counts, setup.sources()), setup.jobs,
                            f"{setup.transform} sweep", progress)


def _swept(fn, points, jobs: int, desc: str, progress: bool) -> list[dict]:
    """The records of ``fn`` over the grid ``points``, in grid order (:func:`semalign.parallel.sweep_map`)."""
    with _quiet_convergence():
        return [row for rows in sweep_map(fn, points, jobs=jobs, desc=desc, progress=progress) for row in rows]


@contextlib.contextmanager
def _quiet_convergence():
    """Silence scikit-learn's ConvergenceWarning (a decoder stopping at ``max_iter``).

    ``warnings.catch_warnings`` swaps process-wide state, so it is not safe in
    the threads of a sweep: only the main thread sets the filter (around the
    whole sweep in :func:`_swept`), and decoders fitted in worker threads run under it.
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
    """Encoder ``name``'s decoder trained on the whole training split.

    The four transform runs of a sweep train the same decoders, so a ``logreg``
    decoder is cached (``.npz`` without pickle under ``<cache>/records/``), keyed
    by the training rows' embeddings and labels, the decoder and scikit-learn's
    version. A damaged entry is reported and retrained.
    """
    x, y = setup.embeddings[name][setup.train], setup.labels[setup.train]
    if setup.decoder != "logreg":
        return Decoder(setup.decoder).fit(x, y)
    key = hash_key("decoder", DECODER_VERSION, sklearn.__version__, setup.decoder, _digest(x), _digest(y))
    path = cache_dir() / "records" / f"decoder-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return Decoder.from_arrays({k: data[k] for k in ("coef", "intercept", "fitted", "constant")})
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            warnings.warn(f"{path} is damaged; retraining the decoder of {name}", stacklevel=2)
    decoder = Decoder(setup.decoder).fit(x, y)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **decoder.arrays())
    return decoder


def _anchors(setup: StitchingSetup, source: str, seed: int, n: int) -> np.ndarray:
    """Row indices of the anchors: they depend on seed and count (and, for
    'diverse', on the source side), never on the transform."""
    pool = setup.train
    stratify = setup.labels[pool][:, 0] if setup.anchor_strategy == "stratified" else None
    return pool[select_anchors(n, strategy=setup.anchor_strategy, seed=seed,
                               features=setup.embeddings[source][pool], labels=stratify, pool_size=len(pool))]


def few_shot_records(setup: StitchingSetup, progress: bool = True) -> list[dict]:
    """The few-shot baseline: per source encoder (:meth:`StitchingSetup.sources`),
    seed and anchor count, a decoder trained on the anchors *with their labels*,
    scored on the test split.

    It does not depend on the transform, so the four transform runs of a sweep
    share it through a content-keyed cache entry (JSON records under
    ``<cache>/records/``): the key hashes the embeddings, labels, split, anchor
    counts, seeds, anchor strategy, decoder, task and sources.
    """
    sources = setup.sources()
    digest = {name: _digest(np.asarray(setup.embeddings[name], dtype=np.float32)) for name in sources}
    key = hash_key("few-shot", FEW_SHOT_VERSION, digest, [_digest(a) for a in (setup.labels, setup.train, setup.test)],
                   list(setup.anchor_counts), list(setup.seeds), setup.anchor_strategy, setup.decoder, setup.task)
    path = cache_dir() / "records" / f"few-shot-{key}.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except ValueError:
            warnings.warn(f"{path} is damaged; recomputing it", stacklevel=2)
    y_test = setup.labels[setup.test]

    def few_shot(point: tuple[int, int, str]) -> list[dict]:
        seed, n, source = point
        chosen = _anchors(setup, source, seed, n)
        few = Decoder(setup.decoder, seed=seed).fit(setup.embeddings[source][chosen], setup.labels[chosen])
        return _records(dict(n_anchors=n, seed=seed, task=setup.task, method="few_shot", source=source, target=source),
                        score(y_test, few.predict_proba(setup.embeddings[source][setup.test])))

    records = _swept(few_shot, itertools.product(setup.seeds, setup.anchor_counts, sources), setup.jobs,
                     "few-shot baseline", progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, records)
    return records
