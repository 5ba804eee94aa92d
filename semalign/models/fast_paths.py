"""Speed-ups of the forward pass that no model needs to be correct.

* :func:`pack_linears`: a CPU model's ``nn.Linear`` layers as oneDNN calls on
  pre-packed weights, BERT-style exact GELU fused into the FFN input;
* :func:`use_cpu_attention`: a short-sequence self-attention of our own
  (:func:`_cpu_attention`), registered through transformers' attention interface;
* :func:`fold_batchnorms`: an EfficientNet-Lite's BatchNorms folded into its
  convolutions (used in bf16 only: folding changes the rounding order, and fp32
  keeps the plain forward's numbers).

The first two check themselves once against the plain computation and leave
the model as it is where they disagree or are unavailable. They live together so
that a measurement that finds one no longer pays can remove it here, and the
encoders keep working without it.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _packed_linear_class() -> type:
    import torch

    class PackedLinear(torch.nn.Module):
        """``nn.Linear`` (optionally + exact GELU) as one oneDNN call on a pre-packed weight."""

        def __init__(self, linear: Any, gelu: bool = False):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.dtype = linear.weight.dtype
            self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach().contiguous(), 64)
            self.bias = None if linear.bias is None else linear.bias.detach().contiguous()
            self.attr, self.algorithm = ("gelu", "none") if gelu else ("none", "")

        def forward(self, x: Any) -> Any:
            lead = x.shape[:-1]
            x2 = x.reshape(-1, self.in_features).to(self.dtype)
            y = torch.ops.mkldnn._linear_pointwise(x2, self.packed, self.bias, self.attr, [], self.algorithm)
            return y.reshape(*lead, self.out_features)

    return PackedLinear


@functools.cache
def _packing_works(dtype_name: str) -> bool:
    """oneDNN linear (+GELU) in this dtype is present here and gives the plain result."""
    import torch

    dtype = getattr(torch, dtype_name)
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-5
    try:
        gen = torch.Generator().manual_seed(0)
        linear = torch.nn.Linear(64, 48).to(dtype)
        x = torch.randn(5, 64, generator=gen).to(dtype)
        with torch.inference_mode():
            plain = torch.nn.functional.gelu(linear(x).float())
            packed = _packed_linear_class()(linear, gelu=True)(x).float()
        return bool((packed - plain).abs().max() <= tolerance * plain.abs().max() + 1e-6)
    except Exception:  # noqa: BLE001 - any failure means: not available, keep aten
        return False


def pack_linears(model: Any) -> int:
    """Swap a CPU model's ``nn.Linear`` layers for pre-packed oneDNN ones; returns how many.

    BERT-style ``*Intermediate`` blocks (``dense`` then exact GELU) become a single
    fused call. fp32 and bf16 weights; does nothing (returns 0) where oneDNN lacks
    the dtype.
    """
    import torch
    from torch import nn

    dtype = next(model.parameters()).dtype
    if dtype not in (torch.float32, torch.bfloat16) or not _packing_works(str(dtype).split(".")[-1]):
        return 0
    packed_cls = _packed_linear_class()
    count = 0
    for module in list(model.modules()):
        act = getattr(module, "intermediate_act_fn", None)
        dense = getattr(module, "dense", None)
        if (
            type(module).__name__.endswith("Intermediate")
            and type(dense) is nn.Linear
            and type(act).__name__ == "GELUActivation"
            and getattr(act, "act", None) is torch.nn.functional.gelu
        ):
            module.dense = packed_cls(dense, gelu=True)
            module.intermediate_act_fn = nn.Identity()
            count += 1
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, packed_cls(child))
                count += 1
    return count


CPU_ATTENTION = "semalign-cpu"


def _cpu_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: float | None = None,
                   dropout: float = 0.0, **kwargs: Any) -> tuple[Any, None]:
    """Self-attention of a short-sequence encoder on CPU, as three batched calls.

    ``scores = mask + scaling·QKᵀ`` is one ``baddbmm`` over batch×heads with the key
    padding mask broadcast along the queries (not a (B, 1, L, L) tensor), then
    softmax and ``bmm`` with V: for short sequences and small heads, such as
    MiniLM's on radiology reports, this is quicker than PyTorch's CPU flash
    kernel, whose tiles suit long sequences and large heads. Anything else
    (training, causal or cross attention, grouped heads) goes to transformers'
    SDPA function unchanged.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, lq, d = query.shape
    lk = key.shape[-2]
    if module.training or getattr(module, "is_causal", False) or kwargs.get("is_causal") or key.shape[1] != h:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    q = query.reshape(b * h, lq, d)
    k = key.reshape(b * h, lk, d).transpose(1, 2)
    alpha = d**-0.5 if scaling is None else scaling
    if attention_mask is None:
        scores = torch.bmm(q, k).mul_(alpha)
    else:
        bias = _additive(attention_mask, q.dtype) if attention_mask.dtype == torch.bool else attention_mask
        bias = bias.to(q.dtype).expand(b, h, bias.shape[-2], lk).reshape(b * h, -1, lk)
        scores = torch.baddbmm(bias, q, k, alpha=alpha)
    probs = torch.softmax(scores, dim=-1)
    out = torch.bmm(probs, value.reshape(b * h, lk, d))
    return out.view(b, h, lq, d).transpose(1, 2).contiguous(), None


