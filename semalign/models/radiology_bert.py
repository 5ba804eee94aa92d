"""A study-made radiology text encoder of its own architecture: a compact BERT
pretrained from scratch on the training-split IU X-ray reports.

Stand-in for CXR-BERT, which cannot be downloaded here. The study's general text
encoders are MiniLM-L6 (384-d) and MPNet (768-d); a medical encoder made by
fine-tuning one of them stays so close to it that stitching the two without any
transform already works, and then the stitching experiments say nothing. This
one shares nothing with them: its own vocabulary, its own width, its own random
initialisation and only the training reports as data. It is built in three
stages, all on the *training split* only:

1. a WordPiece vocabulary (lower-cased, BERT special tokens) learnt by the
   ``tokenizers`` library from the report texts (findings + impression);
2. masked-language-model pretraining of a randomly initialised
   ``BertForMaskedLM`` (BERT's masking, :func:`mask_tokens`);
3. contrastive training of the encoder on (findings, impression) pairs: symmetric
   InfoNCE on mean-pooled, L2-normalised embeddings, with pairs that share a text
   removed from each other's negatives (:func:`contrastive_loss`).

The result is a Hugging Face folder (``model.safetensors`` of the ``BertModel``,
``config.json``, tokenizer files) that the ``hf-text`` encoder family loads with
mean pooling, plus a ``semalign_encoder.json`` with the inputs and the training
losses. It is cached under ``paths.cache_dir()/encoders/radiology-bert-<key>/``
(:func:`~semalign.models.training.build_cached`), the key hashing the
training ids and texts, the configuration and :data:`FORMAT_VERSION`. Randomness
is local and seeded from :attr:`RadiologyBertConfig.seed`
(:func:`~semalign.models.training.seeded_training`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from semalign.data.reports import ReportSet
from semalign.models.base import no_transformers_bars
from semalign.models.registry import EncoderSpec
from semalign.models.text import mean_pool
from semalign.models.training import (
    build_cached,
    check_ranges,
    length_grouped_batches,
    run_stage,
    seeded_training,
    stage_summary,
    warmup_adamw,
)
from semalign.core import cache
from semalign.core.errors import SemalignError

#: Bumped when the build changes in a way the config does not show.
FORMAT_VERSION = 1
ENCODER_NAME = "radiology-bert"
FOLDER_PREFIX = "radiology-bert-"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: RoBERTa's second-moment decay: steadier than 0.999 for short transformer pretraining.
ADAM_BETAS = (0.9, 0.98)
_FOLDER_FILES = ("model.safetensors", "config.json", "tokenizer.json")


@dataclasses.dataclass(frozen=True)
class RadiologyBertConfig:
    """Vocabulary, architecture and training settings; every field enters the cache key.

    The defaults fit the offline profile: the build runs on one CPU thread,
    inside a cold run of the study.

    ``vocab_size`` (4096) is the WordPiece vocabulary's upper bound and
    ``min_frequency`` (2) the fewest occurrences a merged piece needs; on the IU
    training reports the vocabulary saturates below that bound.
    ``hidden_size`` (256), ``layers`` (2), ``heads`` (4), ``intermediate_size``
    (1024): a compact BERT, 256-d, unlike MiniLM's 384 and MPNet's 768. Two
    layers rather than four: the cheaper steps let the pretraining below get
    past its plateau within the budget.
    ``max_length`` (128) tokens, also the number of position embeddings; nearly
    all reports are shorter.
    ``mlm_steps`` (300) steps of ``mlm_batch_size`` (16) reports at peak rate
    ``mlm_lr`` (1e-3), predicting ``mask_probability`` (0.15) of the tokens,
    with ``mlm_dropout`` (0.0). A BERT trained from scratch first sits on a
    plateau where it predicts token frequencies whatever the context, and there
    every report gets nearly the same mean-pooled vector; a pretraining that ends
    on the plateau leaves a collapsed encoder that the contrastive stage barely
    recovers. The plateau's length is counted in updates, so small batches (more
    updates for the same compute) and no dropout (a pretraining this short cannot
    overfit, and dropout slows the escape) carry the model past it.
    ``contrastive_steps`` (200) steps of ``contrastive_batch_size`` (16)
    (findings, impression) pairs at peak rate ``contrastive_lr`` (1e-3) with
    ``contrastive_dropout`` (0.1, as in BERT), cosine similarities times
    ``scale`` (20) as in ``MultipleNegativesRankingLoss``. On a CPU the pairs
    per second hardly depend on the batch size, so more updates of a smaller
    batch beat fewer of a larger one at equal pairs seen.
    Each stage warms up linearly over ``warmup_fraction`` (0.1) of its steps, then
    decays linearly to 0; AdamW with ``weight_decay`` (0.01, not on biases and
    LayerNorm) and gradient norm clipped at ``max_grad_norm`` (1.0).
    ``length_grouping`` (16): batches are cut from runs of 16 batches' worth of
    shuffled texts sorted by length (less padding), see
    :func:`semalign.models.training.length_grouped_batches`.
    ``threads`` (1) torch threads while training: the thread count changes the
    float reduction order, so fixing it fixes the weights on every machine.
    ``seed`` (0) drives initialisation, batch order, masking and dropout.
    """

    vocab_size: int = 4096
    min_frequency: int = 2
    hidden_size: int = 256
    layers: int = 2
    heads: int = 4
    intermediate_size: int = 1024
    max_length: int = 128
    mlm_steps: int = 300
    mlm_batch_size: int = 16
    mlm_lr: float = 1e-3
    mlm_dropout: float = 0.0
    mask_probability: float = 0.15
    contrastive_steps: int = 200
    contrastive_batch_size: int = 16
    contrastive_lr: float = 1e-3
    contrastive_dropout: float = 0.1
    scale: float = 20.0
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    length_grouping: int = 16
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges(self, {
            "vocab_size": self.vocab_size > len(SPECIAL_TOKENS), "min_frequency": self.min_frequency >= 1,
            "hidden_size": self.hidden_size >= 8, "layers": self.layers >= 1,
            "heads": self.heads >= 1 and self.hidden_size % self.heads == 0,
            "intermediate_size": self.intermediate_size >= 1, "max_length": 8 <= self.max_length <= 512,
            "mlm_dropout": 0 <= self.mlm_dropout < 1, "contrastive_dropout": 0 <= self.contrastive_dropout < 1,
            "mlm_steps": self.mlm_steps >= 0, "mlm_batch_size": self.mlm_batch_size >= 1, "mlm_lr": self.mlm_lr > 0,
            "mask_probability": 0 < self.mask_probability < 1, "contrastive_steps": self.contrastive_steps >= 0,
            "contrastive_batch_size": self.contrastive_batch_size >= 2, "contrastive_lr": self.contrastive_lr > 0,
            "scale": self.scale > 0, "warmup_fraction": 0 <= self.warmup_fraction < 1,
            "max_grad_norm": self.max_grad_norm > 0, "length_grouping": self.length_grouping >= 0,
            "threads": self.threads >= 1,
        }, "RadiologyBertConfig's docstring")


# --------------------------------------------------------------------------- inputs


def _check_enough(reports: ReportSet, count: int, what: str, config: Any, field: str) -> None:
    """Raise when fewer than ``config.<field>`` (a batch size) of the training reports have ``what``."""
    needed = getattr(config, field)
    if count < needed:
        raise SemalignError(
            f"only {count} of the {len(reports)} training reports have {what}, fewer than "
            f"{type(config).__name__}.{field}={needed}; pass more training reports or lower {field} to at most {count}"
        )


def _sections(reports: ReportSet) -> list[tuple[str, str, str]]:
    """(id, findings, impression) of every report, stripped and sorted by id.

    Sorting makes the training independent of the order the reports come in, as
    the cache key is.
    """
    extra = reports.extra
    if extra is None or not {"findings", "impression"} <= set(extra.columns):
        raise SemalignError(
            f"{reports.name} has no 'findings' and 'impression' columns; {ENCODER_NAME} is trained on "
            "IU X-ray reports: pass semalign.data.reports.load_iu_reports().subset(train_index)"
        )
    return sorted(
        (str(i), str(f).strip(), str(m).strip())
        for i, f, m in zip(reports.ids, extra["findings"].fillna(""), extra["impression"].fillna(""))
    )


def training_pairs(reports: ReportSet) -> tuple[list[str], list[str], list[str]]:
    """(ids, findings, impressions) of the reports with both sections, sorted by id."""
    rows = [r for r in _sections(reports) if r[1] and r[2]]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def training_texts(reports: ReportSet) -> list[str]:
    """The masked-language-model corpus: findings and impression of each report
    joined, for every report with either, in id order."""
    texts = (" ".join(part for part in (f, m) if part) for _, f, m in _sections(reports))
    return [t for t in texts if t]


def cache_inputs(reports: ReportSet, config: RadiologyBertConfig) -> dict[str, Any]:
    """Everything the trained weights depend on, as recorded and hashed."""
    sections = _sections(reports)
    blob = json.dumps(sections, ensure_ascii=False, separators=(",", ":"))
    return {
        "format_version": FORMAT_VERSION,
        "training_ids_sha256": cache.sha256_bytes("\n".join(sorted(map(str, reports.ids))).encode()),
        "n_training_reports": len(reports),
        "n_training_texts": len(training_texts(reports)),
        "n_training_pairs": len(training_pairs(reports)[0]),
        "sections_text_sha256": cache.sha256_bytes(blob.encode()),
        "config": dataclasses.asdict(config),
    }


# --------------------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str], vocab_size: int, min_frequency: int, max_length: int):
    """A lower-cased BERT WordPiece tokenizer (a ``transformers.BertTokenizer``)
    whose vocabulary is learnt from ``texts``.

    The ``tokenizers`` trainer numbers the ``##``-continuation pieces in
    hash-map order, which on ties changes which merges it makes from one run
    to the next (huggingface/tokenizers#1794). Listing every ``##<char>`` up front,
    after the special tokens, fixes their ids, and so makes the vocabulary the
    same on every run.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    chars = sorted(
        {c for text in texts for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)) for c in word}
    )
    model = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    model.normalizer = normalizer
    model.pre_tokenizer = pre_tokenizer
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[*SPECIAL_TOKENS, *(f"##{c}" for c in chars)],
        show_progress=False,
    )
    model.train_from_iterator(texts, trainer)
    vocab = dict(sorted(model.get_vocab().items(), key=lambda item: item[1]))
    if list(vocab)[: len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
        raise SemalignError(f"the trained vocabulary does not start with {SPECIAL_TOKENS}; check the tokenizers version")
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=max_length)


