"""Glue between the data, the encoder registry and the caches, so the notebooks
stay short: which encoders a run uses, their cached embeddings, and the cached
phantom dataset."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file

from semalign import phantom
from semalign.adapt import AdaptConfig, adapt_text_encoder
from semalign.cache import hash_key, sha256_file
from semalign.data import ReportSet
from semalign.embed import embed
from semalign.encoders import register_encoder, resolve_encoder
from semalign.paths import cache_dir

RADIOLOGY_TEXT_ENCODER = "radiology-minilm"


def register_radiology_text_encoder(train_reports: ReportSet, steps: int, progress: bool = True) -> str:
    """Adapt MiniLM on the training reports (cached) and register it by name."""
    folder = adapt_text_encoder(train_reports, AdaptConfig(steps=steps), progress=progress)
    register_encoder(
        {
            "name": RADIOLOGY_TEXT_ENCODER, "modality": "text", "domain": "medical", "family": "hf-text",
            "source": str(folder), "pooling": "mean", "normalize": True, "max_length": 128,
            "description": "all-MiniLM-L6-v2 adapted by the study on the training-split reports "
                           "(contrastive findings ↔ impression); stand-in for CXR-BERT",
        },
        replace=True,
    )
    return RADIOLOGY_TEXT_ENCODER


def encode_all(ids: Sequence[str], items, encoders: Sequence[str], **options) -> dict[str, np.ndarray]:
    """Cached embeddings of ``items`` by every encoder, keyed by encoder name.
    ``options`` go to :func:`semalign.embed.embed` (precision, device, ...)."""
    return {resolve_encoder(ref).name: embed(ref, ids, items, **options) for ref in encoders}


def text_embeddings(reports: ReportSet, encoders: Sequence[str], *, train_index: np.ndarray,
                    adapt_steps: int = AdaptConfig.steps, progress: bool = True, **options) -> dict[str, np.ndarray]:
    """Embeddings of every report; ``radiology-minilm`` is first built from the
    training split (cached). Other entries are registry names or references
    such as ``hf-text:/folder``."""
    if RADIOLOGY_TEXT_ENCODER in encoders:
        register_radiology_text_encoder(reports.subset(train_index), adapt_steps, progress)
    return encode_all(reports.ids, reports.texts, encoders, progress=progress, **options)


def _phantom_key(spec: phantom.PhantomSpec) -> str:
    fields = dataclasses.asdict(spec)
    fields["prevalence"] = spec.resolved_prevalence()
    sources = {name: info["sha256"] for name, info in phantom.source_files().items()}
    return hash_key("phantom", fields, sources, sha256_file(phantom.__file__))


def phantom_dataset(spec: phantom.PhantomSpec, progress: bool = True) -> phantom.PhantomDataset:
    """The rendered phantom for ``spec``, from the cache when present.

    The cache key covers the spec, the CT files' checksums and the renderer's
    source, so a change to any of them re-renders. The entry is written to a
    temporary folder and renamed into place, so an interrupted render leaves
    no entry that looks complete.
    """
    spec.validate()
    folder = cache_dir() / "phantom" / _phantom_key(spec)
    if not (folder / "done.json").is_file():
        data = phantom.render_phantom(spec, progress=progress)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            save_file({"images": np.ascontiguousarray(data.images)}, tmp / "images.safetensors")
            data.labels.to_csv(tmp / "labels.csv", index=False)
            (tmp / "reports.json").write_text(json.dumps({"ids": data.ids, "reports": data.reports}))
            (tmp / "done.json").write_text(json.dumps({"spec": dataclasses.asdict(spec)}, default=str))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    texts = json.loads((folder / "reports.json").read_text())
    labels = pd.read_csv(folder / "labels.csv", keep_default_na=False, na_values=[""])
    images = load_file(folder / "images.safetensors")["images"]
    return phantom.PhantomDataset(images, texts["reports"], labels, texts["ids"], spec)


def phantom_reports(data: phantom.PhantomDataset) -> ReportSet:
    """The phantom as a report set: its reports with 0/1 finding and normal labels."""
    labels = data.labels[[*phantom.FINDINGS, "normal"]].astype(bool).astype(int)
    return ReportSet("CT phantom", list(data.ids), list(data.reports), labels.reset_index(drop=True), {})
