"""Vision encoders: uint8 images in, float32 embeddings out (EfficientNet-Lite,
transformers models on pixels, the image tower of an open_clip model)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from semalign.core.errors import SemalignError
from semalign.models.base import Encoder, model_kwargs, open_clip_model, projected, transformers_loading
from semalign.models.registry import EncoderSpec, read_json
from semalign.models.weights import Located, import_package, effective_image_size


def images_to_tensor(images: Any, size: int, device: str = "cpu") -> Any:
    """uint8 images (N×H×W, N×H×W×3 or a list of H×W[×3]) → float32 N×3×size×size in 0..255.

    Gray images become three identical channels; every image is resized (bilinear,
    antialiased, aspect ratio not kept) to ``size``×``size``.
    """
    import torch
    import torch.nn.functional as F

    if isinstance(images, np.ndarray) and images.ndim in (3, 4):
        groups = [images]
    else:
        arrays = [np.asarray(img) for img in images]
        same = len({(a.shape, a.dtype.str) for a in arrays}) == 1
        groups = [np.stack(arrays)] if same and arrays else [a[None] for a in arrays]
    out = []
    for g in groups:
        if g.dtype != np.uint8:
            raise SemalignError(f"images must be uint8 (0..255), got {g.dtype}; convert (e.g. rescale 16-bit) first")
        if g.ndim == 4 and g.shape[-1] == 1:
            g = g[..., 0]
        if not (g.ndim == 3 or (g.ndim == 4 and g.shape[-1] == 3)):
            raise SemalignError(
                f"images must be H×W (gray) or H×W×3 (RGB) uint8 arrays; got shape {g.shape[1:]}"
            )
        x = torch.from_numpy(np.ascontiguousarray(g))
        if device == "cuda":  # the uint8 pixels travel as they are; the GPU lays them out
            x = x.pin_memory().to(device, non_blocking=True)
        x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
        x = x.float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)
    return torch.cat(out) if len(out) > 1 else out[0]


class _VisionEncoder(Encoder):
    """Common part of the vision encoders: pixels normalised by a per-channel mean and
    std on the 0..255 scale (unless a subclass normalises otherwise), batched forwards."""

    image_size: int
    _mean: Any
    _std: Any

    def _normalize(self, x: Any) -> Any:
        return (x - self._mean) / self._std

    def _features(self, x: Any) -> Any:
        raise NotImplementedError

    def preprocess(self, images: Any) -> Any:
        import torch

        x = self._normalize(images_to_tensor(images, self.image_size, self.device))
        if self.precision == "bf16":
            x = x.to(torch.bfloat16)
        return x.contiguous(memory_format=torch.channels_last)

    def encode(self, batch: Any, batch_size: int | None = None, callback: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed uint8 images (N×H×W, N×H×W×3 or a list); returns float32 (N, dim)."""
        return self._encode_in_batches(batch, batch_size, callback,
                                       lambda chunk: self._features(self.preprocess(chunk)))


def load_efficientnet(arch: str, image_size: int, path: Path) -> Any:
    """EfficientNet-Lite ``arch`` at ``image_size`` with the weights in ``path``, in eval mode."""
    import torch

    package = import_package("efficientnet_lite_pytorch", "the package efficientnet-lite-pytorch")
    model = package.EfficientNet.from_name(arch, image_size=image_size)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:  # the packaged .pth: verified by sha256 when located, read with the tensor-only unpickler
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise SemalignError(f"{path} does not hold {arch} weights: {exc}") from exc
    return model.eval()


class EffNetLiteEncoder(_VisionEncoder):
    """EfficientNet-Lite: (x − 127)/128, features before the classifier, global average pooled.

    The default batch is 8 images: on a CPU the early high-resolution
    activations then stay in cache.

    The forward pass is the model's own, so fp32 embeddings equal a plain
    forward's (``benchmarks/bench_embed.py`` compares them).
    """

    default_batch_size = 8

    def __init__(self, spec: EncoderSpec, located: Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        import torch
        from torch import nn

        assert located.arch is not None
        self.image_size = effective_image_size(spec, located)
        model = load_efficientnet(located.arch, self.image_size, located.weights[0])
        self.classifier = model._fc  # kept in fp32 for logits()
        model._fc = nn.Identity()
        self.model = self._prepare_module(model).to(memory_format=torch.channels_last)
        self.classifier = self.classifier.to(self.device).float()
        self.dim = int(self.classifier.in_features)

    def _normalize(self, x: Any) -> Any:
        return (x - 127.0) / 128.0

    def _features(self, x: Any) -> Any:
        return self.model.extract_features(x).float().mean(dim=(2, 3))

    def logits(self, images: Any) -> np.ndarray:
        """ImageNet logits (1000 classes), for sanity checks of the weights."""
        import torch

        emb = torch.from_numpy(self.encode(images)).to(self.device)
        with torch.inference_mode():
            return self.classifier(emb).cpu().numpy()


class HFVisionEncoder(_VisionEncoder):
    """transformers ``AutoModel`` on pixels (ViT, DINOv2, RAD-DINO, ...)."""

    default_batch_size = 16

    def __init__(self, spec: EncoderSpec, located: Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        import torch
        from transformers import AutoModel

        assert located.folder is not None
        self.image_size = effective_image_size(spec, located)
        pre = read_json(located.folder / "preprocessor_config.json")
        mean = pre.get("image_mean", [0.485, 0.456, 0.406]) if pre.get("do_normalize", True) else [0.0] * 3
        std = pre.get("image_std", [0.229, 0.224, 0.225]) if pre.get("do_normalize", True) else [1.0] * 3
        scale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).reshape(1, -1, 1, 1) / scale
        self._std = torch.tensor(std, dtype=torch.float32, device=device).reshape(1, -1, 1, 1) / scale
        with transformers_loading(spec, located.folder):
            model = AutoModel.from_pretrained(str(located.folder), **model_kwargs(spec))
        self.model = self._prepare_module(model)
        cfg = model.config
        if spec.family == "hf-clip":
            self.dim = int(cfg.projection_dim)
        else:
            self.dim = int(getattr(cfg, "hidden_size", None) or cfg.hidden_sizes[-1])

    def _features(self, x: Any) -> Any:
        if self.spec.family == "hf-clip":
            return projected(self.model.get_image_features(pixel_values=x))
        result = self.model(pixel_values=x)
        if self.spec.pooling == "pooler":
            return result.pooler_output.reshape(len(x), -1)
        hidden = result.last_hidden_state
        if hidden.ndim == 4:  # convolutional backbones: N×C×H×W
            return hidden.mean(dim=(2, 3))
        if self.spec.pooling == "cls":
            return hidden[:, 0]
        return hidden.mean(dim=1)


class OpenClipVisionEncoder(_VisionEncoder):
    """The image tower of an open_clip model (``encode_image``), with its mean and std."""

    default_batch_size = 16

    def __init__(self, spec: EncoderSpec, located: Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        import torch

        model, _, cfg = open_clip_model(spec, located)
        self.image_size = effective_image_size(spec, located)
        pre = cfg.get("preprocess_cfg", {})
        mean, std = pre.get("mean", [0.48145466, 0.4578275, 0.40821073]), pre.get("std", [0.26862954, 0.26130258, 0.27577711])
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).reshape(1, -1, 1, 1) * 255
        self._std = torch.tensor(std, dtype=torch.float32, device=device).reshape(1, -1, 1, 1) * 255
        self.model = self._prepare_module(model)
        self.dim = int(cfg["model_cfg"]["embed_dim"])

    def _features(self, x: Any) -> Any:
        return self.model.encode_image(x)