# --------------------------------------------------------------------------- training


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


def mask_tokens(
    ids: torch.Tensor, maskable: torch.Tensor, mask_id: int, vocab_size: int, probability: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: (corrupted ids, boolean positions to predict).

    Each ``maskable`` position is chosen with ``probability`` (at least one per
    batch, so the loss is defined); a chosen token becomes ``mask_id`` with
    probability 0.8, a random non-special token with 0.1, and stays with 0.1.
    """
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & maskable
    if not chosen.any():
        chosen[tuple(maskable.nonzero()[0])] = True
    action = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(len(SPECIAL_TOKENS), vocab_size, ids.shape, generator=generator)
    corrupted = ids.clone()
    corrupted[chosen & (action < 0.8)] = mask_id
    swap = chosen & (action >= 0.8) & (action < 0.9)
    corrupted[swap] = random_ids[swap]
    return corrupted, chosen


def _bert_config(config: RadiologyBertConfig, tokenizer, dropout: float):
    """The architecture of ``config`` over ``tokenizer``'s vocabulary."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_length,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=tokenizer.pad_token_id,
    )


def _pretrain(tokenizer, text_tokens: list[list[int]], config: RadiologyBertConfig, generator: torch.Generator,
              bar) -> tuple[Any, list[float], float]:
    """Stage 2: masked-language-model pretraining of a randomly initialised BERT
    (initialised from the global generator, which the caller has seeded).
    Returns the model, its losses and the stage's seconds."""
    from transformers import BertForMaskedLM

    vocab_size = len(tokenizer)
    special_ids = torch.tensor([tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS])
    mlm = BertForMaskedLM(_bert_config(config, tokenizer, config.mlm_dropout))
    mlm.train()

    def mlm_step(index: list[int]) -> torch.Tensor:
        ids, mask = _pad(tokenizer, [text_tokens[i] for i in index])
        maskable = mask.bool() & ~torch.isin(ids, special_ids)
        corrupted, chosen = mask_tokens(
            ids, maskable, tokenizer.mask_token_id, vocab_size, config.mask_probability, generator
        )
        hidden = mlm.bert(input_ids=corrupted, attention_mask=mask).last_hidden_state
        # the vocabulary projection only where a token is predicted
        return F.cross_entropy(mlm.cls(hidden[chosen]), ids[chosen])

    parts = warmup_adamw(mlm, config.mlm_lr, config.weight_decay, config.mlm_steps, config.warmup_fraction, ADAM_BETAS)
    batches = length_grouped_batches(
        [len(t) for t in text_tokens], config.mlm_batch_size, config.mlm_steps, generator, config.length_grouping
    )
    losses, seconds = run_stage(mlm_step, batches, parts, config.max_grad_norm, bar, "radiology-bert's MLM",
                                "lower the learning rate", stage="MLM")
    return mlm, losses, seconds


