"""Text encoders: transformers models with our pooling and length-sorted batching,
and the text tower of an open_clip model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from semalign.errors import SemalignError
from semalign.models.base import Encoder, model_kwargs, open_clip_model, projected, transformers_loading
from semalign.models.fast_paths import pack_linears, use_cpu_attention
from semalign.models.registry import EncoderSpec
from semalign.models.weights import Located, effective_max_length


class TextEncoder(Encoder):
    """Transformer text encoder with our pooling and length-sorted batching.

    Texts are tokenised once, sorted by token count (longest first) and cut into
    batches, so padding only ever pads a sequence to a near-equal length; rows come
    back in input order. A batch holds at most ``batch_size`` texts and, on CPU, at
    most ``max_batch_tokens`` padded tokens, so long texts go in smaller batches and
    the attention scores (batch × heads × length²) stay in cache. The default of 16
    texts a batch keeps the activations in a CPU's cache too (128 on CUDA, without
    a token limit). On CPU, models built on transformers' attention interface
    (BERT, MiniLM) use :func:`semalign.models.fast_paths._cpu_attention`.
    """

    default_batch_size = 16
    max_batch_tokens: int | None = 2048

    def __init__(self, spec: EncoderSpec, located: Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        from transformers import AutoModel, AutoTokenizer

        assert located.folder is not None
        self.max_length = effective_max_length(spec, located)
        with transformers_loading(spec, located.folder):
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(located.folder), local_files_only=True, trust_remote_code=spec.trust_remote_code
            )
            model = AutoModel.from_pretrained(str(located.folder), **model_kwargs(spec))
        self.model = self._prepare_module(model)
        # CPU: oneDNN linears on pre-packed weights, exact GELU fused into the FFN input
        self.packed_linears = pack_linears(self.model) if self.device == "cpu" else 0
        self.cpu_attention = self.device == "cpu" and spec.family != "hf-clip" and use_cpu_attention(self.model)
        if self.device == "cuda":
            self.max_batch_tokens = None
        self.dim = int(model.config.projection_dim if spec.family == "hf-clip" else model.config.hidden_size)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        for t in texts:
            if not isinstance(t, str):
                raise SemalignError(f"encoder {self.spec.name!r} encodes strings; got {type(t).__name__}: {t!r:.80}")
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return enc["input_ids"]

    def encode(self, batch: Sequence[str], batch_size: int | None = None, callback: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed texts; returns float32 (len(batch), dim) in input order."""
        import torch

        texts = list(batch)
        out = np.empty((len(texts), self.dim), np.float32)
        if not texts:
            return out
        bs = int(batch_size or self.default_batch_size)
        ids = self.tokenize(texts)
        lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
        order = np.argsort(-lengths, kind="stable")  # longest first: padding only within similar lengths
        with torch.inference_mode(), self._numerics():
            start = 0
            while start < len(order):
                width = int(lengths[order[start]])
                size = bs if not self.max_batch_tokens else max(1, min(bs, self.max_batch_tokens // max(width, 1)))
                rows = order[start : start + size]
                start += len(rows)
                input_ids = np.full((len(rows), width), self.pad_id, np.int64)
                mask = np.zeros((len(rows), width), np.int64)
                for r, i in enumerate(rows):
                    input_ids[r, : lengths[i]] = ids[i]
                    mask[r, : lengths[i]] = 1
                out[rows] = self._forward(input_ids, mask)
                if callback is not None:
                    callback(len(rows))
        return out

    def _forward(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        ii, am = self._to_device(input_ids), self._to_device(mask)
        if self.spec.family == "hf-clip":
            emb = projected(self.model.get_text_features(input_ids=ii, attention_mask=am)).float()
            return emb.cpu().numpy()
        result = self.model(input_ids=ii, attention_mask=am)
        if self.spec.pooling == "pooler":
            pooled = getattr(result, "pooler_output", None)
            if pooled is None:
                raise SemalignError(f"encoder {self.spec.name!r} has no pooler output; use pooling 'cls' or 'mean'")
            emb = pooled.float()
        else:
            hidden = getattr(result, "last_hidden_state", None)
            hidden = (result[0] if hidden is None else hidden).float()
            if self.spec.pooling == "cls":
                emb = hidden[:, 0]
            else:
                m = am.unsqueeze(-1).to(hidden.dtype)
                emb = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.spec.normalize:
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb.cpu().numpy()


class OpenClipTextEncoder(Encoder):
    """The text tower of an open_clip model (``encode_text``) with its own tokenizer."""

    default_batch_size = 64

    def __init__(self, spec: EncoderSpec, located: Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        model, self.tokenizer, cfg = open_clip_model(spec, located)
        self.model = self._prepare_module(model)
        self.dim = int(cfg["model_cfg"]["embed_dim"])

    def encode(self, batch: Sequence[str], batch_size: int | None = None, callback: Callable[[int], None] | None = None) -> np.ndarray:
        import torch

        texts = list(batch)
        for t in texts:
            if not isinstance(t, str):
                raise SemalignError(f"encoder {self.spec.name!r} encodes strings; got {type(t).__name__}")
        out = np.empty((len(texts), self.dim), np.float32)
        bs = int(batch_size or self.default_batch_size)
        with torch.inference_mode(), self._numerics():
            for start in range(0, len(texts), bs):
                tokens = self.tokenizer(texts[start : start + bs]).to(self.device)
                out[start : start + len(tokens)] = self.model.encode_text(tokens).float().cpu().numpy()
                if callback is not None:
                    callback(len(tokens))
        return out
