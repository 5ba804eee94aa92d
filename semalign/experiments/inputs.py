"""Glue between the data, the encoder registry and the caches, so the notebooks
stay short: the dataset a notebook's ``dataset`` parameter names (the offline
collections, or a paper dataset under ``data_root``) with its train/test split,
which encoders a run uses, their cached embeddings, and the cached phantom.

Report text of a credentialed dataset is handed to encoders and nothing else:
no function here prints, logs or returns it for display.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file, save_file
from sklearn.metrics import roc_auc_score

from semalign.data import reports as data

from semalign.data import paper as paper_data

from semalign import phantom
from semalign.core.cache import build_folder, hash_key, sha256_file
from semalign.data.reports import ReportSet
from semalign.models.embed import embed
from semalign.models.encoders import OptionalDependencyMissing, multimodal_towers, resolve_encoder
from semalign.core.errors import SemalignError
from semalign.data.images import load_image, real_sample_images
from semalign.experiments.zeroshot import prompt_scores
from semalign.method.align import Aligner, select_anchors
from semalign.experiments import results
from semalign.core.paths import cache_dir

MEDICAL_TEXT_ENCODER = "radiology-bert"  # a compact BERT pretrained from scratch: the study's medical text encoder
MEDICAL_VISION_ENCODER = "phantom-ssl"  # Lite1 trained without labels: the study's medical vision encoder
PHANTOM = "phantom"
SPLITS = ("seeded", "official")
# the side of each official split that is held out for testing
_OFFICIAL_TEST = {"mimic_cxr": "test", "vindr_cxr": "test", "chexpert": "valid"}


# --------------------------------------------------------------------------- datasets
def _paper_split(dataset: str, groups: Sequence[str], official: Sequence[str] | None, *,
                 split: str, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Patient-level train/test indices: the dataset's official split with
    ``split="official"`` where it has one, else a seeded split of the patients."""
    if split == "official" and official is not None:
        is_test = np.array([s == _OFFICIAL_TEST[dataset] for s in official])
        if is_test.all() or not is_test.any():
            raise SemalignError(f"the official split of {dataset} leaves one side empty here ({int(is_test.sum())} "
                                f"of {len(is_test)} items in test); use -p split=seeded or load more data")
        return np.flatnonzero(~is_test), np.flatnonzero(is_test)
    return paper_data.patient_split(groups, test_fraction, seed)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise SemalignError(f"split={split!r} is not valid; use one of {', '.join(SPLITS)}")


def report_dataset(dataset: str, *, data_root: str = "", uncertain: str = "zeros", text_column: str = "text",
                   label_columns: Sequence[str] = (), max_reports: int = 0, test_fraction: float = 0.3,
                   split_seed: int = 0, split: str = "seeded") -> tuple[ReportSet, np.ndarray, np.ndarray]:
    """Reports and their train/test indices for a notebook's ``dataset`` parameter:
    the one data entry of the text notebooks and ``semalign embed``, whose keywords
    are the notebooks' parameter names.

    ``iu_xray`` or a .csv/.parquet path: a seeded random subset of ``max_reports``
    and a seeded random split. ``mimic_cxr``: the MIMIC-CXR reports under
    ``data_root`` with CheXpert labels (``label_columns``, empty for the default
    five) under the ``uncertain`` policy, split by patient: seeded, or with
    ``split="official"`` the dataset's own split (train + validate / test).
    """
    _check_split(split)
    ignored = {"text_column": text_column != "text", "label_columns": dataset == "iu_xray" and bool(label_columns)}
    if dataset in ("iu_xray", "mimic_cxr") and any(ignored.values()):
        names = " and ".join(name for name, set_ in ignored.items() if set_)
        raise SemalignError(f"{names} choose the columns of a .csv/.parquet table, but dataset={dataset} brings its own "
                            f"report text{' and labels' if dataset == 'iu_xray' else ''}: leave {names} at the default")
    if dataset == "mimic_cxr":
        reports = paper_data.load_reports(dataset, data_root, uncertain=uncertain, labels=list(label_columns) or None)
        reports = data.subsample(reports, max_reports, split_seed)
        train, test = _paper_split(dataset, reports.extra["subject_id"].tolist(), reports.extra["split"].tolist(),
                                   split=split, test_fraction=test_fraction, seed=split_seed)
        return reports, train, test
    if dataset in paper_data.DATASETS:
        raise SemalignError(f"dataset {dataset!r} has images but no reports; text experiments take iu_xray, "
                            "mimic_cxr or a .csv/.parquet file")
    reports = data.subsample(data.load_reports(dataset, text_column, list(label_columns)), max_reports, split_seed)
    train, test = data.split_indices(len(reports), test_fraction, split_seed)
    if dataset != "iu_xray":
        warn_about_table(reports, train, test)
    return reports, train, test