def _train_contrastive(mlm, tokenizer, pair_tokens: tuple[list[list[int]], list[list[int]]],
                       pairs: tuple[list[str], list[str]], config: RadiologyBertConfig, generator: torch.Generator,
                       bar) -> tuple[Any, list[float], float]:
    """Stage 3: contrastive training, on (findings, impression) pairs, of the
    pretrained encoder. Returns the encoder, its losses and the stage's seconds."""
    from transformers import BertModel

    # A full BertModel (its pooler unused: the study pools by mean) so that
    # AutoModel loads the folder without missing weights.
    encoder = BertModel(_bert_config(config, tokenizer, config.contrastive_dropout))
    missing, unexpected = encoder.load_state_dict(mlm.bert.state_dict(), strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise SemalignError(f"the MLM encoder does not fit BertModel: missing {missing}, unexpected {unexpected}")
    encoder.train()
    contrastive_step = _pair_loss(encoder, tokenizer, pair_tokens, pairs, config.scale)
    parts = warmup_adamw(encoder, config.contrastive_lr, config.weight_decay, config.contrastive_steps,
                         config.warmup_fraction, ADAM_BETAS)
    batches = length_grouped_batches(
        [len(t) for t in pair_tokens[0]], config.contrastive_batch_size, config.contrastive_steps, generator,
        config.length_grouping,
    )
    losses, seconds = run_stage(contrastive_step, batches, parts, config.max_grad_norm, bar,
                                "radiology-bert's contrastive", "lower the learning rate", stage="contrastive")
    return encoder, losses, seconds


def _train(
    folder: Path, texts: list[str], pairs: tuple[list[str], list[str], list[str]], config: RadiologyBertConfig, progress: bool
) -> dict[str, Any]:
    """Build the tokenizer, pretrain and train the encoder, save both into ``folder``; return metrics."""
    started = time.perf_counter()
    tokenizer = train_tokenizer(texts, config.vocab_size, config.min_frequency, config.max_length)

    def tokenize(items: list[str]) -> list[list[int]]:
        return tokenizer(items, truncation=True, max_length=config.max_length)["input_ids"]

    text_tokens = tokenize(texts)
    _, findings, impressions = pairs
    pair_tokens = tokenize(findings), tokenize(impressions)
    generator = torch.Generator().manual_seed(config.seed)

    with seeded_training(config.seed, config.threads, progress, total=config.mlm_steps + config.contrastive_steps,
                         desc="training radiology-bert (MLM, then contrastive)") as bar, no_transformers_bars():
        mlm, mlm_losses, mlm_seconds = _pretrain(tokenizer, text_tokens, config, generator, bar)
        encoder, contrastive_losses, contrastive_seconds = _train_contrastive(
            mlm, tokenizer, pair_tokens, (findings, impressions), config, generator, bar
        )
        encoder.eval()
        encoder.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    return {
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "mlm": stage_summary(mlm_losses, config.mlm_batch_size, len(texts), mlm_seconds),
        "contrastive": stage_summary(contrastive_losses, config.contrastive_batch_size, len(findings), contrastive_seconds),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _library_versions() -> dict[str, str]:
    import tokenizers
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}


# --------------------------------------------------------------------------- public API


def build_radiology_bert(
    train_reports: ReportSet, config: RadiologyBertConfig | None = None, progress: bool = True
) -> Path:
    """The compact radiology BERT for these training reports: its cached folder.

    ``train_reports`` must be the training split only (e.g.
    ``load_iu_reports().subset(train_index)``): the test reports must stay unseen.
    Trains on first use and returns the cached folder afterwards without
    loading anything.
    """
    config = config or RadiologyBertConfig()
    texts = training_texts(train_reports)
    pairs = training_pairs(train_reports)
    _check_enough(train_reports, len(texts), "a FINDINGS or an IMPRESSION section", config, "mlm_batch_size")
    _check_enough(train_reports, len(pairs[0]), "both a FINDINGS and an IMPRESSION section", config,
                  "contrastive_batch_size")
    inputs = cache_inputs(train_reports, config)

    def write(folder: Path) -> dict[str, Any]:
        metrics = _train(folder, texts, pairs, config, progress)
        return {
            "kind": ENCODER_NAME,
            "pooling": "mean",
            "normalize": True,
            "max_length": config.max_length,
            "embedding_dim": config.hidden_size,
            **inputs,
            "libraries": _library_versions(),
            "training": metrics,
        }

    return build_cached(FOLDER_PREFIX, inputs, _FOLDER_FILES, write)


def radiology_bert_spec(
    train_reports: ReportSet, config: RadiologyBertConfig | None = None, progress: bool = True
) -> EncoderSpec:
    """Build (cached) the encoder on these training reports and return its spec, named ``radiology-bert``."""
    config = config or RadiologyBertConfig()
    folder = build_radiology_bert(train_reports, config, progress=progress)
    return EncoderSpec(
        name=ENCODER_NAME, modality="text", domain="medical", family="hf-text", source=str(folder), pooling="mean",
        normalize=True, max_length=config.max_length,
        description=f"compact BERT ({config.layers} layers, {config.hidden_size}-d) pretrained from scratch "
                    "by the study with masked-language modelling on the training-split IU reports, then "
                    "trained contrastively on findings ↔ impression; stand-in for CXR-BERT",
    )
