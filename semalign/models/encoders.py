"""The public entry to the encoders: load one, or fingerprint it without loading it.

:func:`load_encoder` returns an object with ``spec``, ``dim``, ``fingerprint`` and
``encode(batch) -> float32 array``; :func:`encoder_fingerprint` gives the
fingerprint alone, for caches. A reference is a built-in name, a prefixed string
or a dict (see :mod:`semalign.models.registry`, whose functions are re-exported
here). The rest of the work lives in one module per job: the registry, the files
(:mod:`~semalign.models.weights`) and the text and vision encoders
(:mod:`~semalign.models.text`, :mod:`~semalign.models.vision`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from semalign.core.errors import SemalignError
from semalign.models.base import Encoder
from semalign.models.registry import (
    EncoderSpec,
    OptionalDependencyMissing,
    list_encoders,
    list_multimodal,
    multimodal_towers,
    resolve_encoder,
)
from semalign.models.text import OpenClipTextEncoder, TextEncoder
from semalign.models.vision import EffNetLiteEncoder, HFVisionEncoder, OpenClipVisionEncoder
from semalign.models.weights import Located, effective_image_size, effective_max_length, file_sha256, locate
from semalign.core import cache

# Bump a (modality, precision) number when preprocessing, pooling, batching or
# kernels change in a way that changes those numbers: the embedding caches of
# those encoders (keyed by their fingerprint) are then invalidated.
CODE_VERSION = {("text", "fp32"): 3, ("text", "bf16"): 3, ("vision", "fp32"): 2, ("vision", "bf16"): 2}

PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
# Files besides the weights that change what an encoder computes (config, tokenizer, preprocessing).
_SMALL_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "preprocessor_config.json",
    "open_clip_config.json",
)


def load_encoder(
    ref: str | EncoderSpec | Mapping[str, Any],
    device: str = "auto",
    precision: str = "fp32",
    allow_remote_code: Iterable[str] = (),
) -> Encoder:
    """Load an encoder ready to ``encode``; ``ref`` as in :mod:`semalign.models.registry`.

    ``precision='bf16'`` casts the weights and inputs to bfloat16 once (pooling and
    normalisation stay float32), on CPU and CUDA alike, rather than autocasting,
    which casts the weights again at every call. ``fp32`` on CUDA runs without TF32.
    """
    _check_precision(precision)
    spec = resolve_encoder(ref)
    _check_remote_code(spec, allow_remote_code)
    dev = pick_device(device)
    located = locate(spec)
    fingerprint = _fingerprint(spec, located, precision, dev)
    if spec.family == "open-clip":
        kind = OpenClipTextEncoder if spec.modality == "text" else OpenClipVisionEncoder
        return kind(spec, located, dev, precision, fingerprint)
    if spec.family in ("sentence-transformer", "hf-text") or (spec.family == "hf-clip" and spec.modality == "text"):
        return TextEncoder(spec, located, dev, precision, fingerprint)
    if spec.family in ("hf-vision", "hf-clip"):
        return HFVisionEncoder(spec, located, dev, precision, fingerprint)
    return EffNetLiteEncoder(spec, located, dev, precision, fingerprint)


def encoder_fingerprint(
    ref: str | EncoderSpec | Mapping[str, Any], precision: str = "fp32", device: str = "auto"
) -> tuple[EncoderSpec, str]:
    """The spec and fingerprint of an encoder without loading its model (for caches).

    ``device`` as for :func:`load_encoder`: bf16 fingerprints differ between CPU
    and CUDA, fp32 ones do not.
    """
    _check_precision(precision)
    spec = resolve_encoder(ref)
    return spec, _fingerprint(spec, locate(spec), precision, pick_device(device))


def _fingerprint(spec: EncoderSpec, located: Located, precision: str, device: str) -> str:
    weights = [[p.name, file_sha256(p)] for p in located.weights]
    small = []
    if located.folder is not None:
        small = [[n, cache.sha256_file(located.folder / n)] for n in _SMALL_FILES if (located.folder / n).is_file()]
    if spec.modality == "text":
        size_field = {"max_length": effective_max_length(spec, located)}
    else:
        size_field = {"image_size": effective_image_size(spec, located)}
    # bf16 rounds differently on each device's kernels, so its caches are kept
    # apart; fp32 agrees across devices (TF32 off) and shares one cache.
    kernels = ["cuda-bf16"] if precision == "bf16" and device == "cuda" else []
    return cache.hash_key(
        "semalign-encoder",
        CODE_VERSION[spec.modality, precision],
        spec.family,
        weights,
        small,
        spec.pooling,
        bool(spec.normalize),
        size_field,
        precision,
        *kernels,
    )


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise SemalignError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def pick_device(device: str) -> str:
    """The device ``auto``, ``cpu`` or ``cuda`` means on this machine."""
    import torch

    if device not in DEVICES:
        raise SemalignError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SemalignError("device='cuda' was asked for but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    return device


def _check_remote_code(spec: EncoderSpec, allow_remote_code: Iterable[str]) -> None:
    if not spec.trust_remote_code:
        return
    allowed = set(allow_remote_code or ())
    if spec.name in allowed or spec.source in allowed:
        return
    raise SemalignError(
        f"encoder {spec.name!r} runs Python code shipped with the model (trust_remote_code). "
        f"Review that code, then opt in by name: load_encoder({spec.name!r}, "
        f"allow_remote_code=[{spec.name!r}]) (or list it under allow_remote_code in the run settings)"
    )
