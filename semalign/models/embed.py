"""Embedding extraction with a content-keyed, resumable disk cache.

:func:`embed` returns the ``N×d`` float32 embeddings of ``N`` items (texts or
images) under one encoder. Results live in
``<cache>/embeddings/<key>/shard-00000.safetensors ...`` plus ``manifest.json``,
where ``key`` hashes the encoder fingerprint (weights, pooling, normalisation,
input size, precision), the item ids and the content of every item. So:

* a warm cache is read back without loading (or importing) the model;
* a changed text or image gives a new key, the old entry stays for its inputs;
* extraction streams: items are read one batch at a time and each shard is
  written (atomically) as soon as it is full, with the manifest updated after it,
  so an interrupted run resumes at the first missing shard;
* each shard's sha256 is in the manifest and is checked on every read; a damaged
  shard (flipped bytes, truncated, missing, non-finite values) is reported with a
  one-line :func:`warnings.warn` naming the file, and recomputed;
* NaN/inf output of a model is an error naming the encoder and the rows, and is
  never cached.

``SEMALIGN_SHARD_SIZE`` sets the rows per shard of new entries (default
4096): smaller shards lose less work to an interruption. It does not change a
number: the model always sees the items in fixed blocks of :data:`BLOCK` (texts
de-duplicated and length-sorted within a block, images batched from a block's
start), whatever the shards they are stored in.

Only safetensors and JSON are written; nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semalign.core import cache as _cache
from semalign.models import encoders
from semalign.core import paths
from semalign.core.errors import SemalignError

CACHE_VERSION = 1
DEFAULT_SHARD_SIZE = 4096
# The items encoded together. Batches are cut within a block, so this (not the
# shard size) decides which items share a batch, and with it the last bits of
# every embedding; changing it changes cached numbers and needs CACHE_VERSION.
BLOCK = 4096
SHARD_SIZE_ENV = "SEMALIGN_SHARD_SIZE"
_TENSOR = "embeddings"


def _check_ids(ids: Sequence[Any]) -> list[str]:
    ids = list(ids)
    bad = [i for i in ids if not isinstance(i, str)]
    if bad:
        raise SemalignError(f"item ids must be strings; got {type(bad[0]).__name__} {bad[0]!r} (and {len(bad) - 1} more)")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise SemalignError(f"item ids must be unique; {dup!r} appears more than once")
    return ids


def _accessor(items: Any, n: int) -> Callable[[int], Any]:
    """``get(i)`` for a sequence/array (indexed) or a callable ``items(i)``."""
    if hasattr(items, "__getitem__") and not isinstance(items, (str, bytes, Mapping)):
        if hasattr(items, "__len__") and len(items) != n:
            raise SemalignError(f"got {n} ids but {len(items)} items; they must pair up one to one")
        return items.__getitem__
    if callable(items):
        return items
    raise SemalignError(
        "items must be a sequence (list of texts, array of images, lazy sequence) "
        f"or a callable items(i) returning item i; got {type(items).__name__}"
    )


def _item_digest(item: Any, modality: str, index: int) -> bytes:
    if modality == "text":
        if not isinstance(item, str):
            raise SemalignError(f"item {index} is {type(item).__name__}, but a text encoder needs strings")
        return hashlib.sha256(item.encode("utf-8")).digest()
    arr = np.ascontiguousarray(np.asarray(item))
    if arr.dtype != np.uint8:
        raise SemalignError(f"image {index} has dtype {arr.dtype}; images must be uint8 arrays")
    head = f"{arr.dtype.str}{arr.shape}".encode()
    return hashlib.sha256(head + memoryview(arr).cast("B")).digest()


def entry_dir(key: str) -> Path:
    """The folder of one cache entry."""
    return paths.cache_dir() / "embeddings" / key


def _read_manifest(folder: Path, expect: dict[str, Any]) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    _cache.clear_wrong_kind(path, want_folder=False)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        if any(folder.glob("shard-*.safetensors")) and not any(folder.glob("part-*.json")):  # parts: a shared fill
            warnings.warn(f"embedding cache manifest {path} is missing beside its shards (deleted, or its first "
                          "write was interrupted); recomputing the entry", stacklevel=3)
        return None
    except (OSError, ValueError):
        warnings.warn(f"embedding cache manifest {path} is unreadable; recomputing the entry", stacklevel=3)
        return None
    if not isinstance(manifest, dict) or any(manifest.get(k) != v for k, v in expect.items()):
        warnings.warn(f"embedding cache manifest {path} does not match its key; recomputing the entry", stacklevel=3)
        return None
    size = manifest.get("shard_size")
    if not isinstance(manifest.get("shards"), list) or not isinstance(size, int) or size <= 0:
        warnings.warn(f"embedding cache manifest {path} is malformed; recomputing the entry", stacklevel=3)
        return None
    return manifest


def _load_shard(path: Path, record: Mapping[str, Any], rows: int, dim: int | None) -> np.ndarray | None:
    """The verified rows of one shard, or None (with a warning) when it is damaged."""
    from safetensors.numpy import load_file

    problem = None
    if not path.is_file():
        problem = "is not a file" if path.exists() else "is missing"
    elif _cache.sha256_file(path) != record.get("sha256"):
        problem = "is corrupted (sha256 differs from the manifest)"
    else:
        try:
            data = load_file(str(path))[_TENSOR]
        except Exception as exc:  # noqa: BLE001 - any read failure is damage
            problem = f"cannot be read ({' '.join(str(exc).split())})"
        else:
            if data.ndim != 2 or data.dtype != np.float32 or data.shape[0] != rows or (dim is not None and data.shape[1] != dim):
                problem = f"has shape {data.shape} {data.dtype}, expected ({rows}, {dim}) float32"
            elif not np.isfinite(data).all():
                problem = "holds NaN/inf values"
            else:
                return data
    warnings.warn(f"embedding cache shard {path} {problem}; recomputing it", stacklevel=4)
    return None


def _distinct(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Each distinct text once, in order of first appearance, and the index of
    every input's text among them (repeated reports are common: 768 of IU's 3,927
    repeat an earlier one). The texts are strings: the hashing pass checked them."""
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(t, len(first)) for t in texts), np.int64, len(texts))
    return list(first), inverse


