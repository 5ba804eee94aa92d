"""What every loaded encoder shares: the :class:`Encoder` base and the loading helpers
of the text and vision encoders (quiet transformers loads, full fp32 on CUDA,
projected CLIP features, open_clip models)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from semalign.core.errors import SemalignError
from semalign.models.registry import EncoderSpec, read_json
from semalign.models.weights import Located


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Encoder:
    """Common part of the loaded encoders."""

    spec: EncoderSpec
    dim: int
    fingerprint: str
    device: str
    precision: str
    default_batch_size = 32
    # a GPU is kept busy only by large batches
    cuda_batch_size = 128

    def __init__(self, spec: EncoderSpec, device: str, precision: str, fingerprint: str):
        self.spec, self.device, self.precision, self.fingerprint = spec, device, precision, fingerprint
        if device == "cuda":
            self.default_batch_size = self.cuda_batch_size

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def modality(self) -> str:
        return self.spec.modality

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.spec.name!r}, dim={self.dim}, device={self.device!r}, "
            f"precision={self.precision!r})"
        )

    def _numerics(self) -> Any:
        """The context every forward runs in: fp32 on CUDA without TF32."""
        if self.device == "cuda" and self.precision == "fp32":
            return _full_fp32()
        return contextlib.nullcontext()

    def _to_device(self, array: np.ndarray) -> Any:
        import torch

        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _prepare_module(self, model: Any) -> Any:
        import torch

        model.eval()
        model.requires_grad_(False)
        if self.precision == "bf16":
            model.to(torch.bfloat16)
        return model.to(self.device)

    def encode(self, batch: Any, batch_size: int | None = None, callback: Callable[[int], None] | None = None) -> np.ndarray:
        raise NotImplementedError

    def _encode_in_batches(self, items: Any, batch_size: int | None, callback: Callable[[int], None] | None,
                           forward: Callable[[Any], Any]) -> np.ndarray:
        """float32 (len(items), dim): ``forward`` on consecutive slices of ``batch_size`` items."""
        import torch

        out = np.empty((len(items), self.dim), np.float32)
        bs = int(batch_size or self.default_batch_size)
        with torch.inference_mode(), self._numerics():
            for start in range(0, len(items), bs):
                chunk = items[start : start + bs]
                out[start : start + len(chunk)] = forward(chunk).float().cpu().numpy()
                if callback is not None:
                    callback(len(chunk))
        return out


@contextlib.contextmanager
def _full_fp32() -> Iterator[None]:
    """fp32 on CUDA without TF32 (cuDNN's default for convolutions), restoring the settings after.

    TF32 rounds the inputs of matrix products and convolutions to a 10-bit
    mantissa, which moves embeddings far from the CPU's; without it they agree
    as fp32 does across CPUs, so both devices can share one cache.
    """
    import torch

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@contextlib.contextmanager
def no_transformers_bars() -> Iterator[None]:
    """Hide transformers' loading and saving bars (its log messages stay); restore the setting after."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def transformers_loading(spec: EncoderSpec, folder: Any) -> Iterator[None]:
    """Loads from ``folder`` without info logs or bars; a failure becomes one error naming the encoder."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with no_transformers_bars():
            yield
    except (OSError, ValueError) as exc:
        raise SemalignError(f"cannot load encoder {spec.name!r} from {folder}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)


def model_kwargs(spec: EncoderSpec) -> dict[str, Any]:
    """Keyword arguments of ``AutoModel.from_pretrained``: local files, fp32 weights."""
    import torch

    return {"local_files_only": True, "trust_remote_code": spec.trust_remote_code, "dtype": torch.float32}


def projected(output: Any) -> Any:
    """``get_*_features`` returns a tensor in older transformers and an output
    whose ``pooler_output`` holds the projection in newer ones."""
    return output if hasattr(output, "ndim") else output.pooler_output


def open_clip_model(spec: EncoderSpec, located: Located) -> tuple[Any, Any, dict]:
    """An open_clip model, its tokenizer and its config, from the local Hugging
    Face cache folder that :func:`~semalign.models.weights.locate` found (open_clip reads that cache)."""
    import open_clip

    hub = "hf-hub:" + spec.source.removeprefix("hf-hub:")
    try:
        model, _ = open_clip.create_model_from_pretrained(hub)
        tokenizer = open_clip.get_tokenizer(hub)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one line naming the model
        raise SemalignError(f"cannot load encoder {spec.name!r} with open_clip from {located.folder}: {exc}") from exc
    return model, tokenizer, read_json(located.folder / "open_clip_config.json")
