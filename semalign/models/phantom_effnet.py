"""The study-made phantom vision encoders: EfficientNets trained on the phantom's training images.

Stand-ins for a domain vision encoder (RAD-DINO, a CXR CLIP image tower), which
cannot be downloaded here. Two encoders, both trained on the *training split* of
the phantom only, so stitching *to* them is judged on unseen images:

``phantom-ssl`` (:func:`ssl_vision_encoder`, the study's medical vision encoder)
    EfficientNet-Lite1 (ImageNet) trained *without labels*, as RAD-DINO is
    self-supervised: SimCLR's NT-Xent loss pulls together two augmented views
    of the same training image and pushes apart the views of the other images
    of the batch. It derives from neither of the study's general vision encoders
    (Lite0 and Lite2), and it never sees a finding label, so the zero-shot
    experiment that uses it stays zero-shot.
``phantom-effnet`` (:func:`adapt_vision_encoder`, a label-supervised variant)
    EfficientNet-Lite0 (ImageNet) fine-tuned with the six finding labels
    (multi-label binary cross-entropy of a fresh linear head). Supervision by
    the structured labels is a choice of cost: it moves the features towards the
    findings in a minute. It is a different encoder, named as such by the
    caller, and never stands in for a zero-shot model.

Both train only the last ``train_blocks`` MBConv blocks and the 1×1 head
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

The augmentations of ``phantom-ssl`` (:func:`augment_views`) act in image space
and cover the phantom's own nuisance variation — in-plane rotation, scale and
aspect (magnification, habitus), translation, exposure, contrast, gamma and
detector noise — with ranges about twice the rendered ones, so that two views of
one image differ as much as two renderings of the same case do; what is left to
tell images apart is what the nuisance does not change: the findings. There are
no horizontal flips: the anatomy is lateralised (the heart lies left, and
cardiomegaly is its extent towards the left lung) and the reports name the side
of an effusion, a nodule or a pneumothorax, so a flip would both make images that
never occur and teach invariance to the side. Crops stay mild (the zoom range),
since a finding at the edge of the field (an apical pneumothorax, a
costophrenic effusion) must not be cut out of a view.

Cached under ``paths.cache_dir()/encoders/phantom-ssl-<key>/`` and
``.../phantom-effnet-<key>/`` (weights as ``model.safetensors`` +
``semalign_encoder.json`` with the inputs and the training loss), the key hashing
the base weights, the training images (and labels, for the supervised one), the
configuration and the format version. Built in a hidden temporary folder and
renamed into place, so an interrupted build never looks like a valid entry.
Randomness is local (explicit ``torch.Generator`` objects); training runs on a
fixed number of torch threads, which fixes the float reduction order and so the
weights; weights are written only as safetensors.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from semalign.study import cache

from semalign.study import paths
from semalign.models.radiology_minilm import _lr_factor, _torch_threads, discard_damaged, file_sha256, is_complete
from semalign.errors import SemalignError

FORMAT_VERSION = 3  # 3: trained in channels-last layout on 2 threads
ENCODER_FILE = "semalign_encoder.json"
FOLDER_PREFIX = "phantom-effnet-"
ARCH = "efficientnet-lite0"

SSL_FORMAT_VERSION = 1
SSL_FOLDER_PREFIX = "phantom-ssl-"
SSL_ARCH = "efficientnet-lite1"
SSL_ENCODER_NAME = "phantom-ssl"
WEIGHTS_FILE = "model.safetensors"


@dataclasses.dataclass(frozen=True)
class VisionAdaptConfig:
    """Fine-tuning settings; every field enters the cache key.

    ``steps`` (300) AdamW steps of ``batch_size`` (32) images at ``image_size``
    (224, Lite0's own): about 7 epochs of the default 1,400-image training split.
    ``train_blocks`` (4): the last 4 of Lite0's 16 MBConv blocks (plus the 1×1 head
    convolution) are trained. The frozen part's output (192×7×7 per image) is
    computed once, so a step runs only the upper blocks at 7×7 and costs tens
    of milliseconds. ``lr`` (1e-4) peak rate for the trained blocks — Adam at 1e-3
    wrecked the ImageNet features (probe AUROC 0.92 → 0.64 on the phantom) — and
    ``head_lr`` (1e-2) for the fresh finding head; linear warm-up over
    ``warmup_fraction`` (0.1) then linear decay; ``weight_decay`` 1e-4.
    ``threads`` (2) torch threads while training: the count changes the float
    reduction order, so fixing it fixes the weights (two runs on 2 threads give
    bit-identical weights; 1 and 2 threads do not). The upper blocks train in
    channels-last layout, where oneDNN's depthwise-convolution backward is
    fastest: a step of 32 images took 0.22 s on 2 threads against 0.62 s in
    the default layout on 1 thread (format 2's setting), 0.33 s in the default
    layout on 2. The frozen features are computed beforehand on the same
    ``threads``: in small batches one and two threads do not give
    bit-identical features.
    ``seed`` (0) drives the batch order and the head's initialisation.
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


def _check_ranges(config: Any, checks: dict[str, bool]) -> None:
    for name, ok in checks.items():
        if not ok:
            raise SemalignError(
                f"{type(config).__name__}.{name}={getattr(config, name)!r} is out of range; see its docstring"
            )


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
    """The ImageNet EfficientNet, frozen, in eval mode (BatchNorm keeps its ImageNet statistics)."""
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name(arch, image_size=image_size)
    model.load_state_dict(torch.load(str(_base_weights(arch)), map_location="cpu", weights_only=True), strict=True)
    model.eval()  # no dropout, no drop-connect, BatchNorm statistics fixed
    for p in model.parameters():
        p.requires_grad_(False)
    return model


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
    high-resolution blocks then stay in cache. On 2 threads 128 images took
    2.3 s in batches of 4 against 7.4 s in batches of 32, with bit-identical
    features (a convolution's output does not depend on the batch it is in).
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
    from semalign.study.progress import progress_bar

    body = _trainable_upper_part(model, first)
    frozen = frozen.contiguous(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(config.seed)
    head = torch.nn.Linear(model._fc.in_features, labels.shape[1])
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.zero_()
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": config.lr}, {"params": head.parameters(), "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    peaks = [config.lr, config.head_lr]
    target = torch.from_numpy(labels.astype(np.float32))
    warmup = int(config.warmup_fraction * config.steps)
    order = torch.empty(0, dtype=torch.long)
    losses: list[float] = []
    bar = progress_bar(range(config.steps), desc="fine-tuning phantom-effnet", unit="step", disable=not progress)
    for step in bar:
        if len(order) < config.batch_size:  # epoch by epoch, each image once per epoch
            order = torch.cat([order, torch.randperm(len(frozen), generator=generator)])
        idx, order = order[: config.batch_size], order[config.batch_size :]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            head(_upper_part(model, frozen[idx], first)), target[idx])
        factor = _lr_factor(step, config.steps, warmup)
        for group, peak in zip(optimizer.param_groups, peaks):
            group["lr"] = peak * factor
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    metrics = {
        "loss_first_10": round(float(np.mean(losses[:10])), 4),
        "loss_last_10": round(float(np.mean(losses[-10:])), 4),
        "epochs": round(config.steps * config.batch_size / len(frozen), 2),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return _state(model), metrics


def _state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise SemalignError(f"training images must be a uint8 (N, H, W) array, got {images.dtype} {images.shape}")
    return images


def _cached_build(prefix: str, kind: str, inputs: dict[str, Any],
                  train: Callable[[], tuple[dict, dict]]) -> Path:
    """The weights file of the cache entry for ``inputs``; ``train()`` makes it on first use.

    Written to a hidden temporary folder beside the entry and renamed into place,
    so an interrupted build never looks valid; an entry whose weights no longer
    match their recorded sha256 is rebuilt. ``train`` runs inside
    ``torch.random.fork_rng``, so the caller's global RNG state is unchanged.
    """
    from safetensors.torch import save_file

    target = paths.cache_dir() / "encoders" / f"{prefix}{cache.hash_key(inputs)}"
    if is_complete(target, names=(WEIGHTS_FILE,)):
        return target / WEIGHTS_FILE
    discard_damaged(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        with torch.random.fork_rng():
            state, metrics = train()
        save_file(state, str(tmp / WEIGHTS_FILE))
        cache.atomic_write_json(tmp / ENCODER_FILE, {"kind": kind, **inputs, "training": metrics,
                                                     "weights_sha256": cache.sha256_file(tmp / WEIGHTS_FILE)})
        cache.make_shareable(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete(target, names=(WEIGHTS_FILE,)):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target / WEIGHTS_FILE


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


# --------------------------------------------------------------------------- phantom-ssl


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
    rotation ±8°; ``zoom`` (0.12) magnification ×1.12^±1; ``aspect`` (0.06)
    width against height ×1.06^±1 (habitus); ``shift`` (0.06) translation ±6 %
    of the field per axis; ``gamma`` (0.3) display gamma ×e^±0.3; ``contrast``
    (0.15) contrast ×e^±0.15 about mid-grey; ``brightness`` (0.06) offset ±6 %
    of the grey range; ``noise`` (0.03) Gaussian pixel noise of a standard
    deviation drawn in [0, 3 %] of the grey range. The rendered phantom varies
    by ±4°, ×0.94–1.08, ±4 %, gamma ×e^±0.2 and exposure/window ±5–8 %; two
    renderings of one case differ by up to twice that, which is what the views
    of one image should cover.

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
    warp: float = 0.0
    head_steps: int = 0
    threads: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        _check_ranges(self, {
            "steps": self.steps >= 1, "head_steps": self.head_steps >= 0, "batch_size": self.batch_size >= 2, "views": 2 <= self.views <= 64,
            "lr": self.lr > 0, "head_lr": self.head_lr > 0, "warmup_fraction": 0 <= self.warmup_fraction < 1,
            "weight_decay": self.weight_decay >= 0, "temperature": self.temperature > 0,
            "projection_dim": self.projection_dim >= 1, "train_blocks": 0 <= self.train_blocks <= 21,
            "image_size": 32 <= self.image_size <= 1024, "rotation_deg": 0 <= self.rotation_deg <= 45,
            "zoom_in": 0 <= self.zoom_in < 1, "zoom_out": 0 <= self.zoom_out < 1, "aspect": 0 <= self.aspect < 1, "shift": 0 <= self.shift < 0.5,
            "gamma": 0 <= self.gamma <= 2, "contrast": 0 <= self.contrast <= 2,
            "brightness": 0 <= self.brightness < 1, "noise": 0 <= self.noise < 1,
            "warp": 0 <= self.warp <= 32, "threads": self.threads >= 0,
        })


WARP_GRID = 4  # control points per side of the smooth random displacement field
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
    if config.warp > 0:  # smooth local displacements: parallax of the front and back of the body
        coarse = 2.0 * torch.rand((n_views, 2, WARP_GRID, WARP_GRID), generator=generator) - 1.0
        field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
        grid = grid + (2.0 * config.warp / size) * field.permute(0, 2, 3, 1)
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
    batches keep the activations of the early high-resolution blocks in cache
    (see :func:`_frozen_features`)."""
    from semalign.study.progress import progress_bar

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


def _train_ssl(images: np.ndarray, config: SSLConfig, progress: bool) -> tuple[dict, dict]:
    views_seed, train_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(config.seed).spawn(2))
    model = _load_base(config.image_size, SSL_ARCH)
    first = len(model._blocks) - config.train_blocks
    start = time.perf_counter()
    with _torch_threads(config.threads):
        frozen = _frozen_views(model, images, first, config, torch.Generator().manual_seed(views_seed), progress)
        frozen_seconds = time.perf_counter() - start
        metrics = _fit_ssl(model, first, frozen, config, torch.Generator().manual_seed(train_seed), progress)
    metrics.update(frozen_seconds=round(frozen_seconds, 1), seconds=round(time.perf_counter() - start, 1))
    return _state(model), metrics


def _view_pairs(n_images: int, n_views: int, batch: int, generator: torch.Generator):
    """Endless batches ``(images, one view, another view)``: images epoch by epoch
    (each once per epoch, in a seeded order), two distinct views of each."""
    order = torch.empty(0, dtype=torch.long)
    while True:
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(n_images, generator=generator)])
        idx, order = order[:batch], order[batch:]
        one = torch.randint(n_views, (batch,), generator=generator)
        other = (one + torch.randint(1, n_views, (batch,), generator=generator)) % n_views
        yield idx, one, other


def _fit_projection_head(head: torch.nn.Module, pooled: torch.Tensor, config: SSLConfig,
                         generator: torch.Generator) -> list[float]:
    """``config.head_steps`` NT-Xent steps of the projection head alone on the pooled
    features ``pooled`` (N, V, 1280) of the untrained upper part: the body then starts
    from a head that already means something, rather than from a random one whose
    gradients would distort the ImageNet features (linear probing before fine-tuning)."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.head_lr, weight_decay=config.weight_decay)
    batch = min(config.batch_size, len(pooled))
    pairs = _view_pairs(len(pooled), pooled.shape[1], batch, generator)
    losses = []
    for step in range(config.head_steps):
        idx, one, other = next(pairs)
        loss, _ = nt_xent(head(pooled[idx, one]), head(pooled[idx, other]), config.temperature)
        for group in optimizer.param_groups:
            group["lr"] = config.head_lr * _lr_factor(step, config.head_steps, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _fit_ssl(model: Any, first: int, frozen: torch.Tensor, config: SSLConfig, generator: torch.Generator,
             progress: bool) -> dict[str, Any]:
    """Train blocks ``[first:]``, the head convolution and a projection head with NT-Xent
    on pairs of distinct precomputed views ``frozen`` (N, V, C, h, w); the training summary."""
    from semalign.study.progress import progress_bar

    n_images, n_views = frozen.shape[:2]
    batch = min(config.batch_size, n_images)
    head = _projection_head(model._fc.in_features, config.projection_dim, generator)
    head_losses: list[float] = []
    if config.head_steps:
        with torch.inference_mode():
            pooled = torch.cat([
                _upper_part(model, chunk.flatten(0, 1).contiguous(memory_format=torch.channels_last), first)
                for chunk in frozen.split(64)]).reshape(n_images, n_views, -1)
        head_losses = _fit_projection_head(head, pooled.clone(), config, generator)
    body = _trainable_upper_part(model, first)
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": config.lr}, {"params": head.parameters(), "lr": config.head_lr}],
        weight_decay=config.weight_decay,
    )
    peaks = [config.lr, config.head_lr]
    warmup = int(config.warmup_fraction * config.steps)
    pairs = _view_pairs(n_images, n_views, batch, generator)
    losses: list[float] = []
    hits: list[float] = []
    bar = progress_bar(range(config.steps), desc="training phantom-ssl", unit="step", disable=not progress)
    for step in bar:
        idx, one, other = next(pairs)
        pair = torch.cat([frozen[idx, one], frozen[idx, other]]).contiguous(memory_format=torch.channels_last)
        projected = head(_upper_part(model, pair, first))
        loss, hit = nt_xent(projected[:batch], projected[batch:], config.temperature)
        factor = _lr_factor(step, config.steps, warmup)
        for group, peak in zip(optimizer.param_groups, peaks):
            group["lr"] = peak * factor
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        hits.append(hit.float().mean().item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    summary = {
        "loss_first_10": round(float(np.mean(losses[:10])), 4),
        "loss_last_10": round(float(np.mean(losses[-10:])), 4),
        "partner_top1_first_10": round(float(np.mean(hits[:10])), 4),
        "partner_top1_last_10": round(float(np.mean(hits[-10:])), 4),
        "images_per_step": batch,
        "epochs": round(config.steps * batch / n_images, 2),
    }
    if head_losses:
        summary.update(head_loss_first_10=round(float(np.mean(head_losses[:10])), 4),
                       head_loss_last_10=round(float(np.mean(head_losses[-10:])), 4))
    return summary


def ssl_cache_inputs(images: np.ndarray, config: SSLConfig) -> dict[str, Any]:
    """Everything the self-supervised weights depend on, as recorded and hashed (no labels)."""
    return {
        "format_version": SSL_FORMAT_VERSION,
        "objective": "simclr-nt-xent",
        "base_model": SSL_ARCH,
        "base_model_sha256": file_sha256(_base_weights(SSL_ARCH)),
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
    return _cached_build(SSL_FOLDER_PREFIX, SSL_ENCODER_NAME, inputs, lambda: _train_ssl(images, config, progress))


def register_phantom_ssl_encoder(images: np.ndarray, config: SSLConfig | None = None, progress: bool = True) -> str:
    """Build (cached) the self-supervised encoder on these training images and register
    it as ``phantom-ssl``; return the name."""
    from semalign.models.encoders import register_encoder

    config = config or SSLConfig()
    weights = ssl_vision_encoder(images, config, progress=progress)
    register_encoder(
        {
            "name": SSL_ENCODER_NAME, "modality": "vision", "domain": "medical", "family": "efficientnet-lite",
            "source": f"{SSL_ARCH}:{weights}", "pooling": "gap", "image_size": config.image_size,
            "description": "EfficientNet-Lite1 trained by the study on the phantom's training images without "
                           "labels (SimCLR-style, augmentations); stand-in for RAD-DINO",
        },
        replace=True,
    )
    return SSL_ENCODER_NAME