def embed(
    encoder: Any,
    ids: Sequence[str],
    items: Any,
    *,
    batch_size: int | None = None,
    shard_size: int | None = None,
    progress: bool = True,
    cache: bool = True,
    device: str = "auto",
    precision: str = "fp32",
    allow_remote_code: Sequence[str] = (),
    share: tuple[int, int] = (0, 1),
) -> np.ndarray | None:
    """Embeddings (``len(ids)×dim`` float32, in the order of ``ids``) of ``items``.

    ``encoder`` is a loaded encoder (:func:`semalign.models.encoders.load_encoder`) or a
    reference (name, ``"hf-text:..."``, dict ...); a reference is loaded with
    ``device``/``precision``/``allow_remote_code`` only if something must be
    computed. ``items`` are texts (a list of str) or images: an ``N×H×W[×3]``
    uint8 array, a lazy sequence, or a callable ``items(i)`` returning image ``i``
    (so the images need not all be in memory). ``shard_size`` rows are written per
    cache file (default ``$SEMALIGN_SHARD_SIZE`` or 4096; an existing partial entry
    keeps its own shard size); ``batch_size``
    defaults to the encoder's. ``cache=False`` computes without touching the disk.
    Texts repeated within a block of :data:`BLOCK` items are encoded once, so
    equal texts get equal embeddings whatever batch they would have fallen in.

    Images are read twice on a cold run (a hashing pass for the key, then the
    extraction, one batch at a time) and once on a warm one, unless ``items``
    has an ``item_digest(i)`` method returning bytes that identify item ``i``
    (images in files, identified by the file's bytes): then they are decoded once
    on a cold run and not at all on a warm one. Beyond the returned array,
    memory holds one shard. Any object with ``spec`` (``name``,
    ``modality``), ``fingerprint``, ``dim`` and ``encode(batch, batch_size=None,
    callback=None)`` serves as a loaded encoder.

    ``share=(rank, world)`` with ``world > 1`` is one of ``world`` processes
    filling the entry together (``semalign embed`` under ``accelerate launch``):
    this one computes the shards whose block ``rank`` owns, lists them in its own
    ``part-<rank>.json`` instead of the manifest, and returns ``None``;
    :func:`merge_parts` (or any later single-process call) then writes the
    manifest. Blocks are dealt whole, so the numbers are those of one process.
    """
    ids = _check_ids(ids)
    get = _accessor(items, len(ids))
    shard_size = _checked_shard_size(shard_size)
    loaded = encoder if all(hasattr(encoder, a) for a in ("spec", "fingerprint", "encode", "dim")) else None
    if loaded is not None:
        spec, fingerprint = loaded.spec, loaded.fingerprint
    else:
        spec, fingerprint = encoders.encoder_fingerprint(encoder, precision, device)
    rank, world = _checked_share(share, cache)
    digest = getattr(items, "item_digest", None) or (lambda i: _item_digest(get(i), spec.modality, i))
    expect = _entry_identity(ids, digest, spec.modality, fingerprint, progress)
    folder = entry_dir(expect["key"])
    if cache and world == 1 and any(folder.glob("part-*.json")):  # left by processes that shared the entry
        merge_parts(expect["key"])
    manifest = _read_manifest(folder, expect) if cache else None
    if manifest is None:
        manifest = {**expect, "encoder": spec.name, "modality": spec.modality, "dtype": "float32",
                    "spec": spec.to_dict() if hasattr(spec, "to_dict") else repr(spec),
                    "dim": None, "shard_size": shard_size, "shards": [], "complete": False}
    if not ids:
        return np.empty((0, manifest.get("dim") or getattr(loaded, "dim", 0)), np.float32)
    model = _lazy_model(encoder, loaded, spec.name, fingerprint,
                        dict(device=device, precision=precision, allow_remote_code=allow_remote_code))

    def compute(start: int, stop: int, bar: Any) -> np.ndarray:
        rows = _encode_rows(model(), spec.modality, get, start, stop, batch_size, bar)
        _check_finite(rows, ids, start, spec.name)
        return rows

    return _read_or_compute(folder, manifest, ids, compute, name=spec.name, cache=cache, progress=progress,
                            share=(rank, world))


