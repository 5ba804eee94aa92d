"""The study-made phantom vision encoders: EfficientNets trained on the phantom's training images.

Stand-ins for a domain vision encoder (RAD-DINO, a CXR CLIP image tower), which
cannot be downloaded here. Two encoders, both trained on the *training split* of
the phantom only, so stitching *to* them is judged on unseen images:

``phantom-ssl`` (:mod:`semalign.models.phantom_ssl`, the study's medical vision encoder)
    EfficientNet-Lite1 (ImageNet) trained *without labels*, as RAD-DINO is
    self-supervised.
``phantom-effnet`` (:func:`adapt_vision_encoder`, a label-supervised variant)
    EfficientNet-Lite0 (ImageNet) fine-tuned with the six finding labels
    (multi-label binary cross-entropy of a fresh linear head). Supervision by
    the structured labels is a choice of cost: it moves the features towards the
    findings in few steps. It is a different encoder, named as such by the
    caller, and never stands in for a zero-shot model.

This module holds the supervised encoder and what both share. Both train only
the last ``train_blocks`` MBConv blocks and the 1×1 head
convolution; the stem and the earlier blocks keep their ImageNet weights, and
every BatchNorm keeps its ImageNet statistics (eval mode), so the graph the
encoder registry loads (in bf16 with BatchNorm folded into the convolutions)
computes the trained function. The training head (finding head, projection
head) is thrown away: the encoder is the 1280-d pooled feature, like the other
EfficientNets of the study, and the saved weights keep the ImageNet classifier
so the file loads as a plain ``efficientnet-lite0`` / ``efficientnet-lite1``
checkpoint. Because the lower part is frozen, its output is computed once per
training image (per augmented view for ``phantom-ssl``), and a training step
runs only the upper blocks at 1/32 of the input resolution.

Both are cached as ``paths.cache_dir()/encoders/phantom-{ssl,effnet}-<key>/model.safetensors``
(:func:`semalign.models.radiology_minilm.build_cached`), the key hashing everything the
weights depend on; randomness comes from explicit ``torch.Generator`` objects.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semalign.study import cache
from semalign.models.weights import file_sha256  # sha256 remembered per (path, size, mtime)
from semalign.models.radiology_minilm import _check_ranges, _lr_factor, _torch_threads, build_cached
from semalign.errors import SemalignError

#: Bumped when the training procedure changes in a way the config does not show.
FORMAT_VERSION = 3
ENCODER_FILE = "semalign_encoder.json"
FOLDER_PREFIX = "phantom-effnet-"
ARCH = "efficientnet-lite0"
WEIGHTS_FILE = "model.safetensors"


@dataclasses.dataclass(frozen=True)
class VisionAdaptConfig:
    """Fine-tuning settings; every field enters the cache key.

    ``steps`` AdamW steps of ``batch_size`` images at ``image_size`` (Lite0's
    own): a few epochs of the default phantom training split.
    ``train_blocks``: the last MBConv blocks of Lite0's 16 (plus the 1×1 head
    convolution) that are trained.
    ``lr`` peak rate for the trained blocks, small because larger Adam steps
    wreck the ImageNet features, and ``head_lr`` for the fresh finding head;
    linear warm-up over ``warmup_fraction`` then linear decay; ``weight_decay``.
    ``threads`` torch threads while training: the count changes the float
    reduction order, so fixing it fixes the weights. The frozen features are
    computed beforehand on the same ``threads``: in small batches different
    thread counts do not give bit-identical features.
    ``seed`` drives the batch order and the head's initialisation.
    """

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-4
    head_lr: float = 1e-2
    warmup_fraction: float = 0.1
    weight_decay: float = 1e-4
    train_blocks: int = 4
    image_size: int = 224
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        _check_ranges(self, {
            "steps": self.steps >= 1, "batch_size": self.batch_size >= 2, "lr": self.lr > 0,
            "head_lr": self.head_lr > 0, "warmup_fraction": 0 <= self.warmup_fraction < 1,
            "weight_decay": self.weight_decay >= 0, "train_blocks": 0 <= self.train_blocks <= 16,
            "image_size": 32 <= self.image_size <= 1024, "threads": self.threads >= 0,
        })


def _base_weights(arch: str = ARCH) -> Path:
    from semalign.models.registry import resolve_encoder
    from semalign.models.weights import locate

    return locate(resolve_encoder("effnet-" + arch.removeprefix("efficientnet-"))).weights[0]


def _images_sha256(images: np.ndarray) -> str:
    return cache.sha256_bytes(np.ascontiguousarray(images).tobytes() + str(images.shape).encode())


def cache_inputs(images: np.ndarray, labels: np.ndarray, config: VisionAdaptConfig) -> dict[str, Any]:
    """Everything the trained weights depend on, as recorded and hashed."""
    return {
        "format_version": FORMAT_VERSION,
        "base_model": ARCH,
        "base_model_sha256": file_sha256(_base_weights()),
        "n_training_images": int(len(images)),
        "images_sha256": _images_sha256(images),
        "labels_sha256": cache.sha256_bytes(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()),
        "config": dataclasses.asdict(config),
    }


def _load_base(image_size: int, arch: str = ARCH) -> Any:
    """The ImageNet EfficientNet, frozen, in eval mode (no dropout, no drop-connect, BatchNorm keeps its
    ImageNet statistics)."""
    from semalign.models.vision import load_efficientnet

    return load_efficientnet(arch, image_size, _base_weights(arch)).requires_grad_(False)


def _lower_part(model: Any, x: torch.Tensor, first: int) -> torch.Tensor:
    """The frozen stem and blocks ``[:first]`` on normalised pixels."""
    h = model._swish(model._bn0(model._conv_stem(x)))
    for block in model._blocks[:first]:
        h = block(h)
    return h


def _upper_part(model: Any, h: torch.Tensor, first: int) -> torch.Tensor:
    """Blocks ``[first:]``, the head convolution and global average pooling: the 1280-d encoder output."""
    for block in model._blocks[first:]:
        h = block(h)
    return model._swish(model._bn1(model._conv_head(h))).mean(dim=(2, 3))


def _trainable_upper_part(model: Any, first: int) -> list[torch.nn.Parameter]:
    """Unfreeze blocks ``[first:]`` and the head convolution (channels-last, where
    oneDNN's depthwise-convolution backward is fastest); their parameters."""
    trained = [*model._blocks[first:], model._conv_head, model._bn1]
    for m in trained:
        m.to(memory_format=torch.channels_last)
    body = [p for m in trained for p in m.parameters()]
    for p in body:
        p.requires_grad_(True)
    return body


FROZEN_BATCH = 4  # images per forward pass of the frozen part: see _frozen_features


def _frozen_features(model: Any, images: np.ndarray, first: int, image_size: int, progress: bool) -> torch.Tensor:
    """The output of the frozen stem and blocks ``[:first]`` for every training image,
    computed once: training then runs only the upper blocks.

    :data:`FROZEN_BATCH` images at a time: the activations of the early
    high-resolution blocks then stay in the CPU cache, which is much faster than
    large batches, and the features are the same (a convolution's output does
    not depend on the batch it is in).
    """
    from semalign.study.progress import progress_bar

    from semalign.models.vision import images_to_tensor

    out = []
    with torch.inference_mode():
        for start in progress_bar(range(0, len(images), FROZEN_BATCH), desc="phantom-effnet: frozen features", unit="batch",
                          disable=not progress):
            h = (images_to_tensor(images[start : start + FROZEN_BATCH], image_size) - 127.0) / 128.0
            out.append(_lower_part(model, h, first).clone())
    return torch.cat(out)


def _train(images: np.ndarray, labels: np.ndarray, config: VisionAdaptConfig, progress: bool) -> tuple[dict, dict]:
    model = _load_base(config.image_size)
    first = len(model._blocks) - config.train_blocks
    start = time.perf_counter()
    with _torch_threads(config.threads):
        frozen = _frozen_features(model, images, first, config.image_size, progress)
        return _fit_upper_blocks(model, first, frozen, labels, config, progress, start)


def _fit_upper_blocks(model: Any, first: int, frozen: torch.Tensor, labels: np.ndarray, config: VisionAdaptConfig,
                      progress: bool, start: float) -> tuple[dict, dict]:
    """Train blocks ``[first:]``, the head convolution and a finding head on the frozen features."""
    frozen = frozen.contiguous(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(config.seed)
    head = torch.nn.Linear(model._fc.in_features, labels.shape[1])
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()
    target = torch.from_numpy(labels.astype(np.float32))
    batches = _epoch_batches(len(frozen), config.batch_size, generator)

    def batch_loss() -> torch.Tensor:
        idx = next(batches)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            head(_upper_part(model, frozen[idx], first)), target[idx])

    losses = _fit(model, first, head, config, batch_loss, "fine-tuning phantom-effnet", progress)
    metrics = {
        **_first_last_means("loss", losses),
        "epochs": round(config.steps * config.batch_size / len(frozen), 2),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return _state(model), metrics


def _fit(model: Any, first: int, head: torch.nn.Module, config: Any, batch_loss: Callable[[], torch.Tensor],
         desc: str, progress: bool) -> list[float]:
    """``config.steps`` AdamW steps on ``batch_loss()`` (the loss of the next batch) over blocks
    ``[first:]``, the head convolution (peak rate ``config.lr``) and the fresh ``head``
    (``config.head_lr``), with linear warm-up then decay; the losses."""
    from semalign.study.progress import progress_bar

    optimizer = torch.optim.AdamW(
        [{"params": _trainable_upper_part(model, first), "lr": config.lr, "peak": config.lr},
         {"params": head.parameters(), "lr": config.head_lr, "peak": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    warmup = int(config.warmup_fraction * config.steps)
    losses: list[float] = []
    bar = progress_bar(range(config.steps), desc=desc, unit="step", disable=not progress)
    for step in bar:
        loss = batch_loss()
        for group in optimizer.param_groups:
            group["lr"] = group["peak"] * _lr_factor(step, config.steps, warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def _epoch_batches(n_items: int, batch: int, generator: torch.Generator):
    """Endless batches of item indices, epoch by epoch: each item once per epoch, in a seeded order."""
    order = torch.empty(0, dtype=torch.long)
    while True:
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(n_items, generator=generator)])
        idx, order = order[:batch], order[batch:]
        yield idx


def _first_last_means(name: str, values: list[float]) -> dict[str, float]:
    """The mean of the first and of the last ten ``values``, as ``<name>_first_10`` and ``<name>_last_10``."""
    return {f"{name}_first_10": round(float(np.mean(values[:10])), 4),
            f"{name}_last_10": round(float(np.mean(values[-10:])), 4)}


def _state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise SemalignError(f"training images must be a uint8 (N, H, W) array, got {images.dtype} {images.shape}")
    return images


def _cached_build(prefix: str, kind: str, inputs: dict[str, Any],
                  train: Callable[[], tuple[dict, dict]]) -> Path:
    """The weights file of the cache entry for ``inputs``; ``train()`` makes it on
    first use (see :func:`semalign.models.radiology_minilm.build_cached`). ``train``
    runs inside ``torch.random.fork_rng``, so the caller's global RNG state is unchanged.
    """
    from safetensors.torch import save_file

    def write(folder: Path) -> dict[str, Any]:
        with torch.random.fork_rng():
            state, metrics = train()
        save_file(state, str(folder / WEIGHTS_FILE))
        return {"kind": kind, **inputs, "training": metrics}

    return build_cached(prefix, inputs, (), write) / WEIGHTS_FILE


def adapt_vision_encoder(
    images: np.ndarray, labels: np.ndarray, config: VisionAdaptConfig | None = None, progress: bool = True
) -> Path:
    """The label-supervised phantom EfficientNet-Lite0 for these training images: its cached
    weights file (``model.safetensors``), trained on first use.

    ``images``: uint8 (N, H, W) training-split images; ``labels``: (N, K) 0/1 finding
    labels. The test split must not be passed.
    """
    config = config or VisionAdaptConfig()
    images = _check_images(images)
    labels = np.asarray(labels)
    if labels.ndim != 2 or len(labels) != len(images) or not np.isin(labels, (0, 1)).all():
        raise SemalignError(f"labels must be a 0/1 array of shape ({len(images)}, K), got {labels.shape}")
    if len(images) < config.batch_size:
        raise SemalignError(
            f"{len(images)} training images are fewer than VisionAdaptConfig.batch_size={config.batch_size}; "
            "render more phantom images (-p n_images=...)"
        )
    inputs = cache_inputs(images, labels, config)
    return _cached_build(FOLDER_PREFIX, "phantom-effnet", inputs, lambda: _train(images, labels, config, progress))