def _key_padding_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                      mask_function: Any = None, attention_mask: Any = None, dtype: Any = None, **kwargs: Any) -> Any:
    """Mask for :func:`_cpu_attention`: an additive (B, 1, 1, L) key mask, or None without padding.

    Only plain bidirectional masks take this form; any other (causal, packed,
    custom) is built by transformers' eager mask function, in full.
    """
    import torch
    from transformers import masking_utils

    if mask_function is not masking_utils.bidirectional_mask_function or attention_mask is None \
            or attention_mask.ndim != 2 or q_offset or kv_offset:
        return masking_utils.eager_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function,
                                        attention_mask, dtype=dtype or torch.float32, **kwargs)
    if bool(attention_mask.all()):
        return None
    return _additive(attention_mask.bool(), dtype or torch.float32)[:, None, None, :]


def _additive(keep: Any, dtype: Any) -> Any:
    """A boolean keep-mask as an additive bias: 0 where kept, the dtype's lowest value elsewhere."""
    import torch

    return torch.zeros(keep.shape, dtype=dtype).masked_fill_(~keep, torch.finfo(dtype).min)


@functools.cache
def _cpu_attention_works() -> bool:
    """Registers :data:`CPU_ATTENTION` with transformers and checks it against SDPA once."""
    import torch

    try:
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        from transformers.masking_utils import AttentionMaskInterface, bidirectional_mask_function

        AttentionInterface.register(CPU_ATTENTION, _cpu_attention)
        AttentionMaskInterface.register(CPU_ATTENTION, _key_padding_mask)
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(2, 3, 7, 8, generator=gen) for _ in range(3))
        keep = torch.ones(2, 7, dtype=torch.bool)
        keep[1, 4:] = False
        module = torch.nn.Module().eval()
        mask = _key_padding_mask(2, 7, 7, mask_function=bidirectional_mask_function, attention_mask=keep)
        ours = _cpu_attention(module, q, k, v, mask)[0]
        ref = sdpa_attention_forward(module, q, k, v, keep[:, None, None, :].expand(2, 1, 7, 7), is_causal=False)[0]
        return bool((ours - ref).abs().max() <= 1e-5)
    except Exception:  # noqa: BLE001 - an older or changed transformers: keep its own attention
        return False


def use_cpu_attention(model: Any) -> bool:
    """Switch a bidirectional transformers encoder to :func:`_cpu_attention`; returns whether it did.

    Only models built on transformers' attention interface (``_supports_attention_backend``)
    and not decoders; others keep their attention.
    """
    config = getattr(model, "config", None)
    if (
        config is None
        or not getattr(model, "_supports_attention_backend", False)
        or getattr(config, "is_decoder", False)
        or not hasattr(model, "set_attn_implementation")
        or not _cpu_attention_works()
    ):
        return False
    try:
        model.set_attn_implementation(CPU_ATTENTION)
    except (ValueError, ImportError):
        return False
    return True


def fuse_conv_bn(conv: Any, bn: Any) -> None:
    """Fold an eval-mode BatchNorm into the preceding convolution, in place."""
    import torch

    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    conv.weight = torch.nn.Parameter(conv.weight.detach() * scale.reshape(-1, 1, 1, 1), requires_grad=False)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = torch.nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach(), requires_grad=False)


def fold_batchnorms(model: Any) -> None:
    """Fold every BatchNorm of an EfficientNet-Lite into its convolution (inference only)."""
    from torch import nn

    fuse_conv_bn(model._conv_stem, model._bn0)
    model._bn0 = nn.Identity()
    for block in model._blocks:
        if block._block_args.expand_ratio != 1:
            fuse_conv_bn(block._expand_conv, block._bn0)
            block._bn0 = nn.Identity()
        fuse_conv_bn(block._depthwise_conv, block._bn1)
        block._bn1 = nn.Identity()
        fuse_conv_bn(block._project_conv, block._bn2)
        block._bn2 = nn.Identity()
    fuse_conv_bn(model._conv_head, model._bn1)
    model._bn1 = nn.Identity()