def _checked_share(share: Any, cache: bool) -> tuple[int, int]:
    try:
        rank, world = (int(v) for v in share)
    except (TypeError, ValueError):
        rank, world = -1, 0
    if world < 1 or not 0 <= rank < world:
        raise SemalignError(f"share must be (rank, world) with 0 <= rank < world, not {share!r}")
    if world > 1 and not cache:
        raise SemalignError("share=(rank, world) fills the disk cache together; it needs cache=True")
    return rank, world


def merge_parts(key: str) -> bool:
    """Fold the shard lists that processes of a shared run (``share=``) wrote
    into the entry's manifest, and remove them. Parts of another identity are
    dropped with a warning. True when the entry is complete afterwards."""
    folder = entry_dir(key)
    parts = sorted(folder.glob("part-*.json"))
    if not parts:
        manifest = _read_manifest(folder, {"key": key})
        return bool(manifest and manifest.get("complete"))
    identity = ("version", "key", "n", "fingerprint", "ids_sha256", "content_sha256", "shard_size")
    read = []
    for path in parts:
        try:
            read.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            warnings.warn(f"embedding cache part {path} is unreadable; its shards will be recomputed", stacklevel=2)
    base = _read_manifest(folder, {"key": key}) or next((p for p in read if p.get("key") == key), None)
    if base is not None:
        merged = list(base["shards"])
        for part in read:
            if any(part.get(k) != base.get(k) for k in identity):
                warnings.warn(f"embedding cache part in {folder} belongs to another run; ignoring it", stacklevel=2)
                continue
            for k, record in enumerate(part["shards"]):
                if record and not merged[k]:
                    merged[k] = record
            base["dim"] = base.get("dim") or part.get("dim")
        base.update(shards=merged, complete=all(merged))
        _cache.atomic_write_json(folder / "manifest.json", base)
    for path in parts:
        path.unlink(missing_ok=True)
    return bool(base and base["complete"])


