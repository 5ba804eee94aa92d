"""``phantom-ssl``: the study's medical vision encoder, trained on the phantom without labels.

EfficientNet-Lite1 (ImageNet) trained on the phantom's *training split* only, as
RAD-DINO is self-supervised: SimCLR's NT-Xent loss pulls together two augmented
views of the same training image and pushes apart the views of the other images
of the batch. It derives from neither of the study's general vision encoders
(Lite0 and Lite2), and it never sees a finding label, so the zero-shot
experiment that uses it stays zero-shot.

Only the last ``train_blocks`` MBConv blocks and the 1×1 head convolution are
trained; the stem and the earlier blocks keep their ImageNet weights, and every
BatchNorm keeps its ImageNet statistics (eval mode), so the graph the encoder
registry loads computes the trained function. The projection head is thrown
away: the encoder is the 1280-d pooled feature, like the other EfficientNets of
the study, and the saved weights keep the ImageNet classifier so the file loads
as a plain ``efficientnet-lite1`` checkpoint. Because the lower part is frozen,
its output is computed once per augmented view, and a training step runs only
the upper blocks at 1/32 of the input resolution. The weights are cached as
``paths.cache_dir()/encoders/phantom-ssl-<key>/model.safetensors``
(:func:`semalign.models.training.build_cached`), the key hashing everything they
depend on; randomness comes from explicit ``torch.Generator`` objects.

The augmentations (:func:`augment_views`) act in image space and cover the
phantom's own nuisance variation — in-plane rotation, scale and aspect
(magnification, habitus), translation, exposure, contrast, gamma and detector
noise — with ranges about twice the rendered ones, so that two views of one
image differ as much as two renderings of the same case do; what is left to
tell images apart is what the nuisance does not change: the findings. There are
no horizontal flips: the anatomy is lateralised (the heart lies left, and
cardiomegaly is its extent towards the left lung) and the reports name the side
of an effusion, a nodule or a pneumothorax, so a flip would both make images that
never occur and teach invariance to the side. Crops stay mild (the zoom range),
since a finding at the edge of the field (an apical pneumothorax, a
costophrenic effusion) must not be cut out of a view.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semalign.core.errors import SemalignError
from semalign.models.training import build_cached, check_ranges, lr_factor, torch_threads
from semalign.models.registry import EncoderSpec
from semalign.models.weights import file_sha256  # sha256 remembered per (path, size, mtime)
from semalign.core import cache

#: Bumped when the training procedure changes in a way the config does not show.
FORMAT_VERSION = 1
FOLDER_PREFIX = "phantom-ssl-"
ARCH = "efficientnet-lite1"
ENCODER_NAME = "phantom-ssl"
WEIGHTS_FILE = "model.safetensors"


@dataclasses.dataclass(frozen=True)
class SSLConfig:
    """Settings of the self-supervised ``phantom-ssl``; every field enters the cache key.

    Views: ``views`` (3) augmented views of each training image are drawn once
    and pushed through the frozen lower part (the bulk of the cost: one pass of
    the stem and the first blocks at ``image_size``, 240 px, Lite1's own); a
    training pair is two distinct views of one image, so each image offers
    ``views·(views-1)/2`` pairs.

    Augmentation ranges (:func:`augment_views`; each drawn uniformly per view,
    the multiplicative ones on a log scale): ``rotation_deg`` (8) in-plane
    rotation ±8°; ``zoom_in``/``zoom_out`` (0.12) magnification ×1.12^±1; ``aspect`` (0.06)
    width against height ×1.06^±1 (habitus); ``shift`` (0.06) translation ±6 %
    of the field per axis; ``gamma`` (0.3) display gamma ×e^±0.3; ``contrast``
    (0.15) contrast ×e^±0.15 about mid-grey; ``brightness`` (0.06) offset ±6 %
    of the grey range; ``noise`` (0.03) Gaussian pixel noise of a standard
    deviation drawn in [0, 3 %] of the grey range (see the module docstring for why).

    Training: ``steps`` AdamW steps of ``batch_size`` images (two views each,
    the other ``2·batch_size - 2`` views are the negatives; fewer images when
    the training set is smaller) on SimCLR's NT-Xent loss at ``temperature``,
    through a projection head (1280 → ``projection_dim`` → ReLU →
    ``projection_dim``, thrown away after training). ``lr`` peak rate of the
    trained blocks (the ImageNet features are easily wrecked by large steps),
    ``head_lr`` of the fresh projection head; linear warm-up over
    ``warmup_fraction`` then linear decay; ``weight_decay``. ``train_blocks``:
    the last MBConv blocks of Lite1's 21 (plus the 1×1 head convolution)
    that are trained. ``threads``: torch threads while building; the count
    changes the float reduction order, so fixing it fixes the weights.
    ``seed`` drives the views (augmentation draws and noise), the projection
    head's initialisation, the batch order and the choice of view pairs.
    """

    steps: int = 100
    batch_size: int = 64
    views: int = 3
    lr: float = 1e-4
    head_lr: float = 1e-3
    warmup_fraction: float = 0.1
    weight_decay: float = 1e-4
    temperature: float = 0.1
    projection_dim: int = 256
    train_blocks: int = 2
    image_size: int = 240
    rotation_deg: float = 8.0
    zoom_in: float = 0.12
    zoom_out: float = 0.12
    aspect: float = 0.06
    shift: float = 0.06
    gamma: float = 0.3
    contrast: float = 0.15
    brightness: float = 0.06
    noise: float = 0.03
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges(self, {
            "steps": self.steps >= 1, "batch_size": self.batch_size >= 2, "views": 2 <= self.views <= 64,
            "lr": self.lr > 0, "head_lr": self.head_lr > 0, "warmup_fraction": 0 <= self.warmup_fraction < 1,
            "weight_decay": self.weight_decay >= 0, "temperature": self.temperature > 0,
            "projection_dim": self.projection_dim >= 1, "train_blocks": 0 <= self.train_blocks <= 21,
            "image_size": 32 <= self.image_size <= 1024, "rotation_deg": 0 <= self.rotation_deg <= 45,
            "zoom_in": 0 <= self.zoom_in < 1, "zoom_out": 0 <= self.zoom_out < 1, "aspect": 0 <= self.aspect < 1, "shift": 0 <= self.shift < 0.5,
            "gamma": 0 <= self.gamma <= 2, "contrast": 0 <= self.contrast <= 2,
            "brightness": 0 <= self.brightness < 1, "noise": 0 <= self.noise < 1, "threads": self.threads >= 0,
        })


def _base_weights() -> Path:
    from semalign.models.registry import resolve_encoder
    from semalign.models.weights import locate

    return locate(resolve_encoder("effnet-lite1")).weights[0]


def _images_sha256(images: np.ndarray) -> str:
    return cache.sha256_bytes(np.ascontiguousarray(images).tobytes() + str(images.shape).encode())


def _load_base(image_size: int) -> Any:
    """The ImageNet EfficientNet, frozen, in eval mode (no dropout, no drop-connect, BatchNorm keeps its
    ImageNet statistics)."""
    from semalign.models.vision import load_efficientnet

    return load_efficientnet(ARCH, image_size, _base_weights()).requires_grad_(False)


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


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise SemalignError(f"training images must be a uint8 (N, H, W) array, got {images.dtype} {images.shape}")
    return images


_N_DRAWS = 8  # uniform draws per view: rotation, zoom, aspect, shift x, shift y, gamma, contrast, brightness (+ noise level)


def draw_view_parameters(n_images: int, config: SSLConfig, generator: torch.Generator) -> torch.Tensor:
    """Uniform draws in [-1, 1), shape (n_images, views, 9), scaled by :func:`augment_views`:
    all of them in one call, so a view's parameters do not depend on how the
    images are batched afterwards. The last column, the noise level, is in [0, 1)."""
    u = torch.rand((n_images, config.views, _N_DRAWS + 1), generator=generator, dtype=torch.float64)
    u[..., :_N_DRAWS] = 2.0 * u[..., :_N_DRAWS] - 1.0
    return u


def augment_views(image: torch.Tensor, draws: torch.Tensor, config: SSLConfig, generator: torch.Generator) -> torch.Tensor:
    """Augmented views of one grey image, in the grey range 0..255.

    ``image``: (1, 1, S, S) float in 0..255; ``draws``: (V, 9) from
    :func:`draw_view_parameters`. Geometry is one affine resampling (bilinear,
    edges replicated) with rotation, zoom, aspect and shift; then, on grey values
    in [0, 1], a gamma, a contrast about mid-grey, a brightness offset and
    Gaussian noise (drawn from ``generator``), clipped to [0, 1]. No flips (see
    the module docstring). Returns (V, 1, S, S) float32.
    """
    import torch.nn.functional as F

    d = draws.to(torch.float64)
    n_views, size = len(d), image.shape[-1]
    angle = torch.deg2rad(config.rotation_deg * d[:, 0])
    zoom = torch.exp(d[:, 1] * torch.where(d[:, 1] > 0, math.log1p(config.zoom_in), math.log1p(config.zoom_out)))
    stretch = torch.exp(0.5 * math.log1p(config.aspect) * d[:, 2])
    scale_x, scale_y = zoom * stretch, zoom / stretch  # content magnification per axis
    shift = 2.0 * config.shift * d[:, 3:5]  # normalised coordinates span 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output point -> input point: undo the shift, the rotation, then the magnification
    inverse = torch.stack([torch.stack([cos / scale_x, sin / scale_x], -1),
                           torch.stack([-sin / scale_y, cos / scale_y], -1)], -2)
    offset = -(inverse @ shift.unsqueeze(-1))
    theta = torch.cat([inverse, offset], dim=-1).to(torch.float32)
    grid = F.affine_grid(theta, [n_views, 1, size, size], align_corners=False)
    x = F.grid_sample(image.expand(n_views, -1, -1, -1) / 255.0, grid, mode="bilinear",
                      padding_mode="border", align_corners=False)
    view = lambda column: column.to(torch.float32).reshape(-1, 1, 1, 1)  # noqa: E731
    x = x.clamp(0.0, 1.0) ** view(torch.exp(config.gamma * d[:, 5]))
    x = (x - 0.5) * view(torch.exp(config.contrast * d[:, 6])) + 0.5 + view(config.brightness * d[:, 7])
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    x = x + noise * view(config.noise * d[:, 8])
    return x.clamp(0.0, 1.0) * 255.0


def _frozen_views(model: Any, images: np.ndarray, first: int, config: SSLConfig, generator: torch.Generator,
                  progress: bool) -> torch.Tensor:
    """The frozen lower part's output for ``config.views`` augmented views of every
    image, (N, V, C, h, w), computed once. One image's views form a batch: small
    batches keep the activations of the early high-resolution blocks in the CPU
    cache, which is much faster than large batches, and the features are the same
    (a convolution's output does not depend on the batch it is in)."""
    from semalign.core.progress import progress_bar

    from semalign.models.vision import images_to_tensor

    draws = draw_view_parameters(len(images), config, generator)
    out = []
    with torch.inference_mode():
        for i in progress_bar(range(len(images)), desc="phantom-ssl: frozen views", unit="img", disable=not progress):
            grey = images_to_tensor(images[i : i + 1], config.image_size)[:, :1]
            x = (augment_views(grey, draws[i], config, generator) - 127.0) / 128.0
            out.append(_lower_part(model, x.expand(-1, 3, -1, -1).contiguous(), first).clone())
    return torch.stack(out)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent loss: row i of ``a`` and row i of ``b`` are the two views of
    one image, every other row of either is a negative. Returns the mean loss over
    the 2B views and, per view, whether its partner is its nearest neighbour."""
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    n = len(a)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    loss = torch.nn.functional.cross_entropy(logits, partner)
    return loss, logits.argmax(dim=1) == partner


def _projection_head(width: int, dim: int, generator: torch.Generator) -> torch.nn.Module:
    head = torch.nn.Sequential(torch.nn.Linear(width, dim), torch.nn.ReLU(), torch.nn.Linear(dim, dim))
    with torch.no_grad():
        for layer in (head[0], head[2]):
            layer.weight.normal_(0.0, math.sqrt(2.0 / layer.in_features), generator=generator)
            layer.bias.zero_()
    return head


def _train(images: np.ndarray, config: SSLConfig, progress: bool) -> tuple[dict, dict]:
    views_seed, train_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(config.seed).spawn(2))
    model = _load_base(config.image_size)
    first = len(model._blocks) - config.train_blocks
    start = time.perf_counter()
    with torch_threads(config.threads):
        frozen = _frozen_views(model, images, first, config, torch.Generator().manual_seed(views_seed), progress)
        frozen_seconds = time.perf_counter() - start
        metrics = _fit_ssl(model, first, frozen, config, torch.Generator().manual_seed(train_seed), progress)
    metrics.update(frozen_seconds=round(frozen_seconds, 1), seconds=round(time.perf_counter() - start, 1))
    return _state(model), metrics


def _view_pairs(n_images: int, n_views: int, batch: int, generator: torch.Generator):
    """Endless batches ``(images, one view, another view)``: images epoch by epoch
    (each once per epoch, in a seeded order), two distinct views of each."""
    for idx in _epoch_batches(n_images, batch, generator):
        one = torch.randint(n_views, (batch,), generator=generator)
        other = (one + torch.randint(1, n_views, (batch,), generator=generator)) % n_views
        yield idx, one, other


def _fit_ssl(model: Any, first: int, frozen: torch.Tensor, config: SSLConfig, generator: torch.Generator,
             progress: bool) -> dict[str, Any]:
    """Train blocks ``[first:]``, the head convolution and a projection head with NT-Xent
    on pairs of distinct precomputed views ``frozen`` (N, V, C, h, w); the training summary."""
    n_images, n_views = frozen.shape[:2]
    batch = min(config.batch_size, n_images)
    head = _projection_head(model._fc.in_features, config.projection_dim, generator)
    pairs = _view_pairs(n_images, n_views, batch, generator)
    hits: list[float] = []

    def batch_loss() -> torch.Tensor:
        idx, one, other = next(pairs)
        pair = torch.cat([frozen[idx, one], frozen[idx, other]]).contiguous(memory_format=torch.channels_last)
        projected = head(_upper_part(model, pair, first))
        loss, hit = nt_xent(projected[:batch], projected[batch:], config.temperature)
        hits.append(hit.float().mean().item())
        return loss

    losses = _fit(model, first, head, config, batch_loss, progress)
    summary = {
        **_first_last_means("loss", losses),
        **_first_last_means("partner_top1", hits),
        "images_per_step": batch,
        "epochs": round(config.steps * batch / n_images, 2),
    }
    return summary


def _fit(model: Any, first: int, head: torch.nn.Module, config: SSLConfig, batch_loss: Callable[[], torch.Tensor],
         progress: bool) -> list[float]:
    """``config.steps`` AdamW steps on ``batch_loss()`` (the loss of the next batch) over blocks
    ``[first:]``, the head convolution (peak rate ``config.lr``) and the fresh ``head``
    (``config.head_lr``), with linear warm-up then decay; the losses."""
    from semalign.core.progress import progress_bar

    optimizer = torch.optim.AdamW(
        [{"params": _trainable_upper_part(model, first), "lr": config.lr, "peak": config.lr},
         {"params": head.parameters(), "lr": config.head_lr, "peak": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    warmup = int(config.warmup_fraction * config.steps)
    losses: list[float] = []
    bar = progress_bar(range(config.steps), desc="training phantom-ssl", unit="step", disable=not progress)
    for step in bar:
        loss = batch_loss()
        for group in optimizer.param_groups:
            group["lr"] = group["peak"] * lr_factor(step, config.steps, warmup)
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


def ssl_cache_inputs(images: np.ndarray, config: SSLConfig) -> dict[str, Any]:
    """Everything the self-supervised weights depend on, as recorded and hashed (no labels)."""
    return {
        "format_version": FORMAT_VERSION,
        "objective": "simclr-nt-xent",
        "base_model": ARCH,
        "base_model_sha256": file_sha256(_base_weights()),
        "n_training_images": int(len(images)),
        "images_sha256": _images_sha256(images),
        "config": dataclasses.asdict(config),
    }


def ssl_vision_encoder(images: np.ndarray, config: SSLConfig | None = None, progress: bool = True) -> Path:
    """The self-supervised phantom EfficientNet-Lite1 for these training images: its
    cached weights file (``model.safetensors``), trained on first use.

    ``images``: uint8 (N, H, W) training-split images, at least two; no labels
    are taken. The test split must not be passed.
    """
    config = config or SSLConfig()
    images = _check_images(images)
    if len(images) < 2:
        raise SemalignError(f"self-supervised training needs at least 2 training images, got {len(images)}")
    inputs = ssl_cache_inputs(images, config)

    def write(folder: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        with torch.random.fork_rng():  # the caller's global RNG state is left unchanged
            state, metrics = _train(images, config, progress)
        save_file(state, str(folder / WEIGHTS_FILE))
        return {"kind": ENCODER_NAME, **inputs, "training": metrics}

    return build_cached(FOLDER_PREFIX, inputs, (), write) / WEIGHTS_FILE


def phantom_ssl_spec(images: np.ndarray, config: SSLConfig | None = None, progress: bool = True) -> EncoderSpec:
    """Build (cached) the self-supervised encoder on these training images and
    return its spec, named ``phantom-ssl``."""
    config = config or SSLConfig()
    weights = ssl_vision_encoder(images, config, progress=progress)
    return EncoderSpec(
        name=ENCODER_NAME, modality="vision", domain="medical", family="efficientnet-lite", source=f"{ARCH}:{weights}",
        pooling="gap", image_size=config.image_size,
        description="EfficientNet-Lite1 trained by the study on the phantom's training images without "
                    "labels (SimCLR-style, augmentations); stand-in for RAD-DINO",
    )