LONG_REPORT = 2000  # characters: about the 512 tokens a BERT-sized encoder reads


def warn_about_table(reports: ReportSet, train: np.ndarray, test: np.ndarray) -> None:
    """Warn (visibly, on the command line too) about what quietly inflates or
    blurs scores on a user's table: test texts repeated in the training split,
    and reports longer than the encoders read."""
    seen = {reports.texts[i].strip().lower() for i in train}
    repeated = sum(reports.texts[i].strip().lower() in seen for i in test)
    if repeated:
        warnings.warn(f"{reports.name}: {repeated} of {len(test)} test reports repeat a training report's text "
                      f"(duplicate rows?); scores on them reward memory: remove duplicates from the table", stacklevel=1)
    long = sum(len(text) > LONG_REPORT for text in reports.texts)
    if long:
        warnings.warn(f"{reports.name}: {long} of {len(reports)} reports are longer than {LONG_REPORT} characters; "
                      f"the encoders read only their first ~512 tokens", stacklevel=1)


class LazyImages:
    """Images read from their files on demand at ``size`` × ``size`` (see
    :func:`semalign.data.images.load_image`), by a few threads that decode ahead of
    sequential access. A sequence, so :func:`semalign.models.embed.embed` streams a
    dataset of any size through the cache with only a window of images in memory.
    The window is twice the paper profile's GPU batch (128), so that the threads
    go on decoding the next batch while the GPU encodes one."""

    def __init__(self, paths: Sequence[Path], size: int, workers: int = 0, window: int = 256):
        self.paths, self.size, self.window = list(paths), int(size), window
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        if self.workers <= 1:
            return load_image(self.paths[i], self.size)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="semalign-images")
        for j in [j for j in self._ahead if not i <= j < i + self.window]:
            self._ahead.pop(j).cancel()
        for j in range(i, min(len(self.paths), i + self.window)):
            if j not in self._ahead:
                self._ahead[j] = self._pool.submit(load_image, self.paths[j], self.size)
        return self._ahead.pop(i).result()

    def subset(self, index: Sequence[int]) -> LazyImages:
        return LazyImages([self.paths[i] for i in index], self.size, self.workers, self.window)

    def item_digest(self, i: int) -> bytes:
        """What identifies image ``i`` for the embedding cache, without decoding it:
        the file's bytes, the size it is read at and the loader's source (a change
        to the loader embeds again). Decoding is the costly part at paper scale, so
        a cold run decodes each image once and a warm run not at all."""
        file_sha256 = bytes.fromhex(sha256_file(self.paths[i]))
        return hashlib.sha256(_loader_sha256() + self.size.to_bytes(4, "little") + file_sha256).digest()


@functools.cache
def _loader_sha256() -> bytes:
    from semalign.data import images
    return hashlib.sha256(Path(images.__file__).read_bytes()).digest()


