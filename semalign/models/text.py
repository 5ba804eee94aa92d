"""Text encoders: transformers models with our pooling and length-sorted batching,
and the text tower of an open_clip model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from semalign.core.errors import SemalignError
from semalign.models.base import Encoder, available_cores, model_kwargs, open_clip_model, projected, transformers_loading
from semalign.models.registry import EncoderSpec
from semalign.models.weights import Located, effective_max_length


#: Texts per tokenizer call when a block is tokenised on several threads.
TOKENIZE_CHUNK = 512


class TextEncoder(Encoder):
    """A transformers text model (``AutoModel``) with the pooling its spec names
    (pooler output, CLS token or attention-masked mean, optionally L2-normalised;
    a CLIP model's projected text features), and length-sorted batching.

    Texts are tokenised once (truncated to the model's maximum length), sorted by
    token count, longest first, and cut into batches of ``batch_size`` (the
    :class:`~semalign.models.base.Encoder` default unless given), so that each
    text is padded only to the length of its near-equal neighbours rather than to
    the longest text of a random batch; rows come back in input order. The
    forward pass is transformers' own, with its default attention implementation.
    """

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
        self.dim = int(model.config.projection_dim if spec.family == "hf-clip" else model.config.hidden_size)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, truncated to the model's maximum length.

        Chunks of texts are tokenised on one thread per core: the Rust tokenizer
        releases the GIL, and on a GPU tokenising on one core would leave the
        GPU waiting. The first chunk runs alone, so that it sets the tokenizer's
        truncation state before the threads read it. The ids are those of one call.
        """
        texts = _checked_texts(self.spec, texts)
        chunks = [texts[i : i + TOKENIZE_CHUNK] for i in range(0, len(texts), TOKENIZE_CHUNK)] or [[]]
        first = self._token_ids(chunks[0])
        if len(chunks) == 1:
            return first
        with ThreadPoolExecutor(min(available_cores(), len(chunks) - 1), thread_name_prefix="semalign-tokenize") as pool:
            return first + [ids for chunk in pool.map(self._token_ids, chunks[1:]) for ids in chunk]

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

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
        batches = []
        with torch.inference_mode(), self._numerics():
            for start in range(0, len(order), bs):
                rows = order[start : start + bs]
                width = int(lengths[rows[0]])
                input_ids = np.full((len(rows), width), self.pad_id, np.int64)
                mask = np.zeros((len(rows), width), np.int64)
                for r, i in enumerate(rows):
                    input_ids[r, : lengths[i]] = ids[i]
                    mask[r, : lengths[i]] = 1
                # kept on the device until the end: copying each batch back would make the
                # host wait for the GPU instead of preparing the next batch meanwhile
                batches.append(self._forward(input_ids, mask))
                if callback is not None:
                    callback(len(rows))
            out[order] = torch.cat(batches).cpu().numpy()
        return out

    def _forward(self, input_ids: np.ndarray, mask: np.ndarray) -> Any:
        """Pooled float32 embeddings of one padded batch, as a tensor on the encoder's device."""
        import torch

        ii, am = self._to_device(input_ids), self._to_device(mask)
        if self.spec.family == "hf-clip":
            return projected(self.model.get_text_features(input_ids=ii, attention_mask=am)).float()
        result = self.model(input_ids=ii, attention_mask=am)
        if self.spec.pooling == "pooler":
            pooled = getattr(result, "pooler_output", None)
            if pooled is None:
                raise SemalignError(f"encoder {self.spec.name!r} has no pooler output; use pooling 'cls' or 'mean'")
            emb = pooled.float()
        else:
            hidden = getattr(result, "last_hidden_state", None)
            hidden = (result[0] if hidden is None else hidden).float()
            emb = hidden[:, 0] if self.spec.pooling == "cls" else mean_pool(hidden, am, normalize=False)
        if self.spec.normalize:
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        return emb


def _checked_texts(spec: EncoderSpec, texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise SemalignError(f"encoder {spec.name!r} encodes strings; got {type(t).__name__}: {t!r:.80}")
    return texts


def mean_pool(hidden: Any, mask: Any, normalize: bool = True) -> Any:
    """Mean of the token vectors under the attention mask (fp32), L2-normalised unless ``normalize`` is False."""
    import torch.nn.functional as F

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    pooled = pooled.float()
    return F.normalize(pooled, dim=-1) if normalize else pooled


class OpenClipTextEncoder(Encoder):
    """The text tower of an open_clip model (``encode_text``) with its own tokenizer."""

    default_batch_size = 64

    def __init__(self, spec: EncoderSpec, located: Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        model, self.tokenizer, cfg = open_clip_model(spec, located)
        self.model = self._prepare_module(model)
        self.dim = int(cfg["model_cfg"]["embed_dim"])

    def encode(self, batch: Sequence[str], batch_size: int | None = None, callback: Callable[[int], None] | None = None) -> np.ndarray:
        return self._encode_in_batches(_checked_texts(self.spec, batch), batch_size, callback,
                                       lambda chunk: self.model.encode_text(self.tokenizer(chunk).to(self.device)))