class _Blocks:
    """Rows ``start:stop`` of the entry, computed a whole :data:`BLOCK` at a time
    (one block held), whatever the range asked: the shard size stays a storage
    setting. ``counted`` is how many leading rows the progress bar has counted."""

    def __init__(self, compute: Callable[[int, int, Any], np.ndarray], n: int, block: int):
        self.compute, self.n, self.block = compute, n, block
        self.held: tuple[int, np.ndarray] | None = None
        self.counted = 0

    def rows(self, start: int, stop: int, bar: Any) -> np.ndarray:
        parts = []
        for b in range(start // self.block, (stop - 1) // self.block + 1):
            lo, hi = b * self.block, min(self.n, (b + 1) * self.block)
            if self.held is None or self.held[0] != b:
                # rows of this block read from earlier shards are encoded again: real work, shown as such
                bar.total += max(0, self.counted - lo)
                bar.refresh()
                self.held = (b, self.compute(lo, hi, bar))
                self.counted = max(self.counted, hi)
            parts.append(self.held[1][max(start, lo) - lo : min(stop, hi) - lo])
        return np.concatenate(parts)

    def loaded(self, start: int, stop: int, bar: Any) -> None:
        """Shard ``start:stop`` came from the cache: count what was not counted yet."""
        bar.update(max(0, stop - max(start, self.counted)))
        self.counted = max(self.counted, stop)


def _checked_shard_size(shard_size: Any) -> int:
    """Rows per shard of a new entry: ``shard_size``, else ``$SEMALIGN_SHARD_SIZE``, else 4096."""
    raw = os.environ.get(SHARD_SIZE_ENV, "")
    if shard_size is None and raw.strip():
        try:
            shard_size = int(raw)
        except ValueError:
            shard_size = 0
        if shard_size <= 0:
            raise SemalignError(
                f"{SHARD_SIZE_ENV}={raw!r} is not a positive integer; unset it or set e.g. {SHARD_SIZE_ENV}=1024"
            )
    elif shard_size is None:
        shard_size = DEFAULT_SHARD_SIZE
    if not isinstance(shard_size, int) or shard_size <= 0:
        raise SemalignError(f"shard_size must be a positive integer, not {shard_size!r}")
    return shard_size


def _ids_sha256(ids: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()


def _entry_identity(ids: list[str], digest: Callable[[int], bytes], modality: str, fingerprint: str,
                    progress: bool) -> dict[str, Any]:
    """The cache key of these items under this encoder, with the manifest fields it is made of.

    ``digest(i)`` identifies item ``i``, in one streaming pass: an image in memory
    is hashed and dropped; an image in a file is named by the file's bytes
    (:meth:`semalign.experiments.inputs.LazyImages.item_digest`).
    """
    from semalign.core.progress import progress_bar

    n = len(ids)
    ids_hash = _ids_sha256(ids)
    content = hashlib.sha256()
    hashing = progress_bar(total=n, desc=f"hash {modality} items", unit="item", leave=False,
                           disable=not progress or modality == "text")
    with hashing:
        for i in range(n):
            content.update(digest(i))
            hashing.update(1)
    content_hash = content.hexdigest()
    key = _cache.hash_key("semalign-embeddings", CACHE_VERSION, fingerprint, ids_hash, content_hash)
    return {
        "version": CACHE_VERSION,
        "key": key,
        "n": n,
        "fingerprint": fingerprint,
        "ids_sha256": ids_hash,
        "content_sha256": content_hash,
    }


def _lazy_model(encoder: Any, loaded: Any, name: str, fingerprint: str,
                load_options: dict[str, Any]) -> Callable[[], Any]:
    """``model()``: the loaded encoder, loading a reference on first call only, so a warm cache loads nothing."""
    model = loaded

    def get_model() -> Any:
        nonlocal model
        if model is None:
            model = encoders.load_encoder(encoder, **load_options)
            if model.fingerprint != fingerprint:
                raise SemalignError(f"the files of encoder {name!r} changed while embedding; run again")
        return model

    return get_model


def _encode_rows(model: Any, modality: str, get: Callable[[int], Any], start: int, stop: int,
                 batch_size: int | None, bar: Any) -> np.ndarray:
    """Embeddings of items ``start:stop`` (one block) as float32 rows, counted on ``bar``."""
    if modality == "text":  # the whole block at once: the encoder length-sorts it
        distinct, inverse = _distinct([get(i) for i in range(start, stop)])
        bar.update(stop - start - len(distinct))
        rows = np.asarray(model.encode(distinct, batch_size=batch_size, callback=bar.update))[inverse]
    else:  # images: only one batch in memory at a time
        bs = int(batch_size or getattr(model, "default_batch_size", 32))
        rows = np.empty((stop - start, model.dim), np.float32)
        for b in range(start, stop, bs):
            e = min(stop, b + bs)
            rows[b - start : e - start] = model.encode([get(i) for i in range(b, e)], batch_size=bs)
            bar.update(e - b)
    return np.asarray(rows, dtype=np.float32)


def _check_finite(rows: np.ndarray, ids: Sequence[str], start: int, name: str) -> None:
    bad_rows = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if len(bad_rows):
        stop = start + len(rows)
        examples = ", ".join(ids[start + int(j)] for j in bad_rows[:3])
        raise SemalignError(
            f"encoder {name!r} produced NaN/inf embeddings for {len(bad_rows)} of {stop - start} items "
            f"(rows {start}..{stop - 1}, e.g. ids {examples}); check those inputs, or try precision='fp32'"
        )


def _read_or_compute(folder: Path, manifest: dict[str, Any], ids: list[str],
                     compute: Callable[[int, int, Any], np.ndarray], *, name: str, cache: bool,
                     progress: bool, share: tuple[int, int] = (0, 1)) -> np.ndarray | None:
    """Every shard of the entry (or, shared, this process's), read back when
    intact, else computed (and, with ``cache``, written before the manifest or
    part that lists it: a crash loses at most one shard)."""
    from semalign.core.progress import progress_bar

    n, size, dim = len(ids), manifest["shard_size"], manifest.get("dim")
    n_shards = -(-n // size)
    records: list[dict[str, Any] | None] = [
        r if isinstance(r, dict) else None for r in manifest["shards"][:n_shards]
    ]
    records += [None] * (n_shards - len(records))
    rank, world = share
    # a whole block to one process: the items that share a batch are those of one process's run
    owned = [k for k in range(n_shards) if (k * size // BLOCK) % world == rank]
    if cache and not all(records[k] for k in owned) and world == 1:
        _cache.remove_stale_temporaries(folder)  # shards half-written by a killed run
    out: np.ndarray | None = np.empty((n, dim), np.float32) if dim and world == 1 else None
    total = sum(min(n, (k + 1) * size) - k * size for k in owned)
    bar = progress_bar(total=total, desc=f"embed {name}", unit="item", disable=not progress, leave=False)
    blocks = _Blocks(compute, n, BLOCK)
    mine: list[dict[str, Any] | None] = [None] * n_shards
    try:
        for k in owned:
            start, stop = k * size, min(n, (k + 1) * size)
            shard_path = folder / f"shard-{k:05d}.safetensors"
            rows = None
            if cache and records[k] is not None:
                rows = _load_shard(shard_path, records[k], stop - start, dim)
                if rows is not None:
                    blocks.loaded(start, stop, bar)
            if rows is None:
                rows = blocks.rows(start, stop, bar)
                if cache:
                    records[k] = mine[k] = _write_shard(shard_path, rows, start, ids[start:stop],
                                                        manifest["fingerprint"])
                    if world == 1:
                        manifest.update(dim=int(rows.shape[1]), shards=records,
                                        complete=all(r is not None for r in records))
                        _cache.atomic_write_json(folder / "manifest.json", manifest)
                    else:  # the manifest is the merge's to write: each process lists its own shards
                        _cache.atomic_write_json(folder / f"part-{rank:05d}.json",
                                                 {**manifest, "dim": int(rows.shape[1]), "shards": mine})
            if world > 1:
                continue
            if out is None:
                dim = int(rows.shape[1])
                out = np.empty((n, dim), np.float32)
            out[start:stop] = rows
    finally:
        bar.close()
    return out


def _write_shard(path: Path, rows: np.ndarray, start: int, ids: Sequence[str], fingerprint: str) -> dict[str, Any]:
    from safetensors.numpy import save

    meta = {
        "start": start,
        "rows": len(rows),
        "fingerprint": fingerprint,
        "ids_sha256": _ids_sha256(ids),
    }
    # one metadata key: safetensors writes several in hash-map order, which
    # differs between processes, and identical inputs should give identical bytes
    header = {"semalign": json.dumps(meta, sort_keys=True, separators=(",", ":"))}
    data = save({_TENSOR: np.ascontiguousarray(rows, dtype=np.float32)}, metadata=header)
    with _cache.atomic_path(path) as tmp:
        tmp.write_bytes(data)  # into the temporary itself: save_file would replace it with an owner-only file
    digest = _cache.sha256_bytes(data)
    return {"file": path.name, "start": start, "rows": len(rows), "sha256": digest}