@dataclasses.dataclass
class ImageData:
    """Images with their ids, labels and (where the dataset pairs them) report
    texts in ``items``, split into ``train`` and ``test`` indices. ``images`` is
    an N×H×W uint8 array (the phantom) or :class:`LazyImages` (a paper dataset)."""

    items: ReportSet
    images: np.ndarray | LazyImages
    train: np.ndarray
    test: np.ndarray
    phantom: phantom.PhantomDataset | None = None

    def __len__(self) -> int:
        return len(self.items)

    def training_pairs(self, max_items: int = 0, seed: int = 0) -> ImageData:
        """The training split alone (a seeded subset of at most ``max_items``), all
        of it marked train: a pool of paired anchors for another dataset's test."""
        index = self.train[data.subsample_index(len(self.train), max_items, seed)]
        images = self.images.subset(index) if isinstance(self.images, LazyImages) else self.images[index]
        return ImageData(self.items.subset(index), images, np.arange(len(index)), np.arange(0))


_PHANTOM = phantom.PhantomSpec()  # the phantom's defaults


def image_dataset(dataset: str, *, data_root: str = "", label_columns: Sequence[str] = (), uncertain: str = "zeros",
                  max_images: int = 0, test_fraction: float = 0.3, phantom_seed: int = 0, split: str = "seeded",
                  n_images: int = _PHANTOM.n_images, image_size: int = _PHANTOM.image_size,
                  normal_fraction: float = _PHANTOM.normal_fraction, workers: int = 0, with_reports: bool = False,
                  progress: bool = True) -> ImageData:
    """The images a notebook's ``dataset`` parameter names, with labels and split:
    the one data entry of the image notebooks and ``semalign embed``, whose
    keywords are the notebooks' parameter names.

    ``phantom``: the cached phantom of ``n_images`` at ``image_size`` with
    ``normal_fraction`` of them normal, drawn from ``phantom_seed``, with a
    seeded random split. A paper dataset (``rsna_pneumonia``, ``vindr_cxr``, ``chexpert``,
    ``mimic_cxr``) is read from ``data_root``: its default labels or
    ``label_columns`` (a "No Finding" column becomes ``normal``), a seeded subset
    of ``max_images``, a patient-level split (seeded, or ``split="official"``)
    and images loaded lazily at ``image_size``. ``with_reports`` pairs each
    MIMIC-CXR image with its study's report (images without one are dropped).
    """
    _check_split(split)
    if dataset == PHANTOM:
        spec = phantom.PhantomSpec(n_images=n_images, seed=phantom_seed, image_size=image_size,
                                   normal_fraction=normal_fraction)
        rendered = phantom_dataset(spec, progress=progress)
        items = phantom_reports(rendered)
        train, test = data.split_indices(len(items), test_fraction, phantom_seed)
        return ImageData(items, rendered.images, train, test, rendered)
    if dataset not in paper_data.DATASETS:
        raise SemalignError(f"unknown image dataset {dataset!r}; use {PHANTOM} or one of "
                            f"{', '.join(paper_data.DATASETS)} (with -p data_root=...)")
    labels = list(label_columns) or None
    table = paper_data.load_images(dataset, data_root, uncertain=uncertain, labels=labels)
    texts = [""] * len(table)
    if with_reports:
        if dataset != "mimic_cxr":
            raise SemalignError(f"{dataset} has no reports to pair with its images; paired image-report anchors "
                                "come from mimic_cxr (set -p anchor_dataset=mimic_cxr)")
        reports = paper_data.load_reports(dataset, data_root, uncertain=uncertain, labels=labels)
        by_study = dict(zip(reports.ids, reports.texts))
        paired = [i for i, study in enumerate(table.studies) if study in by_study]
        dropped = len(table) - len(paired)
        table = table.subset(paired)
        table.dropped["no report for the image's study"] = dropped
        texts = [by_study[study] for study in table.studies]
    keep = data.subsample_index(len(table), max_images, phantom_seed)
    table, texts = table.subset(keep), [texts[i] for i in keep]
    label_frame = table.labels.rename(columns={"No Finding": "normal", "No finding": "normal"})
    items = ReportSet(table.name, table.ids, texts, label_frame, table.dropped, pd.DataFrame({"group": table.groups}))
    train, test = _paper_split(dataset, table.groups, table.split, split=split, test_fraction=test_fraction,
                               seed=phantom_seed)
    return ImageData(items, LazyImages(table.paths, image_size, workers), train, test)


def scaled_steps(config, scale: float):
    """``config`` with every ``*steps`` field multiplied by ``scale`` (at least 1;
    a stage of 0 steps stays off): the smoke profile trains the study-made encoders briefly."""
    if scale == 1.0:
        return config
    if not 0 < scale <= 1:
        raise SemalignError(f"medical_scale={scale} is out of range; use a share in (0, 1], e.g. -p medical_scale=0.1")
    fields = {f.name: max(1, round(getattr(config, f.name) * scale)) if getattr(config, f.name) else 0
              for f in dataclasses.fields(config) if f.name.endswith("steps") and isinstance(getattr(config, f.name), int)}
    return dataclasses.replace(config, **fields)


def vision_encoders(images: ImageData, names: Sequence, *, medical_scale: float = 1.0, progress: bool = True) -> list:
    """``names`` as encoder references, with the study-made ``phantom-ssl`` (if among
    them) built (cached) without labels on the phantom's training split and given by its spec."""
    from semalign.models.phantom_ssl import SSLConfig, phantom_ssl_spec

    if MEDICAL_VISION_ENCODER not in names:
        return list(names)
    if images.phantom is None:
        raise SemalignError(f"{MEDICAL_VISION_ENCODER} is trained on the phantom; use it with dataset=phantom, "
                            "or list other vision encoders")
    spec = phantom_ssl_spec(images.phantom.images[images.train], scaled_steps(SSLConfig(), medical_scale),
                            progress=progress)
    return [spec if name == MEDICAL_VISION_ENCODER else name for name in names]


def image_embeddings(images: ImageData, encoders: Sequence[str], *, medical_scale: float = 1.0,
                     **options) -> results.Embeddings:
    """Embeddings of every image by each of :func:`vision_encoders` (built-in
    names or references such as ``hf-vision:/folder``)."""
    refs = vision_encoders(images, encoders, medical_scale=medical_scale, progress=options.get("progress", True))
    return encode_all(images.items.ids, images.images, refs, **options)


def prompt_embeddings(prompts: Mapping[str, Mapping[str, Sequence[str]]], classes: Sequence[str],
                      encoders: Sequence, **options) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per text encoder and class, the embeddings of its (positive, negative) prompts;
    ``encoders`` are references or specs (such as ``report_embeddings.specs.values()``)."""
    texts = sorted({p for c in classes for side in ("positive", "negative") for p in prompts[c].get(side, [])})
    vectors = encode_all([f"prompt:{p}" for p in texts], texts, encoders, progress=False, **options)
    return {
        name: {c: tuple(v[[texts.index(p) for p in prompts[c].get(side, [])]] for side in ("positive", "negative"))
               for c in classes}
        for name, v in vectors.items()
    }


def multimodal_embeddings(images: ImageData, models: Sequence[str], prompts, classes: Sequence[str], *,
                          precision: str = "fp32", **options) -> dict[str, tuple[np.ndarray, dict]]:
    """For each CLIP-style model: its image tower's embeddings of every image and
    its text tower's prompt embeddings per class. A model whose optional
    dependency is missing (open_clip for BiomedCLIP) is skipped with one printed line."""
    out = results.Embeddings()
    for ref in models:
        try:
            image_tower, text_tower = multimodal_towers(ref)
            vectors = multimodal_image_embeddings(images, ref, precision=precision, **options)
            prompt_vectors = prompt_embeddings(prompts, classes, [text_tower], precision="fp32",
                                               **{k: v for k, v in options.items() if k != "progress"})
        except OptionalDependencyMissing as exc:
            print(f"skipped {ref}: {exc}")
            continue
        out[ref] = (vectors, prompt_vectors[text_tower.name])
        out.note(image_tower, precision, options.get("device", "auto"))
        out.note(text_tower, "fp32", options.get("device", "auto"))
    return out


def multimodal_image_embeddings(images: ImageData, ref: str, *, precision: str = "fp32", **options) -> np.ndarray | None:
    """The image tower of the CLIP-style model ``ref`` on every image, through the
    embedding cache (``options`` go to :func:`~semalign.models.embed.embed`).
    Raises :class:`~semalign.models.encoders.OptionalDependencyMissing` when the
    model needs a package that is not installed."""
    image_tower = multimodal_towers(ref)[0]
    return embed(image_tower, images.items.ids, images.images, precision=precision, **options)


def zero_shot_datasets(dataset: str, anchor_dataset: str = "", *, max_anchor_pairs: int = 0,
                       **options) -> tuple[ImageData, ImageData | None]:
    """The evaluation images and, when the paired anchors come from another
    dataset (``anchor_dataset``, e.g. MIMIC-CXR for RSNA), that dataset's
    training image-report pairs (at most ``max_anchor_pairs``); ``None`` when
    the anchors are the evaluation dataset's own training pairs.
    ``options`` go to :func:`image_dataset`."""
    if anchor_dataset in ("", dataset):
        return image_dataset(dataset, with_reports=True, **options), None
    evaluation = image_dataset(dataset, **options)
    anchor_options = {**options, "label_columns": (), "max_images": 0}  # anchors are unlabelled
    pairs = image_dataset(anchor_dataset, with_reports=True, **anchor_options)
    return evaluation, pairs.training_pairs(max_anchor_pairs, options.get("phantom_seed", 0))


def pediatric_check(vision, text: str, kind: str, n_anchors: int, pool_images: np.ndarray,
                    pool_reports: np.ndarray, prompts: tuple[np.ndarray, np.ndarray], *, image_size: int,
                    **options) -> tuple[pd.DataFrame, float, float, float]:
    """The route vision -> text (transform ``kind`` fitted on ``n_anchors`` pooled
    pairs, seed 0) applied to the 16 real pediatric radiographs and scored with
    one class's prompts against their NORMAL / PNEUMONIA labels. Returns the
    per-image table, the AUROC and a 95% bootstrap interval (2,000 draws)."""
    real = real_sample_images(cohorts=("pediatric",))
    images = np.stack([load_image(r.path, size=image_size) for r in real])
    labels = np.array([r.label == "pneumonia" for r in real], dtype=int)
    (embeddings,) = encode_all([f"real:{r.path.name}" for r in real], images, [vision], progress=False, **options).values()
    anchors = select_anchors(n_anchors, seed=0, pool_size=len(pool_images))
    aligner = Aligner(kind=kind, seed=0).fit(pool_images[anchors], pool_reports[anchors])
    scores = prompt_scores(aligner.transform(embeddings), *prompts)

    rng = np.random.default_rng(0)
    draws = (rng.integers(0, len(labels), len(labels)) for _ in range(2000))
    boot = [roc_auc_score(labels[i], scores[i]) for i in draws if 0 < labels[i].sum() < len(i)]  # both classes drawn
    low, high = np.percentile(boot, [2.5, 97.5])
    table = pd.DataFrame({"file": [r.path.name for r in real], "pneumonia": labels, "score": scores.round(3)})
    return table, float(roc_auc_score(labels, scores)), float(low), float(high)


def encode_all(ids: Sequence[str], items, encoders: Sequence, **options) -> results.Embeddings:
    """Cached embeddings of ``items`` by every encoder (a reference or a spec), keyed
    by encoder name, with each encoder's spec and identity (:class:`~semalign.experiments.results.Embeddings`).
    ``options`` go to :func:`semalign.models.embed.embed` (precision, device, ...)."""
    out = results.Embeddings()
    for ref in encoders:
        spec = resolve_encoder(ref)
        out[spec.name] = embed(spec, ids, items, **options)
        out.note(spec, options.get("precision", "fp32"), options.get("device", "auto"))
    return out


def medical_training_reports(evaluated: ReportSet | None = None, test_index: np.ndarray | None = None) -> ReportSet:
    """The reports the study-made text encoders are trained on, whatever the
    data being evaluated: the IU X-ray training reports (the default split: 30 %
    held out, seed 0, every report), less any report of ``evaluated``'s test
    items (by id), so that a medical encoder is a fixed model, as CXR-BERT is,
    and never saw a test report of the data it is scored on."""
    iu = data.load_reports()
    train, _ = data.split_indices(len(iu), 0.3, 0)
    held_out = set() if evaluated is None or test_index is None else {evaluated.ids[i] for i in test_index}
    return iu.subset(np.asarray([i for i in train if iu.ids[i] not in held_out], dtype=int))


def text_encoders(names: Sequence, evaluated: ReportSet | None = None, test_index: np.ndarray | None = None, *,
                  medical_scale: float = 1.0, progress: bool = True) -> list:
    """``names`` as encoder references, with the study-made ``radiology-bert`` (if
    among them) built (cached) from :func:`medical_training_reports` of the data
    being evaluated and given by its spec."""
    from semalign.models.radiology_bert import RadiologyBertConfig, radiology_bert_spec

    if MEDICAL_TEXT_ENCODER not in names:
        return list(names)
    spec = radiology_bert_spec(medical_training_reports(evaluated, test_index),
                               scaled_steps(RadiologyBertConfig(), medical_scale), progress=progress)
    return [spec if name == MEDICAL_TEXT_ENCODER else name for name in names]


def text_embeddings(reports: ReportSet, encoders: Sequence[str], *, test_index: np.ndarray | None = None,
                    medical_scale: float = 1.0, progress: bool = True, **options) -> results.Embeddings:
    """Embeddings of every report by each of :func:`text_encoders`: the study-made
    ones are built from :func:`medical_training_reports`, never from ``reports``'
    test items (``test_index``). Other entries are built-in names or references
    such as ``hf-text:/folder``."""
    refs = text_encoders(encoders, reports, test_index, medical_scale=medical_scale, progress=progress)
    return encode_all(reports.ids, reports.texts, refs, progress=progress, **options)


def _phantom_key(spec: phantom.PhantomSpec) -> str:
    fields = dataclasses.asdict(spec)
    fields["prevalence"] = spec.resolved_prevalence()
    sources = {name: info["sha256"] for name, info in phantom.source_files().items()}
    package = Path(phantom.__file__).parent
    code = {path.relative_to(package).as_posix(): sha256_file(path) for path in sorted(package.rglob("*.py"))}
    return hash_key("phantom", fields, sources, code)


def phantom_dataset(spec: phantom.PhantomSpec, progress: bool = True) -> phantom.PhantomDataset:
    """The rendered phantom for ``spec``, from the cache when present.

    The cache key covers the spec, the CT files' checksums and the renderer's
    source, so a change to any of them re-renders. The entry is built like every
    study-made artefact (:func:`semalign.core.cache.build_folder`): written to a
    temporary folder and renamed into place, its images' sha256 checked on every
    read, a damaged entry reported and rendered again.
    """
    spec.validate()

    def write(tmp: Path) -> dict:
        data = phantom.render_phantom(spec, progress=progress)
        save_file({"images": np.ascontiguousarray(data.images)}, tmp / "images.safetensors")
        data.labels.to_csv(tmp / "labels.csv", index=False)
        (tmp / "reports.json").write_text(json.dumps({"ids": data.ids, "reports": data.reports}))
        return {"spec": json.loads(json.dumps(dataclasses.asdict(spec), default=str))}

    folder = build_folder(cache_dir() / "phantom" / _phantom_key(spec), write, description="done.json",
                          checked="images.safetensors", names=("labels.csv", "reports.json"))
    texts = json.loads((folder / "reports.json").read_text())
    labels = pd.read_csv(folder / "labels.csv", keep_default_na=False, na_values=[""])
    images = load_file(folder / "images.safetensors")["images"]
    return phantom.PhantomDataset(images, texts["reports"], labels, texts["ids"], spec)


def phantom_reports(data: phantom.PhantomDataset) -> ReportSet:
    """The phantom as a report set: its reports with 0/1 finding and normal labels."""
    labels = data.labels[[*phantom.FINDINGS, "normal"]].astype(bool).astype(int)
    return ReportSet("CT phantom", list(data.ids), list(data.reports), labels.reset_index(drop=True), {})
